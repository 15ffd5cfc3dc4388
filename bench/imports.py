"""Import by reference: a prefix of tiny objects in a customer's bucket until the folder
lists them all.

Product: one `POST /v1/folders/{id}/imports` `{integration_id, prefix}`; ingest lists the
prefix and streams every object once (hash, sniff, media facts) without copying it, in
batches; objects/s from the request to the listing (`GET /v1/folders/{id}/items`,
paginated) that shows them all. The bucket is moto's S3 server (a process of its own),
which answers a few hundred requests a second on this machine: it, not the platform,
bounds the rate, so the baseline is the same bucket read raw in the same run: a
recursive listing of the prefix and a GET of every object (minio client, as many
threads as ingest reads with), nothing recorded. Target (issue 6): 100,000 objects
within 60 s. The default count is 10,000 because moto takes about as long to fill as to
read (`--objects 100000` runs the full count: about 15 minutes here).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import struct
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import urllib3
from minio import Minio

from bench._common import ADMIN_KEY, CpuMeter, Report, main, progress, stack
from tests.cloud_fixtures import MotoS3, start_moto

NAME = "imports"
BUCKET = "bench-customer"
TARGET_COUNT = 100_000
TARGET_S = 60.0
THREADS = 16  # as many as ingest reads with (services/ingest/imports.py READERS)


def tiny_png(index: int) -> bytes:
    """A PNG signature and IHDR (sniffed as a 64x48 image), then 8 bytes: 41 bytes."""
    ihdr = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + index.to_bytes(8, "big")


def client(moto: MotoS3) -> Minio:
    return Minio(
        moto.endpoint.removeprefix("http://"),
        moto.access_key,
        moto.secret_key,
        secure=False,
        region="us-east-1",
        http_client=urllib3.PoolManager(maxsize=THREADS * 2),
    )


def fill(s3: Minio, prefix: str, count: int) -> float:
    """Put `count` tiny objects under the prefix; returns seconds taken."""
    s3.make_bucket(BUCKET)

    def put(i: int) -> None:
        data = tiny_png(i)
        s3.put_object(BUCKET, f"{prefix}{i:07d}.png", io.BytesIO(data), len(data))

    start = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(put, range(count)))
    return time.perf_counter() - start


def baseline(s3: Minio, prefix: str) -> tuple[int, float]:
    """List the prefix and GET every object, raw; returns (objects, seconds)."""

    def get(key: str) -> int:
        response = s3.get_object(BUCKET, key)
        try:
            return len(response.read())
        finally:
            response.close()
            response.release_conn()

    start = time.perf_counter()
    keys = [o.object_name for o in s3.list_objects(BUCKET, prefix=prefix, recursive=True)]
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(get, keys))
    return len(keys), time.perf_counter() - start


async def list_all(api: httpx.AsyncClient, folder_id: str, page: int = 1000) -> int:
    count, cursor = 0, None
    for _ in range(100_000):  # bounded: far more pages than any run makes
        params: dict[str, Any] = {"limit": page, **({"cursor": cursor} if cursor else {})}
        answer = await api.get(f"/v1/folders/{folder_id}/items", params=params)
        answer.raise_for_status()
        body = answer.json()
        count += len(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            break
    return count


async def import_prefix(gateway: str, moto: MotoS3, prefix: str, count: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=120) as api:
        registered = await api.post(
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
        made = await api.post("/v1/folders", json={"name": f"bench-{uuid.uuid4().hex[:8]}"})
        made.raise_for_status()
        folder_id = made.json()["id"]

        start = time.perf_counter()
        answer = await api.post(
            f"/v1/folders/{folder_id}/imports",
            json={"integration_id": registered.json()["id"], "prefix": prefix},
        )
        if answer.status_code != 202:
            raise RuntimeError(f"import answered {answer.status_code}: {answer.text[:300]}")
        job_id = answer.json()["job_id"]
        answered = time.perf_counter()
        # The summary is one query: poll it (bounded), then confirm with the full listing.
        deadline = start + 3600
        files = 0
        while time.perf_counter() < deadline:
            summary = await api.get(f"/v1/folders/{folder_id}/summary")
            summary.raise_for_status()
            files = summary.json()["files"]
            if files >= count:
                break
            await asyncio.sleep(0.25)  # poll again, within the deadline
        counted = time.perf_counter()
        listed = await list_all(api, folder_id)
        end = time.perf_counter()
        if listed != count:
            raise RuntimeError(f"the folder lists {listed} of {count} objects")
        found = await api.get(f"/v1/jobs/{job_id}")
        found.raise_for_status()
        status = found.json()
        return {
            "total_s": counted - start,
            "answer_s": answered - start,
            "listing_s": end - counted,
            "job": {k: status[k] for k in ("status", "progress")},
            "errors": len(status["errors"]),
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--objects", type=int, default=None, help="default 10,000 (1,000 quick)")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    count = args.objects or (1_000 if args.quick else 10_000)
    prefix = f"data/{uuid.uuid4().hex[:6]}/"
    report.title = (
        f"{count:,} objects of 41 B imported by reference from moto's S3 (by prefix)"
        " until the folder lists them all"
    )
    progress("starting moto's S3 server (the customer's bucket)")
    moto = start_moto(log=workdir / "moto.log")
    try:
        s3 = client(moto)
        progress(f"filling the bucket with {count:,} objects")
        fill_s = fill(s3, prefix, count)

        progress("baseline: raw list + GET of every object")
        with report.contention.measure():
            listed, base_s = baseline(s3, prefix)
        assert listed == count, (listed, count)
        base_rate = count / base_s

        progress("starting the stack")
        with stack(workdir) as running:
            progress(f"importing through {running.gateway_url}")
            pids = {c.name: c.proc.pid for c in running.children}
            pids["moto"] = moto.process.pid
            with report.contention.measure(), CpuMeter(pids) as cpu:
                result = asyncio.run(import_prefix(running.gateway_url, moto, prefix, count))
            running.check_alive()
    finally:
        moto.stop()

    rate = count / result["total_s"]
    report.figure("objects_per_s", "import by reference until listed", rate, "obj/s", headline=True)
    report.figure("total_s", "request to all listed", result["total_s"], "s")
    report.figure(
        "answer_ms", "the import request answered (202) after", result["answer_s"] * 1e3, "ms"
    )
    report.figure("listing_s", "then one full listing of the folder took", result["listing_s"], "s")
    report.baseline("baseline_objects_per_s", "raw list + GET, same bucket", base_rate, "obj/s")
    report.ratio("ratio", "product / baseline", rate, base_rate)
    extrapolated = TARGET_COUNT / rate
    report.target(
        f"{TARGET_COUNT:,} objects within {TARGET_S:.0f} s",
        extrapolated <= TARGET_S if count < TARGET_COUNT else result["total_s"] <= TARGET_S,
        f"{count:,} in {result['total_s']:.1f} s"
        + (
            f"; {TARGET_COUNT:,} at this rate: {extrapolated:.0f} s" if count < TARGET_COUNT else ""
        ),
    )
    report.note(f"job at the end: {result['job']}, {result['errors']} errors")
    report.note(f"filling moto with the objects took {fill_s:.1f} s ({count / fill_s:,.0f} PUT/s)")
    report.note(f"CPU-seconds used meanwhile: {cpu.describe()}")


if __name__ == "__main__":
    main(NAME, "import by reference from an S3 bucket", body, add_arguments)
