"""Datasets through a running stack: bulk add, cascade on folder delete, sync, rebuild.

Setup (not timed): `--files` real files (100,000; `--quick` 5,000) of 64 bytes of text,
uploaded through the gateway into one folder, 100 per request, 4 requests in flight.

1. `POST /v1/datasets/{id}/files` with every file id in one call: seconds until it
   answers (then `file_count` is checked). Two more datasets get the same files (timed,
   as details). Baseline: raw asyncpg `INSERT ... SELECT unnest` of the same (dataset_id,
   file_id) rows into a plain table in the same PostgreSQL. Target: under 5 s.
2. `DELETE /v1/folders/{id}` of that folder, its files linked into the 3 datasets:
   seconds from sending the DELETE until `GET /v1/datasets/{id}` shows `file_count` 0 for
   all three. Baseline: raw asyncpg DELETE of the same 3 x N link rows from a plain table.
   Target: under 10 s.
3. Sync latency: `--uploads` (1,000; `--quick` 100) uploads of one small file, one at a
   time, into a folder a dataset is synced with; from the upload's 201 until
   `GET /v1/files/{id}/datasets` lists the dataset (polled every 2 ms). p50/p99.
   Baseline: as many aiokafka produce -> consume round trips on the same broker.
   Target: p99 under 1 s.
4. `shared.kit.projections.rebuild(pool, EventStore("datasets"), membership)` over the
   store that 1 to 3 built: events/s and link ids/s. Baseline: raw asyncpg COPY
   (`copy_records_to_table`) of the same (dataset_id, file_id) rows (every id of every
   FilesLinked event) into a plain table.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench._common import ADMIN_KEY, CpuMeter, Report, main, percentile, progress, stack
from services.datasets.projections import membership
from shared.kit import bus, db
from shared.kit.eventstore import EventStore
from shared.kit.inbox import FETCH_MAX_WAIT_MS
from shared.kit.projections import rebuild

NAME = "datasets"
TARGET_ADD_S = 5.0
TARGET_DELETE_S = 10.0
TARGET_SYNC_P99_S = 1.0
DATASETS = 3
T = TypeVar("T")


def text_file(index: int) -> bytes:
    return f"bench file {index:08d} ".ljust(63, "x").encode() + b"\n"  # 64 bytes of text


async def timed(make: Callable[[], Awaitable[T]]) -> tuple[float, T]:
    start = time.perf_counter()
    result = await make()
    return time.perf_counter() - start, result


class Api:
    def __init__(self, gateway: str, concurrency: int = 4) -> None:
        limits = httpx.Limits(
            max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4
        )
        self.http = httpx.AsyncClient(
            base_url=gateway,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=300,
            limits=limits,
        )

    async def call(self, method: str, url: str, expect: int = 200, **kwargs: Any) -> Any:
        answer = await self.http.request(method, url, **kwargs)
        if answer.status_code != expect:
            raise RuntimeError(f"{method} {url} answered {answer.status_code}: {answer.text[:300]}")
        return answer.json() if answer.content else None

    async def folder(self, name: str, parent_id: str | None = None) -> str:
        body = {"name": name, **({"parent_id": parent_id} if parent_id else {})}
        return str((await self.call("POST", "/v1/folders", 201, json=body))["id"])

    async def dataset(self, name: str, synced_folder_id: str | None = None) -> str:
        body = {
            "name": name,
            **({"synced_folder_id": synced_folder_id} if synced_folder_id else {}),
        }
        return str((await self.call("POST", "/v1/datasets", 201, json=body))["id"])

    async def upload(self, folder_id: str, files: list[tuple[str, bytes]]) -> list[str]:
        parts = [("file", (n, c, "text/plain")) for n, c in files]
        answer = await self.call("POST", f"/v1/folders/{folder_id}/files", 201, files=parts)
        ids = [str(f["id"]) for f in answer["files"]]
        if len(ids) != len(files):
            raise RuntimeError(f"upload stored {len(ids)} of {len(files)} files")
        return ids

    async def file_count(self, dataset_id: str) -> int:
        return int((await self.call("GET", f"/v1/datasets/{dataset_id}"))["file_count"])


async def upload_many(api: Api, folder_id: str, count: int, batch: int, inflight: int) -> list[str]:
    starts = list(range(0, count, batch))
    ids: dict[int, list[str]] = {}

    async def worker() -> None:
        while starts:
            first = starts.pop(0)
            files = [
                (f"f_{i:07d}.txt", text_file(i)) for i in range(first, min(first + batch, count))
            ]
            ids[first] = await api.upload(folder_id, files)

    await asyncio.gather(*(worker() for _ in range(inflight)))
    return [i for first in sorted(ids) for i in ids[first]]


# -- baselines in the same PostgreSQL --------------------------------------------------


async def raw_insert(conn: asyncpg.Connection, pairs: list[tuple[uuid.UUID, uuid.UUID]]) -> float:
    await conn.execute(
        "DROP TABLE IF EXISTS bench_links;"
        " CREATE TABLE bench_links (dataset_id uuid NOT NULL, file_id uuid NOT NULL)"
    )
    seconds, _ = await timed(
        lambda: conn.execute(
            "INSERT INTO bench_links SELECT * FROM unnest($1::uuid[], $2::uuid[])",
            [d for d, _ in pairs],
            [f for _, f in pairs],
        )
    )
    return seconds


async def raw_delete(conn: asyncpg.Connection, pairs: list[tuple[uuid.UUID, uuid.UUID]]) -> float:
    await conn.execute(
        "DROP TABLE IF EXISTS bench_links;"
        " CREATE TABLE bench_links (dataset_id uuid NOT NULL, file_id uuid NOT NULL)"
    )
    await conn.copy_records_to_table("bench_links", records=pairs)
    await conn.execute("VACUUM ANALYZE bench_links")
    seconds, status = await timed(
        lambda: conn.execute(
            """DELETE FROM bench_links l USING unnest($1::uuid[], $2::uuid[]) AS x(d, f)
               WHERE l.dataset_id = x.d AND l.file_id = x.f""",
            [d for d, _ in pairs],
            [f for _, f in pairs],
        )
    )
    if status != f"DELETE {len(pairs)}":
        raise RuntimeError(f"baseline delete: {status}")
    return seconds


async def raw_copy(conn: asyncpg.Connection, pairs: list[tuple[uuid.UUID, uuid.UUID]]) -> float:
    await conn.execute(
        "DROP TABLE IF EXISTS bench_links;"
        " CREATE TABLE bench_links (dataset_id uuid NOT NULL, file_id uuid NOT NULL)"
    )
    seconds, _ = await timed(lambda: conn.copy_records_to_table("bench_links", records=pairs))
    await conn.execute("DROP TABLE bench_links")
    return seconds


async def kafka_round_trips(bootstrap: str, count: int) -> list[float]:
    topic = f"bench.roundtrip.{uuid.uuid4().hex[:6]}"
    await bus.ensure_topics(bootstrap, 1, (topic,))
    producer = bus.producer(bootstrap, idempotence=False)
    # As the services' inbox consumes.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
    )
    await producer.start()
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        latencies = []
        for i in range(count + 10):  # the first 10 warm up, not counted
            value = f"round trip {i}".encode()
            start = time.perf_counter()
            await producer.send_and_wait(topic, value, key=b"k")
            while True:
                got = await asyncio.wait_for(consumer.getone(), 10)
                if got.value == value:
                    break
            if i >= 10:
                latencies.append(time.perf_counter() - start)
        return latencies
    finally:
        await consumer.stop()
        await producer.stop()


# -- the measurements ------------------------------------------------------------------


async def mirrored(conn: asyncpg.Connection, files: int) -> bool:
    """Whether the datasets' mirror of the catalog holds (at least) this many files."""
    return bool(await conn.fetchval("SELECT count(*) >= $1 FROM datasets.files", files))


async def wait_until(check: Callable[[], Awaitable[bool]], deadline_s: float, every: float) -> bool:
    deadline = time.perf_counter() + deadline_s
    while time.perf_counter() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return False


async def measure(
    gateway: str,
    dsn: str,
    bootstrap: str,
    report: Report,
    files: int,
    uploads: int,
    datasets_pid: int,
) -> dict[str, Any]:
    api = Api(gateway)
    # The datasets service's own CPU while files arrive (its consumer's reaction to each
    # upload page: the catalog's mirror, the synced datasets' links), by /proc.
    service = {"datasets": datasets_pid}
    conn = await db.connect(dsn)
    got: dict[str, Any] = {}
    try:
        tag = uuid.uuid4().hex[:6]
        folder_id = await api.folder(f"bulk-{tag}")
        progress(f"uploading {files:,} files of 64 B (100 per request, 4 in flight)")
        with CpuMeter(service) as cpu:
            up_s, file_ids = await timed(lambda: upload_many(api, folder_id, files, 100, 4))
            # Until the datasets mirror has them all (adding them needs it): its share.
            if not await wait_until(lambda: mirrored(conn, files), 300, 0.05):
                # Else 300 s of idle CPU would be printed as the mirror's cost.
                raise RuntimeError("the datasets mirror never held the setup's files")
        got["setup_upload_s"] = up_s
        got["setup_datasets_cpu_s"] = cpu.used["datasets"]
        progress(f"uploaded in {up_s:.1f} s ({files / up_s:,.0f} files/s)")
        datasets = [await api.dataset(f"bulk-{tag}-{i}") for i in range(DATASETS)]

        # 1. one call adding every file
        adds = []
        for i, dataset_id in enumerate(datasets):
            progress(f"1. adding {files:,} files to dataset {i + 1} in one call")
            with report.contention.measure():
                seconds, answer = await timed(
                    lambda d=dataset_id: api.call(
                        "POST", f"/v1/datasets/{d}/files", json={"file_ids": file_ids}
                    )
                )
            if answer["added"] != files:
                raise RuntimeError(f"added {answer['added']} of {files}")
            if await api.file_count(dataset_id) != files:
                raise RuntimeError("file_count after the add is wrong")
            adds.append(seconds)
        got["add_s"] = adds
        pairs = [(uuid.UUID(datasets[0]), uuid.UUID(f)) for f in file_ids]
        with report.contention.measure():
            got["add_base_s"] = await raw_insert(conn, pairs)

        # 2. folder delete cascading to the links of 3 datasets
        progress(f"2. deleting the folder; waiting for {DATASETS * files:,} links to go")

        async def all_unlinked() -> bool:
            counts = await asyncio.gather(*(api.file_count(d) for d in datasets))
            return all(c == 0 for c in counts)

        with report.contention.measure():
            start = time.perf_counter()
            answer = await api.http.delete(f"/v1/folders/{folder_id}")
            answered = time.perf_counter() - start
            if answer.status_code != 204:
                raise RuntimeError(f"DELETE folder answered {answer.status_code}: {answer.text}")
            done = await wait_until(all_unlinked, 900, 0.02)
            got["delete_s"] = time.perf_counter() - start
            got["delete_answer_s"] = answered
        if not done:
            raise RuntimeError("links still there 900 s after the folder delete")
        all_pairs = [(uuid.UUID(d), uuid.UUID(f)) for d in datasets for f in file_ids]
        with report.contention.measure():
            got["delete_base_s"] = await raw_delete(conn, all_pairs)
        await conn.execute("DROP TABLE IF EXISTS bench_links")

        # 3. sync latency
        progress(f"3. {uploads} uploads into a synced folder, one at a time")
        synced_folder = await api.folder(f"synced-{tag}")
        sub = await api.folder("sub", synced_folder)
        synced = await api.dataset(f"synced-{tag}", synced_folder)
        for i in range(5):  # warm-up, not counted
            await api.upload(sub, [(f"warm_{i}.txt", text_file(i))])
        latencies: list[float] = []
        polls: list[int] = []
        with report.contention.measure(), CpuMeter(service) as cpu:
            for i in range(uploads):
                [file_id] = await api.upload(sub, [(f"s_{i:05d}.txt", text_file(i))])
                answered = time.perf_counter()
                n = 0

                async def visible(file_id: str = file_id) -> bool:
                    nonlocal n
                    n += 1
                    items = (await api.call("GET", f"/v1/files/{file_id}/datasets"))["items"]
                    return any(x["id"] == synced for x in items)

                if not await wait_until(visible, 30, 0.002):
                    raise RuntimeError(f"file {file_id} not in the synced dataset after 30 s")
                latencies.append(time.perf_counter() - answered)
                polls.append(n)
        got["sync"] = latencies
        got["sync_datasets_cpu_s"] = cpu.used["datasets"]
        got["sync_polls"] = polls
        if await api.file_count(synced) != uploads + 5:
            raise RuntimeError("the synced dataset's file_count is wrong")
        progress(f"   baseline: {uploads} aiokafka produce -> consume round trips")
        with report.contention.measure():
            got["kafka"] = await kafka_round_trips(bootstrap, uploads)

        # 4. rebuild
        progress("4. rebuilding datasets.membership from the store")
        store = EventStore("datasets")
        before = await conn.fetch("SELECT id, file_count FROM datasets.datasets ORDER BY id")
        members_before = await conn.fetchval("SELECT count(*) FROM datasets.members")
        linked = await conn.fetch(
            """SELECT (data->>'dataset_id')::uuid AS d, unnest(ARRAY(
                   SELECT jsonb_array_elements_text(data->'file_ids')))::uuid AS f
               FROM datasets.events WHERE type = 'datasets.FilesLinked'"""
        )
        got["linked_ids"] = len(linked)
        got["unlinked_ids"] = await conn.fetchval(
            """SELECT coalesce(sum(jsonb_array_length(data->'file_ids')), 0)
               FROM datasets.events WHERE type = 'datasets.FilesUnlinked'"""
        )
        got["events_total"] = await conn.fetchval("SELECT count(*) FROM datasets.events")
        pool = await db.connect_pool(dsn, min_size=1, max_size=2)
        try:
            with report.contention.measure():
                got["rebuild_s"], got["replayed"] = await timed(
                    lambda: rebuild(pool, store, membership)
                )
        finally:
            await pool.close()
        after = await conn.fetch("SELECT id, file_count FROM datasets.datasets ORDER BY id")
        members_after = await conn.fetchval("SELECT count(*) FROM datasets.members")
        if [tuple(r) for r in before] != [tuple(r) for r in after] or (
            members_before != members_after
        ):
            raise RuntimeError("the rebuilt membership differs from the live one")
        with report.contention.measure():
            got["copy_s"] = await raw_copy(conn, [(r["d"], r["f"]) for r in linked])
    finally:
        await conn.close()
        await api.http.aclose()
    return got


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="default 100,000 (5,000 quick)")
    parser.add_argument("--uploads", type=int, default=None, help="default 1,000 (100 quick)")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    files = args.files or (5_000 if args.quick else 100_000)
    uploads = args.uploads or (100 if args.quick else 1_000)
    report.title = (
        f"datasets: add {files:,} files in one call, delete their folder (linked into"
        f" {DATASETS} datasets), sync latency over {uploads:,} uploads, membership rebuild"
    )
    progress("starting the stack")
    with stack(workdir) as running:
        dsn = running.env["FILES_DATABASE_URL"]
        bootstrap = running.env["FILES_KAFKA_BOOTSTRAP"]
        pid = running.child("datasets").proc.pid
        got = asyncio.run(measure(running.gateway_url, dsn, bootstrap, report, files, uploads, pid))
        running.check_alive()

    add_s, add_base = got["add_s"][0], got["add_base_s"]
    report.figure(
        "add_s", f"1. add {files:,} files to a dataset, one call", add_s, "s", headline=True
    )
    report.figure(
        "add_more_s",
        "   the same into datasets 2 and 3 (each)",
        max(got["add_s"][1:]),
        "s",
        role="detail",
    )
    report.baseline(
        "add_base_s", f"   raw INSERT unnest of {files:,} rows, plain table", add_base, "s"
    )
    report.ratio("add_ratio", "   add: product s / baseline s", add_s, add_base)

    del_s, del_base = got["delete_s"], got["delete_base_s"]
    report.figure(
        "delete_s",
        f"2. folder delete until {DATASETS} datasets show 0 files",
        del_s,
        "s",
        headline=True,
    )
    report.figure(
        "delete_answer_s",
        "   of which DELETE /v1/folders answered after",
        got["delete_answer_s"],
        "s",
        role="detail",
    )
    report.baseline(
        "delete_base_s", f"   raw DELETE of {DATASETS * files:,} rows, plain table", del_base, "s"
    )
    report.ratio("delete_ratio", "   delete: product s / baseline s", del_s, del_base)

    sync_ms = [s * 1e3 for s in got["sync"]]
    kafka_ms = [s * 1e3 for s in got["kafka"]]
    p50, p99 = percentile(sync_ms, 50), percentile(sync_ms, 99)
    k50, k99 = percentile(kafka_ms, 50), percentile(kafka_ms, 99)
    report.figure("sync_p50_ms", f"3. sync latency p50 ({len(sync_ms)} uploads)", p50, "ms")
    report.figure("sync_p99_ms", "   sync latency p99", p99, "ms", headline=True)
    report.figure("sync_max_ms", "   sync latency max", max(sync_ms), "ms", role="detail")
    report.figure(
        "sync_datasets_cpu_ms",
        "   the datasets service's CPU an upload (and the polls it answers)",
        got["sync_datasets_cpu_s"] * 1e3 / uploads,
        "ms",
        role="detail",
    )
    report.baseline("kafka_p50_ms", "   aiokafka produce->consume p50", k50, "ms")
    report.baseline("kafka_p99_ms", "   aiokafka produce->consume p99", k99, "ms")
    report.ratio("sync_p50_ratio", "   sync p50 / round trip p50", p50, k50)
    report.ratio("sync_p99_ratio", "   sync p99 / round trip p99", p99, k99)

    rebuild_s, replayed = got["rebuild_s"], got["replayed"]
    ids = got["linked_ids"] + got["unlinked_ids"]
    report.figure(
        "rebuild_events_per_s",
        f"4. rebuild membership: {replayed:,} events",
        replayed / rebuild_s,
        "events/s",
        headline=True,
    )
    report.figure("rebuild_s", "   rebuild took", rebuild_s, "s", role="detail")
    report.figure(
        "rebuild_ids_per_s",
        f"   link + unlink ids replayed ({ids:,})",
        ids / rebuild_s,
        "ids/s",
    )
    copy_rows = got["linked_ids"]
    report.baseline(
        "copy_rows_per_s",
        f"   raw COPY of the {copy_rows:,} linked rows",
        copy_rows / got["copy_s"],
        "rows/s",
    )
    report.baseline("copy_s", "   raw COPY took", got["copy_s"], "s")
    report.ratio("rebuild_ratio", "   rebuild s / COPY s", rebuild_s, got["copy_s"])

    report.target(
        f"add {files:,} files under {TARGET_ADD_S:.0f} s", add_s < TARGET_ADD_S, f"{add_s:.2f} s"
    )
    report.target(
        f"folder delete unlinks {DATASETS} x {files:,} under {TARGET_DELETE_S:.0f} s",
        del_s < TARGET_DELETE_S,
        f"{del_s:.2f} s",
    )
    report.target(
        f"sync p99 under {TARGET_SYNC_P99_S * 1e3:.0f} ms",
        p99 < TARGET_SYNC_P99_S * 1e3,
        f"{p99:.0f} ms",
    )
    report.note(
        f"setup: {files:,} files uploaded through the gateway in {got['setup_upload_s']:.0f} s"
        f" (not timed); sync polled every 2 ms, median {percentile(got['sync_polls'], 50):.0f}"
        " polls per upload"
    )
    report.note(
        f"setup: the datasets service used {got['setup_datasets_cpu_s']:.2f} CPU-s until its"
        f" mirror held the {files:,} files"
        f" ({got['setup_datasets_cpu_s'] * 1e6 / files:.0f} µs a file; no dataset synced)"
    )
    report.note(
        f"the store held {got['events_total']:,} events ({got['linked_ids']:,} ids linked,"
        f" {got['unlinked_ids']:,} unlinked); ratios of seconds: above 1 is slower than raw"
    )


if __name__ == "__main__":
    main(NAME, "datasets through the stack", body, add_arguments)
