"""The lean header walk gives what pydicom's reader gives, or leaves the file to pydicom.

`read_instance` tries `services.dicom.lean` first and reads with pydicom (`read_partial`)
whatever the walk does not take. Here every fixture, generated variant and mutated file is
read both ways: where the walk answers, its answer must equal pydicom's exactly.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import validate_value

from services.dicom import lean, reader, tags
from services.dicom.domain import Instance
from tests.dicom_fixtures import AXIAL, OBLIQUE, ct_dataset, ct_series, ct_slice, to_bytes
from tests.unit.test_dicom_fuzz import BASES, mutated

MAX = reader.MAX_HEADER_BYTES


def both(data: bytes, max_header_bytes: int = MAX) -> tuple[Instance | None, object]:
    walked = reader._read_lean(io.BytesIO(data), 5.0, max_header_bytes)
    with_pydicom = reader._read_with_pydicom(io.BytesIO(data), 5.0, max_header_bytes)
    return walked, with_pydicom


def agree(data: bytes, max_header_bytes: int = MAX) -> Instance | None:
    walked, with_pydicom = both(data, max_header_bytes)
    assert walked is None or walked == with_pydicom, (walked, with_pydicom)
    # The listed values (QIDO-RS's answers) are left out of an Instance's equality.
    assert walked is None or walked.listed == with_pydicom.listed, (walked, with_pydicom)  # type: ignore[attr-defined]
    # From the file's first bytes and its item headers (a blob in S3): the same instance,
    # for every file the walk takes (these have few fragments); None otherwise.
    head = from_head(data, max_header_bytes)
    assert (head is not None) == (walked is not None), (head, walked)
    assert head is None or (head == walked and head.listed == walked.listed), (head, walked)  # type: ignore[union-attr]
    return walked


def from_head(data: bytes, max_header_bytes: int = MAX) -> Instance | None:
    def read_at(offset: int, length: int) -> bytes:
        # Never further than the prefix, but for an item header past it.
        assert offset + length <= lean.PREFIX_BYTES or length == 8
        return data[offset : offset + length]

    return reader.read_head(
        data[: lean.FIRST_BYTES], len(data), read_at, max_header_bytes=max_header_bytes
    )


def _with_sequence(defined: bool, items_defined: bool = True, nested: bool = False) -> bytes:
    ds = ct_dataset()
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    if nested:
        inner = Dataset()
        inner.CodeValue = "T-D4000"
        inner.CodeMeaning = "Abdomen"
        item.AnatomicRegionSequence = Sequence([inner, Dataset()])
        item["AnatomicRegionSequence"].is_undefined_length = True
        inner.is_undefined_length_sequence_item = not items_defined
    item.is_undefined_length_sequence_item = not items_defined
    empty = Dataset()
    empty.is_undefined_length_sequence_item = not items_defined
    ds.ReferencedImageSequence = Sequence([item, empty])
    ds["ReferencedImageSequence"].is_undefined_length = not defined
    ds.ProcedureCodeSequence = Sequence([])
    ds["ProcedureCodeSequence"].is_undefined_length = True
    return to_bytes(ds)


UNDEFINED_SEQUENCES = _with_sequence(defined=False, items_defined=False, nested=True)


def _private_block(size: int) -> bytes:
    ds = ct_dataset()
    ds.add_new(0x00090010, "LO", "FILES TEST")
    ds.add_new(0x00091001, "OB", b"\x01" * size)
    return to_bytes(ds)


def variants() -> Iterator[tuple[str, bytes, bool]]:
    """(name, file, whether the lean walk must take it)."""
    yield "plain", ct_slice(), True
    yield "oblique", ct_slice(orientation=OBLIQUE, position=(10.5, -3.25, 7.0)), True
    yield "512", ct_slice(rows=512, columns=512), True
    yield "no 3d tags", ct_slice(omit=["ImagePositionPatient", "ImageOrientationPatient"]), True
    yield "no charset", ct_slice(omit=["SpecificCharacterSet"]), True
    yield "utf-8", ct_slice(overrides={"SpecificCharacterSet": "ISO_IR 192"}), True
    yield "latin-1 name", ct_slice(overrides={"PatientName": "Müller^Jürgen"}), True
    yield (
        "utf-8 id",
        ct_slice(overrides={"SpecificCharacterSet": "ISO_IR 192", "PatientID": "Jürgen-1"}),
        True,
    )
    yield "padded IS", ct_slice(overrides={"InstanceNumber": ("IS", " 12 ")}), True
    yield "UN thickness", ct_slice(overrides={"SliceThickness": ("UN", b"2.5 ")}), True
    # pydicom reads an unknown character set as its default (and logs a warning): so do we.
    yield "bad charset", ct_slice(overrides={"SpecificCharacterSet": "bogus"}), True
    yield "defined sequence", _with_sequence(defined=True), True
    yield "undefined sequence", _with_sequence(defined=False), True
    yield "undefined items", _with_sequence(defined=False, items_defined=False), True
    yield "nested, defined items", _with_sequence(defined=False, nested=True), True
    yield "nested, undefined items", UNDEFINED_SEQUENCES, True
    yield "private block", _private_block(1000), True
    yield "private block past the first read", _private_block(20_000), True
    yield (
        "listed",
        ct_slice(
            overrides={
                "StudyDate": "20240105",
                "StudyDescription": "Chest CT",
                "SeriesNumber": 3,
                "AccessionNumber": "A\x01B",
                "StudyID": ("SH", b"x" * 2000),
                "SeriesDescription": ("DA", b"Axial"),
            }
        ),
        True,
    )
    yield "encapsulated", BASES["encapsulated"], True
    yield "encapsulated, pixels cut", BASES["encapsulated"][:-12], False
    jpeg = BASES["encapsulated"]
    yield "syntax padded", jpeg.replace(b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.5 "), False
    # pydicom converts the syntax by its VR (FD: "wrong length" raised, malformed).
    yield "syntax as FD", ct_slice().replace(b"\x02\x00\x10\x00UI", b"\x02\x00\x10\x00FD"), False
    yield "syntax zero", jpeg.replace(b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.05"), False
    # The walk leaves these to pydicom.
    yield "large private block", _private_block(100_000), False
    yield "implicit", ct_slice(transfer_syntax=ImplicitVRLittleEndian), False
    yield "big endian", ct_slice(transfer_syntax=ExplicitVRBigEndian), False
    yield "deflated", ct_slice(transfer_syntax=DeflatedExplicitVRLittleEndian), False
    yield "no pixels", ct_slice()[: ct_slice().index(b"\xe0\x7f\x10\x00")], False
    yield "empty pixels", ct_slice(pixel_data=b""), False
    yield "missing tags", ct_slice(omit=["PatientID", "Rows"]), False
    yield "not dicom", ct_slice()[132:], False
    for keyword, value in [
        ("Rows", 0),
        ("Columns", ("LO", "512")),
        ("SOPInstanceUID", "1.2.abc"),
        ("PatientID", ("LO", "A\x01B")),
        ("ImagePositionPatient", ["1", "nan", "2"]),
        ("ImageOrientationPatient", ["0"] * 6),
        ("SliceThickness", ("DS", "1e999")),
        ("PixelSpacing", ("OB", b"\x01\x02")),
        ("InstanceNumber", ("IS", "1.5")),
    ]:
        yield f"invalid {keyword}", ct_slice(overrides={keyword: value}), False


@pytest.mark.parametrize(("name", "data", "taken"), list(variants()), ids=lambda v: str(v)[:20])
def test_the_lean_walk_agrees_with_pydicom(name: str, data: bytes, taken: bool) -> None:
    found = agree(data)
    assert (found is not None) == taken, name


def test_the_benchmarks_series_take_the_lean_walk() -> None:
    for pixels in (64, 512):
        for data in ct_series(3, orientation=AXIAL, rows=pixels, columns=pixels):
            assert agree(data) is not None


class _Counted(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        return data


def test_a_slice_is_read_as_far_as_its_header() -> None:
    """A 512x512 slice (~0.5 MB, a header of ~1 KiB) is read 16 KiB in, not 64 KiB (a
    2,000-slice upload read 131 MB for its headers); a longer header is read further."""
    for data, most in (
        (ct_slice(rows=512, columns=512), 16 * 1024),
        (_private_block(20_000), 64 * 1024),
        (_private_block(100_000), 64 * 1024 + 100_000 + 2_000),  # pydicom's, to its end
    ):
        stream = _Counted(data)
        assert isinstance(reader.read_instance(stream), Instance)
        assert stream.read_bytes <= most, (len(data), stream.read_bytes)


@pytest.mark.parametrize("name", ["explicit", "encapsulated", "sequences"])
def test_every_cut_of_a_file_agrees(name: str) -> None:
    data = UNDEFINED_SEQUENCES if name == "sequences" else BASES[name]
    for end in range(len(data) + 1):
        found = agree(data[:end])
        assert (found is not None) == (end == len(data)), end


def test_every_single_byte_overwrite_agrees() -> None:
    for name in ("explicit", "oblique", "encapsulated", "sequences"):
        base = UNDEFINED_SEQUENCES if name == "sequences" else BASES[name]
        for at in range(len(base)):
            for byte in (0xFF, 0x00, base[at] ^ 0x01):
                data = bytearray(base)
                data[at] = byte
                agree(bytes(data))


def test_lengths_past_the_end_agree() -> None:
    base = ct_slice()
    pixel = base.index(b"\xe0\x7f\x10\x00")
    available = len(base) - pixel - 12
    for length in (0, available + 1, len(base), 0xFFFFFFFE, 0xFFFFFFFF):
        data = base[: pixel + 8] + struct.pack("<L", length) + base[pixel + 12 :]
        assert agree(data) is None, length
    assert agree(base[: pixel + 8] + struct.pack("<L", available) + base[pixel + 12 :])


def test_the_header_budget_agrees() -> None:
    data = ct_slice()
    pixel_value_at = data.index(b"\xe0\x7f\x10\x00") + 12
    assert agree(data, pixel_value_at) is not None
    assert agree(data, pixel_value_at - 1) is None
    assert both(data, pixel_value_at - 1)[1].code == "header_too_large"  # type: ignore[attr-defined]


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_files_agree(data: bytes) -> None:
    agree(data)


@pytest.mark.parametrize("vr", ["UI", "DS"])
def test_the_quick_value_check_takes_what_pydicom_takes(vr: str) -> None:
    texts = [
        "",
        " ",
        "0",
        "00",
        "1.2.3",
        "1.02.3",
        "1..2",
        "1.2.",
        ".1",
        "1.2\n",
        "1.2 ",
        " 1.2",
        "1" * 64,
        "1" * 65,
        "1." * 32 + "1",
        "1.2.840.10008.5.1.4.1.1.2",
        "1e5",
        "-1.5",
        "+.5",
        "1.",
        " 12.5 ",
        "1e+999",
        "nan",
        "inf",
        "1_0",
        "0x10",
        "\u0661",  # an Arabic-Indic digit: \d takes it, as float() does
        "1.5e-3",
        "9" * 16,
        "9" * 17,
        "-0",
        "1.2\n3",
        "\n",
    ]
    for text in texts:
        try:
            validate_value(vr, text, config.RAISE)
            valid = True
        except ValueError:
            valid = False
        assert tags._accepted(vr, text) == valid, repr(text)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.tuples(st.integers(132, 1200), st.binary(min_size=1, max_size=12)), max_size=4))
def test_sequences_overwritten_agree(chunks: list[tuple[int, bytes]]) -> None:
    data = bytearray(UNDEFINED_SEQUENCES)
    for at, chunk in chunks:
        data[at : at + len(chunk)] = chunk
    agree(bytes(data))
