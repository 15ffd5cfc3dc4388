"""One DICOM file's kept headers, read by pydicom: an `Instance`, or a `Rejected` naming why not.

`read_instance` first tries the lean walk of `services.dicom.lean` (the common file, found
without pydicom's reader: the same raw elements, or nothing); otherwise, and for every
rejection, it parses the headers with pydicom (`read_partial`, stopping at the pixel data,
only the kept tags stored). Either way it decodes each kept element with pydicom's own decoders and
checks it in pydicom's validation mode `RAISE` (VR, length, characters, DS/IS/UI syntax),
then against this context's rules (value counts, ranges, geometry). It checks that pixel
data is present and whole without reading it: a defined length must fit in the file, and
encapsulated fragments are walked by pydicom's `parse_fragments` (item headers only) to
their sequence delimiter. Frame counts and dimensions, where needed, come from the header
elements (Rows, Columns), never from the pixel data.

Every file costs at most `max_seconds` and `max_header_bytes` (the bytes before its pixel
data); beyond either it is refused (`read_too_slow`, `header_too_large`). It never raises
because of the bytes it is given. No I/O beyond reading the source it is handed.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Final, NoReturn, cast

import pydicom
import pydicom.config
from pydicom.encaps import parse_fragments
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag

from services.dicom import lean, ranged, tags
from services.dicom.domain import (
    PIXEL_DATA,
    Instance,
    Rejected,
)

# pydicom checks each value it reads against its VR and warns (and logs) when one is
# odd; the reader checks the tags it keeps itself and words every rejection, so the
# checks are skipped (the values read are the same). What pydicom still warns about
# (charsets, for one: UserWarnings) is filtered by module, once for the process:
# `catch_warnings` around each read is not thread-safe (headers are read on 8 threads)
# and could leave a process-wide "ignore everything" behind.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
warnings.filterwarnings("ignore", category=UserWarning, module=r"(pydicom|services\.dicom)(\.|$)")

#: Wall-clock time one file's headers may take to read (a hostile file's thousands of
#: sequences or fragments are refused, not read for minutes).
MAX_SECONDS: Final = 5.0
#: Bytes before the pixel data that pydicom may parse (sequences it parses are held in
#: memory); real headers are kilobytes, an enhanced multi-frame one a few megabytes.
MAX_HEADER_BYTES: Final = 64 * 1024 * 1024

#: Ranged reads of item headers that may settle a compressed file's fragments on S3
#: (`read_head`): one a MiB of the file (an S3 request's round trip costs about as much
#: as a MiB's transfer, so a walk that needs more reads than that is slower than the
#: whole download), at least one (the delimiter's, after a single fragment: no more
#: requests than the whole copy), at most MAX_FRAGMENT_READS. A file with more
#: fragments (a multi-frame's, a bitstream cut small) is read whole, as before.
MAX_FRAGMENT_READS: Final = 64
FRAGMENT_READ_BYTES: Final = 1024 * 1024

_PIXEL_TAGS: Final = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # integer, float, double

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]


def read_instance(
    source: Source,
    *,
    max_seconds: float = MAX_SECONDS,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> Instance | Rejected:
    """The instance in one DICOM file, or why it is not accepted. Reads headers only.

    `source` is a file path, the file's bytes, or a seekable binary stream (read from its
    current position to its end; left open, at an unspecified position).

    Only the DICOM File Format (PS3.10) is accepted: a 128-byte preamble, "DICM", then the
    File Meta Information. A file without them is `not_dicom`: pydicom's `force=True` is not
    used, because it parses any bytes at all as a dataset of sorts, and ingest recognises
    DICOM by the same "DICM" at byte 128. Deflated Explicit VR Little Endian is
    `unsupported_transfer_syntax`: reading its headers means inflating the whole dataset in
    memory, which a small file can make huge.

    Besides the required tags, an instance must carry pixel data (PixelData, FloatPixelData
    or DoubleFloatPixelData; its value is never read): a file cut before its pixels shows as
    `missing_tags` naming `PixelData`; one cut within them is `truncated`. A required tag
    that is present but empty counts as missing. A kept tag whose value is unusable is
    `invalid_tags`, naming each and what is wrong: a VR other than the DICOM dictionary's
    (UN aside), a value pydicom's validation refuses (its message), the wrong number of
    values, out of range, not finite, an orientation whose directions are not orthogonal
    unit vectors, a value over MAX_VALUE_BYTES. It applies to the optional tags too, so bad
    geometry never passes for good. When a file has several problems, the code is the first
    of `missing_tags`, `truncated` (or `malformed_dicom` for pixel data that is no item
    sequence), `invalid_tags`, and `details` lists every one found.

    Whatever pydicom raises while reading ends as `malformed_dicom`, naming the error.
    Errors of the source itself (a path that cannot be opened, a failing read) propagate
    unchanged: they say nothing about the file. pydicom's warnings are filtered (see the
    top of the module).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _read_stream(io.BytesIO(source), max_seconds, max_header_bytes)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as stream:
            return _read_stream(stream, max_seconds, max_header_bytes)
    return _read_stream(source, max_seconds, max_header_bytes)


class _Deflated(Exception):
    """pydicom asked for the rest of the file: it is about to inflate a deflated dataset."""


class _OverLimit(Exception):
    def __init__(self, code: str, message: str, details: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.rejected = Rejected(code, message, details)


class _Source:
    """The stream as pydicom reads it: capped reads, the file's budget, the stream's errors.

    A read past the end returns what is left without asking for more (a stated length of
    4 GiB must not allocate 4 GiB). Every read and seek checks the deadline, and while the
    headers are read, how far into the file they reach. An OSError of the stream's read is
    remembered, so that it is raised again as it is rather than passed off as malformed.
    """

    def __init__(
        self,
        raw: IO[bytes],
        max_seconds: float,
        max_header_bytes: int,
        deadline: float | None = None,
    ) -> None:
        self._raw = raw
        self.error: OSError | None = None
        self.over: _OverLimit | None = None  # the first cap reached
        self.start = raw.tell()
        self.end = raw.seek(0, io.SEEK_END)
        # The position is kept here: pydicom asks for it at every element, and a buffered
        # file's own tell() costs more than this attribute.
        self.pos = raw.seek(self.start)
        self.max_seconds = max_seconds
        self.deadline = time.monotonic() + max_seconds if deadline is None else deadline
        self.max_header_bytes = max_header_bytes
        self.header_limit = self.start + max_header_bytes
        self.short = False  # the last read came up short: the file ended
        self.last_end = self.pos  # where the last read ended

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise _Deflated  # only pydicom's deflate path reads the whole rest of a file
        if time.monotonic() > self.deadline:
            self._too_slow()
        wanted = size
        size = min(size, self.end - self.pos)
        if self.pos + size > self.header_limit:
            self._over(
                "header_too_large",
                f"the headers before the pixel data exceed {self.max_header_bytes:,} bytes",
                {"max_header_bytes": self.max_header_bytes},
            )
        self.short = size < wanted
        if size <= 0:
            return b""
        try:
            data = self._raw.read(size)
        except OSError as exc:
            self.error = exc
            raise
        self.pos += len(data)
        self.last_end = self.pos
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # (no deadline here: whoever seeks, pydicom or parse_fragments, reads next)
        self.pos = self._raw.seek(offset, whence)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _over(self, code: str, message: str, details: Mapping[str, Any]) -> NoReturn:
        self.over = self.over or _OverLimit(code, message, details)
        raise self.over

    def _too_slow(self) -> None:
        self._over(
            "read_too_slow",
            f"its headers take more than {self.max_seconds:g} s to read",
            {"max_seconds": self.max_seconds},
        )


@dataclass
class _PixelElement:
    """The pixel data element's header, as pydicom read it before it stopped."""

    length: int = 0
    value_at: int = 0
    found: bool = False
    at: int = 0  # where the element starts (pydicom seeks back there when it stops)

    def stop(self, source: _Source) -> Callable[[BaseTag, str | None, int], bool]:
        def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
            if tag not in _PIXEL_TAGS:
                return False
            self.found, self.length, self.value_at = True, length, source.pos
            return True

        return at_pixels


def _read_stream(raw: IO[bytes], max_seconds: float, max_header_bytes: int) -> Instance | Rejected:
    start, deadline = raw.tell(), time.monotonic() + max_seconds
    found = _read_lean(raw, max_seconds, max_header_bytes, deadline)
    if found is not None:
        return found
    raw.seek(start)
    # One time cap a file: pydicom gets what the lean walk left of it (a hostile file's
    # fragments walked by both would otherwise take twice the cap).
    return _read_with_pydicom(raw, max_seconds, max_header_bytes, deadline)


def _read_lean(
    raw: IO[bytes], max_seconds: float, max_header_bytes: int, deadline: float | None = None
) -> Instance | None:
    """The instance, when the lean walk takes the file and every kept tag is good; None
    sends the file to pydicom (which words every rejection)."""
    start = raw.tell()
    size = raw.seek(0, io.SEEK_END) - start
    raw.seek(start)
    head = raw.read(min(size, lean.FIRST_BYTES))
    try:
        walked = _walk(head, size, raw.read, max_header_bytes)
        if walked is None:
            return None
        kept, facts = walked
        if kept.encapsulated_at is not None:
            raw.seek(start)
            if not _fragments_whole(
                raw, kept.encapsulated_at, max_seconds, max_header_bytes, deadline
            ):
                return None
        return _instance(facts, tags.read_listed(kept.elements, kept.encodings))
    except Exception:  # any doubt: pydicom reads it, and says what is wrong
        return None


def read_head(
    head: bytes,
    size: int,
    read_at: Callable[[int, int], bytes],
    *,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> Instance | None:
    """The instance in a file known by its first bytes and its size only (a blob in S3,
    read by range), when the lean walk takes it and its pixel data is native, or
    encapsulated in fragments shown whole by a few ranged reads of their item headers
    (`fragment_reads`): then exactly what `read_instance` of the whole file gives. None
    otherwise: the caller reads the whole file with `read_instance` (more fragments than
    that, a file the walk leaves to pydicom, every rejection).

    `head` is the file's first min(size, lean.FIRST_BYTES) bytes; `read_at(offset,
    length)` reads on, up to lean.PREFIX_BYTES in all, when the walk runs out of them,
    and an item header's 8 bytes where each fragment ends. Its errors are raised as they
    are (they say nothing about the file).
    """
    if len(head) != min(size, lean.FIRST_BYTES):
        return None

    def more(length: int) -> bytes:
        try:
            data = read_at(len(head), length)
        except Exception as error:
            raise _ReadFailed(error) from error
        if len(data) != length:
            raise ValueError("a short read")  # in doubt: the whole file is read
        return data

    try:
        walked = _walk(head, size, more, max_header_bytes)
        if walked is None:
            return None
        kept, facts = walked
        at = kept.encapsulated_at
        if at is not None and not _fragments_ranged(head, size, read_at, at, max_header_bytes):
            return None
        return _instance(facts, tags.read_listed(kept.elements, kept.encodings))
    except _ReadFailed as failed:
        raise failed.error from None
    except Exception:  # any doubt: the whole file is read
        return None


def fragment_reads(size: int) -> int:
    """How many item headers of a compressed file of `size` bytes may be read by range."""
    return max(1, min(MAX_FRAGMENT_READS, size // FRAGMENT_READ_BYTES))


def _fragments_ranged(
    head: bytes,
    size: int,
    read_at: Callable[[int, int], bytes],
    value_at: int,
    max_header_bytes: int,
) -> bool:
    """`_fragments_whole` over the file read by range: each fragment's 8-byte item header
    fetched and its value skipped, at most `fragment_reads(size)` fetches past `head`. False
    when that does not show the fragments whole (past the bound, a short read, any
    problem): the whole file is then read, and worded, as a local store's is."""
    source = ranged.Ranged(read_at, size, head, max_reads=fragment_reads(size), forward=False)
    whole = _fragments_whole(cast(IO[bytes], source), value_at, MAX_SECONDS, max_header_bytes)
    if source.failed is not None:
        raise _ReadFailed(source.failed)
    return whole


class _ReadFailed(Exception):
    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _walk(
    head: bytes, size: int, more: Callable[[int], bytes], max_header_bytes: int
) -> tuple[lean.Kept, dict[str, Any]] | None:
    """The lean walk over the file's first bytes (`head`, `more(n)` the next n), and its
    kept tags' facts; None when the walk does not take the file or a tag is missing or
    invalid. Raises whatever the walk, the decoding or `more` raises."""
    kept = lean.kept_elements(head, size, max_header_bytes)
    if kept is None and len(head) < min(size, lean.PREFIX_BYTES):
        # The walk may have stopped for want of bytes only (it cannot tell): once more
        # on the whole prefix, a cost only headers past FIRST_BYTES and files the walk
        # does not take pay (these walk a few bytes before they stop, or go to pydicom).
        head += more(min(size, lean.PREFIX_BYTES) - len(head))
        kept = lean.kept_elements(head, size, max_header_bytes)
    if kept is None:
        return None
    facts, missing, invalid = tags.read_kept(kept.elements, kept.encodings)
    if missing or invalid:
        return None
    return kept, facts


def _fragments_whole(
    raw: IO[bytes],
    value_at: int,
    max_seconds: float,
    max_header_bytes: int,
    deadline: float | None = None,
) -> bool:
    """Whether encapsulated pixel data whose value starts at `value_at` is whole, walked as
    after pydicom's reading (`_pixel_data`); any problem is worded by that reading."""
    source = _Source(raw, max_seconds, max_header_bytes, deadline)
    source.header_limit = source.end
    pixel = _PixelElement(length=0xFFFFFFFF, value_at=source.start + value_at, found=True)
    pixels = _pixel_data(source, pixel, True)
    return (
        source.error is None
        and source.over is None
        and not pixels.absent
        and pixels.problem is None
    )


def _read_with_pydicom(
    raw: IO[bytes], max_seconds: float, max_header_bytes: int, deadline: float | None = None
) -> Instance | Rejected:
    source = _Source(raw, max_seconds, max_header_bytes, deadline)
    try:
        found = _read(source)
    except _Deflated:
        return Rejected(
            "unsupported_transfer_syntax",
            "Deflated Explicit VR Little Endian is not accepted: its headers can only be read"
            " by inflating the whole dataset; store it uncompressed or with an image codec",
            {"transfer_syntax": str(pydicom.uid.DeflatedExplicitVRLittleEndian)},
        )
    except _OverLimit as over:
        return over.rejected
    except Exception as exc:
        if source.error is not None:
            raise source.error from None
        return Rejected(
            "malformed_dicom",
            f"malformed DICOM: its headers cannot be read ({_describe(exc)})",
            {"error": type(exc).__name__},
        )
    # pydicom swallows some errors of the stream (parse_fragments ends its walk at any
    # failed read): a cap reached or a read that failed stands even then.
    if source.error is not None:
        raise source.error
    if source.over is not None:
        return source.over.rejected
    return found


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
    pixel = _PixelElement()
    dataset = read_partial(
        source,  # type: ignore[arg-type]  # a reader: read, seek and tell
        stop_when=pixel.stop(source),
        specific_tags=tags.WANTED,
    )
    source.header_limit = source.end  # the pixel data is walked, not parsed into memory
    pixel.at = source.pos
    pixels = _pixel_data(source, pixel, bool(dataset.original_encoding[1]))

    elements, encodings = tags.kept_of(dataset)
    facts, missing, invalid = tags.read_kept(elements, encodings)
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
    return _instance(facts, tags.read_listed(elements, encodings))


def _instance(facts: Mapping[str, Any], listed: dict[str, str]) -> Instance:
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
        listed=listed,
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


# --- The pixel data element: present and whole, never read ----------------------------------


@dataclass(frozen=True, slots=True)
class _Pixels:
    absent: bool = False
    code: str = "truncated"
    problem: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def _pixel_data(source: _Source, pixel: _PixelElement, little: bool) -> _Pixels:
    if not pixel.found or pixel.length == 0:
        # pydicom ended (the file's end, or a stray delimiter at the top level) without
        # reaching pixel data, or found it empty: no pixels is no pixel data.
        return _Pixels(absent=True)
    if pixel.length != 0xFFFFFFFF:
        available = source.end - pixel.value_at
        if pixel.length > available:
            return _Pixels(
                problem=f"truncated: Pixel Data at byte {pixel.at - source.start} states"
                f" {pixel.length:,} bytes, but the file ends {available:,} bytes after its"
                " header",
                details={"expected_bytes": pixel.length, "available_bytes": available},
            )
        return _Pixels()
    # Encapsulated: pydicom walks the fragments' item headers, seeking over their contents,
    # and stops at the sequence delimiter (or quietly at the end of the file).
    source.seek(pixel.value_at)
    truncated = _Pixels(
        problem=f"truncated: the file ends at byte {source.end - source.start:,} within the"
        f" encapsulated Pixel Data (whose value starts at byte"
        f" {pixel.value_at - source.start:,})"
    )
    try:
        parse_fragments(source, endianness="<" if little else ">")
    except ValueError as exc:
        if source.short:
            return truncated
        return _Pixels(
            code="malformed_dicom",
            problem=f"malformed DICOM: the encapsulated Pixel Data has no item where one must"
            f" be ({_describe(exc)})",
        )
    # It seeks back to the start when done: `short` tells whether the end came first, and
    # the last read was the delimiter's tag, whose 4-byte length must follow.
    if source.short or source.end - source.last_end < 4:
        return truncated
    return _Pixels()
