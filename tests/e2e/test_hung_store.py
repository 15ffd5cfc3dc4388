"""A hung object store stalls only what needs it: uploads and upload sessions'
completions wait on it holding no database connection, so more of them than ingest's
pool has connections leave its other routes answering (README, Operating)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.kit.access import Access
from shared.kit.embedded import Child, start_s3_server
from shared.kit.service import Parts
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import folder, member, png, unique
from tests.signing import as_user

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
def on_own_store(stack: Stack, own_s3: Child) -> Iterator[tuple[str, str]]:
    """A gateway in front of an ingest process whose blob store is `own_s3`; their URLs."""
    env = {"FILES_BLOB_URL": f"s3://hung-store?endpoint={own_s3.url}&region=us-east-1"}
    ingest_url, ingest = stack.add_replica("ingest", env=env)
    gateway_url, gateway = stack.add_replica(
        "gateway", env={"FILES_INGEST_URL": ingest_url, "FILES_GRPC_PORT": "0"}
    )
    try:
        yield gateway_url, ingest_url
    finally:
        stack.remove(gateway)
        stack.remove(ingest)


def pending_at(url: str) -> int:
    """Requests sent to the (stopped) server at `url` that it has not read: its side of
    each loopback connection holding unread bytes, accepted or still in its backlog."""
    port = int(url.rsplit(":", 1)[1])
    pending = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            unread = int(queues.split(":")[1], 16)
            if int(local.split(":")[1], 16) == port and state == "01" and unread:
                pending += 1
    return pending


def spools(stack: Stack) -> int:
    spool = stack.data_dir / "spool"
    return sum(1 for _ in spool.iterdir()) if spool.exists() else 0


async def test_uploads_waiting_on_a_hung_store_leave_ingest_s_other_routes_answering(
    stack: Stack, own_s3: Child, on_own_store: tuple[str, str]
) -> None:
    async with httpx.AsyncClient(
        base_url=on_own_store[0], headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
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


async def prompt(api: httpx.AsyncClient, paths: tuple[str, ...]) -> None:
    for path in paths:
        started = time.monotonic()
        answer = await api.get(path, timeout=PROMPT_S * 10)
        took = time.monotonic() - started
        assert answer.status_code == 200, (path, answer.text)
        assert took < PROMPT_S, f"{path} took {took:.1f} s"


async def test_session_completions_waiting_on_a_hung_store_leave_ingest_s_other_routes_answering(
    stack: Stack, own_s3: Child, on_own_store: tuple[str, str]
) -> None:
    """Sent to ingest itself: the gateway reads a session from ingest (which asks the
    store for its parts) before it forwards the completion."""
    gateway_url, ingest_url = on_own_store
    async with (
        httpx.AsyncClient(
            base_url=gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
        ) as api,
        httpx.AsyncClient(base_url=ingest_url, timeout=120) as ingest,
        httpx.AsyncClient(timeout=60) as anonymous,
    ):
        target = await folder(api, unique("hung-sessions"))
        first = await api.post(
            f"/v1/folders/{target['id']}/files", files=[("file", ("first.txt", b"first\n"))]
        )
        assert first.status_code == 201, first.text
        # An open session's job is shown with the bytes the store has of it: a job done.
        job = first.json()["job_id"]
        opener = await member(api, "hung-opener")
        editing = Access(user_id=opener["id"], grants={uuid.UUID(target["id"]): "editor"})
        signed = as_user(opener["id"], editing, folder_path=target["id"])
        opened = []
        for i in range(UPLOADS):
            data = png(8 + i, 6)  # bytes of its own: no two completions share a blob
            answer = await ingest.post(
                f"/v1/folders/{target['id']}/uploads",
                json={"name": f"hung-{i}.png", "size": len(data), "part_size": 5 * 1024 * 1024},
                headers=signed,
            )
            assert answer.status_code == 201, answer.text
            session = answer.json()
            (part,) = session["parts"]
            put = await anonymous.put(part["url"], content=data)
            assert put.status_code == 200, put.text
            opened.append(session["id"])
        own_s3.proc.send_signal(signal.SIGSTOP)
        sent: list[asyncio.Task[int]] = []
        try:

            async def complete(session_id: str) -> int:
                url = f"/v1/uploads/{session_id}/complete"
                return (await ingest.post(url, headers=signed)).status_code

            sent += [asyncio.create_task(complete(s)) for s in opened]

            async def at_the_store() -> bool:
                return pending_at(own_s3.url) >= Parts.pool_size

            # As many completions waiting on the store as ingest has connections (before
            # completions held none across their store calls, the rest waited for one).
            await eventually(at_the_store, within=60, what="the completions at the store")
            await prompt(api, (f"/v1/jobs/{job}", "/v1/integrations", "/readyz"))
            assert not any(task.done() for task in sent)
        except BaseException:
            for task in sent:
                task.cancel()
            raise
        finally:
            own_s3.proc.send_signal(signal.SIGCONT)
        # Once the store answers again, each is completed, or refused 503 (a call that
        # hung past the store's bound), never anything else.
        outcomes: list[Any] = await asyncio.gather(*sent)
        assert set(outcomes) <= {201, 503}, outcomes
        done = [
            (await ingest.get(f"/v1/uploads/{s}", headers=signed)).json()["status"]
            for s, outcome in zip(opened, outcomes, strict=True)
            if outcome == 201
        ]
        assert set(done) <= {"completed"}, done
