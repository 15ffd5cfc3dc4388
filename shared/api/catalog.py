"""Folders, files, moves, deletes and search: the catalog's part of the API."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field, RootModel

from shared.api.common import IdName, Page, Shape, Strict

Role = Literal["admin", "editor", "user"]


class CloudSync(Strict):
    integration_id: uuid.UUID
    prefix: str = Field("", max_length=1024, description="keys below it; '' the whole bucket")
    sync_interval_s: int | None = Field(
        None, ge=60, le=604_800, description="absent: FILES_SYNC_INTERVAL_S"
    )
    integration_name: str | None = Field(
        None,
        description="ignored: `GET /v1/folders/{id}/sync` says it, so its `cloud_sync` may be"
        " sent back as it is; the integration is the one `integration_id` names",
    )


class NewFolder(Strict):
    name: str = Field(examples=["scans"])
    description: str = Field("", max_length=10_000)
    parent_id: uuid.UUID | None = Field(None, description="absent: a top-level folder")
    metadata: dict[str, Any] = Field(default_factory=dict, description="at most 64 KiB")
    cloud_sync: CloudSync | None = Field(
        None,
        description="the folder mirrors this prefix of the integration's bucket (its key"
        " paths become subfolders); its first sync starts at once (`sync_job_id`)",
    )


class FolderChanges(Strict):
    name: str | None = None
    description: str | None = Field(None, max_length=10_000)
    metadata: dict[str, Any] | None = None


class FileChanges(Strict):
    name: str | None = None
    description: str | None = Field(None, max_length=10_000)
    metadata: dict[str, Any] | None = None


class FileUpdate(Strict):
    id: uuid.UUID
    name: str | None = None
    description: str | None = Field(None, max_length=10_000)
    metadata: dict[str, Any] | None = Field(
        None, description="`merge`: keys set, keys given as null removed; `replace`: all of it"
    )


class FileUpdates(Strict):
    updates: list[FileUpdate] = Field(min_length=1, max_length=1000)
    metadata_mode: Literal["merge", "replace"] = "merge"


class SchemaKey(Strict):
    type: Literal["number", "text", "boolean", "datetime", "uuid", "enum", "embedding"]
    values: list[str] | None = Field(None, description="an enum's, 1 to 256", max_length=256)
    dimension: int | None = Field(None, ge=1, le=4096, description="an embedding's")
    retired: bool = Field(False, description="kept, but no longer checked nor ranged")


class MetadataSchemaChanges(Strict):
    keys: dict[str, SchemaKey] = Field(description="the whole schema: every key, by name")


class MetadataSchema(Shape):
    keys: dict[str, dict[str, Any]] = Field(
        description="{key: {type, values?, dimension?, retired}}"
    )
    version: int = Field(description="how many times it was set")


class FileLookup(Strict):
    ids: list[uuid.UUID] = Field(max_length=1000)


class Move(Strict):
    file_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100_000)
    folder_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)
    target_folder_id: uuid.UUID
    dry_run: bool = False


class Delete(Strict):
    file_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100_000)
    folder_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)
    dry_run: bool = False


class Folder(Shape):
    type: Literal["folder"] = "folder"
    id: str
    name: str
    description: str
    metadata: dict[str, Any]
    parent_id: str | None
    path: list[IdName] = Field(description="from the first folder the caller may see")
    file_count: int
    folder_count: int
    created_at: str
    created_by: str
    my_role: Role | None
    may_rename: bool = Field(
        False,
        description="whether the caller may rename it: an editor or more, and of a"
        " top-level folder only its creator or an org admin (403 `forbidden` otherwise)",
    )
    cloud_synced: bool = Field(
        False,
        description="it, or a folder above it, follows a bucket prefix: nothing can be"
        " uploaded, made or moved into it (409 `folder_cloud_synced`)",
    )
    cloud_sync: dict[str, Any] | None = Field(
        None,
        description="in the answer that made a cloud-synced folder: {integration_id, prefix,"
        " sync_interval_s}",
    )
    sync_job_id: str | None = Field(None, description="with `cloud_sync`: its first sync's job")


class LinkedDataset(IdName):
    pass


class File(Shape):
    type: Literal["file"] = "file"
    id: str
    name: str
    description: str = ""
    kind: str = Field(examples=["image"])
    folder_id: str
    size: int
    sha256: str
    mime_type: str
    media: dict[str, Any] = Field(
        description="width, height, frames, duration_s, fps, codec (video); duration_s,"
        " sample_rate, channels, codec (audio); dims, voxel_size, datatype (nifti): when"
        " known"
    )
    source: dict[str, Any] = Field(description="{type: upload|cloud, integration_id?, key?}")
    metadata: dict[str, Any]
    created_at: str
    created_by: str
    datasets: list[LinkedDataset] = Field(description="the datasets it is linked to")
    dicom: dict[str, Any] | None = None
    group: dict[str, Any] | None = None
    tombstone: bool | None = Field(
        None,
        description="true: a cloud-synced file whose object left its bucket (content 410"
        " Gone, out of the datasets synced with its folder); absent otherwise",
    )
    my_role: Role | None = Field(None, description="the caller's role on it (one file's answer)")
    duplicates: int | None = Field(
        None,
        description="how many other files the caller may see hold the same bytes (sha256),"
        " counted up to 10,000; `GET /v1/files/{id}/duplicates` lists them",
    )
    path: list[IdName] | None = Field(
        None, description="in search hits: its folder's, from the first folder the caller may see"
    )
    renditions: list[str] | None = Field(
        None,
        description="one file's answer: the renditions made of it (`web`:"
        " `GET /v1/files/{id}/content?rendition=web`, made by `POST /v1/files/re-encode`)",
    )


class Duplicates(Page):
    items: list[File]


class Folders(Page):
    items: list[Folder]


class PastFolder(Shape):
    """A subfolder in a folder's listing `as_of` a moment: as the history says it was."""

    type: Literal["folder"] = "folder"
    id: str
    name: str
    description: str
    metadata: dict[str, Any]
    parent_id: str
    created_at: str
    created_by: str


class Items(Page):
    items: list[Folder | File | PastFolder] = Field(
        description="subfolders first, then files (`as_of`: each by name, as they were)"
    )
    as_of: str | None = Field(None, description="the moment asked for, when asked")


class Found(Page):
    items: list[Folder | File] = Field(description="each with its `path`")


class Updated(Shape):
    updated: int = Field(description="how many files were named")
    items: list[File] = Field(description="the files as they now are, in the order named")


class LookedUp(Shape):
    items: list[File] = Field(description="those of the ids the caller may see, in the order asked")
    not_found: list[str] = Field(
        description="the ids that name no file, or one the caller may not see (the same)"
    )


class KindTotal(Shape):
    files: int
    bytes: int


class Summary(Shape):
    folder_id: str
    folders: int
    files: int
    bytes: int
    by_kind: dict[str, KindTotal]


class DatasetImpact(Shape):
    id: str
    name: str
    links_removed: int


class Impact(Shape):
    """A dry run's answer: what would change; nothing did."""

    dry_run: Literal[True]
    folders: int
    files: int
    datasets: list[DatasetImpact] = Field(description="the datasets the caller may see")
    hidden_datasets: int = Field(0, description="how many others would lose links too")
    trash_days: float | None = Field(
        None,
        description="a delete's: the trash keeps what is deleted this many days, restorable"
        " (`POST /v1/trash/restore`), before it goes for good",
    )


class Moved(Shape):
    moved: int


class Deleted(Shape):
    deleted: int


class MoveAnswer(RootModel[Moved | Impact]):
    """`{moved}`, or a dry run's Impact."""


class DeleteAnswer(RootModel[Deleted | Impact]):
    """`{deleted}`, or a dry run's Impact."""


class Restore(Strict):
    file_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100_000)
    folder_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)


class TrashItem(Shape):
    type: Literal["folder", "file"]
    id: str
    name: str
    parent_id: str | None = Field(None, description="a folder's: where it was")
    folder_id: str | None = Field(None, description="a file's: where it was")
    files: int | None = Field(None, description="a folder's: files that went with it")
    size: int | None = None
    kind: str | None = None
    deleted_at: str
    deleted_by: str
    purge_at: str = Field(description="when the trash lets it go (`FILES_TRASH_DAYS`)")
    my_role: Role
    may_restore: bool = Field(
        False,
        description="whether the caller may restore it: an editor or more where it was, and"
        " of a top-level folder (it, or a trashed one above it, which the restore brings back"
        " too) only its creator or an org admin (403 `forbidden` otherwise)",
    )


class Trash(Page):
    items: list[TrashItem]


class Restored(Shape):
    restored_folders: int
    restored_files: int


class Emptied(Shape):
    purged_folders: int
    purged_files: int
