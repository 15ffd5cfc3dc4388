"""The catalog pauses Python's cyclic collector (for the whole process) only while it
builds a large batch of events, never while a request waits on the database: a delete
(a dry run too), a restore or an emptying of the trash held on a lock must not keep
every other request of the process from having its cycles collected.

The handlers run in this process against a real PostgreSQL, in a database of their
own, so `gc.isenabled()` here is the handler's process's; another connection holds the
lock the handler waits on (a row lock, or the catalog's advisory lock of moves).
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from services.catalog import domain
from services.catalog.handlers import MOVE_LOCK, Catalog
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit import db
from shared.kit.access import Access
from tests.conftest import eventually, fresh_database
from tests.integration.test_catalog_folder_order import catalog_parts
from tests.integration.test_trash_paths import uploaded

CAUSE = Cause(actor="test", correlation_id="test")
ADMIN = Access(user_id="u-admin", org_admin=True)

# Another backend of this database waiting on a lock.
WAITING = """SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND wait_event_type = 'Lock'"""


@asynccontextmanager
async def catalog_on(database_url: str) -> AsyncIterator[tuple[Catalog, asyncpg.Pool, str]]:
    async with fresh_database(database_url, "t_catalog_gc") as pool:
        parts = await catalog_parts(pool)
        name = await pool.fetchval("SELECT current_database()")
        yield Catalog(parts), pool, database_url.rsplit("/", 1)[0] + "/" + name


async def a_folder_with_a_file(catalog: Catalog, pool: asyncpg.Pool) -> uuid.UUID:
    top, file_id = uuid.uuid4(), uuid.uuid4()
    made: list[Change] = [
        *domain.create_folder(top, None, f"top-{top.hex[:8]}", "", {}),
        uploaded(file_id, top),
    ]
    async with pool.acquire() as conn, conn.transaction():
        await catalog.write(conn, envelopes_of(made, CAUSE))
    return top


async def held_behind(
    url: str, pool: asyncpg.Pool, lock: str, *args: Any, handler: Callable[[], Awaitable[Any]]
) -> Any:
    """Runs the handler while another connection holds `lock`; once the handler waits
    on it, the collector must be on. Returns the handler's answer, the lock let go."""
    holder = await db.connect(url)
    try:
        held = holder.transaction()
        await held.start()
        await holder.execute(lock, *args)
        running = asyncio.create_task(handler())
        try:

            async def waiting() -> bool:
                assert not running.done(), running.result()
                return bool(await pool.fetchval(WAITING))

            await eventually(waiting, what="the handler waiting on the lock")
            assert gc.isenabled(), "the collector is off while a handler waits on a lock"
        finally:
            await held.rollback()
        return await running
    finally:
        await holder.close()


@pytest.mark.parametrize("handler", ["delete", "dry_run", "restore", "empty_trash"])
async def test_no_handler_holds_the_collector_off_while_it_waits_on_a_lock(
    database_url: str, monkeypatch: pytest.MonkeyPatch, handler: str
) -> None:
    assert gc.isenabled()
    building: dict[str, bool] = {}

    def watched(name: str) -> None:
        decide = getattr(domain, name)

        def decided(*args: Any, **kwargs: Any) -> Any:
            building[name] = gc.isenabled()
            return decide(*args, **kwargs)

        monkeypatch.setattr(domain, name, decided)

    for name in ("delete", "restore", "purge"):
        watched(name)

    async with catalog_on(database_url) as (catalog, pool, url):
        top = await a_folder_with_a_file(catalog, pool)
        row_lock = "SELECT 1 FROM catalog.folders WHERE id = $1 FOR UPDATE"
        moves = "SELECT pg_advisory_xact_lock($1)"

        def deleting(dry_run: bool) -> Callable[[], Awaitable[Any]]:
            return lambda: catalog.delete(
                CAUSE, file_ids=[], folder_ids=[top], dry_run=dry_run, access=ADMIN
            )

        if handler in ("delete", "dry_run"):
            # Waits on the folder's row, taken by another transaction.
            answer, _ = await held_behind(
                url, pool, row_lock, top, handler=deleting(handler == "dry_run")
            )
            assert answer == (
                {"deleted": 1} if handler == "delete" else {**answer, "dry_run": True}
            ), answer
        elif handler == "restore":
            await deleting(False)()
            answer, _ = await held_behind(
                url,
                pool,
                moves,
                MOVE_LOCK,
                handler=lambda: catalog.restore(CAUSE, file_ids=[], folder_ids=[top], access=ADMIN),
            )
            assert answer == {"restored_folders": 1, "restored_files": 1}, answer
        else:
            await deleting(False)()
            answer, _ = await held_behind(
                url,
                pool,
                moves,
                MOVE_LOCK,
                handler=lambda: catalog.empty_trash(CAUSE, ADMIN, folder_ids=[top]),
            )
            assert answer == {"purged_folders": 1, "purged_files": 1}, answer
        assert gc.isenabled()
    # The events themselves are still built with the collector off.
    built = {"delete": "delete", "dry_run": None, "restore": "restore", "empty_trash": "purge"}
    wanted = built[handler]
    assert {k: v for k, v in building.items() if k == wanted} == (
        {wanted: False} if wanted else {}
    ), building
