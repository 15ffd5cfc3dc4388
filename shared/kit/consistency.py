"""Consistency tokens: how far each store had got when a write answered.

A token lists `source:position` pairs. A service that consumes a source is
caught up with the token when its watermark for that source reaches the
position; the gateway then adds that service's own head to the token, so the
reactions the write caused are waited for too.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable

HEADER = "Files-Consistency"


def encode(positions: dict[str, int]) -> str:
    return ",".join(f"{source}:{position}" for source, position in sorted(positions.items()))


# A token names a few stores, each at a PostgreSQL bigint: anything longer is forged,
# and its refusal names only its start (a header may be 64 KiB).
MAX_PARTS = 32
_POSITION = re.compile(r"[0-9]{1,19}")


def decode(token: str) -> dict[str, int]:
    """Parse a token; raises ValueError naming what is wrong."""
    positions: dict[str, int] = {}
    parts = [p for p in (p.strip() for p in token.split(",")) if p]
    if len(parts) > MAX_PARTS:
        raise ValueError(f"a consistency token names at most {MAX_PARTS} positions")
    for part in parts:
        source, sep, position = part.partition(":")
        if (
            not sep
            or not source.isidentifier()
            or len(source) > 100
            or not _POSITION.fullmatch(position)
        ):
            raise ValueError(f"malformed consistency token part {part[:120]!r}")
        positions[source] = max(positions.get(source, 0), int(position))
    return positions


# An event type as the stores name them (`catalog.FileMoved`), and how many one asks.
_TYPE = re.compile(r"[a-z_]+\.[A-Za-z0-9_]+")
MAX_TYPES = 500


def decode_types(types: str) -> list[str]:
    """A comma-separated list of event types; raises ValueError naming what is wrong."""
    found = [t.strip() for t in types.split(",") if t.strip()]
    if len(found) > MAX_TYPES:
        raise ValueError(f"{len(found)} event types, at most {MAX_TYPES}")
    for one in found:
        if not _TYPE.fullmatch(one):
            raise ValueError(f"malformed event type {one!r}")
    return found


def merge(*tokens: dict[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for token in tokens:
        for source, position in token.items():
            merged[source] = max(merged.get(source, 0), position)
    return merged


class Signal:
    """Wakes every waiter when watermarks move (on the consumer's NOTIFY)."""

    def __init__(self) -> None:
        self._moved = asyncio.Event()

    def current(self) -> asyncio.Event:
        return self._moved

    def fire(self) -> None:
        self._moved.set()
        self._moved = asyncio.Event()


# Waiters look again at least this often, should a notification be lost.
RECHECK_S = 0.25


async def wait_until_caught_up(
    watermarks: Callable[[], Awaitable[dict[str, int]]],
    wanted: dict[str, int],
    timeout_s: float,
    moved: Signal,
) -> bool:
    """Wait until each wanted source reaches its position, or the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        # Taken before reading, so a move in between still wakes us.
        next_move = moved.current()
        marks = await watermarks()
        if all(marks.get(source, 0) >= position for source, position in wanted.items()):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(next_move.wait(), min(left, RECHECK_S))
