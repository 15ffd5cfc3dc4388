"""The thumbnails context's pure rules (sizes, keys, windowing, caching) and its drawing
functions on real files made in memory (no store, no process pool)."""

from __future__ import annotations

import io
import warnings

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from services.thumbnails import domain, render
from shared.kit.media import BLOCK, OverBudget, RangeFile
from tests import thumbnail_fixtures as media
from tests.dicom_fixtures import ct_slice

# -- sizes and keys -------------------------------------------------------------------


def test_a_picture_fits_its_size_on_the_long_side_keeping_its_aspect() -> None:
    assert domain.fit(1024, 768, 128) == (128, 96)
    assert domain.fit(768, 1024, 512) == (384, 512)
    assert domain.fit(100, 50, 512) == (100, 50)  # never upscaled
    assert domain.fit(10_000, 1, 128) == (128, 1)  # at least a pixel each way


@given(st.integers(1, 20_000), st.integers(1, 20_000), st.sampled_from(domain.SIZES))
def test_a_fitted_picture_is_never_larger_than_asked_nor_than_the_original(
    width: int, height: int, size: int
) -> None:
    w, h = domain.fit(width, height, size)
    assert 1 <= w <= width and 1 <= h <= height
    assert max(w, h) == min(size, max(width, height))


def test_the_size_served_is_the_smallest_made_that_covers_the_one_asked() -> None:
    assert domain.pick([128, 512], 1) == 128
    assert domain.pick([128, 512], 128) == 128
    assert domain.pick([128, 512], 129) == 512
    assert domain.pick([128, 512], 4096) == 512


def test_identical_content_has_one_source_and_keys_of_its_own() -> None:
    sha = "ab" * 32
    source = domain.source_of("image", sha)
    assert source == f"image:{sha}"
    assert domain.blob_key(source, 128, "webp") == f"thumbnails/image/ab/{sha}/128.webp"
    with pytest.raises(ValueError):
        domain.source_of("image", "../../etc/passwd")
    with pytest.raises(ValueError):
        domain.source_of("audio", sha)


def test_what_draws_each_kind() -> None:
    assert domain.renderer_of("image_group") == "image"
    assert domain.renderer_of("image_sequence") == "image"
    assert domain.renderer_of("dicom_series") == "dicom"
    assert domain.renderer_of("audio") is None
    assert domain.middle(1) == 0 and domain.middle(5) == 2 and domain.middle(4) == 2


def test_if_none_match_names_the_picture() -> None:
    sha = "c" * 64
    assert domain.not_modified(f'"{sha}"', sha)
    assert domain.not_modified(f'W/"{sha}", "other"', sha)
    assert domain.not_modified("*", sha)
    assert not domain.not_modified('"other"', sha)
    assert not domain.not_modified(None, sha)


def test_a_failure_reason_stays_short() -> None:
    assert len(domain.short_reason("x" * 10_000)) == domain.MAX_REASON


# -- DICOM display -------------------------------------------------------------------


def test_a_window_maps_its_range_to_black_through_white() -> None:
    values = np.array([-1000, 39, 40, 200, 1000], np.int16)
    grey = domain.window(values, center=40, width=400)
    assert grey[0] == 0 and grey[-1] == 255
    assert 127 <= grey[1] <= grey[2] <= 128  # about the centre: mid-grey
    assert 0 < grey[1] < grey[3] < 255


def test_the_window_follows_dicom_s_linear_function_at_its_edges() -> None:
    # c=100, w=11: x <= 94.5 is black, x > 104.5 white (PS3.3 C.11.2.1.2.1).
    grey = domain.window(np.array([94, 95, 104, 105]), center=100, width=11)
    assert grey[0] == 0 and grey[3] == 255
    assert 0 < grey[1] < grey[2] < 255


def test_without_a_window_the_values_own_range_is_stretched() -> None:
    grey = domain.min_max(np.array([[100, 200], [300, 355]], np.uint16))
    assert grey.tolist() == [[0, 100], [200, 255]]
    assert domain.min_max(np.full((3, 3), 7)).max() == 0  # flat: black, no division by 0


def test_display_rescales_then_windows_and_inverts_monochrome1() -> None:
    stored = np.array([0, 1000, 3000], np.uint16)
    # CT: HU = stored - 1024; a window of 0..1000 HU.
    shown = domain.display(stored, slope=1, intercept=-1024, center=500, width=1000)
    assert shown.tolist()[0] == 0 and shown.tolist()[2] == 255
    inverted = domain.display(stored, inverted=True)
    assert inverted.tolist() == [255, 170, 0]
    # A window narrower than one value is unusable: min/max instead.
    assert domain.display(stored, center=5, width=0).tolist() == [0, 85, 255]


def test_multi_valued_dicom_numbers_give_their_first_value() -> None:
    assert domain.first_value([40.0, 400.0]) == 40.0
    assert domain.first_value("12.5") == 12.5
    assert domain.first_value(None) is None
    assert domain.first_value("not a number") is None
    assert domain.first_value([]) is None


# -- drawing -------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def bombs_are_errors() -> None:
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def drawn(renderer: str, data: bytes, fmt: str = "webp") -> list[render.Picture]:
    image = render.DRAW[renderer](io.BytesIO(data), max(domain.SIZES))
    return render.pictures(image, domain.SIZES, fmt)


def opened(picture: render.Picture) -> Image.Image:
    image = Image.open(io.BytesIO(picture.data))
    image.load()
    return image


def test_an_image_gets_a_picture_per_size_in_webp() -> None:
    small, large = drawn("image", media.png(640, 480))
    assert (small.size, small.width, small.height) == (128, 128, 96)
    assert (large.size, large.width, large.height) == (512, 512, 384)
    for picture in (small, large):
        image = opened(picture)
        assert image.format == "WEBP" and image.size == (picture.width, picture.height)


def test_an_image_within_the_smallest_size_gets_that_picture_at_every_size() -> None:
    small, large = drawn("image", media.png(40, 30))
    assert (small.size, large.size) == (128, 512)
    assert (small.width, small.height) == (large.width, large.height) == (40, 30)
    assert small.data == large.data and opened(small).size == (40, 30)


def test_a_jpeg_is_turned_as_its_exif_orientation_says() -> None:
    # 800x400 turned by orientation 6 shows 400 wide, 800 tall, red on top.
    _, large = drawn("image", media.jpeg(800, 400, orientation=6), fmt="jpeg")
    image = opened(large).convert("RGB")
    assert image.format is None or large.data[:3] == b"\xff\xd8\xff"
    assert (large.width, large.height) == (256, 512)
    red, _, blue = image.getpixel((128, 64))  # type: ignore[misc]
    assert red > 150 and blue < 100


def test_transparency_is_kept_in_webp_and_flattened_on_white_in_jpeg() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (50, 40), (0, 0, 0, 0)).save(out, "PNG")
    webp = opened(drawn("image", out.getvalue())[0])
    assert webp.mode == "RGBA" and webp.getpixel((10, 10))[3] == 0  # type: ignore[index]
    jpeg = opened(drawn("image", out.getvalue(), fmt="jpeg")[0])
    assert min(jpeg.convert("RGB").getpixel((10, 10))) > 240  # type: ignore[arg-type]


def test_a_16_bit_grey_image_is_stretched_to_8_bits() -> None:
    out = io.BytesIO()
    Image.fromarray(np.arange(0, 60000, 1000, dtype=np.uint16).reshape(6, 10)).save(out, "PNG")
    picture = drawn("image", out.getvalue())[0]
    grey = np.asarray(opened(picture).convert("L"))
    assert grey.min() < 10 and grey.max() > 245


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(render.Unthumbnailable) as refused:
        drawn("image", media.decompression_bomb())
    assert refused.value.code == "too_large"


def test_a_truncated_image_raises() -> None:
    with pytest.raises(OSError, match="truncated"):
        drawn("image", media.truncated_png())


def test_a_video_gets_a_frame() -> None:
    small, large = drawn("video", media.mp4(160, 120))
    assert (small.width, small.height) == (128, 96)
    assert (large.width, large.height) == (160, 120)  # its own size: never upscaled
    # The left quarter of every frame is green.
    r, g, _ = opened(large).convert("RGB").getpixel((10, 60))  # type: ignore[misc]
    assert g > 150 and r < 80


@pytest.mark.parametrize("container_format", ["matroska", "avi"])
def test_a_video_in_each_container_ingest_takes_gets_a_frame(container_format: str) -> None:
    _, large = drawn("video", media.mp4(160, 120, container_format=container_format))
    assert (large.width, large.height) == (160, 120)


@pytest.mark.parametrize("container_format", ["nut", "flv"])
def test_ffmpeg_probes_only_for_the_demuxers_ingest_takes(container_format: str) -> None:
    # Only what ingest sniffed as MP4/MOV, Matroska/WebM or AVI is drawn as a video:
    # content that FFmpeg would take for another of its formats (a playlist, a session
    # description naming other sources) is not opened as that.
    with pytest.raises(render.Unthumbnailable) as refused:
        drawn("video", media.mp4(160, 120, container_format=container_format))
    assert refused.value.code == "unreadable"


@pytest.mark.parametrize(("rotation", "green_at"), [(-90, "top"), (90, "bottom")])
def test_a_phone_s_portrait_clip_is_drawn_standing(rotation: int, green_at: str) -> None:
    # Stored 160x120 with its left quarter green and a quarter turn in its display
    # matrix: a clockwise turn (-90, a phone held upright) puts that quarter on top.
    _, large = drawn("video", media.mp4(160, 120, rotation=rotation))
    assert (large.width, large.height) == (120, 160)
    image = opened(large).convert("RGB")
    top, bottom = image.getpixel((60, 10)), image.getpixel((60, 150))
    green, other = (top, bottom) if green_at == "top" else (bottom, top)
    assert green[1] > 150 and green[0] < 80  # type: ignore[index]
    assert not (other[1] > 150 and other[0] < 80)  # type: ignore[index]


def test_a_pdf_gets_its_first_page_at_the_largest_size() -> None:
    small, large = drawn("pdf", media.pdf(300, 200))
    assert (large.width, large.height) == (512, 341) or (large.width, large.height) == (
        512,
        342,
    )
    r, g, b = opened(small).convert("RGB").getpixel((60, 40))  # type: ignore[misc]
    assert g > 120 and r < 80 and b < 110


def test_a_dicom_slice_is_windowed_by_its_own_window() -> None:
    ramp = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096
    data = ct_slice(
        rows=64,
        columns=64,
        pixel_data=ramp.tobytes(),
        overrides={"WindowCenter": "2048", "WindowWidth": "4096"},
    )
    small, _ = drawn("dicom", data)
    grey = np.asarray(opened(small).convert("L"))
    assert (small.width, small.height) == (64, 64)
    assert grey[0, 0] < 10 and grey[-1, -1] > 240


def test_a_dicom_file_without_pixels_is_unthumbnailable() -> None:
    with pytest.raises(render.Unthumbnailable):
        drawn("dicom", b"not dicom at all" * 20)


class InMemoryStore:
    """A blob store's `read_at` over bytes (for the range reader alone)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.data[offset : offset + length]


def test_the_range_reader_reads_only_the_blocks_asked_for_within_its_budget() -> None:
    data = bytes(range(256)) * 8192  # 2 MiB
    store = InMemoryStore(data)

    def read_at(offset: int, length: int) -> bytes:
        return store.read_at("k", offset, length)

    reader = RangeFile(read_at, len(data), budget=render.READ_BUDGET)
    reader.seek(-10, io.SEEK_END)
    assert reader.read(100) == data[-10:]
    reader.seek(BLOCK - 2)
    assert reader.read(4) == data[BLOCK - 2 : BLOCK + 2]
    assert len(store.reads) == 3  # the last block, then the first two
    tight = RangeFile(read_at, len(data), budget=BLOCK)
    with pytest.raises(OverBudget):
        tight.read(BLOCK + 1)


def test_the_worker_s_refusals_cross_processes_whole() -> None:
    import pickle

    refused = pickle.loads(pickle.dumps(render.Unthumbnailable("too_large", "frames of 9x9")))
    assert (refused.code, str(refused)) == ("too_large", "frames of 9x9")
    failed = pickle.loads(pickle.dumps(render.SourceUnavailable("the store did not answer")))
    assert str(failed) == "the store did not answer"


def test_a_video_s_frame_is_drawn_from_a_few_ranges_of_it_not_the_whole_file() -> None:
    data = media.mp4(320, 240, frames=100, noise=True)  # 10 s, incompressible: megabytes
    store = InMemoryStore(data)
    reader = RangeFile(
        lambda at, n: store.read_at("k", at, n), len(data), budget=render.READ_BUDGET
    )
    image = render.draw_video(reader, 512)  # type: ignore[arg-type]
    assert image.size == (320, 240)
    assert len(data) > 2 * 1024 * 1024
    assert reader.read_bytes < len(data) / 3, (reader.read_bytes, len(data))


def test_a_source_past_the_read_budget_is_too_large_to_draw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = media.photo(seed=1)  # a textured JPEG: more than one block
    assert len(data) > BLOCK
    store = InMemoryStore(data)
    # An S3 store's object, read by ranges of its URL (here, of these bytes).
    monkeypatch.setattr(render, "_store", None)
    monkeypatch.setattr(render, "_http", httpx.Client())
    monkeypatch.setattr(
        render, "presigned_reader", lambda url, _: lambda at, n: store.read_at(url, at, n)
    )
    monkeypatch.setattr(render, "READ_BUDGET", BLOCK)

    with pytest.raises(render.Unthumbnailable) as refused:
        render.make(render.Job("image", "k", len(data), "webp", url="http://store/k"))
    assert refused.value.code == "too_large"
    assert sum(length for _, length in store.reads) <= BLOCK  # never past the budget


def test_a_photo_read_by_url_takes_one_request_and_a_large_video_its_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each request to S3 (or through ingest to a customer's bucket) is a round trip:
    content of up to render.WHOLE_AT_ONCE is read in one, larger content by blocks."""
    photo = media.photo(seed=2)
    assert BLOCK < len(photo) <= render.WHOLE_AT_ONCE
    video = media.mp4(320, 240, frames=150, noise=True)  # 15 s, incompressible
    assert len(video) > render.WHOLE_AT_ONCE
    stores = {"photo": InMemoryStore(photo), "video": InMemoryStore(video)}
    monkeypatch.setattr(render, "_store", None)
    monkeypatch.setattr(render, "_http", httpx.Client())
    monkeypatch.setattr(
        render, "presigned_reader", lambda url, _: lambda at, n: stores[url].read_at(url, at, n)
    )
    render.make(render.Job("image", "k", len(photo), "webp", url="photo"))
    assert stores["photo"].reads == [(0, len(photo))]
    render.make(render.Job("video", "v", len(video), "webp", url="video"))
    assert all(length <= BLOCK for _, length in stores["video"].reads)
    assert sum(length for _, length in stores["video"].reads) < len(video) / 3


# -- bounded events (docs/events.md) -------------------------------------------------


def test_the_largest_thumbnails_events_are_far_below_what_the_bus_carries() -> None:
    import uuid

    from services.thumbnails.handlers import SWEEP_BATCH
    from shared.contracts import limits
    from shared.contracts import thumbnails as ev

    sources = [domain.source_of("video", f"{n:064x}") for n in range(SWEEP_BATCH)]
    reclaimed = ev.ThumbnailsReclaimed(
        sources=sources,
        blob_keys=[domain.blob_key(s, size, "webp") for s in sources for size in domain.SIZES],
    )
    # A hostile file's decoder may say anything, at any length, in any script.
    failed = ev.ThumbnailFailed(
        file_id=uuid.uuid4(),
        source=sources[0],
        code="unreadable",
        reason=domain.short_reason("\U0001f600" * 100_000),
    )
    for event in (reclaimed, failed):
        assert limits.json_size(event.model_dump(mode="json")) < limits.PAGE_BYTES


def test_a_batch_s_requests_and_settlements_are_pages_within_their_bounds() -> None:
    """2,500 files asked for by one cause: a few pages of at most PAGE_ITEMS; settled with
    the longest reasons a decoder may give: cut by bytes, each page a whole event the
    store takes. Each page names its files in order (the audit's `file_ids`) and stands
    for the per-file events it replaces."""
    import uuid

    from services.thumbnails.handlers import Paged
    from shared.contracts import limits
    from shared.contracts import thumbnails as ev
    from shared.contracts.envelope import Cause

    cause = Cause(actor="test", correlation_id="c", causation_id=str(uuid.uuid4()))
    source = domain.source_of("image", "ab" * 32)
    paged = Paged()
    ids = [uuid.uuid4() for _ in range(2500)]
    for i in ids:
        paged.requested(
            cause, ev.RequestedFile(file_id=i, kind="image", source=source, blob_key="k")
        )
    reason = domain.short_reason("\U0001f600" * 100_000)
    for i in ids:
        paged.settled(
            cause, ev.SettledFile(file_id=i, source=source, code="unreadable", reason=reason)
        )
    out = paged.envelopes()
    requested = [e for e in out if e.type == ev.ThumbnailsRequestedPage.type]
    settled = [e for e in out if e.type == ev.ThumbnailsSettled.type]
    sizes = [len(e.data["files"]) for e in requested]
    assert sum(sizes) == 2500 and 3 <= len(sizes) < 10 and max(sizes) <= limits.PAGE_ITEMS
    assert 3 < len(settled) < 2500 / 10
    assert out[: len(requested)] == requested  # asked for before settled
    for e in out:
        assert e.stream_id.startswith("thumbnails-page-") and e.stream_version == 1
        assert e.data["file_ids"] == [f["file_id"] for f in e.data["files"]]
        assert limits.json_size(e.data["files"]) <= limits.PAGE_BYTES + 1000
        assert limits.json_size(e.data) < limits.MAX_EVENT_BYTES
    assert [i for e in settled for i in e.data["file_ids"]] == [str(i) for i in ids]
    page = ev.ThumbnailsSettled.model_validate(settled[0].data)
    [first, *_] = page.each()
    assert isinstance(first, ev.ThumbnailFailed) and first.code == "unreadable"
    with pytest.raises(ValueError, match="file_ids"):
        ev.ThumbnailsSettled(file_ids=ids[:1], files=page.files[1:2])
    with pytest.raises(ValueError, match="renditions or a failure"):
        ev.SettledFile(file_id=ids[0], source=source)


def test_a_file_met_twice_in_a_batch_keeps_its_events_in_the_order_decided() -> None:
    """Asked for with one source (settled at once), then another: its second request is
    a page after the first one's settlement, so the read model ends with it pending."""
    import uuid

    from services.thumbnails.handlers import Paged
    from shared.contracts import thumbnails as ev
    from shared.contracts.envelope import Cause

    one, two = (Cause(actor="test", correlation_id=c) for c in ("a", "b"))
    f = uuid.uuid4()
    paged = Paged()
    paged.requested(one, ev.RequestedFile(file_id=f, kind="image", source="image:1", blob_key="k"))
    paged.settled(one, ev.SettledFile(file_id=f, source="image:1", code="unreadable", reason="-"))
    paged.requested(two, ev.RequestedFile(file_id=f, kind="image", source="image:2", blob_key="k"))
    assert [(e.type.split(".")[1], e.data["files"][0]["source"]) for e in paged.envelopes()] == [
        ("ThumbnailsRequestedPage", "image:1"),
        ("ThumbnailsSettled", "image:1"),
        ("ThumbnailsRequestedPage", "image:2"),
    ]


async def test_a_member_s_audit_shows_of_a_thumbnails_page_the_files_asked_about() -> None:
    """A page of a batch names files that may be anyone's (and their bytes' digests): a
    member asking about one of them gets that one; an admin, and a service, the page."""
    import copy
    import uuid

    from services.thumbnails.app import _audit_seen
    from shared.kit.access import Access

    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    files = [{"file_id": i, "source": f"image:{i}"} for i in (mine, theirs)]
    page = {"type": "thumbnails.ThumbnailsSettled", "data": {"file_ids": [mine, theirs]}}
    page["data"]["files"] = files
    member = Access(user_id="m", grants={uuid.uuid4(): "viewer"})
    for access, about, shown in (
        (member, [uuid.UUID(mine)], [mine]),
        (member, None, []),
        (Access(user_id="a", org_admin=True), [uuid.UUID(mine)], [mine, theirs]),
        (None, None, [mine, theirs]),
    ):
        items = [copy.deepcopy(page)]
        await _audit_seen(access, items, about)
        assert items[0]["data"]["file_ids"] == shown
        assert [f["file_id"] for f in items[0]["data"]["files"]] == shown


def test_an_imported_object_that_changed_is_that_files_content_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ingest reads an imported object only while its ETag is its import's: a 412 to any
    range (here the second block of a video, which the decoder wraps in an error of its
    own) is `content_changed`, not the decoder's `unreadable` nor a store not answering."""
    video = media.mp4(320, 240, frames=150, noise=True)
    assert len(video) > render.WHOLE_AT_ONCE
    asked: list[str] = []

    def ingest(request: httpx.Request) -> httpx.Response:
        first, last = (int(n) for n in request.headers["range"][6:].split("-"))
        asked.append(request.headers["range"])
        if len(asked) > 1:
            return httpx.Response(412)
        return httpx.Response(206, content=video[first : last + 1])

    monkeypatch.setattr(render, "_store", None)
    monkeypatch.setattr(render, "_http", httpx.Client(transport=httpx.MockTransport(ingest)))
    job = render.Job("video", "k", len(video), "webp", url="http://ingest/internal/objects/i")
    with pytest.raises(render.Unthumbnailable) as changed:
        render.make(job)
    assert changed.value.code == "content_changed"
