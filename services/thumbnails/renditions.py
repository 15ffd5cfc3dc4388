"""Re-encoding (issue 17): web renditions of videos and image sequences, on ask.

`POST /v1/files/re-encode` reaches `request` once the catalog has said the caller may edit
each file's folder: one transaction records the job (`ReEncodeRequested`, with the files
refused at once) and a `WebRenditionRequested` for each file to make (a file whose
rendition is made already counts as done; one being made joins it). Runners then claim
pending files with a lease, as the thumbnails' runners do, and a pool of spawned worker
processes (no secrets, a time cap, an address-space limit: encoding.py) writes each
rendition to a local spool; the runner streams it into the store in parts
(`renditions/web/<file id>.mp4`) and records it. A file purged from the trash loses its
rendition's bytes at once (`release`): nothing else refers to them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pebble

from services.thumbnails import encoding, runners
from services.thumbnails.drawing import worker_settings
from shared.contracts import renditions as ev
from shared.contracts.envelope import Cause, Change, Envelope, envelopes_of
from shared.kit.blobs import BlobStore
from shared.kit.db import Conn
from shared.kit.errors import Refused
from shared.kit.logs import log
from shared.kit.media import without_paths
from shared.kit.projections import Projection
from shared.kit.reactions import Received
from shared.kit.retry import Policy
from shared.kit.service import Handlers, Parts

MAX_ATTEMPTS = 3
PART = 8 * 1024 * 1024  # bytes a part when a rendition is streamed into the store


def rendition_key(file_id: uuid.UUID) -> str:
    return f"renditions/{ev.WEB}/{file_id}.mp4"


model = Projection(
    name="thumbnails.renditions",
    # 2: each rendition's turn (`_requested`), kept as it was asked for.
    version=2,
    tables=("thumbnails.renditions", "thumbnails.reencode_jobs", "thumbnails.reencode_items"),
    ddl="""
    CREATE TABLE IF NOT EXISTS thumbnails.renditions (
        file_id uuid PRIMARY KEY,
        version integer NOT NULL,
        job_id uuid NOT NULL,
        kind text NOT NULL,
        sources jsonb NOT NULL,
        state text NOT NULL,
        requested_at timestamptz NOT NULL,
        request_id uuid NOT NULL,
        correlation_id text NOT NULL,
        blob_key text,
        facts jsonb,
        code text,
        reason text
    );
    CREATE INDEX IF NOT EXISTS renditions_pending ON thumbnails.renditions (requested_at)
        WHERE state = 'pending';
    ALTER TABLE thumbnails.renditions ADD COLUMN IF NOT EXISTS turn integer NOT NULL DEFAULT 1;
    CREATE INDEX IF NOT EXISTS renditions_turn ON thumbnails.renditions (turn, requested_at)
        WHERE state = 'pending';
    CREATE INDEX IF NOT EXISTS renditions_pending_job ON thumbnails.renditions (job_id)
        WHERE state = 'pending';
    CREATE TABLE IF NOT EXISTS thumbnails.reencode_jobs (
        id uuid PRIMARY KEY,
        created_by text NOT NULL,
        total integer NOT NULL,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS reencode_jobs_creator ON thumbnails.reencode_jobs (created_by);
    CREATE TABLE IF NOT EXISTS thumbnails.reencode_items (
        job_id uuid NOT NULL,
        file_id uuid NOT NULL,
        position integer NOT NULL,
        state text NOT NULL,
        code text,
        reason text,
        PRIMARY KEY (job_id, file_id)
    );
    CREATE INDEX IF NOT EXISTS reencode_items_pending ON thumbnails.reencode_items (file_id)
        WHERE state = 'pending';
    """,
)


@model.on(ev.ReEncodeRequested)
async def _job(conn: Conn, events: Sequence[Received[ev.ReEncodeRequested]]) -> None:
    for e in events:
        job = e.event
        await conn.execute(
            """INSERT INTO thumbnails.reencode_jobs (id, created_by, total, created_at)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            job.job_id,
            job.created_by,
            len(job.file_ids),
            e.occurred_at,
        )
        failed = {f["file_id"]: f for f in job.failed}
        await conn.executemany(
            """INSERT INTO thumbnails.reencode_items
               (job_id, file_id, position, state, code, reason) VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT DO NOTHING""",
            [
                (
                    job.job_id,
                    f,
                    i,
                    "failed" if str(f) in failed else "pending",
                    failed.get(str(f), {}).get("code"),
                    failed.get(str(f), {}).get("reason"),
                )
                for i, f in enumerate(job.file_ids)
            ],
        )
        # Files whose rendition is there already are done at once.
        await conn.execute(
            """UPDATE thumbnails.reencode_items i SET state = 'done'
               FROM thumbnails.renditions r
               WHERE i.job_id = $1 AND i.state = 'pending' AND r.file_id = i.file_id
                 AND r.state = 'made'""",
            job.job_id,
        )


# A file's turn is its place among its requester's pending files when it was asked for
# (one being made counts), so the claim takes each person's files in turn (`_CLAIM`)
# from an index rather than ranking every pending file of everyone at each claim.
_PENDING_OF_REQUESTER = """
SELECT count(*) FROM thumbnails.renditions r JOIN thumbnails.reencode_jobs j ON j.id = r.job_id
WHERE r.state = 'pending' AND j.created_by = (
    SELECT created_by FROM thumbnails.reencode_jobs WHERE id = $1)"""


@model.on(ev.WebRenditionRequested)
async def _requested(conn: Conn, events: Sequence[Received[ev.WebRenditionRequested]]) -> None:
    # A job's files are requested one after another, its job's row first; their turns
    # follow the requester's pending files as they were before the job's first.
    next_turn: dict[uuid.UUID, int] = {}
    for e in events:
        r = e.event
        if r.job_id not in next_turn:
            next_turn[r.job_id] = 1 + await conn.fetchval(_PENDING_OF_REQUESTER, r.job_id)
        turn = next_turn[r.job_id]
        next_turn[r.job_id] += 1
        await conn.execute(
            """INSERT INTO thumbnails.renditions AS t (file_id, version, job_id, kind, sources,
                   state, requested_at, request_id, correlation_id, turn)
               VALUES ($1, $2, $3, $4, $5::jsonb, 'pending', $6, $7, $8, $9)
               ON CONFLICT (file_id) DO UPDATE SET version = excluded.version,
                   job_id = excluded.job_id, kind = excluded.kind, sources = excluded.sources,
                   state = 'pending', requested_at = excluded.requested_at,
                   request_id = excluded.request_id, correlation_id = excluded.correlation_id,
                   blob_key = NULL, facts = NULL, code = NULL, reason = NULL,
                   turn = excluded.turn""",
            r.file_id,
            e.stream_version,
            r.job_id,
            r.kind,
            r.sources,
            e.occurred_at,
            e.event_id,
            e.correlation_id,
            turn,
        )


@model.on(ev.WebRenditionMade)
async def _made(conn: Conn, events: Sequence[Received[ev.WebRenditionMade]]) -> None:
    for e in events:
        m = e.event
        facts = m.model_dump(include={"bytes", "width", "height", "duration_s", "audio"})
        await conn.execute(
            """UPDATE thumbnails.renditions SET version = $2, state = 'made', blob_key = $3,
                   facts = $4::jsonb WHERE file_id = $1""",
            m.file_id,
            e.stream_version,
            m.blob_key,
            facts,
        )
        await conn.execute(
            """UPDATE thumbnails.reencode_items SET state = 'done'
               WHERE file_id = $1 AND state = 'pending'""",
            m.file_id,
        )


@model.on(ev.WebRenditionFailed)
async def _failed(conn: Conn, events: Sequence[Received[ev.WebRenditionFailed]]) -> None:
    for e in events:
        f = e.event
        await conn.execute(
            """UPDATE thumbnails.renditions SET version = $2, state = 'failed', code = $3,
                   reason = $4 WHERE file_id = $1""",
            f.file_id,
            e.stream_version,
            f.code,
            f.reason,
        )
        await conn.execute(
            """UPDATE thumbnails.reencode_items SET state = 'failed', code = $2, reason = $3
               WHERE file_id = $1 AND state = 'pending'""",
            f.file_id,
            f.code,
            f.reason,
        )


@model.on(ev.WebRenditionReleased)
async def _released(conn: Conn, events: Sequence[Received[ev.WebRenditionReleased]]) -> None:
    for e in events:
        r = e.event
        await conn.execute(
            """UPDATE thumbnails.renditions SET version = $2, state = 'released'
               WHERE file_id = $1""",
            r.file_id,
            e.stream_version,
        )
        await conn.execute(
            """UPDATE thumbnails.reencode_items SET state = 'failed', code = 'purged',
                   reason = 'the file was deleted for good' WHERE file_id = $1
                   AND state = 'pending'""",
            r.file_id,
        )


LEASES = """
CREATE TABLE IF NOT EXISTS thumbnails.rendition_leases (
    file_id uuid PRIMARY KEY,
    until timestamptz NOT NULL,
    attempts integer NOT NULL
);
"""

# Each person's files in turn, not the oldest first: one who asked for a thousand files
# (at up to 10 minutes each) held the workers for days before another's first. A pending
# file's turn is its place among its requester's pending files when it was asked for
# (`_requested`; so the next is another person's first); equal turns go by age, read
# from the index renditions_turn.
_CLAIM = """
WITH next AS (
    SELECT r.file_id FROM thumbnails.renditions r
    WHERE r.state = 'pending' AND NOT EXISTS (
        SELECT 1 FROM thumbnails.rendition_leases l
        WHERE l.file_id = r.file_id AND l.until > now())
    ORDER BY r.turn, r.requested_at LIMIT 1
    FOR UPDATE OF r SKIP LOCKED)
INSERT INTO thumbnails.rendition_leases AS l (file_id, until, attempts)
SELECT file_id, now() + $1::interval, 1 FROM next
ON CONFLICT (file_id) DO UPDATE SET until = excluded.until, attempts = l.attempts + 1
WHERE l.until <= now()
RETURNING l.file_id, l.attempts"""


class Renditions(Handlers):
    def __init__(self, parts: Parts, blobs: BlobStore) -> None:
        super().__init__(parts)
        settings = parts.settings
        self.blobs = blobs
        self.workers = max(1, settings.reencode_workers)
        self.time_cap = settings.reencode_time_cap_s
        self.max_pending = settings.reencode_max_pending
        # A worker's presigned URLs outlast a task (its queueing too): an hour at least.
        self.url_lasts = max(timedelta(hours=1), timedelta(seconds=self.time_cap * 2 + 60))
        self.limits = encoding.Limits(
            settings.reencode_max_duration_s,
            settings.reencode_max_pixels,
            settings.reencode_max_bytes,
        )
        self.spool = settings.data_dir.resolve() / "spool" / "renditions"
        self.policy = Policy(retry_for_s=settings.consumer_retry_for_s)
        self._settings = settings
        self._pool: pebble.ProcessPool | None = None

    # -- asking ------------------------------------------------------------------------

    async def request(self, cause: Cause, files: Sequence[dict[str, Any]]) -> tuple[uuid.UUID, int]:
        """A job for these files (`{id, kind, members?}`, rights checked by the catalog):
        its id and the store's position."""
        job_id = uuid.uuid4()
        ids = [uuid.UUID(f["id"]) for f in files]
        async with self.pool.acquire() as conn, conn.transaction():
            rows = {
                r["file_id"]: r
                for r in await conn.fetch(
                    "SELECT file_id, version, state FROM thumbnails.renditions"
                    " WHERE file_id = ANY($1::uuid[]) FOR UPDATE",
                    ids,
                )
            }
            members = [uuid.UUID(m) for f in files for m in f.get("members") or []]
            known = {
                r["file_id"]: r["blob_key"]
                for r in await conn.fetch(
                    "SELECT file_id, blob_key FROM thumbnails.files"
                    " WHERE file_id = ANY($1::uuid[]) AND state <> 'released'",
                    ids + members,
                )
            }
            failed: list[dict[str, str]] = []
            changes: list[Change] = []
            for f, file_id in zip(files, ids, strict=True):
                row = rows.get(file_id)
                if row is not None and row["state"] in ("pending", "made"):
                    continue  # being made, or made: the job follows it
                if f["kind"] == "video":
                    sources = [known.get(file_id)]
                else:
                    sources = [known.get(uuid.UUID(m)) for m in f.get("members") or []]
                refusal = _refusal(f["kind"], sources)
                if refusal is not None:
                    failed.append(
                        {"file_id": str(file_id), "code": refusal[0], "reason": refusal[1]}
                    )
                    continue
                version = (row["version"] if row else 0) + 1
                changes.append(
                    Change(
                        ev.file_stream(file_id),
                        version,
                        ev.WebRenditionRequested(
                            file_id=file_id,
                            job_id=job_id,
                            kind=f["kind"],
                            sources=[s for s in sources if s],
                        ),
                    )
                )
            await self._within_pending_cap(conn, cause.actor, len(changes))
            requested = ev.ReEncodeRequested(
                job_id=job_id, file_ids=ids, created_by=cause.actor, failed=failed
            )
            out = envelopes_of([Change(ev.job_stream(job_id), 1, requested), *changes], cause)
            await model.apply(conn, out)
            position = await self.store.append(conn, out)
        self.parts.moved.fire()  # the runners look for work now
        return job_id, position

    async def _within_pending_cap(self, conn: Conn, actor: str, adding: int) -> None:
        """429 when `actor` would have more than max_pending files waiting (their jobs
        counted one at a time: two at once could each pass a count alone)."""
        if not adding:
            return
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('reencode:' || $1))", actor)
        waiting = await conn.fetchval(
            """SELECT count(*) FROM thumbnails.renditions r
               JOIN thumbnails.reencode_jobs j ON j.id = r.job_id
               WHERE r.state = 'pending' AND j.created_by = $1""",
            actor,
        )
        if waiting + adding > self.max_pending:
            raise Refused(
                429,
                "too_many_pending",
                f"{waiting} of your files are waiting to be re-encoded and this job adds"
                f" {adding}: at most {self.max_pending} may wait at once; ask again once"
                " some are made",
                {"pending": waiting, "adding": adding, "max_pending": self.max_pending},
            )

    # -- reading -----------------------------------------------------------------------

    async def rendition(self, file_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            "SELECT state, blob_key, facts, code, reason FROM thumbnails.renditions"
            " WHERE file_id = $1",
            file_id,
        )
        return dict(row) if row is not None else None

    async def made(self, file_ids: Sequence[uuid.UUID]) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT file_id FROM thumbnails.renditions"
            " WHERE file_id = ANY($1::uuid[]) AND state = 'made'",
            list(file_ids),
        )
        return [str(r["file_id"]) for r in rows]

    async def job(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        job = await self.pool.fetchrow(
            "SELECT * FROM thumbnails.reencode_jobs WHERE id = $1", job_id
        )
        if job is None:
            return None
        items = await self.pool.fetch(
            "SELECT file_id, state, code, reason FROM thumbnails.reencode_items"
            " WHERE job_id = $1 ORDER BY position",
            job_id,
        )
        settled = [i for i in items if i["state"] != "pending"]
        errors = [
            {
                "name": str(i["file_id"]),
                "code": i["code"],
                "message": f"file {i['file_id']}: {without_paths(i['reason'])}",
                "details": {"file_id": str(i["file_id"])},
            }
            for i in items
            if i["state"] == "failed"
        ]
        if len(settled) < len(items):
            status = "running"
        else:
            status = "failed" if errors and len(errors) == len(items) else "done"
        return {
            "id": str(job_id),
            "kind": "re_encode",
            "folder_id": None,
            "status": status,
            "progress": {"done": len(settled), "total": len(items)},
            "file_ids": [str(i["file_id"]) for i in items if i["state"] == "done"],
            "errors": errors,
            "created_at": job["created_at"].isoformat(),
            "created_by": job["created_by"],
        }

    # -- releasing ---------------------------------------------------------------------

    async def release(self, conn: Conn, gone: Sequence[tuple[uuid.UUID, Received[Any]]]) -> None:
        """Files purged: their renditions go, bytes first (deleting twice is harmless)."""
        causes = dict(gone)
        rows = await conn.fetch(
            "SELECT file_id, version, blob_key FROM thumbnails.renditions"
            " WHERE file_id = ANY($1::uuid[]) AND state <> 'released' FOR UPDATE",
            list(causes),
        )
        if not rows:
            return
        for r in rows:
            await self.blobs.delete(rendition_key(r["file_id"]))
        out: list[Envelope] = []
        for r in rows:
            change = Change(
                ev.file_stream(r["file_id"]),
                r["version"] + 1,
                ev.WebRenditionReleased(file_id=r["file_id"], blob_key=r["blob_key"]),
            )
            out += envelopes_of([change], Cause.of(causes[r["file_id"]]))
        await conn.execute(
            "DELETE FROM thumbnails.rendition_leases WHERE file_id = ANY($1::uuid[])",
            [r["file_id"] for r in rows],
        )
        await model.apply(conn, out)
        await self.store.append(conn, out)

    # -- making ------------------------------------------------------------------------

    def _workers(self) -> pebble.ProcessPool:
        if self._pool is None:
            self._pool = pebble.ProcessPool(
                max_workers=self.workers,
                max_tasks=50,
                initializer=encoding.start_worker,
                initargs=(worker_settings(self._settings),),
                context=multiprocessing.get_context("spawn"),
            )
        return self._pool

    def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()  # type: ignore[no-untyped-call]

    async def run(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        for stale in self.spool.iterdir():  # a crash's leftovers: no runner holds them
            stale.unlink(missing_ok=True)
        # The workers started now, not by the first job: spawning one and importing the
        # codecs takes a second or two.
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(self._workers().schedule(encoding.ready, timeout=60))
        try:
            await asyncio.gather(
                *(
                    runners.claim_and_work(
                        self.parts, self.policy, "renditions", self.claim, self.make
                    )
                    for _ in range(self.workers)
                )
            )
        finally:
            self.stop()

    async def claim(self) -> list[dict[str, Any]]:
        """One file at a time: a rendition takes seconds of a worker, its claim no time."""
        lease = timedelta(seconds=self.time_cap * 2 + 60)
        row = await self.pool.fetchrow(_CLAIM, lease)
        if row is None:
            return []
        found = await self.pool.fetchrow(
            "SELECT * FROM thumbnails.renditions WHERE file_id = $1 AND state = 'pending'",
            row["file_id"],
        )
        return [] if found is None else [{**dict(found), "attempts": row["attempts"]}]

    async def make(self, files: list[dict[str, Any]]) -> None:
        for file in files:
            await self._make(file)

    async def _make(self, file: dict[str, Any]) -> None:
        if file["attempts"] > MAX_ATTEMPTS:
            await self.record(file, failure=("gave_up", f"not made after {MAX_ATTEMPTS} attempts"))
            return
        try:
            # The worker reads these objects by their URLs, and holds no key of the store's.
            sources = tuple(
                [
                    (k, await self.blobs.size(k), self.blobs.presigned_get(k, self.url_lasts))
                    for k in file["sources"]
                ]
            )
        except (FileNotFoundError, KeyError):
            await self.record(file, failure=("content_missing", "the content is not stored"))
            return
        out = self.spool / f"{file['file_id']}-{uuid.uuid4().hex}.mp4"
        outcome = await self.encode(encoding.Task(file["kind"], sources, str(out), self.limits))
        if outcome is None:
            return  # the pool broke: the lease runs out and the file is tried again
        if isinstance(outcome, tuple):
            await self.record(file, failure=outcome)
            return
        made = outcome
        try:
            key = rendition_key(file["file_id"])
            await self._store(out, key)
        finally:
            out.unlink(missing_ok=True)
        await self.record(file, made=made, key=key)

    async def encode(self, task: encoding.Task) -> encoding.Made | tuple[str, str] | None:
        """The rendition, in `task.out_path`; or why there can be none (code, reason),
        its spool gone; or None when the pool broke. A store that did not answer is a
        ConnectionError (transient: not the file's fault)."""
        future = self._workers().schedule(encoding.make, args=(task,), timeout=self.time_cap)
        try:
            made: encoding.Made = await asyncio.wrap_future(future)
        except encoding.Unencodable as error:
            return error.code, error.message
        except encoding.SourceUnavailable as error:
            raise ConnectionError(f"the blob store did not answer: {error}") from error
        except concurrent.futures.TimeoutError:
            encoding.with_suppressed_unlink(task.out_path)  # the killed worker's
            return "timed_out", f"re-encoding it took more than {self.time_cap:g} s"
        except pebble.ProcessExpired as error:
            encoding.with_suppressed_unlink(task.out_path)
            return "crashed", f"the worker re-encoding it died (exit {error.exitcode})"
        except concurrent.futures.BrokenExecutor:
            encoding.with_suppressed_unlink(task.out_path)
            self.stop()
            return None
        return made

    async def _store(self, path: Path, key: str) -> None:
        """The spool into the store in parts: never the whole rendition in memory."""
        upload = await self.blobs.create_multipart(key)
        try:
            parts: list[tuple[int, str]] = []
            number = 0
            with path.open("rb") as spool:
                while True:
                    data = await asyncio.to_thread(spool.read, PART)
                    if not data and number:
                        break
                    number += 1
                    etag = await self.blobs.put_part(key, upload, number, _once(data))
                    parts.append((number, etag))
                    if len(data) < PART:
                        break
            await self.blobs.complete_multipart(key, upload, parts)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.blobs.abort_multipart(key, upload)
            raise

    async def record(
        self,
        file: dict[str, Any],
        *,
        made: encoding.Made | None = None,
        key: str | None = None,
        failure: tuple[str, str] | None = None,
    ) -> None:
        cause = Cause(
            actor="system:renditions",
            correlation_id=file["correlation_id"],
            causation_id=str(file["request_id"]),
        )
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT version, state FROM thumbnails.renditions WHERE file_id = $1 FOR UPDATE",
                file["file_id"],
            )
            if row is None or row["state"] != "pending" or row["version"] != file["version"]:
                if made is not None and (row is None or row["state"] == "released"):
                    await self.blobs.delete(rendition_key(file["file_id"]))
                return  # purged or asked again meanwhile
            event: ev.WebRenditionMade | ev.WebRenditionFailed
            if made is not None and key is not None:
                event = ev.WebRenditionMade(
                    file_id=file["file_id"],
                    job_id=file["job_id"],
                    blob_key=key,
                    bytes=made.bytes,
                    width=made.width,
                    height=made.height,
                    duration_s=made.duration_s,
                    audio=made.audio,
                )
            else:
                assert failure is not None
                event = ev.WebRenditionFailed(
                    file_id=file["file_id"],
                    job_id=file["job_id"],
                    code=failure[0],
                    reason=failure[1],
                )
            change = Change(ev.file_stream(file["file_id"]), row["version"] + 1, event)
            out = envelopes_of([change], cause)
            await conn.execute(
                "DELETE FROM thumbnails.rendition_leases WHERE file_id = $1", file["file_id"]
            )
            await model.apply(conn, out)
            await self.store.append(conn, out)
        if failure is not None:
            log.info("renditions.failed", file_id=str(file["file_id"]), code=failure[0])


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _refusal(kind: str, sources: list[str | None]) -> tuple[str, str] | None:
    if kind not in ev.RE_ENCODED_KINDS:
        return (
            "not_video",
            f"files of kind {kind} are not re-encoded (only videos and image sequences)",
        )
    if not sources:
        return "unreadable", "the sequence has no images"
    if any(s is None for s in sources):
        return (
            "content_missing",
            "its content is not known here (imported by reference, or not yet)",
        )
    if any(not str(s).startswith("sha256/") for s in sources):
        return "imported", "files imported by reference are not re-encoded"
    return None
