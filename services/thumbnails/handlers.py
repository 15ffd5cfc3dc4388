"""The thumbnails context's reactions and its drawing loop.

The reaction is quick and makes no picture: a file whose content is known becomes a
pending row (`ThumbnailsRequested`), or, when its source was drawn already (an identical
file), gets that source's pictures at once. Drawing happens beside the consumer, in a pool
of worker processes, each file under a time cap (a worker that overruns or dies is
replaced and the file recorded as failed): one hostile file costs at most the cap, and
the consumer never waits for it. Runners claim pending files with a lease (replicas share
the work through the database); a file whose lease ran out (its replica died) is taken
again, at most MAX_ATTEMPTS times. A transient failure (shared/kit/retry.py: the database
or the blob store away a while) says nothing about the file: its attempt is given back
and the file taken again after a backoff with jitter, as the event consumers do.

Every change of a settled source (its pictures reused, reclaimed) holds that source's
advisory lock until commit, so the sweep never deletes pictures a file is being given;
a runner recording a source also holds that source's own lock, so two runners that drew
it give its files one outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlencode

import orjson
from pydantic import BaseModel

from services.thumbnails import domain, render, runners
from services.thumbnails.drawing import Drawing
from services.thumbnails.projections import thumbnails as model
from services.thumbnails.renditions import Renditions
from shared.contracts import limits
from shared.contracts import thumbnails as ev
from shared.contracts.catalog import (
    FileContentChanged,
    FileDeleted,
    FilePurged,
    FilesUploaded,
    FileUploaded,
    UploadedFile,
)
from shared.contracts.dicom import SeriesAssembled, SeriesExtended, SeriesReleased, SeriesShrunk
from shared.contracts.envelope import Cause, Change, Envelope, envelopes_of, random_ids
from shared.kit.blobs import BlobStore
from shared.kit.db import Conn
from shared.kit.eventstore import ConcurrencyConflict
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received
from shared.kit.retry import Backoff, Policy, transient
from shared.kit.service import Handlers, Parts

# Sources reclaimed per sweep transaction.
SWEEP_BATCH = 100
# Files requested between two ANALYZEs of the drawing loop's tables, at least.
ANALYZE_FROM = 1000
# What the drawing loop's statements are planned on: their columns' statistics are all an
# ANALYZE here gathers (the pictures' jsonb, reasons and correlations were two thirds of
# its time, and no plan reads them).
_ANALYZED = """ANALYZE (SKIP_LOCKED)
    thumbnails.files (file_id, source, state, kind, version, requested_at),
    thumbnails.sources (source, released_at)"""
# An image of at most this many bytes is drawn with the other small ones of its batch,
# in one task: for a 4 KiB file the task's round trip cost more than the drawing.
SMALL_IMAGE = 256 * 1024
# Files a runner claims, draws and records together: the claim's and the record's
# statements are paid once a batch, not once a file.
DRAW_BATCH = 16
# After a batch of small images only (a burst of small uploads), the next claim takes this
# many: the claim's, the record's and the events' statements then cost a quarter as much
# a file (10,000 small files: 4,000 fewer commits, ~2 CPU-s less of this service and of
# PostgreSQL). A batch that held anything else goes back to DRAW_BATCH, since a batch is
# recorded once all of it is drawn.
SMALL_BATCH = 64
# After a full SMALL_BATCH of small images only (a backlog of them: the uploads ran ahead
# of the drawing, as they do when this service yields the CPU to them), this many: a
# quarter of the claims, records and their transactions again, while the backlog lasts.
BACKLOG_BATCH = 256
# Small images in one worker's task at most: a task that overruns the time cap has each
# of its files drawn again alone, so a bigger one risks more.
SMALL_TASK = SMALL_BATCH

# What drawing a source came to: its pictures, why it has none (code, reason), or None
# when an identical file's pictures were there already.
Drawn = list[render.Picture] | tuple[str, str] | None
# The workers' pool broke while drawing: the file's lease runs out, it is tried again.
BROKEN: Final = "broken"


# Settled sources are locked by bucket: a batch of 10,000 uploads then takes at most this
# many advisory locks (PostgreSQL's lock table is sized for 64 a connection by default),
# and the sections they guard are short.
LOCK_BUCKETS = 64
# How long a worker's presigned URL of a file to draw lasts: its batch, queueing
# included, is drawn well within it (a URL gone stale is a store error: tried again).
URL_LASTS = timedelta(hours=1)
# The class of this context's advisory locks (two-key form: its own key space).
LOCK_SPACE = zlib.crc32(b"files.thumbnails.source") & 0x7FFFFFFF
# The class of a source being recorded, a key a source (its hash): a record holds at most
# BACKLOG_BATCH of them. By bucket, two runners' batches of 64 new sources shared ~40 of
# the 64 buckets, so each record waited for the one before it (5 s of waits for 10,000
# small uploads), though no two held the same source.
RECORD_SPACE = zlib.crc32(b"files.thumbnails.record") & 0x7FFFFFFF


def wanted_of(
    file_id: uuid.UUID,
    kind: str,
    sha256: str,
    blob_key: str,
    object_ref: str | None,
    size: int,
    cause: Cause,
) -> Wanted | None:
    """What a file's thumbnails are drawn from: its stored content, or the object it was
    imported from; None for what is not drawn here (a kind without pictures, a DICOM
    series, drawn from its slices, or content of neither sort)."""
    renderer = domain.renderer_of(kind)
    if renderer is None or renderer == "dicom":
        return None
    if blob_key.startswith("sha256/"):
        object_ref = None
    elif object_ref is None:
        return None
    return Wanted(
        file_id, kind, domain.source_of(renderer, sha256), blob_key, cause, object_ref, size
    )


def object_url(
    parts: Parts, object_ref: str, lasts: timedelta, file_id: uuid.UUID, sha256: str
) -> str:
    """Ingest's URL of an object of a customer's bucket, signed for it until `lasts` from
    now (shared/kit/identity.py `object_read_mac`), read as `file_id`'s bytes of `sha256`:
    ingest answers only while the object is still what the read of those found (412)."""
    integration_id, _, key = object_ref.partition(":")
    expires = int((datetime.now(UTC) + lasts).timestamp())
    signature = parts.identity.object_read_mac(integration_id, key, expires)
    query = urlencode(
        {
            "key": key,
            "expires": expires,
            "signature": signature,
            "file": str(file_id),
            "sha256": sha256,
        }
    )
    return f"{parts.settings.ingest_url}/internal/objects/{integration_id}?{query}"


async def lock_sources(conn: Conn, sources: Iterable[str], recorded: Iterable[str] = ()) -> None:
    """Until commit, no other transaction changes these settled `sources` (their buckets:
    a request giving their pictures, the sweep, a record), nor records any of `recorded`
    (a key each). Buckets first, then keys, each in order: one order everywhere."""
    await conn.execute(
        f"""SELECT pg_advisory_xact_lock(k.space, k.key)
            FROM (SELECT DISTINCT {LOCK_SPACE} AS space, hashtext(s) & {LOCK_BUCKETS - 1} AS key
                  FROM unnest($1::text[]) AS s
                  UNION
                  SELECT {RECORD_SPACE}, hashtext(s) FROM unnest($2::text[]) AS s) AS k
            ORDER BY k.space = {RECORD_SPACE}, k.key""",
        list(set(sources)),
        list(set(recorded)),
    )


@dataclass(frozen=True)
class Wanted:
    """A file whose thumbnails are to be made from `blob_key` (what `source` names), or,
    imported by reference, from the object `object_ref` of `size` bytes."""

    file_id: uuid.UUID
    kind: str
    source: str
    blob_key: str
    cause: Cause
    object_ref: str | None = None
    size: int | None = None


def _settled_file(file_id: uuid.UUID, source: str, row: Any) -> ev.SettledFile:
    if row["state"] == "made":
        return ev.SettledFile(file_id=file_id, source=source, renditions=row["renditions"])
    return ev.SettledFile(
        file_id=file_id,
        source=source,
        code=row["code"],
        reason=row["reason"],
        alone=row.get("alone", False),
    )


def _file_size(file: ev.RequestedFile | ev.SettledFile) -> int:
    # Its JSON as the event's, by orjson from the fields (a model_dump a file cost more
    # than the page's event saved).
    return len(orjson.dumps(file.__dict__, default=_fields))


def _fields(value: object) -> Any:
    if isinstance(value, BaseModel):
        return value.__dict__
    if isinstance(value, uuid.UUID):  # asyncpg's, which orjson does not take as one
        return str(value)
    raise TypeError(type(value))


class Paged:
    """A transaction's thumbnails events as pages: the files asked for and the files
    settled, a page of each a cause (split at limits.PAGE_ITEMS and PAGE_BYTES), each in
    a stream of its own. The requests go before the settlements, so a file is pending
    before it is settled; a file met again (two sources in one batch) first closes the
    pages so far, so the read model takes its events in the order they were decided."""

    def __init__(self) -> None:
        self.out: list[Envelope] = []
        # By cause (its fields: what the events carry of it).
        self._requested: dict[tuple[Any, ...], tuple[Cause, list[ev.RequestedFile]]] = {}
        self._settled: dict[tuple[Any, ...], tuple[Cause, list[ev.SettledFile]]] = {}
        # Files in the pages so far (any), and in their settled pages.
        self._seen: set[uuid.UUID] = set()
        self._settling: set[uuid.UUID] = set()

    def requested(self, cause: Cause, file: ev.RequestedFile) -> None:
        if file.file_id in self._seen:
            self._close()
        self._seen.add(file.file_id)
        self._requested.setdefault(_key(cause), (cause, []))[1].append(file)

    def settled(self, cause: Cause, file: ev.SettledFile) -> None:
        # Settled after its request in these pages is their order already.
        if file.file_id in self._settling:
            self._close()
        self._seen.add(file.file_id)
        self._settling.add(file.file_id)
        self._settled.setdefault(_key(cause), (cause, []))[1].append(file)

    def _close(self) -> None:
        for cause, requested in self._requested.values():
            self.out += envelopes_of(
                [
                    Change(ev.page_stream(page_id), 1, ev.ThumbnailsRequestedPage.page(page))
                    for page, page_id in _cut(requested)
                ],
                cause,
            )
        for cause, settled in self._settled.values():
            self.out += envelopes_of(
                [
                    Change(ev.page_stream(page_id), 1, ev.ThumbnailsSettled.page(page))
                    for page, page_id in _cut(settled)
                ],
                cause,
            )
        self._requested, self._settled = {}, {}
        self._seen, self._settling = set(), set()

    def envelopes(self) -> list[Envelope]:
        self._close()
        return self.out


def _key(cause: Cause) -> tuple[Any, ...]:
    return (cause.actor, cause.correlation_id, cause.causation_id, cause.traceparent)


F = TypeVar("F", ev.RequestedFile, ev.SettledFile)


def _cut(files: list[F]) -> list[tuple[list[F], uuid.UUID]]:
    pages = list(limits.pages(files, _file_size))
    return list(zip(pages, random_ids(len(pages)), strict=True))


class Thumbnails(Handlers):
    def __init__(self, parts: Parts, blobs: BlobStore) -> None:
        super().__init__(parts)
        self.blobs = blobs
        settings = parts.settings
        self.fmt = settings.thumbnail_format
        self.time_cap = settings.thumbnail_time_cap_s
        self.settle = timedelta(seconds=settings.thumbnail_series_settle_s)
        self.workers = settings.thumbnail_workers or len(os.sched_getaffinity(0))
        self.grace = timedelta(seconds=settings.blob_gc_grace_s)
        self.drawing = Drawing(settings, self.workers)
        # A file a worker at a time across runners: what waits, waits here (its lease
        # kept), not in the pool's queue.
        self.slots = asyncio.Semaphore(self.workers)
        self.lease = timedelta(seconds=self.time_cap * 2 + 60)
        self.policy = Policy(retry_for_s=settings.consumer_retry_for_s)
        # Re-encoding (renditions.py): a purged file's web rendition goes with it.
        self.renditions: Renditions | None = None
        # Files requested since the read model's tables were last analyzed, and how many
        # more make them analyzed again (see `_analyzed`).
        self._grown = 0
        self._analyze_at = ANALYZE_FROM
        self._analyzing = False
        # How many pending files the next claim takes (the last batch's sizes say).
        self.batch = DRAW_BATCH
        # Files this process's runners hold (claimed, not yet recorded): a claim passes
        # them over without probing their leases (see `_FREE`).
        self.in_hand: set[uuid.UUID] = set()
        # A process's runners record one batch at a time (they draw side by side). Every
        # append holds the store's head row until commit, the consumer's too, which the
        # upload answers wait for: records side by side queued it behind several (the
        # appends' wall time 431-4,432 ms against 236-966 for 10,000 small uploads). A
        # runner waits here without a connection; replicas record side by side.
        self._recording = asyncio.Lock()
        # A consumer batch requested files to draw: the runners are woken once it has
        # committed (`after_batch`).
        self._requested = False

    # -- reactions ---------------------------------------------------------------------

    reactions = Reactions("thumbnails")

    @reactions.on(FileUploaded)
    @reactions.on(FilesUploaded)
    async def when_file_uploaded(
        self, conn: Conn, uploaded: Sequence[Received[FileUploaded] | Received[FilesUploaded]]
    ) -> None:
        """A page's files as the files one an event would be, caused by the page (read
        from the page's own entries: a `FileUploaded` built for each cost more than the
        rest of the request)."""
        wanted: list[Wanted] = []
        for e in uploaded:
            cause = Cause.of(e)
            files = e.event.files if isinstance(e.event, FilesUploaded) else [e.event]
            wanted += [w for file in files if (w := self._uploaded(file, cause))]
        await self.request(conn, wanted)

    @reactions.on(SeriesAssembled)
    @reactions.on(SeriesExtended)
    @reactions.on(SeriesShrunk)
    async def when_series_changed(
        self,
        conn: Conn,
        series: Sequence[Received[SeriesAssembled | SeriesExtended | SeriesShrunk]],
    ) -> None:
        """Drawn again from its middle slice (a series left with none is not drawn)."""
        await self.request(conn, [w for e in series if (w := self._series(e))])

    @reactions.on(FileDeleted)
    @reactions.on(FilePurged)
    @reactions.on(SeriesReleased)
    async def when_released(
        self, conn: Conn, gone: Sequence[Received[FileDeleted | FilePurged | SeriesReleased]]
    ) -> None:
        """A file in the trash keeps its pictures, for a restore: they go when the trash
        lets it go (or at once, for a deletion from before the trash)."""
        let_go = [e for e in gone if not (isinstance(e.event, FileDeleted) and e.event.trashed)]
        await self.release(conn, let_go)
        if self.renditions is not None:
            await self.renditions.release(
                conn,
                [(e.event.file_id, e) for e in let_go if not isinstance(e.event, SeriesReleased)],
            )

    @reactions.on(FileContentChanged)
    async def when_content_changed(
        self, conn: Conn, changed: Sequence[Received[FileContentChanged]]
    ) -> None:
        """A cloud-synced file's object changed in its bucket: drawn again from it."""
        rows = {
            r["file_id"]: r
            for r in await conn.fetch(
                "SELECT file_id, blob_key, object_ref FROM thumbnails.files"
                " WHERE file_id = ANY($1::uuid[]) AND object_ref IS NOT NULL"
                " AND state <> 'released'",
                [e.event.file_id for e in changed],
            )
        }
        wanted = [
            w
            for e in changed
            if (row := rows.get(e.event.file_id)) is not None
            and (
                w := wanted_of(
                    e.event.file_id,
                    e.event.kind,
                    e.event.sha256,
                    row["blob_key"],
                    row["object_ref"] if e.event.kind in domain.DRAWN_BY_REFERENCE else None,
                    e.event.size,
                    Cause.of(e),
                )
            )
        ]
        await self.request(conn, wanted)

    @staticmethod
    def _uploaded(file: FileUploaded | UploadedFile, cause: Cause) -> Wanted | None:
        """A file registered with its content. A DICOM series is drawn from its middle
        slice, which the DICOM context's events name. A file imported by reference is
        not drawn here but when its picture is first asked for (`request_imported`): an
        import of 100,000 objects would otherwise read every one of them from the
        customer's bucket again (their egress, ingest's and our workers' time) for
        pictures nobody may look at; the web app asks for those it shows."""
        return wanted_of(
            file.file_id, file.kind, file.sha256, file.blob_key, None, file.size, cause
        )

    @staticmethod
    def _series(
        envelope: Received[SeriesAssembled | SeriesExtended | SeriesShrunk],
    ) -> Wanted | None:
        """A series is drawn from its middle slice: the event names it (events from
        before pages name every instance, in slice order, instead)."""
        series = envelope.event
        if series.middle_blob_key and series.middle_sha256:
            blob_key, sha256 = series.middle_blob_key, series.middle_sha256
        elif instances := series.instances:
            shown = instances[domain.middle(len(instances))]
            blob_key, sha256 = shown["blob_key"], shown["sha256"]
        else:
            return None
        return Wanted(
            series.file_id,
            "dicom_series",
            domain.source_of("dicom", sha256),
            blob_key,
            Cause.of(envelope),
        )

    async def request(self, conn: Conn, wanted: Sequence[Wanted]) -> None:
        if not wanted:
            return
        # Only a source drawn already is locked (its pictures are given to these files:
        # the sweep must not take them meanwhile), and read again under its lock. A new
        # source is not: locking every source of a page (~50 of the 64 buckets for 100
        # files) queued the consumer, and the upload answers waiting on it, behind each
        # drawn batch's record (20 s of lock waits for 10,000 small uploads). Should a
        # runner settle a source while this file is requested, the file stays pending,
        # and its claim, seeing the source settled, gives it that source's outcome.
        sources = list({w.source for w in wanted})
        settled = await self._settled_sources(conn, sources)
        if settled:
            await lock_sources(conn, settled)
            settled = await self._settled_sources(conn, list(settled))
        rows = await conn.fetch(
            "SELECT file_id, version, state, source FROM thumbnails.files"
            " WHERE file_id = ANY($1::uuid[]) FOR UPDATE",
            [w.file_id for w in wanted],
        )
        files = {r["file_id"]: dict(r) for r in rows}
        paged = Paged()
        settled_now: list[uuid.UUID] = []
        asked = 0
        for w in wanted:
            row = files.get(w.file_id)
            if row is not None and (row["state"] == "released" or row["source"] == w.source):
                continue  # a deleted file, or what it has already (a redelivery, a no-op)
            asked += 1
            paged.requested(
                w.cause,
                ev.RequestedFile(
                    file_id=w.file_id,
                    kind=w.kind,
                    source=w.source,
                    blob_key=w.blob_key,
                    object_ref=w.object_ref,
                    size=w.size,
                ),
            )
            if w.source in settled:
                # An identical file was drawn already: its pictures are this one's.
                settled_now.append(w.file_id)
                paged.settled(w.cause, _settled_file(w.file_id, w.source, settled[w.source]))
            files[w.file_id] = {"state": "pending", "source": w.source}
        if out := paged.envelopes():
            if settled_now:
                await conn.execute(_SETTLED, settled_now)
            await model.apply(conn, out)
            await self.store.append(conn, out)
            self._grown += len(wanted)
            # Some are left to draw (not all given an identical file's pictures).
            self._requested |= len(settled_now) < asked

    async def after_batch(self) -> None:
        """A consumer batch committed: files it requested are there to claim now. Runners
        wait for the watermarks' notification, which a batch above a gap (its watermark
        not moved) does not send; unwoken, they came at their next look (IDLE_S)."""
        if self._requested:
            self._requested = False
            self.parts.moved.fire()

    @staticmethod
    async def _settled_sources(conn: Conn, sources: list[str]) -> dict[str, Any]:
        return {
            r["source"]: r
            for r in await conn.fetch(
                "SELECT * FROM thumbnails.sources WHERE source = ANY($1::text[])", sources
            )
        }

    async def release(
        self,
        conn: Conn,
        envelopes: Sequence[Received[FileDeleted | FilePurged | SeriesReleased]],
    ) -> None:
        """A deleted file (or a released series) no longer has thumbnails; its source's
        pictures go when no file uses it (the sweep)."""
        gone = {e.event.file_id: e for e in envelopes}
        rows = await conn.fetch(
            "SELECT file_id, version, source FROM thumbnails.files"
            " WHERE file_id = ANY($1::uuid[]) AND state <> 'released' FOR UPDATE",
            list(gone),
        )
        out: list[Envelope] = []
        for r in rows:
            change = Change(
                ev.file_stream(r["file_id"]),
                r["version"] + 1,
                ev.ThumbnailsReleased(file_id=r["file_id"], source=r["source"]),
            )
            out += envelopes_of([change], Cause.of(gone[r["file_id"]]))
        if out:
            await conn.execute(_SETTLED, [r["file_id"] for r in rows])
            await model.apply(conn, out)
            await self.store.append(conn, out)

    # -- drawing -----------------------------------------------------------------------

    async def run(self) -> None:
        """Runners that each claim up to DRAW_BATCH pending files, draw them, record them
        (one more runner than workers, so the workers are not idle while a batch is
        recorded)."""
        try:
            await self.drawing.warm()
            await asyncio.gather(
                *(
                    runners.claim_and_work(
                        self.parts,
                        self.policy,
                        "thumbnails",
                        self.claim,
                        self.draw,
                        self._again_later,
                    )
                    for _ in range(self.workers + 1)
                )
            )
        finally:
            self.drawing.stop()

    async def _again_later(self, claimed: list[dict[str, Any]], backoff: Backoff) -> None:
        """After a backoff, give the files' leases and attempts back, so they are taken
        again at once and the failure does not count; if the database stays away past
        the policy's time, the leases run out instead (one attempt counted)."""
        while True:
            await backoff.wait()
            if not claimed:
                return
            try:
                await self.pool.execute(
                    """UPDATE thumbnails.leases SET until = now(), attempts = attempts - 1
                       WHERE file_id = ANY($1::uuid[])""",
                    [c["file_id"] for c in claimed],
                )
                return
            except Exception as error:
                if not transient(error) or backoff.expired():
                    log.error(
                        "thumbnails.lease_kept", file_ids=[str(c["file_id"]) for c in claimed]
                    )
                    return

    async def claim(self) -> list[dict[str, Any]]:
        """Up to DRAW_BATCH (SMALL_BATCH in a burst of small images, BACKLOG_BATCH while a
        backlog of them lasts) pending files
        nobody holds, leased for this runner: those a person asked for (a thumbnail
        requested while pending, oldest ask first), else the oldest. A backlog (a
        sequence of 10,000 frames) then does not keep the picture someone is looking at
        waiting behind it: such a batch holds only what was asked for."""
        if self._grown >= self._analyze_at and not self._analyzing:
            await self._analyzed()
        held = list(self.in_hand)
        rows = await self.pool.fetch(_CLAIM.format(pick=_WANTED_FIRST), self.lease, held)
        if not rows:
            pick = _OLDEST_FIRST.format(limit=self.batch)
            rows = await self.pool.fetch(_CLAIM.format(pick=pick), self.lease, held, self.settle)
        self.in_hand |= {r["file_id"] for r in rows}
        return [dict(r) for r in rows]

    async def _analyzed(self) -> None:
        """ANALYZE the tables the drawing loop reads, once they have doubled since it was
        last done here. A burst of uploads (10,000 small files in 20 s; a fresh install's
        first import) grows them long before autovacuum looks (once a minute at most),
        and on a table the planner knows nothing of, the claim and the record were
        planned as scans of every pending file and of every source: for 10,000 small
        uploads 2-3 M index entries and up to 4 M source rows read, PostgreSQL spending
        4-7 CPU-s for this context. Analyzed as they grow: ~60,000 and ~0.3 M. Once the
        planner knows the tables, their plans (index probes, the oldest pending first)
        stay right as they grow: analyzed at every half (1,000, 2,000, 3,000, 4,500 and
        6,750 of 10,000 uploads) was 5 ANALYZEs of ~50-90 ms; at every doubling, 4. An
        ANALYZE samples at most 30,000 rows; a big table is done rarely."""
        self._analyzing = True
        try:
            async with self.pool.acquire() as conn:
                # SKIP_LOCKED: never queued behind another replica's ANALYZE, a long
                # VACUUM or a rebuild's DDL (nor queueing the claims behind itself).
                await conn.execute(_ANALYZED)
                rows = await conn.fetchval(
                    "SELECT reltuples FROM pg_class WHERE oid = 'thumbnails.files'::regclass"
                )
            self._analyze_at = max(ANALYZE_FROM, int(rows or 0))
        except Exception as error:
            # Autovacuum does it later: the plans are only slower meanwhile.
            log.warning("thumbnails.not_analyzed", error=repr(error))
        finally:
            self._grown = 0
            self._analyzing = False

    async def draw(self, files: list[dict[str, Any]]) -> None:
        """Each source of the batch drawn once (identical files share it), at most one
        file a worker at a time across runners, then recorded together. The batch's
        leases are kept while it is in hand: a lease runs out only when its runner is
        gone, however long the files wait for a worker."""
        keeping = asyncio.create_task(self._keep_leases([f["file_id"] for f in files]))
        try:
            await self._draw(files)
        finally:
            self.in_hand -= {f["file_id"] for f in files}
            keeping.cancel()
            await asyncio.wait([keeping])

    async def _keep_leases(self, file_ids: list[uuid.UUID]) -> None:
        every = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)  # a schedule: the leases' renewal
            try:
                await self.pool.execute(
                    """UPDATE thumbnails.leases SET until = now() + $2::interval
                       WHERE file_id = ANY($1::uuid[])""",
                    file_ids,
                    self.lease,
                )
            except Exception as error:
                # Not renewed: the leases run out as they would without it.
                log.warning("thumbnails.lease_not_renewed", error=repr(error))
                if not transient(error):
                    return

    async def _draw(self, files: list[dict[str, Any]]) -> None:
        outcomes: dict[str, Drawn] = {}
        drawn: dict[str, dict[str, Any]] = {}  # a file of each source: whose cause it is
        for file in files:
            source = file["source"]
            if source in drawn:
                continue
            drawn[source] = file
            if file["attempts"] > domain.MAX_ATTEMPTS:
                outcomes[source] = ("gave_up", f"not drawn after {domain.MAX_ATTEMPTS} attempts")
        # The claim says which sources were settled (an identical file drawn meanwhile).
        known = {s for s, f in drawn.items() if f["known"] and s not in outcomes}
        # An identical file's pictures are there already: recorded, not drawn.
        outcomes |= {source: None for source in known}
        wanted = [f for s, f in drawn.items() if s not in outcomes]
        away: BaseException | None = None
        away_ids: set[uuid.UUID] = set()
        results, all_small = await self._drawn(wanted)
        if not (wanted and all_small):
            self.batch = DRAW_BATCH
        else:
            self.batch = BACKLOG_BATCH if len(files) >= SMALL_BATCH else SMALL_BATCH
        for file, outcome in zip(wanted, results, strict=True):
            if isinstance(outcome, BaseException):
                # The store away (transient): given back after a backoff, with the
                # batch, once the rest is recorded. Anything else: the lease runs out.
                if transient(outcome):
                    away = away or outcome
                    away_ids |= {f["file_id"] for f in files if f["source"] == file["source"]}
                else:
                    log.error("thumbnails.failed", file_id=str(file["file_id"]), exc_info=outcome)
            elif outcome == BROKEN:
                # The pool broke: the lease runs out and the file is tried again.
                log.warning("thumbnails.pool_broken", file_id=str(file["file_id"]))
            else:
                outcomes[file["source"]] = outcome
        settle = {s: (drawn[s], outcome) for s, outcome in outcomes.items()}
        try:
            if settle:
                await self.record(settle)
        except Exception as error:
            if transient(error):
                raise  # nothing recorded: the whole batch is given back after a backoff
            # One source's trouble does not hold the others back: each alone (those that
            # still fail keep their leases, which run out: an attempt each).
            log.warning("thumbnails.batch_not_recorded", exc_info=True)
            for source, item in settle.items() if len(settle) > 1 else ():
                try:
                    await self.record({source: item})
                except Exception as alone:
                    if transient(alone):
                        raise
                    log.error("thumbnails.not_recorded", source=source, exc_info=True)
        if away is not None:
            raise runners.Away(away, away_ids)

    async def _drawn(
        self, files: list[dict[str, Any]]
    ) -> tuple[list[Drawn | Literal["broken"] | BaseException], bool]:
        """Each file's outcome, in order (an exception: it could not be drawn now), and
        whether all were small images. Small images go to a worker up to DRAW_BATCH
        together, in one task under one time cap; if that task does not finish (a file
        over the cap, a worker's death, the pool broken), each is drawn again alone
        under its own cap, so the file at fault is the one recorded: a hostile small
        file costs at most two caps."""
        # A task only for a file whose size the store must give (a row from before its
        # request kept `bytes`): for the rest the job is made at once, a task and its
        # scheduling a file having cost more than the job (~6 µs against ~0.1, up to
        # BACKLOG_BATCH files a batch). What one file's job raises is that file's outcome.
        found: list[render.Job | Drawn | BaseException] = []
        unsized: dict[int, dict[str, Any]] = {}
        for i, file in enumerate(files):
            if file["bytes"] is None and file["object_ref"] is None:
                unsized[i] = file
                found.append(None)
                continue
            try:
                found.append(self._job(file, file["bytes"]))
            except Exception as error:
                found.append(error)
        if unsized:
            sized = await asyncio.gather(
                *(self._sized(f) for f in unsized.values()), return_exceptions=True
            )
            for i, job in zip(unsized, sized, strict=True):
                found[i] = job
        results: list[Drawn | Literal["broken"] | BaseException] = [
            None if isinstance(j, render.Job) else j for j in found
        ]
        jobs = {i: j for i, j in enumerate(found) if isinstance(j, render.Job)}
        small = [i for i, j in jobs.items() if j.renderer == "image" and j.size <= SMALL_IMAGE]
        all_small = len(small) == len(files)
        if len(small) < 2:
            small = []
        alone = [i for i in jobs if i not in small]

        async def one(i: int) -> None:
            try:
                async with self.slots:
                    outcome = await self.drawing.draw(jobs[i], self.time_cap)
                results[i] = BROKEN if outcome is None else outcome
            except Exception as error:
                results[i] = error

        async def together(chunk: list[int]) -> None:
            made: list[Any] | None
            try:
                async with self.slots:
                    made = await self.drawing.draw_together([jobs[i] for i in chunk], self.time_cap)
            except Exception:
                # Whatever went wrong with the task is no file's fault: each alone.
                log.warning("thumbnails.group_failed", files=len(chunk), exc_info=True)
                made = None
            if made is None:
                await asyncio.gather(*(one(i) for i in chunk))
                return
            for i, outcome in zip(chunk, made, strict=True):
                results[i] = outcome
            # A file that raised in the group: alone, as any file is drawn.
            await asyncio.gather(*(one(i) for i, m in zip(chunk, made, strict=True) if m is None))

        # As few tasks as keep every worker busy with this batch (a SMALL_BATCH of 64 on
        # two workers: two tasks of 32, where tasks of DRAW_BATCH made four): a task's
        # round trip cost the pool more than finding a 4 KiB file undrawable.
        per = min(SMALL_TASK, max(DRAW_BATCH, -(-len(small) // self.workers)))
        chunks = [small[n : n + per] for n in range(0, len(small), per)]
        await asyncio.gather(*(together(c) for c in chunks), *(one(i) for i in alone))
        return results, all_small

    async def _sized(self, file: dict[str, Any]) -> render.Job | Drawn:
        """The job of a content blob whose size its row does not have (requested before
        the request kept it): asked of the store. Content gone meanwhile is the worker's
        `content_missing`, as when it goes while being drawn."""
        try:
            size = await self.blobs.size(file["blob_key"])
        except (FileNotFoundError, KeyError):
            return ("content_missing", "the content is not stored")
        return self._job(file, size)

    def _job(self, file: dict[str, Any], size: int) -> render.Job:
        renderer = file["source"].partition(":")[0]
        if file["object_ref"] is not None:
            # Imported by reference: read through ingest, by a URL signed for this
            # object alone (the worker holds no key, and never reaches the bucket).
            sha256 = file["source"].partition(":")[2]
            url = object_url(self.parts, file["object_ref"], URL_LASTS, file["file_id"], sha256)
            return render.Job(renderer, file["blob_key"], size, self.fmt, url=url)
        # A content blob's size is the upload's, which the request kept: not asked of
        # the store again (a stat, or a HEAD on S3, a file). The worker reads this
        # object by its URL, and holds no key of the store's.
        signed = self.blobs.presigned_get(file["blob_key"], URL_LASTS)
        return render.Job(renderer, file["blob_key"], size, self.fmt, url=signed)

    async def record(self, drawn: Mapping[str, tuple[dict[str, Any], Drawn]]) -> None:
        """Settle each source (store its pictures, or its failure; None: settled already)
        and every pending file of it, in one transaction under the sources' locks. Each
        source's events are caused by the request of the file drawn for it (its upload's
        correlation).

        Each source is recorded under its own lock (a runner that drew it too waits, then
        finds it settled and gives its files this outcome); a source the claim found
        settled also under its bucket's, which the sweep takes. A new source needs no
        bucket: the sweep reclaims only settled sources no pending file uses."""
        async with self._recording, self.pool.acquire() as conn, conn.transaction():
            known = [s for s, (file, _) in drawn.items() if file.get("known", True)]
            await lock_sources(conn, known, recorded=drawn)
            pending: dict[str, list[Any]] = {}
            for r in await conn.fetch(
                """SELECT file_id, version, source FROM thumbnails.files
                   WHERE source = ANY($1::text[]) AND state = 'pending'
                   ORDER BY file_id FOR UPDATE""",
                list(drawn),
            ):
                pending.setdefault(r["source"], []).append(r)
            if not pending:
                return  # deleted meanwhile: nothing is stored
            settled: dict[str, Mapping[str, Any]] = {
                r["source"]: dict(r)
                for r in await conn.fetch(
                    "SELECT * FROM thumbnails.sources WHERE source = ANY($1::text[])",
                    list(pending),
                )
            }
            made = [
                (source, outcome)
                for source, (_, outcome) in drawn.items()
                if source in pending and source not in settled and isinstance(outcome, list)
            ]
            for source, renditions in (await self._store(made)).items():
                settled[source] = {"state": "made", "renditions": renditions}
            paged = Paged()
            done: list[uuid.UUID] = []
            for source, rows in pending.items():
                file, outcome = drawn[source]
                outcomes = settled.get(source)
                if outcomes is None and isinstance(outcome, tuple):
                    outcomes = {"state": "failed", "code": outcome[0], "reason": outcome[1]}
                    if file["object_ref"] is not None:
                        # Drawn from an imported object: whatever failed (it changed, or
                        # no longer decodes, or went, or took too long) may be that
                        # object's, not the source's bytes: this file's failure alone.
                        # The source stays unsettled, and the others of it are drawn
                        # from their own content (once their leases run out).
                        outcomes = {**outcomes, "alone": True}
                        rows = [r for r in rows if r["file_id"] == file["file_id"]]
                    else:
                        settled[source] = outcomes
                if outcomes is None:
                    continue
                cause = Cause(
                    actor="system:thumbnails",
                    correlation_id=file["correlation_id"],
                    causation_id=str(file["request_id"]),
                )
                for r in rows:
                    paged.settled(cause, _settled_file(r["file_id"], source, outcomes))
                    done.append(r["file_id"])
            out = paged.envelopes()
            if not out:
                return
            await conn.execute(_SETTLED, done)
            await model.apply(conn, out)
            await self.store.append(conn, out)
        # One line a batch: a line a file was a sixth of the record's time in a burst
        # of undrawable uploads.
        failed = [
            {"file_id": str(file["file_id"]), "code": outcome[0], "reason": outcome[1]}
            for file, outcome in drawn.values()
            if isinstance(outcome, tuple)
        ]
        if failed:
            log.info("thumbnails.failed", files=failed)

    async def _store(
        self, made: Sequence[tuple[str, list[render.Picture]]]
    ) -> dict[str, list[dict[str, Any]]]:
        """Every source's pictures stored in one grouped put (on a local store two syncfs
        for the batch, where a put each was a spool, a rename and two fsyncs); each
        source's renditions naming them."""
        renditions: dict[str, list[dict[str, Any]]] = {}
        pictures: list[tuple[str, bytes]] = []
        for source, drawn in made:
            # An image within the smallest size has the same picture at every size:
            # stored once, every size names it.
            stored: dict[bytes, str] = {}
            renditions[source] = []
            for picture in drawn:
                key = stored.get(picture.data)
                if key is None:
                    key = stored[picture.data] = domain.blob_key(source, picture.size, self.fmt)
                    pictures.append((key, picture.data))
                renditions[source].append(
                    ev.Rendition(
                        size=picture.size,
                        blob_key=key,
                        sha256=hashlib.sha256(picture.data).hexdigest(),
                        content_type=domain.CONTENT_TYPES[self.fmt],
                        width=picture.width,
                        height=picture.height,
                        bytes=len(picture.data),
                    ).model_dump()
                )
        # Stored before the caller appends the events that name them.
        await self.blobs.put_many(pictures)
        return renditions

    # -- reclaiming ----------------------------------------------------------------------

    async def sweep(self) -> int:
        """Delete the pictures of up to SWEEP_BATCH sources no file uses any more; how many."""
        cutoff = datetime.now(UTC) - self.grace
        async with self.pool.acquire() as conn, conn.transaction():
            candidates = [
                r["source"]
                for r in await conn.fetch(
                    """SELECT s.source FROM thumbnails.sources s
                       WHERE s.released_at IS NOT NULL AND s.released_at <= $1
                         AND NOT EXISTS (SELECT 1 FROM thumbnails.files f
                                         WHERE f.source = s.source AND f.state <> 'released')
                       ORDER BY s.source LIMIT $2""",
                    cutoff,
                    SWEEP_BATCH,
                )
            ]
            if not candidates:
                return 0
            await lock_sources(conn, candidates)
            # Looked at again under the locks: a file may have taken one up meanwhile.
            rows = await conn.fetch(
                """SELECT s.source, s.renditions FROM thumbnails.sources s
                   WHERE s.source = ANY($1::text[]) AND NOT EXISTS (
                       SELECT 1 FROM thumbnails.files f
                       WHERE f.source = s.source AND f.state <> 'released')
                   ORDER BY s.source""",
                candidates,
            )
            if not rows:
                return 0
            # A key once: the sizes of a small image share their picture.
            keys = list(
                dict.fromkeys(r["blob_key"] for row in rows for r in (row["renditions"] or []))
            )
            # Bytes first: if the transaction then fails, the next sweep deletes again.
            await asyncio.gather(*(self.blobs.delete(k) for k in keys))
            cause = Cause(actor="system:thumbnails", correlation_id=str(uuid.uuid4()))
            change = Change(
                f"thumbnails-reclaim-{uuid.uuid4()}",
                1,
                ev.ThumbnailsReclaimed(sources=[r["source"] for r in rows], blob_keys=keys),
            )
            out = envelopes_of([change], cause)
            await model.apply(conn, out)
            await self.store.append(conn, out)
            return len(rows)

    async def sweep_forever(self, every_s: float) -> None:
        while True:
            try:
                await self.forget_stale_wants()
                while (reclaimed := await self.sweep()) == SWEEP_BATCH:
                    log.info("thumbnails.reclaimed", sources=reclaimed)
                if reclaimed:
                    log.info("thumbnails.reclaimed", sources=reclaimed)
            except Exception:
                log.error("thumbnails.sweep_failed", exc_info=True)
            await asyncio.sleep(every_s)  # a schedule, not a wait for a reaction

    async def forget_stale_wants(self) -> int:
        """Requests for files no longer pending (a poll that read one pending as it was
        recorded asks after it is settled): gone, so that `wanted` is empty again when
        nobody waits, and the claim's pick reads nothing. How many went."""
        done: str = await self.pool.execute(
            """DELETE FROM thumbnails.wanted w WHERE NOT EXISTS (
                   SELECT 1 FROM thumbnails.files f
                   WHERE f.file_id = w.file_id AND f.state = 'pending')"""
        )
        return int(done.split()[-1])

    async def request_imported(
        self,
        file_id: uuid.UUID,
        kind: str,
        sha256: str,
        blob_key: str,
        object_ref: str | None,
        size: int,
        cause: Cause,
    ) -> None:
        """A file imported by reference whose picture is asked for the first time: requested
        now, by the one who asks, from what the catalog says it was imported from."""
        try:
            wanted = wanted_of(file_id, kind, sha256, blob_key, object_ref, size, cause)
        except ValueError:
            return  # not a sha256 the catalog would give: nothing to draw from
        if wanted is None:
            return
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self.request(conn, [wanted])
        except ConcurrencyConflict:
            pass  # requested at the same moment by another ask, or by the reaction
        await self.want(file_id)

    async def want(self, file_id: uuid.UUID) -> None:
        """Someone asked for this pending file's picture: it is drawn next (an idle runner
        is woken for it: an import's file is requested here, by no consumer batch, and a
        growing series waiting to settle may be claimed once asked for)."""
        added = await self.pool.execute(
            "INSERT INTO thumbnails.wanted (file_id) VALUES ($1) ON CONFLICT DO NOTHING",
            file_id,
        )
        if added != "INSERT 0 0":
            self.parts.moved.fire()

    async def thumbnail(self, file_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT state, renditions, code, reason FROM thumbnails.files WHERE file_id = $1",
            file_id,
        )
        return dict(row) if row is not None else None


# Files settled or released: their leases go, and any request for them (`wanted` must
# be empty when nobody waits: the claim's pick reads nothing then).
_SETTLED = """WITH unwanted AS (DELETE FROM thumbnails.wanted WHERE file_id = ANY($1::uuid[]))
DELETE FROM thumbnails.leases WHERE file_id = ANY($1::uuid[])"""

LEASES = """
CREATE TABLE IF NOT EXISTS thumbnails.leases (
    file_id uuid PRIMARY KEY,
    until timestamptz NOT NULL,
    attempts integer NOT NULL
);
-- Pending files whose picture someone asked for (one row each, gone once claimed).
CREATE TABLE IF NOT EXISTS thumbnails.wanted (
    file_id uuid PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now()
);
"""

# The runners' claim: `pick` chooses among pending files nobody holds. A file claimed
# leaves `wanted` (drawn again after a failure, it waits its turn). The claimed rows come
# back as they were locked (each file's latest version), with whether their source is
# settled already: one statement a batch. (A second one, a file's row `AND state =
# 'pending'` by id, was planned as a BitmapAnd with files_pending, reading every pending
# entry: 2.7 M index entries for 10,000 small uploads.) Whether a source is settled is a
# probe by key for each file claimed: as an EXISTS, the planner hashed the whole of
# `thumbnails.sources` for each claim (every source ever drawn: 5,000 rows, 0.3 ms, half
# way through 10,000 small uploads), which a scalar subquery is never made into. Only
# the columns the drawing and its record read come back (not the renditions, reasons,
# times and kinds of every row: decoded and copied for nothing, a claim at a time).
_CLAIM = """
WITH next AS (
    SELECT f.* FROM thumbnails.files f {pick}
    FOR UPDATE OF f SKIP LOCKED),
unwanted AS (DELETE FROM thumbnails.wanted w USING next WHERE w.file_id = next.file_id),
leased AS (
    INSERT INTO thumbnails.leases AS l (file_id, until, attempts)
    SELECT file_id, now() + $1::interval, 1 FROM next
    ON CONFLICT (file_id) DO UPDATE
    SET until = excluded.until, attempts = l.attempts + 1
    WHERE l.until <= now()
    RETURNING l.file_id, l.attempts)
SELECT next.file_id, next.source, next.blob_key, next.bytes, next.object_ref,
       next.request_id, next.correlation_id, leased.attempts,
       (SELECT true FROM thumbnails.sources s WHERE s.source = next.source LIMIT 1)
           IS NOT NULL AS known
FROM next JOIN leased USING (file_id)
ORDER BY next.requested_at"""
# The files this process's other runners hold ($2) are passed over before their leases
# are probed: with three runners, each claim walked past the two batches of 64 in hand
# ahead of it, a lease probe each, two thirds of the claim's buffer reads (19 a file
# claimed, against 6 with none in hand).
_FREE = """f.state = 'pending' AND f.file_id <> ALL($2::uuid[]) AND NOT EXISTS (
        SELECT 1 FROM thumbnails.leases l WHERE l.file_id = f.file_id AND l.until > now())"""
# Nobody asked (nearly always): the uncorrelated EXISTS is a one-time filter, so the
# pick reads nothing; without it the planner may walk every pending file probing
# `wanted` for each (1.7 M probes for 10,000 small uploads).
_WANTED_FIRST = f"""JOIN thumbnails.wanted w ON w.file_id = f.file_id
    WHERE EXISTS (SELECT 1 FROM thumbnails.wanted) AND {_FREE} ORDER BY w.at LIMIT {DRAW_BATCH}"""
# The LIMIT is written in, not a parameter: a generic plan (asyncpg's prepared statement
# after five runs) guesses a parameter's LIMIT at a tenth of the rows, and took a bitmap
# scan of every pending file and a sort for each claim (~1,000 entries a claim in a
# backlog of 10,000 small uploads) instead of reading files_pending in order.
# A series still growing waits until it settles, unless it has no picture yet (its first
# request) or someone asked for it (the pick above).
_OLDEST_FIRST = f"""WHERE {_FREE}
    AND (f.kind <> 'dicom_series' OR f.version = 1 OR f.requested_at <= now() - $3::interval)
    ORDER BY f.requested_at LIMIT {{limit}}"""
