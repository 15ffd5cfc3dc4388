"""The kit's `Deadline`: a service stops waiting on its own database once the gateway,
which said how long it would wait (`Files-Deadline-Ms`), has given up; an answer already
begun goes on, and so does a commit begun, or an unkeyed write's statement outside a
transaction (it may have written); a call that says nothing waits as before."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from shared.kit.http import DEADLINE_HEADER, Deadline, install_errors
from tests.conftest import eventually

SLEEP = "SELECT pg_sleep(20), 'files deadline test'"


def app(pool: asyncpg.Pool, table: str = "") -> FastAPI:
    served = FastAPI()
    served.add_middleware(Deadline)
    install_errors(served)

    @served.get("/slow")
    async def slow() -> dict[str, Any]:
        async with pool.acquire() as conn:
            await conn.fetchval(SLEEP)
        return {"done": True}

    @served.get("/read-then-slow")
    async def read_then_slow() -> dict[str, Any]:
        # A read-only transaction's commit makes nothing: it must not end the deadline.
        async with pool.acquire() as conn:
            async with conn.transaction(readonly=True):
                await conn.fetchval("SELECT 1")
            await conn.fetchval(SLEEP)
        return {"done": True}

    @served.post("/internal/files")
    async def read_posted() -> dict[str, Any]:
        # A read sent as a POST (its ids too many for a URL): its bare statements are
        # reads, and it is given up on as a read is.
        return {"read": await pool.fetchval(SLEEP)}

    @served.post("/waits-then-writes/{name}")
    async def waits_then_writes(name: str) -> dict[str, Any]:
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchval(SLEEP)
            await conn.execute(f"INSERT INTO {table} VALUES ($1)", name)
        return {"made": name}

    @served.post("/bare-then-slow/{name}")
    async def bare_then_slow(name: str) -> dict[str, Any]:
        # Made at once, with no commit to mark it: from then it is not given up on.
        await pool.execute(f"INSERT INTO {table} VALUES ($1)", name)
        await pool.fetchval("SELECT pg_sleep(1.0)")
        return {"made": name}

    @served.get("/quick")
    async def quick() -> dict[str, Any]:
        return {"one": await pool.fetchval("SELECT 1")}

    @served.get("/made/{name}")
    @served.post("/made/{name}")
    async def made(name: str) -> dict[str, Any]:
        # Its commit runs the table's deferred trigger: slower than the caller's deadline.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"INSERT INTO {table} VALUES ($1)", name)
        return {"made": name}

    @served.get("/streamed")
    async def streamed() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"begun;"
            # Past the caller's deadline, once the answer began: it goes on.
            await pool.fetchval("SELECT pg_sleep(1.0)")
            yield b"ended"

        return StreamingResponse(body())

    return served


async def sleeping(pool: asyncpg.Pool) -> int:
    found: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", SLEEP
    )
    return found


async def test_a_call_past_its_callers_deadline_stops_waiting_on_the_database(
    pool: asyncpg.Pool,
) -> None:
    transport = httpx.ASGITransport(app=app(pool))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as service:
        began = time.monotonic()
        answer = await service.get("/slow", headers={DEADLINE_HEADER: "500"})
        took = time.monotonic() - began
        assert took < 5, took
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
        problem = answer.json()["error"]
        assert problem["code"] == "unavailable"
        assert problem["details"] == {"retry": True, "cause": "timeout", "applied": False}

        # The statement was cancelled in PostgreSQL too, its connection given back.
        async def stopped() -> bool:
            return await sleeping(pool) == 0

        await eventually(stopped, within=10, what="the statement cancelled")

        # A read-only transaction committed first does not hold the deadline off.
        began = time.monotonic()
        answer = await service.get("/read-then-slow", headers={DEADLINE_HEADER: "500"})
        assert answer.status_code == 503, answer.text
        assert time.monotonic() - began < 5
        await eventually(stopped, within=10, what="the statement cancelled")

        # A read sent as a POST is given up on too.
        answer = await service.post("/internal/files", headers={DEADLINE_HEADER: "500"})
        assert answer.status_code == 503, answer.text
        await eventually(stopped, within=10, what="the statement cancelled")

        # A deadline met, none given, an answer begun before it: as before.
        assert (await service.get("/quick", headers={DEADLINE_HEADER: "5000"})).json() == {"one": 1}
        assert (await service.get("/quick")).status_code == 200
        got = await service.get("/streamed", headers={DEADLINE_HEADER: "300"})
        assert (got.status_code, got.content) == (200, b"begun;ended")


async def test_a_write_is_given_up_on_only_before_it_may_have_written(
    pool: asyncpg.Pool,
) -> None:
    """Cancelled during its COMMIT (or the flush that makes it durable), a write was made
    and answered "nothing of it was applied": a client that tried again made it twice.
    A commit once begun ends, and its answer is sent; so does an unkeyed write that ran
    a statement outside a transaction. One that waited before either is given up on,
    and nothing of it is made."""
    table = f"deadline_made_{uuid.uuid4().hex[:12]}"
    await pool.execute(
        f"""CREATE TABLE {table} (name text PRIMARY KEY);
        CREATE FUNCTION {table}_slow() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN PERFORM pg_sleep(1.0); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON {table}
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {table}_slow();"""
    )
    try:
        transport = httpx.ASGITransport(app=app(pool, table))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as service:
            for method in ("GET", "POST"):
                answer = await service.request(
                    method, f"/made/{method}", headers={DEADLINE_HEADER: "300"}
                )
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"made": method}
            answer = await service.post("/bare-then-slow/bare", headers={DEADLINE_HEADER: "300"})
            assert answer.status_code == 200, answer.text
            answer = await service.post(
                "/waits-then-writes/never", headers={DEADLINE_HEADER: "300"}
            )
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["details"]["applied"] is False
            names = await pool.fetch(f"SELECT name FROM {table} ORDER BY name")
            assert [r["name"] for r in names] == ["GET", "POST", "bare"]
    finally:
        await pool.execute(f"DROP TABLE {table}; DROP FUNCTION {table}_slow()")
