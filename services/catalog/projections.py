"""The catalog's read models: the folder tree and the file entries.

They are updated inline, in the transaction that records the events, so the
catalog reads its own writes; `files rebuild catalog.tree` replays them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from shared.contracts import catalog as catalog_events
from shared.contracts import datasets as datasets_events
from shared.contracts import ingest as ingest_events
from shared.kit.db import Conn
from shared.kit.projections import GIVEN, Projection, given
from shared.kit.reactions import Received

tree = Projection(
    name="catalog.tree",
    # 2: a folder restored from the trash had a path of itself alone (its ancestors
    # lost: hidden from who had a role above it, and a parent could be moved into it).
    # 3: the trash's `itself` (a file deleted on its own, then its folder, came back
    # with the folder and was no item of its own).
    # The trash's paths following moves of the folders above them is no version: the
    # rows misplaced before are re-rooted once at start (`trash_files.path`'s comment).
    # 4 was an unreleased build's (f93c905): a database that ran it says 4, so the next
    # version is 5, not 4 (which those would take as done and never rebuild).
    version=3,
    rebuilt_without=(
        "folders_name_trgm",
        "files_search",
        "files_folder_created",
        "files_folder",
        "files_folder_size",
        "files_metadata",
        "files_sha256",
        "metadata_values_num",
        "metadata_values_at",
        "metadata_values_txt",
    ),
    tables=(
        "catalog.folders",
        "catalog.files",
        "catalog.metadata_values",
        "catalog.metadata_schema",
        "catalog.trash_folders",
        "catalog.trash_files",
    ),
    ddl="""
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE EXTENSION IF NOT EXISTS btree_gin;
    -- A metadata object's top-level numbers, date-time strings and short texts, typed. A
    -- string is a date-time when it starts with a date and PostgreSQL reads it as one
    -- (never 'now'); a text of at most 200 characters is kept as it is (`txt`), so that
    -- an equality on any key walks an ordered index in file order and stops at a page.
    CREATE OR REPLACE FUNCTION catalog.metadata_entries(metadata jsonb)
    RETURNS TABLE (key text, num numeric, at timestamptz, txt text)
    LANGUAGE sql STABLE PARALLEL SAFE AS $f$
        SELECT key, num, at, txt FROM (
            SELECT e.key,
                   CASE WHEN jsonb_typeof(e.value) = 'number' THEN (e.value)::numeric END AS num,
                   CASE WHEN jsonb_typeof(e.value) = 'string'
                             AND (e.value #>> '{}') ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}'
                             AND pg_input_is_valid(e.value #>> '{}', 'timestamptz')
                        THEN (e.value #>> '{}')::timestamptz END AS at,
                   CASE WHEN jsonb_typeof(e.value) = 'string'
                             AND length(e.value #>> '{}') <= 200
                        THEN e.value #>> '{}' END AS txt
            FROM jsonb_each(CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata
                                 ELSE '{}' END) AS e) x
        WHERE num IS NOT NULL OR at IS NOT NULL OR txt IS NOT NULL
    $f$;
    DROP FUNCTION IF EXISTS catalog.typed_metadata(jsonb);
    CREATE TABLE IF NOT EXISTS catalog.folders (
        id uuid PRIMARY KEY,
        parent_id uuid,
        name text NOT NULL,
        description text NOT NULL,
        metadata jsonb NOT NULL,
        path uuid[] NOT NULL,
        version integer NOT NULL,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL
    );
    -- Top-level names are unique per creator: one member's private folder must not
    -- make another's name "taken" (that would tell them it exists).
    DROP INDEX IF EXISTS catalog.folders_sibling_name;
    CREATE UNIQUE INDEX IF NOT EXISTS folders_sibling_names
        ON catalog.folders ((coalesce(parent_id::text, 'top:' || created_by)), lower(name));
    -- Names equal but for their Unicode form (`café` composed and decomposed look the
    -- same) are taken as well: folder names are compared as `name_key` (NFC, lower
    -- case), and stored as given. A folder that shared its key with a sibling before
    -- that rule is `grandfathered` (left out of the index; both keep their names): the
    -- projection's handlers mark one when an event puts it beside such a sibling, so
    -- a rebuild replays what was taken then; `Catalog.write` refuses a write that
    -- marks one now, and a database that holds such siblings already marks, once, all
    -- but the first made of each.
    CREATE OR REPLACE FUNCTION catalog.name_key(name text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN lower(normalize(name, NFC));
    ALTER TABLE catalog.folders ADD COLUMN IF NOT EXISTS grandfathered boolean;
    DO $$ BEGIN
        IF to_regclass('catalog.folders_sibling_keys') IS NULL THEN
            UPDATE catalog.folders f SET grandfathered = true
            WHERE EXISTS (
                SELECT 1 FROM catalog.folders o
                WHERE coalesce(o.parent_id::text, 'top:' || o.created_by)
                      = coalesce(f.parent_id::text, 'top:' || f.created_by)
                  AND catalog.name_key(o.name) = catalog.name_key(f.name)
                  AND (o.created_at, o.id) < (f.created_at, f.id));
            CREATE UNIQUE INDEX folders_sibling_keys ON catalog.folders
                ((coalesce(parent_id::text, 'top:' || created_by)), catalog.name_key(name))
                WHERE grandfathered IS NOT TRUE;
        END IF;
    END $$;
    CREATE INDEX IF NOT EXISTS folders_children ON catalog.folders (parent_id, name, id);
    CREATE INDEX IF NOT EXISTS folders_path ON catalog.folders USING gin (path);
    CREATE INDEX IF NOT EXISTS folders_name_trgm ON catalog.folders USING gin (name gin_trgm_ops);
    CREATE TABLE IF NOT EXISTS catalog.files (
        id uuid NOT NULL,
        folder_id uuid NOT NULL,
        name text NOT NULL,
        kind text NOT NULL,
        size bigint NOT NULL,
        sha256 text NOT NULL,
        mime_type text NOT NULL,
        media jsonb NOT NULL,
        blob_key text NOT NULL,
        source jsonb NOT NULL,
        metadata jsonb NOT NULL,
        job_id uuid,
        version integer NOT NULL,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL,
        CONSTRAINT files_pkey PRIMARY KEY (id) INCLUDE (kind, name)
    );
    -- The primary key carries kind and name: a metadata filter's matches (from the typed
    -- side table) are checked for kind, and ordered by name, by an index-only probe
    -- each instead of a visit to the row (bench/catalog_filters.py: a zero-match kind
    -- over 10,000 matches 60 -> 22 ms). Keys made before it are made again, once.
    DO $$ BEGIN
        IF (SELECT indnatts FROM pg_index WHERE indexrelid = 'catalog.files_pkey'::regclass) = 1
        THEN
            ALTER TABLE catalog.files DROP CONSTRAINT files_pkey,
                ADD CONSTRAINT files_pkey PRIMARY KEY (id) INCLUDE (kind, name);
        END IF;
    END $$;
    ALTER TABLE catalog.files ADD COLUMN IF NOT EXISTS dicom jsonb;
    -- Image groups and sequences: {constituent_folder_id, file_ids, images}.
    ALTER TABLE catalog.files ADD COLUMN IF NOT EXISTS "group" jsonb;
    ALTER TABLE catalog.folders ADD COLUMN IF NOT EXISTS constituent_of uuid;
    -- An image of a group: the group's file id. Added once, filled from the groups'
    -- lists of their images (which named all of them before groups came in pages).
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'catalog'
                       AND table_name = 'files' AND column_name = 'constituent_of') THEN
            ALTER TABLE catalog.files ADD COLUMN constituent_of uuid;
            UPDATE catalog.files f SET constituent_of = g.id
            FROM catalog.files g, jsonb_array_elements_text(g."group"->'file_ids') AS i(id)
            WHERE g."group" IS NOT NULL AND f.id = i.id::uuid;
        END IF;
    END $$;
    CREATE INDEX IF NOT EXISTS files_folder ON catalog.files (folder_id, name, id);
    -- Trigrams and kind in one index: a kind filter narrows inside the index.
    CREATE INDEX IF NOT EXISTS files_search ON catalog.files USING gin (name gin_trgm_ops, kind);
    ALTER TABLE catalog.files ADD COLUMN IF NOT EXISTS description text NOT NULL DEFAULT '';
    -- A cloud-synced file whose object is gone from its bucket.
    ALTER TABLE catalog.files ADD COLUMN IF NOT EXISTS tombstone boolean NOT NULL DEFAULT false;
    -- Listings in the other orders, and metadata filters (containment).
    CREATE INDEX IF NOT EXISTS files_folder_created ON catalog.files (folder_id, created_at, id);
    CREATE INDEX IF NOT EXISTS files_folder_size ON catalog.files (folder_id, size, id);
    -- Containment over files that have metadata only: most have none ('{}'), and no
    -- filter's document is contained in '{}' (each names a key), so an entry a file for
    -- them (GIN's empty item) had no reader, and cost an upload a WAL record and a GIN
    -- pending-list insertion a file. Filters say `metadata <> '{}'` (listing.py
    -- `NOT_EMPTY`), which lets the planner take the partial index. An index from before
    -- (over every row) is made again, once, at the first start.
    DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM pg_index
                   WHERE indexrelid = to_regclass('catalog.files_metadata') AND indpred IS NULL)
        THEN
            DROP INDEX catalog.files_metadata;
        END IF;
    END $$;
    CREATE INDEX IF NOT EXISTS files_metadata ON catalog.files USING gin (metadata jsonb_path_ops)
        WHERE metadata <> '{}';
    -- Duplicates: the files holding the same bytes.
    CREATE INDEX IF NOT EXISTS files_sha256 ON catalog.files (sha256);
    -- The trash: deleted folders and files, each its whole row as it was (`entry`, so
    -- columns added later need nothing here), until it is restored or purged. `path`:
    -- the folder's path (a file's: its folder's), for rights and for what came with what.
    CREATE TABLE IF NOT EXISTS catalog.trash_folders (
        id uuid PRIMARY KEY,
        parent_id uuid,
        name text NOT NULL,
        path uuid[] NOT NULL,
        version integer NOT NULL,
        entry jsonb NOT NULL,
        trashed_at timestamptz NOT NULL,
        trashed_by text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS trash_folders_path ON catalog.trash_folders USING gin (path);
    CREATE INDEX IF NOT EXISTS trash_folders_at ON catalog.trash_folders (trashed_at, id);
    CREATE TABLE IF NOT EXISTS catalog.trash_files (
        id uuid PRIMARY KEY,
        folder_id uuid NOT NULL,
        name text NOT NULL,
        path uuid[] NOT NULL,
        blob_key text NOT NULL,
        sha256 text NOT NULL,
        version integer NOT NULL,
        entry jsonb NOT NULL,
        trashed_at timestamptz NOT NULL,
        trashed_by text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS trash_files_folder ON catalog.trash_files (folder_id);
    CREATE INDEX IF NOT EXISTS trash_files_path ON catalog.trash_files USING gin (path);
    CREATE INDEX IF NOT EXISTS trash_files_at ON catalog.trash_files (trashed_at, id);
    -- `itself`: deleted itself (an item of the trash: what its delete named, or a file or
    -- folder deleted while its folder was not in the trash), not with the folder above
    -- it. A restore of a folder brings back what went with it, not the items below it
    -- deleted before it. The default is for rows an older catalog writes while a newer
    -- one runs beside it: they behave as they did there (taken with a folder above).
    ALTER TABLE catalog.trash_folders ADD COLUMN IF NOT EXISTS itself boolean NOT NULL
        DEFAULT false;
    ALTER TABLE catalog.trash_files ADD COLUMN IF NOT EXISTS itself boolean NOT NULL
        DEFAULT false;
    CREATE INDEX IF NOT EXISTS trash_folders_parent ON catalog.trash_folders (parent_id);
    -- The metadata schema, whole (one row).
    CREATE TABLE IF NOT EXISTS catalog.metadata_schema (
        id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        keys jsonb NOT NULL,
        version integer NOT NULL
    );
    -- Files' top-level metadata values that are numbers or date-times, typed and indexed
    -- by (key, value): the range filters of the keys the schema types so. Kept for every
    -- such value, typed or not yet, so typing a key needs no backfill. Filled once from
    -- the files when it is made.
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = 'catalog'
                       AND table_name = 'metadata_values') THEN
            CREATE TABLE catalog.metadata_values (
                file_id uuid NOT NULL,
                key text NOT NULL,
                num numeric,
                at timestamptz,
                PRIMARY KEY (file_id, key)
            );
            CREATE INDEX metadata_values_num ON catalog.metadata_values (key, num, file_id)
                WHERE num IS NOT NULL;
            CREATE INDEX metadata_values_at ON catalog.metadata_values (key, at, file_id)
                WHERE at IS NOT NULL;
            INSERT INTO catalog.metadata_values (file_id, key, num, at)
            SELECT f.id, e.key, e.num, e.at
            FROM catalog.files f, catalog.metadata_entries(f.metadata) e
            WHERE e.num IS NOT NULL OR e.at IS NOT NULL;
        END IF;
    END $$;
    -- Short texts (added later: filled once from the files' metadata).
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'catalog'
                       AND table_name = 'metadata_values' AND column_name = 'txt') THEN
            ALTER TABLE catalog.metadata_values ADD COLUMN txt text;
            INSERT INTO catalog.metadata_values (file_id, key, num, at, txt)
            SELECT f.id, e.key, e.num, e.at, e.txt
            FROM catalog.files f, catalog.metadata_entries(f.metadata) e
            WHERE e.txt IS NOT NULL
            ON CONFLICT (file_id, key) DO UPDATE SET txt = excluded.txt;
        END IF;
    END $$;
    CREATE INDEX IF NOT EXISTS metadata_values_txt ON catalog.metadata_values (key, txt, file_id)
        WHERE txt IS NOT NULL;
    """,
    migration="""
    -- A trashed row's path follows moves of the folders above it (FolderMoved); before
    -- 2026-12-07 it kept the one it had when deleted. Those rows are re-rooted once, to
    -- where their folder (live, or in the trash, re-rooted first) is now: an UPDATE of
    -- the rows that differ, not a rebuild (which held the tables for minutes on a large
    -- store). One below a purged folder keeps its path (it cannot be restored anyway).
    -- After the DDL commits (`Projection.migration`): readers of the tables wait for none
    -- of it.
    DO $$ BEGIN
        IF col_description('catalog.trash_files'::regclass,
                           (SELECT attnum FROM pg_attribute
                            WHERE attrelid = 'catalog.trash_files'::regclass
                              AND attname = 'path')) IS NULL THEN
            WITH RECURSIVE placed (id, path) AS (
                SELECT t.id, coalesce(p.path, '{}') || t.id
                FROM catalog.trash_folders t LEFT JOIN catalog.folders p ON p.id = t.parent_id
                WHERE t.parent_id IS NULL OR p.id IS NOT NULL
                UNION ALL
                SELECT t.id, placed.path || t.id
                FROM catalog.trash_folders t JOIN placed ON t.parent_id = placed.id)
            UPDATE catalog.trash_folders t SET path = placed.path
            FROM placed WHERE t.id = placed.id AND t.path <> placed.path;
            UPDATE catalog.trash_files t SET path = coalesce(fo.path, tf.path)
            FROM catalog.trash_files x
            LEFT JOIN catalog.folders fo ON fo.id = x.folder_id
            LEFT JOIN catalog.trash_folders tf ON tf.id = x.folder_id
            WHERE t.id = x.id AND coalesce(fo.path, tf.path) <> t.path;
            COMMENT ON COLUMN catalog.trash_files.path IS
                'its folder''s path as it is now (follows moves; re-rooted once, 2026-12-07)';
        END IF;
    END $$;
    """,
)

# Which files are in a dataset and which folders a dataset follows: a mirror of the
# datasets context's events, for the `in_dataset` and `dataset_synced` filters.
links = Projection(
    name="catalog.dataset_links",
    tables=("catalog.file_links", "catalog.synced_folders"),
    # Follows the datasets context's events as the consumer applies them.
    replayable=False,
    ddl="""
    CREATE TABLE IF NOT EXISTS catalog.file_links (
        file_id uuid NOT NULL,
        dataset_id uuid NOT NULL,
        PRIMARY KEY (file_id, dataset_id)
    );
    CREATE INDEX IF NOT EXISTS file_links_dataset ON catalog.file_links (dataset_id);
    CREATE TABLE IF NOT EXISTS catalog.synced_folders (
        dataset_id uuid PRIMARY KEY,
        folder_id uuid NOT NULL
    );
    CREATE INDEX IF NOT EXISTS synced_folders_folder ON catalog.synced_folders (folder_id);
    """,
)


# Which folders mirror a bucket prefix (ingest's cloud-synced folders) and the subfolders
# their key paths made: the catalog refuses users' new folders and moves into them. A
# synced folder's row names itself as its root; a row whose root has no row of its own
# (its events came in another order, or the sync ended) refuses nothing.
cloud_synced = Projection(
    name="catalog.cloud_synced",
    tables=("catalog.cloud_synced",),
    # Follows ingest's events as the consumer applies them: not from our store.
    replayable=False,
    ddl="""
    CREATE TABLE IF NOT EXISTS catalog.cloud_synced (
        folder_id uuid PRIMARY KEY,
        root_folder_id uuid NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cloud_synced_root ON catalog.cloud_synced (root_folder_id);
    """,
)


@cloud_synced.on(ingest_events.FolderSyncConfigured)
async def sync_configured(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FolderSyncConfigured]]
) -> None:
    await conn.executemany(
        """INSERT INTO catalog.cloud_synced (folder_id, root_folder_id) VALUES ($1, $1)
           ON CONFLICT (folder_id) DO UPDATE SET root_folder_id = excluded.root_folder_id""",
        [(e.event.folder_id,) for e in events],
    )


@cloud_synced.on(ingest_events.SyncFolderNeeded)
async def sync_folder_needed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.SyncFolderNeeded]]
) -> None:
    await conn.executemany(
        """INSERT INTO catalog.cloud_synced (folder_id, root_folder_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING""",
        [(e.event.folder_id, e.event.root_folder_id) for e in events],
    )


@cloud_synced.on(ingest_events.CloudSyncedFoldersListed)
async def synced_folders_listed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.CloudSyncedFoldersListed]]
) -> None:
    # Ingest's one listing, for the folders synced before this mirror was: what a later
    # event said is kept, and a synced folder already purged (its FolderSyncEnded may
    # come first, from another partition) is not brought back.
    listed = [f for e in events for f in e.event.folders]
    await conn.execute(
        """INSERT INTO catalog.cloud_synced (folder_id, root_folder_id)
           SELECT x.f, x.r FROM unnest($1::uuid[], $2::uuid[]) AS x(f, r)
           WHERE EXISTS (SELECT FROM catalog.folders WHERE id = x.r)
           ON CONFLICT DO NOTHING""",
        [f.folder_id for f in listed],
        [f.root_folder_id for f in listed],
    )


@cloud_synced.on(ingest_events.FolderSyncEnded)
async def sync_ended(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FolderSyncEnded]]
) -> None:
    # Purged: the folder and its key paths' subfolders are plain folders again.
    await conn.execute(
        "DELETE FROM catalog.cloud_synced WHERE root_folder_id = ANY($1::uuid[])",
        [e.event.folder_id for e in events],
    )


async def synced_root(conn: Conn, path: Sequence[Any]) -> asyncpg.Record | None:
    """The cloud-synced folder (id, name, path) that a folder at `path` (ids, top first, its
    own last) is, or is inside, or is a key path's subfolder of; None if none."""
    found: asyncpg.Record | None = await conn.fetchrow(
        """SELECT r.folder_id AS id, f.name, f.path
           FROM catalog.cloud_synced s
           JOIN catalog.cloud_synced r
             ON r.folder_id = s.root_folder_id AND r.root_folder_id = r.folder_id
           JOIN catalog.folders f ON f.id = r.folder_id
           WHERE s.folder_id = ANY($1::uuid[])
           LIMIT 1""",
        list(path),
    )
    return found


def _folders_created(events: str) -> list[str]:
    """The rows FolderCreated events make (`events`: see shared.kit.projections.GIVEN).
    A folder's parent may be created earlier among the same events: the paths are made
    from the parents already there, then down the events' own parents (recursively).
    One beside a sibling whose name has its key (already there, or earlier among the
    events) is grandfathered (see `_BESIDE_A_TWIN`)."""
    twin = _BESIDE_A_TWIN.format(
        parent="m.parent_id", actor="m.actor", name="m.name", id="m.folder_id"
    )
    return [
        f"""WITH RECURSIVE made AS (
               SELECT r.folder_id, r.parent_id, r.name, coalesce(r.description, '') AS description,
                      coalesce(r.metadata, '{{}}') AS metadata, r.constituent_of,
                      e.stream_version, e.occurred_at, e.actor
               FROM {events}, jsonb_to_record(e.data) AS r(
                   folder_id uuid, parent_id uuid, name text, description text, metadata jsonb,
                   constituent_of uuid)),
           paths AS (
               SELECT m.folder_id, coalesce(p.path, '{{}}') || m.folder_id AS path
               FROM made m LEFT JOIN catalog.folders p ON p.id = m.parent_id
               WHERE NOT EXISTS (SELECT FROM made o WHERE o.folder_id = m.parent_id)
               UNION ALL
               SELECT m.folder_id, paths.path || m.folder_id
               FROM made m JOIN paths ON m.parent_id = paths.folder_id
               -- Never round a cycle (bad data: a folder named twice in a run).
               WHERE m.folder_id <> ALL(paths.path))
           INSERT INTO catalog.folders
           (id, parent_id, name, description, metadata, path, version, created_at, created_by,
            constituent_of, grandfathered)
           SELECT m.folder_id, m.parent_id, m.name, m.description, m.metadata, p.path,
                  m.stream_version, m.occurred_at, m.actor, m.constituent_of,
                  -- After a sibling of its name key among these events, or beside one.
                  row_number() OVER (
                      PARTITION BY coalesce(m.parent_id::text, 'top:' || m.actor),
                                   catalog.name_key(m.name)
                      ORDER BY m.occurred_at, m.folder_id) > 1 OR {twin}
           FROM made m JOIN paths p ON p.folder_id = m.folder_id"""
    ]


# Whether a folder (its parent, creator, name and id) would be beside a sibling whose
# name has the same key (see the table's DDL): true only for events recorded before
# that rule (a rebuild), or a write `Catalog.write` then refuses.
_BESIDE_A_TWIN = """EXISTS (
    SELECT FROM catalog.folders o
    WHERE coalesce(o.parent_id::text, 'top:' || o.created_by)
          = coalesce({parent}::text, 'top:' || {actor})
      AND catalog.name_key(o.name) = catalog.name_key({name})
      AND o.grandfathered IS NOT TRUE AND o.id <> {id})"""


@tree.on(catalog_events.FolderCreated, sql=_folders_created, touches=("catalog.folders",))
async def folder_created(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderCreated]]
) -> None:
    [made] = _folders_created(GIVEN)
    await conn.execute(made, *given(events))


@tree.on(catalog_events.FolderRenamed)
async def folder_renamed(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderRenamed]]
) -> None:
    twin = _BESIDE_A_TWIN.format(parent="f.parent_id", actor="f.created_by", name="$2", id="$1")
    await conn.executemany(
        f"UPDATE catalog.folders f SET name = $2, version = $3, grandfathered = {twin}"
        " WHERE id = $1",
        [(e.data["folder_id"], e.data["name"], e.stream_version) for e in events],
    )


@tree.on(catalog_events.FolderDescribed)
async def folder_described(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderDescribed]]
) -> None:
    await conn.executemany(
        "UPDATE catalog.folders SET description = $2, metadata = $3, version = $4 WHERE id = $1",
        [
            (e.data["folder_id"], e.data["description"], e.data["metadata"], e.stream_version)
            for e in events
        ],
    )


@tree.on(catalog_events.FolderMoved)
async def folder_moved(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderMoved]]
) -> None:
    for e in events:
        folder_id, target = e.data["folder_id"], e.data["to_parent_id"]
        # Re-root the folder's subtree: new parent's path, then the part from the folder down.
        await conn.execute(
            """UPDATE catalog.folders f
               SET path = (SELECT path FROM catalog.folders WHERE id = $2)
                          || f.path[array_position(f.path, $1::uuid):]
               WHERE f.path @> ARRAY[$1::uuid]""",
            folder_id,
            target,
        )
        # And what went to the trash from below it: restores, the trash's list and
        # "Delete forever" decide rights on these paths, so they follow the folder.
        for table in ("trash_folders", "trash_files"):
            await conn.execute(
                f"""UPDATE catalog.{table} t
                   SET path = (SELECT path FROM catalog.folders WHERE id = $2)
                              || t.path[array_position(t.path, $1::uuid):]
                   WHERE t.path @> ARRAY[$1::uuid]""",
                folder_id,
                target,
            )
        twin = _BESIDE_A_TWIN.format(
            parent="$2::uuid", actor="f.created_by", name="f.name", id="$1"
        )
        await conn.execute(
            f"UPDATE catalog.folders f SET parent_id = $2, version = $3, grandfathered = {twin}"
            " WHERE id = $1",
            folder_id,
            target,
            e.stream_version,
        )


@tree.on(catalog_events.FolderDeleted)
async def folder_deleted(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderDeleted]]
) -> None:
    trashed = [e for e in events if e.data.get("trashed")]
    if trashed:
        ids = [e.data["folder_id"] for e in trashed]
        # Left in the trash below these by an earlier delete of theirs (a restore brought
        # them back only as the path of something else): items of their own from now on,
        # not part of this delete.
        await conn.execute(
            "UPDATE catalog.trash_folders SET itself = true"
            " WHERE parent_id = ANY($1::uuid[]) AND NOT itself",
            ids,
        )
        await conn.execute(
            "UPDATE catalog.trash_files SET itself = true"
            " WHERE folder_id = ANY($1::uuid[]) AND NOT itself",
            ids,
        )
        # Went with its parent when the parent went first (a cascade: outermost first,
        # maybe earlier in this run); a parent deleted later in the run is another delete.
        await conn.execute(
            """WITH x AS MATERIALIZED (
                   SELECT * FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[])
                                 WITH ORDINALITY AS x(id, version, at, actor, n))
               INSERT INTO catalog.trash_folders
               (id, parent_id, name, path, version, entry, trashed_at, trashed_by, itself)
               SELECT f.id, f.parent_id, f.name, f.path, x.version, to_jsonb(f), x.at, x.actor,
                      NOT EXISTS (SELECT 1 FROM catalog.trash_folders p WHERE p.id = f.parent_id)
                      AND (b.n IS NULL OR b.n > x.n)
               FROM x JOIN catalog.folders f ON f.id = x.id
               LEFT JOIN x b ON b.id = f.parent_id
               ON CONFLICT (id) DO NOTHING""",
            ids,
            [e.stream_version for e in trashed],
            [e.occurred_at for e in trashed],
            [e.actor for e in trashed],
        )
    await conn.execute(
        "DELETE FROM catalog.folders WHERE id = ANY($1::uuid[])",
        [e.data["folder_id"] for e in events],
    )


@tree.on(catalog_events.FolderRestored)
async def folder_restored(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderRestored]]
) -> None:
    # One at a time, outermost first: each takes its parent's path as it is now.
    twin = _BESIDE_A_TWIN.format(
        parent="(back.entry->>'parent_id')::uuid",
        actor="(back.entry->>'created_by')",
        name="(back.entry->>'name')",
        id="$1",
    )
    for e in events:
        await conn.execute(
            f"""WITH back AS (DELETE FROM catalog.trash_folders WHERE id = $1 RETURNING entry)
               INSERT INTO catalog.folders
               SELECT r.* FROM back, jsonb_populate_record(
                   null::catalog.folders,
                   back.entry || jsonb_build_object('grandfathered', {twin})) r
               ON CONFLICT (id) DO NOTHING""",
            e.data["folder_id"],
        )
        await conn.execute(
            """UPDATE catalog.folders f SET version = $2, path =
                   coalesce((SELECT p.path FROM catalog.folders p WHERE p.id = f.parent_id),
                            '{}')
                   || f.id
               WHERE f.id = $1""",
            e.data["folder_id"],
            e.stream_version,
        )


@tree.on(catalog_events.FolderPurged)
async def folder_purged(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FolderPurged]]
) -> None:
    await conn.execute(
        "DELETE FROM catalog.trash_folders WHERE id = ANY($1::uuid[])",
        [e.data["folder_id"] for e in events],
    )


# A group recorded before pages: it names its images, which do not name it.
_NAMES_ITS_IMAGES = "jsonb_typeof(e.data->'group') = 'object' AND NOT e.data->'group' ? 'images'"


def _files_uploaded(events: str, *, new: bool = False) -> list[str]:
    """The rows FileUploaded events make (`events`: see shared.kit.projections.GIVEN):
    the file, and its typed metadata values (of a file new in this statement; one that
    was there kept its own); it answers whether a group from before pages is among the
    files it put (asked of the rows put rather than of the events: a rebuild's second
    read of them all cost it 7%). If so, such groups name their images (a second
    statement, which sees the images the first one put).

    `new`: every file is known not to be there, so a plain insert: `ON CONFLICT`'s
    speculative insert writes a WAL record a row more (its confirmation), 10,000 for
    bench.upload_small's files. A page's files are such (see `files_uploaded`)."""

    conflict = "" if new else "ON CONFLICT (id) DO NOTHING"
    return [
        f"""WITH put AS (
               INSERT INTO catalog.files
               (id, folder_id, name, kind, size, sha256, mime_type, media, blob_key, source,
                metadata, job_id, version, created_at, created_by, dicom, "group",
                constituent_of)
               SELECT r.file_id, r.folder_id, r.name, r.kind, r.size, r.sha256, r.mime_type,
                      r.media, r.blob_key, r.source, coalesce(r.metadata, '{{}}'), r.job_id,
                      e.stream_version, e.occurred_at, e.actor, nullif(r.dicom, 'null'::jsonb),
                      nullif(r."group", 'null'::jsonb), r.constituent_of
               FROM {events}, jsonb_to_record(e.data) AS r(
                   file_id uuid, folder_id uuid, name text, kind text, size bigint,
                   sha256 text, mime_type text, media jsonb, blob_key text, source jsonb,
                   metadata jsonb, job_id uuid, dicom jsonb, "group" jsonb, constituent_of uuid)
               {conflict}
               RETURNING id, metadata, "group"),
           typed AS (
               INSERT INTO catalog.metadata_values (file_id, key, num, at, txt)
               SELECT put.id, m.key, m.num, m.at, m.txt
               FROM put, catalog.metadata_entries(put.metadata) m
               WHERE put.metadata <> '{{}}')
           SELECT EXISTS (SELECT FROM put WHERE jsonb_typeof(put."group") = 'object'
                                              AND NOT put."group" ? 'images')""",
        f"""UPDATE catalog.files f SET constituent_of = (e.data->>'file_id')::uuid
            FROM {events}, jsonb_array_elements_text(e.data->'group'->'file_ids') AS i(id)
            WHERE {_NAMES_ITS_IMAGES} AND f.id = i.id::uuid""",
    ]


@tree.on(
    catalog_events.FileUploaded,
    sql=_files_uploaded,
    touches=("catalog.files", "catalog.metadata_values"),
)
async def file_uploaded(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileUploaded]]
) -> None:
    put, named = _files_uploaded(GIVEN)
    args = given(events)
    if await conn.fetchval(put, *args):
        await conn.execute(named, *args)


def page_files(events: str) -> str:
    """The files of `FilesUploaded` pages (`events`: a relation of them, as GIVEN) as a
    relation of the `FileUploaded` events they stand for: each file's data with the
    page's folder, job and source, at version 0 (no event in its own stream), at the
    page's time and by its actor. What reads uploads in SQL reads pages through it."""
    return f"""(SELECT f.file || jsonb_build_object(
                           'folder_id', e.data->'folder_id', 'job_id', e.data->'job_id',
                           'source', '{PAGE_SOURCE}'::jsonb) AS data,
                       0 AS stream_version, e.occurred_at, e.actor
                FROM {events}, jsonb_array_elements(e.data->'files') AS f(file)) AS e"""


# A page's files are an upload's: FileUploaded's `source` as an upload's says it.
PAGE_SOURCE = '{"type": "upload", "integration_id": null, "key": null}'


# A page's files are new: ids ingest made for this upload (uuid4), each in one page, and
# each page recorded once (its stream is named after the FilesStored it registers, whose
# second delivery the inbox drops before any handler runs: were one registered twice,
# this insert would refuse it, before its append at version 1 would). A rebuild replays
# each page once, into emptied tables, before any later event of its files (a restore's
# insert keeps its ON CONFLICT).
@tree.on(
    catalog_events.FilesUploaded,
    sql=lambda events: _files_uploaded(page_files(events), new=True),
    touches=("catalog.files", "catalog.metadata_values"),
)
async def files_uploaded(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FilesUploaded]]
) -> None:
    # The statement of FileUploaded over the pages' files: one description of the rows
    # an upload makes (a page names no group, so its second statement never runs).
    put, _ = _files_uploaded(page_files(GIVEN), new=True)
    await conn.fetchval(put, *given(events))


@tree.on(catalog_events.DicomSeriesExtended)
async def dicom_series_extended(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.DicomSeriesExtended]]
) -> None:
    await conn.executemany(
        """UPDATE catalog.files SET size = $2, sha256 = $3, dicom = $4, version = $5,
               blob_key = coalesce($6, blob_key)
           WHERE id = $1""",
        [
            (
                e.data["file_id"],
                e.data["size"],
                e.data["sha256"],
                e.data["dicom"],
                e.stream_version,
                e.data.get("blob_key"),
            )
            for e in events
        ],
    )


@tree.on(catalog_events.FileTombstoned)
async def file_tombstoned(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileTombstoned]]
) -> None:
    await conn.executemany(
        "UPDATE catalog.files SET tombstone = true, version = $2 WHERE id = $1",
        [(e.event.file_id, e.stream_version) for e in events],
    )


@tree.on(catalog_events.FileReturned)
async def file_returned(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileReturned]]
) -> None:
    await conn.executemany(
        "UPDATE catalog.files SET tombstone = false, version = $2 WHERE id = $1",
        [(e.event.file_id, e.stream_version) for e in events],
    )


@tree.on(catalog_events.FileContentChanged)
async def file_content_changed(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileContentChanged]]
) -> None:
    await conn.executemany(
        """UPDATE catalog.files SET kind = $2, size = $3, sha256 = $4, mime_type = $5,
                                    media = $6, version = $7 WHERE id = $1""",
        [
            (
                e.event.file_id,
                e.event.kind,
                e.event.size,
                e.event.sha256,
                e.event.mime_type,
                e.data["media"],
                e.stream_version,
            )
            for e in events
        ],
    )


@tree.on(catalog_events.FileRenamed)
async def file_renamed(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileRenamed]]
) -> None:
    await _set_column(conn, "name", "text", events, "name")


@tree.on(catalog_events.FileMetadataChanged)
async def file_metadata_changed(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileMetadataChanged]]
) -> None:
    await _set_column(conn, "metadata", "jsonb", events, "metadata")
    await _index_metadata(conn, [e.data["file_id"] for e in events])


async def _index_metadata(conn: asyncpg.Connection, file_ids: list[str]) -> None:
    """The files' typed values, as their metadata now is (set-based)."""
    await conn.execute(
        "DELETE FROM catalog.metadata_values WHERE file_id = ANY($1::uuid[])", file_ids
    )
    await conn.execute(
        """INSERT INTO catalog.metadata_values (file_id, key, num, at, txt)
           SELECT f.id, e.key, e.num, e.at, e.txt
           FROM catalog.files f, catalog.metadata_entries(f.metadata) e
           WHERE f.id = ANY($1::uuid[])""",
        file_ids,
    )


@tree.on(catalog_events.MetadataSchemaSet)
async def metadata_schema_set(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.MetadataSchemaSet]]
) -> None:
    last = events[-1]
    await conn.execute(
        """INSERT INTO catalog.metadata_schema (id, keys, version) VALUES (1, $1, $2)
           ON CONFLICT (id) DO UPDATE SET keys = excluded.keys, version = excluded.version""",
        last.data["keys"],
        last.stream_version,
    )


@tree.on(catalog_events.FileMoved)
async def file_moved(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileMoved]]
) -> None:
    # The last move of each file: an UPDATE ... FROM joining a row twice applies either.
    last = {e.data["file_id"]: e for e in events}
    await conn.execute(
        """UPDATE catalog.files f SET folder_id = x.folder_id, version = x.version
           FROM unnest($1::uuid[], $2::uuid[], $3::int[]) AS x(id, folder_id, version)
           WHERE f.id = x.id""",
        list(last),
        [e.data["to_folder_id"] for e in last.values()],
        [e.stream_version for e in last.values()],
    )


@tree.on(catalog_events.FileDeleted)
async def file_deleted(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileDeleted]]
) -> None:
    ids = [e.data["file_id"] for e in events]
    trashed = [e for e in events if e.data.get("trashed")]
    if trashed:
        # A move above the folders, not yet committed, re-roots the trash without
        # seeing these rows: wait for it, so the INSERT (a statement of its own, read
        # after it) takes the folders' paths as the move left them. In ids' order, as
        # any other delete's.
        await conn.execute(
            """SELECT 1 FROM catalog.folders
               WHERE id IN (SELECT folder_id FROM catalog.files WHERE id = ANY($1::uuid[]))
               ORDER BY id FOR SHARE""",
            [e.data["file_id"] for e in trashed],
        )
        # The folder's path from the trash when the folder went first (a cascade: the
        # file went with it); a file deleted while its folder was not in the trash is
        # an item of its own.
        await conn.execute(
            """INSERT INTO catalog.trash_files (id, folder_id, name, path, blob_key, sha256,
                   version, entry, trashed_at, trashed_by, itself)
               SELECT f.id, f.folder_id, f.name,
                      coalesce(fo.path, tf.path, ARRAY[f.folder_id]), f.blob_key, f.sha256,
                      x.version, to_jsonb(f), x.at, x.actor, tf.id IS NULL
               FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[])
                    AS x(id, version, at, actor)
               JOIN catalog.files f ON f.id = x.id
               LEFT JOIN catalog.folders fo ON fo.id = f.folder_id
               LEFT JOIN catalog.trash_folders tf ON tf.id = f.folder_id
               ON CONFLICT (id) DO NOTHING""",
            [e.data["file_id"] for e in trashed],
            [e.stream_version for e in trashed],
            [e.occurred_at for e in trashed],
            [e.actor for e in trashed],
        )
    await conn.execute("DELETE FROM catalog.files WHERE id = ANY($1::uuid[])", ids)
    await conn.execute("DELETE FROM catalog.metadata_values WHERE file_id = ANY($1::uuid[])", ids)


@tree.on(catalog_events.FileRestored)
async def file_restored(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileRestored]]
) -> None:
    # The typed metadata values of the files put back, in the same statement: their old
    # ones went with them to the trash (file_deleted), so there is nothing to delete.
    await conn.execute(
        """WITH back AS (
               DELETE FROM catalog.trash_files t
               USING unnest($1::uuid[], $2::int[]) AS x(id, version)
               WHERE t.id = x.id
               RETURNING jsonb_set(t.entry, '{version}', to_jsonb(x.version)) AS entry),
           put AS (
               INSERT INTO catalog.files
               SELECT r.* FROM back, jsonb_populate_record(null::catalog.files, back.entry) r
               ON CONFLICT (id) DO NOTHING
               RETURNING id, metadata)
           INSERT INTO catalog.metadata_values (file_id, key, num, at, txt)
           SELECT put.id, e.key, e.num, e.at, e.txt
           FROM put, catalog.metadata_entries(put.metadata) e""",
        [e.data["file_id"] for e in events],
        [e.stream_version for e in events],
    )


@tree.on(catalog_events.FilesRestored)
async def files_restored(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FilesRestored]]
) -> None:
    # As file_restored, for batches: no event in the files' own streams, so each keeps
    # the version of its FileDeleted (the trash row's). In the order of the widest index
    # (folder, name): 100,000 rows in random order took 6.3-8.8 s into the eight indexes,
    # sorted 2.8-4.2 s (one database, the same rows; the benchmark's files, named in
    # order and trashed in that order, gain nothing).
    await conn.execute(
        """WITH back AS (
               DELETE FROM catalog.trash_files t WHERE t.id = ANY($1::uuid[])
               RETURNING jsonb_set(t.entry, '{version}', to_jsonb(t.version)) AS entry),
           put AS (
               INSERT INTO catalog.files
               SELECT r.* FROM back, jsonb_populate_record(null::catalog.files, back.entry) r
               ORDER BY r.folder_id, r.name
               ON CONFLICT (id) DO NOTHING
               RETURNING id, metadata)
           INSERT INTO catalog.metadata_values (file_id, key, num, at, txt)
           SELECT put.id, e.key, e.num, e.at, e.txt
           FROM put, catalog.metadata_entries(put.metadata) e""",
        [i for e in events for i in e.data["file_ids"]],
    )


@tree.on(catalog_events.FilePurged)
async def file_purged(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FilePurged]]
) -> None:
    await conn.execute(
        "DELETE FROM catalog.trash_files WHERE id = ANY($1::uuid[])",
        [e.data["file_id"] for e in events],
    )


@tree.on(catalog_events.FileDescribed)
async def file_described(
    conn: asyncpg.Connection, events: Sequence[Received[catalog_events.FileDescribed]]
) -> None:
    await _set_column(conn, "description", "text", events, "description")


async def _set_column(
    conn: asyncpg.Connection,
    column: str,
    sql_type: str,
    events: Sequence[Received[Any]],
    field: str,
) -> None:
    """One statement for a run of events each setting one column of a file: the last
    of each file's wins (an UPDATE ... FROM joining a row twice applies either)."""
    last = {e.data["file_id"]: e for e in events}
    await conn.execute(
        f"""UPDATE catalog.files f SET {column} = x.value, version = x.version
            FROM unnest($1::uuid[], $2::{sql_type}[], $3::int[]) AS x(id, value, version)
            WHERE f.id = x.id""",
        list(last),
        [e.data[field] for e in last.values()],
        [e.stream_version for e in last.values()],
    )


@links.on(datasets_events.DatasetCreated)
async def dataset_created(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetCreated]]
) -> None:
    synced = [e.data for e in events if e.data.get("synced_folder_id")]
    await conn.execute(
        """INSERT INTO catalog.synced_folders (dataset_id, folder_id)
           SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING""",
        [d["dataset_id"] for d in synced],
        [d["synced_folder_id"] for d in synced],
    )


@links.on(datasets_events.DatasetUnsynced)
async def dataset_unsynced(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetUnsynced]]
) -> None:
    await conn.execute(
        "DELETE FROM catalog.synced_folders WHERE dataset_id = ANY($1::uuid[])",
        [e.data["dataset_id"] for e in events],
    )


@links.on(datasets_events.DatasetResynced)
async def dataset_resynced(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetResynced]]
) -> None:
    await conn.executemany(
        """INSERT INTO catalog.synced_folders (dataset_id, folder_id) VALUES ($1, $2)
           ON CONFLICT (dataset_id) DO UPDATE SET folder_id = excluded.folder_id""",
        [(e.data["dataset_id"], e.data["folder_id"]) for e in events],
    )


@links.on(datasets_events.DatasetDeleted)
async def dataset_deleted(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.DatasetDeleted]]
) -> None:
    ids = [e.data["dataset_id"] for e in events]
    await conn.execute("DELETE FROM catalog.synced_folders WHERE dataset_id = ANY($1::uuid[])", ids)
    await conn.execute("DELETE FROM catalog.file_links WHERE dataset_id = ANY($1::uuid[])", ids)


@links.on(datasets_events.FilesLinked)
async def files_linked(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.FilesLinked]]
) -> None:
    await conn.execute(
        """INSERT INTO catalog.file_links (file_id, dataset_id)
           SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING""",
        [f for e in events for f in e.data["file_ids"]],
        [e.data["dataset_id"] for e in events for _ in e.data["file_ids"]],
    )


@links.on(datasets_events.FilesUnlinked)
async def files_unlinked(
    conn: asyncpg.Connection, events: Sequence[Received[datasets_events.FilesUnlinked]]
) -> None:
    # In order: a file unlinked, then linked again, in one batch ends linked.
    for e in events:
        await conn.execute(
            """DELETE FROM catalog.file_links
               WHERE dataset_id = $1 AND file_id = ANY($2::uuid[])""",
            e.data["dataset_id"],
            e.data["file_ids"],
        )
