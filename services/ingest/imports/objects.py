"""A thumbnail worker's reads of a file imported by reference (api.py `object_range`):
only of the bytes the file is. Pictures are stored by the sha256 of what they are drawn
from, shared by every file of those bytes; the object in a customer's bucket may change
at any time, so each range is read from the bucket with `If-Match` of the ETag the read
of those bytes answered (its import's, or the sync's that last found it changed).

An ETag also changes when the bytes do not: a copy of the object onto itself (to apply
SSE-KMS, metadata, a storage class), a re-upload in parts. So a 412 is checked once: the
object is hashed (read whole, streamed, nothing kept); the same sha256 records its new
ETag, and the read goes on by it; another is `content_changed`."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections import OrderedDict

from services.ingest.imports.buckets.port import CONTENT_CHANGED, CloudProblem
from services.ingest.imports.handlers import PASSING_PROBLEMS, Integrations
from shared.kit.errors import Refused

# Objects found to be other bytes than recorded with an ETag, (integration, key, ETag):
# not hashed again for each of a drawing's ranges, nor by each worker that tries. Until
# a sync records the object's new bytes (and ETag), a read names the same ETag. Bounded:
# one forgotten is hashed once more.
_OTHER_BYTES: OrderedDict[tuple[uuid.UUID, str, str], None] = OrderedDict()
OTHER_BYTES_KEPT = 4096
# One hash of an object at a time: the reads that meet the same 412 together wait for
# it. Kept while a read holds or waits for it.
_HASHING: weakref.WeakValueDictionary[tuple[uuid.UUID, str], asyncio.Lock] = (
    weakref.WeakValueDictionary()
)
# A whole object's hash may take far longer than a drawing waits for a read (a 4 GB
# video: minutes, and the worker gives up after 30 s, recording `timed_out`): it goes on
# in the background while the read is answered 503 after this long, which the worker
# takes as its source away for now, so the file is drawn again later, once the new ETag
# is recorded. A hash of the same object and ETag is joined, not started again.
HASH_WAIT_S = 10.0
_CHECKS: dict[tuple[uuid.UUID, str, str], asyncio.Task[str | None]] = {}
# Whole-object reads at once, a process: a bucket re-encrypted in place (every ETag
# changed) would otherwise start one for every drawing under way.
_HASH_SLOTS = asyncio.Semaphore(2)


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
    the object hashes to another). A file recorded without them (imported before
    2026-12-07, or its object's ETag weak) or none named: read as the object is."""
    if file_id is None:
        return await integrations.read_range(integration_id, key, first, last, None)
    recorded = await integrations.pool.fetchrow(
        """SELECT sha256, etag FROM ingest.cloud_files
           WHERE file_id = $1 AND integration_id = $2 AND key = $3""",
        file_id,
        integration_id,
        key,
    )
    if recorded is None:
        return await integrations.read_range(integration_id, key, first, last, None)
    if sha256 is not None and recorded["sha256"] not in (None, sha256):
        raise Refused(412, CONTENT_CHANGED, f"the file's object is no longer its bytes {sha256}")
    etag = recorded["etag"]
    try:
        return await integrations.read_range(integration_id, key, first, last, etag)
    except Refused as refused:
        if refused.status != 412 or recorded["sha256"] is None:
            raise
        changed = refused
    etag = await _checked(integrations, integration_id, key, file_id, recorded["sha256"], etag)
    if etag is None:
        raise changed
    return await integrations.read_range(integration_id, key, first, last, etag)


async def _checked(
    integrations: Integrations,
    integration_id: uuid.UUID,
    key: str,
    file_id: uuid.UUID,
    sha256: str,
    etag: str,
) -> str | None:
    """`_same_bytes`, run in the background and waited for HASH_WAIT_S at most."""
    at = (integration_id, key, etag)
    task = _CHECKS.get(at)
    if task is None:
        task = asyncio.create_task(
            _same_bytes(integrations, integration_id, key, file_id, sha256, etag)
        )
        _CHECKS[at] = task
        task.add_done_callback(lambda done: _ended(at, done))
    try:
        return await asyncio.wait_for(asyncio.shield(task), HASH_WAIT_S)
    except TimeoutError:
        raise Refused(
            503,
            "object_being_checked",
            "the object's ETag changed; its bytes are being checked: try again shortly",
            {"retry": True},
        ) from None


def _ended(at: tuple[uuid.UUID, str, str], done: asyncio.Task[str | None]) -> None:
    _CHECKS.pop(at, None)
    if not done.cancelled():
        done.exception()  # retrieved: a check nobody waited for to its end fails quietly


async def _same_bytes(
    integrations: Integrations,
    integration_id: uuid.UUID,
    key: str,
    file_id: uuid.UUID,
    sha256: str,
    etag: str,
) -> str | None:
    """The object's ETag now, recorded for its files of `sha256` recorded with `etag`, if
    it is still those bytes; None if it is others."""
    hashing = _HASHING.setdefault((integration_id, key), asyncio.Lock())
    async with hashing:
        # Another read may have found it meanwhile, either way.
        if (integration_id, key, etag) in _OTHER_BYTES:
            return None
        now = await integrations.pool.fetchval(
            "SELECT etag FROM ingest.cloud_files WHERE file_id = $1", file_id
        )
        if now is not None and now != etag:
            return str(now)
        found = await integrations.bucket(integration_id)
        if found is None:
            raise Refused(
                404,
                "integration_removed",
                f"the file's integration {integration_id} was removed",
                {"integration_id": str(integration_id)},
            )
        try:
            async with _HASH_SLOTS:
                hashed, now = await found[1].hashed(key)
        except CloudProblem as problem:
            status = 503 if problem.code in PASSING_PROBLEMS else 404
            raise Refused(status, problem.code, problem.message) from None
        if hashed != sha256 or now is None:
            _OTHER_BYTES[(integration_id, key, etag)] = None
            while len(_OTHER_BYTES) > OTHER_BYTES_KEPT:
                _OTHER_BYTES.popitem(last=False)
            return None
        # Written here, not by an event: a rebuild of the table from events brings back
        # the ETag of before, and the first read after hashes the object once more.
        await integrations.pool.execute(
            """UPDATE ingest.cloud_files SET etag = $4
               WHERE integration_id = $1 AND key = $2 AND sha256 = $3 AND etag = $5""",
            integration_id,
            key,
            sha256,
            now,
            etag,
        )
        return now
