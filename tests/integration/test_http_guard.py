"""The kit's HTTP guard on a real uvicorn server: an unexpected error is a clean JSON
500 carrying the request id, and the keep-alive connection serves the next request;
and the gateway's calls to a service that does not answer end as `Unavailable`."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from services.gateway.edge import Gateway, Unavailable
from shared.kit import identity
from shared.kit.embedded import free_port
from shared.kit.errors import Refused
from shared.kit.http import install_errors
from shared.kit.settings import Settings


def app() -> FastAPI:
    served = FastAPI()
    install_errors(served)

    @served.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @served.get("/refused")
    async def refused() -> None:
        raise Refused(409, "name_taken", "taken")

    @served.get("/ok")
    async def ok() -> dict[str, str]:
        return {"status": "ok"}

    @served.get("/cut")
    async def cut() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("a bug mid-stream")

        return StreamingResponse(body())

    return served


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(app(), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    yield port
    running.should_exit = True
    thread.join(10)


def test_an_unexpected_error_is_a_json_500_and_the_connection_lives_on(server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    try:
        for _ in range(3):
            conn.request("GET", "/boom", headers={"X-Request-Id": "req-42"})
            answer = conn.getresponse()
            body = orjson.loads(answer.read())
            assert answer.status == 500
            assert not answer.will_close
            assert answer.getheader("x-request-id") == "req-42"
            assert body["error"]["code"] == "internal_error"
            assert body["error"]["details"] == {"request_id": "req-42"}
            assert "req-42" in body["error"]["message"]
            conn.request("GET", "/ok")
            answer = conn.getresponse()
            assert (answer.status, orjson.loads(answer.read())) == (200, {"status": "ok"})
            assert answer.getheader("x-request-id")
        conn.request("GET", "/refused")
        answer = conn.getresponse()
        assert answer.status == 409
        assert orjson.loads(answer.read())["error"]["code"] == "name_taken"
    finally:
        conn.close()


def test_an_error_mid_answer_ends_that_connection_only(server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    try:
        conn.request("GET", "/cut")
        answer = conn.getresponse()
        assert answer.status == 200
        with pytest.raises(http.client.IncompleteRead):
            answer.read()
    finally:
        conn.close()
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", server, timeout=10)) as again:
        again.request("GET", "/ok")
        assert again.getresponse().status == 200


async def test_a_service_that_never_answers_is_unavailable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)

    listening = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    gateway = Gateway(
        Settings(
            catalog_url=f"http://127.0.0.1:{port}",
            ingest_url="http://127.0.0.1:1",
            service_key=identity.new_key(),
        )
    )
    gateway.http = httpx.AsyncClient(timeout=httpx.Timeout(0.3, connect=0.3))
    request = Request({"type": "http", "headers": [], "state": {"correlation_id": "c"}})
    try:
        with pytest.raises(Unavailable) as timed_out:
            await gateway.call("catalog", "GET", "/v1/folders", request)
        assert timed_out.value.service == "catalog"
        with pytest.raises(Unavailable) as refused:
            await gateway.call("ingest", "GET", "/v1/jobs", request)
        assert refused.value.service == "ingest"
    finally:
        await gateway.http.aclose()
        listening.close()
