"""The gateway's transfers as one caller may hold them (services/gateway/transfers.py) and
the rechecks of downloads under way (services/gateway/edge.py `while_allowed`):

- a caller's transfers are capped, and a slot is given back however its request ends
  (answered, an error, cancelled);
- after a change of access every download of a key asks its caller again at its next
  chunk: they share one call to the access service, not one each. The access service
  is a loopback server that counts the calls;
- a download retried on a new connection is within the one cap of transfers to its
  service; a plain read retried is not."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request

from services.gateway import openapi, transfers
from services.gateway.edge import UNSIGNED_PARTS, Call, Gateway, Unavailable
from services.gateway.routes import TABLE
from services.gateway.transfers import GiveBack, Transfers
from shared.kit.errors import Refused
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, free_port
from tests.unit.test_gateway_upstream import Dropping

USER = {"id": "00000000-0000-0000-0000-0000000000a1", "access": "", "key_id": None}


async def test_a_callers_transfers_are_capped_and_given_back_however_they_end() -> None:
    transfers = Transfers(per_caller=2)
    taken, both = [], asyncio.Event()

    async def holds(scope: dict[str, Any], receive: Any, send: Any) -> None:
        transfers.take(scope, "user:a")
        if scope["path"] == "/fails":
            raise RuntimeError("a bug mid-transfer")
        taken.append(scope)
        if len(taken) == 2:
            both.set()
        await asyncio.Event().wait()  # a transfer its client never ends

    app = GiveBack(holds, transfers)

    def scope(path: str) -> dict[str, Any]:
        return {"type": "http", "path": path, "state": {}}

    held = [asyncio.create_task(app(scope("/held"), None, None)) for _ in range(2)]
    await asyncio.wait_for(both.wait(), 5)
    assert transfers.under_way("user:a") == 2
    with pytest.raises(Refused) as refused:
        transfers.take({"state": {}}, "user:a")
    assert (refused.value.status, refused.value.code) == (429, "too_many_transfers")
    assert refused.value.details["limit"] == 2
    # Another caller is not held back by this one.
    other = {"state": {}}
    transfers.take(other, "user:b")
    transfers.give_back(other)
    # Cancelled (the client went, the server stops): the slots are given back.
    for task in held:
        task.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert transfers.under_way("user:a") == 0
    # An error mid-transfer gives its slot back too.
    with pytest.raises(RuntimeError):
        await app(scope("/fails"), None, None)
    assert transfers.under_way("user:a") == 0
    assert transfers._under_way == {}


class Access:
    """The access service's `/internal/authenticate`: counts the calls, and answers them
    once the first has come (so that every ask made meanwhile is under way)."""

    def __init__(self) -> None:
        self.calls = 0
        self.first = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                assert head.startswith(b"POST /internal/authenticate ")
                self.calls += 1
                self.first.set()
                body = orjson.dumps(USER)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def access() -> AsyncIterator[tuple[Access, str]]:
    served = Access()
    server = await asyncio.start_server(served.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield served, f"http://127.0.0.1:{port}"
    server.close()


@pytest.fixture
async def gateway(tmp_path: Path, access: tuple[Access, str]) -> AsyncIterator[Gateway]:
    settings = Settings(
        data_dir=tmp_path,
        service_key=SERVICE_KEY,
        acl_url=access[1],
        kafka_bootstrap=f"127.0.0.1:{free_port()}",  # nothing there: no access follower
    )
    gateway = Gateway(settings)
    await gateway.start()
    yield gateway
    await gateway.stop()


def download(gateway: Gateway, key: str) -> AsyncIterator[bytes]:
    """A download under way of the caller of `key`, its service's answer in chunks."""
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/v1/files/x/content",
            "headers": [(b"authorization", f"Bearer {key}".encode())],
            "query_string": b"",
            "state": {"correlation_id": "c0ffee", "access_changes": gateway.access_changes},
        }
    )
    route = TABLE.routes[0]

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"chunk"

    answer = httpx.Response(200, content=body())
    return gateway.while_allowed(answer, Call(request, route, {}, USER), None)


async def test_the_downloads_of_one_key_share_one_recheck_after_a_change(
    gateway: Gateway, access: tuple[Access, str]
) -> None:
    served = access[0]
    downloads = [download(gateway, "the-key") for _ in range(20)]
    other = download(gateway, "another-key")
    # Each sends its first chunk: allowed when it began, nothing to ask yet.
    for each in [*downloads, other]:
        assert await anext(each) == b"chunk"
    assert served.calls == 0
    gateway.forget_callers()  # a change of access: each asks again at its next chunk
    chunks = await asyncio.wait_for(asyncio.gather(*(anext(d) for d in downloads)), 10)
    assert chunks == [b"chunk"] * 20
    assert served.calls == 1  # was 20: one call a download
    # Another key is its own lookup.
    assert await anext(other) == b"chunk"
    assert served.calls == 2


async def test_a_lookup_begun_before_a_change_is_not_shared_after_it(
    gateway: Gateway, access: tuple[Access, str]
) -> None:
    served = access[0]
    before = asyncio.create_task(gateway.user_of_key(download_request(), "k"))
    await asyncio.wait_for(served.first.wait(), 10)
    gateway.forget_callers()  # lands while the first lookup is under way
    after = await gateway.user_of_key(download_request(), "k")
    assert after == USER and await before == USER
    assert served.calls == 2


def download_request() -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [],
            "query_string": b"",
            "state": {"correlation_id": "c0ffee"},
        }
    )


async def test_a_download_retried_on_a_new_connection_is_within_the_cap(tmp_path: Path) -> None:
    """A read whose kept-alive connection was dropped is sent again on a new connection
    of its own: those of streamed reads (downloads, which hold theirs for as long as
    their client reads) were not capped, past FILES_GATEWAY_TRANSFERS_PER_SERVICE."""
    upstream = Dropping("reset")
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gateway = Gateway(
        Settings(
            data_dir=tmp_path,
            service_key=SERVICE_KEY,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            gateway_transfers_per_service=1,
            ingest_url=f"http://127.0.0.1:{port}",
        )
    )
    await gateway.start()

    async def retried() -> httpx.Response:
        """A download sent on a kept-alive connection that is dropped under it."""
        first = await gateway.call(
            "ingest", "GET", "/internal/blobs/a", download_request(), stream=True
        )
        await first.aread()
        await first.aclose()  # its connection kept alive, then dropped under the next
        return await gateway.call(
            "ingest", "GET", "/internal/blobs/a", download_request(), stream=True
        )

    try:
        held = await retried()  # on a new connection, never read: held
        assert held.status_code == 200
        with pytest.raises(Unavailable) as refused:
            await retried()
        assert refused.value.busy
        await held.aclose()
        again = await retried()
        assert again.status_code == 200
        await again.aclose()
    finally:
        await gateway.stop()
        server.close()
        await server.wait_closed()


async def test_retried_downloads_share_the_one_cap_and_retried_reads_are_not_in_it(
    tmp_path: Path,
) -> None:
    """A retried download took a connection of a second pool as large as the transfers'
    (so twice FILES_GATEWAY_TRANSFERS_PER_SERVICE to a service), and a plain read
    retried meanwhile waited on that pool and was refused as if it were a transfer
    (503, "busy"). A retried download is in the one cap; a plain read is not."""
    upstream = Dropping("reset")
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gateway = Gateway(
        Settings(
            data_dir=tmp_path,
            service_key=SERVICE_KEY,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            gateway_transfers_per_service=1,
            ingest_url=f"http://127.0.0.1:{port}",
        )
    )
    await gateway.start()

    async def retried(stream: bool) -> httpx.Response:
        """A read sent on a kept-alive connection that is dropped under it."""
        first = await gateway.call(
            "ingest", "GET", "/internal/blobs/a", download_request(), stream=stream
        )
        await first.aread()
        await first.aclose()
        return await gateway.call(
            "ingest", "GET", "/internal/blobs/a", download_request(), stream=stream
        )

    try:
        held = await retried(stream=True)  # a download retried, never read: held
        assert held.status_code == 200
        # The cap is full: another download waits, then is refused.
        with pytest.raises(Unavailable) as refused:
            await gateway.call(
                "ingest", "GET", "/internal/blobs/b", download_request(), stream=True
            )
        assert refused.value.busy
        # A plain read, retried, is no transfer: it goes.
        read = await retried(stream=False)
        assert read.status_code == 200
        await held.aclose()
    finally:
        await gateway.stop()
        server.close()
        await server.wait_closed()


def part_caller(gateway: Gateway, **query: Any) -> str:
    """Whose cap a part's PUT with this query counts in, at `gateway`."""
    route = next(r for r in TABLE.routes if r.compose == "upload_part")
    request = Request(
        {
            "type": "http",
            "method": "PUT",
            "path": f"/v1/uploads/{PART_SESSION}/parts/1",
            "headers": [],
            "query_string": urllib.parse.urlencode(query).encode(),
            "state": {},
        }
    )
    return gateway.part_caller(
        Call(request, route, {"session_id": PART_SESSION, "number": "1"}, None)
    )


PART_SESSION = "00000000-0000-4000-8000-0000000000b1"


def parts_gateway(tmp_path: Path, **settings: Any) -> Gateway:
    return Gateway(
        Settings(
            data_dir=tmp_path,
            service_key=SERVICE_KEY,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            **settings,
        )
    )


def test_a_part_counts_as_its_opener_and_only_a_sound_url_counts(tmp_path: Path) -> None:
    """A part's URL names its opener, signed with the rest: the part is in their cap. A
    forged or expired one is refused before a slot is taken, as is one whose expiry is
    not plain ASCII digits (int() took "١٢٣", which ingest refuses 422 only after the
    body was sent)."""
    gateway = parts_gateway(tmp_path)
    soon = int(time.time()) + 3600
    signed = gateway.identity.upload_part_mac(PART_SESSION, 1, soon, USER["id"])
    assert part_caller(gateway, expires=soon, opener=USER["id"], signature=signed) == (
        f"user:{USER['id']}"
    )
    arabic = str(soon).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for forged in [
        {"expires": soon, "opener": "someone-else", "signature": signed},
        {"expires": soon + 1, "opener": USER["id"], "signature": signed},
        {"expires": "soon", "opener": USER["id"], "signature": signed},
        {"expires": arabic, "opener": USER["id"], "signature": signed},
        {"expires": f" {soon}", "opener": USER["id"], "signature": signed},
        {"expires": f"+{soon}", "opener": USER["id"], "signature": signed},
        {
            "expires": soon - 7200,
            "opener": USER["id"],
            "signature": gateway.identity.upload_part_mac(PART_SESSION, 1, soon - 7200, USER["id"]),
        },
    ]:
        with pytest.raises(Refused) as refused:
            part_caller(gateway, **forged)
        assert (refused.value.status, refused.value.code) == (403, "invalid_part_url")


def test_old_form_part_urls_pass_only_while_the_rollout_setting_holds(tmp_path: Path) -> None:
    """Part URLs of the form before (no opener; the gateway cannot check them) passed
    unchecked for 6 hours after each gateway started: an old ingest's URLs issued later
    were refused, and every restart opened the way again to anyone who dropped
    `opener`. Now they pass only while FILES_GATEWAY_UNSIGNED_PARTS_UNTIL holds (unset:
    never), and only if they expire within a URL's lifetime, all as one caller."""
    now = time.time()
    soon = int(now) + 3600
    old_form = {"expires": soon, "signature": "0" * 64}
    with pytest.raises(Refused) as refused:
        part_caller(parts_gateway(tmp_path), **old_form)
    assert (refused.value.status, refused.value.code) == (403, "invalid_part_url")

    rollout = parts_gateway(
        tmp_path, gateway_unsigned_parts_until=datetime.fromtimestamp(now + 60, UTC)
    )
    assert part_caller(rollout, **old_form) == UNSIGNED_PARTS
    # Issued by an old ingest well after the gateway started: still taken.
    assert part_caller(rollout, expires=int(now) + 6 * 3600 - 5, signature="0") == (UNSIGNED_PARTS)
    # ... and one issued by an old ingest whose clock runs a few seconds ahead of ours.
    assert part_caller(rollout, expires=int(now) + 6 * 3600 + 3, signature="0") == UNSIGNED_PARTS
    for refused_form in [
        {"expires": int(now) - 60, "signature": "0" * 64},  # expired
        {"expires": int(now) + 7 * 3600, "signature": "0" * 64},  # past a URL's lifetime
        {"expires": "١٢٣", "signature": "0" * 64},
    ]:
        with pytest.raises(Refused):
            part_caller(rollout, **refused_form)

    over = parts_gateway(
        tmp_path, gateway_unsigned_parts_until=datetime.fromtimestamp(now - 1, UTC)
    )
    with pytest.raises(Refused):
        part_caller(over, **old_form)
    # Cleared the way deployments clear a variable (empty): unset, not a failed start.
    assert Settings(gateway_unsigned_parts_until="").gateway_unsigned_parts_until is None


def test_the_routes_that_take_a_transfer_declare_its_429() -> None:
    composers = {route.compose for route in TABLE.routes}
    assert composers >= transfers.COMPOSERS
    document = openapi.document(TABLE.routes)
    content = document["paths"]["/v1/files/{file_id}/content"]["get"]["responses"]
    assert "429" in content
    assert "429" not in document["paths"]["/v1/folders"]["post"]["responses"]
