"""The drawing pool on real worker processes and a real (local) blob store: a file that
overruns the time cap is recorded as timed out, its worker is killed and replaced, and the
next file is drawn as usual; a hostile file fails without harming the pool."""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from services.thumbnails import render
from services.thumbnails.drawing import Drawing
from shared.kit.blobs import LocalBlobStore, content_key
from shared.kit.settings import Settings
from tests import thumbnail_fixtures as media


@pytest.fixture
async def stored(tmp_path: Path) -> AsyncIterator[tuple[LocalBlobStore, Drawing]]:
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"))
    drawing = Drawing(settings, workers=1)
    yield LocalBlobStore(settings.blob_root()), drawing
    drawing.stop()


async def job(store: LocalBlobStore, renderer: str, data: bytes) -> render.Job:
    key = content_key(hashlib.sha256(data).hexdigest())
    await store.put(key, data)
    return render.Job(renderer, key, len(data), "webp")


def slow_image() -> bytes:
    """Within Pillow's limit (81 million pixels) and small on disk, but seconds of work
    to decode and scale down."""
    out = io.BytesIO()
    Image.new("RGB", (9000, 9000), (90, 90, 90)).save(out, "PNG", compress_level=1)
    return out.getvalue()


@pytest.mark.timeout(300)
async def test_a_file_past_the_time_cap_fails_and_the_pool_goes_on(
    stored: tuple[LocalBlobStore, Drawing],
) -> None:
    store, drawing = stored
    fine = await job(store, "image", media.png(300, 200))
    made = await drawing.draw(fine, time_cap=120)  # the first also starts a worker
    assert isinstance(made, list) and [p.size for p in made] == [128, 512]
    assert await drawing.draw(await job(store, "image", slow_image()), time_cap=0.2) == (
        "timed_out",
        "drawing it took more than 0.2 s",
    )
    again = await drawing.draw(await job(store, "image", media.png(64, 64)), time_cap=120)
    assert isinstance(again, list) and (again[0].width, again[0].height) == (64, 64)


@pytest.mark.timeout(300)
async def test_hostile_files_fail_with_their_reason(
    stored: tuple[LocalBlobStore, Drawing],
) -> None:
    store, drawing = stored
    bomb = await drawing.draw(await job(store, "image", media.decompression_bomb()), 120)
    assert isinstance(bomb, tuple) and bomb[0] == "too_large"
    cut = await drawing.draw(await job(store, "image", media.truncated_png()), 120)
    assert isinstance(cut, tuple) and cut[0] == "unreadable" and "truncated" in cut[1]
    not_a_video = await drawing.draw(await job(store, "video", b"\x00garbage" * 1000), 120)
    assert isinstance(not_a_video, tuple) and not_a_video[0] == "unreadable"
    gone = render.Job("image", content_key("0" * 64), 10, "webp")
    assert (await drawing.draw(gone, 120))[0] == "content_missing"  # type: ignore[index]
    made = await drawing.draw(await job(store, "pdf", media.pdf()), 120)
    assert isinstance(made, list) and made[1].width == 512
