"""Real parts for the tests: an embedded PostgreSQL, the tansu broker, and the whole stack.

One PostgreSQL and one broker serve the session; integration tests each take
a schema of their own, e2e tests share one running platform.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from shared.kit import db
from shared.kit.embedded import Child, free_port, start_broker, start_postgres
from shared.kit.settings import Settings
from shared.kit.stack import Stack

ADMIN_KEY = "files_test_admin_key_0123456789"
# How often `eventually` looks again, within its deadline.
POLL_S = 0.02


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
def stack(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, kafka_bootstrap: str
) -> Iterator[Stack]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("stack"),
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        http_port=free_port(),
        bootstrap_admin_key=ADMIN_KEY,
    )
    running = Stack(settings, durable=False)
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
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
