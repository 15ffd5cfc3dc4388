"""A service's /readyz while its database hangs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI

from shared.kit import db, service
from shared.kit.embedded import start_postgres
from shared.kit.service import Parts, Runtime
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, eventually


async def test_readyz_answers_503_at_its_bound_while_the_database_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stopped (SIGSTOP, its backends too: connections open, nothing
    answered): each probe is 503 within READY_PROBE_S, not held until the database
    answers the cancel of its query; the query given up on holds one of the pool's
    connections, however many probes came; once the database answers again, 200."""
    monkeypatch.setattr(service, "READY_PROBE_S", 0.5)
    postgres = start_postgres(tmp_path / "pg", durable=False)  # its own: it is stopped
    parts = Parts("probe", Settings(service_key=SERVICE_KEY))
    parts.pool = await db.connect_pool(postgres.url, min_size=4, max_size=8)
    app = FastAPI()
    Runtime(parts).mount(app)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            assert (await client.get("/readyz")).status_code == 200
            # Probes at once on a healthy database (the kubelet's, each gateway's) are
            # all ready: they share one query.
            at_once = [client.get("/readyz") for _ in range(4)]
            assert [a.status_code for a in await asyncio.gather(*at_once)] == [200] * 4
            top = psutil.Process(postgres.proc.pid)
            hung = [top, *top.children(recursive=True)]
            try:
                for process in hung:
                    process.send_signal(signal.SIGSTOP)
                for _ in range(5):
                    started = time.monotonic()
                    async with asyncio.timeout(5):
                        answer = await client.get("/readyz")
                    assert answer.status_code == 503, answer.text
                    assert time.monotonic() - started < service.READY_PROBE_S + 0.5
                # Several at once (the kubelet's, each gateway's) share the one query.
                together = [client.get("/readyz") for _ in range(4)]
                assert {a.status_code for a in await asyncio.gather(*together)} == {503}
                busy = parts.pool.get_size() - parts.pool.get_idle_size()
                assert busy <= 1
            finally:
                for process in hung:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.send_signal(signal.SIGCONT)

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, within=20, what="/readyz ready once the database answers")
    finally:
        await parts.pool.close()
        postgres.stop()
