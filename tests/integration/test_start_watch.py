"""A start's watch (`service.StartWatch`) takes a long statement at work for progress and
a lock wait for a stuck start; a rebuild tells it of each index it makes again."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Iterator, Sequence

import asyncpg
import httpx
import pytest
import structlog

from shared.contracts import catalog as cat
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit import db, service
from shared.kit.eventstore import EventStore
from shared.kit.projections import Projection, rebuild
from shared.kit.reactions import Received
from shared.kit.service import Parts, Runtime, create_app
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, eventually

LOCK = 99_731


class Told:
    """A watch that keeps what it is told."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.worked_on = 0

    def at(self, step: str) -> None:
        self.steps.append(step)

    def progressed(self) -> None:
        pass

    @contextlib.contextmanager
    def working_on(self, conn: db.Conn) -> Iterator[None]:
        self.worked_on += 1
        yield


async def test_a_rebuild_tells_its_watch_of_each_index_it_makes_again(pool: asyncpg.Pool) -> None:
    schema = f"w{uuid.uuid4().hex[:8]}"
    projection = Projection(
        name=f"{schema}.names",
        tables=(f"{schema}.names",),
        ddl=f"""CREATE TABLE IF NOT EXISTS {schema}.names (id uuid PRIMARY KEY, name text);
                CREATE INDEX IF NOT EXISTS names_name ON {schema}.names (name);
                CREATE INDEX IF NOT EXISTS names_upper ON {schema}.names (upper(name));""",
        rebuilt_without=("names_name", "names_upper"),
    )

    @projection.on(cat.FileRenamed)
    async def renamed(conn: db.Conn, events: Sequence[Received[cat.FileRenamed]]) -> None:
        await conn.executemany(
            f"INSERT INTO {schema}.names (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(e.event.file_id, e.event.name) for e in events],
        )

    store = EventStore(schema)
    async with pool.acquire() as conn, conn.transaction():
        await store.setup(conn)
        await projection.setup(conn)
        written = envelopes_of(
            [Change(f"file-{n}", 1, cat.FileRenamed(file_id=uuid.uuid4(), name="x")) for n in "ab"],
            Cause(actor="test", correlation_id="test"),
        )
        await store.append(conn, written)
    told = Told()
    assert await rebuild(pool, store, projection, progress=told) == 2
    assert told.steps == [
        f"rebuilding {schema}.names: index names_name",
        f"rebuilding {schema}.names: index names_upper",
    ]
    assert told.worked_on == 1
    await pool.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.parametrize("waits_on_a_lock", [False, True])
async def test_a_start_running_a_long_statement_goes_on_and_one_waiting_on_a_lock_fails(
    monkeypatch: pytest.MonkeyPatch, database_url: str, pool: asyncpg.Pool, waits_on_a_lock: bool
) -> None:
    """A step whose one statement (an index of a large table: here a sleep) outlasts the
    bound tells no progress, but the database shows it at work: the start goes on. One
    waiting as long on a lock held elsewhere is stuck, and fails as before."""
    monkeypatch.setattr(service, "SERVE_DURING_START_S", 0.0)
    monkeypatch.setattr(service, "settle_heap", lambda: None)
    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    bound_s = 0.5
    parts = Parts(
        "watch_test",
        Settings(service_key=SERVICE_KEY, start_timeout_s=bound_s, database_url=database_url),
    )
    holder = await asyncpg.connect(database_url)
    if waits_on_a_lock:
        await holder.execute(f"SELECT pg_advisory_lock({LOCK})")

    async def start() -> None:
        parts.start_watch.at("the test's index")
        async with pool.acquire() as conn:
            with parts.start_watch.working_on(conn):
                if waits_on_a_lock:
                    await conn.execute(f"SELECT pg_advisory_lock({LOCK})")
                else:
                    await conn.execute(f"SELECT pg_sleep({6 * bound_s})")

    async def stop() -> None:
        pass

    runtime = Runtime(parts)
    runtime.start = start  # type: ignore[method-assign]
    runtime.stop = stop  # type: ignore[method-assign]
    app = create_app(runtime, "watch test")
    transport = httpx.ASGITransport(app=app)
    try:
        with structlog.testing.capture_logs() as logs:
            async with (
                asyncio.timeout(60),
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://service") as client,
            ):
                assert (await client.get("/healthz")).status_code == 200

                async def ended() -> bool:
                    return bool(raised) or not runtime.starting

                await eventually(ended, within=30, what="the start ended or given up")
    finally:
        await holder.close()
    stuck = [line for line in logs if line["event"] == "service.start_stuck"]
    if waits_on_a_lock:
        assert raised == [signal.SIGTERM]
        assert [s["waiting_on"] for s in stuck] == ["the test's index"]
    else:
        assert not runtime.starting and raised == [] and stuck == []
        assert any(line["event"] == "service.start_busy" for line in logs)
