"""What the catalog answers: folders with their path, listings, search, file details."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg
import orjson

from services.catalog import domain, listing, schema
from shared.kit.access import Access

FILE_FIELDS = (
    "id, name, kind, folder_id, size, sha256, mime_type, media, source, metadata, blob_key,"
    ' created_at, created_by, dicom, "group", description, tombstone'
)


def file_json(row: asyncpg.Record) -> dict[str, Any]:
    media = {k: v for k, v in (row["media"] or {}).items() if v is not None}
    source = {k: v for k, v in (row["source"] or {}).items() if v is not None}
    found: dict[str, Any] = {
        "type": "file",
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"],
        "kind": row["kind"],
        "folder_id": str(row["folder_id"]),
        "size": row["size"],
        "sha256": row["sha256"],
        "mime_type": row["mime_type"],
        "media": media,
        "source": source,
        "metadata": row["metadata"],
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
        "datasets": [],
    }
    if row["dicom"] is not None:
        found["dicom"] = row["dicom"]
    if row["tombstone"]:
        # A cloud-synced file whose object left its bucket: content 410 Gone.
        found["tombstone"] = True
    if row["group"] is not None:
        group = row["group"]
        ids = group.get("file_ids", [])
        found["group"] = {
            "constituent_folder_id": group["constituent_folder_id"],
            "file_ids": ids[: domain.GROUP_IDS_SHOWN],
            "images": group.get("images", len(ids)),
        }
    return found


# Duplicates are counted up to this many (a blob uploaded 100,000 times is not counted
# on every page that shows one of its files).
DUPLICATES_COUNTED = 10_000


async def with_duplicates(
    pool: asyncpg.Pool, found: list[dict[str, Any]], access: Access
) -> list[dict[str, Any]]:
    """Each file's `duplicates`: how many other files the caller may see hold the same
    bytes (by sha256), counted once per distinct sha256 of the page, by index. Every
    file the catalog answers passes here, so it also hides the images of groups the
    caller may not see (`_group_images_seen`)."""
    await _group_images_seen(pool, found, access)
    shas = sorted({f["sha256"] for f in found if f.get("type") == "file"})
    if not shas:
        return found
    rows = await pool.fetch(
        """SELECT x.sha, (SELECT count(*) FROM (
                   SELECT 1 FROM catalog.files o
                   WHERE o.sha256 = x.sha
                     AND ($2::uuid[] IS NULL OR EXISTS (
                         SELECT 1 FROM catalog.folders p
                         WHERE p.id = o.folder_id AND p.path && $2))
                   LIMIT $3) s) AS n
           FROM unnest($1::text[]) AS x(sha)""",
        shas,
        access.roots,
        DUPLICATES_COUNTED + 1,
    )
    counts = {r["sha"]: r["n"] for r in rows}
    for f in found:
        if f.get("type") == "file":
            # The file itself is one of those counted: the caller sees it.
            f["duplicates"] = max(counts.get(f["sha256"], 1) - 1, 0)
    return found


async def _group_images_seen(
    pool: asyncpg.Pool, found: list[dict[str, Any]], access: Access
) -> None:
    await groups_seen(pool, [f["group"] for f in found if f.get("group")], access)


async def groups_seen(pool: asyncpg.Pool, groups: list[dict[str, Any]], access: Access) -> None:
    """A group's file can move on its own, away from its constituent folder: to a caller
    with no role on that folder, its `file_ids` are ids of files they may not see, so
    they get none (the count and the folder's id, which opens to nobody else, stay)."""
    groups = [g for g in groups if g.get("file_ids") and g.get("constituent_folder_id")]
    if access.roots is None or not groups:
        return
    rows = await pool.fetch(
        "SELECT id, path FROM catalog.folders WHERE id = ANY($1::uuid[])",
        list({uuid.UUID(g["constituent_folder_id"]) for g in groups}),
    )
    seen = {str(r["id"]) for r in rows if access.role_on(r["path"]) is not None}
    for group in groups:
        if group["constituent_folder_id"] not in seen:
            group["file_ids"] = []


async def audit_seen(
    pool: asyncpg.Pool, access: Access | None, items: list[dict[str, Any]]
) -> None:
    """The audit's events as the caller may read them: a group file's `FileUploaded`
    names its images only to who sees them, as the file's answer does."""
    if access is None:
        return  # a service's own call
    groups = [
        i["data"]["group"]
        for i in items
        if i["type"] == "catalog.FileUploaded" and isinstance(i["data"].get("group"), dict)
    ]
    await groups_seen(pool, groups, access)
    pages = [i["data"] for i in items if i["type"] == "catalog.FilesUploaded"]
    restores = [i["data"] for i in items if i["type"] == "catalog.FilesRestored"]
    await pages_seen(pool, pages, restores, access)


async def pages_seen(
    pool: asyncpg.Pool,
    pages: list[dict[str, Any]],
    restores: list[dict[str, Any]],
    access: Access,
) -> None:
    """An upload's page names every file of it: the audit of one of them shows the
    others only where the caller may see them now (they may have moved apart, or to
    the trash), as each file's own `FileUploaded` would have been shown to them. So
    does a restore's batch (`FilesRestored`, `restores`) of the files it brought back."""
    if access.roots is None or not (pages or restores):
        return
    rows = await pool.fetch(
        """SELECT f.id, fo.path FROM catalog.files f JOIN catalog.folders fo ON fo.id = f.folder_id
           WHERE f.id = ANY($1::uuid[])""",
        list({i for batch in pages + restores for i in batch.get("file_ids", [])}),
    )
    seen = {str(r["id"]) for r in rows if access.role_on(r["path"]) is not None}
    for page in pages:
        page["files"] = [f for f in page.get("files", []) if f.get("file_id") in seen]
        page["file_ids"] = [f["file_id"] for f in page["files"]]
    for restore in restores:
        restore["file_ids"] = [i for i in restore.get("file_ids", []) if i in seen]


async def duplicates(
    pool: asyncpg.Pool, file_id: uuid.UUID, access: Access, limit: int, cursor: str | None
) -> dict[str, Any]:
    """The other files the caller may see that hold the same bytes, by id."""
    this = await file(pool, file_id, access)
    after = uuid.UUID(NIL)
    if cursor:
        try:
            after = uuid.UUID(_uncursor(cursor, str)[0])
        except ValueError:
            raise domain.Invalid(
                "invalid_cursor", "the cursor is not one this API gave out"
            ) from None
    rows = await pool.fetch(
        f"""SELECT {FILE_FIELDS} FROM catalog.files f
            WHERE f.sha256 = $1 AND f.id <> $3 AND f.id > $4
              AND ($2::uuid[] IS NULL OR EXISTS (
                  SELECT 1 FROM catalog.folders p WHERE p.id = f.folder_id AND p.path && $2))
            ORDER BY f.id LIMIT $5""",
        this["sha256"],
        access.roots,
        file_id,
        after,
        limit + 1,
    )
    found = await with_duplicates(pool, [file_json(r) for r in rows[:limit]], access)
    last = rows[limit - 1] if len(rows) > limit else None
    return {"items": found, "next_cursor": _cursor([str(last["id"])]) if last else None}


def _cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode()


def _uncursor(cursor: str, *shape: type) -> list[Any]:
    """The values of a cursor this API gave out, checked against the shape it gave them."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as error:
        raise domain.Invalid("invalid_cursor", "the cursor is not one this API gave out") from error
    if (
        not isinstance(values, list)
        or len(values) != len(shape)
        or not all(type(v) is t for v, t in zip(values, shape, strict=True))
        or not all(domain.storable(v) for v in values if isinstance(v, str))
    ):
        raise domain.Invalid("invalid_cursor", "the cursor is not one this API gave out")
    return values


async def _paths(
    conn: asyncpg.Connection | asyncpg.Pool, paths: list[list[uuid.UUID]], access: Access
) -> list[list[dict[str, str]]]:
    """Paths with names, from the first folder the caller may see: the names of
    folders above one shared with them are not theirs to read."""
    paths = [p[next((i for i, f in enumerate(p) if access.role_on([f])), len(p)) :] for p in paths]
    ids = list({i for p in paths for i in p})
    names = {
        r["id"]: r["name"]
        for r in await conn.fetch(
            "SELECT id, name FROM catalog.folders WHERE id = ANY($1::uuid[])", ids
        )
    }
    return [[{"id": str(i), "name": names.get(i, "")} for i in p] for p in paths]


async def folders_json(
    conn: asyncpg.Connection | asyncpg.Pool, rows: list[asyncpg.Record], access: Access
) -> list[dict[str, Any]]:
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    counts = {
        r["id"]: r
        for r in await conn.fetch(
            """SELECT x.id,
                      (SELECT count(*) FROM catalog.files f WHERE f.folder_id = x.id) AS files,
                      (SELECT count(*) FROM catalog.folders d WHERE d.parent_id = x.id) AS folders
               FROM unnest($1::uuid[]) AS x(id)""",
            ids,
        )
    }
    paths = await _paths(conn, [list(r["path"]) for r in rows], access)
    # Cloud-synced: it, or a folder above it, follows a bucket (the rule the catalog
    # refuses uploads, new folders and moves by, as `synced_root`), in one read a page.
    synced = {
        r["folder_id"]
        for r in await conn.fetch(
            """SELECT s.folder_id
               FROM catalog.cloud_synced s
               JOIN catalog.cloud_synced r
                 ON r.folder_id = s.root_folder_id AND r.root_folder_id = r.folder_id
               WHERE s.folder_id = ANY($1::uuid[])""",
            list({p for r in rows for p in r["path"]}),
        )
    }
    return [
        {
            "type": "folder",
            "id": str(r["id"]),
            "name": r["name"],
            "description": r["description"],
            "metadata": r["metadata"],
            # Above the first folder the caller may see there is nothing of theirs: no
            # parent either (as the path starts there).
            "parent_id": str(r["parent_id"])
            if r["parent_id"] and access.role_on(r["path"][:-1])
            else None,
            "path": path,
            "file_count": counts[r["id"]]["files"],
            "folder_count": counts[r["id"]]["folders"],
            "created_at": r["created_at"].isoformat(),
            "created_by": r["created_by"],
            "my_role": access.role_on(r["path"]),
            "may_rename": domain.may_rename(
                access, access.role_on(r["path"]), r["parent_id"], r["created_by"]
            ),
            "cloud_synced": any(p in synced for p in r["path"]),
        }
        for r, path in zip(rows, paths, strict=True)
    ]


async def _visible_folder(
    pool: asyncpg.Pool, folder_id: uuid.UUID, access: Access
) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM catalog.folders WHERE id = $1", folder_id)
    if row is None:
        raise domain.NotFound("not_found", f"folder {folder_id} does not exist")
    access.require(row["path"], "user", f"folder {folder_id}")
    return row


async def folder(pool: asyncpg.Pool, folder_id: uuid.UUID, access: Access) -> dict[str, Any]:
    row = await _visible_folder(pool, folder_id, access)
    return (await folders_json(pool, [row], access))[0]


async def folders(
    pool: asyncpg.Pool,
    parent_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
    access: Access,
) -> dict[str, Any]:
    """The children of a folder, or the caller's top level: the top-level folders for
    an org admin; for a member, each folder shared with them whose parent they cannot
    see (a folder shared deep in someone's tree shows at their top level)."""
    if parent_id is not None:
        await _visible_folder(pool, parent_id, access)
    after = _uncursor(cursor, str, str) if cursor else ["", ""]
    if parent_id is None and access.roots is not None:
        where = (
            "$1::uuid IS NULL AND id = ANY($5::uuid[])"
            " AND NOT (path[1:cardinality(path) - 1] && $5::uuid[])"
        )
        extra: list[Any] = [access.roots]
    else:
        where, extra = "parent_id IS NOT DISTINCT FROM $1", []
    rows = await pool.fetch(
        f"""SELECT * FROM catalog.folders
            WHERE {where} AND (name, id::text) > ($2, $3)
            ORDER BY name, id::text LIMIT $4""",
        parent_id,
        after[0],
        after[1],
        limit + 1,
        *extra,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": await folders_json(pool, rows, access),
        "next_cursor": _cursor([rows[-1]["name"], str(rows[-1]["id"])]) if more else None,
    }


async def items(
    pool: asyncpg.Pool, folder_id: uuid.UUID, asked: listing.Listing, access: Access
) -> dict[str, Any]:
    """Subfolders first, then files, each in the order asked for (listing.py)."""
    await _visible_folder(pool, folder_id, access)
    asked = await _typed(pool, asked)
    order = asked.order or "name"
    after = (
        listing.decode_cursor(asked.cursor, order, asked.desc)
        if asked.cursor
        else listing.Position()
    )
    limit = asked.limit
    found: list[dict[str, Any]] = []
    if after.section == 0 and asked.folders_wanted:
        where = listing.filters(asked, "d", [folder_id], files=False)
        past, ordering = listing.keyset(asked, "d", 0, after, where)
        rows = await pool.fetch(
            f"""SELECT d.* FROM catalog.folders d
                WHERE d.parent_id = $1 AND {where.sql} AND {past}
                ORDER BY {ordering} LIMIT {where.arg(limit + 1)}""",
            *where.args,
        )
        found = await folders_json(pool, list(rows[:limit]), access)
        if len(rows) > limit:
            last = rows[limit - 1]
            return {
                "items": found,
                "next_cursor": listing.encode_cursor(
                    order, asked.desc, 0, listing.row_key(asked, 0, last), last["id"]
                ),
            }
    next_cursor = None
    if asked.files_wanted and len(found) < limit:
        room = limit - len(found)
        where = listing.filters(asked, "f", [folder_id], files=True)
        past, ordering = listing.keyset(asked, "f", 1, after, where)
        rows = await pool.fetch(
            f"""SELECT {FILE_FIELDS} FROM catalog.files f
                WHERE f.folder_id = $1 AND {where.sql} AND {past}
                ORDER BY {ordering} LIMIT {where.arg(room + 1)}""",
            *where.args,
        )
        found += await with_duplicates(pool, [file_json(r) for r in rows[:room]], access)
        if len(rows) > room:
            last = rows[room - 1]
            next_cursor = listing.encode_cursor(
                order, asked.desc, 1, listing.row_key(asked, 1, last), last["id"]
            )
    elif asked.files_wanted and after.section == 0 and found:
        # The page is full of folders; files follow, if any match.
        where = listing.filters(asked, "f", [folder_id], files=True)
        if await pool.fetchval(
            f"""SELECT EXISTS (SELECT 1 FROM catalog.files f
                               WHERE f.folder_id = $1 AND {where.sql})""",
            *where.args,
        ):
            next_cursor = listing.start_of_files(order, asked.desc)
    return {"items": found, "next_cursor": next_cursor}


async def summary(pool: asyncpg.Pool, folder_id: uuid.UUID, access: Access) -> dict[str, Any]:
    await _visible_folder(pool, folder_id, access)
    rows = await pool.fetch(
        """SELECT f.kind, count(*) AS files, coalesce(sum(f.size), 0)::bigint AS bytes
           FROM catalog.files f JOIN catalog.folders d ON d.id = f.folder_id
           WHERE d.path @> ARRAY[$1::uuid] GROUP BY f.kind ORDER BY f.kind""",
        folder_id,
    )
    folders_below = await pool.fetchval(
        "SELECT count(*) - 1 FROM catalog.folders WHERE path @> ARRAY[$1::uuid]", folder_id
    )
    return {
        "folder_id": str(folder_id),
        "folders": folders_below,
        "files": sum(r["files"] for r in rows),
        "bytes": sum(r["bytes"] for r in rows),
        "by_kind": {r["kind"]: {"files": r["files"], "bytes": r["bytes"]} for r in rows},
    }


async def file(
    pool: asyncpg.Pool, file_id: uuid.UUID, access: Access, *, internal: bool = False
) -> dict[str, Any]:
    row = await pool.fetchrow(
        f"""SELECT {FILE_FIELDS}, (SELECT path FROM catalog.folders p WHERE p.id = folder_id)
            FROM catalog.files WHERE id = $1""",
        file_id,
    )
    if row is None:
        raise domain.NotFound("not_found", f"file {file_id} does not exist")
    access.require(row["path"] or (), "user", f"file {file_id}")
    [found] = await with_duplicates(pool, [file_json(row)], access)
    found["my_role"] = access.role_on(row["path"] or ())
    if internal:
        found["blob_key"] = row["blob_key"]
        # For the service that hands out its bytes to decide the caller's right again.
        found["folder_path"] = [str(p) for p in row["path"] or ()]
    return found


async def files(pool: asyncpg.Pool, ids: list[uuid.UUID], access: Access) -> list[dict[str, Any]]:
    """Those of these files the caller may see."""
    rows = await pool.fetch(
        f"""SELECT {FILE_FIELDS} FROM catalog.files f
            WHERE id = ANY($1::uuid[]) AND ($2::uuid[] IS NULL OR EXISTS (
                SELECT 1 FROM catalog.folders p WHERE p.id = f.folder_id AND p.path && $2))
            ORDER BY name, id""",
        ids,
        access.roots,
    )
    return await with_duplicates(pool, [file_json(r) for r in rows], access)


async def metadata_schema(pool: asyncpg.Pool) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT keys, version FROM catalog.metadata_schema")
    return {"keys": row["keys"] if row else {}, "version": row["version"] if row else 0}


async def _typed(pool: asyncpg.Pool, asked: listing.Listing) -> listing.Listing:
    if not asked.ranges and not asked.metadata:
        return asked
    keys = await pool.fetchval("SELECT keys FROM catalog.metadata_schema")
    return schema.typed(schema.from_json(keys or {}), asked)


async def lookup(pool: asyncpg.Pool, ids: list[uuid.UUID], access: Access) -> dict[str, Any]:
    """The files of these ids the caller may see, in the order asked (each once), and
    the ids that are not (missing or unseen: one answer for both)."""
    seen = {uuid.UUID(f["id"]): f for f in await files(pool, ids, access)}
    asked = list(dict.fromkeys(ids))
    return {
        "items": [seen[i] for i in asked if i in seen],
        "not_found": [str(i) for i in asked if i not in seen],
    }


NIL = "00000000-0000-0000-0000-000000000000"
# How long the index-driven plan may try before the walk in id order takes over.
INDEX_BUDGET_MS = 20


async def _matching_files(
    pool: asyncpg.Pool,
    where: str,
    args: list[Any],
    indexed: bool,
    scoped: bool,
    typed: bool = False,
) -> list[asyncpg.Record]:
    """Run a file search in id order with the plan that suits how common its match is.

    The planner cannot tell how many names contain a text, or how many files hold a
    metadata value. Across the whole catalog, a rare match is found fastest through
    the indexes (trigrams with kind, metadata, folder), then sorted; a common one by
    walking ids in order until a page is full. Text shorter than a trigram, with no
    metadata filter, only walks. Otherwise the indexes get a small budget, and the
    walk, which then finds its page quickly, takes over.

    Within a set of folders (a folder's subtree, or what a member may see), the
    page's ids come first: the folder index holds (folder, name, id), so an index-only
    scan checks names without visiting the table, whose rows for those folders are
    spread everywhere. The planner's own choice gets the budget first, then the
    indexes run without one. Plans are made for each call: a cached generic plan
    would ignore the choice. `$2` is the limit.

    A filter through the typed side table (`typed`) gets the planner's own plan and
    no budget: it reads that table's (key, value, file) index in file order, a walk
    PostgreSQL estimates well, and bitmaps would only make it sort.
    """
    sql = f"SELECT {FILE_FIELDS} FROM catalog.files f WHERE {where} ORDER BY f.id LIMIT $2"
    if scoped:
        page = f"SELECT f.id FROM catalog.files f WHERE {where} ORDER BY f.id LIMIT $2"
        sql = f"SELECT {FILE_FIELDS} FROM catalog.files WHERE id IN ({page}) ORDER BY id"
    custom = "SET LOCAL plan_cache_mode = force_custom_plan"
    budget = f"SET LOCAL statement_timeout = {INDEX_BUDGET_MS}"
    async with pool.acquire() as conn:
        if typed:
            async with conn.transaction(readonly=True):
                await conn.execute(custom)
                return await conn.fetch(sql, *args)
        if indexed:
            first = (
                f"{custom}; {budget}"
                if scoped
                else f"{custom}; SET LOCAL enable_indexscan = off; {budget}"
            )
            try:
                async with conn.transaction(readonly=True):
                    await conn.execute(first)
                    return await conn.fetch(sql, *args)
            except asyncpg.QueryCanceledError:
                pass
            if scoped:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"{custom}; SET LOCAL enable_indexscan = off")
                    return await conn.fetch(sql, *args)
        async with conn.transaction(readonly=True):
            await conn.execute(custom if scoped else f"{custom}; SET LOCAL enable_bitmapscan = off")
            return await conn.fetch(sql, *args)


async def search(pool: asyncpg.Pool, asked: listing.Listing, access: Access) -> dict[str, Any]:
    """Files and folders matching the filters (a name containing q, kinds, metadata,
    links), folders first, among those the caller may see; each section by id, or in
    the order asked for.

    ILIKE is served by the trigram indexes for rare text; for common text the
    primary-key order lets a page stop after `limit` hits. Conditions are only
    added when given, so the planner sees each query for what it is.
    """
    folder_id = asked.folder_id
    if folder_id is not None:
        await _visible_folder(pool, folder_id, access)
    asked = await _typed(pool, asked)
    # Within a visible folder everything is visible; elsewhere a member sees the
    # subtrees of the folders shared with them.
    roots = access.roots if folder_id is None else None
    if asked.order is not None:
        return await _ordered_search(pool, asked, roots, access)
    section, ident = _uncursor(asked.cursor, int, str) if asked.cursor else [0, NIL]
    try:
        after = uuid.UUID(ident or NIL)
    except ValueError as error:
        raise domain.Invalid("invalid_cursor", "the cursor is not one this API gave out") from error
    limit = asked.limit
    found: list[dict[str, Any]] = []
    if section == 0 and asked.folders_wanted:
        where = listing.filters(asked, "d", [after, limit + 1], files=False)
        _scope_folders(asked, roots, where)
        rows = await pool.fetch(
            f"""SELECT d.* FROM catalog.folders d WHERE d.id > $1 AND {where.sql}
                ORDER BY d.id LIMIT $2""",
            *where.args,
        )
        found = await folders_json(pool, list(rows[:limit]), access)
        if len(rows) > limit:
            return {"items": found, "next_cursor": _cursor([0, str(rows[limit - 1]["id"])])}
        after = uuid.UUID(NIL)
    if not asked.files_wanted or len(found) >= limit:
        more = asked.files_wanted and len(found) >= limit
        return {"items": found, "next_cursor": _cursor([1, NIL]) if more else None}
    room = limit - len(found)
    where = listing.filters(asked, "f", [after, room + 1], files=True)
    scope = await _file_scope(pool, asked, roots, where)
    where.add("f.id > $1")
    indexed = bool(asked.metadata or asked.typed_ranges) or len(asked.q or "") >= 3
    # The typed side table's index lists a key's matches in id order: the planner's own
    # plan walks it and stops at the page.
    typed = where.typed
    rows = await _matching_files(pool, where.sql, where.args, indexed, scope or typed, typed)
    found += await _with_paths(
        pool, await with_duplicates(pool, [file_json(r) for r in rows[:room]], access), access
    )
    next_cursor = _cursor([1, str(rows[room - 1]["id"])]) if len(rows) > room else None
    return {"items": found, "next_cursor": next_cursor}


def _scope_folders(
    asked: listing.Listing, roots: list[uuid.UUID] | None, where: listing.Conditions
) -> None:
    if asked.folder_id is not None:
        where.add(f"d.path @> ARRAY[{where.arg(asked.folder_id)}::uuid]")
    if roots is not None:
        where.add(f"d.path && {where.arg(roots)}::uuid[]")


async def _file_scope(
    pool: asyncpg.Pool,
    asked: listing.Listing,
    roots: list[uuid.UUID] | None,
    where: listing.Conditions,
) -> bool:
    """Adds the folders a file search is held to, if any: a folder's subtree, or what a
    member may see."""
    scope = None
    if asked.folder_id is not None:
        scope = await pool.fetch(
            "SELECT id FROM catalog.folders WHERE path @> ARRAY[$1::uuid]", asked.folder_id
        )
    elif roots is not None:
        scope = await pool.fetch("SELECT id FROM catalog.folders WHERE path && $1::uuid[]", roots)
    if scope is None:
        return False
    # The folder ids as a parameter, not a subquery: planned per call, the planner
    # then knows how many files they hold and may use the folder index.
    where.add(f"f.folder_id = ANY({where.arg([r['id'] for r in scope])}::uuid[])")
    return True


async def _with_paths(
    pool: asyncpg.Pool, files: list[dict[str, Any]], access: Access
) -> list[dict[str, Any]]:
    folder_rows = await pool.fetch(
        "SELECT id, path FROM catalog.folders WHERE id = ANY($1::uuid[])",
        list({uuid.UUID(f["folder_id"]) for f in files}),
    )
    paths = dict(
        zip(
            [r["id"] for r in folder_rows],
            await _paths(pool, [list(r["path"]) for r in folder_rows], access),
            strict=True,
        )
    )
    for f in files:
        f["path"] = paths.get(uuid.UUID(f["folder_id"]), [])
    return files


async def _ordered_search(
    pool: asyncpg.Pool, asked: listing.Listing, roots: list[uuid.UUID] | None, access: Access
) -> dict[str, Any]:
    """A search in the order asked for, by keyset: folders, then files."""
    assert asked.order is not None
    after = (
        listing.decode_cursor(asked.cursor, asked.order, asked.desc)
        if asked.cursor
        else listing.Position()
    )
    limit = asked.limit
    found: list[dict[str, Any]] = []
    custom = "SET LOCAL plan_cache_mode = force_custom_plan"
    if after.section == 0 and asked.folders_wanted:
        where = listing.filters(asked, "d", [], files=False)
        _scope_folders(asked, roots, where)
        past, ordering = listing.keyset(asked, "d", 0, after, where)
        rows = await pool.fetch(
            f"""SELECT d.* FROM catalog.folders d WHERE {where.sql} AND {past}
                ORDER BY {ordering} LIMIT {where.arg(limit + 1)}""",
            *where.args,
        )
        found = await folders_json(pool, list(rows[:limit]), access)
        if len(rows) > limit:
            last = rows[limit - 1]
            key = listing.row_key(asked, 0, last)
            cursor = listing.encode_cursor(asked.order, asked.desc, 0, key, last["id"])
            return {"items": found, "next_cursor": cursor}
    if not asked.files_wanted or len(found) >= limit:
        more = asked.files_wanted and len(found) >= limit
        cursor = listing.start_of_files(asked.order, asked.desc) if more else None
        return {"items": found, "next_cursor": cursor}
    room = limit - len(found)
    where = listing.filters(asked, "f", [], files=True)
    await _file_scope(pool, asked, roots, where)
    past, ordering = listing.keyset(asked, "f", 1, after, where)
    # The page's ids first, then its rows: the ids and the order's column come from
    # indexes alone where they can (the primary key carries name and kind), so a rare
    # metadata match ordered by name probes 10,000 index entries, not 10,000 rows.
    page = f"""SELECT f.id FROM catalog.files f WHERE {where.sql} AND {past}
               ORDER BY {ordering} LIMIT {where.arg(room + 1)}"""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        await conn.execute(custom)
        rows = await conn.fetch(
            f"""SELECT {FILE_FIELDS} FROM catalog.files f WHERE f.id IN ({page})
                ORDER BY {ordering}""",
            *where.args,
        )
    found += await _with_paths(
        pool, await with_duplicates(pool, [file_json(r) for r in rows[:room]], access), access
    )
    next_cursor = None
    if len(rows) > room:
        last = rows[room - 1]
        key = listing.row_key(asked, 1, last)
        next_cursor = listing.encode_cursor(asked.order, asked.desc, 1, key, last["id"])
    return {"items": found, "next_cursor": next_cursor}
