"""ACL read models: users, keys by hash for authentication, folder collaborators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from shared.contracts import acl as acl_events
from shared.kit.db import Conn
from shared.kit.projections import Projection
from shared.kit.reactions import Received

R = TypeVar("R", bound=Received[Any])

users = Projection(
    name="acl.users",
    tables=("acl.users", "acl.api_keys", "acl.sessions"),
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
    CREATE TABLE IF NOT EXISTS acl.sessions (
        id uuid PRIMARY KEY,
        user_id uuid NOT NULL,
        key_id uuid NOT NULL,
        token_hash text NOT NULL UNIQUE,
        expires_at timestamptz NOT NULL,
        ended boolean NOT NULL DEFAULT false
    );
    CREATE INDEX IF NOT EXISTS sessions_key ON acl.sessions (key_id) WHERE NOT ended;
    """,
)


@users.on(acl_events.UserCreated)
async def user_created(conn: Conn, events: Sequence[Received[acl_events.UserCreated]]) -> None:
    await conn.executemany(
        "INSERT INTO acl.users (id, email, name, org_role, created_at) VALUES ($1, $2, $3, $4, $5)",
        [
            (e.event.user_id, e.event.email, e.event.name, e.event.org_role, e.occurred_at)
            for e in events
        ],
    )


@users.on(acl_events.ApiKeyIssued)
async def key_issued(conn: Conn, events: Sequence[Received[acl_events.ApiKeyIssued]]) -> None:
    await conn.executemany(
        "INSERT INTO acl.api_keys (id, user_id, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        [(e.event.key_id, e.event.user_id, e.event.key_hash, e.occurred_at) for e in events],
    )


@users.on(acl_events.ApiKeyRevoked)
async def key_revoked(conn: Conn, events: Sequence[Received[acl_events.ApiKeyRevoked]]) -> None:
    await conn.execute(
        "UPDATE acl.api_keys SET revoked = true WHERE id = ANY($1::uuid[])",
        [e.event.key_id for e in events],
    )


@users.on(acl_events.SessionStarted)
async def session_started(
    conn: Conn, events: Sequence[Received[acl_events.SessionStarted]]
) -> None:
    await conn.executemany(
        """INSERT INTO acl.sessions (id, user_id, key_id, token_hash, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        [
            (
                e.event.session_id,
                e.event.user_id,
                e.event.key_id,
                e.event.token_hash,
                e.event.expires_at,
            )
            for e in events
        ],
    )


@users.on(acl_events.SessionEnded)
async def session_ended(conn: Conn, events: Sequence[Received[acl_events.SessionEnded]]) -> None:
    await conn.execute(
        "UPDATE acl.sessions SET ended = true WHERE id = ANY($1::uuid[])",
        [e.event.session_id for e in events],
    )


collaborators = Projection(
    name="acl.collaborators",
    tables=("acl.collaborators",),
    ddl="""
    CREATE TABLE IF NOT EXISTS acl.collaborators (
        folder_id uuid NOT NULL,
        user_id uuid NOT NULL,
        role text NOT NULL,
        granted_at timestamptz NOT NULL,
        PRIMARY KEY (folder_id, user_id)
    );
    CREATE INDEX IF NOT EXISTS collaborators_user ON acl.collaborators (user_id);
    """,
)


def _last_per_grant(events: Sequence[R]) -> list[R]:
    """One event per (folder, user), the last: a statement must not touch a row twice."""
    last = {(e.event.folder_id, e.event.user_id): e for e in events}
    return list(last.values())


@collaborators.on(acl_events.CollaboratorAdded)
async def collaborator_added(
    conn: Conn, events: Sequence[Received[acl_events.CollaboratorAdded]]
) -> None:
    rows = _last_per_grant(events)
    await conn.execute(
        """INSERT INTO acl.collaborators (folder_id, user_id, role, granted_at)
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[])
           ON CONFLICT (folder_id, user_id)
           DO UPDATE SET role = EXCLUDED.role, granted_at = EXCLUDED.granted_at""",
        [e.event.folder_id for e in rows],
        [e.event.user_id for e in rows],
        [e.event.role for e in rows],
        [e.occurred_at for e in rows],
    )


@collaborators.on(acl_events.CollaboratorRoleChanged)
async def collaborator_role_changed(
    conn: Conn, events: Sequence[Received[acl_events.CollaboratorRoleChanged]]
) -> None:
    rows = _last_per_grant(events)
    await conn.execute(
        """UPDATE acl.collaborators c SET role = x.role
           FROM unnest($1::uuid[], $2::uuid[], $3::text[]) AS x(folder_id, user_id, role)
           WHERE c.folder_id = x.folder_id AND c.user_id = x.user_id""",
        [e.event.folder_id for e in rows],
        [e.event.user_id for e in rows],
        [e.event.role for e in rows],
    )


@collaborators.on(acl_events.CollaboratorRemoved)
async def collaborator_removed(
    conn: Conn, events: Sequence[Received[acl_events.CollaboratorRemoved]]
) -> None:
    await conn.execute(
        """DELETE FROM acl.collaborators c
           USING unnest($1::uuid[], $2::uuid[]) AS x(folder_id, user_id)
           WHERE c.folder_id = x.folder_id AND c.user_id = x.user_id""",
        [e.event.folder_id for e in events],
        [e.event.user_id for e in events],
    )
