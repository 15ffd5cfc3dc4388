"""Events of the ingest context: upload jobs and stored content."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from shared.contracts.catalog import Media, Source
from shared.contracts.envelope import Event


def job_stream(job_id: uuid.UUID) -> str:
    return f"upload-job-{job_id}"


class UploadJobStarted(Event):
    type: ClassVar[str] = "ingest.UploadJobStarted"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    total: int
    # "dicom": the DICOM context reads the parts; the job's progress is its account.
    kind: str = "upload"


class FileContentStored(Event):
    """Bytes are in the blob store, hashed and sniffed: catalog registers the file."""

    type: ClassVar[str] = "ingest.FileContentStored"
    job_id: uuid.UUID
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
    metadata: dict[str, Any] = {}


class FileContentRejected(Event):
    type: ClassVar[str] = "ingest.FileContentRejected"
    job_id: uuid.UUID
    name: str
    code: str
    message: str
    details: dict[str, Any] = {}


class DicomInstanceStored(Event):
    """One part of a DICOM upload is in the blob store (not yet read): the DICOM context
    reads its headers and assembles series."""

    type: ClassVar[str] = "ingest.DicomInstanceStored"
    job_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    blob_key: str
    sha256: str
    size: int


class ImageGroupStored(Event):
    """The images of a group or sequence are stored (sniffed, all images): the catalog
    registers, at once, the constituent folder, the images in it (in order) and the
    group's file in the target folder."""

    type: ClassVar[str] = "ingest.ImageGroupStored"
    job_id: uuid.UUID
    group_file_id: uuid.UUID
    folder_id: uuid.UUID
    name: str
    kind: str  # "image_group" | "image_sequence"
    constituent_folder_id: uuid.UUID
    files: list[FileContentStored]


class UploadJobFinished(Event):
    type: ClassVar[str] = "ingest.UploadJobFinished"
    job_id: uuid.UUID
    status: str  # "done" | "failed"


EVENTS: tuple[type[Event], ...] = (
    UploadJobStarted,
    FileContentStored,
    FileContentRejected,
    DicomInstanceStored,
    UploadJobFinished,
    ImageGroupStored,
)
