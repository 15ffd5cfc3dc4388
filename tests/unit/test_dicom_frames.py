"""DICOMweb's frames of an instance read from its file (services/dicom/dicomweb.py
`frames`): the header parsed, the frames read by themselves within the bound, told apart
as pydicom tells them apart when it parses the whole instance."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
)

from services.dicom import dicomweb
from shared.kit.errors import Refused
from tests.dicom_fixtures import ct_dataset, to_bytes

MIB = 1024 * 1024
JPEG_END = b"\xff\xd9"


def jpeg(n: int, size: int) -> bytes:
    return b"\xff\xd8" + bytes([n]) * size + JPEG_END


def instance(path: Path, frames: int, pixel_data: bytes, syntax: str, icon: bool = False) -> Path:
    ds = ct_dataset(
        rows=4,
        columns=4,
        transfer_syntax=syntax,
        pixel_data=pixel_data,
        overrides={"NumberOfFrames": frames},
    )
    if icon:  # a Pixel Data of its own before the instance's, in a sequence
        item = Dataset()
        item.Rows, item.Columns, item.BitsAllocated = 2, 2, 8
        item.PixelData = b"\x07" * 4
        ds.IconImageSequence = Sequence([item])
    path.write_bytes(to_bytes(ds))
    return path


LAYOUTS = {
    # A basic offset table; two fragments each frame.
    "offsets": (3, lambda: encapsulate([jpeg(n, 300) for n in (1, 2, 3)], 2, has_bot=True)),
    "one a frame": (3, lambda: encapsulate([jpeg(n, 30) for n in (1, 2, 3)], has_bot=False)),
    "one frame": (1, lambda: encapsulate([jpeg(1, 3000)], 5, has_bot=False)),
    # No table and more fragments than frames: each ends at a JPEG end marker.
    "markers": (2, lambda: encapsulate([jpeg(n, 300) for n in (1, 2)], 3, has_bot=False)),
    "rle": (2, lambda: encapsulate([b"\x01" * 40, b"\x02" * 40])),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("icon", [False, True])
def test_compressed_frames_are_told_apart_as_pydicom_does(
    tmp_path: Path, layout: str, icon: bool
) -> None:
    count, pixels = LAYOUTS[layout]
    syntax = RLELossless if layout == "rle" else JPEGBaseline8Bit
    path = instance(tmp_path / "i.dcm", count, pixels(), syntax, icon)
    asked = list(range(count, 0, -1))
    found = dicomweb.frames(path, asked, MIB)
    assert found == dicomweb._parsed_frames(pydicom.dcmread(path), asked, MIB)
    assert len({data for _, data in found}) == count


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_uncompressed_frames_are_read_alone(tmp_path: Path, syntax: str) -> None:
    pixels = b"".join(bytes([n]) * 32 for n in (1, 2, 3))
    path = instance(tmp_path / "i.dcm", 3, pixels, syntax, icon=True)
    assert dicomweb.frames(path, [3, 1], MIB) == dicomweb._parsed_frames(
        pydicom.dcmread(path), [3, 1], MIB
    )
    with pytest.raises(Refused) as refused:
        dicomweb.frames(path, [1, 2], 63)
    assert refused.value.code == "frames_too_large"


def test_a_frame_named_but_not_held_is_a_422(tmp_path: Path) -> None:
    path = instance(tmp_path / "i.dcm", 3, encapsulate([b"\0" * 40]), RLELossless)
    with pytest.raises(Refused) as refused:
        dicomweb.frames(path, [2], MIB)
    assert (refused.value.status, refused.value.code) == (422, "cannot_serve_frames")


def test_a_fragment_whose_length_runs_past_the_file_is_a_422(tmp_path: Path) -> None:
    path = instance(
        tmp_path / "i.dcm",
        2,
        encapsulate([jpeg(1, 30), jpeg(2, 30)], has_bot=False),
        JPEGBaseline8Bit,
    )
    data = bytearray(path.read_bytes())
    second = data.rfind(b"\xfe\xff\x00\xe0" + struct.pack("<I", 34))  # frame 2's item
    data[second + 4 : second + 8] = struct.pack("<I", 0x7FFFFFF0)
    path.write_bytes(bytes(data))
    with pytest.raises(Refused) as refused:  # was a 413 "ask for fewer": none could be had
        dicomweb.frames(path, [2], MIB)
    assert (refused.value.status, refused.value.code) == (422, "cannot_serve_frames")


def peak_of(path: Path, max_bytes: int) -> tuple[int, list[tuple[str, bytes]] | Refused]:
    tracemalloc.start()
    try:
        outcome: list[tuple[str, bytes]] | Refused = dicomweb.frames(path, [1], max_bytes)
    except Refused as refused:
        outcome = refused
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, outcome


def test_a_large_compressed_frame_takes_its_size_or_the_bound_not_three_times_it(
    tmp_path: Path,
) -> None:
    # One frame in 24 fragments of 1 MiB (audit8's was 300 MiB: 972 MiB at the peak).
    fragment = b"\xff" * MIB
    pixels = encapsulate([fragment * 24], fragments_per_frame=24)
    path = instance(tmp_path / "big.dcm", 1, pixels, JPEGBaseline8Bit)

    peak, refused = peak_of(path, 4 * MIB)
    assert isinstance(refused, Refused) and refused.status == 413
    assert refused.code == "frames_too_large" and str(4 * MIB) in refused.message
    assert peak < 5 * MIB  # nothing past the bound read

    peak, served = peak_of(path, 64 * MIB)
    assert isinstance(served, list) and len(served[0][1]) == 24 * MIB
    assert peak < 2.2 * 24 * MIB  # its fragments and their join, not the instance besides


def test_pixel_data_in_too_many_fragments_is_refused_not_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dicomweb, "MAX_FRAGMENTS", 4)
    held = instance(tmp_path / "4.dcm", 1, encapsulate([jpeg(1, 40)], 4), JPEGBaseline8Bit)
    assert len(dicomweb.frames(held, [1], MIB)[0][1]) == 44
    path = instance(tmp_path / "5.dcm", 1, encapsulate([jpeg(1, 40)], 5), JPEGBaseline8Bit)
    with pytest.raises(Refused, match="more than 4 fragments") as refused:
        dicomweb.frames(path, [1], MIB)
    assert (refused.value.status, refused.value.code) == (422, "cannot_serve_frames")
