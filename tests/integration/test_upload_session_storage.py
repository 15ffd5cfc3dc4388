"""Completing an upload session when the local file store cannot write the file it joins
from the parts: the disk's fault (507 full, 503 otherwise), never a 500, nothing
recorded, and the session still open with its parts, so completing again does it."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from services.ingest.collector.projections import blob_refs
from services.ingest.jobs.projections import jobs
from services.ingest.sessions.handlers import Sessions, _signature
from services.ingest.sessions.projections import sessions
from shared.contracts.envelope import Cause
from shared.kit.blobs import LocalBlobStore, content_key
from shared.kit.errors import Refused
from shared.kit.service import Parts
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, fresh_database
from tests.unit.test_upload_storage import DISK_FAILURES

CAUSE = Cause(actor="test", correlation_id="test")
KEY = b"upload part urls of the test"


@dataclass
class Context:
    sessions: Sessions
    blobs: LocalBlobStore
    pool: asyncpg.Pool


@pytest.fixture
async def context(database_url: str, tmp_path: Path) -> AsyncIterator[Context]:
    async with fresh_database(database_url, "t_sessions") as pool:
        parts = Parts("ingest", Settings(service_key=SERVICE_KEY, data_dir=tmp_path))
        parts.pool = pool
        async with pool.acquire() as conn:
            await parts.store.setup(conn)
            for projection in (jobs, sessions, blob_refs):
                await projection.setup(conn)
        blobs = LocalBlobStore(tmp_path / "blobs")
        yield Context(Sessions(parts, blobs, KEY), blobs, pool)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


@DISK_FAILURES
async def test_a_disk_failing_as_a_session_completes_is_the_stores_fault_and_keeps_it_open(
    context: Context, monkeypatch: pytest.MonkeyPatch, code: int, status: int, named: str
) -> None:
    data = b"a text file sent in one part\n" * 100
    opened, _ = await context.sessions.open(
        CAUSE, uuid.uuid4(), {"name": "notes.txt", "size": len(data)}
    )
    session_id = uuid.UUID(opened["id"])
    expires = int(time.time() + 3600)
    await context.sessions.put_part(
        session_id, 1, expires, _signature(KEY, session_id, 1, expires), chunks(data)
    )

    def disk_says_no(*args: object) -> None:
        raise OSError(code, "the disk said no", str(context.blobs.root / "incoming" / "x"))

    monkeypatch.setattr(LocalBlobStore, "_join", disk_says_no)
    with pytest.raises(Refused) as refused:
        await context.sessions.complete(CAUSE, session_id)
    assert (refused.value.status, refused.value.code) == (status, named)
    assert str(context.blobs.root) not in refused.value.message
    state = await context.sessions.state(session_id)
    assert state is not None and state["status"] == "open"
    monkeypatch.undo()
    done, _ = await context.sessions.complete(CAUSE, session_id)
    assert done["job_id"] == str(session_id)
    state = await context.sessions.state(session_id)
    assert state is not None and state["status"] == "completed"
    stored = context.blobs.path(content_key(hashlib.sha256(data).hexdigest()))
    assert stored.read_bytes() == data
