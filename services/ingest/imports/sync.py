"""Cloud-synced folders: a folder that follows a prefix of an integration's bucket.

A sync is a job (kind "sync"). It lists the prefix page by page and compares each
object with what the folder knows (ingest.synced_objects: ETag, size, last-modified):
an object not known is read once (streamed, hashed, sniffed, as imports read) and
becomes a file, in the subfolder its key path names; one known whose ETag or size
changed, or that comes back after it was gone, is read again (CloudObjectChanged: the
catalog records the new facts, and that the file is back); an unchanged one is not
read. Once the listing is complete, every known object it did not show is gone
(CloudObjectGone: the catalog makes its file a tombstone; a DICOM object's instance
leaves its series in the DICOM context). A listing that fails part way tombstones
nothing.

Any process may die: each batch is one transaction under the folder's advisory lock,
and what it decided is checked again there against what is known (by key and ETag),
so a job resumed, re-run or racing another sync of the same folder applies nothing
twice. A notification syncs only the keys it names (a listing of each key as prefix).

It runs over 500 lines because a sync's steps (list, compare, read, record, tombstone)
and what starts one (a request, the schedule, a notification, a restart) share its
state and its lock; the pure rules are in domain/sync.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from services.ingest.collector import claims
from services.ingest.collector.projections import blob_refs, claim_blobs
from services.ingest.imports.buckets.port import BucketReader, CloudProblem, Listed, Read
from services.ingest.imports.domain import integrations as integration_rules
from services.ingest.imports.domain import jobs as imports
from services.ingest.imports.domain.requests import Rejection
from services.ingest.imports.domain.sync import (
    SyncConfig,
    notified_keys,
    parse_cloud_sync,
    relative,
    subfolder_id,
    token_sha256,
)
from services.ingest.imports.projections import synced
from services.ingest.jobs.projections import jobs
from services.ingest.media import kinds
from shared.contracts import ingest as ev
from shared.contracts import limits, rules
from shared.contracts.catalog import FolderDeleted, FolderPurged, FolderRestored, Source
from shared.contracts.envelope import Cause, Change, Event, appended, envelopes_of, now
from shared.kit.access import Access
from shared.kit.blobs import BlobStore, BlobWriter
from shared.kit.errors import Refused
from shared.kit.eventstore import ConcurrencyConflict
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received
from shared.kit.service import Handlers, Parts

_T = TypeVar("_T")
# The scheduled syncs' session lock: one replica runs a round at a time.
SCHEDULE_LOCK = zlib.crc32(b"files.ingest.sync-schedule")
LISTING_LOCK = zlib.crc32(b"files.ingest.synced-folders-listed")
# Objects compared (and read, when they changed) per transaction of events.
BATCH = 200
# Objects read at the same time.
READERS = 16
# Keys notified while a folder's sync runs, kept for the sync right after it: past this
# many, that sync lists the whole prefix instead.
MAX_QUEUED = 10_000
# The actor of syncs a bucket notification starts (of the integration's id).
NOTIFIED = "system:integration-events:"
# Why a scheduled or notified sync does not run (its one failed job says so).
NOT_USABLE = "integration_not_usable"


def _system(actor: str) -> Cause:
    return Cause(actor=actor, correlation_id=str(uuid.uuid4()))


@dataclass
class _Decision:
    listed: Listed
    # "new", "changed" (or back after it was gone)
    what: str
    file_id: uuid.UUID
    read: Read | Exception | None = None
    # A DICOM instance, copied into the blob store for the DICOM context (or why not).
    copied: BlobWriter | Exception | None = None
    # Known as a DICOM instance (a changed one that is no longer DICOM, or one that now
    # is, leaves as gone and arrives as new).
    was_dicom: bool = False


# A synced folder and how many objects its listings hold, read at every view of its page:
# counted in the partial index of live objects (`synced_objects_live`: one key, stored
# deduplicated), an index-only scan of a few ms per 100,000 objects, not the table.
SYNC_STATE = """
    SELECT f.*,
           (SELECT count(*) FROM ingest.synced_objects o
             WHERE o.root_folder_id = f.folder_id AND NOT o.gone) AS objects,
           (SELECT name FROM ingest.integrations i WHERE i.id = f.integration_id)
             AS integration_name
    FROM ingest.synced_folders f WHERE f.folder_id = $1
"""


# A synced folder whose configurer may no longer use its integration (domain
# `configurer_may_use`, as SQL), and whose latest sync already says so: not started
# again, nor told again, until that changes.
CONFIGURER_MAY_USE = "(i.id IS NULL OR f.by_org_admin IS TRUE OR f.created_by = ANY(i.shared_with))"
TOLD_NOT_USABLE = f"""
    EXISTS (SELECT 1 FROM (SELECT j.id, j.status FROM ingest.jobs j
                           WHERE j.folder_id = f.folder_id AND j.kind = 'sync'
                           ORDER BY j.created_at DESC LIMIT 1) last
            JOIN ingest.job_errors x ON x.job_id = last.id
            WHERE last.status = 'failed' AND x.error->>'code' = '{NOT_USABLE}')
"""

# Its latest sync: the first entry of the folder's sync jobs in `jobs_folder_kind`, not a
# scan of every job ever.
LAST_SYNC = """
    SELECT id, status, created_at FROM ingest.jobs
    WHERE folder_id = $1 AND kind = 'sync' ORDER BY created_at DESC LIMIT 1
"""


class Syncs(Handlers):
    """Synced folders configured, their syncs started, run, scheduled and resumed."""

    reactions = Reactions("ingest")

    @reactions.on(FolderDeleted)
    @reactions.on(FolderRestored)
    @reactions.on(FolderPurged)
    async def when_folder_changed(
        self,
        conn: asyncpg.Connection,
        changed: Sequence[Received[FolderDeleted | FolderRestored | FolderPurged]],
    ) -> None:
        """A synced folder in the trash pauses (it may come back, and still holds its
        integration); restored, it resumes; purged (or deleted before the trash was), it
        follows nothing any more and frees its integration."""
        rows = await conn.fetch(
            """SELECT folder_id, paused FROM ingest.synced_folders
               WHERE folder_id = ANY($1::uuid[]) ORDER BY folder_id FOR UPDATE""",
            [e.event.folder_id for e in changed],
        )
        if not rows:
            return
        streams = {ev.sync_stream(r["folder_id"]): r["folder_id"] for r in rows}
        versions = {
            streams[v["stream_id"]]: v["version"]
            for v in await conn.fetch(
                """SELECT stream_id, max(stream_version) AS version FROM ingest.events
                   WHERE stream_id = ANY($1::text[]) GROUP BY stream_id""",
                list(streams),
            )
        }
        # Per folder: its stream's version, paused, ended (as the batch leaves it).
        state = {r["folder_id"]: [versions[r["folder_id"]], r["paused"], False] for r in rows}
        envelopes = []
        for e in changed:
            found = state.get(e.event.folder_id)
            if found is None or found[2]:
                continue  # not synced, or ended already
            event: ev.FolderSyncPaused | ev.FolderSyncResumed | ev.FolderSyncEnded
            if isinstance(e.event, FolderDeleted) and e.event.trashed:
                if found[1]:
                    continue
                event, found[1] = ev.FolderSyncPaused(folder_id=e.event.folder_id), True
            elif isinstance(e.event, FolderRestored):
                if not found[1]:
                    continue
                event, found[1] = ev.FolderSyncResumed(folder_id=e.event.folder_id), False
            else:
                event, found[2] = ev.FolderSyncEnded(folder_id=e.event.folder_id), True
            found[0] += 1
            change = Change(ev.sync_stream(e.event.folder_id), found[0], event)
            envelopes += envelopes_of([change], Cause.of(e))
        if envelopes:
            await synced.apply(conn, envelopes)
            await self.store.append(conn, envelopes)

    def __init__(self, parts: Parts, integrations: Any, blobs: BlobStore) -> None:
        super().__init__(parts)
        self.integrations = integrations
        # DICOM objects are copied in and assembled into series (as imports' are).
        self.blobs = blobs
        self.spool = parts.settings.data_dir / "spool"
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        # Each folder's latest sync spawned here, and the one job pending behind it.
        self._runs: dict[uuid.UUID, _Run] = {}
        self._pending: dict[uuid.UUID, _Pending] = {}

    # -- configuring ---------------------------------------------------------------

    async def check(self, access: Access, body: object) -> tuple[uuid.UUID, str, int | None]:
        """May the caller make a folder follow this integration's prefix? (404 for an
        integration they may not use, as one that does not exist)."""
        integration_id, prefix, interval = parse_cloud_sync(body)
        row = await self.integrations.row(integration_id)
        integration_rules.require_use(
            access, integration_id, None if row is None else list(row["shared_with"])
        )
        return integration_id, prefix, interval

    async def configure(
        self, access: Access, cause: Cause, folder_id: uuid.UUID, body: object
    ) -> tuple[dict[str, Any], int]:
        """The folder (just made by the catalog for this caller) follows the prefix; its
        first sync starts."""
        integration_id, prefix, interval = await self.check(access, body)
        stream = ev.sync_stream(folder_id)
        changes = [
            Change(
                stream,
                1,
                ev.FolderSyncConfigured(
                    folder_id=folder_id,
                    integration_id=integration_id,
                    prefix=prefix,
                    sync_interval_s=interval,
                    by_org_admin=access.org_admin,
                ),
            )
        ]
        envelopes = envelopes_of(changes, cause)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await synced.apply(conn, envelopes)
                await self.store.append(conn, envelopes)
        except ConcurrencyConflict:
            raise Refused(
                409, "already_synced", f"folder {folder_id} already follows a prefix"
            ) from None
        job, position = await self.start(cause, folder_id)
        return {
            "cloud_sync": self._config_json(
                SyncConfig(folder_id, integration_id, prefix, interval)
            ),
            "job_id": job["job_id"],
        }, position

    def _config_json(self, config: SyncConfig) -> dict[str, Any]:
        return {
            "integration_id": str(config.integration_id),
            "prefix": config.prefix,
            "sync_interval_s": config.sync_interval_s or self.settings.sync_interval_s,
        }

    @property
    def settings(self) -> Any:
        return self.parts.settings

    async def config(self, folder_id: uuid.UUID) -> SyncConfig | None:
        row = await self.pool.fetchrow(
            "SELECT * FROM ingest.synced_folders WHERE folder_id = $1", folder_id
        )
        if row is None:
            return None
        return SyncConfig(
            row["folder_id"], row["integration_id"], row["prefix"], row["sync_interval_s"]
        )

    async def synced_root(self, folder_id: uuid.UUID) -> uuid.UUID | None:
        """The synced folder this one is, or is a subfolder of; None if neither."""
        found: uuid.UUID | None = await self.pool.fetchval(
            """SELECT folder_id FROM ingest.synced_folders WHERE folder_id = $1
               UNION ALL
               SELECT root_folder_id FROM ingest.synced_subfolders WHERE folder_id = $1
               LIMIT 1""",
            folder_id,
        )
        return found

    async def state(
        self, folder_id: uuid.UUID, who: Access, path: Sequence[uuid.UUID]
    ) -> dict[str, Any]:
        """What a folder follows, for a page that shows it: the bucket prefix, the
        objects its last complete listings hold, and its latest sync (its job, which
        `GET /v1/jobs/{id}` tells in full). A key path's subfolder says only that it is
        in a synced folder, named to who has a role on that (as `refuse_uploads`)."""
        root = await self.synced_root(folder_id)
        if root is None:
            return {"cloud_synced": False}
        if root != folder_id:
            above = path[: path.index(root) + 1] if root in path else [root]
            seen = who.role_on(above) is not None
            return {"cloud_synced": True} | ({"synced_folder_id": str(root)} if seen else {})
        row = await self.pool.fetchrow(SYNC_STATE, folder_id)
        if row is None:  # its sync ended (purged) since
            return {"cloud_synced": False}
        last = await self.pool.fetchrow(LAST_SYNC, folder_id)
        config = SyncConfig(
            row["folder_id"], row["integration_id"], row["prefix"], row["sync_interval_s"]
        )
        return {
            "cloud_synced": True,
            "synced_folder_id": str(folder_id),
            # The integration's name, for the page to say what it follows: to anyone with a
            # role on the folder (checked by the route), as its prefix and id are, not only
            # to those who may use the integration.
            "cloud_sync": self._config_json(config) | {"integration_name": row["integration_name"]},
            "paused": row["paused"],
            "objects": row["objects"],
            "last_sync": None
            if last is None
            else {
                "job_id": str(last["id"]),
                "status": last["status"],
                "started_at": last["created_at"].isoformat(),
            },
        }

    async def refuse_uploads(
        self, folder_id: uuid.UUID, who: Access, path: Sequence[uuid.UUID]
    ) -> None:
        """Uploads into a cloud-synced folder (or a subfolder its keys made) are refused:
        its files are its bucket's objects, and a sync would not know what to do with
        one the bucket does not hold. The synced folder is named only to who has a role
        on it (`path`: the folder's, signed by the gateway): a key path's subfolder moved
        into a folder others edit would tell them of it."""
        root = await self.synced_root(folder_id)
        if root is None:
            return
        # Moved out of it, the folder's path no longer shows the synced folder's own:
        # then a grant on it alone (or an org admin's) says the caller has a role there.
        above = path[: path.index(root) + 1] if root in path else [root]
        seen = who.role_on(above) is not None
        raise Refused(
            409,
            "folder_cloud_synced",
            f"folder {folder_id} is cloud-synced (it mirrors a bucket prefix): put the"
            " object in the bucket instead, and sync",
            {"folder_id": str(folder_id)} | ({"synced_folder_id": str(root)} if seen else {}),
        )

    async def folder_json(self, folder_id: uuid.UUID) -> dict[str, Any]:
        config = await self.config(folder_id)
        if config is None:
            raise Refused(
                409, "not_cloud_synced", f"folder {folder_id} does not follow a bucket prefix"
            )
        return self._config_json(config)

    async def using(self, integration_id: uuid.UUID) -> list[str]:
        rows = await self.pool.fetch(
            """SELECT folder_id FROM ingest.synced_folders WHERE integration_id = $1
               ORDER BY created_at LIMIT 100""",
            integration_id,
        )
        return [str(r["folder_id"]) for r in rows]

    # -- starting ------------------------------------------------------------------

    async def requested(
        self, who: Access, cause: Cause, folder_id: uuid.UUID
    ) -> tuple[dict[str, Any], int]:
        """`POST /v1/folders/{id}/sync`: by an editor of the folder (the route checks)
        who may use its integration now (404 as for imports: an integration taken back
        from them syncs nothing more of theirs, nor of editors it was never lent to)."""
        config = await self._configured(folder_id)
        row = await self.integrations.row(config.integration_id)
        integration_rules.require_use(
            who, config.integration_id, None if row is None else list(row["shared_with"])
        )
        return await self.start(cause, folder_id, config=config)

    async def _configured(self, folder_id: uuid.UUID) -> SyncConfig:
        config = await self.config(folder_id)
        if config is None:
            raise Refused(
                409,
                "not_cloud_synced",
                f"folder {folder_id} does not follow a bucket prefix: nothing to sync",
                {"folder_id": str(folder_id)},
            )
        return config

    async def start(
        self,
        cause: Cause,
        folder_id: uuid.UUID,
        keys: Sequence[str] | None = None,
        *,
        config: SyncConfig | None = None,
    ) -> tuple[dict[str, Any], int]:
        """A sync job of the folder recorded and run in the background: 202. Syncs of a
        folder are merged (`_merged`): asked before the folder's running sync lists the
        bucket, a sync is that one; asked after, it is the one job pending behind it, which
        lists once more when it ends (the bucket is not listed once more per request)."""
        config = config or await self._configured(folder_id)
        job_id = uuid.uuid4()
        changes = [
            Change(
                ev.job_stream(job_id),
                1,
                ev.UploadJobStarted(job_id=job_id, folder_id=folder_id, total=0, kind="sync"),
            )
        ]
        envelopes = envelopes_of(changes, cause)

        async def record() -> tuple[uuid.UUID, int]:
            async with self.pool.acquire() as conn, conn.transaction():
                # Requests of one folder take turns here: the second sees the first's job.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"sync:{folder_id}"
                )
                merged = self._merged(folder_id, cause, keys)
                if merged is not None:
                    position = await conn.fetchval(
                        """SELECT position FROM ingest.events
                           WHERE stream_id = $1 AND stream_version = 1""",
                        ev.job_stream(merged),
                    )
                    return merged, position or 0
                await jobs.apply(conn, envelopes)
                return job_id, await self.store.append(conn, envelopes)

        found, position = await _again(record)
        if found != job_id:
            return {"job_id": str(found)}, position
        # No await from here to the spawn: a sync ending (`_run`) sees this one pending
        # behind it, or it has ended and this one runs now. Behind a sync that has begun
        # listing, the one pending job lists once more after it (many asked meanwhile
        # are that one); a second one recorded in the same instant runs at once.
        started = Cause.of(envelopes[0])
        if self._behind(folder_id) is not None and folder_id not in self._pending:
            self._pending[folder_id] = _Pending(
                job_id, config, started, None if keys is None else set(keys), _asked(cause)
            )
        else:
            self._spawn(job_id, config, 1, started, keys)
        return {"job_id": str(job_id)}, position

    def _behind(self, folder_id: uuid.UUID) -> _Run | None:
        """The folder's sync running in this replica, if any (a `running` row no task
        here runs, a dead replica's or one whose end was not recorded, is not one)."""
        run = self._runs.get(folder_id)
        if run is None or run.job_id not in self._running:
            return None
        return run

    def _merged(
        self, folder_id: uuid.UUID, cause: Cause, keys: Sequence[str] | None
    ) -> uuid.UUID | None:
        """The job a sync asked now is (None: a job of its own). Merged only into a job
        that will list what is in the bucket now: the folder's running sync here, if it
        has not begun listing and lists what was asked (the whole prefix, or, for notified
        keys, the prefix); else the one sync pending behind it here, which lists after it
        ends (notified keys added to it; a sync of the whole prefix makes it one). Once the
        job a caller is given is done, what they put before asking is synced. No await in
        here: a sync ending (`_run`) sees what was merged, or none of it."""
        run = self._behind(folder_id)
        if run is None:
            return None
        if run.whole and not run.listing and not (run.unchecked and _asked(cause)):
            return run.job_id
        pending = self._pending.get(folder_id)
        if pending is None:
            return None
        if keys is None or pending.keys is None:
            pending.keys = None
        else:
            pending.keys.update(keys)
            if len(pending.keys) > MAX_QUEUED:
                pending.keys = None  # too many: it lists the prefix
        pending.asked = pending.asked or _asked(cause)
        return pending.job_id

    def _spawn(
        self,
        job_id: uuid.UUID,
        config: SyncConfig,
        version: int,
        cause: Cause,
        keys: Sequence[str] | None,
        *,
        follow_up: bool = False,
    ) -> None:
        task = asyncio.create_task(
            self._run(job_id, config, version, cause, keys, follow_up), name=f"sync-{job_id}"
        )
        self._running[job_id] = task
        self._runs[config.folder_id] = _Run(job_id, whole=keys is None, unchecked=follow_up)
        task.add_done_callback(lambda _: self._running.pop(job_id, None))
        self.parts.tasks.append(task)

    async def resume(self) -> None:
        """At start: a sync a restart interrupted runs again from its listing (what it
        recorded is known, and not applied twice)."""
        rows = await self.pool.fetch(
            """SELECT j.id, j.folder_id FROM ingest.jobs j
               WHERE j.kind = 'sync' AND j.status = 'running'"""
        )
        for row in rows:
            config = await self.config(row["folder_id"])
            envelopes = await self.store.read_stream(self.pool, ev.job_stream(row["id"]))
            if config is None or not envelopes:
                continue
            log.info("sync.resumed", job_id=str(row["id"]))
            self._spawn(row["id"], config, len(envelopes), Cause.of(envelopes[0]), None)

    async def list_synced_once(self) -> None:
        """At start, once in the store's life: every synced folder and its key paths'
        subfolders as `CloudSyncedFoldersListed` pages, for a context that mirrors them
        and came after their configurations (the catalog's refusal of hand-made folders,
        2026-12-06). Replicas starting together take turns on the lock; the second finds
        the stream written."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LISTING_LOCK)
            if await self.store.read_stream(conn, ev.SYNCED_FOLDERS_LISTED_STREAM):
                return
            rows = await conn.fetch(
                """SELECT folder_id, folder_id AS root_folder_id FROM ingest.synced_folders
                   UNION ALL
                   SELECT folder_id, root_folder_id FROM ingest.synced_subfolders
                   ORDER BY root_folder_id, folder_id"""
            )
            folders = [ev.SyncedFolderRef(**dict(r)) for r in rows]
            pages = [
                ev.CloudSyncedFoldersListed(folders=folders[i : i + limits.PAGE_ITEMS])
                for i in range(0, len(folders), limits.PAGE_ITEMS)
            ] or [ev.CloudSyncedFoldersListed(folders=[])]
            cause = Cause(actor="system:ingest", correlation_id=str(uuid.uuid4()))
            written = envelopes_of(appended(ev.SYNCED_FOLDERS_LISTED_STREAM, pages), cause)
            await self.store.append(conn, written)
        log.info("sync.folders_listed", folders=len(folders))

    async def schedule_forever(self) -> None:
        """Each synced folder syncs every `sync_interval_s` (its own, or the default). Of
        several ingest replicas, the one holding the schedule's lock runs a round; the
        others skip it (a sync started by one is running when the next looks)."""
        default = self.settings.sync_interval_s
        while True:
            await asyncio.sleep(min(30.0, default / 2))  # a schedule, not a wait
            await self.schedule_round()

    async def schedule_round(self) -> None:
        """The syncs due now started. Only while the one who configured the folder may
        still use its integration: a folder of one it was taken from is not synced by
        the schedule (it would go on reading the bucket for them, and for the editors
        they invited); its one failed sync says why, and it is not looked at again
        until that changes (sharing again, or a sync asked by one who may use it)."""
        default = self.settings.sync_interval_s
        # The lock is the transaction's: a pooled connection keeps no session state.
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", SCHEDULE_LOCK):
                return
            due = await conn.fetch(
                f"""SELECT f.folder_id, {CONFIGURER_MAY_USE} AS usable
                    FROM ingest.synced_folders f
                    LEFT JOIN ingest.integrations i ON i.id = f.integration_id
                    WHERE NOT f.paused AND NOT EXISTS (
                        SELECT 1 FROM ingest.jobs j WHERE j.folder_id = f.folder_id
                          AND j.kind = 'sync'
                          AND (j.status = 'running' OR j.created_at > now()
                               - make_interval(secs => coalesce(f.sync_interval_s, $1))))
                      AND ({CONFIGURER_MAY_USE} OR NOT {TOLD_NOT_USABLE})
                    LIMIT 100""",
                default,
            )
            for row in due:
                cause = _system("system:sync-schedule")
                with contextlib.suppress(Refused):
                    if row["usable"]:
                        await self.start(cause, row["folder_id"])
                    else:
                        await self._not_usable(cause, row["folder_id"])

    async def _not_usable(self, cause: Cause, folder_id: uuid.UUID) -> None:
        """A sync job of the folder that fails at once: the one who configured it may no
        longer use its integration (the folder's page shows its latest sync's reason)."""
        config = await self._configured(folder_id)
        job_id = uuid.uuid4()
        message = _not_usable_message(config.integration_id)
        events: list[Event] = [
            ev.UploadJobStarted(job_id=job_id, folder_id=folder_id, total=0, kind="sync"),
            ev.ImportJobFailed(job_id=job_id, code=NOT_USABLE, message=message),
        ]
        envelopes = envelopes_of(appended(ev.job_stream(job_id), events), cause)

        async def record() -> bool:
            async with self.pool.acquire() as conn, conn.transaction():
                # Notifications at once take turns here: told once, by the first.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"sync:{folder_id}"
                )
                told = await conn.fetchval(
                    f"SELECT {TOLD_NOT_USABLE} FROM ingest.synced_folders f WHERE f.folder_id = $1",
                    folder_id,
                )
                if told:
                    return False
                await jobs.apply(conn, envelopes)
                await self.store.append(conn, envelopes)
                return True

        if not await _again(record):
            return
        log.info("sync.not_usable", folder_id=str(folder_id), job_id=str(job_id))

    # -- notifications -------------------------------------------------------------

    async def notified(
        self, integration_id: uuid.UUID, token: str | None, body: object
    ) -> dict[str, Any]:
        """A bucket notification: authenticated by the integration's token (401 without
        one, 403 with a wrong one, and the same for an integration that does not exist);
        each key under a synced folder's prefix is synced at once."""
        if not token:
            raise Refused(401, "unauthenticated", "send the integration's events token")
        row = await self.integrations.row(integration_id)
        expected = None if row is None else row["events_token_sha256"]
        if expected is None or not secrets.compare_digest(expected, token_sha256(token)):
            raise Refused(403, "forbidden", "the events token is not this integration's")
        records = notified_keys(body)
        keys = [key for bucket, key in records if bucket == row["bucket"]]
        # Only the folders whose configurer may still use the integration (as the
        # schedule's); the others' latest sync says why, once.
        folders = await self.pool.fetch(
            f"""SELECT f.folder_id, f.prefix, {CONFIGURER_MAY_USE} AS usable,
                       {TOLD_NOT_USABLE} AS told
                FROM ingest.synced_folders f
                LEFT JOIN ingest.integrations i ON i.id = f.integration_id
                WHERE f.integration_id = $1 AND NOT f.paused""",
            integration_id,
        )
        started = []
        for folder in folders:
            mine = [k for k in keys if k.startswith(folder["prefix"])]
            if not mine:
                continue
            cause = _system(f"{NOTIFIED}{integration_id}")
            if not folder["usable"]:
                if not folder["told"]:
                    await self._not_usable(cause, folder["folder_id"])
                continue
            job, _ = await self.start(cause, folder["folder_id"], mine)
            started.append(job["job_id"])
        return {"records": len(records), "job_ids": started}

    # -- running -------------------------------------------------------------------

    async def _run(
        self,
        job_id: uuid.UUID,
        config: SyncConfig,
        version: int,
        cause: Cause,
        keys: Sequence[str] | None,
        follow_up: bool = False,
    ) -> None:
        state = _Job(job_id, version)
        try:
            # A sync pending behind another, asked by no person (notified keys, the
            # schedule): the integration may have been taken back from the folder's
            # configurer meanwhile.
            if follow_up and not await self._configurer_may_use(config.folder_id):
                await self._fail(
                    state, cause, NOT_USABLE, _not_usable_message(config.integration_id)
                )
            else:
                this = self._runs.get(config.folder_id)
                if this is not None and this.job_id == job_id:
                    this.unchecked = False
                await self._sync(state, config, cause, keys)
        except ConcurrencyConflict:
            log.warning("sync.stream_moved_on", job_id=str(job_id))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("sync.crashed", job_id=str(job_id), exc_info=True)
            with contextlib.suppress(Exception):
                await self._fail(state, cause, "internal_error", "the sync stopped on an error")
        # No await from here to the spawn: what `start` merged into the pending job is
        # in it, and what comes after finds that job running (and not yet listing).
        self._running.pop(job_id, None)
        run = self._runs.get(config.folder_id)
        if run is not None and run.job_id == job_id:
            del self._runs[config.folder_id]
        pending = self._pending.pop(config.folder_id, None)
        if pending is not None:
            self._spawn(
                pending.job_id,
                pending.config,
                1,
                pending.cause,
                None if pending.keys is None else sorted(pending.keys),
                follow_up=not pending.asked,
            )

    async def _configurer_may_use(self, folder_id: uuid.UUID) -> bool:
        row = await self.pool.fetchrow(
            """SELECT f.created_by, f.by_org_admin, i.shared_with
               FROM ingest.synced_folders f
               LEFT JOIN ingest.integrations i ON i.id = f.integration_id
               WHERE f.folder_id = $1""",
            folder_id,
        )
        if row is None:
            return True  # no longer synced: the sync says so
        shared = row["shared_with"]
        return integration_rules.configurer_may_use(
            row["created_by"], row["by_org_admin"], None if shared is None else list(shared)
        )

    async def _append(self, state: _Job, cause: Cause, events: Sequence[Event]) -> None:
        envelopes = envelopes_of(
            appended(ev.job_stream(state.job_id), events, after=state.version), cause
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await jobs.apply(conn, envelopes)
            await synced.apply(conn, envelopes)
            await self.store.append(conn, envelopes)
        state.version += len(envelopes)

    async def _fail(self, state: _Job, cause: Cause, code: str, message: str) -> None:
        await self._append(
            state, cause, [ev.ImportJobFailed(job_id=state.job_id, code=code, message=message)]
        )

    async def _sync(
        self, state: _Job, config: SyncConfig, cause: Cause, keys: Sequence[str] | None
    ) -> None:
        found = await self.integrations.bucket(config.integration_id)
        if found is None:
            await self._fail(
                state,
                cause,
                "integration_removed",
                f"integration {config.integration_id} was removed",
            )
            return
        reader: BucketReader = found[1]
        self.spool.mkdir(parents=True, exist_ok=True)
        seen: set[str] = set()
        this = self._runs.get(config.folder_id)
        if this is not None and this.job_id == state.job_id:
            this.listing = True  # what is put from now on may be missed: not merged into
        try:
            async for page in _listed(reader, config.prefix, keys):
                for i in range(0, len(page), BATCH):
                    run = page[i : i + BATCH]
                    seen.update(o.key for o in run)
                    await self._batch(state, config, cause, reader, run)
        except CloudProblem as problem:
            await self._fail(
                state,
                cause,
                problem.code,
                f"the prefix {config.prefix!r} could not be listed: {problem.message};"
                " nothing was marked gone",
            )
            return
        await self._gone(state, config, cause, seen, keys)
        await self._append(state, cause, [ev.UploadJobFinished(job_id=state.job_id, status="done")])
        log.info("sync.finished", job_id=str(state.job_id), listed=len(seen))

    async def _known(self, conn: Any, root: uuid.UUID, keys: list[str]) -> dict[str, Any]:
        rows = await conn.fetch(
            """SELECT key, file_id, etag, size, gone, dicom FROM ingest.synced_objects
               WHERE root_folder_id = $1 AND key = ANY($2::text[])""",
            root,
            keys,
        )
        return {r["key"]: r for r in rows}

    def _decide(self, listed: Sequence[Listed], known: dict[str, Any]) -> list[_Decision]:
        out = []
        for o in listed:
            row = known.get(o.key)
            if row is None:
                out.append(_Decision(o, "new", uuid.uuid4()))
            elif row["gone"] or row["etag"] != o.etag or row["size"] != o.size:
                out.append(_Decision(o, "changed", row["file_id"], was_dicom=row["dicom"]))
        return out

    async def _batch(
        self,
        state: _Job,
        config: SyncConfig,
        cause: Cause,
        reader: BucketReader,
        listed: list[Listed],
        tries: int = 3,
    ) -> None:
        root = config.folder_id
        decisions = self._decide(
            listed, await self._known(self.pool, root, [o.key for o in listed])
        )
        if not decisions:
            return
        # Read what is new or changed, READERS at a time.
        gate = asyncio.Semaphore(READERS)

        async def read(d: _Decision) -> None:
            async with gate:
                try:
                    d.read = await reader.read(d.listed.key, self.spool)
                except Exception as error:  # reported per object below
                    d.read = error
                if isinstance(d.read, kinds.DicomContent):
                    try:
                        d.copied = await reader.copy(d.listed.key, self.blobs.writer)
                    except Exception as error:
                        d.copied = error

        await asyncio.gather(*(read(d) for d in decisions))
        copies = [d.copied for d in decisions if isinstance(d.copied, BlobWriter)]
        keys = sorted({w.key for w in copies})
        holder = uuid.uuid4()
        if copies:
            # As an upload's blobs: claimed, put with no database connection held (a
            # hung store would hold one a batch), then recorded (collector/claims.py);
            # claims dated anew while the put goes on (large objects: past the hour
            # the collector keeps a claim).
            async with self.pool.acquire() as conn, conn.transaction():
                await claims.claim(conn, keys, holder, now())
            await claims.kept_while(self.pool, keys, holder, self.blobs.commit(copies))

        async def write() -> int:
            async with self.pool.acquire() as conn, conn.transaction():
                # A write rolled back (a deadlock) and done again finds the claims as
                # they were: the collector left the bytes alone meanwhile.
                if copies:
                    await claim_blobs(conn, keys)
                    if not await claims.settle(conn, keys, holder):
                        # Dropped by the collector (a put longer than it keeps claims),
                        # the bytes perhaps deleted; the writers' spools went with the
                        # put: the batch is read again.
                        raise _ContentGone
                # One sync of a folder decides at a time: what another recorded
                # meanwhile is seen here, and not recorded again.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"sync:{root}")
                again = self._decide(
                    [d.listed for d in decisions],
                    await self._known(conn, root, [d.listed.key for d in decisions]),
                )
                still = {(d.listed.key, d.listed.etag) for d in again}
                made = {
                    r["folder_id"]
                    for r in await conn.fetch(
                        "SELECT folder_id FROM ingest.synced_subfolders WHERE root_folder_id = $1",
                        root,
                    )
                }
                events = self._events(
                    state,
                    config,
                    [d for d in decisions if (d.listed.key, d.listed.etag) in still],
                    made,
                )
                if not events:
                    return 0
                envelopes = envelopes_of(
                    appended(ev.job_stream(state.job_id), events, after=state.version), cause
                )
                await jobs.apply(conn, envelopes)
                await synced.apply(conn, envelopes)
                # The files it made hold the integration (the collector's read model).
                await blob_refs.apply(conn, envelopes)
                await self.store.append(conn, envelopes)
                return len(envelopes)

        try:
            state.version += await _again(write)
        except _ContentGone:
            if not tries:
                raise
            log.warning("sync.content_reclaimed_read_again", job_id=str(state.job_id))
            await self._batch(state, config, cause, reader, listed, tries - 1)
        finally:
            for w in copies:
                w.abort()

    def _events(
        self, state: _Job, config: SyncConfig, decisions: Sequence[_Decision], made: set[uuid.UUID]
    ) -> list[Event]:
        root, job_id = config.folder_id, state.job_id
        events: list[Event] = []
        new = [d for d in decisions if d.what == "new"]
        if new:
            events.append(ev.ImportObjectsListed(job_id=job_id, count=len(new)))
        for d in decisions:
            key = d.listed.key
            parts = relative(config.prefix, key)
            read = d.copied if isinstance(d.read, kinds.DicomContent) else d.read
            problem = self._problem(key, parts, read)
            if problem is not None:
                if d.what == "new":
                    events.append(
                        ev.FileContentRejected(
                            job_id=job_id,
                            name=problem.name,
                            code=problem.code,
                            message=problem.message,
                            details=problem.details,
                        )
                    )
                continue
            assert isinstance(read, Read | BlobWriter)
            file_id = d.file_id
            if d.what == "changed" and d.was_dicom != isinstance(read, BlobWriter):
                # A DICOM instance whose object is no longer DICOM, or a file whose object
                # now is: the one it was is gone (out of its series, or a tombstone), and
                # the object arrives as new.
                events.append(
                    ev.CloudObjectGone(
                        job_id=job_id,
                        root_folder_id=root,
                        key=key,
                        file_id=file_id,
                        dicom=d.was_dicom,
                    )
                )
                file_id = uuid.uuid4()
            folder_id, path = root, ""
            for part in parts[:-1]:
                path = f"{path}/{part}" if path else part
                child = subfolder_id(root, path)
                if child not in made:
                    events.append(
                        ev.SyncFolderNeeded(
                            job_id=job_id,
                            root_folder_id=root,
                            folder_id=child,
                            parent_id=folder_id,
                            name=part,
                        )
                    )
                    made.add(child)
                folder_id = child
            if isinstance(read, BlobWriter):
                # A DICOM instance (new, or its bytes changed: sent again): the DICOM
                # context assembles it into a series of the folder its key path names.
                events.append(
                    ev.DicomInstanceStored(
                        job_id=job_id,
                        folder_id=folder_id,
                        name=parts[-1],
                        blob_key=read.key,
                        sha256=read.sha256,
                        size=read.size,
                        object_id=file_id,
                    )
                )
            elif file_id != d.file_id or d.what == "new":
                events.append(
                    ev.FileContentStored(
                        job_id=job_id,
                        file_id=file_id,
                        folder_id=folder_id,
                        name=parts[-1],
                        kind=read.facts.kind,
                        size=read.size,
                        sha256=read.sha256,
                        mime_type=read.facts.mime_type,
                        media=read.facts.media,
                        blob_key=imports.reference_key(file_id),
                        source=Source(type="cloud", integration_id=config.integration_id, key=key),
                        etag=read.etag,
                    )
                )
            else:
                events.append(
                    ev.CloudObjectChanged(
                        job_id=job_id,
                        file_id=d.file_id,
                        folder_id=folder_id,
                        key=key,
                        kind=read.facts.kind,
                        size=read.size,
                        sha256=read.sha256,
                        mime_type=read.facts.mime_type,
                        media=read.facts.media,
                        etag=read.etag,
                    )
                )
            events.append(
                ev.CloudObjectSynced(
                    job_id=job_id,
                    root_folder_id=root,
                    key=key,
                    file_id=file_id,
                    etag=d.listed.etag,
                    size=d.listed.size,
                    last_modified=d.listed.last_modified,
                    dicom=isinstance(read, BlobWriter),
                )
            )
        return events

    def _problem(self, key: str, parts: list[str], read: object) -> Rejection | None:
        """Why an object is not taken (a DICOM one: `read` is its copy, or why not)."""
        obj = ev.ImportObject(key=key)
        if not parts:
            return imports.rejection(obj, "invalid_name", f"{key!r} names no file below the prefix")
        for part in parts:
            problem = rules.name_problem(part, "file or folder name")
            if problem:
                return imports.rejection(obj, "invalid_name", problem)
        if isinstance(read, kinds.UnknownContent):
            return imports.rejection(
                obj,
                "unsupported_content",
                f"{key!r} is not a kind of file we accept: {read}",
                {"accepted": list(imports.ACCEPTED_KINDS)},
            )
        if isinstance(read, CloudProblem):
            return imports.rejection(obj, "object_unreadable", read.message, {"reason": read.code})
        if isinstance(read, Exception) or read is None:
            return imports.rejection(obj, "object_unreadable", f"{key!r} could not be read")
        return None

    async def _gone(
        self,
        state: _Job,
        config: SyncConfig,
        cause: Cause,
        seen: set[str],
        keys: Sequence[str] | None,
    ) -> None:
        """Known objects the complete listing did not show: tombstones, a page at a time."""
        root = config.folder_id
        after = ""
        while True:
            if keys is not None:
                rows = await self.pool.fetch(
                    """SELECT key FROM ingest.synced_objects
                       WHERE root_folder_id = $1 AND NOT gone AND key = ANY($2::text[])""",
                    root,
                    [k for k in keys if k not in seen],
                )
            else:
                rows = await self.pool.fetch(
                    """SELECT key FROM ingest.synced_objects
                       WHERE root_folder_id = $1 AND NOT gone AND key > $2
                       ORDER BY key LIMIT 5000""",
                    root,
                    after,
                )
            gone = [r for r in rows if r["key"] not in seen]
            for i in range(0, len(gone), BATCH):
                keys_of_run = [r["key"] for r in gone[i : i + BATCH]]

                async def write(run: list[str] = keys_of_run) -> int:
                    async with self.pool.acquire() as conn, conn.transaction():
                        await conn.execute(
                            "SELECT pg_advisory_xact_lock(hashtext($1))", f"sync:{root}"
                        )
                        still = await conn.fetch(
                            """SELECT key, file_id, dicom FROM ingest.synced_objects
                               WHERE root_folder_id = $1 AND NOT gone
                                 AND key = ANY($2::text[])""",
                            root,
                            run,
                        )
                        events: list[Event] = [
                            ev.CloudObjectGone(
                                job_id=state.job_id,
                                root_folder_id=root,
                                key=r["key"],
                                file_id=r["file_id"],
                                dicom=r["dicom"],
                            )
                            for r in still
                        ]
                        if not events:
                            return 0
                        envelopes = envelopes_of(
                            appended(ev.job_stream(state.job_id), events, after=state.version),
                            cause,
                        )
                        await synced.apply(conn, envelopes)
                        await self.store.append(conn, envelopes)
                        return len(envelopes)

                state.version += await _again(write)
            if keys is not None or len(rows) < 5000:
                return
            after = rows[-1]["key"]


class _ContentGone(Exception):
    """Bytes a batch stored are no longer in the blob store: the batch is read again."""


async def _again(write: Callable[[], Awaitable[_T]]) -> _T:
    """A transaction PostgreSQL aborted as a deadlock written again (it wrote nothing)."""
    for _ in range(4):
        try:
            return await write()
        except asyncpg.DeadlockDetectedError:
            log.warning("sync.deadlock_retried")
    return await write()


@dataclass
class _Job:
    job_id: uuid.UUID
    version: int


@dataclass
class _Run:
    """A folder's sync running in this replica."""

    job_id: uuid.UUID
    whole: bool  # lists the whole prefix (not notified keys alone)
    listing: bool = False  # has begun listing: an object put now may be missed
    # Asked by no person, and the configurer's right to the integration not yet checked:
    # it may fail `integration_not_usable`, which a person's request must not share.
    unchecked: bool = False


@dataclass
class _Pending:
    """The one sync recorded behind a folder's running one here, run when it ends."""

    job_id: uuid.UUID
    config: SyncConfig
    cause: Cause
    keys: set[str] | None  # notified keys alone, or (None) the whole prefix
    asked: bool  # by a person (who may use the integration), not only by the system


def _asked(cause: Cause) -> bool:
    return not cause.actor.startswith("system:")


def _not_usable_message(integration_id: uuid.UUID) -> str:
    return (
        f"not synced: integration {integration_id} is no longer shared with the"
        " one who set up this folder. Syncs run again once it is shared with them again;"
        " meanwhile someone who may use it can sync the folder"
    )


async def _listed(
    reader: BucketReader, prefix: str, keys: Sequence[str] | None
) -> AsyncIterator[list[Listed]]:
    """The prefix's objects page by page; or, for notified keys, each key's own entry
    (a listing with the key as prefix: HEAD would need a read right per key)."""
    if keys is None:
        async for page in reader.listing(prefix):
            yield page
        return
    for key in dict.fromkeys(keys):
        async for page in reader.listing(key):
            # The key itself sorts first among the keys it prefixes: on the first page,
            # or nowhere (then it is gone).
            exact = [o for o in page if o.key == key]
            if exact:
                yield exact
            break
