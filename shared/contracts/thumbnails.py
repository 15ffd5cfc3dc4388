"""Events of the thumbnails context: small pictures of stored content, made by reaction.

One stream per file (`thumbnails-<file id>`): `ThumbnailsRequested` when its content is
known (the catalog's `FileUploaded`, or the DICOM context's series events), then
`ThumbnailsMade` or `ThumbnailFailed` (a file that cannot get one is known, never retried
for ever), and `ThumbnailsReleased` when the file goes. Thumbnails belong to a *source*
(what is rendered and its sha256: identical files share them); `ThumbnailsReclaimed`
records that a source no file uses any more lost its stored pictures.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from shared.contracts.envelope import Event

# The catalog's kinds that get a thumbnail; the others (audio, text) show their kind's icon.
THUMBNAILED_KINDS = frozenset(
    {"image", "image_group", "image_sequence", "video", "pdf", "dicom_series"}
)


def file_stream(file_id: uuid.UUID) -> str:
    return f"thumbnails-{file_id}"


class Rendition(BaseModel):
    """One stored picture: `size` px on the long side at most (never upscaled)."""

    model_config = ConfigDict(frozen=True)

    size: int
    blob_key: str
    sha256: str  # of the picture's bytes: its ETag
    content_type: str
    width: int
    height: int
    bytes: int


class ThumbnailsRequested(Event):
    """The file's content is known; `source` is `<renderer>:<sha256>` of what is drawn
    (the image, the group's first image, the video, the PDF, the series' middle slice)."""

    type: ClassVar[str] = "thumbnails.ThumbnailsRequested"
    file_id: uuid.UUID
    kind: str
    source: str
    blob_key: str
    # A file imported by reference (`blob_key` is the catalog's `ref:` key): the object
    # drawn, `<integration id>:<key>`, read through ingest, and its size in bytes.
    object_ref: str | None = None
    size: int | None = None


class ThumbnailsMade(Event):
    type: ClassVar[str] = "thumbnails.ThumbnailsMade"
    file_id: uuid.UUID
    source: str
    renditions: list[Rendition]


class ThumbnailFailed(Event):
    """The source cannot be drawn (`code`: unreadable, too_large, timed_out, crashed,
    content_missing, gave_up); `reason` says why, in at most a few hundred characters."""

    type: ClassVar[str] = "thumbnails.ThumbnailFailed"
    file_id: uuid.UUID
    source: str
    code: str
    reason: str


class ThumbnailsReleased(Event):
    """The file was deleted (or its series released): its thumbnails are no longer served;
    their bytes go once no file uses their source."""

    type: ClassVar[str] = "thumbnails.ThumbnailsReleased"
    file_id: uuid.UUID
    source: str


class ThumbnailsReclaimed(Event):
    """Sources no file uses any more: their stored pictures are deleted (at most 100
    sources an event)."""

    type: ClassVar[str] = "thumbnails.ThumbnailsReclaimed"
    sources: list[str]
    blob_keys: list[str]


EVENTS: tuple[type[Event], ...] = (
    ThumbnailsRequested,
    ThumbnailsMade,
    ThumbnailFailed,
    ThumbnailsReleased,
    ThumbnailsReclaimed,
)
