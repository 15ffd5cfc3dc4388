"""The DICOM context's reaction to stored instances: read headers, admit, assemble, record.

A batch of stored instances is handled at once (an upload's come in
`ingest.DicomInstancesStored` pages, an import's and older ones as one
`ingest.DicomInstanceStored` each): every file's headers are read
(in a worker thread, headers only), then per folder the instances are admitted against the
series the folder already has, merged into them, and recorded in one transaction with the
read model: a new series is `SeriesAssembled` (its file id chosen here), a known one that
gained instances `SeriesExtended`, each followed by the instances it gained in
`SeriesInstancesAdded` pages of bounded size, and every instance ends accepted or
rejected in its job's `InstancesSettled` (one a batch, not one an instance). The blobs
of the batch's instances that joined no series are named in `InstanceBlobsLeft`, so that
the blob collector (in ingest) reclaims them once nothing else holds them.

Instances an import copied in name the manifest entry they came from: a series they
make takes the entry's metadata, and its title when it is the only series the entry's
instances of the batch make (`dicom.ImportEntryDescribed`, kept from the entry's
request, which comes first in the job's stream); their settlements name the entry too,
so ingest knows which series an entry became.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from services.dicom import domain, lean, reader, recent, slices
from services.dicom.memory import ByteBudget
from services.dicom.projections import instance_of
from services.dicom.projections import series as series_model
from shared.contracts import dicom as ev
from shared.contracts import limits
from shared.contracts.catalog import (
    FileDeleted,
    FileMoved,
    FilePurged,
    FileRestored,
    FilesRestored,
    UploadRejected,
)
from shared.contracts.envelope import (
    Cause,
    Change,
    Envelope,
    Event,
    _trusted,
    envelopes_of,
    now,
    random_ids,
)
from shared.contracts.ingest import (
    CloudObjectGone,
    DicomInstancesStored,
    DicomInstanceStored,
    ImportGroupRequested,
)
from shared.kit import db
from shared.kit.blobs import BlobStore, LocalBlobStore, StoreUnavailable
from shared.kit.db import Conn
from shared.kit.errors import Refused
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received
from shared.kit.reactions import ahead as reactions_ahead
from shared.kit.service import Handlers, Parts

T = TypeVar("T")


@dataclass(frozen=True)
class Part:
    """One stored file of an upload, as this context keeps it."""

    name: str
    blob_key: str
    sha256: str
    size: int
    # An object of a cloud-synced folder: its id (ingest's) and the position in ingest's
    # store of the event that stored it; a CloudObjectGone recorded after it takes the
    # instance out of its series.
    object_id: uuid.UUID | None = None
    object_position: int | None = None

    def instance_json(self, instance: domain.Instance) -> dict[str, Any]:
        """The instance as SeriesInstancesAdded carries it, in JSON's own types (its
        tuples as lists): the event's data is built from it as is, not dumped again."""
        facts: dict[str, Any] = {name: getattr(instance, name) for name in _INSTANCE_FIELDS}
        for name in _TUPLES:
            if facts[name] is not None:
                facts[name] = list(facts[name])
        # What dataclasses.asdict gives, without its deep copy: asdict was a tenth of
        # the service's samples end to end.
        facts["listed"] = dict(instance.listed)
        found = {
            "sop_uid": instance.sop_uid,
            "name": self.name,
            "blob_key": self.blob_key,
            "sha256": self.sha256,
            "size": self.size,
            "facts": facts,
        }
        if self.object_id is not None:
            found["object_id"] = str(self.object_id)
            found["object_position"] = self.object_position
        return found


_INSTANCE_FIELDS = tuple(f.name for f in dataclasses.fields(domain.Instance) if f.name != "listed")
_TUPLES = ("position", "orientation", "pixel_spacing")


def _made(
    event: type[Event],
    data: dict[str, Any],
    stream_id: str,
    version: int,
    cause: Cause,
    at: datetime,
    event_id: uuid.UUID,
) -> Envelope:
    """An envelope of `data` built in JSON's types already (what `event.model_dump(mode=
    "json")` gives, a unit test holds it so), not an event validated and dumped: the
    pages of a batch's instances and settlements, validated then walked again by the
    dump, were a third of the DICOM consumer's samples at 64x64 (2026-12-06)."""
    return _trusted(
        {
            "event_id": event_id,
            "type": event.type,
            "schema_version": event.version,
            "stream_id": stream_id,
            "stream_version": version,
            "occurred_at": at,
            "actor": cause.actor,
            "correlation_id": cause.correlation_id,
            "causation_id": cause.causation_id,
            "traceparent": cause.traceparent,
            "source": "",
            "position": 0,
            "data": data,
        }
    )


def _accepted(
    name: str, instance: domain.Instance, file_id: uuid.UUID, entry_id: uuid.UUID | None
) -> dict[str, Any]:
    """An `ev.Accepted` in its JSON form (its fields' order)."""
    return {
        "name": name,
        "sop_uid": instance.sop_uid,
        "series_uid": instance.series_uid,
        "file_id": str(file_id),
        "entry_id": None if entry_id is None else str(entry_id),
        "sop_class_uid": instance.listed.get("SOPClassUID"),
    }


# An instance stored by ingest: the event it came in (alone, or in a page of an upload's
# instances), the instance, and what reading its blob gave.
Stored = tuple[Received[Any], DicomInstanceStored]
Read = tuple[Received[Any], DicomInstanceStored, domain.Instance | domain.Rejected]
# ... and its place in that event (the n-th of a page).
Placed = tuple[Received[Any], int, DicomInstanceStored]

# Blobs read side by side. On a local store (the blobs are files already), each lane's
# headers are read READ_TOGETHER at a time in one worker thread: a thread hop an
# instance (a future, a submit, a wake-up, for a read of ~60 µs) was ~10% of the
# service's samples. A store that copies each blob to read it (S3) reads one a lane at a
# time: a group's copies would otherwise lie on the spool disk together.
READ_PARALLEL = 8
READ_TOGETHER = 16
# The lanes' threads, apart from asyncio's default pool: a lane of hostile files (each up
# to reader.MAX_SECONDS) must not hold the threads DICOMweb's reads and renders run on.
_READERS = concurrent.futures.ThreadPoolExecutor(READ_PARALLEL, thread_name_prefix="dicom-read")
# Instances read and assembled at once (each chunk recorded before the next is read, in the
# batch's one transaction): a batch of DicomInstancesStored pages (a backlog) may name tens
# of thousands, where it was at most the consumer's 10,000 events of one instance each.
ASSEMBLED_AT_ONCE = 10_000
# Synced objects' rows no copy can still be refused by (`forget_passed_objects`): at most
# this many of a table a statement, looked for this often. The store whose positions
# order an object's copies and its going.
FORGET_AT_ONCE = 1000
FORGET_EVERY_S = 600.0
COPIES_SOURCE = "ingest"
# A pass's watermark and the objects a dead letter holds (forget_bounds).
ForgetBounds = tuple[int, list[uuid.UUID]]


class _Stopped(Exception):
    """The batch reading a lane was cancelled: its thread stops between two files."""


async def read_all(
    blobs: BlobStore, keys: Sequence[str]
) -> list[domain.Instance | domain.Rejected]:
    """The instance in each stored blob, in order; a blob that cannot be read is rejected,
    not raised. (Other errors of the store, such as S3 being unreachable, fail the batch:
    retried.)"""
    gate = asyncio.Semaphore(READ_PARALLEL)
    together = READ_TOGETHER if isinstance(blobs, LocalBlobStore) else 1
    # A small batch is spread over all READ_PARALLEL lanes.
    size = max(1, min(together, -(-len(keys) // READ_PARALLEL)))
    groups = [keys[n : n + size] for n in range(0, len(keys), size)]
    done = await asyncio.gather(*(_read_group(blobs, group, gate) for group in groups))
    return [found for group in done for found in group]


async def _read_group(
    blobs: BlobStore, keys: Sequence[str], gate: asyncio.Semaphore
) -> list[domain.Instance | domain.Rejected]:
    async with gate:
        if isinstance(blobs, LocalBlobStore):
            return await _read_copies(blobs, keys)
        # A blob elsewhere (S3): its header from a ranged read of its first bytes, not a
        # copy of the whole (a 512x512 slice is 0.5 MB for a header of ~1 KiB), and a
        # compressed one's fragments by their item headers (up to 64). What that does
        # not settle is read from a whole copy, as every blob was before: more fragments,
        # the files the lean walk leaves to pydicom, every rejection.
        heads = await _in_lane(_read_heads, blobs, keys)
        rest = [key for key, found in zip(keys, heads, strict=True) if found is None]
        copied = iter(await _read_copies(blobs, rest) if rest else [])
        return [found if found is not None else next(copied) for found in heads]


async def _in_lane(read: Callable[..., T], *args: Any) -> T:
    """`read(*args, stop)` in a lane's thread; a cancelled batch stops it between files."""
    stop = threading.Event()
    reading = asyncio.get_running_loop().run_in_executor(
        _READERS, functools.partial(read, *args, stop)
    )
    try:
        return await reading
    except asyncio.CancelledError:
        stop.set()
        raise


async def _read_copies(
    blobs: BlobStore, keys: Sequence[str]
) -> list[domain.Instance | domain.Rejected]:
    try:
        async with contextlib.AsyncExitStack() as copies:
            paths: list[Path | domain.Rejected] = []
            for key in keys:
                try:
                    paths.append(await copies.enter_async_context(blobs.local_copy(key)))
                except StoreUnavailable:
                    raise  # the store, not the file: the batch fails, to be retried
                except (OSError, KeyError) as error:
                    paths.append(_unreadable(error))
            found = await _in_lane(_read_paths, paths)
    except StoreUnavailable:
        raise
    except (OSError, KeyError) as error:
        # A copy that could not be let go of (its spool not removed): that file is
        # rejected, as when it could not be read. Groups of more than one are of a
        # local store, whose blobs are not copies.
        if len(keys) == 1:
            return [_unreadable(error)]
        raise
    return found


def _read_heads(
    blobs: BlobStore, keys: Sequence[str], stop: threading.Event
) -> list[domain.Instance | None]:
    """Each blob's instance from its first bytes (`reader.read_head`), or None: read it
    whole. A blob missing or refused is None too, its copy then failing as before (one
    wording of `unreadable`); so is the store unreachable, its copy then failing the
    batch (`_read_copies`)."""
    out: list[domain.Instance | None] = []
    for key in keys:
        if stop.is_set():
            raise _Stopped
        try:
            head, size = blobs.read_head(key, lean.FIRST_BYTES)
            out.append(reader.read_head(head, size, functools.partial(blobs.read_at, key)))
        except (OSError, KeyError):
            out.append(None)
    return out


def _read_paths(
    paths: Sequence[Path | domain.Rejected], stop: threading.Event
) -> list[domain.Instance | domain.Rejected]:
    out: list[domain.Instance | domain.Rejected] = []
    for path in paths:
        if stop.is_set():
            raise _Stopped
        if isinstance(path, domain.Rejected):
            out.append(path)
            continue
        try:
            out.append(reader.read_instance(path))
        except (OSError, KeyError) as error:
            out.append(_unreadable(error))
    return out


def _unreadable(error: Exception) -> domain.Rejected:
    return domain.Rejected("unreadable", f"the stored file cannot be read: {type(error).__name__}")


async def lock_objects(conn: Conn, object_ids: Iterable[uuid.UUID]) -> None:
    """Until commit, no other transaction of this context stores or takes out the
    instances of these synced objects: an object's instance stored while its
    CloudObjectGone is handled elsewhere is seen by one of the two. After the folders'
    locks, in one order."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('dicom.object:' || o::text, 0))"
        " FROM unnest($1::uuid[]) AS o ORDER BY o",
        sorted(set(object_ids)),
    )


async def lock_folders(conn: Conn, folder_ids: Iterable[uuid.UUID]) -> None:
    """Until commit, no other transaction of this context changes these folders' series
    (replicas consume jobs of one folder side by side). In one order, so two batches
    cannot wait on each other."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('dicom.folder:' || f::text, 0))"
        " FROM unnest($1::uuid[]) AS f ORDER BY f",
        sorted(set(folder_ids)),
    )


# The read model's handlers are set-based over a run of one type: the batch's series
# events first, then their instance pages, then the settlements, so that each runs once a
# batch, not once a series (an upload of 200 instances over 10 series made 60 runs of
# SeriesInstancesAdded, ~10 ms each, half of a batch's transaction). Each stream keeps its
# order (a series' event before its pages, stable), and the projection ends the same.
_APPLIED_FIRST = {
    ev.SeriesAssembled.type: 0,
    ev.SeriesExtended.type: 0,
    ev.SeriesShrunk.type: 0,
    # An instance whose object's bytes changed leaves before it joins again.
    ev.SeriesInstancesRemoved.type: 1,
    ev.SeriesInstancesAdded.type: 2,
}


def _by_kind(out: Sequence[Envelope]) -> list[Envelope]:
    return sorted(out, key=lambda e: _APPLIED_FIRST.get(e.type, 3))


def _stored(
    batch: Sequence[Received[DicomInstanceStored] | Received[DicomInstancesStored]],
) -> list[Stored]:
    return [
        (e, s)
        for e in batch
        for s in (e.event.each() if isinstance(e.event, DicomInstancesStored) else [e.event])
    ]


def _placed(each: Sequence[Stored]) -> list[Placed]:
    """Each instance with its place in the event it came in (`ahead`'s key): numbered
    over the whole batch, before it is cut in chunks or a cancelled job's are left out."""
    out: list[Placed] = []
    last: uuid.UUID | None = None
    k = 0
    for e, s in each:
        k = k + 1 if e.event_id == last else 0
        last = e.event_id
        out.append((e, k, s))
    return out


async def _cancelled(conn: Conn | asyncpg.Pool, each: Sequence[Placed]) -> set[uuid.UUID]:
    return {
        r["job_id"]
        for r in await conn.fetch(
            "SELECT job_id FROM dicom.jobs WHERE job_id = ANY($1::uuid[]) AND cancelled",
            list({s.job_id for _, _, s in each}),
        )
    }


def _digest(parts: Sequence[Part]) -> str:
    return hashlib.sha256("\n".join(p.sha256 for p in parts).encode()).hexdigest()


def _described(
    series_uid: str,
    accepted: Sequence[tuple[Received[Any], DicomInstanceStored, domain.Instance]],
    entries: dict[uuid.UUID, tuple[str | None, dict[str, Any]]],
) -> tuple[str | None, dict[str, Any]]:
    """A new series' name and metadata: those of the import entry whose instances made it
    (the entry's title only when they made this one series of the batch); none when
    instances of no entry, or of several, made it."""
    made = {s.entry_id for _, s, r in accepted if r.series_uid == series_uid}
    if len(made) != 1 or None in made:
        return None, {}
    (entry_id,) = made
    assert entry_id is not None
    name, metadata = entries.get(entry_id, (None, {}))
    series_of_entry = {r.series_uid for _, s, r in accepted if s.entry_id == entry_id}
    return (name if len(series_of_entry) == 1 else None), dict(metadata)


_PART_COLUMNS = "sop_uid, name, blob_key, sha256, size, facts, object_id, object_position"


def _part_of(e: Received[Any], s: DicomInstanceStored) -> Part:
    if s.object_id is None:
        return Part(s.name, s.blob_key, s.sha256, s.size)
    return Part(s.name, s.blob_key, s.sha256, s.size, s.object_id, e.envelope.position)


def _part_of_row(row: Any) -> Part:
    return Part(
        row["name"],
        row["blob_key"],
        row["sha256"],
        row["size"],
        row["object_id"],
        row["object_position"],
    )


def _series_of(row: Any, members: Sequence[domain.Instance]) -> domain.Series:
    """A series row's series, from its instances' rows (none: every one left it)."""
    if not members:
        return domain.emptied(
            row["series_uid"], row["study_uid"], row["patient_id"], row["modality"]
        )
    (series,) = domain.assemble(members)
    return series


async def to_worker(work: Callable[..., T], *args: Any) -> T:
    """`work` in a worker thread; its caller cancelled (a caller's deadline), it still
    waits for the thread to end before it gives up: a thread cannot be stopped, and a
    gate its caller holds (the render gate: 4 instances' pixels in memory at once) must
    stay held while it draws."""
    running = asyncio.ensure_future(asyncio.to_thread(work, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


class Dicom(Handlers):
    def __init__(self, parts: Parts, blobs: BlobStore) -> None:
        super().__init__(parts)
        self.blobs = blobs
        # Slices drawn at once (each holds an instance's pixels in memory).
        self.render_gate = asyncio.Semaphore(4)
        # Frames held by WADO-RS answers until they are sent (api.py `frames`).
        self.frames_memory = ByteBudget(parts.settings.dicomweb_frames_memory_bytes)
        self.recent = recent.Recent()

    reactions = Reactions("dicom")

    @reactions.on(FileDeleted)
    @reactions.on(UploadRejected)
    @reactions.on(FileMoved)
    async def when_files_changed(
        self, conn: Conn, envelopes: Sequence[Received[FileDeleted | UploadRejected | FileMoved]]
    ) -> None:
        """A series' file is deleted (or was never registered): the series is released.
        Moved: the series follows it, unless the folder it went to already has a series of
        that SeriesInstanceUID; then the moved file is released (the one there stays)."""
        files = [e.event.file_id for e in envelopes]
        query = "SELECT * FROM dicom.series WHERE file_id = ANY($1::uuid[])"
        rows = await conn.fetch(query, files)
        if not rows:
            return  # not series files
        series_files = {r["file_id"] for r in rows}
        moved_to = [
            e.event.to_folder_id
            for e in envelopes
            if isinstance(e.event, FileMoved) and e.event.file_id in series_files
        ]
        # Folders first, as for uploads; then the rows again, now that they hold still.
        await lock_folders(conn, {*(r["folder_id"] for r in rows), *moved_to})
        rows = await conn.fetch(query + " FOR UPDATE", files)
        # Series by file id, as each event of the batch leaves it; None once released.
        mine: dict[uuid.UUID, dict[str, Any] | None] = {r["file_id"]: dict(r) for r in rows}
        places = {(r["folder_id"], r["series_uid"]) for r in rows}
        if moved_to:
            taken = await conn.fetch(
                "SELECT folder_id, series_uid FROM dicom.series WHERE folder_id = ANY($1::uuid[])",
                moved_to,
            )
            places |= {(r["folder_id"], r["series_uid"]) for r in taken}
        out: list[Envelope] = []
        for envelope in envelopes:
            row = mine.get(envelope.event.file_id)
            if row is None:
                continue
            folder_id, series_uid = row["folder_id"], row["series_uid"]
            event: ev.SeriesMoved | ev.SeriesReleased | ev.SeriesTrashed
            if isinstance(envelope.event, FileMoved):
                target = envelope.event.to_folder_id
                if target == folder_id:
                    continue
                if (target, series_uid) in places:
                    event = self._released(
                        row, "moved into a folder with the same series", file_gone=False
                    )
                else:
                    event = ev.SeriesMoved(
                        series_uid=series_uid,
                        file_id=row["file_id"],
                        from_folder_id=folder_id,
                        to_folder_id=target,
                    )
                    places.add((target, series_uid))
                    row["folder_id"] = target
            elif isinstance(envelope.event, FileDeleted) and envelope.event.trashed:
                event = ev.SeriesTrashed(
                    series_uid=series_uid, folder_id=folder_id, file_id=row["file_id"]
                )
            else:
                event = self._released(row, "its file was deleted")
            places.discard((folder_id, series_uid))
            row["version"] += 1
            out += envelopes_of(
                [Change(ev.series_stream(row["file_id"]), row["version"], event)],
                Cause.of(envelope),
            )
            if isinstance(event, ev.SeriesReleased | ev.SeriesTrashed):
                mine[envelope.event.file_id] = None
        if out:
            await series_model.apply(conn, out)
            await self.store.append(conn, out)

    @reactions.on(FileRestored)
    @reactions.on(FilesRestored)
    @reactions.on(FilePurged)
    async def when_files_left_the_trash(
        self,
        conn: Conn,
        envelopes: Sequence[Received[FileRestored | FilesRestored | FilePurged]],
    ) -> None:
        """Restored: the series is its folder's again, unless the folder has one of the
        same SeriesInstanceUID uploaded since (then the restored file stays whole, not
        extended). Purged: the series is released, its instances with it."""
        each = [
            (e, file_id)
            for e in envelopes
            for file_id in (
                e.event.file_ids if isinstance(e.event, FilesRestored) else [e.event.file_id]
            )
        ]
        files = [file_id for _, file_id in each]
        query = "SELECT * FROM dicom.detached_series WHERE file_id = ANY($1::uuid[])"
        rows = await conn.fetch(query, files)
        if not rows:
            return  # not series files
        await lock_folders(conn, {r["folder_id"] for r in rows})
        detached: dict[uuid.UUID, dict[str, Any] | None] = {
            r["file_id"]: dict(r) for r in await conn.fetch(query + " FOR UPDATE", files)
        }
        taken = {
            (r["folder_id"], r["series_uid"])
            for r in await conn.fetch(
                "SELECT folder_id, series_uid FROM dicom.series WHERE folder_id = ANY($1::uuid[])",
                list({r["folder_id"] for r in rows}),
            )
        }
        out: list[Envelope] = []
        for envelope, file_id in each:
            row = detached.get(file_id)
            if row is None:
                continue
            event: ev.SeriesRestored | ev.SeriesReleased
            if isinstance(envelope.event, FilePurged):
                event = self._released(row, "its file left the trash for good")
            elif (row["folder_id"], row["series_uid"]) in taken:
                continue
            else:
                event = ev.SeriesRestored(
                    series_uid=row["series_uid"], folder_id=row["folder_id"], file_id=row["file_id"]
                )
                taken.add((row["folder_id"], row["series_uid"]))
            row["version"] += 1
            out += envelopes_of(
                [Change(ev.series_stream(row["file_id"]), row["version"], event)],
                Cause.of(envelope),
            )
            detached[file_id] = None
        if out:
            await series_model.apply(conn, out)
            await self.store.append(conn, out)

    @staticmethod
    def _released(row: dict[str, Any], reason: str, *, file_gone: bool = True) -> ev.SeriesReleased:
        return ev.SeriesReleased(
            series_uid=row["series_uid"],
            folder_id=row["folder_id"],
            file_id=row["file_id"],
            reason=reason,
            file_gone=file_gone,
        )

    @reactions.on(ImportGroupRequested)
    async def when_import_entry_requested(
        self, conn: Conn, envelopes: Sequence[Received[ImportGroupRequested]]
    ) -> None:
        """An import's DICOM series entry with a title or metadata: kept until its
        instances come (later in the same job's stream), to name and describe the
        series they make."""
        described = {
            e.event.group_file_id: e
            for e in envelopes
            if e.event.kind == "dicom_series"
            and e.event.first == 0
            and (e.event.titled or e.event.metadata)
        }
        if not described:
            return
        known = {
            r["entry_id"]
            for r in await conn.fetch(
                "SELECT entry_id FROM dicom.import_entries WHERE entry_id = ANY($1::uuid[])",
                list(described),
            )
        }
        out = [
            envelope
            for entry_id, e in described.items()
            if entry_id not in known
            for envelope in envelopes_of(
                [
                    Change(
                        ev.entry_stream(entry_id),
                        1,
                        ev.ImportEntryDescribed(
                            entry_id=entry_id,
                            name=e.event.name if e.event.titled else None,
                            metadata=e.event.metadata,
                        ),
                    )
                ],
                Cause.of(e),
            )
        ]
        if out:
            await series_model.apply(conn, out)
            await self.store.append(conn, out)

    @reactions.on(DicomInstanceStored)
    @reactions.on(DicomInstancesStored)
    async def when_instances_stored(
        self,
        conn: Conn,
        batch: Sequence[Received[DicomInstanceStored] | Received[DicomInstancesStored]],
    ) -> None:
        each = _placed(_stored(batch))
        cancelled = await _cancelled(conn, each)
        for n in range(0, len(each), ASSEMBLED_AT_ONCE):
            chunk = each[n : n + ASSEMBLED_AT_ONCE]
            # A cancelled job's instances not read yet are skipped (what was settled stays).
            wanted = [(e, k, s) for e, k, s in chunk if s.job_id not in cancelled]
            out = await self._assemble(conn, wanted) if wanted else []
            await self._left(conn, [s.blob_key for _, _, s in chunk], out, Cause.of(chunk[0][0]))

    @reactions.ahead(DicomInstanceStored, DicomInstancesStored)
    async def read_ahead(
        self, batch: Sequence[Received[DicomInstanceStored] | Received[DicomInstancesStored]]
    ) -> dict[uuid.UUID, dict[int, domain.Instance | domain.Rejected]]:
        """The headers of the batch's first ASSEMBLED_AT_ONCE instances (the chunk the
        transaction assembles first; a backlog's others are read in it, a chunk at a time,
        so that a batch holds one chunk's headers), read before the transaction opens:
        it stayed open through the reads, 50-350 ms a batch of 200-600 instances loaded,
        holding a pooled connection, its snapshot and its inbox rows. By event id, then
        by the instance's place in its event. Still read before the transaction that
        records them commits; a blob that cannot be read is rejected there, as when it
        is read inside."""
        each = _placed(_stored(batch))[:ASSEMBLED_AT_ONCE]
        # A cancelled job's are not read (cancelled stays so: the transaction skips them).
        cancelled = await _cancelled(self.pool, each)
        wanted = [(e, k, s) for e, k, s in each if s.job_id not in cancelled]
        results = await read_all(self.blobs, [s.blob_key for _, _, s in wanted])
        made: dict[uuid.UUID, dict[int, domain.Instance | domain.Rejected]] = {}
        for (e, k, _), result in zip(wanted, results, strict=True):
            made.setdefault(e.event_id, {})[k] = result
        return made

    async def _assemble(self, conn: Conn, placed: Sequence[Placed]) -> list[Envelope]:
        each: list[Stored] = [(e, s) for e, _, s in placed]
        stored = [s for _, s in each]
        results = await self._read(placed)
        folders: dict[uuid.UUID, list[int]] = {}
        for n, s in enumerate(stored):
            folders.setdefault(s.folder_id, []).append(n)
        await lock_folders(conn, folders)
        results = await self._not_gone(conn, each, results)
        out: list[Envelope] = []
        replacing = await self._superseded(conn, each, folders, out)
        job_versions = await self._job_versions(conn, {s.job_id for s in stored})
        # An import's instances name their entry; an upload's none (no query for them).
        named = list({s.entry_id for s in stored if s.entry_id is not None})
        entries = {
            r["entry_id"]: (r["name"], r["metadata"])
            for r in (
                await conn.fetch(
                    "SELECT * FROM dicom.import_entries WHERE entry_id = ANY($1::uuid[])", named
                )
                if named
                else []
            )
        }
        for folder_id, indexes in folders.items():
            out += await self._folder(
                conn,
                folder_id,
                [(each[n][0], stored[n], results[n]) for n in indexes],
                job_versions,
                entries,
                replacing.get(folder_id, {}),
            )
        if out:
            await series_model.apply(conn, _by_kind(out))
            await self.store.append(conn, out)
        return out

    async def _not_gone(
        self, conn: Conn, each: Sequence[Stored], results: list[domain.Instance | domain.Rejected]
    ) -> list[domain.Instance | domain.Rejected]:
        """Copies of synced objects older (by ingest's store positions) than what is
        known of their object: than its CloudObjectGone (of another job's stream, so
        maybe handled first): refused, `object_gone`; than its instance here, or another
        copy in the batch (its bytes changed again): `object_changed`. Either would
        bring back bytes the bucket no longer holds."""
        objects = [s.object_id for _, s in each if s.object_id is not None]
        if not objects:
            return results
        await lock_objects(conn, objects)
        gone_at = {
            r["object_id"]: r["position"]
            for r in await conn.fetch(
                "SELECT object_id, position FROM dicom.objects_gone_first"
                " WHERE object_id = ANY($1::uuid[])",
                objects,
            )
        }
        # The newest copy read before (instances' rows: those stored before the table
        # was kept), then this batch's.
        last = {
            r["object_id"]: r["position"]
            for r in await conn.fetch(
                """SELECT object_id, max(position) AS position FROM (
                       SELECT object_id, position FROM dicom.objects_newest_copy
                       WHERE object_id = ANY($1::uuid[])
                       UNION ALL
                       SELECT object_id, object_position FROM dicom.instances
                       WHERE object_id = ANY($1::uuid[])) AS known
                   GROUP BY object_id""",
                objects,
            )
            if r["position"] is not None
        }
        newest: dict[uuid.UUID, int] = {}
        for e, s in each:
            if s.object_id is not None:
                newest[s.object_id] = max(newest.get(s.object_id, 0), e.envelope.position)
                last[s.object_id] = max(last.get(s.object_id, 0), e.envelope.position)
        await conn.execute(
            """INSERT INTO dicom.objects_newest_copy AS n (object_id, position)
               SELECT * FROM unnest($1::uuid[], $2::bigint[]) ORDER BY 1
               ON CONFLICT (object_id) DO UPDATE
               SET position = greatest(n.position, excluded.position)""",
            list(newest),
            list(newest.values()),
        )
        return [
            domain.Rejected(
                "object_gone",
                f"{s.name!r} was gone from its bucket before its instance was read",
            )
            if s.object_id in gone_at and e.envelope.position < gone_at[s.object_id]
            else domain.Rejected(
                "object_changed",
                f"{s.name!r} changed in its bucket again before its instance was read",
            )
            if s.object_id is not None and e.envelope.position < last[s.object_id]
            else result
            for (e, s), result in zip(each, results, strict=True)
        ]

    async def _superseded(
        self,
        conn: Conn,
        each: Sequence[Stored],
        folders: Iterable[uuid.UUID],
        out: list[Envelope],
    ) -> dict[uuid.UUID, dict[str, list[tuple[str, Received[Any]]]]]:
        """Instances of synced objects whose bytes changed (stored again, later by
        ingest's positions): the old instance leaves its series, and the new bytes
        arrive as any instance does (the same SOP Instance UID in the same series
        replaces it; another, or bytes not DICOM, are an instance gone plus a new
        arrival). Those of a series of the batch's folders: by folder, series and SOP
        Instance UID, each with the store replacing it (the cause of its leaving), for
        `_folder` to take out before it merges; others (a series file moved elsewhere,
        or in the trash) shrink here, into `out`."""
        stores: dict[uuid.UUID, Received[Any]] = {}
        for e, s in each:
            if s.object_id is not None and (
                s.object_id not in stores
                or stores[s.object_id].envelope.position < e.envelope.position
            ):
                stores[s.object_id] = e
        if not stores:
            return {}
        rows = await conn.fetch(
            """SELECT i.file_id, i.sop_uid, i.object_id, i.object_position, s.folder_id,
                      s.series_uid
               FROM dicom.instances i LEFT JOIN dicom.series s ON s.file_id = i.file_id
               WHERE i.object_id = ANY($1::uuid[])""",
            list(stores),
        )
        here = set(folders)
        replacing: dict[uuid.UUID, dict[str, list[tuple[str, Received[Any]]]]] = {}
        elsewhere: dict[uuid.UUID, list[tuple[str, Received[Any]]]] = {}
        for r in rows:
            store = stores[r["object_id"]]
            if (r["object_position"] or 0) >= store.envelope.position:
                continue  # stored by this event already (a batch applied again), or later
            if r["folder_id"] in here:
                by_series = replacing.setdefault(r["folder_id"], {})
                by_series.setdefault(r["series_uid"], []).append((r["sop_uid"], store))
            else:
                elsewhere.setdefault(r["file_id"], []).append((r["sop_uid"], store))
        shrunk = []
        for file_id, left in sorted(elsewhere.items()):
            shrunk += await self._shrunk(conn, file_id, left)
        out += shrunk
        return replacing

    @reactions.on(CloudObjectGone)
    async def when_synced_objects_gone(
        self, conn: Conn, envelopes: Sequence[Received[CloudObjectGone]]
    ) -> None:
        """DICOM objects gone from a synced bucket: each one's instance leaves its series
        (`SeriesShrunk`, then the instances it lost in `SeriesInstancesRemoved` pages,
        whose blobs the collector may then reclaim); a series left with none is its
        file's tombstone (the catalog's). Only an instance stored before its object went
        (ingest's store positions): one stored since (the object came back) stays. Each
        gone is remembered, whether or not an instance of it is here: a copy stored
        before it may still come (its DicomInstanceStored is of another job's stream,
        maybe behind; the object's first, or a newer one of bytes changed), and is
        refused then."""
        gone = {e.event.file_id: e for e in envelopes if e.event.dicom}
        if not gone:
            return
        query = f"""SELECT file_id, {_PART_COLUMNS} FROM dicom.instances
                    WHERE object_id = ANY($1::uuid[])"""
        files = list({r["file_id"] for r in await conn.fetch(query, list(gone))})
        await lock_folders(
            conn,
            [
                r["folder_id"]
                for r in await conn.fetch(
                    """SELECT folder_id FROM dicom.series WHERE file_id = ANY($1::uuid[])
                       UNION SELECT folder_id FROM dicom.detached_series
                       WHERE file_id = ANY($1::uuid[])""",
                    files,
                )
            ],
        )
        await lock_objects(conn, gone)
        found = await conn.fetch(query, list(gone))
        positions = sorted((o, e.envelope.position) for o, e in gone.items())
        await conn.execute(
            """INSERT INTO dicom.objects_gone_first AS g (object_id, position)
               SELECT * FROM unnest($1::uuid[], $2::bigint[])
               ON CONFLICT (object_id) DO UPDATE
               SET position = greatest(g.position, excluded.position)""",
            [o for o, _ in positions],
            [p for _, p in positions],
        )
        taken: dict[uuid.UUID, list[tuple[str, Received[CloudObjectGone]]]] = {}
        for r in found:
            went = gone[r["object_id"]]
            if (r["object_position"] or 0) < went.envelope.position:
                taken.setdefault(r["file_id"], []).append((r["sop_uid"], went))
        out: list[Envelope] = []
        for file_id, left in sorted(taken.items()):
            out += await self._shrunk(conn, file_id, left)
        if out:
            await series_model.apply(conn, out)
            await self.store.append(conn, out)

    async def forget_passed_objects(
        self, limit: int = FORGET_AT_ONCE, bounds: ForgetBounds | None = None
    ) -> int:
        """Rows of dicom.objects_gone_first and dicom.objects_newest_copy that can refuse
        no copy any more, up to `limit` of each; how many went. A row refuses the copies
        of its object stored before its position (ingest's store): once this consumer
        has handled every ingest event below it (its watermark: applied or
        dead-lettered, and its inbox drops one delivered again) and no dead-lettered
        copy of its object may be replayed, none can come. Rows held by another
        transaction (a batch moving the row on, another replica forgetting) are passed
        over. `bounds` read once serve a pass's rounds: a dead letter made later is
        above the watermark read, so it holds no row at or below it."""
        async with self.pool.acquire() as conn:
            mark, held = bounds or await self.forget_bounds(conn)
            gone = 0
            for table in ("dicom.objects_gone_first", "dicom.objects_newest_copy"):
                done = await conn.execute(
                    f"""DELETE FROM {table} WHERE object_id IN (
                            SELECT t.object_id FROM {table} t
                            WHERE t.position <= $1::bigint + 1
                              AND NOT (t.object_id = ANY($2::uuid[]))
                            ORDER BY t.position LIMIT $3 FOR UPDATE OF t SKIP LOCKED)""",
                    mark,
                    held,
                    limit,
                )
                gone += int(done.split()[-1])
        return gone

    async def forget_bounds(self, conn: Conn) -> ForgetBounds:
        """The consumer's ingest watermark, then the objects a dead letter may still
        bring back (read apart: joined into the DELETE, a few thousand made PostgreSQL
        sort the whole table instead of walking its position index; a row of one is
        kept whatever its position, until the dead letter is replayed or refused)."""
        inbox = self.parts.inbox
        mark = await conn.fetchval(
            f"""SELECT position FROM {inbox.schema}.watermarks
                WHERE consumer = $1 AND source = $2""",
            inbox.consumer,
            COPIES_SOURCE,
        )
        held = await conn.fetchval(
            f"""SELECT coalesce(array_agg(DISTINCT d.envelope->'data'->>'object_id'), '{{}}')
                FROM {inbox.schema}.dead_letters d
                WHERE d.consumer = $1 AND d.source = $2 AND d.type = $3
                  AND d.status <> 'replayed'""",
            inbox.consumer,
            COPIES_SOURCE,
            # A page of parts (DicomInstancesStored) is an upload's: no object.
            DicomInstanceStored.type,
        )
        return mark or 0, _uuids(held)

    async def forget_passed_objects_forever(self, every_s: float = FORGET_EVERY_S) -> None:
        """`forget_passed_objects` until none is left, then again every `every_s`."""
        while True:
            try:
                async with self.pool.acquire() as conn:
                    bounds = await self.forget_bounds(conn)
                while (gone := await self.forget_passed_objects(bounds=bounds)) > 0:
                    log.info("dicom.objects_forgotten", rows=gone)
            except Exception:
                log.error("dicom.objects_forget_failed", exc_info=True)
            await asyncio.sleep(every_s)  # a schedule, not a wait for a reaction

    async def _shrunk(
        self, conn: Conn, file_id: uuid.UUID, left: Sequence[tuple[str, Received[Any]]]
    ) -> list[Envelope]:
        """The series of this file without these instances: SeriesShrunk and its pages."""
        row = await conn.fetchrow(
            "SELECT * FROM dicom.series WHERE file_id = $1 FOR UPDATE", file_id
        ) or await conn.fetchrow(
            "SELECT * FROM dicom.detached_series WHERE file_id = $1 FOR UPDATE", file_id
        )
        if row is None:
            return []
        rows = await conn.fetch(
            f"""SELECT {_PART_COLUMNS} FROM dicom.instances WHERE file_id = $1
                ORDER BY slice_key""",
            file_id,
        )
        parts = {r["sop_uid"]: _part_of_row(r) for r in rows}
        series = dataclasses.replace(
            _series_of(row, [instance_of(r["facts"]) for r in rows]),
            study_uid=row["study_uid"],
            patient_id=row["patient_id"],
            modality=row["modality"],
        )
        now = domain.without(series, [uid for uid, _ in left])
        kept = set(now.sop_uids)
        removed = [
            {"sop_uid": uid, "blob_key": parts[uid].blob_key}
            for uid in series.sop_uids
            if uid not in kept
        ]
        if not removed:
            return []
        return self._shrinking(now, row, parts, removed, left[0][1])

    def _shrinking(
        self,
        now: domain.Series,
        row: Any,
        parts: dict[str, Part],
        removed: list[dict[str, Any]],
        cause: Received[Any],
    ) -> list[Envelope]:
        """SeriesShrunk (the series `now`, without `removed`) and its pages."""
        file_id = row["file_id"]
        members = [parts[uid] for uid in now.sop_uids]
        stream, version = ev.series_stream(file_id), row["version"]
        changes = [
            Change(
                stream,
                version + 1,
                ev.SeriesShrunk(
                    **self._facts(now, row["folder_id"], file_id, members, _digest(members))
                ),
            )
        ]
        for n, page in enumerate(limits.pages(removed, limits.json_size), start=2):
            changes.append(
                Change(
                    stream,
                    version + n,
                    ev.SeriesInstancesRemoved(
                        series_uid=row["series_uid"], file_id=file_id, instances=page
                    ),
                )
            )
        return envelopes_of(changes, Cause.of(cause))

    async def _read(self, placed: Sequence[Placed]) -> list[domain.Instance | domain.Rejected]:
        """Each instance's headers: as read ahead of the transaction, or now."""
        found: list[domain.Instance | domain.Rejected | None] = []
        for e, k, _ in placed:
            made = reactions_ahead(e.event_id)
            found.append(made.get(k) if made is not None else None)
        missing = [n for n, result in enumerate(found) if result is None]
        if missing:
            read = await read_all(self.blobs, [placed[n][2].blob_key for n in missing])
            for n, result in zip(missing, read, strict=True):
                found[n] = result
        return [result for result in found if result is not None]

    async def _left(
        self, conn: Conn, stored: list[str], out: Sequence[Envelope], cause: Cause
    ) -> None:
        """Record the blobs of this batch's instances that joined no series (what was
        stored, less what the series pages added), so the collector may reclaim them."""
        added = Counter(
            i["blob_key"]
            for e in out
            if e.type == ev.SeriesInstancesAdded.type
            for i in e.data["instances"]
        )
        left = list((Counter(stored) - added).elements())
        if not left:
            return
        changes = [
            Change(f"dicom-left-{uuid.uuid4()}", 1, ev.InstanceBlobsLeft(blob_keys=page))
            for page in (
                left[i : i + ev.LEFT_PER_EVENT] for i in range(0, len(left), ev.LEFT_PER_EVENT)
            )
        ]
        await self.store.append(conn, envelopes_of(changes, cause))

    async def _job_versions(self, conn: Conn, jobs: set[uuid.UUID]) -> dict[uuid.UUID, int]:
        rows = await conn.fetch(
            "SELECT job_id, version FROM dicom.jobs WHERE job_id = ANY($1::uuid[]) FOR UPDATE",
            list(jobs),
        )
        versions = {job: 0 for job in jobs}
        versions.update({r["job_id"]: r["version"] for r in rows})
        return versions

    async def _known(
        self, conn: Conn, folder_id: uuid.UUID
    ) -> tuple[dict[str, domain.Series], dict[str, asyncpg.Record], dict[str, Part]]:
        """The folder's series, their rows, and the stored part of each known instance."""
        rows = await conn.fetch(
            "SELECT * FROM dicom.series WHERE folder_id = $1 FOR UPDATE", folder_id
        )
        by_file = {r["file_id"]: r for r in rows}
        parts: dict[str, Part] = {}
        assembled: dict[uuid.UUID, domain.Series] = {}
        for file_id, row in by_file.items():
            if (remembered := self.recent.get(file_id, row["sha256"])) is not None:
                assembled[file_id] = remembered.series
                parts.update(remembered.parts)
        instances = await conn.fetch(
            f"""SELECT file_id, {_PART_COLUMNS}
               FROM dicom.instances WHERE file_id = ANY($1::uuid[]) ORDER BY file_id, slice_key""",
            [file_id for file_id in by_file if file_id not in assembled],
        )
        members: dict[uuid.UUID, list[domain.Instance]] = {}
        for i in instances:
            members.setdefault(i["file_id"], []).append(instance_of(i["facts"]))
            parts[i["sop_uid"]] = _part_of_row(i)
        known: dict[str, domain.Series] = {}
        for file_id, row in by_file.items():
            if file_id not in assembled:
                assembled[file_id] = _series_of(row, members.get(file_id, []))
                if row["sha256"] is not None:
                    self._remember(file_id, row["sha256"], assembled[file_id], parts)
            known[row["series_uid"]] = dataclasses.replace(
                assembled[file_id],
                study_uid=row["study_uid"],
                patient_id=row["patient_id"],
                modality=row["modality"],
            )
        return known, {r["series_uid"]: r for r in rows}, parts

    def _remember(
        self, file_id: uuid.UUID, sha256: str, series: domain.Series, parts: dict[str, Part]
    ) -> None:
        mine = {uid: parts[uid] for uid in series.sop_uids}
        self.recent.put(file_id, recent.Remembered(sha256, series, mine))

    async def _folder(
        self,
        conn: Conn,
        folder_id: uuid.UUID,
        items: Sequence[Read],
        job_versions: dict[uuid.UUID, int],
        entries: dict[uuid.UUID, tuple[str | None, dict[str, Any]]],
        replacing: dict[str, list[tuple[str, Received[Any]]]],
    ) -> list[Envelope]:
        known, rows, parts = await self._known(conn, folder_id)
        # Instances whose objects' bytes changed leave their series first (`_superseded`).
        removed: dict[str, list[dict[str, Any]]] = {}
        for series_uid, replaced in replacing.items():
            if series_uid not in known:
                continue
            less = domain.without(known[series_uid], [uid for uid, _ in replaced])
            kept = set(less.sop_uids)
            removed[series_uid] = [
                {"sop_uid": uid, "blob_key": parts.pop(uid).blob_key}
                for uid in known[series_uid].sop_uids
                if uid not in kept
            ]
            known[series_uid] = less
        read_ok = [(e, s, r) for e, s, r in items if isinstance(r, domain.Instance)]
        admission = domain.admit([r for _, _, r in read_ok], known.values())
        refused = {id(f.instance): f.rejected for f in admission.refused}
        accepted = [(e, s, r) for e, s, r in read_ok if id(r) not in refused]
        for e, s, r in accepted:
            parts.setdefault(r.sop_uid, _part_of(e, s))
        merged = domain.merge(
            [
                known[uid]
                for uid in dict.fromkeys(r.series_uid for _, _, r in accepted)
                if uid in known
            ],
            [r for _, _, r in accepted],
        )
        out: list[Envelope] = []
        at = now()
        file_ids: dict[str, uuid.UUID] = {}
        merged_uids = {series.series_uid for series in merged}
        for series_uid, gone in removed.items():
            if series_uid not in merged_uids:
                # Nothing joined it again: it shrank, caused by the store replacing its
                # first instance that left (maybe of another folder than this one's).
                cause = replacing[series_uid][0][1]
                out += self._shrinking(known[series_uid], rows[series_uid], parts, gone, cause)
        for series in merged:
            row = rows.get(series.series_uid)
            if row is not None:
                file_ids[series.series_uid] = row["file_id"]
                if (
                    series.sop_uids == known[series.series_uid].sop_uids
                    and series.series_uid not in removed
                ):
                    continue  # only instances it already had
            else:
                file_ids[series.series_uid] = uuid.uuid4()
            file_id = file_ids[series.series_uid]
            members = [parts[uid] for uid in series.sop_uids]
            had = set(known[series.series_uid].sop_uids) if row is not None else set()
            digest = _digest(members)
            self._remember(file_id, digest, series, parts)
            event: ev.SeriesAssembled | ev.SeriesExtended
            if row is not None:
                event = ev.SeriesExtended(
                    **self._facts(series, folder_id, file_id, members, digest)
                )
            else:
                name, metadata = _described(series.series_uid, accepted, entries)
                event = ev.SeriesAssembled(
                    **self._facts(series, folder_id, file_id, members, digest),
                    name=name,
                    metadata=metadata,
                )
            added = [
                part.instance_json(instance)
                for part, instance in zip(members, series.instances, strict=True)
                if instance.sop_uid not in had
            ]
            version = row["version"] if row is not None else 0
            stream = ev.series_stream(file_id)
            # The series is caused by the first stored instance that joined it here.
            first = next(e for e, _, r in accepted if r.series_uid == series.series_uid)
            caused = Cause.of(first)
            changes: list[Change] = [Change(stream, version + 1, event)]
            for page in limits.pages(removed.get(series.series_uid, []), limits.json_size):
                changes.append(
                    Change(
                        stream,
                        version + len(changes) + 1,
                        ev.SeriesInstancesRemoved(
                            series_uid=series.series_uid, file_id=file_id, instances=page
                        ),
                    )
                )
            out += envelopes_of(changes, caused, at)
            pages = list(limits.pages(added, limits.json_size))
            for n, (page, event_id) in enumerate(
                zip(pages, random_ids(len(pages)), strict=True), start=len(changes) + 1
            ):
                data = {"series_uid": series.series_uid, "file_id": str(file_id), "instances": page}
                out.append(
                    _made(ev.SeriesInstancesAdded, data, stream, version + n, caused, at, event_id)
                )
        out += self._settled(folder_id, items, refused, file_ids, job_versions, at)
        return out

    @staticmethod
    def _facts(
        series: domain.Series,
        folder_id: uuid.UUID,
        file_id: uuid.UUID,
        members: list[Part],
        digest: str,
    ) -> dict[str, Any]:
        """What SeriesAssembled and SeriesExtended both say of the series as it now is."""
        facts = series.facts()
        return {
            "series_uid": series.series_uid,
            "folder_id": folder_id,
            "file_id": file_id,
            "study_uid": series.study_uid,
            "patient_id": series.patient_id,
            "modality": series.modality,
            "renderable_3d": series.renderable_3d,
            "missing_3d_tags": facts["missing_3d_tags"],
            "instance_count": len(members),
            # A series whose instances all left (SeriesShrunk) shows none.
            "first_blob_key": members[0].blob_key if members else None,
            "middle_blob_key": members[len(members) // 2].blob_key if members else None,
            "middle_sha256": members[len(members) // 2].sha256 if members else None,
            "size": sum(p.size for p in members),
            "sha256": digest,
        }

    @staticmethod
    def _settled(
        folder_id: uuid.UUID,
        items: Sequence[Read],
        refused: dict[int, domain.Rejected],
        file_ids: dict[str, uuid.UUID],
        job_versions: dict[uuid.UUID, int],
        at: datetime,
    ) -> list[Envelope]:
        """Every instance of the batch accepted into its series file or rejected, in its
        job's InstancesSettled pages."""
        out: list[Envelope] = []
        # Each outcome in its JSON form, and whether it is an acceptance.
        settled: dict[uuid.UUID, list[tuple[bool, dict[str, Any], Received[Any]]]] = {}
        for envelope, s, result in items:
            problem = result if isinstance(result, domain.Rejected) else refused.get(id(result))
            if problem is not None:
                # Rare: validated as before (its details are the reader's, any values).
                outcome = ev.Rejected(
                    name=s.name,
                    code=problem.code,
                    message=problem.message,
                    details=dict(problem.details),
                ).model_dump(mode="json")
            else:
                assert isinstance(result, domain.Instance)
                outcome = _accepted(s.name, result, file_ids[result.series_uid], s.entry_id)
            settled.setdefault(s.job_id, []).append((problem is None, outcome, envelope))
        folder = str(folder_id)
        for job_id, outcomes in settled.items():
            # Caused by the job's first stored instance in this batch (one upload).
            job_cause = Cause.of(outcomes[0][2])
            pages = list(limits.pages(outcomes, lambda o: limits.json_size(o[1])))
            for part, event_id in zip(pages, random_ids(len(pages)), strict=True):
                job_versions[job_id] += 1
                data = {
                    "job_id": str(job_id),
                    "folder_id": folder,
                    "accepted": [o for ok, o, _ in part if ok],
                    "rejected": [o for ok, o, _ in part if not ok],
                }
                out.append(
                    _made(
                        ev.InstancesSettled,
                        data,
                        ev.job_stream(job_id),
                        job_versions[job_id],
                        job_cause,
                        at,
                        event_id,
                    )
                )
        return out

    async def slice_image(self, file_id: uuid.UUID, index: int) -> tuple[bytes, str]:
        """A slice of a series drawn as a PNG, and its ETag (the instance's hash)."""
        row = await self.pool.fetchrow(
            """SELECT blob_key, sha256, size FROM dicom.instances WHERE file_id = $1
               ORDER BY slice_key OFFSET $2 LIMIT 1""",
            file_id,
            index,
        )
        if row is None:
            raise Refused(404, "not_found", f"series {file_id} has no slice {index}")
        png = await self.draw(row["blob_key"], row["size"])
        return png, f"{row['sha256'][:32]}-{index}"

    async def draw(self, blob_key: str, size: int, frame: int = 0) -> bytes:
        """Frame `frame` (0 first) of a stored instance as a PNG, drawn in a worker
        (slices.py): a local store's blob read in place, an S3 blob by ranged reads of
        this process (its header and the frame's bytes when uncompressed), never copied
        whole to a spool first."""
        async with self.render_gate:
            if isinstance(self.blobs, LocalBlobStore):
                async with self.blobs.local_copy(blob_key) as path:
                    return await to_worker(slices.drawn, path, frame)
            read_at = functools.partial(self.blobs.read_at, blob_key)
            return await to_worker(slices.drawn_by_range, read_at, size, frame)

    async def job(
        self, job_id: uuid.UUID, files_from: int = 0, errors_from: int = 0, limit: int = 1000
    ) -> dict[str, Any]:
        """The job's account: how many settled, and a page of its series files and of
        its errors (`limit` of each, from the given places), with how many there are."""
        # Errors are numbered from 1 without gaps (projections.py): the `errors_from`
        # first are those at positions up to it, and the last position is the count.
        # Files too, numbered as the job listed them (projections.py).
        row = await self.pool.fetchrow(
            """SELECT done, cancelled, file_count,
                      (SELECT coalesce(max(position), 0) FROM dicom.job_errors
                       WHERE job_id = $1) AS error_count,
                      (SELECT coalesce(jsonb_agg(f.file_id ORDER BY f.position), '[]')
                       FROM (SELECT file_id, position FROM dicom.job_files
                             WHERE job_id = $1 AND position > $2
                             ORDER BY position LIMIT $4) AS f) AS files,
                      (SELECT coalesce(jsonb_agg(e.error ORDER BY e.position), '[]')
                       FROM (SELECT error, position FROM dicom.job_errors
                             WHERE job_id = $1 AND position > $3
                             ORDER BY position LIMIT $4) AS e) AS errors,
                      (SELECT coalesce(max(position), 0) FROM dicom.events
                       WHERE stream_id = $5) AS position
               FROM dicom.jobs WHERE job_id = $1""",
            job_id,
            files_from,
            errors_from,
            limit,
            ev.job_stream(job_id),
        )
        if row is None:
            return {
                "done": 0,
                "file_ids": [],
                "errors": [],
                "file_count": 0,
                "error_count": 0,
                "cancelled": False,
                "position": 0,
            }
        return {
            # The store position of the job's last settlement: its series' events come
            # before it, so a reader caught up to it has the series files as the account
            # counts them (the gateway waits for the catalog to reach it, no further).
            "position": row["position"],
            "done": row["done"],
            "file_ids": row["files"],
            "errors": row["errors"],
            "file_count": row["file_count"],
            "error_count": row["error_count"],
            "cancelled": row["cancelled"],
        }

    async def settled(self, job_id: uuid.UUID) -> dict[str, Any]:
        """The job's instances so far: each accepted (its SOP Instance UID and series) or
        rejected (why), from the job's own stream, for a STOW-RS answer."""
        accepted: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        for envelope in await self.store.read_stream(self.pool, ev.job_stream(job_id)):
            if envelope.type == ev.InstancesSettled.type:
                event = ev.InstancesSettled.model_validate(envelope.data)
                accepted += [a.model_dump(mode="json") for a in event.accepted]
                rejected += [r.model_dump(mode="json") for r in event.rejected]
        # The client is told its instances are stored: durable first (the consumer's
        # transaction that settled them flushes just after its commit, kit/db.py).
        await db.flush(self.pool)
        return {"accepted": accepted, "rejected": rejected}

    async def cancel(self, cause: Cause, job_id: uuid.UUID) -> int:
        """`POST /v1/jobs/{id}/cancel` of a DICOM job (the gateway checked the right):
        its instances not read yet are skipped from now on. Again: nothing more."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT version, cancelled FROM dicom.jobs WHERE job_id = $1 FOR UPDATE", job_id
            )
            if row is not None and row["cancelled"]:
                return 0
            version = row["version"] if row is not None else 0
            out = envelopes_of(
                [Change(ev.job_stream(job_id), version + 1, ev.JobCancelled(job_id=job_id))],
                cause,
            )
            await series_model.apply(conn, out)
            return await self.store.append(conn, out)


def _uuids(texts: Sequence[str | None]) -> list[uuid.UUID]:
    """The ids among these texts (a dead letter's envelope may hold anything)."""
    out = []
    for text in texts:
        with contextlib.suppress(TypeError, ValueError):
            out.append(uuid.UUID(text))
    return out
