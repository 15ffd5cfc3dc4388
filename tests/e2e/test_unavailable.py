"""What a caller sees while part of the platform is away: a clear 503, never a 500 or a
dropped connection, and the platform whole again once the launcher has restarted it."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator

import httpx

from shared.kit.stack import Stack
from tests.conftest import eventually
from tests.e2e.support import error, folder, unique


async def test_a_service_that_dies_answers_503_until_the_launcher_has_it_back(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    datasets = stack.child("datasets")
    datasets.proc.send_signal(signal.SIGKILL)
    datasets.proc.wait()
    seen: set[int] = set()

    async def back() -> bool:
        answer = await api.get("/v1/datasets")
        seen.add(answer.status_code)
        if answer.status_code == 503:
            error(answer, 503, "unavailable")
            assert answer.headers["Retry-After"]
        return answer.status_code == 200

    await eventually(back, within=120, what="the datasets service back")
    assert seen == {503, 200}
    assert [name for name, _, _ in stack.exits if name == "datasets"]


async def test_an_upload_whose_end_meets_the_access_service_away_is_still_stored(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    """The caller is asked after again when an upload's body ends (a right gone meanwhile
    refuses it); with the access service away at that moment, no answer is not a
    refusal: the body already sent is stored."""
    import asyncio

    top = await folder(api, unique("acl-away-upload"))
    started, away = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="kept.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n"
        )
        # More than the sockets between here and ingest hold: once taken, the gateway
        # has let the upload in and is forwarding it.
        for _ in range(512):
            yield b"a" * 65536
        started.set()
        await away.wait()
        yield b"b" * 1000 + b"\r\n--B--\r\n"

    async def take_the_access_service_away() -> None:
        await started.wait()
        # Kept down until the upload has been answered: restarted by the supervisor at
        # once, it could be back before the gateway's remembered answer ran out.
        held.enter_context(stack.down("acl"))

        async def unanswered() -> bool:
            # Once the gateway's remembered answer for this key has run out.
            return (await api.get(f"/v1/folders/{top['id']}")).status_code == 503

        await eventually(unanswered, within=30, what="the gateway finding the ACL away")
        away.set()

    with contextlib.ExitStack() as held:
        async with httpx.AsyncClient(base_url=str(api.base_url), headers=api.headers) as own:
            sent, _ = await asyncio.gather(
                own.post(
                    f"/v1/folders/{top['id']}/files",
                    content=body(),
                    headers={"content-type": "multipart/form-data; boundary=B"},
                    timeout=120,
                ),
                take_the_access_service_away(),
            )
    assert sent.status_code == 201, sent.text

    async def listed() -> bool:
        answer = await api.get(f"/v1/folders/{top['id']}/items")
        return answer.status_code == 200 and [i["name"] for i in answer.json()["items"]] == [
            "kept.txt"
        ]

    await eventually(listed, within=120, what="the ACL back and the upload listed")
