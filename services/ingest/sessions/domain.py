"""Upload sessions, pure: large files sent in parts, straight to the store, resumable.

A session plans its parts when it opens; the client sends them in any order, as
often as it likes (a part sent again replaces the earlier one), asks which are
stored, and completes the session once all are. An abandoned session expires.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from services.ingest.metadata.domain import bounded
from services.ingest.uploads.domain import StoredFile, check_file_name, content_stored
from shared.api.common import Strict
from shared.contracts import ingest as ev
from shared.contracts.envelope import Change, Event, appended
from shared.kit.access import RANK, Access
from shared.kit.errors import Refused, clipped

MiB = 1024 * 1024
# S3's rules: at most 10,000 parts, each at least 5 MiB except the last, at most 5 GiB.
MAX_PARTS = 10_000
MIN_PART = 5 * MiB
MAX_PART = 5 * 1024 * MiB
# The largest object S3 stores.
MAX_SIZE = 5 * 1024 * 1024 * MiB


@dataclass(frozen=True)
class Part:
    number: int
    size: int


@dataclass(frozen=True)
class StoredPart:
    number: int
    size: int
    etag: str


def part_size_for(size: int, wanted: int) -> int:
    """`wanted`, grown in whole MiB when 10,000 parts of it would not hold the file."""
    if size > wanted * MAX_PARTS:
        return math.ceil(size / MAX_PARTS / MiB) * MiB
    return wanted


def plan(size: int, part_size: int) -> list[Part]:
    """The parts of a file of `size` bytes, all of `part_size_for` bytes but the last."""
    part_size = part_size_for(size, part_size)
    count = max(1, math.ceil(size / part_size))
    return [Part(n, min(part_size, size - (n - 1) * part_size)) for n in range(1, count + 1)]


def _refusal(code: str, message: str, **details: object) -> PydanticCustomError:
    """A problem pydantic carries with our code (the field's), to become that refusal."""
    return PydanticCustomError(code, message, details)


def _an_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class NewSession(Strict):
    """`POST /v1/folders/{id}/uploads`: the file to send in parts. Validated with the
    service's default part size and longest lifetime in its context; each field's
    problem has the field's own code (`invalid_size`, `invalid_part_size`, ...)."""

    name: str | None = Field(None, validate_default=True)
    size: int
    part_size: int | None = None
    expires_in_s: float | None = None
    # The file's metadata: bounded and refused as an upload's (metadata/domain.py), once
    # the name it is refused with is known (check_open).
    metadata: object = None

    @field_validator("name", mode="before")
    @classmethod
    def _a_file_name(cls, name: object) -> str:
        if name is not None and not isinstance(name, str):
            raise _refusal("invalid_name", "name must be the file's name, a string")
        try:
            return check_file_name(name)
        except Refused as refused:
            raise _refusal(refused.code, refused.message, **refused.details) from None

    @field_validator("size", mode="before")
    @classmethod
    def _some_bytes(cls, size: object) -> int:
        if not _an_int(size):
            raise _refusal("invalid_size", "size must be the file's size in bytes, an integer")
        assert isinstance(size, int)
        if size < 1:
            raise _refusal("invalid_size", "an upload session needs at least 1 byte", size=size)
        if size > MAX_SIZE:
            raise _refusal(
                "file_too_large",
                f"a file can be at most {MAX_SIZE} bytes (5 TiB)",
                size=size,
                limit=MAX_SIZE,
            )
        return size

    @field_validator("part_size", mode="before")
    @classmethod
    def _a_part_size(cls, part_size: object) -> int | None:
        if part_size is None:
            return None
        if not _an_int(part_size) or not MIN_PART <= part_size <= MAX_PART:  # type: ignore[operator]
            raise _refusal(
                "invalid_part_size",
                f"part_size must be a number of bytes between {MIN_PART} and {MAX_PART}",
                part_size=part_size,
            )
        assert isinstance(part_size, int)
        return part_size

    @field_validator("expires_in_s", mode="before")
    @classmethod
    def _a_lifetime(cls, lifetime: object, info: ValidationInfo) -> float | None:
        if lifetime is None:
            return None
        longest = float((info.context or {})["max_lifetime"])
        number = isinstance(lifetime, int | float) and not isinstance(lifetime, bool)
        if not number or not 1 <= lifetime <= longest:  # type: ignore[operator]
            raise _refusal(
                "invalid_expiry",
                f"expires_in_s must be between 1 and {longest:g} seconds",
                expires_in_s=lifetime,
            )
        return float(lifetime)  # type: ignore[arg-type]


# A refused field's status: a file too large is 413, the rest 422.
STATUS = {"file_too_large": 413}


def check_open(
    body: object, part_size: int, max_lifetime: float
) -> tuple[str, int, int, float, dict[str, Any]]:
    """Name, size, part size, lifetime and metadata of a session to open (`part_size`
    and `max_lifetime` the service's when the body gives none; no metadata, `{}`), or
    the refusal of its first problem, with that field's code. The metadata's type
    against the schema is the caller's to check (it needs the schema)."""
    try:
        given = NewSession.model_validate(body, context={"max_lifetime": max_lifetime})
    except ValidationError as error:
        first = error.errors()[0]
        # Clipped: a body's unknown key may be 16 MB.
        field = clipped(".".join(str(p) for p in first["loc"]) or "body")
        if first["type"] == "extra_forbidden":
            raise Refused(
                422,
                "invalid_request",
                f"{field}: is not a field of an upload session",
                {
                    "fields": [{"field": field, "problem": "is not a field of an upload session"}],
                    "faults": error.error_count(),
                },
            ) from None
        if first["type"] == "missing":
            raise Refused(
                422, "invalid_size", "size must be the file's size in bytes, an integer"
            ) from None
        code = first["type"]
        raise Refused(STATUS.get(code, 422), code, first["msg"], first.get("ctx") or {}) from None
    assert given.name is not None
    return (
        given.name,
        given.size,
        given.part_size if given.part_size is not None else part_size,
        given.expires_in_s if given.expires_in_s is not None else float(max_lifetime),
        {} if given.metadata is None else bounded(given.metadata, given.name),
    )


def open_session(
    session_id: uuid.UUID,
    folder_id: uuid.UUID,
    name: str,
    size: int,
    part_size: int,
    store_key: str,
    upload_id: str,
    expires_at: datetime,
    key_id: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[Change]:
    events: list[Event] = [
        ev.UploadJobStarted(job_id=session_id, folder_id=folder_id, total=1, kind="session"),
        ev.UploadSessionOpened(
            session_id=session_id,
            folder_id=folder_id,
            name=name,
            size=size,
            part_size=part_size_for(size, part_size),
            parts=len(plan(size, part_size)),
            store_key=store_key,
            upload_id=upload_id,
            expires_at=expires_at,
            key_id=key_id,
            metadata=metadata or {},
        ),
    ]
    return appended(ev.job_stream(session_id), events)


def missing(parts: Sequence[Part], stored: Sequence[StoredPart]) -> list[int]:
    """Numbers of the planned parts not stored, or stored with the wrong size."""
    have = {p.number: p.size for p in stored}
    return [p.number for p in parts if have.get(p.number) != p.size]


def check_complete(parts: Sequence[Part], stored: Sequence[StoredPart]) -> None:
    gaps = missing(parts, stored)
    if gaps:
        wrong = {p.number: p.size for p in stored if p.number in gaps}
        raise Refused(
            409,
            "parts_missing",
            f"{len(gaps)} of {len(parts)} parts are not stored"
            + (" or have the wrong size" if wrong else "")
            + ": send them, then complete the session again",
            {
                "missing_parts": gaps[:100],
                "missing_count": len(gaps),
                "wrong_sizes": {str(n): s for n, s in list(wrong.items())[:100]},
            },
        )


def complete_session(
    session_id: uuid.UUID,
    folder_id: uuid.UUID,
    version: int,
    file: StoredFile,
    metadata: dict[str, Any] | None = None,
) -> list[Change]:
    """The session's file is stored: the catalog registers it, with the metadata the
    session was opened with (in this one event: never listed without it)."""
    events: list[Event] = [
        content_stored(session_id, folder_id, file, metadata),
        ev.UploadJobFinished(job_id=session_id, status="done"),
    ]
    return appended(ev.job_stream(session_id), events, after=version)


def restore_metadata(
    session_id: uuid.UUID, version: int, file_id: uuid.UUID, metadata: dict[str, Any]
) -> list[Change]:
    """The session was completed by a replica of a version before sessions took
    metadata: its file was stored without it, which the catalog is now given."""
    events: list[Event] = [
        ev.UploadSessionMetadataRestored(session_id=session_id, file_id=file_id, metadata=metadata)
    ]
    return appended(ev.job_stream(session_id), events, after=version)


def end_session(session_id: uuid.UUID, version: int, status: str) -> list[Change]:
    """An abandoned session expired, or its client aborted it: its parts are gone."""
    events: list[Event] = [
        ev.UploadSessionEnded(session_id=session_id, status=status),
        ev.UploadJobFinished(job_id=session_id, status=status),
    ]
    return appended(ev.job_stream(session_id), events, after=version)


def expires(now: datetime, ttl_s: float) -> datetime:
    return now + timedelta(seconds=ttl_s)


class Opener(Protocol):
    """Who opened a session, as the gateway signs them (shared/kit/identity.py Identity)."""

    @property
    def actor(self) -> str: ...
    @property
    def access(self) -> str | None: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def folder_path(self) -> str | None: ...


class SessionRow(Protocol):
    """A session's row as the handlers read it (an asyncpg record), by column name."""

    def __getitem__(self, column: str, /) -> Any: ...


def check_opener(row: SessionRow, opener: Opener | None) -> None:
    """A session takes parts and is completed only while the API key that opened it is
    valid and its user may still upload into its folder (the editor role there): the
    gateway signs, for the opener, the key's id and their access as the ACL context says
    them now, and the folder's path as the catalog does; decided here, from that. A
    session opened before keys were recorded (no `key_id`) is left to its signature."""
    if row["key_id"] is None:
        return
    session_id = row["id"]
    if (
        opener is None
        or opener.access is None
        or opener.actor != row["created_by"]
        or opener.key_id != str(row["key_id"])
    ):
        raise Refused(
            403,
            "session_key_revoked",
            f"the API key that opened upload session {session_id} was revoked: the session"
            " takes no more parts and cannot be completed; open a new one with a valid key",
            {"session_id": str(session_id)},
        )
    folder_id = row["folder_id"]
    try:
        path = [uuid.UUID(p) for p in (opener.folder_path or "").split(",") if p]
    except ValueError:
        path = []
    role = Access.decode(opener.access).role_on(path) if path and path[-1] == folder_id else None
    if role is None or RANK[role] < RANK["editor"]:
        raise Refused(
            403,
            "upload_right_lost",
            f"the user who opened upload session {session_id} may no longer upload into"
            f" folder {folder_id} (the editor role is needed): the session takes no more"
            " parts and cannot be completed",
            {"session_id": str(session_id), "folder_id": str(folder_id), "role_needed": "editor"},
        )


async def at_most(chunks: AsyncIterable[bytes], size: int, number: int) -> AsyncIterator[bytes]:
    """The part's bytes, refused as soon as they run past its planned size: a signed URL
    does not buy unlimited disk."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise Refused(
                413,
                "part_too_large",
                f"part {number} is {size} bytes; more were sent",
                {"part": number, "size": size},
            )
        yield chunk
