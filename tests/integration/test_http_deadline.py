"""The kit's `Deadline`: a service stops waiting on its own database once the gateway,
which said how long it would wait (`Files-Deadline-Ms`), has given up; an answer already
begun goes on, and so does a commit begun; a call that says nothing waits as before, and
so does an unkeyed write (cancelled, it may have been made and answered as not)."""

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
        assert problem["details"] == {"retry": True, "cause": "timeout"}

        # The statement was cancelled in PostgreSQL too, its connection given back.
        async def stopped() -> bool:
            return await sleeping(pool) == 0

        await eventually(stopped, within=10, what="the statement cancelled")

        # A deadline met, none given, an answer begun before it: as before.
        assert (await service.get("/quick", headers={DEADLINE_HEADER: "5000"})).json() == {"one": 1}
        assert (await service.get("/quick")).status_code == 200
        got = await service.get("/streamed", headers={DEADLINE_HEADER: "300"})
        assert (got.status_code, got.content) == (200, b"begun;ended")


async def test_a_commit_begun_and_an_unkeyed_write_are_not_given_up_on(pool: asyncpg.Pool) -> None:
    """Cancelled during its COMMIT (or the flush that makes it durable), a write was made
    and answered "nothing of it was applied": a client that tried again made it twice.
    A commit once begun ends, and its answer is sent; an unkeyed write is not given up on
    at all (its handler may commit more than once)."""
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
            names = await pool.fetch(f"SELECT name FROM {table} ORDER BY name")
            assert [r["name"] for r in names] == ["GET", "POST"]
    finally:
        await pool.execute(f"DROP TABLE {table}; DROP FUNCTION {table}_slow()")
