"""The catalog's arrivals (stored files, DICOM series, a key path's subfolder) for a folder
it has not seen made: the request for that folder (ingest's `SyncFolderNeeded`) may come
in a later batch than what was made of it (another partition, read late). They wait for
the folder, not rejected as if it were deleted; a folder deleted or purged still rejects
them at once; one that never comes rejects them once they have waited their time.

These tests drive the catalog consumer's apply step (one batch, one transaction, as in
the service) against a real PostgreSQL, in a database of its own. While an arrival
waits, a consistency token naming its position is not answered as caught up.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from services.catalog import domain
from services.catalog.handlers import Catalog, setup_reactions
from services.catalog.history import setup_history
from services.catalog.projections import cloud_synced, links, tree
from shared.contracts import catalog as ev
from shared.contracts.dicom import SeriesAssembled, SeriesExtended
from shared.contracts.envelope import Cause, Change, Envelope, Event, envelopes_of, new_envelope
from shared.contracts.ingest import (
    CloudObjectGone,
    FileContentStored,
    FilesStored,
    ImageGroupImagesStored,
    ImageGroupStored,
    StoredContent,
    SyncFolderNeeded,
)
from shared.kit import consistency, idempotency
from shared.kit.inbox import Consumer
from shared.kit.service import Parts
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, eventually, fresh_database

CAUSE = Cause(actor="test", correlation_id="test")


@dataclass
class Source:
    """Another context's store as the catalog's consumer sees it: events at positions."""

    name: str
    written: int = 0

    def event(self, event: Event) -> Envelope:
        self.written += 1
        made = new_envelope(event, stream_id=f"s-{uuid.uuid4()}", stream_version=1, cause=CAUSE)
        return made.model_copy(update={"source": self.name, "position": self.written})


@dataclass
class Context:
    catalog: Catalog
    consumer: Consumer
    pool: asyncpg.Pool
    ingest: Source = field(default_factory=lambda: Source("ingest"))
    dicom: Source = field(default_factory=lambda: Source("dicom"))

    async def batch(self, *envelopes: Envelope) -> None:
        """One batch of the consumer, in its causal order."""
        await self.consumer._apply(envelopes)

    async def record(self, *changes: Change) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.catalog.write(conn, envelopes_of(list(changes), CAUSE))

    async def listed(self, folder_id: uuid.UUID) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT name FROM catalog.files WHERE folder_id = $1", folder_id
        )
        return {r["name"] for r in rows}

    async def waiting(self) -> int:
        """Arrivals set aside for a folder not seen yet."""
        count: int = await self.pool.fetchval("SELECT count(*) FROM catalog.awaiting_folders")
        return count

    async def folder_names(self) -> dict[uuid.UUID, str]:
        rows = await self.pool.fetch("SELECT id, name FROM catalog.folders")
        return {r["id"]: r["name"] for r in rows}

    async def rejected(self) -> dict[uuid.UUID, str]:
        """Files the catalog rejected: the reason each was given."""
        rows = await self.pool.fetch(
            "SELECT data FROM catalog.events WHERE type = $1", ev.UploadRejected.type
        )
        return {uuid.UUID(r["data"]["file_id"]): r["data"]["reason"] for r in rows}


async def catalog_parts(pool: asyncpg.Pool) -> Parts:
    """The catalog's parts on `pool`, its tables made (as its start makes them)."""
    parts = Parts("catalog", Settings(service_key=SERVICE_KEY))
    parts.pool = pool
    async with pool.acquire() as conn:
        await parts.store.setup(conn)
        await parts.inbox.setup(conn)
        await conn.execute(idempotency.ddl("catalog"))
        for projection in (tree, links, cloud_synced):
            await projection.setup(conn)
        await setup_reactions(conn)
        await setup_history(conn)
    return parts


@asynccontextmanager
async def catalog_consumer(database_url: str) -> AsyncIterator[Context]:
    async with fresh_database(database_url, "t_catalog_order") as pool:
        parts = await catalog_parts(pool)
        catalog = Catalog(parts)
        reactions = Catalog.reactions.bound(catalog)
        consumer = Consumer(
            pool=pool,
            inbox=parts.inbox,
            topics=(),
            handle=reactions,
            wanted=reactions.types,
            bootstrap="",
            dead_letters=None,  # type: ignore[arg-type]  # _apply publishes nothing
        )
        yield Context(catalog, consumer, pool)


async def caught_up(context: Context, wanted: dict[str, int], timeout_s: float = 0.0) -> bool:
    """Whether a read sending a token that names `wanted` is told the catalog has applied
    it, waiting at most `timeout_s` (as the consistency route and `POST /files` wait)."""
    parts = context.catalog.parts
    return await consistency.wait_until_caught_up(
        lambda: parts.inbox.watermarks(context.pool), wanted, timeout_s, parts.moved
    )


async def marks(context: Context) -> dict[str, int]:
    """The positions the catalog reports applied, by source."""
    return await context.catalog.parts.inbox.watermarks(context.pool)


def series(folder_id: uuid.UUID, uid: str) -> SeriesAssembled:
    return SeriesAssembled(
        series_uid=uid,
        folder_id=folder_id,
        file_id=uuid.uuid4(),
        study_uid="1.2",
        patient_id="p",
        modality="CT",
        renderable_3d=True,
        instance_count=2,
        first_blob_key=f"blobs/{uid}",
        size=2,
        sha256="0" * 64,
        name=f"series {uid}",
    )


def page(folder_id: uuid.UUID, *names: str) -> FilesStored:
    return FilesStored(
        job_id=uuid.uuid4(),
        folder_id=folder_id,
        files=[
            StoredContent(
                file_id=uuid.uuid4(),
                name=name,
                kind="text",
                size=1,
                sha256="0" * 64,
                mime_type="text/plain",
                blob_key=f"blobs/{name}",
            )
            for name in names
        ],
    )


def synced(folder_id: uuid.UUID, name: str) -> FileContentStored:
    """An object of a synced prefix, stored (a sync's files come one an event)."""
    return FileContentStored(
        job_id=uuid.uuid4(),
        file_id=uuid.uuid4(),
        folder_id=folder_id,
        name=name,
        kind="text",
        size=1,
        sha256="0" * 64,
        mime_type="text/plain",
        blob_key=f"blobs/{name}",
        source=ev.Source(type="cloud", integration_id=uuid.uuid4(), key=name),
    )


def group(folder_id: uuid.UUID, name: str) -> tuple[ImageGroupImagesStored, ImageGroupStored]:
    """An image group of two images: its page, then its own event."""
    job_id, group_file_id, constituent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    images = [
        FileContentStored(
            job_id=job_id,
            file_id=uuid.uuid4(),
            folder_id=constituent,
            name=f"{name}-{n}.png",
            kind="image",
            size=1,
            sha256="0" * 64,
            mime_type="image/png",
            blob_key=f"blobs/{name}-{n}",
        )
        for n in range(2)
    ]
    return ImageGroupImagesStored(
        job_id=job_id, group_file_id=group_file_id, first=0, files=images
    ), ImageGroupStored(
        job_id=job_id,
        group_file_id=group_file_id,
        folder_id=folder_id,
        name=name,
        kind="image_group",
        constituent_folder_id=constituent,
        images=2,
    )


def needed(root: uuid.UUID, parent: uuid.UUID, folder: uuid.UUID, name: str) -> SyncFolderNeeded:
    return SyncFolderNeeded(
        job_id=uuid.uuid4(), root_folder_id=root, folder_id=folder, parent_id=parent, name=name
    )


def top(folder_id: uuid.UUID, name: str) -> list[Change]:
    return domain.create_folder(folder_id, None, name, "", {})


async def test_what_arrives_before_its_synced_folder_waits_for_it_and_enters_it(
    database_url: str,
) -> None:
    async with catalog_consumer(database_url) as context:
        root, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await context.record(*top(root, "bucket"))
        # Ingest asks for a/ (one sync), then a/b/ (a later sync, another partition); the
        # series and the page made of a/'s and a/b/'s objects are read first.
        ask_a = context.ingest.event(needed(root, root, a, "a"))
        ask_b = context.ingest.event(needed(root, a, b, "b"))
        assembled = series(a, "1.2.3")
        scan = context.dicom.event(assembled)
        # What comes for those files meanwhile waits with them: the series grows, an
        # object of the page is gone from the bucket.
        grown = SeriesExtended(
            **{**assembled.model_dump(exclude={"name", "metadata"}), "instance_count": 3}
        )
        more = context.dicom.event(grown)
        notes = context.ingest.event(synced(b, "notes.txt"))
        removed = synced(b, "more.txt")
        stored = context.ingest.event(removed)
        gone = context.ingest.event(
            CloudObjectGone(
                job_id=uuid.uuid4(),
                root_folder_id=root,
                key="a/b/more.txt",
                file_id=removed.file_id,
            )
        )
        images, stack = (context.ingest.event(e) for e in group(b, "stack"))
        await context.batch(scan, notes, stored, images, stack, ask_b)
        await context.batch(more, gone)
        assert await context.listed(a) == set() and await context.listed(b) == set()
        assert await context.rejected() == {}  # not taken as a deleted folder
        # Delivered again (the offsets were not committed): the inbox drops it.
        await context.batch(scan, notes, stored, images, stack, ask_b, more, gone)

        await context.batch(ask_a)
        names = await context.folder_names()
        assert (names[a], names[b]) == ("a", "b")
        assert await context.listed(a) == {"series 1.2.3"}
        assert await context.listed(b) == {"notes.txt", "more.txt", "stack"}
        [constituent] = [f for f, name in names.items() if name == "stack (images)"]
        assert await context.listed(constituent) == {"stack-0.png", "stack-1.png"}
        assert await context.rejected() == {}
        assert await context.waiting() == 0
        shown = await context.pool.fetchval(
            "SELECT dicom->>'instances' FROM catalog.files WHERE id = $1", assembled.file_id
        )
        tombstones = await context.pool.fetch(
            "SELECT name FROM catalog.files WHERE folder_id = $1 AND tombstone", b
        )
        assert (shown, [r["name"] for r in tombstones]) == ("3", ["more.txt"])
        # Nothing waits any more: giving up finds nothing to reject.
        assert await context.catalog.give_up_waiting(0) == 0
        assert await context.rejected() == {}


async def test_a_token_naming_an_arrival_that_waits_for_its_folder_waits_for_it(
    database_url: str,
) -> None:
    """The consumer's watermark passes the arrival set aside (the batches after go on),
    but a read holding a token that names its position (a DICOM job's series made) waits
    until it enters: it would otherwise list the folder without it. Other sources, and
    the same source's events before it, are not held back."""
    async with catalog_consumer(database_url) as context:
        root, synced = uuid.uuid4(), uuid.uuid4()
        await context.record(*top(root, "bucket"))
        before = context.dicom.event(series(root, "7.6"))
        waiting = context.dicom.event(series(synced, "7.7"))
        after = context.dicom.event(series(root, "7.8"))
        notes = context.ingest.event(page(root, "notes.txt"))
        await context.batch(before, waiting, after, notes)
        assert await context.waiting() == 1
        assert await context.listed(root) == {"series 7.6", "series 7.8", "notes.txt"}
        assert await marks(context) == {"dicom": 1, "ingest": 1}
        assert await caught_up(context, {"dicom": 1, "ingest": 1})
        # Waited for as long as the read may wait, and not answered as caught up.
        assert not await caught_up(context, {"dicom": 2}, timeout_s=0.3)

        # The catalog started again (its parts made anew): still held, from the rows.
        restarted = Parts("catalog", Settings(service_key=SERVICE_KEY))
        restarted.pool = context.pool
        Catalog(restarted)
        assert await restarted.inbox.watermarks(context.pool) == {"dicom": 1, "ingest": 1}

        reading = asyncio.create_task(caught_up(context, {"dicom": 3}, timeout_s=10))
        await context.batch(context.ingest.event(needed(root, root, synced, "a")))
        assert await reading
        assert await context.listed(synced) == {"series 7.7"}
        assert await marks(context) == {"dicom": 3, "ingest": 2}


async def test_what_arrives_for_a_deleted_or_purged_folder_is_rejected_at_once(
    database_url: str,
) -> None:
    async with catalog_consumer(database_url) as context:
        trashed, purged, bucket = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await context.record(*top(trashed, "trashed"), *top(purged, "purged"))
        await context.record(*top(bucket, "bucket"))
        folders = [domain.Folder(f, None, n, 1, (f,)) for f, n in ((trashed, "t"), (purged, "p"))]
        await context.record(*domain.delete(folders, []))
        await context.record(*domain.purge([domain.Folder(purged, None, "p", 2, (purged,))], []))
        in_trash = context.dicom.event(series(trashed, "1.1"))
        gone = context.ingest.event(page(purged, "gone.txt"))
        await context.batch(in_trash, gone)
        reasons = await context.rejected()
        assert sorted(reasons.values()) == [
            "the folder was deleted while the file was uploading",
            "the folder was deleted while the series was imported",
        ]
        # A key path's subfolder asked for below a deleted folder is never made, and
        # what arrives for it (read before or after the request) is rejected at once.
        below = uuid.uuid4()
        early = context.dicom.event(series(below, "1.3"))
        await context.batch(early)
        assert len(await context.rejected()) == 2
        await context.batch(context.ingest.event(needed(bucket, trashed, below, "x")))
        late = context.ingest.event(page(below, "late.txt"))
        await context.batch(late)
        assert below not in await context.folder_names()
        reasons = await context.rejected()
        assert len(reasons) == 4
        assert await context.waiting() == 0


async def test_what_arrives_for_a_folder_that_never_comes_is_rejected_after_waiting(
    database_url: str,
) -> None:
    async with catalog_consumer(database_url) as context:
        nowhere = uuid.uuid4()
        lost = series(nowhere, "9.9")
        stray = synced(nowhere, "stray.txt")
        images, stack = group(nowhere, "stack")
        await context.batch(
            context.dicom.event(lost),
            context.ingest.event(stray),
            context.ingest.event(images),
            context.ingest.event(stack),
        )
        assert await context.rejected() == {}
        # Not waited its time yet.
        assert await context.catalog.give_up_waiting(3600) == 0
        assert await context.rejected() == {}
        assert await marks(context) == {"dicom": 0, "ingest": 0}

        assert await context.catalog.give_up_waiting(0) == 3
        # Decided: a token naming them is answered (what it reads shows them rejected).
        assert await marks(context) == {"dicom": 1, "ingest": 3}
        assert await context.rejected() == {
            lost.file_id: domain.NEVER_MADE,
            stray.file_id: domain.NEVER_MADE,
            **{image.file_id: domain.NEVER_MADE for image in images.files},
        }
        assert await context.listed(nowhere) == set()
        # Decided once: the folder's late coming finds nothing waiting.
        assert await context.catalog.give_up_waiting(0) == 0
        await context.record(*top(nowhere, "late"))
        assert await context.listed(nowhere) == set()
        assert len(await context.rejected()) == 4


async def test_an_upload_naming_a_folder_never_seen_is_rejected_at_once(
    database_url: str,
) -> None:
    """The gateway found an upload's folder in the catalog (and ingest refuses synced
    ones), so one naming an id the catalog never saw is a forged or lost request: its
    files are rejected now (their blobs let go), not after the hour a sync's wait."""
    async with catalog_consumer(database_url) as context:
        nowhere = uuid.uuid4()
        uploaded = page(nowhere, "forged.txt")
        single = synced(nowhere, "single.txt").model_copy(update={"source": ev.Source()})
        await context.batch(context.ingest.event(uploaded), context.ingest.event(single))
        assert await context.rejected() == {
            uploaded.files[0].file_id: domain.NEVER_MADE,
            single.file_id: domain.NEVER_MADE,
        }
        assert await context.waiting() == 0
        assert await marks(context) == {"ingest": 2}


async def test_an_arrival_read_while_another_replica_makes_its_folder_enters_it(
    database_url: str,
) -> None:
    """Two catalog replicas: one makes the folder (its transaction not yet committed)
    while the other reads a series for it. The series is not set aside where nothing
    would release it: it waits for the maker's commit and enters the folder."""
    async with catalog_consumer(database_url) as context:
        folder = uuid.uuid4()
        assembled = series(folder, "4.4")
        async with context.pool.acquire() as maker:
            making = maker.transaction()
            await making.start()
            await context.catalog.write(maker, envelopes_of(top(folder, "bucket"), CAUSE))
            reading = asyncio.create_task(context.batch(context.dicom.event(assembled)))

            async def reader_waits_or_is_done() -> bool:
                # The reader blocked on the store's lock (the maker holds it to commit).
                return reading.done() or bool(
                    await context.pool.fetchval(
                        """SELECT count(*) FROM pg_stat_activity
                           WHERE datname = current_database() AND wait_event_type = 'Lock'"""
                    )
                )

            await eventually(reader_waits_or_is_done, what="the reader at the store's lock")
            await making.commit()
        await reading
        assert await context.listed(folder) == {"series 4.4"}
        assert await context.rejected() == {}
        assert await context.waiting() == 0


async def test_a_waiting_arrival_that_fails_is_dead_lettered_not_the_folder_it_waited_for(
    database_url: str,
) -> None:
    async with catalog_consumer(database_url) as context:
        folder = uuid.uuid4()
        _, broken = group(folder, "stack")  # its images' page never came: it cannot enter
        assembled = series(folder, "5.5")
        await context.batch(context.ingest.event(broken), context.dicom.event(assembled))
        await context.record(*top(folder, "bucket"))
        assert (await context.folder_names())[folder] == "bucket"
        assert await context.listed(folder) == {"series 5.5"}
        dead = await context.pool.fetch(
            "SELECT consumer, type, status, error FROM catalog.dead_letters"
        )
        assert [(r["consumer"], r["type"], r["status"]) for r in dead] == [
            ("catalog", ImageGroupStored.type, "dead")
        ]
        assert "images arrived before it" in dead[0]["error"]
        assert await context.waiting() == 0


async def test_a_follower_of_an_arrival_left_waiting_for_a_folder_now_made_enters_after_it(
    database_url: str,
) -> None:
    """An arrival set aside by a replica of the version before (which looked without the
    store's lock) may wait for a folder made meanwhile. What comes for its files then
    takes it along: the arrival first, then the follower, once each."""
    async with catalog_consumer(database_url) as context:
        root = uuid.uuid4()
        await context.record(*top(root, "bucket"))
        stored = page(root, "kept.txt", "gone.txt")
        left = context.ingest.event(stored)
        await context.pool.execute(
            """INSERT INTO catalog.awaiting_folders (event_id, folder_id, envelope, file_ids)
               VALUES ($1, $2, $3, $4)""",
            left.event_id,
            root,
            left.model_dump_json().encode(),
            [f.file_id for f in stored.files],
        )
        gone = context.ingest.event(
            CloudObjectGone(
                job_id=uuid.uuid4(),
                root_folder_id=root,
                key="gone.txt",
                file_id=stored.files[1].file_id,
            )
        )
        await context.batch(gone)
        assert await context.listed(root) == {"kept.txt", "gone.txt"}
        tombstones = await context.pool.fetch(
            "SELECT name FROM catalog.files WHERE folder_id = $1 AND tombstone", root
        )
        assert [r["name"] for r in tombstones] == ["gone.txt"]
        assert await context.waiting() == 0
