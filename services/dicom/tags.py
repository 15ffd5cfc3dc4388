"""The kept elements of one DICOM dataset: decoded and validated by pydicom, then checked.

Each kept tag must carry the VR of the DICOM dictionary (or UN); its bytes are decoded as
that VR by pydicom (`convert_numbers` for US, `convert_text` for LO in the file's character
set; UI, CS, IS and DS split as its `multi_string` does) and each value is made or checked
in pydicom's validation mode RAISE (`UID`, `IS`, `validate_value`: length, characters, DS
and IS spelling, IS range), so its messages name what is wrong. This context's rules
follow: how many values, ranges, finite numbers, no control characters, an orthonormal
orientation (`domain.orthonormal`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydicom import config
from pydicom.charset import default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.valuerep import IS, MAX_VALUE_LEN, STR_VR_REGEXES, validate_value
from pydicom.values import convert_numbers, convert_text

from services.dicom.domain import MAX_LENGTH_MM, MAX_POSITION_MM, REQUIRED_TAGS, orthonormal

# No kept element is near this long (the longest, ImageOrientationPatient, is at most 101
# bytes): a longer value is refused before it is decoded (a 100 MB DS value would become
# millions of numbers).
MAX_VALUE_BYTES: Final = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# The kept elements of a file by tag, as pydicom's reader keeps them (raw, or a sequence
# read because of its undefined length), and the file's character set.
Elements = Mapping[int, RawDataElement | DataElement]
Encodings = str | tuple[str, ...]


def kept_of(dataset: Dataset) -> tuple[Elements, Encodings]:
    """What read_kept and read_listed read of a dataset pydicom read."""
    # keep_deferred: an empty value stays None rather than converted by get_item.
    found = {tag: dataset.get_item(tag, keep_deferred=True) for tag in WANTED}
    elements = {tag: element for tag, element in found.items() if element is not None}
    return elements, encodings_of(dataset)


def encodings_of(dataset: Dataset) -> Encodings:
    encodings = dataset.original_character_set
    return encodings if isinstance(encodings, str) else tuple(encodings)


def read_kept(
    elements: Elements, encodings: Encodings
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """(facts by keyword, required tags missing or empty, invalid tags -> what is wrong)."""
    facts: dict[str, Any] = {}
    missing: list[str] = []
    invalid: dict[str, str] = {}
    for keyword, (tag, vr, _) in _ELEMENTS.items():
        try:
            element = elements.get(tag)
            if element is None:
                fact = None
            elif not isinstance(element, RawDataElement) or element.VR not in (None, vr, "UN"):
                # (not raw: read as a sequence of undefined length)
                raise _Unusable(f"VR {element.VR}, expected {vr}")
            else:
                value = element.value
                if value is not None and len(value) > MAX_VALUE_BYTES:
                    raise _Unusable(
                        f"a value of {len(value):,} bytes (at most {MAX_VALUE_BYTES:,})"
                    )
                fact = _kept(keyword, value, element.is_little_endian, encodings)
            if fact is None:
                if keyword in REQUIRED_TAGS:
                    missing.append(keyword)
                continue
            facts[keyword] = fact
        except Exception as exc:  # pydicom's validation, ours, a charset it cannot look up
            invalid[keyword] = _reason(exc)
    return facts, missing, invalid


# Most kept values repeat from one instance of a series to the next (UIDs of the study and
# series, patient, geometry but the position, size): each distinct value is decoded and
# checked once. Only values that pass are remembered (an exception is raised again each
# time); a value is at most MAX_VALUE_BYTES.
@functools.lru_cache(maxsize=4096)
def _kept(keyword: str, value: bytes | None, little: bool, encodings: Encodings) -> Any:
    """The fact a kept element's value gives; None when its value is empty."""
    _, vr, check = _ELEMENTS[keyword]
    values = _decode(vr, value, little, encodings)
    return None if values is None else check(values)


def forget() -> None:
    """Empty the caches of decoded values (a benchmark's rounds each start cold)."""
    _kept.cache_clear()
    _listed.cache_clear()


def _reason(exc: Exception) -> str:
    """What is wrong with a value: our own words, or pydicom's without its link to PS3.5
    (nor its advice to lower the validation mode)."""
    if isinstance(exc, _Unusable):
        return str(exc)
    text = re.split(r" Please see <| Set 'config\.| Use a smaller string", str(exc))[0].strip()
    if text and len(text) <= 200:
        return text
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"cannot be read ({type(exc).__name__}: {text})" if text else type(exc).__name__


class _Unusable(ValueError):
    pass


def _decode(vr: str, value: bytes | None, little: bool, encodings: Encodings) -> list[Any] | None:
    """The element's values decoded and validated by pydicom; None when empty.

    Its VR is `vr` (the DICOM dictionary's) or UN; pydicom decodes the bytes as `vr`,
    each value checked in validation mode RAISE.
    """
    if value is None:
        return None
    if vr == "US":
        if not value:
            return None
        numbers = convert_numbers(value, little, "H")
        decoded = list(numbers) if isinstance(numbers, list | tuple) else [numbers]
        for number in decoded:
            validate_value("US", number, config.RAISE)
        return decoded
    if not value.strip(b" \x00"):
        return None
    if vr == "LO":
        text = convert_text(
            value, [encodings] if isinstance(encodings, str) else list(encodings), vr
        )
        decoded = [text] if isinstance(text, str) else list(text)
        for one in decoded:
            validate_value("LO", one, config.RAISE)
        return decoded
    # As pydicom's multi_string splits them (without its MultiValue container).
    make = _TEXT[vr]
    return [make(text) for text in value.decode(default_encoding).rstrip(" \x00").split("\\")]


def _ds(text: str) -> float | str:
    # What pydicom's DS() checks in mode RAISE (length, PS3.5's spelling), once: DSfloat
    # would check the same again. A blank value stays "", as DS() leaves it.
    if not text.strip(" "):
        return text
    if not _accepted("DS", text):
        validate_value("DS", text, config.RAISE)  # raises with pydicom's message
    return float(text)


def _ui(text: str) -> str:
    # UID(text, RAISE) checks, then strips: a value that passes has nothing to strip.
    return text if _accepted("UI", text) else UID(text, config.RAISE)


def _accepted(vr: str, text: str) -> bool:
    """Whether pydicom's validator of this VR (`validate_length_and_type_and_regex`, for DS
    and UI) takes a str, with its own table of lengths and its own patterns. The values
    unique to each instance (its SOP UID, its position) are checked this way: the same
    answer without the call chain and message building, which were ~10% of the service's
    samples end to end; pydicom is asked only for a value it refuses, for its message."""
    if len(text) > MAX_VALUE_LEN[vr]:
        return False
    return not text or (STR_VR_REGEXES[vr].match(text) is not None and text[-1] != "\n")


def _cs(text: str) -> str:
    validate_value("CS", text, config.RAISE)
    return text


# How pydicom makes each value of these VRs, validating it (mode RAISE) as it does.
_TEXT: Final[dict[str, Callable[[str], Any]]] = {
    "UI": _ui,
    "CS": _cs,
    "IS": lambda text: IS(text, config.RAISE),
    "DS": _ds,
}


def _count(values: list[Any], count: int) -> list[Any]:
    if len(values) != count:
        expected = "one value" if count == 1 else f"{count} values"
        raise _Unusable(f"expected {expected}, found {len(values)}")
    return values


def _at_least_one(values: list[Any]) -> int:
    (number,) = _count(values, 1)
    if number < 1:
        raise _Unusable(f"{number} is outside 1..65535")
    return int(number)


def _text(values: list[Any]) -> str:
    (text,) = _count(values, 1)
    text = str(text).strip(" \x00")
    if _CONTROL.search(text):
        raise _Unusable(f"control characters in {_preview(text)}")
    return text


def _integer(values: list[Any]) -> int:
    (number,) = _count(values, 1)
    if not isinstance(number, int):  # pydicom keeps an empty value as ""
        raise _Unusable("an empty value")
    return int(number)


def _decimals(values: list[Any], count: int) -> tuple[float, ...]:
    numbers = []
    for value in _count(values, count):
        if not isinstance(value, float):  # pydicom keeps an empty value as ""
            raise _Unusable(f"an empty value among {count}")
        if not math.isfinite(value):
            raise _Unusable(f"{_preview(str(value))} is not a finite number")
        numbers.append(float(value))
    return tuple(numbers)


def _position(values: list[Any]) -> tuple[float, float, float]:
    x, y, z = _decimals(values, 3)
    if max(abs(x), abs(y), abs(z)) > MAX_POSITION_MM:
        raise _Unusable(f"({x:g}, {y:g}, {z:g}) is further than {MAX_POSITION_MM:g} mm out")
    return x, y, z


def _orientation(values: list[Any]) -> tuple[float, float, float, float, float, float]:
    rx, ry, rz, cx, cy, cz = _decimals(values, 6)
    if not orthonormal((rx, ry, rz, cx, cy, cz)):
        raise _Unusable("the row and column directions must be orthogonal unit vectors")
    return rx, ry, rz, cx, cy, cz


def _thickness(values: list[Any]) -> float:
    (thickness,) = _decimals(values, 1)
    if not 0 <= thickness <= MAX_LENGTH_MM:
        raise _Unusable(f"{thickness:g} is outside 0..{MAX_LENGTH_MM:g} mm")
    return thickness


def _spacing(values: list[Any]) -> tuple[float, float]:
    rows, columns = _decimals(values, 2)
    if not (0 < rows <= MAX_LENGTH_MM and 0 < columns <= MAX_LENGTH_MM):
        raise _Unusable(f"({rows:g}, {columns:g}) must be above 0 and at most {MAX_LENGTH_MM:g}")
    return rows, columns


def _preview(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:  # pragma: no cover - a typo in this module
        raise LookupError(keyword)
    return tag


# keyword -> (tag, VR, check). Order of the messages: required tags first, as REQUIRED_TAGS.
_ELEMENTS: Final[dict[str, tuple[int, str, Callable[[list[Any]], Any]]]] = {
    keyword: (_tag(keyword), vr, check)
    for keyword, vr, check in (
        ("Rows", "US", _at_least_one),
        ("Columns", "US", _at_least_one),
        ("StudyInstanceUID", "UI", _text),
        ("SeriesInstanceUID", "UI", _text),
        ("SOPInstanceUID", "UI", _text),
        ("PatientID", "LO", _text),
        ("Modality", "CS", _text),
        ("InstanceNumber", "IS", _integer),
        ("ImageOrientationPatient", "DS", _orientation),
        ("ImagePositionPatient", "DS", _position),
        ("PixelSpacing", "DS", _spacing),
        ("SliceThickness", "DS", _thickness),
    )
}
# What a viewer's study list shows and searches by (QIDO-RS): kept as text when it reads
# cleanly, left out when it does not. None of it decides anything, so a bad value here
# never refuses an instance. keyword -> VR.
LISTED: Final[dict[str, str]] = {
    "PatientName": "PN",
    "PatientBirthDate": "DA",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "StudyDescription": "LO",
    "StudyID": "SH",
    "AccessionNumber": "SH",
    "ReferringPhysicianName": "PN",
    "SeriesNumber": "IS",
    "SeriesDescription": "LO",
    "SOPClassUID": "UI",
}
# The longest listed text kept (PN's component groups are 64 characters each).
MAX_LISTED = 200


def read_listed(elements: Elements, encodings: Encodings) -> dict[str, str]:
    """The listed elements present, each decoded by pydicom in the file's character
    set and validated in mode RAISE, as text; one that does not is left out."""
    found: dict[str, str] = {}
    for keyword, vr in LISTED.items():
        element = elements.get(_LISTED_TAGS[keyword])
        if not isinstance(element, RawDataElement) or not element.value:
            continue
        if element.VR not in (None, vr, "UN") or len(element.value) > MAX_VALUE_BYTES:
            continue
        value = _listed(vr, element.value, encodings)
        if value is not None:
            found[keyword] = value
    return found


@functools.lru_cache(maxsize=4096)  # as _kept: most repeat from one instance to the next
def _listed(vr: str, raw: bytes, encodings: Encodings) -> str | None:
    try:
        if vr in ("PN", "LO", "SH"):  # in the file's character set
            text = convert_text(
                raw, [encodings] if isinstance(encodings, str) else list(encodings), vr
            )
            value = str(text if isinstance(text, str) else "\\".join(map(str, text)))
        else:  # the default repertoire
            value = raw.decode(default_encoding)
        value = value.strip(" \x00")
        validate_value(vr, value, config.RAISE)
    except Exception:  # any value pydicom cannot read is only left out
        return None
    if value and len(value) <= MAX_LISTED and not _CONTROL.search(value):
        return value
    return None


_LISTED_TAGS: Final = {keyword: _tag(keyword) for keyword in LISTED}
#: Passed to read_partial as `specific_tags`: every other element is skipped, not kept.
WANTED: Final = [tag for tag, _, _ in _ELEMENTS.values()] + [_tag(k) for k in LISTED]
