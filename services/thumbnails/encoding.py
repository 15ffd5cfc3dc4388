"""Making a web rendition (H.264/AAC in MP4, browser-playable), in worker processes.

The worker is spawned without the platform's secrets (drawing.py); it reads the source by
range from the blob store (never the whole file in memory), decodes within bounds (a
frame's pixels, the duration, the bytes it reads and writes) and writes the rendition to a
local spool file the service then streams into the store. The service kills a worker that
overruns its time cap (pebble), and one whose decoder crashes dies alone.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO

import httpx

from shared.kit.blobs import LocalBlobStore, open_blob_store
from shared.kit.media import (
    VIDEO_DEMUXERS,
    OverBudget,
    RangeFile,
    open_container,
    presigned_reader,
    quiet_av,
    without_paths,
)
from shared.kit.settings import Settings

# A worker's address space: a decoder or encoder that goes past it fails, not the machine.
ADDRESS_SPACE = 4 * 1024 * 1024 * 1024
OPEN_TIMEOUT_S = 30.0
PROBE_BYTES = 32 * 1024 * 1024
# An image of a sequence larger than this is not read.
MAX_IMAGE_BYTES = 256 * 1024 * 1024
SEQUENCE_FPS = 25  # frames a second of a sequence's video (Encord's default)
DEFAULT_FPS = Fraction(25)
X264 = {"preset": "veryfast", "crf": "23", "profile": "high"}


class Unencodable(Exception):
    """The source cannot be re-encoded; `code` and the message say why (not retried)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)  # both in args: it crosses processes pickled
        self.code, self.message = code, message

    def __str__(self) -> str:
        return self.message


class SourceUnavailable(Exception):
    """The store did not answer: not the file's fault, tried again later."""


@dataclass(frozen=True)
class Limits:
    max_duration_s: float
    max_pixels: int
    max_bytes: int


@dataclass(frozen=True)
class Task:
    kind: str  # "video" | "image_sequence"
    # (blob key, size, presigned URL on a store that is not local: the worker reads
    # these objects and no other, without the store's keys): the video, or the images
    sources: tuple[tuple[str, int, str | None], ...]
    out_path: str
    limits: Limits


@dataclass(frozen=True)
class Made:
    width: int
    height: int
    duration_s: float
    audio: bool
    bytes: int


# A local store's files, read in place; on S3, each source's presigned URL instead.
_store: LocalBlobStore | None = None
_http: httpx.Client | None = None


def start_worker(settings: Settings) -> None:
    global _store, _http
    # At the service's priority (FILES_THUMBNAIL_NICE), not the drawing workers' lower
    # one: a file's re-encoding has a wall-clock cap (renditions.py), which a worker
    # starved on a busy machine would overrun and fail the file for.
    store = open_blob_store(settings)
    _store = store if isinstance(store, LocalBlobStore) else None
    _http = httpx.Client(timeout=60, follow_redirects=False)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > ADDRESS_SPACE:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, hard))
    quiet_av()


def ready() -> bool:
    """Nothing: a worker that answers has started (the pool is warmed with it)."""
    import av  # noqa: F401 - the import is the warming

    return True


def opened(key: str, size: int, budget: int, url: str | None) -> BinaryIO:
    if _store is not None:
        return open(_store.path(key), "rb")
    assert _http is not None, "start_worker first"
    if url is None:
        raise SourceUnavailable("no URL to read the content by")
    return RangeFile(presigned_reader(url, _http), size, budget=budget)  # type: ignore[return-value]


def make(task: Task) -> Made:
    """The rendition, written to `task.out_path`; raises Unencodable or SourceUnavailable."""
    try:
        if task.kind == "video":
            return _guarded(task, _video)
        return _guarded(task, _sequence)
    except BaseException:
        with_suppressed_unlink(task.out_path)
        raise


def with_suppressed_unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _guarded(task: Task, encode: Any) -> Made:
    try:
        made: Made = encode(task)
        return made
    except (Unencodable, SourceUnavailable):
        raise
    except OverBudget as error:
        raise Unencodable("too_large", f"reading it: {error}") from error
    except FileNotFoundError as error:
        raise Unencodable("content_missing", "the content is no longer stored") from error
    except MemoryError as error:
        raise Unencodable("too_large", "it needs more memory than a worker has") from error
    except Exception as error:
        raise Unencodable("unreadable", describe(error)) from error


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {without_paths(str(error)) or 'no detail'}"
    return text if len(text) <= 300 else text[:299] + "…"


def _even(n: int) -> int:
    return max(2, n - n % 2)


class _Output:
    """The MP4 being written, checked against the byte bound as it grows."""

    def __init__(self, task: Task, width: int, height: int, rate: Fraction) -> None:
        import av

        self.task = task
        self.file = av.open(task.out_path, "w", format="mp4", options={"movflags": "+faststart"})
        self.video = self.file.add_stream("libx264", rate=rate, options=X264)
        self.video.width, self.video.height = _even(width), _even(height)
        self.video.pix_fmt = "yuv420p"
        self.video.codec_context.time_base = 1 / rate
        self.video.thread_count = 1  # one core per worker: the pool is the parallelism
        self.audio: Any = None
        self.resampler: Any = None
        self.frames = 0
        self.samples = 0
        self.rate = rate
        self.turned = False  # a quarter turn: shown with width and height swapped

    def add_audio(self, rate: int) -> None:
        import av

        self.audio = self.file.add_stream("aac", rate=rate)
        self.audio.layout = "stereo"
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=rate)

    def picture(self, frame: Any) -> None:
        if self.frames == 0 and (quarters := round(frame.rotation / 90) % 4):
            # Kept as the source's display matrix, as players apply it (a phone's
            # portrait clip stays upright); it must be set before the first frame.
            self.video.set_display_rotation(90 * quarters)
            self.turned = quarters % 2 == 1
        out = frame.reformat(self.video.width, self.video.height, "yuv420p")
        out.pts, out.time_base = self.frames, self.video.codec_context.time_base
        self.frames += 1
        self.file.mux(self.video.encode(out))
        self._check()

    def sound(self, frame: Any) -> None:
        frame.pts = None
        for out in self.resampler.resample(frame):
            out.pts, out.time_base = self.samples, Fraction(1, self.audio.rate)
            self.samples += out.samples
            self.file.mux(self.audio.encode(out))

    def _check(self) -> None:
        if (
            self.frames % 50 == 0
            and os.path.getsize(self.task.out_path) > self.task.limits.max_bytes
        ):
            raise Unencodable(
                "too_large", f"the rendition would pass {self.task.limits.max_bytes} bytes"
            )

    def close(self) -> Made:
        self.file.mux(self.video.encode(None))
        if self.audio is not None:
            for out in self.resampler.resample(None):
                out.pts, out.time_base = self.samples, Fraction(1, self.audio.rate)
                self.samples += out.samples
                self.file.mux(self.audio.encode(out))
            self.file.mux(self.audio.encode(None))
        self.file.close()
        size = os.path.getsize(self.task.out_path)
        if size > self.task.limits.max_bytes:
            raise Unencodable(
                "too_large", f"the rendition would pass {self.task.limits.max_bytes} bytes"
            )
        width, height = self.video.width, self.video.height
        return Made(
            height if self.turned else width,
            width if self.turned else height,
            round(float(self.frames / self.rate), 3),
            self.audio is not None,
            size,
        )


def _video(task: Task) -> Made:
    ((key, size, url),) = task.sources
    limits = task.limits
    budget = 2 * size + 64 * 1024 * 1024
    with (
        opened(key, size, budget, url) as source,
        open_container(
            source, among=VIDEO_DEMUXERS, timeout=OPEN_TIMEOUT_S, probe_bytes=PROBE_BYTES
        ) as container,
    ):
        if not container.streams.video:
            raise Unencodable("not_video", "the file has no video stream")
        video = container.streams.video[0]
        video.thread_type = "NONE"
        width, height = video.codec_context.width, video.codec_context.height
        if width * height > limits.max_pixels:
            raise Unencodable(
                "too_large",
                f"its frames are {width}x{height}: more than {limits.max_pixels} pixels",
            )
        if container.duration and container.duration / 1_000_000 > limits.max_duration_s:
            raise Unencodable("too_long", f"it lasts more than {limits.max_duration_s:g} s")
        rate = video.average_rate or video.guessed_rate or DEFAULT_FPS
        rate = Fraction(rate).limit_denominator(1001)
        if not 1 <= rate <= 240:
            rate = DEFAULT_FPS
        output = _Output(task, width, height, rate)
        try:
            audio = container.streams.audio[0] if container.streams.audio else None
            streams: list[Any] = [video]
            if audio is not None and audio.codec_context.sample_rate:
                output.add_audio(min(audio.codec_context.sample_rate, 48000))
                streams.append(audio)
            else:
                audio = None
            max_frames = int(limits.max_duration_s * rate) + 1
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if packet.stream is video:
                        if output.frames >= max_frames:
                            raise Unencodable(
                                "too_long", f"it lasts more than {limits.max_duration_s:g} s"
                            )
                        output.picture(frame)
                    else:
                        output.sound(frame)
            if output.frames == 0:
                raise Unencodable("unreadable", "no frame of it could be decoded")
            return output.close()
        except BaseException:
            output.file.close()
            raise


def _images(task: Task) -> Iterator[Any]:
    from PIL import Image

    for key, size, url in task.sources:
        if size > MAX_IMAGE_BYTES:
            raise Unencodable("too_large", f"an image of it is more than {MAX_IMAGE_BYTES} bytes")
        with opened(key, size, size + 1, url) as source:
            data = source.read(size)
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > task.limits.max_pixels:
                raise Unencodable(
                    "too_large",
                    f"an image is {image.width}x{image.height}:"
                    f" more than {task.limits.max_pixels} pixels",
                )
            yield image.convert("RGB")


def _sequence(task: Task) -> Made:
    """A sequence's images as frames, SEQUENCE_FPS a second, each scaled to the first's size."""
    import av

    if not task.sources:
        raise Unencodable("unreadable", "the sequence has no images")
    if len(task.sources) / SEQUENCE_FPS > task.limits.max_duration_s:
        raise Unencodable("too_long", f"it would last more than {task.limits.max_duration_s:g} s")
    output: _Output | None = None
    try:
        for image in _images(task):
            if output is None:
                output = _Output(task, image.width, image.height, Fraction(SEQUENCE_FPS))
            output.picture(av.VideoFrame.from_image(image))  # type: ignore[no-untyped-call]
        assert output is not None
        return output.close()
    except BaseException:
        if output is not None:
            output.file.close()
        raise
