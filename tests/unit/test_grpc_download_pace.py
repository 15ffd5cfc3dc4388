"""A gRPC download's bound of silence (`FILES_HTTP_SEND_IDLE_S`) as over HTTP: a client
that takes 16 KiB within each bound is never let go however slowly it reads (a bound
for each whole message let go one reading 1 MiB/s); one that stops reading is let go,
its client finding the stream ended `UNAVAILABLE`. The gateway's gRPC server over an
app that answers a file in 64 KiB pieces, as the gateway's relay of ingest does; a
real client, its windows kept small."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.gateway import grpc_api
from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.files_pb.files.v1 import files_pb2_grpc as rpc
from shared.kit.embedded import free_port

PIECE = 64 * 1024
SIZE = 16 * PIECE
IDLE_S = 0.25
# 16 KiB within each bound, with room: 64 KiB take 0.32 s, more than one bound.
RATE = 200 * 1024
FILE_ID = "8d3c1c52-8f3a-4f37-9d55-0b7c1b1f2a10"


class File:
    """The app: a file's content, in pieces; `ended` once its answer is let go."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/octet-stream"),
                        (b"content-length", str(SIZE).encode()),
                    ],
                }
            )
            for at in range(0, SIZE, PIECE):
                more = at + PIECE < SIZE
                await send({"type": "http.response.body", "body": b"x" * PIECE, "more_body": more})
        finally:
            self.ended.set()


@pytest.fixture
async def served() -> AsyncIterator[tuple[File, rpc.FilesStub]]:
    app = File()
    port = free_port()
    server = await grpc_api.start(app, "127.0.0.1", port, IDLE_S)
    # No bandwidth probe: the windows stay 64 KiB, so the writes wait for the reading.
    options = [("grpc.http2.bdp_probe", 0)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            yield app, rpc.FilesStub(channel)
    finally:
        await server.stop(None)


async def test_a_client_reading_slowly_but_steadily_gets_the_whole_file(
    served: tuple[File, rpc.FilesStub],
) -> None:
    _, stub = served
    stream = stub.Download(pb.DownloadRequest(file_id=FILE_ID))
    first = await stream.read()
    assert first.header.size == SIZE, first
    got = 0
    began = time.monotonic()
    while (message := await stream.read()) is not grpc.aio.EOF:
        got += len(message.chunk)
        # Reading at RATE: what it has taken so far, not sooner.
        await asyncio.sleep(max(began + got / RATE - time.monotonic(), 0))
    assert got == SIZE


async def test_a_client_that_stops_reading_is_let_go(served: tuple[File, rpc.FilesStub]) -> None:
    app, stub = served
    stream = stub.Download(pb.DownloadRequest(file_id=FILE_ID))
    assert (await stream.read()).header.size == SIZE
    # A message of 64 KiB has four bounds; the sockets' buffers take some first.
    async with asyncio.timeout(4 * IDLE_S + 10):
        await app.ended.wait()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        while await stream.read() is not grpc.aio.EOF:
            pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
