"""A folder as it was: its items at a moment, read from the catalog's events.

Cost: one index read of the events that ever put something in the folder up to the
moment (`events_entering`, below), then, for each folder and file that ever entered it,
its last move and its last name, description and metadata up to then (by stream and
version, the store's own key). It grows with how many entries the folder ever had, not
with the size of the catalog; a page sorts them all, so a folder that held 100,000 files
answers each page in about the time of reading those 100,000 entries' events.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.catalog import domain
from services.catalog.projections import page_files
from services.catalog.queries import _cursor, _uncursor
from shared.kit.access import Access

# Events that put a folder or file in a folder, and the folder they put it in.
ENTERING = (
    "type IN ('catalog.FileUploaded', 'catalog.FileMoved', 'catalog.FileRestored',"
    " 'catalog.FolderCreated', 'catalog.FolderMoved', 'catalog.FolderRestored')"
)
INTO = """(CASE type WHEN 'catalog.FileMoved' THEN data->>'to_folder_id'
                     WHEN 'catalog.FolderMoved' THEN data->>'to_parent_id'
                     WHEN 'catalog.FolderCreated' THEN data->>'parent_id'
                     WHEN 'catalog.FolderRestored' THEN data->>'parent_id'
                     ELSE data->>'folder_id' END)"""
# Events that say where a folder or file is (or that it is nowhere).
LOCATING = [
    "catalog.FileUploaded",
    "catalog.FileMoved",
    "catalog.FileRestored",
    "catalog.FileDeleted",
    "catalog.FolderCreated",
    "catalog.FolderMoved",
    "catalog.FolderRestored",
    "catalog.FolderDeleted",
]
# Events whose latest says what an entry looked like.
FACTS = [
    "catalog.FileUploaded",
    "catalog.FileRenamed",
    "catalog.FileMetadataChanged",
    "catalog.FileDescribed",
    "catalog.DicomSeriesExtended",
    "catalog.FolderCreated",
    "catalog.FolderRenamed",
    "catalog.FolderDescribed",
]


# Files back from the trash in batches (`FilesRestored`, in a restore's stream, not
# the files' own), and files uploaded in pages (`FilesUploaded`, in a page's stream):
# each as if its own stream said it came into the folder then.
ARRIVED_HERE = """
    SELECT 'file-' || x.id AS stream_id, e.position
    FROM catalog.events e, jsonb_array_elements_text(e.data->'file_ids') AS x(id)
    WHERE e.type = 'catalog.FilesRestored' AND e.data->>'folder_id' = $1 AND e.occurred_at <= $2
    UNION ALL
    SELECT 'file-' || x.id AS stream_id, e.position
    FROM catalog.events e, jsonb_array_elements_text(e.data->'file_ids') AS x(id)
    WHERE e.type = 'catalog.FilesUploaded' AND e.data->>'folder_id' = $1 AND e.occurred_at <= $2
"""
_PAGES_OF_PRESENT = """(
    SELECT data, stream_version, occurred_at, metadata->>'actor' AS actor
    FROM catalog.events
    WHERE type = 'catalog.FilesUploaded' AND occurred_at <= $2
      AND data->'file_ids' ?| (SELECT array_agg(substr(stream_id, 6)) FROM present
                               WHERE stream_id LIKE 'file-%')) AS e"""
# The upload of each file of `present` that a page recorded (wherever the file is now),
# as the `FileUploaded` it stands for.
UPLOADED_IN_PAGES = f"""
    SELECT 'file-' || (e.data->>'file_id') AS stream_id, 'catalog.FileUploaded' AS type,
           e.data, e.occurred_at, e.actor, e.stream_version
    FROM {page_files(_PAGES_OF_PRESENT)}
    WHERE 'file-' || (e.data->>'file_id') IN (SELECT stream_id FROM present)
"""


async def setup_history(conn: asyncpg.Connection) -> None:
    await conn.execute(
        f"CREATE INDEX IF NOT EXISTS events_entering ON catalog.events ({INTO}, occurred_at)"
        f" WHERE {ENTERING}"
    )
    await conn.execute(
        "CREATE INDEX IF NOT EXISTS events_files_restored"
        " ON catalog.events ((data->>'folder_id'), occurred_at)"
        " WHERE type = 'catalog.FilesRestored'"
    )
    # The audit of a file finds its restore by the file's id (shared/kit/audit.py).
    await conn.execute(
        "CREATE INDEX IF NOT EXISTS events_files_restored_ids"
        " ON catalog.events USING gin ((data->'file_ids'))"
        " WHERE type = 'catalog.FilesRestored'"
    )
    await conn.execute(
        "CREATE INDEX IF NOT EXISTS events_files_uploaded"
        " ON catalog.events ((data->>'folder_id'), occurred_at)"
        " WHERE type = 'catalog.FilesUploaded'"
    )
    # A file's upload in a page, by the file's id: the audit's, and its history's facts.
    await conn.execute(
        "CREATE INDEX IF NOT EXISTS events_files_uploaded_ids"
        " ON catalog.events USING gin ((data->'file_ids'))"
        " WHERE type = 'catalog.FilesUploaded'"
    )


def parse_as_of(value: str) -> datetime:
    """An RFC 3339 date-time with its offset, or 422 naming the problem."""
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise domain.Invalid(
            "invalid_as_of",
            f"as_of {value[:60]!r} is not an RFC 3339 date-time (e.g. 2026-12-03T10:00:00Z)",
        ) from None
    if at.tzinfo is None or len(value.strip()) < 20:
        raise domain.Invalid(
            "invalid_as_of",
            f"as_of {value[:60]!r} needs a date, a time and an offset (Z or +hh:mm)",
        )
    return at


async def items_as_of(
    pool: asyncpg.Pool,
    folder_id: uuid.UUID,
    at: datetime,
    access: Access,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """Subfolders then files, each by name then id, as the folder held them at `at`.
    Rights are the caller's on the folder where it is now (or was, if in the trash)."""
    async with pool.acquire() as conn:
        path = await conn.fetchval(
            """SELECT path FROM catalog.folders WHERE id = $1
               UNION ALL SELECT path FROM catalog.trash_folders WHERE id = $1 LIMIT 1""",
            folder_id,
        )
        if path is None:
            raise domain.NotFound("not_found", f"folder {folder_id} does not exist")
        access.require(path, "user", f"folder {folder_id}")
        born = await conn.fetchval(
            "SELECT occurred_at FROM catalog.events WHERE stream_id = $1 AND stream_version = 1",
            f"folder-{folder_id}",
        )
        if born is None or born > at:
            raise domain.NotFound(
                "not_found", f"folder {folder_id} did not exist at {at.isoformat()}"
            )
        rows = await conn.fetch(
            f"""WITH arrived_here AS ({ARRIVED_HERE}),
                entered AS (
                    SELECT stream_id FROM catalog.events
                    WHERE {ENTERING} AND {INTO} = $1 AND occurred_at <= $2
                    UNION SELECT stream_id FROM arrived_here),
                located AS (
                    SELECT DISTINCT ON (stream_id) stream_id, type, data FROM (
                        SELECT e.stream_id, e.type, e.data, e.position
                        FROM catalog.events e JOIN entered USING (stream_id)
                        WHERE e.type = ANY($3::text[]) AND e.occurred_at <= $2
                        UNION ALL
                        SELECT r.stream_id, 'catalog.FileRestored',
                               jsonb_build_object('folder_id', $1::text), r.position
                        FROM arrived_here r) l
                    ORDER BY stream_id, position DESC),
                present AS (
                    SELECT stream_id FROM located l
                    WHERE l.type NOT IN ('catalog.FileDeleted', 'catalog.FolderDeleted')
                      AND (CASE l.type WHEN 'catalog.FileMoved' THEN l.data->>'to_folder_id'
                                       WHEN 'catalog.FolderMoved' THEN l.data->>'to_parent_id'
                                       WHEN 'catalog.FolderCreated' THEN l.data->>'parent_id'
                                       WHEN 'catalog.FolderRestored' THEN l.data->>'parent_id'
                                       ELSE l.data->>'folder_id' END) = $1)
                SELECT DISTINCT ON (f.stream_id, f.type)
                       f.stream_id, f.type, f.data, f.occurred_at, f.actor
                FROM (SELECT e.stream_id, e.type, e.data, e.occurred_at,
                             e.metadata->>'actor' AS actor, e.stream_version
                      FROM catalog.events e JOIN present USING (stream_id)
                      WHERE e.type = ANY($4::text[]) AND e.occurred_at <= $2
                      UNION ALL {UPLOADED_IN_PAGES}) f
                ORDER BY f.stream_id, f.type, f.stream_version DESC""",
            str(folder_id),
            at,
            LOCATING,
            FACTS,
        )
    entries: dict[str, dict[str, Any]] = {}
    for r in rows:
        entries.setdefault(r["stream_id"], {})[r["type"]] = r
    found = [entry for facts in entries.values() if (entry := _entry(facts, folder_id))]
    found.sort(key=lambda e: (e["type"] != "folder", e["name"], e["id"]))
    if cursor:
        section, name, ident = _uncursor(cursor, int, str, str)
        found = [
            e
            for e in found
            if (e["type"] != "folder", e["name"], e["id"]) > (bool(section), name, ident)
        ]
    page = found[:limit]
    last = page[-1] if len(found) > limit else None
    return {
        "items": page,
        "next_cursor": _cursor([int(last["type"] != "folder"), last["name"], last["id"]])
        if last
        else None,
        "as_of": at.isoformat(),
    }


def _entry(facts: dict[str, asyncpg.Record], folder_id: uuid.UUID) -> dict[str, Any] | None:
    def data(kind: str) -> dict[str, Any] | None:
        row = facts.get(f"catalog.{kind}")
        return dict(row["data"]) if row is not None else None

    if (created := facts.get("catalog.FolderCreated")) is not None:
        first = dict(created["data"])
        named, described = data("FolderRenamed"), data("FolderDescribed")
        return {
            "type": "folder",
            "id": first["folder_id"],
            "name": (named or first)["name"],
            "description": (described or first).get("description", ""),
            "metadata": (described or first).get("metadata", {}),
            "parent_id": str(folder_id),
            "created_at": created["occurred_at"].isoformat(),
            "created_by": created["actor"],
        }
    uploaded = facts.get("catalog.FileUploaded")
    if uploaded is None:
        return None  # a DICOM series' file or an image made before the history began
    first = dict(uploaded["data"])
    named = data("FileRenamed")
    described = data("FileDescribed")
    changed = data("FileMetadataChanged")
    extended = data("DicomSeriesExtended") or {}
    media = {k: v for k, v in (first.get("media") or {}).items() if v is not None}
    source = {k: v for k, v in (first.get("source") or {}).items() if v is not None}
    return {
        "type": "file",
        "id": first["file_id"],
        "name": (named or first)["name"],
        "description": (described or {}).get("description", ""),
        "kind": first["kind"],
        "folder_id": str(folder_id),
        "size": extended.get("size", first["size"]),
        "sha256": extended.get("sha256", first["sha256"]),
        "mime_type": first["mime_type"],
        "media": media,
        "source": source,
        "metadata": (changed or first).get("metadata") or {},
        "created_at": uploaded["occurred_at"].isoformat(),
        "created_by": uploaded["actor"],
        "datasets": [],
    }
