"""What an import job records, pure: its stream, and its state read back from it.

The job's stream: ImportJobStarted, the named objects in chunks
(ImportObjectsRequested), the image groups and sequences named (ImportGroupRequested,
their frames' keys in pages), then per batch the files stored (FileContentStored, with
source {type: "cloud", integration_id, key}) and the objects refused
(FileContentRejected, `details.key`), the prefix's listing as it grows
(ImportObjectsListed), each group read whole (ImageGroupImagesStored pages and
ImageGroupStored, or one FileContentRejected with `details.group_file_id`, or one
ImportObjectSkipped or ImportedMetadataReplaced with `group_file_id`), and
UploadJobFinished (or ImportJobFailed). `fold` reads
it back, so a job interrupted by a restart resumes where its last batch ended.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.ingest.imports.domain.requests import ImportGroup, ImportRequest, Rejection
from shared.contracts import ingest as ev
from shared.contracts import limits, rules
from shared.contracts.catalog import Media, Source
from shared.contracts.envelope import (
    Cause,
    Change,
    Envelope,
    Event,
    _trusted,
    appended,
    envelopes_of,
    now,
)

# An ImportObjectsRequested event stays well under a broker's message size limit.
MAX_CHUNK_BYTES = 256 * 1024
# Kinds an object may have (what the sniffer accepts).
ACCEPTED_KINDS = ("image", "video", "pdf", "audio", "text", "nifti")
# A reference file has no blob: its key says so and names nothing in the blob store.
REFERENCE_PREFIX = "ref:"


def reference_key(file_id: uuid.UUID) -> str:
    return f"{REFERENCE_PREFIX}{file_id}"


def is_reference(blob_key: str) -> bool:
    return blob_key.startswith(REFERENCE_PREFIX)


def file_name(obj: ev.ImportObject) -> str:
    """The file's name: the manifest's title, else the last part of the key."""
    return obj.title or obj.key.rstrip("/").rsplit("/", 1)[-1]


def check_object(obj: ev.ImportObject) -> Rejection | None:
    """What rules an object out before its bytes are read (its name), or None."""
    name = file_name(obj)
    problem = rules.name_problem(name, "file name")
    if problem or obj.key.endswith("/"):
        return rejection(
            obj,
            "invalid_name",
            problem or f"{obj.key!r} is a folder marker, not an object to import",
        )
    return None


def check_kind(obj: ev.ImportObject, kind: str) -> Rejection | None:
    """An object whose bytes are `kind`: refused if the manifest said otherwise."""
    if obj.kind is not None and obj.kind != kind:
        return rejection(
            obj,
            "kind_mismatch",
            f"{obj.key!r} was listed as {obj.kind} but its bytes are {kind}",
            {"listed_as": obj.kind, "kind": kind},
        )
    return None


def rejection(
    obj: ev.ImportObject, code: str, message: str, details: dict[str, Any] | None = None
) -> Rejection:
    return Rejection(obj.key, code, message, {"key": obj.key, **(details or {})})


@dataclass(frozen=True)
class Found:
    """An object read once: hashed, sniffed, its media facts taken; bytes not kept."""

    file_id: uuid.UUID
    obj: ev.ImportObject
    kind: str
    mime_type: str
    size: int
    sha256: str
    media: Media
    # Its ETag as the read answered it (FileContentStored's `etag`).
    etag: str | None = None


def chunks(objects: Sequence[ev.ImportObject]) -> list[list[ev.ImportObject]]:
    """The objects in runs whose JSON stays under MAX_CHUNK_BYTES (at least one each)."""
    out: list[list[ev.ImportObject]] = []
    run: list[ev.ImportObject] = []
    size = 0
    for o in objects:
        weight = 64 + len(o.key.encode()) + len((o.title or "").encode())
        weight += rules.metadata_size(o.metadata) if o.metadata else 0
        if run and size + weight > MAX_CHUNK_BYTES:
            out.append(run)
            run, size = [], 0
        run.append(o)
        size += weight
    if run:
        out.append(run)
    return out


Matched = ev.ImportObjectSkipped | ev.ImportedMetadataReplaced


def matched(state: JobState, obj: ev.ImportObject, file_ids: Sequence[uuid.UUID]) -> Matched | None:
    """An object already imported into the job's folder through its integration (as
    `file_ids`): its metadata replaced (`upsert_metadata`, when the entry gives some),
    or skipped (`skip_duplicate_urls`); None: it is read and becomes a file."""
    if not file_ids:
        return None
    if state.upsert_metadata and obj.metadata:
        return ev.ImportedMetadataReplaced(
            job_id=state.job_id, key=obj.key, file_ids=list(file_ids), metadata=obj.metadata
        )
    if state.skip_duplicate_urls:
        return ev.ImportObjectSkipped(job_id=state.job_id, key=obj.key, file_ids=list(file_ids))
    return None


def series_joined(joined: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> list[Change]:
    """Which series files (entry id, file id) the instances of import entries joined, an
    event per entry, each a stream of its own (a fact about the entry and the files,
    recorded by whichever replica settled them)."""
    files: dict[uuid.UUID, list[uuid.UUID]] = {}
    for entry_id, file_id in joined:
        if file_id not in files.setdefault(entry_id, []):
            files[entry_id].append(file_id)
    return [
        Change(
            f"import-series-{uuid.uuid4()}",
            1,
            ev.ImportedSeriesFiles(group_file_id=entry_id, file_ids=file_ids),
        )
        for entry_id, file_ids in files.items()
    ]


def _changes(job_id: uuid.UUID, version: int, events: Sequence[Event]) -> list[Change]:
    return appended(ev.job_stream(job_id), events, after=version)


def _rejected(job_id: uuid.UUID, r: Rejection) -> ev.FileContentRejected:
    return ev.FileContentRejected(
        job_id=job_id, name=r.name, code=r.code, message=r.message, details=r.details
    )


def group_requested(job_id: uuid.UUID, group: ImportGroup) -> list[ev.ImportGroupRequested]:
    """A group's request: its frames' keys in pages of bounded size."""
    group_file_id = uuid.uuid4()
    out = []
    first = 0
    for page in limits.pages(group.keys, lambda k: len(k.encode()) + 2):
        out.append(
            ev.ImportGroupRequested(
                job_id=job_id,
                group_file_id=group_file_id,
                kind=group.kind,
                name=group.name,
                entry=group.entry,
                metadata=group.metadata if first == 0 else {},
                frames=len(group.keys),
                first=first,
                keys=page,
                titled=group.titled,
            )
        )
        first += len(page)
    return out


def start(job_id: uuid.UUID, folder_id: uuid.UUID, request: ImportRequest) -> list[Change]:
    """The job's first events: started, the named objects and groups. A job with
    nothing to read is finished at once. A group counts one in the job's total, as a
    file does."""
    events: list[Event] = [
        ev.ImportJobStarted(
            job_id=job_id,
            folder_id=folder_id,
            integration_id=request.integration_id,
            prefix=request.prefix,
            total=len(request.objects) + len(request.groups),
            skip_duplicate_urls=request.skip_duplicate_urls,
            upsert_metadata=request.upsert_metadata,
        )
    ]
    events += [ev.ImportObjectsRequested(job_id=job_id, objects=c) for c in chunks(request.objects)]
    for group in request.groups:
        events += group_requested(job_id, group)
    if not request.objects and not request.groups and request.prefix is None:
        events.append(ev.UploadJobFinished(job_id=job_id, status="done"))
    return _changes(job_id, 0, events)


def batch(
    job_id: uuid.UUID,
    folder_id: uuid.UUID,
    integration_id: uuid.UUID,
    version: int,
    found: Sequence[Found],
    rejected: Sequence[Rejection],
    listed: int = 0,
    listing_complete: bool = False,
) -> list[Change]:
    """One batch of the job: more objects listed, files stored, objects refused."""
    events: list[Event] = []
    if listed or listing_complete:
        events.append(
            ev.ImportObjectsListed(job_id=job_id, count=listed, complete=listing_complete)
        )
    events += [
        ev.FileContentStored(
            job_id=job_id,
            file_id=f.file_id,
            folder_id=folder_id,
            name=file_name(f.obj),
            kind=f.kind,
            size=f.size,
            sha256=f.sha256,
            mime_type=f.mime_type,
            media=f.media,
            blob_key=reference_key(f.file_id),
            source=Source(type="cloud", integration_id=integration_id, key=f.obj.key),
            metadata=f.obj.metadata,
            etag=f.etag,
        )
        for f in found
    ]
    events += [_rejected(job_id, r) for r in rejected]
    return _changes(job_id, version, events)


def stored_data(job_id: str, folder_id: str, integration_id: str, found: Found) -> dict[str, Any]:
    """The FileContentStored of an object read, as `model_dump(mode="json")` of the
    validated event gives it (ids as text), built directly: a job records 100,000 of
    them, and validating and dumping each again cost as much as reading it. Every value
    is already of its type (our ids, the sniffer's facts, a key the bucket listed or a
    request named); a unit test holds it equal to the validated event's."""
    media = found.media
    return {
        "job_id": job_id,
        "file_id": str(found.file_id),
        "folder_id": folder_id,
        "name": file_name(found.obj),
        "kind": found.kind,
        "size": found.size,
        "sha256": found.sha256,
        "mime_type": found.mime_type,
        "media": media.model_dump(),
        "blob_key": reference_key(found.file_id),
        "source": {"type": "cloud", "integration_id": integration_id, "key": found.obj.key},
        "metadata": dict(found.obj.metadata),
        "etag": found.etag,
    }


def batch_envelopes(
    job_id: uuid.UUID,
    folder_id: uuid.UUID,
    integration_id: uuid.UUID,
    version: int,
    found: Sequence[Found],
    rejected: Sequence[Rejection],
    cause: Cause,
    listed: int = 0,
    listing_complete: bool = False,
) -> list[Envelope]:
    """`batch`'s events in their envelopes, the same ones, the files' built directly
    (`stored_data`): what a job records per batch."""
    at = now()
    stream = ev.job_stream(job_id)
    head = batch(job_id, folder_id, integration_id, version, [], [], listed, listing_complete)
    out = envelopes_of(head, cause, at)
    version += len(head)
    job, folder, integration = str(job_id), str(folder_id), str(integration_id)
    stored, schema = ev.FileContentStored.type, ev.FileContentStored.version
    for f in found:
        version += 1
        out.append(
            _trusted(
                {
                    "event_id": uuid.uuid4(),
                    "type": stored,
                    "schema_version": schema,
                    "stream_id": stream,
                    "stream_version": version,
                    "occurred_at": at,
                    "actor": cause.actor,
                    "correlation_id": cause.correlation_id,
                    "causation_id": cause.causation_id,
                    "traceparent": cause.traceparent,
                    "source": "",
                    "position": 0,
                    "data": stored_data(job, folder, integration, f),
                }
            )
        )
    out += envelopes_of(
        _changes(job_id, version, [_rejected(job_id, r) for r in rejected]), cause, at
    )
    return out


def finish(job_id: uuid.UUID, version: int) -> list[Change]:
    return _changes(job_id, version, [ev.UploadJobFinished(job_id=job_id, status="done")])


def fail(job_id: uuid.UUID, version: int, code: str, message: str) -> list[Change]:
    return _changes(
        job_id, version, [ev.ImportJobFailed(job_id=job_id, code=code, message=message)]
    )


@dataclass
class GroupState:
    """A group the job was asked for, as its requests tell it."""

    group_file_id: uuid.UUID
    kind: str
    name: str
    entry: str
    metadata: dict[str, Any]
    frames: int
    keys: list[str] = field(default_factory=list)


@dataclass
class JobState:
    """An import job as its stream tells it: what it was asked, what is settled."""

    job_id: uuid.UUID
    folder_id: uuid.UUID
    integration_id: uuid.UUID
    prefix: str | None
    actor: str = ""
    version: int = 0
    objects: list[ev.ImportObject] = field(default_factory=list)
    settled: set[str] = field(default_factory=set)
    listed: int = 0
    listing_complete: bool = False
    ended: bool = False
    groups: dict[uuid.UUID, GroupState] = field(default_factory=dict)
    settled_groups: set[uuid.UUID] = field(default_factory=set)
    skip_duplicate_urls: bool = False
    upsert_metadata: bool = False

    @property
    def matches_imported(self) -> bool:
        """Objects already imported into the folder are looked up before they are read."""
        return self.skip_duplicate_urls or self.upsert_metadata

    def pending(self) -> list[ev.ImportObject]:
        """Named objects not yet settled, in the order asked."""
        return [o for o in self.objects if o.key not in self.settled]

    def pending_groups(self) -> list[GroupState]:
        """Groups not yet settled, in the order asked."""
        return [g for g in self.groups.values() if g.group_file_id not in self.settled_groups]


def fold(events: Iterable[tuple[str, dict[str, Any]]]) -> JobState | None:
    """The state of an import job from its stream's (type, data) in order; None if the
    stream is not an import's."""
    state: JobState | None = None
    for version, (kind, data) in enumerate(events, start=1):
        if kind == ev.ImportJobStarted.type:
            started = ev.ImportJobStarted.model_validate(data)
            state = JobState(
                started.job_id,
                started.folder_id,
                started.integration_id,
                started.prefix,
                skip_duplicate_urls=started.skip_duplicate_urls,
                upsert_metadata=started.upsert_metadata,
            )
        if state is None:
            return None
        state.version = version
        if kind == ev.ImportObjectsRequested.type:
            state.objects += ev.ImportObjectsRequested.model_validate(data).objects
        elif kind == ev.ImportGroupRequested.type:
            asked = ev.ImportGroupRequested.model_validate(data)
            group = state.groups.setdefault(
                asked.group_file_id,
                GroupState(
                    asked.group_file_id,
                    asked.kind,
                    asked.name,
                    asked.entry,
                    asked.metadata,
                    asked.frames,
                ),
            )
            group.keys += asked.keys
        elif kind in (ev.ImportObjectSkipped.type, ev.ImportedMetadataReplaced.type):
            if data.get("group_file_id") is not None:
                state.settled_groups.add(uuid.UUID(str(data["group_file_id"])))
            else:
                state.settled.add(str(data["key"]))
        elif kind in (ev.ImageGroupStored.type, ev.ImportDicomInstancesCopied.type):
            state.settled_groups.add(uuid.UUID(str(data["group_file_id"])))
        elif kind == ev.ImportObjectsListed.type:
            state.listed += int(data["count"])
            state.listing_complete = state.listing_complete or bool(data.get("complete"))
        elif kind == ev.FileContentStored.type:
            key = (data.get("source") or {}).get("key")
            if key is not None:
                state.settled.add(key)
        elif kind == ev.FileContentRejected.type:
            details = data.get("details") or {}
            key = details.get("key")
            if key is not None:
                state.settled.add(key)
            if details.get("group_file_id") is not None:
                state.settled_groups.add(uuid.UUID(str(details["group_file_id"])))
        elif kind in (ev.UploadJobFinished.type, ev.ImportJobFailed.type):
            state.ended = True
    return state
