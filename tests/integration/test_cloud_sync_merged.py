"""A synced folder's syncs merged, on a real PostgreSQL and moto's S3 server read by the
S3 adapter (as ingest reads a customer's bucket), whose listings the test holds: a sync
is merged only into one that will list the bucket after it was asked (the caller's
object is synced once the job they were given is done), only into one this replica runs
(a `running` row of a dead replica answers nothing), a sync pending behind another
checks the integration is still the configurer's to use, and a folder whose configurer
lost it is told so once, however many notifications come at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import boto3
import pytest

from services.ingest.collector.projections import blob_refs
from services.ingest.imports.buckets.loop import BucketLoop, Threaded
from services.ingest.imports.buckets.port import Bucket, BucketReader, Listed
from services.ingest.imports.buckets.s3 import S3Reader
from services.ingest.imports.domain.endpoints import EndpointRule
from services.ingest.imports.domain.integrations import Credentials, parse_endpoint
from services.ingest.imports.egress import Caps, Egress
from services.ingest.imports.projections import integrations, synced
from services.ingest.imports.sync import NOT_USABLE, NOTIFIED, Syncs
from services.ingest.jobs.projections import jobs
from shared.contracts import ingest as ev
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit.eventstore import EventStore
from shared.kit.settings import Settings
from tests.conftest import eventually, fresh_database

PREFIX = "scans/"
ALICE = "user:alice"
PERSON = Cause(actor=ALICE, correlation_id="c")
BUCKETS = BucketLoop()


class HeldBucket:
    """The customer's bucket as ingest reads it in production (the S3 adapter, on its
    own loop) against moto's S3 server, whose listings the test holds: a listing lists
    the bucket for real when it starts, then waits for the test to release it before
    yielding those pages (as a large bucket's listing takes a while). Everything else
    is the adapter's own."""

    def __init__(self, s3: Any, name: str, reader: BucketReader) -> None:
        self.s3, self.name, self.reader = s3, name, reader
        self.listings: list[tuple[str, set[str]]] = []  # (prefix, keys it showed)
        self.released = asyncio.Event()

    def put(self, key: str) -> None:
        self.s3.put_object(Bucket=self.name, Key=key, Body=key.encode())

    async def listing(self, prefix: str) -> AsyncIterator[list[Listed]]:
        pages = [page async for page in self.reader.listing(prefix)]
        self.listings.append((prefix, {o.key for page in pages for o in page}))
        await self.released.wait()
        for page in pages:
            yield page

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)

    def listed(self, key: str) -> bool:
        return any(key in shown for _, shown in self.listings)


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture
async def bucket(s3_endpoint: str, s3: Any) -> AsyncIterator[HeldBucket]:
    name = f"synced-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    endpoint = parse_endpoint(s3_endpoint)
    reader = Threaded(
        S3Reader(
            Bucket(endpoint, "us-east-1", name, Credentials("test", "test")),
            Egress(EndpointRule.parse(f"127.0.0.1:{endpoint.port}")),
            Caps(response_s=5.0),
        ),
        BUCKETS,
    )
    try:
        yield HeldBucket(s3, name, reader)
    finally:
        await reader.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "sync_merged") as pool:
        async with pool.acquire() as conn:
            await EventStore("ingest").setup(conn)
            # The objects read are recorded as files holding the integration.
            for projection in (jobs, synced, integrations, blob_refs):
                await projection.setup(conn)
        yield pool


async def synced_folder(pool: asyncpg.Pool, shared_with: list[str]) -> tuple[uuid.UUID, uuid.UUID]:
    """A folder Alice (a member) set up on an integration shared with `shared_with`."""
    folder_id, integration_id = uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        """INSERT INTO ingest.integrations (id, name, provider, bucket, sealed_credentials,
               version, created_at, created_by, shared_with)
           VALUES ($1, 'i', 's3', 'b', 'x', 1, now(), 'admin', $2)""",
        integration_id,
        shared_with,
    )
    await pool.execute(
        """INSERT INTO ingest.synced_folders (folder_id, integration_id, prefix, created_at,
               created_by, by_org_admin) VALUES ($1, $2, $3, now(), $4, false)""",
        folder_id,
        integration_id,
        PREFIX,
        ALICE,
    )
    return folder_id, integration_id


def syncs_of(pool: asyncpg.Pool, bucket: HeldBucket, tmp_path: Path) -> Syncs:
    async def found(integration_id: uuid.UUID) -> tuple[None, HeldBucket]:
        return None, bucket

    parts: Any = SimpleNamespace(
        pool=pool,
        store=EventStore("ingest"),
        settings=Settings(data_dir=tmp_path / "data"),
        tasks=[],
    )
    return Syncs(parts, SimpleNamespace(bucket=found), None)  # type: ignore[arg-type]


async def status(pool: asyncpg.Pool, job_id: str) -> str:
    return str(
        await pool.fetchval("SELECT status FROM ingest.jobs WHERE id = $1", uuid.UUID(job_id))
    )


async def ended(pool: asyncpg.Pool, job_id: str) -> str:
    async def over() -> bool:
        return await status(pool, job_id) != "running"

    await eventually(over, within=20, what=f"job {job_id} ended")
    return await status(pool, job_id)


async def first_listing(bucket: HeldBucket) -> None:
    """Until the folder's first sync has listed the bucket (its pages held)."""

    async def listing() -> bool:
        return len(bucket.listings) == 1

    await eventually(listing, what="the first sync listing the bucket")


async def test_a_sync_asked_after_the_running_one_listed_syncs_what_was_put_before(
    pool: asyncpg.Pool, bucket: HeldBucket, tmp_path: Path
) -> None:
    bucket.put(f"{PREFIX}old.txt")
    syncs = syncs_of(pool, bucket, tmp_path)
    folder_id, _ = await synced_folder(pool, [ALICE])
    first, _ = await syncs.start(PERSON, folder_id)

    await first_listing(bucket)
    # Put after it listed: its listing misses the object; asked now, syncs are merged
    # into one pending job behind it, not into it.
    bucket.put(f"{PREFIX}new.txt")
    asked = [(await syncs.start(PERSON, folder_id))[0]["job_id"] for _ in range(3)]
    assert len(set(asked)) == 1 and asked[0] != first["job_id"], (first, asked)
    bucket.released.set()
    assert await ended(pool, asked[0]) == "done"
    assert bucket.listed(f"{PREFIX}new.txt")
    assert await ended(pool, first["job_id"]) == "done"
    assert [prefix for prefix, _ in bucket.listings] == [PREFIX, PREFIX]


async def test_a_sync_asked_before_the_running_one_listed_is_that_one(
    pool: asyncpg.Pool, bucket: HeldBucket, tmp_path: Path
) -> None:
    syncs = syncs_of(pool, bucket, tmp_path)
    folder_id, _ = await synced_folder(pool, [ALICE])
    # Its listing not begun yet (the test holds the bucket's answer to `bucket`).
    gate = asyncio.Event()
    found = syncs.integrations.bucket

    async def held(integration_id: uuid.UUID) -> Any:
        await gate.wait()
        return await found(integration_id)

    syncs.integrations.bucket = held
    first, _ = await syncs.start(PERSON, folder_id)
    bucket.put(f"{PREFIX}new.txt")
    again, _ = await syncs.start(PERSON, folder_id)
    assert again == first
    gate.set()
    bucket.released.set()
    assert await ended(pool, first["job_id"]) == "done"
    assert bucket.listed(f"{PREFIX}new.txt") and len(bucket.listings) == 1


async def test_a_running_row_no_sync_here_runs_does_not_answer_a_request(
    pool: asyncpg.Pool, bucket: HeldBucket, tmp_path: Path
) -> None:
    bucket.released.set()
    syncs = syncs_of(pool, bucket, tmp_path)
    folder_id, _ = await synced_folder(pool, [ALICE])
    # A dead replica's sync (or one whose end was never recorded): `running` for ever.
    stale = uuid.uuid4()
    started = ev.UploadJobStarted(job_id=stale, folder_id=folder_id, total=0, kind="sync")
    envelopes = envelopes_of([Change(ev.job_stream(stale), 1, started)], PERSON)
    async with pool.acquire() as conn, conn.transaction():
        await jobs.apply(conn, envelopes)
        await EventStore("ingest").append(conn, envelopes)
    bucket.put(f"{PREFIX}new.txt")
    asked, _ = await syncs.start(PERSON, folder_id)
    assert asked["job_id"] != str(stale)
    assert await ended(pool, asked["job_id"]) == "done"
    assert bucket.listed(f"{PREFIX}new.txt")


async def test_keys_pending_when_the_integration_is_taken_back_are_not_synced(
    pool: asyncpg.Pool, bucket: HeldBucket, tmp_path: Path
) -> None:
    syncs = syncs_of(pool, bucket, tmp_path)
    folder_id, integration_id = await synced_folder(pool, [ALICE])
    first, _ = await syncs.start(PERSON, folder_id)

    await first_listing(bucket)
    key = f"{PREFIX}notified.txt"
    bucket.put(key)
    notified = Cause(actor=f"{NOTIFIED}{integration_id}", correlation_id="n")
    pending, _ = await syncs.start(notified, folder_id, [key])
    await pool.execute("UPDATE ingest.integrations SET shared_with = '{}'")
    bucket.released.set()
    assert await ended(pool, first["job_id"]) == "done"
    assert await ended(pool, pending["job_id"]) == "failed"
    codes = await pool.fetch(
        "SELECT error->>'code' AS code FROM ingest.job_errors WHERE job_id = $1",
        uuid.UUID(pending["job_id"]),
    )
    assert [r["code"] for r in codes] == [NOT_USABLE]
    assert not bucket.listed(key)


async def test_not_usable_is_told_once_under_notifications_at_once(
    pool: asyncpg.Pool, bucket: HeldBucket, tmp_path: Path
) -> None:
    syncs = syncs_of(pool, bucket, tmp_path)
    folder_id, integration_id = await synced_folder(pool, [])
    cause = Cause(actor=f"{NOTIFIED}{integration_id}", correlation_id="n")
    await asyncio.gather(*(syncs._not_usable(cause, folder_id) for _ in range(4)))
    told = await pool.fetchval(
        "SELECT count(*) FROM ingest.jobs WHERE folder_id = $1 AND kind = 'sync'", folder_id
    )
    assert told == 1


async def test_a_persons_sync_is_not_merged_into_one_that_may_fail_not_usable(
    pool: asyncpg.Pool, bucket: HeldBucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = syncs_of(pool, bucket, tmp_path)
    folder_id, _ = await synced_folder(pool, [ALICE])
    first, _ = await syncs.start(PERSON, folder_id)

    await first_listing(bucket)
    scheduled, _ = await syncs.start(
        Cause(actor="system:sync-schedule", correlation_id="s"), folder_id
    )
    await pool.execute("UPDATE ingest.integrations SET shared_with = '{}'")
    # The scheduled one, pending, is held while it checks Alice may still use it.
    checking, gate = asyncio.Event(), asyncio.Event()
    check = syncs._configurer_may_use

    async def held(folder: uuid.UUID) -> bool:
        checking.set()
        await gate.wait()
        return await check(folder)

    monkeypatch.setattr(syncs, "_configurer_may_use", held)
    bucket.released.set()
    await asyncio.wait_for(checking.wait(), 20)
    # An org admin (who may use every integration: the route checked) asks now.
    admin = Cause(actor="user:admin", correlation_id="a")
    asked, _ = await syncs.start(admin, folder_id)
    assert asked != scheduled
    gate.set()
    assert await ended(pool, scheduled["job_id"]) == "failed"
    assert await ended(pool, asked["job_id"]) == "done"
    assert await ended(pool, first["job_id"]) == "done"


async def test_the_schedule_skips_a_folder_whose_maker_lost_the_integration_saying_so_once(
    pool: asyncpg.Pool, bucket: HeldBucket, tmp_path: Path
) -> None:
    """The schedule's rounds sync an org admin's folder on an integration, not a member's
    on the same one once it is no longer shared with them: that one's one failed sync
    says why, and the rounds after it add nothing."""
    bucket.released.set()
    bucket.put(f"{PREFIX}after.txt")
    syncs = syncs_of(pool, bucket, tmp_path)
    alices, integration_id = await synced_folder(pool, [])
    admins = uuid.uuid4()
    await pool.execute(
        """INSERT INTO ingest.synced_folders (folder_id, integration_id, prefix, created_at,
               created_by, by_org_admin) VALUES ($1, $2, $3, now(), 'user:admin', true)""",
        admins,
        integration_id,
        PREFIX,
    )

    async def syncs_of_folder(folder_id: uuid.UUID) -> list[str]:
        rows = await pool.fetch(
            "SELECT id FROM ingest.jobs WHERE folder_id = $1 AND kind = 'sync'", folder_id
        )
        return [str(r["id"]) for r in rows]

    await syncs.schedule_round()
    [admins_sync] = await syncs_of_folder(admins)
    assert await ended(pool, admins_sync) == "done"
    assert bucket.listings == [(PREFIX, {f"{PREFIX}after.txt"})]  # the admin's folder's
    [alices_sync] = await syncs_of_folder(alices)
    assert await status(pool, alices_sync) == "failed"
    codes = await pool.fetch(
        "SELECT error->>'code' AS code FROM ingest.job_errors WHERE job_id = $1",
        uuid.UUID(alices_sync),
    )
    assert [r["code"] for r in codes] == [NOT_USABLE]
    for _ in range(2):
        await syncs.schedule_round()
    assert await syncs_of_folder(alices) == [alices_sync]
    assert await syncs_of_folder(admins) == [admins_sync]  # not due again for an hour
    assert len(bucket.listings) == 1
