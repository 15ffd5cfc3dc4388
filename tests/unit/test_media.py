"""The accept-list sniffer and the media facts read through Pillow and PyAV, on real files
made in memory, and on hostile ones: damaged, truncated, lying about their sizes."""

from __future__ import annotations

import io
import random
import struct
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from services.ingest.media import facts as facts_module
from services.ingest.media.facts import READ_BUDGET, Facts, inspect
from services.ingest.media.kinds import HEAD_SIZE, UnknownContent, sniff
from shared.contracts.catalog import Media
from shared.kit.isolated import Isolated
from shared.kit.media import BLOCK
from tests import media_fixtures
from tests.thumbnail_fixtures import decompression_bomb

# Damaged files make Pillow warn about what it skipped: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")

MAX_CALLS = READ_BUDGET // BLOCK  # the byte budget in whole blocks
MAX_LENGTH = BLOCK  # never more than a block in one call
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


def inspect_bytes(data: bytes, time_cap: float = 5.0) -> Facts:
    file = SparseFile(len(data), {0: data})
    return inspect(file.read_at, file.size, time_cap=time_cap)


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

    assert inspect_bytes(data) == Facts("image", mime, Media(width=width, height=height))
    assert sniff(data[:HEAD_SIZE]) == ("image", mime)


def test_a_huge_image_has_its_size_though_nothing_is_decoded() -> None:
    # 40,000 x 40,000: past Pillow's decompression-bomb limit, which guards decoding.
    assert inspect_bytes(decompression_bomb()).media == Media(width=40_000, height=40_000)


def tiff_of_strips(count: int) -> bytes:
    """A 1 x `count` TIFF listing `count` one-row strips (all at one offset): Pillow's
    opener builds a tile for each, in Python, before any size is known."""
    entries = [
        (256, 4, 1, struct.pack("<I", 1)),  # width
        (257, 4, 1, struct.pack("<I", count)),  # height
        (258, 3, 1, struct.pack("<HH", 8, 0)),  # bits per sample
        (259, 3, 1, struct.pack("<HH", 1, 0)),  # no compression
        (262, 3, 1, struct.pack("<HH", 1, 0)),  # black is zero
        (273, 4, count, b""),  # strip offsets: after the directory (below)
        (278, 4, 1, struct.pack("<I", 1)),  # rows per strip
        (279, 4, 1, struct.pack("<I", 1)),  # strip byte counts
    ]
    after = 8 + 2 + 12 * len(entries) + 4
    directory = struct.pack("<H", len(entries))
    for tag, kind, number, value in entries:
        directory += struct.pack("<HHI", tag, kind, number) + (value or struct.pack("<I", after))
    offsets = struct.pack(f"<{count}I", *([after] * count))
    return b"II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<I", 0) + offsets


def test_a_tiff_s_strip_list_is_read_in_the_prober_not_in_ingest_s_thread() -> None:
    # 400,000 strips: about a second of Pillow's loop in whichever process opens it (4
    # million took 37 s and 1.3 GB), none of it in the thread that asked.
    data = tiff_of_strips(400_000)
    started = time.thread_time()
    facts = inspect_bytes(data)
    assert time.thread_time() - started < 0.3
    assert (facts.kind, facts.mime_type) == ("image", "image/tiff")


def test_a_file_waits_for_a_busy_prober_a_bounded_time_and_loses_only_its_facts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No worker free at all (each held by a hostile file to its cap, say).
    monkeypatch.setattr(facts_module, "PROBER", Isolated(facts_module.PROBER.module, workers=0))
    monkeypatch.setattr(facts_module, "PROBE_WAIT_S", 0.2)
    found: list[Facts] = []
    asking = threading.Thread(target=lambda: found.append(inspect_bytes(IMAGES["webp-vp8"][0])))
    asking.daemon = True  # before the bound, it waited forever
    with structlog.testing.capture_logs() as logs:
        asking.start()
        asking.join(timeout=5)
    assert found == [Facts("image", "image/webp", Media())]
    # Told apart from a file the prober failed on: the load is to blame, not the file.
    assert [entry["reason"] for entry in logs if entry["event"] == "ingest.facts_unknown"] == [
        "busy"
    ]


def test_ordinary_files_queued_for_the_prober_all_get_their_facts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bucket import's 32 readers at once: each file waits its turn behind the others;
    # with a 5 s wait, 4 to 8 of 32 inspects of a 54 MB mp4 lost their facts for good.
    assert facts_module.PROBE_WAIT_S >= 4 * (facts_module.TIME_CAP + facts_module.PROBE_GRACE_S)
    # Workers of its own: a worker dies with the thread that started it (the pool's,
    # here), and the next test's file could be handed one on its way out.
    prober = Isolated(facts_module.PROBER.module, workers=2, max_answer=64 * 1024)
    monkeypatch.setattr(facts_module, "PROBER", prober)
    data, mime, expected = VIDEOS["mp4-h264"]
    try:
        with ThreadPoolExecutor(32) as pool:
            found = list(pool.map(lambda _: inspect_bytes(data), range(32)))
    finally:
        prober.stop()
    assert found == [Facts("video", mime, expected)] * 32


# --- Video -------------------------------------------------------------------------------------


def mp4() -> bytes:
    """A real 1080p MP4 (moov after mdat, as FFmpeg writes it): 10 frames, 1 s."""
    return media_fixtures.video("mp4", "mpeg4", 1920, 1080, 10, 10)


MP4_MEDIA = Media(width=1920, height=1080, frames=10, duration_s=1.0, fps=10.0, codec="mpeg4")

VIDEOS: dict[str, tuple[bytes, str, Media]] = {
    "mp4": (mp4(), "video/mp4", MP4_MEDIA),
    "mp4-h264": (
        media_fixtures.video("mp4", "libx264", 64, 48, 10, 5),
        "video/mp4",
        Media(width=64, height=48, frames=10, duration_s=2.0, fps=5.0, codec="h264"),
    ),
    "mov": (
        media_fixtures.video("mov", "mpeg4"),
        "video/quicktime",
        Media(width=64, height=48, frames=10, duration_s=2.0, fps=5.0, codec="mpeg4"),
    ),
    "webm": (
        media_fixtures.video("webm", "libvpx", 64, 48, 10, 10),
        "video/webm",
        Media(width=64, height=48, duration_s=1.0, fps=10.0, codec="vp8"),
    ),
    "mkv": (
        media_fixtures.video("matroska", "mpeg4"),
        "video/x-matroska",
        Media(width=64, height=48, duration_s=2.0, fps=5.0, codec="mpeg4"),
    ),
    "avi": (
        media_fixtures.video("avi", "mpeg4"),
        "video/x-msvideo",
        Media(width=64, height=48, frames=10, duration_s=2.0, fps=5.0, codec="mpeg4"),
    ),
}


@pytest.mark.parametrize("name", VIDEOS)
def test_video_facts(name: str) -> None:
    data, mime, expected = VIDEOS[name]

    assert inspect_bytes(data) == Facts("video", mime, expected)


@pytest.mark.parametrize("rotation", [-90, 90])
def test_a_phone_s_portrait_clip_has_its_size_as_shown(rotation: int) -> None:
    # Stored 1920x1080 with a quarter turn in its display matrix: shown 1080 wide.
    data = media_fixtures.video("mp4", "libx264", 1920, 1080, 5, 5, rotation=rotation)

    media = inspect_bytes(data).media

    assert (media.width, media.height) == (1080, 1920)


def test_a_half_turned_clip_keeps_its_size() -> None:
    data = media_fixtures.video("mp4", "libx264", 64, 48, 5, 5, rotation=180)

    assert (inspect_bytes(data).media.width, inspect_bytes(data).media.height) == (64, 48)


def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The top-level ISO boxes of a file: (type, the whole box)."""
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append((data[pos + 4 : pos + 8], data[pos : pos + size]))
        pos += size
    return out


def sparse_mp4_after_five_gigabytes() -> SparseFile:
    # FFmpeg leaves an 8-byte free box before mdat, to grow its header to 64 bits: done
    # here, the samples keep their offsets and the mdat claims 5 GiB more than it holds.
    (_, ftyp), (free, _), (_, mdat), (_, moov) = boxes(mp4())
    assert free == b"free"
    payload = mdat[8:]
    head = ftyp + struct.pack(">I4sQ", 1, b"mdat", 16 + len(payload) + 5 * GIB) + payload
    return SparseFile(len(head) + 5 * GIB + len(moov), {0: head, len(head) + 5 * GIB: moov})


def test_mp4_moov_after_a_five_gigabyte_mdat_is_reached_without_reading_it() -> None:
    file = sparse_mp4_after_five_gigabytes()

    assert inspect(file.read_at, file.size) == Facts("video", "video/mp4", MP4_MEDIA)
    assert file.calls <= 8


def with_stsz_count(data: bytes, count: int) -> bytes:
    at = data.rindex(b"stsz")
    return data[: at + 12] + struct.pack(">I", count) + data[at + 16 :]


def test_a_video_claiming_a_billion_frames_costs_a_bounded_read() -> None:
    data = with_stsz_count(mp4(), 1_000_000_000)
    file = SparseFile(len(data), {0: data})

    facts = inspect(file.read_at, file.size)

    assert facts.kind == "video"
    assert facts.media.frames in (None, 10)
    assert file.calls <= 2


def test_an_avi_claiming_a_billion_frames_is_read_from_its_header_alone() -> None:
    data = bytearray(VIDEOS["avi"][0])
    struct.pack_into("<I", data, 48, 1_000_000_000)  # avih's total frames
    file = SparseFile(len(data), {0: bytes(data)})

    facts = inspect(file.read_at, file.size)

    assert (facts.kind, facts.media.width, facts.media.height) == ("video", 64, 48)
    assert file.calls <= 2


def test_a_decoder_that_keeps_reading_is_stopped_by_the_time_cap() -> None:
    # A JPEG whose markers never come: Pillow skips junk a byte at a time, so 64 MiB of
    # it (the byte budget) would take minutes; the time cap stops it after a few blocks.
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(7)
    file = SparseFile(GIB, {0: head})

    facts = inspect(file.read_at, file.size, time_cap=0.3)

    assert facts == Facts("image", "image/jpeg", Media())
    assert file.calls < MAX_CALLS // 4


def test_a_store_that_fails_is_not_taken_for_damaged_content() -> None:
    file = sparse_mp4_after_five_gigabytes()

    def read_at(offset: int, length: int) -> bytes:
        if offset > GIB:
            raise ConnectionError("the store went away")
        return file.read_at(offset, length)

    with pytest.raises(ConnectionError):
        inspect(read_at, file.size)


def test_quicktime_without_ftyp() -> None:
    data = box(b"wide") + box(b"mdat", bytes(5000)) + box(b"moov", box(b"mvhd", bytes(100)))

    assert sniff(data) == ("video", "video/quicktime")


def box(tag: bytes, *children: bytes) -> bytes:
    payload = b"".join(children)
    return struct.pack(">I", 8 + len(payload)) + tag + payload


def ftyp(brand: bytes = b"isom") -> bytes:
    return box(b"ftyp", brand, struct.pack(">I", 512), brand, b"mp41")


def test_quicktime_brand_and_m4v_brand() -> None:
    assert sniff(ftyp(b"qt  ") + box(b"moov")) == ("video", "video/quicktime")
    assert sniff(ftyp(b"M4V ") + box(b"moov")) == ("video", "video/x-m4v")
    assert sniff(ftyp(b"iso6") + box(b"moov")) == ("video", "video/mp4")


def test_heif_still_image_is_not_taken_for_video() -> None:
    with pytest.raises(UnknownContent, match="heic"):
        sniff(ftyp(b"heic") + bytes(100))


def test_matroska_and_webm_are_told_apart_by_their_doctype() -> None:
    assert sniff(VIDEOS["webm"][0]) == ("video", "video/webm")
    assert sniff(VIDEOS["mkv"][0]) == ("video", "video/x-matroska")
    assert sniff(b"\x1a\x45\xdf\xa3" + b"\xff" * 20) == ("video", "video/x-matroska")


# --- Audio -------------------------------------------------------------------------------------

AUDIO: dict[str, tuple[bytes, str, Media]] = {
    "mp3": (
        media_fixtures.mp3(),
        "audio/mpeg",
        Media(duration_s=2.0, sample_rate=44_100, channels=2, codec="mp3"),
    ),
    "ogg": (
        media_fixtures.ogg(),
        "audio/ogg",
        Media(duration_s=2.013, sample_rate=48_000, channels=1, codec="opus"),
    ),
    "flac": (
        media_fixtures.flac(),
        "audio/flac",
        Media(duration_s=2.0, sample_rate=22_050, channels=1, codec="flac"),
    ),
    "wav": (
        media_fixtures.wav(),
        "audio/wav",
        Media(duration_s=2.0, sample_rate=8_000, channels=1, codec="pcm_s16le"),
    ),
    "m4a": (
        media_fixtures.m4a(),
        "audio/mp4",
        Media(duration_s=2.02322, sample_rate=44_100, channels=2, codec="aac"),
    ),
}


@pytest.mark.parametrize("name", AUDIO)
def test_audio_facts(name: str) -> None:
    data, mime, expected = AUDIO[name]

    assert inspect_bytes(data) == Facts("audio", mime, expected)


def test_a_wav_written_by_the_standard_library() -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(bytes(2 * 12_000))

    assert inspect_bytes(out.getvalue()).media == Media(
        duration_s=1.5, sample_rate=8000, channels=1, codec="pcm_s16le"
    )


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x02\x01" + bytes(300), "audio/mpeg"),
        (b"\xff\xfb\x90\x64" + bytes(400), "audio/mpeg"),  # MPEG-1 layer III frame
        (b"\xff\xfd\x90\x64" + bytes(400), "audio/mpeg"),  # MPEG-1 layer II frame
        (b"OggS\x00\x02" + bytes(100), "audio/ogg"),
        (b"fLaC" + bytes(100), "audio/flac"),
    ],
)
def test_audio_headers_alone_are_sniffed_without_facts(data: bytes, mime: str) -> None:
    assert inspect_bytes(data).kind == "audio"
    assert sniff(data) == ("audio", mime)


# --- Sniffing alone, PDF and text ------------------------------------------------------------


def test_aac_adts_sync_is_not_mp3() -> None:
    with pytest.raises(UnknownContent):
        sniff(b"\xff\xf1\x50\x80" + bytes(100))


# --- PDF and text ------------------------------------------------------------------------------


def test_pdf() -> None:
    data = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"

    assert inspect_bytes(data) == Facts("pdf", "application/pdf", Media())


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
    assert inspect_bytes(text.encode()) == Facts("text", "text/plain", Media())


def test_text_whose_head_ends_inside_a_multibyte_character() -> None:
    data = ("a" + "é" * HEAD_SIZE).encode()
    assert data[HEAD_SIZE - 1 : HEAD_SIZE] == b"\xc3"  # the head's last byte starts a character

    assert sniff(data[:HEAD_SIZE]) == ("text", "text/plain")
    assert inspect_bytes(data) == Facts("text", "text/plain", Media())


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

FACTS: dict[str, tuple[bytes, Facts]] = {
    **{
        name: (data, Facts("image", mime, Media(width=width, height=height)))
        for name, (data, mime, width, height) in IMAGES.items()
        if not name.startswith("jpeg-big")  # 200 KiB: slow to cut at every point
    },
    **{name: (data, Facts("video", mime, m)) for name, (data, mime, m) in VIDEOS.items()},
    **{name: (data, Facts("audio", mime, m)) for name, (data, mime, m) in AUDIO.items()},
}
FACTS["mp4"] = (media_fixtures.video("mp4", "mpeg4"), Facts("video", "video/mp4", VIDEOS["mov"][2]))


def cut_points(length: int) -> list[int]:
    fixed = [1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18, 20, 24, 26, 28, 30, 40, 64, 100, 200, 500]
    relative = [length // 4, length // 2, length - 100, length - 10, length - 1]
    return sorted({cut for cut in fixed + relative if 0 < cut < length})


def assert_consistent(facts: Facts, expected: Facts) -> None:
    """A damaged file may lose facts (or even its kind, to text), but never gains wrong
    ones: a size, a frame count, a sample rate is the one stated or none; a duration may
    be estimated from what is left, never longer than the whole."""
    assert facts.kind in (expected.kind, "text")
    if facts.kind == expected.kind:
        for fact in ("width", "height", "frames", "sample_rate", "channels"):
            assert getattr(facts.media, fact) in (None, getattr(expected.media, fact)), fact
        found, whole = facts.media.duration_s, expected.media.duration_s
        assert found is None or (whole is not None and 0 < found <= whole * 1.01), found


@pytest.mark.parametrize("name", FACTS)
def test_truncated_files_lose_facts_not_their_footing(name: str) -> None:
    data, expected = FACTS[name]
    for cut in cut_points(len(data)):
        try:
            facts = inspect_bytes(data[:cut])
        except UnknownContent:
            continue
        assert_consistent(facts, expected)


@pytest.mark.parametrize("name", FACTS)
def test_file_shorter_than_its_stated_size(name: str) -> None:
    data, expected = FACTS[name]
    file = SparseFile(len(data) + 10_000, {0: data})

    def read_at(offset: int, length: int) -> bytes:
        return file.read_at(offset, length)[: max(0, len(data) - offset)]

    facts = inspect(read_at, file.size)
    assert facts.kind == expected.kind
    for fact in ("width", "height", "sample_rate", "channels"):
        assert getattr(facts.media, fact) in (None, getattr(expected.media, fact)), fact


def inspect_or_unknown(data: bytes) -> Facts | None:
    try:
        return inspect_bytes(data, time_cap=2.0)
    except UnknownContent:
        return None


PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
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
    b"OggS\x00\x02",
    b"ID3\x04\x00\x00\x00\x00\x00\x00",
    b"\xff\xfb\x90\x64",
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
