"""The DICOM context's consumer reads a batch's headers before the batch's transaction."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest

from services.dicom.handlers import Dicom
from services.dicom.projections import series
from shared.contracts.dicom import InstancesSettled, job_stream
from shared.contracts.envelope import Cause, Envelope, new_envelope
from shared.contracts.ingest import DicomInstancesStored, StoredPart
from shared.kit.blobs import LocalBlobStore
from shared.kit.eventstore import EventStore
from shared.kit.inbox import Consumer, Inbox
from tests.conftest import fresh_database
from tests.dicom_fixtures import ct_series

CAUSE = Cause(actor="test", correlation_id="test")

# What the handlers read of a service's settings (the WADO-RS frames' memory budget).
SETTINGS = SimpleNamespace(dicomweb_frames_memory_bytes=1 << 30)


@pytest.fixture
async def dicom_db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_dicom_ahead") as pool:
        async with pool.acquire() as conn:
            await EventStore("dicom").setup(conn)
            await series.setup(conn)
            await Inbox("dicom", "dicom").setup(conn)
        yield pool


class Held(LocalBlobStore):
    """Blobs whose reads wait until `go` is set (`reading` is set once one waits)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reading = asyncio.Event()
        self.go = asyncio.Event()

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        self.reading.set()
        await self.go.wait()
        async with super().local_copy(key) as path:
            yield path


def consumer(pool: asyncpg.Pool, blobs: LocalBlobStore) -> Consumer:
    handlers = Dicom(
        cast(Any, SimpleNamespace(pool=pool, store=EventStore("dicom"), settings=SETTINGS)), blobs
    )
    bound = Dicom.reactions.bound(handlers)
    return Consumer(
        pool=pool,
        inbox=Inbox("dicom", "dicom"),
        topics=[],
        handle=bound,
        wanted=bound.types,
        prepare=bound.prepare,
        bootstrap="unused",
        dead_letters=cast(Any, None),
    )


async def stored(blobs: LocalBlobStore, missing: int | None = None) -> tuple[uuid.UUID, Envelope]:
    """A page of an upload of a 3-slice series (slice `missing` never stored)."""
    parts = []
    for n, data in enumerate(ct_series(3)):
        key = f"dicom/{uuid.uuid4().hex}"
        if n != missing:
            await blobs.put(key, data)
        parts.append(
            StoredPart(
                name=f"{n}.dcm",
                blob_key=key,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
            )
        )
    job_id = uuid.uuid4()
    event = DicomInstancesStored(job_id=job_id, folder_id=uuid.uuid4(), instances=parts)
    envelope = new_envelope(event, stream_id=f"job-{job_id}", stream_version=1, cause=CAUSE)
    return job_id, envelope.model_copy(update={"source": "ingest", "position": 1})


async def settled(pool: asyncpg.Pool, job_id: uuid.UUID) -> InstancesSettled:
    (row,) = await pool.fetch(
        "SELECT data FROM dicom.events WHERE stream_id = $1", job_stream(job_id)
    )
    return InstancesSettled.model_validate(row["data"])


async def test_a_missing_blob_is_rejected_and_the_others_accepted(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path)
    job_id, envelope = await stored(blobs, missing=1)
    await consumer(dicom_db, blobs)._apply([envelope])
    settlement = await settled(dicom_db, job_id)
    assert sorted(a.name for a in settlement.accepted) == ["0.dcm", "2.dcm"]
    (rejected,) = settlement.rejected
    assert (rejected.name, rejected.code) == ("1.dcm", "unreadable")
    assert await dicom_db.fetchval("SELECT count(*) FROM dicom.instances") == 2


async def test_no_transaction_is_open_while_the_batch_s_headers_are_read(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    """A slow read (a busy disk, S3) keeps no connection idle in a transaction, whose
    snapshot and inbox rows would be held meanwhile."""
    blobs = Held(tmp_path)
    job_id, envelope = await stored(blobs)
    applying = asyncio.create_task(consumer(dicom_db, blobs)._apply([envelope]))
    try:
        await asyncio.wait_for(blobs.reading.wait(), timeout=10)
        open_transactions = await dicom_db.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND state LIKE 'idle in transaction%'"""
        )
        assert open_transactions == 0
    finally:
        blobs.go.set()
        await asyncio.wait_for(applying, timeout=10)
    settlement = await settled(dicom_db, job_id)
    assert [a.name for a in settlement.accepted] == ["0.dcm", "1.dcm", "2.dcm"]

    assert await dicom_db.fetchval("SELECT count(*) FROM dicom.instances") == 3
