"""The drawing pool on real worker processes and a real (local) blob store: a file that
overruns the time cap is recorded as timed out, its worker is killed and replaced, and the
next file is drawn as usual; a hostile file fails without harming the pool; a store away
for a while delays a picture, never fails it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from PIL import Image

from services.thumbnails import domain, handlers, render, runners
from services.thumbnails.drawing import Drawing, keep_secrets_from_workers, worker_settings
from services.thumbnails.handlers import (
    ANALYZE_FROM,
    BACKLOG_BATCH,
    DRAW_BATCH,
    LEASES,
    LOCK_BUCKETS,
    SMALL_BATCH,
    SMALL_TASK,
    Thumbnails,
    Wanted,
)
from services.thumbnails.projections import thumbnails as model
from shared.contracts import thumbnails as ev
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit import db
from shared.kit.blobs import LocalBlobStore, content_key
from shared.kit.consistency import Signal
from shared.kit.eventstore import EventStore
from shared.kit.retry import Policy
from shared.kit.settings import Settings
from tests import thumbnail_fixtures as media
from tests.conftest import _create_database, eventually, fresh_database


@pytest.fixture
async def stored(tmp_path: Path) -> AsyncIterator[tuple[LocalBlobStore, Drawing]]:
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"))
    drawing = Drawing(settings, workers=1)
    yield LocalBlobStore(settings.blob_root()), drawing
    drawing.stop()


async def job(store: LocalBlobStore, renderer: str, data: bytes) -> render.Job:
    key = content_key(hashlib.sha256(data).hexdigest())
    await store.put(key, data)
    return render.Job(renderer, key, len(data), "webp")


async def drawn_until_settled(
    pool: asyncpg.Pool, thumbnails: Thumbnails, wanted: list[Wanted]
) -> dict[uuid.UUID, tuple[str, str | None]]:
    """The files requested, the drawing loop run until none is pending: each file's
    state and code."""
    async with pool.acquire() as conn, conn.transaction():
        await thumbnails.request(conn, wanted)
    drawing = asyncio.create_task(thumbnails.run())
    try:

        async def settled() -> bool:
            left: int = await pool.fetchval(
                "SELECT count(*) FROM thumbnails.files WHERE state = 'pending'"
            )
            return left == 0

        await eventually(settled, within=120, what="every pending file settled")
    finally:
        drawing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drawing
        thumbnails.drawing.stop()
    return {
        r["file_id"]: (r["state"], r["code"])
        for r in await pool.fetch("SELECT file_id, state, code FROM thumbnails.files")
    }


@contextlib.asynccontextmanager
async def drawing_service(
    database_url: str, settings: Settings, blobs: Any
) -> AsyncIterator[tuple[asyncpg.Pool, Thumbnails]]:
    """The thumbnails service's drawing side on a database of its own: its store, read
    model and leases made, no HTTP or consumer around it."""
    store = EventStore("thumbnails")
    async with fresh_database(database_url, "thumbs") as pool:
        async with pool.acquire() as conn:
            await store.setup(conn)
            await model.setup(conn)
            await conn.execute(LEASES)
        runtime: Any = SimpleNamespace(pool=pool, store=store, settings=settings, moved=Signal())
        yield pool, Thumbnails(runtime, blobs)


def a_cause(stream: str = "test-cause") -> Any:
    """The envelope a request names as its cause."""
    return envelopes_of(
        [Change(stream, 1, ev.ThumbnailsReleased(file_id=uuid.uuid4(), source="-"))],
        Cause(actor="test", correlation_id="c"),
    )[0]


def image_named(name: str, cause: Any) -> Wanted:
    """A request for a new image file whose content (and so its source) is named."""
    sha = hashlib.sha256(name.encode()).hexdigest()
    return Wanted(uuid.uuid4(), "image", domain.source_of("image", sha), content_key(sha), cause)


def slow_image() -> bytes:
    """Within Pillow's limit (81 million pixels) and small on disk, but seconds of work
    to decode and scale down."""
    out = io.BytesIO()
    Image.new("RGB", (9000, 9000), (90, 90, 90)).save(out, "PNG", compress_level=1)
    return out.getvalue()


@pytest.mark.timeout(300)
async def test_a_file_past_the_time_cap_fails_and_the_pool_goes_on(
    stored: tuple[LocalBlobStore, Drawing],
) -> None:
    store, drawing = stored
    fine = await job(store, "image", media.png(300, 200))
    made = await drawing.draw(fine, time_cap=120)  # the first also starts a worker
    assert isinstance(made, list) and [p.size for p in made] == [128, 512]
    assert await drawing.draw(await job(store, "image", slow_image()), time_cap=0.2) == (
        "timed_out",
        "drawing it took more than 0.2 s",
    )
    again = await drawing.draw(await job(store, "image", media.png(64, 64)), time_cap=120)
    assert isinstance(again, list) and (again[0].width, again[0].height) == (64, 64)


@pytest.mark.timeout(300)
async def test_hostile_files_fail_with_their_reason(
    stored: tuple[LocalBlobStore, Drawing],
) -> None:
    store, drawing = stored
    bomb = await drawing.draw(await job(store, "image", media.decompression_bomb()), 120)
    assert isinstance(bomb, tuple) and bomb[0] == "too_large"
    cut = await drawing.draw(await job(store, "image", media.truncated_png()), 120)
    assert isinstance(cut, tuple) and cut[0] == "unreadable" and "truncated" in cut[1]
    not_a_video = await drawing.draw(await job(store, "video", b"\x00garbage" * 1000), 120)
    assert isinstance(not_a_video, tuple) and not_a_video[0] == "unreadable"
    gone = render.Job("image", content_key("0" * 64), 10, "webp")
    assert (await drawing.draw(gone, 120))[0] == "content_missing"  # type: ignore[index]
    made = await drawing.draw(await job(store, "pdf", media.pdf()), 120)
    assert isinstance(made, list) and made[1].width == 512


class AwayAWhile(LocalBlobStore):
    """A blob store that does not answer its first `times` size requests."""

    def __init__(self, root: Path, times: int) -> None:
        super().__init__(root)
        self.refused = 0
        self.times = times

    async def size(self, key: str) -> int:
        if self.refused < self.times:
            self.refused += 1
            raise ConnectionError("connection refused (the store restarts)")
        return await super().size(key)


@pytest.mark.timeout(300)
async def test_a_store_away_for_longer_than_the_attempts_delays_a_picture_but_never_fails_it(
    database_url: str, tmp_path: Path
) -> None:
    pool = await db.connect_pool(
        _create_database(database_url, f"thumbs_{uuid.uuid4().hex[:8]}"), max_size=4
    )
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    store = EventStore("thumbnails")
    async with pool.acquire() as conn:
        await store.setup(conn)
        await model.setup(conn)
        await conn.execute(LEASES)
    blobs = AwayAWhile(settings.blob_root(), times=domain.MAX_ATTEMPTS + 3)
    runtime: Any = SimpleNamespace(pool=pool, store=store, settings=settings, moved=Signal())
    thumbnails = Thumbnails(runtime, blobs)
    thumbnails.policy = Policy(first_s=0.01, cap_s=0.1, retry_for_s=60)
    data = media.png(64, 48)
    sha = hashlib.sha256(data).hexdigest()
    await blobs.put(content_key(sha), data)
    file_id = uuid.uuid4()
    cause = envelopes_of(
        [Change(f"file-{file_id}", 1, ev.ThumbnailsReleased(file_id=file_id, source="-"))],
        Cause(actor="test", correlation_id="c"),
    )[0]
    wanted = Wanted(file_id, "image", domain.source_of("image", sha), content_key(sha), cause)
    async with pool.acquire() as conn, conn.transaction():
        await thumbnails.request(conn, [wanted])
    drawing = asyncio.create_task(thumbnails.run())
    try:

        async def settled() -> bool:
            state = await pool.fetchval(
                "SELECT state FROM thumbnails.files WHERE file_id = $1", file_id
            )
            return state != "pending"

        await eventually(settled, within=120, what="the picture drawn once the store is back")
        row = await pool.fetchrow("SELECT * FROM thumbnails.files WHERE file_id = $1", file_id)
    finally:
        drawing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drawing
        thumbnails.drawing.stop()
        await pool.close()
    # More refusals than a file has attempts: none of them counted against it.
    assert blobs.refused == domain.MAX_ATTEMPTS + 3
    assert row["state"] == "made", dict(row)
    assert [r["size"] for r in row["renditions"]] == [128, 512]


@pytest.mark.timeout(300)
async def test_a_backlog_is_drawn_in_batches_each_source_once(
    database_url: str, tmp_path: Path
) -> None:
    """40 files pending: 19 pictures (two files have the same bytes as another each:
    drawn once for both), a file that is no picture, one whose content is gone. Every
    file settles as its bytes say, in a few transactions, not one a file."""
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        pictures = [media.png(32 + i, 24) for i in range(19)]
        contents = [*pictures, pictures[0], pictures[1], b"\x89PNG\r\n\x1a\n not a picture"]
        wanted, expected = [], {}
        cause = a_cause()
        for i, data in enumerate([*contents, *([b"gone"] * 18)]):
            sha = hashlib.sha256(data if i < len(contents) else f"gone {i}".encode()).hexdigest()
            if i < len(contents):
                await blobs.put(content_key(sha), data)
            file_id = uuid.uuid4()
            source = domain.source_of("image", sha)
            wanted.append(Wanted(file_id, "image", source, content_key(sha), cause))
            expected[file_id] = (
                "made" if data in pictures else "failed",
                None if data in pictures else "content_missing" if data == b"gone" else None,
            )
        rows = await drawn_until_settled(pool, thumbnails, wanted)
        assert {f: state for f, (state, _) in rows.items()} == {
            f: state for f, (state, _) in expected.items()
        }
        assert {f: code for f, (_, code) in rows.items() if expected[f][1]} == {
            f: code for f, (_, code) in expected.items() if code
        }
        assert await pool.fetchval("SELECT count(*) FROM thumbnails.sources") == 19 + 1 + 18
        settling = await pool.fetchval(
            """SELECT count(DISTINCT xmin::text) FROM thumbnails.events
               WHERE type IN ('thumbnails.ThumbnailsMade', 'thumbnails.ThumbnailFailed')"""
        )
        assert settling <= 8, f"40 files settled in {settling} transactions"
        assert await pool.fetchval("SELECT count(*) FROM thumbnails.leases") == 0


@pytest.mark.timeout(300)
async def test_small_images_drawn_together_and_one_over_the_cap_is_found_alone(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small images go to a worker in one task; when one of them keeps it past the time
    cap, each is drawn again alone: the others get their pictures, that one is recorded
    as timed out (and the pool goes on)."""
    monkeypatch.setattr(handlers, "SMALL_IMAGE", 1 << 30)  # the slow one counts as small
    settings = Settings(
        data_dir=tmp_path,
        blob_url=str(tmp_path / "blobs"),
        thumbnail_workers=1,
        thumbnail_time_cap_s=0.3,
    )
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        cause = a_cause()
        contents = [media.png(40 + i, 30) for i in range(3)] + [slow_image()]
        wanted = []
        for data in contents:
            sha = hashlib.sha256(data).hexdigest()
            await blobs.put(content_key(sha), data)
            source = domain.source_of("image", sha)
            wanted.append(Wanted(uuid.uuid4(), "image", source, content_key(sha), cause))
        rows = await drawn_until_settled(pool, thumbnails, wanted)
        assert [rows[w.file_id] for w in wanted] == [("made", None)] * 3 + [("failed", "timed_out")]
        # Asked for as it was settled (a poll that read it pending): the request goes.
        await thumbnails.want(wanted[0].file_id)
        assert await thumbnails.forget_stale_wants() == 1
        assert await pool.fetchval("SELECT count(*) FROM thumbnails.wanted") == 0
        # Within the smallest size: one picture, stored once, named by both sizes.
        renditions = await pool.fetchval(
            "SELECT renditions FROM thumbnails.files WHERE file_id = $1", wanted[0].file_id
        )
        assert [(r["size"], r["width"], r["height"]) for r in renditions] == [
            (128, 40, 30),
            (512, 40, 30),
        ]
        (key,) = {r["blob_key"] for r in renditions}
        assert key == domain.blob_key(wanted[0].source, 128, "webp")
        assert await blobs.exists(key)
        assert not await blobs.exists(domain.blob_key(wanted[0].source, 512, "webp"))


@pytest.mark.timeout(300)
async def test_a_burst_of_requests_has_the_drawing_loop_s_tables_analyzed(
    database_url: str, tmp_path: Path
) -> None:
    """A burst of uploads grows the read model before autovacuum looks at it; the
    drawing loop's next claim analyzes it, so its statements are planned for what is
    there (unanalyzed, each claim read every pending file), and again each time it has
    doubled (not at every half: their plans stay as they grow). The claim still takes the
    oldest pending files, each with its source's state."""
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        cause = a_cause()
        wanted = []
        for i in range(ANALYZE_FROM):
            sha = hashlib.sha256(f"file {i}".encode()).hexdigest()
            wanted.append(
                Wanted(
                    uuid.uuid4(), "image", domain.source_of("image", sha), content_key(sha), cause
                )
            )
        async with pool.acquire() as conn, conn.transaction():
            await thumbnails.request(conn, wanted[:-1])
        reltuples = "SELECT reltuples FROM pg_class WHERE oid = 'thumbnails.files'::regclass"
        assert await pool.fetchval(reltuples) == -1  # never analyzed
        await thumbnails.claim()
        assert await pool.fetchval(reltuples) == -1, "analyzed before the threshold"
        async with pool.acquire() as conn, conn.transaction():
            await thumbnails.request(conn, wanted[-1:])
        claimed = await thumbnails.claim()
        assert await pool.fetchval(reltuples) == ANALYZE_FROM
        assert [c["file_id"] for c in claimed] == [
            w.file_id for w in wanted[DRAW_BATCH:][:DRAW_BATCH]
        ]
        assert all(c["attempts"] == 1 and c["known"] is False for c in claimed)

        async def grown_by(files: int) -> None:
            more = []
            for _ in range(files):
                sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
                source = domain.source_of("image", sha)
                more.append(Wanted(uuid.uuid4(), "image", source, content_key(sha), cause))
            async with pool.acquire() as conn, conn.transaction():
                await thumbnails.request(conn, more)
            await thumbnails.claim()

        await grown_by(ANALYZE_FROM)
        assert await pool.fetchval(reltuples) == 2 * ANALYZE_FROM
        await grown_by(ANALYZE_FROM)
        assert await pool.fetchval(reltuples) == 2 * ANALYZE_FROM, "analyzed at +50%"
        await grown_by(ANALYZE_FROM)
        assert await pool.fetchval(reltuples) == 4 * ANALYZE_FROM


@pytest.mark.timeout(300)
async def test_after_a_batch_of_small_images_a_claim_takes_more(
    database_url: str, tmp_path: Path
) -> None:
    """A burst of small images is claimed SMALL_BATCH at a time once a batch showed it
    (fewer statements a file); a batch holding anything else goes back to DRAW_BATCH."""
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        cause = a_cause()
        wanted = []
        for i in range(DRAW_BATCH + SMALL_BATCH + 10):
            data = media.png(20 + i, 20) if i < DRAW_BATCH + 10 else f"gone {i}".encode()
            sha = hashlib.sha256(data).hexdigest()
            if i < DRAW_BATCH + 10:
                await blobs.put(content_key(sha), data)
            source = domain.source_of("image", sha)
            wanted.append(Wanted(uuid.uuid4(), "image", source, content_key(sha), cause))
        async with pool.acquire() as conn, conn.transaction():
            await thumbnails.request(conn, wanted)
        try:
            first = await thumbnails.claim()
            assert len(first) == DRAW_BATCH
            await thumbnails.draw(first)
            second = await thumbnails.claim()
            assert len(second) == SMALL_BATCH
            await thumbnails.draw(second)  # 10 small images, then files whose content is gone
            assert thumbnails.batch == DRAW_BATCH
        finally:
            thumbnails.drawing.stop()
        states = dict(
            await pool.fetch("SELECT state, count(*) FROM thumbnails.files GROUP BY state")
        )
        assert states == {"made": DRAW_BATCH + 10, "failed": SMALL_BATCH - 10, "pending": 10}
        assert await pool.fetchval("SELECT count(*) FROM thumbnails.leases") == 0


@pytest.mark.timeout(300)
async def test_while_a_backlog_of_small_images_lasts_a_claim_takes_more_still(
    database_url: str, tmp_path: Path
) -> None:
    """A full SMALL_BATCH of small images shows a backlog: the next claims take
    BACKLOG_BATCH (a quarter of the claims and records again), drawn in tasks of at most
    SMALL_TASK (a task over the cap has each of its files drawn again alone); what is
    left of the backlog is claimed as it comes, and every file gets its picture."""
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        cause = a_cause()
        wanted = []
        count = DRAW_BATCH + SMALL_BATCH + BACKLOG_BATCH + 10
        for i in range(count):
            data = media.png(20 + i % 200, 20 + i // 200)
            sha = hashlib.sha256(data).hexdigest()
            await blobs.put(content_key(sha), data)
            source = domain.source_of("image", sha)
            wanted.append(Wanted(uuid.uuid4(), "image", source, content_key(sha), cause))
        async with pool.acquire() as conn, conn.transaction():
            await thumbnails.request(conn, wanted)
        tasks: list[int] = []
        together = thumbnails.drawing.draw_together

        async def counted(jobs: list[render.Job], time_cap: float) -> Any:
            tasks.append(len(jobs))
            return await together(jobs, time_cap)

        thumbnails.drawing.draw_together = counted  # type: ignore[method-assign]
        try:
            claimed = []
            while batch := await thumbnails.claim():
                claimed.append(len(batch))
                await thumbnails.draw(batch)
        finally:
            thumbnails.drawing.stop()
        assert claimed == [DRAW_BATCH, SMALL_BATCH, BACKLOG_BATCH, 10]
        assert thumbnails.batch == SMALL_BATCH  # the backlog is gone
        assert max(tasks) == SMALL_TASK and sum(tasks) == count
        states = dict(
            await pool.fetch("SELECT state, count(*) FROM thumbnails.files GROUP BY state")
        )
        assert states == {"made": count}
        assert await pool.fetchval("SELECT count(*) FROM thumbnails.leases") == 0


@pytest.mark.timeout(300)
async def test_a_claim_passes_over_the_files_this_process_holds(
    database_url: str, tmp_path: Path
) -> None:
    """The files one runner holds are not claimed by the process's other runners, even
    once their leases ran out (the runner still has them: its renewals failed meanwhile),
    so they are neither drawn twice here nor counted an attempt more by it; another
    replica takes them then, as before."""
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        cause = a_cause()
        wanted = []
        for i in range(2 * DRAW_BATCH):
            sha = hashlib.sha256(f"held {i}".encode()).hexdigest()
            source = domain.source_of("image", sha)
            wanted.append(Wanted(uuid.uuid4(), "image", source, content_key(sha), cause))
        async with pool.acquire() as conn, conn.transaction():
            await thumbnails.request(conn, wanted)
        first = {c["file_id"] for c in await thumbnails.claim()}
        assert first == {w.file_id for w in wanted[:DRAW_BATCH]}
        await pool.execute("UPDATE thumbnails.leases SET until = now() - interval '1 second'")
        second = {c["file_id"] for c in await thumbnails.claim()}
        assert second == {w.file_id for w in wanted[DRAW_BATCH:]}
        replica = Thumbnails(thumbnails.parts, blobs)
        taken = await replica.claim()
        assert {c["file_id"] for c in taken} == first
        assert {c["attempts"] for c in taken} == {2}


@pytest.mark.timeout(300)
async def test_idle_runners_are_woken_by_a_batch_that_moved_no_watermark_and_by_an_ask(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle runners wait for the consumer's watermarks to move (their notification), or
    look again after IDLE_S. A batch above a gap moves no watermark: the files it
    requested wake the runners once it has committed, as the consumer calls
    `after_batch`. An imported file's picture, requested when first asked for (by no
    consumer batch), wakes them too. With IDLE_S an hour, only a wake draws them."""
    monkeypatch.setattr(runners, "IDLE_S", 3600.0)
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        cause = a_cause()
        pictures = []
        for width in (40, 41):
            data = media.png(width, 30)
            sha = hashlib.sha256(data).hexdigest()
            await blobs.put(content_key(sha), data)
            pictures.append((uuid.uuid4(), sha, len(data)))
        looked = 0
        claim = thumbnails.claim

        async def counted() -> list[dict[str, Any]]:
            nonlocal looked
            looked += 1
            return await claim()

        thumbnails.claim = counted  # type: ignore[method-assign]
        drawing = asyncio.create_task(thumbnails.run())
        try:

            async def idle() -> bool:
                return looked >= thumbnails.workers + 1  # every runner found nothing

            await eventually(idle, within=60, what="the runners idle")

            async def made(file_id: uuid.UUID) -> bool:
                state = await pool.fetchval(
                    "SELECT state FROM thumbnails.files WHERE file_id = $1", file_id
                )
                return bool(state == "made")

            (batched, sha, _), (imported, imported_sha, size) = pictures
            wanted = Wanted(
                batched, "image", domain.source_of("image", sha), content_key(sha), cause
            )
            async with pool.acquire() as conn, conn.transaction():
                await thumbnails.request(conn, [wanted])  # no watermark moved: no notification
            await thumbnails.after_batch()
            await eventually(lambda: made(batched), within=60, what="the batch's file drawn")

            await thumbnails.request_imported(
                imported, "image", imported_sha, content_key(imported_sha), None, size, cause
            )
            await eventually(lambda: made(imported), within=60, what="the asked-for file drawn")
        finally:
            drawing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drawing
            thumbnails.drawing.stop()


@pytest.mark.timeout(300)
async def test_a_request_of_new_sources_does_not_wait_for_a_batch_being_recorded(
    database_url: str, tmp_path: Path
) -> None:
    """A runner recording its batch holds its sources' locks until it commits. Files of
    sources never drawn are requested without waiting for it (the consumer, and the
    upload answers waiting on the consumer, used to queue behind every record); a file
    given a drawn source's pictures still waits for that source's lock, so the sweep
    cannot take them meanwhile."""
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        cause = a_cause()

        def wanted(name: str) -> Wanted:
            return image_named(name, cause)

        drawn = wanted("drawn before")
        async with pool.acquire() as conn, conn.transaction():
            await thumbnails.request(conn, [drawn])
        row = await pool.fetchrow(
            "SELECT * FROM thumbnails.files WHERE file_id = $1", drawn.file_id
        )
        await thumbnails.record({drawn.source: (dict(row), ("unreadable", "cut short"))})

        new = [wanted(f"new {i}") for i in range(100)]
        same = replace(wanted("drawn before"), file_id=uuid.uuid4())
        async with pool.acquire() as recording, recording.transaction():
            await handlers.lock_sources(recording, [drawn.source, *(w.source for w in new)])
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("SET LOCAL lock_timeout = '2s'")
                    await thumbnails.request(conn, new)
                with pytest.raises(asyncpg.LockNotAvailableError):
                    async with conn.transaction():
                        await conn.execute("SET LOCAL lock_timeout = '200ms'")
                        await thumbnails.request(conn, [same])
        async with pool.acquire() as conn, conn.transaction():
            await thumbnails.request(conn, [same])
        states = {
            r["file_id"]: (r["state"], r["code"])
            for r in await pool.fetch("SELECT file_id, state, code FROM thumbnails.files")
        }
        assert [states[w.file_id] for w in new] == [("pending", None)] * 100
        assert states[same.file_id] == ("failed", "unreadable")


@pytest.mark.timeout(300)
async def test_replicas_recording_new_sources_wait_only_for_one_recording_the_same(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas recording different new sources go on side by side, even where the
    sources share a bucket of the sweep's locks (by bucket, two batches of 64 shared most
    of the 64 buckets, and each record waited for the one before). A replica recording a
    source another one is recording waits for it, then gives its files that outcome: a
    source's files get one outcome."""
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=1)
    blobs = LocalBlobStore(settings.blob_root())
    async with drawing_service(database_url, settings, blobs) as (pool, thumbnails):
        cause = a_cause()

        def wanted(name: str) -> Wanted:
            return image_named(name, cause)

        async def bucket(source: str) -> int:
            b: int = await pool.fetchval("SELECT hashtext($1) & $2", source, LOCK_BUCKETS - 1)
            return b

        first, n = wanted("first"), 0
        while await bucket((other := wanted(f"other {n}")).source) != await bucket(first.source):
            n += 1
        async with pool.acquire() as conn, conn.transaction():
            await thumbnails.request(conn, [first, other])

        async def claimed(file_id: uuid.UUID) -> dict[str, Any]:
            row = await pool.fetchrow("SELECT * FROM thumbnails.files WHERE file_id = $1", file_id)
            return {**dict(row), "known": False}

        # The first replica's record held once its files are locked, storing its pictures.
        storing, stored = asyncio.Event(), asyncio.Event()
        store = thumbnails._store

        async def held(made: Any) -> Any:
            if made:
                storing.set()
                await stored.wait()  # released by the test below, not a timed wait
            return await store(made)

        monkeypatch.setattr(thumbnails, "_store", held)
        data = media.png(4, 4)
        pictures = [render.Picture(size, data, 4, 4) for size in domain.SIZES]
        recording = asyncio.create_task(
            thumbnails.record({first.source: (await claimed(first.file_id), pictures)})
        )
        again: asyncio.Task[None] | None = None
        replica = Thumbnails(thumbnails.parts, blobs)
        try:
            await asyncio.wait_for(storing.wait(), 30)
            await asyncio.wait_for(
                replica.record(
                    {other.source: (await claimed(other.file_id), ("unreadable", "cut short"))}
                ),
                10,
            )
            # An identical file, requested while its source is not settled yet (pending),
            # drawn by another replica with another outcome.
            same = replace(first, file_id=uuid.uuid4())
            async with pool.acquire() as conn, conn.transaction():
                await thumbnails.request(conn, [same])
            again = asyncio.create_task(
                replica.record(
                    {same.source: (await claimed(same.file_id), ("timed_out", "over the cap"))}
                )
            )

            async def waiting() -> bool:
                left: int = await pool.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                return left == 1

            await eventually(waiting, within=30, what="the second record waiting")
            assert not again.done()
            stored.set()
            await asyncio.wait_for(recording, 30)
            await asyncio.wait_for(again, 30)
        finally:
            stored.set()
            for task in (recording, again):
                if task is not None and not task.done():
                    task.cancel()
        states = {
            r["file_id"]: (r["state"], r["code"])
            for r in await pool.fetch("SELECT file_id, state, code FROM thumbnails.files")
        }
        assert states[other.file_id] == ("failed", "unreadable")
        assert states[first.file_id] == ("made", None)
        assert states[same.file_id] == ("made", None)


async def test_a_batch_of_small_images_goes_to_the_workers_in_a_task_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim of 64 small images on two workers: two tasks of 32 (a task's round trip
    cost a worker more than finding a 4 KiB file undrawable), each file with its own
    outcome; their sizes as their requests kept them, not asked of the store again."""
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), thumbnail_workers=2)

    class NotAsked(LocalBlobStore):
        async def size(self, key: str) -> int:
            raise AssertionError(f"the store asked the size of {key}")

    runtime: Any = SimpleNamespace(settings=settings)
    thumbnails = Thumbnails(runtime, NotAsked(settings.blob_root()))
    tasks: list[list[str]] = []

    async def draw_together(jobs: list[render.Job], time_cap: float) -> list[Any]:
        tasks.append([j.blob_key for j in jobs])
        return [("unreadable", f"not {j.blob_key}") for j in jobs]

    monkeypatch.setattr(thumbnails.drawing, "draw_together", draw_together)
    files = []
    for i in range(SMALL_BATCH):
        sha = hashlib.sha256(f"small {i}".encode()).hexdigest()
        source = domain.source_of("image", sha)
        files.append(
            {"source": source, "blob_key": content_key(sha), "object_ref": None, "bytes": 4096}
        )
    results, all_small = await thumbnails._drawn(files)
    assert all_small
    assert sorted(len(t) for t in tasks) == [SMALL_BATCH // 2] * 2
    assert results == [("unreadable", f"not {f['blob_key']}") for f in files]


def environment() -> bytes:
    """A worker's environment as it started (what a decoder's flaw could read)."""
    return Path("/proc/self/environ").read_bytes()


@pytest.mark.timeout(300)
async def test_a_worker_holds_none_of_the_platforms_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FILES_SERVICE_KEY", "the-platforms-signing-key-0123456789")
    monkeypatch.setenv("FILES_DATABASE_URL", "postgresql://files:db-password@db/files")
    monkeypatch.setenv("FILES_S3_SECRET_KEY", "the-stores-secret-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-stores-other-secret-key")
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"))
    assert settings.service_key.get_secret_value() and settings.database_url
    assert settings.s3_secret_key.get_secret_value()
    keep_secrets_from_workers()  # as the service does once its settings are read
    drawing = Drawing(settings, workers=1)
    try:
        pool = drawing._workers()
        started = await asyncio.wrap_future(pool.schedule(environment))
    finally:
        drawing.stop()
    assert b"FILES_SERVICE_KEY" not in started and b"signing-key" not in started
    assert b"db-password" not in started and b"secret-key" not in started
    given = worker_settings(settings)
    assert given.service_key.get_secret_value() == "" and given.database_url == ""
    # A worker reads an S3 store's objects by their presigned URLs, never with its keys.
    assert given.s3_access_key.get_secret_value() == ""
    assert given.s3_secret_key.get_secret_value() == ""
    assert given.blob_url == settings.blob_url and given.data_dir == settings.data_dir


def associated_alpha_tiff() -> bytes:
    """A grey TIFF whose alpha is associated (ExtraSamples = 1): Pillow opens it as "La",
    which converts to "LA" only."""
    out = io.BytesIO()
    Image.new("LA", (40, 30), (120, 200)).save(out, "TIFF")
    data = bytearray(out.getvalue())
    order = "<" if data[:2] == b"II" else ">"
    ifd = int.from_bytes(data[4:8], "little" if order == "<" else "big")
    for n in range(int.from_bytes(data[ifd : ifd + 2], "little" if order == "<" else "big")):
        entry = ifd + 2 + 12 * n
        if data[entry : entry + 2] == (338).to_bytes(2, "little" if order == "<" else "big"):
            data[entry + 8 : entry + 10] = (1).to_bytes(2, "little" if order == "<" else "big")
    assert Image.open(io.BytesIO(bytes(data))).mode == "La"
    return bytes(data)


async def test_small_images_drawn_together_include_one_with_associated_alpha(
    stored: tuple[LocalBlobStore, Drawing],
) -> None:
    """An image of a mode Pillow converts only one way is drawn like any other, beside
    its neighbours in one task (it used to raise out of the task: the batch failed)."""
    store, drawing = stored
    jobs = [
        await job(store, "image", media.png(40, 30)),
        await job(store, "image", associated_alpha_tiff()),
        await job(store, "image", media.png(41, 30)),
    ]
    made = await drawing.draw_together(jobs, 30.0)
    assert made is not None
    assert all(isinstance(m, list) and m for m in made), made


def test_a_file_that_raises_in_a_group_is_its_own_trouble(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What one file of a group raises is that file's, never its neighbours' (they keep
    their pictures): a disk error is the store's (tried again later), anything else has
    the file drawn again alone (None), as any file is."""
    good = render.Picture(128, b"webp", 40, 30)

    def make(job: render.Job) -> list[render.Picture]:
        if job.blob_key == "bad":
            raise ValueError("conversion from Xy to L not supported")
        if job.blob_key == "disk":
            raise OSError(24, "Too many open files", "/data/blobs/sha256/aa/bb/cc")
        return [good]

    monkeypatch.setattr(render, "make", make)
    jobs = [render.Job("image", key, 10, "webp") for key in ("a", "bad", "disk", "b")]
    first, bad, disk, last = render.drawn_together(jobs)
    assert first == [good] and last == [good]
    assert bad is None
    assert isinstance(disk, render.SourceUnavailable) and "/data" not in str(disk)
