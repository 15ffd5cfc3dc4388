"""ACL read models: users, and keys by hash for authentication."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.contracts.envelope import Envelope
from shared.kit.projections import Projection

users = Projection(
    name="acl.users",
    tables=("acl.users", "acl.api_keys"),
    ddl="""
    CREATE TABLE IF NOT EXISTS acl.users (
        id uuid PRIMARY KEY,
        email text NOT NULL UNIQUE,
        name text NOT NULL,
        org_role text NOT NULL,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS acl.api_keys (
        id uuid PRIMARY KEY,
        user_id uuid NOT NULL,
        key_hash text NOT NULL UNIQUE,
        revoked boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL
    );
    """,
)


@users.on("acl.UserCreated")
async def user_created(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    await conn.executemany(
        "INSERT INTO acl.users (id, email, name, org_role, created_at) VALUES ($1, $2, $3, $4, $5)",
        [
            (e.data["user_id"], e.data["email"], e.data["name"], e.data["org_role"], e.occurred_at)
            for e in events
        ],
    )


@users.on("acl.ApiKeyIssued")
async def key_issued(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    await conn.executemany(
        "INSERT INTO acl.api_keys (id, user_id, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        [(e.data["key_id"], e.data["user_id"], e.data["key_hash"], e.occurred_at) for e in events],
    )


@users.on("acl.ApiKeyRevoked")
async def key_revoked(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    await conn.execute(
        "UPDATE acl.api_keys SET revoked = true WHERE id = ANY($1::uuid[])",
        [e.data["key_id"] for e in events],
    )
