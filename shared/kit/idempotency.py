"""Idempotency-Key: a write sent again with the same key is applied once, and answered as
the first time.

A POST, PATCH or DELETE that carries `Idempotency-Key` is a unit of work in the service
that owns it. Every connection the request takes from the pool opens a transaction of
its own, inside which the handler's transactions become savepoints. The event store's
`append` records a claim of the key in the transaction that holds the request's events
(`claim`); that connection is then kept, uncommitted, until the answer is written, and
the answer is stored with the claim and committed with the events, in one commit.
So whenever a crash comes, the request was either applied with its answer stored, or
not applied at all: a retry replays the answer, or applies the request for the first
time; it never applies it twice nor finds it applied without an answer.

- The key is the caller's (scoped by the actor the gateway authenticated); kept
  `FILES_IDEMPOTENCY_TTL_S` (24 h) after the first request.
- The request's fingerprint is its method, path, query and a SHA-256 of its body,
  hashed as it streams (an upload is covered whole), a multipart boundary left out
  (clients make a new one for each try). The same key with another request:
  422 `idempotency_key_reused`.
- A duplicate arriving while the first is still running waits for it: its own claim
  meets the first one's (PostgreSQL holds it until the first commits or rolls back),
  then it answers what the first answered.
- A request that wrote nothing (a refusal, a dry run) stores nothing: sent again, it
  runs again, which changes nothing either.
- Answers are stored sealed (AES-256-GCM) under a key derived from the idempotency key
  itself, which is stored only as a hash: an answer that shows a secret once (a new
  API key) is not readable from the database.
- The gateway composes some answers from several contexts; it stores its composed
  answer beside the service's (`PUT /internal/idempotency`), which a replay then gives
  back as it was, `Files-Consistency` included.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from asyncpg.transaction import TransactionState
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.kit import db
from shared.kit.db import Conn
from shared.kit.logs import log

HEADER = "Idempotency-Key"
# Service to gateway: "applied" (first time, answer stored), "replayed" (the service's
# stored answer) or "public" (the gateway's stored answer: relay it as it is).
STATE_HEADER = "Files-Idempotency"
# To clients, on an answer given again.
REPLAYED_HEADER = "Idempotent-Replayed"
METHODS = frozenset({"POST", "PATCH", "DELETE"})
# Printable ASCII, no spaces: a UUID, a ULID, a client's own scheme.
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
# The headers of an answer that are stored and given again.
KEPT_HEADERS = ("content-type", "files-consistency", "location", "content-range")
PRUNE_EVERY_S = 600.0

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class AlreadyApplied(Exception):
    """The key was claimed and committed by another try of the request meanwhile."""


def valid_key(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None


def key_hash(key: str) -> bytes:
    return hashlib.sha256(b"files idempotency key\0" + key.encode()).digest()


# -- answers, sealed ---------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def pack(self) -> bytes:
        head = orjson.dumps({"status": self.status, "headers": self.headers})
        return head + b"\0" + self.body  # JSON text has no raw NUL

    @classmethod
    def unpack(cls, packed: bytes) -> Answer:
        head, _, body = packed.partition(b"\0")
        meta = orjson.loads(head)
        return cls(meta["status"], [tuple(h) for h in meta["headers"]], body)

    def kept(self) -> Answer:
        return Answer(
            self.status, [(k, v) for k, v in self.headers if k.lower() in KEPT_HEADERS], self.body
        )


def _aead(key: str, scope: str) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=scope.encode(), info=b"files idempotency v1"
    ).derive(key.encode())
    return AESGCM(derived)


def seal(answer: Answer, key: str, scope: str, kind: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + _aead(key, scope).encrypt(nonce, answer.pack(), kind.encode())


def unseal(sealed: bytes, key: str, scope: str, kind: str) -> Answer:
    return Answer.unpack(_aead(key, scope).decrypt(sealed[:12], sealed[12:], kind.encode()))


# -- the fingerprint -----------------------------------------------------------------


class BodyHash:
    """SHA-256 of a body as it streams, with every occurrence of a multipart boundary
    left out (a chunk may end inside one: its start is held back until the next)."""

    def __init__(self, boundary: bytes = b"") -> None:
        self._hash = hashlib.sha256()
        self._boundary = boundary
        self._held = b""

    def update(self, chunk: bytes) -> None:
        if not self._boundary:
            self._hash.update(chunk)
            return
        data = self._held + chunk
        pieces = data.split(self._boundary)
        for piece in pieces[:-1]:
            self._hash.update(piece)
            self._hash.update(b"\0boundary\0")
        last = pieces[-1]
        keep = len(self._boundary) - 1
        self._hash.update(last[: max(len(last) - keep, 0)])
        self._held = last[max(len(last) - keep, 0) :]

    def digest(self) -> bytes:
        self._hash.update(self._held)
        self._held = b""
        return self._hash.digest()


def _boundary(content_type: str) -> bytes:
    mime, _, params = content_type.partition(";")
    if not mime.strip().lower().startswith("multipart/"):
        return b""
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"').encode()
    return b""


def fingerprint(method: str, path: str, query: str, body_sha: bytes) -> bytes:
    query = "&".join(sorted(filter(None, query.split("&"))))
    return hashlib.sha256(f"{method}\0{path}\0{query}\0".encode() + body_sha).digest()


# -- the unit of work ----------------------------------------------------------------


@dataclass
class Unit:
    """One keyed request in one service: the connections it opened, and the one that
    claimed the key (kept open until the answer is stored with the claim)."""

    schema: str
    scope: str
    key: str
    method: str
    path: str
    owner: asyncio.Task[Any] | None
    opened: dict[int, Any] = field(default_factory=dict)
    # The connection that claimed the key, its transaction kept open for the answer.
    pinned: Any = None
    pinned_tx: Any = None
    position: int = 0
    done: bool = False
    # Called once the unit has committed (`after_commit`).
    committed_hooks: list[Callable[[], None]] = field(default_factory=list)

    def mine(self) -> bool:
        return not self.done and self.owner is asyncio.current_task()


_unit: contextvars.ContextVar[Unit | None] = contextvars.ContextVar("idempotency", default=None)


def keyed() -> bool:
    """Whether the request running is a keyed write, a unit of work: what it writes is
    committed with its answer, after its handler; abandoned, nothing of it is applied."""
    unit = _unit.get()
    return unit is not None and unit.mine()


def after_commit(hook: Callable[[], None]) -> None:
    """`hook` called once what the request running wrote has committed: at once outside
    a keyed request (its transactions have committed when they end), after the unit's
    commit inside one (its handler's transactions are savepoints until the answer is
    stored), never if the unit is abandoned (nothing of it applied). For what must not
    start before the write is seen (a worker woken to act on a row it wrote)."""
    unit = _unit.get()
    if unit is not None and unit.mine():
        unit.committed_hooks.append(hook)
    else:
        hook()


def _committed(unit: Unit) -> None:
    hooks, unit.committed_hooks = unit.committed_hooks, []
    for hook in hooks:
        try:
            hook()
        except Exception:  # the request's answer stands: its write is committed
            log.error("idempotency.after_commit_failed", exc_info=True)


async def claim(conn: Conn, schema: str) -> None:
    """Called by the event store before each append: in a keyed request, record the
    claim of the key in the transaction of its events. Raises AlreadyApplied if another
    try of the request committed first (after waiting for it if it is still running).

    Run at every append, not once: a savepoint rolled back (a conflict retried) takes
    the claim with it. A claim row without an answer can only be this transaction's own
    (a committed one always has its answer), so meeting it again is no conflict.
    """
    unit = _unit.get()
    if unit is None or not unit.mine() or unit.schema != schema:
        return  # a reaction, a background job, or no key
    if id(conn) not in unit.opened and conn is not unit.pinned:
        # Taken outside the request's pool: its commit would not wait for the answer.
        log.error("idempotency.claim_outside_unit", schema=schema)
        return
    if unit.pinned is not None and conn is not unit.pinned:
        log.error("idempotency.claim_on_two_connections", schema=schema)
        return
    mine = await conn.fetchval(
        f"""INSERT INTO {schema}.idempotency AS i (scope, key_hash, method, path, position)
            VALUES ($1, $2, $3, $4, 0)
            ON CONFLICT (scope, key_hash) DO UPDATE SET position = i.position
            WHERE i.answer IS NULL
            RETURNING true""",
        unit.scope,
        key_hash(unit.key),
        unit.method,
        unit.path,
    )
    if not mine:
        raise AlreadyApplied
    unit.pinned = conn


def appended(position: int) -> None:
    """The store's last position the request wrote (kept with its claim)."""
    unit = _unit.get()
    if unit is not None and unit.mine() and unit.pinned is not None:
        unit.position = max(unit.position, position)


class _UnitAcquire:
    """`pool.acquire()` inside a keyed request: a connection in a transaction of the
    request's, or the one that claimed the key once there is one (so what the request
    reads after its write sees it)."""

    def __init__(self, pool: Pool, unit: Unit, timeout: float | None) -> None:
        self.pool = pool
        self.unit = unit
        self.timeout = timeout
        self.conn: Any = None
        self.tx: Any = None

    async def __aenter__(self) -> Any:
        if self.unit.pinned is not None:
            return self.unit.pinned
        self.conn = await asyncpg.Pool.acquire(self.pool, timeout=self.timeout)
        try:
            self.tx = self.conn.transaction()
            await self.tx.start()
        except BaseException:
            await self.pool.release(self.conn)
            raise
        self.unit.opened[id(self.conn)] = self.conn
        return self.conn

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self.conn is None:
            return
        unit = self.unit
        unit.opened.pop(id(self.conn), None)
        if kind is None and unit.pinned is self.conn:
            unit.pinned_tx = self.tx  # committed with the answer (`Idempotency.finish`)
            return
        try:
            if kind is None:
                # A connection that did not claim the key (the pool's own reads,
                # `fetchrow`, acquire so): the request's write commits with the answer, on
                # the claiming one, so this commit does not end the request's deadline.
                hold = db.committing.set(None)
                try:
                    await self.tx.commit()
                finally:
                    db.committing.reset(hold)
            else:
                await self.tx.rollback()
        finally:
            if unit.pinned is self.conn:
                # The claim went with the rollback: the request was not applied.
                unit.pinned = None
            await self.pool.release(self.conn)


class Pool(asyncpg.Pool):
    """The service's pool: as asyncpg's, except inside a keyed request (above)."""

    def acquire(self, *, timeout: float | None = None) -> Any:
        unit = _unit.get()
        if unit is not None and unit.mine():
            return _UnitAcquire(self, unit, timeout)
        return super().acquire(timeout=timeout)


# -- the store of keys -----------------------------------------------------------------


def ddl(schema: str) -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS {schema}.idempotency (
            scope text NOT NULL,
            key_hash bytea NOT NULL,
            method text NOT NULL,
            path text NOT NULL,
            fingerprint bytea,
            position bigint NOT NULL,
            answer bytea,
            public_answer bytea,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (scope, key_hash)
        );
        CREATE INDEX IF NOT EXISTS idempotency_created ON {schema}.idempotency (created_at);
    """


async def prune(pool: asyncpg.Pool, schema: str, ttl_s: float) -> int:
    done: str = await pool.execute(
        f"DELETE FROM {schema}.idempotency WHERE created_at < now() - make_interval(secs => $1)",
        ttl_s,
    )
    return int(done.split()[-1])


async def prune_forever(pool: asyncpg.Pool, schema: str, ttl_s: float) -> None:
    while True:
        await prune(pool, schema, ttl_s)
        await asyncio.sleep(PRUNE_EVERY_S)


async def keep_public(
    pool: asyncpg.Pool, schema: str, scope: str, key: str, answer: Answer
) -> bool:
    """The gateway's composed answer, beside the service's; False if no claim."""
    done: str = await pool.execute(
        f"""UPDATE {schema}.idempotency SET public_answer = $3
            WHERE scope = $1 AND key_hash = $2 AND answer IS NOT NULL""",
        scope,
        key_hash(key),
        seal(answer.kept(), key, scope, "public"),
    )
    return done.endswith(" 1")


# -- the middleware ------------------------------------------------------------------


def _json_error(status: int, code: str, message: str) -> Answer:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": {}}})
    return Answer(status, [("content-type", "application/json")], body)


@dataclass
class _Found:
    method: str
    path: str
    fingerprint: bytes | None
    answer: bytes | None
    public_answer: bytes | None


class Idempotency:
    """ASGI middleware of a service: keyed writes as units of work (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        schema: str,
        pool: Callable[[], asyncpg.Pool],
        caller: Callable[[MutableMapping[str, Any]], str | None],
    ) -> None:
        self.app = app
        self.schema = schema
        self.pool = pool
        # The user a request acts for (the scope of its keys), None for a service's call.
        self.caller = caller

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS:
            return await self.app(scope, receive, send)
        raw_key = dict(scope["headers"]).get(HEADER.lower().encode())
        actor = self.caller(scope)
        # Keys pass to a service only where the gateway means them to (the public path
        # it forwards a write to, or the ACL's sign-in): a call it signs as a user.
        if raw_key is None or not actor:
            return await self.app(scope, receive, send)
        key = raw_key.decode("latin-1")
        if not valid_key(key):
            return await self._send(
                send,
                _json_error(
                    400,
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 printable ASCII characters, no spaces",
                ),
            )
        await _Request(self, scope, receive, send, key, actor).run()

    async def _send(
        self, send: Callable[[Any], Awaitable[None]], answer: Answer, state: str = ""
    ) -> None:
        headers = [
            (k.encode(), v.encode()) for k, v in answer.headers if k.lower() != "content-length"
        ]
        if state:
            headers.append((STATE_HEADER.lower().encode(), state.encode()))
            if state != "applied":
                headers.append((REPLAYED_HEADER.lower().encode(), b"true"))
        headers.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


class _Request:
    """One keyed request through the middleware."""

    def __init__(
        self,
        mw: Idempotency,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
        key: str,
        actor: str,
    ) -> None:
        self.mw = mw
        self.scope = scope
        self.receive = receive
        self.send = send
        self.key = key
        self.actor = actor
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        headers = dict(scope["headers"])
        self.body = BodyHash(_boundary(headers.get(b"content-type", b"").decode("latin-1")))
        self.body_done = False
        self.started: dict[str, Any] | None = None
        self.chunks: list[bytes] = []
        self.buffering = False

    def fingerprint(self) -> bytes:
        query = self.scope.get("query_string", b"").decode("latin-1")
        return fingerprint(self.method, self.path, query, self.body.digest())

    async def hashing_receive(self) -> Any:
        message = await self.receive()
        if message["type"] == "http.request":
            self.body.update(message.get("body", b""))
            if not message.get("more_body", False):
                self.body_done = True
        elif message["type"] == "http.disconnect":
            self.body_done = True
        return message

    async def drain(self) -> None:
        """The rest of the body, hashed (a replay compares the whole request)."""
        while not self.body_done:
            await self.hashing_receive()

    async def found(self) -> _Found | None:
        """The committed claim of the key; raises _Away if the database is away."""
        try:
            row = await self.mw.pool().fetchrow(
                f"""SELECT method, path, fingerprint, answer, public_answer
                    FROM {self.mw.schema}.idempotency WHERE scope = $1 AND key_hash = $2""",
                self.actor,
                key_hash(self.key),
            )
            if row is not None:
                # The claim's commit may not be flushed yet (kit/eventstore.py: its
                # transaction flushes after it): an answer is given again once durable.
                await db.flush(self.mw.pool())
        except Exception as error:
            log.warning("idempotency.lookup_failed", error=repr(error))
            raise _Away from error
        return None if row is None else _Found(**dict(row))

    async def replay(self, found: _Found) -> bool:
        """Answer a committed claim: its answer, or 422 if the request is another."""
        if found.answer is None:
            return False  # not possible: a committed claim has its answer
        same = found.method == self.method and found.path == self.path
        if same:
            await self.drain()
            same = found.fingerprint == self.fingerprint()
        if not same:
            await self.mw._send(
                self.send,
                _json_error(
                    422,
                    "idempotency_key_reused",
                    f"this Idempotency-Key was used for another request ({found.method}"
                    f" {found.path}); use a new key for a new request",
                ),
            )
            return True
        if found.public_answer is not None:
            answer, state = unseal(found.public_answer, self.key, self.actor, "public"), "public"
        else:
            answer, state = unseal(found.answer, self.key, self.actor, "answer"), "replayed"
        await self.mw._send(self.send, answer, state)
        return True

    async def buffering_send(self, message: Any) -> None:
        unit = self.unit
        if message["type"] == "http.response.start":
            # Claimed: stored before it is sent. Refused: perhaps another try of the
            # request won meanwhile, whose answer is then the one to give.
            self.buffering = unit.pinned is not None or message["status"] >= 400
            if not self.buffering:
                await self.send(message)
            else:
                self.started = message
            return
        if message["type"] == "http.response.body" and self.buffering:
            self.chunks.append(message.get("body", b""))
            return
        await self.send(message)

    async def run(self) -> None:
        try:
            found = await self.found()
        except _Away:
            return await self.mw._send(self.send, _unavailable())
        if found is not None and await self.replay(found):
            return
        self.unit = Unit(
            schema=self.mw.schema,
            scope=self.actor,
            key=self.key,
            method=self.method,
            path=self.path,
            owner=asyncio.current_task(),
        )
        token = _unit.set(self.unit)
        try:
            await self.mw.app(self.scope, self.hashing_receive, self.buffering_send)
        except AlreadyApplied:
            await self._abandon()
            try:
                found = await self.found()
            except _Away:
                return await self.mw._send(self.send, _unavailable())
            if found is None or not await self.replay(found):
                await self.mw._send(
                    self.send,
                    _json_error(
                        409,
                        "request_in_progress",
                        "a request with this Idempotency-Key is still running; try again",
                    ),
                )
            return
        except BaseException:
            await self._abandon()
            raise
        finally:
            self.unit.done = True
            _unit.reset(token)
        await self.finish()

    async def _abandon(self) -> None:
        unit = self.unit
        if unit.pinned is not None and unit.pinned_tx is not None:
            conn, unit.pinned = unit.pinned, None
            try:
                await unit.pinned_tx.rollback()
            except Exception:
                log.warning("idempotency.rollback_failed", exc_info=True)
            finally:
                await self.mw.pool().release(conn)

    async def finish(self) -> None:
        unit = self.unit
        if unit.pinned is not None and not self.buffering:
            # Claimed after its answer was sent (a streamed answer): no answer to keep.
            log.error("idempotency.claimed_while_answering", path=self.path)
            if await self._commit(None):
                _committed(unit)
            return
        if not self.buffering:
            _committed(unit)  # its transactions committed as they ended
            return
        assert self.started is not None
        answer = Answer(
            self.started["status"],
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.started["headers"]],
            b"".join(self.chunks),
        )
        if unit.pinned is None:
            # Refused, nothing written (or only on connections that committed as they
            # ended). If another try of this request has committed since, its answer is
            # the one (a folder it made is no name clash for us).
            _committed(unit)
            try:
                found = await self.found()
            except _Away:
                found = None
            if found is None or not await self.replay(found):
                await self.mw._send(self.send, answer)
            return
        if answer.status >= 500:
            # A failure answered by an error handler rather than raised (a lost broker,
            # a bug caught by the Guard): nothing of it is applied, a retry runs anew.
            await self._abandon()
            await self.mw._send(self.send, answer)
            return
        await self.drain()
        if await self._commit(answer):
            _committed(unit)
            await self.mw._send(self.send, answer, "applied")
        else:
            await self.mw._send(self.send, _unavailable())

    async def _commit(self, answer: Answer | None) -> bool:
        """Store the answer with the claim and commit the request; False if the database
        would not (then nothing of the request was applied)."""
        unit = self.unit
        conn, tx, unit.pinned = unit.pinned, unit.pinned_tx, None
        assert conn is not None and tx is not None
        try:
            if answer is not None:
                await conn.execute(
                    f"""UPDATE {self.mw.schema}.idempotency
                        SET fingerprint = $1, position = $2, answer = $3
                        WHERE scope = $4 AND key_hash = $5""",
                    self.fingerprint(),
                    unit.position,
                    seal(answer.kept(), self.key, self.actor, "answer"),
                    self.actor,
                    key_hash(self.key),
                )
            await tx.commit()
            return True
        except Exception as error:
            if tx._state is TransactionState.COMMITTED and await self._kept_after_all():
                # Committed, and its flush failed (kit/db.py), but it is durable now.
                log.warning("idempotency.flush_failed", error=repr(error))
                return True
            log.warning("idempotency.commit_failed", error=repr(error))
            try:
                await tx.rollback()
            except Exception:
                log.debug("idempotency.rollback_failed", exc_info=True)
            return False
        finally:
            await self.mw.pool().release(conn)

    async def _kept_after_all(self) -> bool:
        """After a commit whose flush failed: whether its answer is there, durable,
        seen from another connection (a PostgreSQL that crashed and came back may
        have lost the commit; then nothing was applied)."""
        try:
            await db.flush(self.mw.pool())
            kept: bool | None = await self.mw.pool().fetchval(
                f"""SELECT answer IS NOT NULL FROM {self.mw.schema}.idempotency
                    WHERE scope = $1 AND key_hash = $2""",
                self.actor,
                key_hash(self.key),
            )
        except Exception:
            log.warning("idempotency.flush_failed_again", exc_info=True)
            return False
        return bool(kept)


class _Away(Exception):
    """The database did not answer a lookup of a key."""


def _unavailable() -> Answer:
    answer = _json_error(
        503, "unavailable", "the database did not answer; nothing was applied, try again"
    )
    answer.headers.append(("retry-after", "1"))
    return answer
