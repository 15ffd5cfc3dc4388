"""An import job's run: the objects read in the background of this process, a batch at
a time (read concurrently, each streamed once to hash and sniff it; one transaction of
events per batch), so the job's progress moves as they are registered. A job stopped
by a restart resumes from its stream (imports/handlers.py `resume`); the batch in
flight is read again, and nothing of it had been recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from services.ingest.collector.projections import blob_refs
from services.ingest.imports.buckets.port import Bucket, BucketReader, CloudProblem, Read, problem
from services.ingest.imports.buckets.s3 import LISTING_PAGE
from services.ingest.imports.domain import jobs as domain
from services.ingest.imports.domain.jobs import Matched
from services.ingest.imports.domain.requests import Rejection
from services.ingest.imports.group_runs import GroupRuns
from services.ingest.jobs.projections import jobs
from services.ingest.media import kinds
from shared.contracts import ingest as ev
from shared.contracts.envelope import Cause, Change, Envelope, appended, envelopes_of
from shared.kit.blobs import BlobStore
from shared.kit.eventstore import ConcurrencyConflict
from shared.kit.logs import log
from shared.kit.service import Handlers, Parts, collector_paused

# Objects read and recorded together: one transaction of events per batch.
BATCH = 500
# Runs of objects read at the same time (each a task of the buckets' loop).
READERS = 32
# Objects a reader task takes at a time (one after the other).
RUN = 8
# Progress moves at least this often while objects are read.
FLUSH_S = 1.0
# Bucket-level problems: when a whole batch fails with one of them, the job stops.
FATAL = (
    "invalid_credentials",
    "bucket_not_found",
    "endpoint_unreachable",
    "endpoint_not_allowed",
    "access_denied",
    "response_too_large",
    "response_timeout",
)


# What becomes of one object: a file, a refusal, or a match with files already imported.
Result = domain.Found | Rejection | Matched

# An integration's bucket and a reader of it, or None once it was removed.
BucketOf = Callable[[uuid.UUID], Awaitable[tuple[Bucket, BucketReader] | None]]


class Runner(GroupRuns, Handlers):
    readers, run_size, fatal = READERS, RUN, FATAL

    def __init__(
        self, parts: Parts, bucket_of: BucketOf, most_objects: int, blobs: BlobStore
    ) -> None:
        super().__init__(parts)
        self.bucket_of = bucket_of
        # DICOM instances are copied in (README: "DICOM series by reference").
        self.blobs = blobs
        self.spool = parts.settings.data_dir / "spool"
        # Objects one import reads at most, named and listed.
        self.most_objects = most_objects

    async def run(self, state: domain.JobState, cause: Cause) -> None:
        """Read every object the job has still to read; stop on what stops it."""
        try:
            await self._import(state, cause)
        except ConcurrencyConflict:
            # Another writer recorded first: a replica resuming it (it has the job), or a
            # cancel (POST /v1/jobs/{id}/cancel): either way this run stops here.
            log.warning("import.stream_moved_on", job_id=str(state.job_id))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("import.crashed", job_id=str(state.job_id), exc_info=True)
            with contextlib.suppress(Exception):
                await self._append(
                    state,
                    cause,
                    domain.fail(
                        state.job_id,
                        state.version,
                        "internal_error",
                        "the import stopped on an error of ours; what it registered stays",
                    ),
                )

    async def _append(self, state: domain.JobState, cause: Cause, changes: list[Change]) -> None:
        await self._write(state, envelopes_of(changes, cause))

    async def _write(self, state: domain.JobState, envelopes: list[Envelope]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await jobs.apply(conn, envelopes)
            # The files it registered hold the integration (the collector's read model).
            await blob_refs.apply(conn, envelopes)
            await self.store.append(conn, envelopes)
        state.version += len(envelopes)

    async def _import(self, state: domain.JobState, cause: Cause) -> None:
        """Read every pending object, READERS at a time and never idle between batches;
        record what was read every BATCH objects (or FLUSH_S seconds)."""
        self.spool.mkdir(parents=True, exist_ok=True)
        found = await self.bucket_of(state.integration_id)
        if found is None:
            await self._fail_removed(state, cause)
            return
        reader = found[1]
        named = {o.key for o in state.objects}
        listing = _Listing(reader, state.prefix, named, state.listed, self.most_objects)
        if state.prefix is not None and not state.listing_complete:
            listing.start()
        else:
            listing.complete = True
        inflight: set[asyncio.Future[list[Result]]] = set()
        done: list[Result] = []
        flushed = time.monotonic()
        try:
            async for run in _objects(state, listing):
                inflight.add(asyncio.ensure_future(self._read_run(reader, run, state)))
                if len(inflight) >= READERS:
                    finished, inflight = await asyncio.wait(
                        inflight, return_when=asyncio.FIRST_COMPLETED
                    )
                    done += [r for f in finished for r in f.result()]
                if len(done) >= BATCH or (done and time.monotonic() - flushed > FLUSH_S):
                    if await self._flush(state, cause, listing, done):
                        return
                    done, flushed = [], time.monotonic()
            if inflight:
                finished, inflight = await asyncio.wait(inflight)
                done += [r for f in finished for r in f.result()]
            if listing.problem is not None:
                if not await self._flush(state, cause, listing, done):
                    await self._append(
                        state,
                        cause,
                        domain.fail(
                            state.job_id,
                            state.version,
                            listing.problem.code,
                            f"the prefix {state.prefix!r} could not be listed:"
                            f" {listing.problem.message}",
                        ),
                    )
                return
            if await self._flush(state, cause, listing, done, final=True):
                return
            if await self._groups(state, cause, reader):
                return
            await self._append(state, cause, domain.finish(state.job_id, state.version))
            log.info("import.finished", job_id=str(state.job_id), settled=len(state.settled))
        finally:
            listing.stop()
            for future in inflight:
                future.cancel()

    async def _flush(
        self,
        state: domain.JobState,
        cause: Cause,
        listing: _Listing,
        results: list[Result],
        *,
        final: bool = False,
    ) -> bool:
        """Record a batch of read objects (and how far the listing got); True when the
        job stopped (its integration removed, or the bucket refusing everything)."""
        if await self.bucket_of(state.integration_id) is None:
            await self._fail_removed(state, cause)
            return True
        stored = [r for r in results if isinstance(r, domain.Found)]
        refused = [r for r in results if isinstance(r, Rejection)]
        matched = [r for r in results if isinstance(r, Matched)]
        listed = listing.unreported()
        complete = final and state.prefix is not None and not state.listing_complete
        with collector_paused():
            envelopes = domain.batch_envelopes(
                state.job_id,
                state.folder_id,
                state.integration_id,
                state.version,
                stored,
                refused,
                cause,
                listed=listed,
                listing_complete=complete,
            )
            envelopes += envelopes_of(
                appended(
                    ev.job_stream(state.job_id), matched, after=state.version + len(envelopes)
                ),
                cause,
            )
        if envelopes:
            await self._write(state, envelopes)
        state.listed += listed
        state.listing_complete = state.listing_complete or complete
        state.settled.update(f.obj.key for f in stored)
        state.settled.update(m.key for m in matched)
        state.settled.update(str(r.details.get("key", "")) for r in refused)
        reasons = {r.details.get("reason") for r in refused}
        if results and len(refused) == len(results) and len(reasons) == 1:
            (reason,) = reasons
            if reason in FATAL:
                await self._append(
                    state,
                    cause,
                    domain.fail(
                        state.job_id,
                        state.version,
                        str(reason),
                        f"every object of a batch was refused by the bucket: {reason}",
                    ),
                )
                return True
        return False

    @staticmethod
    def _refused(obj: ev.ImportObject, error: Exception) -> Rejection:
        refused = _settled(obj, error)
        assert isinstance(refused, Rejection)
        return refused

    async def _fail_removed(self, state: domain.JobState, cause: Cause) -> None:
        await self._append(
            state,
            cause,
            domain.fail(
                state.job_id,
                state.version,
                "integration_removed",
                f"integration {state.integration_id} was removed during the import",
            ),
        )

    async def _imported(
        self, state: domain.JobState, keys: list[str]
    ) -> dict[str, list[uuid.UUID]]:
        """The files each key already is in the job's folder, imported through its
        integration (ingest.cloud_files; at most 100 a key)."""
        rows = await self.pool.fetch(
            """SELECT key, (array_agg(file_id ORDER BY file_id))[1:100] AS file_ids
               FROM ingest.cloud_files
               WHERE integration_id = $1 AND folder_id = $2 AND key = ANY($3::text[])
               GROUP BY key""",
            state.integration_id,
            state.folder_id,
            keys,
        )
        return {r["key"]: list(r["file_ids"]) for r in rows}

    async def _read_run(
        self,
        reader: BucketReader,
        run: list[ev.ImportObject],
        state: domain.JobState | None = None,
    ) -> list[Result]:
        """A few objects, read one after the other on the buckets' loop and handed back
        together: one hop between the loops for the run, not one per object. With
        `skip_duplicate_urls` or `upsert_metadata`, those already imported into the
        folder are matched first, and not read."""
        results: list[Result | None] = [domain.check_object(obj) for obj in run]
        if state is not None and state.matches_imported:
            known = await self._imported(state, [o.key for o in run])
            results = [
                found if found is not None else domain.matched(state, o, known.get(o.key, []))
                for o, found in zip(run, results, strict=True)
            ]
        wanted = [obj for obj, refused in zip(run, results, strict=True) if refused is None]
        reads = iter(
            await reader.read_run([obj.key for obj in wanted], self.spool) if wanted else []
        )
        return [
            refused if refused is not None else _settled(obj, next(reads))
            for obj, refused in zip(run, results, strict=True)
        ]


def _settled(obj: ev.ImportObject, read: Read | Exception) -> domain.Found | Rejection:
    """One object read: a file to register, or why not."""
    if isinstance(read, CloudProblem):
        code = read.code if read.code == "object_not_found" else "object_unreadable"
        return domain.rejection(obj, code, read.message, {"reason": read.code})
    if isinstance(read, kinds.UnknownContent):
        return domain.rejection(
            obj,
            "unsupported_content",
            f"{obj.key!r} is not a kind of file we accept: {read}",
            {"accepted": list(domain.ACCEPTED_KINDS)},
        )
    if isinstance(read, Exception):
        return domain.rejection(
            obj, "object_unreadable", f"{obj.key!r} could not be read ({type(read).__name__})"
        )
    mismatch = domain.check_kind(obj, read.facts.kind)
    if mismatch is not None:
        return mismatch
    facts = read.facts
    return domain.Found(
        file_id=uuid.uuid4(),
        obj=obj,
        kind=facts.kind,
        mime_type=facts.mime_type,
        size=read.size,
        sha256=read.sha256,
        media=facts.media,
        etag=read.etag,
    )


async def _objects(
    state: domain.JobState, listing: _Listing
) -> AsyncIterator[list[ev.ImportObject]]:
    """The objects still to read, RUN at a time: those named first, then the prefix's
    as listed."""
    pending = state.pending()
    for i in range(0, len(pending), RUN):
        yield pending[i : i + RUN]
    while not listing.complete:
        page = [o for o in await listing.take(LISTING_PAGE) if o.key not in state.settled]
        for i in range(0, len(page), RUN):
            yield page[i : i + RUN]


class _Listing:
    """A prefix's objects, listed by a task of its own ahead of the reads, page by page.

    Keys the request also named are left out (they are read once); `count` is how many
    it found, of which `reported` are already in the job's total (on a resumed job, the
    ones an earlier run reported).
    """

    def __init__(
        self,
        reader: BucketReader,
        prefix: str | None,
        named: set[str],
        reported: int,
        most: int,
    ) -> None:
        self.reader, self.prefix, self.named = reader, prefix or "", named
        # Objects one import reads at most, named and listed: the listing stops there.
        self.most = max(most - len(named), 0)
        # Bounded: the listing runs at most 20 pages ahead of the reads.
        self.pages: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=20)
        self.buffer: list[str] = []
        self.count = 0
        self.reported = reported
        self.complete = False
        self.problem: CloudProblem | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._list(), name="import-list")

    async def _list(self) -> None:
        page: list[str] = []
        listed = 0
        try:
            async for keys in self.reader.pages(self.prefix):
                for key in keys:
                    if key in self.named:
                        continue
                    if listed == self.most:
                        raise CloudProblem(
                            "listing_too_large",
                            "the prefix holds more objects than one import reads"
                            f" ({self.most + len(self.named)}, named and listed); the first"
                            f" {self.most} listed are imported: import the rest by narrower"
                            " prefixes",
                            {"limit": self.most + len(self.named)},
                        )
                    listed += 1
                    page.append(key)
                    if len(page) == LISTING_PAGE:
                        await self.pages.put(page)
                        page = []
        except CloudProblem as refused:
            self.problem = refused
        except Exception as error:
            self.problem = problem(error, self.reader.bucket)
        # What was listed before the end (or a problem) is imported too.
        if page:
            await self.pages.put(page)
        await self.pages.put(None)

    async def take(self, most: int) -> list[ev.ImportObject]:
        """Up to `most` more listed objects (waiting for a page if none is buffered)."""
        if not self.buffer and not self.complete:
            page = await self.pages.get()
            if page is None:
                self.complete = True
            else:
                self.count += len(page)
                self.buffer += page
        taken, self.buffer = self.buffer[:most], self.buffer[most:]
        return [ev.ImportObject(key=k) for k in taken]

    def unreported(self) -> int:
        """Listed objects not yet in the job's total; they are now."""
        fresh = max(self.count - self.reported, 0)
        self.reported += fresh
        return fresh

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
