"""A start stuck on a lock held elsewhere fails after `FILES_START_TIMEOUT_S` rather than
answer `starting` for ever (README, Operating): its process exits, to be started again,
with a log line naming what it waited on."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.kit import projections
from shared.kit.embedded import free_ports
from shared.kit.stack import Stack
from tests.conftest import eventually

# Well past the 5 s a start is waited for before the process serves /healthz.
BOUND_S = 8


@pytest.mark.timeout(120)
async def test_a_start_waiting_on_the_schema_lock_fails_once_its_bound_has_passed(
    stack: Stack, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(stack.env["FILES_DATABASE_URL"])
    log = tmp_path / "datasets.log"
    try:
        # Held as another process's long migration holds it.
        await conn.execute(f"SELECT pg_advisory_lock({projections.DDL_LOCK})")
        [port] = free_ports(1, set())
        spawned = time.monotonic()
        with log.open("wb") as out:
            child = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "services.datasets", "--host", "127.0.0.1"),
                *("--port", str(port)),
                env={**stack.env, "FILES_START_TIMEOUT_S": str(BOUND_S)},
                stdout=out,
                stderr=out,
            )
        try:
            url = f"http://127.0.0.1:{port}"

            async def starting() -> bool:
                try:
                    async with httpx.AsyncClient(timeout=2) as client:
                        answer = await client.get(f"{url}/readyz")
                except httpx.TransportError:
                    return False
                return answer.status_code == 503 and answer.json()["reason"] == "starting"

            # Alive and starting meanwhile, as before.
            await eventually(starting, within=60, what="datasets answering as it starts")

            try:
                await asyncio.wait_for(child.wait(), BOUND_S + 30)
            except TimeoutError:
                raise AssertionError("the stuck start's process did not end") from None
            assert child.returncode != 0
            # Given its bound first (counted from the step it waits in).
            assert time.monotonic() - spawned >= BOUND_S
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    finally:
        await conn.close()  # the lock with it
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    [stuck] = [line for line in lines if line.get("event") == "service.start_stuck"]
    assert "pg_advisory_xact_lock" in stuck["waiting_on"], stuck
    assert stuck["still_for_s"] == BOUND_S
