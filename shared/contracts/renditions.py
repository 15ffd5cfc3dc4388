"""Events of re-encoding (issue 17): a browser-playable rendition of a video, made on ask.

Recorded by the thumbnails service (which also draws pictures of stored content) and
published on its topic. A job stream (`reencode-<job id>`) holds what was asked
(`ReEncodeRequested`, at most MAX_FILES ids); each file's stream (`renditions-<file id>`)
holds its web rendition's life: `WebRenditionRequested`, then `WebRenditionMade` or
`WebRenditionFailed` (known, never retried for ever), and `WebRenditionReleased` when the
file is purged (its bytes are deleted with it).
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import Field

from shared.contracts.envelope import Event

# Files one re-encode job may name: the job's event stays bounded.
MAX_FILES = 1000
# The kinds that get a web rendition.
RE_ENCODED_KINDS = frozenset({"video", "image_sequence"})
WEB = "web"


def job_stream(job_id: uuid.UUID) -> str:
    return f"reencode-{job_id}"


def file_stream(file_id: uuid.UUID) -> str:
    return f"renditions-{file_id}"


class ReEncodeRequested(Event):
    """A person asked for web renditions of these files (their rights checked by the
    catalog first); `failed` names those refused at once (`{file_id, code, reason}`)."""

    type: ClassVar[str] = "thumbnails.ReEncodeRequested"
    job_id: uuid.UUID
    file_ids: list[uuid.UUID] = Field(max_length=MAX_FILES)
    created_by: str
    failed: list[dict[str, str]] = Field(default_factory=list, max_length=MAX_FILES)


class WebRenditionRequested(Event):
    """The file's web rendition is to be made from `sources`: the video's blob key, or a
    sequence's images' in order (the catalog names its first 1,000)."""

    type: ClassVar[str] = "thumbnails.WebRenditionRequested"
    file_id: uuid.UUID
    job_id: uuid.UUID
    kind: str
    sources: list[str] = Field(max_length=1000)


class WebRenditionMade(Event):
    type: ClassVar[str] = "thumbnails.WebRenditionMade"
    file_id: uuid.UUID
    job_id: uuid.UUID
    blob_key: str
    bytes: int
    width: int
    height: int
    duration_s: float
    audio: bool


class WebRenditionFailed(Event):
    """It cannot be made (`code`: unreadable, not_video, too_large, too_long, timed_out,
    crashed, content_missing, imported, gave_up); `reason` says why, briefly."""

    type: ClassVar[str] = "thumbnails.WebRenditionFailed"
    file_id: uuid.UUID
    job_id: uuid.UUID
    code: str
    reason: str


class WebRenditionReleased(Event):
    """The file was purged: its rendition is no longer served and its bytes are deleted."""

    type: ClassVar[str] = "thumbnails.WebRenditionReleased"
    file_id: uuid.UUID
    blob_key: str | None = None


EVENTS: tuple[type[Event], ...] = (
    ReEncodeRequested,
    WebRenditionRequested,
    WebRenditionMade,
    WebRenditionFailed,
    WebRenditionReleased,
)
