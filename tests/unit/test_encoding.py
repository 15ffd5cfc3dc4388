"""The re-encoding worker's work and bounds (services/thumbnails/encoding.py), run in this
process over a local blob store: a video in a codec browsers do not play comes out
H.264/AAC in MP4; a source past a bound, or that is not a video, is refused by name."""

from __future__ import annotations

import io
import os
from pathlib import Path

import av
import numpy as np
import pytest

from services.thumbnails import encoding
from services.thumbnails.drawing import worker_settings
from shared.kit.blobs import open_blob_store
from shared.kit.settings import Settings
from tests.thumbnail_fixtures import mp4

KEY = "sha256/ab/cd/abcd"
ROOM = encoding.Limits(max_duration_s=60, max_pixels=1920 * 1080, max_bytes=1 << 30)


def mpeg4(
    seconds: float = 1, rate: int = 10, width: int = 64, height: int = 48, rotation: int = 0
) -> bytes:
    """MPEG-4 Part 2 in AVI, or in MP4 with `rotation` in its display matrix (a phone's)."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4" if rotation else "avi") as container:
        video = container.add_stream("mpeg4", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        for n in range(int(seconds * rate)):
            frame = av.VideoFrame.from_ndarray(
                np.full((height, width, 3), n * 10 % 256, np.uint8), format="rgb24"
            )
            frame.pts = n
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
    return out.getvalue()


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The worker's store, without start_worker's address-space limit on this process.
    monkeypatch.setattr(
        encoding, "_store", open_blob_store(Settings(blob_url=str(tmp_path / "blobs")))
    )
    path = tmp_path / "blobs" / KEY
    path.parent.mkdir(parents=True)
    return path


def task(path: Path, out: Path, limits: encoding.Limits = ROOM) -> encoding.Task:
    return encoding.Task("video", ((KEY, path.stat().st_size, None),), str(out), limits)


def test_a_video_becomes_h264_in_mp4(stored: Path, tmp_path: Path) -> None:
    stored.write_bytes(mpeg4())
    out = tmp_path / "web.mp4"
    made = encoding.make(task(stored, out))
    assert (made.width, made.height, made.audio, made.bytes) == (64, 48, False, out.stat().st_size)
    with av.open(str(out)) as container:
        assert container.format.name.startswith("mov")
        assert [s.codec_context.name for s in container.streams] == ["h264"]


def test_a_phone_s_portrait_clip_stays_upright(stored: Path, tmp_path: Path) -> None:
    stored.write_bytes(mpeg4(rotation=-90))
    out = tmp_path / "web.mp4"
    made = encoding.make(task(stored, out))
    assert (made.width, made.height) == (48, 64)  # as it is shown: standing
    with av.open(str(out)) as container:
        first = next(container.decode(video=0))
        assert (first.width, first.height, first.rotation) == (64, 48, -90)


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (encoding.Limits(max_duration_s=0.5, max_pixels=10**7, max_bytes=1 << 30), "too_long"),
        (encoding.Limits(max_duration_s=60, max_pixels=32 * 32, max_bytes=1 << 30), "too_large"),
        (encoding.Limits(max_duration_s=60, max_pixels=10**7, max_bytes=100), "too_large"),
    ],
)
def test_bounds_refuse_by_name_and_leave_nothing(
    stored: Path, tmp_path: Path, limits: encoding.Limits, code: str
) -> None:
    stored.write_bytes(mpeg4(seconds=2))
    out = tmp_path / "web.mp4"
    with pytest.raises(encoding.Unencodable) as refused:
        encoding.make(task(stored, out, limits))
    assert refused.value.code == code and str(refused.value)
    assert not out.exists()


def test_bytes_that_are_no_video_are_unreadable(stored: Path, tmp_path: Path) -> None:
    stored.write_bytes(b"RIFF" + os.urandom(4096))
    with pytest.raises(encoding.Unencodable) as refused:
        encoding.make(task(stored, tmp_path / "web.mp4"))
    assert refused.value.code in ("unreadable", "not_video")


def test_a_video_in_a_container_ingest_does_not_take_is_not_probed_for(
    stored: Path, tmp_path: Path
) -> None:
    stored.write_bytes(mp4(container_format="mpegts"))
    with pytest.raises(encoding.Unencodable) as refused:
        encoding.make(task(stored, tmp_path / "web.mp4"))
    assert refused.value.code == "unreadable"


def test_workers_get_the_blob_store_and_no_secret() -> None:
    settings = Settings(
        database_url="postgresql://u:p@db/files",
        kafka_bootstrap="broker:9092",
        service_key="k" * 32,
        secret_key="s" * 32,
        bootstrap_admin_key="files_admin",
        blob_url="s3://bucket",
    )
    given = worker_settings(settings)
    assert given.blob_url == "s3://bucket"
    assert (given.database_url, given.kafka_bootstrap, given.secret_key) == ("", "", "")
    assert given.service_key.get_secret_value() == "" and given.bootstrap_admin_key == ""
