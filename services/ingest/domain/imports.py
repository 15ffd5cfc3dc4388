"""Imports by reference, pure: what a request asks for, and what a job records.

A request names objects of the integration's bucket by key, by prefix, or by a
manifest in the style of Encord's cloud import JSON:

    {"images": [{"objectUrl": "s3://bucket/cats/1.png", "title": "cat 1",
                 "clientMetadata": {"camera": "left"}}],
     "videos": [{"key": "clips/a.mp4"}],
     "audio": [...], "pdfs": [...], "text": [...],
     "image_groups": [{"title": "g", "objectUrl_0": "...", "objectUrl_1": "..."}],
     "dicom_series": [{"title": "s", "objectUrl_0": "..."}],
     "skip_duplicate_urls": true}

Each object becomes a file whose kind comes from its bytes; the manifest's
section must agree (an "images" entry that is a video is `kind_mismatch`). Image
groups and DICOM series are not imported by reference: each such entry is reported
in the job as `not_supported_by_reference` while the rest imports. A malformed
request or manifest is refused whole (422 naming every problem), recording nothing.

The job's stream: ImportJobStarted, the named objects in chunks
(ImportObjectsRequested), then per batch the files stored (FileContentStored, with
source {type: "cloud", integration_id, key}) and the objects refused
(FileContentRejected, `details.key`), the prefix's listing as it grows
(ImportObjectsListed), and UploadJobFinished (or ImportJobFailed). `fold` reads
it back, so a job interrupted by a restart resumes where its last batch ended.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.contracts import ingest as ev
from shared.contracts import rules
from shared.contracts.catalog import Media, Source
from shared.contracts.envelope import Cause, Change, Envelope, Event, _trusted, envelopes_of, now
from shared.kit.errors import Refused

# Objects named in one request (keys and manifest entries); a prefix lists any number.
MAX_OBJECTS = 100_000
MAX_KEY_BYTES = 1024
# An ImportObjectsRequested event stays well under a broker's message size limit.
MAX_CHUNK_BYTES = 256 * 1024
MAX_PROBLEMS = 100
# Manifest sections imported one file per entry, and the kind each entry must have.
FILE_SECTIONS = {
    "images": "image",
    "videos": "video",
    "audio": "audio",
    "pdfs": "pdf",
    "text": "text",
}
REFUSED_SECTIONS = {"image_groups": "image group", "dicom_series": "DICOM series"}
FLAGS = ("skip_duplicate_urls",)
# Kinds an object may have (what the sniffer accepts).
ACCEPTED_KINDS = ("image", "video", "pdf", "audio", "text")
# A reference file has no blob: its key says so and names nothing in the blob store.
REFERENCE_PREFIX = "ref:"


def reference_key(file_id: uuid.UUID) -> str:
    return f"{REFERENCE_PREFIX}{file_id}"


def is_reference(blob_key: str) -> bool:
    return blob_key.startswith(REFERENCE_PREFIX)


@dataclass(frozen=True)
class Rejection:
    """One object (or manifest entry) that is not imported, for the job's errors."""

    name: str
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportRequest:
    integration_id: uuid.UUID
    objects: list[ev.ImportObject]
    prefix: str | None
    # Entries refused at once (image groups, DICOM series): in the job's errors.
    refused: list[Rejection]


class _Problems:
    def __init__(self) -> None:
        self.found: list[dict[str, str]] = []

    def add(self, where: str, problem: str) -> None:
        if len(self.found) < MAX_PROBLEMS:
            self.found.append({"field": where, "problem": problem})

    def __bool__(self) -> bool:
        return bool(self.found)


def key_of(reference: str, bucket: str) -> str:
    """The object key an `objectUrl` (or a bare key) names in `bucket`; ValueError if it
    names another bucket or nothing.

    `s3://bucket/key`; `https://bucket.s3[.region].amazonaws.com/key` (virtual-hosted)
    or `http(s)://host/bucket/key` (path style, any S3 endpoint), percent-decoded.
    """
    if "://" not in reference:
        return _key(reference)
    parsed = urllib.parse.urlsplit(reference)
    if parsed.scheme == "s3":
        if parsed.netloc != bucket:
            raise ValueError(f"names bucket {parsed.netloc!r}, not the integration's {bucket!r}")
        # Everything after the bucket, as written (an s3:// URI is not percent-encoded).
        return _key(reference.split("://", 1)[1][len(bucket) + 1 :])
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("is neither an s3:// nor an http(s):// URL of an object")
    path = urllib.parse.unquote(parsed.path)
    if parsed.hostname.startswith(f"{bucket}."):
        return _key(path[1:])
    if path.startswith(f"/{bucket}/"):
        return _key(path[len(bucket) + 2 :])
    raise ValueError(f"is not an object of the integration's bucket {bucket!r}")


def _key(key: str) -> str:
    if not key:
        raise ValueError("names no object (the key is empty)")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"has a key longer than {MAX_KEY_BYTES} bytes")
    return key


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def integration_of(body: object) -> uuid.UUID:
    """The integration an import request names (to look up its bucket), or 422."""
    found = _uuid(body.get("integration_id")) if isinstance(body, dict) else None
    if found is None:
        raise Refused(
            422,
            "invalid_request",
            "integration_id: must be an integration's id",
            {"fields": [{"field": "integration_id", "problem": "must be an integration's id"}]},
        )
    return found


def parse_request(body: object, bucket: str) -> ImportRequest:
    """The objects a request body names in `bucket`, or 422 naming every problem."""
    if not isinstance(body, dict):
        raise Refused(422, "invalid_request", "the body must be a JSON object")
    problems = _Problems()
    unknown = sorted(set(body) - {"integration_id", "keys", "prefix", "manifest"})
    for name in unknown:
        problems.add(name, "is not a field of an import")
    integration_id = _uuid(body.get("integration_id"))
    if integration_id is None:
        problems.add("integration_id", "must be an integration's id")
    objects: list[ev.ImportObject] = []
    refused: list[Rejection] = []
    keys = body.get("keys")
    if keys is not None:
        if not isinstance(keys, list):
            problems.add("keys", "must be a list of object keys")
        else:
            for i, key in enumerate(keys):
                if not isinstance(key, str):
                    problems.add(f"keys[{i}]", "must be a string")
                    continue
                try:
                    objects.append(ev.ImportObject(key=_key(key)))
                except ValueError as error:
                    problems.add(f"keys[{i}]", str(error))
    prefix = body.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or len(prefix.encode()) > MAX_KEY_BYTES):
        problems.add("prefix", f"must be a string of at most {MAX_KEY_BYTES} bytes")
        prefix = None
    manifest = body.get("manifest")
    if manifest is not None:
        _manifest(manifest, bucket, objects, refused, problems)
    if keys is None and prefix is None and manifest is None:
        problems.add("body", "name what to import: keys, prefix or manifest")
    if problems:
        raise Refused(
            422,
            "invalid_manifest"
            if any(p["field"].startswith("manifest") for p in problems.found)
            else "invalid_request",
            "; ".join(f"{p['field']}: {p['problem']}" for p in problems.found[:10]),
            {"fields": problems.found},
        )
    if len(objects) + len(refused) > MAX_OBJECTS:
        raise Refused(
            413,
            "too_many_objects",
            f"one import names at most {MAX_OBJECTS} objects; import the rest in another,"
            " or by prefix",
            {"limit": MAX_OBJECTS},
        )
    assert integration_id is not None
    return ImportRequest(integration_id, _unique(objects), prefix, refused)


def _unique(objects: Iterable[ev.ImportObject]) -> list[ev.ImportObject]:
    """Each key once, as first named: an object is one file per import."""
    seen: set[str] = set()
    out = []
    for o in objects:
        if o.key not in seen:
            seen.add(o.key)
            out.append(o)
    return out


def _manifest(
    manifest: object,
    bucket: str,
    objects: list[ev.ImportObject],
    refused: list[Rejection],
    problems: _Problems,
) -> None:
    if not isinstance(manifest, dict):
        problems.add("manifest", "must be a JSON object of sections (images, videos, ...)")
        return
    known = set(FILE_SECTIONS) | set(REFUSED_SECTIONS) | set(FLAGS)
    for name in sorted(set(manifest) - known):
        problems.add(
            f"manifest.{name}",
            f"is not a section; use {', '.join([*FILE_SECTIONS, *REFUSED_SECTIONS])}",
        )
    for flag in FLAGS:
        if flag in manifest and not isinstance(manifest[flag], bool):
            problems.add(f"manifest.{flag}", "must be true or false")
    for section, kind in FILE_SECTIONS.items():
        for where, entry in _entries(manifest, section, problems):
            found = _entry(where, entry, bucket, problems)
            if found is not None:
                objects.append(found.model_copy(update={"kind": kind}))
    for section, what in REFUSED_SECTIONS.items():
        for where, entry in _entries(manifest, section, problems):
            title = entry.get("title")
            refused.append(
                Rejection(
                    name=title if isinstance(title, str) and title else where,
                    code="not_supported_by_reference",
                    message=f"{where}: a {what} cannot be imported by reference yet; import"
                    f" its objects as files, or upload it (bytes are then copied)",
                    details={"entry": where},
                )
            )


def _entries(
    manifest: dict[str, Any], section: str, problems: _Problems
) -> list[tuple[str, dict[str, Any]]]:
    entries = manifest.get(section)
    if entries is None:
        return []
    if not isinstance(entries, list):
        problems.add(f"manifest.{section}", "must be a list of entries")
        return []
    out = []
    for i, entry in enumerate(entries):
        where = f"manifest.{section}[{i}]"
        if isinstance(entry, dict):
            out.append((where, entry))
        else:
            problems.add(where, "must be an object with an objectUrl (or a key)")
    return out


def _entry(
    where: str, entry: dict[str, Any], bucket: str, problems: _Problems
) -> ev.ImportObject | None:
    url, key = entry.get("objectUrl"), entry.get("key")
    if (url is None) == (key is None):
        problems.add(where, "needs an objectUrl or a key (one of them)")
        return None
    reference = url if url is not None else key
    if not isinstance(reference, str):
        problems.add(where, "objectUrl and key are strings")
        return None
    try:
        found = _key(reference) if url is None else key_of(reference, bucket)
    except ValueError as error:
        problems.add(f"{where}.{'objectUrl' if url is not None else 'key'}", str(error))
        return None
    title = entry.get("title")
    if title is not None:
        problem = rules.name_problem(title, "title") if isinstance(title, str) else "not a string"
        if problem:
            problems.add(f"{where}.title", problem)
            return None
    metadata = entry.get("clientMetadata", {})
    if not isinstance(metadata, dict):
        problems.add(f"{where}.clientMetadata", "must be a JSON object")
        return None
    try:
        size = rules.metadata_size(metadata)
    except ValueError:
        problems.add(f"{where}.clientMetadata", "must be valid JSON (no NaN or Infinity)")
        return None
    if size > rules.MAX_METADATA_BYTES:
        problems.add(
            f"{where}.clientMetadata", f"is {size} bytes; at most {rules.MAX_METADATA_BYTES}"
        )
        return None
    return ev.ImportObject(key=found, title=title, metadata=metadata)


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


def _changes(job_id: uuid.UUID, version: int, events: Sequence[Event]) -> list[Change]:
    stream = ev.job_stream(job_id)
    return [Change(stream, version + i, e) for i, e in enumerate(events, start=1)]


def _rejected(job_id: uuid.UUID, r: Rejection) -> ev.FileContentRejected:
    return ev.FileContentRejected(
        job_id=job_id, name=r.name, code=r.code, message=r.message, details=r.details
    )


def start(job_id: uuid.UUID, folder_id: uuid.UUID, request: ImportRequest) -> list[Change]:
    """The job's first events: started, the named objects, the entries refused at once.
    A job with nothing left to read (only refused entries) is finished at once."""
    events: list[Event] = [
        ev.ImportJobStarted(
            job_id=job_id,
            folder_id=folder_id,
            integration_id=request.integration_id,
            prefix=request.prefix,
            total=len(request.objects) + len(request.refused),
        )
    ]
    events += [ev.ImportObjectsRequested(job_id=job_id, objects=c) for c in chunks(request.objects)]
    events += [_rejected(job_id, r) for r in request.refused]
    if not request.objects and request.prefix is None:
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
        "media": {
            "width": media.width,
            "height": media.height,
            "frames": media.frames,
            "duration_s": media.duration_s,
            "sample_rate": media.sample_rate,
            "channels": media.channels,
        },
        "blob_key": reference_key(found.file_id),
        "source": {"type": "cloud", "integration_id": integration_id, "key": found.obj.key},
        "metadata": dict(found.obj.metadata),
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

    def pending(self) -> list[ev.ImportObject]:
        """Named objects not yet settled, in the order asked."""
        return [o for o in self.objects if o.key not in self.settled]


def fold(events: Iterable[tuple[str, dict[str, Any]]]) -> JobState | None:
    """The state of an import job from its stream's (type, data) in order; None if the
    stream is not an import's."""
    state: JobState | None = None
    for version, (kind, data) in enumerate(events, start=1):
        if kind == ev.ImportJobStarted.type:
            started = ev.ImportJobStarted.model_validate(data)
            state = JobState(
                started.job_id, started.folder_id, started.integration_id, started.prefix
            )
        if state is None:
            return None
        state.version = version
        if kind == ev.ImportObjectsRequested.type:
            state.objects += ev.ImportObjectsRequested.model_validate(data).objects
        elif kind == ev.ImportObjectsListed.type:
            state.listed += int(data["count"])
            state.listing_complete = state.listing_complete or bool(data.get("complete"))
        elif kind == ev.FileContentStored.type:
            key = (data.get("source") or {}).get("key")
            if key is not None:
                state.settled.add(key)
        elif kind == ev.FileContentRejected.type:
            key = (data.get("details") or {}).get("key")
            if key is not None:
                state.settled.add(key)
        elif kind in (ev.UploadJobFinished.type, ev.ImportJobFailed.type):
            state.ended = True
    return state
