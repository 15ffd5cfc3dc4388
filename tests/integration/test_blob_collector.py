"""The collector against a blob being stored again, step by step on a real PostgreSQL
and a local blob store: whichever of the two takes the blob's row first, the bytes of
the file being stored survive."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from services.ingest.collector import claims
from services.ingest.collector.handlers import Collector
from services.ingest.collector.projections import (
    RECLAIMABLE,
    UNDATED,
    blob_refs,
    claim_blobs,
    claimed,
)
from shared.contracts import ingest as ev
from shared.contracts.catalog import FileDeleted, Media
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit import db
from shared.kit.blobs import LocalBlobStore
from shared.kit.embedded import start_postgres
from shared.kit.eventstore import EventStore
from shared.kit.settings import Settings
from tests.conftest import _create_database, eventually

CAUSE = Cause(actor="test", correlation_id="c")
DATA = b"bytes stored twice"


@pytest.fixture(scope="module")
def collector_database(database_url: str) -> str:
    return _create_database(database_url, f"collector_{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def setup(
    collector_database: str, tmp_path: Path
) -> AsyncIterator[tuple[Collector, LocalBlobStore, asyncpg.Pool]]:
    pool = await db.connect_pool(collector_database, max_size=5)
    store = EventStore("ingest")
    async with pool.acquire() as conn:
        await store.setup(conn)
        await blob_refs.setup(conn)
        await conn.execute("TRUNCATE ingest.blobs, ingest.blob_files, ingest.blob_claims")
    blobs = LocalBlobStore(tmp_path / "blobs")
    runtime: Any = SimpleNamespace(pool=pool, store=store, settings=Settings(blob_gc_grace_s=0))
    collector = Collector(runtime, blobs)
    # Uploads' claims are stale at once too, as blobs are (their own floor is an hour).
    collector.claims_kept = timedelta(0)
    yield collector, blobs, pool
    await pool.close()


def stored(file_id: uuid.UUID, key: str, at: datetime | None = None) -> list[Any]:
    event = ev.FileContentStored(
        job_id=uuid.uuid4(),
        file_id=file_id,
        folder_id=uuid.uuid4(),
        name="f.txt",
        kind="text",
        size=len(DATA),
        sha256=key.rsplit("/", 1)[-1],
        mime_type="text/plain",
        media=Media(),
        blob_key=key,
    )
    return envelopes_of([Change(f"upload-job-{event.job_id}", 1, event)], CAUSE, at)


async def store_file(
    pool: asyncpg.Pool,
    blobs: LocalBlobStore,
    *,
    stored_bytes: asyncio.Event | None = None,
    hold: asyncio.Event | None = None,
    dated: bool = False,
) -> tuple[uuid.UUID, str]:
    """What an upload does: claim, store the bytes, record, in one transaction (held
    open, once the bytes are stored, until `hold` is set). `dated`: the claim dates the
    blob with the time its event carries, as an upload of files does; the event then
    writes no second version of the blob's row."""
    writer = blobs.writer()
    writer.write(DATA)
    key, _ = writer.finish()
    file_id = uuid.uuid4()
    at = datetime.now(UTC) if dated else None
    async with pool.acquire() as conn, conn.transaction():
        if at is None:
            await claim_blobs(conn, [key])
        else:
            await claim_blobs(conn, [key], at)
        claimed_row = await conn.fetchval("SELECT ctid FROM ingest.blobs WHERE key = $1", key)
        await blobs.commit([writer])
        if stored_bytes is not None:
            stored_bytes.set()
        if hold is not None:
            await hold.wait()
        # An undated claim records as the upload route does (its projection told what
        # the claim dated). A dated one records without being told, so that the row
        # kept as it was below is the upsert's own filter's doing, not the skip's.
        told = claimed([key], UNDATED) if at is None else contextlib.nullcontext()
        with told:
            await blob_refs.apply(conn, stored(file_id, key, at))
        row = await conn.fetchrow("SELECT ctid, stored_at FROM ingest.blobs WHERE key = $1", key)
        if at is not None:
            assert (row["ctid"], row["stored_at"]) == (claimed_row, at)
    return file_id, key


async def release(pool: asyncpg.Pool, file_id: uuid.UUID) -> None:
    change = Change(f"blob-release-{uuid.uuid4()}", 1, ev.BlobsReleased(file_ids=[file_id]))
    async with pool.acquire() as conn, conn.transaction():
        await blob_refs.apply(conn, envelopes_of([change], CAUSE))


async def test_a_released_blob_goes_and_a_referenced_one_stays(setup: Any) -> None:
    collector, blobs, pool = setup
    first, key = await store_file(pool, blobs)
    second, _ = await store_file(pool, blobs)
    await release(pool, first)
    assert await collector.sweep() == 0  # the second file still has it
    assert await blobs.exists(key)
    await release(pool, second)
    assert await collector.sweep() == 1
    assert not await blobs.exists(key)


async def test_a_recorded_key_that_is_not_a_blob_s_does_not_stop_the_sweeps(setup: Any) -> None:
    """A key no store could have written (an event recorded by hand, an old layout) has
    no bytes to delete: it is let go, and the blobs swept with it still go. It stopped
    every sweep before, the same batch failing each time, so nothing was reclaimed."""
    collector, blobs, pool = setup
    odd = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await claim_blobs(conn, ["nowhere-" + uuid.uuid4().hex])
        await blob_refs.apply(conn, stored(odd, f"nowhere-{uuid.uuid4().hex}"))
    ours, key = await store_file(pool, blobs)
    await release(pool, odd)
    await release(pool, ours)
    assert await collector.sweep() == 3
    assert not await blobs.exists(key)
    assert await collector.sweep() == 0


@pytest.mark.parametrize("dated", [False, True], ids=["claim undated", "claim dated"])
async def test_a_sweep_skips_a_blob_claimed_by_a_store_in_flight(setup: Any, dated: bool) -> None:
    collector, blobs, pool = setup
    old, key = await store_file(pool, blobs, dated=dated)
    await release(pool, old)  # unreferenced now: the collector's, unless claimed
    hold, stored_bytes = asyncio.Event(), asyncio.Event()
    in_flight = asyncio.create_task(
        store_file(pool, blobs, stored_bytes=stored_bytes, hold=hold, dated=dated)
    )
    try:
        await asyncio.wait_for(stored_bytes.wait(), timeout=5)
        # The bytes are back and their file not yet recorded: the sweep must not take them.
        assert await collector.sweep() == 0
    finally:
        hold.set()
        await in_flight
    assert await blobs.exists(key)
    assert await collector.sweep() == 0


@pytest.mark.parametrize("dated", [False, True], ids=["claim undated", "claim dated"])
async def test_a_store_waits_for_a_sweep_that_took_the_blob_first_then_stores_again(
    setup: Any, dated: bool
) -> None:
    collector, blobs, pool = setup
    old, key = await store_file(pool, blobs, dated=dated)
    await release(pool, old)
    async with pool.acquire() as sweeping, sweeping.transaction():
        # The sweep has locked the row and is deleting the bytes...
        later = datetime.now(UTC) + timedelta(days=1)
        assert [r["key"] for r in await sweeping.fetch(RECLAIMABLE, later, 10)] == [key]
        in_flight = asyncio.create_task(store_file(pool, blobs, dated=dated))

        await eventually(
            lambda: lock_waiter(pool, "%INSERT INTO ingest.blobs%"),
            within=5,
            what="the store waits on the sweep's lock",
        )
        assert not in_flight.done()
        await blobs.delete(key)
        await sweeping.execute("DELETE FROM ingest.blobs WHERE key = $1", key)
    # ... and the store, let through once the sweep committed, stored the bytes again.
    await in_flight
    assert await blobs.exists(key)
    assert await collector.sweep() == 0


# -- an upload of files: claimed, put holding no connection, then recorded -------------


@dataclass(frozen=True)
class Upload:
    key: str
    id: uuid.UUID
    at: datetime


async def claim_and_put(pool: asyncpg.Pool, blobs: LocalBlobStore, *, put: bool = True) -> Upload:
    """The first two steps of an upload of files (uploads/handlers.py `_store`): its
    blob claimed in a transaction of its own, then put with no connection held (unless
    not `put`: still putting)."""
    writer = blobs.writer()
    writer.write(DATA)
    key, _ = writer.finish()
    upload = Upload(key=key, id=uuid.uuid4(), at=datetime.now(UTC))
    async with pool.acquire() as conn, conn.transaction():
        await claims.claim(conn, [key], upload.id, upload.at)
    if put:
        await blobs.commit([writer])
    return upload


async def record(pool: asyncpg.Pool, upload: Upload) -> bool:
    """The last step: the file recorded, unless its claim went meanwhile (False)."""
    key, at = upload.key, upload.at
    async with pool.acquire() as conn, conn.transaction():
        await claim_blobs(conn, [key], at)
        if not await claims.settle(conn, [key], upload.id):
            return False
        with claimed([key], at):
            await blob_refs.apply(conn, stored(uuid.uuid4(), key, at))
    return True


async def unclaimed(pool: asyncpg.Pool) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM ingest.blob_claims")


async def test_an_upload_that_never_records_leaves_bytes_the_collector_reclaims(
    setup: Any,
) -> None:
    """Its process killed between the put and the record (or the put failed): the claim
    outlives the time claims are kept (0 here), and the bytes it alone held go with it."""
    collector, blobs, pool = setup
    key = (await claim_and_put(pool, blobs)).key
    assert await blobs.exists(key)
    # The claim dropped, its key left to the sweep of blobs, which deletes the bytes.
    assert await collector.sweep() == 2
    assert not await blobs.exists(key)
    assert await unclaimed(pool)
    assert await collector.sweep() == 0


async def test_a_claim_keeps_an_unreferenced_blob_from_the_sweep_until_its_upload_records(
    setup: Any,
) -> None:
    collector, blobs, pool = setup
    collector.claims_kept = timedelta(minutes=10)
    old, key = await store_file(pool, blobs, dated=True)
    await release(pool, old)
    # Unreferenced for an hour: the collector's, unless an upload claims it.
    await pool.execute(
        "UPDATE ingest.blobs SET stored_at = $2 WHERE key = $1",
        key,
        datetime.now(UTC) - timedelta(hours=1),
    )
    upload = await claim_and_put(pool, blobs)
    assert upload.key == key
    assert await collector.sweep() == 0
    assert await blobs.exists(key)
    assert await record(pool, upload)
    assert await unclaimed(pool)
    assert await collector.sweep() == 0
    assert await blobs.exists(key)


async def test_an_upload_whose_claim_the_collector_took_during_its_put_records_nothing(
    setup: Any,
) -> None:
    """A put longer than the collector's grace: the claim went, and its bytes perhaps
    with it; the upload is refused rather than recorded without its bytes."""
    collector, blobs, pool = setup
    upload = await claim_and_put(pool, blobs)
    assert await collector.sweep() == 2
    assert not await record(pool, upload)
    assert not await pool.fetchval("SELECT count(*) FROM ingest.blob_files")


async def test_a_put_longer_than_the_collector_keeps_claims_keeps_its_claim_while_it_goes_on(
    setup: Any,
) -> None:
    """A server-side copy of hours (an upload session's file of terabytes): its claim,
    made long ago, is dated anew while the copy goes on, so the collector leaves it and
    the copy records; before, the copy's claim went after an hour and it was refused."""
    collector, _, pool = setup
    collector.claims_kept = timedelta(minutes=30)
    key, holder = f"blobs/{uuid.uuid4().hex}", uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await claims.claim(conn, [key], holder, datetime.now(UTC) - timedelta(hours=2))
    copied = asyncio.Event()

    async def copy() -> str:
        await copied.wait()
        return "copied"

    putting = asyncio.create_task(
        claims.kept_while(pool, [key], holder, copy(), every=timedelta(seconds=0.05))
    )

    async def renewed() -> bool:
        since = await pool.fetchval(
            "SELECT now() - claimed_at FROM ingest.blob_claims WHERE key = $1", key
        )
        return since is not None and since < timedelta(minutes=1)

    await eventually(renewed, within=10, what="the claim dated anew")
    await collector.sweep()
    assert await pool.fetchval("SELECT count(*) FROM ingest.blob_claims WHERE key = $1", key)
    copied.set()
    assert await putting == "copied"
    async with pool.acquire() as conn, conn.transaction():
        await claim_blobs(conn, [key])
        assert await claims.settle(conn, [key], holder)


async def test_two_uploads_of_the_same_bytes_each_record_whichever_settles_first(
    setup: Any,
) -> None:
    collector, blobs, pool = setup
    collector.claims_kept = timedelta(minutes=10)
    first = await claim_and_put(pool, blobs)
    second = await claim_and_put(pool, blobs)
    assert await record(pool, second)
    assert not await unclaimed(pool)  # the first upload's claim stays
    assert await record(pool, first)
    assert await unclaimed(pool)


async def test_a_claim_waits_for_a_sweep_that_took_the_blob_first_then_the_put_stores_again(
    setup: Any,
) -> None:
    collector, blobs, pool = setup
    old, key = await store_file(pool, blobs, dated=True)
    await release(pool, old)
    async with pool.acquire() as sweeping, sweeping.transaction():
        # The sweep has locked the row and is deleting the bytes...
        later = datetime.now(UTC) + timedelta(days=1)
        assert [r["key"] for r in await sweeping.fetch(RECLAIMABLE, later, 10)] == [key]
        in_flight = asyncio.create_task(claim_and_put(pool, blobs))

        await eventually(
            lambda: lock_waiter(pool, "%FOR SHARE%"),
            within=5,
            what="the claim waits on the sweep's lock",
        )
        assert not in_flight.done()
        await blobs.delete(key)
        await sweeping.execute("DELETE FROM ingest.blobs WHERE key = $1", key)
    # ... and the put, let through once the sweep committed, stored the bytes again.
    upload = await in_flight
    assert await blobs.exists(key)
    assert await record(pool, upload)
    assert await collector.sweep() == 0
    assert await blobs.exists(key)


async def lock_waiter(pool: asyncpg.Pool, like: str) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE $1",
            like,
        )
    )


async def test_a_stale_claim_leaves_bytes_another_transaction_is_storing_uncommitted(
    setup: Any,
) -> None:
    """An upload that never recorded, and a session storing the same bytes, its blob
    row not committed yet: the collector cannot see that row, and must not delete the
    bytes it is about to refer to."""
    collector, blobs, pool = setup
    key = (await claim_and_put(pool, blobs)).key
    async with pool.acquire() as session:
        storing = session.transaction()
        await storing.start()
        await claim_blobs(session, [key])
        sweeping = asyncio.create_task(collector.sweep())

        async def waits_or_done() -> bool:
            return sweeping.done() or await lock_waiter(pool, "%INSERT INTO ingest.blobs%")

        await eventually(waits_or_done, within=5, what="the sweep waits on the session's row")
        with claimed([key], UNDATED):
            await blob_refs.apply(session, stored(uuid.uuid4(), key))
        await storing.commit()
    await sweeping
    assert await blobs.exists(key)
    assert await unclaimed(pool)
    assert await collector.sweep() == 0
    assert await blobs.exists(key)


async def test_an_upload_whose_claim_was_erased_does_not_settle_anothers(setup: Any) -> None:
    """The claims are erased (as a crash of PostgreSQL did while their table was
    unlogged; or the collector dropped them) after an upload's put, and the sweep
    deletes its bytes; another upload of the same bytes claims them and is still
    putting. The first must not take the second's claim for its own and record a file
    whose bytes may never come (the second's put may fail)."""
    collector, blobs, pool = setup
    old, key = await store_file(pool, blobs, dated=True)
    await release(pool, old)
    first = await claim_and_put(pool, blobs)
    await pool.execute("TRUNCATE ingest.blob_claims")
    assert await collector.sweep() == 1
    assert not await blobs.exists(key)
    await claim_and_put(pool, blobs, put=False)
    assert not await record(pool, first)
    assert not await pool.fetchval("SELECT count(*) FROM ingest.blob_files")
    assert not await unclaimed(pool)  # the second's claim stays


async def test_the_sweep_leaves_a_claimed_blob_unlocked_for_its_upload_to_record(
    setup: Any,
) -> None:
    collector, blobs, pool = setup
    collector.claims_kept = timedelta(minutes=10)
    old, key = await store_file(pool, blobs, dated=True)
    await release(pool, old)
    upload = await claim_and_put(pool, blobs)
    async with pool.acquire() as sweeping, sweeping.transaction():
        later = datetime.now(UTC) + timedelta(days=1)
        assert await sweeping.fetch(RECLAIMABLE, later, 10) == []
        # Its record goes through while the sweep is still deleting others' bytes.
        assert await asyncio.wait_for(record(pool, upload), 5)
    assert await blobs.exists(key)


async def test_the_first_shape_of_the_claims_table_is_replaced_at_setup(setup: Any) -> None:
    """Its rows a key each, holders counted (before claims were each upload's own): the
    table is made again; claims last a request, and one gone refuses its upload."""
    _, blobs, pool = setup
    async with pool.acquire() as conn:
        await conn.execute("DROP TABLE ingest.blob_claims")
        await conn.execute(
            """CREATE UNLOGGED TABLE ingest.blob_claims (
                   key text PRIMARY KEY, claimed_at timestamptz NOT NULL,
                   holders integer NOT NULL)"""
        )
        await blob_refs.setup(conn)
        await blob_refs.setup(conn)  # the new shape left as it is
    upload = await claim_and_put(pool, blobs)
    assert await record(pool, upload)
    assert await unclaimed(pool)


async def test_an_unlogged_claims_table_is_made_logged_at_setup(setup: Any) -> None:
    """As an ingest before 2026-12-07 made it: rewritten logged, its claims kept."""
    _, blobs, pool = setup
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE ingest.blob_claims SET UNLOGGED")
    upload = await claim_and_put(pool, blobs)
    async with pool.acquire() as conn:
        await blob_refs.setup(conn)
        persistence = await conn.fetchval(
            "SELECT relpersistence::text FROM pg_class WHERE oid = 'ingest.blob_claims'::regclass"
        )
    assert persistence == "p"
    assert await record(pool, upload)


async def test_a_busy_claims_table_is_made_logged_at_a_later_setup(setup: Any) -> None:
    """A collector's sweep holds the table (through its deletes from a hung store): the
    setup waits 2 s at most, leaves it unlogged, and claims go on; the next one does it."""
    _, blobs, pool = setup
    persistence = (
        "SELECT relpersistence::text FROM pg_class WHERE oid = 'ingest.blob_claims'::regclass"
    )
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE ingest.blob_claims SET UNLOGGED")
    async with pool.acquire() as sweep, sweep.transaction():
        await sweep.fetch("SELECT key FROM ingest.blob_claims")
        async with pool.acquire() as conn:
            await asyncio.wait_for(blob_refs.setup(conn), 30)
            assert await conn.fetchval(persistence) == "u"
            assert await conn.fetchval("SHOW lock_timeout") == "0"
        upload = await claim_and_put(pool, blobs)
    async with pool.acquire() as conn:
        await blob_refs.setup(conn)
        assert await conn.fetchval(persistence) == "p"
    assert await record(pool, upload)


async def test_a_claim_outlives_a_crash_of_postgresql(tmp_path: Path) -> None:
    """An upload's claim survives PostgreSQL's immediate shutdown (its crash recovery
    empties unlogged tables): the upload records after it; had it died, the collector
    would reclaim its bytes from the claim."""
    pgdata = tmp_path / "pg"
    pg = start_postgres(pgdata, durable=False)
    try:
        pool = await db.connect_pool(pg.url, max_size=2)
        try:
            async with pool.acquire() as conn:
                await EventStore("ingest").setup(conn)
                await blob_refs.setup(conn)
            upload = await claim_and_put(pool, LocalBlobStore(tmp_path / "blobs"))
        finally:
            await pool.close()
        pg.stop(signal.SIGQUIT)  # immediate: no checkpoint, WAL replayed at the start
        pg = start_postgres(pgdata, durable=False, port=pg.port)
        pool = await db.connect_pool(pg.url, max_size=2)
        try:
            assert await pool.fetchval(
                "SELECT count(*) FROM ingest.blob_claims WHERE upload_id = $1", upload.id
            )
            assert await record(pool, upload)
        finally:
            await pool.close()
    finally:
        pg.stop(signal.SIGINT)


async def test_a_deletion_of_12000_files_releases_their_blobs_in_bounded_pages(
    setup: Any,
) -> None:
    """A folder of 12,000 files deleted at once: the catalog's deletions release every
    blob, in BlobsReleased events of at most RELEASED_PER_EVENT files each."""
    collector, _, pool = setup
    files = [uuid.uuid4() for _ in range(12_000)]
    keys = [f"sha256/{n:064x}" for n in range(len(files))]
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO ingest.blob_files (file_id, blob_key) VALUES ($1, $2)",
            list(zip(files, keys, strict=True)),
        )
        await conn.executemany(
            "INSERT INTO ingest.blobs (key, stored_at) VALUES ($1, now())", [(k,) for k in keys]
        )
    deleted = envelopes_of(
        [
            Change(
                f"file-{f}",
                2,
                FileDeleted(file_id=f, folder_id=uuid.uuid4(), blob_key=k, sha256="s"),
            )
            for f, k in zip(files, keys, strict=True)
        ],
        CAUSE,
    )
    async with pool.acquire() as conn:
        head = await collector.store.head(conn)
        async with conn.transaction():
            await Collector.reactions.bound(collector)(conn, deleted)
        released = [
            e
            for e in await collector.store.read_after(conn, head, limit=100)
            if e.type == ev.BlobsReleased.type
        ]
    assert [len(e.data["file_ids"]) for e in released] == [5000, 5000, 2000]
    assert sorted(f for e in released for f in e.data["file_ids"]) == sorted(map(str, files))
    left = await pool.fetchval(
        "SELECT count(*) FROM ingest.blob_files WHERE file_id = ANY($1::uuid[])", files
    )
    assert left == 0
    assert await collector.sweep() == 1000  # a sweep's batch; the next ones take the rest


@pytest.mark.parametrize("first", ["held", "left"])
async def test_the_same_instance_stored_twice_keeps_its_bytes_until_both_are_settled(
    setup: tuple[Collector, LocalBlobStore, asyncpg.Pool], first: str
) -> None:
    """Two DICOM uploads of the same bytes: one joins a series, the other is rejected.
    In whichever order the two settle, the blob is never free while an instance waits on
    it or its series lives; it is free once the series is deleted for good."""
    _, _, pool = setup
    key = f"sha256/ab/{uuid.uuid4().hex}"
    series = uuid.uuid4()

    def instance() -> ev.DicomInstanceStored:
        return ev.DicomInstanceStored(
            job_id=uuid.uuid4(),
            folder_id=uuid.uuid4(),
            name="i.dcm",
            blob_key=key,
            sha256=key.rsplit("/", 1)[-1],
            size=1,
        )

    settle = {
        "held": ev.SeriesBlobsHeld(file_id=series, blob_keys=[key]),
        "left": ev.BlobsUnpinned(blob_keys=[key]),
    }
    steps = [
        [instance(), instance()],
        [settle[first]],
        [settle["left" if first == "held" else "held"]],
        [ev.BlobsReleased(file_ids=[series])],
    ]
    free = []
    async with pool.acquire() as conn:
        for events in steps:
            changes = [Change(f"s-{uuid.uuid4()}", 1, e) for e in events]
            await blob_refs.apply(conn, envelopes_of(changes, CAUSE))
            cutoff = datetime.now(UTC) + timedelta(seconds=1)
            free.append(key in {r["key"] for r in await conn.fetch(RECLAIMABLE, cutoff, 10**6)})
    assert free == [False, False, False, True]
