"""ACL commands, reactions and queries: users, API keys, folder collaborators.

Each command reads state, decides (domain, pure), projects inline and appends, in
one transaction. Grants on folders are kept on one stream per folder
(`folder-access-<id>`); the catalog's folder lifecycle reaches them through the
consumer (`react`).
"""

from __future__ import annotations

import base64
import uuid
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from services.acl import domain
from services.acl.projections import collaborators, users
from shared.contracts import acl as ev
from shared.contracts.catalog import FolderCreated, FolderDeleted, FolderPurged
from shared.contracts.envelope import Cause, Change, Envelope, envelopes_of
from shared.kit.access import RANK, Access
from shared.kit.db import Conn
from shared.kit.errors import Refused
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received
from shared.kit.service import Handlers

# The class of this service's advisory locks (two-key form: its own key space).
STREAM_LOCK = zlib.crc32(b"files.acl.stream") & 0x7FFFFFFF


def user_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "email": row["email"],
        "name": row["name"],
        "org_role": row["org_role"],
        "created_at": row["created_at"].isoformat(),
    }


def _collaborator(row: asyncpg.Record, folder_id: uuid.UUID) -> dict[str, Any]:
    return {
        "user_id": str(row["user_id"]),
        "email": row["email"],
        "name": row["name"],
        "role": row["role"],
        "inherited_from": None if row["folder_id"] == folder_id else str(row["folder_id"]),
    }


def _storable(text: str) -> bool:
    """Whether PostgreSQL can hold the text (no NUL; a lone surrogate never gets this
    far: shared/kit/http.py refuses it as malformed JSON); one that it cannot is nobody's
    email, so it is looked up as unknown rather than sent."""
    return "\x00" not in text


def _cursor(email: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(["users", email])).decode()


def _uncursor(cursor: str) -> str:
    try:
        kind, email = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if kind == "users" and isinstance(email, str):
            return email
    except Exception:
        pass
    raise Refused(400, "invalid_cursor", "the cursor is not one this API gave out")


class AccessControl(Handlers):
    # -- recording -----------------------------------------------------------------

    async def record(self, conn: Conn, changes: Sequence[Change], cause: Cause) -> int:
        return await self._append(conn, envelopes_of(changes, cause))

    async def _append(self, conn: Conn, envelopes: Sequence[Envelope]) -> int:
        if not envelopes:
            return 0
        await users.apply(conn, envelopes)
        await collaborators.apply(conn, envelopes)
        return await self.store.append(conn, envelopes)

    async def _versions(self, conn: Conn, streams: Iterable[str]) -> dict[str, int]:
        """Each stream's version (0 when it has no event yet), from the store's index."""
        rows = await conn.fetch(
            f"""SELECT stream_id, max(stream_version) AS version FROM {self.store.table}
                WHERE stream_id = ANY($1::text[]) GROUP BY stream_id""",
            list(streams),
        )
        return {r["stream_id"]: r["version"] for r in rows}

    async def _lock_stream(self, conn: Conn, stream: str) -> None:
        """Writers of one stream take turns instead of failing on its version."""
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", STREAM_LOCK, stream)

    async def _folders(
        self, conn: Conn, folder_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, domain.Folder]:
        """The access state of folders: their direct grants and stream versions."""
        streams = {f: ev.folder_access_stream(f) for f in folder_ids}
        versions = await self._versions(conn, streams.values())
        grants: dict[uuid.UUID, dict[uuid.UUID, str]] = {f: {} for f in folder_ids}
        for row in await conn.fetch(
            """SELECT folder_id, user_id, role FROM acl.collaborators
               WHERE folder_id = ANY($1::uuid[])""",
            list(folder_ids),
        ):
            grants[row["folder_id"]][row["user_id"]] = row["role"]
        return {f: domain.Folder(f, versions.get(streams[f], 0), grants[f]) for f in folder_ids}

    async def _folder(self, conn: Conn, folder_id: uuid.UUID) -> domain.Folder:
        await self._lock_stream(conn, ev.folder_access_stream(folder_id))
        return (await self._folders(conn, [folder_id]))[folder_id]

    # -- users -----------------------------------------------------------------------

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
        conn: Conn,
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
            raise Refused(
                409, "email_taken", f"a user with email {fields['email']!r} already exists"
            ) from None
        position = await self.store.append(conn, envelopes)
        row = await conn.fetchrow("SELECT * FROM acl.users WHERE id = $1", user_id)
        assert row is not None  # projected above
        return user_json(row), position

    async def caller(self, conn: Conn | asyncpg.Pool, user_id: uuid.UUID) -> domain.Caller:
        role = await conn.fetchval("SELECT org_role FROM acl.users WHERE id = $1", user_id)
        if role is None:
            raise Refused(401, "unauthenticated", "the caller is not a user")
        return domain.Caller(user_id, role)

    async def authenticate(
        self,
        key: str | None = None,
        session_token: str | None = None,
        key_id: uuid.UUID | None = None,
    ) -> dict[str, Any] | None:
        """The user of an API key, of a web app session or of a key's id, and what they
        may do (`access`, the gateway's header), with the key's id (`key_id`: the key, or
        the one the session was started with), in one round trip; None for an unknown or
        revoked key, or a session that is unknown, ended or expired."""
        grants = """SELECT u.*, k.id AS key_id,
                           ARRAY(SELECT c.folder_id::text || ':' || c.role
                                 FROM acl.collaborators c WHERE c.user_id = u.id) AS grants"""
        if key_id is not None:
            row = await self.pool.fetchrow(
                f"""{grants}
                    FROM acl.api_keys k JOIN acl.users u ON u.id = k.user_id
                    WHERE k.id = $1 AND NOT k.revoked""",
                key_id,
            )
        elif session_token is not None:
            row = await self.pool.fetchrow(
                f"""{grants}
                    FROM acl.sessions s
                    JOIN acl.api_keys k ON k.id = s.key_id
                    JOIN acl.users u ON u.id = s.user_id
                    WHERE s.token_hash = $1 AND NOT s.ended AND s.expires_at > now()
                      AND NOT k.revoked""",
                domain.token_hash(session_token),
            )
        else:
            row = await self.pool.fetchrow(
                f"""{grants}
                    FROM acl.api_keys k JOIN acl.users u ON u.id = k.user_id
                    WHERE k.key_hash = $1 AND NOT k.revoked""",
                domain.key_hash(key or ""),
            )
        if row is None:
            return None
        pairs = (g.rpartition(":") for g in row["grants"])
        access = Access(
            user_id=str(row["id"]),
            org_admin=row["org_role"] == "admin",
            grants={uuid.UUID(folder): role for folder, _, role in pairs},
        )
        return {**user_json(row), "access": access.encode(), "key_id": str(row["key_id"])}

    async def user(self, user_id: uuid.UUID) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT * FROM acl.users WHERE id = $1", user_id)
        if row is None:
            raise Refused(404, "not_found", f"user {user_id} does not exist")
        return user_json(row)

    async def list_users(self, cause: Cause, cursor: str | None, limit: int) -> dict[str, Any]:
        """Every user, by email (organisation admins only)."""
        caller = await self.caller(self.pool, uuid.UUID(cause.actor))
        if caller.org_role != "admin":
            raise Refused(
                403,
                "forbidden",
                "only organisation admins list users (role needed: admin)",
                {"role_needed": "admin"},
            )
        after = _uncursor(cursor) if cursor else ""
        rows = await self.pool.fetch(
            "SELECT * FROM acl.users WHERE email > $1 ORDER BY email LIMIT $2", after, limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "items": [user_json(r) for r in rows],
            "next_cursor": _cursor(rows[-1]["email"]) if more else None,
        }

    async def lookup(
        self, emails: Sequence[str], user_ids: Sequence[uuid.UUID] = ()
    ) -> dict[str, Any]:
        """Users by email, case-insensitively (keys are the emails as sent); and, when ids
        are asked about, which of them are no user's (`unknown_ids`) and the others'
        emails and names (`users`, by id)."""
        rows = await self.pool.fetch(
            "SELECT id, email FROM acl.users WHERE email = ANY($1::text[])",
            list({e.lower() for e in emails if _storable(e)}),
        )
        ids = {r["email"]: str(r["id"]) for r in rows}
        found = {e: ids[e.lower()] for e in emails if e.lower() in ids}
        unknown = list(dict.fromkeys(e for e in emails if e.lower() not in ids))
        answer: dict[str, Any] = {"found": found, "unknown": unknown}
        if user_ids:
            rows = await self.pool.fetch(
                "SELECT id, email, name FROM acl.users WHERE id = ANY($1::uuid[])",
                list(user_ids),
            )
            known = {r["id"] for r in rows}
            answer["unknown_ids"] = [str(u) for u in dict.fromkeys(user_ids) if u not in known]
            answer["users"] = {str(r["id"]): {"email": r["email"], "name": r["name"]} for r in rows}
        return answer

    # -- API keys --------------------------------------------------------------------

    async def _user_for_update(self, conn: Conn, user_id: uuid.UUID) -> int:
        """Lock the user (their stream's writers take turns); returns its version."""
        found = await conn.fetchval("SELECT 1 FROM acl.users WHERE id = $1 FOR UPDATE", user_id)
        if found is None:
            raise Refused(404, "not_found", f"user {user_id} does not exist")
        stream = ev.user_stream(user_id)
        return (await self._versions(conn, [stream])).get(stream, 0)

    async def issue_key(self, cause: Cause, user_id: uuid.UUID) -> tuple[dict[str, Any], int]:
        key, key_id = domain.new_key(), uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            domain.may_manage_keys(await self.caller(conn, uuid.UUID(cause.actor)), user_id)
            version = await self._user_for_update(conn, user_id)
            position = await self.record(
                conn, domain.issue_key(user_id, version, key_id, key), cause
            )
            created_at = await conn.fetchval(
                "SELECT created_at FROM acl.api_keys WHERE id = $1", key_id
            )
        log.info("acl.key_issued", key_id=str(key_id), user_id=str(user_id))
        issued = {
            "id": str(key_id),
            "user_id": str(user_id),
            "api_key": key,
            "created_at": created_at.isoformat(),
        }
        return issued, position

    async def keys(self, cause: Cause, user_id: uuid.UUID) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            domain.may_manage_keys(await self.caller(conn, uuid.UUID(cause.actor)), user_id)
            if await conn.fetchval("SELECT 1 FROM acl.users WHERE id = $1", user_id) is None:
                raise Refused(404, "not_found", f"user {user_id} does not exist")
            rows = await conn.fetch(
                """SELECT id, created_at, revoked FROM acl.api_keys
                   WHERE user_id = $1 ORDER BY created_at, id""",
                user_id,
            )
        items = [
            {"id": str(r["id"]), "created_at": r["created_at"].isoformat(), "revoked": r["revoked"]}
            for r in rows
        ]
        return {"items": items, "next_cursor": None}

    async def revoke_key(self, cause: Cause, key_id: uuid.UUID) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            caller = await self.caller(conn, uuid.UUID(cause.actor))
            owner = await conn.fetchval("SELECT user_id FROM acl.api_keys WHERE id = $1", key_id)
            key, version = None, 0
            if owner is not None:
                # The owner's row lock first: a concurrent revocation waits, then sees it.
                version = await self._user_for_update(conn, owner)
                revoked = await conn.fetchval(
                    "SELECT revoked FROM acl.api_keys WHERE id = $1", key_id
                )
                key = domain.Key(key_id, owner, revoked)
            sessions = [
                r["id"]
                for r in await conn.fetch(
                    """SELECT id FROM acl.sessions
                       WHERE key_id = $1 AND NOT ended AND expires_at > now() ORDER BY id""",
                    key_id,
                )
            ]
            changes = domain.revoke_key(caller, key, version, sessions)
            position = await self.record(conn, changes, cause)
        if position:
            log.info("acl.key_revoked", key_id=str(key_id))
        return position

    # -- web app sessions ------------------------------------------------------------

    async def start_session(
        self, api_key: str, correlation_id: str, ttl_s: float
    ) -> tuple[str, dict[str, Any], int]:
        """Exchange an API key for a session: its token (for the cookie, never
        recorded), the session and its user, and the store position."""
        key = await self.pool.fetchrow(
            "SELECT id, user_id FROM acl.api_keys WHERE key_hash = $1 AND NOT revoked",
            domain.key_hash(api_key),
        )
        if key is None:
            raise Refused(401, "unauthenticated", "unknown or revoked API key")
        token, session_id = domain.new_session_token(), uuid.uuid4()
        cause = Cause(actor=str(key["user_id"]), correlation_id=correlation_id)
        async with self.pool.acquire() as conn, conn.transaction():
            version = await self._user_for_update(conn, key["user_id"])
            # Revoked meanwhile? The revocation holds the same row lock.
            if await conn.fetchval("SELECT revoked FROM acl.api_keys WHERE id = $1", key["id"]):
                raise Refused(401, "unauthenticated", "unknown or revoked API key")
            now = await conn.fetchval("SELECT now()")
            changes = domain.start_session(
                key["user_id"], version, key["id"], session_id, token, now, ttl_s
            )
            position = await self.record(conn, changes, cause)
            row = await conn.fetchrow("SELECT * FROM acl.users WHERE id = $1", key["user_id"])
            expires_at = await conn.fetchval(
                "SELECT expires_at FROM acl.sessions WHERE id = $1", session_id
            )
        assert row is not None  # locked above
        log.info("acl.session_started", session_id=str(session_id), user_id=str(row["id"]))
        session = {
            "id": str(session_id),
            "expires_at": expires_at.isoformat(),
            "user": user_json(row),
        }
        return token, session, position

    async def end_session(self, token: str, correlation_id: str) -> int:
        """Sign out: the session ends now (nothing is recorded if it had ended)."""
        found = await self.pool.fetchrow(
            "SELECT id, user_id FROM acl.sessions WHERE token_hash = $1",
            domain.token_hash(token),
        )
        if found is None:
            return 0
        cause = Cause(actor=str(found["user_id"]), correlation_id=correlation_id)
        async with self.pool.acquire() as conn, conn.transaction():
            version = await self._user_for_update(conn, found["user_id"])
            row = await conn.fetchrow(
                "SELECT id, user_id, ended, expires_at, now() AS now FROM acl.sessions"
                " WHERE id = $1",
                found["id"],
            )
            assert row is not None  # sessions are never deleted
            session = domain.Session(row["id"], row["user_id"], row["ended"], row["expires_at"])
            position = await self.record(
                conn, domain.end_session(session, version, row["now"]), cause
            )
        if position:
            log.info("acl.session_ended", session_id=str(found["id"]))
        return position

    # -- folder collaborators --------------------------------------------------------

    async def collaborators(
        self, access: Access, path: Sequence[uuid.UUID], folder_id: uuid.UUID
    ) -> dict[str, Any]:
        domain.may_see(access, domain.valid_path(folder_id, path))
        return {"items": await self._listed(self.pool, path, folder_id), "next_cursor": None}

    async def _listed(
        self,
        conn: Conn | asyncpg.Pool,
        path: Sequence[uuid.UUID],
        folder_id: uuid.UUID,
    ) -> list[dict[str, Any]]:
        """Direct grants on the folder and those on its ancestors (inherited), strongest
        role first, then by email; a user granted in two places is listed for each."""
        rows = await conn.fetch(
            """SELECT c.folder_id, c.user_id, c.role, u.email, u.name,
                      array_position($1::uuid[], c.folder_id) AS depth
               FROM acl.collaborators c JOIN acl.users u ON u.id = c.user_id
               WHERE c.folder_id = ANY($1::uuid[])""",
            list(path),
        )
        ordered = sorted(rows, key=lambda r: (-RANK[r["role"]], r["email"], -r["depth"]))
        return [_collaborator(r, folder_id) for r in ordered]

    async def invite(
        self,
        cause: Cause,
        access: Access,
        path: Sequence[uuid.UUID],
        folder_id: uuid.UUID,
        emails: Sequence[str],
        role: str,
    ) -> tuple[dict[str, Any], int]:
        domain.valid_path(folder_id, path)
        wanted = list(dict.fromkeys(e.strip().lower() for e in emails))
        async with self.pool.acquire() as conn, conn.transaction():
            folder = await self._folder(conn, folder_id)
            ids = {
                r["email"]: r["id"]
                for r in await conn.fetch(
                    "SELECT id, email FROM acl.users WHERE email = ANY($1::text[])",
                    [e for e in wanted if _storable(e)],
                )
            }
            unknown = [e for e in wanted if e not in ids]
            known = [ids[e] for e in wanted if e in ids]
            changes = domain.invite(access, path, folder, known, role, unknown)
            position = await self.record(conn, changes, cause)
            listed = await self._listed(conn, path, folder_id)
        return {"items": listed, "next_cursor": None}, position

    async def change_role(
        self,
        cause: Cause,
        access: Access,
        path: Sequence[uuid.UUID],
        folder_id: uuid.UUID,
        user_id: uuid.UUID,
        role: str,
    ) -> tuple[dict[str, Any], int]:
        domain.valid_path(folder_id, path)
        async with self.pool.acquire() as conn, conn.transaction():
            folder = await self._folder(conn, folder_id)
            changes = domain.change_role(access, path, folder, user_id, role)
            position = await self.record(conn, changes, cause)
            row = await conn.fetchrow(
                """SELECT c.folder_id, c.user_id, c.role, u.email, u.name
                   FROM acl.collaborators c JOIN acl.users u ON u.id = c.user_id
                   WHERE c.folder_id = $1 AND c.user_id = $2""",
                folder_id,
                user_id,
            )
        assert row is not None  # the grant was there, or is new
        return _collaborator(row, folder_id), position

    async def remove(
        self,
        cause: Cause,
        access: Access,
        path: Sequence[uuid.UUID],
        folder_id: uuid.UUID,
        user_id: uuid.UUID,
    ) -> int:
        domain.valid_path(folder_id, path)
        async with self.pool.acquire() as conn, conn.transaction():
            folder = await self._folder(conn, folder_id)
            changes = domain.remove(access, path, folder, user_id)
            return await self.record(conn, changes, cause)

    # -- reactions to the catalog ----------------------------------------------------
    #
    # They take no stream lock: a folder's access stream is rarely written at the
    # moment the catalog creates or deletes it, and if it is, the store's version
    # check refuses one writer and the consumer retries the event on fresh state.

    reactions = Reactions("acl")

    @reactions.on(FolderCreated)
    async def when_top_level_folders_created(
        self, conn: Conn, envelopes: Sequence[Received[FolderCreated]]
    ) -> None:
        created: list[tuple[Received[FolderCreated], uuid.UUID, uuid.UUID]] = []
        for envelope in envelopes:
            if envelope.event.parent_id is not None:
                continue
            try:
                creator = uuid.UUID(envelope.actor)  # "system" creates for no one
            except ValueError:
                continue
            created.append((envelope, envelope.event.folder_id, creator))
        if not created:
            return
        folders = await self._folders(conn, [f for _, f, _ in created])
        recorded: list[Envelope] = []
        for envelope, folder_id, creator in created:
            folder = folders[folder_id]
            changes = domain.when_top_level_folder_created(folder, creator)
            recorded += envelopes_of(changes, Cause.of(envelope))
            # The same folder twice in a batch (a replayed event): count what is recorded.
            folders[folder_id] = domain.Folder(
                folder.id, folder.version + len(changes), {**folder.grants, creator: "admin"}
            )
        await self._append(conn, recorded)

    @reactions.on(FolderDeleted)
    @reactions.on(FolderPurged)
    async def when_folders_deleted(
        self, conn: Conn, envelopes: Sequence[Received[FolderDeleted | FolderPurged]]
    ) -> None:
        """Every grant on a deleted folder goes, set-based: only folders that have
        grants are read, each removal caused by its folder's deletion. A folder in the
        trash keeps them (they decide who sees and restores it) until it is purged."""
        causes = {
            e.event.folder_id: e
            for e in envelopes
            if not (isinstance(e.event, FolderDeleted) and e.event.trashed)
        }
        if not causes:
            return
        granted = [
            r["folder_id"]
            for r in await conn.fetch(
                """SELECT DISTINCT folder_id FROM acl.collaborators
                   WHERE folder_id = ANY($1::uuid[]) ORDER BY folder_id""",
                list(causes),
            )
        ]
        if not granted:
            return
        folders = await self._folders(conn, granted)
        recorded: list[Envelope] = []
        for folder_id in granted:
            changes = domain.when_folder_deleted(folders[folder_id])
            recorded += envelopes_of(changes, Cause.of(causes[folder_id]))
        await self._append(conn, recorded)
