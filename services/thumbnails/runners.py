"""The loop both kinds of work of this context run (drawing thumbnails, making web
renditions): claim a pending file, do it, claim the next; when nothing is pending, wait
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


async def claim_and_work(
    parts: Parts,
    policy: Policy,
    name: str,
    claim: Callable[[], Awaitable[Claimed | None]],
    work: Callable[[Claimed], Awaitable[None]],
    again_later: Callable[[Claimed | None, Backoff], Awaitable[None]] | None = None,
) -> None:
    """Forever. A failure that is not transient is logged (`<name>.failed`); the file's
    lease runs out and it is tried again, up to its attempts. A transient one (the
    database or the store away) waits a backoff, then `again_later` if given (to give
    the lease back, so the failure does not count)."""
    backoff = Backoff(policy)
    while True:
        wake = parts.moved.current()
        claimed: Claimed | None = None
        try:
            claimed = await claim()
            if claimed is not None:
                await work(claimed)
        except Exception as error:
            file_id = str(claimed["file_id"]) if claimed is not None else None
            if not transient(error):
                log.error(f"{name}.failed", file_id=file_id, exc_info=True)
                await asyncio.sleep(IDLE_S)  # not a wait for a reaction: a pause after a bug
                continue
            log.warning(f"{name}.transient_failure", file_id=file_id, error=repr(error))
            if again_later is not None:
                await again_later(claimed, backoff)
            else:
                await backoff.wait()
            continue
        backoff = Backoff(policy)
        if claimed is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), IDLE_S)
