"""Read models of the datasets context.

`membership` (datasets, their files, "linked to", who they are shared with) is
fed by the datasets' own events, inline in the transaction that records them,
and rebuilds from them. `tree` mirrors the catalog's folders and files, fed by the catalog's
events: it is what sync and validation look at.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.contracts import catalog as catalog_events
from shared.contracts import datasets as datasets_events
from shared.kit.projections import Projection
from shared.kit.reactions import Received

membership = Projection(
    name="datasets.membership",
    tables=("datasets.datasets", "datasets.members", "datasets.shares", "datasets.trashed_links"),
    ddl="""
    CREATE TABLE IF NOT EXISTS datasets.datasets (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        description text NOT NULL,
        synced_folder_id uuid,
        unsynced_from uuid,
        file_count bigint NOT NULL DEFAULT 0,
        version integer NOT NULL,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS datasets_synced ON datasets.datasets (synced_folder_id)
        WHERE synced_folder_id IS NOT NULL;
    CREATE TABLE IF NOT EXISTS datasets.members (
        dataset_id uuid NOT NULL,
        file_id uuid NOT NULL,
        PRIMARY KEY (dataset_id, file_id)
    );
    CREATE INDEX IF NOT EXISTS members_file ON datasets.members (file_id);
    CREATE INDEX IF NOT EXISTS datasets_creator ON datasets.datasets (created_by);
    -- user_id is text, as created_by is: both compare with the caller's id.
    CREATE TABLE IF NOT EXISTS datasets.shares (
        dataset_id uuid NOT NULL,
        user_id text NOT NULL,
        role text NOT NULL,
        PRIMARY KEY (dataset_id, user_id)
    );
    CREATE INDEX IF NOT EXISTS shares_user ON datasets.shares (user_id);
    -- Links their files' deletion removed: a file restored from the trash gets them back.
    CREATE TABLE IF NOT EXISTS datasets.trashed_links (
        file_id uuid NOT NULL,
        dataset_id uuid NOT NULL,
        PRIMARY KEY (file_id, dataset_id)
    );
    """,
)

tree = Projection(
    name="datasets.tree",
    tables=(
        "datasets.folders",
        "datasets.files",
        "datasets.trashed_files",
        "datasets.deleted_folders",
        "datasets.trashed_folders",
    ),
    # Follows the catalog's events as the consumer applies them: not from our store.
    replayable=False,
    ddl="""
    CREATE TABLE IF NOT EXISTS datasets.folders (
        id uuid PRIMARY KEY,
        path uuid[] NOT NULL
    );
    ALTER TABLE datasets.folders ADD COLUMN IF NOT EXISTS parent_id uuid;
    CREATE INDEX IF NOT EXISTS folders_path ON datasets.folders USING gin (path);
    CREATE INDEX IF NOT EXISTS folders_parent ON datasets.folders (parent_id);
    -- A constituent folder of an image group (its group file's id): never synced.
    ALTER TABLE datasets.folders ADD COLUMN IF NOT EXISTS constituent_of uuid;
    CREATE TABLE IF NOT EXISTS datasets.files (
        id uuid PRIMARY KEY,
        folder_id uuid NOT NULL
    );
    CREATE INDEX IF NOT EXISTS files_folder ON datasets.files (folder_id);
    -- Files in the catalog's trash, where they were: a folder restored brings them back
    -- into the mirror at once (handlers.when_folders_restored).
    CREATE TABLE IF NOT EXISTS datasets.trashed_files (
        id uuid PRIMARY KEY,
        folder_id uuid NOT NULL
    );
    CREATE INDEX IF NOT EXISTS trashed_files_folder ON datasets.trashed_files (folder_id);
    -- The catalog position of the event that put it there: a folder's restore brings
    -- back only the files trashed before it. A file restored with it and deleted again
    -- may reach the mirror first (its events are on another partition). NULL: a row
    -- from before this column, taken as trashed before any restore.
    ALTER TABLE datasets.trashed_files ADD COLUMN IF NOT EXISTS trashed_at bigint;
    -- Folders deleted, as they were when they went: an event from before a deletion,
    -- on another partition, may come after it (a file moved out just before its folder
    -- went) and must still find the datasets synced on the folder's path then.
    -- deleted_at: the deletion's catalog position; once every event before it is
    -- applied the row has done its work (handlers.when_folders_deleted drops it).
    CREATE TABLE IF NOT EXISTS datasets.deleted_folders (
        id uuid PRIMARY KEY,
        path uuid[] NOT NULL,
        constituent_of uuid,
        deleted_at bigint NOT NULL
    );
    CREATE INDEX IF NOT EXISTS deleted_folders_path ON datasets.deleted_folders USING gin (path);
    -- The catalog position of a folder's last move to the trash, until it is restored:
    -- its restore brings back the files trashed from it since (those that went with it),
    -- not those deleted on their own before it, which stay in the trash
    -- (handlers.when_folders_restored). No row: trashed before this table.
    CREATE TABLE IF NOT EXISTS datasets.trashed_folders (
        id uuid PRIMARY KEY,
        trashed_at bigint NOT NULL
    );
    """,
)


@membership.on(datasets_events.DatasetCreated)
async def dataset_created(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetCreated]]
) -> None:
    await conn.executemany(
        """INSERT INTO datasets.datasets
           (id, name, description, synced_folder_id, version, created_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [
            (
                e.data["dataset_id"],
                e.data["name"],
                e.data.get("description", ""),
                e.data.get("synced_folder_id"),
                e.stream_version,
                e.occurred_at,
                e.actor,
            )
            for e in events
        ],
    )


@membership.on(datasets_events.DatasetUpdated)
async def dataset_updated(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetUpdated]]
) -> None:
    await conn.executemany(
        "UPDATE datasets.datasets SET name = $2, description = $3, version = $4 WHERE id = $1",
        [
            (e.data["dataset_id"], e.data["name"], e.data["description"], e.stream_version)
            for e in events
        ],
    )


@membership.on(datasets_events.DatasetDeleted)
async def dataset_deleted(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetDeleted]]
) -> None:
    ids = [e.data["dataset_id"] for e in events]
    await conn.execute("DELETE FROM datasets.members WHERE dataset_id = ANY($1::uuid[])", ids)
    await conn.execute("DELETE FROM datasets.trashed_links WHERE dataset_id = ANY($1::uuid[])", ids)
    await conn.execute("DELETE FROM datasets.shares WHERE dataset_id = ANY($1::uuid[])", ids)
    await conn.execute("DELETE FROM datasets.datasets WHERE id = ANY($1::uuid[])", ids)


@membership.on(datasets_events.FilesLinked)
async def files_linked(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.FilesLinked]]
) -> None:
    # Every event of the run in two statements, not two an event: a restore of 100,000
    # files into 3 datasets records 60 of them in one transaction.
    datasets = [e.data["dataset_id"] for e in events for _ in e.data["file_ids"]]
    files = [f for e in events for f in e.data["file_ids"]]
    last = {e.data["dataset_id"]: e.stream_version for e in events}
    await conn.execute(
        """WITH added AS (
               INSERT INTO datasets.members (dataset_id, file_id)
               SELECT * FROM unnest($1::uuid[], $2::uuid[])
               ON CONFLICT DO NOTHING RETURNING dataset_id),
           counted AS (SELECT dataset_id, count(*) AS n FROM added GROUP BY dataset_id)
           UPDATE datasets.datasets d
           SET file_count = d.file_count + coalesce(c.n, 0), version = v.version
           FROM unnest($3::uuid[], $4::int[]) AS v(id, version)
           LEFT JOIN counted c ON c.dataset_id = v.id
           WHERE d.id = v.id""",
        datasets,
        files,
        list(last),
        list(last.values()),
    )
    await conn.execute(
        """DELETE FROM datasets.trashed_links t
           USING unnest($1::uuid[], $2::uuid[]) AS x(dataset_id, file_id)
           WHERE t.file_id = x.file_id AND t.dataset_id = x.dataset_id""",
        datasets,
        files,
    )


@membership.on(datasets_events.FilesUnlinked)
async def files_unlinked(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.FilesUnlinked]]
) -> None:
    for e in events:
        await conn.execute(
            """WITH removed AS (
                   DELETE FROM datasets.members
                   WHERE dataset_id = $1 AND file_id = ANY($2::uuid[]) RETURNING 1)
               UPDATE datasets.datasets
               SET file_count = file_count - (SELECT count(*) FROM removed), version = $3
               WHERE id = $1""",
            e.data["dataset_id"],
            e.data["file_ids"],
            e.stream_version,
        )
        if e.data["reason"] == "file_deleted":
            await conn.execute(
                """INSERT INTO datasets.trashed_links (file_id, dataset_id)
                   SELECT unnest($2::uuid[]), $1 ON CONFLICT DO NOTHING""",
                e.data["dataset_id"],
                e.data["file_ids"],
            )


@membership.on(datasets_events.DatasetUnsynced)
async def dataset_unsynced(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetUnsynced]]
) -> None:
    await conn.executemany(
        """UPDATE datasets.datasets
           SET synced_folder_id = NULL, unsynced_from = $2, version = $3 WHERE id = $1""",
        [(e.data["dataset_id"], e.data["folder_id"], e.stream_version) for e in events],
    )


@membership.on(datasets_events.DatasetResynced)
async def dataset_resynced(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetResynced]]
) -> None:
    await conn.executemany(
        """UPDATE datasets.datasets
           SET synced_folder_id = $2, unsynced_from = NULL, version = $3 WHERE id = $1""",
        [(e.data["dataset_id"], e.data["folder_id"], e.stream_version) for e in events],
    )


@membership.on(datasets_events.DatasetShared)
async def dataset_shared(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetShared]]
) -> None:
    # One statement per event, in order: the same user twice in a batch ends with the
    # last role.
    await conn.executemany(
        """WITH shared AS (
               INSERT INTO datasets.shares (dataset_id, user_id, role) VALUES ($1, $2, $3)
               ON CONFLICT (dataset_id, user_id) DO UPDATE SET role = excluded.role)
           UPDATE datasets.datasets SET version = $4 WHERE id = $1""",
        [
            (e.data["dataset_id"], e.data["user_id"], e.data["role"], e.stream_version)
            for e in events
        ],
    )


@membership.on(datasets_events.DatasetUnshared)
async def dataset_unshared(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetUnshared]]
) -> None:
    await conn.executemany(
        """WITH unshared AS (
               DELETE FROM datasets.shares WHERE dataset_id = $1 AND user_id = $2)
           UPDATE datasets.datasets SET version = $3 WHERE id = $1""",
        [(e.data["dataset_id"], e.data["user_id"], e.stream_version) for e in events],
    )


# Folders come on several partitions, so a child (or a folder moved under it) may come
# before its parent: it is then an orphan, the root of its own path, until the parent
# comes and adopts it. Orphans are the folders whose path starts with themselves but
# that have a parent.
ORPHANS_OF = """
    SELECT o.id, o.parent_id FROM datasets.folders o
    WHERE o.parent_id = ANY($1::uuid[]) AND o.path[1] = o.id
"""

# A folder's path, or as it was when it was deleted: a folder created or moved under
# one just before it went may reach the mirror after it.
PATH_OF = """coalesce((SELECT path FROM datasets.folders WHERE id = {id}),
                      (SELECT path FROM datasets.deleted_folders WHERE id = {id}))"""


@tree.on(catalog_events.FolderCreated)
@tree.on(catalog_events.FolderRestored)
async def folder_created(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderCreated]]
) -> None:
    for e in events:  # a parent may come earlier in the same batch
        await conn.execute(
            f"""INSERT INTO datasets.folders (id, parent_id, path, constituent_of)
               SELECT $1::uuid, $2::uuid,
                      coalesce({PATH_OF.format(id="$2::uuid")}, '{{}}') || $1::uuid,
                      $3::uuid
               ON CONFLICT (id) DO NOTHING""",
            e.data["folder_id"],
            e.data["parent_id"],
            e.data.get("constituent_of"),
        )
        # Back from the trash: no longer deleted.
        await conn.execute(
            "DELETE FROM datasets.deleted_folders WHERE id = $1", e.data["folder_id"]
        )
        await conn.execute(
            "DELETE FROM datasets.trashed_folders WHERE id = $1", e.data["folder_id"]
        )
        await conn.execute(
            f"""UPDATE datasets.folders f
                SET path = (SELECT path FROM datasets.folders WHERE id = $2::uuid) || f.path
                FROM ({ORPHANS_OF}) AS o
                WHERE f.path @> ARRAY[o.id] AND f.path[1] = o.id""",
            [e.data["folder_id"]],
            e.data["folder_id"],
        )


@tree.on(catalog_events.FolderMoved)
async def folder_moved(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderMoved]]
) -> None:
    for e in events:
        # Folders deleted below it move too: a move out of them may be still to come.
        for table in ("datasets.folders", "datasets.deleted_folders"):
            await conn.execute(
                f"""UPDATE {table} f
                    SET path = {PATH_OF.format(id="$2::uuid")}
                               || f.path[array_position(f.path, $1::uuid):]
                    WHERE f.path @> ARRAY[$1::uuid]""",
                e.data["folder_id"],
                e.data["to_parent_id"],
            )
        # A parent not here yet leaves the moved folder an orphan, adopted when it comes.
        await conn.execute(
            "UPDATE datasets.folders SET parent_id = $2 WHERE id = $1",
            e.data["folder_id"],
            e.data["to_parent_id"],
        )


@tree.on(catalog_events.FolderDeleted)
async def folder_deleted(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderDeleted]]
) -> None:
    # Its last deletion, once: a folder deleted, restored and deleted again may be twice
    # in one run.
    at = {e.data["folder_id"]: e.position for e in events}
    await conn.execute(
        """WITH gone AS (DELETE FROM datasets.folders WHERE id = ANY($1::uuid[])
                         RETURNING id, path, constituent_of)
           INSERT INTO datasets.deleted_folders (id, path, constituent_of, deleted_at)
           SELECT g.id, g.path, g.constituent_of, x.position
           FROM gone g JOIN unnest($1::uuid[], $2::bigint[]) AS x(id, position) ON x.id = g.id
           ON CONFLICT (id) DO UPDATE
               SET path = excluded.path, constituent_of = excluded.constituent_of,
                   deleted_at = excluded.deleted_at""",
        list(at),
        list(at.values()),
    )
    trashed = {e.data["folder_id"]: e.position for e in events if e.data.get("trashed")}
    await conn.execute(
        """INSERT INTO datasets.trashed_folders (id, trashed_at)
           SELECT * FROM unnest($1::uuid[], $2::bigint[])
           ON CONFLICT (id) DO UPDATE SET trashed_at = excluded.trashed_at""",
        list(trashed),
        list(trashed.values()),
    )


@tree.on(catalog_events.FolderPurged)
async def folder_purged(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderPurged]]
) -> None:
    # Never to be restored: its trashing's position has no restore left to serve.
    await conn.execute(
        "DELETE FROM datasets.trashed_folders WHERE id = ANY($1::uuid[])",
        [e.data["folder_id"] for e in events],
    )


@tree.on(catalog_events.FileUploaded)
@tree.on(catalog_events.FileRestored)
async def file_uploaded(
    conn: asyncpg.Connection,
    events: Sequence[Received[catalog_events.FileUploaded | catalog_events.FileRestored]],
) -> None:
    await conn.execute(
        """INSERT INTO datasets.files (id, folder_id)
           SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT (id) DO NOTHING""",
        [e.data["file_id"] for e in events],
        [e.data["folder_id"] for e in events],
    )
    if events[0].type == catalog_events.FileRestored.type:
        await conn.execute(
            "DELETE FROM datasets.trashed_files WHERE id = ANY($1::uuid[])",
            [e.data["file_id"] for e in events],
        )


@tree.on(catalog_events.FilesUploaded)
async def files_uploaded(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FilesUploaded]]
) -> None:
    # A plain insert (`ON CONFLICT`'s speculative insert writes a WAL record a row more):
    # a page's files are new, each named by that page alone, which the inbox applies
    # once; every other event that puts a file here (restores, returns) is of a file
    # whose upload came before it in the file's own partition, so none is here yet.
    await conn.execute(
        """INSERT INTO datasets.files (id, folder_id)
           SELECT * FROM unnest($1::uuid[], $2::uuid[])""",
        [i for e in events for i in e.data["file_ids"]],
        [e.data["folder_id"] for e in events for _ in e.data["file_ids"]],
    )


@tree.on(catalog_events.FilesRestored)
async def files_restored(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FilesRestored]]
) -> None:
    ids = [i for e in events for i in e.data["file_ids"]]
    await conn.execute(
        """INSERT INTO datasets.files (id, folder_id)
           SELECT x.id, x.folder_id FROM unnest($1::uuid[], $2::uuid[]) AS x(id, folder_id)
           ON CONFLICT (id) DO NOTHING""",
        ids,
        [e.data["folder_id"] for e in events for _ in e.data["file_ids"]],
    )
    await conn.execute("DELETE FROM datasets.trashed_files WHERE id = ANY($1::uuid[])", ids)


@tree.on(catalog_events.FileTombstoned)
async def file_tombstoned(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileTombstoned]]
) -> None:
    # Out of the mirror: the datasets synced with its folder let it go (and take it back
    # with FileReturned); links made by hand stay.
    await conn.execute(
        "DELETE FROM datasets.files WHERE id = ANY($1::uuid[])",
        [e.data["file_id"] for e in events],
    )


@tree.on(catalog_events.FileReturned)
async def file_returned(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileReturned]]
) -> None:
    await conn.execute(
        """INSERT INTO datasets.files (id, folder_id)
           SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT (id) DO NOTHING""",
        [e.data["file_id"] for e in events],
        [e.data["folder_id"] for e in events],
    )


@tree.on(catalog_events.FileMoved)
async def file_moved(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileMoved]]
) -> None:
    # The last move of each file: an UPDATE ... FROM joining a row twice applies
    # either join row, so a file moved in and out again could stay in.
    last = {e.data["file_id"]: e.data["to_folder_id"] for e in events}
    await conn.execute(
        """UPDATE datasets.files f SET folder_id = x.folder_id
           FROM unnest($1::uuid[], $2::uuid[]) AS x(id, folder_id) WHERE f.id = x.id""",
        list(last),
        list(last.values()),
    )


@tree.on(catalog_events.FileDeleted)
async def file_deleted(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileDeleted]]
) -> None:
    # Its last trashing, once: a file deleted, restored and deleted again may be twice
    # in one run, and one INSERT ... ON CONFLICT may not touch a row twice.
    trashed = {e.data["file_id"]: e.position for e in events if e.data.get("trashed")}
    await conn.execute(
        """WITH gone AS (DELETE FROM datasets.files WHERE id = ANY($1::uuid[])
                         RETURNING id, folder_id)
           INSERT INTO datasets.trashed_files (id, folder_id, trashed_at)
           SELECT g.id, g.folder_id, x.position
           FROM gone g JOIN unnest($2::uuid[], $3::bigint[]) AS x(id, position) ON x.id = g.id
           ON CONFLICT (id) DO UPDATE
               SET folder_id = excluded.folder_id, trashed_at = excluded.trashed_at""",
        [e.data["file_id"] for e in events],
        list(trashed),
        list(trashed.values()),
    )


@tree.on(catalog_events.FilePurged)
async def file_purged(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FilePurged]]
) -> None:
    await conn.execute(
        "DELETE FROM datasets.trashed_files WHERE id = ANY($1::uuid[])",
        [e.data["file_id"] for e in events],
    )
