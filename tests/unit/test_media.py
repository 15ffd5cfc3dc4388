"""Content sniffing and header-only media facts, on fixtures built in memory."""

from __future__ import annotations

import io
import random
import struct
import time
import wave

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.ingest.domain.media import HEAD_SIZE, Media, UnknownContent, inspect, sniff

MAX_CALLS = 200  # "a few hundred" read_at calls at most
MAX_LENGTH = 1024 * 1024  # never more than 1 MiB in one call
GIB = 1024**3


class SparseFile:
    """A file of `size` bytes, zero except where pieces are placed, that polices read_at use.

    Lets a test put a moov box after a multi-gigabyte mdat without allocating the mdat.
    """

    def __init__(self, size: int, pieces: dict[int, bytes]) -> None:
        self.size = size
        self.pieces = pieces
        self.calls = 0

    def read_at(self, offset: int, length: int) -> bytes:
        self.calls += 1
        assert self.calls <= MAX_CALLS, "read_at called too often"
        assert 0 < length <= MAX_LENGTH, f"bad read length {length}"
        assert 0 <= offset < self.size, f"read at {offset} outside a {self.size}-byte file"
        end = min(offset + length, self.size)
        out = bytearray(end - offset)
        for start, piece in self.pieces.items():
            low, high = max(offset, start), min(end, start + len(piece))
            if low < high:
                out[low - offset : high - offset] = piece[low - start : high - start]
        return bytes(out)


def inspect_bytes(data: bytes) -> Media:
    file = SparseFile(len(data), {0: data})
    return inspect(file.read_at, file.size)


# --- Image fixtures ----------------------------------------------------------------------------


def pil_bytes(
    fmt: str, size: tuple[int, int] = (37, 23), mode: str = "RGB", **params: object
) -> bytes:
    image = Image.new(mode, size)
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def bmp_top_down() -> bytes:
    data = bytearray(pil_bytes("BMP"))
    struct.pack_into("<i", data, 22, -23)
    return bytes(data)


def bmp_core_header() -> bytes:
    info = struct.pack("<IHHHH", 12, 37, 23, 1, 24)
    pixels = bytes(23 * 112)
    return b"BM" + struct.pack("<IHHI", 26 + len(pixels), 0, 0, 26) + info + pixels


def tiff_big_endian_long() -> bytes:
    entries = [(256, 4, 1, 70000), (257, 4, 1, 3)]
    ifd = struct.pack(">H", len(entries))
    ifd += b"".join(struct.pack(">HHII", *entry) for entry in entries) + bytes(4)
    return b"MM\x00*" + struct.pack(">I", 8) + ifd


def jpeg_with_prefix(insert: bytes) -> bytes:
    data = pil_bytes("JPEG")
    return data[:2] + insert + data[2:]


def webp(*, alpha: bool = False, **params: object) -> bytes:
    return pil_bytes("WEBP", (37, 23), "RGBA" if alpha else "RGB", **params)


IMAGES: dict[str, tuple[bytes, str, int, int]] = {
    "png": (pil_bytes("PNG"), "image/png", 37, 23),
    "jpeg": (pil_bytes("JPEG"), "image/jpeg", 37, 23),
    "jpeg-progressive": (pil_bytes("JPEG", progressive=True), "image/jpeg", 37, 23),
    # An ICC profile split over several APP2 segments pushes SOF well past the head.
    "jpeg-big-icc": (pil_bytes("JPEG", icc_profile=bytes(200_000)), "image/jpeg", 37, 23),
    "jpeg-fill-bytes": (jpeg_with_prefix(b"\xff\xff\xff"), "image/jpeg", 37, 23),
    "jpeg-standalone-markers": (jpeg_with_prefix(b"\xff\x01\xff\xd0"), "image/jpeg", 37, 23),
    "gif": (pil_bytes("GIF", mode="P"), "image/gif", 37, 23),
    "webp-vp8": (webp(quality=80), "image/webp", 37, 23),
    "webp-vp8l": (webp(lossless=True), "image/webp", 37, 23),
    "webp-vp8x": (webp(alpha=True, quality=80), "image/webp", 37, 23),
    "bmp": (pil_bytes("BMP"), "image/bmp", 37, 23),
    "bmp-top-down": (bmp_top_down(), "image/bmp", 37, 23),
    "bmp-core-header": (bmp_core_header(), "image/bmp", 37, 23),
    "tiff-le": (pil_bytes("TIFF"), "image/tiff", 37, 23),
    "tiff-be": (pil_bytes("TIFF", mode="I;16B"), "image/tiff", 37, 23),
    "tiff-le-long": (pil_bytes("TIFF", size=(70000, 1), mode="L"), "image/tiff", 70000, 1),
    "tiff-be-long": (tiff_big_endian_long(), "image/tiff", 70000, 3),
}


def test_fixtures_cover_each_variant() -> None:
    assert IMAGES["webp-vp8"][0][12:16] == b"VP8 "
    assert IMAGES["webp-vp8l"][0][12:16] == b"VP8L"
    assert IMAGES["webp-vp8x"][0][12:16] == b"VP8X"
    assert IMAGES["tiff-le"][0][:2] == b"II"
    assert IMAGES["tiff-be"][0][:2] == b"MM"
    assert IMAGES["jpeg-big-icc"][0].find(b"\xff\xc0") > HEAD_SIZE
    assert b"\xff\xc2" in IMAGES["jpeg-progressive"][0]


@pytest.mark.parametrize("name", IMAGES)
def test_image_dimensions(name: str) -> None:
    data, mime, width, height = IMAGES[name]

    assert inspect_bytes(data) == Media("image", mime, width=width, height=height)
    assert sniff(data[:HEAD_SIZE]) == ("image", mime)


# --- ISO base media fixtures -------------------------------------------------------------------


def box(tag: bytes, *children: bytes) -> bytes:
    payload = b"".join(children)
    return struct.pack(">I", 8 + len(payload)) + tag + payload


def full_box(tag: bytes, version: int, payload: bytes) -> bytes:
    return box(tag, bytes([version, 0, 0, 0]), payload)


def ftyp(brand: bytes = b"isom") -> bytes:
    return box(b"ftyp", brand, struct.pack(">I", 512), brand, b"mp41")


def mvhd(timescale: int, duration: int, version: int = 0) -> bytes:
    if version == 1:
        times = struct.pack(">QQIQ", 0, 0, timescale, duration)
    else:
        times = struct.pack(">IIII", 0, 0, timescale, duration)
    return full_box(b"mvhd", version, times + bytes(80))


def tkhd(width: int, height: int, version: int = 0) -> bytes:
    if version == 1:
        header = struct.pack(">QQIIQ", 0, 0, 1, 0, 0)
    else:
        header = struct.pack(">IIIII", 0, 0, 1, 0, 0)
    return full_box(
        b"tkhd", version, header + bytes(52) + struct.pack(">II", width << 16, height << 16)
    )


def stts(*entries: tuple[int, int]) -> bytes:
    table = b"".join(struct.pack(">II", count, delta) for count, delta in entries)
    return full_box(b"stts", 0, struct.pack(">I", len(entries)) + table)


def stsz(sample_count: int) -> bytes:
    return full_box(b"stsz", 0, struct.pack(">II", 1000, sample_count))


def trak(handler: bytes, width: int, height: int, *sample_tables: bytes, version: int = 0) -> bytes:
    hdlr = full_box(b"hdlr", 0, bytes(4) + handler + bytes(12) + b"\x00")
    stbl = box(b"stbl", *sample_tables)
    return box(b"trak", tkhd(width, height, version), box(b"mdia", hdlr, box(b"minf", stbl)))


def video_moov(version: int = 0) -> bytes:
    return box(
        b"moov",
        mvhd(1000, 10_000, version),
        trak(b"soun", 0, 0, stts((441, 1024))),
        trak(b"vide", 1920, 1080, stts((240, 40), (60, 20)), version=version),
    )


MP4_MEDIA = Media("video", "video/mp4", width=1920, height=1080, frames=300, duration_s=10.0)


def mp4(moov: bytes | None = None, *, largesize: bool = False) -> bytes:
    payload = bytes(100_000)  # moov lands past the head
    if largesize:
        mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + len(payload)) + payload
    else:
        mdat = box(b"mdat", payload)
    return ftyp() + mdat + (video_moov() if moov is None else moov)


def test_mp4_with_moov_at_end() -> None:
    assert inspect_bytes(mp4()) == MP4_MEDIA


def test_mp4_with_64_bit_mdat_size() -> None:
    assert inspect_bytes(mp4(largesize=True)) == MP4_MEDIA


def test_mp4_version_1_headers() -> None:
    assert inspect_bytes(mp4(video_moov(version=1))) == MP4_MEDIA


def test_mp4_moov_after_a_five_gigabyte_mdat_is_reached_without_reading_it() -> None:
    head = ftyp() + struct.pack(">I4sQ", 1, b"mdat", 16 + 5 * GIB)
    moov = video_moov()
    file = SparseFile(len(head) + 5 * GIB + len(moov), {0: head, len(head) + 5 * GIB: moov})

    assert inspect(file.read_at, file.size) == MP4_MEDIA
    assert file.calls <= 4


def test_mp4_mdat_running_to_end_of_file_hides_nothing_it_should_not() -> None:
    data = ftyp() + video_moov() + struct.pack(">I4s", 0, b"mdat") + bytes(1000)

    assert inspect_bytes(data) == MP4_MEDIA


def test_mp4_frames_from_stsz_when_present() -> None:
    moov = box(b"moov", mvhd(600, 1200), trak(b"vide", 640, 480, stsz(48), stts((1, 1))))

    assert inspect_bytes(mp4(moov)).frames == 48


def test_fragmented_mp4_duration_from_mehd() -> None:
    mehd = full_box(b"mehd", 0, struct.pack(">I", 4500))
    moov = box(b"moov", mvhd(1000, 0), box(b"mvex", mehd), trak(b"vide", 320, 240))

    assert inspect_bytes(ftyp(b"iso6") + moov) == Media(
        "video", "video/mp4", width=320, height=240, duration_s=4.5
    )


def test_m4a_is_audio_with_duration() -> None:
    moov = box(b"moov", mvhd(44100, 3 * 44100), trak(b"soun", 0, 0, stts((100, 1024))))

    assert inspect_bytes(ftyp(b"M4A ") + moov) == Media("audio", "audio/mp4", duration_s=3.0)


def test_quicktime_without_ftyp() -> None:
    data = box(b"wide") + box(b"mdat", bytes(5000)) + video_moov()

    assert inspect_bytes(data) == Media(
        "video", "video/quicktime", width=1920, height=1080, frames=300, duration_s=10.0
    )


def test_quicktime_brand_and_m4v_brand() -> None:
    assert sniff(ftyp(b"qt  ") + video_moov()) == ("video", "video/quicktime")
    assert sniff(ftyp(b"M4V ") + video_moov()) == ("video", "video/x-m4v")


def test_heif_still_image_is_not_taken_for_video() -> None:
    with pytest.raises(UnknownContent, match="heic"):
        sniff(ftyp(b"heic") + bytes(100))


@pytest.mark.parametrize(
    "bad_box",
    [
        struct.pack(">I4s", 0xFFFFFFFF, b"free") + bytes(64),
        struct.pack(">I4sQ", 1, b"free", 0) + bytes(64),
        struct.pack(">I4sQ", 1, b"free", 5) + bytes(64),
        struct.pack(">I4sQ", 1, b"free", 2**64 - 1) + bytes(64),
        struct.pack(">I4s", 1, b"free"),
        struct.pack(">I4s", 7, b"free") + bytes(64),
        box(b"moov", struct.pack(">I4s", 0xFFFFFFFF, b"trak"), struct.pack(">I4s", 7, b"mvhd")),
        box(b"moov", box(b"trak", struct.pack(">I4sQ", 1, b"mdia", 3))),
    ],
)
def test_mp4_with_absurd_box_sizes_terminates_quickly(bad_box: bytes) -> None:
    started = time.perf_counter()

    media = inspect_bytes(ftyp() + bad_box + video_moov())

    assert time.perf_counter() - started < 1.0
    assert media.kind == "video"


def test_mp4_with_endless_tiny_boxes_is_bounded() -> None:
    data = ftyp() + box(b"free") * 200_000 + video_moov()

    assert inspect_bytes(data) == Media("video", "video/mp4")


# --- Other video -------------------------------------------------------------------------------


def riff_chunk(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def riff_list(form: bytes, *chunks: bytes) -> bytes:
    return riff_chunk(b"LIST", form + b"".join(chunks))


def avi(*extra_hdrl: bytes) -> bytes:
    avih = struct.pack("<14I", 40_000, 0, 0, 0x10, 250, 0, 1, 0, 320, 240, 0, 0, 0, 0)
    strh = riff_chunk(b"strh", b"vids" + bytes(52))
    hdrl = riff_list(b"hdrl", riff_chunk(b"avih", avih), riff_list(b"strl", strh), *extra_hdrl)
    body = b"AVI " + hdrl + riff_list(b"movi", riff_chunk(b"00dc", bytes(101)))
    return b"RIFF" + struct.pack("<I", len(body)) + body


AVI_MEDIA = Media("video", "video/x-msvideo", width=320, height=240, frames=250, duration_s=10.0)


def test_avi_header() -> None:
    assert inspect_bytes(avi()) == AVI_MEDIA


def test_opendml_avi_counts_all_frames() -> None:
    dmlh = riff_list(b"odml", riff_chunk(b"dmlh", struct.pack("<I", 1000) + bytes(244)))

    media = inspect_bytes(avi(dmlh))

    assert (media.frames, media.duration_s) == (1000, 40.0)


def ebml(element_id: bytes, *children: bytes, unknown_size: bool = False) -> bytes:
    payload = b"".join(children)
    size = b"\x01\xff\xff\xff\xff\xff\xff\xff" if unknown_size else (1 << 56 | len(payload))
    return element_id + (size if isinstance(size, bytes) else size.to_bytes(8, "big")) + payload


def matroska(doctype: bytes, timecode_scale: int, duration: float) -> bytes:
    header = ebml(b"\x1a\x45\xdf\xa3", ebml(b"\x42\x86", b"\x01"), ebml(b"\x42\x82", doctype))
    info = ebml(
        b"\x15\x49\xa9\x66",
        ebml(b"\x2a\xd7\xb1", timecode_scale.to_bytes(4, "big")),
        ebml(b"\x44\x89", struct.pack(">d", duration)),
    )
    audio_track = ebml(b"\xae", ebml(b"\x83", b"\x02"), ebml(b"\xe1", ebml(b"\xb5", bytes(8))))
    video = ebml(b"\xe0", ebml(b"\xb0", b"\x02\x80"), ebml(b"\xba", b"\x01\x68"))
    video_track = ebml(b"\xae", ebml(b"\x83", b"\x01"), video)
    tracks = ebml(b"\x16\x54\xae\x6b", audio_track, video_track)
    cluster = ebml(b"\x1f\x43\xb6\x75", bytes(5000), unknown_size=True)
    return header + ebml(b"\x18\x53\x80\x67", info, tracks, cluster, unknown_size=True)


WEBM_MEDIA = Media("video", "video/webm", width=640, height=360, duration_s=5.0)


def test_webm() -> None:
    assert inspect_bytes(matroska(b"webm", 1_000_000, 5000.0)) == WEBM_MEDIA


def test_matroska_with_custom_timecode_scale() -> None:
    assert inspect_bytes(matroska(b"matroska", 1000, 5_000_000.0)) == Media(
        "video", "video/x-matroska", width=640, height=360, duration_s=5.0
    )


# --- Audio -------------------------------------------------------------------------------------


def wav(frames: int, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(bytes(2 * frames))
    return out.getvalue()


def flac(sample_rate: int, total_samples: int) -> bytes:
    packed = sample_rate << 44 | (2 - 1) << 41 | (16 - 1) << 36 | total_samples
    streaminfo = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + b"\x80" + len(streaminfo).to_bytes(3, "big") + streaminfo + bytes(100)


def test_wav_duration() -> None:
    assert inspect_bytes(wav(12_000, 8000)) == Media("audio", "audio/wav", duration_s=1.5)


def test_flac_duration() -> None:
    assert inspect_bytes(flac(44_100, 441_000)) == Media("audio", "audio/flac", duration_s=10.0)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x02\x01" + bytes(300), "audio/mpeg"),
        (b"\xff\xfb\x90\x64" + bytes(400), "audio/mpeg"),  # MPEG-1 layer III frame
        (b"\xff\xfd\x90\x64" + bytes(400), "audio/mpeg"),  # MPEG-1 layer II frame
        (b"OggS\x00\x02" + bytes(100), "audio/ogg"),
    ],
)
def test_other_audio(data: bytes, mime: str) -> None:
    assert inspect_bytes(data) == Media("audio", mime)


def test_aac_adts_sync_is_not_mp3() -> None:
    with pytest.raises(UnknownContent):
        sniff(b"\xff\xf1\x50\x80" + bytes(100))


# --- PDF and text ------------------------------------------------------------------------------


def test_pdf() -> None:
    data = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"

    assert inspect_bytes(data) == Media("pdf", "application/pdf")


@pytest.mark.parametrize(
    "text",
    [
        "hello, world\n",
        "naïve café, Grüße, 日本語, emoji 🎉\r\n\tindented\n",
        "\ufeffcsv,with,bom\n1,2,3\n",
        "BMW and BMX are words, not bitmaps\n",
        "The free software, a wide moov of text\n",
        "a",
    ],
)
def test_utf8_text(text: str) -> None:
    assert inspect_bytes(text.encode()) == Media("text", "text/plain")


def test_text_whose_head_ends_inside_a_multibyte_character() -> None:
    data = ("a" + "é" * HEAD_SIZE).encode()
    assert data[HEAD_SIZE - 1 : HEAD_SIZE] == b"\xc3"  # the head's last byte starts a character

    assert sniff(data[:HEAD_SIZE]) == ("text", "text/plain")
    assert inspect_bytes(data) == Media("text", "text/plain")


@pytest.mark.parametrize(
    "data",
    [
        b"text with a \x00 byte",
        "café au lait".encode("latin-1"),
        bytes(range(1, 32)) * 10,
        random.Random(7).randbytes(4096),
        b"\x7fELF\x02\x01\x01" + bytes(57),
    ],
    ids=["nul", "latin-1", "controls", "garbage", "elf"],
)
def test_unrecognised_content(data: bytes) -> None:
    with pytest.raises(UnknownContent, match=r"unrecognised content \(starts with [0-9a-f]+\)"):
        inspect_bytes(data)


def test_unrecognised_content_names_what_it_saw() -> None:
    with pytest.raises(UnknownContent, match=r"starts with 7f454c46"):
        sniff(b"\x7fELF\x02\x01\x01" + bytes(57))


def test_empty_file() -> None:
    with pytest.raises(UnknownContent, match="empty file"):
        inspect(SparseFile(1, {}).read_at, 0)
    with pytest.raises(UnknownContent, match="empty file"):
        sniff(b"")


def test_dicom_is_sent_to_the_dicom_route() -> None:
    data = bytes(128) + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + bytes(200)

    with pytest.raises(UnknownContent) as raised:
        inspect_bytes(data)
    assert (
        str(raised.value)
        == "DICOM content: upload it as a DICOM series (POST /v1/folders/{id}/dicom)"
    )


# --- Damaged input -----------------------------------------------------------------------------

FACTS: dict[str, tuple[bytes, Media]] = {
    **{
        name: (data, Media("image", mime, width=width, height=height))
        for name, (data, mime, width, height) in IMAGES.items()
    },
    "mp4": (mp4(), MP4_MEDIA),
    "mp4-largesize": (mp4(largesize=True), MP4_MEDIA),
    "avi": (avi(), AVI_MEDIA),
    "webm": (matroska(b"webm", 1_000_000, 5000.0), WEBM_MEDIA),
    "flac": (flac(44_100, 441_000), Media("audio", "audio/flac", duration_s=10.0)),
}


def cut_points(length: int) -> list[int]:
    fixed = [1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 26, 28, 30, 40, 64, 100, 200, 500]
    relative = [length // 4, length // 2, length - 100, length - 10, length - 1]
    return sorted({cut for cut in fixed + relative if 0 < cut < length})


def assert_consistent(media: Media, expected: Media) -> None:
    """A damaged file may lose facts (or even its kind, to text), but never gains wrong ones."""
    assert media.kind in (expected.kind, "text")
    if media.kind == expected.kind:
        for fact in ("width", "height", "frames", "duration_s"):
            assert getattr(media, fact) in (None, getattr(expected, fact)), fact


@pytest.mark.parametrize("name", FACTS)
def test_truncated_files_lose_facts_not_their_footing(name: str) -> None:
    data, expected = FACTS[name]
    for cut in cut_points(len(data)):
        try:
            media = inspect_bytes(data[:cut])
        except UnknownContent:
            continue
        assert_consistent(media, expected)


@pytest.mark.parametrize("name", FACTS)
def test_file_shorter_than_its_stated_size(name: str) -> None:
    data, expected = FACTS[name]
    file = SparseFile(len(data) + 10_000, {0: data})

    def read_at(offset: int, length: int) -> bytes:
        return file.read_at(offset, length)[: max(0, len(data) - offset)]

    assert_consistent(inspect(read_at, file.size), expected)


def inspect_or_unknown(data: bytes) -> Media | None:
    try:
        return inspect_bytes(data)
    except UnknownContent:
        return None


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
MAGIC_PREFIXES = [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
    b"RIFF\x00\x00\x00\x00WEBPVP8X",
    b"RIFF\x00\x00\x00\x00AVI LIST",
    b"RIFF\x00\x00\x00\x00WAVE",
    b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x28\x00\x00\x00",
    b"II*\x00",
    b"MM\x00*",
    b"\x00\x00\x00\x18ftypisom",
    b"\x00\x00\x00\x18ftypM4A ",
    b"\x1a\x45\xdf\xa3",
    b"fLaC\x00",
    b"ID3\x04\x00\x00\x00\x00\x00\x00",
]


@PROPERTY_SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes_raise_nothing_but_unknown_content(data: bytes) -> None:
    inspect_or_unknown(data)


@PROPERTY_SETTINGS
@given(st.sampled_from(MAGIC_PREFIXES), st.binary(max_size=2048))
def test_random_bytes_after_a_magic_number(prefix: bytes, tail: bytes) -> None:
    inspect_or_unknown(prefix + tail)


@PROPERTY_SETTINGS
@given(st.sampled_from(sorted(FACTS)), st.data())
def test_corrupted_fixtures_raise_nothing_but_unknown_content(
    name: str, data: st.DataObject
) -> None:
    damaged = bytearray(FACTS[name][0])
    # Headers sit at the start, and for moov-at-end MP4 also at the end.
    near_start = st.integers(0, min(len(damaged), 2048) - 1)
    near_end = st.integers(max(0, len(damaged) - 2048), len(damaged) - 1)
    for _ in range(data.draw(st.integers(1, 8))):
        damaged[data.draw(st.one_of(near_start, near_end))] = data.draw(st.integers(0, 255))

    inspect_or_unknown(bytes(damaged))
