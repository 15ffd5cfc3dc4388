"""The gateway's calls to a service whose kept-alive connections drop under a request
(the service closed one as idle just as the gateway sent on it): a read is sent once
more on a new connection and answered; a write is never sent twice, and is a 503
`Unavailable`, never a 500. The service is a loopback server that answers the first
request of each connection and drops the connection under the second."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from starlette.requests import Request

from services.gateway import deadlines, edge
from services.gateway.edge import Gateway, Unavailable
from shared.kit import identity
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, free_port

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


class Dropping:
    """Answers a connection's first request; reads the second, then drops the
    connection: closed (FIN) or reset (RST), without answering."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.received: list[str] = []
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for n in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                self.received.append(head.split(b" ", 2)[0].decode())
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if n == 0:
                    writer.write(ANSWER)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        if self.how == "reset":
            writer.transport.abort()
        else:
            writer.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(
        data_dir=tmp_path,
        service_key=SERVICE_KEY,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",  # nothing there: no access follower
    )
    gateway = Gateway(settings)
    await gateway.start()
    yield gateway
    await gateway.stop()


def request() -> Request:
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


@pytest.mark.parametrize("how", ["closed", "reset"])
async def test_a_dropped_keep_alive_connection_retries_a_read_and_refuses_a_write(
    gateway: Gateway, how: str
) -> None:
    upstream = Dropping(how)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gateway.services["catalog"] = f"http://127.0.0.1:{port}"
    try:
        # A read on a connection, then another on the same one, which is dropped under
        # it: sent again on a new connection, and answered.
        for _ in range(2):
            answer = await gateway.call("catalog", "GET", "/v1/folders", request())
            assert answer.status_code == 200 and answer.json() == {}
        assert upstream.received == ["GET", "GET", "GET"]
        assert upstream.connections == 2

        # A write sent on a kept-alive connection that is dropped under it: Unavailable
        # (the gateway's 503), and sent once only.
        upstream.received.clear()
        answer = await gateway.call("catalog", "GET", "/v1/folders", request())
        assert answer.status_code == 200
        with pytest.raises(Unavailable) as unavailable:
            await gateway.call("catalog", "POST", "/v1/folders", request(), json={"name": "x"})
        assert unavailable.value.service == "catalog"
        assert upstream.received == ["GET", "POST"]
    finally:
        server.close()
        await server.wait_closed()


async def test_each_call_is_signed_for_the_service_it_goes_to(gateway: Gateway) -> None:
    """A token seen on the wire to one service cannot be replayed to another: the
    gateway names the target in every token it signs, for a user or for itself."""
    tokens: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        tokens.extend(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(identity.HEADER.lower().encode() + b":")
        )
        writer.write(
            ANSWER.replace(b"content-length: 2", b"connection: close\r\ncontent-length: 2")
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    user = {"id": "u-1", "access": "u-1;admin"}
    try:
        for service in ("catalog", "acl", "ingest"):
            gateway.services[service] = f"http://127.0.0.1:{port}"
            await gateway.call(service, "GET", "/v1/things", request(), user)
            await gateway.call(service, "GET", "/internal/things", request())
    finally:
        server.close()
        await server.wait_closed()
    key = identity.ServiceKey(SERVICE_KEY)
    seen = [(key.verify(t).audience, key.verify(t).actor) for t in tokens]
    assert seen == [
        ("catalog", "u-1"),
        ("catalog", "service:gateway"),
        ("acl", "u-1"),
        ("acl", "service:gateway"),
        ("ingest", "u-1"),
        ("ingest", "service:gateway"),
    ]


async def test_a_service_refusing_the_gateways_token_is_a_503_not_the_callers_401(
    gateway: Gateway,
) -> None:
    """A call that waited on a hung service past its token's life reaches it expired:
    the service's middleware refuses the token (401, marked as the token's refusal), and
    the gateway makes that Unavailable (503, try again), not a 401 telling its client
    that their own credentials are bad. A route's own 401 is passed on as it is."""

    async def route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b'{"error":{"code":"unauthenticated","message":"no such key","details":{}}}'
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": body})

    service = identity.Authenticated(route, identity.ServiceKey(SERVICE_KEY), audience="acl")
    late_by = [float(identity.TTL_S + 1)]  # how long the call waited before it was read
    now = time.time

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The service's own middleware, reading the call `late_by` after it was sent."""
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "path": head[0].split(" ")[1],
            "headers": [
                (k.strip().lower().encode(), v.strip().encode())
                for k, _, v in (line.partition(":") for line in head[1:] if line)
            ],
        }
        with mock.patch.object(identity.time, "time", lambda: now() + late_by[0]):
            await service(scope, None, send)
        body = sent[1]["body"]
        headers = b"".join(
            k + b": " + v + b"\r\n" for k, v in sent[0]["headers"] if k != b"content-length"
        )
        writer.write(
            b"HTTP/1.1 %d X\r\n%sconnection: close\r\ncontent-length: %d\r\n\r\n%s"
            % (sent[0]["status"], headers, len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    gateway.services["acl"] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(Unavailable) as unavailable:
            await gateway.call("acl", "GET", "/v1/users", request())
        assert "expired" in str(unavailable.value)
        # Read in time: the route's own 401 reaches the caller.
        late_by[0] = 0.0
        answer = await gateway.call("acl", "GET", "/v1/users", request())
        assert answer.status_code == 401 and "no such key" in answer.text
    finally:
        server.close()
        await server.wait_closed()


async def test_a_service_is_told_its_deadline_as_what_the_call_may_have_applied(
    gateway: Gateway,
) -> None:
    """A POST that only reads (the catalog's files by id, the client's own
    `/v1/files/lookup`) is told the time left as a read is; the caller's unkeyed write
    three quarters of it, which its service gives up on saying nothing was applied; and
    not once an earlier call of the request wrote (a DICOM job's cancel, told to the
    DICOM context first): its "nothing applied" would hide that write."""
    told: list[tuple[str, int | None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in head[1:])}
        await reader.readexactly(int(fields.get("content-length", "0")))
        wait = fields.get(deadlines.HEADER.lower())
        told.append((head[0].split(" ")[1], None if wait is None else int(wait)))
        writer.write(
            ANSWER.replace(b"content-length: 2", b"connection: close\r\ncontent-length: 2")
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    for service in ("catalog", "dicom", "ingest"):
        gateway.services[service] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    def budgeted() -> Request:
        made = request()
        made.state.budget = deadlines.Budget(40.0)
        return made

    try:
        asked = budgeted()
        await gateway.call("catalog", "POST", "/internal/files", asked, json={"ids": []})
        await gateway.call(
            "catalog", "POST", "/v1/files/lookup", asked, content=b"{}", with_body=True
        )
        await gateway.call("catalog", "POST", "/v1/move", asked, content=b"{}", with_body=True)
        cancelled = budgeted()
        await gateway.call("dicom", "POST", "/internal/jobs/j/cancel", cancelled)
        await gateway.call(
            "ingest", "POST", "/v1/jobs/j/cancel", cancelled, content=b"", with_body=True
        )
    finally:
        server.close()
        await server.wait_closed()
    paths = [path for path, _ in told]
    assert paths == [
        "/internal/files",
        "/v1/files/lookup",
        "/v1/move",
        "/internal/jobs/j/cancel",
        "/v1/jobs/j/cancel",
    ]
    reads = [wait for _, wait in told[:2]]
    assert all(wait is not None and 39_000 < wait <= 39_750 for wait in reads), told
    unkeyed = told[2][1]
    assert unkeyed is not None and 29_000 < unkeyed <= 30_000, told
    assert told[3][1] is None and told[4][1] is None, told


async def test_made_up_keys_never_push_a_signed_in_caller_out_of_the_cache(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone may send a made-up key, and the access service's "no such key" is kept
    too: more of them than the cache holds (10,000 cleared it whole) drop only their own
    kind, and a signed-in caller stays cached; users past the bound drop the least
    recently asked for. The access service is a loopback server counting its asks."""
    monkeypatch.setattr(edge, "AUTH_TTL_S", 3600.0)  # no entry expires in the test
    asked: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                key = json.loads(await reader.readexactly(length))["api_key"]
                asked.append(key)
                body = b'{"id": "u-1"}' if key == "known" else b'{"code": "unauthenticated"}'
                status = b"200 OK" if key == "known" else b"401 Unauthorized"
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                    b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    gateway.services["acl"] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        assert await gateway.user_of_key(request(), "known") == {"id": "u-1"}
        assert await gateway.user_of_key(request(), "made-up") is None
        assert await gateway.user_of_key(request(), "made-up") is None
        assert asked == ["known", "made-up"]
        # What each made-up key's "no such key" records (asking 10,001 times over HTTP
        # would only slow the test).
        for n in range(10_001):
            digest = hashlib.sha256(f"x{n}".encode()).hexdigest()
            gateway.remember_caller(digest, time.monotonic(), None, gateway.access_changes)
        assert await gateway.user_of_key(request(), "known") == {"id": "u-1"}
        assert asked == ["known", "made-up"]
        assert len(gateway._unknown) == edge.UNKNOWN_KEPT

        # Users past the bound: the least recently asked for goes, not the one in use.
        for n in range(edge.CALLERS_KEPT):
            gateway.remember_caller(
                f"user-{n}", time.monotonic(), {"id": f"u{n}"}, gateway.access_changes
            )
            if n == edge.CALLERS_KEPT // 2:
                assert await gateway.user_of_key(request(), "known") == {"id": "u-1"}
        assert len(gateway._keys) == edge.CALLERS_KEPT
        assert "user-0" not in gateway._keys
        assert await gateway.user_of_key(request(), "known") == {"id": "u-1"}
        assert asked == ["known", "made-up"]
    finally:
        server.close()
        await server.wait_closed()
