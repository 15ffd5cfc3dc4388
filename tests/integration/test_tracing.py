"""Tracing through the kit: a request, the outbox, Kafka and two hops of reactions, one trace."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator, Sequence

import asyncpg
import httpx
import orjson
import pytest
import structlog
from fastapi import FastAPI, Request
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.contracts.envelope import Cause, Envelope, new_envelope
from shared.kit import bus, http, identity, tracing
from shared.kit.access import Access
from shared.kit.db import Conn
from shared.kit.eventstore import EventStore
from shared.kit.inbox import Consumer, Inbox
from shared.kit.logs import PROCESSORS
from shared.kit.outbox import Relay
from tests.conftest import eventually
from tests.integration.helpers import Happened, schema
from tests.signing import SIGNER, as_user


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process while the module runs, spans kept in memory."""
    exporter = InMemorySpanExporter()
    tracing.setup("test", exporter=exporter)
    yield exporter
    # The process's tracer provider stays (it is set once); it keeps nothing more.
    tracing.enabled = False
    exporter.shutdown()


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_one_trace_from_a_request_through_two_reactions(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    first, second, third = schema(), schema(), schema()
    stores = {s: EventStore(s) for s in (first, second)}
    inboxes = {s: Inbox(s, f"consumer-{s}") for s in (second, third)}
    await bus.ensure_topics(kafka_bootstrap, 1, [f"files.{first}", f"files.{second}"])
    producer = bus.producer(kafka_bootstrap, idempotence=False)
    await producer.start()
    relays = [
        Relay(stores[s], database_url, producer, f"files.{s}", kafka_bootstrap)
        for s in (first, second)
    ]
    async with pool.acquire() as conn:
        for store in stores.values():
            await store.setup(conn)
        for inbox in inboxes.values():
            await inbox.setup(conn)
        for relay in relays:
            await relay.setup(conn)

    # The command: a request whose Cause takes the server span's context.
    app = FastAPI()
    app.add_middleware(tracing.ForwardContext)
    app.add_middleware(identity.Authenticated, key=SIGNER, audience="catalog")

    @app.post("/things")
    async def command(request: Request) -> dict[str, str]:
        envelope = new_envelope(
            Happened(n=1), stream_id="a", stream_version=1, cause=http.cause(request)
        )
        async with pool.acquire() as conn, conn.transaction():
            await stores[first].append(conn, [envelope])
        return {}

    # The first reaction appends an event of its own; the second one logs.
    async def react(conn: Conn, events: Sequence[Envelope]) -> None:
        await stores[second].append(
            conn,
            [
                new_envelope(
                    Happened(n=2), stream_id=f"b-{e.stream_id}", stream_version=1, cause=Cause.of(e)
                )
                for e in events
            ],
        )

    logged: list[dict[str, object]] = []
    render = structlog.wrap_logger(structlog.ReturnLogger(), processors=PROCESSORS)

    async def react_again(conn: Conn, events: Sequence[Envelope]) -> None:
        logged.append(orjson.loads(render.info("reacted", events=len(events))))

    consumers = [
        Consumer(
            pool=pool,
            inbox=inboxes[s],
            topics=[f"files.{source}"],
            handle=handle,
            bootstrap=kafka_bootstrap,
            dead_letters=producer,
        )
        for s, source, handle in ((second, first, react), (third, second, react_again))
    ]
    running = [asyncio.create_task(x.run()) for x in relays]
    running += [asyncio.create_task(x.run()) for x in consumers]
    try:
        client_span = tracing.tracer.start_span("client")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as caller:
            answer = await caller.post(
                "/things",
                headers=as_user(
                    "tester",
                    Access(user_id="tester"),
                    traceparent=tracing.traceparent_of(client_span) or "",
                ),
            )
        client_span.end()
        assert answer.status_code == 200, answer.text

        async def reacted_twice() -> bool:
            return bool(logged)

        await eventually(reacted_twice, within=20, what="the second reaction")
    finally:
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await producer.stop()

    by_name = {s.name: s for s in spans.get_finished_spans()}
    client = by_name["client"]
    server = by_name["POST /things"]
    publish_first = by_name[f"files.{first} publish"]
    reaction = by_name[f"consumer-{second} test.Happened"]
    publish_second = by_name[f"files.{second} publish"]
    reaction_again = by_name[f"consumer-{third} test.Happened"]
    chain = [client, server, publish_first, reaction, publish_second, reaction_again]
    assert [s.kind for s in chain] == [
        SpanKind.INTERNAL,
        SpanKind.SERVER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    ]
    trace_id = client.context.trace_id
    assert all(s.context.trace_id == trace_id for s in chain)
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id, (
            f"{child.name} is not a child of {parent.name}"
        )

    # The events carry the span they were appended under: the command's, the reaction's.
    (recorded,) = await stores[first].read_after(pool, 0)
    assert recorded.traceparent == traceparent(server)
    (reacted,) = await stores[second].read_after(pool, 0)
    assert reacted.traceparent == traceparent(reaction)

    # A log line written during the second reaction names its span.
    (line,) = logged
    assert line["trace_id"] == f"{trace_id:032x}"
    assert line["span_id"] == f"{reaction_again.context.span_id:016x}"


def test_a_batch_of_two_traces_reacts_under_a_span_in_each(spans: InMemorySpanExporter) -> None:
    spans.clear()
    parents = [tracing.tracer.start_span(f"request {n}") for n in (1, 2)]
    events = [
        new_envelope(
            Happened(n=n),
            stream_id=f"s-{n}",
            stream_version=1,
            cause=Cause(actor="a", correlation_id="c", traceparent=tracing.traceparent_of(p)),
        )
        for n, p in enumerate(parents)
    ]
    with tracing.reacting("reaction", events):
        continued = [Cause.of(e).traceparent for e in events]
    reactions = [s for s in spans.get_finished_spans() if s.name == "reaction"]
    assert len(reactions) == 2
    for parent, carried_on in zip(parents, continued, strict=True):
        (reaction,) = [
            r
            for r in reactions
            if r.parent and r.parent.span_id == parent.get_span_context().span_id
        ]
        assert carried_on == traceparent(reaction)
    # Outside a reaction, an event's cause carries its own context on.
    assert Cause.of(events[0]).traceparent == events[0].traceparent


def test_with_tracing_off_contexts_pass_through_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "enabled", False)
    event = new_envelope(
        Happened(n=1),
        stream_id="s",
        stream_version=1,
        cause=Cause(
            actor="a", correlation_id="c", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        ),
    )
    with tracing.reacting("reaction", [event]):
        assert Cause.of(event).traceparent == event.traceparent
    with tracing.publishing("files.x", [event.traceparent]) as carried:
        assert carried == {}
