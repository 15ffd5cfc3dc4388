"""A job's files and errors, in pages: `GET /v1/jobs/{id}` answers the first page of
each (and how many there are), `GET /v1/jobs/{id}/files` and `/errors` the rest.

A job's lists grow with what a user sends (an import of 100,000 objects, 100,000
refused keys): the job's answer stays bounded, so a client polling a large job does
not fetch (and the gateway does not compose) the whole list each time.

A list is ingest's part (by position), then, for a DICOM job or an import or sync
that copied DICOM instances, the DICOM context's part (by place in its account). The
cursor says which part and where in it: ingest checks it, and the gateway reads it
to go on into the DICOM context's part.
"""

from __future__ import annotations

import base64
from typing import Literal

import orjson

from shared.kit.errors import Refused

# The first page of each list in a job's own answer. 1,000 is the most any list route
# gives a page (`limit` at most 1,000), and what the platform's other bounded lists
# keep (an image group's first 1,000 ids, a re-encode job's at most 1,000 files): an
# upload, a group or a re-encode job of up to 1,000 files keeps the whole answer.
PAGE = 1000

Listed = Literal["files", "errors"]
INGEST, DICOM = 0, 1
# Positions are PostgreSQL integers.
_LAST = 2**31 - 1


def encode(listed: Listed, part: int, after: int) -> str:
    """The cursor to the items after `after` (a position in ingest's part, a count of
    items in the DICOM context's)."""
    return base64.urlsafe_b64encode(orjson.dumps([listed, part, after])).decode().rstrip("=")


def decode(cursor: str | None, listed: Listed) -> tuple[int, int]:
    """(part, after) of a cursor this API gave for `listed`; no cursor: the start."""
    if not cursor:
        return INGEST, -1
    refused = Refused(
        400,
        "invalid_cursor",
        f"the cursor is not one this API gave for a job's {listed}: pass `next_cursor`"
        f" (or the job's `next_{listed}_cursor`) as it was given",
        {"cursor": cursor[:100]},
    )
    if len(cursor) > 200:
        raise refused
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        raise refused from None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != listed
        or type(value[1]) is not int
        or value[1] not in (INGEST, DICOM)
        or type(value[2]) is not int
        or not (-1 if value[1] == INGEST else 0) <= value[2] <= _LAST
    ):
        raise refused
    return value[1], value[2]
