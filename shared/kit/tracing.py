"""OpenTelemetry spans across the HTTP and Kafka hops; off unless configured.

`setup(service)` runs once per process (in `serve()`): spans are exported by OTLP/HTTP
when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with
the exporter's standard `OTEL_*` variables, and written as JSON lines to
`FILES_TRACE_FILE` when that is set (for tests). Otherwise `enabled` stays False and
each hook in the kit costs one test of it.

The context travels as the W3C `traceparent`:

- FastAPI makes a server span per request (its native telemetry, on once a tracer
  provider is set), continuing the caller's `traceparent` header; `ForwardContext`
  replaces that header with the server span's, so what reads or forwards it (the
  `Cause` of a command, the gateway's calls to the services) continues the span;
- an event carries its Cause's `traceparent` in its metadata;
- the relay publishes a batch under one span per distinct context in it and puts that
  span's `traceparent` in the Kafka message headers;
- a consumer runs each reaction under one span per distinct context of the events it
  handles, child of that context, and the events a reaction appends (`Cause.of`)
  carry the reaction span's `traceparent`, so the chain goes on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.contracts.envelope import Envelope, continuing

enabled = False
tracer = trace.get_tracer("files")
_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def setup(service: str, *, trace_file: str = "", exporter: SpanExporter | None = None) -> None:
    """Spans for this process, named after `service`, if anything is to receive them;
    `exporter` (tests) gets each span as it ends."""
    global enabled, _provider
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not (endpoint or trace_file or exporter):
        return
    if _provider is None:
        name = os.environ.get("OTEL_SERVICE_NAME") or service
        _provider = TracerProvider(resource=Resource.create({"service.name": name}))
        trace.set_tracer_provider(_provider)
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if trace_file:
        _provider.add_span_processor(
            BatchSpanProcessor(FileExporter(trace_file), schedule_delay_millis=100)
        )
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    enabled = True


def traceparent_of(span: Span) -> str | None:
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def current() -> str | None:
    """The current span's `traceparent`, if a span is current."""
    return traceparent_of(trace.get_current_span())


def context_of(traceparent: str | None) -> Context:
    """The context a `traceparent` names (an empty one, so a new trace, if none)."""
    return _propagator.extract({"traceparent": traceparent} if traceparent else {})


@contextlib.contextmanager
def _spans(
    name: str, parents: Iterable[str | None], kind: SpanKind, attributes: dict[str, Any]
) -> Iterator[dict[str | None, Span]]:
    """One span per distinct parent context, ended on exit; an error marks them all."""
    spans = {
        parent: tracer.start_span(name, context_of(parent), kind, attributes)
        for parent in set(parents)
    }
    try:
        yield spans
    except BaseException as error:
        for span in spans.values():
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, repr(error)))
        raise
    finally:
        for span in spans.values():
            span.end()


@contextlib.contextmanager
def publishing(
    topic: str, traceparents: Iterable[str | None]
) -> Iterator[dict[str | None, str | None]]:
    """The relay's span(s) around publishing events of these `traceparents`; yields,
    per event traceparent, the one its Kafka message carries (nothing if off)."""
    if not enabled:
        yield {}
        return
    attributes = {"messaging.system": "kafka", "messaging.destination.name": topic}
    with _spans(f"{topic} publish", traceparents, SpanKind.PRODUCER, attributes) as spans:
        yield {parent: traceparent_of(span) or parent for parent, span in spans.items()}


def carried(headers: Sequence[tuple[str, bytes]]) -> str | None:
    """The `traceparent` of a Kafka message's headers."""
    for key, value in headers:
        if key == "traceparent":
            return value.decode()
    return None


@contextlib.contextmanager
def reacting(
    name: str, envelopes: Sequence[Envelope], headers: Mapping[Any, str | None] | None = None
) -> Iterator[None]:
    """A reaction to `envelopes`: one span per distinct context among them, child of
    it (the Kafka header's, from `headers` by event id, else the envelope's own), and
    the events it appends through `Cause.of` continue that span. The first of them is
    current meanwhile (logs, nested spans)."""
    if not enabled:
        yield
        return
    parent_of = {
        e.traceparent: (headers.get(e.event_id) if headers else None) or e.traceparent
        for e in envelopes
    }
    attributes = {"messaging.system": "kafka", "messaging.batch.message_count": len(envelopes)}
    with _spans(name, parent_of.values(), SpanKind.CONSUMER, attributes) as spans:
        token = continuing.set(
            {tp: traceparent_of(spans[parent]) or tp for tp, parent in parent_of.items()}
        )
        try:
            first = next(iter(spans.values()))
            with trace.use_span(first, record_exception=False, set_status_on_exception=False):
                yield
        finally:
            continuing.reset(token)


# Asked every few seconds by orchestrators and the gateway: spans would be noise.
UNTRACED = frozenset({"/healthz", "/readyz"})


def untraced(scope: MutableMapping[str, Any]) -> bool:
    """For `FastAPI(telemetry={"exclude": untraced})`."""
    return scope.get("path") in UNTRACED


class ForwardContext:
    """ASGI middleware: the request's `traceparent` header becomes the current span's,
    FastAPI's server span for the request, so whatever reads or forwards that header
    (the `Cause` of a command, the gateway's calls to the services) continues it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if enabled and scope["type"] == "http":
            mine = current()
            if mine:
                headers = [h for h in scope["headers"] if h[0] != b"traceparent"]
                scope["headers"] = [*headers, (b"traceparent", mine.encode())]
        await self.app(scope, receive, send)


class FileExporter(SpanExporter):
    """Finished spans as JSON lines appended to a file (one write per batch, so the
    processes of a platform can share the file)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = b"".join(orjson.dumps(_as_json(s)) + b"\n" for s in spans)
        os.write(self._fd, lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        os.close(self._fd)


def _as_json(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }
