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
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from minio import Minio

from bench._common import ADMIN_KEY, MB, CpuMeter, MiB, Report, RssSampler, main, progress, stack
from bench.upload_large import Content
from shared.kit import identity
from shared.kit.embedded import Child, start_s3_server
from shared.kit.identity import ServiceKey

NAME = "upload_session"
BUCKET = "bench"
ACCESS_KEY, SECRET_KEY = "bench", "bench-secret"
PART_SIZE = 64 * MiB
PART_SIZE_MIN = 5 * MiB
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
    if answer.status_code not in (201, 202):  # 202: stored, not listed yet
        raise RuntimeError(f"open answered {answer.status_code}: {answer.text[:300]}")
    session = answer.json()
    t1 = time.perf_counter()
    put_parts(parts_http, path, session["parts"], parallel)
    t2 = time.perf_counter()
    answer = api.post(f"/v1/uploads/{session['id']}/complete")
    t3 = time.perf_counter()
    if answer.status_code not in (201, 202):  # 202: stored, not listed yet
        raise RuntimeError(f"complete answered {answer.status_code}: {answer.text[:300]}")
    done = answer.json()
    if "file" not in done:  # read with the answer's token: it waits until listed
        token = {"Files-Consistency": answer.headers.get("files-consistency", "")}
        read = api.get(f"/v1/files/{done['file_id']}", headers=token)
        read.raise_for_status()
        done["file"] = read.json()
    return {
        "total": t3 - t0,
        "open": t1 - t0,
        "parts": t2 - t1,
        "complete": t3 - t2,
        "file": done["file"],
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
    parser.add_argument(
        "--local",
        action="store_true",
        help="blobs on local disk, parts PUT to the gateway: what its opener check costs",
    )
    parser.add_argument("--puts", type=int, default=None, help="--local: 1-byte PUTs (300)")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    if args.local:
        local_body(args, workdir, report)
        return
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


def local_body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    """`--local`: the local store, whose parts are PUT to the gateway, which asks three
    services who the session's opener is now before it forwards each part to ingest
    (services/gateway/compose.py `upload_part`; since 2026-12-06 ingest asks the last
    two itself, services/ingest/sessions/openers.py). Timed, one PUT at a time: a 1-byte
    part (the last of a 5 MiB + 1 B session, sent again and again: a part sent again
    replaces the earlier one) through the gateway; the same PUT straight to ingest with
    the identity the gateway signed before (the gateway's hop skipped, and before
    2026-12-06 the whole check); and each of the check's three calls alone. Then one
    session of `--size-mib` in 64 MiB parts, through the gateway, for MB/s."""
    size = (args.size_mib or (64 if args.quick else 1024)) * MiB
    puts = args.puts or (60 if args.quick else 300)
    report.title = (
        f"local store: what a part PUT to the gateway costs ({puts} of 1 byte, one at a"
        f" time), then one {size / MiB:,.0f} MiB session in 64 MiB parts"
    )
    path = workdir / "content.bin"
    write_content(Content(size), path)
    expected = mark(path, 1)
    with stack(workdir) as running:
        key = ServiceKey(running.service_key)
        url = {n: running.env[f"FILES_{n.upper()}_URL"] for n in ("ingest", "acl", "catalog")}
        everyone = {c.name: c.proc.pid for c in running.children}
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with (
            httpx.Client(base_url=running.gateway_url, headers=headers, timeout=600) as api,
            httpx.Client(timeout=600) as http,
        ):
            answer = api.post("/v1/folders", json={"name": f"session-{uuid.uuid4().hex[:8]}"})
            answer.raise_for_status()
            folder = answer.json()["id"]
            answer = api.post(
                f"/v1/folders/{folder}/uploads",
                json={"name": "probe.png", "size": PART_SIZE_MIN + 1, "part_size": PART_SIZE_MIN},
            )
            answer.raise_for_status()
            session = answer.json()
            last = session["parts"][-1]
            assert last["size"] == 1, last
            target = httpx.URL(last["url"])

            def service(to: str) -> dict[str, str]:
                return {identity.HEADER: key.for_service("gateway", audience=to)}

            def opener_row() -> dict[str, Any]:
                found = http.get(
                    f"{url['ingest']}/internal/uploads/{session['id']}/opener",
                    headers=service("ingest"),
                )
                found.raise_for_status()
                row: dict[str, Any] = found.json()
                return row

            def user(key_id: str) -> dict[str, Any]:
                found = http.post(
                    f"{url['acl']}/internal/authenticate",
                    json={"key_id": key_id},
                    headers=service("acl"),
                )
                found.raise_for_status()
                who: dict[str, Any] = found.json()
                return who

            def signed(
                who: dict[str, Any], to: str, folder_path: str | None = None
            ) -> dict[str, str]:
                token = key.sign(
                    who["id"],
                    who["access"],
                    None,
                    audience=to,
                    folder_path=folder_path,
                    key_id=who["key_id"],
                )
                return {identity.HEADER: token}

            def path_of(who: dict[str, Any], folder_id: str) -> str:
                found = http.get(
                    f"{url['catalog']}/internal/folders/{folder_id}",
                    params={"needed": "editor"},
                    headers=signed(who, "catalog"),
                )
                found.raise_for_status()
                return ",".join(found.json()["path"])

            row = opener_row()
            who = user(row["key_id"])
            folder_path = path_of(who, row["folder_id"])

            def via_gateway() -> None:
                sent = http.put(target, content=b"x")
                if sent.status_code != 200:
                    raise RuntimeError(f"part answered {sent.status_code}: {sent.text[:300]}")

            def straight() -> None:
                sent = http.put(
                    f"{url['ingest']}{target.raw_path.decode()}",
                    content=b"x",
                    headers=signed(who, "ingest", folder_path),
                )
                if sent.status_code != 200:
                    raise RuntimeError(f"part answered {sent.status_code}: {sent.text[:300]}")

            probes: dict[str, Callable[[], Any]] = {
                "gateway": via_gateway,
                "straight": straight,
                "opener": opener_row,
                "authenticate": lambda: user(row["key_id"]),
                "folder": lambda: path_of(who, row["folder_id"]),
            }
            for probe in probes.values():  # warm-up, not timed
                for _ in range(10):
                    probe()
            progress(f"{puts} of each probe, interleaved; then the {size / MiB:,.0f} MiB session")
            took: dict[str, list[float]] = {name: [] for name in probes}
            with report.contention.measure(), CpuMeter(everyone) as cpu:
                for _ in range(puts):
                    for name, probe in probes.items():
                        start = time.perf_counter()
                        probe()
                        took[name].append(time.perf_counter() - start)
                result = product(api, http, folder, path, args.parallel)
            if result["file"]["sha256"] != expected:
                raise RuntimeError("the stored file is not the one sent")
        running.check_alive()

    ms = {name: statistics.median(t) * 1000 for name, t in took.items()}
    check = ms["opener"] + ms["authenticate"] + ms["folder"]
    report.figure(
        "part_put_ms",
        "1-byte part PUT through the gateway, p50",
        ms["gateway"],
        "ms",
        headline=True,
    )
    report.figure("check_ms", "  its check's three calls, each alone, p50s summed", check, "ms")
    for name in ("opener", "authenticate", "folder"):
        report.figure(f"{name}_ms", f"    {name}, p50", ms[name], "ms")
    report.figure("check_share", "  the check's share of the PUT", check / ms["gateway"], "x")
    report.baseline("straight_ms", "the same PUT straight to ingest, p50", ms["straight"], "ms")
    report.ratio("ratio", "through the gateway / straight", ms["gateway"], ms["straight"])
    rate = size / result["total"] / MB
    report.figure("mb_per_s", f"{size / MiB:,.0f} MiB session, open to 201", rate, "MB/s")
    report.figure(
        "part_ms",
        "  per 64 MiB part",
        result["parts"] / result["count"] * 1000 * args.parallel,
        "ms",
    )
    report.note(
        "p95 (ms): "
        + ", ".join(f"{n} {statistics.quantiles(t, n=20)[-1] * 1000:.2f}" for n, t in took.items())
    )
    report.note(f"CPU-seconds used meanwhile: {cpu.describe()}")


if __name__ == "__main__":
    main(NAME, "one large file through an upload session to S3", body, add_arguments)
