"""ACL commands: bootstrap, create users, authenticate keys."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.acl import domain
from services.acl.projections import users
from shared.contracts.envelope import Cause, envelopes_of
from shared.kit.logs import log
from shared.kit.service import Handlers


def user_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "email": row["email"],
        "name": row["name"],
        "org_role": row["org_role"],
        "created_at": row["created_at"].isoformat(),
    }


class Access(Handlers):
    async def bootstrap(self, admin_key: str) -> None:
        """Create the first organisation admin, once, with the given key."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE acl.users IN EXCLUSIVE MODE")
            if await conn.fetchval("SELECT exists(SELECT 1 FROM acl.users)"):
                return
            await self._create(
                conn,
                None,
                Cause(actor="system", correlation_id=str(uuid.uuid4())),
                admin_key,
                email="admin@files.local",
                name="Administrator",
                org_role="admin",
            )
            log.info("acl.bootstrapped_admin")

    async def create_user(
        self, cause: Cause, *, email: str, name: str, org_role: str
    ) -> tuple[dict[str, Any], int]:
        key = domain.new_key()
        async with self.pool.acquire() as conn, conn.transaction():
            caller = await self.caller(conn, uuid.UUID(cause.actor))
            user, position = await self._create(
                conn, caller, cause, key, email=email, name=name, org_role=org_role
            )
        return {**user, "api_key": key}, position

    async def _create(
        self,
        conn: asyncpg.Connection,
        caller: domain.Caller | None,
        cause: Cause,
        key: str,
        **fields: str,
    ) -> tuple[dict[str, Any], int]:
        user_id = uuid.uuid4()
        changes = domain.create_user(caller, user_id, uuid.uuid4(), key, **fields)
        envelopes = envelopes_of(changes, cause)
        try:
            async with conn.transaction():
                await users.apply(conn, envelopes)
        except asyncpg.UniqueViolationError:
            raise domain.Refused(
                409, "email_taken", f"a user with email {fields['email']!r} already exists"
            ) from None
        position = await self.store.append(conn, envelopes)
        row = await conn.fetchrow("SELECT * FROM acl.users WHERE id = $1", user_id)
        return user_json(row), position

    async def caller(
        self, conn: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID
    ) -> domain.Caller:
        role = await conn.fetchval("SELECT org_role FROM acl.users WHERE id = $1", user_id)
        if role is None:
            raise domain.Refused(401, "unauthenticated", "the caller is not a user")
        return domain.Caller(user_id, role)

    async def authenticate(self, key: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            """SELECT u.* FROM acl.api_keys k JOIN acl.users u ON u.id = k.user_id
               WHERE k.key_hash = $1 AND NOT k.revoked""",
            domain.key_hash(key),
        )
        return user_json(row) if row else None

    async def user(self, user_id: uuid.UUID) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM acl.users WHERE id = $1", user_id)
        if row is None:
            raise domain.Refused(404, "not_found", f"user {user_id} does not exist")
        return user_json(row)
