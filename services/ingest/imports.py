"""Cloud integrations and imports by reference: the commands, and the jobs that run them.

An integration is registered only once its bucket answered with its credentials;
the credentials are sealed (shared/kit/secrets.py) before they reach an event.
An import records its job and answers; the objects are then read in the background
of this process, a batch at a time (read concurrently, each streamed once to hash and
sniff it; one transaction of events per batch), so the job's progress moves as they
are registered. A job interrupted by a restart resumes when ingest starts again: its
stream says what it was asked and what is settled (domain/imports.py `fold`); the
batch in flight is read again, and nothing of it had been recorded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import orjson

from services.ingest.buckets.loop import BucketLoop, Threaded
from services.ingest.buckets.port import Bucket, BucketReader, CloudProblem, Read, problem
from services.ingest.buckets.s3 import LISTING_PAGE, S3Reader, Sts
from services.ingest.domain import imports as domain
from services.ingest.domain import integrations as rules
from services.ingest.domain import media
from services.ingest.domain.endpoints import EndpointRule
from services.ingest.egress import Caps, Egress
from services.ingest.projections import integrations, jobs
from shared.contracts import ingest as ev
from shared.contracts.envelope import Cause, Change, Envelope, envelopes_of
from shared.kit import identity
from shared.kit.access import Access
from shared.kit.errors import Refused, not_found
from shared.kit.eventstore import ConcurrencyConflict
from shared.kit.logs import log
from shared.kit.secrets import Sealer, SealError, key_material
from shared.kit.service import Handlers, Parts, collector_paused
from shared.kit.settings import Settings

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


def require_org_admin(access: Access) -> None:
    """Registering an integration is the organisation admins'."""
    if not access.org_admin:
        raise Refused(
            403,
            "forbidden",
            "registering a cloud integration needs the organisation admin role",
            {"role_needed": "org admin"},
        )


def _sharing(row: Any) -> list[str] | None:
    """Whom an integration is shared with; None when there is no such integration."""
    return None if row is None else list(row["shared_with"])


def _integration_json(row: Any, access: Access) -> dict[str, Any]:
    """An integration as its users see it: never its credentials; who else may use it
    only for the org admins."""
    found = {
        "id": str(row["id"]),
        "name": row["name"],
        "provider": row["provider"],
        "bucket": row["bucket"],
        "endpoint": row["endpoint"],
        "region": row["region"],
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
    }
    if access.org_admin:
        found["shared_with"] = list(row["shared_with"])
    return found


class Imports(Handlers):
    def __init__(self, parts: Parts, settings: Settings) -> None:
        super().__init__(parts)
        self.settings = settings
        self._sealer: Sealer | None = None
        self.spool = settings.data_dir / "spool"
        # Every connection to a bucket goes through the address rule; a bad
        # FILES_ALLOWED_ENDPOINTS stops the service at start, naming the entry.
        self.egress = Egress(EndpointRule.parse(settings.allowed_endpoints))
        self.caps = Caps.of(settings)
        self.sts = Sts.of(settings)
        self._clients: dict[uuid.UUID, tuple[Bucket, BucketReader]] = {}
        # Every bucket is read on this loop, in a thread of its own (buckets/loop.py).
        self.buckets = BucketLoop()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}

    def _reader(self, bucket: Bucket) -> BucketReader:
        return Threaded(S3Reader(bucket, self.egress, self.caps, self.sts), self.buckets)

    @property
    def sealer(self) -> Sealer:
        if self._sealer is None:
            self._sealer = Sealer(key_material(self.settings.secret_key, self.settings.data_dir))
        return self._sealer

    async def _record(self, changes: Sequence[Change], cause: Cause) -> int:
        envelopes = envelopes_of(changes, cause)
        async with self.pool.acquire() as conn, conn.transaction():
            await jobs.apply(conn, envelopes)
            await integrations.apply(conn, envelopes)
            return await self.store.append(conn, envelopes)

    # -- integrations ----------------------------------------------------------------

    async def register(
        self, access: Access, cause: Cause, body: object
    ) -> tuple[dict[str, Any], int]:
        require_org_admin(access)
        registration = rules.parse_registration(body)
        bucket = Bucket(
            registration.endpoint,
            registration.region,
            registration.bucket,
            registration.credentials,
        )
        reader = self._reader(bucket)
        try:
            await reader.check()
        except CloudProblem as refused:
            raise Refused(
                422,
                refused.code,
                f"the integration was not registered: {refused.message}",
                {"bucket": bucket.name, "endpoint": bucket.endpoint.url(), **refused.details},
            ) from None
        finally:
            await reader.close()
        integration_id = uuid.uuid4()
        sealed = self.sealer.seal(
            orjson.dumps(rules.sealed_credentials(registration.credentials)),
            str(integration_id),
        )
        position = await self._record(rules.register(integration_id, registration, sealed), cause)
        row = await self.pool.fetchrow(
            "SELECT * FROM ingest.integrations WHERE id = $1", integration_id
        )
        return _integration_json(row, access), position

    async def integrations(self, access: Access, limit: int, cursor: str | None) -> dict[str, Any]:
        """The integrations the caller may use (all of them for an org admin)."""
        after: tuple[Any, ...] | None = None
        if cursor:
            try:
                at, ident = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
                after = (at, uuid.UUID(ident))
            except Exception:
                raise Refused(422, "invalid_cursor", "cursor is not one we gave") from None
        rows = await self.pool.fetch(
            """SELECT * FROM ingest.integrations
               WHERE ($1::text IS NULL OR (created_at, id) > ($1::timestamptz, $2::uuid))
                 AND ($4 OR $5 = ANY(shared_with))
               ORDER BY created_at, id LIMIT $3""",
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
            access.org_admin,
            access.user_id,
        )
        items = [_integration_json(r, access) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = base64.urlsafe_b64encode(
                orjson.dumps([last["created_at"].isoformat(), str(last["id"])])
            ).decode()
        return {"items": items, "next_cursor": next_cursor}

    async def _row(self, integration_id: uuid.UUID) -> Any:
        return await self.pool.fetchrow(
            "SELECT * FROM ingest.integrations WHERE id = $1", integration_id
        )

    async def integration(self, access: Access, integration_id: uuid.UUID) -> dict[str, Any]:
        row = await self._row(integration_id)
        rules.require_use(access, integration_id, _sharing(row))
        return _integration_json(row, access)

    async def share(
        self, access: Access, cause: Cause, integration_id: uuid.UUID, body: object
    ) -> tuple[dict[str, Any], int]:
        """Who may use the integration besides the org admins (the list replaces the one
        before). Every user named must exist."""
        row = await self._row(integration_id)
        rules.require_admin(access, integration_id, _sharing(row))
        user_ids = rules.parse_sharing(body)
        await self._users_exist(user_ids)
        position = await self._record(rules.share(integration_id, row["version"], user_ids), cause)
        return _integration_json(await self._row(integration_id), access), position

    async def _users_exist(self, user_ids: list[uuid.UUID]) -> None:
        """Every one of these users exists (the ACL context knows), or 422 naming those
        that do not."""
        if not user_ids:
            return
        url = f"{self.settings.acl_url}/internal/users/lookup"
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as http:
                answer = await http.post(
                    url,
                    json={"ids": [str(u) for u in user_ids]},
                    headers={identity.HEADER: self.parts.identity.for_service("ingest")},
                )
        except httpx.HTTPError:
            raise Refused(
                503, "acl_unavailable", "could not look the users up; try again"
            ) from None
        if answer.status_code != 200:
            raise Refused(
                503,
                "acl_unavailable",
                f"could not look the users up (the ACL service answered {answer.status_code})",
            )
        unknown = list(answer.json().get("unknown_ids") or [])
        if unknown:
            shown = ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")
            raise Refused(
                422,
                "unknown_users",
                f"there are no users with these ids: {shown}",
                {"unknown_users": unknown},
            )

    async def remove(self, access: Access, cause: Cause, integration_id: uuid.UUID) -> int:
        """Files imported through it stay listed; their content is no longer served."""
        row = await self._row(integration_id)
        rules.require_admin(access, integration_id, _sharing(row))
        position = await self._record(rules.remove(integration_id, row["version"]), cause)
        await self._forget(integration_id)
        return position

    async def _forget(self, integration_id: uuid.UUID) -> None:
        found = self._clients.pop(integration_id, None)
        if found is not None:
            await found[1].close()

    async def _bucket(self, integration_id: uuid.UUID) -> tuple[Bucket, BucketReader] | None:
        """The integration's bucket and a reader of it, or None if it was removed."""
        row = await self.pool.fetchrow(
            "SELECT * FROM ingest.integrations WHERE id = $1", integration_id
        )
        if row is None:
            await self._forget(integration_id)
            return None
        cached = self._clients.get(integration_id)
        if cached is not None:
            return cached
        try:
            credentials = orjson.loads(
                self.sealer.open(row["sealed_credentials"], str(integration_id))
            )
        except SealError as error:
            raise Refused(
                409,
                "integration_unreadable",
                f"integration {integration_id}'s credentials cannot be opened: {error}",
            ) from None
        bucket = Bucket(
            rules.parse_endpoint(row["endpoint"]),
            row["region"],
            row["bucket"],
            rules.opened_credentials(credentials),
        )
        found: tuple[Bucket, BucketReader] = (
            bucket,
            self._reader(bucket),
        )
        self._clients[integration_id] = found
        return found

    async def presign(self, integration_id: uuid.UUID, key: str, name: str, mime_type: str) -> str:
        found = await self._bucket(integration_id)
        if found is None:
            raise Refused(
                409,
                "integration_removed",
                f"the file's integration {integration_id} was removed: its content is not"
                " reachable through this platform any more",
                {"integration_id": str(integration_id)},
            )
        _, reader = found
        try:
            return await reader.presign(key, name, mime_type)
        except CloudProblem as refused:
            raise Refused(409, refused.code, refused.message) from None

    # -- imports ---------------------------------------------------------------------

    async def start_import(
        self, access: Access, cause: Cause, folder_id: uuid.UUID, body: object
    ) -> tuple[dict[str, Any], int]:
        """Record the job and what it was asked, then run it in the background: 202.
        The caller must be one who may use the integration (else 404), and its endpoint
        still allowed (else 422, as at registration)."""
        integration_id = domain.integration_of(body)
        row = await self._row(integration_id)
        rules.require_use(access, integration_id, _sharing(row))
        found = await self._bucket(integration_id)
        if found is None:
            raise not_found("integration", integration_id)
        request = domain.parse_request(body, found[0].name)
        try:
            await found[1].allowed()
        except CloudProblem as refusal:
            # A name that does not resolve now is the job's to report, as a bucket that
            # does not answer; an address refused is refused here.
            if refusal.code == "endpoint_not_allowed":
                raise Refused(422, refusal.code, refusal.message, refusal.details) from None
        job_id = uuid.uuid4()
        changes = domain.start(job_id, folder_id, request)
        envelopes = envelopes_of(changes, cause)
        async with self.pool.acquire() as conn, conn.transaction():
            await jobs.apply(conn, envelopes)
            position = await self.store.append(conn, envelopes)
        state = domain.fold((e.type, e.data) for e in envelopes)
        assert state is not None
        if not state.ended:
            self._spawn(state, Cause.of(envelopes[0]))
        return {"job_id": str(job_id)}, position

    def _spawn(self, state: domain.JobState, cause: Cause) -> None:
        if state.job_id in self._running:
            return
        task = asyncio.create_task(self._run(state, cause), name=f"import-{state.job_id}")
        self._running[state.job_id] = task
        task.add_done_callback(lambda _: self._running.pop(state.job_id, None))
        # The runtime cancels its tasks before it closes the pool: an import stopped by a
        # shutdown records nothing more, and resumes at the next start.
        self.parts.tasks.append(task)

    async def resume(self) -> None:
        """At start: every import job its stream says is unfinished runs on."""
        rows = await self.pool.fetch(
            "SELECT id FROM ingest.jobs WHERE kind = 'import' AND status = 'running'"
        )
        for row in rows:
            envelopes = await self.store.read_stream(self.pool, ev.job_stream(row["id"]))
            state = domain.fold((e.type, e.data) for e in envelopes)
            if state is None or state.ended:
                continue
            log.info("import.resumed", job_id=str(state.job_id), settled=len(state.settled))
            self._spawn(state, Cause.of(envelopes[0]))

    async def _run(self, state: domain.JobState, cause: Cause) -> None:
        try:
            await self._import(state, cause)
        except ConcurrencyConflict:
            # Another runner (another replica resuming it) recorded first: it has the job.
            log.warning("import.taken_over", job_id=str(state.job_id))
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
            await self.store.append(conn, envelopes)
        state.version += len(envelopes)

    async def _import(self, state: domain.JobState, cause: Cause) -> None:
        """Read every pending object, READERS at a time and never idle between batches;
        record what was read every BATCH objects (or FLUSH_S seconds)."""
        self.spool.mkdir(parents=True, exist_ok=True)
        found = await self._bucket(state.integration_id)
        if found is None:
            await self._fail_removed(state, cause)
            return
        reader = found[1]
        named = {o.key for o in state.objects}
        listing = _Listing(reader, state.prefix, named, state.listed, self.caps.import_keys)
        if state.prefix is not None and not state.listing_complete:
            listing.start()
        else:
            listing.complete = True
        inflight: set[asyncio.Future[list[domain.Found | domain.Rejection]]] = set()
        done: list[domain.Found | domain.Rejection] = []
        flushed = time.monotonic()
        try:
            async for run in _objects(state, listing):
                inflight.add(asyncio.ensure_future(self._read_run(reader, run)))
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
        results: list[domain.Found | domain.Rejection],
        *,
        final: bool = False,
    ) -> bool:
        """Record a batch of read objects (and how far the listing got); True when the
        job stopped (its integration removed, or the bucket refusing everything)."""
        if await self._bucket(state.integration_id) is None:
            await self._fail_removed(state, cause)
            return True
        stored = [r for r in results if isinstance(r, domain.Found)]
        refused = [r for r in results if isinstance(r, domain.Rejection)]
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
        if envelopes:
            await self._write(state, envelopes)
        state.listed += listed
        state.listing_complete = state.listing_complete or complete
        state.settled.update(f.obj.key for f in stored)
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

    async def _read_run(
        self, reader: BucketReader, run: list[ev.ImportObject]
    ) -> list[domain.Found | domain.Rejection]:
        """A few objects, read one after the other on the buckets' loop and handed back
        together: one hop between the loops for the run, not one per object."""
        results: list[domain.Found | domain.Rejection | None] = [
            domain.check_object(obj) for obj in run
        ]
        wanted = [obj for obj, refused in zip(run, results, strict=True) if refused is None]
        reads = iter(
            await reader.read_run([obj.key for obj in wanted], self.spool) if wanted else []
        )
        return [
            refused if refused is not None else _settled(obj, next(reads))
            for obj, refused in zip(run, results, strict=True)
        ]


def _settled(obj: ev.ImportObject, read: Read | Exception) -> domain.Found | domain.Rejection:
    """One object read: a file to register, or why not."""
    if isinstance(read, CloudProblem):
        code = read.code if read.code == "object_not_found" else "object_unreadable"
        return domain.rejection(obj, code, read.message, {"reason": read.code})
    if isinstance(read, media.UnknownContent):
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
