"""Cloud integrations and imports by reference: the commands.

An integration is registered only once its bucket answered with its credentials;
the credentials are sealed (shared/kit/secrets.py) before they reach an event. An
import records its job and answers 202; the job then runs in the background of this
process (imports/runner.py). A job interrupted by a restart resumes when ingest starts
again: its stream says what it was asked and what is settled (domain/jobs.py `fold`).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from services.ingest.collector.projections import blob_refs
from services.ingest.imports.buckets.loop import BucketLoop, Threaded
from services.ingest.imports.buckets.port import CONTENT_CHANGED, Bucket, BucketReader, CloudProblem
from services.ingest.imports.buckets.s3 import S3Reader, Sts
from services.ingest.imports.domain import integrations as rules
from services.ingest.imports.domain import jobs as domain
from services.ingest.imports.domain import requests
from services.ingest.imports.domain.endpoints import EndpointRule
from services.ingest.imports.domain.sync import new_token
from services.ingest.imports.egress import Caps, Egress
from services.ingest.imports.projections import integrations
from services.ingest.imports.runner import Runner
from services.ingest.jobs.projections import jobs
from services.ingest.metadata.domain import check_metadata
from services.ingest.metadata.schema import current as current_schema
from shared.contracts import ingest as ev
from shared.contracts.dicom import InstancesSettled
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit import identity
from shared.kit.access import Access
from shared.kit.blobs import BlobStore
from shared.kit.db import Conn
from shared.kit.errors import Refused, not_found
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received
from shared.kit.secrets import Sealer, SealError, key_material
from shared.kit.service import Handlers, Parts
from shared.kit.settings import Settings

# What a bucket said that may pass if asked again later (the others will not).
PASSING_PROBLEMS = frozenset({"endpoint_unreachable", "bucket_error", "response_timeout"})


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


class Integrations(Handlers):
    """Customers' buckets: registered, listed, shared, removed; and a reader of each,
    kept while it is in use."""

    def __init__(self, parts: Parts, settings: Settings) -> None:
        super().__init__(parts)
        self.settings = settings
        self._sealer: Sealer | None = None
        # Every connection to a bucket goes through the address rule; a bad
        # FILES_ALLOWED_ENDPOINTS stops the service at start, naming the entry.
        self.egress = Egress(EndpointRule.parse(settings.allowed_endpoints))
        self.caps = Caps.of(settings)
        self.sts = Sts.of(settings)
        self._clients: dict[uuid.UUID, tuple[Bucket, BucketReader]] = {}
        # Every bucket is read on this loop, in a thread of its own (buckets/loop.py).
        self.buckets = BucketLoop()

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
            await integrations.apply(conn, envelopes)
            return await self.store.append(conn, envelopes)

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
        token, digest = new_token()
        changes = rules.register(integration_id, registration, sealed)
        changes += rules.events_token(integration_id, 1, digest)
        position = await self._record(changes, cause)
        row = await self.pool.fetchrow(
            "SELECT * FROM ingest.integrations WHERE id = $1", integration_id
        )
        # Shown this once: only its SHA-256 is kept.
        return {**_integration_json(row, access), "events_token": token}, position

    async def visible(self, access: Access, limit: int, cursor: str | None) -> dict[str, Any]:
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

    async def row(self, integration_id: uuid.UUID) -> Any:
        return await self.pool.fetchrow(
            "SELECT * FROM ingest.integrations WHERE id = $1", integration_id
        )

    async def integration(self, access: Access, integration_id: uuid.UUID) -> dict[str, Any]:
        row = await self.row(integration_id)
        rules.require_use(access, integration_id, _sharing(row))
        return _integration_json(row, access)

    async def share(
        self, access: Access, cause: Cause, integration_id: uuid.UUID, body: object
    ) -> tuple[dict[str, Any], int]:
        """Who may use the integration besides the org admins (the list replaces the one
        before; every user named must exist); new credentials, checked against the bucket
        before they are kept; a new events token (answered once)."""
        row = await self.row(integration_id)
        rules.require_admin(access, integration_id, _sharing(row))
        change = rules.parse_change(body)
        changes: list[Change] = []
        version = row["version"]
        if change.credentials is not None:
            bucket = Bucket(
                rules.parse_endpoint(row["endpoint"]),
                row["region"],
                row["bucket"],
                change.credentials,
            )
            reader = self._reader(bucket)
            try:
                await reader.check()
            except CloudProblem as refused:
                raise Refused(
                    422,
                    refused.code,
                    f"the credentials were not changed: {refused.message}",
                    {"bucket": bucket.name, **refused.details},
                ) from None
            finally:
                await reader.close()
            sealed = self.sealer.seal(
                orjson.dumps(rules.sealed_credentials(change.credentials)), str(integration_id)
            )
            changes += rules.rotate(integration_id, version, sealed)
            version += 1
        token = None
        if change.rotate_events_token:
            token, digest = new_token()
            changes += rules.events_token(integration_id, version, digest)
            version += 1
        if change.shared_with is not None:
            await self._users_exist(change.shared_with)
            changes += rules.share(integration_id, version, change.shared_with)
        position = await self._record(changes, cause) if changes else 0
        if change.credentials is not None:
            await self._forget(integration_id)
        found = _integration_json(await self.row(integration_id), access)
        return ({**found, "events_token": token} if token else found), position

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
                    headers={
                        identity.HEADER: self.parts.identity.for_service("ingest", audience="acl")
                    },
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
        """Refused while a cloud-synced folder follows it or a file imported through it is
        left (in the trash too: it may be restored); the answer names up to 100 of each."""
        row = await self.row(integration_id)
        rules.require_admin(access, integration_id, _sharing(row))
        folders = [
            str(r["folder_id"])
            for r in await self.pool.fetch(
                """SELECT folder_id FROM ingest.synced_folders WHERE integration_id = $1
                   ORDER BY created_at LIMIT 100""",
                integration_id,
            )
        ]
        files = [
            str(r["file_id"])
            for r in await self.pool.fetch(
                """SELECT file_id FROM ingest.cloud_files WHERE integration_id = $1
                   ORDER BY file_id LIMIT 100""",
                integration_id,
            )
        ]
        if folders or files:
            users = []
            if folders:
                users.append(f"followed by cloud-synced folders ({_some(folders)})")
            if files:
                users.append(f"the content of files imported through it ({_some(files)})")
            raise Refused(
                409,
                "integration_in_use",
                f"integration {integration_id} is {' and '.join(users)}: delete them (and"
                " empty them from the trash) first",
                {"folder_ids": folders, "file_ids": files},
            )
        position = await self._record(rules.remove(integration_id, row["version"]), cause)
        await self._forget(integration_id)
        return position

    async def _forget(self, integration_id: uuid.UUID) -> None:
        found = self._clients.pop(integration_id, None)
        if found is not None:
            await found[1].close()

    async def bucket(self, integration_id: uuid.UUID) -> tuple[Bucket, BucketReader] | None:
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

    async def read_range(
        self, integration_id: uuid.UUID, key: str, first: int, last: int, if_match: str | None
    ) -> bytes:
        """Bytes of an object of the integration's bucket, for a thumbnail worker (the
        route checked its URL's signature). A problem that reading again will not mend
        (the integration or the object gone, the right to read it lost, a cap) is a 404,
        so the file is recorded as without a thumbnail; one that may pass (the bucket not
        answering) a 503, so it is drawn again later; an object whose ETag is no longer
        `if_match` a 412 (`objects.py`)."""
        found = await self.bucket(integration_id)
        if found is None:
            raise Refused(
                404,
                "integration_removed",
                f"the file's integration {integration_id} was removed",
                {"integration_id": str(integration_id)},
            )
        _, reader = found
        try:
            return (await reader.read_range(key, first, last, if_match)).data
        except CloudProblem as problem:
            passing = problem.code in PASSING_PROBLEMS
            status = 412 if problem.code == CONTENT_CHANGED else 503 if passing else 404
            raise Refused(status, problem.code, problem.message) from None

    async def presign(self, integration_id: uuid.UUID, key: str, name: str, mime_type: str) -> str:
        found = await self.bucket(integration_id)
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


class Imports(Handlers):
    """Imports by reference: a job recorded, then run (imports/runner.py)."""

    def __init__(self, parts: Parts, integrations: Integrations, blobs: BlobStore) -> None:
        super().__init__(parts)
        self.integrations = integrations
        self.runner = Runner(parts, integrations.bucket, integrations.caps.import_keys, blobs)
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def start_import(
        self, access: Access, cause: Cause, folder_id: uuid.UUID, body: object
    ) -> tuple[dict[str, Any], int]:
        """Record the job and what it was asked, then run it in the background: 202.
        The caller must be one who may use the integration (else 404), and its endpoint
        still allowed (else 422, as at registration)."""
        integration_id = requests.integration_of(body)
        row = await self.integrations.row(integration_id)
        rules.require_use(access, integration_id, _sharing(row))
        found = await self.integrations.bucket(integration_id)
        if found is None:
            raise not_found("integration", integration_id)
        request = requests.parse_request(body, found[0].name)
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
            given = {o.key: o.metadata for o in request.objects if o.metadata}
            given.update({g.entry: g.metadata for g in request.groups if g.metadata})
            if given:
                check_metadata(await current_schema(conn), given, "the object")
            await jobs.apply(conn, envelopes)
            position = await self.store.append(conn, envelopes)
        state = domain.fold((e.type, e.data) for e in envelopes)
        assert state is not None
        if not state.ended:
            self._spawn(state, Cause.of(envelopes[0]))
        return {"job_id": str(job_id)}, position

    reactions = Reactions("ingest")

    @reactions.on(InstancesSettled)
    async def when_instances_settled(
        self, conn: Conn, envelopes: Sequence[Received[InstancesSettled]]
    ) -> None:
        """The series files an import's DICOM series entries' instances joined: what a
        later import of the same entries is matched to (ingest.cloud_series). A DICOM
        upload's settlements name no entry: nothing is recorded for them."""
        written = [
            envelope
            for e in envelopes
            for envelope in envelopes_of(
                domain.series_joined(
                    [(a.entry_id, a.file_id) for a in e.event.accepted if a.entry_id]
                ),
                Cause.of(e),
            )
        ]
        if written:
            await blob_refs.apply(conn, written)
            await self.store.append(conn, written)

    def stop(self, job_id: uuid.UUID) -> None:
        """A cancelled job's run in this process stops now (a run elsewhere stops at its
        next batch: the stream moved on)."""
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()

    def _spawn(self, state: domain.JobState, cause: Cause) -> None:
        if state.job_id in self._running:
            return
        task = asyncio.create_task(self.runner.run(state, cause), name=f"import-{state.job_id}")
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


def _some(ids: list[str]) -> str:
    return ", ".join(ids[:10]) + (" …" if len(ids) > 10 else "")
