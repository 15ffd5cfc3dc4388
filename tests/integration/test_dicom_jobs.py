"""The DICOM context's jobs read model: settled pages of one job applied together."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.dicom.projections import series
from shared.contracts.dicom import Accepted, InstancesSettled, Rejected, job_stream
from shared.contracts.envelope import Cause, Envelope, new_envelope
from tests.conftest import fresh_database

CAUSE = Cause(actor="test", correlation_id="test")


@pytest.fixture
async def dicom_db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_dicom_jobs") as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA dicom")
            await series.setup(conn)
        yield pool


def settled(job_id: uuid.UUID, version: int, accepted: int, rejected: int) -> Envelope:
    folder_id = uuid.uuid4()
    event = InstancesSettled(
        job_id=job_id,
        folder_id=folder_id,
        accepted=[
            Accepted(
                name=f"{version}-{n}.dcm",
                sop_uid=f"1.{version}.{n}",
                series_uid="1.2",
                file_id=uuid.uuid4(),
            )
            for n in range(accepted)
        ],
        rejected=[
            Rejected(name=f"bad-{version}-{n}", code="not_dicom", message="not a DICOM file")
            for n in range(rejected)
        ],
    )
    return new_envelope(event, stream_id=job_stream(job_id), stream_version=version, cause=CAUSE)


async def test_a_job_keeps_its_last_version_when_its_last_page_has_no_rejection(
    dicom_db: asyncpg.Pool,
) -> None:
    """A page with a rejection then one without, applied together: the job's version is
    the last page's (an older one would make its next settlement collide with it)."""
    job_id = uuid.uuid4()
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(conn, [settled(job_id, 1, 2, 1), settled(job_id, 2, 3, 0)])
    job = await dicom_db.fetchrow(
        "SELECT version, done, errors FROM dicom.jobs WHERE job_id = $1", job_id
    )
    assert job["version"] == 2
    assert job["done"] == 6
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(conn, [settled(job_id, 3, 0, 1), settled(job_id, 4, 1, 0)])
    job = await dicom_db.fetchrow("SELECT version, done FROM dicom.jobs WHERE job_id = $1", job_id)
    assert (job["version"], job["done"]) == (4, 8)
