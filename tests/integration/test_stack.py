"""The launcher: a piece that cannot start fails the start, naming its log (the tests'
fixtures rely on it), rather than being started again for ever; a service that hangs
is killed and started again (its /healthz unanswered, no CPU used), one whose
database hangs is not (its /readyz fails, its /healthz holds), nor one busy on the
CPU for a while, nor one whose start waits on its migrations (it answers /healthz
meanwhile); one busy for much longer is, and one that hangs before it ever answers,
once its start's grace is over."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from shared.kit import projections
from shared.kit.embedded import Child, free_port
from shared.kit.settings import Settings
from shared.kit.stack import Stack, _ready
from tests.conftest import ADMIN_KEY, eventually


@pytest.mark.timeout(300)  # five Python processes start (and die) side by side
def test_a_service_that_dies_at_start_fails_the_start_naming_its_log(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        # Nothing listens there: every service dies while it starts.
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        http_port=free_port(),
        bootstrap_admin_key=ADMIN_KEY,
    )
    stack = Stack(settings)
    try:
        with pytest.raises(RuntimeError, match=r"exited with status \d+; see .*/logs/\w+\.log"):
            stack.start(timeout=280)
    finally:
        stack.stop()
    assert not stack.children


# -- the watchdog: a hung service is started again, one whose database hangs is not ----

# Short, so the test sees several rounds quickly; the defaults are 5 s, 5 s, 3. The
# probes' timeout is 2 s, not the default's 5 (a hung service is killed in 6 s, not 15):
# still more than a process stalled on a loaded machine takes to answer, and one that
# stalls longer, on the CPU, is busy and left running.
WATCH = {"watchdog_every_s": 0.5, "watchdog_timeout_s": 2.0, "watchdog_failures": 3}


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("watched"),
        http_port=free_port(),
        bootstrap_admin_key=ADMIN_KEY,
        **WATCH,
    )
    stack = Stack(settings, durable=False)
    try:
        stack.start(timeout=280)
        yield stack
    finally:
        stack.stop()


def notes(stack: Stack, event: str) -> list[dict[str, Any]]:
    log = stack.data_dir / "logs" / "stack.log"
    lines = log.read_text().splitlines() if log.exists() else []  # made by the first note
    return [note for line in lines if (note := json.loads(line))["event"] == event]


async def rounds_pass(stack: Stack, count: int) -> None:
    """Until the watchdog has probed every service `count` times more."""
    after = stack.watch_rounds + count

    async def done() -> bool:
        return stack.watch_rounds >= after

    await eventually(done, within=60, what=f"{count} rounds of the watchdog")


def hung(process: psutil.Process) -> list[psutil.Process]:
    """A process and its children (PostgreSQL's backends), stopped (SIGSTOP)."""
    stopped = [process, *process.children(recursive=True)]
    for each in stopped:
        with contextlib.suppress(psutil.NoSuchProcess):
            each.send_signal(signal.SIGSTOP)
    return stopped


def resumed(stopped: list[psutil.Process]) -> None:
    for each in stopped:
        with contextlib.suppress(psutil.NoSuchProcess):
            each.send_signal(signal.SIGCONT)


@pytest.mark.timeout(300)
async def test_a_hung_service_is_killed_and_started_again(watched: Stack) -> None:
    datasets = watched.child("datasets")
    old = datasets.proc.pid
    url = watched.env["FILES_DATASETS_URL"]
    stopped = hung(psutil.Process(old))
    try:

        async def whole_again() -> bool:
            return datasets.proc.pid != old and _ready(url, "/healthz")

        await eventually(whole_again, within=120, what="datasets answering, a new process")
    finally:
        resumed(stopped)
    [note] = [n for n in notes(watched, "unresponsive") if n["pid"] == old]
    assert note["name"] == "datasets"
    assert "/healthz not answered 3 times in a row" in note["reason"]
    assert any(name == "datasets" for name, _, _ in watched.exits)

    async def ready() -> bool:
        return _ready(url)

    await eventually(ready, within=120, what="datasets ready again")


@pytest.mark.timeout(300)
async def test_a_service_whose_database_hangs_is_not_started_again(watched: Stack) -> None:
    catalog = watched.env["FILES_CATALOG_URL"]
    pids = {c.name: c.proc.pid for c in watched.children}
    exits = len(watched.exits)
    stopped = hung(psutil.Process(watched.child("postgres").proc.pid))
    try:

        async def unready() -> bool:
            return not _ready(catalog, timeout=5)

        await eventually(unready, within=30, what="the catalog unready")
        # Rounds enough for every service to have been killed twice over, were liveness
        # tied to the database.
        await rounds_pass(watched, 2 * WATCH["watchdog_failures"])
        assert _ready(catalog, "/healthz")
        assert not _ready(catalog, timeout=5)
    finally:
        resumed(stopped)
    assert len(watched.exits) == exits, watched.exits[exits:]
    assert {c.name: c.proc.pid for c in watched.children} == pids
    assert not [n for n in notes(watched, "unresponsive") if n["pid"] in pids.values()]

    async def ready() -> bool:
        return _ready(catalog)

    await eventually(ready, within=120, what="the catalog ready again")


@pytest.mark.timeout(300)
async def test_a_start_waiting_on_its_migrations_answers_liveness_and_is_left_be(
    watched: Stack,
) -> None:
    """Started again while another start holds the DDL lock (a long migration, a rebuild
    of a large store): it answers /healthz from 5 s in, /readyz `starting`, and the
    watchdog leaves it be however long that takes; it serves once it has the lock."""
    datasets = watched.child("datasets")
    old = datasets.proc.pid
    url = watched.env["FILES_DATASETS_URL"]
    conn = await asyncpg.connect(watched.env["FILES_DATABASE_URL"])
    try:
        await conn.execute(f"SELECT pg_advisory_lock({projections.DDL_LOCK})")
        datasets.proc.send_signal(signal.SIGKILL)

        async def starting() -> bool:
            if datasets.proc.pid == old or not _ready(url, "/healthz"):
                return False
            async with httpx.AsyncClient(timeout=5) as client:
                answer = await client.get(f"{url}/readyz")
            return answer.status_code == 503 and answer.json()["reason"] == "starting"

        await eventually(starting, within=120, what="datasets answering as it starts")
        new = datasets.proc.pid
        await rounds_pass(watched, 2 * WATCH["watchdog_failures"])
        assert datasets.proc.pid == new
        assert not [n for n in notes(watched, "unresponsive") if n["pid"] == new]
        assert not _ready(url)
    finally:
        await conn.close()  # the lock with it

    async def ready() -> bool:
        return _ready(url)

    await eventually(ready, within=120, what="datasets ready once its start is done")
    assert datasets.proc.pid == new


# The watchdog alone, tending pieces of the tests' own (no platform): a round every
# 0.2 s, a piece judged in a few seconds.
QUICK = {
    "watchdog_every_s": 0.2,
    "watchdog_timeout_s": 0.5,
    "watchdog_failures": 3,
    "watchdog_busy_failures": 12,
    "watchdog_start_s": 2.0,
}


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(Settings(data_dir=tmp_path, **QUICK))
    (tmp_path / "logs").mkdir()
    stack.supervise()
    try:
        yield stack
    finally:
        stack.stop()


# A piece the watchdog tends as it does a service: it answers /healthz until SIGUSR1
# makes it compute for ever on its main thread (busy: unanswered, most of a CPU used),
# and SIGUSR2, taken in the middle of that, deadlocks it (blocked on a lock, no CPU).
PIECE = """
import http.server, signal, sys, threading

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

def busy(*_):
    while True:
        pass

def deadlocked(*_):
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()

signal.signal(signal.SIGUSR1, busy)
signal.signal(signal.SIGUSR2, deadlocked)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


# One that listens but never answers, from its start (hung before it serves).
SILENT = """
import socket, sys, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
time.sleep(3600)
"""


@contextlib.asynccontextmanager
async def piece(stack: Stack, program: str = PIECE) -> AsyncIterator[tuple[Child, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", program, str(port)])

    child = Child("piece", popen(), "")
    stack._adopt(child, popen, url)
    try:
        if program == PIECE:

            async def answers() -> bool:
                return _ready(url, "/healthz")

            await eventually(answers, within=30, what="the piece answering")
            stack._answered([child])
        yield child, url
    finally:
        stack.remove(child, signal.SIGKILL)


async def restarted(child: Child, old: int) -> float:
    """When (monotonic) a new process replaced `old`."""

    async def new() -> bool:
        return child.proc.pid != old

    await eventually(new, within=60, what=f"process {old} replaced")
    return time.monotonic()


@pytest.mark.timeout(120)
async def test_a_busy_service_is_left_running_a_deadlocked_or_stopped_one_is_killed(
    bare: Stack,
) -> None:
    async with piece(bare) as (child, url):
        busy = child.proc.pid
        child.proc.send_signal(signal.SIGUSR1)
        # Rounds enough for it to have been killed twice over, were it judged by its
        # /healthz alone (and fewer than its bound while busy).
        await rounds_pass(bare, 2 * QUICK["watchdog_failures"] + 1)
        assert child.proc.pid == busy and child.proc.poll() is None
        assert not _ready(url, "/healthz")
        [note] = [n for n in notes(bare, "slow") if n["pid"] == busy]
        assert note["action"] == "left running"
        assert not [n for n in notes(bare, "unresponsive") if n["pid"] == busy]

        async def again(old: int) -> bool:
            return child.proc.pid != old and _ready(url, "/healthz")

        child.proc.send_signal(signal.SIGUSR2)
        await eventually(
            lambda: again(busy), within=120, what="the deadlocked piece killed, started again"
        )
        [note] = [n for n in notes(bare, "unresponsive") if n["pid"] == busy]
        assert "next to no CPU" in note["reason"]

        # A process is judged once the watchdog has seen it answer: a round begun after
        # it answered the test's probe.
        await rounds_pass(bare, 2)
        stopped = child.proc.pid
        child.proc.send_signal(signal.SIGSTOP)
        await eventually(
            lambda: again(stopped), within=120, what="the stopped piece killed, started again"
        )


@pytest.mark.timeout(120)
async def test_a_service_spinning_on_the_cpu_without_answering_is_killed_after_the_busy_bound(
    bare: Stack,
) -> None:
    async with piece(bare) as (child, url):
        spinning = child.proc.pid
        child.proc.send_signal(signal.SIGUSR1)  # an endless loop on its main thread
        await restarted(child, spinning)
        [slow] = [n for n in notes(bare, "slow") if n["pid"] == spinning]
        assert slow["action"] == "left running"
        [note] = [n for n in notes(bare, "unresponsive") if n["pid"] == spinning]
        assert "/healthz not answered 12 times in a row" in note["reason"]
        assert "busy on the CPU, never answering" in note["reason"]

        async def answers() -> bool:
            return _ready(url, "/healthz")

        await eventually(answers, within=30, what="the piece answering again")


@pytest.mark.timeout(120)
async def test_a_service_that_never_answers_is_killed_after_its_start_s_grace(
    bare: Stack,
) -> None:
    grace = QUICK["watchdog_start_s"]
    started = time.monotonic()
    async with piece(bare, SILENT) as (child, _):
        first = child.proc.pid
        killed = await restarted(child, first)
        # Not before its grace: a start (migrations, a rebuild) is let be that long.
        assert killed - started >= grace
        [note] = [n for n in notes(bare, "unresponsive") if n["pid"] == first]
        assert "never answered since it started" in note["reason"]
        assert "next to no CPU" in note["reason"]
        # Killed at its start, it has twice as long the next time.
        second = child.proc.pid
        again = await restarted(child, second)
        assert again - killed >= 2 * grace
