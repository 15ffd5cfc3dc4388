"""One large file through the gateway: throughput, and the services' peak memory.

Product: one `POST /v1/folders/{id}/files` of 1 GiB (`--size-mib`), the multipart body
streamed from a generator (the client never holds more than a few MiB), timed until the 201
(which the gateway sends once the folder lists the file). Meanwhile the gateway's and
ingest's resident memory is sampled every 50 ms with psutil.
Baseline: the same bytes written to a file in the same temp dir by a plain Python loop of
1 MiB writes, with one fsync at the end.
Targets: at least 50% of the baseline's MB/s; peak RSS under 300 MB for each service.

Baseline and upload alternate for `--rounds` rounds (2; 1 with --quick), the dirty pages
flushed before each, and the best round of each counts: this VM's disk speed drifts.
A diagnostic line also times the same upload sent straight to ingest (bypassing the
gateway), to tell the two hops apart.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench._common import ADMIN_KEY, MB, CpuMeter, MiB, Report, RssSampler, main, progress, stack
from shared.kit import identity
from shared.kit.access import Access

NAME = "upload_large"
TARGET_RATIO = 0.5
TARGET_RSS = 300 * MB
BLOCKS = 16  # distinct random 1 MiB blocks, cycled


def _blocks() -> list[bytes]:
    ihdr = struct.pack(">IIBBBBB", 8192, 8192, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
    head += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    blocks = [os.urandom(MiB) for _ in range(BLOCKS)]
    blocks[0] = head + blocks[0][len(head) :]
    return blocks


class Content:
    """`size` bytes, 1 MiB at a time: a PNG header, then random-ish blocks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.blocks = _blocks()

    def chunks(self) -> Iterator[bytes]:
        left, i = self.size, 0
        while left > 0:
            block = self.blocks[i % BLOCKS]
            # Vary each block a little so no two MiB are alike.
            block = i.to_bytes(8, "big") + block[8:] if i else block
            yield block[:left]
            left -= len(block)
            i += 1

    def sha256(self) -> str:
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        return h.hexdigest()


def baseline(content: Content, path: Path) -> float:
    """Seconds to write the bytes with 1 MiB writes and one fsync at the end."""
    start = time.perf_counter()
    with open(path, "wb") as f:
        for chunk in content.chunks():
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def settle() -> None:
    """Flush dirty pages first, so one measurement does not pay for the last one's writeback."""
    os.sync()


class Multipart:
    """A multipart/form-data body of one `file` part, streamed."""

    def __init__(self, content: Content, filename: str) -> None:
        self.content = content
        self.boundary = f"files-bench-{uuid.uuid4().hex}"
        self.head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def length(self) -> int:
        return len(self.head) + self.content.size + len(self.tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    async def stream(self) -> AsyncIterator[bytes]:
        yield self.head
        for chunk in self.content.chunks():
            yield chunk
        yield self.tail


async def post_file(
    client: httpx.AsyncClient, url: str, content: Content, extra: dict[str, str]
) -> tuple[float, dict[str, Any]]:
    body = Multipart(content, "large_scan_0001.png")
    headers = {"Content-Type": body.content_type, "Content-Length": str(body.length), **extra}
    start = time.perf_counter()
    answer = await client.post(url, content=body.stream(), headers=headers)
    elapsed = time.perf_counter() - start
    if answer.status_code != 201:
        raise RuntimeError(f"upload answered {answer.status_code}: {answer.text[:300]}")
    return elapsed, answer.json()["files"][0]


async def run(
    gateway: str,
    ingest: str,
    content: Content,
    pids: dict[str, int],
    rounds: int,
    direct: bool,
    baseline_path: Path,
    service_key: str,
) -> dict[str, Any]:
    """`rounds` times: the baseline, the upload through the gateway, the direct upload.

    Interleaved, so a drift in the disk's speed touches both sides alike; the best of the
    rounds counts for each.
    """
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    found: dict[str, Any] = {"baseline_s": [], "elapsed": [], "direct_s": []}
    async with (
        httpx.AsyncClient(base_url=gateway, headers=headers, timeout=600) as api,
        httpx.AsyncClient(base_url=ingest, timeout=600) as raw,
    ):
        answer = await api.post("/v1/folders", json={"name": f"large-{uuid.uuid4().hex[:8]}"})
        answer.raise_for_status()
        folder = answer.json()
        url = f"/v1/folders/{folder['id']}/files"
        user = (await api.get("/v1/users/me")).json()
        signer = identity.ServiceKey(service_key)
        # Warm-up, not timed: one small upload.
        await post_file(api, url, Content(MiB), {})
        client_rss = psutil.Process().memory_info().rss
        with RssSampler(pids) as rss:
            for _ in range(rounds):
                settle()
                found["baseline_s"].append(baseline(content, baseline_path))
                settle()
                elapsed, stored = await post_file(api, url, content, {})
                found["elapsed"].append(elapsed)
                if direct:
                    # Straight to ingest, as the gateway forwards it (the caller signed).
                    settle()
                    caller = signer.sign(
                        user["id"],
                        Access(user["id"], org_admin=True).encode(),
                        audience="ingest",
                        folder_path=folder["id"],
                    )
                    seconds, _ = await post_file(raw, url, content, {identity.HEADER: caller})
                    found["direct_s"].append(seconds)
        found["client_rss_growth"] = psutil.Process().memory_info().rss - client_rss
        items = (await api.get(f"/v1/folders/{folder['id']}/items")).json()["items"]
        found["listed"] = any(i["id"] == stored["id"] for i in items)
    found.update(stored=stored, peak=rss.peak, samples=rss.samples)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=None, help="default 1024 (64 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="default 2 (1 quick)")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct-to-ingest run")
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL without fsync")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    size = (args.size_mib or (64 if args.quick else 1024)) * MiB
    rounds = args.rounds or (1 if args.quick else 2)
    report.title = f"one {size / MiB:,.0f} MiB upload through the gateway (best of {rounds})"
    content = Content(size)
    progress("hashing the content to check what is stored (not timed)")
    expected_sha = content.sha256()

    progress("starting the stack")
    with stack(workdir, durable=not args.no_fsync) as running:
        pids = {c.name: c.proc.pid for c in running.children if c.name in ("gateway", "ingest")}
        everyone = {c.name: c.proc.pid for c in running.children}
        progress(
            f"{rounds} rounds of: {size / MiB:,.0f} MiB with 1 MiB writes + fsync (baseline),"
            f" then through {running.gateway_url}"
        )
        with report.contention.measure(), CpuMeter(everyone) as cpu:
            result = asyncio.run(
                run(
                    running.gateway_url,
                    running.env["FILES_INGEST_URL"],
                    content,
                    pids,
                    rounds,
                    not args.no_direct,
                    workdir / "baseline.bin",
                    running.service_key,
                )
            )
        running.check_alive()

    stored = result["stored"]
    if stored["size"] != size or stored["sha256"] != expected_sha:
        raise RuntimeError(
            f"stored {stored['size']} B, sha256 {stored['sha256']}: not what we sent"
        )
    if not result["listed"]:
        raise RuntimeError("the folder does not list the uploaded file")

    def rates(seconds: list[float]) -> str:
        return ", ".join(f"{size / s / MB:,.0f}" for s in seconds)

    rate = size / min(result["elapsed"]) / MB
    base_rate = size / min(result["baseline_s"]) / MB
    report.figure("mb_per_s", "upload through the gateway", rate, "MB/s", headline=True)
    report.figure("seconds", "upload through the gateway", min(result["elapsed"]), "s")
    for name in ("gateway", "ingest"):
        report.figure(f"{name}_peak_rss_mb", f"{name} peak RSS", result["peak"][name] / MB, "MB")
    report.figure(
        "client_rss_growth_mb",
        "client RSS growth while sending",
        result["client_rss_growth"] / MB,
        "MB",
    )
    if result["direct_s"]:
        report.figure(
            "direct_mb_per_s",
            "diagnostic: same upload straight to ingest",
            size / min(result["direct_s"]) / MB,
            "MB/s",
            role="diag",
        )
    report.baseline("baseline_mb_per_s", "1 MiB writes + fsync", base_rate, "MB/s")
    ratio = report.ratio("ratio", "product / baseline", rate, base_rate)
    report.target(
        f"at least {TARGET_RATIO:.0%} of the disk baseline", ratio >= TARGET_RATIO, f"{ratio:.0%}"
    )
    for name in ("gateway", "ingest"):
        peak = result["peak"][name]
        report.target(f"{name} peak RSS under 300 MB", peak < TARGET_RSS, f"{peak / MB:,.0f} MB")
    report.note(
        f"MB/s of each round: gateway {rates(result['elapsed'])}; baseline"
        f" {rates(result['baseline_s'])}"
        + (f"; direct {rates(result['direct_s'])}" if result["direct_s"] else "")
    )
    report.note(f"CPU-seconds used meanwhile (all rounds): {cpu.describe()}")
    report.note(f"{result['samples']} RSS samples; sizes in MB = 10^6 bytes")
    report.note("ingest fsyncs each blob before recording it; the baseline fsyncs once at the end")
    if args.no_fsync:
        report.note("PostgreSQL ran without fsync (--no-fsync)")


if __name__ == "__main__":
    main(NAME, "one large file through the gateway", body, add_arguments)
