"""A file deleted while a folder above it moves goes to the trash with the path its
folder has once the move is done: the move's re-rooting of the trash cannot see a row
not yet committed, so the delete's projection must wait for the move and read after it."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from services.catalog import domain
from services.catalog.handlers import Catalog, setup_reactions
from services.catalog.history import setup_history
from services.catalog.projections import cloud_synced, links, tree
from shared.contracts import catalog as ev
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit.access import Access
from shared.kit.eventstore import EventStore
from shared.kit.service import Parts
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, fresh_database

CAUSE = Cause(actor="test", correlation_id="c")


def uploaded(file_id: uuid.UUID, folder_id: uuid.UUID) -> Change:
    """A one-byte text file `a.txt` uploaded into the folder."""
    return Change(
        ev.file_stream(file_id),
        1,
        ev.FileUploaded(
            file_id=file_id,
            folder_id=folder_id,
            name="a.txt",
            kind="text",
            size=1,
            sha256="0" * 64,
            mime_type="text/plain",
            blob_key="k",
        ),
    )


def left_right_tree(
    left: uuid.UUID, right: uuid.UUID, box: uuid.UUID, inner: uuid.UUID, file_id: uuid.UUID
) -> list[Change]:
    """Top-level `left` and `right`, `left/box/inner`, and a file in `inner`."""
    return [
        *domain.create_folder(left, None, "left", "", {}),
        *domain.create_folder(right, None, "right", "", {}),
        *domain.create_folder(box, domain.Folder(left, None, "left", 1, (left,)), "box", "", {}),
        *domain.create_folder(
            inner, domain.Folder(box, left, "box", 1, (left, box)), "inner", "", {}
        ),
        uploaded(file_id, inner),
    ]


async def test_a_file_deleted_during_a_move_above_it_is_trashed_at_the_new_path(
    database_url: str,
) -> None:
    async with fresh_database(database_url, "trashrace") as pool:
        async with pool.acquire() as conn:
            await EventStore("catalog").setup(conn)
            await tree.setup(conn)
        left, right, box, inner, file_id = (uuid.uuid4() for _ in range(5))
        made = left_right_tree(left, right, box, inner, file_id)
        async with pool.acquire() as conn, conn.transaction():
            await tree.apply(conn, envelopes_of(made, CAUSE))
        moved = domain.move(
            [domain.Folder(box, left, "box", 1, (left, box))],
            [],
            domain.Folder(right, None, "right", 1, (right,)),
        )
        deleted = domain.delete([], [domain.File(file_id, inner, "a.txt", 1, "k", "0" * 64)])

        async with pool.acquire() as mover, pool.acquire() as deleter:
            # The move is projected, not yet committed; the delete comes meanwhile.
            moving = mover.transaction()
            await moving.start()
            await tree.apply(mover, envelopes_of(moved, CAUSE))

            async def delete() -> None:
                async with deleter.transaction():
                    await tree.apply(deleter, envelopes_of(deleted, CAUSE))

            deleting = asyncio.create_task(delete())
            pid = deleter.get_server_pid()
            deadline = time.monotonic() + 10
            # Until the delete waits on the move's locks (or is done: the race lost).
            while not deleting.done():
                waiting = await pool.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
                )
                if waiting:
                    break
                assert time.monotonic() < deadline, "the delete neither waited nor ended"
                await asyncio.sleep(0.01)
            await moving.commit()
            await deleting

        path = await pool.fetchval("SELECT path FROM catalog.trash_files WHERE id = $1", file_id)
        assert path == [right, box, inner]


async def test_trash_rows_misplaced_before_are_re_rooted_once_at_start(database_url: str) -> None:
    """Rows trashed before their paths followed moves are re-rooted at start, once
    (not a rebuild), after the DDL commits: a folder's to its parent's path now (live,
    or in the trash), a file's to its folder's."""
    async with fresh_database(database_url, "trashroot") as pool:
        async with pool.acquire() as conn:
            await EventStore("catalog").setup(conn)
            await tree.setup(conn)
        left, right, box, inner, file_id = (uuid.uuid4() for _ in range(5))
        made = left_right_tree(left, right, box, inner, file_id)
        # The file, then its folder, to the trash; then the folder above moves.
        changes = [
            *domain.delete([], [domain.File(file_id, inner, "a.txt", 1, "k", "0" * 64)]),
            *domain.delete([domain.Folder(inner, box, "inner", 1, (left, box, inner))], []),
            *domain.move(
                [domain.Folder(box, left, "box", 1, (left, box))],
                [],
                domain.Folder(right, None, "right", 1, (right,)),
            ),
        ]
        async with pool.acquire() as conn, conn.transaction():
            await tree.apply(conn, envelopes_of([*made, *changes], CAUSE))

        async def paths() -> tuple[list[uuid.UUID], list[uuid.UUID]]:
            return (
                await pool.fetchval("SELECT path FROM catalog.trash_folders WHERE id = $1", inner),
                await pool.fetchval("SELECT path FROM catalog.trash_files WHERE id = $1", file_id),
            )

        assert await paths() == ([right, box, inner], [right, box, inner])
        # As an older catalog left them (paths from before the move), not yet re-rooted.
        stale = "UPDATE catalog.{} SET path = $1"
        for table in ("trash_folders", "trash_files"):
            await pool.execute(stale.format(table), [left, box, inner])
        await pool.execute("COMMENT ON COLUMN catalog.trash_files.path IS NULL")
        async with pool.acquire() as conn:
            await tree.setup(conn)
            # After the DDL's transaction, in one of its own: while it is open (here
            # held open around it), readers of the tables it re-roots wait for nothing.
            async with conn.transaction():
                await tree.migrate(conn)
                async with pool.acquire() as reader:
                    await reader.execute("SET lock_timeout = '1s'")
                    for table in ("folders", "files", "trash_folders", "trash_files"):
                        await reader.fetchval(f"SELECT count(*) FROM catalog.{table}")
        assert await paths() == ([right, box, inner], [right, box, inner])
        # Once: a start after leaves the rows as they are.
        for table in ("trash_folders", "trash_files"):
            await pool.execute(stale.format(table), [left, box, inner])
        async with pool.acquire() as conn:
            await tree.setup(conn)
            await tree.migrate(conn)
        assert await paths() == ([left, box, inner], [left, box, inner])


async def catalog_on(pool: Any) -> Catalog:
    """The catalog's handlers on a fresh database, its tables made."""
    parts = Parts("catalog", Settings(service_key=SERVICE_KEY))
    parts.pool = pool
    async with pool.acquire() as conn:
        await parts.store.setup(conn)
        await parts.inbox.setup(conn)
        for projection in (tree, links, cloud_synced):
            await projection.setup(conn)
        await setup_reactions(conn)
        await setup_history(conn)
    return Catalog(parts)


async def test_a_file_delete_and_a_delete_of_its_folder_meeting_both_answer(
    database_url: str,
) -> None:
    """A file's delete locks its folder before the file, as a folder's delete does: the
    other way, the file's delete held the file while its projection waited for the
    folder, which the folder's delete held while waiting for the file (a deadlock)."""
    async with fresh_database(database_url, "trashlocks") as pool:
        catalog = await catalog_on(pool)
        box, file_id = uuid.uuid4(), uuid.uuid4()
        made = [*domain.create_folder(box, None, "box", "", {}), uploaded(file_id, box)]
        async with pool.acquire() as conn, conn.transaction():
            await catalog.write(conn, envelopes_of(made, CAUSE))

        # The file's delete stops once it holds its locks, before it writes (and its
        # projection locks the folder), until the folder's delete waits on it.
        written = catalog.write
        holding, go = asyncio.Event(), asyncio.Event()

        async def write(conn: Any, envelopes: Any) -> int:
            if not holding.is_set():
                holding.set()
                await go.wait()
            return await written(conn, envelopes)

        catalog.write = write  # type: ignore[method-assign]
        admin = Access(user_id="test", org_admin=True)

        async def delete(file_ids: list[uuid.UUID], folder_ids: list[uuid.UUID]) -> Any:
            return await catalog.delete(
                CAUSE, file_ids=file_ids, folder_ids=folder_ids, dry_run=False, access=admin
            )

        file_delete = asyncio.create_task(delete([file_id], []))
        await asyncio.wait_for(holding.wait(), 10)
        folder_delete = asyncio.create_task(delete([], [box]))
        deadline = time.monotonic() + 10
        while not await pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'"""
        ):
            assert not folder_delete.done(), folder_delete.result()
            assert time.monotonic() < deadline, "the folder's delete never waited"
            await asyncio.sleep(0.01)
        go.set()
        assert (await file_delete)[0] == {"deleted": 1}
        assert (await folder_delete)[0] == {"deleted": 1}
        assert await pool.fetchval("SELECT itself FROM catalog.trash_files WHERE id = $1", file_id)


async def test_deletes_of_two_folders_each_with_a_file_of_the_other_both_answer(
    database_url: str,
) -> None:
    """A delete of folder A with a file of B, crossing one of B with a file of A: each
    locks its own folder's tree, then the other's folder (the file's), the two orders
    opposite. PostgreSQL breaks the deadlock by aborting one, which nothing had written:
    the catalog runs it again, and neither caller is refused."""
    async with fresh_database(database_url, "crossing") as pool:
        catalog = await catalog_on(pool)
        a, b, in_a, in_b = (uuid.uuid4() for _ in range(4))
        made = [
            *domain.create_folder(a, None, "a", "", {}),
            *domain.create_folder(b, None, "b", "", {}),
            uploaded(in_a, a),
            uploaded(in_b, b),
        ]
        async with pool.acquire() as conn, conn.transaction():
            await catalog.write(conn, envelopes_of(made, CAUSE))

        # Each delete stops once it holds its own tree, until both do: then each asks
        # for the other's folder.
        both, met = asyncio.Barrier(2), asyncio.Event()

        class Held:
            def __init__(self, conn: Any) -> None:
                self.conn = conn

            def __getattr__(self, name: str) -> Any:
                return getattr(self.conn, name)

            async def execute(self, query: str, *args: Any) -> Any:
                if "FOR SHARE" in query and not met.is_set():
                    await asyncio.wait_for(both.wait(), 10)
                    met.set()
                return await self.conn.execute(query, *args)

        class Acquired:
            async def __aenter__(self) -> Held:
                self.inner = pool.acquire()
                return Held(await self.inner.__aenter__())

            async def __aexit__(self, *exc: Any) -> Any:
                return await self.inner.__aexit__(*exc)

        class Pool:
            def __getattr__(self, name: str) -> Any:
                return getattr(pool, name)

            def acquire(self) -> Acquired:
                return Acquired()

        catalog.parts.pool = Pool()  # type: ignore[assignment]
        admin = Access(user_id="test", org_admin=True)
        answers = await asyncio.gather(
            *(
                catalog.delete(
                    CAUSE, file_ids=[file_id], folder_ids=[folder_id], dry_run=False, access=admin
                )
                for folder_id, file_id in ((a, in_b), (b, in_a))
            )
        )
        assert [answer[0] for answer in answers] == [{"deleted": 2}, {"deleted": 2}]
        assert await pool.fetchval("SELECT count(*) FROM catalog.folders") == 0
        assert await pool.fetchval("SELECT count(*) FROM catalog.files") == 0
