"""A request's time budget at the gateway (`FILES_GATEWAY_REQUEST_BUDGET_S` for a read,
`FILES_GATEWAY_WRITE_BUDGET_S` for a write): while a service hangs (paused with SIGSTOP,
as `make chaos` does), a request that waits on it is answered `503` (Retry-After,
`cause: timeout`) once its budget is spent, not after each call's minute of silence; a
keyed write given up on that way is applied once however often it is sent again; an
unkeyed one its service gives up on before its commit is not applied, and one whose
commit began is; a body streamed for longer than the budget still goes through, and an
upload's answer is waited for a write's budget from its last byte; the consistency waits
end within the budget; a gRPC download left unread is let go. On a gateway replica of
its own whose budgets are a few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import orjson
import pytest

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.files_pb.files.v1 import files_pb2_grpc as rpc
from shared.kit import db
from shared.kit.embedded import free_ports
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import error, folder, items, member, multipart, unique

BUDGET_S = 3.0
WRITE_BUDGET_S = 4.0
# What a loaded machine may add to the budget before the answer is read here: far below
# the minute a call to a hung service waited before.
MARGIN_S = 3.0


@pytest.fixture(scope="module")
def url(stack: Stack) -> Iterator[str]:
    url, child = stack.add_replica(
        "gateway",
        env={
            "FILES_GRPC_PORT": "0",
            "FILES_GATEWAY_REQUEST_BUDGET_S": str(BUDGET_S),
            "FILES_GATEWAY_WRITE_BUDGET_S": str(WRITE_BUDGET_S),
            "FILES_CONSISTENCY_TIMEOUT_S": "20",
        },
    )
    try:
        yield url
    finally:
        stack.remove(child)


@contextlib.asynccontextmanager
async def client(url: str, key: str = ADMIN_KEY) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=90
    ) as made:
        yield made


@contextlib.contextmanager
def paused(stack: Stack, name: str) -> Iterator[None]:
    """The service's process stopped (its port open, nothing answered) while inside."""
    child = stack.child(name)
    child.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        child.proc.send_signal(signal.SIGCONT)


def retried(answer: httpx.Response) -> bool:
    """The first try still running in the service as the next one came: try again."""
    return answer.status_code == 409 and answer.json()["error"]["code"] == "request_in_progress"


def timed_out(answer: httpx.Response, service: str, budget: float = BUDGET_S) -> dict[str, Any]:
    found = error(answer, 503, "unavailable")
    assert answer.headers["retry-after"], answer.headers
    assert found["details"]["cause"] == "timeout", found
    assert found["details"]["service"] == service, found
    assert f"({budget:g} s)" in found["message"], found
    return found


async def test_a_read_while_the_catalog_or_the_access_service_hangs_is_503_within_the_budget(
    stack: Stack, url: str
) -> None:
    async with client(stack.gateway_url) as api:
        top = await folder(api, unique("hung-read"))
        newcomer = await member(api, "hung-acl")
    async with client(url) as edge, client(url, newcomer["api_key"]) as theirs:
        assert (await edge.get(f"/v1/folders/{top['id']}")).status_code == 200
        with paused(stack, "catalog"):
            began = time.monotonic()
            answer = await edge.get(f"/v1/folders/{top['id']}")
            took = time.monotonic() - began
        assert took < BUDGET_S + MARGIN_S, took
        timed_out(answer, "catalog")

        # A key this gateway has not seen is asked of the access service.
        with paused(stack, "acl"):
            began = time.monotonic()
            answer = await theirs.get("/v1/users/me")
            took = time.monotonic() - began
        assert took < BUDGET_S + MARGIN_S, took
        timed_out(answer, "acl")

        async def answered() -> bool:
            read = await edge.get(f"/v1/folders/{top['id']}")
            me = await theirs.get("/v1/users/me")
            return read.status_code == 200 and me.status_code == 200

        await eventually(answered, within=60, what="the platform answering once resumed")


# The catalog's read of a folder, waiting on a lock of the test's: by the lock asked
# for, not by `pg_stat_activity.query`, which names a connection's last statement while
# a prepared one waits for its locks before it runs (its plan checked again).
WAITING = """SELECT count(*) FROM pg_locks
    WHERE NOT granted AND relation = 'catalog.folders'::regclass AND pid <> pg_backend_pid()"""


async def test_a_service_stops_waiting_on_its_database_once_the_gateway_gave_up(
    stack: Stack, url: str
) -> None:
    """The service is told how long the gateway will wait (`Files-Deadline-Ms`): past
    it, the catalog cancels its statement stuck behind a lock, rather than hold the
    connection (and the lock's queue) for as long as the lock is held."""
    async with client(stack.gateway_url) as api:
        top = await folder(api, unique("locked-read"))
    conn = await db.connect(stack.settings.database_url)
    try:
        async with client(url) as edge:
            # Its caller known (for 2 s), the read's only wait is the catalog's query.
            assert (await edge.get(f"/v1/folders/{top['id']}")).status_code == 200
            locked = conn.transaction()
            await locked.start()
            try:
                await conn.execute("LOCK TABLE catalog.folders IN ACCESS EXCLUSIVE MODE")
                began = time.monotonic()
                reading = asyncio.ensure_future(edge.get(f"/v1/folders/{top['id']}"))

                async def waiting(count: int) -> bool:
                    return await conn.fetchval(WAITING) == count

                await eventually(lambda: waiting(1), within=BUDGET_S, what="the read waiting")
                answer = await reading
                took = time.monotonic() - began
                # Still locked: the statement was given up on by the catalog itself.
                await eventually(lambda: waiting(0), within=MARGIN_S, what="the read cancelled")
            finally:
                await locked.rollback()
    finally:
        await conn.close()
    assert took < BUDGET_S + MARGIN_S, took
    found = error(answer, 503, "unavailable")
    assert answer.headers["retry-after"], answer.headers
    assert found["details"]["cause"] == "timeout", found


# The catalog's read of files by id (`POST /internal/files`), waiting on a lock of ours.
READING_FILES = """SELECT count(*) FROM pg_stat_activity
    WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()
      AND query ILIKE '%from catalog.files f%id = any($1::uuid[])%'"""


@pytest.mark.parametrize("asked", ["re-encode", "lookup"])
async def test_a_read_sent_as_a_post_is_given_up_on_by_its_service(
    stack: Stack, url: str, asked: str
) -> None:
    """A read sent as a POST (the catalog's files by id, for a re-encode's check; a
    client's own lookup of files) is told its deadline too: the catalog cancels its
    statement stuck behind a lock once the gateway would give up, and the request is
    `503`, not a `404` for files the catalog did not get to read. A lookup was told an
    unkeyed write's, which a read's statement holds: waited for to the end of the
    budget, its 503 said it "may have been applied"."""
    async with client(url) as edge:
        top = await folder(edge, unique("locked-post-read"))
        body, headers = multipart(("one.txt", b"one\n"))
        uploaded = await edge.post(f"/v1/folders/{top['id']}/files", content=body, headers=headers)
        assert uploaded.status_code == 201, uploaded.text
        [file] = uploaded.json()["files"]
        conn = await db.connect(stack.settings.database_url)
        try:
            # Its caller known (for 2 s), the request's only wait is the catalog's read.
            assert (await edge.get(f"/v1/files/{file['id']}")).status_code == 200
            locked = conn.transaction()
            await locked.start()
            try:
                await conn.execute("LOCK TABLE catalog.files IN ACCESS EXCLUSIVE MODE")
                asking = asyncio.ensure_future(
                    edge.post("/v1/files/re-encode", json={"file_ids": [file["id"]]})
                    if asked == "re-encode"
                    else edge.post("/v1/files/lookup", json={"ids": [file["id"]]})
                )

                async def waiting() -> bool:
                    # A transaction sees one snapshot of the activity unless told.
                    await conn.execute("SELECT pg_stat_clear_snapshot()")
                    return bool(await conn.fetchval(READING_FILES))

                await eventually(waiting, within=WRITE_BUDGET_S, what="the read waiting")
                answer = await asking

                async def cancelled() -> bool:
                    return not await waiting()

                # Still locked: the statement was given up on by the catalog itself.
                await eventually(cancelled, within=MARGIN_S, what="the read cancelled")
            finally:
                await locked.rollback()
        finally:
            await conn.close()
    found = error(answer, 503, "unavailable")
    assert found["details"]["cause"] == "timeout", found
    assert "may have been applied" not in found["message"], found
    if asked == "lookup":
        # The catalog's own answer, relayed: it gave up on the read.
        assert found["details"]["applied"] is False, found
    else:
        assert found["details"]["service"] == "catalog", found


async def test_a_completed_session_the_catalog_cannot_read_is_accepted(
    stack: Stack, url: str
) -> None:
    """A session completed (its file made in ingest) while the catalog's files are
    locked: its read of the file is given up on, and the completion is answered `202
    {job_id, file_id}` with the token to read it with, as an image group not listed yet
    is. It was ingest's own `201` (no `file`), or `409 folder_deleted` with the folder
    there."""
    data = b"completed while the catalog is locked\n"
    async with client(url) as edge, httpx.AsyncClient(timeout=90) as anonymous:
        top = await folder(edge, unique("locked-complete"))
        opened = await edge.post(
            f"/v1/folders/{top['id']}/uploads", json={"name": "locked.txt", "size": len(data)}
        )
        assert opened.status_code == 201, opened.text
        session = opened.json()
        [part] = session["parts"]
        assert (await anonymous.put(part["url"], content=data)).status_code == 200
        conn = await db.connect(stack.settings.database_url)
        try:
            locked = conn.transaction()
            await locked.start()
            try:
                await conn.execute("LOCK TABLE catalog.files IN ACCESS EXCLUSIVE MODE")
                answer = await edge.post(f"/v1/uploads/{session['id']}/complete")
            finally:
                await locked.rollback()
        finally:
            await conn.close()
        assert answer.status_code == 202, answer.text
        accepted = answer.json()
        assert set(accepted) == {"job_id", "file_id"}, accepted
        token = {"Files-Consistency": answer.headers["files-consistency"]}
        read = await edge.get(f"/v1/files/{accepted['file_id']}", headers=token)
        assert read.status_code == 200, read.text
        assert read.json()["name"] == "locked.txt", read.text


MOVE_LOCK = zlib.crc32(b"files.catalog.move")
# A move waiting for the catalog's lock of moves (taken first in its transaction).
MOVING = """SELECT count(*) FROM pg_stat_activity
    WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()
      AND query ILIKE '%pg_advisory_xact_lock%'"""


async def files_in(edge: httpx.AsyncClient, folder_id: str) -> list[str]:
    return [i["id"] for i in await items(edge, folder_id) if i["type"] == "file"]


async def test_an_unkeyed_write_the_service_gives_up_on_is_not_applied(
    stack: Stack, url: str
) -> None:
    """An unkeyed move is told its deadline, less a margin: the catalog, waiting on a
    lock past it, gives up before its commit and answers that nothing was applied,
    while the gateway still waits; it was the gateway's "it may have been applied",
    and the catalog went on to move the files once the lock was let go."""
    async with client(url) as edge:
        source = await folder(edge, unique("unkeyed-from"))
        target = await folder(edge, unique("unkeyed-to"))
        body, headers = multipart(("stays.txt", b"stays\n"))
        uploaded = await edge.post(
            f"/v1/folders/{source['id']}/files", content=body, headers=headers
        )
        assert uploaded.status_code == 201, uploaded.text
        [file] = uploaded.json()["files"]
        conn = await db.connect(stack.settings.database_url)
        try:
            assert (await edge.get(f"/v1/files/{file['id']}")).status_code == 200
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MOVE_LOCK)
                began = time.monotonic()
                answer = await edge.post(
                    "/v1/move", json={"file_ids": [file["id"]], "target_folder_id": target["id"]}
                )
                took = time.monotonic() - began
                # Given up on: nothing of it waits for the lock to be let go.
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                assert await conn.fetchval(MOVING) == 0
        finally:
            await conn.close()
        assert took < WRITE_BUDGET_S, took
        found = error(answer, 503, "unavailable")
        assert found["details"]["cause"] == "timeout", found
        assert found["details"]["applied"] is False, found
        assert "nothing of it was applied" in found["message"], found
        assert await files_in(edge, source["id"]) == [file["id"]]
        assert await files_in(edge, target["id"]) == []


async def test_a_keyed_write_given_up_on_while_its_service_hung_is_applied_once(
    stack: Stack, url: str
) -> None:
    """The gateway gave up; the service, resumed, finds the request in its socket and
    may apply it after all. Sent again with its key, it is answered as applied once:
    the service's kept answer, or a first application if the first never ran."""
    key = str(uuid.uuid4())
    async with client(url) as edge:
        parent = await folder(edge, unique("hung-create"))
        asked = {"name": "once", "parent_id": parent["id"]}
        with paused(stack, "catalog"):
            began = time.monotonic()
            answer = await edge.post("/v1/folders", json=asked, headers={"Idempotency-Key": key})
            took = time.monotonic() - began
        # A write's budget, not a read's.
        assert took < WRITE_BUDGET_S + MARGIN_S, took
        found = timed_out(answer, "catalog", WRITE_BUDGET_S)
        assert "same Idempotency-Key is applied once" in found["message"], found

        # Without a key, it may have been made: the answer does not say to send it again.
        with paused(stack, "catalog"):
            unkeyed = await edge.post("/v1/folders", json={**asked, "name": "maybe"})
        found = timed_out(unkeyed, "catalog", WRITE_BUDGET_S)
        assert "may have been applied: check before sending it again" in found["message"]

        made: list[httpx.Response] = []

        async def applied() -> bool:
            again = await edge.post("/v1/folders", json=asked, headers={"Idempotency-Key": key})
            assert again.status_code in (201, 503) or retried(again), again.text
            made.append(again)
            return again.status_code == 201

        await eventually(applied, within=60, what="the keyed folder made once resumed")
        again = await edge.post("/v1/folders", json=asked, headers={"Idempotency-Key": key})
        assert again.status_code == 201, again.text
        assert again.json()["id"] == made[-1].json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        children = await items(edge, parent["id"])
        assert [c["id"] for c in children if c["name"] == "once"] == [again.json()["id"]]


async def test_an_upload_is_answered_within_a_write_budget_of_its_last_byte(
    stack: Stack, url: str
) -> None:
    """Its body sent whole, the upload waits for ingest's answer a write's budget from
    its last byte, not what the body's time left of it: ingest inspects the files and
    puts them in the store after the last byte (given up on at the budget's remainder,
    a stored upload was answered 503, and the web app, which sends no key, stored it
    again). A body sent over most of the budget, then storing that outlasts the
    budget's remainder: stored and answered."""
    body, headers = multipart(("late.txt", b"stored late\n"))
    half = len(body) // 2
    sent = asyncio.Event()

    async def after(seconds: float) -> None:
        async def over() -> bool:
            return time.monotonic() - began > seconds

        await eventually(over, within=seconds + 5, what=f"{seconds} s gone by")

    async def slowly() -> AsyncIterator[bytes]:
        yield body[:half]
        await after(WRITE_BUDGET_S - 1)
        stack.child("ingest").proc.send_signal(signal.SIGSTOP)
        yield body[half:]
        sent.set()

    async with client(url) as edge:
        top = await folder(edge, unique("late-upload"))
        began = time.monotonic()
        sending = asyncio.ensure_future(
            edge.post(f"/v1/folders/{top['id']}/files", content=slowly(), headers=headers)
        )
        try:
            await asyncio.wait_for(sent.wait(), WRITE_BUDGET_S + 5)
            # Past the request's budget, within a budget of its last byte.
            await after(WRITE_BUDGET_S + 1)
            assert not sending.done(), sending.result().text
        finally:
            stack.child("ingest").proc.send_signal(signal.SIGCONT)
        answer = await sending
        assert answer.status_code == 201, answer.text
        [file] = answer.json()["files"]
        listed = await items(edge, top["id"])
        assert [i["id"] for i in listed if i["name"] == "late.txt"] == [file["id"]]


async def test_an_upload_whose_storing_outlasts_a_write_budget_is_503_then(
    stack: Stack, url: str
) -> None:
    """Ingest silent after the last byte: the upload is answered `503` a write's budget
    later (it waited while ingest's connection was silent for 60 s, and for ever so
    long as ingest sent a byte a minute), saying it may have been stored."""
    body, headers = multipart(("never.txt", b"never answered\n"))
    async with client(url) as edge:
        top = await folder(edge, unique("silent-upload"))
        with paused(stack, "ingest"):
            began = time.monotonic()
            sending = asyncio.ensure_future(
                edge.post(f"/v1/folders/{top['id']}/files", content=body, headers=headers)
            )
            done, _ = await asyncio.wait({sending}, timeout=WRITE_BUDGET_S + MARGIN_S)
            took = time.monotonic() - began
            assert done, f"no answer in {took:.1f} s"
        found = timed_out(sending.result(), "ingest", WRITE_BUDGET_S)
        assert "may have been applied: check before sending it again" in found["message"]


async def test_a_writes_consistency_wait_ends_within_its_budget(stack: Stack, url: str) -> None:
    """A folder made waits for its effects (the caller made its admin; the datasets
    context's copy): with the datasets service hung, that wait ends at the write's
    budget, not at the consistency timeout (20 s on this gateway) and 5 s of silence
    more; the folder is answered as made, with its token."""
    async with client(url) as edge:
        # The gateway has asked each service what it consumes: datasets, the catalog.
        await folder(edge, unique("effects-known"))
        with paused(stack, "datasets"):
            began = time.monotonic()
            answer = await edge.post("/v1/folders", json={"name": unique("effects-late")})
            took = time.monotonic() - began
        assert answer.status_code == 201, answer.text
        assert answer.headers.get("files-consistency"), answer.headers
        assert took < WRITE_BUDGET_S + MARGIN_S, took
        made = await edge.get(f"/v1/folders/{answer.json()['id']}")
        assert made.status_code == 200, made.text


async def test_an_upload_whose_body_takes_longer_than_the_budget_goes_through(
    stack: Stack, url: str
) -> None:
    """The budget covers waiting for services' answers, not a body a client streams:
    an upload whose body comes over more than the budget is stored."""
    body, headers = multipart(("slow.txt", b"s" * 200_000))
    half = len(body) // 2

    async def slowly() -> AsyncIterator[bytes]:
        began = time.monotonic()
        yield body[:half]

        async def budget_over() -> bool:
            return time.monotonic() - began > BUDGET_S + 1

        # A slow client: the rest comes once the whole budget has gone by.
        await eventually(budget_over, within=BUDGET_S + 5, what="the budget gone by")
        yield body[half:]

    async with client(url) as edge:
        top = await folder(edge, unique("slow-body"))
        began = time.monotonic()
        answer = await edge.post(
            f"/v1/folders/{top['id']}/files", content=slowly(), headers=headers
        )
        assert time.monotonic() - began > BUDGET_S + 1
        assert answer.status_code == 201, answer.text
        [file] = answer.json()["files"]
        got = await edge.get(f"/v1/files/{file['id']}/content")
        assert got.status_code == 200 and got.content == b"s" * 200_000


async def test_a_json_body_sent_for_longer_than_the_budget_is_not_counted(
    stack: Stack, url: str
) -> None:
    """A composed write (a folder made) reads its JSON body before its calls: the
    caller's sending is not a wait for a service, and is not drawn from the budget."""
    async with client(url) as edge:
        top = await folder(edge, unique("slow-json"))
        asked = orjson.dumps({"name": "slowly", "parent_id": top["id"]})

        async def slowly() -> AsyncIterator[bytes]:
            began = time.monotonic()
            yield asked[:10]

            async def budget_over() -> bool:
                return time.monotonic() - began > WRITE_BUDGET_S + 1

            await eventually(budget_over, within=WRITE_BUDGET_S + 5, what="the budget gone by")
            yield asked[10:]

        answer = await edge.post(
            "/v1/folders", content=slowly(), headers={"content-type": "application/json"}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["name"] == "slowly"


async def test_a_grpc_clients_shorter_deadline_bounds_the_budget(stack: Stack) -> None:
    """On the platform's own gateway (its budget the default, 15 s): an RPC whose client
    gives it 2 s stops waiting on a hung catalog then, not at the gateway's budget."""
    async with client(stack.gateway_url) as api:
        top = await folder(api, unique("grpc-deadline"))
    logs = stack.data_dir / "logs" / "gateway.log"

    def spent() -> bool:
        return any(
            "gateway.budget_spent" in line and top["id"] in line
            for line in logs.read_text().splitlines()
        )

    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        folders = rpc.FoldersStub(channel)
        asked = pb.GetFolderRequest(folder_id=top["id"])
        metadata = (("authorization", f"Bearer {ADMIN_KEY}"),)
        await folders.GetFolder(asked, metadata=metadata)
        with paused(stack, "catalog"):
            began = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await folders.GetFolder(asked, metadata=metadata, timeout=2.0)
            assert failed.value.code() in (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAVAILABLE,
            )

            async def given_up() -> bool:
                return spent()

            # Well before the gateway's own 15 s.
            await eventually(given_up, within=began + 10 - time.monotonic(), what="given up")
        assert (await folders.GetFolder(asked, metadata=metadata)).id == top["id"]


async def test_a_callers_lookup_shared_with_a_request_out_of_time_goes_on(
    stack: Stack,
) -> None:
    """Requests asking for the same caller meanwhile share one lookup; each waits up to
    its own budget, and the lookup is not bounded by the budget of the one that began it:
    an RPC whose client gives it 2 s begins it while the access service hangs, a request
    of 15 s joins, and is answered once the access service is back."""
    async with client(stack.gateway_url) as api:
        newcomer = await member(api, "shared-lookup")
    metadata = (("authorization", f"Bearer {newcomer['api_key']}"),)
    async with (
        grpc.aio.insecure_channel(stack.grpc_target) as channel,
        client(stack.gateway_url, newcomer["api_key"]) as theirs,
    ):
        folders = rpc.FoldersStub(channel)
        with paused(stack, "acl"):
            began = time.monotonic()
            first = asyncio.ensure_future(
                folders.GetFolder(
                    pb.GetFolderRequest(folder_id=str(uuid.uuid4())), metadata=metadata, timeout=2.0
                )
            )

            async def lookup_begun() -> bool:
                return time.monotonic() - began > 0.5

            await eventually(lookup_begun, within=5, what="the first request's lookup begun")
            second = asyncio.ensure_future(theirs.get("/v1/users/me"))
            with pytest.raises(grpc.aio.AioRpcError):
                await first
            assert not second.done() or second.result().status_code != 503, second.result().text
        answer = await second
        assert answer.status_code == 200, answer.text
        assert answer.json()["id"] == newcomer["id"]


LONG_WRITE_BUDGET_S = 12.0
# Held by the test: a move's commit waits for it (a deferred trigger of the test's).
COMMIT_LOCK = zlib.crc32(b"tests.edge.commit")
COMMIT_WAITS = f"""
    CREATE FUNCTION public.edge_commit_waits() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_advisory_xact_lock_shared({COMMIT_LOCK}); RETURN NULL; END $$;
    CREATE CONSTRAINT TRIGGER edge_commit_waits AFTER INSERT ON catalog.events
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.type LIKE '%FileMoved')
        EXECUTE FUNCTION public.edge_commit_waits()"""
COMMITTING = """SELECT count(*) FROM pg_stat_activity
    WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND query ILIKE 'commit%'"""


async def test_an_unkeyed_write_whose_commit_began_is_applied_and_answered(
    stack: Stack,
) -> None:
    """The service's deadline for an unkeyed write passes while its commit is under way
    (held by a trigger at commit): the commit ends, and the move is answered as made
    within the gateway's budget, never as given up on."""
    url, child = stack.add_replica(
        "gateway",
        env={"FILES_GRPC_PORT": "0", "FILES_GATEWAY_WRITE_BUDGET_S": str(LONG_WRITE_BUDGET_S)},
    )
    conn = await db.connect(stack.settings.database_url)
    try:
        async with client(url) as edge:
            source = await folder(edge, unique("committing-from"))
            target = await folder(edge, unique("committing-to"))
            body, headers = multipart(("moves.txt", b"moves\n"))
            uploaded = await edge.post(
                f"/v1/folders/{source['id']}/files", content=body, headers=headers
            )
            assert uploaded.status_code == 201, uploaded.text
            [file] = uploaded.json()["files"]
            await conn.execute(COMMIT_WAITS)
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", COMMIT_LOCK)
                began = time.monotonic()
                moving = asyncio.ensure_future(
                    edge.post(
                        "/v1/move",
                        json={"file_ids": [file["id"]], "target_folder_id": target["id"]},
                    )
                )

                async def committing() -> bool:
                    # Past the catalog's deadline (three quarters of the budget), with
                    # the commit still held.
                    return (
                        time.monotonic() - began > LONG_WRITE_BUDGET_S * 0.75 + 0.5
                        and await conn.fetchval(COMMITTING) == 1
                    )

                await eventually(
                    committing, within=LONG_WRITE_BUDGET_S, what="the commit held past it"
                )
                assert not moving.done(), moving.result().text
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", COMMIT_LOCK)
                await conn.execute(
                    "DROP TRIGGER edge_commit_waits ON catalog.events;"
                    " DROP FUNCTION public.edge_commit_waits()"
                )
            answer = await moving
            assert answer.status_code == 200, answer.text
            assert answer.json()["moved"] == 1, answer.text
            token = {"Files-Consistency": answer.headers["files-consistency"]}
            listed = await edge.get(f"/v1/folders/{target['id']}/items", headers=token)
            assert [i["id"] for i in listed.json()["items"]] == [file["id"]], listed.text
    finally:
        await conn.close()
        stack.remove(child)


async def test_a_grpc_download_its_client_stops_reading_is_let_go(stack: Stack) -> None:
    """HTTP/2's flow control holds a download whose client stops reading (its windows
    full): past FILES_HTTP_SEND_IDLE_S it is let go, as over HTTP, and its client, reading
    again, finds it ended `UNAVAILABLE`, not the rest of the file. It was held until the
    RPC's deadline, or for ever."""
    [port] = free_ports(1, set())
    url, child = stack.add_replica(
        "gateway", env={"FILES_GRPC_PORT": str(port), "FILES_HTTP_SEND_IDLE_S": "2"}
    )
    logs = stack.data_dir / "logs" / "gateway.log"
    try:
        async with client(url) as edge:
            top = await folder(edge, unique("unread-grpc"))
            body, headers = multipart(("big.txt", b"0123456789abcde\n" * (4 * 65536)))
            uploaded = await edge.post(
                f"/v1/folders/{top['id']}/files", content=body, headers=headers
            )
            assert uploaded.status_code == 201, uploaded.text
            [file] = uploaded.json()["files"]
        # Windows that stay small (64 KiB): 4 MiB do not fit in the sockets and windows.
        options = [("grpc.http2.bdp_probe", 0)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stream = rpc.FilesStub(channel).Download(
                pb.DownloadRequest(file_id=file["id"]),
                metadata=(("authorization", f"Bearer {ADMIN_KEY}"),),
            )
            first = await stream.read()
            assert first.header.name == "big.txt", first

            async def let_go() -> bool:
                return "grpc.answer_unread" in logs.read_text()

            # A message (64 KiB) waits a bound for each 16 KiB of it.
            await eventually(let_go, within=4 * 2 + MARGIN_S + 5, what="the download let go")
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while await stream.read() is not grpc.aio.EOF:
                    pass
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
    finally:
        stack.remove(child)
