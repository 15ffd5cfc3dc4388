"""The DICOM context's jobs read model: settled pages of one job applied together."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest

from services.dicom.handlers import Dicom
from services.dicom.projections import series
from shared.contracts.dicom import Accepted, InstancesSettled, Rejected, job_stream
from shared.contracts.envelope import Cause, Envelope, new_envelope
from shared.kit.eventstore import EventStore
from tests.conftest import fresh_database

CAUSE = Cause(actor="test", correlation_id="test")


@pytest.fixture
async def dicom_db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_dicom_jobs") as pool:
        async with pool.acquire() as conn:
            # The account reads the job's last settlement's position in the store.
            await EventStore("dicom").setup(conn)
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


def accepted_into(job_id: uuid.UUID, version: int, *file_ids: uuid.UUID) -> Envelope:
    """A settled page whose instances joined these series files, one instance each."""
    event = InstancesSettled(
        job_id=job_id,
        folder_id=uuid.uuid4(),
        accepted=[
            Accepted(
                name=f"{version}-{n}.dcm",
                sop_uid=f"1.{version}.{n}",
                series_uid="1.2",
                file_id=file_id,
            )
            for n, file_id in enumerate(file_ids)
        ],
        rejected=[],
    )
    return new_envelope(event, stream_id=job_stream(job_id), stream_version=version, cause=CAUSE)


async def account(pool: asyncpg.Pool, job_id: uuid.UUID, **page: int) -> dict[str, Any]:
    """The DICOM context's account of the job, as `/internal/jobs/{id}` answers it."""
    return await Dicom.job(cast(Dicom, SimpleNamespace(pool=pool)), job_id, **page)


async def every_file(pool: asyncpg.Pool, job_id: uuid.UUID, limit: int) -> list[str]:
    """The job's series files, `limit` a page, each page from the count already read
    (as the gateway's cursor into the DICOM context's part goes on)."""
    found: list[str] = []
    while True:
        page = await account(pool, job_id, files_from=len(found), limit=limit)
        assert len(page["file_ids"]) <= limit
        found += page["file_ids"]
        if len(found) >= page["file_count"]:
            return found


async def test_a_series_file_settled_in_several_batches_is_listed_once(
    dicom_db: asyncpg.Pool,
) -> None:
    """Instances of one series settle in pages, batches and uploads of their own: the
    job lists its series file once, in the order it was first listed, and pages give
    each file once."""
    job_id = uuid.uuid4()
    files = [uuid.uuid4() for _ in range(5)]
    one, two, three, four, five = files
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(conn, [accepted_into(job_id, 1, one, two, one)])
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(conn, [accepted_into(job_id, 2, two, three)])
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(
            conn, [accepted_into(job_id, 3, four, one), accepted_into(job_id, 4, five, three)]
        )
    in_order = [str(f) for f in files]
    whole = await account(dicom_db, job_id)
    assert (whole["done"], whole["file_count"]) == (9, 5)
    assert whole["file_ids"] == in_order
    for limit in (1, 2, 3):
        assert await every_file(dicom_db, job_id, limit) == in_order
    # Past the last file: an empty page, the same count.
    assert (await account(dicom_db, job_id, files_from=5, limit=2))["file_ids"] == []
    # Another job's files are its own.
    other = uuid.uuid4()
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(conn, [accepted_into(other, 1, one, uuid.uuid4())])
    assert (await account(dicom_db, other))["file_count"] == 2
    assert (await account(dicom_db, job_id))["file_ids"] == in_order


async def test_pages_read_while_a_job_runs_miss_and_repeat_no_file(
    dicom_db: asyncpg.Pool,
) -> None:
    """A client pages a job's files while it is still making series: a series made after
    a page was read comes on a later page even when its id sorts before the files read
    (by id, it was skipped and the page's last file came again)."""
    job_id = uuid.uuid4()
    late, early = uuid.UUID(int=1), uuid.UUID(int=2**128 - 1)
    first = [uuid.UUID(f"{n:x}" * 32) for n in range(8, 11)]
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(conn, [accepted_into(job_id, 1, *first)])
    read = (await account(dicom_db, job_id, limit=2))["file_ids"]
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(conn, [accepted_into(job_id, 2, late, early)])
    read += await every_file_from(dicom_db, job_id, len(read), limit=2)
    assert read == [str(f) for f in [*first, late, early]]


async def every_file_from(
    pool: asyncpg.Pool, job_id: uuid.UUID, start: int, limit: int
) -> list[str]:
    found: list[str] = []
    while True:
        page = await account(pool, job_id, files_from=start + len(found), limit=limit)
        found += page["file_ids"]
        if start + len(found) >= page["file_count"]:
            return found


async def test_a_job_s_files_kept_on_its_row_move_to_rows_at_setup(database_url: str) -> None:
    """A job's account from before kept its series files in a jsonb array on its row
    (by id, each once): setup moves them to rows once, and later batches add to them."""
    job_id, empty = uuid.uuid4(), uuid.uuid4()
    files = sorted((uuid.uuid4() for _ in range(3)), key=str)
    async with fresh_database(database_url, "t_dicom_jobs_old") as pool:
        async with pool.acquire() as conn:
            await EventStore("dicom").setup(conn)
            # The account's table as the version before made it, and a row it wrote.
            await conn.execute(
                """CREATE TABLE dicom.jobs (
                       job_id uuid PRIMARY KEY, version integer NOT NULL,
                       done integer NOT NULL, files jsonb NOT NULL, errors jsonb NOT NULL,
                       cancelled boolean NOT NULL DEFAULT false)"""
            )
            await conn.execute(
                """INSERT INTO dicom.jobs (job_id, version, done, files, errors)
                   VALUES ($1, 3, 7, $2, '[]'), ($3, 1, 2, '[]', '[]')""",
                job_id,
                [str(f) for f in files],
                empty,
            )
            await series.setup(conn)
            await series.setup(conn)  # again, as the next start does: nothing left to move
            rows = await conn.fetch(
                "SELECT job_id, file_id FROM dicom.job_files ORDER BY job_id, file_id"
            )
            left = await conn.fetch("SELECT job_id, files, file_count FROM dicom.jobs")
        assert [(r["job_id"], r["file_id"]) for r in rows] == [(job_id, f) for f in files]
        assert {r["job_id"]: (r["files"], r["file_count"]) for r in left} == {
            job_id: ([], 3),
            empty: ([], 0),
        }
        moved = await account(pool, job_id)
        assert (moved["done"], moved["file_count"]) == (7, 3)
        assert moved["file_ids"] == [str(f) for f in files]
        # A later batch: a file the job had, and a new one.
        new = uuid.uuid4()
        async with pool.acquire() as conn, conn.transaction():
            await series.apply(conn, [accepted_into(job_id, 4, files[1], new)])
        after = await account(pool, job_id)
        assert (after["done"], after["file_count"]) == (9, 4)
        assert after["file_ids"] == [str(f) for f in [*files, new]]


async def test_a_job_s_file_rows_from_before_places_are_numbered_by_id(
    database_url: str,
) -> None:
    """Rows of the version before (no place): setup numbers them by id, the order their
    pages were read in, and what comes after (from this version, or inserted as that
    version does while it rolls out) goes after them."""
    job_id = uuid.uuid4()
    files = [uuid.uuid4() for _ in range(3)]
    async with fresh_database(database_url, "t_dicom_job_places") as pool:
        async with pool.acquire() as conn:
            await EventStore("dicom").setup(conn)
            await conn.execute(
                """CREATE TABLE dicom.job_files (
                       job_id uuid NOT NULL, file_id uuid NOT NULL,
                       PRIMARY KEY (job_id, file_id))"""
            )
            await conn.executemany(
                "INSERT INTO dicom.job_files VALUES ($1, $2)", [(job_id, f) for f in files]
            )
            await series.setup(conn)
            await series.setup(conn)
            older, newer = uuid.UUID(int=2**128 - 1), uuid.UUID(int=1)
            # As a replica of the version before inserts (no place given).
            await conn.execute(
                "INSERT INTO dicom.job_files (job_id, file_id) VALUES ($1, $2)", job_id, older
            )
        async with pool.acquire() as conn, conn.transaction():
            await series.apply(conn, [accepted_into(job_id, 1, newer)])
        places = await pool.fetch(
            "SELECT file_id, position FROM dicom.job_files WHERE job_id = $1 ORDER BY position",
            job_id,
        )
        expected = [*sorted(files, key=str), older, newer]
        assert [(r["file_id"], r["position"]) for r in places] == [
            (f, n) for n, f in enumerate(expected, 1)
        ]


async def test_what_an_older_replica_wrote_to_a_job_s_arrays_joins_its_rows_at_start(
    dicom_db: asyncpg.Pool,
) -> None:
    """While the DICOM context rolls out, a replica of the version before still writes a
    job's series files and errors into its arrays (from [], after the move): the next
    start adds them after the job's rows, none lost and none counted twice."""
    job_id = uuid.uuid4()
    one, two = uuid.uuid4(), uuid.uuid4()
    async with dicom_db.acquire() as conn, conn.transaction():
        await series.apply(conn, [accepted_into(job_id, 1, one), settled(job_id, 2, 0, 2)])
    late = {"name": "late.dcm", "code": "not_dicom", "message": "no", "details": {}}
    async with dicom_db.acquire() as conn:
        await conn.execute(
            "UPDATE dicom.jobs SET files = $2, errors = $3 WHERE job_id = $1",
            job_id,
            [str(one), str(two)],
            [late],
        )
        await series.setup(conn)
    moved = await account(dicom_db, job_id)
    assert moved["file_ids"] == [str(one), str(two)] and moved["file_count"] == 2
    assert [e["name"] for e in moved["errors"]] == ["bad-2-0", "bad-2-1", "late.dcm"]
    assert moved["error_count"] == 3
