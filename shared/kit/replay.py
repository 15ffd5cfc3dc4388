"""`files audit`: replay the history of every context's store, merged in time order.

The stores are read directly, read-only, in one REPEATABLE READ snapshot, page by page:
each store is a stream in position order, and the streams are merged on
(occurred_at, context, position), as the gateway merges `GET /v1/audit`. Secrets are
redacted exactly as the audit route does (shared.kit.audit.redact).

Following the causation chain (`--follow-causes`, `--follow-effects`) first gathers the
ids of the events to show (small rows: position, event id, time, cause), then reads the
events themselves page by page in merged order. Effects are found by the
`causation_id` of later events: every reaction records the event it reacted to.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from shared.kit.audit import redact, rfc3339, subject_condition, subject_of
from shared.kit.db import Conn

# Every context that keeps an event store, in the order the merge breaks ties on.
CONTEXTS = ("acl", "catalog", "datasets", "dicom", "ingest", "thumbnails")

# Rows per round trip, and ids per array parameter.
PAGE = 500
CHUNK = 5000

# A reaction is recorded after the event it reacts to, but by another process whose
# clock may differ a little: effects are looked for from this long before their cause.
CLOCK_SKEW = timedelta(minutes=5)

_COLUMNS = """position, event_id, stream_id, type, data, occurred_at,
    metadata->>'actor' AS actor_id, metadata->>'causation_id' AS causation_id,
    metadata->>'correlation_id' AS correlation_id"""
_LIGHT = "position, event_id, occurred_at, metadata->>'causation_id' AS causation_id"


@dataclass(frozen=True)
class Selection:
    """Which events to show; None means "no filter", and every given filter must hold.
    `since` is inclusive, `until` exclusive (occurred_at); a time without an offset is
    taken as UTC."""

    subject_ids: Sequence[uuid.UUID] | None = None
    actor_id: str | None = None
    types: Sequence[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    correlation_id: str | None = None


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def where(selection: Selection, args: list[Any]) -> list[str]:
    """The selection's SQL conditions, appending their values to `args`."""

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    s = selection
    conditions: list[str] = []
    if s.subject_ids is not None:
        own, listed = subject_condition(sorted({str(x) for x in s.subject_ids}), param)
        conditions.append(f"({own} OR ({listed}))" if listed else own)
    if s.actor_id is not None:
        conditions.append(f"(metadata->>'actor') = {param(s.actor_id)}")
    if s.types is not None:
        types = sorted(set(s.types))
        if len(types) == 1:
            conditions.append(f"type = {param(types[0])}")
        else:
            conditions.append(f"type = ANY({param(types)}::text[])")
    if s.since is not None:
        conditions.append(f"occurred_at >= {param(_aware(s.since))}")
    if s.until is not None:
        conditions.append(f"occurred_at < {param(_aware(s.until))}")
    if s.correlation_id is not None:
        conditions.append(f"(metadata->>'correlation_id') = {param(s.correlation_id)}")
    return conditions


def _empty(selection: Selection) -> bool:
    return selection.subject_ids == [] or selection.types == []


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _event(context: str, row: Any) -> dict[str, Any]:
    """One event as `files audit --json` prints it: the API's audit item, plus the
    store position, stream and correlation id."""
    return {
        "occurred_at": rfc3339(row["occurred_at"]),
        "source": context,
        "position": row["position"],
        "type": row["type"],
        "event_id": str(row["event_id"]),
        "subject_id": subject_of(row["stream_id"]),
        "stream_id": row["stream_id"],
        "actor_id": row["actor_id"],
        "causation_id": row["causation_id"],
        "correlation_id": row["correlation_id"],
        "data": redact(_json(row["data"])),
    }


async def stores(conn: Conn, contexts: Iterable[str] = CONTEXTS) -> list[str]:
    """The contexts whose event store exists in this database."""
    found = []
    for context in contexts:
        if await conn.fetchval("SELECT to_regclass($1)", f"{context}.events") is not None:
            found.append(context)
    return found


async def _pages(
    conn: Conn, context: str, conditions: list[str], args: list[Any], page: int
) -> AsyncIterator[dict[str, Any]]:
    """A store's matching events in position order, `page` rows per round trip."""
    after = 0
    n = len(args)
    sql = f"""SELECT {_COLUMNS} FROM {context}.events
              WHERE {" AND ".join([f"position > ${n + 1}", *conditions])}
              ORDER BY position LIMIT ${n + 2}"""
    while True:
        rows = await conn.fetch(sql, *args, after, page)
        for row in rows:
            yield _event(context, row)
        if len(rows) < page:
            return
        after = rows[-1]["position"]


async def _positions(
    conn: Conn, context: str, positions: Sequence[int], page: int
) -> AsyncIterator[dict[str, Any]]:
    """The events at these positions (sorted), in position order, a page at a time."""
    sql = f"""SELECT {_COLUMNS} FROM {context}.events
              WHERE position = ANY($1::bigint[]) ORDER BY position"""
    for start in range(0, len(positions), page):
        for row in await conn.fetch(sql, list(positions[start : start + page])):
            yield _event(context, row)


def _key(event: dict[str, Any]) -> tuple[str, str, int]:
    # rfc3339 has a fixed width, so the strings sort as the times do.
    return (event["occurred_at"], event["source"], event["position"])


async def merge(streams: Sequence[AsyncIterator[dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
    """The streams merged on (occurred_at, context, position), each read lazily; each
    stream keeps its own (position) order."""
    heap: list[tuple[tuple[str, str, int], int, dict[str, Any]]] = []
    for i, stream in enumerate(streams):
        first = await anext(stream, None)
        if first is not None:
            heap.append((_key(first), i, first))
    heapq.heapify(heap)
    while heap:
        _, i, event = heap[0]
        following = await anext(streams[i], None)
        if following is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (_key(following), i, following))
        yield event


@dataclass
class _Closure:
    """The events to show, by id only: positions per store, their ids and times."""

    positions: dict[str, set[int]] = field(default_factory=dict)
    ids: set[str] = field(default_factory=set)

    def add(self, context: str, row: Any) -> bool:
        event_id = str(row["event_id"])
        if event_id in self.ids:
            return False
        self.ids.add(event_id)
        self.positions.setdefault(context, set()).add(row["position"])
        return True


async def _select_ids(
    conn: Conn, contexts: Sequence[str], selection: Selection, closure: _Closure, page: int
) -> list[tuple[str, datetime, str | None]]:
    """Add the selected events to the closure; returns (event id, time, cause) of each."""
    selected = []
    for context in contexts:
        args: list[Any] = []
        conditions = where(selection, args)
        n = len(args)
        sql = f"""SELECT {_LIGHT} FROM {context}.events
                  WHERE {" AND ".join([f"position > ${n + 1}", *conditions])}
                  ORDER BY position LIMIT ${n + 2}"""
        after = 0
        while rows := await conn.fetch(sql, *args, after, page):
            for row in rows:
                if closure.add(context, row):
                    selected.append((str(row["event_id"]), row["occurred_at"], row["causation_id"]))
            after = rows[-1]["position"]
    return selected


def _uuids(values: Iterable[str | None]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(str(value)))
        except ValueError:
            continue  # a request's id, or none: the top of the chain
    return ids


async def _follow_causes(
    conn: Conn, contexts: Sequence[str], closure: _Closure, causes: Iterable[str | None]
) -> None:
    """Up the causation chain, across stores, by event id (unique, indexed)."""
    frontier = {c for c in _uuids(causes) if str(c) not in closure.ids}
    while frontier:
        found: set[uuid.UUID] = set()
        wanted = sorted(frontier)
        for context in contexts:
            sql = f"SELECT {_LIGHT} FROM {context}.events WHERE event_id = ANY($1::uuid[])"
            for start in range(0, len(wanted), CHUNK):
                for row in await conn.fetch(sql, wanted[start : start + CHUNK]):
                    if closure.add(context, row):
                        found.update(_uuids([row["causation_id"]]))
        frontier = {c for c in found if str(c) not in closure.ids}


async def _follow_effects(
    conn: Conn,
    contexts: Sequence[str],
    closure: _Closure,
    causes: Sequence[tuple[str, datetime]],
    page: int,
) -> None:
    """Down the causation chain, transitively, across stores: events whose cause is in
    the frontier, looked for from the frontier's earliest time (less CLOCK_SKEW)."""
    frontier = list(causes)
    while frontier:
        following: list[tuple[str, datetime]] = []
        for start in range(0, len(frontier), CHUNK):
            chunk = frontier[start : start + CHUNK]
            earliest = min(at for _, at in chunk) - CLOCK_SKEW
            ids = sorted({i for i, _ in chunk})
            for context in contexts:
                sql = f"""SELECT {_LIGHT} FROM {context}.events
                          WHERE position > $1 AND occurred_at >= $2
                            AND (metadata->>'causation_id') = ANY($3::text[])
                          ORDER BY position LIMIT $4"""
                after = 0
                while rows := await conn.fetch(sql, after, earliest, ids, page):
                    for row in rows:
                        if closure.add(context, row):
                            following.append((str(row["event_id"]), row["occurred_at"]))
                    after = rows[-1]["position"]
        frontier = following


async def replay(
    conn: Conn,
    selection: Selection,
    *,
    follow_causes: bool = False,
    follow_effects: bool = False,
    limit: int | None = None,
    contexts: Sequence[str] | None = None,
    page: int = PAGE,
) -> AsyncIterator[dict[str, Any]]:
    """The selected events of every store (and, if asked, their causes and effects),
    merged in time order, at most `limit`. Run it inside a read-only transaction for
    one consistent snapshot of all the stores."""
    if limit is not None and limit < 1:
        return
    found = await stores(conn, CONTEXTS if contexts is None else contexts)
    if not follow_causes and not follow_effects:
        if _empty(selection):
            return
        streams = []
        for context in found:
            args: list[Any] = []
            conditions = where(selection, args)
            # No store needs to read past the limit.
            streams.append(_pages(conn, context, conditions, args, min(page, limit or page)))
        events = merge(streams)
    else:
        closure = _Closure()
        selected = (
            [] if _empty(selection) else await _select_ids(conn, found, selection, closure, page)
        )
        if follow_causes:
            await _follow_causes(conn, found, closure, [cause for _, _, cause in selected])
        if follow_effects:
            await _follow_effects(conn, found, closure, [(i, at) for i, at, _ in selected], page)
        events = merge(
            [
                _positions(conn, context, sorted(closure.positions[context]), page)
                for context in found
                if context in closure.positions
            ]
        )
    shown = 0
    async for event in events:
        yield event
        shown += 1
        if limit is not None and shown >= limit:
            return


# -- the table -----------------------------------------------------------------------

TABLE_HEADER = ("TIME", "CONTEXT", "TYPE", "SUBJECT", "ACTOR", "EVENT", "CAUSED BY", "DATA")
_WIDTHS = (24, 8, 36, 36, 36, 8, 40)
DATA_WIDTH = 80


def short(event_id: str | None) -> str:
    return (event_id or "")[:8]


class Table:
    """Events as terminal lines, streamed: each one indented under its cause when the
    cause was shown above it, and naming its cause (`caused by <type> <id>`)."""

    def __init__(self) -> None:
        # Shown events: id -> (type, depth); as many as the lines printed.
        self.shown: dict[str, tuple[str, int]] = {}

    def header(self) -> str:
        return self._line(TABLE_HEADER)

    def row(self, event: dict[str, Any]) -> str:
        cause = event["causation_id"]
        depth = 0
        if cause is None:
            caused_by = "-"
        elif cause in self.shown:
            cause_type, cause_depth = self.shown[cause]
            depth = cause_depth + 1
            caused_by = f"{cause_type} {short(cause)}"
        else:
            caused_by = cause
        self.shown[event["event_id"]] = (event["type"], depth)
        indent = "  " * min(depth, 8) + ("`- " if depth else "")
        data = orjson.dumps(event["data"]).decode()
        if len(data) > DATA_WIDTH:
            data = data[: DATA_WIDTH - 3] + "..."
        return self._line(
            (
                event["occurred_at"][:23] + "Z",
                event["source"],
                indent + event["type"],
                event["subject_id"] or event["stream_id"],
                event["actor_id"] or "-",
                short(event["event_id"]),
                caused_by,
                data,
            )
        )

    @staticmethod
    def _line(cells: Sequence[str]) -> str:
        return "  ".join(
            [cell.ljust(width) for cell, width in zip(cells, _WIDTHS, strict=False)]
            + list(cells[len(_WIDTHS) :])
        ).rstrip()
