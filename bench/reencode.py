"""Re-encoding: videos made browser-playable per second, against a raw PyAV transcode loop.

20 videos (`--quick`: 4; `--videos`), each 5 s of 640x360 at 25 fps in MPEG-4 Part 2 with
MP2 stereo sound in AVI (moving texture, seeded), are made first, not timed.

Baseline: a raw PyAV loop over the same files, in this process, one after another: demux,
decode, scale to yuv420p, encode with libx264 (the product's settings: veryfast, CRF 23,
one thread) and AAC, mux into MP4 on local disk. Videos/s of that loop; best of
`--rounds` (default 2).

Product: the platform started as processes (its own PostgreSQL and broker, blobs on local
disk), the thumbnails service with `--workers` re-encoding processes (default 2: the
machine's cores). The videos are uploaded (not timed), then one `POST /v1/files/re-encode`
names them all; timed until `GET /v1/jobs/{id}` says done (polled every 100 ms): the
spawned workers, the ranged reads from the store, the rendition streamed back into it and
the events, with the thumbnails of the same videos drawn meanwhile. Target: at least as
fast as the raw loop (ratio >= 1): the pool wins back what the platform costs around it.
"""

from __future__ import annotations

import argparse
import io
import time
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np

from bench._common import ADMIN_KEY, CpuMeter, Report, main, progress, stack
from services.thumbnails import encoding

NAME = "reencode"
TARGET_RATIO = 1.0
SECONDS, RATE, WIDTH, HEIGHT = 5, 25, 640, 360


def make_video(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 255, (HEIGHT, WIDTH * 2, 3), np.uint8)
    out = io.BytesIO()
    with av.open(out, "w", format="avi") as container:
        video = container.add_stream("mpeg4", rate=RATE, options={"qscale": "4"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = container.add_stream("mp2", rate=44100)
        audio.layout = "stereo"
        for n in range(SECONDS * RATE):
            pixels = np.ascontiguousarray(texture[:, n * 4 : n * 4 + WIDTH])
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = n
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = 1152
        for n in range(SECONDS * 44100 // samples):
            tone = (np.sin((np.arange(samples) + n * samples) / 20) * 6000).astype(np.int16)
            sound = av.AudioFrame.from_ndarray(
                np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo"
            )
            sound.sample_rate, sound.pts, sound.time_base = 44100, n * samples, Fraction(1, 44100)
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return out.getvalue()


def raw_transcode(source: Path, target: Path) -> None:
    with av.open(str(source)) as inp, av.open(str(target), "w", format="mp4") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        rate = vin.average_rate or Fraction(RATE)
        vout = out.add_stream("libx264", rate=rate, options=encoding.X264)
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuv420p"
        vout.thread_count = 1
        aout = out.add_stream("aac", rate=ain.codec_context.sample_rate)
        aout.layout = "stereo"
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=aout.rate)
        for packet in inp.demux(vin, ain):
            for frame in packet.decode():
                if packet.stream is vin:
                    picture = frame.reformat(vout.width, vout.height, "yuv420p")
                    picture.pts = None
                    out.mux(vout.encode(picture))
                else:
                    frame.pts = None
                    for sound in resampler.resample(frame):
                        out.mux(aout.encode(sound))
        out.mux(vout.encode(None))
        out.mux(aout.encode(None))


def raw_loop(paths: list[Path], workdir: Path) -> float:
    start = time.perf_counter()
    for path in paths:
        raw_transcode(path, workdir / f"{path.stem}.mp4")
    return time.perf_counter() - start


def product(workdir: Path, paths: list[Path], workers: int) -> tuple[float, CpuMeter, int]:
    with (
        stack(workdir, reencode_workers=workers) as running,
        httpx.Client(
            base_url=running.gateway_url,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=300,
        ) as api,
    ):
        made = api.post("/v1/folders", json={"name": "reencode-bench"})
        made.raise_for_status()
        folder_id = made.json()["id"]
        parts = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
        answer = api.post(f"/v1/folders/{folder_id}/files", files=parts)
        if answer.status_code != 201:
            raise RuntimeError(f"upload answered {answer.status_code}: {answer.text}")
        ids = [f["id"] for f in answer.json()["files"]]
        pids = {c.name: c.proc.pid for c in running.children}
        with CpuMeter(pids) as meter:
            start = time.perf_counter()
            started = api.post("/v1/files/re-encode", json={"file_ids": ids})
            if started.status_code != 202:
                raise RuntimeError(f"re-encode answered {started.status_code}: {started.text}")
            job_id = started.json()["job_id"]
            deadline = time.monotonic() + 1800
            while True:
                job = api.get(f"/v1/jobs/{job_id}").json()
                if job["status"] != "running":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job still running: {job['progress']}")
                time.sleep(0.1)  # polling the job, as a client does
            elapsed = time.perf_counter() - start
        if job["status"] != "done" or job["errors"]:
            raise RuntimeError(f"job ended {job['status']}: {job['errors'][:3]}")
        web = api.get(f"/v1/files/{ids[-1]}/content", params={"rendition": "web"})
        if web.status_code != 200:
            raise RuntimeError(f"the rendition answered {web.status_code}")
        return elapsed, meter, len(web.content)


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    count = args.videos or (4 if args.quick else 20)
    rounds = args.rounds or (1 if args.quick else 2)
    report.title = (
        f"{count} videos of {SECONDS} s, {WIDTH}x{HEIGHT} MPEG-4/MP2 to H.264/AAC MP4"
        " (baseline: a raw PyAV transcode loop)"
    )
    progress(f"making {count} videos")
    folder = workdir / "videos"
    folder.mkdir()
    paths = []
    for n in range(count):
        path = folder / f"clip_{n:03d}.avi"
        path.write_bytes(make_video(n))
        paths.append(path)
    size = sum(p.stat().st_size for p in paths)
    out = workdir / "raw"
    out.mkdir()
    base_times = []
    for r in range(rounds):
        progress(f"raw PyAV loop, round {r + 1} of {rounds}")
        with report.contention.measure():
            base_times.append(raw_loop(paths, out))
    base_s = min(base_times)
    progress(f"the platform with {args.workers} re-encoding processes")
    with report.contention.measure():
        product_s, meter, rendition_bytes = product(workdir, paths, args.workers)
    report.figure(
        "reencode_per_s",
        f"re-encode job: {count} videos asked until the job is done",
        count / product_s,
        "videos/s",
        headline=True,
    )
    report.baseline(
        "raw_per_s", f"raw PyAV loop, one process: {count} videos", count / base_s, "videos/s"
    )
    ratio = report.ratio("ratio", "re-encode job / raw loop", base_s, product_s)
    report.target(
        f"the job at least {TARGET_RATIO}x the raw loop", ratio >= TARGET_RATIO, f"{ratio:.2f}x"
    )
    report.note(
        f"{count} videos, {size / count / 1024:.0f} KiB each on average;"
        f" the last rendition {rendition_bytes / 1024:.0f} KiB"
    )
    report.note(f"CPU-seconds of the job: {meter.describe()}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=0, help="how many videos (20)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of the raw loop (2)")
    parser.add_argument("--workers", type=int, default=2, help="re-encoding processes (2)")


if __name__ == "__main__":
    main(NAME, "videos re-encoded per second", body, add_arguments)
