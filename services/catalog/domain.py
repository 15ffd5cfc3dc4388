"""The catalog's rules, pure: folders and file entries.

Decisions take the current state (read by the handler) and a command, and
return the events to record, each with its stream and the version it makes.
No I/O here; ids and time come in with the command.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Sequence, Set
from dataclasses import dataclass
from typing import Any

from services.catalog import schema
from shared.contracts import catalog as ev
from shared.contracts import rules
from shared.contracts.catalog import Source
from shared.contracts.dicom import SeriesAssembled, SeriesFacts
from shared.contracts.envelope import Change, trusted
from shared.contracts.ingest import FileContentStored, FilesStored, ImageGroupStored
from shared.kit.access import RANK, Access
from shared.kit.errors import Refused

MAX_NAME = rules.MAX_NAME
MAX_METADATA_BYTES = rules.MAX_METADATA_BYTES


class Invalid(Refused):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(422, code, message, details)


class Conflict(Refused):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(409, code, message, details)


class NotFound(Refused):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(404, code, message, details)


@dataclass(frozen=True)
class Folder:
    id: uuid.UUID
    parent_id: uuid.UUID | None
    name: str
    version: int
    # Ids from the top-level folder down to this one, itself included.
    path: tuple[uuid.UUID, ...]
    # The group file whose images it holds (read where a restore needs it).
    constituent_of: uuid.UUID | None = None


@dataclass(frozen=True)
class File:
    id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    version: int
    blob_key: str
    sha256: str


def storable(text: str) -> bool:
    """PostgreSQL text and jsonb cannot hold NUL, which JSON lets in."""
    return "\x00" not in text


def valid_name(name: str, what: str = "name") -> str:
    problem = rules.name_problem(name, what)
    if problem:
        raise Invalid("invalid_name", problem, {"name": name[:MAX_NAME]})
    return name


def valid_description(description: str) -> str:
    if not storable(description):
        raise Invalid(
            "invalid_description",
            "the description contains a NUL character",
        )
    return description


def valid_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    problem = rules.unstorable_metadata(metadata)
    if problem is not None:
        raise Invalid("invalid_metadata", problem)
    size = rules.metadata_size(metadata)
    if size > MAX_METADATA_BYTES:
        raise Invalid(
            "metadata_too_large",
            f"metadata is {size} bytes of JSON; at most {MAX_METADATA_BYTES} are allowed",
            {"size": size, "limit": MAX_METADATA_BYTES},
        )
    return metadata


def create_folder(
    folder_id: uuid.UUID,
    parent: Folder | None,
    name: str,
    description: str,
    metadata: dict[str, Any],
) -> list[Change]:
    event = ev.FolderCreated(
        folder_id=folder_id,
        parent_id=parent.id if parent else None,
        name=valid_name(name),
        description=valid_description(description),
        metadata=valid_metadata(metadata),
    )
    return [Change(ev.folder_stream(folder_id), 1, event)]


def update_folder(
    folder: Folder,
    current_description: str,
    current_metadata: dict[str, Any],
    *,
    name: str | None,
    description: str | None,
    metadata: dict[str, Any] | None,
) -> list[Change]:
    changes: list[Change] = []
    stream = ev.folder_stream(folder.id)
    if name is not None and name != folder.name:
        changes.append(
            Change(stream, 0, ev.FolderRenamed(folder_id=folder.id, name=valid_name(name)))
        )
    new_description = current_description if description is None else valid_description(description)
    new_metadata = current_metadata if metadata is None else valid_metadata(metadata)
    if new_description != current_description or new_metadata != current_metadata:
        changes.append(
            Change(
                stream,
                0,
                ev.FolderDescribed(
                    folder_id=folder.id, description=new_description, metadata=new_metadata
                ),
            )
        )
    return _numbered(changes, {stream: folder.version})


def update_file(
    file: File,
    current_metadata: dict[str, Any],
    *,
    name: str | None,
    metadata: dict[str, Any] | None,
) -> list[Change]:
    changes: list[Change] = []
    stream = ev.file_stream(file.id)
    if name is not None and name != file.name:
        changes.append(Change(stream, 0, ev.FileRenamed(file_id=file.id, name=valid_name(name))))
    if metadata is not None and metadata != current_metadata:
        changes.append(
            Change(
                stream,
                0,
                ev.FileMetadataChanged(file_id=file.id, metadata=valid_metadata(metadata)),
            )
        )
    return _numbered(changes, {stream: file.version})


MAX_BULK_EDIT = 1000


@dataclass(frozen=True)
class FileEdit:
    """One file's part of a bulk edit: what is given changes, what is None stays."""

    id: uuid.UUID
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Described:
    """A file with what a bulk edit may change."""

    file: File
    description: str
    metadata: dict[str, Any]


def merged_metadata(current: dict[str, Any], given: dict[str, Any], mode: str) -> dict[str, Any]:
    """`replace`: the metadata given. `merge`: the current metadata with the given keys
    set, and those given as null removed (a JSON merge patch, one level deep)."""
    if mode == "replace":
        return given
    merged = {**current, **given}
    return {k: v for k, v in merged.items() if not (k in given and given[k] is None)}


def check_bulk_edit(edits: Sequence[FileEdit], mode: str) -> None:
    """What a bulk edit must be before any file is read."""
    if mode not in ("merge", "replace"):
        raise Invalid("invalid_metadata_mode", "metadata_mode is merge or replace")
    if len(edits) > MAX_BULK_EDIT:
        raise Invalid(
            "too_many_updates",
            f"{len(edits)} updates; at most {MAX_BULK_EDIT} in one call",
            {"limit": MAX_BULK_EDIT},
        )
    counts = Counter(e.id for e in edits)
    twice = sorted(str(i) for i, n in counts.items() if n > 1)
    if twice:
        raise Invalid(
            "duplicate_ids",
            f"a file may be named once in a bulk edit: {', '.join(twice)}",
            {"file_ids": twice},
        )


def bulk_edit(
    files: Sequence[Described],
    edits: Sequence[FileEdit],
    mode: str,
    typed: schema.Schema | None = None,
) -> list[Change]:
    """Each file's changes, all checked before any is made: a bad name or metadata
    anywhere (against the schema's typed keys too) refuses the whole edit, naming the
    file."""
    check_bulk_edit(edits, mode)
    by_id = {d.file.id: d for d in files}
    changes: list[Change] = []
    for edit in edits:
        found = by_id[edit.id]
        try:
            changes += describe_file(
                found,
                name=edit.name,
                description=edit.description,
                metadata=(
                    None
                    if edit.metadata is None
                    else merged_metadata(found.metadata, edit.metadata, mode)
                ),
                typed=typed,
            )
        except Refused as refused:
            raise Refused(
                refused.status,
                refused.code,
                f"file {edit.id}: {refused.message}",
                {**refused.details, "file_id": str(edit.id)},
            ) from refused
    # Grouped by kind (each file's own changes keep their order): the projection applies
    # a run of one kind in one statement, not one per file.
    return sorted(changes, key=lambda c: _EDIT_ORDER[type(c.event)])


_EDIT_ORDER: dict[type, int] = {ev.FileRenamed: 0, ev.FileMetadataChanged: 1, ev.FileDescribed: 2}


def describe_file(
    found: Described,
    *,
    name: str | None,
    description: str | None,
    metadata: dict[str, Any] | None,
    typed: schema.Schema | None = None,
) -> list[Change]:
    file = found.file
    if metadata is not None and typed:
        schema.check(typed, metadata)
    stream = ev.file_stream(file.id)
    changes = update_file(file, found.metadata, name=name, metadata=metadata)
    if description is not None and description != found.description:
        event = ev.FileDescribed(file_id=file.id, description=valid_description(description))
        changes.append(Change(stream, file.version + len(changes) + 1, event))
    return changes


def set_schema(
    version: int,
    current: dict[str, Any],
    keys: dict[str, dict[str, Any]],
    org_admin: bool,
) -> list[Change]:
    """The organisation's metadata schema, replaced whole (org admins). The same schema
    again records nothing: a PUT sent twice is one change."""
    if not org_admin:
        raise Refused(
            403,
            "forbidden",
            "only an organisation admin may change the metadata schema",
            {"role_needed": "org_admin"},
        )
    typed = schema.valid_schema(keys)
    wanted = {k: v.as_json() for k, v in typed.items()}
    if wanted == current:
        return []
    return [Change(ev.SCHEMA_STREAM, version + 1, ev.MetadataSchemaSet(keys=wanted))]


def may_rename(
    access: Access, role: str | None, parent_id: uuid.UUID | None, created_by: str
) -> bool:
    """Whether the caller may rename a folder, said on each folder's answer: an app
    cannot tell a top-level folder from one shared alone (neither shows a parent). It
    tells an editor no more than a rename would (refused or not); a viewer, nothing."""
    if role is None or RANK[role] < RANK["editor"]:
        return False
    return parent_id is not None or access.org_admin or access.user_id == created_by


def check_top_level_naming(access: Access, folder: Folder, created_by: str, act: str) -> None:
    """Top-level names are unique per creator (projections.py), among folders of theirs
    no one else need see: whoever picks a top-level folder's name (a rename; a restore,
    beside what its creator made meanwhile) would learn from a clash whether the creator
    has a private folder of that name, and could test guessed names without end. So only
    its creator, and an org admin (who sees every folder), may rename or restore it; an
    editor or admin it is shared with is refused whatever the name, before any name is
    compared, and told who may. The other way, a clash answered alike to them, still has
    to leave the name as it was or give it another (`Research (2)`): either tells."""
    if folder.parent_id is None and not access.org_admin and access.user_id != created_by:
        if access.role_on(folder.path) is None:
            # Brought back with a folder below it shared with the caller: the top-level
            # folder itself is not theirs to see, nor its name or id.
            raise Refused(
                403,
                "forbidden",
                f"a folder above it would come back at the top level: only that folder's"
                f" creator or an organisation admin may {act} it",
                {"role_needed": "org_admin"},
            )
        raise Refused(
            403,
            "forbidden",
            f"only the folder's creator or an organisation admin may {act} top-level folder"
            f" {folder.name!r}: its name is checked against its creator's other folders",
            {"role_needed": "org_admin", "folder_id": str(folder.id)},
        )


def check_move_rights(
    access: Access,
    moving: Sequence[tuple[str, uuid.UUID, str, Sequence[uuid.UUID]]],
    target: Folder,
) -> None:
    """Rights do not move with what moves: a move must give the mover no more rights
    on an item than it has where the item is (an editor of a shared folder moving part
    of it into a folder of their own would become its admin), and an item leaving its
    top-level folder leaves that folder's collaborators behind, which only an admin of
    the item may decide. `moving` is each item's kind, id, name and the path it is at
    (its own folder's, for a file)."""
    arriving = access.role_on(target.path)
    for kind, item_id, name, path in moving:
        here = access.role_on(path)
        if RANK.get(arriving or "", 0) > RANK.get(here or "", 0):
            raise Refused(
                403,
                "forbidden",
                f"moving {kind} {name!r} into {target.name!r} would give you the {arriving}"
                f" role on it, where you have {here}: an admin of it may move it there",
                {"role_needed": arriving, "role": here, f"{kind}_id": str(item_id)},
            )
        if path and path[0] != target.path[0] and here != "admin":
            raise Refused(
                403,
                "forbidden",
                f"moving {kind} {name!r} out of its top-level folder takes it from that"
                f" folder's collaborators: this needs the admin role on it (you have {here})",
                {"role_needed": "admin", "role": here, f"{kind}_id": str(item_id)},
            )


def name_key(name: str) -> str:
    """What a folder's name is compared as among its siblings: case aside, and Unicode's
    forms aside (`café` composed or decomposed, which look the same), as the catalog's
    index does (projections.py `catalog.name_key`). Names are stored as given."""
    return unicodedata.normalize("NFC", name).lower()


def move(folders: Sequence[Folder], files: Sequence[File], target: Folder) -> list[Change]:
    """Move folders and files into target, all or nothing."""
    moving = {f.id for f in folders}
    for folder in folders:
        if folder.id in target.path:
            where = "itself" if folder.id == target.id else "one of its own subfolders"
            raise Conflict(
                "move_cycle",
                f"cannot move folder {folder.name!r} into {where} ({target.name!r})",
                {"folder_id": str(folder.id), "target_folder_id": str(target.id)},
            )
    names: dict[str, Folder] = {}
    for folder in folders:
        clash = names.setdefault(name_key(folder.name), folder)
        if clash is not folder:
            raise Conflict(
                "name_taken",
                f"two folders named {folder.name!r} cannot move into the same folder",
                {"name": folder.name},
            )
    changes = [
        Change(
            ev.folder_stream(f.id),
            f.version + 1,
            ev.FolderMoved(folder_id=f.id, from_parent_id=f.parent_id, to_parent_id=target.id),
        )
        for f in folders
        if f.parent_id != target.id
    ]
    changes += [
        Change(
            ev.file_stream(f.id),
            f.version + 1,
            ev.FileMoved(file_id=f.id, from_folder_id=f.folder_id, to_folder_id=target.id),
        )
        for f in files
        if f.folder_id != target.id and f.folder_id not in moving
    ]
    return changes


def delete(folders: Sequence[Folder], files: Sequence[File]) -> list[Change]:
    """Delete folders (with everything below them, as given) and files.

    Folders go first, outermost first, then files: a consumer meets the folder
    event that caused a cascade before the file events it caused, and can act on
    the whole subtree at once.
    """
    changes = [
        Change(
            ev.folder_stream(f.id),
            f.version + 1,
            ev.FolderDeleted(folder_id=f.id, parent_id=f.parent_id, trashed=True),
        )
        for f in sorted(folders, key=lambda f: len(f.path))
    ]
    # Built without validation: the values are a File's, already of the right types,
    # and a folder's cascade builds 100,000 of these.
    changes += [
        Change(
            ev.file_stream(f.id),
            f.version + 1,
            ev.FileDeleted.model_construct(
                file_id=f.id,
                folder_id=f.folder_id,
                blob_key=f.blob_key,
                sha256=f.sha256,
                trashed=True,
            ),
        )
        for f in files
    ]
    return changes


def restore(
    folders: Sequence[Folder],
    files: Sequence[File],
    path_only: Set[uuid.UUID] = frozenset(),
    *,
    partition_of: Callable[[Sequence[str]], Sequence[int]],
    stream_in: Callable[[int], str],
) -> list[Change]:
    """Trashed folders (outermost first: a parent is back before its children) and
    files back where they were; `version` is each one's version in the trash. Folders
    in `path_only` come back without the rest of what they held.

    Files come back in bounded batches (an event per file made a restore of 100,000
    files 100,000 envelopes, rows in the store, relay sends and messages for every
    consumer), per folder and per partition: a batch's stream (`stream_in`, a restore
    stream that lands in the partition asked for) is in the partition of each of its
    files' own streams (`partition_of`, the relay's choice), so a consumer meets a file's
    restore before whatever happens to it next (a move, a delete, a purge), as it did
    when the restore was in the file's own stream."""
    changes = [
        Change(
            ev.folder_stream(f.id),
            f.version + 1,
            ev.FolderRestored(
                folder_id=f.id,
                parent_id=f.parent_id,
                with_contents=f.id not in path_only,
                constituent_of=f.constituent_of,
            ),
        )
        for f in sorted(folders, key=lambda f: len(f.path))
    ]
    partitions = partition_of([ev.file_stream(f.id) for f in files])
    grouped: dict[tuple[int, uuid.UUID], list[uuid.UUID]] = {}
    for f, partition in zip(files, partitions, strict=True):
        grouped.setdefault((partition, f.folder_id), []).append(f.id)
    streams: dict[int, str] = {}
    versions: dict[int, int] = {}
    for (partition, folder_id), ids in grouped.items():
        stream = streams.get(partition) or streams.setdefault(partition, stream_in(partition))
        for i in range(0, len(ids), ev.FILES_PER_RESTORED):
            versions[partition] = versions.get(partition, 0) + 1
            changes.append(
                Change(
                    stream,
                    versions[partition],
                    ev.FilesRestored.model_construct(
                        folder_id=folder_id, file_ids=ids[i : i + ev.FILES_PER_RESTORED]
                    ),
                )
            )
    return changes


def refuse_orphans(folders: Sequence[Folder], present: set[uuid.UUID]) -> None:
    """A restored folder needs its parent: there already, or restored with it."""
    back = {f.id for f in folders}
    for f in folders:
        if f.parent_id is not None and f.parent_id not in back and f.parent_id not in present:
            raise Conflict(
                "parent_gone",
                f"folder {f.name!r} cannot be restored: the folder it was in is gone for good",
                {"folder_id": str(f.id)},
            )


def purge(folders: Sequence[Folder], files: Sequence[File]) -> list[Change]:
    """The trash lets these go: files release their blobs."""
    changes = [
        Change(ev.folder_stream(f.id), f.version + 1, ev.FolderPurged(folder_id=f.id))
        for f in folders
    ]
    changes += [
        Change(
            ev.file_stream(f.id),
            f.version + 1,
            ev.FilePurged.model_construct(file_id=f.id, blob_key=f.blob_key),
        )
        for f in files
    ]
    return changes


# Why an arrival is rejected whose folder the catalog never saw made, after waiting for
# it (`waits`): an id no folder had, or a request for the folder that was lost.
NEVER_MADE = (
    "the folder was never made: no folder with this id came while the catalog waited for it"
)


def waits(folder: Folder | None, seen: bool, overdue: bool) -> bool:
    """Whether an arrival (stored files, an image group, a DICOM series, a key path's
    subfolder) waits for its folder rather than being decided now: the folder is not
    there and the catalog has no record of it (`seen`: its stream has events, or its
    making was refused), so it may yet come, its request read later than what was
    made of it (another partition); not past the time an arrival waits (`overdue`).
    A folder deleted or purged is gone for good: what arrives for it is rejected."""
    return folder is None and not seen and not overdue


def register_upload(
    stored: FileContentStored,
    folder: Folder | None,
    constituent_of: uuid.UUID | None = None,
    *,
    never_made: bool = False,
) -> Change:
    """Content is stored: the file enters the catalog, unless its folder went away (or
    never came: `never_made`)."""
    if folder is None:
        return Change(
            ev.file_stream(stored.file_id),
            1,
            ev.UploadRejected(
                file_id=stored.file_id,
                folder_id=stored.folder_id,
                blob_key=stored.blob_key,
                reason=NEVER_MADE
                if never_made
                else "the folder was deleted while the file was uploading",
            ),
        )
    return Change(
        ev.file_stream(stored.file_id),
        1,
        ev.FileUploaded(
            file_id=stored.file_id,
            folder_id=stored.folder_id,
            name=stored.name,
            kind=stored.kind,
            size=stored.size,
            sha256=stored.sha256,
            mime_type=stored.mime_type,
            media=stored.media,
            blob_key=stored.blob_key,
            source=stored.source,
            job_id=stored.job_id,
            metadata=stored.metadata,
            constituent_of=constituent_of,
        ),
    )


def register_page(
    page: FilesStored,
    folder: Folder | None,
    *,
    partition_of: Callable[[Sequence[str]], Sequence[int]],
    stream_in: Callable[[int], str],
    never_made: bool = False,
) -> list[Change]:
    """A page of an upload's stored files enters its folder as one `FilesUploaded` a
    partition its files' streams fall in (`partition_of`), each in a new page stream
    that lands in that partition (`stream_in`), as a restore's batches do: a consumer
    meets a file's upload before its next event, in its own stream. The files' streams
    get no event (each file is at version 0). If the folder went away, each file is
    rejected in its own stream, as `register_upload` does."""
    if folder is None:
        return [register_upload(stored, None, never_made=never_made) for stored in page.each()]
    partitions = partition_of([ev.file_stream(f.file_id) for f in page.files])
    grouped: dict[int, list[ev.UploadedFile]] = {}
    for f, partition in zip(page.files, partitions, strict=True):
        grouped.setdefault(partition, []).append(trusted(ev.UploadedFile, f.__dict__))
    return [
        Change(stream_in(partition), 1, ev.FilesUploaded.page(page.folder_id, page.job_id, files))
        for partition, files in grouped.items()
    ]


# The group file's event (and the File) names this many of its images; all of them say
# which group they are in.
GROUP_IDS_SHOWN = 1000


def constituent_folder_name(name: str, taken: set[str]) -> str:
    """`<name> (images)`, or `<name> (images 2)`, ...: the first not taken among the
    folder's subfolders (`taken`: their `name_key`s)."""
    base = name[: MAX_NAME - 20]
    candidate, n = f"{base} (images)", 1
    while name_key(candidate) in taken:
        n += 1
        candidate = f"{base} (images {n})"
    return candidate


def register_image_group(
    group: ImageGroupStored,
    images: Sequence[FileContentStored],
    parent: Folder | None,
    folder_name: str,
    *,
    never_made: bool = False,
) -> list[Change]:
    """A group's images are stored: its constituent folder below the target, the images
    in it (in order) and the group's file in the target, unless the target went away."""
    first = images[0]
    if parent is None:
        # One rejection per image: each releases its own stored content.
        return [
            Change(
                ev.file_stream(image.file_id),
                1,
                ev.UploadRejected(
                    file_id=image.file_id,
                    folder_id=group.folder_id,
                    blob_key=image.blob_key,
                    reason=NEVER_MADE
                    if never_made
                    else "the folder was deleted while the image group was uploading",
                ),
            )
            for image in images
        ]
    changes = [
        Change(
            ev.folder_stream(group.constituent_folder_id),
            1,
            ev.FolderCreated(
                folder_id=group.constituent_folder_id,
                parent_id=parent.id,
                name=folder_name,
                constituent_of=group.group_file_id,
            ),
        )
    ]
    changes += [register_upload(stored, parent, group.group_file_id) for stored in images]
    changes.append(
        Change(
            ev.file_stream(group.group_file_id),
            1,
            ev.FileUploaded(
                file_id=group.group_file_id,
                folder_id=group.folder_id,
                name=group.name,
                kind=group.kind,
                size=sum(f.size for f in images),
                sha256=first.sha256,
                mime_type=first.mime_type,
                media=first.media,
                blob_key=first.blob_key,
                # Imported by reference: the group's content is its first image's object.
                source=first.source if first.source.type == "cloud" else Source(type="upload"),
                metadata=group.metadata,
                job_id=group.job_id,
                group={
                    "constituent_folder_id": str(group.constituent_folder_id),
                    "file_ids": [str(f.file_id) for f in images[:GROUP_IDS_SHOWN]],
                    "images": len(images),
                },
            ),
        )
    )
    return changes


def refuse_constituents(groups: Sequence[tuple[uuid.UUID, str]], doing: str = "delete") -> None:
    """Constituents of a group cannot be deleted or moved away from it while it stays:
    the group names them."""
    if groups:
        names = ", ".join(f"{name!r} ({gid})" for gid, name in groups)
        raise Conflict(
            "constituent_of_group",
            f"these files or folders belong to an image group; {doing} the group instead: {names}",
            {"groups": [{"id": str(gid), "name": name} for gid, name in groups]},
        )


def series_facts(series: SeriesFacts) -> dict[str, Any]:
    """The File's `dicom` object (API.md)."""
    return {
        "study_uid": series.study_uid,
        "series_uid": series.series_uid,
        "patient_id": series.patient_id,
        "modality": series.modality,
        "instances": series.count,
        "renderable_3d": series.renderable_3d,
        "missing_3d_tags": list(series.missing_3d_tags),
    }


def series_name(series: SeriesFacts) -> str:
    return f"{series.modality or 'DICOM'} series {series.series_uid}"


def register_series(
    series: SeriesAssembled, folder: Folder | None, *, never_made: bool = False
) -> Change:
    """A DICOM series is assembled: one `dicom_series` file in its folder, unless the folder
    went away (or never came: `never_made`). Its content is its first instance (in slice
    order)."""
    if folder is None:
        return Change(
            ev.file_stream(series.file_id),
            1,
            ev.UploadRejected(
                file_id=series.file_id,
                folder_id=series.folder_id,
                blob_key=series.content_key,
                reason=NEVER_MADE
                if never_made
                else "the folder was deleted while the series was imported",
            ),
        )
    return Change(
        ev.file_stream(series.file_id),
        1,
        ev.FileUploaded(
            file_id=series.file_id,
            folder_id=series.folder_id,
            name=series.name or series_name(series),
            kind="dicom_series",
            size=series.size,
            sha256=series.sha256,
            mime_type="application/dicom",
            blob_key=series.content_key,
            source=Source(type="upload"),
            dicom=series_facts(series),
            # An import's DICOM series entry's `clientMetadata`.
            metadata=series.metadata,
        ),
    )


def _numbered(changes: list[Change], versions: dict[str, int]) -> list[Change]:
    numbered = []
    for change in changes:
        versions[change.stream_id] += 1
        numbered.append(Change(change.stream_id, versions[change.stream_id], change.event))
    return numbered
