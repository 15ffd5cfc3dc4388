"""Media facts: files/s of ingest's facts reader, against a plain Pillow/PyAV loop.

A corpus of real files is made first, not timed, with Pillow and PyAV, one sample of each
of 11 kinds: a 1024x768 JPEG photo (textured, ~280 KiB), a PNG, a WebP, a one-minute
320x240 H.264 MP4 (600 frames, moov after mdat), a VP8 WebM, an MPEG-4 AVI, and 30 s of
MP3, Ogg Opus, FLAC, WAV and AAC (M4A). Each is written `--files / 11` times (default
2,200 files; `--quick`: 220) into the temp dir.

Product: `services.ingest.media.facts.inspect(read_at, size)` for every file, read_at an
`os.pread` on the open file (as uploads read their local spool): the accept-list sniff of
the head, then Pillow's lazy open or PyAV's probe through the capped range reader, within
the byte budget and time cap. Baseline: a plain loop over the same paths with no sniff
and no caps: `Image.open(path).size` for images, `av.open(path)` and its duration, first
stream's size, frame count, sample rate and channels for the rest. One untimed pass of
each warms the page cache; then `--rounds` rounds (default 5), each timing the baseline
then the product, the best round of each counts. Target: baseline time / product time at
least 0.5 (the caps and the sniff cost at most as much as the decoders' own work).
Also: per kind, µs a file for both; the bytes the product read per file (mean, max).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import av
from PIL import Image

from bench._common import Report, main, progress
from services.ingest.media.facts import inspect
from tests import media_fixtures
from tests.thumbnail_fixtures import photo, png

NAME = "media_facts"
TARGET_RATIO = 0.5


def samples() -> dict[str, bytes]:
    import io

    webp = io.BytesIO()
    Image.open(io.BytesIO(photo(1))).save(webp, "WEBP", quality=80)
    seconds = 30.0
    return {
        "jpeg": photo(0),
        "png": png(1280, 720),
        "webp": webp.getvalue(),
        "mp4": media_fixtures.video("mp4", "libx264", 320, 240, 600, 10),
        "webm": media_fixtures.video("webm", "libvpx", 160, 120, 50, 10),
        "avi": media_fixtures.video("avi", "mpeg4", 160, 120, 50, 10),
        "mp3": media_fixtures.audio("mp3", "libmp3lame", 44_100, 2, seconds),
        "ogg": media_fixtures.audio("ogg", "libopus", 48_000, 2, seconds),
        "flac": media_fixtures.audio("flac", "flac", 44_100, 2, seconds),
        "wav": media_fixtures.audio("wav", "pcm_s16le", 44_100, 2, seconds),
        "m4a": media_fixtures.audio("ipod", "aac", 44_100, 2, seconds),
    }


def write_files(workdir: Path, count: int) -> list[tuple[str, Path]]:
    made = samples()
    per_kind = max(count // len(made), 1)
    paths = []
    for kind, data in made.items():
        for n in range(per_kind):
            path = workdir / f"{kind}_{n:05d}.{kind}"
            path.write_bytes(data)
            paths.append((kind, path))
    # Interleaved, as an upload of mixed files would come.
    return sorted(paths, key=lambda kp: (kp[1].name.split("_")[1], kp[0]))


def product_pass(paths: list[tuple[str, Path]]) -> tuple[float, dict[str, float], list[int]]:
    per_kind: dict[str, float] = defaultdict(float)
    read: list[int] = []
    start = time.perf_counter()
    for kind, path in paths:
        began = time.perf_counter()
        fd = os.open(path, os.O_RDONLY)
        try:
            total = 0

            def read_at(offset: int, length: int, fd: int = fd) -> bytes:
                nonlocal total
                data = os.pread(fd, length, offset)
                total += len(data)
                return data

            facts = inspect(read_at, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        if facts.media.width is None and facts.media.duration_s is None:
            raise RuntimeError(f"no facts for {path.name}: {facts}")
        read.append(total)
        per_kind[kind] += time.perf_counter() - began
    return time.perf_counter() - start, per_kind, read


def baseline_one(kind: str, path: Path) -> Any:
    if kind in ("jpeg", "png", "webp"):
        with Image.open(path) as image:
            return image.size
    with av.open(str(path)) as container:
        stream = container.streams[0]
        codec: Any = stream.codec_context
        if stream.type == "video":
            return container.duration, codec.width, codec.height, stream.frames
        return container.duration, codec.sample_rate, codec.channels


def baseline_pass(paths: list[tuple[str, Path]]) -> tuple[float, dict[str, float]]:
    per_kind: dict[str, float] = defaultdict(float)
    start = time.perf_counter()
    for kind, path in paths:
        began = time.perf_counter()
        baseline_one(kind, path)
        per_kind[kind] += time.perf_counter() - began
    return time.perf_counter() - start, per_kind


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    count = args.files or (220 if args.quick else 2200)
    rounds = args.rounds or (2 if args.quick else 5)
    progress(f"making and writing {count:,} files")
    paths = write_files(workdir, count)
    count = len(paths)
    kinds = sorted({kind for kind, _ in paths})
    per_kind_count = count // len(kinds)
    report.title = (
        f"media_facts.inspect over {count:,} files of {len(kinds)} kinds"
        " (baseline: plain Image.open / av.open loop)"
    )
    progress("warm-up: one untimed pass of each")
    baseline_pass(paths)
    product_pass(paths)
    product_runs: list[tuple[float, dict[str, float], list[int]]] = []
    base_runs: list[tuple[float, dict[str, float]]] = []
    for r in range(rounds):
        progress(f"round {r + 1} of {rounds}")
        with report.contention.measure():
            base_runs.append(baseline_pass(paths))
            product_runs.append(product_pass(paths))
    product_s, product_kinds, read = min(product_runs, key=lambda run: run[0])
    base_s, base_kinds = min(base_runs, key=lambda run: run[0])
    report.figure(
        "files_per_s", f"inspect: {count:,} files", count / product_s, "files/s", headline=True
    )
    report.baseline(
        "plain_per_s", f"plain Image.open / av.open: {count:,} files", count / base_s, "files/s"
    )
    ratio = report.ratio("ratio", "baseline time / product time", base_s, product_s)
    report.target(
        f"baseline time / product time at least {TARGET_RATIO}",
        ratio >= TARGET_RATIO,
        f"{ratio:.2f}",
    )
    # FFmpeg's default probe reads 5 MB of a WAV's PCM packets, which the capped probe
    # does not: the ratio without WAV says what the caps cost on every other kind.
    others = [k for k in kinds if k != "wav"]
    report.ratio(
        "ratio_without_wav",
        "  the same, WAV left out",
        sum(base_kinds[k] for k in others),
        sum(product_kinds[k] for k in others),
    )
    for kind in kinds:
        report.figure(
            f"{kind}_us",
            f"  {kind}: product / baseline µs a file",
            product_kinds[kind] / per_kind_count * 1e6,
            f"µs (plain {base_kinds[kind] / per_kind_count * 1e6:,.0f} µs)",
            role="detail",
        )
    report.figure(
        "read_mean_kib",
        "  bytes read a file, mean",
        sum(read) / len(read) / 1024,
        "KiB",
        role="detail",
    )
    report.figure(
        "read_max_kib", "  bytes read a file, max", max(read) / 1024, "KiB", role="detail"
    )
    size = sum(path.stat().st_size for _, path in paths)
    report.note(
        f"{count:,} files, {size / count / 1024:.0f} KiB each on average; {rounds} rounds,"
        f" the best of each counts: product {', '.join(f'{r[0]:.3f}' for r in product_runs)} s;"
        f" baseline {', '.join(f'{r[0]:.3f}' for r in base_runs)} s; PyAV {av.__version__}"
        f" (FFmpeg {av.ffmpeg_version_info}), Pillow {Image.__version__}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="default 2,200 (220 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (2 quick)")


if __name__ == "__main__":
    main(NAME, "Media facts from Pillow and PyAV", body, add_arguments)
