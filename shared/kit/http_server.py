"""The HTTP protocol every process serves with: uvicorn's httptools protocol, bounded.

uvicorn bounds neither a request's head nor the time a client takes to send it: a
64 MiB header was read whole (the gateway's memory grew by 64 MB for it), a request
whose headers never end or whose body stops short of its length held its connection
for as long as the client liked (minutes, then thousands of them at once), and a
connection that sent nothing was never closed. Here:

- the request line and headers together are at most MAX_HEAD bytes: past it, `431
  headers_too_large` and the connection closed, before the rest is read;
- they must arrive within `headers_timeout_s` of the connection's start (or of the
  request's first byte on a kept-alive connection): else `408 request_timeout`;
- a body may pause at most `body_idle_s` while the application waits for it (not while
  the application is the one not reading: flow control paused us): else the connection
  is closed, which the application sees as the client gone.

Between requests uvicorn's own keep-alive timeout closes an idle connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.kit.logs import log

# The request line and every header, bytes (each header counted with ": " and CRLF).
MAX_HEAD = 64 * 1024
# After a refusal, how long what the client still sends is read and dropped before the
# connection closes: closed at once with unread bytes, it would be reset, and the client
# could lose the answer before it read it.
LINGER_S = 2.0


class BoundedHttp(HttpToolsProtocol):
    # The defaults of Settings; `bounded_http` makes the class with a platform's own.
    headers_timeout_s = 30.0
    body_idle_s = 120.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = 0
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._body_at = 0.0

    # -- the connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.headers_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:  # answered and closing: the rest is not parsed
            super().data_received(data)

    # -- the parser's callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0
        self._arm(self.headers_timeout_s, self._headers_late)

    def on_url(self, url: bytes) -> None:
        if self._counted(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._counted(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._body_at = self.loop.time()
        self._arm(self.body_idle_s, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_at = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()

    # -- the bounds -------------------------------------------------------------------

    def _counted(self, size: int) -> bool:
        """Whether the head is still within bounds with `size` more bytes; else it is
        refused (once)."""
        if self._refused:
            return False
        self._head += size
        if self._head > MAX_HEAD:
            self._refuse(
                431,
                b"Request Header Fields Too Large",
                "headers_too_large",
                f"the request line and headers are larger than {MAX_HEAD} bytes",
            )
            return False
        return True

    def _headers_late(self) -> None:
        self._timer = None
        self._refuse(
            408,
            b"Request Timeout",
            "request_timeout",
            f"the request's headers did not arrive within {self.headers_timeout_s:g} s",
        )

    def _body_late(self) -> None:
        self._timer = None
        idle = self.loop.time() - self._body_at
        if self.flow.read_paused or idle < self.body_idle_s:
            # The application is behind (reading paused), or bytes came meanwhile.
            wait = self.body_idle_s if self.flow.read_paused else self.body_idle_s - idle
            self._arm(wait, self._body_late)
            return
        log.info("http.body_stalled", client=self.client, idle_s=round(idle, 1))
        # Mid-request: the application answers, if it can, to a client now gone.
        self.transport.close()

    def _refuse(self, status: int, reason: bytes, code: str, message: str) -> None:
        self._refused = True
        self._disarm()
        log.info("http.refused", status=status, code=code, client=self.client)
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

    def eof_received(self) -> None:
        if self._refused:  # the client is done too: no need to linger
            self.transport.close()

    def _arm(self, seconds: float, then: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, then)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def bounded_http(headers_timeout_s: float, body_idle_s: float) -> type[BoundedHttp]:
    """The protocol class with these timeouts (uvicorn makes one a connection)."""
    return type(
        "BoundedHttp",
        (BoundedHttp,),
        {"headers_timeout_s": headers_timeout_s, "body_idle_s": body_idle_s},
    )
