"""asyncpg pools that speak JSON natively."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

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
    await conn.set_type_codec("json", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_out, decoder=_jsonb_in, schema="pg_catalog", format="binary"
    )


class PooledConnection(asyncpg.Connection):
    """A pooled connection handed back without asyncpg's reset query (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL): that is a round trip and four statements on every
    release, and the small-file pipeline releases a connection several times a file. Our
    code leaves no session state on a pooled connection: locks are transaction-scoped
    (`pg_advisory_xact_lock`), settings `SET LOCAL`, cursors live in transactions, and
    listeners have connections of their own. An open transaction is still rolled back,
    and listeners dropped, by asyncpg on release."""

    def get_reset_query(self) -> str:
        return ""


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
