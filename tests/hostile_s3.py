"""A hostile S3 endpoint of the tests' own: what a customer's endpoint could do to the
platform that reads it. Its own thread and event loop, on 127.0.0.1; path-style
requests; each bucket misbehaves its own way (signatures are not checked):

- `endless`: a listing always truncated, a fresh continuation token each page (its keys
  are folder markers, so nothing is imported while it goes on);
- `looping`: a listing always truncated with the same continuation token;
- `slow`: an endless listing whose pages each take a while;
- `huge-error`: objects answered 403 with an endless error body (chunked);
- `huge-listing-error`: its listing answered 403 with an endless error body;
- `trickle`: objects whose bytes come one at a time, slowly;
- `redirect`: objects answered 307 to another listener (`trap`), which counts visits;
- `many`: an endless listing of 1,000 objects a page (tiny PNGs);
- `good`: two PNGs, as a bucket should.

`sent` counts the bytes of endless bodies it managed to send: a reader that stops at
its cap keeps it small.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import urllib.parse
from collections.abc import Awaitable, Callable

from tests.e2e.support import png

_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
PNG = png(4, 4)
GOOD_KEYS = ("one.png", "two.png")
# Writes one answer; False when the connection is done with.
Answer = Callable[[asyncio.StreamWriter], Awaitable[bool]]


def _listing(keys: list[str], token: str | None) -> bytes:
    contents = "".join(f"<Contents><Key>{k}</Key><Size>{len(PNG)}</Size></Contents>" for k in keys)
    following = f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{_XMLNS}">'
        f"<IsTruncated>{'true' if token else 'false'}</IsTruncated>{following}{contents}"
        "</ListBucketResult>"
    ).encode()


def _head(status: int, length: int | None, extra: str = "") -> bytes:
    size = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return f"HTTP/1.1 {status} X\r\n{size}\r\n{extra}\r\n".encode()


class HostileS3:
    def __init__(self) -> None:
        self.sent = 0
        self.trap_visits = 0
        self.port = 0
        self.trap_port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-s3", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the hostile endpoint did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            trap = await asyncio.start_server(self._trapped, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.trap_port = trap.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _trapped(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.trap_visits += 1
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, OSError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                parsed = urllib.parse.urlsplit(target)
                bucket, _, key = urllib.parse.unquote(parsed.path).lstrip("/").partition("/")
                query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
                answer = self._answer(bucket, key, query)
                if not await answer(writer):
                    break
        writer.close()

    def _answer(self, bucket: str, key: str, query: dict[str, str]) -> Answer:
        if not key:
            return self._list(bucket, query)
        return self._object(bucket, key)

    # -- listings ----------------------------------------------------------------------

    def _list(self, bucket: str, query: dict[str, str]) -> Answer:
        token = query.get("continuation-token", "")
        page = int(token[1:]) if token.startswith("t") else len(token)
        if bucket == "endless":
            return self._send(200, _listing([f"dir-{page}/"], f"t{page + 1}"))
        if bucket == "looping":
            return self._send(200, _listing([f"dir-{page}/"], "again"))
        if bucket == "slow":
            return self._send(200, _listing([f"dir-{page}/"], f"t{page + 1}"), delay=0.4)
        if bucket == "many":
            keys = [f"m/{page:04d}-{i:04d}.png" for i in range(1000)]
            return self._send(200, _listing(keys, f"t{page + 1}"))
        if bucket == "huge-listing-error":
            return self._endless(403, b"<Error><Code>AccessDenied</Code><Message>")
        if bucket == "good":
            return self._send(200, _listing(list(GOOD_KEYS), None))
        return self._send(200, _listing(["a.png", "b.png", "c.png"], None))

    # -- objects -------------------------------------------------------------------------

    def _object(self, bucket: str, key: str) -> Answer:
        if bucket == "huge-error":
            return self._endless(403, b"<Error><Code>AccessDenied</Code><Message>")
        if bucket == "trickle":
            return self._trickle(PNG)
        if bucket == "redirect":
            location = f"http://127.0.0.1:{self.trap_port}/{bucket}/{key}"
            return self._send(307, b"", extra=f"Location: {location}\r\n")
        return self._send(200, PNG)

    def _send(self, status: int, body: bytes, *, delay: float = 0.0, extra: str = "") -> Answer:
        async def send(writer: asyncio.StreamWriter) -> bool:
            if delay:
                await asyncio.sleep(delay)  # a slow endpoint, on purpose
            writer.write(_head(status, len(body), extra) + body)
            await writer.drain()
            return True

        return send

    def _endless(self, status: int, start: bytes) -> Answer:
        async def send(writer: asyncio.StreamWriter) -> bool:
            writer.write(_head(status, None) + b"%x\r\n%s\r\n" % (len(start), start))
            filler = b"x" * 65536
            chunk = b"%x\r\n%s\r\n" % (len(filler), filler)
            while self.sent < 1 << 30:  # a gibibyte at most, if anyone read it all
                writer.write(chunk)
                await writer.drain()
                self.sent += len(filler)
            return False

        return send

    def _trickle(self, body: bytes) -> Answer:
        async def send(writer: asyncio.StreamWriter) -> bool:
            writer.write(_head(200, len(body)))
            for i in range(len(body)):
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.2)  # a trickle, on purpose
            return True

        return send
