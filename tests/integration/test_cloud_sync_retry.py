"""A cloud sync's batch retried after a deadlock, on a real PostgreSQL, moto's S3 and a
local blob store: the collector sweeps between the two attempts, but the bytes the
batch put are claimed before the put (collector/claims.py), not in the transaction
rolled back: the sweep leaves them, and what the batch records has its bytes. A claim
the collector dropped (a put longer than it keeps claims) has the batch read again."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from services.ingest.collector import claims
from services.ingest.collector.handlers import Collector
from services.ingest.collector.projections import blob_refs
from services.ingest.imports import sync as sync_module
from services.ingest.imports.buckets.loop import BucketLoop, Threaded
from services.ingest.imports.buckets.port import Bucket
from services.ingest.imports.buckets.s3 import S3Reader
from services.ingest.imports.domain.endpoints import EndpointRule
from services.ingest.imports.domain.integrations import Credentials, parse_endpoint
from services.ingest.imports.domain.sync import SyncConfig
from services.ingest.imports.egress import Caps, Egress
from services.ingest.imports.projections import synced
from services.ingest.imports.sync import Syncs, _Job
from services.ingest.jobs.projections import jobs
from shared.contracts.envelope import Cause, Envelope
from shared.kit.blobs import BlobWriter, LocalBlobStore
from shared.kit.blobs.base import content_key
from shared.kit.eventstore import EventStore
from shared.kit.settings import Settings
from tests.cloud_fixtures import MotoS3, start_moto
from tests.conftest import eventually, fresh_database
from tests.dicom_fixtures import ct_series

BUCKET = "synced-bucket"
PREFIX = "scans/"
CAUSE = Cause(actor="test", correlation_id="c")
BUCKETS = BucketLoop()


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = start_moto(log=tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


class DeadlockOnce(EventStore):
    """The ingest store, whose first append PostgreSQL aborts as a deadlock (the batch's
    bytes are stored by then)."""

    def __init__(self) -> None:
        super().__init__("ingest")
        self.deadlocks = 0

    async def append(self, conn: Any, envelopes: Sequence[Envelope]) -> int:
        if self.deadlocks == 0:
            self.deadlocks += 1
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return await super().append(conn, envelopes)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "sync_retry") as pool:
        yield pool


@pytest.mark.parametrize("claim", ["kept", "dropped"])
async def test_what_a_sync_batch_records_has_its_bytes_after_a_retry_or_a_dropped_claim(
    pool: asyncpg.Pool, moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claim: str
) -> None:
    instance = ct_series(1, series=1)[0]
    key = content_key(hashlib.sha256(instance).hexdigest())
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}0.dcm", Body=instance)

    # Kept: the first attempt deadlocks, and the collector sweeps before the second.
    # Dropped: the collector sweeps before the first, every claim stale for it.
    store = DeadlockOnce() if claim == "kept" else EventStore("ingest")
    async with pool.acquire() as conn:
        await store.setup(conn)
        for projection in (jobs, synced, blob_refs):
            await projection.setup(conn)
    blobs = LocalBlobStore(tmp_path / "blobs")
    # The same content stored and released a while ago: reclaimable.
    await blobs.put(key, instance)
    await pool.execute(
        "INSERT INTO ingest.blobs (key, stored_at, pins) VALUES ($1, $2, 0)",
        key,
        datetime.now(UTC) - timedelta(hours=1),
    )
    settings = Settings(data_dir=tmp_path / "data", blob_gc_grace_s=0)
    parts: Any = SimpleNamespace(pool=pool, store=store, settings=settings)
    syncs = Syncs(parts, None, blobs)
    collector = Collector(
        SimpleNamespace(pool=pool, store=EventStore("ingest"), settings=settings), blobs
    )

    if claim == "dropped":
        collector.claims_kept = timedelta(0)
    claim_rows = sync_module.claim_blobs
    swept: list[int] = []

    async def claim_after_a_sweep(conn: Any, keys: list[str], *args: Any) -> None:
        if (claim == "dropped" or store.deadlocks) and not swept:
            swept.append(await collector.sweep())
        await claim_rows(conn, keys, *args)

    monkeypatch.setattr(sync_module, "claim_blobs", claim_after_a_sweep)

    endpoint = parse_endpoint(moto.endpoint)
    bucket = Bucket(endpoint, "us-east-1", BUCKET, Credentials(moto.access_key, moto.secret_key))
    egress = Egress(EndpointRule.parse(f"127.0.0.1:{endpoint.port}"))
    reader = Threaded(S3Reader(bucket, egress, Caps(response_s=5.0)), BUCKETS)
    config = SyncConfig(uuid.uuid4(), uuid.uuid4(), PREFIX, None)
    job = _Job(uuid.uuid4(), 0)
    syncs.spool.mkdir(parents=True, exist_ok=True)
    try:
        listed = [o async for page in reader.listing(PREFIX) for o in page]
        await syncs._batch(job, config, CAUSE, reader, listed)
    finally:
        await reader.close()

    if claim == "kept":
        # The sweep took nothing: the claim outlived the rolled-back attempt (before
        # claims, it took the bytes, and the batch was read again).
        assert store.deadlocks == 1 and swept == [0]
    else:
        # The claim dropped and the bytes deleted (two things reclaimed): the batch was
        # read again, its bytes put again.
        assert swept == [2]
    recorded = await pool.fetch("SELECT type, data FROM ingest.events ORDER BY position")
    stored = [r["data"] for r in recorded if "DicomInstanceStored" in r["type"]]
    assert len(stored) == 1, [r["type"] for r in recorded]
    assert stored[0]["blob_key"] == key
    # What the batch recorded names bytes that are there, its claim given up.
    assert await blobs.exists(key)
    async with blobs.local_copy(key) as path:
        assert path.read_bytes() == instance
    assert not await pool.fetchval("SELECT count(*) FROM ingest.blob_claims")


class PutUntilRenewed(LocalBlobStore):
    """A local store whose put of a batch lasts until its claims have been dated anew (a
    put of large objects to a slow store, past the hour the collector keeps a claim)."""

    def __init__(self, root: Path, pool: asyncpg.Pool) -> None:
        super().__init__(root)
        self.pool = pool

    async def commit(self, writers: Sequence[BlobWriter]) -> None:
        claimed = "SELECT max(claimed_at) FROM ingest.blob_claims"
        first = await self.pool.fetchval(claimed)

        async def renewed() -> bool:
            return bool(await self.pool.fetchval(claimed) > first)

        await eventually(renewed, within=10, what="the batch's claims dated anew")
        await super().commit(writers)


async def test_a_sync_batch_dates_its_claims_anew_while_its_put_goes_on(
    pool: asyncpg.Pool, moto: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, only an upload session's copy did: a batch put for longer than the
    collector keeps claims lost them, and was read and put again."""
    monkeypatch.setattr(claims, "RENEW_EVERY", timedelta(seconds=0.05))
    instance = ct_series(1, series=2)[0]
    key = content_key(hashlib.sha256(instance).hexdigest())
    bucket_name = f"{BUCKET}-long"
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key=f"{PREFIX}0.dcm", Body=instance)
    store = EventStore("ingest")
    async with pool.acquire() as conn:
        await store.setup(conn)
        for projection in (jobs, synced, blob_refs):
            await projection.setup(conn)
    blobs = PutUntilRenewed(tmp_path / "blobs", pool)
    settings = Settings(data_dir=tmp_path / "data", blob_gc_grace_s=0)
    parts: Any = SimpleNamespace(pool=pool, store=store, settings=settings)
    syncs = Syncs(parts, None, blobs)
    endpoint = parse_endpoint(moto.endpoint)
    bucket = Bucket(
        endpoint, "us-east-1", bucket_name, Credentials(moto.access_key, moto.secret_key)
    )
    egress = Egress(EndpointRule.parse(f"127.0.0.1:{endpoint.port}"))
    reader = Threaded(S3Reader(bucket, egress, Caps(response_s=5.0)), BUCKETS)
    syncs.spool.mkdir(parents=True, exist_ok=True)
    try:
        listed = [o async for page in reader.listing(PREFIX) for o in page]
        job = _Job(uuid.uuid4(), 0)
        await syncs._batch(
            job, SyncConfig(uuid.uuid4(), uuid.uuid4(), PREFIX, None), CAUSE, reader, listed
        )
    finally:
        await reader.close()
    assert job.version > 0
    assert await blobs.exists(key)
    assert not await pool.fetchval("SELECT count(*) FROM ingest.blob_claims")
