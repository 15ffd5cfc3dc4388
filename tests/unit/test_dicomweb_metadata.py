"""A WADO-RS metadata answer's instance headers (services/dicom/dicomweb.py `header_json`):
a sequence of more items and elements than an answer converts (`MAX_SEQUENCE_PARTS`) is
left out, fast, as an element over INLINE_LIMIT is; the rest of the header is there."""

from __future__ import annotations

import io
import struct
import time

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from services.dicom import dicomweb

CT = "1.2.840.10008.5.1.4.1.1.2"
PRIVATE = "00091010"
# A CT slice's per-frame-like sequence: kept.
REFERENCED = "00081140"


def ct_slice(items: int, *, syntax: str = ExplicitVRLittleEndian, undefined: bool = False) -> bytes:
    """A valid CT slice with a private sequence of `items` empty items (written as bytes:
    pydicom takes seconds to write that many), and a small public one of two items."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    referenced = []
    for _ in range(2):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CT, generate_uid()
        referenced.append(item)
    ds.ReferencedImageSequence = Sequence(referenced)
    ds.add_new(0x00090010, "LO", "ACME")
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\0" * 8
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    data = out.getvalue()
    # After the private creator's element, (0009,1010) in the same encoding.
    explicit = syntax == ExplicitVRLittleEndian
    creator = (
        b"\x09\x00\x10\x00LO\x04\x00" if explicit else b"\x09\x00\x10\x00\x04\0\0\0"
    ) + b"ACME"
    at = data.index(creator) + len(creator)
    if undefined:
        value = (b"\xfe\xff\x00\xe0\xff\xff\xff\xff\xfe\xff\x0d\xe0\0\0\0\0") * items
        value += b"\xfe\xff\xdd\xe0\0\0\0\0"
        length = 0xFFFFFFFF
    else:
        value = b"\xfe\xff\x00\xe0\0\0\0\0" * items
        length = len(value)
    head = b"\x09\x00\x10\x10" + (b"SQ\0\0" if explicit else b"")
    return data[:at] + head + struct.pack("<L", length) + value + data[at:]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_sequence_of_too_many_items_is_left_out_fast(syntax: str) -> None:
    # Found by audit7: 300,000 empty items (2.3 MB) took 12 s of CPU and 240 MB.
    data = ct_slice(300_000, syntax=syntax)
    began = time.process_time()
    header = dicomweb.header_json(io.BytesIO(data))
    spent = time.process_time() - began
    assert spent < 1.0, f"{spent:.2f} s of CPU"
    assert PRIVATE not in header
    assert len(header[REFERENCED]["Value"]) == 2
    assert header["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert header["00280010"] == {"vr": "US", "Value": [2]}


def test_sequences_within_the_bound_are_kept_whole() -> None:
    header = dicomweb.header_json(io.BytesIO(ct_slice(1_000)))
    assert len(header[PRIVATE]["Value"]) == 1_000
    assert len(header[REFERENCED]["Value"]) == 2


def test_the_bound_is_one_for_the_whole_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many sequences each under it take no more than it all together: the one that
    would go past it is left out, and those before it kept."""
    monkeypatch.setattr(dicomweb, "MAX_SEQUENCE_PARTS", 1_500)
    header = dicomweb.header_json(io.BytesIO(ct_slice(1_000)))
    assert len(header[REFERENCED]["Value"]) == 2  # (0008,1140) comes first
    assert PRIVATE in header
    monkeypatch.setattr(dicomweb, "MAX_SEQUENCE_PARTS", 1_000)
    header = dicomweb.header_json(io.BytesIO(ct_slice(1_000)))
    assert PRIVATE not in header and REFERENCED in header


def test_a_sequence_of_undefined_length_is_counted_as_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pydicom parses one of undefined length as it reads the file (the ingest's reader
    gave that read its time bound): past the bound, it is not converted for the answer."""
    monkeypatch.setattr(dicomweb, "MAX_SEQUENCE_PARTS", 1_000)
    header = dicomweb.header_json(io.BytesIO(ct_slice(2_000, undefined=True)))
    assert PRIVATE not in header and len(header[REFERENCED]["Value"]) == 2
    header = dicomweb.header_json(io.BytesIO(ct_slice(100, undefined=True)))
    assert len(header[PRIVATE]["Value"]) == 100
