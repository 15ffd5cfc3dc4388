"""On S3 (moto's server) the DICOM context reads an instance's header from a ranged read of
its first bytes, not a copy of the whole blob, and every file ends as on a local store."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import urllib3

from services.dicom import handlers, lean
from services.dicom.domain import Instance, Rejected
from shared.kit.blobs import LocalBlobStore, S3BlobStore
from shared.kit.blobs.s3 import parse_url
from tests.dicom_fixtures import ct_dataset, ct_slice, to_bytes, uid
from tests.unit.test_dicom_fuzz import BASES


class Counted(S3BlobStore):
    """An S3 store that counts the bytes fetched of each blob, however they are read."""

    fetched: Counter[str]

    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        data, size = super().read_head(key, length)
        self.fetched[key] += len(data)
        return data, size

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        data = super().read_at(key, offset, length)
        self.fetched[key] += len(data)
        return data

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        async with super().local_copy(key) as path:
            self.fetched[key] += path.stat().st_size
            yield path


class Away(S3BlobStore):
    """An S3 store that cannot be reached (as minio fails once its retries are spent)."""

    def _away(self) -> urllib3.exceptions.MaxRetryError:
        return urllib3.exceptions.MaxRetryError(None, "/", "Connection refused")  # type: ignore[arg-type]

    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        raise self._away()

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        raise self._away()

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        raise self._away()
        yield Path()


def _s3(kind: type[S3BlobStore], endpoint: str, tmp_path: Path) -> S3BlobStore:
    location = parse_url(f"s3://dicom-{uuid.uuid4().hex[:12]}?endpoint={endpoint}&region=us-east-1")
    return kind(location, tmp_path / "spool", "test-access-key", "test-secret-key")


def _header_of(size: int) -> bytes:
    """A 512x512 slice whose header is `size` bytes longer (a vendor's private block)."""
    ds = ct_dataset(rows=512, columns=512, sop_uid=uid(42, size))
    ds.add_new(0x00090010, "LO", "FILES TEST")
    ds.add_new(0x00091001, "OB", b"\x01" * size)
    return to_bytes(ds)


async def test_s3_reads_a_slice_by_its_prefix_and_every_file_as_a_local_store_does(
    tmp_path: Path, s3_endpoint: str
) -> None:
    plain = ct_slice(rows=512, columns=512, sop_uid=uid(42, 1))
    files = {
        "plain": plain,
        "compressed": BASES["encapsulated"],
        "long-header": _header_of(20_000),  # past the first 16 KiB
        "longer-header": _header_of(100_000),  # past the 64 KiB prefix: pydicom's
        "truncated": plain[:-1000],
        "fragments-cut": BASES["encapsulated"][:-12],
        "no-pixels": plain[: plain.index(b"\xe0\x7f\x10\x00")],
        "not-dicom": b"not dicom at all",
        "empty": b"",
    }
    keys = [f"dicom/{name}" for name in files] + ["dicom/absent", "dicom/bad key"]
    s3 = _s3(Counted, s3_endpoint, tmp_path)
    assert isinstance(s3, Counted)
    local = LocalBlobStore(tmp_path / "blobs")
    await s3.start()
    try:
        for store in (s3, local):
            await store.put_many([(f"dicom/{name}", data) for name, data in files.items()])
        s3.fetched = Counter()

        on_s3 = await handlers.read_all(s3, keys)
        on_disk = await handlers.read_all(local, keys)
    finally:
        await s3.close()

    assert on_s3 == on_disk
    codes = {
        key: found.code if isinstance(found, Rejected) else None
        for key, found in zip(keys, on_s3, strict=True)
    }
    assert codes == {
        "dicom/plain": None,
        "dicom/compressed": None,
        "dicom/long-header": None,
        "dicom/longer-header": None,
        "dicom/truncated": "truncated",
        "dicom/fragments-cut": "truncated",
        "dicom/no-pixels": "missing_tags",
        "dicom/not-dicom": "not_dicom",
        "dicom/empty": "not_dicom",
        "dicom/absent": "unreadable",
        "dicom/bad key": "unreadable",
    }
    for found, same in zip(on_s3, on_disk, strict=True):
        if isinstance(found, Instance):
            assert isinstance(same, Instance) and found.listed == same.listed
        else:
            assert found.message == same.message and found.details == same.details

    # A 0.5 MB slice is fetched as far as its header needs: its first 16 KiB (or 64 KiB
    # for a longer header), not its whole body.
    assert s3.fetched["dicom/plain"] == lean.FIRST_BYTES
    assert s3.fetched["dicom/long-header"] == lean.PREFIX_BYTES
    # What the prefix does not settle is read whole: fragments, pydicom's, rejections.
    for name in ("compressed", "longer-header", "truncated"):
        assert s3.fetched[f"dicom/{name}"] >= len(files[name]), name


async def test_an_unreachable_s3_fails_the_batch(tmp_path: Path, s3_endpoint: str) -> None:
    """Not a rejection of the file: the batch is retried once S3 answers again."""
    away = _s3(Away, s3_endpoint, tmp_path)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        await handlers.read_all(away, ["dicom/one", "dicom/two"])
