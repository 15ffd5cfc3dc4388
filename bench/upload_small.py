"""Many small files, end to end: uploaded through the gateway until the folder lists them all.

Product: `POST /v1/folders/{id}/files` (multipart, `--batch` files per request, `--concurrency`
requests in flight) until `GET /v1/folders/{id}/items` (paginated) lists every file. Files/s
over the whole span, from the first request to the listing that shows them all.
Baseline: the same bytes written to the same disk by a plain Python loop, one
open/write/close per file. Target: at least 1,500 files/s (issue 19).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import struct
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    ADMIN_KEY,
    MB,
    OUT_DIR,
    CpuMeter,
    KiB,
    PgStats,
    Report,
    main,
    percentile,
    progress,
    stack,
)
from shared.kit.blobs.local import LAYOUT_FILE

NAME = "upload_small"
TARGET_FILES_PER_S = 1500.0  # issue 19
SIDES = ("left", "right", "front", "back")


def png_like(index: int, size: int) -> bytes:
    """A PNG signature and IHDR chunk (sniffed as an image, 64x48), then random bytes."""
    ihdr = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    head = b"\x89PNG\r\n\x1a\n" + chunk + index.to_bytes(8, "big")
    return head + os.urandom(max(size - len(head), 0))


def file_name(index: int) -> str:
    return f"scan_{index:06d}_{SIDES[index % len(SIDES)]}.png"


def baseline(files: list[tuple[str, bytes]], where: Path) -> float:
    """Seconds to write every file with open/write/close, nothing else."""
    where.mkdir(parents=True)
    start = time.perf_counter()
    for name, content in files:
        with open(where / name, "wb") as f:
            f.write(content)
    return time.perf_counter() - start


def encoded(chunk: list[tuple[str, bytes]]) -> tuple[dict[str, str], bytes]:
    """A request's multipart body, encoded by httpx before the clock starts, as the files'
    bytes are made before it: the client on this same machine then sends one buffer a
    request. Sent with `files=`, httpx writes each part's header, bytes and CRLF as writes
    of their own (~300 a request, each through anyio's cancel scopes): measured, ~2 of
    the run's CPU-seconds, a client's cost on the server's two cores that a client on
    its own machine does not take from the platform."""
    parts = [("file", (n, c, "application/octet-stream")) for n, c in chunk]
    request = httpx.Request("POST", "http://encoded/", files=parts)
    return {"Content-Type": request.headers["Content-Type"]}, request.read()


async def list_all(api: httpx.AsyncClient, folder_id: str, page: int = 1000) -> int:
    """How many items the folder lists, following the cursor."""
    count, cursor = 0, None
    for _ in range(100_000):  # bounded: far more pages than any run makes
        params: dict[str, Any] = {"limit": page}
        if cursor:
            params["cursor"] = cursor
        answer = await api.get(f"/v1/folders/{folder_id}/items", params=params)
        answer.raise_for_status()
        body = answer.json()
        count += len(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    return count


async def upload(
    gateway: str, files: list[tuple[str, bytes]], batch: int, concurrency: int
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=gateway, headers=headers, timeout=120, limits=limits
    ) as api:

        async def new_folder(name: str) -> str:
            answer = await api.post("/v1/folders", json={"name": name})
            answer.raise_for_status()
            return str(answer.json()["id"])

        # Warm-up, not timed: connections, the auth cache, first-request imports.
        warm = await new_folder(f"warm-up-{uuid.uuid4().hex[:8]}")
        answer = await api.post(
            f"/v1/folders/{warm}/files",
            files=[("file", (file_name(i), png_like(i, 4 * KiB), "image/png")) for i in range(10)],
        )
        answer.raise_for_status()

        folder_id = await new_folder(f"bench-{uuid.uuid4().hex[:8]}")
        url = f"/v1/folders/{folder_id}/files"
        queue: asyncio.Queue[tuple[int, dict[str, str], bytes]] = asyncio.Queue()
        for i in range(0, len(files), batch):
            queue.put_nowait((len(files[i : i + batch]), *encoded(files[i : i + batch])))
        latencies: list[float] = []

        async def worker() -> None:
            while not queue.empty():
                count, multipart, content = queue.get_nowait()
                t0 = time.perf_counter()
                answer = await api.post(url, headers=multipart, content=content)
                latencies.append(time.perf_counter() - t0)
                if answer.status_code != 201:
                    raise RuntimeError(f"upload answered {answer.status_code}: {answer.text[:300]}")
                stored = len(answer.json()["files"])
                if stored != count:
                    raise RuntimeError(f"upload stored {stored} of {count} files")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        uploaded = time.perf_counter()
        listed, polls = 0, 0
        while polls < 300:  # bounded: 300 listings, ~30 s at worst
            polls += 1
            listed = await list_all(api, folder_id)
            if listed >= len(files):
                break
            await asyncio.sleep(0.1)
        end = time.perf_counter()
        if listed != len(files):
            raise RuntimeError(f"the folder lists {listed} of {len(files)} files")
        return {
            "total_s": end - start,
            "upload_s": uploaded - start,
            "list_s": end - uploaded,
            "polls": polls,
            "latencies": latencies,
        }


def warm_leaves(root: Path) -> None:
    """A local store's `sha256/aa/bb` leaves, all made (and synced: not written back by
    the upload's first `syncfs`). In a fresh store ingest makes a leaf for ~93% of
    10,000 blobs, about a third of its CPU on this disk (bench/README, Dec 7); a store
    past ~0.5 M blobs has them all. A store made with a layout file has its 256 leaves
    from its start: nothing to make."""
    if (root / LAYOUT_FILE).exists():
        return
    for a in range(256):
        for b in range(256):
            os.makedirs(root / "sha256" / f"{a:02x}" / f"{b:02x}", exist_ok=True)
    os.sync()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="default 10,000 (1,000 quick)")
    parser.add_argument("--size", type=int, default=4 * KiB, help="bytes per file")
    parser.add_argument("--batch", type=int, default=100, help="files per request")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync")
    parser.add_argument(
        "--blob-dir",
        type=Path,
        default=None,
        help="keep the blobs under this directory: a volume of their own, as production"
        " has (a blob commit's syncfs then flushes blobs only, not PostgreSQL's pages)",
    )
    parser.add_argument(
        "--warm-leaves",
        action="store_true",
        help="make the store's 65,536 sha256/aa/bb directories before the clock, as a store"
        " in use has them (a fresh store makes one for nearly every blob of the run)",
    )
    parser.add_argument(
        "--pg-stats",
        action="store_true",
        help="PostgreSQL with pg_stat_statements; print its top statements of the upload",
    )


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    count = args.files or (1_000 if args.quick else 10_000)
    report.title = (
        f"{count:,} files of {args.size:,} B through the gateway until listed"
        f" ({args.batch} per request, {args.concurrency} in flight)"
    )
    progress(f"generating {count:,} files")
    files = [(file_name(i), png_like(i, args.size)) for i in range(count)]

    progress("baseline: plain Python open/write/close per file")
    with report.contention.measure():
        # Three fresh directories; the median run counts (one run is short and noisy).
        runs = sorted(baseline(files, workdir / f"baseline-{i}") for i in range(3))
    base_s = runs[1]
    base_rate = count / base_s

    progress("starting the stack")
    blobs = {}
    if args.blob_dir is not None:
        blobs["blob_url"] = str(Path(tempfile.mkdtemp(prefix="blobs-", dir=args.blob_dir)))
    try:
        pg_options = PgStats.OPTIONS if args.pg_stats else ()
        pg_stats: PgStats | None = None
        with stack(workdir, durable=not args.no_fsync, pg_options=pg_options, **blobs) as running:
            if args.pg_stats:
                pg = running.child("postgres")
                services = {c.name: c.proc.pid for c in running.children if c is not pg}
                pg_stats = PgStats(pg.url, pg.proc.pid, services)
                pg_stats.reset()
            if args.warm_leaves:
                progress("making the store's 65,536 leaf directories")
                warm_leaves(Path(running.env["FILES_BLOB_URL"]))
            progress(f"uploading through {running.gateway_url}")
            pids = {c.name: c.proc.pid for c in running.children}
            with report.contention.measure(), CpuMeter(pids) as cpu:
                result = asyncio.run(
                    upload(running.gateway_url, files, args.batch, args.concurrency)
                )
            if pg_stats:
                pg_stats.read()
            running.check_alive()
    finally:
        if blobs:
            shutil.rmtree(blobs["blob_url"], ignore_errors=True)

    rate = count / result["total_s"]
    lat = result["latencies"]
    report.figure("files_per_s", "upload until listed", rate, "files/s", headline=True)
    report.figure(
        "mb_per_s", "upload until listed", count * args.size / result["total_s"] / MB, "MB/s"
    )
    report.figure("upload_s", "all upload requests answered after", result["upload_s"], "s")
    report.figure("list_s", "then listing all of them took", result["list_s"], "s")
    report.figure(
        "request_p50_ms", f"request of {args.batch} files, p50", percentile(lat, 50) * 1e3, "ms"
    )
    report.figure(
        "request_p95_ms", f"request of {args.batch} files, p95", percentile(lat, 95) * 1e3, "ms"
    )
    report.baseline("baseline_files_per_s", "plain open/write/close", base_rate, "files/s")
    report.ratio("ratio", "product / baseline", rate, base_rate)
    report.target(
        f"at least {TARGET_FILES_PER_S:.0f} files/s",
        rate >= TARGET_FILES_PER_S,
        f"{rate:,.0f} files/s",
    )
    report.note(f"CPU-seconds used meanwhile: {cpu.describe()}")
    # Two decimals and the user/kernel split (from /proc, through psutil): an A/B of one
    # service's cut is read from these, the machine's load moving the rest.
    report.note(
        "CPU-s, user + kernel: "
        + ", ".join(
            f"{name} {cpu.used[name] - cpu.kernel[name]:.2f} + {cpu.kernel[name]:.2f}"
            for name in sorted(cpu.used, key=lambda n: -cpu.used[n])
        )
    )
    if result["polls"] > 1:
        report.note(f"the listing was complete only after {result['polls']} polls")
    if args.no_fsync:
        report.note("PostgreSQL ran without fsync (--no-fsync)")
    if pg_stats:
        print(pg_stats.describe(per=count), flush=True)
        OUT_DIR.mkdir(exist_ok=True)
        every = OUT_DIR / f"{NAME}-pg-stats.json"
        every.write_text(json.dumps(pg_stats.all, indent=1, default=str))
        report.note(f"every statement's pg_stat_statements row in {every}")
    if blobs:
        report.note(f"blobs under {blobs['blob_url']} (--blob-dir), PostgreSQL in {workdir}")
    if args.warm_leaves:
        report.note("the store's leaf directories were made before the clock (--warm-leaves)")


if __name__ == "__main__":
    main(NAME, "small files through the gateway", body, add_arguments)
