"""The thumbnails context's read model: each file's thumbnails, and each source's.

`thumbnails.files` has one row per file this context heard of (its state: pending, made,
failed, released; released rows stay, so a late event about a deleted file is known for
what it is); `thumbnails.sources` one per source drawn (or found undrawable), which
identical files share, until it is reclaimed. Fed inline by the events this context
records; `files rebuild thumbnails.files` replays it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from services.thumbnails import domain
from shared.contracts import thumbnails as thumbnails_events
from shared.kit.db import Conn
from shared.kit.projections import Projection
from shared.kit.reactions import Received

R = TypeVar("R", bound=Received[Any])

thumbnails = Projection(
    name="thumbnails.files",
    tables=("thumbnails.files", "thumbnails.sources"),
    ddl="""
    CREATE TABLE IF NOT EXISTS thumbnails.files (
        file_id uuid PRIMARY KEY,
        version integer NOT NULL,
        kind text NOT NULL,
        source text NOT NULL,
        blob_key text NOT NULL,
        state text NOT NULL,
        requested_at timestamptz NOT NULL,
        -- The request's event and correlation: what the drawing's events are caused by.
        request_id uuid NOT NULL,
        correlation_id text NOT NULL,
        renditions jsonb,
        code text,
        reason text
    );
    CREATE INDEX IF NOT EXISTS files_pending ON thumbnails.files (requested_at)
        WHERE state = 'pending';
    -- A source's files: the sweep's (none left) and the drawing's record (a drawn
    -- source's pending files; an index of pending files by source for it alone was one
    -- more index entry for each file requested, and planned the same: a probe by source
    -- once the drawing loop has analyzed the table, the pending files' index before).
    CREATE INDEX IF NOT EXISTS files_source ON thumbnails.files (source)
        WHERE state <> 'released';
    DROP INDEX IF EXISTS thumbnails.files_pending_source;
    CREATE TABLE IF NOT EXISTS thumbnails.sources (
        source text PRIMARY KEY,
        state text NOT NULL,
        renditions jsonb,
        code text,
        reason text,
        settled_at timestamptz NOT NULL,
        released_at timestamptz
    );
    CREATE INDEX IF NOT EXISTS sources_released ON thumbnails.sources (released_at)
        WHERE released_at IS NOT NULL;
    -- A file imported by reference: its object (`<integration id>:<key>`) and size.
    ALTER TABLE thumbnails.files ADD COLUMN IF NOT EXISTS object_ref text;
    ALTER TABLE thumbnails.files ADD COLUMN IF NOT EXISTS bytes bigint;
    """,
)


@thumbnails.on(thumbnails_events.ThumbnailsRequested)
async def requested(
    conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailsRequested]]
) -> None:
    await _requested(
        conn,
        [
            {**e.data, **_request_of(e), "version": e.stream_version, "grown": None}
            for e in _last_per_file(events)
        ],
    )


@thumbnails.on(thumbnails_events.ThumbnailsRequestedPage)
async def requested_page(
    conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailsRequestedPage]]
) -> None:
    await _requested(conn, _paged(events))


def _request_of(e: Received[Any]) -> dict[str, Any]:
    return {
        "at": e.occurred_at.isoformat(),
        "request_id": str(e.event_id),
        "correlation_id": e.correlation_id,
    }


def _paged(events: Sequence[Received[Any]]) -> list[dict[str, Any]]:
    """A page's files as the rows of the per-file events they stand for. A file is in
    no stream of its own here: its version counts the events about it (`grown`: how many
    in these pages), so that it is the same whether the pages came in one transaction or
    several, as a rebuild takes them."""
    rows: dict[str, dict[str, Any]] = {}
    for e in events:
        cause = _request_of(e)
        for n, f in enumerate(e.data["files"]):
            grown = rows[f["file_id"]]["grown"] + 1 if f["file_id"] in rows else 1
            rows.pop(f["file_id"], None)  # in the order of its last event
            # A microsecond apart, in the page's order: the drawing takes the oldest
            # request first, and a page's files in the order they were asked for (as
            # their own events' times did), the same in a rebuild.
            at = (e.occurred_at + timedelta(microseconds=n)).isoformat()
            rows[f["file_id"]] = {**f, **cause, "at": at, "version": None, "grown": grown}
    return list(rows.values())


# A row's version: its stream's (a per-file event), or one more for each page about it.
_VERSION = "coalesce(x.version, f.version + x.grown)"


async def _requested(conn: Conn, rows: list[dict[str, Any]]) -> None:
    # A page's file: its version one more for each page about it (`grown`), from its row
    # (if any: probed by key, as below); a per-file event's: its stream's.
    await conn.execute(
        """INSERT INTO thumbnails.files AS f
           (file_id, version, kind, source, blob_key, state, requested_at, request_id,
            correlation_id, object_ref, bytes)
           SELECT x.file_id, coalesce(x.version, coalesce(o.version, 0) + x.grown), x.kind,
                  x.source, x.blob_key, 'pending', x.at, x.request_id, x.correlation_id,
                  x.object_ref, x.size
           FROM jsonb_to_recordset($1::jsonb) AS x(
               file_id uuid, version integer, grown integer, kind text, source text,
               blob_key text, at timestamptz, request_id uuid, correlation_id text,
               object_ref text, size bigint)
           LEFT JOIN thumbnails.files o
               ON o.file_id = x.file_id AND o.file_id = ANY($2::uuid[]) AND x.version IS NULL
           ON CONFLICT (file_id) DO UPDATE
           SET version = excluded.version, kind = excluded.kind, source = excluded.source,
               blob_key = excluded.blob_key, object_ref = excluded.object_ref,
               bytes = excluded.bytes, state = 'pending',
               requested_at = excluded.requested_at, request_id = excluded.request_id,
               correlation_id = excluded.correlation_id, renditions = NULL, code = NULL,
               reason = NULL""",
        rows,
        [r["file_id"] for r in rows if r["version"] is None],
    )


# Made and failed name their files twice, as rows and as `ANY($2)`: the planner takes
# jsonb_to_recordset for 100 rows and, for the one file a drawing settles, would hash it
# against a seq scan of the whole table (2.2 ms at 9,000 files, linear in the table,
# analyzed or not), where the key probe is 0.08 ms.
@thumbnails.on(thumbnails_events.ThumbnailsMade)
async def made(conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailsMade]]) -> None:
    await _settled(conn, [_settled_row(e, "made") for e in _last_per_file(events)])


@thumbnails.on(thumbnails_events.ThumbnailFailed)
async def failed(conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailFailed]]) -> None:
    await _settled(conn, [_settled_row(e, "failed") for e in _last_per_file(events)])


@thumbnails.on(thumbnails_events.ThumbnailsSettled)
async def settled(
    conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailsSettled]]
) -> None:
    await _settled(
        conn,
        [
            {**r, "state": "made" if r.get("renditions") is not None else "failed"}
            for r in _paged(events)
        ],
    )


def _settled_row(e: Received[Any], state: str) -> dict[str, Any]:
    return {
        **e.data,
        "version": e.stream_version,
        "grown": None,
        "at": e.occurred_at.isoformat(),
        "state": state,
    }


async def _settled(conn: Conn, rows: list[dict[str, Any]]) -> None:
    """Each file made (`renditions`) or failed (`code`, `reason`), and its source so: one
    statement (a round trip fewer for each batch a runner records)."""
    # A source settled twice (two workers, or drawn again after a failure) keeps the last.
    # A file drawn from an imported object failed alone: its source is not settled
    # (`alone`; content_changed was before it was recorded, and is an imported file's).
    last = {
        r["source"]: r
        for r in rows
        if not r.get("alone") and r.get("code") != domain.CONTENT_CHANGED
    }
    await conn.execute(
        f"""WITH files AS (
               UPDATE thumbnails.files AS f
               SET version = {_VERSION}, state = x.state,
                   renditions = CASE WHEN x.state = 'made' THEN x.renditions END,
                   code = x.code, reason = x.reason
               FROM jsonb_to_recordset($1::jsonb) AS x(file_id uuid, version integer,
                                                        grown integer, state text,
                                                        renditions jsonb, code text,
                                                        reason text)
               WHERE f.file_id = x.file_id AND f.file_id = ANY($2::uuid[]))
           INSERT INTO thumbnails.sources AS s (source, state, renditions, code, reason,
                                               settled_at)
           SELECT source, state, CASE WHEN state = 'made' THEN renditions END, code, reason,
                  at
           FROM jsonb_to_recordset($3::jsonb) AS x(source text, state text,
                                                    renditions jsonb, code text,
                                                    reason text, at timestamptz)
           ON CONFLICT (source) DO UPDATE
           SET state = excluded.state, renditions = excluded.renditions, code = excluded.code,
               reason = excluded.reason, settled_at = excluded.settled_at,
               released_at = NULL""",
        rows,
        [r["file_id"] for r in rows],
        list(last.values()),
    )


@thumbnails.on(thumbnails_events.ThumbnailsReleased)
async def released(
    conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailsReleased]]
) -> None:
    rows = [
        {**e.data, "version": e.stream_version, "at": e.occurred_at.isoformat()}
        for e in _last_per_file(events)
    ]
    await conn.execute(
        """UPDATE thumbnails.files AS f
           SET version = x.version, state = 'released', renditions = NULL
           FROM jsonb_to_recordset($1::jsonb) AS x(file_id uuid, version integer)
           WHERE f.file_id = x.file_id""",
        rows,
    )
    # When a source's last file went: the sweep reclaims it once that is long enough ago.
    # The latest time, not the last applied: events are timed before their transactions
    # commit, so a replay that takes several transactions' events at once gets the same.
    await conn.execute(
        """UPDATE thumbnails.sources AS s SET released_at = greatest(s.released_at, x.at)
           FROM (SELECT source, max(at) AS at
                 FROM jsonb_to_recordset($1::jsonb) AS r(source text, at timestamptz)
                 GROUP BY source) AS x
           WHERE s.source = x.source""",
        rows,
    )


@thumbnails.on(thumbnails_events.ThumbnailsReclaimed)
async def reclaimed(
    conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailsReclaimed]]
) -> None:
    await conn.execute(
        "DELETE FROM thumbnails.sources WHERE source = ANY($1::text[])",
        [s for e in events for s in e.data["sources"]],
    )


def _last_per_file(events: Sequence[R]) -> list[R]:
    return list({e.data["file_id"]: e for e in events}.values())
