"""The gateway's transfers as one caller would take them from everyone: each caller's
uploads and downloads at once are capped (`FILES_GATEWAY_TRANSFERS_PER_CALLER`), and an
answer its client reads nothing of is cut after `FILES_HTTP_SEND_IDLE_S`, giving back
what it held; the client then resumes it with a Range request, as a paused video does.
Each on a gateway replica of its own, with small bounds."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from shared.kit import identity
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import error, folder, member, unique, upload

# More than the sockets' buffers between the gateway and a client that reads nothing
# (some MB): its answer waits on the client.
BIG = b"0123456789abcdef\n" * 1_200_000


@contextlib.contextmanager
def replica(stack: Stack, **env: str) -> Iterator[str]:
    url, child = stack.add_replica("gateway", env={"FILES_GRPC_PORT": "0", **env})
    try:
        yield url
    finally:
        stack.remove(child)


def client(url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_one_caller_at_its_cap_is_429_and_everyone_else_goes_on(stack: Stack) -> None:
    """A member holding as many unread downloads as they may is refused the next upload
    or download at once (429, Retry-After, the limit named); another member's upload and
    download go through meanwhile; one ended makes room."""
    with replica(stack, FILES_GATEWAY_TRANSFERS_PER_CALLER="3") as url:
        async with (
            contextlib.AsyncExitStack() as held,
            client(url, ADMIN_KEY) as admin,
        ):
            attacker = await member(admin, "hoarder")
            mine = await held.enter_async_context(client(url, attacker["api_key"]))
            own = await folder(mine, unique("hoarded"))
            big = (await upload(mine, own["id"], ("big.txt", BIG)))["files"][0]
            content = f"/v1/files/{big['id']}/content"
            unread = [await held.enter_async_context(mine.stream("GET", content)) for _ in range(3)]
            assert [r.status_code for r in unread] == [200, 200, 200]

            refused = await mine.get(content)
            found = error(refused, 429, "too_many_transfers")
            assert "FILES_GATEWAY_TRANSFERS_PER_CALLER" in found["message"]
            assert found["details"]["limit"] == 3
            assert refused.headers["retry-after"]
            made = await mine.post(
                f"/v1/folders/{own['id']}/files", files=[("file", ("c.txt", b"c\n", "text/plain"))]
            )
            error(made, 429, "too_many_transfers")
            # Another caller is not held back: their upload and download at once.
            theirs = await folder(admin, unique("not-hoarded"))
            stored = (await upload(admin, theirs["id"], ("d.txt", b"d\n")))["files"][0]
            got = await admin.get(f"/v1/files/{stored['id']}/content")
            assert (got.status_code, got.content) == (200, b"d\n")

            await unread[0].aclose()

            async def room() -> bool:
                got = await mine.get(content)
                return got.status_code == 200 and got.content == BIG

            await eventually(room, 30, "a download of the member's once one of theirs ended")


@pytest.mark.parametrize("blobs", ["local"], indirect=True)
async def test_an_answer_never_read_is_cut_gives_back_its_slot_and_resumes_by_range(
    platform: Stack,
) -> None:
    """A download whose client reads nothing (a small receive window, never read) held
    its slot, the gateway's connection to ingest and ingest's file for good. Past the
    bound of no progress its connection is dropped and its slot given back; the client
    asks again from where it was, with a Range."""
    with replica(
        platform, FILES_GATEWAY_TRANSFERS_PER_CALLER="1", FILES_HTTP_SEND_IDLE_S="2"
    ) as url:
        async with client(url, ADMIN_KEY) as admin:
            reader = await member(admin, "pauser")
            async with client(url, reader["api_key"]) as mine:
                own = await folder(mine, unique("paused"))
                big, small = (await upload(mine, own["id"], ("big.txt", BIG), ("s.txt", b"s\n")))[
                    "files"
                ]
                parsed = urllib.parse.urlsplit(url)
                sock = socket.socket()
                # A small window, never read (past the answer's head): the gateway's writes
                # wait on this client.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect((parsed.hostname, parsed.port))
                try:
                    sock.sendall(
                        (
                            f"GET /v1/files/{big['id']}/content HTTP/1.1\r\nHost: files\r\n"
                            f"Authorization: Bearer {reader['api_key']}\r\n\r\n"
                        ).encode()
                    )

                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += sock.recv(1024)
                    assert head.startswith(b"HTTP/1.1 200 "), head

                    async def answered(status: int) -> bool:
                        got = await mine.get(f"/v1/files/{small['id']}/content")
                        return got.status_code == status

                    # The paused download holds the member's one slot...
                    await eventually(lambda: answered(429), 30, "the paused download's slot held")
                    # ...until it is cut for reading nothing, and the slot given back.
                    await eventually(lambda: answered(200), 30, "the paused download cut")
                    # Dropped: what it still reads ends short of the file.
                    sock.settimeout(30)
                    received = 0
                    with contextlib.suppress(ConnectionResetError):
                        while chunk := sock.recv(1 << 20):
                            received += len(chunk)
                    assert received < len(BIG)
                finally:
                    sock.close()
                # Resumed where a player had got to: a Range request, answered in part.
                rest = await mine.get(
                    f"/v1/files/{big['id']}/content", headers={"Range": "bytes=1000000-"}
                )
                assert rest.status_code == 206, rest.text
                assert rest.headers["content-range"] == f"bytes 1000000-{len(BIG) - 1}/{len(BIG)}"
                assert rest.content == BIG[1000000:]


def trickled(url: str, path_and_query: str) -> socket.socket:
    """A part PUT that promises a large body and sends a few bytes of it."""
    parsed = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parsed.hostname, parsed.port))
    sock.settimeout(20)
    sock.sendall(
        (
            f"PUT {path_and_query} HTTP/1.1\r\nHost: files\r\nContent-Length: 10000000\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"0123456789"
    )
    return sock


def refused_at_once(url: str, path_and_query: str) -> tuple[socket.socket, bytes]:
    """A part PUT trickled (`trickled`): its answer, read while the body is unfinished
    (the socket kept open, its body never sent whole), up to the refusal's code."""
    sock = trickled(url, path_and_query)
    answer = b""
    while b"invalid_part_url" not in answer:
        got = sock.recv(4096)
        assert got, answer
        answer += got
    return sock, answer


@pytest.mark.parametrize("blobs", ["local"], indirect=True)
async def test_forged_or_expired_part_urls_are_refused_at_once_and_take_nothing(
    platform: Stack,
) -> None:
    """Anyone can send a part's PUT, with no key. A forged or expired part URL was sent
    on to ingest, on a connection of the gateway's capped pool and a slot of its own
    (each made-up session id counted apart), its body streamed whole before ingest's
    403 was read: a few trickling clients held every connection to ingest. Now the
    gateway checks the signature first: 403 at once, while the body is still coming,
    and the member's real part goes, counted in the member's own cap."""
    with replica(
        platform,
        FILES_GATEWAY_TRANSFERS_PER_SERVICE="2",
        FILES_GATEWAY_TRANSFERS_PER_CALLER="1",
    ) as url:
        async with (
            client(url, ADMIN_KEY) as admin,
            httpx.AsyncClient(base_url=url, timeout=30) as anonymous,
        ):
            uploader = await member(admin, "part-sender")
            async with client(url, uploader["api_key"]) as mine:
                own = await folder(mine, unique("parts"))
                opened = await mine.post(
                    f"/v1/folders/{own['id']}/uploads", json={"name": "p.bin", "size": 10}
                )
                assert opened.status_code == 201, opened.text
                real = urllib.parse.urlsplit(opened.json()["parts"][0]["url"])
                query = dict(urllib.parse.parse_qsl(real.query))
                assert query["opener"] == uploader["id"]
                session_id = real.path.split("/")[3]
                signer = identity.ServiceKey(platform.service_key)
                past = int(time.time()) - 60

                def at(path: str, **changed: str) -> str:
                    return f"{path}?{urllib.parse.urlencode({**query, **changed})}"

                forged = [
                    at(real.path, signature="A" * 43),
                    at(real.path, opener=ADMIN_KEY),
                    at(f"/v1/uploads/{uuid.uuid4()}/parts/1"),
                    at(real.path.replace("/parts/1", "/parts/2")),
                    # Signed as ingest would, but expired.
                    at(
                        real.path,
                        expires=str(past),
                        signature=signer.upload_part_mac(session_id, 1, past, uploader["id"]),
                    ),
                    # Of the form before openers were named: refused with
                    # FILES_GATEWAY_UNSIGNED_PARTS_UNTIL unset, even unexpired.
                    f"/v1/uploads/{uuid.uuid4()}/parts/1"
                    f"?expires={int(time.time()) + 3600}&signature={'0' * 64}",
                    f"/v1/uploads/{uuid.uuid4()}/parts/1?expires={past}&signature={'0' * 64}",
                    f"/v1/uploads/{uuid.uuid4()}/parts/1"
                    f"?expires={int(time.time()) + 7 * 3600}&signature={'0' * 64}",
                ]
                held = []
                try:
                    for path in forged:
                        sock, head = refused_at_once(url, path)
                        held.append(sock)
                        assert head.startswith(b"HTTP/1.1 403 "), head

                    # With every forged one still open: the real part goes, in the
                    # member's cap (one, taken by a download they do not read).
                    big = (await upload(mine, own["id"], ("big.txt", BIG)))["files"][0]
                    async with mine.stream("GET", f"/v1/files/{big['id']}/content") as unread:
                        assert unread.status_code == 200
                        error(
                            await anonymous.put(at(real.path), content=b"0123456789"),
                            429,
                            "too_many_transfers",
                        )
                    # The download's slot is given back once the gateway has seen its
                    # client go, not as the client closes.
                    sent: list[httpx.Response] = []

                    async def part_sent() -> bool:
                        sent.append(await anonymous.put(at(real.path), content=b"0123456789"))
                        return sent[-1].status_code != 429

                    await eventually(part_sent, 30, "the unread download's slot given back")
                    assert sent[-1].status_code == 200, sent[-1].text
                finally:
                    for sock in held:
                        sock.close()


@pytest.mark.parametrize("blobs", ["local"], indirect=True)
async def test_old_form_part_urls_pass_during_a_rollout_as_one_caller(platform: Stack) -> None:
    """Part URLs of the form before (no opener), which the gateway cannot check, pass
    on to ingest while FILES_GATEWAY_UNSIGNED_PARTS_UNTIL holds (set for a rollout),
    all of them in one caller's cap: a second one, of another session, is 429 while the
    first is under way. (Unset, they are refused at once: the test above.)"""
    until = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
    with replica(
        platform,
        FILES_GATEWAY_TRANSFERS_PER_CALLER="1",
        FILES_GATEWAY_UNSIGNED_PARTS_UNTIL=until,
    ) as url:

        def old_form() -> str:
            expires = int(time.time()) + 3600
            return f"/v1/uploads/{uuid.uuid4()}/parts/1?expires={expires}&signature={'0' * 64}"

        first = trickled(url, old_form())
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as anonymous:

                async def refused_as_one_caller() -> bool:
                    got = await anonymous.put(old_form(), content=b"0123456789")
                    return got.status_code == 429 and got.json()["error"]["code"] == (
                        "too_many_transfers"
                    )

                await eventually(refused_as_one_caller, 30, "old-form parts share one cap")
        finally:
            first.close()
