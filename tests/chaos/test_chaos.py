"""Fault injection: uploads into a folder synced with a dataset go on while every piece of
the platform is killed in turn, and nothing is lost or applied twice.

A client uploads N files, one per request, each with its own Idempotency-Key, and sends
a request again on a 503 or a lost connection (backing off). Meanwhile, one fault at a
time: each service and the gateway killed (SIGKILL), a relay leader killed between
publishing a batch and recording how far it got, PostgreSQL killed, the broker killed
(the embedded broker loses every message), the broker paused (SIGSTOP) then resumed;
and hung, not dead (SIGSTOP for the pause): the object store (moto's S3 server, the
platform's blob store here), PostgreSQL, ingest and the catalog. During each pause a
reader asks /readyz and reads a folder: readiness is told within a probe's timeout, and
what needs neither the hung part nor the catalog is served. After each fault the
platform must be whole again (every service ready, an upload answered and listed)
within RECOVERY_S.

Afterwards: every upload succeeded, the folder lists exactly N files (none lost, none
twice), the dataset holds exactly the folder's files, every projection equals its
rebuild from the events, and every answer was a success or a clear 503 (a lost
connection only while the gateway itself was down).

`make test` runs a short version (FILES_CHAOS_UPLOADS=150, five faults, a 5 s pause);
`make chaos` the full one (1,000 uploads, every fault, a 60 s pause; or the faults
FILES_CHAOS_FAULTS names). The figures go to FILES_CHAOS_REPORT if set.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from shared.cli import PROJECTIONS
from shared.kit import db
from shared.kit.embedded import Child, free_port, start_s3_server
from shared.kit.eventstore import EventStore
from shared.kit.projections import Projection, rebuild
from shared.kit.settings import Settings
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, S3_KEYS, eventually

UPLOADS = int(os.environ.get("FILES_CHAOS_UPLOADS", "150"))
PAUSE_S = float(os.environ.get("FILES_CHAOS_PAUSE_S", "5"))
REPORT = os.environ.get("FILES_CHAOS_REPORT", "")
CLIENTS = 8
# The platform is whole again within this after a fault (or the end of a pause). Most of
# it is a restarted Python process importing its modules: on a machine shared with other
# work the short run in `make test` allows more.
RECOVERY_S = float(os.environ.get("FILES_CHAOS_RECOVERY_S", "90"))
# How long the gateway waits in all for the services' answers to one request, whatever
# hangs behind them (services/gateway/deadlines.py): a read's
# (FILES_GATEWAY_REQUEST_BUDGET_S), a write's (FILES_GATEWAY_WRITE_BUDGET_S): a keyed
# upload's caller lookup, folder check and its key's record draw on it together (each
# waited up to 60 s before: 123 s seen); ingest's answer after the body has its own 60 s
# of silence. Its consistency waits are bounded apart: the shared
# FILES_CONSISTENCY_TIMEOUT_S (5 s), and each wait at most 5 s of silence past it, two in
# an upload (the caller's schema, the stored files listed). The uploads here are small:
# sending their bodies adds nothing to speak of.
REQUEST_BUDGET_S = 15.0
WRITE_BUDGET_S = 60.0
CONSISTENCY_WAITS_S = 5.0 + 2 * 5.0
LONGEST_ANSWER_S = WRITE_BUDGET_S + CONSISTENCY_WAITS_S + 10

SERVICES = ("gateway", "ingest", "catalog", "datasets", "acl", "dicom", "thumbnails")
EVERY_FAULT = (
    *(f"kill {name}" for name in SERVICES),
    "kill relay files.ingest",
    "kill relay files.catalog",
    "kill postgres",
    "kill broker",
    "pause broker",
    # Hung, not dead (SIGSTOP): connections open, nothing answered.
    "pause s3",
    "pause postgres",
    "pause ingest",
    "pause catalog",
)
# The short run strikes the edge, the service written to, the database (killed), the
# broker (paused) and the object store (hung). A reacting service and a relay leader
# killed, and the broker killed, are the full run's (and tests/e2e/test_replicas.py,
# tests/integration/test_scale_out.py kill a datasets process and a relay leader):
# three fewer faults kept the suite within its 15 minutes.
SOME_FAULTS = (
    "kill gateway",
    "kill ingest",
    "kill postgres",
    "pause broker",
    "pause s3",
)
# `all`, or some faults by name, comma-separated (to play one again); test_full_disk.py
# reads the same names.
_CHOSEN = os.environ.get("FILES_CHAOS_FAULTS", "").strip()
ALL = _CHOSEN == "all"
NAMED = () if ALL else tuple(f.strip() for f in _CHOSEN.split(",") if f.strip())
_UNKNOWN = set(NAMED) - {*EVERY_FAULT, "full disk"}  # that one: test_full_disk.py
assert not _UNKNOWN, f"unknown faults: {_UNKNOWN}"
if ALL:
    FAULTS = EVERY_FAULT
elif NAMED:  # none of these: only the full disk was named
    FAULTS = tuple(f for f in NAMED if f in EVERY_FAULT)
else:
    FAULTS = SOME_FAULTS

pytestmark = [
    pytest.mark.skipif(not FAULTS, reason="FILES_CHAOS_FAULTS names only the full disk"),
    pytest.mark.timeout(600 + UPLOADS * 2 + PAUSE_S * len(FAULTS)),
]


@dataclass
class Attempt:
    upload: int
    phases: tuple[str, str]  # the fault (or its aftermath) when it was sent, and answered
    outcome: str  # "201", "503 unavailable", "ConnectError", ...
    took_s: float


@dataclass
class Figures:
    uploads: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    recovery_s: dict[str, float] = field(default_factory=dict)
    reads: list[Attempt] = field(default_factory=list)  # during each pause
    # Each pause, and the services that exited during it: the launcher's watchdog kills
    # a hung one, its /healthz unanswered FILES_WATCHDOG_FAILURES times (a pause longer
    # than ~15 s), and the supervisor starts it again.
    restarted: dict[str, list[str]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def outcomes(self) -> Counter[str]:
        return Counter(a.outcome for a in self.attempts)

    def by_phase(self) -> dict[str, Counter[str]]:
        found: dict[str, Counter[str]] = defaultdict(Counter)
        for a in self.attempts:
            found[a.phases[-1]][a.outcome] += 1
        return dict(found)

    def report(self) -> dict[str, Any]:
        return {
            "uploads": self.uploads,
            "requests": len(self.attempts),
            "outcomes": dict(self.outcomes()),
            "by_fault": {k: dict(v) for k, v in self.by_phase().items()},
            "reads_during": {
                fault: dict(Counter(r.outcome for r in self.reads if r.phases[0] == fault))
                for fault in dict.fromkeys(r.phases[0] for r in self.reads)
            },
            "slowest_answers": [
                (round(a.took_s, 1), *a.phases, a.outcome)
                for a in sorted(self.attempts + self.reads, key=lambda a: -a.took_s)[:3]
            ],
            "recovery_s": {k: round(v, 1) for k, v in self.recovery_s.items()},
            "restarted_by_the_watchdog": self.restarted,
            "pause_s": PAUSE_S,
            "duration_s": round(time.monotonic() - self.started, 1),
        }


class Client:
    """Uploads one file per request, each with its own key, retrying with backoff."""

    def __init__(self, http: httpx.AsyncClient, folder_id: str, figures: Figures) -> None:
        self.http = http
        self.folder_id = folder_id
        self.figures = figures
        self.phase = "before faults"
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self.done: dict[int, str] = {}  # upload -> the file id its answer named
        self.failures: list[Exception] = []
        self.progress = asyncio.Event()

    async def upload(self, i: int) -> None:
        key, delay = str(uuid.uuid4()), 0.2
        while True:
            started = time.monotonic()
            phase = self.phase
            try:
                answer = await self.http.post(
                    f"/v1/folders/{self.folder_id}/files",
                    files=[("file", (f"chaos-{i}.txt", f"chaos upload {i}\n".encode()))],
                    headers={"Idempotency-Key": key},
                )
                outcome = str(answer.status_code)
                if answer.status_code >= 400:
                    outcome += f" {answer.json()['error']['code']}"
                elif answer.headers.get("Idempotent-Replayed") == "true":
                    outcome += " replayed"  # applied by an earlier try whose answer was lost
            except httpx.TransportError as lost:
                answer, outcome = None, type(lost).__name__
            self.figures.attempts.append(
                Attempt(i, (phase, self.phase), outcome, time.monotonic() - started)
            )
            if answer is not None and answer.status_code == 201:
                [stored] = answer.json()["files"]
                self.done[i] = stored["id"]
                self.progress.set()
                return
            if answer is not None and answer.status_code not in (503, 409):
                raise AssertionError(f"upload {i}: {answer.status_code} {answer.text}")
            # The client under test backs off with jitter, as a real one does: this is
            # its behaviour, not the test waiting for a reaction.
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 5.0)

    async def feed(self, uploads: list[int], over_s: float) -> None:
        """Queue the uploads, evenly over `over_s` seconds."""
        for i in uploads:
            self.queue.put_nowait(i)
            if over_s:
                await asyncio.sleep(over_s / len(uploads))  # pacing the client, not a wait

    async def work(self) -> None:
        while True:
            i = await self.queue.get()
            try:
                await self.upload(i)
            except Exception as failed:
                self.failures.append(failed)
                self.progress.set()
            finally:
                self.queue.task_done()

    async def until_done(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.done) < count:
            if self.failures:
                raise self.failures[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.done)} of {count} uploads done in {within} s")
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), 1.0)


@pytest.fixture
def chaos_s3(tmp_path: Path) -> Iterator[Child]:
    """moto's S3 server, the platform's blob store, which a fault pauses."""
    child = start_s3_server(tmp_path / "moto.log")
    yield child
    child.stop()


@pytest.fixture
def chaos_stack(tmp_path: Path, chaos_s3: Child) -> Iterator[Stack]:
    """A platform of its own: its own PostgreSQL, broker and S3, which the faults strike."""
    (tmp_path / "faults").mkdir()
    settings = Settings(
        data_dir=tmp_path / "stack",
        database_url="",
        kafka_bootstrap="",
        blob_url=f"s3://files-chaos?endpoint={chaos_s3.url}&region=us-east-1",
        http_port=free_port(),
        bootstrap_admin_key=ADMIN_KEY,
        faults_dir=str(tmp_path / "faults"),
        **S3_KEYS,
    )
    running = Stack(settings, durable=False)
    try:
        running.start(timeout=300)
        yield running
    finally:
        running.stop()


@pytest.fixture
async def chaos_api(chaos_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=chaos_stack.gateway_url,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        # Past the gateway's own bounds: a request it leaves hanging shows as taking longer.
        timeout=LONGEST_ANSWER_S + 30,
        # A connection idle longer than this is not used again: the gateway closes idle
        # ones after 5 s, and a request sent as it does so is lost on the way (the usual
        # keep-alive race, which a client's retry covers; here it would blur the count).
        limits=httpx.Limits(keepalive_expiry=1.0),
    ) as client:
        yield client


async def keyed(api: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A setup request, sent again (same key) until the platform answers it."""
    key = str(uuid.uuid4())
    answers: list[httpx.Response] = []

    async def answered() -> bool:
        try:
            answers.append(
                await api.request(method, path, headers={"Idempotency-Key": key}, **kwargs)
            )
        except httpx.TransportError:
            return False
        return answers[-1].status_code != 503

    await eventually(answered, within=60, what=f"an answer to {method} {path}")
    return answers[-1]


async def whole(api: httpx.AsyncClient, probe_folder: str) -> bool:
    """Every service ready, and an upload answered and read back."""
    try:
        if (await api.get("/readyz")).status_code != 200:
            return False
        answer = await api.post(
            f"/v1/folders/{probe_folder}/files",
            files=[("file", ("probe.txt", b"probe\n"))],
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if answer.status_code != 201:
            return False
        [probe] = answer.json()["files"]
        token = {"Files-Consistency": answer.headers["Files-Consistency"]}
        return (await api.get(f"/v1/files/{probe['id']}", headers=token)).status_code == 200
    except httpx.TransportError:
        return False


async def recover(api: httpx.AsyncClient, probe_folder: str, since: float) -> float:
    """Seconds from `since` until the platform is whole again."""

    async def is_whole() -> bool:
        return await whole(api, probe_folder)

    await eventually(is_whole, within=120, what="the platform whole again")
    return time.monotonic() - since


def exited(stack: Stack, name: str, after: float) -> bool:
    return any(n == name and at >= after for n, _, at in stack.exits)


async def read_while(
    fault: str, reads: list[Attempt], api: httpx.AsyncClient, probe_folder: str
) -> None:
    """Asks the gateway's /readyz, and reads a folder's listing and facts (the catalog's,
    from PostgreSQL), until the pause ends, recording each answer."""
    ends = time.monotonic() + PAUSE_S
    while time.monotonic() < ends:
        paths = ("/readyz", f"/v1/folders/{probe_folder}/items", f"/v1/folders/{probe_folder}")
        for path in paths:
            started = time.monotonic()
            try:
                answer = await api.get(path)
                outcome = str(answer.status_code)
                if path == "/readyz":
                    outcome = f"readyz {answer.status_code}"
                elif answer.status_code >= 400:
                    outcome += f" {answer.json()['error']['code']}"
            except httpx.TransportError as lost:
                outcome = type(lost).__name__
            reads.append(Attempt(0, (fault, fault), outcome, time.monotonic() - started))
        await asyncio.sleep(0.25)  # the reader's pace, not a wait for a reaction


async def inject(
    stack: Stack,
    s3: Child,
    fault: str,
    faults_dir: Path,
    api: httpx.AsyncClient,
    probe_folder: str,
    reads: list[Attempt],
    restarted: dict[str, list[str]],
) -> float:
    """Cause the fault; returns when it took effect (the time recovery counts from).
    The services that exited during a pause go to `restarted`."""
    verb, _, what = fault.partition(" ")
    now = time.time()
    if verb == "pause":
        # With its own children: PostgreSQL's backends serve their connections without
        # the postmaster.
        top = psutil.Process((s3 if what == "s3" else stack.child(what)).proc.pid)
        hung = [top, *top.children(recursive=True)]
        try:
            for process in hung:
                # One gone meanwhile (a backend that ended) is not stopped; the others
                # are all continued below, whatever happens here.
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGSTOP)
            # The fault itself: stopped this long, while a reader reads what needs
            # neither the broker nor the object store nor the hung service.
            await asyncio.gather(
                asyncio.sleep(PAUSE_S), read_while(fault, reads, api, probe_folder)
            )
        finally:
            # A process the watchdog killed meanwhile is gone (a new one serves).
            for process in hung:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGCONT)
        restarted[fault] = [name for name in SERVICES if exited(stack, name, now)]
        return time.monotonic()
    if what.startswith("relay "):
        topic = what.removeprefix("relay ")
        owner = topic.removeprefix("files.")
        (faults_dir / f"relay.{topic}").touch()

        async def leader_died() -> bool:
            if exited(stack, owner, now):
                return True
            await whole(api, probe_folder)  # events for the relay to publish
            return False

        await eventually(leader_died, within=60, what=f"the {topic} relay leader killed")
        return time.monotonic()
    stack.child(what).proc.send_signal(signal.SIGKILL)
    return time.monotonic()


async def projection_rows(pool: asyncpg.Pool, projection: Projection) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for table in projection.tables:
        found = await pool.fetch(f"SELECT * FROM {table}")
        rows[table] = sorted(repr(sorted(dict(r).items())) for r in found)
    return rows


async def every_projection_equals_its_rebuild(database_url: str) -> list[str]:
    pool = await db.connect_pool(database_url)
    differ = []
    try:
        for name, (schema, target) in sorted(PROJECTIONS.items()):
            module, _, attribute = target.partition(":")
            projection = getattr(importlib.import_module(module), attribute)
            live = await projection_rows(pool, projection)
            await rebuild(pool, EventStore(schema), projection)
            if await projection_rows(pool, projection) != live:
                differ.append(name)
    finally:
        await pool.close()
    return differ


def write_report(report: dict[str, Any]) -> None:
    print("\nchaos:", json.dumps(report, indent=2))
    if REPORT:
        Path(REPORT).write_text(json.dumps(report, indent=2) + "\n")


async def test_uploads_survive_every_fault_with_nothing_lost_or_doubled(
    chaos_stack: Stack, chaos_s3: Child, chaos_api: httpx.AsyncClient, tmp_path: Path
) -> None:
    api, stack, s3 = chaos_api, chaos_stack, chaos_s3
    figures = Figures(uploads=UPLOADS)
    made = await keyed(api, "POST", "/v1/folders", json={"name": "chaos"})
    assert made.status_code == 201, made.text
    folder_id = made.json()["id"]
    probe = await keyed(api, "POST", "/v1/folders", json={"name": "probes"})
    probe_id = probe.json()["id"]
    synced = await keyed(
        api, "POST", "/v1/datasets", json={"name": "chaos", "synced_folder_id": folder_id}
    )
    assert synced.status_code == 201, synced.text
    dataset_id = synced.json()["id"]

    client = Client(api, folder_id, figures)
    workers = [asyncio.create_task(client.work()) for _ in range(CLIENTS)]
    # Each fault strikes while a batch of uploads is on its way: the batch starts, the
    # fault comes with its first answer, its requests are retried through the outage,
    # and the next fault waits for the whole batch. Uploads go on during a pause.
    batches = [list(range(UPLOADS))[k :: len(FAULTS) + 1] for k in range(len(FAULTS) + 1)]
    try:
        queued = 0
        for fault, batch in zip((*FAULTS, None), batches, strict=True):
            if fault == "pause broker":
                feeding = asyncio.create_task(client.feed(batch, over_s=PAUSE_S))
            else:
                feeding = asyncio.create_task(client.feed(batch, over_s=0))
            await client.until_done(queued + 1, within=300)
            queued += len(batch)
            if fault is not None:
                client.phase = fault
                since = await inject(
                    stack,
                    s3,
                    fault,
                    tmp_path / "faults",
                    api,
                    probe_id,
                    figures.reads,
                    figures.restarted,
                )
                figures.recovery_s[fault] = await recover(api, probe_id, since)
                client.phase = f"after {fault}"
            await feeding
            await client.until_done(queued, within=300)
    finally:
        for worker in workers:
            worker.cancel()
        write_report(figures.report())

    # Every upload succeeded once, and is listed once: none lost, none twice.
    listed: dict[str, str] = {}
    cursor = None
    while True:
        page = await api.get(
            f"/v1/folders/{folder_id}/items",
            params={"limit": 1000, **({"cursor": cursor} if cursor else {})},
        )
        assert page.status_code == 200, page.text
        for item in page.json()["items"]:
            assert item["id"] not in listed
            listed[item["id"]] = item["name"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    names = Counter(listed.values())
    assert sorted(names) == sorted(f"chaos-{i}.txt" for i in range(UPLOADS))
    assert set(names.values()) == {1}, [n for n, c in names.items() if c > 1]
    assert set(listed) == set(client.done.values())

    # The dataset follows the folder: exactly its files.
    async def dataset_has_the_folder() -> bool:
        answer = await api.get(f"/v1/datasets/{dataset_id}/files", params={"limit": 1000})
        found: set[str] = set()
        while answer.status_code == 200:
            found |= {f["id"] for f in answer.json()["items"]}
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                return found == set(listed)
            answer = await api.get(
                f"/v1/datasets/{dataset_id}/files", params={"limit": 1000, "cursor": cursor}
            )
        return False

    await eventually(dataset_has_the_folder, within=60, what="the dataset equal to the folder")

    # Every answer was a success or a clear 503; a lost connection only when the gateway
    # itself was down (the retry after it is counted as its own request).
    for attempt in figures.attempts:
        if attempt.outcome in ("201", "201 replayed"):
            continue
        if attempt.outcome.startswith("503 ") or attempt.outcome == "409 request_in_progress":
            continue
        assert "kill gateway" in attempt.phases, attempt
    # None waited past the gateway's own bounds on its calls' answers.
    slow = [a for a in figures.attempts if a.took_s > LONGEST_ANSWER_S]
    assert not slow, slow[:5]

    # While a dependency hung, what needs only PostgreSQL and the catalog was served;
    # while those hung, a read was answered 503, not left hanging.
    # The gateway's /readyz said so within an orchestrator's probe timeout (3 s); a
    # hung service the watchdog started again meanwhile may be ready again before the
    # pause ends. PostgreSQL hung restarts nothing (a service's /healthz holds).
    assert not figures.restarted.get("pause postgres"), figures.restarted
    for read in figures.reads:
        [fault] = set(read.phases)
        if read.outcome.startswith("readyz"):
            assert read.took_s <= 3.0, read
            if fault.removeprefix("pause ") in figures.restarted.get(fault, []):
                assert read.outcome in ("readyz 503", "readyz 200"), read
            elif fault in ("pause postgres", "pause ingest", "pause catalog"):
                assert read.outcome == "readyz 503", read
            elif fault == "pause s3":
                # Not a readiness dependency: what needs only PostgreSQL is served.
                assert read.outcome == "readyz 200", read
        elif fault in ("pause postgres", "pause catalog"):
            assert read.outcome in ("200", "503 unavailable"), read
            assert read.took_s <= REQUEST_BUDGET_S + 10, read  # one call to the catalog
        else:
            assert read.outcome == "200", read

    # Every read model equals what its events rebuild.
    assert await every_projection_equals_its_rebuild(stack.env["FILES_DATABASE_URL"]) == []

    # Last, being the one a loaded machine can miss: whole again within the bound.
    for fault, took in figures.recovery_s.items():
        assert took <= RECOVERY_S, f"{fault}: whole again only after {took:.1f} s"
