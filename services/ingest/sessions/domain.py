"""Upload sessions, pure: large files sent in parts, straight to the store, resumable.

A session plans its parts when it opens; the client sends them in any order, as
often as it likes (a part sent again replaces the earlier one), asks which are
stored, and completes the session once all are. An abandoned session expires.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.ingest.uploads.domain import StoredFile, check_file_name, content_stored
from shared.contracts import ingest as ev
from shared.contracts.envelope import Change, Event, appended
from shared.kit.errors import Refused

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


def check_open(
    name: object, size: object, part_size: object, lifetime: object, max_lifetime: float
) -> tuple[str, int, int, float]:
    """Name, size, part size and lifetime of a session to open, or the refusal that
    names the problem."""
    if name is not None and not isinstance(name, str):
        raise Refused(422, "invalid_name", "name must be the file's name, a string")
    name = check_file_name(name)
    if isinstance(size, bool) or not isinstance(size, int):
        raise Refused(422, "invalid_size", "size must be the file's size in bytes, an integer")
    if size < 1:
        raise Refused(
            422, "invalid_size", "an upload session needs at least 1 byte", {"size": size}
        )
    if size > MAX_SIZE:
        raise Refused(
            413,
            "file_too_large",
            f"a file can be at most {MAX_SIZE} bytes (5 TiB)",
            {"size": size, "limit": MAX_SIZE},
        )
    if (
        isinstance(part_size, bool)
        or not isinstance(part_size, int)
        or not MIN_PART <= part_size <= MAX_PART
    ):
        raise Refused(
            422,
            "invalid_part_size",
            f"part_size must be a number of bytes between {MIN_PART} and {MAX_PART}",
            {"part_size": part_size},
        )
    if (
        isinstance(lifetime, bool)
        or not isinstance(lifetime, int | float)
        or not 1 <= lifetime <= max_lifetime
    ):
        raise Refused(
            422,
            "invalid_expiry",
            f"expires_in_s must be between 1 and {max_lifetime:g} seconds",
            {"expires_in_s": lifetime},
        )
    return name, size, part_size, float(lifetime)


def open_session(
    session_id: uuid.UUID,
    folder_id: uuid.UUID,
    name: str,
    size: int,
    part_size: int,
    store_key: str,
    upload_id: str,
    expires_at: datetime,
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
    session_id: uuid.UUID, folder_id: uuid.UUID, version: int, file: StoredFile
) -> list[Change]:
    """The session's file is stored: the catalog registers it."""
    events: list[Event] = [
        content_stored(session_id, folder_id, file),
        ev.UploadJobFinished(job_id=session_id, status="done"),
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
