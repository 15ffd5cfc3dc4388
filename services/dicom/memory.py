"""A process's bytes held for answers (WADO-RS frames): a semaphore over bytes, taken
in the order asked, so that many slow readers of large answers hold at most `total`."""

from __future__ import annotations

import asyncio
from collections import deque

from shared.kit.errors import Refused


class ByteBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.left = total
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, wanted: int, wait_s: float) -> int:
        """`wanted` bytes (all of them, for one wanting more: then it is held alone),
        once the answers before it leave them; returns what was taken, to `give` back.
        Not had within `wait_s`: a 503 (with Retry-After), nothing taken."""
        wanted = min(wanted, self.total)
        if not self._waiting and wanted <= self.left:
            self.left -= wanted
            return wanted
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (wanted, granted)
        self._waiting.append(entry)
        try:
            async with asyncio.timeout(wait_s):
                await granted
        except BaseException as error:
            if granted.done() and not granted.cancelled():
                self.give(wanted)  # given just as the wait ended
            else:
                if entry in self._waiting:
                    self._waiting.remove(entry)
                self._wake()  # one smaller behind it may fit now
            if isinstance(error, TimeoutError):
                raise Refused(
                    503,
                    "busy",
                    "this service holds as many frames as it may for other answers;"
                    " try again in a moment",
                ) from None
            raise
        return wanted

    def give(self, taken: int) -> None:
        self.left += taken
        self._wake()

    def _wake(self) -> None:
        # First come, first served: a large answer waiting is not passed by small ones.
        while self._waiting:
            wanted, granted = self._waiting[0]
            if granted.done():
                self._waiting.popleft()
                continue
            if wanted > self.left:
                return
            self._waiting.popleft()
            self.left -= wanted
            granted.set_result(None)
