"""The loop both kinds of work of this context run (drawing thumbnails, making web
renditions): claim pending files, do them, claim the next; when nothing is pending, wait
for the consumer to move (or IDLE_S, should a wake-up be missed or a lease run out)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from shared.kit.logs import log
from shared.kit.retry import Backoff, Policy, transient
from shared.kit.service import Parts

# Runners look for work at least this often.
IDLE_S = 1.0

Claimed = dict[str, Any]


class Away(ConnectionError):
    """The blob store or the database away for some files of a batch, the rest done:
    only theirs are given back (transient, as the ConnectionError it is)."""

    def __init__(self, error: BaseException, file_ids: set[Any]) -> None:
        super().__init__(f"{len(file_ids)} files: {error!r}")
        self.file_ids = file_ids


async def claim_and_work(
    parts: Parts,
    policy: Policy,
    name: str,
    claim: Callable[[], Awaitable[list[Claimed]]],
    work: Callable[[list[Claimed]], Awaitable[None]],
    again_later: Callable[[list[Claimed], Backoff], Awaitable[None]] | None = None,
) -> None:
    """Forever. A failure that is not transient is logged (`<name>.failed`); the files'
    leases run out and they are tried again, up to their attempts. A transient one (the
    database or the store away) waits a backoff, then `again_later` if given (to give
    the leases back, so the failure does not count)."""
    backoff = Backoff(policy)
    while True:
        wake = parts.moved.current()
        claimed: list[Claimed] = []
        try:
            claimed = await claim()
            if claimed:
                await work(claimed)
        except Exception as error:
            file_ids = [str(c["file_id"]) for c in claimed]
            if not transient(error):
                log.error(f"{name}.failed", file_ids=file_ids, exc_info=True)
                await asyncio.sleep(IDLE_S)  # not a wait for a reaction: a pause after a bug
                continue
            log.warning(f"{name}.transient_failure", file_ids=file_ids, error=repr(error))
            if isinstance(error, Away):
                claimed = [c for c in claimed if c["file_id"] in error.file_ids]
            if again_later is not None:
                await again_later(claimed, backoff)
            else:
                await backoff.wait()
            continue
        backoff = Backoff(policy)
        if not claimed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), IDLE_S)
