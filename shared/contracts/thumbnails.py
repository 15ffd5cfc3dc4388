"""Events of the thumbnails context: small pictures of stored content, made by reaction.

One stream per file (`thumbnails-<file id>`): `ThumbnailsRequested` when its content is
known (the catalog's `FileUploaded`, or the DICOM context's series events), then
`ThumbnailsMade` or `ThumbnailFailed` (a file that cannot get one is known, never retried
for ever), and `ThumbnailsReleased` when the file goes. Thumbnails belong to a *source*
(what is rendered and its sha256: identical files share them); `ThumbnailsReclaimed`
records that a source no file uses any more lost its stored pictures.

Since pages, a request and a drawing are recorded a batch at a time:
`ThumbnailsRequestedPage` (the files one reaction asks for, by cause) and
`ThumbnailsSettled` (the files one recorded batch settles), each in a stream of its own
(`page_stream`), at most limits.PAGE_ITEMS files and PAGE_BYTES of them, naming their
files in `file_ids` for the audit. A file's stream gets no event from them; the read
model's version of a file counts them with its own events, and its own stream's next
event (its release) takes the version after that (its stream skips the pages' numbers).
Nothing else orders them, nor needs to: the read model is fed inline, in the transaction
that records them, and rebuilt in the store's order; a file is asked for and settled
under its source's lock, not by its stream's version; no other context reads this one's
topic. The per-file events stay readable (history holds them):
a page's `each()` is the page as those events.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.envelope import Event
from shared.contracts.limits import PAGE_ITEMS

# The catalog's kinds that get a thumbnail; the others (audio, text) show their kind's icon.
THUMBNAILED_KINDS = frozenset(
    {"image", "image_group", "image_sequence", "video", "pdf", "dicom_series"}
)


def file_stream(file_id: uuid.UUID) -> str:
    return f"thumbnails-{file_id}"


def page_stream(page_id: uuid.UUID) -> str:
    """One page of requests or of settled files: its one event."""
    return f"thumbnails-page-{page_id}"


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


class RequestedFile(BaseModel):
    """A file of a `ThumbnailsRequestedPage`: the fields of its `ThumbnailsRequested`."""

    model_config = ConfigDict(frozen=True)

    file_id: uuid.UUID
    kind: str
    source: str
    blob_key: str
    object_ref: str | None = None
    size: int | None = None


class SettledFile(BaseModel):
    """A file of a `ThumbnailsSettled`: its pictures (`renditions`), or why it has none
    (`code`, `reason`, as `ThumbnailFailed`'s)."""

    model_config = ConfigDict(frozen=True)

    file_id: uuid.UUID
    source: str
    renditions: list[Rendition] | None = None
    code: str | None = None
    reason: str | None = None
    # Failed for this file alone, its source not settled: drawn from an imported object,
    # which may no longer be the bytes of the source's sha256 (since 2026-12-07).
    alone: bool = False

    @model_validator(mode="after")
    def _made_or_failed(self) -> SettledFile:
        if (self.renditions is None) == (self.code is None):
            raise ValueError("a settled file has either renditions or a failure code")
        return self


def _ids_name(ids: list[uuid.UUID], files: list[RequestedFile] | list[SettledFile]) -> None:
    if ids != [f.file_id for f in files]:
        raise ValueError("file_ids must list the files' ids, in order")
    if len(set(ids)) != len(ids):
        raise ValueError("a file is in a page once")


class ThumbnailsRequestedPage(Event):
    """Files whose content is known, asked for by one cause (a page of uploads, a series'
    slices): one event where a `ThumbnailsRequested` a file cost a store row, a relay
    send and a message each."""

    type: ClassVar[str] = "thumbnails.ThumbnailsRequestedPage"
    about_each: ClassVar[str | None] = "file_ids"
    file_ids: list[uuid.UUID] = Field(min_length=1, max_length=PAGE_ITEMS)
    files: list[RequestedFile] = Field(min_length=1, max_length=PAGE_ITEMS)

    @model_validator(mode="after")
    def _ids_name_the_files(self) -> ThumbnailsRequestedPage:
        _ids_name(self.file_ids, self.files)
        return self

    @classmethod
    def page(cls, files: list[RequestedFile]) -> ThumbnailsRequestedPage:
        return cls(file_ids=[f.file_id for f in files], files=files)

    def each(self) -> list[ThumbnailsRequested]:
        return [ThumbnailsRequested.model_construct(**dict(f)) for f in self.files]


class ThumbnailsSettled(Event):
    """Files a drawing settled (or an identical file's pictures settled at once), each
    with its source and its pictures or its failure: one event a recorded batch (and
    cause) where a `ThumbnailsMade` or `ThumbnailFailed` a file was recorded."""

    type: ClassVar[str] = "thumbnails.ThumbnailsSettled"
    about_each: ClassVar[str | None] = "file_ids"
    file_ids: list[uuid.UUID] = Field(min_length=1, max_length=PAGE_ITEMS)
    files: list[SettledFile] = Field(min_length=1, max_length=PAGE_ITEMS)

    @model_validator(mode="after")
    def _ids_name_the_files(self) -> ThumbnailsSettled:
        _ids_name(self.file_ids, self.files)
        return self

    @classmethod
    def page(cls, files: list[SettledFile]) -> ThumbnailsSettled:
        return cls(file_ids=[f.file_id for f in files], files=files)

    def each(self) -> list[ThumbnailsMade | ThumbnailFailed]:
        return [
            ThumbnailsMade.model_construct(
                file_id=f.file_id, source=f.source, renditions=f.renditions
            )
            if f.renditions is not None
            else ThumbnailFailed.model_construct(
                file_id=f.file_id, source=f.source, code=f.code, reason=f.reason or ""
            )
            for f in self.files
        ]


EVENTS: tuple[type[Event], ...] = (
    ThumbnailsRequested,
    ThumbnailsMade,
    ThumbnailFailed,
    ThumbnailsReleased,
    ThumbnailsReclaimed,
    ThumbnailsRequestedPage,
    ThumbnailsSettled,
)
