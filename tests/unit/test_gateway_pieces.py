"""How the gateway sends a streamed body on: the caller's chunks joined into pieces of
at least the piece size, in order, none lost; the caller's Content-Length with it only
when the caller framed the body by it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from starlette.requests import Request

from services.gateway.edge import in_pieces, streamed_length


async def chunks(*sizes: int) -> AsyncIterator[bytes]:
    for size in sizes:
        yield os.urandom(size)


async def test_pieces_are_the_chunks_joined_in_order_and_at_least_the_size() -> None:
    sent: list[bytes] = []

    async def recorded(sizes: tuple[int, ...]) -> AsyncIterator[bytes]:
        async for chunk in chunks(*sizes):
            sent.append(chunk)
            yield chunk

    sizes = (0, 100, 700, 5, 0, 1_000, 99, 1, 300)
    pieces = [p async for p in in_pieces(recorded(sizes), size=1_000)]
    assert b"".join(pieces) == b"".join(sent)
    assert [len(p) for p in pieces] == [1_805, 400]  # the last one what is left
    assert all(isinstance(p, bytes) for p in pieces)


async def test_a_chunk_of_the_size_alone_goes_on_as_it_is() -> None:
    big = os.urandom(4_096)

    async def one() -> AsyncIterator[bytes]:
        yield big

    (piece,) = [p async for p in in_pieces(one(), size=1_000)]
    assert piece is big
    assert [p async for p in in_pieces(chunks(0, 0), size=1_000)] == []


def request(*headers: tuple[bytes, bytes]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": list(headers)})


def test_the_callers_length_goes_on_only_when_the_body_is_framed_by_it() -> None:
    assert streamed_length(request((b"content-length", b"1234"))) == {"content-length": "1234"}
    assert streamed_length(request()) == {}
    chunked = (b"transfer-encoding", b"chunked")
    assert streamed_length(request(chunked, (b"content-length", b"12"))) == {}
    assert streamed_length(request((b"content-length", "١٢".encode()))) == {}
    assert streamed_length(request((b"content-length", b"-1"))) == {}
