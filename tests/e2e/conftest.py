from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

# The modules whose tests move bytes through the blob store run on both adapters: the
# session's platform (S3, through moto) and a second one with its blobs on local disk.
BOTH_BLOB_STORES = (
    "tests.e2e.test_files",
    "tests.e2e.test_dicom",
    "tests.e2e.test_sessions",
    "tests.e2e.test_blob_collector",
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__ in BOTH_BLOB_STORES and "api" in metafunc.fixturenames:
        metafunc.parametrize("blobs", ["s3", "local"], indirect=True)


@pytest.fixture
async def as_key(platform: Any) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """Clients of the platform under test that call with another API key."""
    clients: list[httpx.AsyncClient] = []

    def make(key: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            base_url=platform.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
