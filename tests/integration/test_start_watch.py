"""A start's watch (`service.StartWatch`) takes a long statement at work for progress and
a lock wait for a stuck start; a rebuild tells it of each index it makes again."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

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
# How long the tests' starts may go without moving.
BOUND_S = 0.5


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


async def started(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    step: Callable[[asyncpg.Connection], Awaitable[None]],
) -> tuple[Runtime, list[int], list[dict[str, Any]]]:
    """A service whose start runs `step` on a connection it names to its watch, bound
    to half a second without moving; once it ended or was given up: the service, the
    signals it raised, its log."""
    monkeypatch.setattr(service, "SERVE_DURING_START_S", 0.0)
    monkeypatch.setattr(service, "settle_heap", lambda: None)
    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    parts = Parts(
        "watch_test",
        Settings(service_key=SERVICE_KEY, start_timeout_s=BOUND_S, database_url=database_url),
    )

    async def start() -> None:
        parts.start_watch.at("the test's index")
        conn = await asyncpg.connect(database_url)
        try:
            with parts.start_watch.working_on(conn):
                await step(conn)
        finally:
            conn.terminate()

    async def stop() -> None:
        pass

    runtime = Runtime(parts)
    runtime.start = start  # type: ignore[method-assign]
    runtime.stop = stop  # type: ignore[method-assign]
    app = create_app(runtime, "watch test")
    transport = httpx.ASGITransport(app=app)
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
    return runtime, raised, logs


def went_on(runtime: Runtime, raised: list[int], logs: list[dict[str, Any]]) -> bool:
    stuck = [line for line in logs if line["event"] == "service.start_stuck"]
    busy = any(line["event"] == "service.start_busy" for line in logs)
    return not runtime.starting and raised == [] and stuck == [] and busy


def was_stuck(raised: list[int], logs: list[dict[str, Any]]) -> bool:
    stuck = [line["waiting_on"] for line in logs if line["event"] == "service.start_stuck"]
    return raised == [signal.SIGTERM] and stuck == ["the test's index"]


@pytest.mark.parametrize("waits_on_a_lock", [False, True])
async def test_a_start_running_a_long_statement_goes_on_and_one_waiting_on_a_lock_fails(
    monkeypatch: pytest.MonkeyPatch, database_url: str, waits_on_a_lock: bool
) -> None:
    """A step whose one statement (an index of a large table: here a sleep) outlasts the
    bound tells no progress, but the database shows it at work: the start goes on. One
    waiting as long on a lock held elsewhere (by an idle session) is stuck, and fails as
    before."""
    holder = await asyncpg.connect(database_url)
    if waits_on_a_lock:
        await holder.execute(f"SELECT pg_advisory_lock({LOCK})")

    async def step(conn: asyncpg.Connection) -> None:
        if waits_on_a_lock:
            await conn.execute(f"SELECT pg_advisory_lock({LOCK})")
        else:
            await conn.execute(f"SELECT pg_sleep({6 * BOUND_S})")

    try:
        runtime, raised, logs = await started(monkeypatch, database_url, step)
    finally:
        await holder.close()
    if waits_on_a_lock:
        assert was_stuck(raised, logs)
    else:
        assert went_on(runtime, raised, logs)


@pytest.mark.parametrize(
    "holder_is", ["active", "idle in transaction", "waiting", "waiting on its client"]
)
async def test_a_start_waiting_on_a_lock_goes_on_while_its_holder_works(
    monkeypatch: pytest.MonkeyPatch, database_url: str, holder_is: str
) -> None:
    """Waiting on a lock held by another process whose statement runs waiting on no lock
    (another replica's index build: here a sleep) is progress: the start goes on, and
    ends once the holder lets go. A holder idle in its transaction, or itself waiting on
    a lock, is none: the start is stuck after the bound, as before; so is one whose
    statement waits on its own client (a COPY its hung process stopped feeding)."""
    holder = await asyncpg.connect(database_url)
    other = await asyncpg.connect(database_url)
    working: asyncio.Task[Any] | None = None
    fed = asyncio.Event()
    await holder.execute(f"BEGIN; SELECT pg_advisory_xact_lock({LOCK})")
    if holder_is == "active":
        # Lets go of the lock when its transaction ends, after the statement.
        working = asyncio.ensure_future(holder.execute(f"SELECT pg_sleep({6 * BOUND_S}); COMMIT"))
    elif holder_is == "waiting":
        await other.execute(f"SELECT pg_advisory_lock({LOCK + 1})")
        working = asyncio.ensure_future(holder.execute(f"SELECT pg_advisory_lock({LOCK + 1})"))
    elif holder_is == "waiting on its client":
        await holder.execute("CREATE TEMP TABLE fed (x int)")

        async def rows() -> Any:
            yield (1,)
            await fed.wait()

        working = asyncio.ensure_future(holder.copy_records_to_table("fed", records=rows()))

    async def step(conn: asyncpg.Connection) -> None:
        await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK})")

    try:
        runtime, raised, logs = await started(monkeypatch, database_url, step)
    finally:
        for conn in (holder, other):
            conn.terminate()
        fed.set()
        if working is not None:
            with contextlib.suppress(Exception):
                await working
    if holder_is == "active":
        assert went_on(runtime, raised, logs)
    else:
        assert was_stuck(raised, logs)
