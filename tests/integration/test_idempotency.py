"""The kit's Idempotency-Key on a real PostgreSQL: a keyed write is applied once whenever
its process dies, its answer is kept with its claim, duplicates wait for the first."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request

from shared.kit import db, idempotency
from shared.kit.eventstore import ConcurrencyConflict, EventStore
from shared.kit.http import JSON, install_errors
from tests.conftest import eventually
from tests.integration.helpers import envelope, schema

# Who calls, in this test's service (the platform's services take it from the verified
# identity token).
ACTOR = b"x-test-actor"


class Died(Exception):
    """The process went away at this point (nothing after it runs)."""


class Service:
    """A service of one route: each POST appends one event to its stream and answers the
    stream's length, with a new id. Faults are asked for in the query."""

    def __init__(self, pool: asyncpg.Pool, store: EventStore, database_url: str) -> None:
        self.pool = pool
        self.database_url = database_url
        self.raw: asyncpg.Pool | None = None  # a plain pool, to look from outside
        self.store = store
        self.appended = asyncio.Event()
        self.go_on = asyncio.Event()
        self.go_on.set()
        self.app = FastAPI()
        install_errors(self.app)
        self.app.add_middleware(
            idempotency.Idempotency,
            schema=store.schema,
            pool=lambda: self.pool,
            caller=lambda scope: dict(scope["headers"]).get(ACTOR, b"").decode() or None,
        )
        self.app.post("/streams/{stream}", status_code=201)(self.write)
        # What each `after_commit` hook saw of its stream from outside, when called.
        self.seen_after_commit: list[asyncio.Task[int]] = []

    async def write(self, stream: str, request: Request, fault: str = "") -> JSON:
        await request.body()
        for attempt in range(3):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    version = await conn.fetchval(
                        f"SELECT count(*) FROM {self.store.schema}.events WHERE stream_id = $1",
                        stream,
                    )
                    if fault == "conflict" and attempt == 0:
                        version -= 1  # a stale read: the append meets the version check
                    position = await self.store.append(conn, [envelope(stream, version + 1)])
                    # A worker woken to act on what was written (as ingest's reclaimer).
                    idempotency.after_commit(
                        lambda: self.seen_after_commit.append(
                            asyncio.create_task(self.seen(stream))
                        )
                    )
                    self.appended.set()
                    await self.go_on.wait()
            except ConcurrencyConflict:
                continue  # decided on a stale state: read again, decide again
            break
        count = await self.pool.fetchval(
            f"SELECT count(*) FROM {self.store.schema}.events WHERE stream_id = $1", stream
        )
        if fault == "terminate":
            # The database loses the request's connection before it commits.
            async with self.pool.acquire() as mine:
                pid = mine.get_server_pid()
            other = await db.connect(self.database_url)
            try:
                await other.execute("SELECT pg_terminate_backend($1)", pid)
            finally:
                await other.close()
        if fault == "crash":
            raise Died
        return JSON({"id": str(uuid.uuid4()), "events": count, "position": position}, 201)

    async def seen(self, stream: str) -> int:
        """The stream's events, seen from outside the request."""
        assert self.raw is not None
        return int(
            await self.raw.fetchval(
                f"SELECT count(*) FROM {self.store.schema}.events WHERE stream_id = $1", stream
            )
        )

    async def events(self, stream: str) -> int:
        return int(
            await self.pool.fetchval(
                f"SELECT count(*) FROM {self.store.schema}.events WHERE stream_id = $1", stream
            )
        )


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[Service]:
    pool = await db.connect_pool(database_url, kind=idempotency.Pool, max_size=10)
    store = EventStore(schema())
    async with pool.acquire() as conn:
        await store.setup(conn)
        await conn.execute(idempotency.ddl(store.schema))
    running = Service(pool, store, database_url)
    running.raw = await db.connect_pool(database_url, max_size=2)
    yield running
    await running.raw.close()
    await pool.close()


def client(service: Service) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=service.app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://service")


def keyed(key: str, actor: str = "alice") -> dict[str, str]:
    return {"Idempotency-Key": key, ACTOR.decode(): actor}


async def test_an_answer_lost_after_the_commit_is_given_again(service: Service) -> None:
    key = str(uuid.uuid4())
    # The request is committed, then the connection (or the process) goes before the
    # answer is sent: the client never sees it.
    body = b'{"x": 1}'
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/streams/a",
        "raw_path": b"/streams/a",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (k.lower().encode(), v.encode())
            for k, v in {**keyed(key), "content-type": "application/json"}.items()
        ],
        "client": ("127.0.0.1", 1),
        "server": ("service", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        raise Died

    with pytest.raises(Died):
        await service.app(scope, receive, send)
    assert await service.events("a") == 1
    async with client(service) as http:
        again = await http.post(
            "/streams/a", content=body, headers={**keyed(key), "content-type": "application/json"}
        )
    assert again.status_code == 201, again.text
    assert again.json()["events"] == 1
    assert again.headers[idempotency.REPLAYED_HEADER] == "true"
    assert await service.events("a") == 1


async def test_a_process_that_dies_before_answering_leaves_nothing_applied(
    service: Service,
) -> None:
    key = str(uuid.uuid4())
    async with client(service) as http:
        died = await http.post("/streams/b?fault=crash", json={}, headers=keyed(key))
        assert died.status_code == 500
        assert await service.events("b") == 0  # the events went with the claim
        first = await http.post("/streams/b", json={}, headers=keyed(key))
        assert first.status_code == 201 and first.json()["events"] == 1
        again = await http.post("/streams/b", json={}, headers=keyed(key))
        assert again.json() == first.json()
        assert await service.events("b") == 1


async def test_an_after_commit_hook_runs_once_the_keyed_write_is_seen_and_never_if_abandoned(
    service: Service,
) -> None:
    """A keyed request's handler commits savepoints only: the unit commits with its
    answer after it. What the handler asks to be done after its commit (wake a worker
    that acts on its rows) runs then, and finds them; a request abandoned wakes none."""
    async with client(service) as http:
        service.go_on.clear()
        service.appended.clear()
        first = asyncio.create_task(
            http.post("/streams/h", json={}, headers=keyed(str(uuid.uuid4())))
        )
        try:
            await asyncio.wait_for(service.appended.wait(), 10)
            assert service.seen_after_commit == []  # its handler is still running
        finally:
            service.go_on.set()
        done = await first
        assert done.status_code == 201, done.text
        [woken] = service.seen_after_commit
        assert await woken == 1
        service.seen_after_commit.clear()
        died = await http.post("/streams/i?fault=crash", json={}, headers=keyed(str(uuid.uuid4())))
        assert died.status_code == 500
        assert service.seen_after_commit == []
        # Unkeyed: the handler's transactions committed as they ended, so at once.
        plain = await http.post("/streams/j", json={}, headers={ACTOR.decode(): "alice"})
        assert plain.status_code == 201
        [woken] = service.seen_after_commit
        assert await woken == 1


async def test_a_database_lost_before_the_commit_applies_nothing(service: Service) -> None:
    key = str(uuid.uuid4())
    async with client(service) as http:
        lost = await http.post("/streams/c?fault=terminate", json={}, headers=keyed(key))
        assert lost.status_code == 503, lost.text
        assert lost.json()["error"]["code"] == "unavailable"
        assert await service.events("c") == 0
        done = await http.post("/streams/c", json={}, headers=keyed(key))
        assert done.status_code == 201 and done.json()["events"] == 1


async def test_a_duplicate_waits_for_the_first_and_answers_what_it_answered(
    service: Service,
) -> None:
    key = str(uuid.uuid4())
    service.go_on.clear()  # the first holds its claim, uncommitted
    async with client(service) as http:
        first = asyncio.create_task(http.post("/streams/d", json={}, headers=keyed(key)))
        await asyncio.wait_for(service.appended.wait(), 30)
        second = asyncio.create_task(http.post("/streams/d", json={}, headers=keyed(key)))

        async def duplicate_waits() -> bool:
            assert service.raw is not None
            waiting = await service.raw.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND query LIKE '%idempotency%'"""
            )
            return bool(waiting)

        await eventually(duplicate_waits, within=30, what="the duplicate waiting on the claim")
        assert not second.done()
        service.go_on.set()
        one, two = await asyncio.gather(first, second)
    assert one.status_code == two.status_code == 201
    assert one.json() == two.json()
    assert await service.events("d") == 1


async def test_a_claim_rolled_back_with_a_savepoint_is_claimed_again(service: Service) -> None:
    key = str(uuid.uuid4())
    async with client(service) as http:
        assert (await http.post("/streams/e", json={})).status_code == 201  # no key
        first = await http.post("/streams/e?fault=conflict", json={}, headers=keyed(key))
        assert first.status_code == 201, first.text
        again = await http.post("/streams/e?fault=conflict", json={}, headers=keyed(key))
        assert again.json() == first.json()
    assert await service.events("e") == 2


async def test_keys_are_per_caller_and_per_request(service: Service) -> None:
    key = str(uuid.uuid4())
    async with client(service) as http:
        alice = await http.post("/streams/f", json={"n": 1}, headers=keyed(key))
        bob = await http.post("/streams/f", json={"n": 1}, headers=keyed(key, "bob"))
        assert alice.json()["id"] != bob.json()["id"]
        other = await http.post("/streams/f", json={"n": 2}, headers=keyed(key))
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        elsewhere = await http.post("/streams/g", json={"n": 1}, headers=keyed(key))
        assert elsewhere.status_code == 422
    assert await service.events("f") == 2
    assert await service.events("g") == 0


async def test_keys_are_kept_for_their_time_then_forgotten(service: Service) -> None:
    key = str(uuid.uuid4())
    async with client(service) as http:
        first = await http.post("/streams/h", json={}, headers=keyed(key))
        table = f"{service.store.schema}.idempotency"
        assert await idempotency.prune(service.pool, service.store.schema, 24 * 3600) == 0
        await service.pool.execute(f"UPDATE {table} SET created_at = now() - interval '25 hours'")
        assert await idempotency.prune(service.pool, service.store.schema, 24 * 3600) == 1
        later = await http.post("/streams/h", json={}, headers=keyed(key))
        assert later.json()["id"] != first.json()["id"]
    assert await service.events("h") == 2


def test_the_fingerprint_ignores_a_multipart_boundary_wherever_chunks_split_it() -> None:
    def body(boundary: bytes) -> bytes:
        return b"--" + boundary + b"\r\ndata\r\n--" + boundary + b"--\r\n"

    def digest(boundary: bytes, size: int) -> bytes:
        hashed = idempotency.BodyHash(boundary)
        whole = body(boundary)
        for i in range(0, len(whole), size):
            hashed.update(whole[i : i + size])
        return hashed.digest()

    expected = digest(b"a" * 32, 1000)
    for size in (1, 2, 3, 7, 31, 32, 33):
        assert digest(b"b" * 32, size) == expected
        assert digest(b"0123456789" * 3, size) == expected
    other = idempotency.BodyHash(b"a" * 32)
    other.update(body(b"a" * 32).replace(b"data", b"date"))
    assert other.digest() != expected
