"""A hung object store stalls only what needs it: uploads and upload sessions'
completions wait on it holding no database connection, so more of them than ingest's
pool has connections leave its other routes answering; a session's abort and expiry
are recorded at once and done in the store once it answers; an open session is read
with its parts unknown rather than hang (README, Operating)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from shared.kit.access import Access
from shared.kit.blobs import UnknownUpload, open_blob_store
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


class Hung:
    """The calls sent while the store is stopped (`send`), and once it answers again
    (the block is over), what each ended with (`outcomes`)."""

    def __init__(self) -> None:
        self.sent: list[asyncio.Task[Any]] = []
        self.outcomes: list[Any] = []

    def send(self, call: Awaitable[Any]) -> None:
        self.sent.append(asyncio.ensure_future(call))


@contextlib.asynccontextmanager
async def hung(store: Child) -> AsyncIterator[Hung]:
    """The store stopped (SIGSTOP: connections open, nothing answered) while the block
    runs; then answering again, and the calls sent meanwhile waited for (cancelled
    instead if the block failed)."""
    calls = Hung()
    store.proc.send_signal(signal.SIGSTOP)
    try:
        yield calls
    except BaseException:
        for task in calls.sent:
            task.cancel()
        raise
    finally:
        store.proc.send_signal(signal.SIGCONT)
    calls.outcomes = list(await asyncio.gather(*calls.sent))


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
        async with hung(own_s3) as uploads:

            async def upload(i: int) -> int:
                data = os.urandom(SIZE)
                answer = await api.post(
                    f"/v1/folders/{target['id']}/files",
                    files=[("file", (f"hung-{i}.txt", b"text\n" + data.hex().encode()))],
                )
                return answer.status_code

            for i in range(UPLOADS):
                uploads.send(upload(i))

            async def received() -> bool:
                return spools(stack) >= before + Parts.pool_size

            # As many uploads received as ingest has connections (before uploads held
            # none across their puts, the rest waited for one to be given back).
            await eventually(received, within=60, what="the uploads received")
            # Each is now at its put (or about to be), which hangs: ingest's routes that
            # need only PostgreSQL answer meanwhile, promptly.
            await prompt(api, (f"/v1/jobs/{job}", "/v1/integrations", "/readyz"))
            assert not any(task.done() for task in uploads.sent)
        # Once the store answers again, each upload is stored, or refused 503 (a call
        # that hung past the store's bound), never anything else.
        assert set(uploads.outcomes) <= {201, 503}, uploads.outcomes


async def prompt(api: httpx.AsyncClient, paths: tuple[str, ...]) -> None:
    for path in paths:
        started = time.monotonic()
        answer = await api.get(path, timeout=PROMPT_S * 10)
        took = time.monotonic() - started
        assert answer.status_code == 200, (path, answer.text)
        assert took < PROMPT_S, f"{path} took {took:.1f} s"


async def sessions_opened(
    api: httpx.AsyncClient,
    ingest: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    folder_id: str,
    **opening: Any,
) -> tuple[dict[str, str], list[str]]:
    """`UPLOADS` sessions opened in the folder by an editor (sent to ingest itself), a
    part of each in the store; the editor's signed headers and the sessions' ids."""
    opener = await member(api, unique("hung-opener"))
    editing = Access(user_id=opener["id"], grants={uuid.UUID(folder_id): "editor"})
    signed = as_user(opener["id"], editing, folder_path=folder_id)
    opened = []
    for i in range(UPLOADS):
        data = png(8 + i, 6)  # bytes of its own: no two completions share a blob
        answer = await ingest.post(
            f"/v1/folders/{folder_id}/uploads",
            json={"name": f"hung-{i}.png", "size": len(data), "part_size": 5 * 1024 * 1024}
            | opening,
            headers=signed,
        )
        assert answer.status_code == 201, answer.text
        session = answer.json()
        (part,) = session["parts"]
        put = await anonymous.put(part["url"], content=data)
        assert put.status_code == 200, put.text
        opened.append(session["id"])
    return signed, opened


async def test_session_completions_waiting_on_a_hung_store_leave_ingest_s_other_routes_answering(
    stack: Stack, own_s3: Child, on_own_store: tuple[str, str]
) -> None:
    """Sent to ingest itself: the gateway reads a session from ingest (which asks the
    store for its parts) before it forwards the completion."""
    async with clients(on_own_store) as (api, ingest, anonymous):
        target = await folder(api, unique("hung-sessions"))
        first = await api.post(
            f"/v1/folders/{target['id']}/files", files=[("file", ("first.txt", b"first\n"))]
        )
        assert first.status_code == 201, first.text
        # An open session's job is shown with the bytes the store has of it: a job done.
        job = first.json()["job_id"]
        signed, opened = await sessions_opened(api, ingest, anonymous, target["id"])
        async with hung(own_s3) as completions:

            async def complete(session_id: str) -> int:
                url = f"/v1/uploads/{session_id}/complete"
                return (await ingest.post(url, headers=signed)).status_code

            for session_id in opened:
                completions.send(complete(session_id))

            async def at_the_store() -> bool:
                return pending_at(own_s3.url) >= Parts.pool_size

            # As many completions waiting on the store as ingest has connections (before
            # completions held none across their store calls, the rest waited for one).
            await eventually(at_the_store, within=60, what="the completions at the store")
            await prompt(api, (f"/v1/jobs/{job}", "/v1/integrations", "/readyz"))
            assert not any(task.done() for task in completions.sent)
        # Once the store answers again, each is completed, or refused 503 (a call that
        # hung past the store's bound), never anything else.
        outcomes = completions.outcomes
        assert set(outcomes) <= {201, 503}, outcomes
        done = [
            (await ingest.get(f"/v1/uploads/{s}", headers=signed)).json()["status"]
            for s, outcome in zip(opened, outcomes, strict=True)
            if outcome == 201
        ]
        assert set(done) <= {"completed"}, done


@contextlib.asynccontextmanager
async def clients(
    on_own_store: tuple[str, str],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient]]:
    """The admin's client of the gateway, one of ingest itself, and one that signs
    nothing (for part URLs), on the platform whose blobs are on the store that hangs."""
    gateway_url, ingest_url = on_own_store
    async with (
        httpx.AsyncClient(
            base_url=gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120
        ) as api,
        httpx.AsyncClient(base_url=ingest_url, timeout=120) as ingest,
        httpx.AsyncClient(timeout=60) as anonymous,
    ):
        yield api, ingest, anonymous


@contextlib.asynccontextmanager
async def the_replica_alone(stack: Stack) -> AsyncIterator[None]:
    """The platform's own ingest down while the block runs: its sweeps (on the same
    database, with a store of its own) would otherwise end the replica's sessions, and
    do their store's side in the wrong store. Ready again after."""
    with stack.down("ingest"):
        yield
    url = stack.env["FILES_INGEST_URL"]

    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=5) as client:
            try:
                return (await client.get(f"{url}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

    await eventually(ready, within=60, what="the platform's ingest ready again")


async def ended_in_the_store(stack: Stack, own_s3: Child, ids: list[str]) -> None:
    """Once the store answers, the sessions' multipart uploads are aborted there (none
    left behind), and ingest's notes of them gone."""
    database = await asyncpg.connect(stack.env["FILES_DATABASE_URL"])
    blobs = open_blob_store(
        stack.settings.model_copy(
            update={"blob_url": f"s3://hung-store?endpoint={own_s3.url}&region=us-east-1"}
        )
    )
    try:
        rows = await database.fetch(
            "SELECT id, store_key, upload_id FROM ingest.sessions WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )

        async def reclaimed() -> bool:
            return not await database.fetchval(
                "SELECT count(*) FROM ingest.session_uploads_left"
                " WHERE session_id = ANY($1::uuid[])",
                [r["id"] for r in rows],
            )

        await eventually(reclaimed, within=60, what="the sessions ended in the store")
        for row in rows:
            with pytest.raises(UnknownUpload):
                await blobs.list_parts(row["store_key"], row["upload_id"])
    finally:
        await blobs.close()
        await database.close()


async def test_aborts_against_a_hung_store_answer_at_once_and_end_in_the_store_once_it_answers(
    stack: Stack, own_s3: Child, on_own_store: tuple[str, str]
) -> None:
    """More aborts at once than ingest has connections: each is recorded and answered
    while the store hangs (before, each held a connection and its session's row while
    it waited on the store, up to 30 s a call), ingest's other routes answer meanwhile,
    and the store's side is done once it answers."""
    async with (
        the_replica_alone(stack),
        clients(on_own_store) as (api, ingest, anonymous),
    ):
        target = await folder(api, unique("hung-aborts"))
        signed, opened = await sessions_opened(api, ingest, anonymous, target["id"])
        async with hung(own_s3) as aborts:

            async def abort(session_id: str) -> int:
                return (
                    await ingest.delete(f"/v1/uploads/{session_id}", headers=signed)
                ).status_code

            started = time.monotonic()
            for session_id in opened:
                aborts.send(abort(session_id))
            await asyncio.wait(aborts.sent, timeout=PROMPT_S * 10)
            took = time.monotonic() - started
            assert all(task.done() for task in aborts.sent), f"aborts unanswered after {took:.1f} s"
            assert took < PROMPT_S * 3, f"the aborts took {took:.1f} s"
            await prompt(api, ("/v1/integrations", "/readyz"))
            states = [
                (await ingest.get(f"/v1/uploads/{s}", headers=signed)).json()["status"]
                for s in opened
            ]
            assert set(states) == {"aborted"}, states
        assert set(aborts.outcomes) == {204}, aborts.outcomes
        await ended_in_the_store(stack, own_s3, opened)


async def test_sessions_expiring_while_the_store_hangs_are_ended_and_end_in_the_store_after(
    stack: Stack, own_s3: Child, on_own_store: tuple[str, str]
) -> None:
    """The sweep ends sessions past their time while the store hangs (before, it held a
    connection and each session's row while it waited on the store, one after another,
    up to 30 s a call); their parts go once the store answers."""
    async with (
        the_replica_alone(stack),
        clients(on_own_store) as (api, ingest, anonymous),
    ):
        target = await folder(api, unique("hung-expiry"))
        _, opened = await sessions_opened(api, ingest, anonymous, target["id"], expires_in_s=1)
        database = await asyncpg.connect(stack.env["FILES_DATABASE_URL"])
        try:
            async with hung(own_s3):

                async def expired() -> bool:
                    states = await database.fetch(
                        "SELECT status FROM ingest.sessions WHERE id = ANY($1::uuid[])",
                        [uuid.UUID(s) for s in opened],
                    )
                    return {r["status"] for r in states} == {"expired"}

                # A few sweeps (0.2 s apart here), not one store's timeout a session.
                await eventually(expired, within=PROMPT_S * 3, what="the sessions expired")
                await prompt(api, ("/v1/integrations", "/readyz"))
        finally:
            await database.close()
        await ended_in_the_store(stack, own_s3, opened)


async def test_an_open_session_is_read_while_the_store_hangs_its_parts_unknown(
    own_s3: Child, on_own_store: tuple[str, str]
) -> None:
    """Its GET and its job's progress answer within the request's budget, from what the
    database has: `parts_known: false`, a URL for every part (any may be missing), and
    the job's bytes not known. Once the store answers, its parts are shown again."""
    async with clients(on_own_store) as (api, ingest, anonymous):
        target = await folder(api, unique("hung-reads"))
        signed, [session_id, *_] = await sessions_opened(api, ingest, anonymous, target["id"])
        bound_s = 5.0 + PROMPT_S  # the listing's wait (PARTS_WAIT_S), then the answer
        async with hung(own_s3):
            started = time.monotonic()
            answer = await ingest.get(f"/v1/uploads/{session_id}", headers=signed)
            assert time.monotonic() - started < bound_s
            assert answer.status_code == 200, answer.text
            session = answer.json()
            assert session["status"] == "open" and session["parts_known"] is False
            assert session["parts_stored"] == [] and session["bytes_stored"] == 0
            assert [p["part"] for p in session["parts"]] == [1]
            started = time.monotonic()
            job = await api.get(f"/v1/jobs/{session_id}")
            assert time.monotonic() - started < bound_s
            assert job.status_code == 200, job.text
            assert job.json()["progress"]["bytes"]["known"] is False
        session = (await ingest.get(f"/v1/uploads/{session_id}", headers=signed)).json()
        assert session["parts_known"] is True and session["parts"] == []
        assert [p["part"] for p in session["parts_stored"]] == [1]
