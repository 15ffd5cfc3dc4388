"""What ingest may reach of the outside world, and how much it reads of it.

Two seams any S3 client of ingest goes through, whatever speaks the protocol
(services/ingest/imports/buckets: aiohttp with botocore's signer):

- `Egress`: the resolver and connect hook. A name is resolved once per connection,
  every address it gives is judged by the address rule (domain/endpoints.py), and the
  socket is dialled to an address that passed: what was checked is what is
  connected to, so a name that resolves elsewhere a moment later (DNS rebinding)
  gains nothing. TLS is the caller's, on that socket, verifying the host name.
- `Budget` and `ListingBudget`: the capped reader. A response is read up to a number
  of bytes and by a deadline (a base, plus a second per `MIN_RATE` bytes received, so
  a large object from a slow bucket is fine and a trickle is not); a listing is read
  up to a number of pages and a time spent waiting on them, and a continuation token
  seen before ends it. A cap reached is a `CapReached` with the error's code.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.ingest.imports.domain.endpoints import EndpointRule, normal_host
from shared.kit.settings import Settings

# Bytes of a response's status line and headers; of an error's body (S3's are < 1 KiB);
# of a listing page (1,000 keys of up to 1,024 bytes, URL-encoded, in XML).
MAX_HEAD_BYTES = 64 * 1024
MAX_ERROR_BYTES = 64 * 1024
MAX_PAGE_BYTES = 16 * 1024 * 1024
# A response may take a second longer per this many bytes received.
MIN_RATE = 64 * 1024


class EndpointNotAllowed(Exception):
    """An endpoint's address is refused by the address rule."""

    code = "endpoint_not_allowed"

    def __init__(self, host: str, address: str | None, reason: str) -> None:
        super().__init__(reason)
        self.host, self.address, self.reason = host, address, reason


class CapReached(Exception):
    """A response or a listing went past one of its caps; `code` names which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Caps:
    """How much of a bucket's answers ingest reads (FILES_CLOUD_* settings)."""

    response_s: float = 60.0
    listing_s: float = 3600.0
    listing_pages: int = 10_000
    import_keys: int = 1_000_000

    @classmethod
    def of(cls, settings: Settings) -> Caps:
        return cls(
            response_s=settings.cloud_response_timeout_s,
            listing_s=settings.cloud_listing_timeout_s,
            listing_pages=settings.cloud_listing_max_pages,
            import_keys=settings.import_max_keys,
        )


Resolver = Callable[[str, int], list[tuple[Any, ...]]]


def _getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


class Egress:
    """The address rule applied where names become sockets."""

    def __init__(self, rule: EndpointRule, resolver: Resolver = _getaddrinfo) -> None:
        self.rule = rule
        self._resolve = resolver

    def addresses(self, host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
        """(family, sockaddr) of every address `host` resolves to that may be dialled,
        in the resolver's order; EndpointNotAllowed (naming the first address refused)
        when none may, OSError when the name does not resolve."""
        name = normal_host(host)
        refused = self.rule.name_refusal(name, port)
        if refused is not None:
            raise EndpointNotAllowed(name, None, refused)
        allowed: list[tuple[int, tuple[Any, ...]]] = []
        first: tuple[str, str] | None = None
        for family, _, _, _, sockaddr in self._resolve(name, port):
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            reason = self.rule.address_refusal(name, address, port)
            if reason is None:
                allowed.append((family, sockaddr))
            elif first is None:
                mapped = getattr(address, "ipv4_mapped", None)
                first = (str(mapped or address), reason)
        if not allowed:
            if first is None:
                raise OSError(f"{name} resolves to no address")
            raise EndpointNotAllowed(name, *first)
        return allowed

    def connect(self, host: str, port: int, timeout: float) -> socket.socket:
        """A TCP socket to an allowed address of `host` (the first that answers)."""
        error: OSError | None = None
        for family, sockaddr in self.addresses(host, port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as failed:
                error = failed
                sock.close()
        assert error is not None
        raise error


class Budget:
    """One response: at most `max_bytes` of body (None: any number), whole by its
    deadline (`seconds`, plus a second per MIN_RATE bytes received, never past `until`,
    an absolute time of the clock, when given)."""

    def __init__(
        self,
        what: str,
        max_bytes: int | None,
        seconds: float,
        *,
        until: float | None = None,
        until_code: str = "response_timeout",
        until_message: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.max_bytes, self.clock = what, max_bytes, clock
        self.start = clock()
        self.seconds, self.until = seconds, until
        self.until_code = until_code
        self.until_message = until_message or f"{what} did not arrive in time"
        self.received = 0

    def left(self) -> float:
        """Seconds the response may still take; CapReached once none are left."""
        now = self.clock()
        left = self.start + self.seconds + self.received / MIN_RATE - now
        if self.until is not None and self.until - now < left:
            if self.until - now <= 0:
                raise CapReached(self.until_code, self.until_message)
            return self.until - now
        if left <= 0:
            raise CapReached(
                "response_timeout",
                f"{self.what} did not arrive whole within {self.seconds:g} s"
                f" ({self.received} bytes came)",
            )
        return left

    def declared(self, length: int) -> None:
        """A body announced as `length` bytes: refused at once if over the cap."""
        if self.max_bytes is not None and length > self.max_bytes:
            raise self._too_large(f"announced {length} bytes")

    def take(self, count: int) -> None:
        self.received += count
        if self.max_bytes is not None and self.received > self.max_bytes:
            raise self._too_large(f"went past {self.max_bytes} bytes")

    def _too_large(self, how: str) -> CapReached:
        return CapReached(
            "response_too_large", f"{self.what} {how}; at most {self.max_bytes} are read"
        )


class ListingBudget:
    """One listing: at most `caps.listing_pages` pages, `caps.listing_s` seconds spent
    waiting on them (time the listing waits for the reads does not count), each
    continuation token once."""

    def __init__(self, caps: Caps, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.caps, self.what, self.clock = caps, what, clock
        self.pages = 0
        self.spent = 0.0
        self._tokens: set[bytes] = set()
        self._started: float | None = None

    def page(self, max_bytes: int = MAX_PAGE_BYTES) -> Budget:
        """The budget of the next page's response (or of another attempt at it); its
        clock runs until `stopped`."""
        self.stopped()
        if self.pages >= self.caps.listing_pages:
            raise CapReached(
                "listing_too_large",
                f"{self.what} went on past {self.caps.listing_pages} pages",
            )
        self._started = now = self.clock()
        return Budget(
            f"a page of {self.what}",
            max_bytes,
            self.caps.response_s,
            until=now + self.caps.listing_s - self.spent,
            until_code="listing_timeout",
            until_message=f"{self.what} took more than {self.caps.listing_s:g} s",
            clock=self.clock,
        )

    def stopped(self) -> None:
        """The page's request ended (answered or not): its time counts."""
        if self._started is not None:
            self.spent += self.clock() - self._started
            self._started = None

    def done(self, token: str | None) -> None:
        """A page came whole, naming `token` as the next (None: the last page)."""
        self.stopped()
        self.pages += 1
        if self.spent >= self.caps.listing_s:
            raise CapReached(
                "listing_timeout",
                f"{self.what} took more than {self.caps.listing_s:g} s",
            )
        if token is None:
            return
        digest = hashlib.blake2b(token.encode(), digest_size=16).digest()
        if digest in self._tokens:
            raise CapReached(
                "listing_loop",
                f"{self.what} answered a continuation token it had given before,"
                f" after {self.pages} pages: it would never end",
            )
        self._tokens.add(digest)
