"""Reclaims stored bytes that no file refers to any more.

A deleted file stops being served at once: the catalog forgets it, and every
download asks the catalog first. Its bytes go later, here: the catalog's
`FilePurged` (the trash let it go), a `FileDeleted` from before the trash, or
`UploadRejected` releases the file's blob, and a sweep deletes
blobs that no file of ours refers to. Identical uploads share one blob, so a blob
goes only when its last file has gone. A DICOM instance's blob is held by its series
(the DICOM context's `SeriesInstancesAdded`) until the series is released
(`SeriesReleased`: deleted for good) or the instance leaves it (`SeriesInstancesRemoved`:
its object gone from a synced bucket); an instance that joined no series
(`InstanceBlobsLeft`: rejected, its job cancelled) holds its blob no longer.
A blob being stored again meanwhile is claimed in the storing transaction
(`collector.projections.claim_blobs`), or, by an upload of files, before its put
(`collector.claims`); the sweep skips it, or the claim waits for the sweep and the
bytes are stored again. Claims no upload ever settled are dropped, their keys left to
the sweep as unreferenced blobs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from services.ingest.collector import claims, domain
from services.ingest.collector.projections import RECLAIMABLE, blob_refs
from shared.contracts.catalog import FileDeleted, FilePurged, UploadRejected
from shared.contracts.dicom import (
    InstanceBlobsLeft,
    SeriesInstancesAdded,
    SeriesInstancesRemoved,
    SeriesReleased,
)
from shared.contracts.envelope import Cause, envelopes_of
from shared.kit.blobs import BlobStore
from shared.kit.db import Conn
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received
from shared.kit.service import Handlers, Parts

# Blobs deleted per sweep transaction.
SWEEP_BATCH = 1000
# Deletes in flight at once.
DELETES_IN_FLIGHT = 16
# An upload's claim (collector/claims.py) is kept at least this long, and the grace: the
# put of one request's files takes less (larger files go by upload sessions). An upload
# whose put took longer is refused, to be sent again; its bytes are reclaimed.
CLAIMS_KEPT = timedelta(hours=1)


class Collector(Handlers):
    def __init__(self, parts: Parts, store: BlobStore) -> None:
        super().__init__(parts)
        self.blobs = store
        self.grace = timedelta(seconds=parts.settings.blob_gc_grace_s)
        self.claims_kept = max(self.grace, CLAIMS_KEPT)

    reactions = Reactions("ingest")

    @reactions.on(FileDeleted)
    @reactions.on(FilePurged)
    @reactions.on(UploadRejected)
    async def when_files_gone(
        self,
        conn: Conn,
        envelopes: Sequence[Received[FileDeleted | FilePurged | UploadRejected]],
    ) -> None:
        """Files the catalog let go (purged from the trash, deleted before the trash
        was, or never registered) release their blobs, those that are ours. A file in
        the trash keeps its blob: it may be restored."""
        gone = [
            e.event.file_id
            for e in envelopes
            if not (isinstance(e.event, FileDeleted) and e.event.trashed)
        ]
        if not gone:
            return
        await self._release(conn, gone, envelopes[0])

    async def _release(self, conn: Conn, gone: list[uuid.UUID], cause: Received[Any]) -> None:
        """Release the blobs of those files that hold any (a file of ours, a series that
        lives on as a file after its series was released, or a file imported by
        reference, which holds its integration)."""
        ours = [
            r["file_id"]
            for r in await conn.fetch(
                """SELECT file_id FROM ingest.blob_files WHERE file_id = ANY($1::uuid[])
                   UNION SELECT file_id FROM ingest.blob_series WHERE file_id = ANY($1::uuid[])
                   UNION SELECT file_id FROM ingest.cloud_files WHERE file_id = ANY($1::uuid[])
                   UNION SELECT file_id FROM ingest.cloud_groups WHERE file_id = ANY($1::uuid[])
                   ORDER BY file_id""",
                gone,
            )
        ]
        if not ours:
            return
        written = envelopes_of(domain.release(ours), Cause.of(cause))
        await blob_refs.apply(conn, written)
        await self.store.append(conn, written)

    @reactions.on(SeriesInstancesAdded)
    async def when_series_gained(
        self, conn: Conn, envelopes: Sequence[Received[SeriesInstancesAdded]]
    ) -> None:
        written = [
            envelope
            for e in envelopes
            for envelope in envelopes_of(
                [domain.held(e.event.file_id, [i["blob_key"] for i in e.event.instances])],
                Cause.of(e),
            )
        ]
        await blob_refs.apply(conn, written)
        await self.store.append(conn, written)

    @reactions.on(SeriesInstancesRemoved)
    async def when_series_lost(
        self, conn: Conn, envelopes: Sequence[Received[SeriesInstancesRemoved]]
    ) -> None:
        """Instances that left a series (their objects gone from a synced bucket): the
        series' file no longer holds their blobs. After the pages that held them, in
        the series' stream."""
        written = [
            envelope
            for e in envelopes
            for envelope in envelopes_of(
                [domain.dropped(e.event.file_id, [i["blob_key"] for i in e.event.instances])],
                Cause.of(e),
            )
        ]
        await blob_refs.apply(conn, written)
        await self.store.append(conn, written)

    @reactions.on(InstanceBlobsLeft)
    async def when_instances_left(
        self, conn: Conn, envelopes: Sequence[Received[InstanceBlobsLeft]]
    ) -> None:
        written = [
            envelope
            for e in envelopes
            for envelope in envelopes_of([domain.unpinned(e.event.blob_keys)], Cause.of(e))
        ]
        await blob_refs.apply(conn, written)
        await self.store.append(conn, written)

    @reactions.on(SeriesReleased)
    async def when_series_released(
        self, conn: Conn, envelopes: Sequence[Received[SeriesReleased]]
    ) -> None:
        """A series whose file is gone releases its instances' blobs. The catalog's
        purge of the file does too (when_files_gone); this one comes after the series'
        pages in its stream, so a purge that overtook them still frees them."""
        gone = [e.event.file_id for e in envelopes if e.event.file_gone]
        if gone:
            await self._release(conn, gone, envelopes[0])

    async def sweep(self) -> int:
        """Give stale claims' keys to the sweep, then delete up to SWEEP_BATCH
        unreferenced blobs; how many claims and blobs went."""
        dropped = await self._sweep_claims(datetime.now(UTC) - self.claims_kept)
        cutoff = datetime.now(UTC) - self.grace
        async with self.pool.acquire() as conn, conn.transaction():
            found = [r["key"] for r in await conn.fetch(RECLAIMABLE, cutoff, SWEEP_BATCH)]
            # A claim committed after RECLAIMABLE's snapshot, before its lock: bytes an
            # upload in flight is putting again stay (uploads/handlers.py).
            held = await claims.claimed(conn, found) if found else set()
            keys = [k for k in found if k not in held]
            if keys:
                # Bytes first: if this transaction then fails, the rows stay and the
                # next sweep deletes again (deleting a missing blob is no error).
                await self._delete(keys)
                cause = Cause(actor="system:blob-collector", correlation_id=str(uuid.uuid4()))
                written = envelopes_of(domain.reclaim(keys), cause)
                await blob_refs.apply(conn, written)
                await self.store.append(conn, written)
        return dropped + len(keys)

    async def _sweep_claims(self, cutoff: datetime) -> int:
        """Claims of uploads that never recorded (collector/claims.py) dropped, their
        keys left to the sweep of blobs; how many claims went."""
        async with self.pool.acquire() as conn, conn.transaction():
            dropped = await claims.drop_stale(conn, cutoff, SWEEP_BATCH)
        if dropped:
            log.info("blobs.stale_claims_dropped", count=dropped)
        return dropped

    async def _delete(self, keys: list[str]) -> None:
        limit = asyncio.Semaphore(DELETES_IN_FLIGHT)

        async def delete(key: str) -> None:
            async with limit:
                try:
                    await self.blobs.delete(key)
                except KeyError:
                    # No store writes such a key (an event recorded by hand, an old
                    # layout): no bytes to delete. Raised, it failed every sweep on
                    # the same batch, and nothing was reclaimed any more.
                    log.warning("blobs.not_a_blob_key", key=key[:80])

        await asyncio.gather(*(delete(k) for k in keys))

    async def sweep_forever(self, every_s: float) -> None:
        while True:
            try:
                while (reclaimed := await self.sweep()) >= SWEEP_BATCH:
                    log.info("blobs.reclaimed", count=reclaimed)
                if reclaimed:
                    log.info("blobs.reclaimed", count=reclaimed)
            except Exception:
                log.error("blobs.sweep_failed", exc_info=True)
            await asyncio.sleep(every_s)  # a schedule, not a wait for a reaction
