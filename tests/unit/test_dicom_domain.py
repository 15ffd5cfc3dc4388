"""The DICOM context's pure rules on real DICOM bytes built with pydicom (tests/dicom_fixtures)."""

from __future__ import annotations

import io
import random
import struct
import time
import tracemalloc
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from services.dicom.domain import (
    REQUIRED_TAGS,
    TAGS_3D,
    Instance,
    Rejected,
    Series,
    admit,
    assemble,
    emptied,
    merge,
    order,
    slice_key,
    slice_normal,
    uid_order,
    without,
)
from services.dicom.handlers import Dicom, Part
from services.dicom.projections import _EMPTY as _EMPTY_DIRECTION
from services.dicom.reader import read_instance
from shared.contracts import dicom as ev
from shared.contracts.envelope import Cause, new_envelope
from shared.contracts.ingest import DicomInstanceStored
from tests.dicom_fixtures import (
    AXIAL,
    OBLIQUE,
    ct_dataset,
    ct_series,
    ct_slice,
    png_bytes,
    slice_positions,
    to_bytes,
    uid,
)


def instance(data: bytes) -> Instance:
    found = read_instance(data)
    assert isinstance(found, Instance), found
    return found


def rejected(data: bytes) -> Rejected:
    found = read_instance(data)
    assert isinstance(found, Rejected), found
    assert found.message
    return found


def shuffled(items: list[Instance], seed: int = 5) -> list[Instance]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


# --- read_instance: good files ----------------------------------------------------------------


def test_a_ct_slice_gives_every_fact_it_carries() -> None:
    found = instance(
        ct_slice(
            sop_uid=uid(1, 1, 7),
            series_uid=uid(1, 1),
            study_uid=uid(1),
            patient_id="PAT-42",
            rows=16,
            columns=12,
            position=(-120.5, -99.25, 33.0),
            slice_thickness=2.5,
            pixel_spacing=(0.7, 0.8),
            instance_number=7,
        )
    )
    assert found == Instance(
        sop_uid=uid(1, 1, 7),
        series_uid=uid(1, 1),
        study_uid=uid(1),
        patient_id="PAT-42",
        rows=16,
        columns=12,
        modality="CT",
        position=(-120.5, -99.25, 33.0),
        orientation=AXIAL,
        slice_thickness=2.5,
        pixel_spacing=(0.7, 0.8),
        instance_number=7,
    )
    assert found.missing_3d_tags == ()


def test_what_a_study_list_shows_is_kept_and_a_bad_value_only_left_out() -> None:
    found = instance(
        ct_slice(
            overrides={
                "PatientName": "Müller^Jürgen",  # ISO_IR 100, the fixtures' character set
                "StudyDate": "20240105",
                "StudyDescription": "Chest CT",
                "SeriesNumber": 3,
                "AccessionNumber": "A\x01B",  # a control character
                "StudyID": ("SH", b"x" * 2000),  # longer than any value is read
                "SeriesDescription": ("DA", b"Axial"),  # a VR the dictionary does not give
            }
        )
    )
    assert found.listed == {
        "PatientName": "Müller^Jürgen",
        "StudyDate": "20240105",
        "StudyDescription": "Chest CT",
        "SeriesNumber": "3",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
    }


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian], ids=["implicit", "big-endian"]
)
def test_other_uncompressed_transfer_syntaxes_read_the_same(syntax: str) -> None:
    data = ct_slice(sop_uid=uid(1, 1, 1), transfer_syntax=syntax)
    assert instance(data) == instance(ct_slice(sop_uid=uid(1, 1, 1)))


def test_encapsulated_pixel_data_is_walked_not_decoded() -> None:
    ds = ct_dataset(transfer_syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([b"\xff\xd8 not really a jpeg \xff\xd9", b"\xff\xd8 two \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = to_bytes(ds)
    assert instance(data).sop_uid == ds.SOPInstanceUID
    for cut in (8, 20, 40):
        found = rejected(data[:-cut])
        assert found.code == "truncated", found
        assert "encapsulated Pixel Data" in found.message


def test_encapsulated_pixel_data_without_items_is_malformed() -> None:
    ds = ct_dataset(transfer_syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([b"\xff\xd8 one \xff\xd9"] * 3)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = to_bytes(ds)
    first_item = data.index(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    broken = data[:first_item] + b"\x08\x00\x05\x00" + data[first_item + 4 :]
    found = rejected(broken)
    assert found.code == "malformed_dicom"
    assert "no item" in found.message
    # The sequence delimiter's length, cut: still truncated.
    assert instance(data).sop_uid == ds.SOPInstanceUID
    for cut in range(1, 9):
        assert rejected(data[:-cut]).code == "truncated", cut


def many_fragments(count: int) -> bytes:
    """An encapsulated image of `count` empty fragments: cheap to store, long to walk."""
    ds = ct_dataset(transfer_syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([b"\x00\x00"])  # replaced below
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = to_bytes(ds)
    at = data.index(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    items = struct.pack("<HHL", 0xFFFE, 0xE000, 0) * count
    return data[:at] + items + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def test_a_file_that_takes_too_long_to_read_is_refused() -> None:
    data = many_fragments(200_000)  # 1.6 MB of item headers to walk
    found = read_instance(data, max_seconds=0.01)
    assert isinstance(found, Rejected), found
    assert found.code == "read_too_slow"
    assert found.details == {"max_seconds": 0.01}
    assert "0.01 s" in found.message
    # Within the default budget it is read (and fast enough for it).
    assert isinstance(read_instance(many_fragments(1_000)), Instance)


def test_the_time_cap_is_one_for_a_file_read_both_ways() -> None:
    """The lean walk gives up on a file it cannot finish and pydicom reads it again: the
    two share the file's one cap (they did not: a hostile file took twice as long)."""
    data = many_fragments(6_000_000)  # 48 MB of item headers: more than 0.4 s to walk
    began = time.monotonic()
    found = read_instance(data, max_seconds=0.4)
    took = time.monotonic() - began
    assert isinstance(found, Rejected), found
    assert found.code == "read_too_slow"
    assert found.details == {"max_seconds": 0.4}
    # Twice the cap without the sharing; the margin is for a busy machine's pauses.
    assert took < 0.7, f"took {took:.2f} s for a cap of 0.4 s"


def test_headers_over_the_size_cap_are_refused_before_they_are_read() -> None:
    ds = ct_dataset()
    ds.add_new(0x00091010, "LO", "GEMS")  # a private creator, then its big private value
    ds.add_new(0x00091011, "OB", b"\x00" * 200_000)
    data = to_bytes(ds)
    assert isinstance(read_instance(data), Instance)
    found = read_instance(data, max_header_bytes=100_000)
    assert isinstance(found, Rejected), found
    assert found.code == "header_too_large"
    assert found.details == {"max_header_bytes": 100_000}
    # Big sequences are parsed into memory: the cap holds them too.
    nested = ct_dataset()
    nested.ReferencedImageSequence = [Dataset() for _ in range(1)]
    nested.ReferencedImageSequence[0].add_new(0x00291010, "OB", b"\x00" * 200_000)
    assert read_instance(to_bytes(nested), max_header_bytes=100_000).code == "header_too_large"  # type: ignore[union-attr]


def test_sources_may_be_a_path_a_stream_or_bytes(tmp_path: Path) -> None:
    data = ct_slice(sop_uid=uid(1, 1, 3))
    path = tmp_path / "slice.dcm"
    path.write_bytes(data)
    expected = instance(data)
    assert read_instance(path) == expected
    assert read_instance(str(path)) == expected
    assert read_instance(io.BytesIO(data)) == expected
    # A stream is read from where it stands.
    stream = io.BytesIO(b"junk" + data)
    stream.seek(4)
    assert read_instance(stream) == expected


def test_errors_of_the_source_itself_propagate(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_instance(tmp_path / "nowhere.dcm")

    class Failing(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if size is None or size < 0 or self.tell() + size > 300:  # bytes past 300
                raise OSError("disk on fire")
            return super().read(size)

    with pytest.raises(OSError, match="disk on fire"):
        read_instance(Failing(ct_slice()))


def test_a_required_tag_with_an_empty_value_is_missing() -> None:
    found = rejected(ct_slice(patient_id=""))
    assert found.code == "missing_tags"
    assert found.details["missing_tags"] == ["PatientID"]


def test_values_are_decoded_in_the_files_character_set() -> None:
    latin = instance(ct_slice(patient_id="Müller-7"))
    assert latin.patient_id == "Müller-7"
    utf8 = ct_dataset(patient_id="患者-7")
    utf8.SpecificCharacterSet = "ISO_IR 192"
    assert instance(to_bytes(utf8)).patient_id == "患者-7"
    padded = instance(ct_slice(overrides={"InstanceNumber": ("IS", " 12 ")}))
    assert padded.instance_number == 12
    as_un = instance(ct_slice(overrides={"SliceThickness": ("UN", b"2.5 ")}))
    assert as_un.slice_thickness == 2.5


def test_optional_tags_may_be_absent() -> None:
    found = instance(ct_slice(omit=["Modality", "InstanceNumber", *TAGS_3D]))
    assert (found.modality, found.instance_number, found.position) == (None, None, None)
    assert found.missing_3d_tags == TAGS_3D


# --- read_instance: files refused --------------------------------------------------------------


@pytest.mark.parametrize("keyword", REQUIRED_TAGS)
def test_a_file_missing_a_required_tag_names_it(keyword: str) -> None:
    found = rejected(ct_slice(omit=[keyword]))
    assert found.code == "missing_tags"
    assert found.details["missing_tags"] == [keyword]
    assert keyword in found.message


def test_a_file_missing_several_required_tags_names_each() -> None:
    found = rejected(ct_slice(omit=["PatientID", "SOPInstanceUID", "Rows"]))
    assert found.code == "missing_tags"
    assert found.details["missing_tags"] == ["Rows", "SOPInstanceUID", "PatientID"]
    assert found.message == "missing required tags: Rows, SOPInstanceUID, PatientID"


@pytest.mark.parametrize("fields", [{"omit": ["PixelData"]}, {"pixel_data": b""}])
def test_a_file_without_pixel_data_names_it(fields: dict[str, object]) -> None:
    found = rejected(ct_slice(**fields))
    assert found.code == "missing_tags"
    assert found.details["missing_tags"] == ["PixelData"]
    assert "without pixel data" in found.message


def test_a_truncated_stream_counts_from_where_it_starts() -> None:
    data = ct_slice()
    stream = io.BytesIO(b"x" * 1000 + data[:-6])
    stream.seek(1000)
    found = read_instance(stream)
    assert isinstance(found, Rejected)
    assert found.code == "truncated"
    assert found.details == {"expected_bytes": 128, "available_bytes": 122}
    assert f"Pixel Data at byte {data.index(bytes.fromhex('e07f1000'))} " in found.message


def test_a_truncated_file_is_refused_wherever_it_is_cut() -> None:
    data = ct_slice()
    pixel_data_at = data.index(b"\xe0\x7f\x10\x00")
    cuts = sorted(
        {1, 100, 128, 131, 132, 140, 200, 300, 400, 500, 600, pixel_data_at, pixel_data_at + 6}
        | {pixel_data_at + 12, pixel_data_at + 13, len(data) - 2, len(data) - 1}
    )
    for cut in cuts:
        found = rejected(data[:cut])
        assert found.code in {"not_dicom", "missing_tags", "truncated"}, (cut, found)
    assert rejected(data[: len(data) - 1]).code == "truncated"
    assert rejected(data[:pixel_data_at]).details["missing_tags"] == ["PixelData"]


def test_every_cut_of_a_file_is_refused() -> None:
    data = ct_slice()
    for cut in range(len(data)):
        assert isinstance(read_instance(data[:cut]), Rejected), cut


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (png_bytes(), "DICM"),
        (b"patient: Smith\nrows: 512\n" * 20, "DICM"),
        (b"", "empty"),
        (b"\0" * 128, "DICM"),
        (b"\0" * 128 + b"DIC", "DICM"),
    ],
    ids=["png", "text", "empty", "zeros", "short-marker"],
)
def test_a_file_that_is_not_dicom_says_so(data: bytes, says: str) -> None:
    found = rejected(data)
    assert found.code == "not_dicom"
    assert says in found.message


def test_a_file_without_the_preamble_is_not_dicom() -> None:
    # A bare dataset (no preamble, no "DICM"): pydicom would read it with force=True.
    data = ct_slice()
    found = rejected(data[132:])
    assert found.code == "not_dicom"


def test_a_deflated_dataset_is_refused_without_inflating_it() -> None:
    found = rejected(ct_slice(transfer_syntax=DeflatedExplicitVRLittleEndian))
    assert found.code == "unsupported_transfer_syntax"
    assert "Deflated" in found.message


def test_garbage_after_the_file_meta_is_malformed_or_missing_tags() -> None:
    data = ct_slice()
    meta_end = data.index(b"\x08\x00\x05\x00")  # SpecificCharacterSet, the first element
    found = rejected(data[:meta_end] + bytes(range(256)) * 4)
    assert found.code in {"malformed_dicom", "missing_tags"}


@pytest.mark.parametrize(
    ("overrides", "keyword", "says"),
    [
        ({"Rows": 0}, "Rows", "outside 1..65535"),
        ({"Columns": ("LO", "512")}, "Columns", "VR LO, expected US"),
        ({"Rows": ("US", [8, 8])}, "Rows", "expected one value, found 2"),
        ({"SOPInstanceUID": "1.2.abc"}, "SOPInstanceUID", "Invalid value for VR UI"),
        ({"SeriesInstanceUID": "1." + "2" * 70}, "SeriesInstanceUID", "maximum length of 64"),
        ({"StudyInstanceUID": ("UI", ["1.2", "1.3"])}, "StudyInstanceUID", "one value"),
        ({"PatientID": ("LO", "A\x01B")}, "PatientID", "control characters"),
        ({"PatientID": ("LO", ["A", "B"])}, "PatientID", "one value"),
        ({"PatientID": ("LO", "P" * 2000)}, "PatientID", "2,000 bytes"),
        ({"Modality": ("CS", "X" * 20)}, "Modality", "maximum length of 16"),
        ({"ImagePositionPatient": ["1", "2"]}, "ImagePositionPatient", "expected 3 values"),
        ({"ImagePositionPatient": ["1", "nan", "2"]}, "ImagePositionPatient", "for VR DS"),
        ({"ImagePositionPatient": ["1", "1e300", "2"]}, "ImagePositionPatient", "further"),
        ({"ImagePositionPatient": ("FD", [1.0, 2.0, 3.0])}, "ImagePositionPatient", "VR FD"),
        ({"ImagePositionPatient": ["1", "1_000", "2"]}, "ImagePositionPatient", "Invalid value"),
        ({"ImageOrientationPatient": ["1", "0", "0", "1", "0", "0"]}, "Image", "orthogonal"),
        ({"ImageOrientationPatient": ["0"] * 6}, "ImageOrientationPatient", "unit vectors"),
        ({"SliceThickness": "-1"}, "SliceThickness", "outside 0.."),
        ({"SliceThickness": ("DS", "inf")}, "SliceThickness", "Invalid value for VR DS"),
        ({"SliceThickness": ("DS", "1e999")}, "SliceThickness", "finite"),
        ({"PixelSpacing": ["0", "1"]}, "PixelSpacing", "above 0"),
        ({"PixelSpacing": ("OB", b"\x01\x02")}, "PixelSpacing", "VR OB, expected DS"),
        ({"SOPInstanceUID": ("UI", "1.2.\u00e9")}, "SOPInstanceUID", "Invalid value for VR UI"),
        ({"InstanceNumber": ("IS", "99999999999")}, "InstanceNumber", "between -2**31"),
        ({"InstanceNumber": ("IS", "1.5")}, "InstanceNumber", "Invalid value for VR IS"),
    ],
)
def test_an_unusable_value_is_named(overrides: dict[str, object], keyword: str, says: str) -> None:
    # Each kept element must have its dictionary VR (or UN), and a value that VR allows: the
    # messages in capitals are pydicom's own (validation mode RAISE).
    found = read_instance(ct_slice(overrides=overrides))
    assert isinstance(found, Rejected), found
    assert found.code == "invalid_tags", found
    (named,) = found.details["invalid_tags"]
    assert named.startswith(keyword)
    assert says in found.details["invalid_tags"][named], found
    assert named in found.message


@pytest.mark.parametrize("text", [b"0x10", b"1_00", b"NaN ", b"1e+x", b" .  ", b"inf "])
def test_a_decimal_string_takes_no_other_spelling(text: bytes) -> None:
    # pydicom cannot write these, so they are put in the bytes: Python's float() would take
    # some ("1_00", "NaN"); DS does not.
    assert len(text) == 4  # the same length: the element keeps its place
    data = ct_slice(position=(1.0, 7777.0, 2.0)).replace(b"7777", text)
    found = rejected(data)
    assert found.code == "invalid_tags"
    assert "ImagePositionPatient" in found.details["invalid_tags"]


def test_missing_and_invalid_tags_are_reported_together() -> None:
    found = rejected(ct_slice(omit=["PatientID"], overrides={"Rows": 0}))
    assert found.code == "missing_tags"
    assert found.details == {
        "missing_tags": ["PatientID"],
        "invalid_tags": {"Rows": "0 is outside 1..65535"},
    }
    assert "invalid tags: Rows" in found.message


def test_sequences_nested_too_deep_are_malformed_not_a_crash() -> None:
    data = ct_slice()
    at = data.index(b"\x08\x00\x05\x00")  # the dataset's first element
    opening = struct.pack("<HH2sHL", 0x0009, 0x1010, b"SQ", 0, 0xFFFFFFFF)
    opening += struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHL", 0xFFFE, 0xE00D, 0) + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    assert isinstance(read_instance(data[:at] + opening * 20 + closing * 20 + data[at:]), Instance)
    found = rejected(data[:at] + opening * 5000 + closing * 5000 + data[at:])
    # Where the recursion gives out depends on the depth of the caller's stack: pydicom
    # raises RecursionError, or a read inside it fails and pydicom says it found no tag.
    assert found.code == "malformed_dicom"
    assert "RecursionError" in found.message or "No tag to read" in found.message


def test_a_huge_stated_length_reads_nothing_huge() -> None:
    data = bytearray(ct_slice(patient_id="PATIENT1"))
    at = data.index(b"\x10\x00\x20\x00LO")  # PatientID, explicit VR: 2-byte length
    data[at + 4 : at + 6] = b"UN"  # a VR with a 4-byte length, 4 GiB stated
    data[at + 6 : at + 8] = b"\0\0"
    data[at + 8 : at + 8] = b"\xf0\xff\xff\xff"
    tracemalloc.start()
    try:
        assert isinstance(read_instance(bytes(data)), Rejected)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


# --- assemble ----------------------------------------------------------------------------------


def series_instances(count: int, **fields: object) -> list[Instance]:
    return [instance(data) for data in ct_series(count, **fields)]  # type: ignore[arg-type]


def test_a_ct_series_with_all_tags_is_ordered_by_position_and_renderable() -> None:
    slices = series_instances(12)
    (series,) = assemble(shuffled(slices))
    assert series.series_uid == uid(1, 1)
    assert (series.study_uid, series.patient_id, series.modality) == (uid(1), "PAT-0001", "CT")
    assert series.instance_count == 12
    assert series.renderable_3d is True
    assert series.missing_3d_tags == ()
    # Along the normal (z for axial), while the instance numbers run the other way.
    assert series.instances == tuple(slices)
    assert [i.position[2] for i in series.instances if i.position] == sorted(
        p[2] for p in slice_positions(12)
    )
    assert series.facts() == {
        "study_uid": uid(1),
        "series_uid": uid(1, 1),
        "patient_id": "PAT-0001",
        "modality": "CT",
        "instances": 12,
        "renderable_3d": True,
        "missing_3d_tags": [],
    }


def test_an_oblique_series_is_ordered_along_its_normal() -> None:
    slices = series_instances(9, orientation=OBLIQUE)
    # The normal is oblique: no single coordinate orders the slices alone... but the
    # product along the normal does.
    for seed in range(5):
        (series,) = assemble(shuffled(slices, seed))
        assert series.instances == tuple(slices)
        assert series.renderable_3d


def test_slices_shifted_within_their_plane_are_still_ordered_along_the_normal() -> None:
    # Each slice's origin moves within the image plane (along the column direction, which
    # climbs in z), so z alone, or any one coordinate, would order these slices wrongly;
    # the distance along the normal does not change with such a shift.
    column = OBLIQUE[3:]
    shifts = [12.0, -9.0, 7.5, -14.0, 3.0, -2.5]
    positions = [
        tuple(p + shift * c for p, c in zip(base, column, strict=True))
        for base, shift in zip(slice_positions(6, OBLIQUE), shifts, strict=True)
    ]
    slices = [
        instance(
            ct_slice(
                sop_uid=uid(3, 1, k + 1),
                series_uid=uid(3, 1),
                study_uid=uid(3),
                orientation=OBLIQUE,
                position=position,
                instance_number=10 - k,
            )
        )
        for k, position in enumerate(positions)
    ]
    assert sorted(slices, key=lambda i: i.position[2]) != slices  # type: ignore[index]
    (series,) = assemble(shuffled(slices))
    assert series.instances == tuple(slices)


def test_without_positions_the_order_is_by_instance_number_then_uid() -> None:
    slices = series_instances(5, omit=["ImagePositionPatient"])
    (series,) = assemble(shuffled(slices))
    # ct_series numbers the slices count..1.
    assert [i.instance_number for i in series.instances] == [1, 2, 3, 4, 5]
    unnumbered = [replace(i, instance_number=None) for i in slices]
    numbered = replace(slices[4], sop_uid=uid(1, 1, 99), instance_number=3)
    assert order([*shuffled(unnumbered), numbered]) == (numbered, *unnumbered)


def test_uids_order_by_number_not_by_text() -> None:
    slices = [
        replace(i, instance_number=None, sop_uid=uid(5, k))
        for k, i in zip(
            (10, 9, 100, 2), series_instances(4, omit=["ImagePositionPatient"]), strict=True
        )
    ]
    assert [i.sop_uid for i in order(slices)] == [uid(5, k) for k in (2, 9, 10, 100)]


@dataclass(frozen=True)
class _Placed:
    sop_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    instance_number: int | None


_coordinate = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, -0.0, 1.0, -1.0])
_placed = st.builds(
    _Placed,
    sop_uid=st.lists(
        st.from_regex(r"[0-9]{1,25}", fullmatch=True) | st.sampled_from(["a", "ab", "b", ""]),
        min_size=1,
        max_size=5,
    ).map(".".join),
    position=st.none() | st.tuples(_coordinate, _coordinate, _coordinate),
    orientation=st.none() | st.tuples(*[_coordinate] * 6),
    instance_number=st.none() | st.integers(-(10**11), 10**12),
)


@given(st.lists(_placed, min_size=1, max_size=12, unique_by=lambda p: p.sop_uid))
def test_slice_keys_sort_as_the_order_does(instances: list[_Placed]) -> None:
    """The read model keeps a key a slice (its bytes compared as PostgreSQL compares
    bytea), not a rank, so that an extension writes its new slices only."""
    normal = slice_normal(instances)
    assert sorted(instances, key=lambda i: slice_key(i, normal)) == list(order(instances))


def test_a_series_missing_3d_tags_names_them() -> None:
    slices = series_instances(4)
    slices[1] = instance(
        ct_slice(
            sop_uid=uid(1, 1, 2),
            series_uid=uid(1, 1),
            study_uid=uid(1),
            position=slice_positions(4)[1],
            omit=["SliceThickness", "PixelSpacing"],
        )
    )
    (series,) = assemble(slices)
    assert series.renderable_3d is False
    assert series.missing_3d_tags == ("PixelSpacing", "SliceThickness")
    assert series.instances == tuple(slices)  # positions still order it

    no_geometry = series_instances(3, omit=TAGS_3D)
    (flat,) = assemble(no_geometry)
    assert flat.missing_3d_tags == TAGS_3D
    assert not flat.renderable_3d


def test_two_series_and_a_bad_file() -> None:
    files = [
        *ct_series(4, series=1),
        png_bytes(),
        *ct_series(3, series=2, orientation=OBLIQUE, omit=["SliceThickness"]),
    ]
    random.Random(3).shuffle(files)
    results = [read_instance(data) for data in files]
    bad = [r for r in results if isinstance(r, Rejected)]
    assert [r.code for r in bad] == ["not_dicom"]
    good = [r for r in results if isinstance(r, Instance)]
    by_uid = {s.series_uid: s for s in assemble(good)}
    assert set(by_uid) == {uid(1, 1), uid(1, 2)}
    assert by_uid[uid(1, 1)].instance_count == 4
    assert by_uid[uid(1, 1)].renderable_3d
    assert by_uid[uid(1, 2)].instance_count == 3
    assert by_uid[uid(1, 2)].missing_3d_tags == ("SliceThickness",)
    assert [i.sop_uid for i in by_uid[uid(1, 2)].instances] == [uid(1, 2, k) for k in (1, 2, 3)]


def test_the_same_sop_uid_twice_is_one_instance() -> None:
    slices = series_instances(3)
    again = instance(ct_series(3)[1])
    (series,) = assemble([*slices, again, slices[0]])
    assert series.instance_count == 3
    # The first one given is kept when two copies differ.
    changed = replace(slices[2], instance_number=77)
    (series,) = assemble([*slices, changed])
    assert series.instances[2].instance_number == slices[2].instance_number


def test_series_come_in_the_order_first_seen() -> None:
    one, two = series_instances(2, series=1), series_instances(2, series=2)
    assert [s.series_uid for s in assemble([two[0], one[0], *one, *two])] == [
        uid(1, 2),
        uid(1, 1),
    ]
    assert assemble([]) == []


def test_assembly_does_not_depend_on_the_order_given() -> None:
    slices = series_instances(10, orientation=OBLIQUE)
    expected = assemble(slices)
    for seed in range(10):
        assert assemble(shuffled(slices, seed)) == expected


# --- merge: a later upload ---------------------------------------------------------------------


def test_instances_of_a_later_upload_join_their_series() -> None:
    slices = series_instances(8)
    (first,) = assemble(slices[::2])
    other = series_instances(2, series=2)
    joined, new = merge([first], [*slices[1::2], slices[0], *other])
    assert joined.series_uid == first.series_uid
    assert joined.instances == tuple(slices)  # one per SOP uid, ordered again
    assert joined.renderable_3d
    assert new.series_uid == uid(1, 2)
    assert new.instance_count == 2
    (everything, _) = assemble([*slices[::2], *slices[1::2], *other])
    assert joined == everything


def test_a_later_upload_of_only_duplicates_changes_nothing() -> None:
    slices = series_instances(4)
    (first,) = assemble(slices)
    assert merge([first], [slices[2], slices[0]]) == [first]
    unrelated = Series(uid(7), uid(7), "X", None, (), True, ())
    assert merge([first, unrelated], slices[:1]) == [first]


def test_a_later_upload_can_make_a_series_unrenderable() -> None:
    slices = series_instances(3)
    (first,) = assemble(slices)
    late = instance(
        ct_slice(
            sop_uid=uid(1, 1, 50),
            series_uid=uid(1, 1),
            study_uid=uid(1),
            omit=["ImagePositionPatient"],
            instance_number=50,
        )
    )
    (joined,) = merge([first], [late])
    assert not joined.renderable_3d
    assert joined.missing_3d_tags == ("ImagePositionPatient",)
    # Without every position, the order falls back to instance numbers (3, 2, 1, 50).
    assert [i.instance_number for i in joined.instances] == [1, 2, 3, 50]


def test_a_known_series_keeps_its_identity_and_takes_a_missing_modality() -> None:
    slices = series_instances(2, omit=["Modality"])
    (first,) = assemble(slices)
    assert first.modality is None
    late = replace(slices[0], sop_uid=uid(1, 1, 9), modality="CT")
    (joined,) = merge([first], [late])
    assert joined.modality == "CT"
    assert (joined.study_uid, joined.patient_id) == (first.study_uid, first.patient_id)


# --- without: instances whose objects left a synced bucket ----------------------------------------


def test_instances_gone_leave_their_series_as_if_never_joined() -> None:
    slices = series_instances(6)
    (whole,) = assemble(slices)
    less = without(whole, [slices[0].sop_uid, slices[3].sop_uid, uid(9, 9, 9)])
    (kept,) = assemble([slices[1], slices[2], slices[4], slices[5]])
    assert less == kept
    assert less.instance_count == 4 and less.renderable_3d
    # Nothing of it gone: the same series.
    assert without(whole, [uid(9, 9, 9)]) is whole


def test_a_series_whose_odd_slice_goes_is_renderable_again() -> None:
    slices = series_instances(3)
    odd = instance(
        ct_slice(
            sop_uid=uid(1, 1, 50),
            series_uid=uid(1, 1),
            study_uid=uid(1),
            omit=["ImagePositionPatient"],
            instance_number=50,
        )
    )
    (joined,) = merge(assemble(slices), [odd])
    assert not joined.renderable_3d
    less = without(joined, [odd.sop_uid])
    assert less.renderable_3d and less.missing_3d_tags == ()
    assert less.instances == tuple(slices)  # along the normal again


def test_a_series_keeps_its_identity_when_instances_go_and_come_back() -> None:
    slices = series_instances(2, omit=["Modality"])
    (first,) = merge([], slices)
    named = replace(first, modality="CT")
    gone = without(named, [i.sop_uid for i in slices])
    assert gone.instances == () and gone.instance_count == 0
    assert (gone.study_uid, gone.patient_id, gone.modality) == (uid(1), "PAT-0001", "CT")
    assert not gone.renderable_3d and gone.missing_3d_tags == ()
    assert gone == emptied(named.series_uid, uid(1), "PAT-0001", "CT")
    # An instance that comes back joins it as the series it was; another patient's is
    # still refused.
    (back,) = merge([gone], slices[:1])
    assert back.instances == (slices[0],) and back.modality == "CT"
    stranger = replace(slices[1], patient_id="PAT-OTHER")
    assert [r.rejected.code for r in admit([stranger], [gone]).refused] == ["series_conflict"]


_AXIAL_IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_TURNED_IOP = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal: another normal
_member = st.builds(
    lambda sop, z, iop, number, modality, thick: Instance(
        sop_uid=sop,
        series_uid="1.2.3",
        study_uid="1.2",
        patient_id="P",
        rows=4,
        columns=4,
        modality=modality,
        position=None if z is None else (1.5, -2.0, z),
        orientation=iop,
        slice_thickness=thick,
        pixel_spacing=(0.5, 0.5),
        instance_number=number,
    ),
    # Few UIDs, so that a later batch repeats some. Valid UIDs (no part with a leading
    # zero): "1.01" and "1.1" are equal as numbers, and which of the two gives a series'
    # direction depends on the order they come in, merged or assembled alike.
    sop=st.sampled_from(["1.1", "1.2", "1.10", "2", "1.9.3", "0.5", "7"]),
    z=st.sampled_from([-3.0, 0.0, -0.0, 2.5, 2.5, 10.0, 10.0, None]),
    iop=st.sampled_from([_AXIAL_IOP] * 5 + [_TURNED_IOP, _TURNED_IOP, None]),
    number=st.sampled_from([None, -2, 0, 1, 1, 4]),
    modality=st.none() | st.just("CT"),
    thick=st.none() | st.just(1.0),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_member, min_size=1, max_size=6), min_size=2, max_size=5))
def test_a_series_merged_batch_by_batch_equals_the_whole_assembled(
    batches: list[list[Instance]],
) -> None:
    """`merge` inserts a batch into the known (ordered) series rather than sorting it
    whole again: batch after batch it must still give what one assembly of everything
    gives, through turned directions, slices without positions, ties and duplicates."""
    known: list[Series] = []
    for batch in batches:
        merged = merge(known, batch)
        if merged:
            known = merged
    everything = [i for batch in batches for i in batch]
    assert known == assemble(everything)
    if known:
        assert known[0].instances == order(known[0].instances)


def test_a_merge_puts_new_slices_in_place_and_keeps_the_first_copy() -> None:
    slices = series_instances(9)
    (first,) = assemble(slices[2:7])
    late = replace(slices[4], instance_number=99)  # a second copy: the known one stays
    (joined,) = merge([first], [slices[8], late, slices[0], slices[1], slices[7]])
    assert joined.instances == tuple(slices)
    assert joined == assemble(slices)[0]


# --- admit: instances that contradict their series ---------------------------------------------


def test_admit_refuses_another_patient_or_study_in_a_series() -> None:
    slices = series_instances(3)
    stranger = replace(slices[1], sop_uid=uid(1, 1, 40), patient_id="PAT-9999")
    moved = replace(slices[1], sop_uid=uid(1, 1, 41), study_uid=uid(2))
    admission = admit([*slices, stranger, moved])
    assert admission.accepted == tuple(slices)
    assert [(r.instance, r.rejected.code) for r in admission.refused] == [
        (stranger, "series_conflict"),
        (moved, "series_conflict"),
    ]
    details = admission.refused[0].rejected.details
    assert details["conflicting_tags"] == {"PatientID": {"series": "PAT-0001", "file": "PAT-9999"}}
    assert "PAT-9999" in admission.refused[0].rejected.message


def test_admit_checks_against_known_series() -> None:
    slices = series_instances(3)
    (known,) = assemble(slices[:1])
    stranger = replace(slices[2], patient_id="PAT-2")
    admission = admit([stranger, slices[1]], known=[known])
    assert admission.accepted == (slices[1],)
    assert admission.refused[0].instance == stranger


def test_admit_refuses_a_sop_uid_seen_in_another_series() -> None:
    slices = series_instances(2)
    elsewhere = replace(slices[0], series_uid=uid(1, 8))
    admission = admit([*slices, slices[0], elsewhere])
    assert admission.accepted == (*slices, slices[0])  # the same series again: one instance
    assert [r.rejected.code for r in admission.refused] == ["duplicate_instance"]
    assert admission.refused[0].rejected.details == {
        "sop_uid": slices[0].sop_uid,
        "series_uid": uid(1, 1),
    }


def test_an_instances_recorded_facts_are_all_its_fields() -> None:
    for data in (ct_slice(), ct_slice(omit=["PixelSpacing", "Modality"])):
        found = instance(data)
        recorded = Part("a.dcm", "blob", "0" * 64, 1).instance_json(found)["facts"]
        # As JSON has them (the event's data is built from them as they are).
        assert recorded == orjson.loads(orjson.dumps(asdict(found)))
        assert list(recorded) == list(asdict(found))
        assert orjson.loads(orjson.dumps(recorded)) == recorded


def test_a_batchs_pages_are_built_as_their_events_dump_them() -> None:
    """The series' instance pages and the job's settlements are built as JSON directly,
    not validated and dumped: what they hold must be what the events' dump gives."""
    slices = [instance(data) for data in ct_series(3)]
    part = Part("a.dcm", "blob", "0" * 64, 1)
    page = [part.instance_json(i) for i in slices]
    stored = DicomInstanceStored(
        job_id=uuid.uuid4(),
        folder_id=uuid.uuid4(),
        name="a.dcm",
        blob_key="blob",
        sha256="0" * 64,
        size=1,
        entry_id=uuid.uuid4(),
    )
    cause = new_envelope(
        stored, stream_id="s", stream_version=1, cause=Cause(actor="u", correlation_id="c")
    )
    file_id = uuid.uuid4()
    bad = Rejected("not_dicom", "no", {"at": (1, 2)})
    items = [(cause, stored, slices[0]), (cause, stored, bad), (cause, stored, slices[1])]
    refused = {id(slices[1]): Rejected("duplicate_instance", "twice", {})}
    (settled,) = Dicom._settled(
        stored.folder_id,
        items,
        refused,
        {slices[0].series_uid: file_id},
        {stored.job_id: 4},
        datetime.now(UTC),
    )
    assert settled.stream_version == 5
    assert settled.data["accepted"][0]["sop_class_uid"]
    assert [r["code"] for r in settled.data["rejected"]] == ["not_dicom", "duplicate_instance"]
    added = {"series_uid": slices[0].series_uid, "file_id": str(file_id), "instances": page}
    for event, data in ((ev.InstancesSettled, settled.data), (ev.SeriesInstancesAdded, added)):
        dumped = event.model_validate(data).model_dump(mode="json")
        assert data == dumped  # JSON's types (ids as text, lists), as consumers read them
        assert orjson.dumps(data) == orjson.dumps(dumped)  # the same bytes, keys in order


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_member, min_size=1, max_size=6), min_size=1, max_size=5))
def test_a_direction_kept_batch_by_batch_is_the_one_of_all_its_slices(
    batches: list[list[Instance]],
) -> None:
    """The read model keeps a series' direction on its row and joins each extension's
    new slices to it, not reading the series' slices: batch after batch it must be
    `slice_normal` of all of them (and its lowest UID), through turns and slices
    without a position or an orientation."""
    kept, seen = _EMPTY_DIRECTION, {}
    for batch in batches:
        news = {}
        for i in batch:
            if i.sop_uid not in seen:
                news.setdefault(i.sop_uid, i)
        kept = kept.joined(list(news.values()))
        seen |= news
        assert kept.normal == slice_normal(list(seen.values()))
        assert kept.lowest == min(seen, key=uid_order)
