"""The HTTP protocol every process serves with: uvicorn's httptools protocol, bounded.

uvicorn bounds neither a request's head nor the time a client takes to send it: a
64 MiB header was read whole (the gateway's memory grew by 64 MB for it), a request
whose headers never end or whose body stops short of its length held its connection
for as long as the client liked (minutes, then thousands of them at once), and a
connection that sent nothing was never closed. Here:

- the request line and headers together are at most `max_head` bytes: past it, `431
  headers_too_large` and the connection closed, before more is read (counted as the
  bytes come: httptools hands a header over only once it has all of it);
- they must arrive within `headers_timeout_s` of the connection's start (or of the
  request's first byte on a kept-alive connection): else `408 request_timeout`;
- a body may pause at most `body_idle_s` while the application waits for it (not while
  the application is the one not reading: flow control paused us): else the connection
  is closed, which the application sees as the client gone.
- an answer's client may read nothing at most `send_idle_s` (the socket's buffers full,
  so the application's writes wait; a client that read some of what waits to be sent
  meanwhile gets another `send_idle_s`): else the connection is dropped, which the
  application sees as the client gone. A download never read held the gateway's
  connection to ingest, and ingest's file, for good; a paused video element that finds
  its connection gone asks again from where it was (a Range request).

Between requests uvicorn's own keep-alive timeout closes an idle connection.

The gateway is the edge (`PUBLIC`). A service is reached only by the gateway (and by
services), whose identity token grows with the caller's grants, and whose body pieces
arrive as the gateway gathers them from the client (512 KiB at a time: minutes apart
for a slow client), so a service's bounds are wider (`INTERNAL`): they catch a peer
that is stuck, not a client that is slow.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.kit.logs import log


@dataclass(frozen=True)
class Bounds:
    # The request line and headers, bytes as sent.
    max_head: int
    headers_timeout_s: float
    body_idle_s: float
    send_idle_s: float


# The defaults of Settings' FILES_HTTP_HEADERS_TIMEOUT_S, FILES_HTTP_BODY_IDLE_S and
# FILES_HTTP_SEND_IDLE_S.
PUBLIC = Bounds(max_head=64 * 1024, headers_timeout_s=30.0, body_idle_s=120.0, send_idle_s=300.0)
INTERNAL = Bounds(
    max_head=16 * 1024 * 1024, headers_timeout_s=30.0, body_idle_s=3600.0, send_idle_s=3600.0
)
# After a refusal, how long what the client still sends is read and dropped before the
# connection closes: closed at once with unread bytes, it would be reset, and the client
# could lose the answer before it read it.
LINGER_S = 2.0


class Gathered:
    """A body's reads since the application last took them, kept as the reads' own bytes.
    uvicorn gathers them into a bytearray (`body += read`, a copy, and its pages grown)
    and hands that on as `bytes(body)` (another copy): twice every byte of every body,
    ~0.2 CPU-s per GB a process received (a GB of DICOM slices is received twice, by
    the gateway and by ingest). Here one read, as it mostly is, is handed on as it is,
    several are joined (one copy). uvicorn's `on_body` and `receive` use only `+=`,
    `len` and `bytes()`, which this has."""

    __slots__ = ("reads", "size")

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.size = 0

    def __iadd__(self, read: bytes) -> Gathered:
        self.reads.append(read)
        self.size += len(read)
        return self

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        if len(self.reads) == 1:
            return self.reads[0]
        return b"".join(self.reads)


# What a client must have read of an answer since the send bound was armed to earn
# another (`_send_late`): asyncio's low-water mark, what one resume of the writes asks.
SEND_PROGRESS = 16 * 1024


class BoundedHttp(HttpToolsProtocol):
    bounds = PUBLIC  # `bounded_http` makes the class with a process's own

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = 0
        self._in_head = True
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        # A refusal waiting for the answer to the request before it (pipelined).
        self._after_answer: tuple[int, bytes, str, str] | None = None
        self._body_at = 0.0
        # Armed while flow control holds the application's writes (the client reads
        # nothing): its own timer, as the body's may run at the same time.
        self._send_timer: asyncio.TimerHandle | None = None
        # The bytes left to send when it was armed: fewer when it fires, the client read.
        self._send_left = 0

    # -- the connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.bounds.headers_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._send_resumed()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # A read may hold a whole request and part of the next (pipelining): the head's
        # bound is applied to each head, a piece at a time. A head that begins inside a
        # read (or a piece of one) after a request ended there is counted from its end,
        # so it may pass the bound by at most one read (asyncio reads at most 256 KiB)
        # before it is refused: bounded all the same.
        while data and not self._refused:
            if not self._in_head:
                super().data_received(data)
                return
            room = self.bounds.max_head - self._head
            if len(data) <= room:
                self._head += len(data)
                super().data_received(data)
                return
            piece, data = data[:room], data[room:]
            self._head += room
            super().data_received(piece)
            if self._in_head and self._head >= self.bounds.max_head and not self._refused:
                self._refuse(
                    431,
                    b"Request Header Fields Too Large",
                    "headers_too_large",
                    f"the request line and headers are larger than {self.bounds.max_head} bytes",
                )

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_left = self.transport.get_write_buffer_size()
            self._send_timer = self.loop.call_later(self.bounds.send_idle_s, self._send_late)

    def resume_writing(self) -> None:
        self._send_resumed()
        super().resume_writing()

    def _send_resumed(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_late(self) -> None:
        left = self.transport.get_write_buffer_size()
        if left <= self._send_left - SEND_PROGRESS:
            # Read from since, if not below the low-water mark (a client reading an
            # answer written in one large piece slowly): not idle, so another bound.
            # At least SEND_PROGRESS read: a byte a bound kept a connection for good.
            self._send_left = left
            self._send_timer = self.loop.call_later(self.bounds.send_idle_s, self._send_late)
            return
        self._send_timer = None
        log.info("http.answer_unread", client=self.client, idle_s=self.bounds.send_idle_s)
        # Dropped, not closed: a close waits for the unread bytes to be sent first, for
        # as long as the client likes.
        self.transport.abort()

    # -- the parser's callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._arm(self.bounds.headers_timeout_s, self._headers_late)

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._body_at = self.loop.time()
        self._arm(self.bounds.body_idle_s, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_at = self.loop.time()
        if self.cycle is not None and type(self.cycle.body) is bytearray:
            # Empty: uvicorn's `receive` has just taken what was gathered.
            self.cycle.body = Gathered()  # type: ignore[assignment]
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        # What comes next on the connection is the next request's head.
        self._head, self._in_head = 0, True
        super().on_message_complete()

    # -- the bounds -------------------------------------------------------------------

    def _headers_late(self) -> None:
        self._timer = None
        if self._answering():  # a pipelined request: its clock starts once we are ready
            self._arm(self.bounds.headers_timeout_s, self._headers_late)
            return
        self._refuse(
            408,
            b"Request Timeout",
            "request_timeout",
            f"the request's headers did not arrive within {self.bounds.headers_timeout_s:g} s",
        )

    def _body_late(self) -> None:
        self._timer = None
        idle, most = self.loop.time() - self._body_at, self.bounds.body_idle_s
        if self.flow.read_paused or idle < most:
            # The application is behind (reading paused), or bytes came meanwhile.
            self._arm(most if self.flow.read_paused else most - idle, self._body_late)
            return
        log.info("http.body_stalled", client=self.client, idle_s=round(idle, 1))
        # Mid-request: the application answers, if it can, to a client now gone.
        self.transport.close()

    def _refuse(self, status: int, reason: bytes, code: str, message: str) -> None:
        self._disarm()
        self._refused = True
        log.info("http.refused", status=status, code=code, client=self.client)
        if self._answering():
            # Written now, the refusal would land inside the answer to the request
            # before (pipelined): it follows that answer.
            self._after_answer = (status, reason, code, message)
            return
        self._answer_refused(status, reason, code, message)

    def _answer_refused(self, status: int, reason: bytes, code: str, message: str) -> None:
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": {"code": code, "message": message, "details": {}}})
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._timer = self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()

    def on_response_complete(self) -> None:
        if self._after_answer is None:
            super().on_response_complete()
            return
        refusal, self._after_answer = self._after_answer, None
        self.server_state.total_requests += 1
        self._answer_refused(*refusal)

    def send_400_response(self, msg: str) -> None:
        # The HTTP parser's refusal (uvicorn's own is plain text, closes at once, and is
        # written even into an answer under way): ours, with its linger.
        self._refuse(400, b"Bad Request", "malformed_request", "the request is not valid HTTP/1.1")

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio's contract
        if self._refused and self._after_answer is None:
            self.transport.close()  # the client is done too: no need to linger
            return None
        # Kept open while a refusal waits for the answer before it.
        return True if self._after_answer is not None else None

    def _arm(self, seconds: float, then: Any) -> None:
        if self._refused:  # only the linger's close is left to come
            return
        self._disarm()
        self._timer = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def bounded_http(bounds: Bounds) -> type[BoundedHttp]:
    """The protocol class with these bounds (uvicorn makes one a connection)."""
    return type("BoundedHttp", (BoundedHttp,), {"bounds": bounds})
