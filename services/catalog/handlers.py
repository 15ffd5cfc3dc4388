"""Catalog commands and reactions: read state, decide, project inline, append, commit."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid
import zlib
from collections.abc import Callable, Collection, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from services.catalog import domain, schema
from services.catalog.projections import cloud_synced, links, synced_root, tree
from shared.contracts import catalog as ev
from shared.contracts import datasets as ds
from shared.contracts import topics
from shared.contracts.dicom import SeriesAssembled, SeriesExtended, SeriesShrunk
from shared.contracts.envelope import (
    Cause,
    Change,
    Envelope,
    Event,
    appended,
    envelopes_of,
    new_envelope,
)
from shared.contracts.ingest import (
    CloudObjectChanged,
    CloudObjectGone,
    CloudSyncedFoldersListed,
    FileContentStored,
    FilesStored,
    FolderSyncConfigured,
    FolderSyncEnded,
    ImageGroupImagesStored,
    ImageGroupStored,
    ImportedMetadataReplaced,
    SyncFolderNeeded,
    UploadSessionMetadataRestored,
)
from shared.kit import bus
from shared.kit.access import RANK, Access
from shared.kit.db import Conn
from shared.kit.errors import Refused
from shared.kit.inbox import in_causal_order
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received
from shared.kit.retry import transient
from shared.kit.service import Handlers, Parts, collector_paused

FOLDER_COLUMNS = "id, parent_id, name, version, path"
FILE_COLUMNS = "id, folder_id, name, version, blob_key, sha256"
MOVE_LOCK = zlib.crc32(b"files.catalog.move")
# What enters a folder as a new file: stored upload content, or an assembled DICOM series.
Arrival = TypeVar("Arrival", FileContentStored, SeriesAssembled)


# A trashed row `{t}` below the trashed folders `{chosen}` (an array) that went to the
# trash with them: not below an item of its own between (a folder deleted before them).
# With `NOT {t}.itself` for a file (a file's path is its folder's).
WENT_WITH = """{t}.path && {chosen}
    AND NOT {t}.path && coalesce(
        (SELECT array_agg(s.id) FROM catalog.trash_folders s
         WHERE s.path && {chosen} AND s.itself AND NOT s.id = ANY({chosen})), '{{}}')"""
# Files (and folders) purged from the trash in one transaction.
PURGE_BATCH = 5_000
# Tries of a delete PostgreSQL chose as a deadlock's victim (see Catalog.delete).
DELETE_TRIES = 3
# The GIN indexes a large restore leaves its rows in the pending lists of (merged after
# the answer, `Settings.restore_defer_gin_from`).
GIN_INDEXES = ("catalog.files_search", "catalog.files_metadata")


def _trash_cursor(cursor: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    if not cursor:
        return None, None
    at, _, ident = cursor.partition("|")
    try:
        return datetime.fromisoformat(at), uuid.UUID(ident)
    except ValueError:
        raise domain.Invalid("invalid_cursor", "this cursor is not one the trash gave") from None


def _folder(row: asyncpg.Record) -> domain.Folder:
    return domain.Folder(
        id=row["id"],
        parent_id=row["parent_id"],
        name=row["name"],
        version=row["version"],
        path=tuple(row["path"]),
        constituent_of=row.get("constituent_of"),
    )


def _file(row: asyncpg.Record) -> domain.File:
    return domain.File(
        id=row["id"],
        folder_id=row["folder_id"],
        name=row["name"],
        version=row["version"],
        blob_key=row["blob_key"],
        sha256=row["sha256"],
    )


def _cascade(changes: Sequence[Change], cause: Cause) -> list[Envelope]:
    """A deletion's envelopes, each caused by the deletion of the folder it was in, so
    the audit trail reads request -> folder -> subfolder -> file. What the request
    named outside any deleted folder is caused by the request."""
    causes: dict[uuid.UUID, Cause] = {}
    envelopes = []
    for change in changes:
        event = change.event
        if isinstance(event, ev.FolderDeleted):
            container = event.parent_id
        else:
            assert isinstance(event, ev.FileDeleted)
            container = event.folder_id
        envelope = new_envelope(
            event,
            stream_id=change.stream_id,
            stream_version=change.version,
            cause=causes.get(container, cause) if container else cause,
        )
        if isinstance(event, ev.FolderDeleted):
            causes[event.folder_id] = Cause.of(envelope)
        envelopes.append(envelope)
    return envelopes


async def setup_reactions(conn: Conn) -> None:
    """The state of reactions in progress (not a read model: nothing rebuilds it): the
    pages of an image group whose own event has not arrived yet; arrivals waiting for a
    folder the catalog has not seen made (`domain.waits`: whole envelopes, handled again
    when it is made, or rejected past `Settings.folder_wait_s`); and the key paths'
    subfolders ingest asked for that were not made, their parent gone (what arrives for
    them is rejected at once, not after waiting)."""
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS catalog.group_images (
               group_file_id uuid NOT NULL,
               ordinal integer NOT NULL,
               image jsonb NOT NULL,
               PRIMARY KEY (group_file_id, ordinal));
           CREATE TABLE IF NOT EXISTS catalog.awaiting_folders (
               event_id uuid PRIMARY KEY,
               folder_id uuid NOT NULL,
               envelope jsonb NOT NULL,
               -- The files it makes: what comes for them meanwhile waits with it.
               file_ids uuid[] NOT NULL DEFAULT '{}',
               since timestamptz NOT NULL DEFAULT now());
           CREATE INDEX IF NOT EXISTS awaiting_folders_folder
               ON catalog.awaiting_folders (folder_id);
           CREATE INDEX IF NOT EXISTS awaiting_folders_files
               ON catalog.awaiting_folders USING gin (file_ids);
           CREATE INDEX IF NOT EXISTS awaiting_folders_since ON catalog.awaiting_folders (since);
           CREATE INDEX IF NOT EXISTS awaiting_folders_position ON catalog.awaiting_folders
               ((envelope->>'source'), ((envelope->>'position')::bigint));
           CREATE TABLE IF NOT EXISTS catalog.folders_not_made (
               folder_id uuid PRIMARY KEY,
               at timestamptz NOT NULL DEFAULT now())"""
    )


# Set while arrivals that waited their time for a folder are handled again: they are
# decided now (rejected if it still is not there), not set aside again.
_OVERDUE: ContextVar[bool] = ContextVar("overdue", default=False)
# Arrivals given up on in one transaction (the store's lock held meanwhile; a page's
# rejection is an event a file).
OVERDUE_BATCH = 100


def _made_files(event: Event) -> list[uuid.UUID]:
    """The files an arrival makes (what later events about them name)."""
    if isinstance(event, FilesStored):
        return [f.file_id for f in event.files]
    if isinstance(event, FileContentStored | SeriesAssembled):
        return [event.file_id]
    if isinstance(event, ImageGroupStored):
        return [event.group_file_id]
    return []


# Events that name a folder or put it in a parent: the ones a sibling's name can refuse.
PLACING_FOLDERS = frozenset(
    c.type for c in (ev.FolderCreated, ev.FolderRenamed, ev.FolderMoved, ev.FolderRestored)
)


RESTORED = ev.FolderRestored.type
CREATED = ev.FolderCreated.type


def _name_taken() -> domain.Conflict:
    return domain.Conflict(
        "name_taken",
        "a folder with that name already exists here",
        {"constraint": "unique folder names among siblings"},
    )


# The first position of a source (the inbox's `w.source`) whose event waits for its
# folder: consistency waits read the source as applied only short of it (kit/inbox.py
# `held`), so a token naming it is not answered before the arrival enters (or is
# rejected). From the stored rows, so a restart keeps it; an empty table costs a lookup
# in the index within the statement that reads the watermarks, nothing a batch.
HELD = """SELECT min((a.envelope->>'position')::bigint) FROM catalog.awaiting_folders a
          WHERE a.envelope->>'source' = w.source"""


# The topics the catalog's reactions consume (its runtime's, and what a read that waits
# for a token waits on).
CONSUMES = (topics.INGEST, topics.DICOM, topics.DATASETS)


class Catalog(Handlers):
    reactions = Reactions("catalog")

    def __init__(self, parts: Parts) -> None:
        super().__init__(parts)
        parts.inbox.held = HELD

    # -- recording -----------------------------------------------------------------

    async def record(
        self,
        conn: Conn,
        changes: Sequence[Change],
        cause: Cause,
        at: datetime | None = None,
    ) -> int:
        """Project and append in the caller's transaction; returns the store position."""
        return await self.write(conn, envelopes_of(changes, cause, at))

    async def write(self, conn: Conn, envelopes: Sequence[Envelope]) -> int:
        if not envelopes:
            return 0
        made = [e.data["folder_id"] for e in envelopes if e.type == CREATED]
        try:
            await tree.apply(conn, envelopes)
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name in ("folders_sibling_names", "folders_sibling_keys"):
                raise _name_taken() from error
            raise
        # A folder these events put beside a sibling whose name differs from its own in
        # Unicode form only is marked so (projections.py `_BESIDE_A_TWIN`, for a rebuild
        # of events recorded before the rule), never written now.
        # A folder restored with its parent comes back beside the siblings it had: twins
        # among them were so before the rule (none are made now), and stay.
        restored = {str(e.data["folder_id"]) for e in envelopes if e.type == RESTORED}
        placed = [
            e.data["folder_id"]
            for e in envelopes
            if e.type in PLACING_FOLDERS
            and not (e.type == RESTORED and str(e.data.get("parent_id")) in restored)
        ]
        if placed and await conn.fetchval(
            "SELECT 1 FROM catalog.folders WHERE id = ANY($1::uuid[]) AND grandfathered",
            placed,
        ):
            raise _name_taken()
        position = await self.store.append(conn, envelopes)
        # Arrivals that waited for these folders are taken under the store's lock (held
        # from the append to the commit), as `_wait_for_folders` sets them aside under
        # it: another replica cannot set one aside for a folder made here unseen.
        came = await self._released(conn, made) if made else []
        if came:
            await self._arrive(conn, came)
            position = await self.store.head(conn)
        return position

    # -- arrivals whose folder is not made yet ----------------------------------------

    async def _unseen(self, conn: Conn, folder_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Of these folders (none of them there now), those the catalog has no record of:
        no event in their stream (a deleted or purged folder keeps its events), and not
        refused by `when_sync_folder_needed`."""
        if not folder_ids:
            return set()
        ids = list(folder_ids)
        streams = await conn.fetch(
            f"SELECT DISTINCT stream_id FROM {self.store.table} WHERE stream_id = ANY($1::text[])",
            [ev.folder_stream(i) for i in ids],
        )
        refused = await conn.fetch(
            "SELECT folder_id FROM catalog.folders_not_made WHERE folder_id = ANY($1::uuid[])", ids
        )
        known = {r["stream_id"] for r in streams}
        return {i for i in ids if ev.folder_stream(i) not in known} - {
            r["folder_id"] for r in refused
        }

    async def _wait_for_folders(
        self, conn: Conn, waiting: Sequence[tuple[uuid.UUID, Received[Any]]]
    ) -> None:
        """Set these arrivals aside until their folder is made (`write`) or they have
        waited their time (`give_up_waiting`). The inbox has them applied meanwhile: the
        rest of the batch, and the batches after, go on.

        Under the store's lock, and only for folders still unseen then: a folder made (or
        refused) by another replica's transaction, committed since this one looked, is
        seen once the lock is had (its maker held it to its commit, and releases what
        waits for it under it), so what arrived for it is handled now, not set aside
        where nothing would release it."""
        if not waiting:
            return
        await self.store.lock(conn)
        unseen = await self._unseen(conn, {folder_id for folder_id, _ in waiting})
        seen = {folder_id for folder_id, _ in waiting if folder_id not in unseen}
        meanwhile = [r for folder_id, r in waiting if folder_id in seen]
        waiting = [(folder_id, r) for folder_id, r in waiting if folder_id in unseen]
        if meanwhile:
            # What still waits for those folders (set aside by a replica of the version
            # before, which looked without the lock) first: a follower's file is made by
            # it, and left waiting it would send the follower round here again.
            await self._arrive(conn, await self._released(conn, list(seen)))
            # This batch's own events: their failures are the consumer's to retry.
            await Catalog.reactions.bound(self)(conn, [r.envelope for r in meanwhile])
        if not waiting:
            return
        # (One row an arrival: unnest would flatten its files' array into the others'.)
        await conn.executemany(
            """INSERT INTO catalog.awaiting_folders (event_id, folder_id, envelope, file_ids)
               VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING""",
            [
                (r.event_id, folder_id, r.envelope.model_dump_json().encode(), _made_files(r.event))
                for folder_id, r in waiting
            ],
        )
        log.info(
            "catalog.waiting_for_folder",
            folder_ids=sorted({str(f) for f, _ in waiting}),
            event_ids=[str(r.event_id) for _, r in waiting],
            types=sorted({r.type for _, r in waiting}),
        )

    async def _after_arrivals(
        self,
        conn: Conn,
        missing: Sequence[Received[Any]],
        file_of: Callable[[Any], uuid.UUID],
    ) -> None:
        """Events about files not in the catalog (`missing`; `file_of` names each one's
        file): those whose file's arrival waits for its folder wait with it, to be
        handled after it (a DICOM series extended, an object changed or gone before its
        folder's request was read). The others are about files gone: passed over."""
        if not missing or _OVERDUE.get():
            return
        rows = await conn.fetch(
            """SELECT folder_id, file_ids FROM catalog.awaiting_folders
               WHERE file_ids && $1::uuid[]""",
            list({file_of(e.event) for e in missing}),
        )
        folder_of = {f: r["folder_id"] for r in rows for f in r["file_ids"]}
        await self._wait_for_folders(
            conn,
            [(folder_of[file_of(e.event)], e) for e in missing if file_of(e.event) in folder_of],
        )

    async def _released(self, conn: Conn, folder_ids: Sequence[Any]) -> list[Envelope]:
        """The arrivals waiting for these folders, no longer waiting (in this transaction),
        in the order they occurred."""
        rows = await conn.fetch(
            """DELETE FROM catalog.awaiting_folders WHERE folder_id = ANY($1::uuid[])
               RETURNING envelope""",
            list(folder_ids),
        )
        if rows:
            await self._wake_waiters(conn)
        return in_causal_order(Envelope.model_validate(r["envelope"]) for r in rows)

    async def _wake_waiters(self, conn: Conn) -> None:
        """Arrivals leave the waiting table: consistency waits held short of them may
        pass once this commits (woken as by a watermark moved, not at their next look)."""
        await conn.execute("SELECT pg_notify($1, '')", self.parts.inbox.channel)

    async def _arrive(self, conn: Conn, envelopes: Sequence[Envelope]) -> None:
        """Arrivals that waited, through their reactions again (each is in the inbox
        already, and leaves the waiting table in this transaction: handled once). Each in
        a savepoint: one that fails for good is dead-lettered (`files dlq`, replayable),
        not left to fail what made its folder (or the sweep) again and again."""
        if not envelopes:
            return
        log.info(
            "catalog.folder_came",
            event_ids=[str(e.event_id) for e in envelopes],
            types=sorted({e.type for e in envelopes}),
        )
        react = Catalog.reactions.bound(self)
        for envelope in envelopes:
            try:
                async with conn.transaction():
                    await react(conn, [envelope])
            except Exception as error:
                if transient(error):
                    raise
                log.error(
                    "catalog.waiting_arrival_failed",
                    event_id=str(envelope.event_id),
                    event_type=envelope.type,
                    exc_info=True,
                )
                await conn.execute(
                    """INSERT INTO catalog.dead_letters
                       (id, consumer, topic, event_id, type, source, position, envelope,
                        error, tries, first_failed_at, last_failed_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, now(), now())
                       ON CONFLICT (consumer, event_id) DO UPDATE
                       SET error = excluded.error, tries = dead_letters.tries + 1,
                           last_failed_at = now(), status = 'dead'""",
                    uuid.uuid4(),
                    self.parts.name,
                    f"files.{envelope.source}",
                    envelope.event_id,
                    envelope.type,
                    envelope.source,
                    envelope.position,
                    envelope.model_dump_json().encode(),
                    repr(error),
                )

    async def give_up_waiting(self, waited_s: float) -> int:
        """Arrivals that have waited `waited_s` for a folder are decided: rejected (the
        folder never came: an id no folder had, or its request lost), or entered if it is
        there after all. How many were."""
        overdue_sql = "since < now() - make_interval(secs => $1)"
        if not await self.pool.fetchval(
            f"SELECT 1 FROM catalog.awaiting_folders WHERE {overdue_sql} LIMIT 1", waited_s
        ):
            return 0  # without the store's lock, which every append waits for
        async with self.pool.acquire() as conn, conn.transaction():
            # The store's lock before the waiting rows, as a consumer's transaction that
            # makes a folder may hold it when it takes them: the other order deadlocks.
            await self.store.lock(conn)
            rows = await conn.fetch(
                f"""DELETE FROM catalog.awaiting_folders WHERE event_id IN (
                       SELECT event_id FROM catalog.awaiting_folders
                       WHERE {overdue_sql}
                       ORDER BY since LIMIT $2 FOR UPDATE SKIP LOCKED)
                   RETURNING folder_id, envelope, now() - since AS waited""",
                waited_s,
                OVERDUE_BATCH,
            )
            if not rows:
                return 0
            await self._wake_waiters(conn)
            log.warning(
                "catalog.folder_never_came",
                folder_ids=sorted({str(r["folder_id"]) for r in rows}),
                event_ids=[str(r["envelope"]["event_id"]) for r in rows],
                waited_s=round(max(r["waited"] for r in rows).total_seconds(), 1),
            )
            overdue = _OVERDUE.set(True)
            try:
                await self._arrive(
                    conn, in_causal_order(Envelope.model_validate(r["envelope"]) for r in rows)
                )
            finally:
                _OVERDUE.reset(overdue)
        return len(rows)

    async def give_up_waiting_forever(self, waited_s: float, every_s: float) -> None:
        while True:
            try:
                while await self.give_up_waiting(waited_s) == OVERDUE_BATCH:
                    pass
            except Exception:
                log.error("catalog.give_up_waiting_failed", exc_info=True)
            await asyncio.sleep(every_s)  # a schedule, not a wait for a reaction

    # -- reading state ---------------------------------------------------------------

    async def folder(
        self,
        conn: Conn,
        folder_id: uuid.UUID,
        access: Access,
        needed: str,
        lock: str = "",
    ) -> domain.Folder:
        row = await conn.fetchrow(
            f"SELECT {FOLDER_COLUMNS} FROM catalog.folders WHERE id = $1 {lock}", folder_id
        )
        if row is None:
            raise domain.NotFound("not_found", f"folder {folder_id} does not exist")
        access.require(row["path"], needed, f"folder {folder_id}")
        return _folder(row)

    async def _require_all(
        self,
        conn: Conn,
        table: str,
        columns: str,
        ids: Sequence[uuid.UUID],
        access: Access,
        needed: str,
        lock: str = "",
    ) -> list[asyncpg.Record]:
        """The rows of these ids, if all exist and the caller has `needed` on each.

        One the caller may not see is reported as missing, like one that does not exist.
        """
        where = "path" if table == "folders" else "(SELECT p.path FROM catalog.folders p"
        where += "" if table == "folders" else " WHERE p.id = folder_id)"
        rows = await conn.fetch(
            f"""SELECT {columns}, {where} AS access_path FROM catalog.{table}
                WHERE id = ANY($1::uuid[]) {lock}""",
            list(set(ids)),
        )
        roles = {r["id"]: access.role_on(r["access_path"] or ()) for r in rows}
        what = "folders" if table == "folders" else "files"
        _require_roles(ids, roles, needed, what, "do not exist", "on their folder")
        return rows

    # -- commands --------------------------------------------------------------------

    async def create_folder(
        self,
        cause: Cause,
        *,
        name: str,
        description: str,
        parent_id: uuid.UUID | None,
        metadata: dict[str, Any],
        access: Access,
    ) -> tuple[uuid.UUID, int]:
        """Any user may create a top-level folder (and becomes its admin, in the ACL
        context); a subfolder needs the editor role on its parent."""
        folder_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            # FOR SHARE: a delete or move of the parent waits for us, or we for it.
            parent = (
                await self.folder(conn, parent_id, access, "editor", "FOR SHARE")
                if parent_id
                else None
            )
            if parent is not None:
                await self._refuse_cloud_synced(
                    conn, parent, access, "no folder is made in it by hand"
                )
            changes = domain.create_folder(folder_id, parent, name, description, metadata)
            try:
                return folder_id, await self.record(conn, changes, cause)
            except domain.Conflict as conflict:
                raise domain.Conflict(
                    "name_taken",
                    f"a folder named {name!r} already exists in "
                    + (f"folder {parent.name!r}" if parent else "the top level"),
                    {"name": name, "parent_id": str(parent_id) if parent_id else None},
                ) from conflict

    async def update_folder(
        self,
        cause: Cause,
        folder_id: uuid.UUID,
        *,
        name: str | None,
        description: str | None,
        metadata: dict[str, Any] | None,
        access: Access,
    ) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {FOLDER_COLUMNS}, description, metadata, created_by FROM catalog.folders"
                " WHERE id = $1 FOR UPDATE",
                folder_id,
            )
            if row is None:
                raise domain.NotFound("not_found", f"folder {folder_id} does not exist")
            access.require(row["path"], "editor", f"folder {folder_id}")
            if name is not None and name != row["name"]:
                domain.check_top_level_naming(access, _folder(row), row["created_by"], "rename")
            changes = domain.update_folder(
                _folder(row),
                row["description"],
                row["metadata"],
                name=name,
                description=description,
                metadata=metadata,
            )
            try:
                return await self.record(conn, changes, cause)
            except domain.Conflict as conflict:
                raise domain.Conflict(
                    "name_taken",
                    f"a folder named {name!r} already exists beside this one",
                    {"name": name},
                ) from conflict

    async def update_file(
        self,
        cause: Cause,
        file_id: uuid.UUID,
        *,
        name: str | None,
        metadata: dict[str, Any] | None,
        access: Access,
        description: str | None = None,
    ) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""SELECT {FILE_COLUMNS}, description, metadata,
                           (SELECT path FROM catalog.folders p WHERE p.id = folder_id) AS path
                    FROM catalog.files WHERE id = $1 FOR UPDATE""",
                file_id,
            )
            if row is None:
                raise domain.NotFound("not_found", f"file {file_id} does not exist")
            access.require(row["path"] or (), "editor", f"file {file_id}")
            found = domain.Described(_file(row), row["description"], row["metadata"])
            typed = await self.schema(conn) if metadata is not None else None
            changes = domain.describe_file(
                found, name=name, description=description, metadata=metadata, typed=typed
            )
            return await self.record(conn, changes, cause)

    async def schema(self, conn: Conn) -> schema.Schema:
        """The metadata schema, held (FOR SHARE) until the caller's commit: a write
        checked against it is not committed beside a schema that would refuse it."""
        keys = await conn.fetchval("SELECT keys FROM catalog.metadata_schema FOR SHARE")
        return schema.from_json(keys or {})

    async def set_schema(
        self, cause: Cause, keys: dict[str, dict[str, Any]], access: Access
    ) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT version, keys FROM catalog.metadata_schema FOR UPDATE"
            )
            changes = domain.set_schema(
                row["version"] if row else 0, row["keys"] if row else {}, keys, access.org_admin
            )
            return await self.record(conn, changes, cause)

    async def edit_files(
        self,
        cause: Cause,
        edits: Sequence[domain.FileEdit],
        metadata_mode: str,
        access: Access,
    ) -> tuple[list[uuid.UUID], int]:
        """A bulk edit, all or nothing: every file must exist and be the caller's to edit
        (one they may not see is reported as missing, by id); one bad value refuses all.
        One read of the files, one projection write per kind of change, one append."""
        domain.check_bulk_edit(edits, metadata_mode)
        ids = [e.id for e in edits]
        async with self.pool.acquire() as conn, conn.transaction():
            # Locked in id order: two bulk edits sharing files cannot deadlock.
            rows = await self._require_all(
                conn,
                "files",
                f"{FILE_COLUMNS}, description, metadata",
                ids,
                access,
                "editor",
                "ORDER BY id FOR UPDATE",
            )
            found = [domain.Described(_file(r), r["description"], r["metadata"]) for r in rows]
            typed = await self.schema(conn) if any(e.metadata is not None for e in edits) else None
            changes = domain.bulk_edit(found, edits, metadata_mode, typed)
            return ids, await self.record(conn, changes, cause)

    async def move(
        self,
        cause: Cause,
        *,
        file_ids: Sequence[uuid.UUID],
        folder_ids: Sequence[uuid.UUID],
        target_id: uuid.UUID,
        dry_run: bool,
        access: Access,
    ) -> tuple[dict[str, Any], int]:
        """Needs the editor role where things leave and where they arrive, and no
        more rights where they arrive (`domain.check_move_rights`)."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Moves go one at a time: two crossing moves (a into b, b into a) would each
            # pass the cycle check against the other's old tree.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MOVE_LOCK)
            target = await self.folder(conn, target_id, access, "editor", "FOR SHARE")
            await self._refuse_cloud_synced(conn, target, access, "nothing is moved into it")
            folder_rows = await self._require_all(
                conn, "folders", FOLDER_COLUMNS, folder_ids, access, "editor", "FOR UPDATE"
            )
            file_rows = await self._require_all(
                conn, "files", FILE_COLUMNS, file_ids, access, "editor", "FOR UPDATE"
            )
            domain.check_move_rights(
                access,
                [("folder", r["id"], r["name"], r["access_path"]) for r in folder_rows]
                + [("file", r["id"], r["name"], r["access_path"] or ()) for r in file_rows],
                target,
            )
            folders, files = [_folder(r) for r in folder_rows], [_file(r) for r in file_rows]
            changes = domain.move(folders, files, target)
            await self._refuse_constituents(conn, folders, files, "move")
            # Lock the subtrees whose paths change, so no folder is created in them meanwhile.
            await conn.execute(
                "SELECT 1 FROM catalog.folders WHERE path && $1::uuid[] FOR UPDATE",
                [f.id for f in folders],
            )
            impact = await self._impact(conn, folder_ids, file_ids)
            await self._refuse_name_clash(conn, folders, target)
            if dry_run:
                return {"dry_run": True, **impact}, 0
            position = await self.record(conn, changes, cause)
            return {"moved": len(set(file_ids)) + len(set(folder_ids))}, position

    async def _refuse_cloud_synced(
        self, conn: Conn, folder: domain.Folder, access: Access, refused: str
    ) -> None:
        """A cloud-synced folder (and every folder in it) holds what its bucket prefix
        holds: a sync would not know what to do with a folder or file it did not make.
        Only users' commands ask: the sync's own subfolders are made by reaction."""
        root = await synced_root(conn, folder.path)
        if root is None:
            return
        # A key path's subfolder may have been moved where others see it: who has no
        # role on the synced folder is not told its name or id.
        if access.role_on(root["path"]) is None:
            synced, details = "a cloud-synced folder", {}
        else:
            synced = f"the cloud-synced folder {root['name']!r}"
            details = {"synced_folder_id": str(root["id"])}
        subject = synced if root["id"] == folder.id else f"folder {folder.name!r} (in {synced})"
        raise domain.Conflict(
            "folder_cloud_synced",
            f"{subject} mirrors a bucket prefix: {refused}. Put the objects in the bucket"
            " under its prefix and sync, or choose a folder outside it",
            {"folder_id": str(folder.id), **details},
        )

    async def _refuse_name_clash(
        self, conn: Conn, folders: Sequence[domain.Folder], target: domain.Folder
    ) -> None:
        # Checked before writing: a unique violation would abort the transaction.
        clash = await conn.fetchval(
            """SELECT m.name FROM catalog.folders m JOIN catalog.folders t
               ON t.parent_id = $2 AND t.id <> m.id
                  AND catalog.name_key(t.name) = catalog.name_key(m.name)
               WHERE m.id = ANY($1::uuid[]) LIMIT 1""",
            [f.id for f in folders],
            target.id,
        )
        if clash is not None:
            raise domain.Conflict(
                "name_taken",
                f"folder {target.name!r} already has a folder named {clash!r}",
                {"name": clash, "target_folder_id": str(target.id)},
            )

    async def delete(
        self,
        cause: Cause,
        *,
        file_ids: Sequence[uuid.UUID],
        folder_ids: Sequence[uuid.UUID],
        dry_run: bool,
        access: Access,
    ) -> tuple[dict[str, Any], int]:
        """Needs the editor role on what is named; what lies below comes with it."""
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                return await self._delete(cause, file_ids, folder_ids, dry_run, access, started)
            except asyncpg.DeadlockDetectedError:
                # A delete locks its folders' trees, then the folders of the files
                # it names: two deletes each naming a file of the other's folder
                # take them in opposite orders. One statement in id order would
                # make every file delete exclude uploads into its folder; the one
                # PostgreSQL aborted wrote nothing, so it runs again instead.
                if attempt == DELETE_TRIES:
                    raise
                log.info("catalog.delete_deadlock_retried", attempt=attempt)
                attempt += 1

    async def _delete(
        self,
        cause: Cause,
        file_ids: Sequence[uuid.UUID],
        folder_ids: Sequence[uuid.UUID],
        dry_run: bool,
        access: Access,
        started: float,
    ) -> tuple[dict[str, Any], int]:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._require_all(conn, "folders", "id", folder_ids, access, "editor")
            await self._require_all(conn, "files", "id", file_ids, access, "editor")
            folders = [
                _folder(r)
                for r in await conn.fetch(
                    f"SELECT {FOLDER_COLUMNS} FROM catalog.folders WHERE path && $1::uuid[]"
                    " FOR UPDATE",
                    list(folder_ids),
                )
            ]
            # Folder before file, as an arrival takes them and a folder's delete (above):
            # the projection of a file's delete locks its folder, which a delete of the
            # folder, holding it, would wait for the file behind (a deadlock).
            await conn.execute(
                """SELECT 1 FROM catalog.folders
                   WHERE id IN (SELECT folder_id FROM catalog.files WHERE id = ANY($1::uuid[]))
                   ORDER BY id FOR SHARE""",
                list(file_ids),
            )
            files = [
                _file(r)
                for r in await conn.fetch(
                    f"""SELECT {FILE_COLUMNS} FROM catalog.files
                        WHERE id = ANY($1::uuid[]) OR folder_id = ANY($2::uuid[]) FOR UPDATE""",
                    list(file_ids),
                    [f.id for f in folders],
                )
            ]
            await self._refuse_constituents(conn, folders, files)
            if dry_run:
                return {
                    "dry_run": True,
                    **await self._impact(conn, folder_ids, file_ids),
                    "trash_days": self.parts.settings.trash_days,
                }, 0
            read = time.monotonic()
            # A folder's cascade builds an event per file below it (100,000 in one
            # call). Paused here only, never across an await: the pause is the whole
            # process's, and a request waiting on a lock would hold it for every other.
            with collector_paused():
                envelopes = _cascade(domain.delete(folders, files), cause)
            decided = time.monotonic()
            position = await self.write(conn, envelopes)
            written = time.monotonic()
        if len(envelopes) >= 10_000:
            log.info(
                "catalog.bulk_delete",
                folders=len(folders),
                files=len(files),
                read_s=round(read - started, 3),
                decide_s=round(decided - read, 3),
                write_s=round(written - decided, 3),
                commit_s=round(time.monotonic() - written, 3),
            )
        return {"deleted": len(set(file_ids)) + len(set(folder_ids))}, position

    # -- the trash ---------------------------------------------------------------------

    async def _trashed(
        self,
        conn: Conn,
        table: str,
        ids: Sequence[uuid.UUID],
        access: Access,
        needed: str,
    ) -> list[asyncpg.Record]:
        """Trashed rows of these ids, if all are in the trash and the caller has
        `needed` where they were; one the caller may not see is missing."""
        rows = await conn.fetch(
            f"SELECT id, path FROM catalog.trash_{table} WHERE id = ANY($1::uuid[]) FOR UPDATE",
            list(set(ids)),
        )
        roles = {r["id"]: access.role_on(r["path"]) for r in rows}
        _require_roles(ids, roles, needed, table, "are not in the trash", "where they were")
        return rows

    async def _merge_gin_pending(self) -> None:
        """A bulk restore's rows, left in the GIN indexes' pending lists, merged into
        them (if this does not run, the next insert over the default limit does, or
        vacuum: searches see the pending rows meanwhile, only slower)."""
        try:
            async with self.pool.acquire() as conn:
                for index in GIN_INDEXES:
                    await conn.fetchval("SELECT gin_clean_pending_list($1::regclass)", index)
        except Exception:
            log.warning("catalog.gin_merge_failed", exc_info=True)

    def _partition_of(self, streams: Sequence[str]) -> list[int]:
        """The partition the relay sends each stream's events to (one if not known)."""
        return bus.partitions_of([s.encode() for s in streams], self.parts.partitions or [0])

    def _restore_stream_in(self, partition: int) -> str:
        """A new restore stream whose events land in `partition` (drawn until one does:
        on average as many draws as there are partitions)."""
        return self._stream_in(partition, ev.restore_stream)

    def _stream_in(
        self, partition: int, stream_of: Callable[[uuid.UUID], str], seed: uuid.UUID | None = None
    ) -> str:
        """`seed`: the stream is the first of those derived from it that lands in the
        partition, so the same seed and partition always name the same stream."""
        for n in itertools.count():
            stream = stream_of(uuid.uuid4() if seed is None else uuid.uuid5(seed, str(n)))
            if self._partition_of([stream]) == [partition]:
                return stream
        raise AssertionError("unreachable")

    async def restore(
        self,
        cause: Cause,
        *,
        file_ids: Sequence[uuid.UUID],
        folder_ids: Sequence[uuid.UUID],
        access: Access,
    ) -> tuple[dict[str, Any], int]:
        """Needs the editor role where each was. A folder comes back with everything
        that went to the trash with it (below it); trashed folders above what is
        restored come back too (without their other contents), so the path is whole."""
        started = time.monotonic()
        async with self.pool.acquire() as conn, conn.transaction():
            # Restores and deletes of one subtree go one at a time.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MOVE_LOCK)
            named = await self._trashed(conn, "folders", folder_ids, access, "editor")
            named_files = await self._trashed(conn, "files", file_ids, access, "editor")
            above = {p for r in named for p in r["path"]} | {
                p for r in named_files for p in r["path"]
            }
            chosen = [r["id"] for r in named]
            folder_rows = await conn.fetch(
                f"""SELECT {FOLDER_COLUMNS}, entry->>'created_by' AS created_by,
                           (entry->>'constituent_of')::uuid AS constituent_of,
                           t.id = ANY($1::uuid[])
                           OR ({WENT_WITH.format(t="t", chosen="$1::uuid[]")}) AS below
                    FROM catalog.trash_folders t
                    WHERE t.path && $1::uuid[] OR t.id = ANY($2::uuid[]) FOR UPDATE""",
                chosen,
                list(above),
            )
            # Items of their own below them (deleted before them) stay.
            folder_rows = [r for r in folder_rows if r["below"] or r["id"] in above]
            below = [r["id"] for r in folder_rows if r["below"]]
            file_rows = await conn.fetch(
                f"""SELECT {FILE_COLUMNS} FROM catalog.trash_files
                    WHERE id = ANY($1::uuid[]) OR (folder_id = ANY($2::uuid[]) AND NOT itself)
                    FOR UPDATE""",
                list(file_ids),
                below,
            )
            for r in folder_rows:
                domain.check_top_level_naming(access, _folder(r), r["created_by"], "restore")
            folders = [_folder(r) for r in folder_rows]
            files = [_file(r) for r in file_rows]
            parents = {f.parent_id for f in folders} | {f.folder_id for f in files}
            present = {
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM catalog.folders WHERE id = ANY($1::uuid[]) FOR SHARE",
                    [p for p in parents if p is not None],
                )
            }
            domain.refuse_orphans(folders, present)
            back = {f.id for f in folders}
            lost = [f for f in files if f.folder_id not in back | present]
            if lost:
                raise domain.Conflict(
                    "parent_gone",
                    f"file {lost[0].name!r} cannot be restored: its folder is gone for good",
                    {"file_id": str(lost[0].id)},
                )
            read = time.monotonic()
            path_only = {f.id for f in folders} - set(below)
            # An event per file restored (100,000 in one call); paused around the
            # building alone, never across an await (`delete`).
            with collector_paused():
                envelopes = envelopes_of(
                    domain.restore(
                        folders,
                        files,
                        path_only,
                        partition_of=self._partition_of,
                        stream_in=self._restore_stream_in,
                    ),
                    cause,
                )
            decided = time.monotonic()
            deferred = len(files) >= self.parts.settings.restore_defer_gin_from
            if deferred:
                # The GIN indexes (trigrams, metadata) take the rows into their pending
                # lists only; they are merged after the answer, beside the datasets'
                # work on the other core (bench/README.md, trash).
                await conn.execute("SET LOCAL gin_pending_list_limit = '2GB'")
                # The rows' sort into the widest index's order (tree.files_restored),
                # 50 MB at 100,000 files, in memory rather than through temp files.
                await conn.execute("SET LOCAL work_mem = '64MB'")
            position = await self.write(conn, envelopes)
            written = time.monotonic()
        if deferred:
            task = asyncio.create_task(self._merge_gin_pending(), name="catalog.gin-merge")
            # The runtime cancels its tasks before it closes the pool.
            self.parts.tasks.append(task)
            task.add_done_callback(self.parts.tasks.remove)
        if len(files) >= 10_000:
            log.info(
                "catalog.bulk_restore",
                folders=len(folders),
                files=len(files),
                read_s=round(read - started, 3),
                decide_s=round(decided - read, 3),
                write_s=round(written - decided, 3),
                commit_s=round(time.monotonic() - written, 3),
            )
        return {"restored_folders": len(folders), "restored_files": len(files)}, position

    async def trash(self, access: Access, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """What went to the trash where the caller may see, newest first: folders and
        files deleted themselves, not what went with a trashed folder."""
        after_at, after_id = _trash_cursor(cursor)
        roots = access.roots
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT * FROM (
                       SELECT 'folder' AS type, t.id, t.name, t.parent_id AS folder_id,
                              t.path, t.trashed_at, t.trashed_by, t.entry
                       FROM catalog.trash_folders t
                       WHERE (t.itself OR NOT EXISTS (SELECT 1 FROM catalog.trash_folders p
                                                      WHERE p.id = t.parent_id))
                         AND ($1::uuid[] IS NULL OR t.path && $1::uuid[])
                       UNION ALL
                       SELECT 'file', t.id, t.name, t.folder_id, t.path, t.trashed_at,
                              t.trashed_by, t.entry
                       FROM catalog.trash_files t
                       WHERE (t.itself OR NOT EXISTS (SELECT 1 FROM catalog.trash_folders p
                                                      WHERE p.id = t.folder_id))
                         AND ($1::uuid[] IS NULL OR t.path && $1::uuid[])) x
                   WHERE $2::timestamptz IS NULL OR (x.trashed_at, x.id) < ($2, $3)
                   ORDER BY x.trashed_at DESC, x.id DESC LIMIT $4""",
                roots,
                after_at,
                after_id,
                limit + 1,
            )
            counts = {
                r["id"]: r["files"]
                for r in await conn.fetch(
                    f"""SELECT f.id, (SELECT count(*) FROM catalog.trash_files t
                                      WHERE {WENT_WITH.format(t="t", chosen="ARRAY[f.id]")}
                                        AND NOT t.itself) AS files
                       FROM unnest($1::uuid[]) AS f(id)""",
                    [r["id"] for r in rows if r["type"] == "folder"],
                )
            }
            # A restore brings back the trashed folders above an item too, and holds a
            # top-level one among them to its rule (check_top_level_naming).
            barred: set[uuid.UUID] = (
                set()
                if access.org_admin
                else {
                    t["id"]
                    for t in await conn.fetch(
                        """SELECT id, entry->>'created_by' AS created_by
                           FROM catalog.trash_folders
                           WHERE id = ANY($1::uuid[]) AND parent_id IS NULL""",
                        list({r["path"][0] for r in rows[:limit] if r["path"]}),
                    )
                    if t["created_by"] != access.user_id
                }
            )
        keep = self.parts.settings.trash_days
        items = [
            {
                "type": r["type"],
                "id": str(r["id"]),
                "name": r["name"],
                # A folder's parent only where the caller may see it (as folders show it).
                ("parent_id" if r["type"] == "folder" else "folder_id"): (
                    str(r["folder_id"])
                    if r["folder_id"] and (r["type"] == "file" or access.role_on(r["path"][:-1]))
                    else None
                ),
                **({"files": counts.get(r["id"], 0)} if r["type"] == "folder" else {}),
                **(
                    {"size": r["entry"].get("size"), "kind": r["entry"].get("kind")}
                    if r["type"] == "file"
                    else {}
                ),
                "deleted_at": r["trashed_at"].isoformat(),
                "deleted_by": r["trashed_by"],
                "purge_at": (r["trashed_at"] + timedelta(days=keep)).isoformat(),
                "my_role": access.role_on(r["path"]),
                # The restore's own rule for a top-level folder (check_top_level_naming),
                # told ahead: its parent is not shown to all who may see it.
                "may_restore": (
                    domain.may_rename(
                        access,
                        access.role_on(r["path"]),
                        r["folder_id"],
                        r["entry"].get("created_by", ""),
                    )
                    if r["type"] == "folder"
                    else RANK.get(access.role_on(r["path"]) or "", 0) >= RANK["editor"]
                )
                and not (r["path"] and r["path"][0] in barred),
            }
            for r in rows[:limit]
        ]
        last = rows[limit - 1] if len(rows) > limit else None
        return {
            "items": items,
            "next_cursor": f"{last['trashed_at'].isoformat()}|{last['id']}" if last else None,
        }

    async def empty_trash(
        self,
        cause: Cause,
        access: Access,
        *,
        older_than: datetime | None = None,
        file_ids: Sequence[uuid.UUID] | None = None,
        folder_ids: Sequence[uuid.UUID] | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Purge what the caller could restore (editor or more where it was: what they
        only see stays); `older_than` with a system caller: what the trash keeps no
        longer; `file_ids`/`folder_ids`: only these ("Delete forever"), a folder with what
        was trashed inside it. Set-based, a batch of PURGE_BATCH at a time."""
        chosen = file_ids is not None or folder_ids is not None
        chosen_files, chosen_folders = list(file_ids or []), list(folder_ids or [])
        purged_folders = purged_files = 0
        position = 0
        editor_roots = (
            None
            if access.org_admin
            else [f for f, role in access.grants.items() if RANK[role] >= RANK["editor"]]
        )
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MOVE_LOCK)
                files = await conn.fetch(
                    f"""SELECT {FILE_COLUMNS} FROM catalog.trash_files t
                        WHERE ($1::uuid[] IS NULL OR path && $1::uuid[])
                          AND ($2::timestamptz IS NULL OR trashed_at < $2)
                          AND (NOT $4::boolean OR id = ANY($5::uuid[])
                               OR (NOT itself
                                   AND {WENT_WITH.format(t="t", chosen="$6::uuid[]")}))
                        ORDER BY id LIMIT $3 FOR UPDATE""",
                    editor_roots,
                    older_than,
                    PURGE_BATCH,
                    chosen,
                    chosen_files,
                    chosen_folders,
                )
                folders = []
                if len(files) < PURGE_BATCH:
                    # Folders once their files have gone: innermost first does not
                    # matter, nothing refers to a purged folder.
                    folders = await conn.fetch(
                        f"""SELECT {FOLDER_COLUMNS} FROM catalog.trash_folders d
                            WHERE ($1::uuid[] IS NULL OR path && $1::uuid[])
                              AND ($2::timestamptz IS NULL OR trashed_at < $2)
                              AND (NOT $4::boolean OR id = ANY($5::uuid[])
                                   OR {WENT_WITH.format(t="d", chosen="$5::uuid[]")})
                              AND NOT EXISTS (SELECT 1 FROM catalog.trash_files t
                                              WHERE t.path && ARRAY[d.id])
                              -- a folder deleted on its own below it goes back there
                              AND NOT EXISTS (SELECT 1 FROM catalog.trash_folders s
                                              WHERE s.itself AND s.id <> d.id
                                                AND s.path && ARRAY[d.id])
                            ORDER BY id LIMIT $3 FOR UPDATE""",
                        editor_roots,
                        older_than,
                        PURGE_BATCH - len(files),
                        chosen,
                        chosen_folders,
                    )
                if not files and not folders:
                    break
                # A batch's events built with the collector paused, never across an
                # await (`delete`).
                with collector_paused():
                    envelopes = envelopes_of(
                        domain.purge([_folder(r) for r in folders], [_file(r) for r in files]),
                        cause,
                    )
                position = await self.write(conn, envelopes)
                purged_folders += len(folders)
                purged_files += len(files)
        return {"purged_folders": purged_folders, "purged_files": purged_files}, position

    async def purge_expired_forever(self, every_s: float) -> None:
        """What has been in the trash FILES_TRASH_DAYS goes."""
        while True:
            try:
                cutoff = datetime.now(UTC) - timedelta(days=self.parts.settings.trash_days)
                cause = Cause(actor="system:trash", correlation_id=str(uuid.uuid4()))
                result, _ = await self.empty_trash(
                    cause, Access(user_id="system:trash", org_admin=True), older_than=cutoff
                )
                if result["purged_files"] or result["purged_folders"]:
                    log.info("trash.purged", **result)
            except Exception:
                log.error("trash.purge_failed", exc_info=True)
            await asyncio.sleep(every_s)  # a schedule, not a wait for a reaction

    async def _refuse_constituents(
        self,
        conn: Conn,
        folders: Sequence[domain.Folder],
        files: Sequence[domain.File],
        doing: str = "delete",
    ) -> None:
        """A group that stays keeps its constituent folder and images: they are not
        deleted, nor moved away, without it."""
        # The groups the folders and files are constituents of, by key: no scan of groups.
        rows = await conn.fetch(
            """SELECT g.id, g.name FROM catalog.files g
               WHERE NOT g.id = ANY($3::uuid[])
                 AND g.id IN (SELECT constituent_of FROM catalog.folders
                              WHERE id = ANY($1::uuid[]) AND constituent_of IS NOT NULL
                              UNION
                              SELECT constituent_of FROM catalog.files
                              WHERE id = ANY($2::uuid[]) AND constituent_of IS NOT NULL)
               ORDER BY g.name, g.id""",
            [f.id for f in folders],
            [f.id for f in files],
            [f.id for f in files],
        )
        domain.refuse_constituents([(r["id"], r["name"]) for r in rows], doing)

    async def _impact(
        self,
        conn: Conn,
        folder_ids: Sequence[uuid.UUID],
        file_ids: Sequence[uuid.UUID],
    ) -> dict[str, Any]:
        counted = await conn.fetchrow(
            """WITH below AS (SELECT id FROM catalog.folders WHERE path && $1::uuid[])
               SELECT (SELECT count(*) FROM below) AS folders,
                      (SELECT count(*) FROM catalog.files
                       WHERE folder_id IN (SELECT id FROM below)
                          OR id = ANY($2::uuid[])) AS files""",
            list(folder_ids),
            list(file_ids),
        )
        assert counted is not None  # an aggregate's one row
        # Dataset links are the datasets context's to count; the gateway adds them.
        return {"folders": counted["folders"], "files": counted["files"]}

    @reactions.on(FileContentStored)
    @reactions.on(FilesStored)
    async def when_files_stored(
        self,
        conn: Conn,
        envelopes: Sequence[Received[FileContentStored] | Received[FilesStored]],
    ) -> None:
        """Register a batch of stored files (pages, or files one an event): one folder
        lookup, one projection write, one append. A page's files enter as `FilesUploaded`
        pages (`domain.register_page`), a file of its own as a `FileUploaded`; each is
        caused by the event that named it."""
        folders = await self._arrival_folders(conn, [e.event for e in envelopes])
        unseen = await self._unseen(conn, {e.event.folder_id for e in envelopes} - folders.keys())
        changes: list[tuple[Received[Any], list[Change]]] = []
        waiting: list[tuple[uuid.UUID, Received[Any]]] = []
        for e in envelopes:
            folder = folders.get(e.event.folder_id)
            never_made = e.event.folder_id in unseen
            # An upload names a folder the gateway found in the catalog, never a synced
            # one (ingest refuses those): one the catalog has no record of is a forged or
            # lost request, rejected now rather than waited for (a sync's files wait).
            uploaded = isinstance(e.event, FilesStored) or e.event.source.type == "upload"
            if domain.waits(folder, not never_made or uploaded, _OVERDUE.get()):
                waiting.append((e.event.folder_id, e))
                continue
            if isinstance(e.event, FilesStored):
                # Page streams named after the stored page: were it ever registered
                # twice, the second would conflict at version 1, as a file's did.
                made = domain.register_page(
                    e.event,
                    folder,
                    partition_of=self._partition_of,
                    stream_in=functools.partial(
                        self._stream_in, stream_of=ev.upload_page_stream, seed=e.event_id
                    ),
                    never_made=never_made,
                )
            else:
                made = [domain.register_upload(e.event, folder, never_made=never_made)]
            changes.append((e, made))
        # Decided first: the folders' rows are locked before the store's lock (the order
        # of commands), which setting the others aside takes.
        await self.write(
            conn,
            [
                envelope
                for cause, made in changes
                for envelope in envelopes_of(made, Cause.of(cause), cause.occurred_at)
            ],
        )
        await self._wait_for_folders(conn, waiting)

    @reactions.on(ImageGroupImagesStored)
    async def when_image_group_images_stored(
        self, conn: Conn, envelopes: Sequence[Received[ImageGroupImagesStored]]
    ) -> None:
        """A page of a group's images: kept until the group's event (after its pages, in
        the same stream) registers them all at once."""
        await conn.execute(
            """INSERT INTO catalog.group_images (group_file_id, ordinal, image)
               SELECT g, o, i FROM unnest($1::uuid[], $2::int[], $3::jsonb[]) AS x(g, o, i)
               ON CONFLICT DO NOTHING""",
            *zip(
                *(
                    (e.event.group_file_id, e.event.first + n, image)
                    for e in envelopes
                    for n, image in enumerate(e.data["files"])
                ),
                strict=True,
            ),
        )

    async def _group_images(self, conn: Conn, group: ImageGroupStored) -> list[FileContentStored]:
        """The group's images: its own `files` (recorded before pages), or its pages
        (kept, then let go)."""
        if group.files:
            return list(group.files)
        rows = await conn.fetch(
            """DELETE FROM catalog.group_images WHERE group_file_id = $1
               RETURNING ordinal, image""",
            group.group_file_id,
        )
        rows = sorted(rows, key=lambda r: r["ordinal"])
        images = [FileContentStored.model_validate(r["image"]) for r in rows]
        if len(images) != group.images:
            raise RuntimeError(
                f"image group {group.group_file_id}: {len(images)} of its {group.images}"
                " images arrived before it"
            )
        return images

    @reactions.on(ImageGroupStored)
    async def when_image_group_stored(
        self, conn: Conn, envelopes: Sequence[Received[ImageGroupStored]]
    ) -> None:
        """An image group enters its folder: the constituent folder, its images and the
        group's file, in this transaction."""
        for envelope in envelopes:
            group = envelope.event
            # Stronger than FOR SHARE: a subfolder being created here (which shares the
            # parent) waits for us, so the name chosen below stays free until we commit.
            row = await conn.fetchrow(
                f"SELECT {FOLDER_COLUMNS} FROM catalog.folders WHERE id = $1 FOR NO KEY UPDATE",
                group.folder_id,
            )
            never_made = row is None and bool(await self._unseen(conn, [group.folder_id]))
            if domain.waits(_folder(row) if row else None, not never_made, _OVERDUE.get()):
                # Its pages stay kept: they are read when it comes back.
                await self._wait_for_folders(conn, [(group.folder_id, envelope)])
                continue
            images = await self._group_images(conn, group)
            taken = {
                domain.name_key(r["name"])
                for r in await conn.fetch(
                    "SELECT name FROM catalog.folders WHERE parent_id = $1", group.folder_id
                )
            }
            name = domain.constituent_folder_name(group.name, taken)
            # The index compares with PostgreSQL's lower(), which differs from Python's
            # for a few letters (a final sigma, a dotted I): a name it takes is skipped.
            while await conn.fetchval(
                """SELECT 1 FROM catalog.folders WHERE parent_id = $1
                   AND (catalog.name_key(name) = catalog.name_key($2)
                        OR lower(name) = lower($2))""",
                group.folder_id,
                name,
            ):
                taken.add(domain.name_key(name))
                name = domain.constituent_folder_name(group.name, taken)
            changes = domain.register_image_group(
                group, images, _folder(row) if row else None, name, never_made=never_made
            )
            await self.write(conn, envelopes_of(changes, Cause.of(envelope), envelope.occurred_at))

    @reactions.on(SeriesAssembled)
    async def when_series_assembled(
        self, conn: Conn, envelopes: Sequence[Received[SeriesAssembled]]
    ) -> None:
        """A DICOM series is assembled: it enters its folder as one `dicom_series` file."""
        assembled = [e.event for e in envelopes]
        await self._enter_folders(conn, envelopes, assembled, domain.register_series)

    async def _arrival_folders(
        self, conn: Conn, arrivals: Sequence[Any]
    ) -> dict[uuid.UUID, domain.Folder]:
        """The folders these arrivals are for, as they are now (one missing: gone)."""
        # FOR SHARE: a folder being deleted or moved waits for these files, or they for it.
        rows = await conn.fetch(
            f"SELECT {FOLDER_COLUMNS} FROM catalog.folders WHERE id = ANY($1::uuid[]) FOR SHARE",
            list({a.folder_id for a in arrivals}),
        )
        return {r["id"]: _folder(r) for r in rows}

    async def _enter_folders(
        self,
        conn: Conn,
        envelopes: Sequence[Received[Any]],
        arrivals: Sequence[Arrival],
        register: Callable[..., Change],
    ) -> None:
        """New files for their folders, each decided against its folder (None if it went
        away meanwhile, or never came), created at the time of the event that brought it
        (`envelopes`: an arrival's, one each). One for a folder not made yet waits."""
        folders = await self._arrival_folders(conn, arrivals)
        unseen = await self._unseen(conn, {a.folder_id for a in arrivals} - folders.keys())
        decided: list[Envelope] = []
        waiting: list[tuple[uuid.UUID, Received[Any]]] = []
        for cause, arrival in zip(envelopes, arrivals, strict=True):
            folder = folders.get(arrival.folder_id)
            never_made = arrival.folder_id in unseen
            if domain.waits(folder, not never_made, _OVERDUE.get()):
                waiting.append((arrival.folder_id, cause))
                continue
            decided += envelopes_of(
                [register(arrival, folder, never_made=never_made)],
                Cause.of(cause),
                cause.occurred_at,
            )
        await self.write(conn, decided)  # before the store's lock, as above
        await self._wait_for_folders(conn, waiting)

    # -- cloud-synced folders (ingest follows the bucket; these are its facts) ---------

    @reactions.on(SyncFolderNeeded)
    async def when_sync_folder_needed(
        self, conn: Conn, envelopes: Sequence[Received[SyncFolderNeeded]]
    ) -> None:
        """A key path below a synced prefix becomes a subfolder, with the id ingest gave
        it (once: a folder with that id, even trashed or purged, is left as it is)."""
        # Known as the sync's before it is visible: no user's command gets in first.
        await cloud_synced.apply_received(conn, envelopes)
        for envelope in envelopes:
            need = envelope.event
            if await self.store.read_stream(conn, ev.folder_stream(need.folder_id)):
                continue
            row = await conn.fetchrow(
                f"SELECT {FOLDER_COLUMNS} FROM catalog.folders WHERE id = $1 FOR NO KEY UPDATE",
                need.parent_id,
            )
            if row is None:
                parent_seen = not await self._unseen(conn, [need.parent_id])
                if domain.waits(None, parent_seen, _OVERDUE.get()):
                    # Its parent, a key path's subfolder too, was asked for in another
                    # sync's stream, read later.
                    await self._wait_for_folders(conn, [(need.parent_id, envelope)])
                elif parent_seen:
                    # The parent went away: this folder is never made, and what arrives
                    # for it is rejected, what waited for it too (now, not after waiting).
                    # Under the store's lock, as what waits is set aside under it.
                    await self.store.lock(conn)
                    await conn.execute(
                        """INSERT INTO catalog.folders_not_made (folder_id) VALUES ($1)
                           ON CONFLICT DO NOTHING""",
                        need.folder_id,
                    )
                    await self._arrive(conn, await self._released(conn, [need.folder_id]))
                continue
            taken = await conn.fetchval(
                """SELECT 1 FROM catalog.folders WHERE parent_id = $1
                   AND catalog.name_key(name) = catalog.name_key($2)""",
                need.parent_id,
                need.name,
            )
            # A folder of the same name made by hand keeps its name; the key path's
            # folder is told apart by its id's first characters. So is a key's '.' or
            # '..' segment that an ingest of before they were refused asked for.
            odd = need.name in (".", "..")
            name = f"{need.name} ({str(need.folder_id)[:8]})" if taken or odd else need.name
            changes = domain.create_folder(need.folder_id, _folder(row), name, "", {})
            await self.write(conn, envelopes_of(changes, Cause.of(envelope), envelope.occurred_at))

    @reactions.on(FolderSyncConfigured)
    async def when_folder_sync_configured(
        self, conn: Conn, envelopes: Sequence[Received[FolderSyncConfigured]]
    ) -> None:
        await cloud_synced.apply_received(conn, envelopes)

    @reactions.on(CloudSyncedFoldersListed)
    async def when_synced_folders_listed(
        self, conn: Conn, envelopes: Sequence[Received[CloudSyncedFoldersListed]]
    ) -> None:
        await cloud_synced.apply_received(conn, envelopes)

    @reactions.on(FolderSyncEnded)
    async def when_folder_sync_ended(
        self, conn: Conn, envelopes: Sequence[Received[FolderSyncEnded]]
    ) -> None:
        await cloud_synced.apply_received(conn, envelopes)

    @reactions.on(CloudObjectGone)
    async def when_cloud_object_gone(
        self, conn: Conn, envelopes: Sequence[Received[CloudObjectGone]]
    ) -> None:
        """Its file becomes a tombstone (a file deleted meanwhile is left as it is)."""
        rows = await conn.fetch(
            """SELECT id, folder_id, version, tombstone FROM catalog.files
               WHERE id = ANY($1::uuid[]) FOR UPDATE""",
            [e.event.file_id for e in envelopes],
        )
        by_id = {r["id"]: r for r in rows}
        await self._after_arrivals(
            conn, [e for e in envelopes if e.event.file_id not in by_id], lambda g: g.file_id
        )
        out: list[Envelope] = []
        for envelope in envelopes:
            row = by_id.get(envelope.event.file_id)
            if row is None or row["tombstone"]:
                continue
            change = Change(
                ev.file_stream(row["id"]),
                row["version"] + 1,
                ev.FileTombstoned(file_id=row["id"], folder_id=row["folder_id"]),
            )
            out += envelopes_of([change], Cause.of(envelope), envelope.occurred_at)
        await self.write(conn, out)

    @reactions.on(CloudObjectChanged)
    async def when_cloud_object_changed(
        self, conn: Conn, envelopes: Sequence[Received[CloudObjectChanged]]
    ) -> None:
        """New bytes under the key: the file's new facts; and it is back if it was a
        tombstone."""
        for envelope in envelopes:
            changed = envelope.event
            row = await conn.fetchrow(
                """SELECT id, folder_id, version, tombstone, sha256, kind, size
                   FROM catalog.files WHERE id = $1 FOR UPDATE""",
                changed.file_id,
            )
            if row is None:
                await self._after_arrivals(conn, [envelope], lambda c: c.file_id)
                continue
            events: list[Event] = []
            if (row["sha256"], row["kind"], row["size"]) != (
                changed.sha256,
                changed.kind,
                changed.size,
            ):
                events.append(
                    ev.FileContentChanged(
                        file_id=row["id"],
                        kind=changed.kind,
                        size=changed.size,
                        sha256=changed.sha256,
                        mime_type=changed.mime_type,
                        media=changed.media,
                    )
                )
            if row["tombstone"]:
                events.append(ev.FileReturned(file_id=row["id"], folder_id=row["folder_id"]))
            changes = appended(ev.file_stream(row["id"]), events, after=row["version"])
            await self.write(conn, envelopes_of(changes, Cause.of(envelope), envelope.occurred_at))

    @reactions.on(ImportedMetadataReplaced)
    async def when_imported_metadata_replaced(
        self, conn: Conn, envelopes: Sequence[Received[ImportedMetadataReplaced]]
    ) -> None:
        """An import named objects already imported into the folder with new metadata
        (`upsert_metadata`): their files take it, whole (those since deleted do not)."""
        for envelope in envelopes:
            replaced = envelope.event
            rows = await conn.fetch(
                """SELECT id, version FROM catalog.files WHERE id = ANY($1::uuid[])
                   ORDER BY id FOR UPDATE""",
                replaced.file_ids,
            )
            changes = [
                Change(
                    ev.file_stream(r["id"]),
                    r["version"] + 1,
                    ev.FileMetadataChanged(file_id=r["id"], metadata=replaced.metadata),
                )
                for r in rows
            ]
            await self.write(conn, envelopes_of(changes, Cause.of(envelope), envelope.occurred_at))

    @reactions.on(UploadSessionMetadataRestored)
    async def when_session_metadata_restored(
        self,
        conn: asyncpg.Connection,
        envelopes: Sequence[Received[UploadSessionMetadataRestored]],
    ) -> None:
        """An upload session's file stored without its metadata (completed by an older
        ingest replica) takes it, if its metadata was never set since: a `PATCH` (even
        one that cleared it on purpose) is kept, and so is a schema that would now refuse
        it. A file deleted since takes nothing (in the trash, its entry keeps none)."""
        for envelope in envelopes:
            restored = envelope.event
            row = await conn.fetchrow(
                """SELECT id, version, metadata,
                          EXISTS (SELECT FROM catalog.events e
                                  WHERE e.stream_id = $2
                                    AND e.type = 'catalog.FileMetadataChanged') AS edited
                   FROM catalog.files WHERE id = $1 FOR UPDATE""",
                restored.file_id,
                ev.file_stream(restored.file_id),
            )
            if row is None or row["metadata"] or row["edited"] or not restored.metadata:
                continue
            try:
                schema.check(await self.schema(conn), restored.metadata)
            except Refused as refused:
                log.warning(
                    "catalog.session_metadata_not_restored",
                    file_id=str(row["id"]),
                    code=refused.code,
                )
                continue
            changes = [
                Change(
                    ev.file_stream(row["id"]),
                    row["version"] + 1,
                    ev.FileMetadataChanged(file_id=row["id"], metadata=restored.metadata),
                )
            ]
            await self.write(conn, envelopes_of(changes, Cause.of(envelope), envelope.occurred_at))

    @reactions.on(SeriesExtended)
    @reactions.on(SeriesShrunk)
    async def when_series_changed(
        self,
        conn: Conn,
        envelopes: Sequence[Received[SeriesExtended | SeriesShrunk]],
    ) -> None:
        """A later upload joined a series, or objects of a synced bucket gone took
        instances out of it: its file shows the series as it now is (its content the
        first slice left). A series with no instance left is a tombstone, as a synced
        file whose object is gone; an instance that comes back returns it."""
        changed = [e.event for e in envelopes]
        rows = await conn.fetch(
            """SELECT id, folder_id, version, tombstone, blob_key FROM catalog.files
               WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE""",
            list({s.file_id for s in changed}),
        )
        files = {r["id"]: dict(r) for r in rows}
        await self._after_arrivals(
            conn, [e for e in envelopes if e.event.file_id not in files], lambda s: s.file_id
        )
        out: list[Envelope] = []
        for cause, series in zip(envelopes, changed, strict=True):
            row = files.get(series.file_id)
            if row is None:
                continue  # the file was deleted (or its folder was): nothing to show it on
            events: list[Event] = []
            if series.count == 0:
                if not row["tombstone"]:
                    events.append(ev.FileTombstoned(file_id=row["id"], folder_id=row["folder_id"]))
                    row["tombstone"] = True
            else:
                # The file's content is the series' first slice: one that left (its
                # object gone or changed) is released, so the file follows.
                content = series.content_key
                events.append(
                    ev.DicomSeriesExtended(
                        file_id=series.file_id,
                        size=series.size,
                        sha256=series.sha256,
                        dicom=domain.series_facts(series),
                        blob_key=content if content != row["blob_key"] else None,
                    )
                )
                row["blob_key"] = content
                if row["tombstone"]:
                    events.append(ev.FileReturned(file_id=row["id"], folder_id=row["folder_id"]))
                    row["tombstone"] = False
            changes = appended(ev.file_stream(row["id"]), events, after=row["version"])
            row["version"] += len(events)
            out += envelopes_of(changes, Cause.of(cause), cause.occurred_at)
        await self.write(conn, out)

    # -- the datasets context's links, mirrored for the in_dataset/dataset_synced filters --

    @reactions.on(ds.DatasetCreated)
    async def when_dataset_created(
        self, conn: Conn, envelopes: Sequence[Received[ds.DatasetCreated]]
    ) -> None:
        await links.apply_received(conn, envelopes)

    @reactions.on(ds.DatasetUnsynced)
    async def when_dataset_unsynced(
        self, conn: Conn, envelopes: Sequence[Received[ds.DatasetUnsynced]]
    ) -> None:
        await links.apply_received(conn, envelopes)

    @reactions.on(ds.DatasetResynced)
    async def when_dataset_resynced(
        self, conn: Conn, envelopes: Sequence[Received[ds.DatasetResynced]]
    ) -> None:
        await links.apply_received(conn, envelopes)

    @reactions.on(ds.DatasetDeleted)
    async def when_dataset_deleted(
        self, conn: Conn, envelopes: Sequence[Received[ds.DatasetDeleted]]
    ) -> None:
        await links.apply_received(conn, envelopes)

    @reactions.on(ds.FilesLinked)
    async def when_files_linked(
        self, conn: Conn, envelopes: Sequence[Received[ds.FilesLinked]]
    ) -> None:
        await links.apply_received(conn, envelopes)

    @reactions.on(ds.FilesUnlinked)
    async def when_files_unlinked(
        self, conn: Conn, envelopes: Sequence[Received[ds.FilesUnlinked]]
    ) -> None:
        await links.apply_received(conn, envelopes)


def _require_roles(
    ids: Sequence[uuid.UUID],
    roles: dict[uuid.UUID, str | None],
    needed: str,
    what: str,
    absent: str,
    where: str,
) -> None:
    """Every id found with at least `needed`: one the caller may not see is reported
    missing (404, like one that is not there), then those seen with too weak a role (403)."""
    missing = set(ids) - {i for i, role in roles.items() if role}
    if missing:
        listed = ", ".join(sorted(str(m) for m in missing))
        raise domain.NotFound(
            "not_found", f"these {what} {absent}: {listed}", {f"missing_{what}": listed}
        )
    weak = sorted(str(i) for i, role in roles.items() if role and RANK[role] < RANK[needed])
    if weak:
        raise Refused(
            403,
            "forbidden",
            f"these {what} need the {needed} role {where}: {', '.join(weak)}",
            {"role_needed": needed, f"forbidden_{what}": weak},
        )
