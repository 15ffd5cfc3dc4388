"""The re-encoding pool on real spawned worker processes and a real (local) blob store: a
video past the time cap is recorded as timed out, its worker killed and replaced, its
spool gone, and the next video is re-encoded as usual; a hostile file fails by name."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest

from services.thumbnails import encoding
from services.thumbnails.renditions import Renditions
from shared.kit.blobs import LocalBlobStore, content_key
from shared.kit.settings import Settings


def video(seconds: int, width: int, height: int, rate: int = 25) -> bytes:
    rng = np.random.default_rng(7)
    out = io.BytesIO()
    with av.open(out, "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        noise = rng.integers(0, 255, (height, width, 3), np.uint8)
        for n in range(seconds * rate):
            frame = av.VideoFrame.from_ndarray(np.roll(noise, n, axis=1), format="rgb24")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[tuple[LocalBlobStore, Renditions, Path]]:
    settings = Settings(data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), reencode_workers=1)
    store = LocalBlobStore(settings.blob_root())
    renditions = Renditions(SimpleNamespace(settings=settings), store)  # type: ignore[arg-type]
    spool = tmp_path / "spool"
    spool.mkdir()
    yield store, renditions, spool
    renditions.stop()


async def task(store: LocalBlobStore, spool: Path, data: bytes) -> encoding.Task:
    key = content_key(hashlib.sha256(data).hexdigest())
    await store.put(key, data)
    out = spool / f"{key[-8:]}.mp4"
    limits = encoding.Limits(max_duration_s=600, max_pixels=1920 * 1080, max_bytes=1 << 30)
    return encoding.Task("video", ((key, len(data), None),), str(out), limits)


@pytest.mark.timeout(300)
async def test_a_video_past_the_time_cap_fails_and_the_pool_goes_on(pool: Any) -> None:
    store, renditions, spool = pool
    renditions.time_cap = 120
    first = await task(store, spool, video(1, 64, 48))
    made = await renditions.encode(first)
    assert isinstance(made, encoding.Made) and made.width == 64  # also starts the worker
    renditions.time_cap = 0.5
    slow = await renditions.encode(await task(store, spool, video(20, 1280, 720)))
    assert slow == ("timed_out", "re-encoding it took more than 0.5 s")
    renditions.time_cap = 120
    again = await task(store, spool, video(1, 96, 64))
    made = await renditions.encode(again)
    assert isinstance(made, encoding.Made) and (made.width, made.height) == (96, 64)
    made_ones = sorted(Path(t.out_path).name for t in (first, again))
    assert sorted(os.listdir(spool)) == made_ones, "the killed worker's spool is gone"


@pytest.mark.timeout(300)
async def test_hostile_bytes_fail_by_name(pool: Any) -> None:
    store, renditions, spool = pool
    renditions.time_cap = 120
    garbage = await renditions.encode(await task(store, spool, b"RIFF" + os.urandom(65536)))
    assert isinstance(garbage, tuple) and garbage[0] in ("unreadable", "not_video")
    assert os.listdir(spool) == []
