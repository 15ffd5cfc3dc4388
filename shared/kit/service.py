"""The composition root's building blocks: one Runtime per service process.

Nothing connects at import time; `start()` does, from the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Query, Request
from pydantic import AwareDatetime, BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.kit import access as access_rules
from shared.kit import (
    bus,
    consistency,
    db,
    heap,
    idempotency,
    identity,
    private,
    projections,
    tracing,
)
from shared.kit.audit import audit
from shared.kit.db import Conn
from shared.kit.errors import Refused
from shared.kit.eventstore import EventStore
from shared.kit.http import JSON, RETRY_AFTER_S, Deadline, error_body, identity_of, install_errors
from shared.kit.http_server import INTERNAL, PUBLIC, Bounds, bounded_http
from shared.kit.identity import ServiceKey
from shared.kit.inbox import Consumer, Inbox
from shared.kit.logs import configure, log
from shared.kit.outbox import Relay
from shared.kit.projections import Projection
from shared.kit.reactions import Bound
from shared.kit.retry import Policy
from shared.kit.settings import Settings

Setup = Callable[[Conn], Awaitable[None]]
# How long /readyz waits for the database: under the orchestrator's probe timeout (3 s
# in deploy/k8s), so a hung database is told as such, and the gateway's own /readyz,
# which asks every service, still answers within it.
READY_PROBE_S = 2.0
# A start (migrations, a projection's rebuild: minutes, an hour for a large store) that
# has not finished in this long is gone on with while the process serves /healthz, so
# liveness (the launcher's watchdog, the orchestrator's probes) sees it alive, and
# /readyz and every other route answer 503 `starting` until it has.
SERVE_DURING_START_S = 5.0
# How long a process whose start failed gives it to end before it exits anyway (it may
# wait on a database that does not answer its cancel).
START_GIVEN_UP_S = 5.0
# How long a start's watch waits for the database to show what the start's backends do
# (`StartWatch.busy`) before it takes the start for stuck.
BUSY_PROBE_S = 10.0


class StartWatch:
    """What a service's start is at, and when it last moved: each step it begins, and
    what a long step tells of its progress (`progressed`: a rebuild, each window of the
    store it replays). A start that has not moved for `Settings.start_timeout_s` is stuck
    (on a lock held elsewhere, a database that never answers) and fails, naming its
    step, rather than answer `starting` for ever. A step that may run long must tell its
    progress within that time, be its own steps, or run its long statements on a
    connection it names (`working_on`): before the start is taken for stuck, the database
    is asked whether one of those runs a statement that waits on no lock, or waits on a
    lock held by a backend at work (`busy`)."""

    def __init__(self) -> None:
        self.step = "starting"
        self.moved = time.monotonic()
        self.stuck = False
        self.exiting = False
        # The database backends of the start's connections while a step works on them.
        self.backends: set[int] = set()

    def at(self, step: str) -> None:
        self.step = step
        self.moved = time.monotonic()

    def progressed(self) -> None:
        self.moved = time.monotonic()

    @contextlib.contextmanager
    def working_on(self, conn: Conn) -> Iterator[None]:
        """While `conn` does the step's work: a statement of its that runs long (one
        index of millions of rows, a migration's one UPDATE) tells no progress, but the
        database shows it running (`busy`)."""
        pid = conn.get_server_pid()
        self.backends.add(pid)
        try:
            yield
        finally:
            self.backends.discard(pid)

    async def busy(self, dsn: str) -> bool:
        """Whether a backend of the start's runs a statement that waits on no lock, or
        waits on a lock held by a backend that does (`pg_blocking_pids`): a long
        statement at work is no stuck start, nor one queued behind another process's
        (another replica's index build of the same table, a `files rebuild`). One
        waiting on a lock whose holders are idle, idle in a transaction, waiting
        themselves or waiting on their own client (or a database that does not say
        within `BUSY_PROBE_S`) is stuck."""
        if not self.backends:
            return False
        conn: asyncpg.Connection | None = None
        try:
            async with asyncio.timeout(BUSY_PROBE_S):
                conn = await asyncpg.connect(dsn)
                return bool(
                    await conn.fetchval(
                        # 'Client': a statement waiting on its own client (a COPY
                        # whose hung process stopped feeding it) is not at work.
                        """SELECT EXISTS (SELECT 1 FROM pg_stat_activity a
                           WHERE a.pid = ANY($1::int[]) AND a.state = 'active'
                             AND (coalesce(a.wait_event_type, '') NOT IN ('Lock', 'Client')
                                  OR a.wait_event_type = 'Lock' AND EXISTS (
                                      SELECT 1
                                      FROM unnest(pg_blocking_pids(a.pid)) AS blocker(pid)
                                      JOIN pg_stat_activity b USING (pid)
                                      WHERE b.state = 'active'
                                        AND coalesce(b.wait_event_type, '')
                                            NOT IN ('Lock', 'Client'))))""",
                        list(self.backends),
                    )
                )
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            log.warning("service.start_not_probed", error=repr(error))
            return False
        finally:
            if conn is not None:
                conn.terminate()  # not a close's goodbye to a database that may hang


class PublicAnswer(BaseModel):
    scope: str
    key: str
    status: int
    headers: list[tuple[str, str]]
    body: str  # base64


def source_of(topic: str) -> str:
    return topic.removeprefix("files.")


@dataclass
class Parts:
    """What a service's handlers work with, made before them: its store, inbox, identity
    and settings, and the pool once the runtime has started. The runtime is made last,
    from these and the handlers' reactions: the parts are built in one direction."""

    name: str
    settings: Settings
    pool_size: int = 10
    store: EventStore = field(init=False)
    inbox: Inbox = field(init=False)
    pool: asyncpg.Pool = field(init=False)
    # Fired when the watermarks move (consistency waits, work that follows them).
    moved: consistency.Signal = field(init=False, default_factory=consistency.Signal)
    # Verifies who calls this service, and signs its own calls to others.
    identity: ServiceKey = field(init=False)
    tasks: list[asyncio.Task[None]] = field(init=False, default_factory=list)
    # The partitions of the topic it publishes, sorted, read at start: an event about
    # many aggregates is keyed to land beside their own streams (catalog.FilesRestored).
    partitions: list[int] = field(init=False, default_factory=list)
    # Where its start is (`StartWatch`): a hook run at start that may take long tells
    # its progress here.
    start_watch: StartWatch = field(init=False, default_factory=StartWatch)

    def __post_init__(self) -> None:
        self.store = EventStore(self.name)
        self.inbox = Inbox(self.name, self.name)
        self.identity = ServiceKey(self.settings.service_key)

    def supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run `run` for the life of the process, started again after a crash."""
        self.tasks.append(
            asyncio.create_task(supervised(self.name, what, run), name=f"{self.name}.{what}")
        )


# (the caller's access, the events, the subjects asked about: None if any)
AuditView = Callable[
    [access_rules.Access | None, list[dict[str, Any]], list[uuid.UUID] | None], Awaitable[None]
]


@dataclass
class Runtime:
    parts: Parts
    publishes: str | None = None
    consumes: Sequence[str] = ()
    # What the consumer calls with each run of one type (`Reactions.bound`).
    reactions: Bound | None = None
    # This service's read models: made at start, rebuilt if their version changed.
    projections: Sequence[Projection] = ()
    setups: Sequence[Setup] = ()
    # Most events a consumer applies in one transaction (a DICOM batch reads files).
    max_batch: int = 10_000
    # Bytes fetched a partition a time: with events that stand for many items (a page of
    # 1,000 DICOM parts), what bounds the work of one batch's transaction.
    max_fetch_bytes: int = 8 * 1024 * 1024
    # Run once the database and bus are reachable (e.g. bootstrap records).
    on_start: Sequence[Callable[[], Awaitable[None]]] = ()
    # The audit's events as the caller (their signed access; None: a service's own call)
    # may read them: what an event lists that they may not see is taken out of it here,
    # in the service that knows what it holds; an event they may not see at all is
    # marked `hidden` (True), and answered as its place only (`hidden_in_audit`): the
    # gateway pages by how many rows each service read and where they were, and shows
    # none of it.
    audit_view: AuditView | None = None
    # Called once each batch the consumer applied has committed: work the batch left is
    # visible then (the watermarks' notification wakes nothing for a batch above a gap).
    after_batch: Callable[[], Awaitable[None]] | None = None
    producer: AIOKafkaProducer = field(init=False)
    relay: Relay | None = field(init=False, default=None)
    consumer: Consumer | None = field(init=False, default=None)
    _listener: Conn | None = field(init=False, default=None)
    # /readyz's query: one at a time, shared by the probes that come while it runs (the
    # kubelet's, each gateway replica's). One given up on is cancelled, but asyncpg keeps
    # its connection until the database answers the cancel: probes meanwhile are unready
    # at once, so a hung database holds one pool connection for them, not one a probe.
    _probe: asyncio.Task[Any] | None = field(init=False, default=None)
    _abandoned: asyncio.Task[Any] | None = field(init=False, default=None)
    # Its start still going on while it serves (`create_app`'s lifespan).
    starting: bool = field(init=False, default=False)

    @property
    def name(self) -> str:
        return self.parts.name

    @property
    def settings(self) -> Settings:
        return self.parts.settings

    @property
    def store(self) -> EventStore:
        return self.parts.store

    @property
    def inbox(self) -> Inbox:
        return self.parts.inbox

    @property
    def pool(self) -> asyncpg.Pool:
        return self.parts.pool

    @property
    def identity(self) -> ServiceKey:
        return self.parts.identity

    @property
    def moved(self) -> consistency.Signal:
        return self.parts.moved

    async def start(self) -> None:
        s = self.settings
        watch = self.parts.start_watch
        watch.at("connecting to the database")
        self.parts.pool = await db.connect_pool(
            s.database_url, max_size=self.parts.pool_size, kind=idempotency.Pool
        )
        # Services start side by side against one database: serialise DDL.
        async with self.pool.acquire() as conn, conn.transaction():
            watch.at(
                f"the schema lock (pg_advisory_xact_lock({projections.DDL_LOCK})),"
                " held by another process's start or `files rebuild`"
            )
            with watch.working_on(conn):
                await conn.execute(f"SELECT pg_advisory_xact_lock({projections.DDL_LOCK})")
            watch.at("making the tables")
            await self.store.setup(conn)
            await self.inbox.setup(conn)
            await conn.execute(idempotency.ddl(self.name))
            for projection in self.projections:
                await projection.setup(conn)
            for setup in self.setups:
                await setup(conn)
        async with self.pool.acquire() as conn:
            for projection in self.projections:
                watch.at(f"migrating {projection.name}")
                with watch.working_on(conn):
                    await projection.migrate(conn)
        for projection in self.projections:
            if projection.replayable:
                watch.at(f"rebuilding {projection.name} if stale")
                await projections.ensure_current(self.pool, self.store, projection, progress=watch)
        watch.at("the broker's topics")
        await bus.ensure_topics(s.kafka_bootstrap, s.topic_partitions)
        self.producer = bus.producer(s.kafka_bootstrap, idempotence=s.kafka_idempotence)
        watch.at("connecting to the broker")
        await self.producer.start()
        if self.publishes:
            self.parts.partitions = sorted(await self.producer.partitions_for(self.publishes))
            self.relay = Relay(
                self.store, s.database_url, self.producer, self.publishes, s.kafka_bootstrap
            )
            watch.at("the relay's tables")
            async with self.pool.acquire() as conn:
                await self.relay.setup(conn)
            self.supervise("relay", self.relay.run)
        if self.consumes and self.reactions:
            self.supervise("listener", self._listen)
            self.consumer = Consumer(
                pool=self.pool,
                inbox=self.inbox,
                topics=self.consumes,
                handle=self.reactions,
                wanted=self.reactions.types,
                idle=self.reactions.idle,
                prepare=self.reactions.prepare if self.reactions.before else None,
                bootstrap=s.kafka_bootstrap,
                dead_letters=self.producer,
                policy=Policy(
                    retry_for_s=s.consumer_retry_for_s, poison_tries=s.consumer_poison_tries
                ),
                max_batch=self.max_batch,
                max_fetch_bytes=self.max_fetch_bytes,
                after_db_commit=self.after_batch,
            )
            self.supervise("consumer", self.consumer.run)
        self.supervise(
            "idempotency.prune",
            lambda: idempotency.prune_forever(self.pool, self.name, s.idempotency_ttl_s),
        )
        for hook in self.on_start:
            watch.at(f"the start hook {getattr(hook, '__qualname__', hook)!s}")
            await hook()

    async def _listen(self) -> None:
        """Wake consistency waiters when the watermarks move; connected again after the
        database went away (waiters also look on their own, every RECHECK_S)."""
        self._listener = conn = await db.connect(self.settings.database_url)
        closed = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _: closed.set())
            await conn.add_listener(self.inbox.channel, lambda *_: self.moved.fire())
            await closed.wait()
            raise ConnectionError("the listening connection was closed")
        finally:
            self._listener = None
            with contextlib.suppress(Exception):
                await conn.close()

    def supervise(self, what: str, run: Callable[[], Awaitable[None]]) -> None:
        self.parts.supervise(what, run)

    async def stop(self) -> None:
        for task in self.parts.tasks:
            task.cancel()
        for task in self.parts.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.producer.stop()
        await self.pool.close()

    async def watermarks(self) -> dict[str, int]:
        return await self.inbox.watermarks(self.pool)

    def _probe_done(self, probe: asyncio.Task[Any]) -> None:
        if self._abandoned is probe:
            self._abandoned = None
        if not probe.cancelled():
            probe.exception()  # retrieved: one given up on fails unseen

    def mount(self, app: FastAPI) -> None:
        """Health and consistency routes, for the gateway and the orchestrator."""

        @app.get("/healthz", include_in_schema=False)
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz", include_in_schema=False)
        async def readyz() -> JSON:
            if self.starting:
                return JSON({"status": "unready", "reason": "starting"}, 503)
            if self._abandoned is not None:
                reason = "an earlier probe still waits on the database"
                return JSON({"status": "unready", "reason": reason}, 503)
            # Bounded: a database that hangs (connections open, nothing answered) makes
            # this unready within the probe's own timeout. The query is given up on,
            # not awaited: cancelled, asyncpg still waits for the database to answer
            # before it gives its connection back.
            probe = self._probe
            if probe is None or probe.done():
                probe = self._probe = asyncio.create_task(self.pool.fetchval("SELECT 1"))
                probe.add_done_callback(self._probe_done)
            await asyncio.wait([probe], timeout=READY_PROBE_S)
            if not probe.done() or probe.cancelled():
                if not probe.done():
                    self._abandoned = probe
                    probe.cancel()
                reason = f"the database did not answer within {READY_PROBE_S:g} s"
                return JSON({"status": "unready", "reason": reason}, 503)
            if (error := probe.exception()) is not None:
                return JSON({"status": "unready", "reason": repr(error)}, 503)
            if self.consumer is not None and not self.consumer.ready.is_set():
                return JSON({"status": "unready", "reason": "consumer joining"}, 503)
            return JSON({"status": "ready"})

        @app.get("/internal/consistency", include_in_schema=False)
        async def caught_up(
            token: str = "",
            timeout: float = Query(5.0, ge=0, le=30),  # noqa: ASYNC109
            types: str = "",
        ) -> dict[str, object]:
            try:
                wanted = consistency.decode(token)
            except ValueError as error:
                raise Refused(400, "invalid_consistency_token", str(error)) from error
            try:
                of_types = consistency.decode_types(types)
            except ValueError as error:
                raise Refused(400, "invalid_event_types", str(error)) from error
            # The store's head is read first only to check a token naming this store
            # (most name others only: a statement less an answer).
            head = await self.store.head(self.pool) if self.name in wanted else 0
            if wanted.get(self.name, 0) > head:
                # Never to come: refused at once rather than waited for.
                raise Refused(
                    400,
                    "invalid_consistency_token",
                    f"the consistency token names {self.name}:{wanted[self.name]}, past the"
                    f" {self.name} store's last position {head}",
                    {"source": self.name, "position": wanted[self.name], "head": head},
                )
            mine = {source_of(t) for t in self.consumes}
            relevant = {k: v for k, v in wanted.items() if k in mine}
            # Nothing it consumes is named: caught up without reading its watermarks.
            ok = not relevant or await consistency.wait_until_caught_up(
                self.watermarks, relevant, timeout, self.moved
            )
            # Read again: the reactions written meanwhile are waited for next. With
            # `types`, the last event of those (what a reader of them only needs to have
            # applied: the rest of the head changes nothing it holds).
            # What the caller is told it may read now is durable first: a consumer's
            # transaction wakes the wait at its commit, before its flush (kit/db.py).
            head = await self.store.durable_head(self.pool, of_types or None)
            # What it consumes, and the event types it applies: the gateway asks it again
            # only for tokens naming them, and asks a source only for those types' head.
            return {
                "caught_up": ok,
                "head": {self.name: head},
                "consumes": sorted(mine),
                "applies": sorted(self.reactions.types) if self.reactions else [],
            }

        @app.put("/internal/idempotency", include_in_schema=False)
        async def keep_public_answer(body: PublicAnswer) -> dict[str, bool]:
            """The gateway's composed answer to a keyed request, given back on a retry."""
            answer = idempotency.Answer(
                body.status, [(k, v) for k, v in body.headers], base64.b64decode(body.body)
            )
            kept = await idempotency.keep_public(self.pool, self.name, body.scope, body.key, answer)
            return {"kept": kept}


class Handlers:
    """Base of a service's command handlers and reactions: made from the service's
    parts, before its runtime; the pool is there once the runtime has started."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    @property
    def pool(self) -> asyncpg.Pool:
        return self.parts.pool

    @property
    def store(self) -> EventStore:
        return self.parts.store


def create_app(runtime: Runtime, title: str) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        start = asyncio.create_task(_started(runtime))
        bound = asyncio.create_task(_bound_start(runtime, start))
        await asyncio.wait([start], timeout=SERVE_DURING_START_S)
        if not start.done():
            runtime.starting = True
            log.info("service.still_starting", service=runtime.name)
            start.add_done_callback(lambda task: _start_ended(runtime, task))
        elif start.cancelled() and runtime.parts.start_watch.stuck:
            raise RuntimeError(f"the start was stuck: {runtime.parts.start_watch.step}")
        else:
            start.result()  # a start failed at once fails the process as before
        try:
            yield
        finally:
            bound.cancel()
            if not start.done():
                start.cancel()
                # Not for ever: a start stuck on a database that does not answer its
                # cancel would keep the process from exiting.
                await asyncio.wait([start], timeout=START_GIVEN_UP_S)
            if start.done() and not start.cancelled() and start.exception() is None:
                await runtime.stop()

    app = FastAPI(
        title=title,
        lifespan=lifespan,
        default_response_class=JSON,
        telemetry={"exclude": tracing.untraced},
    )
    app.add_middleware(tracing.ForwardContext)
    app.state.start_watch = runtime.parts.start_watch  # `serve` exits by it
    # Inside the keyed writes' units of work: a call given up on at its caller's
    # deadline is answered 503, which abandons its unit (nothing of it applied).
    app.add_middleware(Deadline)
    # Keyed writes (Idempotency-Key) as units of work, their answers kept; inside the
    # identity check, whose verified caller scopes the keys.
    app.add_middleware(
        idempotency.Idempotency,
        schema=runtime.name,
        pool=lambda: runtime.pool,
        caller=_user_of,
    )
    # Outermost: a call without a valid token reaches no route (health excepted).
    app.add_middleware(identity.Authenticated, key=runtime.identity, audience=runtime.name)
    install_errors(app)
    # Outside all: nothing but the probes reaches a route before the start has finished.
    app.add_middleware(WhileStarting, runtime=runtime)
    runtime.mount(app)
    mount_audit(app, runtime)
    return app


async def _started(runtime: Runtime) -> None:
    await runtime.start()
    settle_heap()
    log.info("service.started", service=runtime.name)


async def _bound_start(runtime: Runtime, start: asyncio.Task[None]) -> None:
    """Fail a start that has not moved for `start_timeout_s` (`StartWatch`): logged
    naming the step it waits in, and the process ends (as a failed start ends it), to
    be started again by the launcher or the orchestrator, which see it alive meanwhile."""
    limit = runtime.settings.start_timeout_s
    watch = runtime.parts.start_watch
    while limit and not start.done():
        left = watch.moved + limit - time.monotonic()
        if left > 0:
            await asyncio.wait([start], timeout=left)
            continue
        if await watch.busy(runtime.settings.database_url):
            # A statement at work (an index, a migration): looked at again a bound later.
            log.info("service.start_busy", service=runtime.name, step=watch.step)
            watch.progressed()
            continue
        if start.done():  # its last statement ended as it was looked at: not stuck
            return
        watch.stuck = True
        log.error(
            "service.start_stuck",
            service=runtime.name,
            waiting_on=watch.step,
            still_for_s=round(limit, 1),
        )
        # Ended by its cancel (`_start_ended`, or the lifespan's first wait, which fails
        # the process); one stuck where a cancel is not answered (a hung database), here.
        start.cancel()
        await asyncio.wait([start], timeout=START_GIVEN_UP_S)
        if not start.done():
            _exit_once(runtime)
        return


def _exit_once(runtime: Runtime) -> None:
    """Its stuck start ends the process (uvicorn's shutdown on SIGTERM): once, as a
    second SIGTERM would cut that shutdown short."""
    watch = runtime.parts.start_watch
    if runtime.starting and not watch.exiting:
        watch.exiting = True
        signal.raise_signal(signal.SIGTERM)


def _start_ended(runtime: Runtime, start: asyncio.Task[None]) -> None:
    """A start that went on while the process served: it serves all once it has; failed,
    the process exits, to be started again, as a start failed at once does (its routes
    refused until it has: the runtime is half started)."""
    if start.cancelled():
        if runtime.parts.start_watch.stuck:  # `_bound_start` ended it
            _exit_once(runtime)
        return
    if (error := start.exception()) is not None:
        log.error("service.start_failed", service=runtime.name, error=repr(error))
        # uvicorn shuts down, then raises it again: the process ends by it (143; as PID
        # 1 in a container, which takes no default action on it, 0): restarted either way.
        signal.raise_signal(signal.SIGTERM)
        return
    runtime.starting = False


class WhileStarting:
    """503 `starting` for every route but /healthz and /readyz while the runtime's start
    goes on (its pool and projections are not there yet)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.runtime.starting
            and scope["path"] not in identity.OPEN_PATHS
        ):
            refusal = JSON(
                error_body("starting", f"{self.runtime.name} is starting: try again shortly", {}),
                503,
                headers={"Retry-After": RETRY_AFTER_S},
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _user_of(scope: MutableMapping[str, Any]) -> str | None:
    """The user a call acts for, as its verified identity token says (none for a
    service's own call)."""
    found = scope.get("state", {}).get("identity")
    return found.actor if found is not None and found.access is not None else None


def hidden_in_audit(item: dict[str, Any]) -> dict[str, Any]:
    """An audit row the caller may not see as only its place in the merge (time, store
    and position: the gateway's page moves past it, and does not show it); any other as
    it is."""
    if not item.get("hidden"):
        return item
    return {"hidden": True, **{k: item[k] for k in ("occurred_at", "source", "position")}}


def mount_audit(app: FastAPI, runtime: Runtime) -> None:
    """This service's part of `GET /v1/audit`: its own events, for the gateway to merge
    with the other services' (it decides what the caller may see)."""

    @app.get("/internal/audit", include_in_schema=False)
    async def audit_events(
        request: Request,
        subject_id: list[uuid.UUID] | None = Query(None, max_length=1000),
        actor_id: str | None = Query(None, min_length=1, max_length=200),
        types: list[str] | None = Query(None, alias="type", max_length=100),
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
        after: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, object]:
        if since is not None and until is not None and since > until:
            raise Refused(
                422,
                "invalid_request",
                "until: must not be before since",
                {"fields": [{"field": "until", "problem": "must not be before since"}]},
            )
        # PostgreSQL's text takes no NUL: the query would fail (a 500).
        for name, values in (("actor_id", [actor_id]), ("type", types or [])):
            if any(v is not None and "\x00" in v for v in values):
                problem = "must not hold a NUL character"
                raise Refused(
                    422,
                    "invalid_request",
                    f"{name}: {problem}",
                    {"fields": [{"field": name, "problem": problem}]},
                )
        items = await audit(
            runtime.pool,
            runtime.store,
            subject_ids=subject_id,
            actor_id=actor_id,
            types=types,
            since=since,
            until=until,
            after=after,
            limit=limit,
        )
        if runtime.audit_view is not None:
            caller = identity_of(request).access
            await runtime.audit_view(
                None if caller is None else access_rules.Access.decode(caller), items, subject_id
            )
        return {"source": runtime.store.schema, "items": [hidden_in_audit(i) for i in items]}


def serve(name: str, build: Callable[[Settings], FastAPI], default_port: int | None) -> None:
    """Run one service; the gateway's port defaults to FILES_HTTP_PORT."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--host", default=None)
    args = parser.parse_args()
    # Before the secrets are read: from here on only root sees this process's memory.
    private.keep_memory_private()
    heap.keep_body_buffers()
    settings = Settings()
    configure(name, settings.log_level)
    tracing.setup(name, trace_file=settings.trace_file)
    try:
        app = build(settings)
    except identity.WeakSecret as refused:
        raise SystemExit(f"{name}: {refused}") from None
    uvicorn.run(
        app,
        host=args.host or settings.http_host,
        port=args.port or default_port or settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        # The gateway is the edge; a service is called only by it and by services.
        http=bounded_http(
            Bounds(
                PUBLIC.max_head,
                settings.http_headers_timeout_s,
                settings.http_body_idle_s,
                settings.http_send_idle_s,
            )
            if name == "gateway"
            else INTERNAL
        ),
    )
    # Ended by its stuck start: uvicorn raised SIGTERM again once shut down, which ends
    # the process (143) unless it is a container's PID 1 (no default action): non-zero
    # either way, so that it is seen to have failed.
    watch: StartWatch | None = getattr(app.state, "start_watch", None)
    if watch is not None and watch.stuck:
        raise SystemExit(f"{name}: its start was stuck: {watch.step}")


async def supervised(service: str, what: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run `run` for ever: after a crash, log it and start again, backing off to 5 s (and
    from 0.1 s again after a run of a minute or more: a database restart an hour later
    is not made to wait on the backoff of an earlier one)."""
    delay = 0.1
    while True:
        started = time.monotonic()
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error(f"{what}.crashed", service=service, exc_info=True)
            if time.monotonic() - started > 60:
                delay = 0.1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


# Tracked objects allocated (net) between young collections, after start. Python's 700
# collects the young every few requests, though nearly all of a request's objects are
# freed by their counts: at 10,000 a service's collections in upload_small fell from
# ~0.1 s to ~0.01 s a run (the catalog's ~90 ms to 5; measured with gc.callbacks). Gone
# is at most 10,000 objects' worth of cyclic garbage held a little longer.
YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once a service has started: what it made to start (modules, their classes and
    functions, pydantic's schemas, routes, pools: ~110,000 objects) is moved out of the
    cyclic collector's view, so its full collections no longer walk it all again (in
    upload_small each took 60-70 ms of the catalog's CPU, ~3 a run; frozen, 3 ms); and
    the young generation is collected less often. What is frozen is never collected as
    a cycle; it was made to live as long as the process. `collector_paused` still turns
    the collector off and on around large batches."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


_paused = 0


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a very large batch is built.

    Building 100,000 envelopes allocates enough to set off many full collections,
    each walking the whole heap of a long-running service: measured, they cost as
    much as the building itself. The batch holds no reference cycles worth finding
    meanwhile, and collection resumes when the outermost pause ends. The pause is the
    whole process's: hold it around synchronous building only, never across an
    `await`, or a request waiting on a lock keeps every other from being collected.
    """
    global _paused
    if _paused == 0:
        gc.disable()
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1
        if _paused == 0:
            gc.enable()
