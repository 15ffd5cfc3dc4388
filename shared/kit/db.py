"""asyncpg pools that speak JSON natively."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Literal, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction, TransactionState

IsolationLevel: TypeAlias = Literal[
    "read_committed", "read_uncommitted", "serializable", "repeatable_read"
]

# What a handler gets: a plain connection, or one lent by a pool.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# jsonb's binary form is a version byte, then the JSON text. Binary lets `COPY` (which
# asyncpg speaks only in binary) carry jsonb, so big appends can use it. `bytes` given
# for a jsonb are JSON already (the event store measures what it appends): sent as they
# are. (No JSON value is bytes: orjson would refuse them.)
def _jsonb_out(value: Any) -> bytes:
    if type(value) is bytes:
        return b"\x01" + value
    return b"\x01" + orjson.dumps(value)


def _jsonb_in(data: bytes) -> Any:
    return orjson.loads(memoryview(data)[1:])


async def _init(conn: asyncpg.Connection) -> None:
    # A connection made for a request sets itself up: no statement of the request's.
    token = bare.set(None)
    try:
        await conn.set_type_codec("json", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
        await conn.set_type_codec(
            "jsonb", encoder=_jsonb_out, decoder=_jsonb_in, schema="pg_catalog", format="binary"
        )
    finally:
        bare.reset(token)


# One durable WAL flush, through a record written now, so past every commit before it
# (XLogFlush of a non-transactional logical message; any wal_level, any role), unless
# the WAL is flushed far enough already. A transaction that only takes an xid would not
# do: its commit, having written no other WAL, is not flushed synchronously.
FLUSHED_PAST = """CASE WHEN pg_current_wal_flush_lsn() < {lsn}
    THEN pg_logical_emit_message(false, 'files', '', true) END"""
FLUSH = "SELECT " + FLUSHED_PAST.format(lsn="coalesce($1, pg_current_wal_insert_lsn())")


async def flush(conn: Conn | asyncpg.Pool, upto: int | None = None) -> None:
    """Make every commit so far durable, or the WAL up to `upto` (an LSN). Concurrent
    flushes group: they share a fsync."""
    await conn.execute(FLUSH, upto)


# Called as a transaction begins its commit, where a request's deadline is kept (the
# kit's `Deadline` sets it): from then the request is not cancelled, so its commit and
# the flush that makes it durable finish and its answer is sent. Cancelled halfway, a
# write may be made and answered as not (a client sending it again makes it twice).
committing: ContextVar[Callable[[], None] | None] = ContextVar("committing", default=None)
# Called as a pooled connection runs a statement outside any transaction, where an
# unkeyed write's deadline is kept (the kit's `Deadline` sets it): a write so is made at
# once, with no commit to mark it, and cancelled after it, the request would be
# answered "nothing applied". A bare read holds it too: which is which is not known.
bare: ContextVar[Callable[[], None] | None] = ContextVar("bare", default=None)


class DurableTransaction(Transaction):
    """A transaction of a pooled connection that, once committed, makes its commit
    durable before it returns, if it committed asynchronously (`owe_flush`).
    (asyncpg's stubs leave out the attributes read here: `_asyncpg` gives them.)"""

    __slots__ = ()

    @property
    def _asyncpg(self) -> Any:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self._committing()
        await self._end(super().__aexit__(*exc))

    async def commit(self) -> None:
        self._committing()
        await self._end(super().commit())

    def _committing(self) -> None:
        # A read-only transaction's commit makes nothing: the request stays cancellable
        # (a read's deadline kept after it would hold the database past the caller).
        hold = committing.get()
        if hold is not None and not self._asyncpg._nested and not self._asyncpg._readonly:
            hold()

    async def rollback(self) -> None:
        await self._end(super().rollback())

    async def _end(self, ending: Awaitable[None]) -> None:
        """The transaction's end, then its debt: flushed if it committed owing one."""
        try:
            await ending
        finally:
            owed = self._settle()
        if owed:
            await flush(self._asyncpg._connection)

    def _settle(self) -> bool:
        """Whether the transaction committed owing a flush; the debt is cleared once it
        has ended either way (a savepoint's end is not the commit)."""
        me = self._asyncpg
        if me._nested or me._state is TransactionState.STARTED:
            return False
        conn: PooledConnection = me._connection
        owed = conn._owes_flush and me._state is TransactionState.COMMITTED
        conn._owes_flush = False
        return owed


def flushes_after_commit(conn: Conn) -> bool:
    """Whether the connection's transaction makes itself durable after its commit if
    it owes it (`owe_flush`): a pooled connection's `transaction()`. Not a connection
    of `connect()`, nor a transaction begun by hand."""
    raw: Any = conn._con if isinstance(conn, PoolConnectionProxy) else conn  # type: ignore[attr-defined]
    top = raw._top_xact  # the transaction opened by `transaction()`, if any
    return isinstance(raw, PooledConnection) and isinstance(top, DurableTransaction)


def owe_flush(conn: Conn) -> None:
    """The transaction (`flushes_after_commit`) will commit asynchronously: it flushes
    the WAL once committed, before it returns."""
    raw: Any = conn._con if isinstance(conn, PoolConnectionProxy) else conn  # type: ignore[attr-defined]
    raw._owes_flush = True


# SQL: switch the transaction's commit to asynchronous where `flushes_after_commit`
# (the boolean parameter) and nothing stronger than a local flush is asked (an operator's
# synchronous standbys, which the flush does not wait for) nor weaker (commits already
# asynchronous: nothing to make durable). True if it did: then `owe_flush`.
DEFER_COMMIT = """(CASE WHEN {flushes}
    AND current_setting('synchronous_commit') <> 'off'
    AND current_setting('synchronous_standby_names') = ''
    THEN set_config('synchronous_commit', 'off', true) = 'off' ELSE false END)"""


class PooledConnection(asyncpg.Connection):
    """A pooled connection handed back without asyncpg's reset query (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL): that is a round trip and four statements on every
    release, and the small-file pipeline releases a connection several times a file. Our
    code leaves no session state on a pooled connection: locks are transaction-scoped
    (`pg_advisory_xact_lock`), settings `SET LOCAL`, cursors live in transactions, and
    listeners have connections of their own. An open transaction is still rolled back,
    and listeners dropped, by asyncpg on release."""

    # Set by an append that committed asynchronously (`owe_flush`), until its
    # transaction ends.
    _owes_flush = False

    def get_reset_query(self) -> str:
        return ""

    def _bare(self) -> None:
        me: Any = self
        if me._top_xact is None and not me.is_in_transaction():
            hold = bare.get()
            if hold is not None:
                hold()

    # Every statement passes through one of these (fetch*, execute with arguments:
    # `_execute`; executemany, fetchmany: `_executemany`; COPY in: `_copy_in*`), and a
    # transaction's BEGIN runs with `_top_xact` already set.
    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109 - asyncpg's
        self._bare()
        return await super().execute(query, *args, timeout=timeout)

    async def _execute(self, *args: Any, **kwargs: Any) -> Any:
        self._bare()
        return await super()._execute(*args, **kwargs)  # type: ignore[misc]

    async def _executemany(self, *args: Any, **kwargs: Any) -> Any:
        self._bare()
        return await super()._executemany(*args, **kwargs)  # type: ignore[misc]

    async def _copy_in(self, *args: Any, **kwargs: Any) -> Any:
        self._bare()
        return await super()._copy_in(*args, **kwargs)  # type: ignore[misc]

    async def copy_records_to_table(self, *args: Any, **kwargs: Any) -> Any:
        self._bare()
        return await super().copy_records_to_table(*args, **kwargs)

    def transaction(
        self,
        *,
        isolation: IsolationLevel | None = None,
        readonly: bool = False,
        deferrable: bool = False,
    ) -> DurableTransaction:
        me: Any = self
        me._check_open()
        return DurableTransaction(self, isolation, readonly, deferrable)

    async def reset(self, *, timeout: float | None = None) -> None:  # noqa: ASYNC109 - asyncpg's
        self._owes_flush = False  # an open transaction is rolled back
        await super().reset(timeout=timeout)


async def connect_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, kind: type[asyncpg.Pool] = asyncpg.Pool
) -> asyncpg.Pool:
    """A pool of `kind` (asyncpg's, or a subclass: the services' keyed writes)."""
    make: Any = kind  # asyncpg's types cannot say "a Pool of plain Connections"
    pool = make(
        dsn,
        connection_class=PooledConnection,
        record_class=asyncpg.Record,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        init=_init,
    )
    await pool
    assert isinstance(pool, asyncpg.Pool)
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await _init(conn)
    return conn
