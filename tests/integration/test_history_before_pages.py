"""Collections in pages project as they did whole: history recorded before pages (an image
group whose event named all its images, a DICOM series event carrying every instance, an
upload's files one event each) and newer events in pages. In a database of its own (the
read models' tables have fixed names)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.catalog.projections import tree
from services.dicom.projections import series
from services.ingest.collector.projections import blob_refs
from services.ingest.jobs.projections import counts as job_counts
from services.ingest.jobs.projections import jobs
from services.ingest.uploads.domain import StoredFile, record_image_group, record_upload
from shared.contracts import ingest as ingest_events
from shared.contracts.catalog import Media
from shared.contracts.envelope import Cause, Envelope, envelopes_of
from tests.conftest import fresh_database


@pytest.fixture
async def isolated(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_history") as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA catalog; CREATE SCHEMA dicom; CREATE SCHEMA ingest")
            await tree.setup(conn)
            await series.setup(conn)
            await jobs.setup(conn)
            await blob_refs.setup(conn)
        yield pool


def event(kind: str, stream: str, version: int, data: dict[str, Any]) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        type=kind,
        stream_id=stream,
        stream_version=version,
        occurred_at=datetime.now(UTC),
        actor="test",
        correlation_id="test",
        data=data,
    )


def uploaded(file_id: uuid.UUID, folder_id: uuid.UUID, **more: Any) -> dict[str, Any]:
    return {
        "file_id": str(file_id),
        "folder_id": str(folder_id),
        "name": f"{file_id}.png",
        "kind": "image",
        "size": 1,
        "sha256": "ab" * 32,
        "mime_type": "image/png",
        "media": {},
        "blob_key": "k",
        "source": {"type": "upload"},
        **more,
    }


async def test_a_group_that_named_all_its_images_marks_them_its_own(
    isolated: asyncpg.Pool,
) -> None:
    folder, old_group, new_group = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    old_images = [uuid.uuid4() for _ in range(3)]
    new_images = [uuid.uuid4() for _ in range(2)]
    history = [
        *(event("catalog.FileUploaded", f"file-{i}", 1, uploaded(i, folder)) for i in old_images),
        event(
            "catalog.FileUploaded",
            f"file-{old_group}",
            1,
            uploaded(
                old_group,
                folder,
                kind="image_group",
                group={
                    "constituent_folder_id": str(folder),
                    "file_ids": list(map(str, old_images)),
                },
            ),
        ),
        *(
            event(
                "catalog.FileUploaded",
                f"file-{i}",
                1,
                uploaded(i, folder, constituent_of=str(new_group)),
            )
            for i in new_images
        ),
        event(
            "catalog.FileUploaded",
            f"file-{new_group}",
            1,
            uploaded(
                new_group,
                folder,
                kind="image_group",
                group={"constituent_folder_id": str(folder), "file_ids": [], "images": 2},
            ),
        ),
    ]
    async with isolated.acquire() as conn, conn.transaction():
        await tree.apply(conn, history)
    owners = dict(await isolated.fetch("SELECT id, constituent_of FROM catalog.files"))
    assert [owners[i] for i in old_images] == [old_group] * 3
    assert [owners[i] for i in new_images] == [new_group] * 2
    assert owners[old_group] is None and owners[new_group] is None


def instance(n: int, z: float) -> dict[str, Any]:
    """Instance `1.2.n` of an axial series, `z` mm along it."""
    return {
        "sop_uid": f"1.2.{n}",
        "name": f"{n}.dcm",
        "blob_key": f"b{n}",
        "sha256": "cd" * 32,
        "size": 10,
        "facts": {
            "sop_uid": f"1.2.{n}",
            "series_uid": "1.2",
            "study_uid": "1",
            "patient_id": "p",
            "rows": 2,
            "columns": 2,
            "position": [0.0, 0.0, z],
            "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            "instance_number": n,
        },
    }


def series_facts(file_id: uuid.UUID, folder: uuid.UUID) -> dict[str, Any]:
    """A series' facts as its events carry them (one series of one study)."""
    return {
        "series_uid": "1.2",
        "folder_id": str(folder),
        "file_id": str(file_id),
        "study_uid": "1",
        "patient_id": "p",
        "renderable_3d": True,
        "size": 30,
        "sha256": "x",
    }


async def test_a_series_that_carried_every_instance_then_grew_in_pages(
    isolated: asyncpg.Pool,
) -> None:
    file_id, folder = uuid.uuid4(), uuid.uuid4()
    stream = f"dicom-series-{file_id}"
    facts = series_facts(file_id, folder)
    history = [
        event(
            "dicom.SeriesAssembled",
            stream,
            1,
            {**facts, "instances": [instance(1, 10), instance(2, 30)]},
        ),
        event(
            "dicom.SeriesExtended",
            stream,
            2,
            {**facts, "instance_count": 4, "first_blob_key": "b1"},
        ),
        event(
            "dicom.SeriesInstancesAdded",
            stream,
            3,
            {"series_uid": "1.2", "file_id": str(file_id), "instances": [instance(3, 20)]},
        ),
        event(
            "dicom.SeriesInstancesAdded",
            stream,
            4,
            {"series_uid": "1.2", "file_id": str(file_id), "instances": [instance(4, 5)]},
        ),
    ]
    async with isolated.acquire() as conn, conn.transaction():
        await series.apply(conn, history[:3])
    written = "SELECT sop_uid, xmin::text FROM dicom.instances WHERE sop_uid <> '1.2.4'"
    before = dict(await isolated.fetch(written))
    async with isolated.acquire() as conn, conn.transaction():
        await series.apply(conn, history[3:])
    rows = await isolated.fetch("SELECT sop_uid FROM dicom.instances ORDER BY slice_key")
    # In slice order (the slices route reads it): an added slice may go between others.
    assert [r["sop_uid"] for r in rows] == ["1.2.4", "1.2.1", "1.2.3", "1.2.2"]
    # A slice added before the others writes its own row only: the rows there keep theirs.
    assert dict(await isolated.fetch(written)) == before
    # The series' version follows its last event, pages included: the next write's check.
    assert await isolated.fetchval("SELECT version FROM dicom.series") == 4


def group_recorded(images: int) -> tuple[uuid.UUID, list[uuid.UUID], list[Envelope]]:
    """What ingest records for a sequence of `images` (its job's stream, in pages)."""
    job, group = uuid.uuid4(), uuid.uuid4()
    files = [
        StoredFile(
            uuid.uuid4(), f"f{n:05}.png", "image", "image/png", 1, f"{n:064x}", f"k{n}", Media()
        )
        for n in range(images)
    ]
    changes = record_image_group(
        job, uuid.uuid4(), group, uuid.uuid4(), "image_sequence", "scan", files
    )
    written = envelopes_of(changes, Cause(actor="test", correlation_id="test"))
    return job, [group, *(f.file_id for f in files)], written


def as_before_pages(written: list[Envelope]) -> list[Envelope]:
    """The same history as recorded before pages: the group's event names every image."""
    pages = [e for e in written if e.type == "ingest.ImageGroupImagesStored"]
    whole = [f for page in pages for f in page.data["files"]]
    return [
        e.model_copy(
            update={
                "schema_version": 1,
                "data": {k: v for k, v in e.data.items() if k != "images"} | {"files": whole},
            }
        )
        if e.type == "ingest.ImageGroupStored"
        else e
        for e in written
        if e not in pages
    ]


async def test_a_groups_job_lists_the_group_then_its_images_and_each_image_has_its_blob(
    isolated: asyncpg.Pool,
) -> None:
    job, files, written = group_recorded(2500)
    assert sum(e.type == "ingest.ImageGroupImagesStored" for e in written) > 1
    old_job, old_files, old_written = group_recorded(3)
    async with isolated.acquire() as conn, conn.transaction():
        for projection in (jobs, blob_refs):
            await projection.apply(conn, written)
            await projection.apply(conn, as_before_pages(old_written))
    for job_id, ids in ((job, files), (old_job, old_files)):
        row = await isolated.fetchrow("SELECT * FROM ingest.jobs WHERE id = $1", job_id)
        listed = await isolated.fetchval(
            """SELECT array_agg(file_id ORDER BY position) FROM ingest.job_files
               WHERE job_id = $1""",
            job_id,
        )
        assert listed == ids
        assert (row["done"], row["total"], row["status"]) == (len(ids) - 1, len(ids) - 1, "done")
        referred = await isolated.fetchval(
            "SELECT count(*) FROM ingest.blob_files WHERE file_id = ANY($1::uuid[])", ids
        )
        assert referred == len(ids) - 1  # every image; the group's file has no blob of its own


def upload_recorded(count: int) -> tuple[uuid.UUID, list[uuid.UUID], list[Envelope]]:
    """What ingest records for an upload of `count` files (its job's stream, in pages)."""
    job = uuid.uuid4()
    files = [
        StoredFile(
            uuid.uuid4(), f"u{n:05}.png", "image", "image/png", 1, f"{n:064x}", f"u{n}", Media()
        )
        for n in range(count)
    ]
    changes = record_upload(job, uuid.uuid4(), files)
    written = envelopes_of(changes, Cause(actor="test", correlation_id="test"))
    return job, [f.file_id for f in files], written


def as_one_event_a_file(written: list[Envelope]) -> list[Envelope]:
    """The same upload as recorded before pages: a FileContentStored a file."""
    out: list[Envelope] = []
    for e in written:
        if e.type != "ingest.FilesStored":
            out.append(e.model_copy(update={"stream_version": len(out) + 1}))
            continue
        page = ingest_events.FilesStored.model_validate(e.data)
        out += [
            event(
                "ingest.FileContentStored",
                e.stream_id,
                len(out) + 1,
                stored.model_dump(mode="json"),
            )
            for stored in page.each()
        ]
    return out


async def test_an_uploads_job_lists_its_files_in_order_and_each_has_its_blob(
    isolated: asyncpg.Pool,
) -> None:
    job, files, written = upload_recorded(2500)
    assert sum(e.type == "ingest.FilesStored" for e in written) > 1
    old_job, old_files, old_written = upload_recorded(3)
    old = as_one_event_a_file(old_written)
    assert [e.type for e in old].count("ingest.FileContentStored") == 3
    async with isolated.acquire() as conn, conn.transaction():
        for projection in (jobs, blob_refs):
            await projection.apply(conn, written)
            await projection.apply(conn, old)
    for job_id, ids in ((job, files), (old_job, old_files)):
        row = await isolated.fetchrow("SELECT * FROM ingest.jobs WHERE id = $1", job_id)
        listed = await isolated.fetchval(
            """SELECT array_agg(file_id ORDER BY position) FROM ingest.job_files
               WHERE job_id = $1""",
            job_id,
        )
        assert listed == ids
        assert (row["done"], row["total"], row["status"]) == (len(ids), len(ids), "done")
        referred = await isolated.fetchval(
            "SELECT count(*) FROM ingest.blob_files WHERE file_id = ANY($1::uuid[])", ids
        )
        assert referred == len(ids)
    dated = await isolated.fetchval(
        "SELECT count(*) FROM ingest.blobs WHERE key LIKE 'u%' AND stored_at > '2000-01-01'"
    )
    assert dated == 2500  # the old upload's 3 keys are among the new one's
    # Two jobs' pages in one run (one append statement, each job's last position looked
    # up once), one of them with files already: each goes on after its own last.
    (x_job, x_files, x), (y_job, y_files, y) = upload_recorded(2100), upload_recorded(1100)
    x_pages, y_pages = ([e for e in w if e.type == "ingest.FilesStored"] for w in (x, y))
    assert len(x_pages) >= 3 and len(y_pages) >= 2
    async with isolated.acquire() as conn, conn.transaction():
        await jobs.apply(conn, [x[0], y[0], x_pages[0]])
        await jobs.apply(conn, [y_pages[0], *x_pages[1:], *y_pages[1:]])
    for job_id, ids in ((x_job, x_files), (y_job, y_files)):
        listed = await isolated.fetchval(
            """SELECT array_agg(file_id ORDER BY position) FROM ingest.job_files
               WHERE job_id = $1""",
            job_id,
        )
        assert listed == ids
        done = await isolated.fetchval("SELECT done FROM ingest.jobs WHERE id = $1", job_id)
        assert done == len(ids)
        # Positions contiguous from 1: the job's count is read from the key's ends.
        assert await job_counts(isolated, job_id) == (len(ids), 0)


async def test_a_series_keeps_its_keys_until_a_page_turns_its_slice_direction(
    isolated: asyncpg.Pool,
) -> None:
    file_id, folder = uuid.uuid4(), uuid.uuid4()
    stream = f"dicom-series-{file_id}"
    facts = series_facts(file_id, folder)
    coronal = instance(1, 0.0)
    coronal["facts"] |= {"position": [0.0, -5.0, 0.0], "orientation": [1.0, 0, 0, 0, 0, -1.0]}
    unplaced = instance(3, 0.0)
    unplaced["facts"]["position"] = None
    pages = [[instance(5, 10), instance(6, 30)], [instance(7, 20)], [coronal], [unplaced]]
    history = [
        event("dicom.SeriesAssembled", stream, 1, facts),
        *(
            event(
                "dicom.SeriesInstancesAdded",
                stream,
                n,
                {"series_uid": "1.2", "file_id": str(file_id), "instances": page},
            )
            for n, page in enumerate(pages, start=2)
        ),
    ]
    ordered = "SELECT sop_uid FROM dicom.instances ORDER BY slice_key"
    written = "SELECT sop_uid, xmin::text FROM dicom.instances"
    seen: list[tuple[list[str], dict[str, str]]] = []
    for n in range(2, len(history) + 1):
        async with isolated.acquire() as conn, conn.transaction():
            await series.apply(conn, history[n - 1 : n])
        seen.append(
            ([r[0] for r in await isolated.fetch(ordered)], dict(await isolated.fetch(written)))
        )
    axial, between, turned, by_number = seen
    assert axial[0] == ["1.2.5", "1.2.6"]
    # Along the axis, the slice between the others goes between them, its row alone written.
    assert between[0] == ["1.2.5", "1.2.7", "1.2.6"]
    assert {k: v for k, v in between[1].items() if k != "1.2.7"} == axial[1]
    # A lower UID of another orientation turns the direction: every key is written again
    # (along y the others tie, then go by InstanceNumber).
    assert turned[0] == ["1.2.1", "1.2.5", "1.2.6", "1.2.7"]
    assert all(turned[1][k] != v for k, v in between[1].items())
    # A slice without a position: all by InstanceNumber.
    assert by_number[0] == ["1.2.1", "1.2.3", "1.2.5", "1.2.6", "1.2.7"]
