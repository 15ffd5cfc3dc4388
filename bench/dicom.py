"""DICOM header parse and series assembly: instances/s, against a plain pydicom loop.

2,000 CT instances (`--quick`: 200) are written into the temp dir first, not timed: 10
series (`--series`) of 200 slices (`--slices`), 64x64 pixels of 16 bits (8 KiB of pixel data,
about 9 KiB a file), built with pydicom by `tests.dicom_fixtures.ct_series` in the DICOM
File Format (explicit VR little endian), every series with all the 3D tags; half of them
axial, half oblique (30° about x, 20° about z); two patients, five studies. The file list is
shuffled (seeded), so that series assembly has slices to order.

Product: `services.dicom.reader.read_instance(path)` for every file (headers only, every
kept tag checked), then `admit` and `assemble` over the instances; the result is checked
(every series whole, renderable, its slices in order along the normal). Instances/s over
the whole pass. Baseline: a plain `pydicom.dcmread(path, stop_before_pixels=True)` loop
over the same files, nothing else. One untimed pass of each warms the page cache; then
`--rounds` rounds (default 5), each timing the baseline then the product, and the best
round of each counts (the machine is shared; the best is the least disturbed).
Target: baseline time / product time at least 0.5 (the product at most twice as slow).

End to end (`--no-stack` skips it): the same files uploaded through the gateway's
`POST /v1/folders/{id}/dicom` into one folder of a running platform (its own PostgreSQL
and broker), 200 files a request, from 4 clients side by side as Orthanc's (`--clients`;
1 was the figure before 2026-12-04 19:00), then `GET /v1/jobs/{id}` polled every 50 ms,
one job at a time (every job each time before 2026-12-04 23:20; once one is done, the
others side by side since 2026-12-06, all at once, a connection each, since 2026-12-07
evening: 4 at a time before), until every job is done:
instances/s from the first request to the last job done (stored by ingest, read and
assembled by the dicom service, registered as series files by the catalog). Its ratio to the plain
dcmread loop is shown; no target.

Orthanc (`--no-orthanc` skips it) stores the same files by `POST /instances` from 4
clients, done when the last answers. Its storage area is on the volume Files' blobs had
(`--blob-dir`; in the work directory before 2026-12-07), with its own default
`SyncStorageArea` true (an fsync a stored file; its SQLite index in WAL mode,
`synchronous=NORMAL`, not flushed at each store); `--no-sync` runs both sides without
what can be turned off: Orthanc's fsyncs, and Files' PostgreSQL fsync (the blob store's
syncfs of each request's blobs stays: it is what makes an answered upload stored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pydicom
from files_client._drivers import _Coalesced

from bench._common import ADMIN_KEY, CpuMeter, PgStats, Report, main, progress, stack
from services.dicom import domain, tags
from services.dicom.domain import Instance, admit, assemble
from services.dicom.reader import read_instance
from shared.kit.embedded import free_port
from tests.dicom_fixtures import AXIAL, OBLIQUE, ct_series, uid

NAME = "dicom"
TARGET_RATIO = 0.5
ORTHANC_TARGET = 2.0
ORTHANC_CLIENTS = 4
SEED = 20261125


def write_files(workdir: Path, series: int, slices: int, pixels: int) -> list[Path]:
    paths = []
    folder = workdir / "instances"
    folder.mkdir()
    for s in range(series):
        data = ct_series(
            slices,
            series=s + 1,
            study=s // 2 + 1,
            patient_id=f"PAT-{s % 2:04d}",
            orientation=AXIAL if s % 2 == 0 else OBLIQUE,
            rows=pixels,
            columns=pixels,
        )
        for k, content in enumerate(data):
            path = folder / f"s{s:02d}_{k:04d}.dcm"
            path.write_bytes(content)
            paths.append(path)
    random.Random(SEED).shuffle(paths)
    return paths


def baseline_pass(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        pydicom.dcmread(path, stop_before_pixels=True)
    return time.perf_counter() - start


def product_pass(paths: list[Path]) -> tuple[float, float, list[Instance], int]:
    """(total seconds, of which admit + assemble, instances, series). Each pass starts with
    the reader's caches of decoded values and UID keys empty, as for a new upload."""
    tags.forget()
    domain._uid_bytes.cache_clear()
    start = time.perf_counter()
    instances = []
    for path in paths:
        found = read_instance(path)
        if not isinstance(found, Instance):
            raise AssertionError(f"{path.name}: {found}")
        instances.append(found)
    parsed = time.perf_counter()
    admission = admit(instances)
    series = assemble(admission.accepted)
    end = time.perf_counter()
    if admission.refused:
        raise AssertionError(f"refused: {admission.refused[:3]}")
    return end - start, end - parsed, instances, len(series)


def check(paths: list[Path], series_count: int, slices: int) -> None:
    """The assembled series are whole, renderable and in slice order."""
    instances = [read_instance(path) for path in paths]
    found = assemble(i for i in instances if isinstance(i, Instance))
    if len(found) != series_count:
        raise AssertionError(f"{len(found)} series, expected {series_count}")
    for series in found:
        study = int(series.study_uid.rsplit(".", 1)[1])
        number = int(series.series_uid.rsplit(".", 1)[1])
        expected = tuple(uid(study, number, k + 1) for k in range(slices))
        if series.sop_uids != expected or not series.renderable_3d:
            raise AssertionError(f"series {series.series_uid} is not whole or not in order")


SPIED = ("dicom", "ingest", "gateway")


def _py_spy(name: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy record (raw, folded stacks) of one process of the stack, at 200 Hz; only the
    thread holding the GIL is sampled (`--gil`), so that threads blocked in a read or
    waiting for the GIL do not pass for CPU."""
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            *("uv", "tool", "run", "py-spy", "record", "--gil", "-f", "raw", "-r", "200"),
            *("-p", str(pid), "-o", str(out / f"{name}-{pid}.txt")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def end_to_end(
    workdir: Path,
    paths: list[Path],
    per_request: int,
    clients: int,
    spy: Path | None = None,
    blob_dir: Path | None = None,
    pg_stats: bool = False,
    durable: bool = True,
) -> tuple[float, int, str, dict[str, float], str | None]:
    """Seconds from the first upload to every job done, the series files made, the
    CPU-seconds each process used meanwhile, and DICOMweb's figures on the result.
    With `spy`, the dicom and ingest services and the gateway are recorded by py-spy
    meanwhile (into it). With `blob_dir`, the blobs are kept under it (a volume of
    their own, as production has). With `pg_stats`, PostgreSQL's statements meanwhile
    (pg_stat_statements), described. Not `durable`: PostgreSQL without fsync (the blob
    store's syncfs of each request's blobs cannot be turned off: it is how an answered
    upload stays stored)."""
    blobs = {}
    if blob_dir is not None:
        blobs["blob_url"] = tempfile.mkdtemp(prefix="blobs-", dir=blob_dir)
    with (
        contextlib.ExitStack() as cleanup,
        stack(
            workdir,
            durable=durable,
            pg_options=PgStats.OPTIONS if pg_stats else (),
            **blobs,
        ) as running,
        httpx.Client(
            base_url=running.gateway_url,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120,
        ) as api,
    ):
        if blobs:
            cleanup.callback(shutil.rmtree, blobs["blob_url"], ignore_errors=True)
        made = api.post("/v1/folders", json={"name": f"dicom-bench-{SEED}"})
        made.raise_for_status()
        folder_id = made.json()["id"]
        requests = [paths[i : i + per_request] for i in range(0, len(paths), per_request)]
        lanes = [
            httpx.Client(base_url=running.gateway_url, headers=api.headers, timeout=120)
            for _ in range(clients)
        ]
        # A connection a job for its reads once the first is done: they are asked all
        # at once, not `clients` at a time (see below).
        readers = [
            httpx.Client(base_url=running.gateway_url, headers=api.headers, timeout=120)
            for _ in requests
        ]

        def upload(n: int) -> str:
            parts = [("file", (p.name, p.read_bytes(), "application/dicom")) for p in requests[n]]
            # Written in pieces of 256 KiB, as the Python client writes a batch: with
            # `files=` alone httpx writes each part's header, bytes and CRLF apart; as
            # one buffer, a request of 200 slices of 512x512 (100 MB) cost the client
            # 7 CPU-s of page faults a run.
            lane = lanes[n % clients]
            request = lane.build_request("POST", f"/v1/folders/{folder_id}/dicom", files=parts)
            request.stream = _Coalesced(request.stream)
            answer = lane.send(request)
            if answer.status_code != 202:
                raise RuntimeError(f"upload answered {answer.status_code}: {answer.text}")
            return str(answer.json()["job_id"])

        spies = [
            _py_spy(c.name, c.proc.pid, spy) for c in running.children if spy and c.name in SPIED
        ]
        if spies:
            time.sleep(3.0)  # py-spy attaches (uv starts it first)
        statements: PgStats | None = None
        if pg_stats:
            pg = running.child("postgres")
            statements = PgStats(
                pg.url, pg.proc.pid, {c.name: c.proc.pid for c in running.children if c is not pg}
            )
            statements.reset()
        cpu = CpuMeter({c.name: c.proc.pid for c in running.children})
        cpu.__enter__()
        start = time.perf_counter()
        # Each client sends its requests one after the other, as Orthanc's clients do.
        with ThreadPoolExecutor(clients) as pool:
            jobs = list(pool.map(upload, range(len(requests))))
        answered = time.perf_counter() - start
        deadline = time.perf_counter() + 600
        # One job polled at a time, in order: polling every pending job every 50 ms was
        # about 8% of the dicom service's samples (py-spy, 2026-12-04), work that Orthanc's
        # pass does not have. Once one is done, the others are asked once side by side
        # (the DICOM context settles batches in order, so most are done by then): asked
        # one after the other, ten done jobs took 0.2-0.5 s of the measure (2026-12-06).
        # All of them at once, each on a connection of its own, since 2026-12-07: asked
        # `clients` at a time, a loaded machine (load 30-50) answered each read of a done
        # job in 1.0-1.5 s, and the three rounds for ten jobs were 3-4 s of the tail:
        # the bench's own reads, which a client waiting for ten jobs asks together.
        pending = list(jobs)
        reader_of = dict(zip(jobs, readers, strict=True))
        with ThreadPoolExecutor(len(jobs)) as pool:
            while pending:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"jobs {pending[:3]} not done after 600 s")
                if not _done(api, pending[0]):
                    time.sleep(0.05)
                    continue
                rest = pending[1:]
                asked = pool.map(_done, [reader_of[j] for j in rest], rest)
                pending = [j for j, done in zip(rest, asked, strict=True) if not done]
        seconds = time.perf_counter() - start
        for lane in (*lanes, *readers):
            lane.close()
        cpu.__exit__()
        if statements is not None:
            statements.read()
        for one in spies:
            one.send_signal(signal.SIGINT)
        for one in spies:
            one.wait(30)
        items = api.get(f"/v1/folders/{folder_id}/items", params={"limit": 1000}).json()["items"]
        made = sum(1 for i in items if i.get("kind") == "dicom_series")
        described = statements.describe(per=len(paths)) if statements is not None else None
        # To the hundredth too: a cut of tens of ms in one service hides in describe()'s 0.1.
        fine = ", ".join(
            f"{name} {cpu.used[name]:.2f}" for name in ("dicom", "postgres", "catalog", "ingest")
        )
        # Against what the cores give in the time: near 100%, the CPU bounds the run.
        every = sum(cpu.used.values())
        share = every / ((os.cpu_count() or 1) * seconds)
        used = f"{cpu.describe()}; {fine}, all {every:.2f} ({share:.0%} of the cores' time)"
        # What Orthanc's figure is (its stores answered are its work done) against the
        # tail after them: Files' consumers reading, assembling and settling what was stored.
        tail = seconds - answered
        used += f"; uploads answered at {answered:.2f} s, jobs done {tail:.2f} s after"
        return seconds, made, used, dicomweb(api, folder_id), described


def _done(api: httpx.Client, job_id: str) -> bool:
    job = api.get(f"/v1/jobs/{job_id}").json()
    if job["errors"]:
        raise RuntimeError(f"job {job_id} has errors: {job['errors'][:3]}")
    return bool(job["status"] == "done")


def dicomweb(api: httpx.Client, folder_id: str) -> dict[str, float]:
    """WADO-RS: every series retrieved whole (multipart/related, streamed), in seconds
    and bytes; QIDO-RS: a series' instances searched 50 times, the median in ms."""
    root = f"/v1/folders/{folder_id}/dicomweb"
    series = [
        (s["0020000D"]["Value"][0], s["0020000E"]["Value"][0])
        for s in api.get(f"{root}/series").json()
    ]
    received = 0
    # One untimed retrieval first: the first of a connection pays its setup.
    api.get(f"{root}/studies/{series[0][0]}/series/{series[0][1]}").raise_for_status()
    start = time.perf_counter()
    for study, one in series:
        with api.stream("GET", f"{root}/studies/{study}/series/{one}") as answer:
            answer.raise_for_status()
            for chunk in answer.iter_raw():
                received += len(chunk)
    wado_s = time.perf_counter() - start
    study, one = series[0]
    searches = []
    for _ in range(50):
        start = time.perf_counter()
        api.get(f"{root}/studies/{study}/series/{one}/instances").raise_for_status()
        searches.append(time.perf_counter() - start)
    return {"wado_s": wado_s, "wado_bytes": received, "qido_ms": statistics.median(searches) * 1e3}


def raw_read(paths: list[Path]) -> float:
    """The same files read from disk (the page cache): the baseline for WADO-RS."""
    start = time.perf_counter()
    for path in paths:
        path.read_bytes()
    return time.perf_counter() - start


def orthanc(
    workdir: Path,
    paths: list[Path],
    series: int,
    storage_dir: Path | None = None,
    sync: bool = True,
) -> tuple[float, str] | None:
    """Seconds to store every file in a fresh Orthanc, 4 clients, and the CPU-seconds
    it and the clients used; None without Orthanc. Its storage area goes under
    `storage_dir` when given (the volume Files' blobs had: `--blob-dir`), its SQLite
    index stays in the work directory, as Files' PostgreSQL does. `sync`: Orthanc's
    `SyncStorageArea` (its default since 1.7.4: one fsync a stored file; its index is
    SQLite in WAL mode with `synchronous=NORMAL`, so an instance's index row is not
    flushed at each store, only at its checkpoints)."""
    binary = shutil.which("Orthanc")
    if binary is None:
        return None
    home = workdir / "orthanc"
    home.mkdir()
    storage = home / "storage"
    if storage_dir is not None:
        storage = Path(tempfile.mkdtemp(prefix="orthanc-", dir=storage_dir))
    port = free_port()
    config = {
        "Name": "files-bench",
        "StorageDirectory": str(storage),
        "SyncStorageArea": sync,
        "IndexDirectory": str(home / "index"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "StorageCompression": False,
        "Plugins": [],
    }
    (home / "orthanc.json").write_text(json.dumps(config))
    log = open(home / "orthanc.log", "wb")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([binary, str(home / "orthanc.json")], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/system").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start: see {home / 'orthanc.log'}")
                time.sleep(0.1)

            def store(chunk: list[Path]) -> None:
                with httpx.Client(base_url=url, timeout=120) as client:
                    for path in chunk:
                        answer = client.post(
                            "/instances",
                            content=path.read_bytes(),
                            headers={"Content-Type": "application/dicom"},
                        )
                        if answer.status_code != 200:
                            raise RuntimeError(f"Orthanc answered {answer.status_code}")

            chunks = [paths[i::ORTHANC_CLIENTS] for i in range(ORTHANC_CLIENTS)]
            start = time.perf_counter()
            with (
                CpuMeter({"orthanc": proc.pid}) as cpu,
                ThreadPoolExecutor(ORTHANC_CLIENTS) as pool,
            ):
                list(pool.map(store, chunks))
            seconds = time.perf_counter() - start
            counted = http.get("/statistics").json()
            if (counted["CountInstances"], counted["CountSeries"]) != (len(paths), series):
                raise RuntimeError(f"Orthanc counts {counted}")
            return seconds, cpu.describe()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if storage_dir is not None:
            shutil.rmtree(storage, ignore_errors=True)


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    series = args.series
    slices = args.slices or (20 if args.quick else 200)
    rounds = args.rounds or (2 if args.quick else 5)
    count = series * slices
    pixels = args.pixels
    report.title = (
        f"read_instance + admit + assemble over {count:,} CT instances of {pixels}x{pixels}"
        " (baseline: pydicom.dcmread(stop_before_pixels=True) loop)"
    )
    progress(f"writing {count:,} instances ({series} series of {slices})")
    start = time.perf_counter()
    paths = write_files(workdir, series, slices, pixels)
    written = time.perf_counter() - start
    size = sum(path.stat().st_size for path in paths)
    check(paths, series, slices)
    progress("warm-up: one untimed pass of each")
    baseline_pass(paths)
    product_pass(paths)

    base_times, product_times, assembly_times = [], [], []
    for r in range(rounds):
        progress(f"round {r + 1} of {rounds}")
        with report.contention.measure():
            base_times.append(baseline_pass(paths))
            total, assembly, _, _ = product_pass(paths)
        product_times.append(total)
        assembly_times.append(assembly)

    product_s, base_s = min(product_times), min(base_times)
    report.figure(
        "instances_per_s",
        f"read_instance + admit + assemble: {count:,} instances",
        count / product_s,
        "instances/s",
        headline=True,
    )
    report.figure("per_instance_us", "  per instance (best round)", product_s / count * 1e6, "µs")
    report.figure(
        "assembly_ms",
        f"  of which admit + assemble ({series} series)",
        min(assembly_times) * 1e3,
        "ms",
        role="detail",
    )
    report.baseline(
        "dcmread_per_s",
        f"pydicom.dcmread(path, stop_before_pixels=True): {count:,} files",
        count / base_s,
        "instances/s",
    )
    ratio = report.ratio("ratio", "baseline time / product time", base_s, product_s)
    report.target(
        f"baseline time / product time at least {TARGET_RATIO}",
        ratio >= TARGET_RATIO,
        f"{ratio:.2f}",
    )
    if not args.no_stack:
        progress(f"end to end: uploading {count:,} instances, {args.clients} clients")
        with report.contention.measure():
            e2e_s, series_files, e2e_cpu, web, statements = end_to_end(
                workdir,
                paths,
                200,
                args.clients,
                args.py_spy,
                args.blob_dir,
                args.pg_stats,
                durable=not args.no_sync,
            )
        if series_files != series:
            raise RuntimeError(f"{series_files} series files, expected {series}")
        report.figure(
            "e2e_per_s",
            f"end to end: {count:,} instances uploaded ({args.clients} clients) until jobs done",
            count / e2e_s,
            "instances/s",
        )
        report.ratio("e2e_ratio", "end to end: baseline time / end-to-end time", base_s, e2e_s)
        report.note(f"end to end, CPU-seconds: {e2e_cpu}")
        if statements is not None:
            print(statements, flush=True)
        mib = web["wado_bytes"] / 2**20
        report.figure(
            "wado_mib_per_s",
            f"DICOMweb WADO-RS: {series} series retrieved whole ({mib:.1f} MiB)",
            mib / web["wado_s"],
            "MiB/s",
        )
        read_s = raw_read(paths)
        report.baseline(
            "disk_mib_per_s",
            f"the same {count:,} files read from disk",
            size / 2**20 / read_s,
            "MiB/s",
        )
        report.ratio("wado_ratio", "disk read time / WADO-RS time", read_s, web["wado_s"])
        report.figure(
            "qido_ms", "DICOMweb QIDO-RS: a series' instances, median", web["qido_ms"], "ms"
        )
        if not args.no_orthanc:
            progress(f"Orthanc: storing the same {count:,} instances, {ORTHANC_CLIENTS} clients")
            with report.contention.measure():
                stored = orthanc(workdir, paths, series, args.blob_dir, sync=not args.no_sync)
            if stored is None:
                report.note("Orthanc: not measured (no `Orthanc` on PATH: apt-get install orthanc)")
            else:
                orthanc_s, orthanc_cpu = stored
                where = "on --blob-dir's volume" if args.blob_dir else "in the work directory"
                report.note(
                    f"Orthanc, CPU-seconds: {orthanc_cpu}; its storage {where},"
                    f" SyncStorageArea {'false' if args.no_sync else 'true'}"
                )
                report.baseline(
                    "orthanc_per_s",
                    f"Orthanc: {count:,} instances by POST /instances, {ORTHANC_CLIENTS} clients",
                    count / orthanc_s,
                    "instances/s",
                )
                versus = report.ratio(
                    "orthanc_ratio", "end to end: Orthanc time / Files time", orthanc_s, e2e_s
                )
                report.target(
                    f"end to end at least {ORTHANC_TARGET:g}x Orthanc ({pixels}x{pixels})",
                    versus >= ORTHANC_TARGET,
                    f"{versus:.2f}x",
                )
    report.note(
        f"{count:,} files, {size / count / 1024:.1f} KiB each on average, written in"
        f" {written:.1f} s (not timed); {rounds} rounds, the best of each counts:"
        f" product {', '.join(f'{t:.3f}' for t in product_times)} s;"
        f" baseline {', '.join(f'{t:.3f}' for t in base_times)} s;"
        f" pydicom {pydicom.__version__}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--series", type=int, default=10, help="default 10")
    parser.add_argument("--slices", type=int, default=None, help="per series: 200 (20 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (2 quick)")
    parser.add_argument("--no-stack", action="store_true", help="skip the end-to-end pass")
    parser.add_argument("--pixels", type=int, default=64, help="rows and columns: 64 or 512")
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        help="record dicom, ingest and the gateway end to end, into DIR",
    )
    parser.add_argument("--no-orthanc", action="store_true", help="skip Orthanc's pass")
    parser.add_argument(
        "--blob-dir",
        type=Path,
        default=None,
        help="keep the blobs under this directory end to end: a volume of their own, as"
        " production has (a blob commit's syncfs then flushes blobs only)",
    )
    parser.add_argument(
        "--no-sync",
        action="store_true",
        help="without durability where each side lets it go: Files' PostgreSQL without"
        " fsync (its blob store's syncfs stays), Orthanc with SyncStorageArea false",
    )
    parser.add_argument(
        "--pg-stats",
        action="store_true",
        help="PostgreSQL with pg_stat_statements; print its top statements end to end",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=ORTHANC_CLIENTS,
        help=f"uploads sent side by side end to end (default {ORTHANC_CLIENTS}, as Orthanc's)",
    )


if __name__ == "__main__":
    main(NAME, "DICOM header parse and series assembly", body, add_arguments)
