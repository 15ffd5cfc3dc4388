"""A body as the application receives it from the bounded protocol (shared/kit/http_server.py):
every byte in order, whichever way the reads fell; what one read brought handed on as
that read's bytes, not copied into a buffer and out again (each copy of a GB of DICOM
slices cost the gateway and ingest ~0.1 CPU-s)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from unittest import mock

from uvicorn.config import Config
from uvicorn.server import ServerState

from shared.kit.http_server import INTERNAL, Gathered, bounded_http


def test_one_read_is_handed_on_as_it_is_several_are_joined() -> None:
    one = Gathered()
    read = bytes(range(256)) * 1024
    one += read
    assert bytes(one) is read and len(one) == len(read)
    several = Gathered()
    several += b"ab"
    several += b"cd"
    assert bytes(several) == b"abcd" and len(several) == 4


def test_a_body_read_in_pieces_reaches_the_application_whole_and_in_order() -> None:
    received: list[bytes] = []
    done = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:
            message = await receive()
            received.append(message["body"])
            more = message["more_body"]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        done.set()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        protocol_class = bounded_http(INTERNAL)
        config = Config(app=app, http=protocol_class, log_config=None)
        protocol = protocol_class(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        transport = mock.Mock(spec=asyncio.Transport)
        addresses = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        transport.get_extra_info.side_effect = lambda name, default=None: addresses.get(name)
        transport.is_closing.return_value = False
        protocol.connection_made(transport)
        body = bytes(range(251)) * 4000  # ~1 MB, no period in it
        protocol.data_received(
            b"POST /in HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        # Reads of every size, several before the application takes them, then one at a time.
        sizes, at = [1, 7, 65_536, 3, 300_000, 100_000], 0
        for size in sizes:
            protocol.data_received(body[at : at + size])
            at += size
        await asyncio.sleep(0)
        while at < len(body):
            protocol.data_received(body[at : at + 131_072])
            at += 131_072
            await asyncio.sleep(0)  # the application's turn
        await asyncio.wait_for(done.wait(), 10)
        assert b"".join(received) == body
        assert all(type(piece) is bytes for piece in received)
        protocol.connection_lost(None)

    asyncio.run(run())


def test_an_answer_its_client_stops_reading_is_dropped_after_the_bound() -> None:
    """Flow control holding the application's writes (the client reads nothing) for
    `send_idle_s` drops the connection (aborted: a close would wait for the client to
    read what is left); writes that resume in time keep it."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await asyncio.Event().wait()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        bounds = dataclasses.replace(INTERNAL, send_idle_s=0.05)
        protocol_class = bounded_http(bounds)
        config = Config(app=app, http=protocol_class, log_config=None)
        protocol = protocol_class(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        dropped = asyncio.Event()
        transport = mock.Mock(spec=asyncio.Transport)
        addresses = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        transport.get_extra_info.side_effect = lambda name, default=None: addresses.get(name)
        transport.is_closing.return_value = False
        transport.get_write_buffer_size.return_value = 1000
        transport.abort.side_effect = lambda: dropped.set()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /out HTTP/1.1\r\nhost: x\r\n\r\n")
        # Held, then let go in time: kept.
        protocol.pause_writing()
        protocol.resume_writing()
        assert protocol._send_timer is None
        # Held past the bound: dropped.
        protocol.pause_writing()
        await asyncio.wait_for(dropped.wait(), 10)
        assert transport.abort.call_count == 1
        protocol.connection_lost(None)

    asyncio.run(run())


def test_an_answer_read_slowly_is_kept_while_its_client_reads() -> None:
    """An answer written in one large piece, read slowly: the writes stay held (its
    buffer above the low-water mark) past `send_idle_s`, but the client read some of it
    meanwhile; it was dropped all the same. Now each bound the client read 16 KiB or more
    in earns another (a byte a bound earned one too); one with less drops it."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await asyncio.Event().wait()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        bounds = dataclasses.replace(INTERNAL, send_idle_s=0.02)
        protocol_class = bounded_http(bounds)
        config = Config(app=app, http=protocol_class, log_config=None)
        protocol = protocol_class(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        # The bytes left to send, as the client reads: 50 KB less twice, then less by
        # under the low-water mark (16 KiB), a trickle that earns no other bound.
        left = [200_000, 150_000, 100_000, 90_000, 80_000]
        seen: list[int] = []

        def buffered() -> int:
            seen.append(left[len(seen)])
            return seen[-1]

        dropped = asyncio.Event()
        transport = mock.Mock(spec=asyncio.Transport)
        addresses = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}
        transport.get_extra_info.side_effect = lambda name, default=None: addresses.get(name)
        transport.is_closing.return_value = False
        transport.get_write_buffer_size.side_effect = buffered
        transport.abort.side_effect = lambda: dropped.set()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /out HTTP/1.1\r\nhost: x\r\n\r\n")
        protocol.pause_writing()
        await asyncio.wait_for(dropped.wait(), 10)
        # Dropped once a bound passed with under 16 KiB read, not before.
        assert seen == left[:4]
        assert transport.abort.call_count == 1
        protocol.connection_lost(None)

    asyncio.run(run())
