"""Cloud-synced folders: a re-sync of a prefix of which 1% changed, and a bucket
notification until the new object is visible in the folder.

Product: `POST /v1/folders {cloud_sync}` follows a prefix; after 1% of its objects
changed (new ETag and bytes), `POST /v1/folders/{id}/sync` until its job is done (the
listing compared with what is known; only the changed objects read again). Then, one at
a time, a new object and its S3 event notification posted to
`POST /v1/integrations/{id}/events`, until `GET /v1/folders/{id}/items?q=` shows it.

The bucket is a fake S3 endpoint of our own (a process of its own, as in bench.imports):
generated keys and bytes; a state file says how many keys there are and which
generation the changed ones (every 100th) are at; it counts the objects it served.

Baseline, in the same run: a raw listing of the same prefix through the same S3 client
(ingest's adapter, services/ingest/imports/buckets/s3.py), nothing compared or recorded.
Target (issue 18): 100,000 objects, 1% changed, re-synced within 30 s; notification to
visible p99 under 2 s. Default 20,000 objects (2,000 with --quick), `--objects N`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench._common import ADMIN_KEY, CpuMeter, Report, main, percentile, progress, stack
from bench.imports import _MODIFIED, _XMLNS, BUCKET, FAKE_KEY, FAKE_SECRET, _error, tiny_png
from shared.kit.embedded import free_port

NAME = "cloud_sync"
TARGET_COUNT = 100_000
TARGET_S = 30.0
TARGET_P99_S = 2.0


def _state(path: Path) -> dict[str, int]:
    return dict(json.loads(path.read_text()))


def serve(port: int, prefix: str, state_file: str) -> None:
    """ListObjectsV2 and GET of generated objects: `count` keys under `prefix`; every
    100th at `generation` (its ETag and bytes change with it). `GET /__served` answers
    how many objects were read."""
    import httptools
    import uvloop

    path = Path(state_file)
    seen: dict[str, Any] = {"mtime": 0.0, "state": {}}
    served = [0]

    def state() -> dict[str, int]:
        mtime = path.stat().st_mtime
        if mtime != seen["mtime"]:
            seen["state"], seen["mtime"] = _state(path), mtime
        return dict(seen["state"])

    def key(i: int) -> str:
        return f"{prefix}{i:07d}.png"

    def etag(i: int, generation: int) -> str:
        return f"{i:08d}" + (f"g{generation}" if i % 100 == 0 and generation else "")

    def body_of(i: int, generation: int) -> bytes:
        extra = generation.to_bytes(4, "big") if i % 100 == 0 and generation else b""
        return tiny_png(i) + extra

    def listing(query: dict[str, str]) -> bytes:
        from xml.sax.saxutils import escape

        now = state()
        count, generation = now["count"], now["generation"]
        asked = query.get("prefix", "")
        most = min(max(int(query.get("max-keys") or 1000), 1), 1000)
        after = query.get("continuation-token") or ""
        start = 0
        if after:
            start = int(after.removeprefix(prefix).removesuffix(".png")) + 1
        elif asked.startswith(prefix) and asked != prefix:
            digits = asked.removeprefix(prefix).removesuffix(".png")
            start = int(digits) if digits.isdigit() else count
            if not asked.endswith(".png") or start >= count:
                start = count
            else:
                count = start + 1  # one exact key asked
        elif not prefix.startswith(asked):
            start = count
        found = list(range(start, min(start + most, count)))
        truncated = bool(found) and found[-1] + 1 < count
        contents = "".join(
            f"<Contents><Key>{escape(key(i))}</Key><LastModified>{_MODIFIED}</LastModified>"
            f'<ETag>"{etag(i, generation)}"</ETag><Size>{len(body_of(i, generation))}</Size>'
            "</Contents>"
            for i in found
        )
        token = (
            f"<NextContinuationToken>{escape(key(found[-1]))}</NextContinuationToken>"
            if truncated
            else ""
        )
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{_XMLNS}">'
            f"<Name>{BUCKET}</Name><KeyCount>{len(found)}</KeyCount>"
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            f"{token}{contents}</ListBucketResult>"
        ).encode()

    def answer(url: bytes) -> tuple[int, bytes, bytes]:
        from urllib.parse import parse_qsl, unquote

        raw, _, raw_query = url.decode().partition("?")
        if raw == "/__served":
            return 200, b"application/json", json.dumps({"served": served[0]}).encode()
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        bucket, _, name = unquote(raw).lstrip("/").partition("/")
        if bucket != BUCKET:
            return 404, b"application/xml", _error("NoSuchBucket", "no such bucket")
        if not name:
            if "location" in query:
                body = f'<LocationConstraint xmlns="{_XMLNS}">us-east-1</LocationConstraint>'
                return 200, b"application/xml", body.encode()
            return 200, b"application/xml", listing(query)
        digits = name.removeprefix(prefix).removesuffix(".png")
        now = state()
        if not (name.startswith(prefix) and digits.isdigit() and int(digits) < now["count"]):
            return 404, b"application/xml", _error("NoSuchKey", "no such key")
        served[0] += 1
        return 200, b"image/png", body_of(int(digits), now["generation"])

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            status, kind, body = answer(self.url)
            self.url = b""
            head = b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
                status,
                kind,
                len(body),
            )
            self.transport.write(head + body)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(run())


class Bucket:
    def __init__(self, prefix: str, count: int, workdir: Path) -> None:
        self.prefix, self.state_file = prefix, workdir / "bucket-state.json"
        self.set(count=count, generation=0)
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        out = open(workdir / "fake-s3.log", "ab")  # noqa: SIM115 - the child's log
        state = str(self.state_file)
        code = f"from bench.cloud_sync import serve; serve({port}, {prefix!r}, {state!r})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=out,
            stderr=out,
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the fake S3 server did not start") from None
                time.sleep(0.05)  # poll again, within the deadline

    def set(self, **changes: int) -> None:
        now = _state(self.state_file) if self.state_file.exists() else {}
        now.update(changes)
        temp = self.state_file.with_suffix(".tmp")
        temp.write_text(json.dumps(now))
        os.replace(temp, self.state_file)
        # mtime resolution: make each state distinct for the server's check.
        stamp = time.time() + now.get("count", 0) * 1e-3 + now.get("generation", 0)
        os.utime(self.state_file, (stamp, stamp))

    def served(self) -> int:
        return int(httpx.get(f"{self.endpoint}/__served").json()["served"])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def raw_listing(bucket: Bucket) -> tuple[int, float]:
    """The prefix listed through ingest's own S3 adapter, nothing else."""
    from services.ingest.imports.buckets.port import Bucket as Where
    from services.ingest.imports.buckets.s3 import S3Reader
    from services.ingest.imports.domain.endpoints import EndpointRule
    from services.ingest.imports.domain.integrations import Credentials, parse_endpoint
    from services.ingest.imports.egress import Caps, Egress
    from shared.kit.settings import Settings

    reader = S3Reader(
        Where(
            parse_endpoint(bucket.endpoint), "us-east-1", BUCKET, Credentials(FAKE_KEY, FAKE_SECRET)
        ),
        Egress(EndpointRule.parse("127.0.0.1")),
        Caps.of(Settings()),
    )
    try:
        start = time.perf_counter()
        count = 0
        async for page in reader.listing(bucket.prefix):
            count += len(page)
        return count, time.perf_counter() - start
    finally:
        await reader.close()


async def job_done(api: httpx.AsyncClient, job_id: str, within: float = 3600) -> dict[str, Any]:
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        # The job's files would list every new one: its status is enough here.
        answer = await api.get(f"/v1/jobs/{job_id}")
        answer.raise_for_status()
        job = dict(answer.json())
        if job["status"] != "running":
            if job["status"] != "done":
                raise RuntimeError(f"sync job {job_id}: {job['status']}: {job['errors'][:3]}")
            return job
        await asyncio.sleep(0.1)  # poll again, within the deadline
    raise RuntimeError(f"sync job {job_id} did not finish")


async def scenario(gateway: str, bucket: Bucket, count: int, notifications: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=120) as api:
        registered = await api.post(
            "/v1/integrations",
            json={
                "name": "bench bucket",
                "provider": "s3",
                "endpoint": bucket.endpoint,
                "region": "us-east-1",
                "bucket": BUCKET,
                "access_key": FAKE_KEY,
                "secret_key": FAKE_SECRET,
            },
        )
        registered.raise_for_status()
        integration = registered.json()
        start = time.perf_counter()
        made = await api.post(
            "/v1/folders",
            json={
                "name": f"bench-{uuid.uuid4().hex[:8]}",
                "cloud_sync": {"integration_id": integration["id"], "prefix": bucket.prefix},
            },
        )
        made.raise_for_status()
        folder = made.json()
        await job_done(api, folder["sync_job_id"])
        first_s = time.perf_counter() - start
        progress(f"first sync of {count:,} objects: {first_s:.1f} s")

        unchanged_start = time.perf_counter()
        started = await api.post(f"/v1/folders/{folder['id']}/sync")
        started.raise_for_status()
        await job_done(api, started.json()["job_id"])
        unchanged_s = time.perf_counter() - unchanged_start

        bucket.set(generation=1)
        before = bucket.served()
        resync_start = time.perf_counter()
        started = await api.post(f"/v1/folders/{folder['id']}/sync")
        started.raise_for_status()
        await job_done(api, started.json()["job_id"])
        resync_s = time.perf_counter() - resync_start
        read_again = bucket.served() - before

        latencies = []
        route = f"/v1/integrations/{integration['id']}/events"
        token = {"Authorization": f"Bearer {integration['events_token']}"}
        for n in range(notifications):
            index = count + n
            name = f"{index:07d}.png"
            bucket.set(count=index + 1)
            record = {"s3": {"bucket": {"name": BUCKET}, "object": {"key": bucket.prefix + name}}}
            sent = time.perf_counter()
            answer = await api.post(route, json={"Records": [record]}, headers=token)
            answer.raise_for_status()
            while True:
                found = await api.get(
                    f"/v1/folders/{folder['id']}/items", params={"q": name, "limit": 5}
                )
                found.raise_for_status()
                if any(i["name"] == name for i in found.json()["items"]):
                    break
                if time.perf_counter() - sent > 60:
                    raise RuntimeError(f"{name} not visible after 60 s")
                await asyncio.sleep(0.02)  # poll again, within the deadline
            latencies.append(time.perf_counter() - sent)
        return {
            "first_s": first_s,
            "unchanged_s": unchanged_s,
            "resync_s": resync_s,
            "read_again": read_again,
            "latencies": latencies,
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--objects", type=int, default=0, help="objects under the prefix")
    parser.add_argument("--notifications", type=int, default=0, help="notifications timed")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    count = args.objects or (2_000 if args.quick else 20_000)
    notifications = args.notifications or (10 if args.quick else 50)
    changed = len(range(0, count, 100))
    prefix = f"synced/{uuid.uuid4().hex[:6]}/"
    report.title = (
        f"re-sync of {count:,} objects of which {changed:,} (1%) changed; then"
        f" {notifications} bucket notifications until each new object is visible"
    )
    progress("starting the fake S3 endpoint")
    bucket = Bucket(prefix, count, workdir)
    try:
        progress("baseline: a raw listing of the prefix through ingest's S3 adapter")
        with report.contention.measure():
            listed, base_s = asyncio.run(raw_listing(bucket))
        assert listed == count, (listed, count)
        progress("starting the stack")
        with stack(workdir, allowed_endpoints="127.0.0.1") as running:
            pids = {c.name: c.proc.pid for c in running.children}
            with report.contention.measure(), CpuMeter(pids) as cpu:
                result = asyncio.run(scenario(running.gateway_url, bucket, count, notifications))
            running.check_alive()
    finally:
        bucket.stop()
    report.figure(
        "resync_s",
        f"re-sync, {changed:,} of {count:,} changed",
        result["resync_s"],
        "s",
        headline=True,
    )
    report.baseline("listing_s", "raw listing of the prefix, same client", base_s, "s")
    report.ratio("ratio", "re-sync / raw listing", result["resync_s"], base_s)
    report.figure("read_again", "objects read again by the re-sync", result["read_again"], "obj")
    report.figure("unchanged_s", "re-sync with nothing changed", result["unchanged_s"], "s")
    report.figure("first_s", "first sync (every object read)", result["first_s"], "s")
    lat = result["latencies"]
    report.figure("notify_p50_s", "notification to visible, p50", percentile(lat, 50), "s")
    report.figure("notify_p99_s", "notification to visible, p99", percentile(lat, 99), "s")
    report.target(
        f"1% re-sync of {TARGET_COUNT:,} within {TARGET_S:g} s (measured at {count:,})",
        count >= TARGET_COUNT and result["resync_s"] <= TARGET_S,
        f"{result['resync_s']:.1f} s",
    )
    report.target(
        f"notification to visible p99 under {TARGET_P99_S:g} s",
        percentile(lat, 99) < TARGET_P99_S,
        f"{percentile(lat, 99):.2f} s",
    )
    report.note(f"read again: {result['read_again']} objects (changed: {changed})")
    report.note(f"CPU-seconds used meanwhile: {cpu.describe()}")


if __name__ == "__main__":
    main(NAME, "cloud-synced folders: 1% re-sync and notification latency", body, add_arguments)
