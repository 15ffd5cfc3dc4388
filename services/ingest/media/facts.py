"""The media facts of stored content: image sizes from Pillow's lazy open (the header
only, nothing decoded), video and audio facts from FFmpeg through PyAV (duration, frames,
size; an audio file's sample rate and channels).

The kind comes first, from the accept-list sniffer (domain/media.py): only content it
accepts is handed to a decoder. The content is read by range (the upload's local spool,
a blob, an object spooled from a bucket), never whole, through shared/kit/media.py's
RangeFile: at most READ_BUDGET bytes and TIME_CAP seconds a file, FFmpeg's probe capped
besides (PROBE_BYTES, one second of analysis, its interrupt callback). A file whose facts
cannot be read within those caps, or whose headers are damaged, is still taken: only its
facts are unknown.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import IO, Any, cast

from services.ingest.media.kinds import (
    HEAD_SIZE,
    NIFTI_GZIP,
    UnknownContent,
    nifti_header_size,
    sniff,
)
from shared.contracts.catalog import Media
from shared.kit import isolated
from shared.kit.logs import log
from shared.kit.media import DEMUXERS, RangeFile, ReadAt, open_container, quiet_av

__all__ = ["Facts", "UnknownContent", "inspect"]

READ_BUDGET = 64 * 1024 * 1024
TIME_CAP = 5.0  # seconds a file
PROBE_BYTES = 64 * 1024  # past this, FFmpeg stops reading packets to guess what headers left out
CACHE_BLOCKS = 16  # 4 MiB of cached blocks a file

# Pillow's format for each image type the sniffer accepts.
_PILLOW = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}
# FFmpeg's demuxer for an audio or video type is shared/kit/media.py's DEMUXERS: the
# sniffer's verdict binds, FFmpeg does not probe the content for a format of its own choosing.

NO_MEDIA = Media()


@dataclass(frozen=True)
class Facts:
    """What a file is (sniffed) and the media facts its content states."""

    kind: str  # "image" | "video" | "pdf" | "audio" | "text" | "nifti"
    mime_type: str
    media: Media


def inspect(read_at: ReadAt, size: int, *, time_cap: float = TIME_CAP) -> Facts:
    """Kind, mime type and media facts of content of `size` bytes read by `read_at(offset,
    length)` (fewer bytes at the end). Raises UnknownContent when the kind is not one we
    accept; an error of read_at itself propagates; anything else only loses facts."""
    if size <= 0:
        raise UnknownContent("empty file")
    if size <= HEAD_SIZE:
        return _small_file(read_at, size, time_cap)
    source = RangeFile(
        read_at,
        size,
        budget=READ_BUDGET,
        deadline=time.monotonic() + time_cap,
        blocks_kept=CACHE_BLOCKS,
    )
    kind, mime_type = sniff(source.read(HEAD_SIZE))
    # Frozen: one empty `Media` for every file without facts (a model's construction is
    # a per-file cost of every small upload).
    media = NO_MEDIA
    reader = READERS.get(kind)
    if kind in ("video", "audio") or mime_type in IN_WORKER_IMAGES:
        media = _in_worker(read_at, size, kind, mime_type, time_cap)
    elif reader is not None:
        try:
            source.seek(0)
            media = reader(source, mime_type)
        except Exception:
            if source.failed is not None:
                raise source.failed from None
    return Facts(kind, mime_type, media)


def _small_file(read_at: ReadAt, size: int, time_cap: float) -> Facts:
    """`inspect` of a file no larger than what sniffing reads anyway (every small upload's):
    read whole once, and its header parsed from memory rather than through RangeFile's
    checked reads (a quarter of a 4 KiB image's facts, in six reads). Within the caps:
    HEAD_SIZE bytes, and a parse of as few has nothing to wait for (audio, video, WebP and
    TIFF are read by the prober, with its own caps, as any)."""
    data = bytes(read_at(0, size)[:size])
    kind, mime_type = sniff(data)
    media = NO_MEDIA
    reader = READERS.get(kind)
    if kind in ("video", "audio") or mime_type in IN_WORKER_IMAGES:
        media = _in_worker(read_at, size, kind, mime_type, time_cap)
    elif reader is not None:
        with contextlib.suppress(Exception):  # damaged headers: only the facts are lost
            media = reader(io.BytesIO(data), mime_type)
    return Facts(kind, mime_type, media)


def _image(source: RangeFile | io.BytesIO, mime_type: str) -> Media:
    # The format's own opener, not Image.open: that one refuses sizes past the
    # decompression-bomb limit, and a huge image's size is a fact worth having when
    # nothing is decoded.
    from PIL import Image  # on first use, as PyAV: a service start need not wait for it

    Image.init()  # every format's opener registered (once; a no-op after)
    factory, _accept = Image.OPEN[_PILLOW[mime_type]]
    with factory(cast(IO[bytes], source), "") as image:
        return Media(width=_positive(image.width), height=_positive(image.height))


def _audio_video(source: RangeFile, mime_type: str) -> Media:
    quiet_av()  # imports PyAV on first use
    assert source.deadline is not None
    # FFmpeg's interrupt callback stops what does not read (the range file stops what does).
    left = max(source.deadline - time.monotonic(), 0.001)
    with open_container(
        source, fmt=DEMUXERS[mime_type], timeout=left, probe_bytes=PROBE_BYTES
    ) as container:
        duration = _seconds(container.duration, Fraction(1, 1_000_000))
        if mime_type.startswith("video/") and container.streams.video:
            video = container.streams.video[0]
            codec: Any = video.codec_context
            width, height = codec.width, codec.height
            if _quarter_turned(source, container, video):
                width, height = height, width
            return Media(
                width=_positive(width),
                height=_positive(height),
                frames=_positive(video.frames),
                duration_s=duration or _seconds(video.duration, video.time_base),
                fps=_rate(video.average_rate) or _rate(video.base_rate),
                codec=_codec_name(codec),
            )
        if mime_type.startswith("audio/") and container.streams.audio:
            audio = container.streams.audio[0]
            sound: Any = audio.codec_context
            return Media(
                duration_s=duration or _seconds(audio.duration, audio.time_base),
                sample_rate=_positive(sound.sample_rate),
                channels=_positive(sound.channels),
                codec=_codec_name(sound),
            )
        return Media(duration_s=duration)


def _quarter_turned(source: RangeFile, container: Any, video: Any) -> bool:
    """Whether the video is shown turned a quarter (its display matrix: a phone's portrait
    clip is stored landscape), so its size as shown is the stored one swapped. The matrix
    reaches PyAV only on a decoded frame: the first one is decoded for it."""
    video.thread_type = "NONE"
    try:
        for frame in container.decode(video):
            return bool(round(frame.rotation / 90) % 2)
    except Exception:
        if source.failed is not None:
            raise source.failed from None
    return False  # not decodable: its size as stored


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


def _seconds(ticks: int | None, unit: Fraction | None) -> float | None:
    if not ticks or unit is None or ticks <= 0:
        return None
    seconds = float(ticks * unit)
    return round(seconds, 6) if math.isfinite(seconds) else None


def _rate(rate: Fraction | None) -> float | None:
    if not rate or rate <= 0:
        return None
    found = float(rate)
    return round(found, 3) if math.isfinite(found) and found < 10_000 else None


def _codec_name(codec: Any) -> str | None:
    # The format's name (mp3), not its decoder's (mp3float).
    name = getattr(getattr(codec, "codec", None), "canonical_name", None) or codec.name
    return name[:50] if isinstance(name, str) and name else None


def _nifti(source: RangeFile | io.BytesIO, mime_type: str) -> Media:
    """A NIfTI volume's shape, voxel size and data type, from its header alone (348 or
    540 bytes; of a gzipped volume, only its first bytes are inflated)."""
    from nibabel.nifti1 import Nifti1Header  # on first use, as PyAV
    from nibabel.nifti2 import Nifti2Header

    stream: IO[bytes] = cast(IO[bytes], source)
    if mime_type == NIFTI_GZIP:
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=stream, mode="rb"))
    raw = stream.read(540)
    size = nifti_header_size(raw)
    if size is None:
        return Media()
    kind: Any = Nifti1Header if size == 348 else Nifti2Header  # nibabel is untyped
    header: Any = kind(binaryblock=raw[:size], check=False)
    dims = tuple(int(d) for d in header.get_data_shape())
    zooms = tuple(float(z) for z in header.get_zooms())
    return Media(
        dims=dims if dims and all(0 < d < 2**31 for d in dims) else None,
        voxel_size=zooms if zooms and all(math.isfinite(z) for z in zooms) else None,
        datatype=_datatype(header),
    )


def _datatype(header: Any) -> str | None:
    try:
        found = str(header.get_value_label("datatype"))
    except Exception:  # an unknown code in a hostile header: the fact is unknown
        return None
    return found[:30] if found and not found.startswith("<unknown") else None


# A source is a RangeFile, or a small file's bytes in a BytesIO (`_small_file`).
READERS: dict[str, Callable[[Any, str], Media]] = {
    "image": _image,
    "video": _audio_video,
    "audio": _audio_video,
    "nifti": _nifti,
}


# FFmpeg's demuxers and libwebp are C, with a history of flaws a crafted file reaches:
# they read in a worker without the platform's secrets (services/ingest/media/prober.py).
# So does Pillow's TIFF opener, though Python: it builds a tile for each of the strips a
# header lists, in a loop no read interrupts (the time cap is checked on reads), so 16 MB
# of strip offsets held ingest's thread 37 s and 1.3 GB; the worker is killed at its cap
# with its address space capped. The other readers (Pillow's PNG, JPEG, GIF and BMP
# headers, nibabel) do a bounded parse and stay here, where a small file's facts cost no
# round trip.
IN_WORKER_IMAGES = frozenset({"image/webp", "image/tiff"})
PROBER = isolated.Isolated("services.ingest.media.prober", workers=2, max_answer=64 * 1024)
# A worker's own cap runs out first; this much more lets it say so.
PROBE_GRACE_S = 2.0
# How long a file waits for one of the workers. Bounded: an upload's thread that waited
# without bound held one of the service's threads too (a few hostile files, each held to
# its cap, and no upload was served). But long enough that ordinary files queued behind
# each other get their facts: a bucket import's 32 readers of a 54 MB mp4 waited past 5 s
# for 4 to 8 of them, whose facts were lost for good. 30 s is four hostile files' worth
# (TIME_CAP + PROBE_GRACE_S each) queued ahead on each of the two workers.
PROBE_WAIT_S = 30.0


def _in_worker(read_at: ReadAt, size: int, kind: str, mime_type: str, time_cap: float) -> Media:
    """The facts as the prober reads them; unknown when it fails or overruns, or when no
    worker is free within PROBE_WAIT_S. An error of `read_at` itself propagates."""
    try:
        answer = PROBER.call(
            {"kind": kind, "mime_type": mime_type, "size": size, "time_cap": time_cap},
            time_cap=time_cap + PROBE_GRACE_S,
            read_at=read_at,
            size=size,
            budget=READ_BUDGET,
            wait=PROBE_WAIT_S,
        )
        return _bounded(Media.model_validate_json(answer))
    except isolated.Busy:
        # Not the file's doing: a pile-up of others' files (told apart so an operator
        # reading why facts are missing looks at the load, not at the file).
        log.info("ingest.facts_unknown", mime_type=mime_type, reason="busy", wait_s=PROBE_WAIT_S)
        return Media()
    except (isolated.WorkerFailed, isolated.Refusal, ValueError) as failed:
        log.info("ingest.facts_unknown", mime_type=mime_type, reason=str(failed)[:200])
        return Media()


def _bounded(media: Media) -> Media:
    """The worker's answer with the bounds the readers here keep (it may be a decoder's
    flaw talking)."""
    return Media(
        width=_small(media.width),
        height=_small(media.height),
        frames=_small(media.frames),
        duration_s=_finite(media.duration_s),
        sample_rate=_small(media.sample_rate),
        channels=_small(media.channels),
        fps=_finite(media.fps) if media.fps is None or media.fps < 10_000 else None,
        codec=media.codec[:50] if media.codec else None,
    )


def _small(value: int | None) -> int | None:
    return value if value is not None and 0 < value < 2**31 else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None
