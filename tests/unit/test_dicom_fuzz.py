"""Mutated DICOM bytes never make read_instance raise: each ends as an Instance or a Rejected."""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from services.dicom.domain import Instance, Rejected
from services.dicom.reader import read_instance
from tests.dicom_fixtures import OBLIQUE, ct_dataset, ct_slice, to_bytes

CODES = {
    "not_dicom",
    "unsupported_transfer_syntax",
    "malformed_dicom",
    "missing_tags",
    "truncated",
    "invalid_tags",
    "header_too_large",
    "read_too_slow",
}
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}


def _encapsulated() -> bytes:
    ds = ct_dataset(transfer_syntax=JPEGBaseline8Bit)
    ds.PixelData = encapsulate([b"\xff\xd8 frame one \xff\xd9", b"\xff\xd8 frame two \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return to_bytes(ds)


BASES = {
    "explicit": ct_slice(),
    "oblique": ct_slice(orientation=OBLIQUE, position=(10.5, -3.25, 7.0)),
    "implicit": ct_slice(transfer_syntax=ImplicitVRLittleEndian),
    "big_endian": ct_slice(transfer_syntax=ExplicitVRBigEndian),
    "encapsulated": _encapsulated(),
}


@dataclass(frozen=True)
class Element:
    """Where one top-level element of a base file sits: its header, length field and value."""

    start: int
    length_at: int
    length_size: int
    value_at: int
    length: int
    little: bool


def elements(data: bytes, implicit: bool, little: bool) -> Iterator[Element]:
    """The top-level elements of our own fixtures (no sequences), file meta included."""
    at = 132
    while at + 8 <= len(data):
        in_meta = struct.unpack("<H", data[at : at + 2])[0] == 2
        lit = little or in_meta
        endian = "<" if lit else ">"
        group, number = struct.unpack(f"{endian}HH", data[at : at + 4])
        if implicit and not in_meta:
            length_at, size = at + 4, 4
        elif data[at + 4 : at + 6] in LONG_VRS:
            length_at, size = at + 8, 4
        else:
            length_at, size = at + 6, 2
        (length,) = struct.unpack(f"{endian}{'L' if size == 4 else 'H'}", data[length_at:][:size])
        value_at = length_at + size
        yield Element(at, length_at, size, value_at, length, lit)
        if length == 0xFFFFFFFF or (group, number) == (0x7FE0, 0x0010):
            return
        at = value_at + length


LAYOUT = {
    "explicit": list(elements(BASES["explicit"], False, True)),
    "oblique": list(elements(BASES["oblique"], False, True)),
    "implicit": list(elements(BASES["implicit"], True, True)),
    "big_endian": list(elements(BASES["big_endian"], False, False)),
    "encapsulated": list(elements(BASES["encapsulated"], False, True)),
}
VALUES = st.one_of(
    st.binary(max_size=80),
    st.sampled_from(
        [
            b"",
            b"\x00",
            b"nan\\inf\\-inf",
            b"1e999",
            b"-0",
            b"1\\2\\3\\4\\5\\6\\7",
            b"0\\0\\0\\0\\0\\0",
            b"99999999999999999999",
            b"1.2.840..10008",
            b"\xff\xfe\xfd\xfc",
            b"\x1b$B\x1b(B",
            b"A\\B",
            b"ISO_IR 192",
            b"ISO 2022 IR 87\\bogus",
            b"\xfe\xff\x00\xe0\xff\xff\xff\xff",
            b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",
            b"9" * 300,
        ]
    ),
)
VRS = st.sampled_from([b"UI", b"US", b"DS", b"IS", b"LO", b"CS", b"SQ", b"OB", b"UN", b"FD"]) | (
    st.binary(min_size=2, max_size=2)
)


def replace_value(data: bytearray, element: Element, value: bytes) -> bytearray:
    """The element with `value` in place of its own, its length field stating the new length."""
    if len(value) % 2:
        value += b"\0"
    if element.length_size == 2 and len(value) > 0xFFFF:
        value = value[:0xFFFF]
    fmt = ("<" if element.little else ">") + ("L" if element.length_size == 4 else "H")
    end = element.value_at + (element.length if element.length != 0xFFFFFFFF else 0)
    new_length = struct.pack(fmt, len(value))
    return data[: element.length_at] + new_length + value + data[end:]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(BASES)))
    data = bytearray(BASES[name])
    layout = LAYOUT[name]
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "insert", "delete", "overwrite", "value", "vr", "length"]
            )
        )
        size = len(data)
        if kind == "flip" and size:
            for _ in range(draw(st.integers(1, 8))):
                at = draw(st.integers(0, size - 1))
                data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(0, size)) :]
        elif kind == "insert":
            at = draw(st.integers(0, size))
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete" and size:
            at = draw(st.integers(0, size - 1))
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "overwrite" and size:
            at = draw(st.integers(0, size - 1))
            chunk = draw(st.binary(min_size=1, max_size=32))
            data[at : at + len(chunk)] = chunk
        elif kind in {"value", "vr", "length"} and layout and size == len(BASES[name]):
            # Element surgery only on the untouched layout (earlier mutations may move it).
            element = draw(st.sampled_from(layout))
            if kind == "value":
                data = replace_value(data, element, draw(VALUES))
            elif kind == "vr" and element.length_at != element.start + 4:
                data[element.start + 4 : element.start + 6] = draw(VRS)
            else:
                maximum = 0xFFFFFFFF if element.length_size == 4 else 0xFFFF
                length = draw(
                    st.sampled_from([0, 1, 7, maximum, maximum - 1]) | st.integers(0, maximum)
                )
                fmt = ("<" if element.little else ">") + ("L" if element.length_size == 4 else "H")
                data[element.length_at : element.length_at + element.length_size] = struct.pack(
                    fmt, length
                )
    return bytes(data)


def check(result: Instance | Rejected) -> None:
    if isinstance(result, Rejected):
        assert result.code in CODES, result
        assert result.message.strip(), result
        json.dumps(dict(result.details))  # details go into events and job errors as JSON
        return
    assert isinstance(result, Instance), result
    for uid in (result.sop_uid, result.series_uid, result.study_uid):
        assert UID.fullmatch(uid) and len(uid) <= 64, result
    assert 1 <= result.rows <= 65535 and 1 <= result.columns <= 65535
    assert len(result.patient_id) <= 64
    numbers = [
        *(result.position or ()),
        *(result.orientation or ()),
        *(result.pixel_spacing or ()),
        *([result.slice_thickness] if result.slice_thickness is not None else []),
    ]
    assert all(math.isfinite(n) for n in numbers), result


def test_the_bases_are_instances() -> None:
    for name, data in BASES.items():
        assert isinstance(read_instance(data), Instance), name
        assert LAYOUT[name], name


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_dicom_never_raises(data: bytes) -> None:
    check(read_instance(data))


def test_every_single_byte_overwrite_of_a_file_is_handled() -> None:
    # Deterministic companion of the property above: each byte in turn set to 0xFF, then 0x00.
    for name in ("explicit", "implicit"):
        base = BASES[name]
        for at in range(len(base)):
            for byte in (0xFF, 0x00):
                data = bytearray(base)
                data[at] = byte
                check(read_instance(bytes(data)))
