"""One large file through an upload session, its parts PUT straight to S3: MB/s.

Product: `POST /v1/folders/{id}/uploads` for 1 GiB (`--size-mib`) in 64 MiB parts, the
parts PUT to their presigned URLs from a file on disk, `--parallel` (4) in flight, each
streamed from the file in 1 MiB reads (the client holds no part in memory), then
`POST /v1/uploads/{id}/complete`; timed from the open to the complete's 201 (the store
joined the parts, ingest read the object once for sha256 and kind, copied it under its
content key and registered it). Also the split: opening, the parts' PUTs, completing.
The 201's sha256 and size are checked against the file's.
Baseline: the same file PUT to the same store (moto's S3 server, in memory and
spilled to temp files, a process of its own) by the plain minio client,
`fput_object(..., part_size=64 MiB, num_parallel_uploads=N)`, another key of the same
bucket.
Target: none given; the ratio product / baseline is the figure.

Baseline and product alternate for `--rounds` rounds (2; 1 with --quick), and the best
round of each counts. Each round has its own copy of the file, 8 bytes changed (written
and hashed beforehand), so every round stores a file the store has not seen (a known
content key would skip the copy at complete); both sides of a round read the same file.
The gateway's and ingest's resident memory is sampled meanwhile, to show the bytes do
not pass through them, and moto's CPU-seconds are reported: it is the bottleneck.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from minio import Minio

from bench._common import ADMIN_KEY, MB, CpuMeter, MiB, Report, RssSampler, main, progress, stack
from bench.upload_large import Content
from shared.kit.embedded import Child, start_s3_server

NAME = "upload_session"
BUCKET = "bench"
ACCESS_KEY, SECRET_KEY = "bench", "bench-secret"
PART_SIZE = 64 * MiB
READ = MiB
MARK_AT = MiB  # where each round writes its 8 bytes (the start of the second block)


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[Child]:
    """moto's S3 server on a free loopback port, stopped on the way out."""
    child = start_s3_server(workdir / "moto.log")
    try:
        yield child
    finally:
        child.stop()


def write_content(content: Content, path: Path) -> None:
    with open(path, "wb") as f:
        for chunk in content.chunks():
            f.write(chunk)


def mark(path: Path, round_no: int) -> str:
    """Make the file one that no other round stores; its sha256 (not timed)."""
    with open(path, "r+b") as f:
        f.seek(MARK_AT)
        f.write((0xB5E5_0000_0000_0000 + round_no).to_bytes(8, "big"))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def part_body(path: Path, offset: int, size: int) -> Iterator[bytes]:
    """A part's bytes, read from the file 1 MiB at a time as they are sent."""
    with open(path, "rb") as f:
        left = size
        while left > 0:
            chunk = os.pread(f.fileno(), min(READ, left), offset + size - left)
            if not chunk:
                raise RuntimeError(f"{path} ended early")
            yield chunk
            left -= len(chunk)


def put_parts(http: httpx.Client, path: Path, parts: list[dict[str, Any]], parallel: int) -> None:
    offsets, at = {}, 0
    for p in sorted(parts, key=lambda p: p["part"]):
        offsets[p["part"]] = at
        at += p["size"]

    def put(p: dict[str, Any]) -> None:
        answer = http.put(
            p["url"],
            content=part_body(path, offsets[p["part"]], p["size"]),
            headers={"Content-Length": str(p["size"])},
        )
        if answer.status_code != 200:
            raise RuntimeError(f"part {p['part']} answered {answer.status_code}: {answer.text}")

    with ThreadPoolExecutor(parallel, thread_name_prefix="part") as pool:
        for done in [pool.submit(put, p) for p in parts]:
            done.result()


def product(
    api: httpx.Client, parts_http: httpx.Client, folder: str, path: Path, parallel: int
) -> dict[str, Any]:
    """One session: open, PUT the parts, complete. Seconds of each step, and the file."""
    size = path.stat().st_size
    t0 = time.perf_counter()
    answer = api.post(
        f"/v1/folders/{folder}/uploads",
        json={"name": f"scan_{uuid.uuid4().hex[:8]}.png", "size": size, "part_size": PART_SIZE},
    )
    if answer.status_code != 201:
        raise RuntimeError(f"open answered {answer.status_code}: {answer.text[:300]}")
    session = answer.json()
    t1 = time.perf_counter()
    put_parts(parts_http, path, session["parts"], parallel)
    t2 = time.perf_counter()
    answer = api.post(f"/v1/uploads/{session['id']}/complete")
    t3 = time.perf_counter()
    if answer.status_code != 201:
        raise RuntimeError(f"complete answered {answer.status_code}: {answer.text[:300]}")
    return {
        "total": t3 - t0,
        "open": t1 - t0,
        "parts": t2 - t1,
        "complete": t3 - t2,
        "file": answer.json()["file"],
        "count": len(session["parts"]),
    }


class TimedMinio(Minio):
    """minio's client, timing its CompleteMultipartUpload calls (a diagnostic split)."""

    completing: list[float]

    def _complete_multipart_upload(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super()._complete_multipart_upload(*args, **kwargs)
        finally:
            self.completing.append(time.perf_counter() - start)


def baseline(s3: TimedMinio, path: Path, parallel: int) -> tuple[float, float]:
    """Seconds of the whole fput_object, and of its CompleteMultipartUpload."""
    key = f"baseline/{uuid.uuid4().hex}"
    s3.completing = []
    start = time.perf_counter()
    s3.fput_object(BUCKET, key, str(path), part_size=PART_SIZE, num_parallel_uploads=parallel)
    elapsed = time.perf_counter() - start
    s3.remove_object(BUCKET, key)  # not timed; moto holds what it stores
    return elapsed, sum(s3.completing)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=None, help="default 1024 (64 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="default 2 (1 quick)")
    parser.add_argument("--parallel", type=int, default=4, help="parts in flight (4)")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    size = (args.size_mib or (64 if args.quick else 1024)) * MiB
    rounds = args.rounds or (1 if args.quick else 2)
    parallel = args.parallel
    report.title = (
        f"one {size / MiB:,.0f} MiB upload session, 64 MiB parts, {parallel} in flight,"
        f" to moto's S3 (best of {rounds})"
    )
    progress(f"writing {size / MiB:,.0f} MiB for each of {rounds} rounds, hashing (not timed)")
    files = []
    first = workdir / "content-1.bin"
    write_content(Content(size), first)
    for r in range(rounds):
        path = workdir / f"content-{r + 1}.bin"
        if r:
            shutil.copyfile(first, path)
        files.append((path, mark(path, r + 1)))

    found: dict[str, list[Any]] = {"product": [], "baseline_s": [], "baseline_complete_s": []}
    with moto_server(workdir) as moto:
        endpoint = moto.url.removeprefix("http://")
        progress(f"moto's S3 server at {moto.url}; starting the stack")
        with stack(
            workdir,
            blob_url=f"s3://{BUCKET}?endpoint={moto.url}&region=us-east-1",
            s3_access_key=ACCESS_KEY,
            s3_secret_key=SECRET_KEY,
        ) as running:
            s3 = TimedMinio(
                endpoint,
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
                secure=False,
                region="us-east-1",
            )
            pids = {c.name: c.proc.pid for c in running.children if c.name in ("gateway", "ingest")}
            everyone = {c.name: c.proc.pid for c in running.children}
            everyone["moto"] = moto.proc.pid
            headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
            limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
            with (
                httpx.Client(base_url=running.gateway_url, headers=headers, timeout=600) as api,
                httpx.Client(timeout=600, limits=limits) as parts_http,
            ):
                answer = api.post("/v1/folders", json={"name": f"session-{uuid.uuid4().hex[:8]}"})
                answer.raise_for_status()
                folder = answer.json()["id"]
                # Warm-up, not timed: one small session and one small fput.
                small = workdir / "small.bin"
                write_content(Content(10 * MiB), small)
                mark(small, 0)
                product(api, parts_http, folder, small, parallel)
                baseline(s3, small, parallel)
                small.unlink()
                progress(
                    f"{rounds} rounds of: fput_object (baseline), then the session,"
                    f" {size / MiB:,.0f} MiB each"
                )
                with (
                    report.contention.measure(),
                    RssSampler(pids) as rss,
                    CpuMeter(everyone) as cpu,
                ):
                    for r in range(rounds):
                        path, expected = files[r]
                        seconds, completing = baseline(s3, path, parallel)
                        found["baseline_s"].append(seconds)
                        found["baseline_complete_s"].append(completing)
                        result = product(api, parts_http, folder, path, parallel)
                        stored = result["file"]
                        if stored["size"] != size or stored["sha256"] != expected:
                            raise RuntimeError(
                                f"stored {stored['size']} B, sha256 {stored['sha256']}:"
                                f" not the file's {size} B, {expected}"
                            )
                        found["product"].append(result)
                        progress(
                            f"round {r + 1}: baseline {size / found['baseline_s'][-1] / MB:,.0f}"
                            f" MB/s, session {size / result['total'] / MB:,.0f} MB/s"
                        )
            running.check_alive()
    report_figures(report, size, parallel, found, rss, cpu)


def report_figures(
    report: Report,
    size: int,
    parallel: int,
    found: dict[str, list[Any]],
    rss: RssSampler,
    cpu: CpuMeter,
) -> None:
    best = min(found["product"], key=lambda r: r["total"])
    base_s = min(found["baseline_s"])
    base_complete = found["baseline_complete_s"][found["baseline_s"].index(base_s)]
    rate = size / best["total"] / MB
    base_rate = size / base_s / MB
    report.figure("mb_per_s", "session: open to complete's 201", rate, "MB/s", headline=True)
    report.figure("seconds", "session: open to complete's 201", best["total"], "s")
    report.figure("open_s", "  of which opening the session", best["open"], "s")
    report.figure("parts_s", f"  of which PUT of {best['count']} parts", best["parts"], "s")
    report.figure("complete_s", "  of which complete", best["complete"], "s")
    report.figure("parts_mb_per_s", "the parts' PUTs alone", size / best["parts"] / MB, "MB/s")
    for name in ("gateway", "ingest"):
        report.figure(f"{name}_peak_rss_mb", f"{name} peak RSS", rss.peak[name] / MB, "MB")
    report.figure("moto_cpu_s", "moto CPU-seconds (all rounds, both sides)", cpu.used["moto"], "s")
    report.baseline("baseline_mb_per_s", "minio fput_object, same file", base_rate, "MB/s")
    report.baseline("baseline_s", "minio fput_object, same file", base_s, "s")
    report.baseline("baseline_complete_s", "  of which CompleteMultipartUpload", base_complete, "s")
    report.ratio("ratio", "product / baseline", rate, base_rate)

    def rates(seconds: list[float]) -> str:
        return ", ".join(f"{size / s / MB:,.0f}" for s in seconds)

    report.note(
        f"MB/s of each round: session {rates([r['total'] for r in found['product']])};"
        f" baseline {rates(found['baseline_s'])}"
    )
    report.note(
        "split of each round (open / parts / complete, s): "
        + "; ".join(
            f"{r['open']:.2f} / {r['parts']:.2f} / {r['complete']:.2f}" for r in found["product"]
        )
    )
    report.note(
        "baseline's CompleteMultipartUpload of each round (s): "
        + ", ".join(f"{s:.2f}" for s in found["baseline_complete_s"])
    )
    report.note(f"CPU-seconds used meanwhile (all rounds): {cpu.describe()}")
    report.note(
        f"{parallel} parts in flight on both sides; moto's S3 server (one Python process) is"
        " the store and the bottleneck: complete joins the parts in memory, ingest reads the"
        " object back, then it is copied under its content key and the source deleted"
    )
    report.note("sizes in MB = 10^6 bytes")


if __name__ == "__main__":
    main(NAME, "one large file through an upload session to S3", body, add_arguments)
