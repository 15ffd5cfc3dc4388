"""Uploads, pure: what an upload records once its bytes are stored (files, a DICOM
series' instances, an image group or sequence), and the file name rule every upload
keeps."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared.contracts import ingest as ev
from shared.contracts import limits, metadata_schema, rules
from shared.contracts.catalog import Media, Source
from shared.contracts.envelope import Change, Event, appended
from shared.kit.errors import Refused


@dataclass(frozen=True)
class StoredFile:
    file_id: uuid.UUID
    name: str
    kind: str
    mime_type: str
    size: int
    sha256: str
    blob_key: str
    media: Media


@dataclass(frozen=True)
class StoredInstance:
    """One part of a DICOM upload, stored as it came."""

    name: str
    blob_key: str
    sha256: str
    size: int


def check_file_name(name: str | None) -> str:
    if name is None:
        raise Refused(422, "missing_file_name", "a file part has no filename")
    problem = rules.name_problem(name, "file name")
    if problem:
        raise Refused(422, "invalid_name", problem, {"name": name[: rules.MAX_NAME]})
    return name


def file_metadata(field: bytes | None, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The upload's `metadata` field: a JSON object from a file part's name to that
    file's metadata (a JSON object of at most MAX_METADATA_BYTES). A name that is no
    file of the upload is refused: its metadata would be lost."""
    if field is None:
        return {}
    try:
        given = orjson.loads(bytes(field))
    except orjson.JSONDecodeError as error:
        raise Refused(
            422, "invalid_metadata", f"the 'metadata' field is not JSON: {error}"
        ) from None
    if not isinstance(given, dict):
        raise Refused(
            422,
            "invalid_metadata",
            "the 'metadata' field must be a JSON object from a file name to its metadata",
        )
    unknown = sorted(set(given) - set(names))
    if unknown:
        shown = [u[: rules.MAX_NAME] for u in unknown[:20]]
        raise Refused(
            422,
            "unknown_file_name",
            f"the 'metadata' field names files the upload does not have: "
            f"{', '.join(map(repr, shown))}",
            {"names": shown},
        )
    return {name: bounded(found, name) for name, found in given.items()}


def bounded(metadata: object, name: str) -> dict[str, Any]:
    """A file's metadata as given: a JSON object of at most MAX_METADATA_BYTES, or a
    422/413 naming the file."""
    if not isinstance(metadata, dict):
        raise Refused(
            422,
            "invalid_metadata",
            f"file {name!r}: metadata must be a JSON object",
            {"name": name},
        )
    size = rules.metadata_size(metadata)
    if size > rules.MAX_METADATA_BYTES:
        raise Refused(
            413,
            "metadata_too_large",
            f"file {name!r}: metadata is {size} bytes of JSON; at most {rules.MAX_METADATA_BYTES}",
            {"name": name, "size": size, "limit": rules.MAX_METADATA_BYTES},
        )
    return metadata


def check_metadata(
    schema: metadata_schema.Schema, metadata: dict[str, dict[str, Any]], what: str = "file"
) -> None:
    """Each file's metadata (by its name) against the schema: 422 naming the file, the
    key and the type it needs, at the first that does not conform; nothing is then
    stored."""
    for name, found in metadata.items():
        mismatch = metadata_schema.mismatch(schema, found)
        if mismatch is not None:
            key, kind, needs = mismatch
            raise Refused(
                422,
                "metadata_type_mismatch",
                f"{what} {name!r}: metadata key {key!r} must be {needs}",
                {"name": name, "key": key, "type": kind, "needs": needs},
            )


def content_stored(
    job_id: uuid.UUID,
    folder_id: uuid.UUID,
    f: StoredFile,
    metadata: dict[str, Any] | None = None,
) -> ev.FileContentStored:
    return ev.FileContentStored(
        job_id=job_id,
        file_id=f.file_id,
        folder_id=folder_id,
        name=f.name,
        kind=f.kind,
        size=f.size,
        sha256=f.sha256,
        mime_type=f.mime_type,
        media=f.media,
        blob_key=f.blob_key,
        source=Source(type="upload"),
        metadata=metadata or {},
    )


def record_upload(
    job_id: uuid.UUID,
    folder_id: uuid.UUID,
    files: Sequence[StoredFile],
    metadata: dict[str, dict[str, Any]] | None = None,
) -> list[Change]:
    """The job's stream: started, one event per stored file (with the metadata given
    for its name), finished."""
    if not files:
        raise Refused(422, "no_files", "the upload has no 'file' parts")
    events: list[Event] = [
        ev.UploadJobStarted(job_id=job_id, folder_id=folder_id, total=len(files))
    ]
    given = metadata or {}
    events += [content_stored(job_id, folder_id, f, given.get(f.name)) for f in files]
    events.append(ev.UploadJobFinished(job_id=job_id, status="done"))
    return appended(ev.job_stream(job_id), events)


def record_dicom_upload(
    job_id: uuid.UUID, folder_id: uuid.UUID, instances: Sequence[StoredInstance]
) -> list[Change]:
    """A DICOM job's stream: started, one event per stored part. Its progress is the DICOM
    context's: it is done when that context has accepted or rejected every part."""
    if not instances:
        raise Refused(422, "no_files", "the upload has no 'file' parts")
    events: list[Event] = [
        ev.UploadJobStarted(job_id=job_id, folder_id=folder_id, total=len(instances), kind="dicom")
    ]
    events += [
        ev.DicomInstanceStored(
            job_id=job_id,
            folder_id=folder_id,
            name=i.name,
            blob_key=i.blob_key,
            sha256=i.sha256,
            size=i.size,
        )
        for i in instances
    ]
    return appended(ev.job_stream(job_id), events)


GROUP_KINDS = ("image_group", "image_sequence")


def record_image_group(
    job_id: uuid.UUID,
    folder_id: uuid.UUID,
    group_file_id: uuid.UUID,
    constituent_folder_id: uuid.UUID,
    kind: str,
    name: str,
    files: Sequence[StoredFile],
) -> list[Change]:
    """An image group or sequence: every part an image (a sequence's all of one size), or
    nothing is recorded. The job's stream: started, the images in pages of bounded size,
    the group stored, finished."""
    if kind not in GROUP_KINDS:
        raise Refused(
            422,
            "invalid_kind",
            f"kind must be one of {', '.join(GROUP_KINDS)}",
            {"kind": kind, "accepted": list(GROUP_KINDS)},
        )
    problem = rules.name_problem(name, "group name")
    if problem:
        raise Refused(422, "invalid_name", problem, {"name": name[: rules.MAX_NAME]})
    if not files:
        raise Refused(422, "empty_group", "an image group needs at least one 'file' part")
    others = [f.name for f in files if f.kind != "image"]
    if others:
        raise Refused(
            415,
            "not_an_image",
            f"an image group takes only images; these are not: {', '.join(map(repr, others))}",
            {"names": others, "accepted": ["image"]},
        )
    if kind == "image_sequence":
        sizes = {f.name: (f.media.width, f.media.height) for f in files}
        if len(set(sizes.values())) > 1:
            first = (files[0].media.width, files[0].media.height)
            listed = ", ".join(f"{n!r} is {w}x{h}" for n, (w, h) in sizes.items())
            raise Refused(
                422,
                "dimensions_differ",
                f"a sequence's images must share dimensions; {listed}",
                {
                    "expected": {"width": first[0], "height": first[1]},
                    "files": [
                        {"name": f.name, "width": f.media.width, "height": f.media.height}
                        for f in files
                        if (f.media.width, f.media.height) != first
                    ],
                },
            )
    stored = [content_stored(job_id, constituent_folder_id, f) for f in files]
    events: list[Event] = [
        ev.UploadJobStarted(job_id=job_id, folder_id=folder_id, total=len(files), kind=kind)
    ]
    done = 0
    for page in limits.pages(stored, lambda f: limits.json_size(f.model_dump(mode="json"))):
        events.append(
            ev.ImageGroupImagesStored(
                job_id=job_id, group_file_id=group_file_id, first=done, files=page
            )
        )
        done += len(page)
    events += [
        ev.ImageGroupStored(
            job_id=job_id,
            group_file_id=group_file_id,
            folder_id=folder_id,
            name=name,
            kind=kind,
            constituent_folder_id=constituent_folder_id,
            images=len(stored),
        ),
        ev.UploadJobFinished(job_id=job_id, status="done"),
    ]
    return appended(ev.job_stream(job_id), events)
