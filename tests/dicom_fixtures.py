"""Real DICOM files built with pydicom, for the unit, fuzz and end-to-end tests (and bench).

`ct_slice` makes one CT image (small 16-bit pixel data) as bytes in the DICOM File Format;
`ct_series` the slices of one series, positioned along the normal of their orientation.
Every tag can be left out (`omit`) or replaced (`overrides`, keyword -> value, or an
`(VR, value)` pair to write it with another VR).
"""

from __future__ import annotations

import io
import itertools
import math
import struct
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
)

ROOT = "1.2.826.0.1.3680043.8.498.77"  # UIDs below pydicom's root, made up for the tests
AXIAL: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _rotated(x_degrees: float, z_degrees: float) -> tuple[float, ...]:
    """AXIAL turned about x, then about z: orthonormal row and column, an oblique normal."""
    a, b = math.radians(x_degrees), math.radians(z_degrees)
    row = (math.cos(b), math.sin(b), 0.0)
    column = (-math.sin(b) * math.cos(a), math.cos(b) * math.cos(a), math.sin(a))
    return tuple(round(v, 12) for v in (*row, *column))


OBLIQUE = _rotated(30, 20)


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A real (grey, 8-bit) PNG: not DICOM."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">L", len(data)) + body + struct.pack(">L", zlib.crc32(body))

    header = struct.pack(">LLBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = b"".join(b"\0" + bytes(range(width)) for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixels))
        + chunk(b"IEND", b"")
    )


_counter = itertools.count(1)


def uid(*parts: int | str) -> str:
    """A UID below ROOT: uid(1, 2) -> ROOT.1.2; uid() a fresh one."""
    if not parts:
        parts = (9, next(_counter))
    return ".".join([ROOT, *(str(p) for p in parts)])


def cross(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    return (
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    )


def ct_dataset(
    *,
    sop_uid: str | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_id: str = "PAT-0001",
    rows: int = 8,
    columns: int = 8,
    modality: str = "CT",
    position: Sequence[float] = (-100.0, -100.0, 0.0),
    orientation: Sequence[float] = AXIAL,
    slice_thickness: float = 1.25,
    pixel_spacing: Sequence[float] = (0.5, 0.5),
    instance_number: int = 1,
    omit: Iterable[str] = (),
    overrides: Mapping[str, Any] | None = None,
    pixel_data: bytes | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> FileDataset:
    """One CT image with every tag this product reads, as a pydicom FileDataset."""
    sop_uid = sop_uid or uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or uid(1)
    ds.SeriesInstanceUID = series_uid or uid(1, 1)
    ds.Modality = modality
    ds.PatientName = "Test^Patient"
    ds.PatientID = patient_id
    ds.InstanceNumber = instance_number
    ds.SliceThickness = _ds(slice_thickness)
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in orientation]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if pixel_data is None:
        pixel_data = bytes((i * 7 + instance_number) % 256 for i in range(rows * columns * 2))
    ds.PixelData = pixel_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the invalid values asked for
        for keyword, value in (overrides or {}).items():
            if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
                tag = tag_for_keyword(keyword)
                assert tag is not None, keyword
                ds[tag] = DataElement(tag, value[0], value[1])
            else:
                setattr(ds, keyword, value)
    for keyword in omit:
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """The dataset in the DICOM File Format (preamble, "DICM", file meta, dataset)."""
    out = io.BytesIO()
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcmwrite(
            out,
            ds,
            implicit_vr=syntax.is_implicit_VR,
            little_endian=syntax.is_little_endian,
            enforce_file_format=True,
        )
    return out.getvalue()


def ct_slice(**fields: Any) -> bytes:
    """One CT image as bytes; see ct_dataset for the fields."""
    return to_bytes(ct_dataset(**fields))


def slice_positions(
    count: int,
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (-100.0, -100.0, -50.0),
    spacing: float = 1.25,
) -> list[tuple[float, float, float]]:
    """Positions of `count` slices `spacing` mm apart along the orientation's normal."""
    normal = cross(orientation[:3], orientation[3:])
    return [
        (
            round(origin[0] + k * spacing * normal[0], 6),
            round(origin[1] + k * spacing * normal[1], 6),
            round(origin[2] + k * spacing * normal[2], 6),
        )
        for k in range(count)
    ]


def ct_series(
    count: int,
    *,
    series: int = 1,
    study: int = 1,
    patient_id: str = "PAT-0001",
    orientation: Sequence[float] = AXIAL,
    rows: int = 8,
    columns: int = 8,
    omit: Iterable[str] = (),
    **fields: Any,
) -> list[bytes]:
    """The `count` slices of one series, in slice order (slice k is SOP uid ...series.k+1).

    Instance numbers run the other way (count .. 1) on purpose, so that an order by
    InstanceNumber and an order by position differ.
    """
    omit = tuple(omit)
    return [
        ct_slice(
            sop_uid=uid(study, series, k + 1),
            series_uid=uid(study, series),
            study_uid=uid(study),
            patient_id=patient_id,
            position=position,
            orientation=orientation,
            instance_number=count - k,
            rows=rows,
            columns=columns,
            omit=omit,
            **fields,
        )
        for k, position in enumerate(slice_positions(count, orientation))
    ]


def _ds(value: float) -> str:
    # DS values as text of at most 16 characters, as scanners write them.
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.8g}"
