"""On S3 (moto's server) the DICOM context reads an instance's header from a ranged read of
its first bytes, not a copy of the whole blob, and every file ends as on a local store."""

from __future__ import annotations

import contextlib
import struct
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import urllib3
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from services.dicom import handlers, lean, reader
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


def _compressed(fragments: int, fragment_size: int, *, cut: int = 0) -> bytes:
    """A 512x512 slice as JPEG in `fragments` fragments (one frame), `cut` bytes cut off
    its end; its header settles within the first 16 KiB."""
    ds = ct_dataset(
        rows=512, columns=512, sop_uid=uid(43, fragments, cut), transfer_syntax=JPEGBaseline8Bit
    )
    frame = b"\xff\xd8" + b"\x01" * (fragments * fragment_size - 4) + b"\xff\xd9"
    ds.PixelData = encapsulate([frame], fragments_per_frame=fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = to_bytes(ds)
    return data[: len(data) - cut] if cut else data


def _lying(data: bytes, by: int) -> bytes:
    """`data` with its last fragment's item length `by` bytes longer than it is."""
    at = data.rindex(b"\xfe\xff\x00\xe0")
    (length,) = struct.unpack_from("<I", data, at + 4)
    return data[: at + 4] + struct.pack("<I", length + by) + data[at + 8 :]


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
        "jpeg": _compressed(4, 1_200_000),  # 4 reads of item headers: one a MiB
        "jpeg-one": _compressed(1, 400_000),  # one read, the delimiter's
        "jpeg-many": _compressed(4, 100_000),  # more than one read a MiB: read whole
        "jpeg-cut": _compressed(1, 400_000, cut=50_000),
        "jpeg-lying": _lying(_compressed(1, 400_000), 1),  # the delimiter missed
        "jpeg-past-end": _lying(_compressed(1, 400_000), 10**9),
        "jpeg-no-end": _compressed(1, 400_000, cut=8),  # no sequence delimiter
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
        "dicom/jpeg": None,
        "dicom/jpeg-one": None,
        "dicom/jpeg-many": None,
        "dicom/jpeg-cut": "truncated",
        "dicom/jpeg-lying": "malformed_dicom",
        "dicom/jpeg-past-end": "truncated",
        "dicom/jpeg-no-end": "truncated",
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
    # A compressed one by its prefix and an 8-byte item header a fragment past it (and
    # the delimiter's), not its 0.4 MB of fragments; the small one is in its prefix.
    assert s3.fetched["dicom/compressed"] == len(files["compressed"])
    assert s3.fetched["dicom/jpeg"] == lean.FIRST_BYTES + 4 * 8
    assert s3.fetched["dicom/jpeg-one"] == lean.FIRST_BYTES + 8
    assert reader.fragment_reads(len(files["jpeg-many"])) == 1
    # What that does not settle is read whole: more fragments than the bound, pydicom's
    # files, every rejection (whatever an item header says, as a local store's is).
    for name in (
        "jpeg-many",
        "longer-header",
        "truncated",
        "jpeg-cut",
        "jpeg-lying",
        "jpeg-past-end",
    ):
        assert s3.fetched[f"dicom/{name}"] >= len(files[name]), name


async def test_an_unreachable_s3_fails_the_batch(tmp_path: Path, s3_endpoint: str) -> None:
    """Not a rejection of the file: the batch is retried once S3 answers again."""
    away = _s3(Away, s3_endpoint, tmp_path)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        await handlers.read_all(away, ["dicom/one", "dicom/two"])
