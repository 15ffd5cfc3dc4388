"""On S3 (moto's server) DICOMweb's reads and the viewer's slices fetch what they need of
an instance, never a whole copy first, and answer as on a local store: retrieval streams
the stored bytes, metadata reads headers, an uncompressed frame (raw or rendered) its
header and its own bytes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import struct
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.uid import RLELossless

from services.dicom import dicomweb, lean, slices
from shared.kit.blobs import LocalBlobStore
from shared.kit.errors import Refused
from tests.dicom_fixtures import ct_dataset, ct_slice, to_bytes, uid
from tests.integration.test_dicom_read_s3 import Counted, _s3

FRAME = 256 * 256 * 2


class Streamed(Counted):
    """Counted, and its streamed reads and whole copies told apart."""

    copies: Counter[str]

    async def stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        async for chunk in super().stream(key, start, end):
            self.fetched[key] += len(chunk)
            yield chunk

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        self.copies[key] += 1
        async with super().local_copy(key) as path:
            yield path


def _frames(count: int) -> bytes:
    ds = ct_dataset(
        rows=256,
        columns=256,
        sop_uid=uid(44, count),
        pixel_data=bytes((i * 13) % 251 for i in range(count * FRAME)),
    )
    ds.NumberOfFrames = count
    return to_bytes(ds)


def _rle() -> bytes:
    ds = ct_dataset(rows=64, columns=64, sop_uid=uid(45), pixel_data=bytes(64 * 64 * 2))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return to_bytes(ds)


def _lying(data: bytes) -> bytes:
    """`data` (explicit VR little endian) whose PixelData states 1 MB more than it has."""
    at = data.rindex(b"\xe0\x7f\x10\x00OW\x00\x00") + 8
    (length,) = struct.unpack_from("<I", data, at)
    return data[:at] + struct.pack("<I", length + 1_000_000) + data[at + 4 :]


FILES = {
    "plain": ct_slice(rows=512, columns=512, sop_uid=uid(46)),
    "frames": _frames(16),  # 2 MB: past slices.READ_WHOLE_UP_TO
    "rle": _rle(),
    "lying": _lying(ct_slice(rows=512, columns=512, sop_uid=uid(47))),
}


@pytest.fixture
async def stores(
    tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[tuple[Streamed, LocalBlobStore]]:
    s3 = _s3(Streamed, s3_endpoint, tmp_path)
    assert isinstance(s3, Streamed)
    local = LocalBlobStore(tmp_path / "blobs")
    await s3.start()
    try:
        for store in (s3, local):
            await store.put_many([(f"dicom/{name}", data) for name, data in FILES.items()])
        s3.fetched, s3.copies = Counter(), Counter()
        yield s3, local
    finally:
        await s3.close()


def _stored(*names: str) -> list[dicomweb.Stored]:
    return [
        dicomweb.Stored(name, f"dicom/{name}", len(FILES[name]), "1.2", "1.2.3") for name in names
    ]


async def _body(parts: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in parts])


async def test_retrieval_streams_each_instance_from_s3_as_stored(
    stores: tuple[Streamed, LocalBlobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3, local = stores
    # The 0.5 and 2 MB ones are streamed, the small one read with a group.
    monkeypatch.setattr(dicomweb, "SMALL_INSTANCE", 256 * 1024)
    wanted = _stored("plain", "frames", "rle")
    multipart = dicomweb.Multipart("application/dicom")
    on_s3 = await _body(dicomweb.instance_parts(s3, wanted, multipart, "/root"))
    on_disk = await _body(dicomweb.instance_parts(local, wanted, multipart, "/root"))
    assert on_s3 == on_disk
    assert all(FILES[name] in on_s3 for name in ("plain", "frames", "rle"))
    assert s3.copies == Counter()
    assert s3.fetched == Counter({i.blob_key: i.size for i in wanted})


async def test_metadata_on_s3_reads_headers_only(stores: tuple[Streamed, LocalBlobStore]) -> None:
    s3, local = stores
    wanted = _stored("plain", "frames", "rle")
    gate = asyncio.Semaphore(dicomweb.METADATA_PARALLEL)
    on_s3 = await _body(dicomweb.metadata(s3, wanted, gate))
    on_disk = await _body(dicomweb.metadata(local, wanted, gate))
    assert on_s3 == on_disk and b"00280010" in on_s3
    assert s3.copies == Counter()
    # Each header is within the first read of 16 KiB (the RLE file is smaller whole).
    assert s3.fetched == Counter({i.blob_key: min(i.size, lean.FIRST_BYTES) for i in wanted})


def _drawn_on_s3(s3: Streamed, name: str, frame: int) -> bytes | Refused:
    key = f"dicom/{name}"
    try:
        return slices.drawn_by_range(functools.partial(s3.read_at, key), len(FILES[name]), frame)
    except Refused as refused:
        return refused


def _drawn_here(local: LocalBlobStore, name: str, frame: int) -> bytes | Refused:
    try:
        return slices.drawn(local.path(f"dicom/{name}"), frame)
    except Refused as refused:
        return refused


@pytest.mark.parametrize(
    ("name", "frame", "most"),
    [
        ("plain", 0, len(FILES["plain"])),  # 0.5 MB: one read, whole
        ("frames", 2, lean.FIRST_BYTES + FRAME),
        ("frames", 16, lean.FIRST_BYTES),  # not there: 404 from the header alone
        ("rle", 0, len(FILES["rle"])),  # compressed: decoded whole
        ("lying", 0, 2 * len(FILES["lying"])),  # its header says more: read whole
    ],
)
async def test_a_frame_is_drawn_from_s3_by_its_header_and_its_own_bytes(
    stores: tuple[Streamed, LocalBlobStore], name: str, frame: int, most: int
) -> None:
    s3, local = stores
    on_s3 = await asyncio.to_thread(_drawn_on_s3, s3, name, frame)
    here = await asyncio.to_thread(_drawn_here, local, name, frame)
    if isinstance(here, Refused):
        assert isinstance(on_s3, Refused)
        assert (on_s3.status, on_s3.code, on_s3.message) == (here.status, here.code, here.message)
    else:
        assert on_s3 == here and here.startswith(b"\x89PNG")
    assert s3.fetched[f"dicom/{name}"] <= most
    if name == "frames":  # a frame of 16: not the instance's 2 MB
        assert s3.fetched[f"dicom/{name}"] < len(FILES[name]) // 2
    assert s3.copies == Counter()


async def test_raw_frames_on_s3_are_read_alone(stores: tuple[Streamed, LocalBlobStore]) -> None:
    s3, local = stores

    def on_s3(numbers: list[int]) -> list[tuple[str, bytes]] | None:
        return dicomweb.native_frames(dicomweb.opened(s3, "dicom/frames"), numbers, 2 * FRAME)

    found = await asyncio.to_thread(on_s3, [3, 1])
    assert found == dicomweb.frames(local.path("dicom/frames"), [3, 1], 2 * FRAME)
    assert s3.fetched["dicom/frames"] <= lean.FIRST_BYTES + 2 * FRAME
    with pytest.raises(Refused) as refused:
        await asyncio.to_thread(on_s3, [17])
    assert refused.value.code == "frame_not_found"
    # Past the bound, nothing is read of their pixels: a 413 naming it.
    fetched = s3.fetched["dicom/frames"]
    with pytest.raises(Refused) as refused:
        await asyncio.to_thread(on_s3, [1, 2, 3])
    assert (refused.value.status, refused.value.code) == (413, "frames_too_large")
    assert s3.fetched["dicom/frames"] - fetched <= lean.FIRST_BYTES
    with pytest.raises(Refused) as refused:
        dicomweb.frames(local.path("dicom/frames"), [1, 2, 3], 2 * FRAME)
    assert (refused.value.status, refused.value.code) == (413, "frames_too_large")
    # Compressed or lying: the whole instance is read by `frames`, as before.
    for name in ("rle", "lying"):
        assert (
            await asyncio.to_thread(
                dicomweb.native_frames, dicomweb.opened(s3, f"dicom/{name}"), [1], 2 * FRAME
            )
            is None
        )
    rle = await asyncio.to_thread(dicomweb.frames, local.path("dicom/rle"), [1], 2 * FRAME)
    with pytest.raises(Refused) as refused:
        dicomweb.frames(local.path("dicom/rle"), [1], len(rle[0][1]) - 1)
    assert (refused.value.status, refused.value.code) == (413, "frames_too_large")
