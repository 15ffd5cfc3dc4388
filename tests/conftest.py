"""Real parts for the tests: an embedded PostgreSQL, the tansu broker, moto's S3 server,
and the whole stack.

One PostgreSQL and one broker serve the session; integration tests each take
a schema of their own, e2e tests share one running platform, its blobs in S3 (moto).
The blob-touching e2e modules also run against a second platform whose blobs are on
local disk (the `blobs` parameter, see tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from shared.kit import db
from shared.kit.embedded import Child, free_port, start_broker, start_postgres, start_s3_server
from shared.kit.logs import PROCESSORS
from shared.kit.settings import Settings
from shared.kit.stack import Stack

# A platform started after a test opened a gRPC channel is spawned from a process in
# which gRPC runs: its fork handlers would then run in the child before it execs, and
# can abort it (an `epoll_wait error: Bad file descriptor`). The tests only spawn.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# In process, the kit logs as the services do (JSON lines): structlog's default console
# renderer would draw every traceback with its locals through `rich` (a schemathesis
# dependency), slowly.
structlog.configure(processors=PROCESSORS)

# Fixed, so that every test (and the processes they start) can use them; random-looking,
# so that they pass the strength checks of the real ones.
ADMIN_KEY = "files_ILR-oOuPN_ZyF7HZnd7DACWHIeX_KX-mE5nb-C0VRoE"
# The platforms' service key: the tests that call a service directly sign as the gateway.
SERVICE_KEY = "PC__5TdcrjgEG8fBBh4GjgaSALHmpujGPDMm-tbZQt0"
# How often `eventually` looks again, within its deadline.
POLL_S = 0.02

# The session's platforms idle at about 40% of a core each (every consumer's empty
# fetches, the broker answering them) from their first test to the end of the session.
# So the tests that need none of them run first, chaos (a platform of its own) before
# the shared ones start, then those on the S3 platform, which stops after its last one
# (`pytest_runtest_teardown`), then those on the local-disk one, and the browser last
# (tests/browser/conftest.py says why), on the local-disk one too.
_SHARED_PLATFORM = {"api", "platform", "stack", "local_stack"}


def _on_s3_platform(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    if "stack" in names:
        return True
    if item.nodeid.startswith("tests/browser/") or not names & {"api", "platform"}:
        return False
    callspec = getattr(item, "callspec", None)
    return bool(getattr(callspec, "params", {}).get("blobs", "s3") != "local")


_OWN_BASETEMP: list[str] = []
_FAILED: list[bool] = []
# A session's directory left by a run that was killed (no unconfigure) is swept by a
# later session once this old: no session runs this long.
_LEFT_OVER_S = 24 * 3600


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Each session's temporary files in a directory of its own, unless --basetemp names
    one. pytest's shared one (/tmp/pytest-of-<user>) is made private (0700) again by
    every session that starts, and the embedded PostgreSQL, run as its own user when the
    tests run as root, then can no longer reach its data: a second test session on the
    machine (a developer's, a helper's) made the first one's database PANIC.
    (tryfirst, in this initial conftest: before pytest's own temp-dir setup reads it.)"""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        root = Path(tempfile.gettempdir())
        for old in root.glob("files-pytest-*"):
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > _LEFT_OVER_S:
                    shutil.rmtree(old, ignore_errors=True)
        config.option.basetemp = tempfile.mkdtemp(prefix="files-pytest-")
        _OWN_BASETEMP.append(config.option.basetemp)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _FAILED.append(exitstatus != 0)


def pytest_unconfigure(config: pytest.Config) -> None:
    """The session's directory goes, unless the session failed: its databases' and
    services' logs are there to read."""
    for made in _OWN_BASETEMP:
        if any(_FAILED):
            print(f"\nkept for its logs: {made}")
        else:
            shutil.rmtree(made, ignore_errors=True)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    if path.startswith("tests/browser/"):
        return 5
    if path.startswith("tests/chaos/"):
        return 1
    if _on_s3_platform(item):
        return 3
    if _SHARED_PLATFORM & set(getattr(item, "fixturenames", ())):
        return 4
    return 0 if path.startswith("tests/unit/") else 2


# The S3 platform, once started, and the last test that needs it.
_S3_PLATFORM: dict[str, Any] = {"stack": None, "last": None}


# `make test` runs the suite as three sessions at once (FILES_TEST_SHARD), each with its
# own PostgreSQL and broker: the short chaos run (a platform of its own) and most of the
# end-to-end tests on the S3 platform (`s3`); the integration tests, then the heaviest
# S3 modules below on an S3 platform of their own (`integration`); the unit tests, the
# local-disk platform's tests and the browser (`local`). Two sessions (S3 beside the
# rest) took 871 s and 844 s on 2 cores with about 1.4 of them busy, the rest waiting on
# the platforms' reactions; the modules below are chosen by their share of a profiled
# run to even the three out (README, Tests).
_S3_BESIDE_INTEGRATION = frozenset(
    {
        "tests/e2e/test_datasets.py",
        "tests/e2e/test_fuzz.py",
        "tests/integration/test_replay.py",
        "tests/e2e/test_cli.py",
        "tests/e2e/test_imports.py",
        "tests/e2e/test_access.py",
        "tests/e2e/test_hung_store.py",
    }
)


def _shard(item: pytest.Item) -> str:
    rank = _rank(item)
    if rank in (0, 4, 5):
        return "local"
    if rank == 2 or item.nodeid.split("::", 1)[0] in _S3_BESIDE_INTEGRATION:
        return "integration"
    return "s3"


_SHARDS = ("s3", "integration", "local")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    shard = os.environ.get("FILES_TEST_SHARD", "")
    if shard:
        if shard not in _SHARDS:
            raise pytest.UsageError(f"FILES_TEST_SHARD must be one of {sorted(_SHARDS)}")
        kept = [item for item in items if _shard(item) == shard]
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
    items.sort(key=_rank)  # stable: within a rank, the files' own order
    on_s3 = [item.nodeid for item in items if _on_s3_platform(item)]
    _S3_PLATFORM["last"] = on_s3[-1] if on_s3 else None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last test on the S3 platform (its clients closed), it stops, rather
    than idle under the rest of the session; the fixture's own stop is then a no-op."""
    if item.nodeid == _S3_PLATFORM["last"] and _S3_PLATFORM["stack"] is not None:
        _S3_PLATFORM["stack"].stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    child = start_postgres(tmp_path_factory.mktemp("pg") / "data", durable=False)
    yield child
    child.stop()


@pytest.fixture(scope="session")
def broker() -> Iterator[Child]:
    child = start_broker()
    yield child
    child.stop()


@pytest.fixture(scope="session")
def database_url(postgres: Child) -> str:
    return postgres.url


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: Child) -> str:
    return broker.url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    p = await db.connect_pool(database_url, max_size=20)
    yield p
    await p.close()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on loopback: http://127.0.0.1:<port> (any credentials pass)."""
    child = start_s3_server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield child.url
    child.stop()


# The port the webhook tests' receiver listens on: the one loopback address the
# platform's webhooks may post to (FILES_WEBHOOK_ALLOWED_ENDPOINTS), not its own ports.
# Held bound (with SO_REUSEPORT, as the receiver binds it) for the whole session, so that
# no process started meanwhile is given it.
_WEBHOOK_PORT_HELD = socket.socket()
_WEBHOOK_PORT_HELD.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
_WEBHOOK_PORT_HELD.bind(("127.0.0.1", 0))
WEBHOOK_RECEIVER_PORT: int = _WEBHOOK_PORT_HELD.getsockname()[1]
S3_KEYS = {"s3_access_key": "test-access-key", "s3_secret_key": "test-secret-key"}
# Sweeps run often, and an unreferenced blob goes at the next one: tests see the
# collector and expiry act within their deadlines (the claim protocol, not a grace
# period, is what keeps stores in flight safe).
SWEEPS: dict[str, Any] = {
    "blob_gc_every_s": 0.2,
    "blob_gc_grace_s": 0,
    "upload_sweep_every_s": 0.2,
    # A webhook's failed delivery is tried again at once, not after seconds.
    "webhook_retry_base_s": 0.2,
    "webhook_poll_s": 0.1,
    # A restore of two files or more takes the large restore's path (search indexes
    # merged after the answer), one file the usual path: tests see both.
    "restore_defer_gin_from": 2,
    # A client that stalls mid-request is cut off within a test's deadline.
    "http_headers_timeout_s": 5.0,
    "http_body_idle_s": 10.0,
}


def _start_stack(settings: Settings) -> Iterator[Stack]:
    running = Stack(settings, durable=False)
    try:
        # Generous: on a machine shared with other suites, consumers take a while to join.
        running.start(timeout=240)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    kafka_bootstrap: str,
    s3_endpoint: str,
) -> Iterator[Stack]:
    """The platform, its blobs in S3 (moto), as in production."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("stack"),
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        http_port=free_port(),
        bootstrap_admin_key=ADMIN_KEY,
        service_key=SERVICE_KEY,
        blob_url=f"s3://files-e2e?endpoint={s3_endpoint}&region=us-east-1",
        # Every process's finished spans, for tests/e2e/test_tracing.py.
        trace_file=str(tmp_path_factory.mktemp("traces") / "spans.jsonl"),
        # The customers' buckets of the tests (moto, fakes) are on loopback.
        allowed_endpoints="127.0.0.1",
        webhook_allowed_endpoints=f"127.0.0.1:{WEBHOOK_RECEIVER_PORT}",
        **S3_KEYS,
        **SWEEPS,
    )
    for running in _start_stack(settings):
        _S3_PLATFORM["stack"] = running
        yield running


def _create_database(url: str, name: str) -> str:
    async def create() -> None:
        conn = await db.connect(url)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    # In a thread of its own: the tests' event loop may be running in this one.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, create()).result()
    return url.rsplit("/", 1)[0] + "/" + name


@contextlib.asynccontextmanager
async def fresh_database(database_url: str, prefix: str) -> AsyncIterator[Any]:
    """A pool on a database of its own (on the session's PostgreSQL), dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await db.connect(database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        pool = await db.connect_pool(database_url.rsplit("/", 1)[0] + "/" + name, max_size=4)
        try:
            yield pool
        finally:
            await pool.close()
            await admin.execute(f"DROP DATABASE {name}")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Stack]:
    """A second platform, its blobs on local disk: its own database and broker, so the
    two never see each other's events. Started only when a test asks for it."""
    broker = start_broker()
    try:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("local-stack"),
            database_url=_create_database(database_url, "files_local_blobs"),
            kafka_bootstrap=broker.url,
            http_port=free_port(),
            bootstrap_admin_key=ADMIN_KEY,
            service_key=SERVICE_KEY,
            **SWEEPS,
        )
        yield from _start_stack(settings)
    finally:
        broker.stop()


@pytest.fixture
def blobs(request: pytest.FixtureRequest) -> str:
    """Which blob store the platform under test uses: "s3" unless parametrized."""
    return str(getattr(request, "param", "s3"))


@pytest.fixture
def platform(request: pytest.FixtureRequest, blobs: str) -> Stack:
    stack: Stack = request.getfixturevalue("local_stack" if blobs == "local" else "stack")
    return stack


@pytest.fixture
async def api(platform: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=platform.gateway_url,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    ) as client:
        yield client


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    """Wait on a condition with a deadline (never a bare sleep)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {within} s")
        await asyncio.sleep(POLL_S)  # poll again, within the deadline
