"""A thumbnail worker's reads of a file imported by reference (api.py `object_range`):
only of the bytes the file is. Pictures are stored by the sha256 of what they are drawn
from, shared by every file of those bytes; the object in a customer's bucket may change
at any time, so each range is read from the bucket with `If-Match` of the ETag the read
of those bytes answered (its import's, or the sync's that last found it changed)."""

from __future__ import annotations

import uuid

from services.ingest.imports.buckets.port import CONTENT_CHANGED
from services.ingest.imports.handlers import Integrations
from shared.kit.errors import Refused


async def read_range(
    integrations: Integrations,
    integration_id: uuid.UUID,
    key: str,
    first: int,
    last: int,
    file_id: uuid.UUID | None,
    sha256: str | None,
) -> bytes:
    """Bytes `first` to `last` of the object, as `file_id`'s bytes of `sha256`: a 412
    `content_changed` once the object is another (the file recorded another sha256, or
    the bucket another ETag). A file recorded without them (imported before 2026-12-07)
    or none named: read as the object is."""
    etag = None
    if file_id is not None:
        recorded = await integrations.pool.fetchrow(
            """SELECT sha256, etag FROM ingest.cloud_files
               WHERE file_id = $1 AND integration_id = $2 AND key = $3""",
            file_id,
            integration_id,
            key,
        )
        if recorded is not None:
            if sha256 is not None and recorded["sha256"] not in (None, sha256):
                raise Refused(
                    412, CONTENT_CHANGED, f"the file's object is no longer its bytes {sha256}"
                )
            etag = recorded["etag"]
    return await integrations.read_range(integration_id, key, first, last, etag)
