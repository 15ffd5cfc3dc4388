"""The audit query every service serves on its own event store, for the gateway to merge.

Who did what, to which subject, when, and why (the causation): one SQL statement over
the store, with each filter optional and each backed by an index (see EventStore.setup),
in position order so `after` pages through it. Secrets never leave: data keys that
look like one are dropped before the rows are returned.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from shared.contracts import REGISTRY
from shared.kit.db import Conn
from shared.kit.eventstore import EventStore
from shared.kit.media import without_paths

# A data key containing any of these (case-insensitive) is dropped, at any depth.
# `sealed`: values encrypted at rest (an integration's credentials) stay out as well.
REDACTED_KEY_PARTS = (
    "secret",
    "password",
    "key_hash",
    "token_hash",
    "access_key",
    "private_key",
    "credential",
    "sealed",
)

# Every stream id ends with the aggregate's UUID (`file-<uuid>`, `upload-job-<uuid>`):
# the audit's subject. EventStore.setup indexes the same expression.
SUBJECT_SQL = "right(stream_id, 36)"
UUID_LENGTH = 36


# Batch events (`Event.about_each`): type -> the data field listing the ids they are
# about. The stores that hold them index that field (a partial GIN index).
ABOUT_EACH: dict[str, str] = {t: c.about_each for t, c in REGISTRY.items() if c.about_each}


def subject_condition(
    subjects: list[str], param: Callable[[Any], str], schema: str | None = None
) -> tuple[str, str | None]:
    """Events about any of `subjects`: (those of their streams, those a batch event of
    the store `schema` (any, if None) lists; None if it holds none). One subject
    compares with `=`, so the (expression, position) index yields the rows in position
    order and a LIMIT stops the scan early; several go through a bitmap."""
    if not subjects:
        return "FALSE", None
    one = len(subjects) == 1
    value = param(subjects[0] if one else subjects)
    own = f"{SUBJECT_SQL} = {value}" if one else f"{SUBJECT_SQL} = ANY({value}::text[])"
    listed = [
        f"(type = '{t}' AND data->'{field}' {'?' if one else '?|'} {value})"
        for t, field in sorted(ABOUT_EACH.items())
        if schema is None or t.split(".", 1)[0] == schema
    ]
    return own, f"({' OR '.join(listed)}) AND NOT {own}" if listed else None


def redact(value: Any) -> Any:
    """The value without any mapping key that names a secret, recursively; a failure's
    `reason` without the server paths a decoder quoted (reasons recorded before they
    were cleaned as they are made keep a local blob's path in the data dir)."""
    if isinstance(value, dict):
        return {
            k: without_paths(v) if k == "reason" and isinstance(v, str) else redact(v)
            for k, v in value.items()
            if not any(part in str(k).lower() for part in REDACTED_KEY_PARTS)
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def subject_of(stream_id: str) -> str | None:
    """The aggregate id at the end of a stream id, or None if it does not end with one."""
    try:
        return str(uuid.UUID(stream_id[-UUID_LENGTH:]))
    except ValueError:
        return None


def rfc3339(at: datetime) -> str:
    """UTC with a fixed width (microseconds always), so the strings sort as the times do
    and the gateway can merge the services' pages on them."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(value: Any) -> Any:
    # Pools from shared.kit.db decode jsonb; a bare connection hands back its text.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _aware(at: datetime) -> datetime:
    # A time without an offset is taken as UTC, as every time of the platform is.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def audit_query(
    store: EventStore,
    *,
    subject_ids: list[uuid.UUID] | None,
    actor_id: str | None,
    types: list[str] | None,
    since: datetime | None,
    until: datetime | None,
    after: int,
    limit: int,
) -> tuple[str, list[Any]]:
    """The one statement `audit` runs and its arguments: only the filters given."""
    args: list[Any] = [after]
    where = ["position > $1"]

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    table = store.table
    if subject_ids is not None:
        own, listed = subject_condition(sorted({str(s) for s in subject_ids}), param, store.schema)
        if listed is None:
            where.append(own)
        else:
            # Two ordered scans merged, not one OR: each keeps its index, and the LIMIT
            # still stops the subject's own early.
            table = (
                f"(SELECT * FROM {store.table} WHERE {own}"
                f" UNION ALL SELECT * FROM {store.table} WHERE {listed}) AS about"
            )
    if actor_id is not None:
        where.append(f"(metadata->>'actor') = {param(actor_id)}")
    if types is not None:
        wanted = sorted(set(types))
        if len(wanted) == 1:
            where.append(f"type = {param(wanted[0])}")
        else:
            where.append(f"type = ANY({param(wanted)}::text[])")
    if since is not None:
        where.append(f"occurred_at >= {param(_aware(since))}")
    if until is not None:
        where.append(f"occurred_at < {param(_aware(until))}")
    sql = f"""
        SELECT position, event_id, stream_id, type, data, occurred_at,
               metadata->>'actor' AS actor_id, metadata->>'causation_id' AS causation_id
        FROM {table}
        WHERE {" AND ".join(where)}
        ORDER BY position
        LIMIT {param(limit)}
    """
    return sql, args


async def audit(
    conn_or_pool: Conn | asyncpg.Pool,
    store: EventStore,
    *,
    subject_ids: list[uuid.UUID] | None,
    actor_id: str | None,
    types: list[str] | None,
    since: datetime | None,
    until: datetime | None,
    after: int,
    limit: int,
) -> list[dict[str, Any]]:
    """The store's events after position `after` that match every given filter, in
    position order, at most `limit`, as the API shows them plus `source` and `position`.

    None means "no filter"; an empty list of subjects or types matches nothing.
    `since` is inclusive, `until` exclusive, both on occurred_at; a time without an
    offset is taken as UTC.
    """
    if limit < 1 or subject_ids == [] or types == []:
        return []
    sql, args = audit_query(
        store,
        subject_ids=subject_ids,
        actor_id=actor_id,
        types=types,
        since=since,
        until=until,
        after=after,
        limit=limit,
    )
    rows = await conn_or_pool.fetch(sql, *args)
    return [
        {
            "event_id": str(r["event_id"]),
            "type": r["type"],
            "occurred_at": rfc3339(r["occurred_at"]),
            "actor_id": r["actor_id"],
            "subject_id": subject_of(r["stream_id"]),
            "data": redact(_json(r["data"])),
            "causation_id": r["causation_id"],
            "source": store.schema,
            "position": r["position"],
        }
        for r in rows
    ]
