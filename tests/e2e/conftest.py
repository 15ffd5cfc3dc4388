from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from minio import Minio

from tests.cloud_fixtures import MotoS3, start_moto

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


# A customer's bucket for the modules on cloud integrations: moto's S3 server, a process
# of each module's own, checking signatures when asked.
BUCKET = "customer-e2e"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    server = start_moto(tmp_path_factory.mktemp("customer") / "moto.log")
    try:
        s3 = server.minio()
        s3.make_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(moto: MotoS3) -> Minio:
    moto.auth(False)
    return moto.minio()
