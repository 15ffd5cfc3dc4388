"""A hung object store stalls only what needs it: uploads wait on it holding no database
connection, so more of them than ingest's pool has connections leave its other routes
answering (README, Operating)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.kit.embedded import Child, start_s3_server
from shared.kit.service import Parts
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import folder, unique

# More uploads at once than ingest has pool connections.
UPLOADS = Parts.pool_size + 4
# Over the store's in-memory hold (64 KiB): spooled to disk as they come, so the test
# sees each upload received.
SIZE = 100 * 1024
# An answer from PostgreSQL alone: well under the 30 s an S3 call may hang.
PROMPT_S = 3.0


@pytest.fixture(scope="module")
def own_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    child = start_s3_server(tmp_path_factory.mktemp("hung-s3") / "moto.log")
    yield child
    child.stop()


@pytest.fixture(scope="module")
def on_own_store(stack: Stack, own_s3: Child) -> Iterator[str]:
    """A gateway in front of an ingest process whose blob store is `own_s3`; its URL."""
    env = {"FILES_BLOB_URL": f"s3://hung-store?endpoint={own_s3.url}&region=us-east-1"}
    ingest_url, ingest = stack.add_replica("ingest", env=env)
    gateway_url, gateway = stack.add_replica(
        "gateway", env={"FILES_INGEST_URL": ingest_url, "FILES_GRPC_PORT": "0"}
    )
    try:
        yield gateway_url
    finally:
        stack.remove(gateway)
        stack.remove(ingest)


def spools(stack: Stack) -> int:
    spool = stack.data_dir / "spool"
    return sum(1 for _ in spool.iterdir()) if spool.exists() else 0


async def test_uploads_waiting_on_a_hung_store_leave_ingest_s_other_routes_answering(
    stack: Stack, own_s3: Child, on_own_store: str
) -> None:
    async with httpx.AsyncClient(
        base_url=on_own_store, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
    ) as api:
        target = await folder(api, unique("hung-store"))
        first = await api.post(
            f"/v1/folders/{target['id']}/files", files=[("file", ("first.txt", b"first\n"))]
        )
        assert first.status_code == 201, first.text
        job = first.json()["job_id"]
        before = spools(stack)
        own_s3.proc.send_signal(signal.SIGSTOP)
        sent: list[asyncio.Task[int]] = []
        try:

            async def upload(i: int) -> int:
                data = os.urandom(SIZE)
                answer = await api.post(
                    f"/v1/folders/{target['id']}/files",
                    files=[("file", (f"hung-{i}.txt", b"text\n" + data.hex().encode()))],
                )
                return answer.status_code

            sent += [asyncio.create_task(upload(i)) for i in range(UPLOADS)]

            async def received() -> bool:
                return spools(stack) >= before + Parts.pool_size

            # As many uploads received as ingest has connections (before uploads held
            # none across their puts, the rest waited for one to be given back).
            await eventually(received, within=60, what="the uploads received")
            # Each is now at its put (or about to be), which hangs: ingest's routes that
            # need only PostgreSQL answer meanwhile, promptly.
            for path in (f"/v1/jobs/{job}", "/v1/integrations", "/readyz"):
                started = time.monotonic()
                answer = await api.get(path, timeout=PROMPT_S * 10)
                took = time.monotonic() - started
                assert answer.status_code == 200, (path, answer.text)
                assert took < PROMPT_S, f"{path} took {took:.1f} s"
            assert not any(task.done() for task in sent)
        except BaseException:
            for task in sent:
                task.cancel()
            raise
        finally:
            own_s3.proc.send_signal(signal.SIGCONT)
        # Once the store answers again, each upload is stored, or refused 503 (a call
        # that hung past the store's bound), never anything else.
        outcomes: list[Any] = await asyncio.gather(*sent)
        assert set(outcomes) <= {201, 503}, outcomes
