"""Image groups and sequences imported by reference, pure: a group's frames read once
each (hashed, sniffed, as single objects are), then the group recorded whole, as an
uploaded group is (ImageGroupImagesStored pages, ImageGroupStored), with its frames'
content left in the bucket; or refused whole, naming its frames at fault.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

from services.ingest.imports.domain.jobs import (
    Found,
    GroupState,
    JobState,
    Matched,
    file_name,
    reference_key,
)
from services.ingest.imports.domain.requests import Rejection
from shared.contracts import ingest as ev
from shared.contracts import limits
from shared.contracts.catalog import Source
from shared.contracts.envelope import Change, Event, appended

# Frames named in a refusal's details at most.
SHOWN = 20


WHAT = {"image_group": "image group", "image_sequence": "image sequence"}


def frames_sha256(kind: str, keys: Sequence[str]) -> str:
    """What an entry is matched on against what its folder imported before: the SHA-256
    of its kind and its frames' keys, in order for a group or sequence (a reordered one
    is another file), as a set for a DICOM series (its slices are ordered by their
    headers)."""
    named = sorted(set(keys)) if kind == "dicom_series" else list(keys)
    return hashlib.sha256("\n".join([kind, *named]).encode()).hexdigest()


def matched(state: JobState, group: GroupState, file_ids: Sequence[uuid.UUID]) -> Matched | None:
    """A group entry whose frames, all of them and no other, were imported into the
    job's folder through its integration as one entry before (as `file_ids`): its
    metadata replaced (`upsert_metadata`, when the entry gives some) or skipped
    (`skip_duplicate_urls`), as a single object is (jobs.py `matched`); None: it is
    read and becomes a file (a partly overlapping entry too)."""
    if not file_ids:
        return None
    key, gid, entry = group.keys[0], group.group_file_id, group.entry
    if state.upsert_metadata and group.metadata:
        return ev.ImportedMetadataReplaced(
            job_id=state.job_id,
            key=key,
            file_ids=list(file_ids),
            metadata=group.metadata,
            group_file_id=gid,
            entry=entry,
        )
    if state.skip_duplicate_urls:
        return ev.ImportObjectSkipped(
            job_id=state.job_id, key=key, file_ids=list(file_ids), group_file_id=gid, entry=entry
        )
    return None


def settled(state: JobState, match: Matched) -> list[Change]:
    return appended(ev.job_stream(state.job_id), [match], after=state.version)


def frames_of(group: GroupState) -> list[ev.ImportObject]:
    """The objects a group reads, named after their keys: each frame an image (a DICOM
    series' instances are read by the DICOM context)."""
    kind = None if group.kind == "dicom_series" else "image"
    return [ev.ImportObject(key=k, kind=kind) for k in group.keys]


def refused(group: GroupState, frames: Sequence[object]) -> Rejection | None:
    """Why a group is not imported (an object missing or unreadable, a frame not an
    image; a sequence's frames not all of one size), or None."""
    faults = [r for r in frames if isinstance(r, Rejection)]
    what = WHAT.get(group.kind, "DICOM series")
    base = {"entry": group.entry, "group_file_id": str(group.group_file_id)}
    if faults:
        shown = [{"key": r.details.get("key", r.name), "code": r.code} for r in faults[:SHOWN]]
        codes = sorted({r.code for r in faults})
        return Rejection(
            group.name,
            faults[0].code if len(codes) == 1 else "group_frames_refused",
            f"{group.entry}: {len(faults)} of the {what}'s {len(frames)} objects cannot be"
            f" imported ({', '.join(codes)}), so the {what} is not: {faults[0].message}",
            {**base, "frames": shown, "refused_frames": len(faults)},
        )
    found = [f for f in frames if isinstance(f, Found)]
    if group.kind == "image_sequence":
        sizes = {(f.media.width, f.media.height) for f in found}
        if len(sizes) > 1:
            first = found[0].media
            odd = [
                f for f in found if (f.media.width, f.media.height) != (first.width, first.height)
            ]
            return Rejection(
                group.name,
                "dimensions_differ",
                f"{group.entry}: a sequence's images must share dimensions; {odd[0].obj.key!r}"
                f" is {odd[0].media.width}x{odd[0].media.height}, the first"
                f" {first.width}x{first.height}",
                {
                    **base,
                    "expected": {"width": first.width, "height": first.height},
                    "frames": [
                        {"key": f.obj.key, "width": f.media.width, "height": f.media.height}
                        for f in odd[:SHOWN]
                    ],
                },
            )
    return None


def stored(
    job_id: uuid.UUID,
    folder_id: uuid.UUID,
    integration_id: uuid.UUID,
    version: int,
    group: GroupState,
    frames: Sequence[Found],
) -> list[Change]:
    """The group's events: its images in pages (in a constituent folder of their own,
    as an upload's), then the group; each image refers to its object in the bucket."""
    constituent_folder_id = uuid.uuid4()
    images = [
        ev.FileContentStored(
            job_id=job_id,
            file_id=f.file_id,
            folder_id=constituent_folder_id,
            name=file_name(f.obj),
            kind=f.kind,
            size=f.size,
            sha256=f.sha256,
            mime_type=f.mime_type,
            media=f.media,
            blob_key=reference_key(f.file_id),
            source=Source(type="cloud", integration_id=integration_id, key=f.obj.key),
        )
        for f in frames
    ]
    events: list[Event] = []
    done = 0
    for page in limits.pages(images, lambda f: limits.json_size(f.model_dump(mode="json"))):
        events.append(
            ev.ImageGroupImagesStored(
                job_id=job_id, group_file_id=group.group_file_id, first=done, files=page
            )
        )
        done += len(page)
    events.append(
        ev.ImageGroupStored(
            job_id=job_id,
            group_file_id=group.group_file_id,
            folder_id=folder_id,
            name=group.name,
            kind=group.kind,
            constituent_folder_id=constituent_folder_id,
            images=len(images),
            metadata=group.metadata,
            integration_id=integration_id,
            frames_sha256=frames_sha256(group.kind, group.keys),
        )
    )
    return appended(ev.job_stream(job_id), events, after=version)


def rejected(job_id: uuid.UUID, version: int, rejection: Rejection) -> list[Change]:
    return appended(
        ev.job_stream(job_id),
        [
            ev.FileContentRejected(
                job_id=job_id,
                name=rejection.name,
                code=rejection.code,
                message=rejection.message,
                details=rejection.details,
            )
        ],
        after=version,
    )


def dicom_copied(
    state: JobState,
    group: GroupState,
    instances: Sequence[tuple[ev.ImportObject, str, str, int]],
) -> list[Change]:
    """A DICOM series entry's instances, copied into the blob store (each its object,
    blob key, sha256 and size): stored as an upload's parts are, for the DICOM context
    to read and assemble into series of the folder, each naming its entry; then the
    entry settled."""
    job_id, version = state.job_id, state.version
    events: list[Event] = [
        ev.DicomInstanceStored(
            job_id=job_id,
            folder_id=state.folder_id,
            name=file_name(obj),
            blob_key=blob_key,
            sha256=sha256,
            size=size,
            entry_id=group.group_file_id,
        )
        for obj, blob_key, sha256, size in instances
    ]
    events.append(
        ev.ImportDicomInstancesCopied(
            job_id=job_id,
            group_file_id=group.group_file_id,
            entry=group.entry,
            instances=len(instances),
            folder_id=state.folder_id,
            integration_id=state.integration_id,
            frames_sha256=frames_sha256(group.kind, group.keys),
        )
    )
    return appended(ev.job_stream(job_id), events, after=version)
