"""Import by reference: a prefix of tiny objects in a customer's bucket until the folder
lists them all.

Product: one `POST /v1/folders/{id}/imports` `{integration_id, prefix}`; ingest lists the
prefix and streams every object once (hash, sniff, media facts) without copying it, in
batches; objects/s from the request to the listing (`GET /v1/folders/{id}/items`,
paginated) that shows them all.

The bucket (`--store`):
- `fake` (default): an S3 endpoint of our own (`serve_fake`, a process of its own): a
  fake-size listing (ListObjectsV2, pages of 1,000, every object 41 B) and each object's
  bytes generated on a GET (a tiny PNG per key); signatures are not checked. It answers
  tens of thousands of requests a second, so the platform, not the bucket, bounds the
  rate, and 100,000 objects need no filling.
- `moto`: moto's S3 server, filled first with real objects. It answers a few hundred
  requests a second on this machine: it, not the platform, bounds the rate (and takes
  about as long to fill as to read).

The baseline is the same bucket read raw in the same run: a recursive listing of the
prefix and a GET of every object (minio client, as many threads as ingest reads with),
nothing recorded. Then the same list + GET through each library measured for customer
buckets (issue 16), READERS at a time in one event loop: obstore, aiobotocore's client
and ingest's adapter (services/ingest/imports/buckets/s3.py: aiohttp + botocore's signer), with
the CPU-seconds each spent per object (`--no-libraries` skips them). Target (issue 16):
100,000 objects within 20 s. The default count is 100,000 with the fake bucket, 10,000
with moto (1,000 with --quick).

`--groups N`: the same objects named by a manifest as image groups of N frames each
(Encord's `image_groups`, issue 18): each frame read once, each group recorded whole;
timed from the request to the job done (ingest recorded every group), frames/s against
the same baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import urllib3
from minio import Minio

from bench._common import ADMIN_KEY, CpuMeter, Report, main, progress, stack
from shared.kit.embedded import free_port
from tests.cloud_fixtures import MotoS3, start_moto

NAME = "imports"
BUCKET = "bench-customer"
TARGET_COUNT = 100_000
TARGET_S = 20.0
THREADS = 16  # the minio baseline's threads
READERS = 32  # as many runs as ingest reads at a time (services/ingest/imports/runner.py READERS)


def tiny_png(index: int) -> bytes:
    """A PNG signature and IHDR (sniffed as a 64x48 image), then 8 bytes: 41 bytes."""
    ihdr = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + index.to_bytes(8, "big")


# -- a fake S3 endpoint of our own ---------------------------------------------------

FAKE_KEY, FAKE_SECRET = "bench-access-key", "bench-secret-key-not-checked"
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_MODIFIED = "2026-01-01T00:00:00.000Z"
_MODIFIED_HTTP = "Thu, 01 Jan 2026 00:00:00 GMT"


class _Keys:
    """The bucket's keys, sorted, without holding them: `prefix` + 7 digits + `.png`."""

    def __init__(self, prefix: str, count: int) -> None:
        self.prefix, self.count = prefix, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> str:
        return f"{self.prefix}{i:07d}.png"

    def index(self, key: str) -> int | None:
        digits = key.removeprefix(self.prefix).removesuffix(".png")
        if key.startswith(self.prefix) and key.endswith(".png") and digits.isdigit():
            i = int(digits)
            if 0 <= i < self.count and self[i] == key:
                return i
        return None


def _list_page(keys: _Keys, query: dict[str, str]) -> bytes:
    """One ListObjectsV2 page (recursive: no delimiter), every size the same."""
    from bisect import bisect_left, bisect_right
    from xml.sax.saxutils import escape

    prefix = query.get("prefix", "")
    most = min(max(int(query.get("max-keys") or 1000), 0), 1000)
    after = query.get("continuation-token") or query.get("start-after") or ""
    i = max(bisect_left(keys, prefix), bisect_right(keys, after) if after else 0)
    found: list[str] = []
    while i < len(keys) and len(found) < most:
        key = keys[i]
        if not key.startswith(prefix):
            break
        found.append(key)
        i += 1
    truncated = i < len(keys) and keys[i].startswith(prefix) and bool(found)
    size = len(tiny_png(0))
    contents = "".join(
        f"<Contents><Key>{escape(k)}</Key><LastModified>{_MODIFIED}</LastModified>"
        f'<ETag>"{k[-12:-4]}"</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass>'
        "</Contents>"
        for k in found
    )
    token = (
        f"<NextContinuationToken>{escape(found[-1])}</NextContinuationToken>" if truncated else ""
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="{_XMLNS}">'
        f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(found)}</KeyCount>"
        f"<MaxKeys>{most}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        f"{token}{contents}</ListBucketResult>"
    ).encode()


def _error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>0</RequestId></Error>"
    ).encode()


def _answer(keys: _Keys, method: bytes, url: bytes) -> tuple[int, bytes, bytes]:
    """(status, content type, body) for one request; signatures are not checked."""
    from urllib.parse import parse_qsl, unquote

    path, _, raw_query = url.decode().partition("?")
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if bucket != BUCKET:
        return 404, b"application/xml", _error("NoSuchBucket", "The bucket does not exist")
    if not key:
        if "location" in query:
            body = f'<LocationConstraint xmlns="{_XMLNS}">us-east-1</LocationConstraint>'
            return 200, b"application/xml", body.encode()
        if method in (b"GET", b"HEAD"):
            return 200, b"application/xml", _list_page(keys, query)
        return 405, b"application/xml", _error("MethodNotAllowed", "read only")
    index = keys.index(key)
    if index is None:
        return 404, b"application/xml", _error("NoSuchKey", "The key does not exist")
    return 200, b"image/png", tiny_png(index)


def serve_fake(port: int, prefix: str, count: int) -> None:
    """Answer S3 requests on 127.0.0.1:`port` until killed (run in a process of its own):
    ListObjectsV2 (pages of up to 1,000), GetBucketLocation, HEAD and GET of
    `count` tiny PNGs under `prefix`, all generated; keep-alive HTTP/1.1."""
    import httptools
    import uvloop

    keys = _Keys(prefix, count)

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_message_complete(self) -> None:
            method = self.parser.get_method()
            status, kind, body = _answer(keys, method, self.url)
            self.url = b""
            reason = {200: b"OK", 404: b"Not Found"}.get(status, b"Error")
            head = (
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                b'ETag: "0"\r\nLast-Modified: %s\r\nx-amz-request-id: 0\r\n\r\n'
                % (status, reason, kind, len(body), _MODIFIED_HTTP.encode())
            )
            self.transport.write(head if method == b"HEAD" else head + body)
            if not self.parser.should_keep_alive():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Protocol, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(run())


class FakeS3:
    """serve_fake in a child process; `endpoint`, the keys, `stop()`."""

    access_key = FAKE_KEY
    secret_key = FAKE_SECRET

    def __init__(self, prefix: str, count: int, log: Path) -> None:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        out = open(log, "ab")  # noqa: SIM115 - the child's log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from bench.imports import serve_fake; serve_fake({port}, {prefix!r}, {count})",
            ],
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

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def client(bucket: MotoS3 | FakeS3) -> Minio:
    return Minio(
        bucket.endpoint.removeprefix("http://"),
        bucket.access_key,
        bucket.secret_key,
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


async def _obstore(bucket: MotoS3 | FakeS3, prefix: str) -> int:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=bucket.endpoint,
        region="us-east-1",
        access_key_id=bucket.access_key,
        secret_access_key=bucket.secret_key,
        client_options={"allow_http": True},
    )
    keys = [o["path"] async for page in obstore.list(store, prefix, chunk_size=1000) for o in page]
    gate = asyncio.Semaphore(READERS)

    async def get(key: str) -> int:
        async with gate:
            found = await obstore.get_async(store, key)
            return len(await found.bytes_async())

    await asyncio.gather(*(get(k) for k in keys))
    return len(keys)


async def _aiobotocore(bucket: MotoS3 | FakeS3, prefix: str) -> int:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(max_pool_connections=READERS * 2, s3={"addressing_style": "path"})
    async with get_session().create_client(
        "s3",
        endpoint_url=bucket.endpoint,
        region_name="us-east-1",
        aws_access_key_id=bucket.access_key,
        aws_secret_access_key=bucket.secret_key,
        config=config,
    ) as s3:
        keys = []
        async for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix
        ):
            keys += [o["Key"] for o in page.get("Contents", [])]
        gate = asyncio.Semaphore(READERS)

        async def get(key: str) -> int:
            async with gate:
                found = await s3.get_object(Bucket=BUCKET, Key=key)
                async with found["Body"] as body:
                    return len(await body.read())

        await asyncio.gather(*(get(k) for k in keys))
        return len(keys)


async def _adapter(bucket: MotoS3 | FakeS3, prefix: str) -> int:
    """Ingest's reader, as an import uses it: each object also hashed and sniffed."""
    from services.ingest.imports.buckets.port import Bucket, Credentials
    from services.ingest.imports.buckets.s3 import S3Reader
    from services.ingest.imports.domain.endpoints import EndpointRule
    from services.ingest.imports.domain.integrations import parse_endpoint
    from services.ingest.imports.egress import Caps, Egress

    endpoint = parse_endpoint(bucket.endpoint)
    reader = S3Reader(
        Bucket(endpoint, "us-east-1", BUCKET, Credentials(bucket.access_key, bucket.secret_key)),
        Egress(EndpointRule.parse(endpoint.host)),
        Caps(),
    )
    spool = Path("/tmp")
    try:
        keys = [k async for page in reader.pages(prefix) for k in page]
        gate = asyncio.Semaphore(READERS)

        async def get(key: str) -> int:
            async with gate:
                return (await reader.read(key, spool)).size

        await asyncio.gather(*(get(k) for k in keys))
        return len(keys)
    finally:
        await reader.close()


LIBRARIES = {"obstore": _obstore, "aiobotocore": _aiobotocore, "adapter": _adapter}


def library(name: str, bucket: MotoS3 | FakeS3, prefix: str) -> tuple[int, float, float]:
    """List + GET of every object through one library: (objects, seconds, CPU-seconds
    of this process, where the client runs)."""
    cpu, start = time.process_time(), time.perf_counter()
    count = asyncio.run(LIBRARIES[name](bucket, prefix))
    return count, time.perf_counter() - start, time.process_time() - cpu


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


async def import_prefix(
    gateway: str,
    database_url: str,
    bucket: MotoS3 | FakeS3,
    prefix: str,
    count: int,
    group: int | None = None,
) -> dict[str, Any]:
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
                "access_key": bucket.access_key,
                "secret_key": bucket.secret_key,
            },
        )
        registered.raise_for_status()
        made = await api.post("/v1/folders", json={"name": f"bench-{uuid.uuid4().hex[:8]}"})
        made.raise_for_status()
        folder_id = made.json()["id"]

        asked: dict[str, Any] = {"integration_id": registered.json()["id"], "prefix": prefix}
        if group:
            keys = _Keys(prefix, count)
            asked = {
                "integration_id": asked["integration_id"],
                "manifest": {
                    "image_groups": [
                        {
                            "title": f"g{g}",
                            "keys": [keys[i] for i in range(g, min(g + group, count))],
                        }
                        for g in range(0, count, group)
                    ]
                },
            }
        start = time.perf_counter()
        answer = await api.post(f"/v1/folders/{folder_id}/imports", json=asked)
        if answer.status_code != 202:
            raise RuntimeError(f"import answered {answer.status_code}: {answer.text[:300]}")
        job_id = answer.json()["job_id"]
        answered = time.perf_counter()
        # The summary is one query: poll it (bounded), then confirm with the full listing.
        # Meanwhile, when ingest had recorded every object (its job's row, read from the
        # database: GET /v1/jobs/{id} would return 100,000 files) tells where time goes.
        deadline = start + 3600
        files = 0
        recorded: float | None = None
        db = await asyncpg.connect(database_url)
        try:
            while time.perf_counter() < deadline:
                if recorded is None:
                    status = await db.fetchval(
                        "SELECT status FROM ingest.jobs WHERE id = $1", uuid.UUID(job_id)
                    )
                    if status != "running":
                        recorded = time.perf_counter()
                if group:
                    # Every group and its constituent folder listed (a page each poll).
                    if recorded is not None and await list_all(api, folder_id) >= 2 * (
                        -(-count // group)
                    ):
                        break
                    await asyncio.sleep(0.25)  # poll again, within the deadline
                    continue
                summary = await api.get(f"/v1/folders/{folder_id}/summary")
                summary.raise_for_status()
                files = summary.json()["files"]
                if files >= count:
                    break
                await asyncio.sleep(0.25)  # poll again, within the deadline
        finally:
            await db.close()
        counted = time.perf_counter()
        # Groups: the folder lists the groups and their constituent folders.
        listed = await list_all(api, folder_id)
        end = time.perf_counter()
        groups = -(-count // group) if group else 0
        if listed != (2 * groups if group else count):
            raise RuntimeError(f"the folder lists {listed} items for {count} objects")
        found = await api.get(f"/v1/jobs/{job_id}")
        found.raise_for_status()
        status = found.json()
        if group and status["progress"] != {"done": groups, "total": groups}:
            raise RuntimeError(f"the job ended at {status['progress']}: {status['errors'][:3]}")
        return {
            "total_s": counted - start,
            "answer_s": answered - start,
            "recorded_s": (recorded or counted) - start,
            "listing_s": end - counted,
            "job": {k: status[k] for k in ("status", "progress")},
            "errors": len(status["errors"]),
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--objects", type=int, default=None, help="default 100,000 (fake), 10,000 (moto)"
    )
    parser.add_argument(
        "--no-libraries",
        action="store_true",
        help="skip the list + GET through obstore, aiobotocore and ingest's adapter",
    )
    parser.add_argument(
        "--groups",
        type=int,
        default=None,
        metavar="N",
        help="import the objects as image groups of N frames (a manifest), not by prefix",
    )
    parser.add_argument(
        "--store",
        choices=("fake", "moto"),
        default="fake",
        help="the customer's bucket: our fake-size S3 endpoint, or moto's S3 filled first",
    )


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    fake = args.store == "fake"
    count = args.objects or (1_000 if args.quick else 100_000 if fake else 10_000)
    prefix = f"data/{uuid.uuid4().hex[:6]}/"
    where = "a fake-size S3 endpoint of ours" if fake else "moto's S3"
    report.title = (
        f"{count:,} objects of 41 B imported by reference from {where} (by prefix)"
        " until the folder lists them all"
        if not args.groups
        else f"{count:,} objects of 41 B imported by reference from {where} as image groups"
        f" of {args.groups} frames (a manifest) until the job is done"
    )
    fill_s = 0.0
    bucket: MotoS3 | FakeS3
    if fake:
        progress(f"starting the fake S3 endpoint ({count:,} generated objects)")
        bucket = FakeS3(prefix, count, workdir / "fake-s3.log")
    else:
        progress("starting moto's S3 server (the customer's bucket)")
        bucket = start_moto(log=workdir / "moto.log")
    try:
        s3 = client(bucket)
        if not fake:
            progress(f"filling the bucket with {count:,} objects")
            fill_s = fill(s3, prefix, count)

        progress("baseline: raw list + GET of every object")
        with report.contention.measure(), CpuMeter({"s3": bucket.process.pid}) as base_cpu:
            listed, base_s = baseline(s3, prefix)
        assert listed == count, (listed, count)
        base_rate = count / base_s

        measured: dict[str, tuple[float, float]] = {}
        for name in () if args.no_libraries else LIBRARIES:
            progress(f"list + GET of every object through {name}")
            with report.contention.measure():
                found, seconds, cpu_s = library(name, bucket, prefix)
            assert found == count, (name, found, count)
            measured[name] = (seconds, cpu_s)

        progress("starting the stack")
        with stack(workdir) as running:
            progress(f"importing through {running.gateway_url}")
            pids = {c.name: c.proc.pid for c in running.children}
            pids["s3" if fake else "moto"] = bucket.process.pid
            with report.contention.measure(), CpuMeter(pids) as cpu:
                result = asyncio.run(
                    import_prefix(
                        running.gateway_url,
                        running.env["FILES_DATABASE_URL"],
                        bucket,
                        prefix,
                        count,
                        args.groups,
                    )
                )
            running.check_alive()
    finally:
        bucket.stop()

    rate = count / result["total_s"]
    report.figure("objects_per_s", "import by reference until listed", rate, "obj/s", headline=True)
    report.figure("total_s", "request to all listed", result["total_s"], "s")
    report.figure(
        "answer_ms", "the import request answered (202) after", result["answer_s"] * 1e3, "ms"
    )
    report.figure(
        "recorded_s", "ingest had recorded every object (job done) after", result["recorded_s"], "s"
    )
    report.figure("listing_s", "then one full listing of the folder took", result["listing_s"], "s")
    report.baseline(
        "baseline_objects_per_s",
        "raw list + GET, same bucket (minio, 16 threads)",
        base_rate,
        "obj/s",
    )
    report.ratio("ratio", "product / baseline", rate, base_rate)
    for name, (seconds, cpu_s) in measured.items():
        report.figure(
            f"{name}_objects_per_s",
            f"raw list + GET through {name} ({READERS} at a time, one event loop)",
            count / seconds,
            "obj/s",
        )
        report.note(
            f"{name}: {count:,} listed and read in {seconds:.1f} s,"
            f" {cpu_s / count * 1e6:.0f} us of client CPU an object"
        )
    if count >= TARGET_COUNT:
        report.target(
            f"{TARGET_COUNT:,} objects within {TARGET_S:.0f} s",
            result["total_s"] <= TARGET_S,
            f"{count:,} in {result['total_s']:.1f} s",
        )
    else:
        # A small run is mostly start-up: its rate says little about 100,000 objects.
        report.note(
            f"target not judged: {count:,} objects (it is about {TARGET_COUNT:,}); at this"
            f" rate {TARGET_COUNT:,} would take {TARGET_COUNT / rate:.0f} s"
        )
    report.note(f"job at the end: {result['job']}, {result['errors']} errors")
    if not fake:
        report.note(
            f"filling moto with the objects took {fill_s:.1f} s ({count / fill_s:,.0f} PUT/s)"
        )
    report.note(f"CPU-seconds of the baseline: {base_cpu.describe()}")
    report.note(f"CPU-seconds used meanwhile: {cpu.describe()}")


if __name__ == "__main__":
    main(NAME, "import by reference from an S3 bucket", body, add_arguments)
