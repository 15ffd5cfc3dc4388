"""Collections in pages project as they did whole: history recorded before pages (an image
group whose event named all its images, a DICOM series event carrying every instance, an
upload's files one event each) and newer events in pages. In a database of its own (the
read models' tables have fixed names)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.catalog.projections import tree
from services.dicom.domain import order, slice_key, slice_normal, uid_order
from services.dicom.projections import instance_of, series
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


def page(file_id: uuid.UUID, version: int, slices: list[dict[str, Any]]) -> Envelope:
    stream = f"dicom-series-{file_id}"
    data = {"series_uid": "1.2", "file_id": str(file_id), "instances": slices}
    return event("dicom.SeriesInstancesAdded", stream, version, data)


async def direction(pool: asyncpg.Pool) -> tuple[Any, ...]:
    row = await pool.fetchrow(
        "SELECT slice_lowest_uid, slice_normal, slice_version, version FROM dicom.series"
    )
    assert row is not None
    return tuple(row)


async def test_a_series_row_keeps_its_slice_direction_for_the_next_extension(
    isolated: asyncpg.Pool,
) -> None:
    """An extension reads the direction its keys depend on from the series' row, not
    from every slice; a row that does not vouch for it (written by the version before,
    which did not keep it, or since by a replica of it) has it read from its slices."""
    file_id, folder = uuid.uuid4(), uuid.uuid4()
    stream = f"dicom-series-{file_id}"
    ordered = "SELECT sop_uid FROM dicom.instances ORDER BY slice_key"

    async def apply(*events: Envelope) -> None:
        async with isolated.acquire() as conn, conn.transaction():
            await series.apply(conn, list(events))

    await apply(
        event("dicom.SeriesAssembled", stream, 1, series_facts(file_id, folder)),
        page(file_id, 2, [instance(6, 10), instance(5, 30)]),
    )
    assert await direction(isolated) == ("1.2.5", [0.0, 0.0, 1.0], 2, 2)
    # Moved to another folder: its slices, and so its direction, stay.
    moved = {"series_uid": "1.2", "file_id": str(file_id), "from_folder_id": str(folder)}
    await apply(event("dicom.SeriesMoved", stream, 3, moved | {"to_folder_id": str(folder)}))
    assert await direction(isolated) == ("1.2.5", [0.0, 0.0, 1.0], 3, 3)
    # A row of the version before: computed once from the slices, and kept.
    await isolated.execute("UPDATE dicom.series SET slice_lowest_uid = NULL, slice_version = NULL")
    await apply(page(file_id, 4, [instance(7, 20)]))
    assert await direction(isolated) == ("1.2.5", [0.0, 0.0, 1.0], 4, 4)
    # Delivered again: nothing changes.
    written = "SELECT sop_uid, xmin::text FROM dicom.instances"
    before = dict(await isolated.fetch(written))
    await apply(page(file_id, 4, [instance(7, 20)]))
    assert dict(await isolated.fetch(written)) == before
    assert await direction(isolated) == ("1.2.5", [0.0, 0.0, 1.0], 4, 4)
    # A replica of the version before adds a lower UID of another orientation: it keys
    # every slice along y and moves the version on, not the direction.
    coronal = instance(1, 0.0)
    coronal["facts"] |= {"position": [0.0, -5.0, 0.0], "orientation": [1.0, 0, 0, 0, 0, -1.0]}
    known = [instance(n, z) for n, z in ((5, 30), (6, 10), (7, 20))] + [coronal]
    normal = (0.0, 1.0, 0.0)
    await isolated.execute(
        """INSERT INTO dicom.instances (file_id, slice_key, sop_uid, name, blob_key, sha256,
                                        size, facts)
           VALUES ($1, $2, '1.2.1', 'c', 'c', 'c', 1, $3)""",
        file_id,
        slice_key(instance_of(coronal["facts"]), normal),
        coronal["facts"],
    )
    for i in known:
        await isolated.execute(
            "UPDATE dicom.instances SET slice_key = $2 WHERE sop_uid = $1",
            i["sop_uid"],
            slice_key(instance_of(i["facts"]), normal),
        )
    await isolated.execute("UPDATE dicom.series SET version = 5")
    # Kept along z, the new slice would go first (z = -20); along y it ties the others
    # (y = 0) and goes by InstanceNumber.
    await apply(page(file_id, 6, [instance(8, -20)]))
    rows = [r[0] for r in await isolated.fetch(ordered)]
    assert rows == ["1.2.1", "1.2.5", "1.2.6", "1.2.7", "1.2.8"]
    assert await direction(isolated) == ("1.2.1", [0.0, 1.0, 0.0], 6, 6)


async def test_a_series_paged_in_any_order_is_keyed_as_the_domain_orders_it(
    isolated: asyncpg.Pool,
) -> None:
    """Pages of slices of two orientations, some without a position, each page applied
    on its own (some twice, some after a replica of the version before wrote the row):
    after each, the keys sort as `order` sorts the slices so far and the row keeps their
    direction; replayed at once, the same rows."""
    rng = random.Random(7)
    axial, sagittal = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    for _ in range(25):
        file_id, folder = uuid.uuid4(), uuid.uuid4()
        stream = f"dicom-series-{file_id}"
        slices = []
        for n in rng.sample(range(1, 200), rng.randint(2, 14)):
            s = instance(n, rng.choice([-3.0, 0.0, 2.5, 10.0, 10.0]))
            s["facts"]["position"] = [rng.choice([0.0, 4.0]), 0.0, s["facts"]["position"][2]]
            s["facts"]["orientation"] = rng.choice([axial] * 4 + [sagittal])
            if rng.random() < 0.06:
                s["facts"]["position"] = None
            slices.append(s)
        history = [event("dicom.SeriesAssembled", stream, 1, series_facts(file_id, folder))]
        while slices:
            taken, slices = slices[: rng.randint(1, 4)], slices[rng.randint(1, 4) :]
            history.append(page(file_id, len(history) + 1, taken))
        so_far: dict[str, Any] = {}
        for n, e in enumerate(history):
            if rng.random() < 0.2:
                await isolated.execute(
                    "UPDATE dicom.series SET slice_version = NULL WHERE file_id = $1", file_id
                )
            for _ in range(2 if rng.random() < 0.2 else 1):
                async with isolated.acquire() as conn, conn.transaction():
                    await series.apply(conn, [e])
            for s in e.data.get("instances", []):
                so_far.setdefault(s["sop_uid"], instance_of(s["facts"]))
            if n == 0:
                continue
            keyed = await isolated.fetch(
                "SELECT sop_uid FROM dicom.instances WHERE file_id = $1 ORDER BY slice_key",
                file_id,
            )
            assert [r[0] for r in keyed] == [i.sop_uid for i in order(so_far.values())]
            row = await isolated.fetchrow("SELECT * FROM dicom.series WHERE file_id = $1", file_id)
            lowest = min(so_far, key=uid_order)
            normal = slice_normal(list(so_far.values()))
            assert (row["slice_lowest_uid"], row["slice_normal"], row["slice_version"]) == (
                lowest,
                list(normal) if normal else None,
                row["version"],
            )
        live = await isolated.fetch(
            "SELECT sop_uid, slice_key FROM dicom.instances WHERE file_id = $1 ORDER BY 1",
            file_id,
        )
        live_row = await isolated.fetchrow("SELECT * FROM dicom.series WHERE file_id = $1", file_id)
        async with isolated.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM dicom.instances WHERE file_id = $1", file_id)
            await conn.execute("DELETE FROM dicom.series WHERE file_id = $1", file_id)
            await series.apply(conn, history)
        replayed = await isolated.fetch(
            "SELECT sop_uid, slice_key FROM dicom.instances WHERE file_id = $1 ORDER BY 1",
            file_id,
        )
        assert replayed == live
        assert (
            await isolated.fetchrow("SELECT * FROM dicom.series WHERE file_id = $1", file_id)
            == live_row
        )
