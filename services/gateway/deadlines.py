"""A request's time budget at the gateway: how long it may wait for the services' answers.

Each call to a service is bounded on its own (60 s of silence), and a request may make
several in turn (its caller's lookup, the folder's role, the service's own call, keeping
a keyed answer): while a dependency hung, a keyed upload was answered after 123 s. So
every `/v1` request gets one budget that all its calls draw on: a read's
(`FILES_GATEWAY_REQUEST_BUDGET_S`, 15 s), a write's (`FILES_GATEWAY_WRITE_BUDGET_S`,
60 s: a bulk restore of 100,000 files takes seconds, tens of them under load; a DICOMweb
retrieve's too, `Route.long`), or a gRPC client's shorter deadline. Once it is spent the
request is `503 unavailable` (Retry-After), its details naming the cause `timeout`.

What is not waiting for an answer does not count: a body streamed either way (an
upload's, a download's: they keep their own bounds of silence; an upload's answer after
its last byte, while ingest inspects and stores the files, is waited for a write's
budget from that byte), a JSON body coming in, and a wait with a bound of its own (a
STOW-RS's wait for its job; an upload session's completion, which may copy a large file
within the store; the caller's lookup, shared by the requests asking meanwhile). The
budget is paused meanwhile (`paused`). The consistency waits end within it. The time
left goes to the service with each read (a POST that only reads, too) and keyed write
(`DEADLINE_HEADER`, shared/kit/http.py), which stops waiting on its own database once
the gateway would have given up: giving up on those applies nothing. The caller's own
unkeyed write is told `UNKEYED_SHARE` of it: its service gives up then only before its
commit (and before any statement outside a transaction), saying nothing was applied,
while the gateway still waits; a commit begun has the rest to be answered in.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from fastapi import Request

from shared.kit import http

HEADER = http.DEADLINE_HEADER
# Methods given the read budget (FILES_GATEWAY_REQUEST_BUDGET_S); the others, and routes
# marked `long`, the write budget (FILES_GATEWAY_WRITE_BUDGET_S).
READS = http.READS
# The service is told to give up this much before the gateway would: its own answer
# (naming what it waited for: its database) then arrives before the gateway's bound.
SERVICE_MARGIN_S = 0.25
# An unkeyed write is told this share of the time left: it gives up only before its
# commit begins, and one begun (a bulk write's, of 100,000 files: seconds) has the rest
# to end and be answered before the gateway's "it may have been applied".
UNKEYED_SHARE = 0.75
# A consistency wait asked of a service ends this much before it is told to give up:
# it then answers how far it got (a wait cut short answers nothing).
CONSISTENCY_MARGIN_S = 2 * SERVICE_MARGIN_S
# Where a gRPC call puts its client's deadline (seconds left, a float) in the request's
# ASGI state: a budget shorter than the gateway's is then the client's.
CLIENT_TIME_LEFT = "client_time_left"


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadline = time.monotonic() + seconds
        # Pauses under way (a request's calls run concurrently), and since when.
        self._pauses = 0
        self._paused_at = 0.0

    def left(self) -> float | None:
        """Seconds left; None while paused (what runs then has bounds of its own)."""
        if self._pauses:
            return None
        return max(self._deadline - time.monotonic(), 0.0)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The time inside does not count."""
        if not self._pauses:
            self._paused_at = time.monotonic()
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            if not self._pauses:
                self._deadline += time.monotonic() - self._paused_at


def told(left: float, *, unkeyed: bool = False) -> str:
    """The `HEADER` a service is sent when the gateway will wait `left` s more."""
    gives = left - SERVICE_MARGIN_S
    if unkeyed:
        gives = min(gives, left * UNKEYED_SHARE)
    return str(max(int(gives * 1000), 1))


def of(request: Request) -> Budget | None:
    """The request's budget, if it has one (a `/v1` request)."""
    found = getattr(request.state, "budget", None)
    return found if isinstance(found, Budget) else None


@contextlib.contextmanager
def paused(request: Request) -> Iterator[None]:
    """The request's budget (if any) paused inside."""
    budget = of(request)
    if budget is None:
        yield
        return
    with budget.paused():
        yield
