"""The trash through a running stack: restore of a deleted folder with its dataset links.

Setup (not timed): `--files` real files (100,000; `--quick` 5,000) of 64 bytes uploaded
through the gateway into a folder below a top folder; dataset 1 is synced with the top
folder, datasets 2 and 3 get every file by `POST /v1/datasets/{id}/files`; the folder is
then deleted (to the trash) and the benchmark waits until the 3 datasets show 0 files.

`POST /v1/trash/restore {folder_ids: [folder]}`: seconds from sending it until
`GET /v1/datasets/{id}` shows `file_count` N for all three (dataset 1 by its sync, 2 and
3 from the links the deletion removed), and until it answered. Baseline: raw asyncpg
`INSERT ... SELECT unnest` of the same 3 x N (dataset_id, file_id) rows into a plain
table in the same PostgreSQL, plus N file rows. Target: under 10 s (issue 17).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench._common import Report, main, progress, stack
from bench.datasets import Api, timed, upload_many, wait_until
from shared.kit import db

NAME = "trash"
TARGET_RESTORE_S = 10.0
DATASETS = 3


async def raw_insert(
    conn: asyncpg.Connection, pairs: list[tuple[uuid.UUID, uuid.UUID]], files: list[uuid.UUID]
) -> float:
    await conn.execute(
        "DROP TABLE IF EXISTS bench_links; DROP TABLE IF EXISTS bench_files;"
        " CREATE TABLE bench_links (dataset_id uuid NOT NULL, file_id uuid NOT NULL);"
        " CREATE TABLE bench_files (id uuid PRIMARY KEY, folder_id uuid NOT NULL)"
    )
    folder = uuid.uuid4()

    async def insert() -> None:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO bench_files SELECT id, $2 FROM unnest($1::uuid[]) AS id", files, folder
            )
            await conn.execute(
                "INSERT INTO bench_links SELECT * FROM unnest($1::uuid[], $2::uuid[])",
                [d for d, _ in pairs],
                [f for _, f in pairs],
            )

    seconds, _ = await timed(insert)
    await conn.execute("DROP TABLE bench_links; DROP TABLE bench_files")
    return seconds


def _stack_cpu_s() -> float:
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


async def settled(limit_s: float = 600.0) -> float:
    """Wait until the stack is idle (under 0.8 CPU-s a second, twice running; an idle
    stack polls its broker at about 0.5 on this machine): the
    delete's 100,000 events still being consumed (thumbnails, ACL, ingest) must not be
    timed as the restore's. Returns how long it took."""
    start = time.perf_counter()
    quiet = 0
    before = _stack_cpu_s()
    while quiet < 2 and time.perf_counter() - start < limit_s:
        await asyncio.sleep(1.0)  # a sampling interval, not a wait for a reaction
        now = _stack_cpu_s()
        quiet = quiet + 1 if now - before < 0.8 else 0
        before = now
    return time.perf_counter() - start


async def consumed(conn: asyncpg.Connection) -> bool:
    """Whether every consumer has applied (or passed) every event of each store it
    reads: the delete's 100,000 events must be behind the ACL, ingest and thumbnails
    consumers too, not only the datasets' (whose counts show first)."""
    schemas = [
        r["schema"]
        for r in await conn.fetch(
            """SELECT table_schema AS schema FROM information_schema.tables
               WHERE table_name = 'watermarks'"""
        )
    ]
    for schema in schemas:
        for row in await conn.fetch(f"SELECT source, position FROM {schema}.watermarks"):
            head = await conn.fetchval(
                f"SELECT coalesce(max(position), 0) FROM {row['source']}.events"
            )
            if row["position"] < head:
                return False
    return True


def _py_spy(out: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy record (raw, folded stacks) of this stack's catalog and datasets processes."""
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for child in psutil.Process().children(recursive=True):
        try:
            line = child.cmdline()
        except psutil.Error:
            continue
        for name in ("catalog", "datasets"):
            if f"services.{name}" in line:
                spies.append(
                    subprocess.Popen(
                        [
                            "uv",
                            "tool",
                            "run",
                            "py-spy",
                            "record",
                            "-p",
                            str(child.pid),
                            "-f",
                            "raw",
                            "-r",
                            "200",
                            "-o",
                            str(out / f"{name}-{child.pid}.txt"),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
    return spies


async def measure(
    gateway: str, dsn: str, report: Report, files: int, spy: Path | None = None
) -> dict[str, Any]:
    api = Api(gateway)
    conn = await db.connect(dsn)
    got: dict[str, Any] = {}
    try:
        tag = uuid.uuid4().hex[:6]
        top = await api.folder(f"trash-{tag}")
        folder_id = await api.folder("restored", top)
        progress(f"uploading {files:,} files of 64 B (100 per request, 4 in flight)")
        up_s, file_ids = await timed(lambda: upload_many(api, folder_id, files, 100, 4))
        got["setup_upload_s"] = up_s
        datasets = [await api.dataset(f"trash-{tag}-synced", top)]
        datasets += [await api.dataset(f"trash-{tag}-{i}") for i in range(1, DATASETS)]
        for dataset_id in datasets[1:]:
            await api.call("POST", f"/v1/datasets/{dataset_id}/files", json={"file_ids": file_ids})

        async def counts_are(n: int) -> bool:
            counts = await asyncio.gather(*(api.file_count(d) for d in datasets))
            return all(c == n for c in counts)

        if not await wait_until(lambda: counts_are(files), 600, 0.1):
            raise RuntimeError("the 3 datasets never held every file")
        progress("deleting the folder (to the trash), waiting for the links to go")
        await api.call("DELETE", f"/v1/folders/{folder_id}", 204)
        if not await wait_until(lambda: counts_are(0), 900, 0.1):
            raise RuntimeError("links still there 900 s after the folder delete")

        progress("waiting for the stack to finish with the delete (consumed, then idle)")
        started = time.perf_counter()
        if not await wait_until(lambda: consumed(conn), 900, 0.5):
            raise RuntimeError("the delete's events not consumed 900 s after it")
        await settled()
        got["settle_s"] = time.perf_counter() - started
        spies = _py_spy(spy) if spy else []
        if spy:
            # PostgreSQL's share: its slow statements in postgres.log (with --keep).
            await conn.execute("ALTER SYSTEM SET log_min_duration_statement = 100")
            await conn.execute("SELECT pg_reload_conf()")
        if spies:
            await asyncio.sleep(3.0)  # py-spy attaches (uv starts it first)
        progress(f"restoring the folder; waiting for {DATASETS * files:,} links to come back")
        with report.contention.measure():
            start = time.perf_counter()
            answer = await api.call("POST", "/v1/trash/restore", json={"folder_ids": [folder_id]})
            got["restore_answer_s"] = time.perf_counter() - start
            done = await wait_until(lambda: counts_are(files), 900, 0.02)
            got["restore_s"] = time.perf_counter() - start
        for one in spies:
            one.send_signal(signal.SIGINT)
        for one in spies:
            one.wait(30)
        if not done or answer["restored_files"] != files:
            raise RuntimeError(f"restore: {answer}, links back: {done}")
        pairs = [(uuid.UUID(d), uuid.UUID(f)) for d in datasets for f in file_ids]
        with report.contention.measure():
            got["restore_base_s"] = await raw_insert(conn, pairs, [uuid.UUID(f) for f in file_ids])
    finally:
        await conn.close()
        await api.http.aclose()
    return got


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="default 100,000 (5,000 quick)")
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="record catalog and datasets into this dir"
    )


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    files = args.files or (5_000 if args.quick else 100_000)
    report.title = (
        f"trash: restore a deleted folder of {files:,} files linked into {DATASETS} datasets"
        " (one by its sync)"
    )
    progress("starting the stack")
    with stack(workdir) as running:
        dsn = running.env["FILES_DATABASE_URL"]
        got = asyncio.run(measure(running.gateway_url, dsn, report, files, args.py_spy))
        running.check_alive()

    restore_s, base = got["restore_s"], got["restore_base_s"]
    report.figure(
        "restore_s",
        f"restore until {DATASETS} datasets show {files:,} files again",
        restore_s,
        "s",
        headline=True,
    )
    report.figure(
        "restore_answer_s",
        "   of which POST /v1/trash/restore answered after",
        got["restore_answer_s"],
        "s",
        role="detail",
    )
    report.baseline(
        "restore_base_s",
        f"   raw INSERT unnest of {files:,} file rows and {DATASETS * files:,} link rows",
        base,
        "s",
    )
    report.ratio("restore_ratio", "   restore: product s / baseline s", restore_s, base)
    report.target(
        f"restore of {files:,} files with their links under {TARGET_RESTORE_S:.0f} s",
        restore_s < TARGET_RESTORE_S,
        f"{restore_s:.2f} s",
    )
    report.note(
        f"setup: {files:,} files uploaded through the gateway in {got['setup_upload_s']:.0f} s"
        f" (not timed); the stack went idle {got['settle_s']:.0f} s after the delete; ratios"
        " of seconds: above 1 is slower than raw"
    )


if __name__ == "__main__":
    main(NAME, "the trash through the stack", body, add_arguments)
