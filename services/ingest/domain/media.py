"""What a file is, decided from its bytes, and the media facts its headers state.

Everything here parses untrusted headers. Every loop is bounded, every read is capped, and a
damaged header only costs the facts it would have given: the one error that escapes is
UnknownContent, raised when the kind itself is not one we accept.
"""

from __future__ import annotations

import codecs
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal, ParamSpec, TypeVar

__all__ = ["HEAD_SIZE", "Media", "UnknownContent", "inspect", "sniff"]

HEAD_SIZE = 64 * 1024  # how many leading bytes sniff() needs at most

_MAX_READ = 1024 * 1024  # largest single read_at() call
_MAX_READS = 128  # read_at() calls per inspect()
_WINDOW = 64 * 1024  # small reads are served from a cached window of at least this size
_MAX_ITEMS = 512  # boxes, chunks, elements or segments visited in one container
_MAX_JPEG_STEPS = 4096  # marker and fill-byte steps before giving up on a JPEG

_P = ParamSpec("_P")
_T = TypeVar("_T")
_ByteOrder = Literal["big", "little"]


class UnknownContent(ValueError):
    """The bytes are not of a kind we accept."""


@dataclass(frozen=True)
class Media:
    """What inspect() found; a fact the headers do not state (or state unreadably) is None."""

    kind: str  # "image" | "video" | "pdf" | "audio" | "text"
    mime_type: str  # e.g. "image/png", "video/mp4", "application/pdf", "audio/mpeg", "text/plain"
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None


class _Malformed(Exception):
    """A header is damaged or asks for more work than we allow; only its facts are lost."""


@dataclass(frozen=True)
class _Facts:
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class _Span:
    """A tagged region of the file: an ISO box, a RIFF chunk or an EBML element payload."""

    tag: bytes
    start: int
    end: int


# --- Public API --------------------------------------------------------------------------------


def sniff(head: bytes) -> tuple[str, str]:
    """(kind, mime_type) from the first bytes of a file (up to HEAD_SIZE, fewer for a short file).

    Raises UnknownContent, with a message naming what was seen, when the kind is not accepted.
    """
    head = bytes(head[:HEAD_SIZE])
    if not head:
        raise UnknownContent("empty file")
    if head[128:132] == b"DICM":
        raise UnknownContent(
            "DICOM content: upload it as a DICOM series (POST /v1/folders/{id}/dicom)"
        )
    for sniffer in _SNIFFERS:
        found = sniffer(head)
        if found is not None:
            return found
    raise UnknownContent(f"unrecognised content (starts with {head[:4].hex()})")


def inspect(read_at: Callable[[int, int], bytes], size: int) -> Media:
    """Kind, mime type and the media facts stated in the file's headers.

    read_at(offset, length) returns up to `length` bytes at `offset` (fewer at EOF); size is the
    file's total size. read_at is called a bounded number of times, never for more than 1 MiB.
    Facts that cannot be read are None. Errors raised by read_at itself propagate unchanged.
    """
    if size <= 0:
        raise UnknownContent("empty file")
    reader = _Reader(read_at, size)
    kind, mime_type = sniff(reader.read(0, HEAD_SIZE))
    parse = _FACT_PARSERS.get(mime_type, _no_facts)
    facts = _or_none(parse, reader) or _Facts()
    return Media(
        kind=kind,
        mime_type=mime_type,
        width=_positive(facts.width),
        height=_positive(facts.height),
        frames=_positive(facts.frames),
        duration_s=_seconds(facts.duration_s),
    )


# --- Reading -----------------------------------------------------------------------------------


class _Reader:
    """Capped, counted random access to the file, with a one-window cache for small reads."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        self._read_at = read_at
        self.size = size
        self._calls = 0
        self._window_start = 0
        self._window = b""

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` (at most 1 MiB) bytes at `offset`; fewer at EOF."""
        length = min(length, _MAX_READ, self.size - offset)
        if offset < 0 or length <= 0:
            return b""
        start = offset - self._window_start
        if start < 0 or start + length > len(self._window):
            self._fill(offset, length)
            start = 0
        return self._window[start : start + length]

    def _fill(self, offset: int, length: int) -> None:
        if self._calls >= _MAX_READS:
            raise _Malformed("read budget exhausted")
        self._calls += 1
        want = min(max(length, _WINDOW), _MAX_READ, self.size - offset)
        # A misbehaving read_at must not hand us more than we asked for.
        self._window = bytes(self._read_at(offset, want)[:want])
        self._window_start = offset


def _int(
    data: bytes, offset: int, length: int, order: _ByteOrder = "big", *, signed: bool = False
) -> int:
    chunk = data[offset : offset + length]
    if offset < 0 or len(chunk) != length:
        raise _Malformed(f"need {length} bytes at {offset}, have {len(data)}")
    return int.from_bytes(chunk, order, signed=signed)


def _or_none(parse: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T | None:
    """parse(...), or None when the part of the file it reads is damaged."""
    try:
        return parse(*args, **kwargs)
    except _Malformed:
        return None


def _payload(reader: _Reader, span: _Span, length: int) -> bytes:
    """The first `length` bytes of a box or chunk, never reaching into whatever follows it."""
    return reader.read(span.start, min(length, span.end - span.start))


def _first(spans: Iterable[_Span], tag: bytes) -> _Span | None:
    return next((span for span in spans if span.tag == tag), None)


def _no_facts(_reader: _Reader) -> _Facts:
    return _Facts()


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def _seconds(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value >= 0 else None


# --- Sniffing ----------------------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image", "image/png"),
    (b"\xff\xd8\xff", "image", "image/jpeg"),
    (b"GIF87a", "image", "image/gif"),
    (b"GIF89a", "image", "image/gif"),
    (b"II*\x00", "image", "image/tiff"),
    (b"MM\x00*", "image", "image/tiff"),
    (b"%PDF-", "pdf", "application/pdf"),
    (b"fLaC", "audio", "audio/flac"),
    (b"OggS", "audio", "audio/ogg"),
)
_WEBP_CHUNKS = frozenset({b"VP8 ", b"VP8L", b"VP8X"})
_RIFF_FORMS = {b"AVI ": ("video", "video/x-msvideo"), b"WAVE": ("audio", "audio/wav")}
_ISO_BRANDS = {
    b"qt  ": ("video", "video/quicktime"),
    b"M4V ": ("video", "video/x-m4v"),
    b"M4VH": ("video", "video/x-m4v"),
    b"M4VP": ("video", "video/x-m4v"),
    b"M4A ": ("audio", "audio/mp4"),
    b"M4B ": ("audio", "audio/mp4"),
}
# HEIF/AVIF still images share the ISO container; they are not video and we do not accept them.
_ISO_IMAGE_BRANDS = frozenset(
    {b"mif1", b"msf1", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"avif", b"avis"}
)
_QUICKTIME_TOP_LEVEL = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot", b"uuid"})
_QUICKTIME_MOOV_CHILDREN = frozenset({b"mvhd", b"cmov", b"prfl", b"trak", b"udta"})
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_EBML_DOCTYPE = b"\x42\x82"
_BMP_INFO_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_TEXT_CONTROLS = frozenset("\t\n\r\f")
_MAX_UNPRINTABLE_RATIO = 0.05


def _by_magic(head: bytes) -> tuple[str, str] | None:
    return next(((kind, mime) for magic, kind, mime in _MAGIC if head.startswith(magic)), None)


def _by_riff(head: bytes) -> tuple[str, str] | None:
    if not head.startswith(b"RIFF"):
        return None
    form = head[8:12]
    if form == b"WEBP":
        return ("image", "image/webp") if head[12:16] in _WEBP_CHUNKS else None
    return _RIFF_FORMS.get(form)


def _by_iso_brand(head: bytes) -> tuple[str, str] | None:
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in _ISO_IMAGE_BRANDS:
        raise UnknownContent(f"unsupported ISO media brand {brand.decode('latin-1')!r}")
    return _ISO_BRANDS.get(brand, ("video", "video/mp4"))


def _by_quicktime_atom(head: bytes) -> tuple[str, str] | None:
    """Old QuickTime files have no ftyp; the first atom has to be checked against what follows.

    The atom type alone is four letters at offset 4, which plain text matches too easily.
    """
    if len(head) < 8 or head[4:8] not in _QUICKTIME_TOP_LEVEL:
        return None
    size, atom = _int(head, 0, 4), head[4:8]
    if atom == b"mdat":
        plausible = size in (0, 1) or size >= 8
    elif atom == b"moov":
        plausible = head[12:16] in _QUICKTIME_MOOV_CHILDREN
    else:
        plausible = size >= 8 and head[size + 4 : size + 8] in _QUICKTIME_TOP_LEVEL
    return ("video", "video/quicktime") if plausible else None


def _by_ebml(head: bytes) -> tuple[str, str] | None:
    if not head.startswith(_EBML_MAGIC):
        return None
    doctype = _or_none(_ebml_doctype, head)
    return ("video", "video/webm") if doctype == b"webm" else ("video", "video/x-matroska")


def _ebml_doctype(head: bytes) -> bytes | None:
    header = _first(_ebml_elements(head, 0, len(head)), _EBML_MAGIC)
    if header is None:
        return None
    doctype = _first(_ebml_elements(head, header.start, header.end), _EBML_DOCTYPE)
    return _ebml_value(head, doctype).rstrip(b"\x00") if doctype else None


def _by_bmp(head: bytes) -> tuple[str, str] | None:
    # "BM" alone is too weak (it starts plenty of text), so also require a known DIB header size.
    if not head.startswith(b"BM") or len(head) < 18:
        return None
    return ("image", "image/bmp") if _int(head, 14, 4, "little") in _BMP_INFO_SIZES else None


def _by_mpeg_audio(head: bytes) -> tuple[str, str] | None:
    if _is_id3_tag(head) or _is_mpeg_audio_frame(head):
        return "audio", "audio/mpeg"
    return None


def _is_id3_tag(head: bytes) -> bool:
    # Major version 2-4, then a 28-bit "syncsafe" size whose bytes never have the top bit set.
    return (
        head.startswith(b"ID3")
        and len(head) >= 10
        and head[3] in (2, 3, 4)
        and all(byte < 0x80 for byte in head[6:10])
    )


def _is_mpeg_audio_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0b11, (head[1] >> 1) & 0b11
    bitrate, sample_rate = head[2] >> 4, (head[2] >> 2) & 0b11
    # Layer 0 is reserved (and is what AAC's ADTS sync uses), as are version 1, bitrate 15 and
    # sample rate 3: any of them means the 0xFFE sync was a coincidence.
    return version != 1 and layer != 0 and bitrate != 0b1111 and sample_rate != 0b11


def _by_text(head: bytes) -> tuple[str, str] | None:
    if b"\x00" in head:
        return None
    try:
        # final=False: the head may end in the middle of a multi-byte character.
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    unprintable = sum(1 for char in text if not char.isprintable() and char not in _TEXT_CONTROLS)
    if not text or unprintable > len(text) * _MAX_UNPRINTABLE_RATIO:
        return None
    return "text", "text/plain"


_SNIFFERS: tuple[Callable[[bytes], tuple[str, str] | None], ...] = (
    _by_magic,
    _by_riff,
    _by_iso_brand,
    _by_quicktime_atom,
    _by_ebml,
    _by_bmp,
    _by_mpeg_audio,
    _by_text,
)


# --- Images ------------------------------------------------------------------------------------

_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_EOI, _JPEG_SOS = 0xD9, 0xDA
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


def _png_facts(reader: _Reader) -> _Facts:
    ihdr = reader.read(8, 16)  # chunk length, "IHDR", width, height
    if ihdr[4:8] != b"IHDR":
        return _Facts()
    return _Facts(width=_int(ihdr, 8, 4), height=_int(ihdr, 12, 4))


def _gif_facts(reader: _Reader) -> _Facts:
    screen = reader.read(6, 4)
    return _Facts(width=_int(screen, 0, 2, "little"), height=_int(screen, 2, 2, "little"))


def _bmp_facts(reader: _Reader) -> _Facts:
    info = reader.read(14, 12)
    if _int(info, 0, 4, "little") == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit dimensions
        return _Facts(width=_int(info, 4, 2, "little"), height=_int(info, 6, 2, "little"))
    # A negative height means the rows are stored top-down; the image is just as tall.
    return _Facts(
        width=_int(info, 4, 4, "little", signed=True),
        height=abs(_int(info, 8, 4, "little", signed=True)),
    )


def _webp_facts(reader: _Reader) -> _Facts:
    chunk = reader.read(12, 18)  # first chunk's fourcc and size, then the start of its payload
    fourcc = chunk[:4]
    if fourcc == b"VP8 ":  # 3-byte frame tag, start code, then 14-bit dimensions
        if chunk[11:14] != b"\x9d\x01\x2a":
            return _Facts()
        return _Facts(
            width=_int(chunk, 14, 2, "little") & 0x3FFF,
            height=_int(chunk, 16, 2, "little") & 0x3FFF,
        )
    if fourcc == b"VP8L":  # signature byte, then width-1 and height-1 as 14-bit fields
        if chunk[8:9] != b"\x2f":
            return _Facts()
        bits = _int(chunk, 9, 4, "little")
        return _Facts(width=(bits & 0x3FFF) + 1, height=((bits >> 14) & 0x3FFF) + 1)
    if fourcc == b"VP8X":  # 4 bytes of flags, then 24-bit canvas width-1 and height-1
        return _Facts(
            width=_int(chunk, 12, 3, "little") + 1, height=_int(chunk, 15, 3, "little") + 1
        )
    return _Facts()


def _jpeg_facts(reader: _Reader) -> _Facts:
    pos = 2  # after SOI
    for _ in range(_MAX_JPEG_STEPS):
        marker = reader.read(pos, 2)
        if len(marker) < 2 or marker[0] != 0xFF:
            break
        code = marker[1]
        if code == 0xFF:  # fill byte: the marker proper starts at the next byte
            pos += 1
            continue
        pos += 2
        if code in (_JPEG_EOI, _JPEG_SOS):  # no frame header before the image data
            break
        if code in _JPEG_STANDALONE:
            continue
        segment = reader.read(pos, 7)  # length, then for SOFn: precision, height, width
        length = _int(segment, 0, 2)
        if length < 2:
            break
        if code in _JPEG_SOF:
            return _Facts(width=_int(segment, 5, 2), height=_int(segment, 3, 2))
        pos += length
    return _Facts()


def _tiff_facts(reader: _Reader) -> _Facts:
    header = reader.read(0, 8)
    order: _ByteOrder = "little" if header.startswith(b"II") else "big"
    ifd = _int(header, 4, 4, order)
    count = _int(reader.read(ifd, 2), 0, 2, order)
    entries = reader.read(ifd + 2, count * 12)
    dimensions: dict[int, int] = {}
    for pos in range(0, len(entries) - 11, 12):
        tag, value_type = _int(entries, pos, 2, order), _int(entries, pos + 2, 2, order)
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and value_type in (_TIFF_SHORT, _TIFF_LONG):
            value_size = 2 if value_type == _TIFF_SHORT else 4
            dimensions.setdefault(tag, _int(entries, pos + 8, value_size, order))
    return _Facts(width=dimensions.get(_TIFF_WIDTH), height=dimensions.get(_TIFF_HEIGHT))


# --- ISO base media (MP4, MOV, M4V, M4A) -------------------------------------------------------


_ISO_UNKNOWN_DURATIONS = frozenset({0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF})


def _iso_boxes(reader: _Reader, start: int, end: int) -> Iterator[_Span]:
    pos = start
    for _ in range(_MAX_ITEMS):
        if pos + 8 > end:
            return
        header = reader.read(pos, 16)
        if len(header) < 8:
            return
        size, header_size = _int(header, 0, 4), 8
        if size == 1:  # 64-bit size follows the type
            size, header_size = _int(header, 8, 8), 16
        elif size == 0:  # box runs to the end of its container
            size = end - pos
        if size < header_size:
            return  # no way to find the next box
        yield _Span(header[4:8], pos + header_size, min(pos + size, end))
        pos += size


def _iso_child(reader: _Reader, box: _Span, *path: bytes) -> _Span | None:
    """The first box at `path` below `box`, e.g. (b"mdia", b"hdlr")."""
    found: _Span | None = box
    for tag in path:
        found = _first(_iso_boxes(reader, found.start, found.end), tag) if found else None
    return found


def _iso_facts(reader: _Reader) -> _Facts:
    moov = _first(_iso_boxes(reader, 0, reader.size), b"moov")
    if moov is None:
        return _Facts()
    video = _or_none(_iso_video_facts, reader, moov) or _Facts()
    return replace(video, duration_s=_or_none(_iso_duration, reader, moov))


def _iso_duration(reader: _Reader, moov: _Span) -> float | None:
    mvhd = _iso_child(reader, moov, b"mvhd")
    if mvhd is None:
        return None
    header = _payload(reader, mvhd, 32)
    if header[:1] == b"\x01":  # version 1: 64-bit times
        timescale, duration = _int(header, 20, 4), _int(header, 24, 8)
    else:
        timescale, duration = _int(header, 12, 4), _int(header, 16, 4)
    if duration == 0:  # fragmented files leave mvhd empty and state the total in mvex/mehd
        fragment_duration = _iso_fragment_duration(reader, moov)
        duration = fragment_duration if fragment_duration is not None else 0
    if not timescale or duration in _ISO_UNKNOWN_DURATIONS:
        return None
    return duration / timescale


def _iso_fragment_duration(reader: _Reader, moov: _Span) -> int | None:
    mehd = _iso_child(reader, moov, b"mvex", b"mehd")
    if mehd is None:
        return None
    header = _payload(reader, mehd, 12)
    return _int(header, 4, 8) if header[:1] == b"\x01" else _int(header, 4, 4)


def _iso_video_facts(reader: _Reader, moov: _Span) -> _Facts | None:
    for trak in _iso_boxes(reader, moov.start, moov.end):
        if trak.tag == b"trak" and _iso_handler(reader, trak) == b"vide":
            width, height = _iso_track_size(reader, trak)
            stbl = _iso_child(reader, trak, b"mdia", b"minf", b"stbl")
            frames = _or_none(_iso_sample_count, reader, stbl) if stbl else None
            return _Facts(width=width, height=height, frames=frames)
    return None


def _iso_handler(reader: _Reader, trak: _Span) -> bytes | None:
    hdlr = _iso_child(reader, trak, b"mdia", b"hdlr")
    return _payload(reader, hdlr, 12)[8:] if hdlr else None  # after version/flags, pre_defined


def _iso_track_size(reader: _Reader, trak: _Span) -> tuple[int | None, int | None]:
    tkhd = _iso_child(reader, trak, b"tkhd")
    if tkhd is None:
        return None, None
    header = _payload(reader, tkhd, 96)
    offset = 88 if header[:1] == b"\x01" else 76  # version 1 has 64-bit times before the matrix
    # 16.16 fixed point; the fraction is irrelevant for pixel dimensions.
    return _int(header, offset, 4) >> 16, _int(header, offset + 4, 4) >> 16


def _iso_sample_count(reader: _Reader, stbl: _Span) -> int | None:
    stsz = _iso_child(reader, stbl, b"stsz")
    if stsz is not None:  # version/flags, sample_size, sample_count
        return _int(_payload(reader, stsz, 12), 8, 4)
    stts = _iso_child(reader, stbl, b"stts")
    if stts is None:
        return None
    entry_count = _int(_payload(reader, stts, 8), 4, 4)
    table_size = entry_count * 8  # (sample_count, sample_delta) pairs
    if stts.start + 8 + table_size > stts.end:
        return None  # the count overstates the box, or the file is truncated
    table = reader.read(stts.start + 8, table_size)
    if len(table) < table_size:
        return None  # too large for one read
    return sum(_int(table, pos, 4) for pos in range(0, len(table), 8))


# --- RIFF (AVI, WAV) ---------------------------------------------------------------------------


def _riff_chunks(reader: _Reader, start: int, end: int) -> Iterator[_Span]:
    pos = start
    for _ in range(_MAX_ITEMS):
        if pos + 8 > end:
            return
        header = reader.read(pos, 8)
        if len(header) < 8:
            return
        size = _int(header, 4, 4, "little")
        yield _Span(header[:4], pos + 8, min(pos + 8 + size, end))
        pos += 8 + size + (size & 1)  # chunks are padded to an even size


def _riff_list(reader: _Reader, start: int, end: int, form: bytes) -> _Span | None:
    for chunk in _riff_chunks(reader, start, end):
        if chunk.tag == b"LIST" and reader.read(chunk.start, 4) == form:
            return _Span(form, chunk.start + 4, chunk.end)
    return None


def _avi_facts(reader: _Reader) -> _Facts:
    hdrl = _riff_list(reader, 12, reader.size, b"hdrl")
    avih = _first(_riff_chunks(reader, hdrl.start, hdrl.end), b"avih") if hdrl else None
    if hdrl is None or avih is None:
        return _Facts()
    header = _payload(reader, avih, 40)
    micros_per_frame = _int(header, 0, 4, "little")
    frames = _or_none(_avi_extended_frames, reader, hdrl) or _int(header, 16, 4, "little")
    return _Facts(
        width=_int(header, 32, 4, "little"),
        height=_int(header, 36, 4, "little"),
        frames=frames,
        duration_s=frames * micros_per_frame / 1_000_000 if micros_per_frame else None,
    )


def _avi_extended_frames(reader: _Reader, hdrl: _Span) -> int | None:
    """OpenDML (over 1 GiB) files count only the first RIFF part in avih; dmlh counts them all."""
    odml = _riff_list(reader, hdrl.start, hdrl.end, b"odml")
    dmlh = _first(_riff_chunks(reader, odml.start, odml.end), b"dmlh") if odml else None
    return _int(_payload(reader, dmlh, 4), 0, 4, "little") if dmlh else None


def _wav_facts(reader: _Reader) -> _Facts:
    byte_rate: int | None = None
    data_size: int | None = None
    for chunk in _riff_chunks(reader, 12, reader.size):
        if chunk.tag == b"fmt ":  # format tag, channels, sample rate, then bytes per second
            byte_rate = _int(_payload(reader, chunk, 12), 8, 4, "little")
        elif chunk.tag == b"data":
            data_size = chunk.end - chunk.start
        if byte_rate is not None and data_size is not None:
            return _Facts(duration_s=data_size / byte_rate if byte_rate else None)
    return _Facts()


# --- FLAC ----------------------------------------------------------------------------------------


def _flac_facts(reader: _Reader) -> _Facts:
    block = reader.read(4, 22)  # metadata block header, then STREAMINFO
    if _int(block, 0, 1) & 0x7F != 0:  # STREAMINFO must be the first block
        return _Facts()
    # After block and frame size bounds: 20-bit sample rate, 3-bit channels, 5-bit sample depth,
    # 36-bit total samples.
    packed = _int(block, 14, 8)
    sample_rate, samples = packed >> 44, packed & (2**36 - 1)
    return _Facts(duration_s=samples / sample_rate if sample_rate and samples else None)


# --- Matroska / WebM ---------------------------------------------------------------------------

_MKV_SEGMENT = b"\x18\x53\x80\x67"
_MKV_INFO = b"\x15\x49\xa9\x66"
_MKV_TIMECODE_SCALE = b"\x2a\xd7\xb1"
_MKV_DURATION = b"\x44\x89"
_MKV_TRACKS = b"\x16\x54\xae\x6b"
_MKV_TRACK_ENTRY = b"\xae"
_MKV_VIDEO = b"\xe0"
_MKV_PIXEL_WIDTH = b"\xb0"
_MKV_PIXEL_HEIGHT = b"\xba"
_MKV_CLUSTER = b"\x1f\x43\xb6\x75"
_MKV_DEFAULT_TIMECODE_SCALE = 1_000_000  # nanoseconds per tick


def _ebml_vint(data: bytes, pos: int) -> tuple[int, int]:
    """(raw value including its length marker, byte length) of the variable-size int at pos."""
    length = 9 - _int(data, pos, 1).bit_length()
    if length > 8:
        raise _Malformed("invalid EBML variable-size integer")
    return _int(data, pos, length), length


def _ebml_elements(data: bytes, start: int, end: int) -> Iterator[_Span]:
    """Child elements in data[start:end], each spanning its declared size.

    A value cut off by the end of data keeps its declared end, so reading it fails rather than
    yielding a shorter number; only iteration stops at the end of what we have.
    """
    end = min(end, len(data))
    pos = start
    for _ in range(_MAX_ITEMS):
        if pos >= end:
            return
        _, id_length = _ebml_vint(data, pos)
        element_id = data[pos : pos + id_length]
        raw_size, size_length = _ebml_vint(data, pos + id_length)
        pos += id_length + size_length
        value_bits = (1 << (7 * size_length)) - 1
        size = raw_size & value_bits
        if size == value_bits:  # unknown size: the element runs to the end of its parent
            yield _Span(element_id, pos, end)
            return
        yield _Span(element_id, pos, pos + size)
        pos += size


def _ebml_value(data: bytes, element: _Span) -> bytes:
    value = data[element.start : element.end]
    if len(value) != element.end - element.start:
        raise _Malformed("EBML value cut off")
    return value


def _ebml_uint(data: bytes, element: _Span) -> int:
    value = _ebml_value(data, element)
    if len(value) > 8:
        raise _Malformed("EBML unsigned integer longer than 8 bytes")
    return int.from_bytes(value, "big")


def _ebml_float(data: bytes, element: _Span) -> float:
    value = _ebml_value(data, element)
    if len(value) not in (4, 8):
        raise _Malformed("EBML float is neither 4 nor 8 bytes")
    result: float = struct.unpack(">f" if len(value) == 4 else ">d", value)[0]
    return result


def _matroska_facts(reader: _Reader) -> _Facts:
    # Info and Tracks precede the clusters; in a well-formed file they sit in the first MiB.
    data = reader.read(0, _MAX_READ)
    segment = _first(_ebml_elements(data, 0, len(data)), _MKV_SEGMENT)
    if segment is None:
        return _Facts()
    duration: float | None = None
    video: _Facts | None = None
    for child in _ebml_elements(data, segment.start, segment.end):
        if child.tag == _MKV_INFO:
            duration = _or_none(_matroska_duration, data, child)
        elif child.tag == _MKV_TRACKS:
            video = _or_none(_matroska_video_size, data, child)
        elif child.tag == _MKV_CLUSTER:
            break
    return replace(video or _Facts(), duration_s=duration)


def _matroska_duration(data: bytes, info: _Span) -> float | None:
    scale = _MKV_DEFAULT_TIMECODE_SCALE
    ticks: float | None = None
    for element in _ebml_elements(data, info.start, info.end):
        if element.tag == _MKV_TIMECODE_SCALE:
            scale = _ebml_uint(data, element)
        elif element.tag == _MKV_DURATION:
            ticks = _ebml_float(data, element)
    return ticks * scale / 1e9 if ticks is not None else None


def _matroska_video_size(data: bytes, tracks: _Span) -> _Facts | None:
    for entry in _ebml_elements(data, tracks.start, tracks.end):
        if entry.tag != _MKV_TRACK_ENTRY:
            continue
        video = _first(_ebml_elements(data, entry.start, entry.end), _MKV_VIDEO)
        if video is not None:
            fields = {field.tag: field for field in _ebml_elements(data, video.start, video.end)}
            width, height = fields.get(_MKV_PIXEL_WIDTH), fields.get(_MKV_PIXEL_HEIGHT)
            return _Facts(
                width=_ebml_uint(data, width) if width else None,
                height=_ebml_uint(data, height) if height else None,
            )
    return None


# --- Dispatch ----------------------------------------------------------------------------------

_FACT_PARSERS: dict[str, Callable[[_Reader], _Facts]] = {
    "image/png": _png_facts,
    "image/jpeg": _jpeg_facts,
    "image/gif": _gif_facts,
    "image/webp": _webp_facts,
    "image/bmp": _bmp_facts,
    "image/tiff": _tiff_facts,
    "video/mp4": _iso_facts,
    "video/quicktime": _iso_facts,
    "video/x-m4v": _iso_facts,
    "audio/mp4": _iso_facts,
    "video/webm": _matroska_facts,
    "video/x-matroska": _matroska_facts,
    "video/x-msvideo": _avi_facts,
    "audio/wav": _wav_facts,
    "audio/flac": _flac_facts,
}
