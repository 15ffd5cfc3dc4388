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
