"""The DICOM context and the objects of cloud-synced folders: an instance leaves its
series when its object's CloudObjectGone was recorded after the instance was stored (by
ingest's store positions), whatever order the two arrive in (they are of different
jobs' streams, so of any partitions)."""

from __future__ import annotations

import asyncio
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
from shared.contracts import dicom as ev
from shared.contracts.envelope import Cause, Envelope, new_envelope
from shared.contracts.ingest import CloudObjectGone, DicomInstanceStored
from shared.kit.blobs import LocalBlobStore
from shared.kit.eventstore import EventStore
from shared.kit.inbox import Consumer, Inbox
from shared.kit.projections import rebuild
from tests.conftest import fresh_database
from tests.dicom_fixtures import ct_series

CAUSE = Cause(actor="test", correlation_id="test")
FOLDER = uuid.uuid4()

# What the handlers read of a service's settings (the WADO-RS frames' memory budget).
SETTINGS = SimpleNamespace(dicomweb_frames_memory_bytes=1 << 30)


@pytest.fixture
async def dicom_db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_dicom_synced") as pool:
        async with pool.acquire() as conn:
            await EventStore("dicom").setup(conn)
            await series.setup(conn)
            await Inbox("dicom", "dicom").setup(conn)
        yield pool


def handlers_of(pool: asyncpg.Pool, blobs: LocalBlobStore) -> Dicom:
    parts = SimpleNamespace(
        pool=pool, store=EventStore("dicom"), inbox=Inbox("dicom", "dicom"), settings=SETTINGS
    )
    return Dicom(cast(Any, parts), blobs)


def consumer(pool: asyncpg.Pool, blobs: LocalBlobStore, handlers: Dicom | None = None) -> Consumer:
    bound = Dicom.reactions.bound(handlers or handlers_of(pool, blobs))
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


def at(envelope: Envelope, position: int) -> Envelope:
    return envelope.model_copy(update={"source": "ingest", "position": position})


async def stored(
    blobs: LocalBlobStore,
    object_id: uuid.UUID | None,
    data: bytes,
    position: int,
    folder_id: uuid.UUID = FOLDER,
) -> tuple[uuid.UUID, Envelope]:
    """A sync's copy of the object (its job of its own), recorded at `position`; with
    no object, an upload's instance."""
    key = f"dicom/{uuid.uuid4().hex}"
    await blobs.put(key, data)
    job_id = uuid.uuid4()
    event = DicomInstanceStored(
        job_id=job_id,
        folder_id=folder_id,
        name="0.dcm",
        blob_key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        object_id=object_id,
    )
    envelope = new_envelope(event, stream_id=f"job-{job_id}", stream_version=1, cause=CAUSE)
    return job_id, at(envelope, position)


def gone(object_id: uuid.UUID, position: int) -> Envelope:
    job_id = uuid.uuid4()
    event = CloudObjectGone(
        job_id=job_id, root_folder_id=FOLDER, key="s/0.dcm", file_id=object_id, dicom=True
    )
    envelope = new_envelope(event, stream_id=f"job-{job_id}", stream_version=1, cause=CAUSE)
    return at(envelope, position)


async def settled(pool: asyncpg.Pool, job_id: uuid.UUID) -> ev.InstancesSettled:
    (row,) = await pool.fetch(
        "SELECT data FROM dicom.events WHERE stream_id = $1", ev.job_stream(job_id)
    )
    return ev.InstancesSettled.model_validate(row["data"])


async def types(pool: asyncpg.Pool) -> list[str]:
    return [r["type"] for r in await pool.fetch("SELECT type FROM dicom.events ORDER BY position")]


async def test_an_object_gone_before_its_instance_arrived_refuses_it_and_takes_it_back_later(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path)
    slices = ct_series(2)
    kept, went = uuid.uuid4(), uuid.uuid4()
    run = consumer(dicom_db, blobs)
    _, first = await stored(blobs, kept, slices[0], 1)
    await run._apply([first])
    # Recorded at 3, delivered before the store recorded at 2.
    job_id, late = await stored(blobs, went, slices[1], 2)
    await run._apply([gone(went, 3)])
    await run._apply([late])
    (refused,) = (await settled(dicom_db, job_id)).rejected
    assert refused.code == "object_gone"
    assert await dicom_db.fetchval("SELECT count(*) FROM dicom.instances") == 1
    # It comes back (recorded at 4): accepted.
    job_id, back = await stored(blobs, went, slices[1], 4)
    await run._apply([back])
    assert len((await settled(dicom_db, job_id)).accepted) == 1
    assert await dicom_db.fetchval("SELECT count(*) FROM dicom.instances") == 2


async def test_a_gone_recorded_before_a_later_copy_leaves_that_copy_and_applies_once(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path)
    slices = ct_series(3)
    objects = [uuid.uuid4() for _ in slices]
    run = consumer(dicom_db, blobs)
    for n, (object_id, data) in enumerate(zip(objects, slices, strict=True)):
        await run._apply([(await stored(blobs, object_id, data, n + 1))[1]])
    # The first object gone (recorded at 10), then copied again (at 20: it replaces
    # the instance); the gone is delivered last: the copy stays.
    _, again = await stored(blobs, objects[0], slices[0], 20)
    await run._apply([again])
    before = len(await types(dicom_db))
    await run._apply([gone(objects[0], 10)])
    assert await dicom_db.fetchval("SELECT count(*) FROM dicom.instances") == 3
    assert len(await types(dicom_db)) == before
    # The second's gone: the series shrinks once, even delivered twice.
    went = gone(objects[1], 21)
    await run._apply([went])
    await run._apply([went])
    found = (await types(dicom_db))[before:]
    assert found == [ev.SeriesShrunk.type, ev.SeriesInstancesRemoved.type]
    assert await dicom_db.fetchval("SELECT count(*) FROM dicom.instances") == 2
    row = await dicom_db.fetchrow(
        "SELECT data FROM dicom.events WHERE type = $1", ev.SeriesShrunk.type
    )
    assert row["data"]["instance_count"] == 2
    # The read model rebuilt from the events is the live one.
    rows = {
        "series": "SELECT * FROM dicom.series ORDER BY file_id",
        "instances": "SELECT * FROM dicom.instances ORDER BY file_id, slice_key",
    }
    live = {t: [dict(r) for r in await dicom_db.fetch(q)] for t, q in rows.items()}
    assert await rebuild(dicom_db, EventStore("dicom"), series) > 0
    assert {t: [dict(r) for r in await dicom_db.fetch(q)] for t, q in rows.items()} == live


async def test_an_object_changed_then_gone_delivered_gone_first_does_not_come_back(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path)
    slices = ct_series(2)
    went, other = uuid.uuid4(), uuid.uuid4()
    run = consumer(dicom_db, blobs)
    await run._apply([(await stored(blobs, other, slices[1], 1))[1]])
    await run._apply([(await stored(blobs, went, slices[0], 2))[1]])
    # Changed (recorded at 3, one job), then gone (at 4, another): the gone delivered
    # first takes the instance of 2 out; the copy of 3 comes late and is refused.
    job_id, changed = await stored(blobs, went, slices[0], 3)
    await run._apply([gone(went, 4)])
    await run._apply([changed])
    await run._apply([changed])
    (refused,) = (await settled(dicom_db, job_id)).rejected
    assert refused.code == "object_gone"
    assert [r["object_id"] for r in await dicom_db.fetch("SELECT * FROM dicom.instances")] == [
        other
    ]


async def test_an_older_copy_delivered_after_a_newer_one_is_refused(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path)
    # The object's bytes change twice, each time to an instance of another series.
    first, middle, last = (ct_series(1, series=n)[0] for n in (1, 2, 3))
    object_id = uuid.uuid4()
    run = consumer(dicom_db, blobs)
    await run._apply([(await stored(blobs, object_id, first, 1))[1]])
    job_id, late = await stored(blobs, object_id, middle, 2)
    await run._apply([(await stored(blobs, object_id, last, 3))[1]])
    await run._apply([late])
    await run._apply([late])
    (refused,) = (await settled(dicom_db, job_id)).rejected
    assert refused.code == "object_changed"
    rows = await dicom_db.fetch("SELECT object_id, object_position FROM dicom.instances")
    assert [dict(r) for r in rows] == [{"object_id": object_id, "object_position": 3}]


async def test_an_older_copy_after_a_newest_one_refused_is_refused_too(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    """The object's newest bytes are refused (a DICM marker, headers past reading):
    no instance of them is here to say which copy is newest, yet a copy stored before
    them is stale all the same (before, it joined its series)."""
    blobs = LocalBlobStore(tmp_path)
    first, middle = ct_series(1, series=1)[0], ct_series(1, series=2)[0]
    broken = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00garbage" * 10
    object_id = uuid.uuid4()
    run = consumer(dicom_db, blobs)
    await run._apply([(await stored(blobs, object_id, first, 1))[1]])
    late_job, late = await stored(blobs, object_id, middle, 2)
    newest_job, newest = await stored(blobs, object_id, broken, 3)
    await run._apply([newest])
    assert not (await settled(dicom_db, newest_job)).accepted
    await run._apply([late])
    (refused,) = (await settled(dicom_db, late_job)).rejected
    assert refused.code == "object_changed"
    assert (
        await dicom_db.fetch("SELECT * FROM dicom.instances WHERE object_id = $1", object_id) == []
    )


async def test_a_moved_series_file_replaced_in_a_batch_with_an_upload_into_its_folder(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    blobs = LocalBlobStore(tmp_path)
    two = ct_series(2, series=1)
    object_id, moved_to = uuid.uuid4(), uuid.uuid4()
    run = consumer(dicom_db, blobs)
    await run._apply([(await stored(blobs, object_id, two[0], 1))[1]])
    await run._apply([(await stored(blobs, uuid.uuid4(), two[1], 2))[1]])
    # The series file moved to another folder (as SeriesMoved leaves dicom.series).
    await dicom_db.execute("UPDATE dicom.series SET folder_id = $1", moved_to)
    # The object's bytes change to another series' instance, in the batch of a plain
    # upload (no object) into the folder the series file moved to.
    _, changed = await stored(blobs, object_id, ct_series(1, series=3)[0], 3)
    _, upload = await stored(blobs, None, ct_series(1, series=2)[0], 4, moved_to)
    await run._apply([changed, upload])
    shrunk = await dicom_db.fetchrow(
        "SELECT data, metadata->>'causation_id' AS cause FROM dicom.events WHERE type = $1",
        ev.SeriesShrunk.type,
    )
    assert shrunk["data"]["instance_count"] == 1
    assert shrunk["cause"] == str(changed.event_id)


async def remembered(pool: asyncpg.Pool) -> dict[str, list[tuple[uuid.UUID, int]]]:
    return {
        table: [tuple(r) for r in await pool.fetch(f"SELECT * FROM dicom.{table} ORDER BY 2")]
        for table in ("objects_gone_first", "objects_newest_copy")
    }


async def test_what_refuses_no_copy_any_more_is_forgotten_and_what_may_is_kept(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    """A gone or a newest copy refuses copies of its object stored before it (ingest's
    positions). Once every ingest event below it is handled here, and no dead-lettered
    copy below it may be replayed, none can come: its row goes. One a copy may still
    come under is kept, and refuses it when it comes."""
    blobs = LocalBlobStore(tmp_path)
    slices = ct_series(4)
    kept, went, dead = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    dicom = handlers_of(dicom_db, blobs)
    run = consumer(dicom_db, blobs, dicom)
    await run._apply([(await stored(blobs, kept, slices[0], 1))[1]])
    # Gone at 3, delivered before the copy stored at 2: ingest's events are handled up
    # to 1, so the copy may still come, and the gone is kept; the copy at 1 refuses none.
    late_job, late = await stored(blobs, went, slices[1], 2)
    await run._apply([gone(went, 3)])
    assert await dicom.forget_passed_objects() == 1
    assert await remembered(dicom_db) == {
        "objects_gone_first": [(went, 3)],
        "objects_newest_copy": [],
    }
    await run._apply([late])
    (refused,) = (await settled(dicom_db, late_job)).rejected
    assert refused.code == "object_gone"
    # Handled up to 3: no copy before either row can come; one delivered again is
    # dropped by the inbox, as before.
    assert await dicom.forget_passed_objects() == 2
    assert await remembered(dicom_db) == {"objects_gone_first": [], "objects_newest_copy": []}
    before = await types(dicom_db)
    await run._apply([late])
    assert await types(dicom_db) == before
    assert await dicom_db.fetchval("SELECT count(*) FROM dicom.instances") == 1
    # A copy stored at 4 was dead-lettered (handled, for the watermark), its object gone
    # at 5: that gone is kept while the copy may be replayed, and refuses it then.
    dead_job, copy = await stored(blobs, dead, slices[2], 4)
    async with dicom_db.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO dicom.dead_letters (id, consumer, topic, event_id, type, source,
                   position, envelope, error, tries, first_failed_at, last_failed_at)
               VALUES ($1, 'dicom', 'files.ingest', $2, $3, 'ingest', 4, $4, 'test', 3,
                       now(), now())""",
            uuid.uuid4(),
            copy.event_id,
            copy.type,
            copy.model_dump(mode="json"),
        )
        await run.inbox.admit(conn, [copy])
        await run.inbox.advance(conn, {"ingest"})
    # Another object's gone above it does not wait for it.
    await run._apply([gone(dead, 5), gone(uuid.uuid4(), 6)])
    assert await dicom.forget_passed_objects() == 1
    assert await remembered(dicom_db) == {
        "objects_gone_first": [(dead, 5)],
        "objects_newest_copy": [],
    }
    await dicom_db.execute("UPDATE dicom.dead_letters SET status = 'replay_requested'")
    assert await run.replay_requested() == 1
    (refused,) = (await settled(dicom_db, dead_job)).rejected
    assert refused.code == "object_gone"
    # Replayed: nothing below the gone can come now.
    assert await dicom.forget_passed_objects() == 2
    assert await remembered(dicom_db) == {"objects_gone_first": [], "objects_newest_copy": []}
    # A later copy of an object whose rows went is taken as ever.
    back_job, back = await stored(blobs, went, slices[3], 7)
    await run._apply([back])
    assert len((await settled(dicom_db, back_job)).accepted) == 1


async def test_two_replicas_forget_side_by_side_each_row_once(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    await dicom_db.execute(
        """INSERT INTO dicom.watermarks (consumer, source, position)
           VALUES ('dicom', 'ingest', 5000);
           INSERT INTO dicom.objects_gone_first
           SELECT gen_random_uuid(), n FROM generate_series(1, 3000) AS n;
           INSERT INTO dicom.objects_newest_copy
           SELECT gen_random_uuid(), n FROM generate_series(4000, 6000) AS n"""
    )
    one, two = (
        handlers_of(dicom_db, LocalBlobStore(tmp_path)),
        handlers_of(dicom_db, LocalBlobStore(tmp_path)),
    )

    async def drain(dicom: Dicom) -> int:
        total = 0
        while gone := await dicom.forget_passed_objects(limit=100):
            total += gone
        return total

    assert sum(await asyncio.gather(drain(one), drain(two))) == 3000 + 1002
    # Newest copies above the watermark + 1 stay: a copy before them may still come.
    assert await dicom_db.fetchval("SELECT min(position) FROM dicom.objects_newest_copy") == 5002
    assert await dicom_db.fetchval("SELECT count(*) FROM dicom.objects_gone_first") == 0


async def test_positions_past_32_bits_are_forgotten_too(
    dicom_db: asyncpg.Pool, tmp_path: Path
) -> None:
    """Ingest's store positions are 64-bit: a watermark past 2^31 must not fail the pass
    (and leave both tables to grow for good)."""
    far = 3_000_000_000
    await dicom_db.execute(
        f"""INSERT INTO dicom.watermarks (consumer, source, position)
            VALUES ('dicom', 'ingest', {far});
            INSERT INTO dicom.objects_gone_first VALUES (gen_random_uuid(), {far});
            INSERT INTO dicom.objects_newest_copy VALUES (gen_random_uuid(), {far + 2})"""
    )
    assert await handlers_of(dicom_db, LocalBlobStore(tmp_path)).forget_passed_objects() == 1
    assert await dicom_db.fetchval("SELECT position FROM dicom.objects_newest_copy") == far + 2
