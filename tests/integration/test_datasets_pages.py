"""An upload's pages (`FilesUploaded`) in the datasets context: their files take their
place in synced datasets as files uploaded one event each do, whichever order the
events of other streams come in.

The reaction to a page looks its folder up once (not each file, before and after), which
holds only because a page's files are new to the mirror: the last test pins that a file
already there fails the page's batch rather than passing unseen.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from shared.contracts.catalog import (
    FilesUploaded,
    FolderCreated,
    FolderDeleted,
    UploadedFile,
)
from shared.contracts.datasets import dataset_stream
from shared.contracts.envelope import Envelope
from tests.integration.test_datasets_reactions import (
    ADMIN,
    CAUSE,
    Catalog,
    Context,
    datasets_consumer,
    deleted,
    uploaded,
)

# Folders: `top` (followed by the dataset "top"), below it `sub`, `gone` (followed by
# "gone", deleted after the uploads into it) and `group` (an image group's constituent
# folder: never synced); `late` below `sub`, made after the uploads into it (whose files
# may reach the mirror before it); `elsewhere`, a root followed by "elsewhere".
TOP, SUB, GONE, GROUP, LATE, ELSEWHERE = (uuid.UUID(int=i) for i in range(1, 7))
GROUP_FILE = uuid.UUID(int=99)
FOLDERS = (TOP, SUB, GONE, GROUP, LATE, ELSEWHERE)
INTO = {f: [uuid.UUID(int=100 + 10 * n + i) for i in range(3)] for n, f in enumerate(FOLDERS)}


def page(folder_id: uuid.UUID, file_ids: Sequence[uuid.UUID]) -> FilesUploaded:
    return FilesUploaded(
        folder_id=folder_id,
        file_ids=list(file_ids),
        files=[
            UploadedFile(
                file_id=f,
                name=f"{f}.txt",
                kind="text",
                size=1,
                sha256="0" * 64,
                mime_type="text/plain",
                blob_key=f"blobs/{f}",
            )
            for f in file_ids
        ],
    )


def uploads(folder_id: uuid.UUID, as_pages: bool) -> list[Any]:
    files = INTO[folder_id]
    return [page(folder_id, files)] if as_pages else [uploaded(f, folder_id) for f in files]


async def placed(
    database_url: str, as_pages: bool, folders_first: bool, together: bool = False
) -> dict[str, Any]:
    """The uploads into each folder, then `late` made and `gone` deleted with its files:
    what each dataset then holds, keeps for a restore and recorded. `folders_first`: the
    folders' partition ahead of the files' (`late` made and `gone` deleted when the
    uploads arrive). `together`: the uploads, each folder's by a person of its own, come
    as one batch (a reaction then gets pages into several folders from several causes)."""
    catalog = Catalog()
    async with datasets_consumer(database_url) as context:
        await context.apply(
            catalog.event(FolderCreated(folder_id=TOP, parent_id=None, name="top")),
            catalog.event(FolderCreated(folder_id=SUB, parent_id=TOP, name="sub")),
            catalog.event(FolderCreated(folder_id=GONE, parent_id=TOP, name="gone")),
            catalog.event(
                FolderCreated(
                    folder_id=GROUP, parent_id=TOP, name="group", constituent_of=GROUP_FILE
                )
            ),
            catalog.event(FolderCreated(folder_id=ELSEWHERE, parent_id=None, name="else")),
        )
        names: dict[uuid.UUID, str] = {}
        for name, folder_id in (("top", TOP), ("gone", GONE), ("elsewhere", ELSEWHERE)):
            dataset_id, _ = await context.datasets.create(
                CAUSE, ADMIN, name=name, description="", synced_folder_id=folder_id
            )
            names[dataset_id] = name
        # In the catalog's order: the uploads, then `late` made, then `gone` deleted.
        files = [
            catalog.event(e).model_copy(
                update={"actor": f"user:{folder_id}", "correlation_id": f"upload-{folder_id}"}
            )
            for folder_id in FOLDERS
            for e in uploads(folder_id, as_pages)
        ]
        folders = [
            catalog.event(FolderCreated(folder_id=LATE, parent_id=SUB, name="late")),
            catalog.event(FolderDeleted(folder_id=GONE, parent_id=TOP, trashed=True)),
        ]
        # The files' deletion with their folder: after their upload, in their partition.
        gone = [catalog.event(deleted(f, GONE)) for f in INTO[GONE]]
        arrival: list[Envelope] = (
            folders + files + gone if folders_first else files + folders + gone
        )
        if together:
            before = folders if folders_first else []
            for envelope in before:
                await context.apply(envelope)
            await context.apply(*files)
            for envelope in [*([] if folders_first else folders), *gone]:
                await context.apply(envelope)
        else:
            for envelope in arrival:  # each on its own, as from partitions of their own
                await context.apply(envelope)
        return {name: await held(context, dataset_id) for dataset_id, name in names.items()}


async def held(context: Context, dataset_id: uuid.UUID) -> dict[str, Any]:
    trashed = await context.pool.fetch(
        "SELECT file_id FROM datasets.trashed_links WHERE dataset_id = $1", dataset_id
    )
    history = await context.datasets.store.read_stream(context.pool, dataset_stream(dataset_id))
    return {
        "members": await context.members(dataset_id),
        "file_count": await context.file_count(dataset_id),
        "trashed links": {r["file_id"] for r in trashed},
        # Each link and unlink recorded, by file (one event may list several), with who
        # caused it and in which correlation.
        "links": sorted(
            (e.type, e.data["reason"], f, e.actor, e.correlation_id)
            for e in history
            for f in e.data.get("file_ids", [])
        ),
    }


@pytest.mark.parametrize("folders_first", [False, True], ids=["in-order", "folders-first"])
async def test_a_pages_files_take_their_place_in_synced_datasets_as_uploads_one_a_file_do(
    database_url: str, folders_first: bool
) -> None:
    pages = await placed(database_url, as_pages=True, folders_first=folders_first)
    one_a_file = await placed(database_url, as_pages=False, folders_first=folders_first)
    below_top = {*INTO[TOP], *INTO[SUB], *INTO[LATE]}
    assert pages["top"]["members"] == below_top  # not the constituent folder's, nor gone's
    assert pages["top"]["trashed links"] == set(INTO[GONE])
    # The dataset that followed the deleted folder, as it was: the files it held then
    # come back with a restore, whichever of the deletion and the upload came first.
    assert pages["gone"]["members"] == set()
    assert pages["gone"]["trashed links"] == set(INTO[GONE])
    assert pages["elsewhere"]["members"] == set(INTO[ELSEWHERE])
    assert pages == one_a_file
    # All the pages in one batch: each folder's looked up, each link caused by its page.
    together = await placed(database_url, as_pages=True, folders_first=folders_first, together=True)
    assert together == pages


async def test_a_file_already_in_the_mirror_named_by_a_page_fails_its_batch(
    database_url: str,
) -> None:
    catalog = Catalog()
    known = uuid.uuid4()
    async with datasets_consumer(database_url) as context:
        await context.apply(
            catalog.event(FolderCreated(folder_id=TOP, parent_id=None, name="top")),
            catalog.event(FolderCreated(folder_id=ELSEWHERE, parent_id=None, name="else")),
            catalog.event(uploaded(known, ELSEWHERE)),
        )
        synced, _ = await context.datasets.create(
            CAUSE, ADMIN, name="top", description="", synced_folder_id=TOP
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await context.apply(catalog.event(page(TOP, [uuid.uuid4(), known])))
        assert await context.members(synced) == set()
        assert (
            await context.pool.fetchval("SELECT folder_id FROM datasets.files WHERE id = $1", known)
            == ELSEWHERE
        )
