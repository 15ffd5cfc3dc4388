"""Thumbnails: pictures drawn per second for 1,000 images, against a plain Pillow loop.

1,000 JPEG photos (`--quick`: 100; `--images`), 1024x768 with texture (a gradient and
noise, seeded), about 280 KiB each, are made first, not timed.

Baseline: a plain Pillow loop over the same files, in this process, one after another:
`Image.open`, `draft`, `load`, `ImageOps.exif_transpose`, then the two sizes (512 and 128
px on the long side, each made from the one before) encoded as WebP with the product's
settings. Pictures/s of that loop (a file counts once: both its sizes); best of
`--rounds` (default 3).

Product: the platform started as processes (its own PostgreSQL and broker, blobs on local
disk), the thumbnails service with `--workers` drawing processes (default 2: the
machine's cores). The files are uploaded through the gateway, 100 per request, one
request at a time; timed from the first upload until every file's thumbnails are made
(the thumbnails context's read model, polled every 50 ms). Two figures: end to end
(the uploads, ingest's hashing and the catalog share the two cores with the drawing), and
the drawing alone: from the first file's request (`ThumbnailsRequested`, or the page
that names it) to the last settled (`ThumbnailsMade`, or its `ThumbnailsSettled` page;
their times in the store). Each is compared with the plain loop.
Target: the drawing alone at least as fast as the plain loop (ratio >= 1): the pool of
worker processes wins back what the platform costs around it.

`--imported`: the same photos imported by reference from moto's S3 server (started by
the benchmark, filled first, not timed) instead of uploaded: one import of their prefix,
then each file's picture asked for once (imported files are drawn when first asked
for), timed from the import's request until every file's thumbnails are made; each
photo is read from the bucket twice (ingest's import, then the drawing through
ingest's object URL). The drawing alone is compared with the plain loop as above.

`--small N`: the thumbnails service's CPU per small uploaded file (issue 19). N files of
4 KiB as bench.upload_small makes them (PNG-headed random bytes: each an image whose
drawing fails), or with `--tiny` valid 40x30 PNGs (drawn: one WebP for both sizes),
uploaded as upload_small does (100 a request, 4 in flight) until every file's
thumbnails are settled. Figures: CPU-ms a file of the thumbnails service with its
drawing workers, and of the PostgreSQL backends serving its connections (matched by
client port), from the first upload to the last file settled; the service's CPU-s while
the upload ran (until listed), and how long after the listing the last file settled.
Baseline: the same files opened and drawn by render.py's functions in this process, one
after another (CPU-ms a file). No target of its own: upload_small's 1,500 files/s needs
every service's CPU a file down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
from PIL import Image, ImageOps

from bench import imports, upload_small
from bench._common import ADMIN_KEY, CpuMeter, KiB, Report, main, progress, stack
from bench.imports import BUCKET
from services.thumbnails import domain, render
from tests.cloud_fixtures import start_moto
from tests.thumbnail_fixtures import photo

NAME = "thumbnails"
TARGET_RATIO = 1.0
PER_REQUEST = 100


def make_files(workdir: Path, count: int) -> list[Path]:
    folder = workdir / "images"
    folder.mkdir()
    paths = []
    for n in range(count):
        path = folder / f"photo_{n:05d}.jpg"
        path.write_bytes(photo(seed=n))
        paths.append(path)
    return paths


def plain_loop(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.draft("RGB", (512, 512))
            image.load()
            picture = ImageOps.exif_transpose(image)
            for size in (512, 128):
                picture = picture.copy()
                picture.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
                out = io.BytesIO()
                picture.save(out, "WEBP", quality=render.QUALITY["webp"], method=4)
    return time.perf_counter() - start


async def settled(database_url: str, ids: list[str], deadline_s: float) -> tuple[float, float]:
    """Wait until every file's thumbnails are made; (time they were, drawing-only seconds)."""
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + deadline_s
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM thumbnails.files"
                " WHERE file_id = ANY($1::uuid[]) AND state IN ('made', 'failed')",
                ids,
            )
            if done == len(ids):
                finished = time.perf_counter()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(ids) - done} files without thumbnails after {deadline_s} s"
                )
            await asyncio.sleep(0.05)
        failed = await conn.fetchval(
            "SELECT count(*) FROM thumbnails.files WHERE file_id = ANY($1::uuid[])"
            " AND state = 'failed'",
            ids,
        )
        if failed:
            raise RuntimeError(f"{failed} files could not be drawn")
        # A file's own events (before pages), or the pages that name it.
        span = await conn.fetchval(
            """SELECT extract(epoch FROM max(occurred_at) FILTER (WHERE type = ANY($2))
                                       - min(occurred_at) FILTER (WHERE type = ANY($3)))
               FROM thumbnails.events
               WHERE right(stream_id, 36) = ANY($1::text[]) OR data->'file_ids' ?| $1::text[]""",
            ids,
            ["thumbnails.ThumbnailsMade", "thumbnails.ThumbnailsSettled"],
            ["thumbnails.ThumbnailsRequested", "thumbnails.ThumbnailsRequestedPage"],
        )
        return finished, float(span)
    finally:
        await conn.close()


def end_to_end(workdir: Path, paths: list[Path], workers: int) -> tuple[float, float, CpuMeter]:
    with (
        stack(workdir, thumbnail_workers=workers) as running,
        httpx.Client(
            base_url=running.gateway_url,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=300,
        ) as api,
    ):
        made = api.post("/v1/folders", json={"name": "thumbnails-bench"})
        made.raise_for_status()
        folder_id = made.json()["id"]
        database_url = running.env["FILES_DATABASE_URL"]
        pids = {c.name: c.proc.pid for c in running.children}
        ids: list[str] = []
        with CpuMeter(pids) as meter:
            start = time.perf_counter()
            for i in range(0, len(paths), PER_REQUEST):
                parts = [
                    ("file", (p.name, p.read_bytes(), "application/octet-stream"))
                    for p in paths[i : i + PER_REQUEST]
                ]
                answer = api.post(f"/v1/folders/{folder_id}/files", files=parts)
                if answer.status_code != 201:
                    raise RuntimeError(f"upload answered {answer.status_code}: {answer.text}")
                ids += [f["id"] for f in answer.json()["files"]]
            uploaded = time.perf_counter() - start
            progress(f"uploaded in {uploaded:.1f} s; waiting for the thumbnails")
            finished, drawing = asyncio.run(settled(database_url, ids, 1200))
        shown = api.get(f"/v1/files/{ids[-1]}/thumbnail", params={"size": 512})
        if shown.status_code != 200 or shown.headers["content-type"] != "image/webp":
            raise RuntimeError(f"the thumbnail route answered {shown.status_code}")
        return finished - start, drawing, meter


def imported_end_to_end(
    workdir: Path, paths: list[Path], workers: int
) -> tuple[float, float, CpuMeter]:
    """As end_to_end, the photos imported by reference from moto's S3 server."""
    prefix = "photos/"
    moto = start_moto(log=workdir / "moto.log")
    try:
        s3 = imports.client(moto)
        s3.make_bucket(BUCKET)
        progress(f"filling moto's bucket with {len(paths):,} photos")
        for p in paths:
            s3.fput_object(BUCKET, prefix + p.name, str(p))
        with (
            stack(workdir, thumbnail_workers=workers) as running,
            httpx.Client(
                base_url=running.gateway_url,
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                timeout=300,
            ) as api,
        ):
            registered = api.post(
                "/v1/integrations",
                json={
                    "name": "bench bucket",
                    "provider": "s3",
                    "endpoint": moto.endpoint,
                    "region": "us-east-1",
                    "bucket": BUCKET,
                    "access_key": moto.access_key,
                    "secret_key": moto.secret_key,
                },
            )
            registered.raise_for_status()
            made = api.post("/v1/folders", json={"name": "thumbnails-imported-bench"})
            made.raise_for_status()
            pids = {c.name: c.proc.pid for c in running.children}
            pids["moto"] = moto.process.pid
            with CpuMeter(pids) as meter:
                start = time.perf_counter()
                answer = api.post(
                    f"/v1/folders/{made.json()['id']}/imports",
                    json={"integration_id": registered.json()["id"], "prefix": prefix},
                )
                if answer.status_code != 202:
                    raise RuntimeError(f"the import answered {answer.status_code}: {answer.text}")
                ids = imported_ids(api, answer.json()["job_id"], len(paths))
                # Imported files are drawn when first asked for, as the web app's grid asks.
                for file_id in ids:
                    api.get(f"/v1/files/{file_id}/thumbnail")
                progress(f"imported in {time.perf_counter() - start:.1f} s; waiting for pictures")
                finished, drawing = asyncio.run(
                    settled(running.env["FILES_DATABASE_URL"], ids, 1200)
                )
            shown = api.get(f"/v1/files/{ids[-1]}/thumbnail", params={"size": 512})
            if shown.status_code != 200 or shown.headers["content-type"] != "image/webp":
                raise RuntimeError(f"the thumbnail route answered {shown.status_code}")
            return finished - start, drawing, meter
    finally:
        moto.stop()


def imported_ids(api: httpx.Client, job_id: str, count: int) -> list[str]:
    """The import's file ids, once its job is done."""
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "failed":
            raise RuntimeError(f"the import failed: {job}")
        if job["status"] == "done":
            if len(job["files"]) != count:
                raise RuntimeError(f"{len(job['files'])} of {count} imported: {job['errors']}")
            return [str(f) if isinstance(f, str) else str(f["id"]) for f in job["files"]]
        time.sleep(0.1)  # polling the job's state, with the deadline above
    raise RuntimeError(f"import job {job_id} not done in 1,200 s")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    if args.small:
        small_body(args, workdir, report)
        return
    count = args.images or (100 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 3)
    report.title = (
        f"{count:,} JPEG photos of 1024x768 to WebP thumbnails of {domain.SIZES} px"
        " (baseline: a plain Pillow loop)"
    )
    progress(f"making {count:,} photos")
    paths = make_files(workdir, count)
    size = sum(p.stat().st_size for p in paths)
    progress("warm-up: one untimed pass of the plain loop over 50 files")
    plain_loop(paths[:50])
    base_times = []
    for r in range(rounds):
        progress(f"plain Pillow loop, round {r + 1} of {rounds}")
        with report.contention.measure():
            base_times.append(plain_loop(paths))
    base_s = min(base_times)
    how = "imported by reference from moto's S3" if args.imported else "uploaded"
    progress(f"end to end ({how}) with {args.workers} drawing processes")
    with report.contention.measure():
        run = imported_end_to_end if args.imported else end_to_end
        e2e_s, drawing_s, meter = run(workdir, paths, args.workers)
    report.figure(
        "e2e_per_s",
        f"end to end: {count:,} photos {how} until every thumbnail is made",
        count / e2e_s,
        "thumbnails/s",
        headline=True,
    )
    report.figure(
        "drawing_per_s",
        "  the drawing alone (first requested .. last made)",
        count / drawing_s,
        "thumbnails/s",
    )
    report.baseline(
        "plain_per_s",
        f"plain Pillow loop, one process: {count:,} photos",
        count / base_s,
        "thumbnails/s",
    )
    report.ratio("e2e_ratio", "end to end / plain loop", base_s, e2e_s)
    ratio = report.ratio("drawing_ratio", "drawing alone / plain loop", base_s, drawing_s)
    report.target(
        f"the drawing alone at least {TARGET_RATIO}x the plain loop",
        ratio >= TARGET_RATIO,
        f"{ratio:.2f}x",
    )
    report.note(f"{count:,} photos, {size / count / 1024:.0f} KiB each on average")
    report.note(f"CPU-seconds end to end: {meter.describe()}")


# -- --small: the service's CPU per small uploaded file ----------------------------------


def small_files(count: int, tiny: bool) -> list[tuple[str, bytes]]:
    if not tiny:
        return [
            (upload_small.file_name(i), upload_small.png_like(i, 4 * KiB)) for i in range(count)
        ]
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.frombytes("RGB", (40, 30), os.urandom(40 * 30 * 3)).save(buffer, "PNG")
        out.append((upload_small.file_name(i), buffer.getvalue()))
    return out


def small_plain_loop(files: list[tuple[str, bytes]]) -> float:
    """CPU-seconds to draw each file with render.py's functions, in this process."""
    start = time.process_time()
    for _, data in files:
        try:
            render.pictures(render.draw_image(io.BytesIO(data), 512), domain.SIZES, "webp")
        except Exception:
            continue  # the undrawable files fail, as in the service
    return time.process_time() - start


def backend_cpu(backends: list[Any], service: int) -> dict[int, float]:
    """CPU-seconds so far of each PostgreSQL backend whose client is a socket of the
    process `service` (or of its children), by backend pid."""
    ports: set[int] = set()
    with contextlib.suppress(psutil.Error):
        for proc in [psutil.Process(service), *psutil.Process(service).children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                ports |= {c.laddr.port for c in proc.net_connections(kind="tcp") if c.laddr}
    used: dict[int, float] = {}
    for b in backends:
        if b["client_port"] in ports:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(b["pid"]).cpu_times()
                used[b["pid"]] = t.user + t.system
    return used


async def small_snapshot(database_url: str) -> tuple[list[Any], int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        backends = await conn.fetch(
            "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL"
        )
        settled = await conn.fetchval(
            "SELECT count(*) FROM thumbnails.files WHERE state IN ('made', 'failed')"
        )
        commits = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return list(backends), settled, commits
    finally:
        await conn.close()


def small_body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    count = args.small
    kind = "valid 40x30 PNGs" if args.tiny else "4 KiB PNG-headed random bytes (undrawable)"
    report.title = f"thumbnails' CPU a small file: {count:,} {kind} uploaded until settled"
    files = small_files(count, args.tiny)
    progress("plain loop: render.py's functions over the same files, in this process")
    with report.contention.measure():
        plain = sorted(small_plain_loop(files) for _ in range(3))[1]
    progress("starting the stack")
    with stack(workdir) as running:
        pids = {c.name: c.proc.pid for c in running.children}
        url = running.env["FILES_DATABASE_URL"]
        thumbnails = pids["thumbnails"]
        backends, settled_before, commits_before = asyncio.run(small_snapshot(url))
        pg_before = backend_cpu(backends, thumbnails)
        with report.contention.measure(), CpuMeter(pids) as cpu:
            # The upload's own window too: what the context took while the files were
            # being uploaded (it yields to them on a busy machine), the rest after.
            with CpuMeter(pids) as uploading:
                result = asyncio.run(upload_small.upload(running.gateway_url, files, 100, 4))
            listed = time.perf_counter()
            deadline = time.monotonic() + 600
            # The warm-up's 10 files are settled too (they are images as well).
            while True:
                backends, settled, commits = asyncio.run(small_snapshot(url))
                if settled >= settled_before + count + 10:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{settled} thumbnails settled after 600 s")
                time.sleep(0.1)  # polling the read model, not a wait for a reaction
            after_listing = time.perf_counter() - listed
            pg_after = backend_cpu(backends, thumbnails)
        running.check_alive()
    service = cpu.used["thumbnails"]
    postgres = sum(v - pg_before.get(pid, 0.0) for pid, v in pg_after.items())
    report.figure(
        "thumbnails_ms_per_file",
        "thumbnails service and its workers, CPU a file",
        service / count * 1e3,
        "ms",
        headline=True,
    )
    report.figure(
        "postgres_ms_per_file",
        "PostgreSQL backends serving it, CPU a file",
        postgres / count * 1e3,
        "ms",
    )
    report.figure(
        "commits_per_file", "commits a file (all services)", (commits - commits_before) / count, ""
    )
    report.figure("settled_after_s", "every file settled after the listing", after_listing, "s")
    report.figure(
        "thumbnails_upload_cpu_s",
        "thumbnails service and its workers, CPU-s while uploading",
        uploading.used["thumbnails"],
        "s",
    )
    report.figure(
        "files_per_s", "upload until listed (upload_small)", count / result["total_s"], "files/s"
    )
    report.baseline(
        "plain_ms_per_file", "render.py in this process, CPU a file", plain / count * 1e3, "ms"
    )
    report.ratio("ratio", "service CPU a file / plain loop's", service, plain)
    report.note(f"CPU-seconds from the first upload to the last file settled: {cpu.describe()}")
    report.note(f"CPU-seconds of the upload alone (until listed): {uploading.describe()}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=0, help="how many photos (1,000)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds of the plain loop (3)")
    parser.add_argument("--workers", type=int, default=2, help="drawing processes (2)")
    parser.add_argument(
        "--small", type=int, default=0, help="instead: the CPU a small uploaded file (N files)"
    )
    parser.add_argument("--tiny", action="store_true", help="with --small: valid 40x30 PNGs")
    parser.add_argument(
        "--imported", action="store_true", help="the photos imported by reference from moto"
    )


if __name__ == "__main__":
    main(NAME, "thumbnails per second", body, add_arguments)
