"""Uploads, pure: what an upload records once its bytes are stored (files, a DICOM
series' instances, an image group or sequence), and the file name rule every upload
keeps."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.contracts import ingest as ev
from shared.contracts import limits, rules
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


# What HTML's multipart/form-data encoding (and so browsers, httpx and requests) writes
# in a part's filename for the three characters a quoted string cannot hold as they are:
# decoded back, so `say "hi".txt` is stored as it was named, not as `say %22hi%22.txt`.
# (The encoding is not reversible: a name that really holds "%22" reads as a quote.)
# Any other `%XX` is the name's own text, as HTML's encoding (and RFC 7578, which defines
# no other) says: `100%25.txt` is a name. httpx also writes other control characters
# as `%XX`; a name that holds them is refused anyway, and the Python client refuses it
# before sending, so a `bad%01.png` that arrives is stored as named.
_FORM_ESCAPES = {"%22": '"', "%0D": "\r", "%0A": "\n", "%0d": "\r", "%0a": "\n"}
_FORM_ESCAPED = re.compile("|".join(map(re.escape, _FORM_ESCAPES)))


def sent_file_name(raw: bytes | None) -> str | None:
    """A multipart part's filename as the client named the file (None if it sent none)."""
    if raw is None:
        return None
    return _FORM_ESCAPED.sub(lambda m: _FORM_ESCAPES[m.group()], raw.decode("utf-8", "replace"))


def check_file_name(name: str | None) -> str:
    if name is None:
        raise Refused(422, "missing_file_name", "a file part has no filename")
    problem = rules.name_problem(name, "file name")
    if problem:
        raise Refused(422, "invalid_name", problem, {"name": name[: rules.MAX_NAME]})
    return name


def _fields(f: StoredFile) -> dict[str, Any]:
    """A stored file's fields, shallow (its events name each of them), to be unpacked
    (`**`), never changed: the record's own `__dict__`, which holds them and nothing else
    (a plain dataclass, no slots); `dataclasses.fields` and a `getattr` each cost ~1 µs a
    file of an upload."""
    return vars(f)


def content_stored(
    job_id: uuid.UUID,
    folder_id: uuid.UUID,
    f: StoredFile,
    metadata: dict[str, Any] | None = None,
) -> ev.FileContentStored:
    return ev.FileContentStored(
        job_id=job_id,
        folder_id=folder_id,
        source=Source(type="upload"),
        metadata=metadata or {},
        **_fields(f),
    )


def record_upload(
    job_id: uuid.UUID,
    folder_id: uuid.UUID,
    files: Sequence[StoredFile],
    metadata: dict[str, dict[str, Any]] | None = None,
) -> list[Change]:
    """The job's stream: started, the stored files (each with the metadata given for its
    name) in FilesStored pages of bounded size, finished."""
    if not files:
        raise Refused(422, "no_files", "the upload has no 'file' parts")
    stream = ev.job_stream(job_id)
    started = ev.UploadJobStarted(job_id=job_id, folder_id=folder_id, total=len(files))
    changes = [Change(stream, 1, started)]
    given = metadata or {}
    contents = [ev.StoredContent(**_fields(f), metadata=given.get(f.name) or {}) for f in files]
    # Each file dumped once, to size the pages, and that dump is its page's data: the
    # envelope does not dump the page again (~3 µs a file). A unit test holds the data
    # equal to the event's own dump.
    dumped = [c.model_dump(mode="json") for c in contents]
    for page in limits.pages(range(len(contents)), lambda i: limits.json_size(dumped[i])):
        files_of = [contents[i] for i in page]
        event = ev.FilesStored(job_id=job_id, folder_id=folder_id, files=files_of)
        data: dict[str, Any] = {"job_id": str(job_id), "folder_id": str(folder_id)}
        data["files"] = [dumped[i] for i in page]
        changes.append(Change(stream, len(changes) + 1, event, data))
    finished = ev.UploadJobFinished(job_id=job_id, status="done")
    changes.append(Change(stream, len(changes) + 1, finished))
    return changes


def record_dicom_upload(
    job_id: uuid.UUID, folder_id: uuid.UUID, instances: Sequence[StoredInstance]
) -> list[Change]:
    """A DICOM job's stream: started, then the stored parts in DicomInstancesStored pages
    of bounded size. Its progress is the DICOM context's: it is done when that context
    has accepted or rejected every part."""
    if not instances:
        raise Refused(422, "no_files", "the upload has no 'file' parts")
    events: list[Event] = [
        ev.UploadJobStarted(job_id=job_id, folder_id=folder_id, total=len(instances), kind="dicom")
    ]
    parts = [
        ev.StoredPart(name=i.name, blob_key=i.blob_key, sha256=i.sha256, size=i.size)
        for i in instances
    ]
    events += [
        ev.DicomInstancesStored(job_id=job_id, folder_id=folder_id, instances=page)
        for page in limits.pages(parts, lambda p: limits.json_size(p.model_dump()))
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
