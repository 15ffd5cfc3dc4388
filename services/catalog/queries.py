"""What the catalog answers: folders with their path, listings, search, file details."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import asyncpg
import orjson

from services.catalog import domain
from shared.kit.access import Access

FILE_FIELDS = (
    "id, name, kind, folder_id, size, sha256, mime_type, media, source, metadata, blob_key,"
    ' created_at, created_by, dicom, "group"'
)


def file_json(row: asyncpg.Record) -> dict[str, Any]:
    media = {k: v for k, v in (row["media"] or {}).items() if v is not None}
    source = {k: v for k, v in (row["source"] or {}).items() if v is not None}
    found: dict[str, Any] = {
        "type": "file",
        "id": str(row["id"]),
        "name": row["name"],
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
    if row["group"] is not None:
        group = row["group"]
        ids = group.get("file_ids", [])
        found["group"] = {
            "constituent_folder_id": group["constituent_folder_id"],
            "file_ids": ids[: domain.GROUP_IDS_SHOWN],
            "images": group.get("images", len(ids)),
        }
    return found


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
    return [
        {
            "type": "folder",
            "id": str(r["id"]),
            "name": r["name"],
            "description": r["description"],
            "metadata": r["metadata"],
            "parent_id": str(r["parent_id"]) if r["parent_id"] else None,
            "path": path,
            "file_count": counts[r["id"]]["files"],
            "folder_count": counts[r["id"]]["folders"],
            "created_at": r["created_at"].isoformat(),
            "created_by": r["created_by"],
            "my_role": access.role_on(r["path"]),
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
    pool: asyncpg.Pool,
    folder_id: uuid.UUID,
    kind: str | None,
    cursor: str | None,
    limit: int,
    access: Access,
) -> dict[str, Any]:
    """Subfolders first, then files, each by name; the cursor is (section, name, id)."""
    await _visible_folder(pool, folder_id, access)
    section, name, ident = _uncursor(cursor, int, str, str) if cursor else [0, "", ""]
    found: list[dict[str, Any]] = []
    next_cursor = None
    if section == 0 and kind in (None, "folder"):
        rows = await pool.fetch(
            """SELECT * FROM catalog.folders WHERE parent_id = $1 AND (name, id::text) > ($2, $3)
               ORDER BY name, id::text LIMIT $4""",
            folder_id,
            name,
            ident,
            limit + 1,
        )
        found = await folders_json(pool, list(rows[:limit]), access)
        if len(rows) > limit:
            return {
                "items": found,
                "next_cursor": _cursor([0, rows[limit - 1]["name"], str(rows[limit - 1]["id"])]),
            }
        name, ident = "", ""
    if kind != "folder" and len(found) < limit:
        room = limit - len(found)
        rows = await pool.fetch(
            f"""SELECT {FILE_FIELDS} FROM catalog.files
                WHERE folder_id = $1 AND ($2::text IS NULL OR kind = $2)
                  AND (name, id::text) > ($3, $4)
                ORDER BY name, id::text LIMIT $5""",
            folder_id,
            kind,
            name,
            ident,
            room + 1,
        )
        found += [file_json(r) for r in rows[:room]]
        if len(rows) > room:
            last = rows[room - 1]
            next_cursor = _cursor([1, last["name"], str(last["id"])])
    elif kind != "folder" and section == 0 and found and await _has_files(pool, folder_id, kind):
        # The page is full of folders; files follow.
        next_cursor = _cursor([1, "", ""])
    return {"items": found, "next_cursor": next_cursor}


async def _has_files(pool: asyncpg.Pool, folder_id: uuid.UUID, kind: str | None) -> bool:
    found: bool = await pool.fetchval(
        """SELECT EXISTS (SELECT 1 FROM catalog.files
                          WHERE folder_id = $1 AND ($2::text IS NULL OR kind = $2))""",
        folder_id,
        kind,
    )
    return found


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
    found = file_json(row)
    found["my_role"] = access.role_on(row["path"] or ())
    if internal:
        found["blob_key"] = row["blob_key"]
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
    return [file_json(r) for r in rows]


NIL = "00000000-0000-0000-0000-000000000000"
# How long the index-driven plan may try before the walk in id order takes over.
INDEX_BUDGET_MS = 20


async def _matching_files(
    pool: asyncpg.Pool, where: str, args: list[Any], text: str, scoped: bool
) -> list[asyncpg.Record]:
    """Run a file search with the plan that suits how common the text is.

    The planner cannot tell how many names contain a text. Across the whole catalog,
    rare or absent text is found fastest through the indexes (trigrams with kind,
    folder), then sorted; common text by walking ids in order until a page is full.
    Text shorter than a trigram only walks. Otherwise the indexes get a small budget,
    and the walk, which then finds its page quickly, takes over.

    Within a set of folders (a folder's subtree, or what a member may see), the
    page's ids come first: the folder index holds (folder, name, id), so an index-only
    scan checks names without visiting the table, whose rows for those folders are
    spread everywhere. The planner's own choice gets the budget first, then the
    indexes run without one. Plans are made for each call: a cached generic plan
    would ignore the choice.
    """
    sql = f"SELECT {FILE_FIELDS} FROM catalog.files f WHERE {where} ORDER BY f.id LIMIT $3"
    if scoped:
        page = f"SELECT f.id FROM catalog.files f WHERE {where} ORDER BY f.id LIMIT $3"
        sql = f"SELECT {FILE_FIELDS} FROM catalog.files WHERE id IN ({page}) ORDER BY id"
    custom = "SET LOCAL plan_cache_mode = force_custom_plan"
    budget = f"SET LOCAL statement_timeout = {INDEX_BUDGET_MS}"
    async with pool.acquire() as conn:
        if len(text) >= 3:
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


async def search(
    pool: asyncpg.Pool,
    q: str,
    kind: str | None,
    folder_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
    access: Access,
) -> dict[str, Any]:
    """Files and folders whose name contains q, folders first, each section by id,
    among those the caller may see.

    ILIKE is served by the trigram indexes for rare text; for common text the
    primary-key order lets a page stop after `limit` hits. Conditions are only
    added when given, so the planner sees each query for what it is.
    """
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if not domain.storable(q):
        raise domain.Invalid("invalid_query", "the search text contains a NUL character")
    if folder_id is not None:
        await _visible_folder(pool, folder_id, access)
    # Within a visible folder everything is visible; elsewhere a member sees the
    # subtrees of the folders shared with them.
    roots = access.roots if folder_id is None else None
    section, ident = _uncursor(cursor, int, str) if cursor else [0, NIL]
    try:
        after = uuid.UUID(ident or NIL)
    except ValueError as error:
        raise domain.Invalid("invalid_cursor", "the cursor is not one this API gave out") from error
    found: list[dict[str, Any]] = []
    if section == 0 and kind in (None, "folder"):
        where, args = "name ILIKE $1 AND id > $2", [pattern, after, limit + 1]
        if folder_id is not None:
            args.append(folder_id)
            where += f" AND path @> ARRAY[${len(args)}::uuid]"
        if roots is not None:
            args.append(roots)
            where += f" AND path && ${len(args)}::uuid[]"
        rows = await pool.fetch(
            f"SELECT * FROM catalog.folders WHERE {where} ORDER BY id LIMIT $3", *args
        )
        found = await folders_json(pool, list(rows[:limit]), access)
        if len(rows) > limit:
            return {"items": found, "next_cursor": _cursor([0, str(rows[limit - 1]["id"])])}
        after = uuid.UUID(NIL)
    if kind == "folder" or len(found) >= limit:
        more = kind != "folder" and len(found) >= limit
        return {"items": found, "next_cursor": _cursor([1, NIL]) if more else None}
    room = limit - len(found)
    where, args = "f.name ILIKE $1 AND f.id > $2", [pattern, after, room + 1]
    if kind is not None:
        args.append(kind)
        where += f" AND f.kind = ${len(args)}"
    scope = None
    if folder_id is not None:
        scope = await pool.fetch(
            "SELECT id FROM catalog.folders WHERE path @> ARRAY[$1::uuid]", folder_id
        )
    elif roots is not None:
        scope = await pool.fetch("SELECT id FROM catalog.folders WHERE path && $1::uuid[]", roots)
    if scope is not None:
        # The folder ids as a parameter, not a subquery: planned per call, the planner
        # then knows how many files they hold and may use the folder index.
        args.append([r["id"] for r in scope])
        where += f" AND f.folder_id = ANY(${len(args)}::uuid[])"
    rows = await _matching_files(pool, where, args, q, scoped=scope is not None)
    files = [file_json(r) for r in rows[:room]]
    folder_rows = await pool.fetch(
        "SELECT id, path FROM catalog.folders WHERE id = ANY($1::uuid[])",
        list({r["folder_id"] for r in rows[:room]}),
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
    found += files
    next_cursor = _cursor([1, str(rows[room - 1]["id"])]) if len(rows) > room else None
    return {"items": found, "next_cursor": next_cursor}
