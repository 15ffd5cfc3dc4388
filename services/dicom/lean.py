"""The common DICOM file's kept elements, found without pydicom's reader; pydicom for the rest.

Why hand-written (the handbook prefers a library for parsing): in the end-to-end benchmark
(`bench.dicom`), reading headers was about 60% of the DICOM service's CPU, and pydicom's
`read_partial` (preamble, file meta, the transfer syntax's guesses, an element generator
with its seeks and tells through our capped stream) most of that: 353 µs an instance
against 204 for a bare `dcmread(stop_before_pixels=True)`. This walk does the one thing
that case needs, on bytes already in memory: see bench/README.md ("dicom") for the
figures before and after.

It takes only the common case and gives the exact raw elements pydicom would have kept:
the DICOM File Format with a file meta group that starts with its group length, a
transfer syntax whose dataset is Explicit VR Little Endian (native or encapsulated), no
command set, every top-level element of a known VR, tags strictly ascending, defined
lengths (or sequences of undefined length, walked item by item as pydicom parses them, and
dropped), everything up to the pixel data's header within the bytes it is given, and
pixel data of a defined, non-zero length that fits in the file, or encapsulated (its
fragments then walked by the reader, by the same code as after pydicom's reading).
Anything else, or anything it doubts, is `None`: the caller reads the file with pydicom,
which stays the reference (tests/unit/test_dicom_lean.py holds this walk to it, file by
file, on fixtures and mutated ones) and the only source of every rejection's wording.
The kept elements are pydicom's `RawDataElement`s, as its reader makes them, so that they
are decoded and validated by the same code (`tags.read_kept`) whichever way they were found.
"""

from __future__ import annotations

import functools
import re
from struct import Struct
from typing import Final, NamedTuple, cast

from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import PrivateTransferSyntaxes
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from services.dicom import tags

#: How much of a file is read for this walk: real headers are a few KiB; a file whose
#: pixel data starts further in (large private blocks, enhanced multi-frame) goes to pydicom.
PREFIX_BYTES: Final = 64 * 1024
#: What is read first: most headers end well within it (a CT slice's ~1 KiB, a vendor's
#: private blocks a few more). A walk that runs out of it is tried again on PREFIX_BYTES:
#: reading 64 KiB of every 512x512 slice copied 131 MB a 2,000-slice upload for headers
#: of 714 bytes.
FIRST_BYTES: Final = 16 * 1024

# Implicit VR Little Endian, Explicit VR Big Endian, Deflated Explicit VR Little Endian.
_OTHER_ENCODINGS: Final = frozenset(
    {b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.1.99"}
)
_UID = re.compile(rb"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")
_ELEMENT = Struct("<HH2sH").unpack_from
_LENGTH = Struct("<L").unpack_from
# The VRs pydicom knows, as it names them (a str) from their two bytes.
_VRS: Final = {str(vr.value).encode(): str(vr.value) for vr in VR if len(vr.value) == 2}
_LONG: Final = frozenset(str(vr.value).encode() for vr in EXPLICIT_VR_LENGTH_32)
# What read_partial keeps with `specific_tags=tags.WANTED` (it adds the character set).
_CHARSET: Final = 0x00080005
_KEPT: Final = frozenset(tags.WANTED) | {_CHARSET}
_PIXEL_TAGS: Final = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_UNDEFINED: Final = 0xFFFFFFFF


class Kept(NamedTuple):
    elements: dict[int, RawDataElement]
    encodings: tags.Encodings
    # Where encapsulated pixel data's value starts (its fragments not walked yet), or None:
    # native pixel data, whole.
    encapsulated_at: int | None


def kept_elements(head: bytes, size: int, max_header_bytes: int) -> Kept | None:
    """The kept elements of a file whose first bytes are `head` (of `size` in all), as
    pydicom's `read_partial` would keep them, once its native pixel data is known to be
    whole; None when the file is not the common case this walk takes (pydicom reads it)."""
    end = len(head)
    if end < 144 or head[128:132] != b"DICM":
        return None
    at = 132
    # The file meta group: its group length first, then (0002,0010) must name Explicit VR
    # Little Endian (pydicom reads the group until a tag of another group).
    syntax = None
    last = -1
    while True:
        if at + 8 > end:
            return None
        group, number, code, length = _ELEMENT(head, at)
        if group != 2:
            break
        tag = group << 16 | number
        if tag <= last or code not in _VRS:
            return None
        if last < 0 and not (number == 0 and code == b"UL" and length == 4):
            return None
        last = tag
        at += 8
        if code in _LONG:
            if at + 4 > end:
                return None
            (length,) = _LENGTH(head, at)
            at += 4
        if length == _UNDEFINED or at + length > end:
            return None
        if number == 0x0010:
            if code != b"UI":  # pydicom converts it by its VR: another may raise there
                return None
            syntax = head[at : at + length]
        at += length
    if syntax is None or group == 0:  # group 0: a command set
        return None
    syntax = syntax[:-1] if syntax.endswith(b"\0") else syntax
    # pydicom reads the dataset as Explicit VR Little Endian under every syntax but these
    # (and syntaxes registered as private): a UID of digits and dots compares as it is.
    if syntax in _OTHER_ENCODINGS or not _UID.fullmatch(syntax) or PrivateTransferSyntaxes:
        return None

    kept: dict[int, RawDataElement] = {}
    last = -1
    while True:
        if at + 8 > end:
            return None
        group, number, code, length = _ELEMENT(head, at)
        tag = group << 16 | number
        vr = _VRS.get(code)
        if tag <= last or vr is None or group == 0xFFFE:
            return None
        last = tag
        value_at = at + 8
        if code in _LONG:
            if value_at + 4 > end:
                return None
            (length,) = _LENGTH(head, value_at)
            value_at += 4
        if tag in _PIXEL_TAGS:
            # Present and whole (encapsulated: the caller walks its fragments), or pydicom
            # says what is wrong (empty, truncated, beyond the header budget).
            if length == 0 or value_at > max_header_bytes:
                return None
            if length != _UNDEFINED and value_at + length > size:
                return None
            charset = kept.get(_CHARSET)
            encodings = _encodings(*((charset.VR, charset.value) if charset else (None, None)))
            return Kept(kept, encodings, value_at if length == _UNDEFINED else None)
        if length == _UNDEFINED:
            # A sequence of undefined length that is not kept: pydicom parses it to its
            # delimiter and drops it; here it is walked the same way, or left to pydicom.
            if code != b"SQ" or tag in _KEPT:
                return None
            after = _sequence_end(head, value_at, 0)
            if after is None:
                return None
            at = after
            continue
        if value_at + length > end:
            return None
        if tag in _KEPT:
            value = head[value_at : value_at + length] if length else _empty(vr)
            kept[tag] = RawDataElement(BaseTag(tag), vr, length, value, value_at, False, True)
        at = value_at + length


# How deep sequences may nest before the walk leaves a file to pydicom.
_MAX_DEPTH: Final = 8
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQUENCE_END: Final = 0xFFFEE0DD
_TAG_AND_LENGTH = Struct("<HHL").unpack_from


def _sequence_end(head: bytes, at: int, depth: int) -> int | None:
    """Where a sequence of undefined length whose items start at `at` ends (after its
    delimiter), read as pydicom's `read_sequence` reads it: items of Explicit VR elements
    of known VRs, each item of a defined length ending exactly where its elements do, or of
    undefined length ending at its delimiter; None for anything else (pydicom reads it)."""
    end = len(head)
    if depth > _MAX_DEPTH:
        return None
    while True:
        if at + 8 > end:
            return None
        group, number, length = _TAG_AND_LENGTH(head, at)
        tag = group << 16 | number
        at += 8
        if tag == _SEQUENCE_END:
            return at
        if tag != _ITEM:
            return None
        if length == _UNDEFINED:
            after = _item_end(head, at, None, depth)
        elif at + length > end:
            return None
        else:
            after = _item_end(head, at, at + length, depth)
        if after is None:
            return None
        at = after


def _item_end(head: bytes, at: int, stop: int | None, depth: int) -> int | None:
    """Where an item's elements end: at `stop` exactly (a defined length), or after its
    delimiter (undefined)."""
    end = len(head)
    while stop is None or at < stop:
        if at + 8 > end:
            return None
        group, number, code, length = _ELEMENT(head, at)
        tag = group << 16 | number
        if stop is None and tag == _ITEM_END:
            return at + 8  # pydicom reads it as an element header: 8 bytes
        # A character set within an item changes how pydicom decodes the rest of it.
        if group == 0xFFFE or code not in _VRS or tag == _CHARSET:
            return None
        value_at = at + 8
        if code in _LONG:
            if value_at + 4 > end:
                return None
            (length,) = _LENGTH(head, value_at)
            value_at += 4
        if length == _UNDEFINED:
            if code != b"SQ":
                return None
            after = _sequence_end(head, value_at, depth + 1)
            if after is None:
                return None
            at = after
            continue
        if value_at + length > end:
            return None
        at = value_at + length
    return at if at == stop else None


def _empty(vr: str) -> bytes | None:
    # What read_partial keeps for an empty value (b"" or None: raw, it is never text).
    return cast(bytes | None, empty_value_for_VR(vr, raw=True))


@functools.lru_cache(maxsize=256)
def _encodings(vr: str | None, value: bytes | None) -> tags.Encodings:
    # As read_partial leaves the dataset's character set (pydicom's own conversion, with
    # its fallbacks and warnings), once for each (0008,0005) value seen.
    tag = BaseTag(_CHARSET)
    length = len(value or b"")
    raw = RawDataElement(tag, vr, length, value, 0, False, True)
    if vr is not None:  # read_dataset converts it first, on its own: it may raise there
        convert_encodings(convert_raw_data_element(raw).value)
    dataset = Dataset({} if vr is None else {tag: raw})
    dataset.set_original_encoding(False, True, dataset._character_set)
    return tags.encodings_of(dataset)
