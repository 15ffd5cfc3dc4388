"""The DICOM context's rules, pure: one file's headers to an instance, instances to series.

`read_instance` reads the headers of one file (pydicom, `stop_before_pixels`: pixel data
is never read, let alone decoded) and answers an `Instance` or a `Rejected` naming what is
wrong; it never raises because of the bytes it is given. `admit` sorts out instances that
contradict what is known of their series, `assemble` groups instances into series and
`merge` joins instances of a later upload to the series already known. No I/O here beyond
reading the bytes of the source it is handed; no clock, no ids.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

import pydicom
from pydicom.charset import decode_bytes
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import TEXT_VR_DELIMS

# --- What is read ---------------------------------------------------------------------------

#: Without any of these a file is refused with `missing_tags`.
REQUIRED_TAGS: Final = (
    "Rows",
    "Columns",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientID",
)
#: Every instance of a series needs these for the series to be `renderable_3d` (sorted).
TAGS_3D: Final = (
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "PixelSpacing",
    "SliceThickness",
)
OPTIONAL_TAGS: Final = ("Modality", "InstanceNumber", *TAGS_3D)
#: Named in `missing_tags` when the file has no pixel data element at all.
PIXEL_DATA = "PixelData"


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - a typo in this module
        raise LookupError(keyword)
    return tag


_TAGS: Final = {keyword: _tag(keyword) for keyword in (*REQUIRED_TAGS, *OPTIONAL_TAGS)}
# Passed to dcmread as `specific_tags`: every other element is skipped, not read.
_WANTED: Final = list(_TAGS.values())
_PIXEL_TAGS: Final = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # integer, float, double
_ITEM: Final = 0xFFFEE000
_SEQUENCE_END: Final = 0xFFFEE0DD
# VRs whose explicit-VR header has 2 reserved bytes and a 4-byte length.
_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# Fragments of encapsulated pixel data walked to its end before trusting its last 8 bytes.
_MAX_FRAGMENTS: Final = 100_000

_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IS = re.compile(r"[+-]?[0-9]{1,12}")
_DS = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_UID = 64  # UI
MAX_PATIENT_ID = 64  # LO
MAX_MODALITY = 16  # CS
MAX_POSITION_MM = 1e7  # 10 km from the patient's origin: anything beyond is garbage
MAX_LENGTH_MM = 1e6  # a slice thickness or pixel spacing
UNIT_TOLERANCE = 1e-2  # direction cosines: unit length and orthogonal, within this
_INT32 = (-(2**31), 2**31 - 1)  # IS
# No kept element is near this long (the longest, ImageOrientationPatient, is at most 101
# bytes): a longer value is refused before it is decoded (a 100 MB DS value would become
# millions of numbers).
MAX_VALUE_BYTES = 1024


# --- Results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instance:
    """The facts of one DICOM instance this context keeps. Optional facts are None if absent.

    `orientation` is ImageOrientationPatient (row direction, then column direction),
    `position` ImagePositionPatient (mm), `pixel_spacing` PixelSpacing (row spacing, column
    spacing, mm).
    """

    sop_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    rows: int
    columns: int
    modality: str | None = None
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, float, float, float, float, float] | None = None
    slice_thickness: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    instance_number: int | None = None

    @property
    def missing_3d_tags(self) -> tuple[str, ...]:
        present = {
            "ImageOrientationPatient": self.orientation is not None,
            "ImagePositionPatient": self.position is not None,
            "PixelSpacing": self.pixel_spacing is not None,
            "SliceThickness": self.slice_thickness is not None,
        }
        return tuple(keyword for keyword in TAGS_3D if not present[keyword])


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a file (or an instance) is not accepted: a snake_case code, a message for a person.

    Codes: `not_dicom`, `unsupported_transfer_syntax`, `malformed_dicom`, `missing_tags`
    (`details.missing_tags`), `truncated`, `invalid_tags` (`details.invalid_tags`: keyword ->
    what is wrong), and from `admit`: `series_conflict`, `duplicate_instance`.
    """

    code: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An instance `admit` left out, and why."""

    instance: Instance
    rejected: Rejected


@dataclass(frozen=True, slots=True)
class Admission:
    accepted: tuple[Instance, ...]
    refused: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class Series:
    """One series: its instances (one per SOPInstanceUID) ordered along the slice direction.

    `renderable_3d` says every instance has ImagePositionPatient, ImageOrientationPatient,
    SliceThickness and PixelSpacing; `missing_3d_tags` names (sorted) each of them that some
    instance lacks.
    """

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str | None
    instances: tuple[Instance, ...]
    renderable_3d: bool
    missing_3d_tags: tuple[str, ...]

    @property
    def instance_count(self) -> int:
        return len(self.instances)

    @property
    def sop_uids(self) -> tuple[str, ...]:
        return tuple(instance.sop_uid for instance in self.instances)

    def facts(self) -> dict[str, Any]:
        """The File's `dicom` object of API.md."""
        return {
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "patient_id": self.patient_id,
            "modality": self.modality,
            "instances": self.instance_count,
            "renderable_3d": self.renderable_3d,
            "missing_3d_tags": list(self.missing_3d_tags),
        }


# --- Reading one file -----------------------------------------------------------------------

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


def read_instance(source: Source) -> Instance | Rejected:
    """The instance in one DICOM file, or why it is not accepted. Reads headers only.

    `source` is a file path, the file's bytes, or a seekable binary stream (read from its
    current position to its end; left open, at an unspecified position).

    Only the DICOM File Format (PS3.10) is accepted: a 128-byte preamble, "DICM", then the
    File Meta Information. A file without them is `not_dicom`: pydicom's `force=True` is not
    used, because it parses any bytes at all as a dataset of sorts (a text file would come
    out as "missing every required tag"), and ingest recognises DICOM by the same "DICM" at
    byte 128. Deflated Explicit VR Little Endian is `unsupported_transfer_syntax`: reading its
    headers means inflating the whole dataset in memory, which a small file can make huge.

    Besides the required tags, an instance must carry pixel data (PixelData, FloatPixelData
    or DoubleFloatPixelData; its value is never read): pydicom ends quietly where a file ends
    between two elements, so a file cut before its pixels shows as `missing_tags` naming
    `PixelData`; one cut within them is `truncated`. A required tag that is present but empty
    counts as missing. A kept tag whose value is unusable is `invalid_tags`, naming each and
    what is wrong: a VR other than the DICOM dictionary's (UN aside), the wrong number of
    values, a value its VR does not allow (DS and IS as PS3.5 spells them: no "NaN", no
    "0x10"), out of range, not finite, a UID that is not digits and dots or over 64
    characters, an orientation whose directions are not orthogonal unit vectors, a value
    over MAX_VALUE_BYTES. It applies to the optional tags too, so bad geometry never passes
    for good. When a file has several problems, the code is the first of `missing_tags`,
    `truncated` (or `malformed_dicom` for pixel data that is no item sequence),
    `invalid_tags`, and `details` lists every one found.

    Never raises because of the bytes: whatever pydicom raises while reading the headers ends
    as `malformed_dicom`, naming the error. Errors of the source itself (a path that cannot
    be opened, a failing read, a stream that cannot seek) propagate unchanged: they say
    nothing about the file. pydicom's warnings are silenced while it reads (with
    `warnings.catch_warnings`, which is not thread-safe: other threads' warnings may be
    hidden meanwhile); pydicom also logs some problems to the "pydicom" logger, which the
    composition root may quieten.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _read_stream(io.BytesIO(source))
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as stream:
            return _read_stream(stream)
    return _read_stream(source)


class _Deflated(Exception):
    """pydicom asked for the rest of the file: it is about to inflate a deflated dataset."""


class _Source:
    """The stream as pydicom reads it: reads capped at the end, the stream's own errors kept.

    A read past the end returns what is left without asking for more (a stated length of
    4 GiB must not allocate 4 GiB). An OSError of the stream's read is remembered, so that it
    is raised again as it is rather than passed off as malformed content.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.error: OSError | None = None
        self.start = raw.tell()
        self.end = raw.seek(0, io.SEEK_END)
        # The position is kept here: pydicom asks for it at every element, and a buffered
        # file's own tell() costs more than this attribute (measured: 30 µs a file).
        self.pos = raw.seek(self.start)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            # Only pydicom's deflate path reads the whole rest of a file.
            raise _Deflated
        size = min(size, self.end - self.pos)
        if size <= 0:
            return b""
        try:
            data = self._raw.read(size)
        except OSError as exc:
            self.error = exc
            raise
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = self._raw.seek(offset, whence)
        return self.pos

    def tell(self) -> int:
        return self.pos


def _read_stream(raw: IO[bytes]) -> Instance | Rejected:
    source = _Source(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _read(source)
    except _Deflated:
        return Rejected(
            "unsupported_transfer_syntax",
            "Deflated Explicit VR Little Endian is not accepted: its headers can only be read"
            " by inflating the whole dataset; store it uncompressed or with an image codec",
            {"transfer_syntax": str(pydicom.uid.DeflatedExplicitVRLittleEndian)},
        )
    except Exception as exc:
        if source.error is not None:
            raise source.error from None
        return Rejected(
            "malformed_dicom",
            f"malformed DICOM: its headers cannot be read ({_describe(exc)})",
            {"error": type(exc).__name__},
        )


def _read(source: _Source) -> Instance | Rejected:
    size = source.end - source.start
    head = source.read(132)
    if size == 0:
        return Rejected("not_dicom", "not a DICOM file: the file is empty")
    if len(head) < 132 or head[128:132] != b"DICM":
        return Rejected(
            "not_dicom",
            'not a DICOM file: no "DICM" marker at byte 128 (the DICOM File Format of PS3.10,'
            " with its 128-byte preamble, is required)",
        )
    source.seek(source.start)
    dataset = pydicom.dcmread(
        source,  # a reader: read, seek and tell
        stop_before_pixels=True,
        specific_tags=_WANTED,
    )
    implicit, little = dataset.original_encoding
    pixels = _pixel_data(source, bool(implicit), bool(little))

    missing: list[str] = []
    invalid: dict[str, str] = {}
    facts: dict[str, Any] = {}
    for keyword, (vr, read) in _ELEMENTS.items():
        try:
            value = _raw(dataset, keyword, vr)
            if value is None:
                if keyword in REQUIRED_TAGS:
                    missing.append(keyword)
                continue
            facts[keyword] = read(value, bool(little), dataset)
        except _Unusable as problem:
            invalid[keyword] = str(problem)
        except Exception as exc:  # a character set that cannot be looked up, for one
            if source.error is not None:
                raise
            invalid[keyword] = f"cannot be read ({_describe(exc)})"
    if pixels.absent:
        missing.append(PIXEL_DATA)

    details: dict[str, Any] = {}
    if missing:
        details["missing_tags"] = missing
    if invalid:
        details["invalid_tags"] = invalid
    if missing:
        message = "missing required tags: " + ", ".join(missing)
        if pixels.absent:
            message += (
                f"; the file ends at byte {size:,} without pixel data"
                " (it is truncated, or not an image)"
            )
        return Rejected("missing_tags", message + _invalid_part(invalid, "; "), details)
    if pixels.problem is not None:
        return Rejected(
            pixels.code,
            pixels.problem + _invalid_part(invalid, "; "),
            {**details, **pixels.details},
        )
    if invalid:
        return Rejected("invalid_tags", _invalid_part(invalid, "").lstrip(), details)
    return Instance(
        sop_uid=facts["SOPInstanceUID"],
        series_uid=facts["SeriesInstanceUID"],
        study_uid=facts["StudyInstanceUID"],
        patient_id=facts["PatientID"],
        rows=facts["Rows"],
        columns=facts["Columns"],
        modality=facts.get("Modality"),
        position=facts.get("ImagePositionPatient"),
        orientation=facts.get("ImageOrientationPatient"),
        slice_thickness=facts.get("SliceThickness"),
        pixel_spacing=facts.get("PixelSpacing"),
        instance_number=facts.get("InstanceNumber"),
    )


def _invalid_part(invalid: Mapping[str, str], prefix: str) -> str:
    if not invalid:
        return ""
    return f"{prefix}invalid tags: " + "; ".join(f"{k}: {why}" for k, why in invalid.items())


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- The pixel data element, checked for presence and completeness, never read --------------


@dataclass(frozen=True, slots=True)
class _Pixels:
    absent: bool = False
    code: str = "truncated"
    problem: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def _pixel_data(source: _Source, implicit: bool, little: bool) -> _Pixels:
    """Where dcmread stopped: the pixel data element's header, and whether the file holds it."""
    start = source.tell()
    end = source.end
    header = source.read(8)
    if len(header) < 8:
        return _Pixels(absent=True)
    endian = "<" if little else ">"
    group, element = struct.unpack(f"{endian}HH", header[:4])
    if (group << 16 | element) not in _PIXEL_TAGS:
        # dcmread ended before the end of the file without reaching pixel data (a stray
        # item delimiter at the top level, for one): there is none to speak of.
        return _Pixels(absent=True)
    vr = header[4:6]
    if implicit or not (b"AA" <= vr <= b"ZZ"):
        # (pydicom too takes a VR that is no VR for a switch to implicit VR)
        (length,) = struct.unpack(f"{endian}L", header[4:])
    elif vr in _LONG_VRS:
        more = source.read(4)
        if len(more) < 4:
            return _truncated(source, "the Pixel Data element's header", start)
        (length,) = struct.unpack(f"{endian}L", more)
    else:
        (length,) = struct.unpack(f"{endian}H", header[6:])
    value_start = source.tell()
    if length == 0:
        return _Pixels(absent=True)  # no pixels is no pixel data
    if length != 0xFFFFFFFF:
        if value_start + length > end:
            return _Pixels(
                problem=f"truncated: Pixel Data at byte {start - source.start} states"
                f" {length:,} bytes, but the file ends {end - value_start:,} bytes after"
                " its header",
                details={"expected_bytes": length, "available_bytes": end - value_start},
            )
        return _Pixels()
    return _encapsulated(source, endian, start)


def _encapsulated(source: _Source, endian: str, start: int) -> _Pixels:
    """Walks the fragments of encapsulated pixel data to its sequence delimiter."""
    end = source.end
    item = struct.Struct(f"{endian}HHL")
    for _ in range(_MAX_FRAGMENTS):
        here = source.tell()
        header = source.read(8)
        if len(header) < 8:
            return _truncated(source, "the encapsulated Pixel Data", start)
        group, element, length = item.unpack(header)
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            return _Pixels()
        if tag != _ITEM or length == 0xFFFFFFFF:
            return _Pixels(
                code="malformed_dicom",
                problem=f"malformed DICOM: encapsulated Pixel Data has no item at byte"
                f" {here - source.start} (found ({group:04X},{element:04X}))",
            )
        if here + 8 + length > end:
            return _truncated(source, "the encapsulated Pixel Data", start)
        source.seek(here + 8 + length)
    # Too many fragments to walk: trust the last 8 bytes.
    source.seek(end - 8)
    if source.read(8) == item.pack(0xFFFE, 0xE0DD, 0):
        return _Pixels()
    return _truncated(source, "the encapsulated Pixel Data", start)


def _truncated(source: _Source, what: str, start: int) -> _Pixels:
    end, start = source.end - source.start, start - source.start
    return _Pixels(
        problem=f"truncated: the file ends at byte {end:,} within {what} (which starts at"
        f" byte {start:,})"
    )


# --- The kept elements, read from their raw bytes and checked ---------------------------------
#
# pydicom leaves the elements it read raw until they are used; this module decodes the bytes
# of the few it keeps itself, strictly (each with the VR of the DICOM dictionary), which is
# both clearer when they are wrong and several times faster than pydicom's conversion.


class _Unusable(ValueError):
    pass


def _raw(dataset: Dataset, keyword: str, vr: str) -> bytes | None:
    """The element's value bytes, None when absent or empty; its VR must be `vr` (or UN)."""
    # keep_deferred: nothing is deferred here, but an empty value is None, which get_item
    # would otherwise convert.
    element = dataset.get_item(_TAGS[keyword], keep_deferred=True)
    if element is None:
        return None
    if not isinstance(element, RawDataElement):  # read as a sequence of undefined length
        raise _Unusable(f"VR {element.VR}, expected {vr}")
    if element.VR is not None and element.VR not in (vr, "UN"):
        raise _Unusable(f"VR {element.VR}, expected {vr}")
    value = element.value
    if value is None:
        return None
    if len(value) > MAX_VALUE_BYTES:
        raise _Unusable(f"a value of {len(value):,} bytes (at most {MAX_VALUE_BYTES:,})")
    if vr == "US":
        return value or None
    return value if value.strip(b" \x00") else None


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one(values: list[str]) -> str:
    if len(values) != 1:
        raise _Unusable(f"expected one value, found {len(values)}")
    return values[0]


def _ascii(value: bytes) -> list[str]:
    """The values of a VR whose characters are ASCII (UI, CS, IS, DS), each stripped."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise _Unusable(f"not ASCII text: {_preview(value)}") from None
    return [part.strip(" \x00") for part in text.split("\\")]


_Read = Callable[[bytes, bool, Dataset], Any]


def _us(low: int) -> _Read:
    def read(value: bytes, little: bool, dataset: Dataset) -> int:
        if len(value) % 2:
            raise _Unusable(f"{len(value)} bytes cannot hold US values (2 bytes each)")
        if len(value) != 2:
            raise _Unusable(f"expected one value, found {len(value) // 2}")
        number = int.from_bytes(value, "little" if little else "big")
        if number < low:
            raise _Unusable(f"{number} is outside {low}..65535")
        return number

    return read


def _uid(value: bytes, little: bool, dataset: Dataset) -> str:
    uid = _one(_ascii(value))
    if len(uid) > MAX_UID:
        raise _Unusable(f"a UID has at most {MAX_UID} characters, found {len(uid)}")
    if not _UID.fullmatch(uid):
        raise _Unusable(f"not a UID (digits separated by dots): {_preview(uid)}")
    return uid


def _code(value: bytes, little: bool, dataset: Dataset) -> str:
    text = _one(_ascii(value))
    if len(text) > MAX_MODALITY:
        raise _Unusable(f"at most {MAX_MODALITY} characters, found {len(text)}")
    if _CONTROL.search(text):
        raise _Unusable(f"control characters in {_preview(text)}")
    return text


def _long_string(value: bytes, little: bool, dataset: Dataset) -> str:
    """LO, in the dataset's character set (Specific Character Set), as pydicom decodes it."""
    parts = value.split(b"\\")
    if len(parts) != 1:
        raise _Unusable(f"expected one value, found {len(parts)}")
    encodings = dataset.original_character_set
    if isinstance(encodings, str):
        encodings = [encodings]
    text = decode_bytes(value, encodings, TEXT_VR_DELIMS).strip(" \x00")
    if len(text) > MAX_PATIENT_ID:
        raise _Unusable(f"at most {MAX_PATIENT_ID} characters, found {len(text)}")
    if _CONTROL.search(text):
        raise _Unusable(f"control characters in {_preview(text)}")
    return text


def _integer_string(value: bytes, little: bool, dataset: Dataset) -> int:
    text = _one(_ascii(value))
    if not _IS.fullmatch(text):
        raise _Unusable(f"not an integer: {_preview(text)}")
    number = int(text)
    low, high = _INT32
    if not low <= number <= high:
        raise _Unusable(f"{number} is outside {low}..{high}")
    return number


def _decimals(value: bytes, count: int) -> tuple[float, ...]:
    texts = _ascii(value)
    if len(texts) != count:
        raise _Unusable(f"expected {count} value{'s' if count > 1 else ''}, found {len(texts)}")
    numbers = []
    for text in texts:
        if not _DS.fullmatch(text):
            raise _Unusable(f"not a decimal number: {_preview(text)}")
        number = float(text)
        if not math.isfinite(number):
            raise _Unusable(f"{_preview(text)} is not a finite number")
        numbers.append(number)
    return tuple(numbers)


def _position(value: bytes, little: bool, dataset: Dataset) -> tuple[float, float, float]:
    x, y, z = _decimals(value, 3)
    if max(abs(x), abs(y), abs(z)) > MAX_POSITION_MM:
        raise _Unusable(f"({x:g}, {y:g}, {z:g}) is further than {MAX_POSITION_MM:g} mm out")
    return x, y, z


def _orientation(
    value: bytes, little: bool, dataset: Dataset
) -> tuple[float, float, float, float, float, float]:
    rx, ry, rz, cx, cy, cz = _decimals(value, 6)
    row, column = (rx, ry, rz), (cx, cy, cz)
    if (
        abs(_dot(row, row) - 1) > UNIT_TOLERANCE
        or abs(_dot(column, column) - 1) > UNIT_TOLERANCE
        or abs(_dot(row, column)) > UNIT_TOLERANCE
    ):
        raise _Unusable("the row and column directions must be orthogonal unit vectors")
    return rx, ry, rz, cx, cy, cz


def _thickness(value: bytes, little: bool, dataset: Dataset) -> float:
    (thickness,) = _decimals(value, 1)
    if not 0 <= thickness <= MAX_LENGTH_MM:
        raise _Unusable(f"{thickness:g} is outside 0..{MAX_LENGTH_MM:g} mm")
    return thickness


def _spacing(value: bytes, little: bool, dataset: Dataset) -> tuple[float, float]:
    rows, columns = _decimals(value, 2)
    if not (0 < rows <= MAX_LENGTH_MM and 0 < columns <= MAX_LENGTH_MM):
        raise _Unusable(f"({rows:g}, {columns:g}) must be above 0 and at most {MAX_LENGTH_MM:g}")
    return rows, columns


# keyword -> (VR, reader). Order of the messages: required tags first, as REQUIRED_TAGS has them.
_ELEMENTS: Final[dict[str, tuple[str, _Read]]] = {
    "Rows": ("US", _us(1)),
    "Columns": ("US", _us(1)),
    "StudyInstanceUID": ("UI", _uid),
    "SeriesInstanceUID": ("UI", _uid),
    "SOPInstanceUID": ("UI", _uid),
    "PatientID": ("LO", _long_string),
    "Modality": ("CS", _code),
    "InstanceNumber": ("IS", _integer_string),
    "ImageOrientationPatient": ("DS", _orientation),
    "ImagePositionPatient": ("DS", _position),
    "PixelSpacing": ("DS", _spacing),
    "SliceThickness": ("DS", _thickness),
}


# --- Series ----------------------------------------------------------------------------------


def admit(instances: Iterable[Instance], known: Iterable[Series] = ()) -> Admission:
    """Leaves out the instances that contradict their series, in the order given.

    The first word on a series wins: the known series, else its first instance here. An
    instance naming another study or patient than its series is `series_conflict` (one
    series never mixes patients). A SOPInstanceUID already seen in another series is
    `duplicate_instance`. The same SOPInstanceUID again in the same series is accepted:
    `assemble` and `merge` keep it once.
    """
    owners: dict[str, tuple[str, str]] = {}
    sop_series: dict[str, str] = {}
    for series in known:
        owners[series.series_uid] = (series.study_uid, series.patient_id)
        for sop_uid in series.sop_uids:
            sop_series.setdefault(sop_uid, series.series_uid)
    accepted: list[Instance] = []
    refused: list[Refusal] = []
    for instance in instances:
        study_uid, patient_id = owners.setdefault(
            instance.series_uid, (instance.study_uid, instance.patient_id)
        )
        seen_in = sop_series.get(instance.sop_uid, instance.series_uid)
        if seen_in != instance.series_uid:
            refused.append(
                Refusal(
                    instance,
                    Rejected(
                        "duplicate_instance",
                        f"SOPInstanceUID {instance.sop_uid} is already in series {seen_in};"
                        f" this file puts it in series {instance.series_uid}",
                        {"sop_uid": instance.sop_uid, "series_uid": seen_in},
                    ),
                )
            )
            continue
        clash = [
            (name, have, got)
            for name, have, got in (
                ("StudyInstanceUID", study_uid, instance.study_uid),
                ("PatientID", patient_id, instance.patient_id),
            )
            if have != got
        ]
        if clash:
            refused.append(
                Refusal(
                    instance,
                    Rejected(
                        "series_conflict",
                        f"series {instance.series_uid} belongs to "
                        + " and ".join(f"{name} {have}" for name, have, _ in clash)
                        + "; this file says "
                        + " and ".join(f"{name} {got}" for name, _, got in clash),
                        {
                            "series_uid": instance.series_uid,
                            "conflicting_tags": {
                                name: {"series": have, "file": got} for name, have, got in clash
                            },
                        },
                    ),
                )
            )
            continue
        sop_series[instance.sop_uid] = instance.series_uid
        accepted.append(instance)
    return Admission(tuple(accepted), tuple(refused))


def assemble(instances: Iterable[Instance]) -> list[Series]:
    """Groups instances by SeriesInstanceUID, in the order each series first appears.

    The same SOPInstanceUID twice is one instance (the first given). The series takes its
    study, patient and modality from its first instance (modality: the first that has one);
    run `admit` first to leave out instances that contradict it.
    """
    return merge((), instances)


def merge(known: Iterable[Series], instances: Iterable[Instance]) -> list[Series]:
    """The series the instances belong to, with them joined: a later upload joining series.

    Known series keep their study, patient and modality (a missing modality is taken from
    the new instances) and their instances; an instance whose SOPInstanceUID the series
    already has is ignored. Series none of the instances belong to are not returned; one
    whose new instances were all duplicates comes back equal to the known one. New series
    come after the known ones, in the order they first appear. `merge(known, instances)`
    holds the same series as `assemble(<the known series' instances> + instances)`.
    """
    known_by_uid = {series.series_uid: series for series in known}
    groups: dict[str, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.series_uid, []).append(instance)
    touched = [uid for uid in known_by_uid if uid in groups]
    touched += [uid for uid in groups if uid not in known_by_uid]
    out = []
    for uid in touched:
        base = known_by_uid.get(uid)
        out.append(_series(uid, [*(base.instances if base else ()), *groups[uid]], base))
    return out


def _series(uid: str, instances: Sequence[Instance], base: Series | None) -> Series:
    unique: dict[str, Instance] = {}
    for instance in instances:
        unique.setdefault(instance.sop_uid, instance)
    members = list(unique.values())
    first = members[0]
    modality = base.modality if base else None
    if modality is None:
        modality = next((i.modality for i in members if i.modality is not None), None)
    missing = sorted({keyword for i in members for keyword in i.missing_3d_tags})
    return Series(
        series_uid=uid,
        study_uid=base.study_uid if base else first.study_uid,
        patient_id=base.patient_id if base else first.patient_id,
        modality=modality,
        instances=order(members),
        renderable_3d=not missing,
        missing_3d_tags=tuple(missing),
    )


def order(instances: Iterable[Instance]) -> tuple[Instance, ...]:
    """Instances along the slice direction, whatever order they come in.

    When every instance has ImagePositionPatient and ImageOrientationPatient: by the
    position's distance along the normal (row direction x column direction) of the
    orientation of the instance with the lowest SOPInstanceUID (ascending: for an axial
    series, from the feet to the head); ties by InstanceNumber, then SOPInstanceUID.
    Otherwise by InstanceNumber (instances without one last), then SOPInstanceUID. UIDs
    compare component by component, as numbers.
    """
    members = list(instances)
    if not members:
        return ()
    if all(i.position is not None and i.orientation is not None for i in members):
        reference = min(members, key=_uid_key).orientation
        assert reference is not None
        normal = _cross(reference[:3], reference[3:])

        def along(instance: Instance) -> tuple[float, tuple[int, int], tuple[Any, ...]]:
            assert instance.position is not None
            return _dot(instance.position, normal), _number_key(instance), _uid_key(instance)

        return tuple(sorted(members, key=along))
    return tuple(sorted(members, key=lambda i: (_number_key(i), _uid_key(i))))


def _number_key(instance: Instance) -> tuple[int, int]:
    n = instance.instance_number
    return (0, n) if n is not None else (1, 0)


def _uid_key(instance: Instance) -> tuple[tuple[int, int, str], ...]:
    # read_instance only makes UIDs of digits and dots; others (built by hand) sort as text.
    return tuple(
        (0, int(part), "") if part.isascii() and part.isdigit() else (1, 0, part)
        for part in instance.sop_uid.split(".")
    )


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    return (
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    )
