"""Datasets commands, and the reactions that keep them in step with the catalog.

Commands take the caller's `Access`: a dataset's role comes from the dataset
(creator, org admin, shares), a file's visibility from its folder's path in
the mirror of the catalog's tree.
"""

from __future__ import annotations

import dataclasses
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import asyncpg
import httpx

from services.datasets import domain
from services.datasets.projections import ORPHANS_OF, membership, tree
from shared.contracts.catalog import (
    FileDeleted,
    FileMoved,
    FilePurged,
    FileRestored,
    FileReturned,
    FilesRestored,
    FilesUploaded,
    FileTombstoned,
    FileUploaded,
    FolderCreated,
    FolderDeleted,
    FolderMoved,
    FolderPurged,
    FolderRestored,
)
from shared.contracts.datasets import FilesLinked, FilesUnlinked, dataset_stream
from shared.contracts.envelope import Cause, Caused, Change, Envelope, envelopes_of
from shared.kit import identity
from shared.kit.access import Access, valid_role
from shared.kit.db import Conn
from shared.kit.errors import Refused
from shared.kit.reactions import Reactions, Received
from shared.kit.service import Handlers

DATASET_COLUMNS = "id, version, name, synced_folder_id, created_by"
Links = set[tuple[uuid.UUID, uuid.UUID]]  # (dataset, file)
# Creating a synced dataset takes it exclusively, reactions to the catalog shared: else a
# file could reach the folder between the creation's read of its files and its commit,
# while the reaction, not seeing the uncommitted dataset yet, links it to none.
SYNC_LOCK = zlib.crc32(b"files.datasets.sync")

# A folder path through the constituent folder of an image group: never synced.
IN_CONSTITUENT = """EXISTS (SELECT 1 FROM datasets.folders c
    WHERE c.id = ANY({path}) AND c.constituent_of IS NOT NULL)"""
# Which synced datasets a file belongs in: those whose folder is on the file's path,
# unless the path goes through an image group's constituent folder. A file still below
# a folder deleted from the mirror is one whose events from before the deletion are
# still coming (the catalog moves it out first, or deletes it with the folder): its
# path is the folder's as it was, and the datasets that stopped following that folder
# when it went still count, as they did when the catalog made those events. Else the
# outcome would hang on whether the folder's deletion or the file's move arrived first.
FOLDERS_AS_THEY_WERE = """(SELECT id, path FROM datasets.folders
    UNION ALL SELECT id, path FROM datasets.deleted_folders)"""


def _covering(placed: str) -> str:
    """Which synced datasets hold what `placed` names (rows of `key`, `folder_id`): the
    datasets' rows of (`dataset_id`, `key`)."""
    return f"""
    WITH placed AS (
        SELECT p.key, fo.path FROM ({placed}) p
        JOIN {FOLDERS_AS_THEY_WERE} fo ON fo.id = p.folder_id
        WHERE NOT {IN_CONSTITUENT.format(path="fo.path")}
          AND NOT EXISTS (SELECT 1 FROM datasets.deleted_folders c
                          WHERE c.id = ANY(fo.path) AND c.constituent_of IS NOT NULL))
    SELECT d.id AS dataset_id, p.key FROM placed p
    JOIN datasets.datasets d ON d.synced_folder_id = ANY(p.path)
    UNION ALL
    -- Few rows: a deleted folder's goes when it is restored (its datasets follow it
    -- again), or once no event from before its deletion can come.
    -- The whole branch skipped, once a statement, while there are none.
    SELECT d.id, p.key FROM placed p
    JOIN datasets.datasets d ON d.unsynced_from = ANY(p.path)
    WHERE EXISTS (SELECT 1 FROM datasets.deleted_folders)
      AND d.synced_folder_id IS NULL
      AND EXISTS (SELECT 1 FROM datasets.deleted_folders x WHERE x.id = d.unsynced_from)
"""


# Files, by their folder in the mirror ($1: the files).
COVERAGE = _covering(
    "SELECT f.id AS key, f.folder_id FROM datasets.files f WHERE f.id = ANY($1::uuid[])"
)
# Folders, for the files in them ($1: the folders): what COVERAGE finds of each file
# there, from one look-up a folder rather than one a file.
FOLDER_COVERAGE = _covering("SELECT x.id AS key, x.id AS folder_id FROM unnest($1::uuid[]) x(id)")
# The folders kept as they were when deleted that no event still to come can need: every
# event of the source up to the consumer's watermark is applied ($1: consumer, $2: source).
# (Rows another replica's reaction holds are left to a later batch: no lock waits.)
PRUNE_DELETED = """DELETE FROM datasets.deleted_folders WHERE id IN (
    SELECT id FROM datasets.deleted_folders WHERE deleted_at <= (
        SELECT position FROM {schema}.watermarks WHERE consumer = $1 AND source = $2)
    FOR UPDATE SKIP LOCKED)"""


# A dataset with the caller's share of it ($2: the caller's user id).
DATASET_FOR = """
    SELECT d.id, d.version, d.name, d.synced_folder_id, d.created_by, s.role AS shared_role
    FROM datasets.datasets d
    LEFT JOIN datasets.shares s ON s.dataset_id = d.id AND s.user_id = $2
    WHERE d.id = $1
"""


def files_seen(access: Access, files: str = "f", param: int = 1) -> tuple[str, str, list[Any]]:
    """How to keep only the files the caller sees (at least `user` on the folder path):
    (joins, condition, arguments) for a query over `datasets.files {files}`, the
    argument numbered `param`. An org admin sees every file, without a join."""
    roots = access.roots
    if roots is None:
        return "", "TRUE", []
    return (
        f"JOIN datasets.folders seen_fo ON seen_fo.id = {files}.folder_id",
        f"seen_fo.path && ${param}::uuid[]",
        [roots],
    )


# How many of each dataset's files the caller sees ($1: the datasets, $2: the folders
# whose subtrees they see): the files `GET /v1/datasets/{id}/files` lists them, counted in
# one statement for a page of datasets (an index scan of each one's links, joined to the
# mirror by hash: no round trip a file). `files_key` is a digest of which files they are:
# an xor of their ids' hashes, which changes with any one in or out, also a file moved out
# and another in, and which links and unlinks of files they do not see leave as it was.
VISIBLE_COUNTS = """
    SELECT m.dataset_id, count(*) AS n,
           bit_xor(hashtextextended(m.file_id::text, 0)) AS files_key
    FROM datasets.members m
    JOIN datasets.files f ON f.id = m.file_id
    JOIN datasets.folders fo ON fo.id = f.folder_id
    WHERE m.dataset_id = ANY($1::uuid[]) AND fo.path && $2::uuid[]
    GROUP BY m.dataset_id
"""


class Seen(NamedTuple):
    """A dataset's files as the caller may know them."""

    file_count: int
    # The digest of which files they are (`VISIBLE_COUNTS`); None to a caller who sees
    # every file, to whom the dataset's own version tells nothing they may not know.
    files_key: int | None


async def visible_files(
    conn: Any, access: Access, rows: Sequence[asyncpg.Record]
) -> dict[uuid.UUID, Seen]:
    """Each dataset's `file_count` as the caller may know it: the files of it they see,
    as its file list shows them. An org admin sees every file (the count kept on the
    dataset); anyone else, only those in folders they have a role on, whoever they are
    to the dataset (its creator too: a grant lost on a folder hides its files, and how
    many there are, as it hides their names). conn: a connection or the pool."""
    roots = access.roots
    if roots is None:
        return {r["id"]: Seen(r["file_count"], None) for r in rows}
    seen = {r["id"]: Seen(0, 0) for r in rows}
    counted = [r["id"] for r in rows if r["file_count"]]
    if counted and roots:
        for row in await conn.fetch(VISIBLE_COUNTS, counted, roots):
            seen[row["dataset_id"]] = Seen(row["n"], row["files_key"])
    return seen


def _role(access: Access, row: asyncpg.Record | None) -> str | None:
    return None if row is None else domain.role_of(access, row["created_by"], row["shared_role"])


def _dataset(row: asyncpg.Record) -> domain.Dataset:
    return domain.Dataset(
        row["id"], row["version"], row["name"], row["synced_folder_id"], row["created_by"]
    )


def _by_dataset(links: Iterable[tuple[uuid.UUID, uuid.UUID]]) -> dict[uuid.UUID, list[uuid.UUID]]:
    grouped: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for dataset_id, file_id in links:
        grouped[dataset_id].append(file_id)
    return grouped


# The event that caused each file's change (the last of a batch's about it: what it did
# is what the mirror shows). A dataset change a reaction records carries the cause of
# the request that made it for those files, not that of the batch's first event, which
# may be another user's (a batch holds a run of one type, whoever caused it): its links
# are recorded one group a request (actor and correlation id), each group's events with
# the cause of the first of its events in the batch. Not one group an event: a sync or
# import of 100,000 files, one event each, or a deleted tree of 1,000 folders, would
# record as many events a dataset, where one request's links go in pages of 5,000.
Causes = dict[uuid.UUID, Received[Any]]
# A dataset's links to change, one group a request: {dataset id: [(cause, file ids)]}.
ByCause = dict[uuid.UUID, list[tuple[Received[Any], list[uuid.UUID]]]]


def _causes(
    events: Sequence[Received[Any]], ids_of: Callable[[Any], Iterable[uuid.UUID]]
) -> Causes:
    """Each file these events are about (`ids_of(event)`), with the last of them about it."""
    return {i: e for e in events for i in ids_of(e)}


def _by_cause(links: Iterable[tuple[uuid.UUID, uuid.UUID]], causes: Causes) -> ByCause:
    grouped: ByCause = defaultdict(list)
    for dataset_id, file_id in links:
        grouped[dataset_id].append((causes[file_id], [file_id]))
    return {d: _by_request(groups) for d, groups in grouped.items()}


def _by_request(
    groups: Iterable[tuple[Received[Any], list[uuid.UUID]]],
) -> list[tuple[Received[Any], list[uuid.UUID]]]:
    """Groups of files of one request made one, with the cause of its first event, in
    the order of those events; each group's files sorted."""
    first: dict[tuple[str, str], Received[Any]] = {}
    files: dict[tuple[str, str], list[uuid.UUID]] = defaultdict(list)
    for cause, file_ids in groups:
        key = (cause.actor, cause.correlation_id)
        if key not in first or cause.position < first[key].position:
            first[key] = cause
        files[key].extend(file_ids)
    return [
        (first[key], sorted(files[key]))
        for key in sorted(first, key=lambda key: first[key].position)
    ]


def _one_of(events: Sequence[Received[Any]], folder_id: Any) -> Caused:
    """The event of this folder among `events` (each about one folder)."""
    return next(e for e in events if e.event.folder_id == folder_id)


async def _sync_lock(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", SYNC_LOCK)


# The events of this store that list files (`file_ids`): the audit shows a member only
# those of them they see.
LISTING_FILES = (FilesLinked.type, FilesUnlinked.type)


async def audit_seen(pool: Any, access: Access | None, items: list[dict[str, Any]]) -> None:
    """The audit's events as the caller may read them: those of a dataset they have no
    role on are hidden (a member's own audit holds the links their uploads, moves and
    deletes made in others' synced datasets: in their name, but of datasets they may not
    know exist); a dataset they see lists only the files they see, as its file list and
    count do (a link to a file of a folder they have no role on is none of their
    business, nor how many there are). Files gone from the mirror (purged) are no longer
    anyone's to see but an org admin's."""
    if access is None or access.roots is None:
        return  # a service's own call, or an org admin: everything
    await _hide_unseen_datasets(pool, access, items)
    listing = [i for i in items if i["type"] in LISTING_FILES and not i.get("hidden")]
    asked = {f for i in listing for f in i["data"].get("file_ids", [])}
    if not asked:
        return
    joins, seen, args = files_seen(access, param=1)
    rows = await pool.fetch(
        f"""SELECT f.id FROM datasets.files f {joins}
            WHERE f.id = ANY($2::uuid[]) AND {seen}""",
        *args,
        [uuid.UUID(f) for f in asked],
    )
    shown = {str(r["id"]) for r in rows}
    for item in listing:
        item["data"]["file_ids"] = [f for f in item["data"]["file_ids"] if f in shown]


async def _hide_unseen_datasets(pool: Any, access: Access, items: list[dict[str, Any]]) -> None:
    """Marks `hidden` the events of datasets the caller has no role on. A deleted
    dataset's are its creator's (by its first event) and, of the others, those the
    caller recorded by their own request (no causation): they acted on it themselves."""
    subjects = {i["subject_id"] for i in items if i["subject_id"] is not None}
    if not subjects:
        return
    rows = await pool.fetch(
        """SELECT x.id, d.created_by, s.role AS shared_role, d.id IS NOT NULL AS present,
                  (SELECT e.metadata->>'actor' FROM datasets.events e
                   WHERE e.stream_id = 'dataset-' || x.id AND e.stream_version = 1) AS creator
           FROM unnest($1::uuid[]) AS x(id)
           LEFT JOIN datasets.datasets d ON d.id = x.id
           LEFT JOIN datasets.shares s ON s.dataset_id = d.id AND s.user_id = $2""",
        [uuid.UUID(i) for i in subjects],
        access.user_id,
    )
    seen = {
        str(r["id"])
        for r in rows
        if (r["present"] and _role(access, r) is not None)
        or (not r["present"] and r["creator"] == access.user_id)
    }
    for item in items:
        own_request = item["actor_id"] == access.user_id and item["causation_id"] is None
        if item["subject_id"] not in seen and not own_request:
            item["hidden"] = True


class Datasets(Handlers):
    reactions = Reactions("datasets")

    async def record(self, conn: Conn, changes: Sequence[Change], cause: Cause) -> int:
        return await self._append(conn, envelopes_of(changes, cause))

    async def _append(self, conn: Conn, envelopes: list[Envelope]) -> int:
        if not envelopes:
            return 0
        await membership.apply(conn, envelopes)
        return await self.store.append(conn, envelopes)

    async def dataset(
        self, conn: Conn, dataset_id: uuid.UUID, access: Access, needed: str
    ) -> domain.Dataset:
        """The dataset, locked for a change, if the caller has the `needed` role on it."""
        row = await conn.fetchrow(f"{DATASET_FOR} FOR UPDATE OF d", dataset_id, access.user_id)
        domain.require(_role(access, row), needed, dataset_id)
        assert row is not None
        return _dataset(row)

    async def require(self, conn: Any, dataset_id: uuid.UUID, access: Access, needed: str) -> str:
        """The caller's role on the dataset, if at least `needed` (404 if they have none).
        conn: a connection or the pool."""
        row = await conn.fetchrow(DATASET_FOR, dataset_id, access.user_id)
        return domain.require(_role(access, row), needed, dataset_id)

    # -- commands --------------------------------------------------------------------

    async def create(
        self,
        cause: Cause,
        access: Access,
        *,
        name: str,
        description: str,
        synced_folder_id: uuid.UUID | None,
    ) -> tuple[uuid.UUID, int]:
        dataset_id = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            files: list[uuid.UUID] = []
            if synced_folder_id is not None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SYNC_LOCK)
                # FOR SHARE: the folder cannot go away before the dataset records it.
                path = await conn.fetchval(
                    "SELECT path FROM datasets.folders WHERE id = $1 FOR SHARE", synced_folder_id
                )
                # A folder the caller has no role on does not exist, for them.
                if path is None or access.role_on(path) is None:
                    raise Refused(
                        404,
                        "not_found",
                        f"folder {synced_folder_id} does not exist",
                        {"synced_folder_id": str(synced_folder_id)},
                    )
                group = await conn.fetchval(
                    """SELECT constituent_of FROM datasets.folders
                       WHERE id = ANY($1::uuid[]) AND constituent_of IS NOT NULL LIMIT 1""",
                    path,
                )
                if group is not None:
                    raise Refused(
                        422,
                        "constituent_folder",
                        f"folder {synced_folder_id} holds the images of image group {group}"
                        " (or lies inside such a folder); such folders are never synced",
                        {"synced_folder_id": str(synced_folder_id), "group_file_id": str(group)},
                    )
                files = [
                    r["id"]
                    for r in await conn.fetch(
                        f"""SELECT f.id FROM datasets.files f
                           JOIN datasets.folders fo ON fo.id = f.folder_id
                           WHERE fo.path @> ARRAY[$1::uuid]
                             AND NOT {IN_CONSTITUENT.format(path="fo.path")}
                           FOR SHARE OF f""",
                        synced_folder_id,
                    )
                ]
            changes = domain.create(dataset_id, name, description, synced_folder_id, files)
            return dataset_id, await self.record(conn, changes, cause)

    async def update(
        self,
        cause: Cause,
        access: Access,
        dataset_id: uuid.UUID,
        *,
        name: str | None,
        description: str | None,
    ) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            dataset = await self.dataset(conn, dataset_id, access, "editor")
            current = await conn.fetchval(
                "SELECT description FROM datasets.datasets WHERE id = $1", dataset_id
            )
            changes = domain.update(dataset, current, name=name, new_description=description)
            return await self.record(conn, changes, cause)

    async def delete(self, cause: Cause, access: Access, dataset_id: uuid.UUID) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            dataset = await self.dataset(conn, dataset_id, access, "admin")
            return await self.record(conn, domain.delete(dataset), cause)

    async def add_files(
        self, cause: Cause, access: Access, dataset_id: uuid.UUID, file_ids: Sequence[uuid.UUID]
    ) -> tuple[int, int]:
        """Link files, all or none; returns (how many were new, position). Files the
        caller may not see are refused exactly as unknown ones are."""
        wanted = list(dict.fromkeys(file_ids))
        async with self.pool.acquire() as conn, conn.transaction():
            # The role before the files, so that one who may not edit the dataset
            # learns nothing about them.
            await self.require(conn, dataset_id, access, "editor")
            # Files first, then the dataset: the same order as the deletion reaction
            # takes its locks, so the two wait for each other instead of deadlocking.
            joins, seen, args = files_seen(access, param=2)
            present = {
                r["id"]
                for r in await conn.fetch(
                    f"""SELECT f.id FROM datasets.files f {joins}
                        WHERE f.id = ANY($1::uuid[]) AND {seen} FOR SHARE OF f""",
                    wanted,
                    *args,
                )
            }
            domain.files_refused(
                wanted, list(present), "files_not_found", "do not exist (or were deleted)"
            )
            dataset = await self.dataset(conn, dataset_id, access, "editor")
            new = [
                r["id"]
                for r in await conn.fetch(
                    """SELECT x.id FROM unnest($2::uuid[]) WITH ORDINALITY AS x(id, n)
                       WHERE NOT EXISTS (SELECT 1 FROM datasets.members m
                                         WHERE m.dataset_id = $1 AND m.file_id = x.id)
                       ORDER BY x.n""",
                    dataset_id,
                    wanted,
                )
            ]
            position = await self.record(conn, domain.link(dataset, new, "added"), cause)
            return len(new), position

    async def remove_file(
        self, cause: Cause, access: Access, dataset_id: uuid.UUID, file_id: uuid.UUID
    ) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            dataset = await self.dataset(conn, dataset_id, access, "editor")
            member = await conn.fetchval(
                "SELECT 1 FROM datasets.members WHERE dataset_id = $1 AND file_id = $2",
                dataset_id,
                file_id,
            )
            # A file the caller may not see is answered as one not in the dataset.
            if member is None or not await self.sees_file(conn, access, file_id):
                raise Refused(
                    404, "not_found", f"file {file_id} is not in dataset {dataset.name!r}"
                )
            return await self.record(conn, domain.unlink(dataset, [file_id], "removed"), cause)

    async def remove_files(
        self, cause: Cause, access: Access, dataset_id: uuid.UUID, file_ids: Sequence[uuid.UUID]
    ) -> tuple[int, int]:
        """Unlink files, all or none, in one statement; returns (how many, position).
        A file not in the dataset, or that the caller may not see, is refused as the
        one-file route refuses it (404), named with the others."""
        wanted = list(dict.fromkeys(file_ids))
        async with self.pool.acquire() as conn, conn.transaction():
            dataset = await self.dataset(conn, dataset_id, access, "editor")
            roots = access.roots
            # As `sees_file`: a file the mirror does not know (yet) is not held back.
            members = await conn.fetch(
                """SELECT x.id FROM unnest($2::uuid[]) WITH ORDINALITY AS x(id, n)
                   JOIN datasets.members m ON m.dataset_id = $1 AND m.file_id = x.id
                   LEFT JOIN datasets.files f ON f.id = x.id
                   LEFT JOIN datasets.folders fo ON fo.id = f.folder_id
                   WHERE $3::uuid[] IS NULL OR f.id IS NULL OR fo.path && $3::uuid[]
                   ORDER BY x.n""",
                dataset_id,
                wanted,
                roots,
            )
            found = [r["id"] for r in members]
            domain.files_refused(
                wanted, found, "files_not_in_dataset", f"are not in dataset {dataset.name!r}"
            )
            position = await self.record(conn, domain.unlink(dataset, found, "removed"), cause)
            return len(found), position

    async def sees_file(self, conn: Any, access: Access, file_id: uuid.UUID) -> bool:
        """Whether the caller has a role on the file's folder. A file the mirror does
        not know (yet) is left to the caller's other checks. conn: or the pool."""
        if access.org_admin:
            return True
        row = await conn.fetchrow(
            """SELECT fo.path FROM datasets.files f
               LEFT JOIN datasets.folders fo ON fo.id = f.folder_id WHERE f.id = $1""",
            file_id,
        )
        return row is None or (row["path"] is not None and access.role_on(row["path"]) is not None)

    # -- sharing ---------------------------------------------------------------------

    async def _lookup(self, asked: dict[str, list[str]]) -> dict[str, Any]:
        """The ACL context's answer about users, by email or id."""
        url = f"{self.parts.settings.acl_url}/internal/users/lookup"
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as http:
                answer = await http.post(
                    url,
                    json=asked,
                    headers={
                        identity.HEADER: self.parts.identity.for_service("datasets", audience="acl")
                    },
                )
        except httpx.HTTPError as error:
            raise Refused(
                503, "acl_unavailable", "could not look the users up; try again"
            ) from error
        if answer.status_code != 200:
            raise Refused(
                503,
                "acl_unavailable",
                f"could not look the users up (the ACL service answered {answer.status_code})",
            )
        body: dict[str, Any] = answer.json()
        return body

    async def people(self, user_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The emails and names of these users, by id, from the ACL context. Empty when
        it cannot be asked: who has a role is this context's to say, and the list is
        still right without the names (a member cannot look users up otherwise)."""
        ids = [u for u in dict.fromkeys(user_ids) if _is_uuid(u)]
        if not ids:
            return {}
        try:
            body = await self._lookup({"ids": ids})
        except Refused:
            return {}
        return dict(body.get("users") or {})

    async def users_by_email(self, emails: Sequence[str]) -> list[uuid.UUID]:
        """The users with these emails, from the ACL context; all or none."""
        body = await self._lookup({"emails": list(emails)})
        unknown = list(body.get("unknown") or [])
        if unknown:
            shown = ", ".join(unknown[:10]) + (" …" if len(unknown) > 10 else "")
            raise Refused(
                422,
                "unknown_emails",
                f"no user has these emails: {shown}",
                {"unknown_emails": unknown[:1000]},
            )
        return [uuid.UUID(str(u)) for u in body.get("found", {}).values()]

    async def shares(self, conn: Any, dataset_id: uuid.UUID) -> dict[str, str]:
        rows = await conn.fetch(
            "SELECT user_id, role FROM datasets.shares WHERE dataset_id = $1", dataset_id
        )
        return {r["user_id"]: r["role"] for r in rows}

    async def share(
        self,
        cause: Cause,
        access: Access,
        dataset_id: uuid.UUID,
        emails: Sequence[str],
        role: str,
    ) -> int:
        valid_role(role)
        # Checked before asking the ACL context, and again under the dataset's lock.
        await self.require(self.pool, dataset_id, access, "admin")
        user_ids = await self.users_by_email(emails)
        async with self.pool.acquire() as conn, conn.transaction():
            dataset = await self.dataset(conn, dataset_id, access, "admin")
            shares = await self.shares(conn, dataset_id)
            return await self.record(conn, domain.share(dataset, shares, user_ids, role), cause)

    async def unshare(
        self, cause: Cause, access: Access, dataset_id: uuid.UUID, user_id: uuid.UUID
    ) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            dataset = await self.dataset(conn, dataset_id, access, "admin")
            shares = await self.shares(conn, dataset_id)
            return await self.record(conn, domain.unshare(dataset, shares, user_id), cause)

    # -- reactions to the catalog ----------------------------------------------------

    # Each takes SYNC_LOCK first, before any row lock of the batch's transaction, so it
    # cannot deadlock with a creation waiting on those rows.

    @reactions.on(FileUploaded)
    @reactions.on(FilesUploaded)
    async def when_file_uploaded(
        self,
        conn: Conn,
        uploaded: Sequence[Received[FileUploaded] | Received[FilesUploaded]],
    ) -> None:
        await _sync_lock(conn)
        if all(e.type == FilesUploaded.type for e in uploaded):  # a run is of one type
            await self._pages_placed(conn, uploaded)  # type: ignore[arg-type]
            return
        causes = _causes(
            uploaded,
            lambda e: e.event.file_ids if isinstance(e.event, FilesUploaded) else [e.event.file_id],
        )
        await self._resync(conn, uploaded, causes)

    async def _pages_placed(self, conn: Conn, pages: Sequence[Received[FilesUploaded]]) -> None:
        """An upload's pages: their files linked to the synced datasets over their
        folders, as `_resync` links them, from less. A page's files are new to the mirror
        (its plain insert fails the batch for one that is not: a test pins it), so none
        was in any dataset before it, and all of a page's files land in its folder: one
        look-up a folder after the insert, where COVERAGE probed each file twice (the
        consumer's costliest statement in bench.upload_small)."""
        await self._prune_deleted(conn, pages[0].source)
        await tree.apply_received(conn, pages)
        covering: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)  # folder: datasets
        for r in await conn.fetch(FOLDER_COVERAGE, list({e.event.folder_id for e in pages})):
            covering[r["key"]].append(r["dataset_id"])
        if not covering:
            return
        after = {
            (dataset_id, file_id)
            for e in pages
            for dataset_id in covering.get(e.event.folder_id, [])
            for file_id in e.event.file_ids
        }
        causes = _causes(pages, lambda e: e.event.file_ids)
        joined = after - await self._members(conn, {f for _, f in after})
        await self._relink(conn, _by_cause(joined, causes), "synced", {}, "")

    @reactions.on(FileTombstoned)
    async def when_file_tombstoned(
        self, conn: Conn, gone: Sequence[Received[FileTombstoned]]
    ) -> None:
        await _sync_lock(conn)
        await self._resync(conn, gone, _causes(gone, lambda e: [e.event.file_id]))

    @reactions.on(FileReturned)
    async def when_file_returned(self, conn: Conn, back: Sequence[Received[FileReturned]]) -> None:
        await _sync_lock(conn)
        await self._resync(conn, back, _causes(back, lambda e: [e.event.file_id]))

    @reactions.on(FileMoved)
    async def when_file_moved(self, conn: Conn, moved: Sequence[Received[FileMoved]]) -> None:
        await _sync_lock(conn)
        causes = _causes(moved, lambda e: [e.event.file_id])
        await self._resync(conn, moved, causes)
        # A file restored while its folder's restore was still to come here (and so not
        # linked back by its FilesRestored) may move out before that folder's restore
        # applies, which then no longer finds it below: its links come back now.
        await self._links_back(conn, causes)

    @reactions.on(FolderMoved)
    async def when_folder_moved(self, conn: Conn, moved: Sequence[Received[FolderMoved]]) -> None:
        await _sync_lock(conn)
        for envelope in moved:
            below = [
                r["id"]
                for r in await conn.fetch(
                    # Subfolders deleted by an event after this one (applied first) too.
                    f"""SELECT f.id FROM datasets.files f
                       JOIN {FOLDERS_AS_THEY_WERE} fo ON fo.id = f.folder_id
                       WHERE fo.path @> ARRAY[$1::uuid]""",
                    envelope.event.folder_id,
                )
            ]
            await self._resync(conn, [envelope], dict.fromkeys(below, envelope))

    @reactions.on(FolderCreated)
    async def when_folder_created(
        self, conn: Conn, created: Sequence[Received[FolderCreated]]
    ) -> None:
        """Files whose folder, or an orphan folder above them, came before the folder
        (another partition): they take their place in synced folders only now."""
        await _sync_lock(conn)
        # Each file with the folder whose creation places it (its own, or one above it).
        by_folder = {e.event.folder_id: e for e in created}
        early: Causes = {
            r["id"]: by_folder[r["folder_id"]]
            for r in await conn.fetch(
                f"""SELECT f.id, f.folder_id FROM datasets.files f
                    WHERE f.folder_id = ANY($1::uuid[])
                    UNION
                    SELECT f.id, o.parent_id FROM ({ORPHANS_OF}) AS o
                    JOIN datasets.folders fo ON fo.path @> ARRAY[o.id]
                    JOIN datasets.files f ON f.folder_id = fo.id""",
                list(by_folder),
            )
        }
        await self._resync(conn, created, early)
        # Files restored into the folder before it reached the mirror: their links too.
        await self._links_back(conn, early)

    async def _coverage(self, conn: Conn, files: Sequence[uuid.UUID]) -> Links:
        return {(r["dataset_id"], r["key"]) for r in await conn.fetch(COVERAGE, list(files))}

    async def _prune_deleted(self, conn: Conn, source: str) -> None:
        # Kept folders go once the watermark passes them (not only when a later deletion
        # arrives in order: on a lagging consumer that may not come).
        await conn.execute(
            PRUNE_DELETED.format(schema=self.parts.inbox.schema), self.parts.inbox.consumer, source
        )

    async def _resync(self, conn: Conn, envelopes: Sequence[Received[Any]], causes: Causes) -> None:
        """Apply the tree change, then link what came into a synced folder and unlink
        what left one (`causes`: the files it may move, each with its event). Each
        reaction compares the mirror before and after itself, so events of different
        streams converge in whatever order they arrive."""
        files = list(causes)
        await self._prune_deleted(conn, envelopes[0].source)
        before = await self._coverage(conn, files)
        await tree.apply_received(conn, envelopes)
        after = await self._coverage(conn, files)
        if not before and not after:
            return  # in no synced dataset, before or after: nothing to compare
        members = await self._members(conn, {f for _, f in before | after})
        joined = {link for link in after - before if link not in members}
        left = {link for link in before - after if link in members}
        await self._relink(
            conn, _by_cause(joined, causes), "synced", _by_cause(left, causes), "moved_out"
        )

    async def _members(self, conn: Conn, files: Iterable[uuid.UUID]) -> Links:
        rows = await conn.fetch(
            "SELECT dataset_id, file_id FROM datasets.members WHERE file_id = ANY($1::uuid[])",
            list(files),
        )
        return {(r["dataset_id"], r["file_id"]) for r in rows}

    async def _relink(
        self,
        conn: Conn,
        to_link: ByCause,
        joined_reason: str,
        to_unlink: ByCause,
        left_reason: str,
    ) -> None:
        await self._record_links(
            conn, [(False, to_unlink, left_reason), (True, to_link, joined_reason)]
        )

    async def _record_links(self, conn: Conn, parts: Sequence[tuple[bool, ByCause, str]]) -> None:
        """Links made (True) or removed (False) for a reason, each dataset's in the
        order of `parts`, recorded as its events: each event lists files of one cause,
        and carries it."""
        parts = [p for p in parts if p[1]]
        if not parts:
            return
        rows = await conn.fetch(
            f"""SELECT {DATASET_COLUMNS} FROM datasets.datasets
                WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE""",
            list({d for _, ids, _ in parts for d in ids}),
        )
        envelopes: list[Envelope] = []
        for row in rows:
            dataset = _dataset(row)
            for linking, ids, reason in parts:
                for cause, group in ids.get(dataset.id, []):
                    made = (domain.link if linking else domain.unlink)(dataset, group, reason)
                    dataset = dataclasses.replace(dataset, version=dataset.version + len(made))
                    envelopes += envelopes_of(made, Cause.of(cause))
        await self._append(conn, envelopes)

    @reactions.on(FolderRestored)
    async def when_folders_restored(
        self, conn: Conn, restored: Sequence[Received[FolderRestored]]
    ) -> None:
        """A synced folder back from the trash is followed again by the datasets that
        stopped following it when it went (and still follow nothing else); then as a
        folder created: files that came before it take their place in synced folders."""
        await _sync_lock(conn)
        rows = await conn.fetch(
            f"""SELECT {DATASET_COLUMNS}, unsynced_from FROM datasets.datasets
                WHERE unsynced_from = ANY($1::uuid[]) AND synced_folder_id IS NULL
                ORDER BY id FOR UPDATE""",
            [e.event.folder_id for e in restored],
        )
        await self._append(
            conn,
            [
                envelope
                for r in rows
                for envelope in envelopes_of(
                    domain.resync(_dataset(r), r["unsynced_from"]),
                    Cause.of(_one_of(restored, r["unsynced_from"])),
                )
            ],
        )
        contents = [e.event.folder_id for e in restored if e.event.with_contents]
        last = restored[-1]
        since = {
            r["id"]: r["trashed_at"]
            for r in await conn.fetch(
                "SELECT id, trashed_at FROM datasets.trashed_folders WHERE id = ANY($1::uuid[])",
                contents,
            )
        }
        if (
            contents
            # A folder trashed before its trashing was kept here takes the way below:
            # which of its files went with it is not known here.
            and since.keys() >= set(contents)
            and await self.parts.inbox.applied_below(conn, last.source, last.position)
        ):
            # The mirror is current up to these events: the files that went to the trash
            # from these folders are the ones the catalog restores with them (their
            # FilesRestored events come next). Back in the mirror here, in one go, and
            # linked at once from one statement; those events then find nothing to do.
            # Only the files trashed with the folder or after it (a file deleted on its
            # own before it stays in the trash) and before the folder's restore (one
            # restored with it and deleted again may be here already, its events being
            # on another partition than the folder's).
            await tree.apply_received(conn, restored)
            await conn.execute(
                """WITH trashed AS (
                       SELECT * FROM unnest($1::uuid[], $3::bigint[]) AS y(id, since)),
                   bound AS (
                       -- Since the trashing of the outermost of them above it: a folder
                       -- that went with another one went after it, and the files below
                       -- both were kept aside at either's position. Joined by hash
                       -- over each path's folders (a batch may restore thousands).
                       SELECT x.folder_id, x.position, min(y.since) AS since
                       FROM unnest($1::uuid[], $2::bigint[]) AS x(folder_id, position)
                       JOIN datasets.folders fo ON fo.id = x.folder_id
                       CROSS JOIN LATERAL unnest(fo.path) AS above(id)
                       JOIN trashed y ON y.id = above.id
                       GROUP BY x.folder_id, x.position),
                   back AS (
                       DELETE FROM datasets.trashed_files t USING bound x
                       WHERE t.folder_id = x.folder_id
                         AND t.trashed_at >= x.since AND t.trashed_at < x.position
                       RETURNING t.id, t.folder_id)
                   INSERT INTO datasets.files (id, folder_id) SELECT id, folder_id FROM back
                   ON CONFLICT (id) DO NOTHING""",
                contents,
                [e.position for e in restored if e.event.with_contents],
                [since[f] for f in contents],
            )
            await self._links_back_below(conn, restored)
            return
        await self.when_folder_created(conn, restored)  # type: ignore[arg-type]
        by_folder = {e.event.folder_id: e for e in restored}
        # Each file with the first restore of a folder above it (or its own).
        below: Causes = {
            r["id"]: by_folder[r["cause"]]
            for r in await conn.fetch(
                """SELECT f.id, (SELECT x.id FROM unnest($1::uuid[]) WITH ORDINALITY AS x(id, n)
                                 WHERE x.id = ANY(fo.path) ORDER BY x.n LIMIT 1) AS cause
                   FROM datasets.files f
                   JOIN datasets.folders fo ON fo.id = f.folder_id
                   WHERE fo.path && $1::uuid[]""",
                list(by_folder),
            )
        }
        await self._links_back(conn, below)

    async def _links_back_below(
        self, conn: Conn, restored: Sequence[Received[FolderRestored]]
    ) -> None:
        """Every file below these folders (just back in the mirror) takes its place in
        the synced datasets above it, and gets back the links its deletion removed:
        computed, made and grouped by PostgreSQL, then recorded as the FilesLinked
        events that would make them (as a rebuild does), each with the cause of the
        first restore above its file (`cause`: that folder's id; restores in a batch are
        in position order). The links do not go through Python and back: at 100,000
        files that was 300,000 ids to encode, 0.8 s."""
        by_folder = {e.event.folder_id: e for e in restored}
        # Kept for this transaction only; made before the datasets it names are known,
        # so they can be locked (as every writer of their members does) before it is used.
        await conn.execute(
            f"""CREATE TEMPORARY TABLE links_back ON COMMIT DROP AS
                WITH folders AS (
                    SELECT fo.id, fo.path,
                           (SELECT x.id FROM unnest($1::uuid[]) WITH ORDINALITY AS x(id, n)
                            WHERE x.id = ANY(fo.path) ORDER BY x.n LIMIT 1) AS cause
                    FROM datasets.folders fo WHERE fo.path && $1::uuid[]),
                covering AS (
                    SELECT fo.id AS folder_id, d.id AS dataset_id FROM folders fo
                    JOIN datasets.datasets d ON d.synced_folder_id = ANY(fo.path)
                    WHERE NOT {IN_CONSTITUENT.format(path="fo.path")}),
                below AS (
                    SELECT f.id, f.folder_id, fo.cause FROM datasets.files f
                    JOIN folders fo ON fo.id = f.folder_id),
                wanted AS (
                    SELECT c.dataset_id, b.id AS file_id, b.cause, true AS by_sync
                    FROM below b JOIN covering c ON c.folder_id = b.folder_id
                    UNION ALL
                    SELECT t.dataset_id, t.file_id, b.cause, false FROM datasets.trashed_links t
                    JOIN below b ON b.id = t.file_id)
                -- A link both by sync and from the history comes back by sync. Hashed,
                -- not a correlated look-up (that one ran over 80 s at 100,000 files).
                -- A file's cause is one (its folder's).
                SELECT dataset_id, file_id, cause, bool_or(by_sync) AS by_sync FROM wanted
                GROUP BY dataset_id, file_id, cause""",
            list(by_folder),
        )
        # Its statistics, so that the planner knows it holds (say) 300,000 rows: without
        # them the statement below was planned from a guess and from the members' stale
        # statistics (the links just removed still counted), and a guess of one new link
        # chose a nested loop over trashed_links for each of them, quadratic (over ten
        # minutes at 100,000 files). Sorts and hashes of that size fit in memory.
        await conn.execute("ANALYZE links_back")
        await conn.execute("SET LOCAL work_mem = '64MB'")
        # Statements on the temporary table are prepared each time, not cached: the
        # next transaction's table is another one.
        locked = await (
            await conn.prepare(
                f"""SELECT {DATASET_COLUMNS} FROM datasets.datasets
                    WHERE id IN (SELECT dataset_id FROM links_back) ORDER BY id FOR UPDATE"""
            )
        ).fetch()
        # Only the datasets locked: one deleted since the table was made gets nothing.
        made = await (
            await conn.prepare(
                """WITH new AS (
                       SELECT l.* FROM links_back l
                       WHERE l.dataset_id = ANY($1::uuid[])
                         AND NOT EXISTS (SELECT 1 FROM datasets.members m
                                         WHERE m.dataset_id = l.dataset_id
                                           AND m.file_id = l.file_id)),
                   -- In the primary key's order: the index takes 300,000 rows a third
                   -- faster than in the hash's order (measured, 1.8-2.1 s against 2.4-3.1).
                   added AS (
                       INSERT INTO datasets.members (dataset_id, file_id)
                       SELECT dataset_id, file_id FROM new ORDER BY dataset_id, file_id),
                   -- Joined with the table, not with `new` (whose size the planner
                   -- can only guess): a link back, new or not, is no longer trashed.
                   kept AS (
                       DELETE FROM datasets.trashed_links t USING links_back l
                       WHERE t.file_id = l.file_id AND t.dataset_id = l.dataset_id
                         AND l.dataset_id = ANY($1::uuid[]))
                   SELECT dataset_id, by_sync, cause,
                          array_agg(file_id ORDER BY file_id) AS file_ids
                   FROM new GROUP BY dataset_id, by_sync, cause"""
            )
        ).fetch([r["id"] for r in locked])
        restores: dict[tuple[uuid.UUID, bool], list[tuple[Received[Any], list[uuid.UUID]]]] = (
            defaultdict(list)
        )
        for r in made:
            restores[r["dataset_id"], r["by_sync"]].append((by_folder[r["cause"]], r["file_ids"]))
        ids = {key: _by_request(groups) for key, groups in restores.items()}
        envelopes: list[Envelope] = []
        for row in locked:
            dataset = _dataset(row)
            for by_sync, reason in ((True, "synced"), (False, "restored")):
                for cause, file_ids in ids.get((dataset.id, by_sync), []):
                    linked = domain.link(dataset, file_ids, reason)
                    dataset = dataclasses.replace(dataset, version=dataset.version + len(linked))
                    envelopes += envelopes_of(linked, Cause.of(cause))
        if not envelopes:
            return
        counts: dict[uuid.UUID, int] = defaultdict(int)
        for (dataset_id, _), groups in ids.items():
            counts[dataset_id] += sum(len(file_ids) for _, file_ids in groups)
        last = {e.stream_id: e.stream_version for e in envelopes}
        await conn.execute(
            """UPDATE datasets.datasets d SET file_count = d.file_count + x.n, version = x.version
               FROM unnest($1::uuid[], $2::bigint[], $3::int[]) AS x(id, n, version)
               WHERE d.id = x.id""",
            list(counts),
            list(counts.values()),
            [last[dataset_stream(d)] for d in counts],
        )
        await self.store.append(conn, envelopes)

    @reactions.on(FilePurged)
    @reactions.on(FolderPurged)
    async def when_purged(
        self, conn: Conn, purged: Sequence[Received[FilePurged | FolderPurged]]
    ) -> None:
        await tree.apply_received(conn, purged)

    @reactions.on(FileRestored)
    @reactions.on(FilesRestored)
    async def when_files_restored(
        self,
        conn: Conn,
        restored: Sequence[Received[FileRestored | FilesRestored]],
    ) -> None:
        """Synced datasets take a restored file back by their sync, as an upload; the
        other links it lost when it was deleted come back from the history."""
        await _sync_lock(conn)
        placed = [
            (i, e.event.folder_id)
            for e in restored
            for i in (e.event.file_ids if isinstance(e.event, FilesRestored) else [e.event.file_id])
        ]
        files = [i for i, _ in placed]
        if not await conn.fetchval(
            """SELECT EXISTS (
                   SELECT 1 FROM unnest($1::uuid[], $2::uuid[]) AS x(id, folder_id)
                   WHERE NOT EXISTS (SELECT 1 FROM datasets.files f WHERE f.id = x.id)
                     AND EXISTS (SELECT 1 FROM datasets.folders fo WHERE fo.id = x.folder_id))""",
            files,
            [f for _, f in placed],
        ):
            # Already back with their folder (when_folders_restored), links and all; or
            # their folder is still in the trash for this mirror: its FolderRestored,
            # before them in the catalog but on another partition, is still to come, and
            # links every file then below it in one go (as it does for files that came
            # with it), rather than these a batch at a time now.
            await tree.apply_received(conn, restored)
            return
        causes = _causes(
            restored,
            lambda e: e.event.file_ids if isinstance(e.event, FilesRestored) else [e.event.file_id],
        )
        await self._resync(conn, restored, causes)
        await self._links_back(conn, causes)

    async def _links_back(self, conn: Conn, causes: Causes) -> None:
        """The links these files' deletion removed and that are not back yet."""
        back = [
            (r["dataset_id"], r["file_id"])
            for r in await conn.fetch(
                """SELECT t.dataset_id, t.file_id FROM datasets.trashed_links t
                   JOIN datasets.files f ON f.id = t.file_id
                   WHERE t.file_id = ANY($1::uuid[])
                     AND NOT EXISTS (
                         SELECT 1 FROM datasets.members m
                         WHERE m.dataset_id = t.dataset_id AND m.file_id = t.file_id)""",
                list(causes),
            )
        ]
        await self._relink(conn, _by_cause(back, causes), "restored", {}, "")

    @reactions.on(FileDeleted)
    async def when_files_deleted(
        self, conn: Conn, envelopes: Sequence[Received[FileDeleted]]
    ) -> None:
        await _sync_lock(conn)
        await tree.apply_received(conn, envelopes)
        causes = _causes(envelopes, lambda e: [e.event.file_id])
        gone = await self._members(conn, causes)
        await self._relink(conn, {}, "", _by_cause(gone, causes), "file_deleted")

    @reactions.on(FolderDeleted)
    async def when_folders_deleted(
        self, conn: Conn, envelopes: Sequence[Received[FolderDeleted]]
    ) -> None:
        await _sync_lock(conn)
        folder_ids = [e.event.folder_id for e in envelopes]
        last = envelopes[-1]
        in_order = await self.parts.inbox.applied_below(conn, last.source, last.position)
        if in_order:
            # The mirror shows the catalog as it was when these folders went, so the
            # files below them are the ones the catalog deletes with them (its
            # FileDeleted events come next). Unlinking them here, in one go, spares
            # the datasets a wait for 100,000 events; those then find nothing to do.
            # Otherwise (events before these still on their way) the FileDeleted
            # events unlink the files one batch at a time.
            # Grouped and sorted by PostgreSQL: 300,000 links come back as a few arrays,
            # one a dataset and cause (`cause`: the first of these deletions above the
            # file). Files that go to the trash are kept aside (`trashed_files`), for a
            # restore.
            by_folder = {e.event.folder_id: e for e in envelopes}
            deletions: ByCause = defaultdict(list)
            for r in await conn.fetch(
                """WITH below AS (
                           DELETE FROM datasets.files f USING datasets.folders fo
                           WHERE fo.id = f.folder_id AND fo.path && $1::uuid[]
                           RETURNING f.id, f.folder_id, fo.path),
                       -- Trashed at the position of the deleted folder above it.
                       kept AS (
                           INSERT INTO datasets.trashed_files (id, folder_id, trashed_at)
                           SELECT b.id, b.folder_id,
                                  (SELECT max(x.position)
                                   FROM unnest($1::uuid[], $3::bigint[]) AS x(id, position)
                                   WHERE x.id = ANY(b.path))
                           FROM below b WHERE $2
                           ON CONFLICT (id) DO UPDATE
                               SET folder_id = excluded.folder_id,
                                   trashed_at = excluded.trashed_at),
                       -- Looked up a folder, not a file (nor a link) at a time.
                       caused AS (
                           SELECT b.folder_id,
                                  (SELECT x.id
                                   FROM unnest($1::uuid[], $3::bigint[]) AS x(id, position)
                                   WHERE x.id = ANY(b.path) ORDER BY x.position LIMIT 1) AS cause
                           FROM (SELECT DISTINCT folder_id, path FROM below) b)
                       SELECT m.dataset_id, c.cause,
                              array_agg(m.file_id ORDER BY m.file_id) AS file_ids
                       FROM datasets.members m JOIN below b ON b.id = m.file_id
                       JOIN caused c ON c.folder_id = b.folder_id
                       GROUP BY m.dataset_id, c.cause""",
                folder_ids,
                all(e.event.trashed for e in envelopes),
                [e.position for e in envelopes],
            ):
                deletions[r["dataset_id"]].append((by_folder[r["cause"]], r["file_ids"]))
            gone = {d: _by_request(groups) for d, groups in deletions.items()}
            await self._relink(conn, {}, "", gone, "file_deleted")
        rows = await conn.fetch(
            f"""SELECT {DATASET_COLUMNS} FROM datasets.datasets
                WHERE synced_folder_id = ANY($1::uuid[]) ORDER BY id FOR UPDATE""",
            folder_ids,
        )
        await self._append(
            conn,
            [
                envelope
                for r in rows
                for envelope in envelopes_of(
                    domain.unsync(_dataset(r), r["synced_folder_id"]),
                    Cause.of(_one_of(envelopes, r["synced_folder_id"])),
                )
            ],
        )
        await tree.apply_received(conn, envelopes)
        if in_order:
            # No event from before these deletions (or earlier ones) is still to come:
            # the folders as they were when deleted are of no more use.
            await conn.execute(
                "DELETE FROM datasets.deleted_folders WHERE deleted_at <= $1", last.position
            )

    # -- queries ---------------------------------------------------------------------

    async def impact(
        self,
        file_ids: Sequence[uuid.UUID],
        folder_ids: Sequence[uuid.UUID],
        target_folder_id: uuid.UUID | None,
    ) -> list[dict[str, Any]]:
        """Links a delete (no target) or a move (to the target) would remove, per dataset."""
        async with self.pool.acquire() as conn:
            files = [
                r["id"]
                for r in await conn.fetch(
                    """SELECT f.id FROM datasets.files f
                       JOIN datasets.folders fo ON fo.id = f.folder_id
                       WHERE f.id = ANY($1::uuid[]) OR fo.path && $2::uuid[]""",
                    list(file_ids),
                    list(folder_ids),
                )
            ]
            if target_folder_id is None:
                lost = await self._members(conn, files)
            else:
                target_path = await conn.fetchval(
                    "SELECT path FROM datasets.folders WHERE id = $1", target_folder_id
                )
                members = await self._members(conn, files)
                covering = await self._coverage(conn, files)
                synced = {
                    r["id"]: r["synced_folder_id"]
                    for r in await conn.fetch(
                        "SELECT id, synced_folder_id FROM datasets.datasets"
                        " WHERE id = ANY($1::uuid[])",
                        list({d for d, _ in covering}),
                    )
                }
                # Folders that move keep their own subtrees: only syncs above them count.
                moving = {
                    r["id"]
                    for r in await conn.fetch(
                        "SELECT id FROM datasets.folders WHERE path && $1::uuid[]",
                        list(folder_ids),
                    )
                }
                lost = {
                    (d, f)
                    for d, f in covering & members
                    if synced[d] not in (target_path or []) and synced[d] not in moving
                }
            counts = _by_dataset(lost)
            names = {
                r["id"]: r["name"]
                for r in await conn.fetch(
                    "SELECT id, name FROM datasets.datasets WHERE id = ANY($1::uuid[])",
                    list(counts),
                )
            }
        return [
            {"id": str(d), "name": names.get(d, ""), "links_removed": len(f)}
            for d, f in sorted(counts.items(), key=lambda kv: names.get(kv[0], ""))
        ]


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
