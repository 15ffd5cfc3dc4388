"""Events of the catalog context: the folder tree and file entries.

Catalog is the single writer of the file and folder lifecycle; consumers read
it from `files.catalog` alone.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.envelope import Event, trusted
from shared.contracts.limits import PAGE_ITEMS


def folder_stream(folder_id: uuid.UUID) -> str:
    return f"folder-{folder_id}"


def file_stream(file_id: uuid.UUID) -> str:
    return f"file-{file_id}"


def restore_stream(restore_id: uuid.UUID) -> str:
    """One restore from the trash: its `FilesRestored` batches, in order."""
    return f"restore-{restore_id}"


def upload_page_stream(page_id: uuid.UUID) -> str:
    """One page of an upload's files entering the catalog: its one `FilesUploaded`."""
    return f"upload-page-{page_id}"


# Files per FilesRestored event: one event stays well under Kafka's default message
# size while a folder of 100,000 files comes back in one restore.
FILES_PER_RESTORED = 5_000


# The organisation's one metadata schema.
SCHEMA_STREAM = "metadata-schema"

# The kinds a file is (from its bytes; groups, sequences and series as made): what a
# listing's or a search's `kind` filter may name, besides "folder".
FILE_KINDS = (
    "image",
    "video",
    "image_group",
    "image_sequence",
    "dicom_series",
    "pdf",
    "audio",
    "text",
    "nifti",
)


class FolderCreated(Event):
    type: ClassVar[str] = "catalog.FolderCreated"
    folder_id: uuid.UUID
    parent_id: uuid.UUID | None
    name: str
    description: str = ""
    metadata: dict[str, Any] = {}
    # The group file whose constituent images this folder holds: never synced with a dataset.
    constituent_of: uuid.UUID | None = None


class FolderRenamed(Event):
    type: ClassVar[str] = "catalog.FolderRenamed"
    folder_id: uuid.UUID
    name: str


class FolderDescribed(Event):
    """Description or client metadata changed."""

    type: ClassVar[str] = "catalog.FolderDescribed"
    folder_id: uuid.UUID
    description: str
    metadata: dict[str, Any]


class FolderMoved(Event):
    type: ClassVar[str] = "catalog.FolderMoved"
    folder_id: uuid.UUID
    from_parent_id: uuid.UUID | None
    to_parent_id: uuid.UUID


class FolderDeleted(Event):
    """`trashed`: the folder went to the trash (it may be restored until it is purged);
    deletions from before the trash were final."""

    type: ClassVar[str] = "catalog.FolderDeleted"
    folder_id: uuid.UUID
    parent_id: uuid.UUID | None
    trashed: bool = False


class FolderRestored(Event):
    """Back from the trash, under its parent as it was. `with_contents`: the files that
    went to the trash from it come back in the same transaction (their `FileRestored`
    follow); false for a folder restored only to make the path of what is restored."""

    type: ClassVar[str] = "catalog.FolderRestored"
    folder_id: uuid.UUID
    parent_id: uuid.UUID | None
    with_contents: bool = True
    # As its FolderCreated said: the group file whose images it holds (never synced).
    # None in events from before 2026-12-04 (a restored constituent folder was then
    # taken for a plain one by the datasets' mirror).
    constituent_of: uuid.UUID | None = None


class FolderPurged(Event):
    """The trash let it go: it cannot be restored any more."""

    type: ClassVar[str] = "catalog.FolderPurged"
    folder_id: uuid.UUID


class Media(BaseModel):
    model_config = ConfigDict(frozen=True)

    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None
    # An audio file's: samples a second and channels.
    sample_rate: int | None = None
    channels: int | None = None
    # A video's frames a second, and its (or an audio file's) codec as FFmpeg names it.
    fps: float | None = None
    codec: str | None = None
    # A NIfTI volume's: its shape, the size of a voxel along each axis (mm, s), and the
    # type of a voxel's value ("int16", "float32").
    dims: tuple[int, ...] | None = None
    voxel_size: tuple[float, ...] | None = None
    datatype: str | None = None


class Source(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str = "upload"
    integration_id: uuid.UUID | None = None
    key: str | None = None


class FileUploaded(Event):
    type: ClassVar[str] = "catalog.FileUploaded"
    file_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    kind: str
    size: int
    sha256: str
    mime_type: str
    media: Media = Media()
    blob_key: str
    source: Source = Source()
    job_id: uuid.UUID | None = None
    metadata: dict[str, Any] = {}
    # Kind `dicom_series`: the File's `dicom` object (API.md).
    dicom: dict[str, Any] | None = None
    # Kinds `image_group` and `image_sequence`: {constituent_folder_id, file_ids, images}:
    # `images` counts them, `file_ids` names the first 1,000 (events from before pages:
    # all, and no `images`). Each image says which group it is in (`constituent_of`).
    group: dict[str, Any] | None = None
    # An image of a group or sequence: the group's file id.
    constituent_of: uuid.UUID | None = None


class UploadedFile(BaseModel):
    """One file of a `FilesUploaded` page: what its own `FileUploaded` would say but
    for what the page says once for all (its folder, job and source)."""

    file_id: uuid.UUID
    name: str
    kind: str
    size: int
    sha256: str
    mime_type: str
    media: Media = Media()
    blob_key: str
    metadata: dict[str, Any] = {}


class FilesUploaded(Event):
    """A page of an upload's files entering their folder (from ingest's `FilesStored`),
    in a stream of the page's own (`upload_page_stream`), not the files': one event,
    row, relay send, message, decode and inbox row a page for every consumer, where a
    `FileUploaded` a file cost each of those a file. A file born in a page has no event
    in its own stream: its version starts at 0, and its next event is its stream's
    first. The page's stream lands in the partition of each of its files' streams (a
    page is cut by partition), so a consumer meets a file's upload before whatever
    happens to it next. At most limits.PAGE_ITEMS files, as the `FilesStored` page it
    comes from (so within its bytes too). `file_ids` names them again, for the audit
    (`about_each`). `FileUploaded` stays: other arrivals record it, history holds it;
    `each()` is the page as those events, for readers that take both."""

    type: ClassVar[str] = "catalog.FilesUploaded"
    about_each: ClassVar[str | None] = "file_ids"
    folder_id: uuid.UUID
    job_id: uuid.UUID | None = None
    file_ids: list[uuid.UUID] = Field(min_length=1, max_length=PAGE_ITEMS)
    files: list[UploadedFile] = Field(min_length=1, max_length=PAGE_ITEMS)

    @model_validator(mode="after")
    def _ids_name_the_files(self) -> FilesUploaded:
        if self.file_ids != [f.file_id for f in self.files]:
            raise ValueError("file_ids must list the files' ids, in order")
        return self

    @classmethod
    def page(
        cls, folder_id: uuid.UUID, job_id: uuid.UUID | None, files: list[UploadedFile]
    ) -> FilesUploaded:
        """Built without validation (the files come from a validated event)."""
        return cls.model_construct(
            folder_id=folder_id, job_id=job_id, file_ids=[f.file_id for f in files], files=files
        )

    def each(self) -> list[FileUploaded]:
        """The page as the per-file events it stands for (built, not validated: its
        fields were, as this event's)."""
        upload = Source(type="upload")
        page = {"folder_id": self.folder_id, "job_id": self.job_id, "source": upload}
        return [trusted(FileUploaded, {**f.__dict__, **page}) for f in self.files]


class DicomSeriesExtended(Event):
    """A later upload added instances to the series this file is (or, since
    dicom.SeriesShrunk, objects of a synced bucket gone took some out)."""

    type: ClassVar[str] = "catalog.DicomSeriesExtended"
    file_id: uuid.UUID
    size: int
    sha256: str
    dicom: dict[str, Any]
    # The file's content (its first instance's blob) when it changed; None: as it was.
    blob_key: str | None = None


class FileRenamed(Event):
    type: ClassVar[str] = "catalog.FileRenamed"
    file_id: uuid.UUID
    name: str


class FileMetadataChanged(Event):
    type: ClassVar[str] = "catalog.FileMetadataChanged"
    file_id: uuid.UUID
    metadata: dict[str, Any]


class FileDescribed(Event):
    type: ClassVar[str] = "catalog.FileDescribed"
    file_id: uuid.UUID
    description: str


class MetadataSchemaSet(Event):
    """The metadata schema as it now is, whole: `{key: {type, values?, dimension?,
    retired}}`, at most 64 KiB of JSON (checked before it is recorded)."""

    type: ClassVar[str] = "catalog.MetadataSchemaSet"
    keys: dict[str, Any]


class FileMoved(Event):
    type: ClassVar[str] = "catalog.FileMoved"
    file_id: uuid.UUID
    from_folder_id: uuid.UUID
    to_folder_id: uuid.UUID


class FileDeleted(Event):
    """`trashed`: the file went to the trash and keeps its blob until it is purged;
    deletions from before the trash were final."""

    type: ClassVar[str] = "catalog.FileDeleted"
    file_id: uuid.UUID
    folder_id: uuid.UUID
    blob_key: str
    sha256: str
    trashed: bool = False


class FileRestored(Event):
    """Back from the trash, in the folder it was in. Restores before `FilesRestored`
    recorded one of these per file, in its own stream; history still holds them."""

    type: ClassVar[str] = "catalog.FileRestored"
    file_id: uuid.UUID
    folder_id: uuid.UUID


class FilesRestored(Event):
    """Files back from the trash into the folder they were in, at most
    FILES_PER_RESTORED an event, in the restore's own stream (`restore_stream`): a
    folder of 100,000 files is 20 events, not 100,000. Each file keeps the version its
    stream had in the trash (its `FileDeleted`'s)."""

    type: ClassVar[str] = "catalog.FilesRestored"
    about_each: ClassVar[str | None] = "file_ids"
    folder_id: uuid.UUID
    file_ids: list[uuid.UUID]


class FilePurged(Event):
    """The trash let it go: its blob may be reclaimed."""

    type: ClassVar[str] = "catalog.FilePurged"
    file_id: uuid.UUID
    blob_key: str


class UploadRejected(Event):
    """Content arrived for a folder that no longer exists; ingest may release it."""

    type: ClassVar[str] = "catalog.UploadRejected"
    file_id: uuid.UUID
    folder_id: uuid.UUID
    blob_key: str
    reason: str


class FileTombstoned(Event):
    """The object a cloud-synced file mirrors is gone from its bucket: the file stays,
    marked, its content 410 Gone, out of the datasets synced with its folder."""

    type: ClassVar[str] = "catalog.FileTombstoned"
    file_id: uuid.UUID
    folder_id: uuid.UUID


class FileReturned(Event):
    """The object came back under its key: the same file, no longer a tombstone."""

    type: ClassVar[str] = "catalog.FileReturned"
    file_id: uuid.UUID
    folder_id: uuid.UUID


class FileContentChanged(Event):
    """A cloud-synced file's bytes changed in its bucket: read again, these are its facts."""

    type: ClassVar[str] = "catalog.FileContentChanged"
    file_id: uuid.UUID
    kind: str
    size: int
    sha256: str
    mime_type: str
    media: Media = Media()


EVENTS: tuple[type[Event], ...] = (
    FolderCreated,
    FolderRenamed,
    FolderDescribed,
    FolderMoved,
    FolderDeleted,
    FolderRestored,
    FolderPurged,
    FileUploaded,
    FilesUploaded,
    DicomSeriesExtended,
    FileRenamed,
    FileMetadataChanged,
    FileDescribed,
    MetadataSchemaSet,
    FileMoved,
    FileDeleted,
    FileRestored,
    FilesRestored,
    FilePurged,
    UploadRejected,
    FileTombstoned,
    FileReturned,
    FileContentChanged,
)
