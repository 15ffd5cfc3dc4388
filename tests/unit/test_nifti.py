"""NIfTI volumes (.nii, .nii.gz): sniffed from their header, their shape, voxel size and
data type read from it alone; hostile headers lose facts, never the upload."""

from __future__ import annotations

import gzip
import zlib

import nibabel as nib
import numpy as np
import pytest

from services.ingest.media.facts import Facts, inspect
from services.ingest.media.kinds import UnknownContent, sniff
from shared.contracts.catalog import Media
from tests.unit.test_media import SparseFile, inspect_bytes


def nifti(
    shape: tuple[int, ...] = (4, 5, 6),
    zooms: tuple[float, ...] = (1.0, 1.5, 2.0),
    dtype: type = np.int16,
    two: bool = False,
) -> bytes:
    kind = nib.Nifti2Image if two else nib.Nifti1Image
    image = kind(np.zeros(shape, dtype=dtype), np.eye(4))
    image.header.set_zooms(zooms)
    return bytes(image.to_bytes())


VOLUME = Media(dims=(4, 5, 6), voxel_size=(1.0, 1.5, 2.0), datatype="int16")


def test_a_nii_is_sniffed_and_its_header_read() -> None:
    assert inspect_bytes(nifti()) == Facts("nifti", "application/x-nifti", VOLUME)


def test_a_nifti_2_volume_and_a_4d_float_one() -> None:
    facts = inspect_bytes(nifti((3, 3, 3, 2), (0.5, 0.5, 0.5, 2.0), np.float32, two=True))
    assert facts == Facts(
        "nifti",
        "application/x-nifti",
        Media(dims=(3, 3, 3, 2), voxel_size=(0.5, 0.5, 0.5, 2.0), datatype="float32"),
    )


def test_a_nii_gz_is_read_from_its_first_inflated_bytes() -> None:
    packed = gzip.compress(nifti())
    assert inspect_bytes(packed) == Facts("nifti", "application/gzip", VOLUME)


def test_a_large_gzipped_volume_is_not_inflated_whole() -> None:
    # 64 MiB of voxels, inflated from a few hundred KiB: only its header is read.
    data = gzip.compress(nifti((512, 512, 128), (1.0, 1.0, 1.0), np.int16), compresslevel=1)
    file = SparseFile(len(data), {0: data})
    facts = inspect(file.read_at, file.size)
    assert facts.media.dims == (512, 512, 128)
    assert file.calls <= 4


def test_gzip_that_is_not_a_volume_is_refused() -> None:
    with pytest.raises(UnknownContent):
        sniff(gzip.compress(b"hello " * 100))
    with pytest.raises(UnknownContent):
        sniff(b"\x1f\x8b" + bytes(100))  # gzip's magic, then garbage


def test_a_gzip_bomb_is_inflated_only_as_far_as_a_header() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(nifti()[:352]) + bomb.compress(bytes(50 * 1024 * 1024)) + bomb.flush()
    assert inspect_bytes(data).kind == "nifti"


def test_a_hostile_header_loses_its_facts_not_the_file() -> None:
    raw = bytearray(nifti())
    raw[40:56] = (7).to_bytes(2, "little") + b"\xff\xff" * 7  # dims of -1
    raw[70:72] = (9999).to_bytes(2, "little")  # no such datatype
    raw[76:108] = np.array([3] + [float("nan")] * 7, dtype="<f4").tobytes()
    facts = inspect_bytes(bytes(raw))
    assert facts.kind == "nifti"
    assert facts.media.dims is None
    assert facts.media.voxel_size is None
    assert facts.media.datatype is None
    truncated = inspect_bytes(nifti()[:360])
    assert truncated.media == VOLUME  # the header is all that is read


def test_a_header_cut_short_is_not_a_volume() -> None:
    with pytest.raises(UnknownContent):
        sniff(nifti()[:300])
