"""The thumbnails context's read model: each file's thumbnails, and each source's.

`thumbnails.files` has one row per file this context heard of (its state: pending, made,
failed, released; released rows stay, so a late event about a deleted file is known for
what it is); `thumbnails.sources` one per source drawn (or found undrawable), which
identical files share, until it is reclaimed. Fed inline by the events this context
records; `files rebuild thumbnails.files` replays it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

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
    CREATE INDEX IF NOT EXISTS files_source ON thumbnails.files (source)
        WHERE state <> 'released';
    -- A drawn source's pending files (the drawing's record): without it, a table not yet
    -- analyzed (10,000 uploads in half a minute) has the planner read every pending row
    -- through files_pending for each file drawn, quadratic in the backlog (15 ms a file
    -- at 9,000 pending, 0.06 ms with it).
    CREATE INDEX IF NOT EXISTS files_pending_source ON thumbnails.files (source)
        WHERE state = 'pending';
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
    await conn.execute(
        """INSERT INTO thumbnails.files AS f
           (file_id, version, kind, source, blob_key, state, requested_at, request_id,
            correlation_id, object_ref, bytes)
           SELECT file_id, version, kind, source, blob_key, 'pending', at, request_id,
                  correlation_id, object_ref, size
           FROM jsonb_to_recordset($1::jsonb) AS x(
               file_id uuid, version integer, kind text, source text, blob_key text,
               at timestamptz, request_id uuid, correlation_id text, object_ref text,
               size bigint)
           ON CONFLICT (file_id) DO UPDATE
           SET version = excluded.version, kind = excluded.kind, source = excluded.source,
               blob_key = excluded.blob_key, object_ref = excluded.object_ref,
               bytes = excluded.bytes, state = 'pending',
               requested_at = excluded.requested_at, request_id = excluded.request_id,
               correlation_id = excluded.correlation_id, renditions = NULL, code = NULL,
               reason = NULL""",
        [
            {
                **e.data,
                "version": e.stream_version,
                "at": e.occurred_at.isoformat(),
                "request_id": str(e.event_id),
                "correlation_id": e.correlation_id,
            }
            for e in _last_per_file(events)
        ],
    )


# Made and failed name their files twice, as rows and as `ANY($2)`: the planner takes
# jsonb_to_recordset for 100 rows and, for the one file a drawing settles, would hash it
# against a seq scan of the whole table (2.2 ms at 9,000 files, linear in the table,
# analyzed or not), where the key probe is 0.08 ms.
@thumbnails.on(thumbnails_events.ThumbnailsMade)
async def made(conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailsMade]]) -> None:
    rows = [
        {**e.data, "version": e.stream_version, "at": e.occurred_at.isoformat()}
        for e in _last_per_file(events)
    ]
    await conn.execute(
        """UPDATE thumbnails.files AS f
           SET version = x.version, state = 'made', renditions = x.renditions,
               code = NULL, reason = NULL
           FROM jsonb_to_recordset($1::jsonb) AS x(file_id uuid, version integer,
                                                    renditions jsonb)
           WHERE f.file_id = x.file_id AND f.file_id = ANY($2::uuid[])""",
        rows,
        [r["file_id"] for r in rows],
    )
    await _settle(conn, rows, "made")


@thumbnails.on(thumbnails_events.ThumbnailFailed)
async def failed(conn: Conn, events: Sequence[Received[thumbnails_events.ThumbnailFailed]]) -> None:
    rows = [
        {**e.data, "version": e.stream_version, "at": e.occurred_at.isoformat()}
        for e in _last_per_file(events)
    ]
    await conn.execute(
        """UPDATE thumbnails.files AS f
           SET version = x.version, state = 'failed', renditions = NULL, code = x.code,
               reason = x.reason
           FROM jsonb_to_recordset($1::jsonb) AS x(file_id uuid, version integer, code text,
                                                    reason text)
           WHERE f.file_id = x.file_id AND f.file_id = ANY($2::uuid[])""",
        rows,
        [r["file_id"] for r in rows],
    )
    await _settle(conn, rows, "failed")


async def _settle(conn: Conn, rows: list[dict[str, object]], state: str) -> None:
    # A source settled twice (two workers, or drawn again after a failure) keeps the last.
    last = {r["source"]: r for r in rows}
    await conn.execute(
        """INSERT INTO thumbnails.sources AS s (source, state, renditions, code, reason,
                                               settled_at)
           SELECT source, $2, renditions, code, reason, at
           FROM jsonb_to_recordset($1::jsonb) AS x(source text, renditions jsonb, code text,
                                                    reason text, at timestamptz)
           ON CONFLICT (source) DO UPDATE
           SET state = excluded.state, renditions = excluded.renditions, code = excluded.code,
               reason = excluded.reason, settled_at = excluded.settled_at,
               released_at = NULL""",
        list(last.values()),
        state,
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
