"""The datasets context's reactions to the catalog's events when they come out of order.

The catalog's events reach the datasets consumer on several partitions, so one about a
file may be applied before an earlier one about its folder. These tests drive the
consumer's apply step (the same transaction as in the service) with the events in such
an order, against a real PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest

from services.datasets.handlers import Datasets
from services.datasets.projections import membership, tree
from shared.contracts.catalog import (
    FileDeleted,
    FileMoved,
    FilesRestored,
    FileUploaded,
    FolderCreated,
    FolderDeleted,
    FolderMoved,
    FolderPurged,
    FolderRestored,
)
from shared.contracts.datasets import dataset_stream
from shared.contracts.envelope import Cause, Envelope, Event, new_envelope
from shared.kit.access import Access
from shared.kit.inbox import Consumer
from shared.kit.service import Parts
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, fresh_database

CAUSE = Cause(actor="test", correlation_id="test")
ADMIN = Access(user_id="test", org_admin=True)


@dataclass
class Catalog:
    """The catalog's store as the datasets consumer sees it: events at positions."""

    written: int = 0

    def event(self, event: Event) -> Envelope:
        self.written += 1
        made = new_envelope(event, stream_id=f"s-{uuid.uuid4()}", stream_version=1, cause=CAUSE)
        return made.model_copy(update={"source": "catalog", "position": self.written})


@dataclass
class Context:
    datasets: Datasets
    consumer: Consumer
    pool: asyncpg.Pool

    async def apply(self, *envelopes: Envelope) -> None:
        await self.consumer._apply(envelopes)

    async def members(self, dataset_id: uuid.UUID) -> set[uuid.UUID]:
        rows = await self.pool.fetch(
            "SELECT file_id FROM datasets.members WHERE dataset_id = $1", dataset_id
        )
        return {r["file_id"] for r in rows}

    async def file_count(self, dataset_id: uuid.UUID) -> int:
        count: int = await self.pool.fetchval(
            "SELECT file_count FROM datasets.datasets WHERE id = $1", dataset_id
        )
        return count


@pytest.fixture
async def context(database_url: str) -> AsyncIterator[Context]:
    async with datasets_consumer(database_url) as made:
        yield made


@asynccontextmanager
async def datasets_consumer(database_url: str) -> AsyncIterator[Context]:
    """The datasets service's consumer on a database of its own."""
    async with fresh_database(database_url, "t_datasets") as pool:
        parts = Parts("datasets", Settings(service_key=SERVICE_KEY))
        parts.pool = pool
        async with parts.pool.acquire() as conn:
            await parts.store.setup(conn)
            await parts.inbox.setup(conn)
            for projection in (membership, tree):
                await projection.setup(conn)
        datasets = Datasets(parts)
        reactions = Datasets.reactions.bound(datasets)
        consumer = Consumer(
            pool=parts.pool,
            inbox=parts.inbox,
            topics=(),
            handle=reactions,
            wanted=reactions.types,
            bootstrap="",
            dead_letters=None,  # type: ignore[arg-type]  # _apply publishes nothing
        )
        yield Context(datasets, consumer, parts.pool)


def uploaded(file_id: uuid.UUID, folder_id: uuid.UUID) -> FileUploaded:
    return FileUploaded(
        file_id=file_id,
        folder_id=folder_id,
        name=f"{file_id}.txt",
        kind="text",
        size=1,
        sha256="0" * 64,
        mime_type="text/plain",
        blob_key=f"blobs/{file_id}",
    )


def deleted(file_id: uuid.UUID, folder_id: uuid.UUID) -> FileDeleted:
    return FileDeleted(
        file_id=file_id,
        folder_id=folder_id,
        blob_key=f"blobs/{file_id}",
        sha256="0" * 64,
        trashed=True,
    )


async def linked_datasets(
    context: Context, top: uuid.UUID, files: Sequence[uuid.UUID]
) -> tuple[uuid.UUID, uuid.UUID]:
    """A dataset synced with `top`, and one the files were added to by hand."""
    synced, _ = await context.datasets.create(
        CAUSE, ADMIN, name="synced", description="", synced_folder_id=top
    )
    manual, _ = await context.datasets.create(
        CAUSE, ADMIN, name="manual", description="", synced_folder_id=None
    )
    await context.datasets.add_files(CAUSE, ADMIN, manual, files)
    return synced, manual


async def test_a_file_restored_with_its_folder_and_deleted_again_stays_out_of_its_datasets(
    context: Context,
) -> None:
    catalog = Catalog()
    top, sub = uuid.uuid4(), uuid.uuid4()
    again, kept = uuid.uuid4(), uuid.uuid4()
    await context.apply(
        catalog.event(FolderCreated(folder_id=top, parent_id=None, name="top")),
        catalog.event(FolderCreated(folder_id=sub, parent_id=top, name="sub")),
        catalog.event(uploaded(again, sub)),
        catalog.event(uploaded(kept, sub)),
    )
    synced, manual = await linked_datasets(context, top, [again, kept])
    assert await context.members(synced) == {again, kept}

    # The folder goes to the trash with its files, and comes back with them.
    await context.apply(
        catalog.event(FolderDeleted(folder_id=sub, parent_id=top, trashed=True)),
        catalog.event(deleted(again, sub)),
        catalog.event(deleted(kept, sub)),
    )
    assert await context.members(synced) == set()
    assert await context.members(manual) == set()
    folder_back = catalog.event(FolderRestored(folder_id=sub, parent_id=top))
    files_back = catalog.event(FilesRestored(folder_id=sub, file_ids=[again, kept]))
    # Then one of them is deleted again.
    deleted_again = catalog.event(deleted(again, sub))

    # The files' events are on another partition than the folder's: they come first.
    await context.apply(files_back)
    await context.apply(deleted_again)
    await context.apply(folder_back)

    assert await context.members(synced) == {kept}
    assert await context.members(manual) == {kept}
    assert await context.file_count(synced) == 1
    assert await context.file_count(manual) == 1
    in_mirror = await context.pool.fetch("SELECT id FROM datasets.files")
    assert {r["id"] for r in in_mirror} == {kept}


async def test_a_folder_restored_before_its_files_events_brings_them_back_with_their_links(
    context: Context,
) -> None:
    catalog = Catalog()
    top, sub = uuid.uuid4(), uuid.uuid4()
    files = [uuid.uuid4() for _ in range(3)]
    await context.apply(
        catalog.event(FolderCreated(folder_id=top, parent_id=None, name="top")),
        catalog.event(FolderCreated(folder_id=sub, parent_id=top, name="sub")),
        *(catalog.event(uploaded(f, sub)) for f in files),
    )
    synced, manual = await linked_datasets(context, top, files[:2])
    await context.apply(
        catalog.event(FolderDeleted(folder_id=sub, parent_id=top, trashed=True)),
        *(catalog.event(deleted(f, sub)) for f in files),
    )
    assert await context.file_count(synced) == 0

    await context.apply(catalog.event(FolderRestored(folder_id=sub, parent_id=top)))
    # Back at once, by sync and from the history; the files' own event finds them back.
    assert await context.members(synced) == set(files)
    assert await context.members(manual) == set(files[:2])
    await context.apply(catalog.event(FilesRestored(folder_id=sub, file_ids=files)))
    assert await context.file_count(synced) == 3
    assert await context.file_count(manual) == 2


@pytest.mark.parametrize("kept", [True, False], ids=["trashing-kept", "trashed-before-it-was"])
async def test_a_file_deleted_before_its_folder_stays_out_when_the_folder_is_restored(
    context: Context, kept: bool
) -> None:
    catalog = Catalog()
    top, sub = uuid.uuid4(), uuid.uuid4()
    alone, went = uuid.uuid4(), uuid.uuid4()
    await context.apply(
        catalog.event(FolderCreated(folder_id=top, parent_id=None, name="top")),
        catalog.event(FolderCreated(folder_id=sub, parent_id=top, name="sub")),
        catalog.event(uploaded(alone, sub)),
        catalog.event(uploaded(went, sub)),
    )
    synced, manual = await linked_datasets(context, top, [alone, went])
    await context.apply(catalog.event(deleted(alone, sub)))
    await context.apply(
        catalog.event(FolderDeleted(folder_id=sub, parent_id=top, trashed=True)),
        catalog.event(deleted(went, sub)),
    )
    if not kept:
        # A folder trashed before its trashing was kept: the files' own events decide.
        await context.pool.execute("DELETE FROM datasets.trashed_folders")

    # The catalog restores the folder with what went with it, not the file deleted
    # before it (an item of the trash of its own).
    await context.apply(catalog.event(FolderRestored(folder_id=sub, parent_id=top)))
    await context.apply(catalog.event(FilesRestored(folder_id=sub, file_ids=[went])))
    assert await context.members(synced) == {went}
    assert await context.members(manual) == {went}
    in_mirror = await context.pool.fetch("SELECT id FROM datasets.files")
    assert {r["id"] for r in in_mirror} == {went}

    # Then that file, on its own: its links come back too.
    await context.apply(catalog.event(FilesRestored(folder_id=sub, file_ids=[alone])))
    assert await context.members(synced) == {alone, went}
    assert await context.members(manual) == {alone, went}
    assert await context.file_count(manual) == 2


async def test_a_file_restored_and_moved_out_before_its_folder_is_back_gets_its_links_back(
    context: Context,
) -> None:
    catalog = Catalog()
    top, sub, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    moved, stays = uuid.uuid4(), uuid.uuid4()
    await context.apply(
        catalog.event(FolderCreated(folder_id=top, parent_id=None, name="top")),
        catalog.event(FolderCreated(folder_id=sub, parent_id=top, name="sub")),
        catalog.event(FolderCreated(folder_id=elsewhere, parent_id=None, name="elsewhere")),
        catalog.event(uploaded(moved, sub)),
        catalog.event(uploaded(stays, sub)),
    )
    synced, manual = await linked_datasets(context, top, [moved, stays])
    await context.apply(
        catalog.event(FolderDeleted(folder_id=sub, parent_id=top, trashed=True)),
        catalog.event(deleted(moved, sub)),
        catalog.event(deleted(stays, sub)),
    )
    folder_back = catalog.event(FolderRestored(folder_id=sub, parent_id=top))
    files_back = catalog.event(FilesRestored(folder_id=sub, file_ids=[moved, stays]))
    moved_out = catalog.event(FileMoved(file_id=moved, from_folder_id=sub, to_folder_id=elsewhere))

    # The files' partition first: back, then one moved out of the synced folder.
    await context.apply(files_back)
    await context.apply(moved_out)
    await context.apply(folder_back)

    # The links the deletion removed are back (the moved file's link to the synced
    # dataset comes back from the history too, as it does when its FilesRestored
    # finds its folder in place).
    assert await context.members(manual) == {moved, stays}
    assert stays in await context.members(synced)
    assert await context.file_count(manual) == 2
    assert await context.pool.fetchval("SELECT count(*) FROM datasets.trashed_links") == 0


async def file_moved_then_folder_deleted(
    database_url: str, arrival: Sequence[str]
) -> dict[str, object]:
    """Files moved out of a synced folder (and out of one below it), and a folder with a
    file moved out of it, just before the catalog deletes the folder, the events applied
    in the `arrival` order; what the datasets then hold, and the events that got them
    there (datasets by name)."""
    top, synced_folder, sub, elsewhere, moving, later = (uuid.UUID(int=i) for i in range(1, 7))
    moved, moved_from_sub, deleted_with_it, moved_with_folder = (
        uuid.UUID(int=i) for i in range(11, 15)
    )
    catalog = Catalog()
    async with datasets_consumer(database_url) as context:
        await context.apply(
            catalog.event(FolderCreated(folder_id=top, parent_id=None, name="top")),
            catalog.event(FolderCreated(folder_id=synced_folder, parent_id=top, name="s")),
            catalog.event(FolderCreated(folder_id=sub, parent_id=synced_folder, name="sub")),
            catalog.event(FolderCreated(folder_id=elsewhere, parent_id=None, name="t")),
            catalog.event(FolderCreated(folder_id=moving, parent_id=synced_folder, name="m")),
            catalog.event(FolderCreated(folder_id=later, parent_id=None, name="later")),
            catalog.event(uploaded(moved, synced_folder)),
            catalog.event(uploaded(deleted_with_it, synced_folder)),
            catalog.event(uploaded(moved_from_sub, sub)),
            catalog.event(uploaded(moved_with_folder, moving)),
        )
        names = {}
        for name, folder_id in (("top", top), ("s", synced_folder), ("manual", None)):
            dataset_id, _ = await context.datasets.create(
                CAUSE, ADMIN, name=name, description="", synced_folder_id=folder_id
            )
            names[dataset_id] = name
        manual = next(d for d, n in names.items() if n == "manual")
        everything = [moved, moved_from_sub, deleted_with_it, moved_with_folder]
        await context.datasets.add_files(CAUSE, ADMIN, manual, everything)
        for dataset_id in names:
            assert await context.members(dataset_id) == set(everything)
        events = {
            "file moved": catalog.event(
                FileMoved(file_id=moved, from_folder_id=synced_folder, to_folder_id=elsewhere)
            ),
            "file moved from sub": catalog.event(
                FileMoved(file_id=moved_from_sub, from_folder_id=sub, to_folder_id=elsewhere)
            ),
            "folder moved": catalog.event(
                FolderMoved(folder_id=moving, from_parent_id=synced_folder, to_parent_id=elsewhere)
            ),
            "folder deleted": catalog.event(
                FolderDeleted(folder_id=synced_folder, parent_id=top, trashed=True)
            ),
            "sub deleted": catalog.event(
                FolderDeleted(folder_id=sub, parent_id=synced_folder, trashed=True)
            ),
            "file deleted": catalog.event(deleted(deleted_with_it, synced_folder)),
        }
        assert sorted(arrival) == sorted(events)
        for name in arrival:  # each on its own, as from partitions of their own
            await context.apply(events[name])
        # What the mirror kept of the deleted folders for late events goes once a
        # deletion finds every event before it applied.
        await context.apply(catalog.event(FolderDeleted(folder_id=later, parent_id=None)))
        assert await context.pool.fetchval("SELECT count(*) FROM datasets.deleted_folders") == 0

        outcome: dict[str, object] = {}
        for dataset_id, name in names.items():
            row = await context.pool.fetchrow(
                """SELECT synced_folder_id, unsynced_from, file_count
                   FROM datasets.datasets WHERE id = $1""",
                dataset_id,
            )
            trashed = await context.pool.fetch(
                "SELECT file_id FROM datasets.trashed_links WHERE dataset_id = $1", dataset_id
            )
            history = await context.datasets.store.read_stream(
                context.pool, dataset_stream(dataset_id)
            )
            outcome[name] = {
                "members": await context.members(dataset_id),
                "state": dict(row),
                "trashed links": {r["file_id"] for r in trashed},
                # The same events, whichever of the streams' order they were made in.
                "events": sorted(
                    (e.type, sorted((k, str(v)) for k, v in e.data.items() if k != "dataset_id"))
                    for e in history
                ),
            }
        return outcome


async def test_a_file_moved_out_of_a_synced_folder_just_before_it_is_deleted_leaves_it_either_way(
    database_url: str,
) -> None:
    in_order = await file_moved_then_folder_deleted(
        database_url,
        [
            "file moved",
            "file moved from sub",
            "folder moved",
            "folder deleted",
            "sub deleted",
            "file deleted",
        ],
    )
    # The folders' partition first: the datasets stop following the folder before
    # the moves out of it (and of the folder below it) arrive.
    folders_first = await file_moved_then_folder_deleted(
        database_url,
        [
            "folder deleted",
            "sub deleted",
            "file deleted",
            "file moved",
            "folder moved",
            "file moved from sub",
        ],
    )
    moved, moved_from_sub, moved_with_folder = (uuid.UUID(int=i) for i in (11, 12, 14))
    assert in_order["s"]["members"] == set()  # type: ignore[index]
    assert in_order["top"]["members"] == set()  # type: ignore[index]
    assert in_order["manual"]["members"] == {  # type: ignore[index]
        moved,
        moved_from_sub,
        moved_with_folder,
    }
    assert folders_first == in_order


async def test_a_folder_purged_from_the_trash_leaves_no_row_behind(context: Context) -> None:
    catalog = Catalog()
    top, gone, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await context.apply(
        catalog.event(FolderCreated(folder_id=top, parent_id=None, name="top")),
        catalog.event(FolderCreated(folder_id=gone, parent_id=top, name="gone")),
        catalog.event(FolderCreated(folder_id=kept, parent_id=top, name="kept")),
        catalog.event(FolderDeleted(folder_id=gone, parent_id=top, trashed=True)),
        catalog.event(FolderDeleted(folder_id=kept, parent_id=top, trashed=True)),
    )
    await context.apply(catalog.event(FolderPurged(folder_id=gone)))
    # The one still in the trash keeps its row: its restore needs it.
    rows = await context.pool.fetch("SELECT id FROM datasets.trashed_folders")
    assert {r["id"] for r in rows} == {kept}


@pytest.mark.parametrize("synced_first", [False, True], ids=["tree-first", "dataset-first"])
async def test_a_tree_whose_folders_arrive_deepest_first_is_synced_to_its_depth(
    context: Context, synced_first: bool
) -> None:
    """Folders travel on several partitions: a child, and a file in it, may reach the
    datasets context before the folders above it (the end-to-end tree test seldom sees
    it happen). Each is adopted when its parent comes, and the file takes its place in
    the dataset following the top, made before or after the tree arrived."""
    catalog = Catalog()
    top, a, b, c, in_c = (uuid.uuid4() for _ in range(5))
    synced = None
    if synced_first:
        await context.apply(catalog.event(FolderCreated(folder_id=top, parent_id=None, name="t")))
        synced, _ = await context.datasets.create(
            CAUSE, ADMIN, name="top", description="", synced_folder_id=top
        )
    for event in (
        FolderCreated(folder_id=c, parent_id=b, name="c"),
        uploaded(in_c, c),
        FolderCreated(folder_id=b, parent_id=a, name="b"),
        FolderCreated(folder_id=a, parent_id=top, name="a"),
        *([] if synced_first else [FolderCreated(folder_id=top, parent_id=None, name="t")]),
    ):
        await context.apply(catalog.event(event))  # each on its own partition's turn
    if synced is None:
        synced, _ = await context.datasets.create(
            CAUSE, ADMIN, name="top", description="", synced_folder_id=top
        )
    assert await context.members(synced) == {in_c}
    assert await context.file_count(synced) == 1
