"""The audit query on a real PostgreSQL: filters, paging, redaction, index use, the route."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest

from shared.contracts.envelope import Envelope
from shared.kit.audit import audit, audit_query
from shared.kit.eventstore import EventStore
from shared.kit.service import Parts, Runtime, create_app
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY
from tests.integration.helpers import schema
from tests.signing import sign_as_gateway

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event(
    stream_id: str,
    version: int,
    type_: str,
    actor: str,
    minute: int,
    data: dict[str, Any] | None = None,
    causation_id: str | None = None,
) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        type=type_,
        stream_id=stream_id,
        stream_version=version,
        occurred_at=T0 + timedelta(minutes=minute),
        actor=actor,
        correlation_id="corr",
        causation_id=causation_id,
        data=data or {},
    )


@dataclass
class History:
    store: EventStore
    file_a: uuid.UUID
    file_b: uuid.UUID
    folder: uuid.UUID
    job: uuid.UUID
    user: uuid.UUID
    events: list[Envelope]


@pytest.fixture
async def history(pool: asyncpg.Pool) -> History:
    store = EventStore(schema())
    file_a, file_b, folder, job, user = (uuid.uuid4() for _ in range(5))
    deleted = event(f"folder-{folder}", 2, "catalog.FolderDeleted", "bob", 5)
    events = [
        event(f"folder-{folder}", 1, "catalog.FolderCreated", "alice", 0, {"name": "x"}),
        event(f"file-{file_a}", 1, "catalog.FileUploaded", "alice", 1, {"name": "a.png"}),
        event(f"file-{file_b}", 1, "catalog.FileUploaded", "bob", 2, {"name": "b.png"}),
        event(f"upload-job-{job}", 1, "ingest.UploadJobStarted", "alice", 3),
        event(f"file-{file_a}", 2, "catalog.FileRenamed", "bob", 4, {"name": "c.png"}),
        deleted,
        event(f"file-{file_a}", 3, "catalog.FileDeleted", "bob", 5, {}, str(deleted.event_id)),
        event(f"file-{file_b}", 2, "catalog.FileDeleted", "bob", 5, {}, str(deleted.event_id)),
        event(
            f"user-{user}",
            1,
            "acl.ApiKeyIssued",
            "system",
            6,
            {
                "key_id": "k1",
                "user_id": str(user),
                "key_hash": "sha256:abc",
                "nested": [{"Client_Secret": "s", "keep": 1}],
                "db_password": "p",
                "aws_access_key_id": "AKIA",
            },
        ),
    ]
    async with pool.acquire() as conn:
        await store.setup(conn)
        # Idempotent: a second setup changes nothing and does not fail.
        await store.setup(conn)
        async with conn.transaction():
            await store.append(conn, events[:4])
        async with conn.transaction():
            await store.append(conn, events[4:])
    return History(store, file_a, file_b, folder, job, user, events)


async def query(pool: asyncpg.Pool, h: History, **filters: Any) -> list[dict[str, Any]]:
    params: dict[str, Any] = {
        "subject_ids": None,
        "actor_id": None,
        "types": None,
        "since": None,
        "until": None,
        "after": 0,
        "limit": 100,
    }
    params.update(filters)
    return await audit(pool, h.store, **params)


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["event_id"] for r in rows]


def of(h: History, *indexes: int) -> list[str]:
    return [str(h.events[i].event_id) for i in indexes]


async def test_no_filter_gives_every_event_in_position_order_with_the_api_fields(
    pool: asyncpg.Pool, history: History
) -> None:
    rows = await query(pool, history)
    assert ids(rows) == of(history, *range(9))
    assert [r["position"] for r in rows] == list(range(1, 10))
    first = rows[1]
    assert first == {
        "event_id": str(history.events[1].event_id),
        "type": "catalog.FileUploaded",
        "occurred_at": "2024-05-01T12:01:00.000000Z",
        "actor_id": "alice",
        "subject_id": str(history.file_a),
        "data": {"name": "a.png"},
        "causation_id": None,
        "source": history.store.schema,
        "position": 2,
    }
    assert rows[3]["subject_id"] == str(history.job)
    assert rows[6]["causation_id"] == str(history.events[5].event_id)


async def test_each_filter_alone(pool: asyncpg.Pool, history: History) -> None:
    h = history
    assert ids(await query(pool, h, subject_ids=[h.file_a])) == of(h, 1, 4, 6)
    assert ids(await query(pool, h, subject_ids=[h.file_a, h.folder])) == of(h, 0, 1, 4, 5, 6)
    assert ids(await query(pool, h, subject_ids=[uuid.uuid4()])) == []
    assert ids(await query(pool, h, actor_id="alice")) == of(h, 0, 1, 3)
    assert ids(await query(pool, h, actor_id="nobody")) == []
    assert ids(await query(pool, h, types=["catalog.FileDeleted"])) == of(h, 6, 7)
    assert ids(await query(pool, h, types=["catalog.FileDeleted", "acl.ApiKeyIssued"])) == of(
        h, 6, 7, 8
    )
    # since is inclusive, until exclusive.
    assert ids(await query(pool, h, since=T0 + timedelta(minutes=5))) == of(h, 5, 6, 7, 8)
    assert ids(await query(pool, h, until=T0 + timedelta(minutes=2))) == of(h, 0, 1)
    # A time in another offset is the same instant.
    east = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(minutes=4)
    assert ids(await query(pool, h, since=east, until=east + timedelta(minutes=1))) == of(h, 4)


async def test_empty_lists_match_nothing(pool: asyncpg.Pool, history: History) -> None:
    assert await query(pool, history, subject_ids=[]) == []
    assert await query(pool, history, types=[]) == []


async def test_filters_combine(pool: asyncpg.Pool, history: History) -> None:
    h = history
    assert ids(await query(pool, h, subject_ids=[h.file_a], actor_id="bob")) == of(h, 4, 6)
    assert ids(
        await query(
            pool, h, subject_ids=[h.file_a, h.file_b], types=["catalog.FileDeleted"], actor_id="bob"
        )
    ) == of(h, 6, 7)
    assert ids(
        await query(
            pool,
            h,
            actor_id="bob",
            since=T0 + timedelta(minutes=2),
            until=T0 + timedelta(minutes=5),
        )
    ) == of(h, 2, 4)
    assert await query(pool, h, subject_ids=[h.folder], types=["catalog.FileUploaded"]) == []


async def test_after_pages_through_in_order(pool: asyncpg.Pool, history: History) -> None:
    h = history
    seen: list[str] = []
    after = 0
    while page := await query(pool, h, actor_id="bob", after=after, limit=2):
        assert len(page) <= 2
        seen += ids(page)
        after = page[-1]["position"]
    assert seen == of(h, 2, 4, 5, 6, 7)
    assert ids(await query(pool, h, after=7)) == of(h, 7, 8)
    assert await query(pool, h, after=9) == []


async def test_secrets_are_redacted(pool: asyncpg.Pool, history: History) -> None:
    [issued] = await query(pool, history, types=["acl.ApiKeyIssued"])
    assert issued["subject_id"] == str(history.user)
    assert issued["actor_id"] == "system"
    assert issued["data"] == {
        "key_id": "k1",
        "user_id": str(history.user),
        "nested": [{"keep": 1}],
    }


async def test_stream_ids_without_a_uuid_have_no_subject(pool: asyncpg.Pool) -> None:
    store = EventStore(schema())
    async with pool.acquire() as conn:
        await store.setup(conn)
        async with conn.transaction():
            await store.append(conn, [event("order-1", 1, "test.Happened", "alice", 0)])
    [row] = await audit(
        pool,
        store,
        subject_ids=None,
        actor_id=None,
        types=None,
        since=None,
        until=None,
        after=0,
        limit=10,
    )
    assert row["subject_id"] is None


# -- index use on a large store ------------------------------------------------------

LARGE = 50_000


@pytest.fixture
async def large(pool: asyncpg.Pool) -> tuple[EventStore, list[uuid.UUID]]:
    store = EventStore(schema())
    subjects = [uuid.uuid4() for _ in range(LARGE // 10)]
    actors = [f"user-{i}" for i in range(500)]
    types = [f"catalog.Type{i}" for i in range(40)]
    events = [
        Envelope.model_construct(
            event_id=uuid.uuid4(),
            type="acl.Rare" if i % 997 == 0 else types[i % len(types)],
            schema_version=1,
            stream_id=f"file-{subjects[i % len(subjects)]}",
            stream_version=i // len(subjects) + 1,
            occurred_at=T0 + timedelta(seconds=i),
            actor=actors[i % len(actors)],
            correlation_id="corr",
            causation_id=None,
            traceparent=None,
            source="",
            position=0,
            data={"n": i},
        )
        for i in range(LARGE)
    ]
    async with pool.acquire() as conn:
        await store.setup(conn)
        async with conn.transaction():
            await store.append(conn, events)
        await conn.execute(f"ANALYZE {store.table}")
    return store, subjects


async def plan(pool: asyncpg.Pool, store: EventStore, **filters: Any) -> str:
    params: dict[str, Any] = {
        "subject_ids": None,
        "actor_id": None,
        "types": None,
        "since": None,
        "until": None,
        "after": 0,
        "limit": 100,
    }
    params.update(filters)
    sql, args = audit_query(store, **params)
    rows = await pool.fetch(f"EXPLAIN {sql}", *args)
    return "\n".join(r[0] for r in rows)


async def test_filters_are_index_scans_on_a_large_store(
    pool: asyncpg.Pool, large: tuple[EventStore, list[uuid.UUID]]
) -> None:
    store, subjects = large
    cases: list[tuple[dict[str, Any], str]] = [
        ({"subject_ids": [subjects[7]]}, "events_subject"),
        ({"subject_ids": subjects[:3]}, "events_subject"),
        ({"subject_ids": [subjects[7]], "after": 20_000}, "events_subject"),
        ({"actor_id": "user-3"}, "events_actor"),
        ({"types": ["acl.Rare"]}, "events_type"),
        ({"types": ["acl.Rare", "catalog.Missing"]}, "events_type"),
        (
            {"since": T0 + timedelta(seconds=100), "until": T0 + timedelta(seconds=160)},
            "events_occurred_at",
        ),
    ]
    for filters, index in cases:
        explained = await plan(pool, store, **filters)
        assert "Seq Scan" not in explained, (filters, explained)
        assert index in explained, (filters, explained)
    rows = await audit(
        pool,
        store,
        subject_ids=[subjects[7]],
        actor_id=None,
        types=None,
        since=None,
        until=None,
        after=0,
        limit=100,
    )
    assert [r["data"]["n"] for r in rows] == [7 + k * len(subjects) for k in range(10)]


# -- the route -------------------------------------------------------------------------


@pytest.fixture
async def client(pool: asyncpg.Pool, history: History) -> Any:
    parts = Parts(history.store.schema, Settings(service_key=SERVICE_KEY))
    parts.pool = pool  # what start() would have connected; no broker needed here
    runtime = Runtime(parts)
    app = create_app(runtime, "audit test")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://service",
        event_hooks={"request": [sign_as_gateway]},
    ) as c:
        yield c


async def test_route_filters_and_answers_source_and_items(
    client: httpx.AsyncClient, history: History
) -> None:
    h = history
    r = await client.get(
        "/internal/audit",
        params=[
            ("subject_id", str(h.file_a)),
            ("subject_id", str(h.file_b)),
            ("type", "catalog.FileDeleted"),
            ("type", "catalog.FileUploaded"),
            ("actor_id", "bob"),
            ("since", "2024-05-01T12:00:00Z"),
            ("until", "2024-05-01T14:10:00+02:00"),
            ("after", "0"),
            ("limit", "10"),
        ],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == h.store.schema
    assert [i["event_id"] for i in body["items"]] == of(h, 2, 6, 7)
    assert set(body["items"][0]) == {
        "event_id",
        "type",
        "occurred_at",
        "actor_id",
        "subject_id",
        "data",
        "causation_id",
        "source",
        "position",
    }
    everything = (await client.get("/internal/audit")).json()["items"]
    assert len(everything) == 9
    assert "key_hash" not in everything[-1]["data"]
    page = (await client.get("/internal/audit", params={"after": 3, "limit": 2})).json()
    assert [i["position"] for i in page["items"]] == [4, 5]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"subject_id": "not-a-uuid"}, "subject_id.0"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2024-05-01T12:00:00"}, "since"),  # no offset: ambiguous
        ({"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, "until"),
        ({"actor_id": ""}, "actor_id"),
        ([("type", "t")] * 101, "type"),
        ([("subject_id", str(uuid.uuid4())) for _ in range(1001)], "subject_id"),
    ],
)
async def test_route_refuses_invalid_params_with_422(
    client: httpx.AsyncClient, params: Any, field: str
) -> None:
    r = await client.get("/internal/audit", params=params)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [f["field"] for f in error["details"]["fields"]]
