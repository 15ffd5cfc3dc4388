"""Read models as disposable tables, fed by events, rebuildable from the store.

A projection maps event contracts to batch handlers (`@projection.on(FileMoved)`, see
`shared.kit.reactions`). The same handlers serve the live path (inline in a write
transaction, or from a consumer) and a rebuild, which is why a rebuild gives the same
rows.

Each read model has a version (`Projection.version`), recorded in its schema's
`read_models` table when it is built. Raise it when a change to its tables or handlers
makes the rows it has wrong: at its next start the service rebuilds it from the store
(`ensure_current`) before it serves or consumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg

from shared.contracts.envelope import Envelope
from shared.kit.db import Conn
from shared.kit.eventstore import EventStore
from shared.kit.logs import log
from shared.kit.reactions import E, Received, Triggers, received

BatchHandler = Callable[[Conn, Sequence[Received[E]]], Awaitable[None]]
H = TypeVar("H", bound=Callable[..., Awaitable[None]])

# The advisory lock services' start-up DDL (and migrations) take: they start side by side
# against one database.
DDL_LOCK = 7314


class Progress(Protocol):
    """A start's watch (`service.StartWatch`), told how a rebuild goes: each step it
    begins, its progress within one, and the connection it works on (whose statement
    the watch may look at in the database before it takes the start for stuck)."""

    def at(self, step: str) -> None: ...

    def progressed(self) -> None: ...

    def working_on(self, conn: Conn) -> contextlib.AbstractContextManager[None]: ...


# A set-based handler is SQL over a relation of its events, `e`, with these columns;
# given the relation's text, it returns its statements (`Projection.on(..., sql=...)`),
# run in order until one answers false (the rest has nothing to do: no round trip).
Statements = Callable[[str], Sequence[str]]
# The live path's relation: the events given, as four arrays ($1-$4, `given`).
GIVEN = (
    "unnest($1::jsonb[], $2::int[], $3::timestamptz[], $4::text[])"
    " AS e(data, stream_version, occurred_at, actor)"
)


def given(events: Sequence[Received[Any]]) -> tuple[list[Any], ...]:
    """The arguments of GIVEN for these events (their data at the contract's version)."""
    return (
        [e.data for e in events],
        [e.stream_version for e in events],
        [e.occurred_at for e in events],
        [e.actor for e in events],
    )


def _stored(store: EventStore) -> str:
    """A rebuild's relation: a run of the store's events of one type and version, read
    by PostgreSQL where they lie ($1 < position <= $2, type $3, schema version $4), so
    none of them becomes a Python object."""
    return f"""(SELECT data, stream_version, occurred_at, metadata->>'actor' AS actor
                FROM {store.table}
                WHERE position > $1 AND position <= $2 AND type = $3 AND schema_version = $4
                ORDER BY position) AS e"""


@dataclass
class Projection:
    name: str
    ddl: str
    tables: Sequence[str]
    # Raised when the rows it keeps must be made again (see the module's doc).
    version: int = 1
    # Fed by its own service's store, so a rebuild can replay it. A mirror of another
    # context's events (datasets' tree) is not: it follows its consumer.
    replayable: bool = True
    # Indexes of its tables that only readers use (search, orders), by name: a rebuild
    # drops them and makes them again once the rows are in, as a bulk load does (kept
    # up row by row, a trigram index cost a rebuild a quarter of its time).
    rebuilt_without: Sequence[str] = ()
    # Statements run at start once the DDL has committed, in a transaction of their own
    # (`migrate`): in the DDL's, an UPDATE of rows would run while its ALTER TABLEs hold
    # their tables (ACCESS EXCLUSIVE, taken even when the column is there) to commit,
    # and every reader of them would wait for it.
    migration: str = ""
    triggers: Triggers = field(init=False)
    # Contract type -> the statements of its set-based handler (see `on`).
    statements: dict[str, Statements] = field(init=False, default_factory=dict)
    # Contract type -> the tables its set-based handler's statements read or write.
    touches: dict[str, frozenset[str]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.triggers = Triggers(self.name)

    def on(
        self, contract: type[E], *, sql: Statements | None = None, touches: Sequence[str] = ()
    ) -> Callable[[H], H]:
        """Register the handler of a contract. `sql`: the handler is those statements run
        over GIVEN (it calls them itself, see `given`), so that a rebuild can run the
        very same statements over the store's rows instead, set-based, in PostgreSQL:
        the handler stays the one description of the rows an event makes. `touches`:
        every table those statements read or write; two set-based handlers that touch
        no table in common give the same rows in either order, so a rebuild runs each
        one once over all its runs between the other's (see `_replay`)."""

        def register(handler: H) -> H:
            self.triggers.register(contract, handler)
            if sql is not None:
                self.statements[contract.type] = sql
                if touches:
                    self.touches[contract.type] = frozenset(touches)
            return handler

        return register

    async def setup(self, conn: Conn) -> None:
        await conn.execute(self.ddl)

    async def migrate(self, conn: Conn) -> None:
        """`migration`, in a transaction of its own, after `setup`'s has committed; under
        the start-up DDL's advisory lock, so replicas starting together run it one at a
        time (the statements check whether it is still to do)."""
        if self.migration:
            async with conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock({DDL_LOCK})")
                await conn.execute(self.migration)

    async def apply(self, conn: Conn, envelopes: Sequence[Envelope]) -> None:
        """The service's own envelopes (made here, or read back from its store, where
        each was valid when appended): a contract is parsed only if a handler reads it."""
        # Consecutive events of one type go to their handler together, set-based;
        # runs keep the store's order between types.
        triggers = self.triggers.by_type
        for event_type, run in itertools.groupby(envelopes, key=lambda e: e.type):
            found = triggers.get(event_type)
            if found is not None:
                contract, handler = found
                await handler(conn, received(list(run), contract, lazy=True))

    async def apply_received(self, conn: Conn, events: Sequence[Received[Any]]) -> None:
        """Events a reaction received, parsed already: passed on as they are."""
        triggers = self.triggers.by_type
        for event_type, run in itertools.groupby(events, key=lambda e: e.type):
            found = triggers.get(event_type)
            if found is not None:
                await found[1](conn, list(run))


# Writers project, then append: they lock a read model's tables, then the store's head
# row. A rebuild takes them in the same order (a TRUNCATE after the head lock would
# deadlock with a writer caught in between), and waits at most LOCK_WAIT for them, less
# than PostgreSQL's deadlock check (deadlock_timeout, 1 s), so that if it ever meets a
# writer the other way round, it is the rebuild that lets go, and tries again.
LOCK_WAIT = "500ms"
# For the indexes a rebuild makes again: with the default 64MB a sort of 1,000,000 hex
# digests spilled to disk (bench/rebuild.py: files_sha256 2.07 -> 1.18 s).
INDEX_BUILD_MEMORY = "256MB"
REBUILD_TRIES_S = 120.0


def _versions_ddl(schema: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {schema}.read_models (
                   name text PRIMARY KEY,
                   version integer NOT NULL,
                   rebuilt_at timestamptz
               )"""


async def recorded_version(conn: Conn, schema: str, projection: Projection) -> int:
    """The version its rows were built by: 1 for rows from before versions were kept."""
    await conn.execute(_versions_ddl(schema))
    found: int | None = await conn.fetchval(
        f"SELECT version FROM {schema}.read_models WHERE name = $1", projection.name
    )
    return 1 if found is None else found


async def rebuild(
    pool: asyncpg.Pool,
    store: EventStore,
    projection: Projection,
    *,
    only_if_stale: bool = False,
    progress: Progress | None = None,
) -> int:
    """Drop the projection's rows and replay the store into it; returns events replayed.

    Runs in one transaction holding the tables and the store's append lock, so no write
    interleaves with the replay; readers of the tables wait until it commits. It records
    the projection's version. `only_if_stale`: only if the recorded version is older
    (looked at under the locks, so of replicas starting together one rebuilds).
    `progress` is told as the replay goes on, and of each index made again after it (a
    start's watch: one index of a large store, a trigram one, may take longer than the
    watch waits for a step).
    """
    tables = ", ".join(projection.tables)
    deadline = time.monotonic() + REBUILD_TRIES_S
    schema = store.schema
    while True:
        try:
            async with pool.acquire() as conn, contextlib.AsyncExitStack() as working:
                if progress is not None:
                    working.enter_context(progress.working_on(conn))
                await working.enter_async_context(conn.transaction())
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
                await conn.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
                await store.lock(conn)
                await conn.execute("SET LOCAL lock_timeout = 0")
                was = await recorded_version(conn, schema, projection)
                if only_if_stale and was >= projection.version:
                    return 0
                await conn.execute(f"TRUNCATE {tables}")
                dropped = await conn.fetch(
                    """SELECT schemaname, indexname, indexdef FROM pg_indexes
                       WHERE schemaname || '.' || tablename = ANY($1) AND indexname = ANY($2)""",
                    list(projection.tables),
                    list(projection.rebuilt_without),
                )
                for index in dropped:
                    await conn.execute(f"DROP INDEX {index['schemaname']}.{index['indexname']}")
                replayed = await _replay(conn, store, projection, progress)
                await conn.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
                for index in dropped:
                    if progress is not None:
                        progress.at(f"rebuilding {projection.name}: index {index['indexname']}")
                    await conn.execute(index["indexdef"])
                await conn.execute(
                    f"""INSERT INTO {schema}.read_models (name, version, rebuilt_at)
                        VALUES ($1, $2, now())
                        ON CONFLICT (name) DO UPDATE
                        SET version = excluded.version, rebuilt_at = excluded.rebuilt_at""",
                    projection.name,
                    projection.version,
                )
                return replayed
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(random.uniform(0.05, 0.25))  # let the writers through


# Positions a rebuild looks at a time to find the runs of one type in them (a run of a
# set-based handler's type is one statement of at most this many events).
WINDOW = 100_000
# Envelopes read into Python a time, for the handlers that are not set-based.
PAGE = 5000


async def _replay(
    conn: Conn,
    store: EventStore,
    projection: Projection,
    progress: Progress | None = None,
) -> int:
    """The store's events through the projection's handlers, in position order, by runs
    of one type and schema version: a run of a set-based handler's type at its contract's
    version is its statements over the store's rows; a run of another handled type is
    read and applied as the live path does; a run no handler names is not read."""
    triggers = projection.triggers.by_type
    replayed = 0
    after = 0
    head = await store.head(conn)
    while after < head:
        upto = min(after + WINDOW, head)
        # Where each run of one (type, schema_version) in the window starts: one pass
        # along the primary key, no sort; a run ends where the next one starts.
        starts = await conn.fetch(
            f"""SELECT position, type, schema_version
                FROM (SELECT position, type, schema_version,
                             lag(type) OVER w AS was, lag(schema_version) OVER w AS was_version
                      FROM {store.table} WHERE position > $1 AND position <= $2
                      WINDOW w AS (ORDER BY position)) x
                WHERE was IS DISTINCT FROM type OR was_version IS DISTINCT FROM schema_version
                ORDER BY position""",
            after,
            upto,
        )
        if not starts:
            after = upto
            continue
        runs = [
            (start["type"], start["schema_version"], start["position"], following - 1)
            for start, following in zip(
                starts, [s["position"] for s in starts[1:]] + [upto + 1], strict=True
            )
        ]
        # Set-based runs not run yet: (type, version) -> [first, last], in the order
        # they came. Every handled run since the first of them is among them and their
        # handlers touch no table in common, so each key's statements run once, over its
        # range: the store's rows of that type and version in it are exactly its runs'.
        pending: dict[tuple[str, int], list[int]] = {}
        for event_type, version, first, last in runs:
            # Positions are dense (the head row numbers them), so a run is its range.
            replayed += last - first + 1
            found = triggers.get(event_type)
            if found is None:
                continue
            if event_type in projection.statements and version == found[0].version:
                key = (event_type, version)
                if not _commute(projection, event_type, pending):
                    await _run(conn, store, projection, pending)
                pending.setdefault(key, [first, last])[1] = last
                continue
            await _run(conn, store, projection, pending)
            position = first - 1
            while position < last:  # not read again once the run's last is applied
                envelopes = await store.read_after(conn, position, PAGE, upto=last)
                if not envelopes:
                    break
                await projection.apply(conn, envelopes)
                position = envelopes[-1].position
                if progress is not None:
                    progress.progressed()
        await _run(conn, store, projection, pending)
        after = upto
        if progress is not None:
            progress.progressed()
    return replayed


def _commute(
    projection: Projection, event_type: str, pending: dict[tuple[str, int], list[int]]
) -> bool:
    """Whether a run of this set-based type may join the pending ones: its handler and
    each other pending one's touch tables declared disjoint."""
    touches = projection.touches.get(event_type)
    return all(
        other == event_type
        or (
            touches is not None
            and (theirs := projection.touches.get(other)) is not None
            and not touches & theirs
        )
        for other, _ in pending
    )


async def _run(
    conn: Conn, store: EventStore, projection: Projection, pending: dict[tuple[str, int], list[int]]
) -> None:
    """The pending set-based runs' statements over the store's rows, then none pending."""
    relation = _stored(store)
    for (event_type, version), (first, last) in pending.items():
        for statement in projection.statements[event_type](relation):
            done = await conn.fetchval(statement, first - 1, last, event_type, version)
            if done is False:
                break
    pending.clear()


async def ensure_current(
    pool: asyncpg.Pool,
    store: EventStore,
    projection: Projection,
    progress: Progress | None = None,
) -> int:
    """At a service's start, before it serves or consumes: a read model whose recorded
    version is older than the code's is rebuilt from the store; returns the events
    replayed (0 when it was current). One recorded newer is a replica of the release
    before restarting while the next rolls out: rebuilt with this code, it would hold
    rows the newer replicas (which look only at their start) then serve. It is served
    as it is; rolling a release back past a read model's version means `files rebuild`
    of it."""
    async with pool.acquire() as conn:
        was = await recorded_version(conn, store.schema, projection)
    if was > projection.version:
        log.warning(
            "projection.newer_than_code",
            projection=projection.name,
            recorded=was,
            version=projection.version,
        )
    if was >= projection.version:
        return 0
    started = time.monotonic()
    replayed = await rebuild(pool, store, projection, only_if_stale=True, progress=progress)
    log.info(
        "projection.rebuilt",
        projection=projection.name,
        was=was,
        version=projection.version,
        events=replayed,
        seconds=round(time.monotonic() - started, 3),
    )
    return replayed
