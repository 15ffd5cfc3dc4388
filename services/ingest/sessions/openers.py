"""Whether the openers of upload sessions may still send them parts: the ACL context
says who a session's key belongs to now and what they may do (none for a revoked key),
the catalog says the session's folder's path if they have the editor role there; then
`domain.check_opener` decides. Role inheritance stays theirs. Asked for each part sent to
our own URLs (`Sessions.put_part`), and for a user's open sessions when their role went
down (revocations.py); a completion's opener is signed by the gateway, which asks the
same two.

For many sessions at once: one question a distinct key, and one a distinct key and
folder, not one a session (a user's open sessions are mostly under one key, in a few
folders).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from services.ingest.sessions import domain
from shared.kit import identity
from shared.kit.errors import Refused
from shared.kit.identity import Identity, ServiceKey

# Questions in flight at once, to the ACL context and to the catalog.
AT_ONCE = 8


class Unanswered(ConnectionError):
    """The ACL context or the catalog failed to answer: transient, the event is tried
    again (shared/kit/retry.py takes OSError as such)."""


class Openers:
    def __init__(self, acl_url: str, catalog_url: str, key: ServiceKey) -> None:
        self.acl_url = acl_url
        self.catalog_url = catalog_url
        self.key = key
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        # Made on first use, in the service's loop, and kept: a part's two questions go
        # on kept-alive connections.
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=5.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        return self._http

    async def of(self, row: Any) -> Identity | None:
        """The opener of the session `row` (folder_id, key_id) as the ACL context and the
        catalog say them now, for `domain.check_opener`: None if the key is revoked, no
        folder path if they may not upload into the folder."""
        found = await self._user(row["key_id"])
        if found is None:
            return None
        return _opener(found, await self._path(found, row["folder_id"]))

    async def refused(self, rows: Sequence[Any]) -> dict[uuid.UUID, Refused]:
        """The sessions among `rows` (id, folder_id, created_by, key_id) whose opener
        the part check would refuse now, with its refusal."""
        gate = asyncio.Semaphore(AT_ONCE)

        async def user(key_id: uuid.UUID) -> tuple[uuid.UUID, dict[str, Any] | None]:
            async with gate:
                return key_id, await self._user(key_id)

        keys = {r["key_id"] for r in rows if r["key_id"] is not None}
        users = dict(await asyncio.gather(*(user(k) for k in keys)))

        async def path(
            key_id: uuid.UUID, folder_id: uuid.UUID
        ) -> tuple[tuple[uuid.UUID, uuid.UUID], str | None]:
            async with gate:
                return (key_id, folder_id), await self._path(users[key_id], folder_id)

        wanted = {(r["key_id"], r["folder_id"]) for r in rows if users.get(r["key_id"])}
        paths = dict(await asyncio.gather(*(path(k, f) for k, f in wanted)))

        refused: dict[uuid.UUID, Refused] = {}
        for row in rows:
            found = users.get(row["key_id"])
            opener = (
                None
                if found is None
                else _opener(found, paths.get((row["key_id"], row["folder_id"])))
            )
            try:
                domain.check_opener(row, opener)
            except Refused as refusal:
                refused[row["id"]] = refusal
        return refused

    async def _user(self, key_id: uuid.UUID) -> dict[str, Any] | None:
        """The key's user and their access now; None if the key is revoked."""
        answer = await _sent(
            self.http,
            "POST",
            f"{self.acl_url}/internal/authenticate",
            self.key.for_service("ingest", audience="acl"),
            json={"key_id": str(key_id)},
        )
        if answer.status_code == 401:
            return None
        _check(answer, "the ACL context")
        found: dict[str, Any] = answer.json()
        return found

    async def _path(self, user: dict[str, Any] | None, folder_id: uuid.UUID) -> str | None:
        """The folder's path if the user has the editor role on it; None if not (or if
        the folder is gone)."""
        if user is None:
            return None
        correlation = structlog.contextvars.get_contextvars().get("correlation_id")
        token = self.key.sign(
            user["id"], user["access"], correlation, audience="catalog", key_id=user.get("key_id")
        )
        answer = await _sent(
            self.http,
            "GET",
            f"{self.catalog_url}/internal/folders/{folder_id}",
            token,
            params={"needed": "editor"},
        )
        if answer.status_code in (403, 404):
            return None
        _check(answer, "the catalog")
        return ",".join(answer.json()["path"])


def _opener(user: dict[str, Any], folder_path: str | None) -> Identity:
    return Identity(
        actor=user["id"],
        access=user["access"],
        correlation_id=None,
        issued_at=0,
        expires_at=0,
        folder_path=folder_path,
        key_id=user.get("key_id"),
    )


async def _sent(
    http: httpx.AsyncClient, method: str, url: str, token: str, **kwargs: Any
) -> httpx.Response:
    try:
        return await http.request(method, url, headers={identity.HEADER: token}, **kwargs)
    except httpx.TransportError as error:
        raise Unanswered(f"{method} {url}: {error!r}") from error


def _check(answer: httpx.Response, who: str) -> None:
    if answer.status_code >= 500:
        raise Unanswered(f"{who} answered {answer.status_code}")
    if answer.status_code != 200:
        # Not a passing failure: the question is wrong (tried a few times, then the event
        # is set aside as a dead letter; the part check still refuses the parts).
        raise RuntimeError(f"{who} answered {answer.status_code}: {answer.text[:200]}")
