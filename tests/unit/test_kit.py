"""Pure pieces of the kit and the gateway's routing."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import pathlib

import pytest

from services.gateway.routes import ROUTES, TABLE, Refusal
from shared.contracts import REGISTRY
from shared.kit import consistency

ROOT = pathlib.Path(__file__).parents[2]


def test_consistency_tokens_round_trip_and_merge() -> None:
    token = consistency.encode({"ingest": 4, "catalog": 12})
    assert consistency.decode(token) == {"ingest": 4, "catalog": 12}
    assert consistency.merge({"a": 1, "b": 5}, {"a": 3}) == {"a": 3, "b": 5}


@pytest.mark.parametrize("bad", ["ingest", "ingest:x", ":3", "in-gest:3"])
def test_malformed_tokens_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        consistency.decode(bad)


ID = "3f0c2a8e-5b1d-4c47-9a51-0d6f1b2c3d4e"


@pytest.mark.parametrize(
    ("method", "path", "service"),
    [
        ("POST", "/v1/folders", "catalog"),
        ("POST", f"/v1/folders/{ID}/files", "ingest"),
        ("POST", f"/v1/folders/{ID}/dicom", "ingest"),
        ("GET", f"/v1/folders/{ID}/items", "catalog"),
        ("GET", f"/v1/folders/{ID}/collaborators", "acl"),
        ("GET", f"/v1/files/{ID}/datasets", "datasets"),
        ("GET", f"/v1/jobs/{ID}", "ingest"),
        ("GET", "/v1/users/me", "acl"),
        ("POST", "/v1/move", "catalog"),
        ("GET", "/v1/audit", "gateway"),
        ("POST", "/v1/sessions", "acl"),
        ("DELETE", "/v1/sessions", "acl"),
        ("GET", f"/v1/files/{ID}/thumbnail", "thumbnails"),
        ("GET", f"/v1/files/{ID}/slices/12", "dicom"),
        ("PATCH", f"/v1/integrations/{ID}", "ingest"),
    ],
)
def test_gateway_routes_each_path_to_its_owner(method: str, path: str, service: str) -> None:
    found = TABLE.match(method, path.encode())
    assert found is not None and found.route.owner == service
    # The service's path is the template filled with the parsed ids, and nothing else.
    assert found.route.path(found.values) == path


def test_unknown_paths_match_no_route() -> None:
    for path in ("/v1/nothing", "/v1/folders/a/b/c/d", "/v1", "/internal/audit", "/v1//folders"):
        assert TABLE.match("GET", path.encode()) is None


def test_a_path_with_another_method_is_405_naming_those_it_takes() -> None:
    with pytest.raises(Refusal) as refused:
        TABLE.match("GET", f"/v1/folders/{ID}/dicom".encode())
    assert refused.value.status == 405
    assert refused.value.details["allowed"] == ["POST"]


@pytest.mark.parametrize(
    "bad", ["xyz", "123", ID[:-1], ID + "0", "{" + ID + "}", ID.replace("-", "")]
)
def test_an_id_that_is_not_a_uuid_is_not_found(bad: str) -> None:
    with pytest.raises(Refusal) as refused:
        TABLE.match("GET", f"/v1/folders/{bad}/items".encode())
    assert (refused.value.status, refused.value.code) == (404, "not_found")
    assert refused.value.message == f"folder {bad} does not exist"


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/integrations/%2e%2e/%2e%2e/internal/audit",
        b"/v1/jobs/../folders/" + ID.encode() + b"/files",
        b"/v1/files/..%2f..%2finternal%2faudit",
        b"/v1/files/%00",
        b"/v1/files/%ff",
        b"/v1/files/%252e%252e",
        b"/v1/files/./" + ID.encode(),
        b"/v1/files/a\\b",
        b"/v1/files/\xc3\xa9",
        b"/v1/files/\x00",
    ],
)
def test_paths_that_could_read_as_another_are_refused(raw: bytes) -> None:
    with pytest.raises(Refusal) as refused:
        TABLE.match("GET", raw)
    assert (refused.value.status, refused.value.code) == (400, "invalid_path")


def test_the_ids_sent_on_are_canonical() -> None:
    found = TABLE.match("GET", f"/v1/folders/{ID.upper()}/".encode())
    assert found is not None and found.values == {"folder_id": ID}
    assert found.route.path(found.values) == f"/v1/folders/{ID}"


def test_every_route_has_a_composer_or_is_forwarded_and_names_its_params() -> None:
    from services.gateway.compose import Compose

    for route in ROUTES:
        assert route.compose is None or callable(getattr(Compose, route.compose))
        assert route.template.startswith("/v1/")
        assert "internal" not in route.template
        assert route.path({p.name: ID for p in route.params}).count("{") == 0
    assert len({r.name for r in ROUTES}) == len(ROUTES), "operation ids are unique"


def test_event_types_are_stable_names_not_import_paths() -> None:
    for name, event in REGISTRY.items():
        context, _, kind = name.partition(".")
        contexts = {"catalog", "ingest", "dicom", "datasets", "acl", "thumbnails"}
        assert context in contexts and kind[0].isupper()
        assert event.type == name


def test_services_do_not_import_each_other() -> None:
    for service in (ROOT / "services").iterdir():
        if not service.is_dir() or service.name.startswith("_"):
            continue
        for source in service.rglob("*.py"):
            tree = ast.parse(source.read_text())
            for node in ast.walk(tree):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                for name in names:
                    if name.startswith("services."):
                        assert name.split(".")[1] == service.name, (
                            f"{source.relative_to(ROOT)} imports {name}"
                        )


async def test_a_wait_wakes_when_the_watermark_moves_and_gives_up_at_its_deadline() -> None:
    marks = {"ingest": 3}
    moved = consistency.Signal()

    async def watermarks() -> dict[str, int]:
        return dict(marks)

    waiting = asyncio.create_task(
        consistency.wait_until_caught_up(watermarks, {"ingest": 5}, 5.0, moved)
    )
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done  # still behind
    marks["ingest"] = 5
    moved.fire()
    assert await asyncio.wait_for(waiting, 1.0) is True
    assert await consistency.wait_until_caught_up(watermarks, {"ingest": 9}, 0.05, moved) is False


def test_the_relays_partitions_are_the_default_partitioners() -> None:
    """The relay picks partitions itself for a batch at once; a stream must land where
    aiokafka's default partitioner (Kafka's murmur2) puts it, or its order is lost."""
    import os
    import random
    import uuid

    from aiokafka.partitioner import DefaultPartitioner

    from shared.kit.bus import partitions_of

    rng = random.Random(17)
    keys = [f"file-{uuid.UUID(int=rng.getrandbits(128))}".encode() for _ in range(500)]
    keys += [os.urandom(rng.randint(0, 41)) for _ in range(500)] + [b"", "é".encode()]
    for count in (1, 3, 4, 12):
        partitions = list(range(count))
        expected = [DefaultPartitioner()(k, partitions, partitions) for k in keys]
        assert partitions_of(keys, partitions) == expected
        # A few keys (a stream drawn, a relay's small batch) take the plain loop.
        assert [p for k in keys for p in partitions_of([k], partitions)] == expected


def test_event_ids_drawn_in_a_batch_are_random_version_4_ids() -> None:
    from shared.contracts.envelope import random_ids

    ids = random_ids(1000)
    assert len(set(ids)) == 1000
    assert {i.version for i in ids} == {4} and {i.variant for i in ids} == {"specified in RFC 4122"}
    assert random_ids(0) == []


async def test_a_started_service_keeps_its_start_out_of_the_collectors_walks() -> None:
    """What a service made to start is frozen (full collections do not walk it again),
    the young generation is collected less often, and a pause for a large batch still
    turns the collector off and back on."""
    import gc

    from shared.kit.service import Parts, Runtime, collector_paused, create_app
    from shared.kit.settings import Settings
    from tests.conftest import SERVICE_KEY

    async def nothing() -> None:
        pass

    runtime = Runtime(Parts("gc_test", Settings(service_key=SERVICE_KEY)))
    # Connecting is not what is tested: the lifespan around it is.
    runtime.start = nothing  # type: ignore[method-assign]
    runtime.stop = nothing  # type: ignore[method-assign]
    app = create_app(runtime, "gc test")
    thresholds = gc.get_threshold()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold()[0] >= 10_000
            with collector_paused():
                with collector_paused():
                    assert not gc.isenabled()
                assert not gc.isenabled()
            assert gc.isenabled()
    finally:
        # The test process's own heap is not left frozen.
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.parametrize("fails", [False, True])
async def test_a_long_start_serves_liveness_and_nothing_else_until_it_has_finished(
    monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    """Migrations or a rebuild outlasting the moment a start is waited for: /healthz
    answers (the watchdog and the orchestrator's liveness see it alive), /readyz and
    every other route are 503 `starting`; once started, all are served. One failing
    after that moment ends the process (SIGTERM to itself, uvicorn's shutdown)."""
    import signal

    import httpx

    from shared.kit import service
    from shared.kit.service import Parts, Runtime, create_app
    from shared.kit.settings import Settings
    from tests.conftest import SERVICE_KEY

    monkeypatch.setattr(service, "SERVE_DURING_START_S", 0.0)
    monkeypatch.setattr(service, "settle_heap", lambda: None)
    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    migrated = asyncio.Event()

    async def start() -> None:
        await migrated.wait()
        if fails:
            raise RuntimeError("the migration failed")

    async def stop() -> None:
        pass

    runtime = Runtime(Parts("start_test", Settings(service_key=SERVICE_KEY)))
    runtime.start = start  # type: ignore[method-assign]
    runtime.stop = stop  # type: ignore[method-assign]
    app = create_app(runtime, "start test")
    transport = httpx.ASGITransport(app=app)
    async with (
        asyncio.timeout(30),  # not waiting for the start to serve
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()["reason"]) == (503, "starting")
        other = await client.get("/internal/audit")
        assert (other.status_code, other.json()["error"]["code"]) == (503, "starting")
        assert other.headers["Retry-After"]
        [starting] = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "_started"]
        migrated.set()
        # Its end noted first (the lifespan's callback came before this wait's).
        await asyncio.wait([starting])
        after = await client.get("/internal/audit")
        if fails:
            # Half started until the process ends: still refused.
            assert runtime.starting
            assert (after.status_code, after.json()["error"]["code"]) == (503, "starting")
        else:
            # The route's own answer now: unsigned, refused by the identity check.
            assert not runtime.starting
            assert after.status_code == 401
    assert raised == ([signal.SIGTERM] if fails else [])


@pytest.mark.parametrize("progressing", [False, True])
async def test_a_start_that_stops_moving_fails_naming_its_step_and_one_telling_progress_goes_on(
    monkeypatch: pytest.MonkeyPatch, progressing: bool
) -> None:
    """A start waiting in one step (a lock held elsewhere) for `start_timeout_s` with no
    progress told fails: its log names the step, and the process ends (SIGTERM to
    itself) to be started again. One telling its progress more often than that (a
    rebuild, window after window) goes on for as long as it moves, and serves."""
    import signal

    import httpx
    import structlog

    from shared.kit import service
    from shared.kit.service import Parts, Runtime, create_app
    from shared.kit.settings import Settings
    from tests.conftest import SERVICE_KEY, eventually

    monkeypatch.setattr(service, "SERVE_DURING_START_S", 0.0)
    monkeypatch.setattr(service, "settle_heap", lambda: None)
    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    bound_s = 0.5
    parts = Parts("start_test", Settings(service_key=SERVICE_KEY, start_timeout_s=bound_s))
    never = asyncio.Event()

    async def start() -> None:
        parts.start_watch.at("the test's lock")
        if not progressing:
            await never.wait()
        loop = asyncio.get_running_loop()
        moving_until = loop.time() + 4 * bound_s
        while loop.time() < moving_until:  # a long step's work, told as it goes
            parts.start_watch.progressed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(never.wait(), bound_s / 5)

    async def stop() -> None:
        pass

    runtime = Runtime(parts)
    runtime.start = start  # type: ignore[method-assign]
    runtime.stop = stop  # type: ignore[method-assign]
    app = create_app(runtime, "start test")
    transport = httpx.ASGITransport(app=app)
    with structlog.testing.capture_logs() as logs:
        async with (
            asyncio.timeout(30),
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://service") as client,
        ):
            assert (await client.get("/healthz")).status_code == 200

            async def ended() -> bool:
                return bool(raised) or not runtime.starting

            await eventually(ended, within=20, what="the start ended or given up")
    stuck = [line for line in logs if line["event"] == "service.start_stuck"]
    if progressing:
        assert not runtime.starting and raised == [] and stuck == []
    else:
        assert raised == [signal.SIGTERM]
        assert [(s["waiting_on"], s["still_for_s"]) for s in stuck] == [
            ("the test's lock", bound_s)
        ]


def test_a_batch_applies_an_event_after_the_events_of_other_sources_that_led_to_it() -> None:
    """The catalog applies a batch holding ingest's `SyncFolderNeeded` (the folder a
    synced DICOM object goes into) and the DICOM context's series made from that object:
    the folder first, though `dicom` sorts before `ingest` by name; and each source's
    events in its store's order, whatever their clocks say."""
    import datetime as dt
    import uuid

    from shared.contracts.envelope import Envelope
    from shared.kit.inbox import in_causal_order

    start = dt.datetime(2026, 12, 6, 18, 0, 32, tzinfo=dt.UTC)

    def event(source: str, position: int, ms: int, type_: str) -> Envelope:
        return Envelope(
            event_id=uuid.uuid4(),
            type=type_,
            stream_id=f"{source}-{position}",
            stream_version=1,
            occurred_at=start + dt.timedelta(milliseconds=ms),
            actor="system",
            correlation_id="c",
            source=source,
            position=position,
        )

    folder = event("ingest", 834, 935, "ingest.SyncFolderNeeded")
    stored = event("ingest", 835, 934, "ingest.DicomInstanceStored")  # a clock a tick behind
    series = event("dicom", 36, 967, "dicom.SeriesAssembled")
    later = event("ingest", 845, 2000, "ingest.FilesStored")
    order = in_causal_order([series, later, stored, folder])
    assert [e.type for e in order] == [
        "ingest.SyncFolderNeeded",
        "ingest.DicomInstanceStored",
        "dicom.SeriesAssembled",
        "ingest.FilesStored",
    ]
    # A time without its zone (an older writer's) is ordered too, not a stopped consumer.
    naive = event("acl", 5, 0, "acl.UserCreated").model_copy(
        update={"occurred_at": start.replace(tzinfo=None) + dt.timedelta(seconds=1)}
    )
    assert in_causal_order([series, naive])[0].source in {"acl", "dicom"}
