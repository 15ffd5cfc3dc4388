"""What a file is, decided from its first bytes: the accept-list of kinds we take.

Pure: it sees the head of a file (up to HEAD_SIZE bytes) and nothing else. The media facts
(sizes, durations, sample rates) are read afterwards, by services/ingest/media/facts.py,
through Pillow and PyAV, from content only this module has accepted.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["HEAD_SIZE", "UnknownContent", "sniff"]

HEAD_SIZE = 64 * 1024  # how many leading bytes sniff() needs at most

_MAX_ITEMS = 512  # EBML elements visited while looking for the doctype


class UnknownContent(ValueError):
    """The bytes are not of a kind we accept."""


class DicomContent(UnknownContent):
    """A DICOM instance: not a file of its own, but part of a series (the DICOM context's)."""


class _Malformed(Exception):
    """A header is damaged: the fact it would have given is unknown."""


@dataclass(frozen=True)
class _Span:
    """An EBML element's payload: its id and where it lies."""

    tag: bytes
    start: int
    end: int


def sniff(head: bytes) -> tuple[str, str]:
    """(kind, mime_type) from the first bytes of a file (up to HEAD_SIZE, fewer for a short file).

    Raises UnknownContent, with a message naming what was seen, when the kind is not accepted.
    """
    head = bytes(head[:HEAD_SIZE])
    if not head:
        raise UnknownContent("empty file")
    if head[128:132] == b"DICM":
        raise DicomContent(
            "DICOM content: upload it as a DICOM series (POST /v1/folders/{id}/dicom)"
        )
    for sniffer in _SNIFFERS:
        found = sniffer(head)
        if found is not None:
            return found
    raise UnknownContent(f"unrecognised content (starts with {head[:4].hex()})")


def _int(data: bytes, offset: int, length: int) -> int:
    chunk = data[offset : offset + length]
    if offset < 0 or len(chunk) != length:
        raise _Malformed(f"need {length} bytes at {offset}, have {len(data)}")
    return int.from_bytes(chunk, "big")


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


# NIfTI-1 (a single .nii file) and NIfTI-2: the header's size, and its magic and where
# it lies. A gzipped volume (.nii.gz) is recognised by the header it starts with.
_NIFTI_HEADERS = ((348, 344, b"n+1\x00"), (540, 4, b"n+2\x00\r\n\x1a\n"))
NIFTI_GZIP = "application/gzip"
NIFTI = "application/x-nifti"


def nifti_header_size(data: bytes) -> int | None:
    """348 or 540 if `data` starts with a NIfTI-1 or NIfTI-2 header, else None."""
    for size, at, magic in _NIFTI_HEADERS:
        stated = {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")}
        if size in stated and data[at : at + len(magic)] == magic:
            return size
    return None


def _by_nifti(head: bytes) -> tuple[str, str] | None:
    if nifti_header_size(head) is not None:
        return ("nifti", NIFTI)
    if not head.startswith(b"\x1f\x8b"):
        return None
    try:
        # The first bytes of the stream only: bounded however it inflates.
        start = zlib.decompressobj(wbits=31).decompress(head, 544)
    except zlib.error:
        return None
    return ("nifti", NIFTI_GZIP) if nifti_header_size(start) is not None else None


def _by_riff(head: bytes) -> tuple[str, str] | None:
    if not head.startswith(b"RIFF"):
        return None
    form = head[8:12]
    if form == b"WEBP":
        return ("image", "image/webp") if head[12:16] in _WEBP_CHUNKS else None
    return _RIFF_FORMS.get(form)


def _by_iso_brand(head: bytes) -> tuple[str, str] | None:
    if head[4:8] != b"ftyp" or len(head) < 12:  # a brand cut short says nothing
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
    doctype = _ebml_doctype(head)
    return ("video", "video/webm") if doctype == b"webm" else ("video", "video/x-matroska")


def _by_bmp(head: bytes) -> tuple[str, str] | None:
    # "BM" alone is too weak (it starts plenty of text), so also require a known DIB header size.
    if not head.startswith(b"BM") or len(head) < 18:
        return None
    return (
        ("image", "image/bmp") if int.from_bytes(head[14:18], "little") in _BMP_INFO_SIZES else None
    )


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
    _by_nifti,
    _by_riff,
    _by_iso_brand,
    _by_quicktime_atom,
    _by_ebml,
    _by_bmp,
    _by_mpeg_audio,
    _by_text,
)


# --- EBML (Matroska, WebM): enough to read the header's doctype --------------------------------


def _ebml_doctype(head: bytes) -> bytes | None:
    try:
        header = next((s for s in _ebml_elements(head, 0, len(head)) if s.tag == _EBML_MAGIC), None)
        if header is None:
            return None
        doctype = next(
            (s for s in _ebml_elements(head, header.start, header.end) if s.tag == _EBML_DOCTYPE),
            None,
        )
    except _Malformed:
        return None
    if doctype is None or doctype.end > len(head):
        return None
    return head[doctype.start : doctype.end].rstrip(b"\x00")


def _ebml_vint(data: bytes, pos: int) -> tuple[int, int]:
    """(raw value including its length marker, byte length) of the variable-size int at pos."""
    length = 9 - _int(data, pos, 1).bit_length()
    if length > 8:
        raise _Malformed("invalid EBML variable-size integer")
    return _int(data, pos, length), length


def _ebml_elements(data: bytes, start: int, end: int) -> Iterator[_Span]:
    """Child elements in data[start:end], each spanning its declared size."""
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
