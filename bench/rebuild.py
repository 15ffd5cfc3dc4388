"""A catalog rebuild from its events: `files rebuild catalog.tree` over 1,000,000 small
events (`--quick`: 100,000).

Setup (not timed): the catalog's store and read model in an embedded PostgreSQL of the
benchmark's own (no services run). A FolderCreated for every 1,000 files and a
FileUploaded for each file (64 bytes of text, no metadata), as an upload records them,
appended by `EventStore.append` in transactions of 1,000, then `VACUUM ANALYZE`d (as
autovacuum leaves a store whose appends are older than a few minutes).

Timed: `shared.kit.projections.rebuild(pool, EventStore("catalog"), tree)`, which drops
the read model and replays every event into it in one transaction: events/s.
Baseline, in the same PostgreSQL: raw asyncpg `copy_records_to_table` of the same files'
rows (id, folder_id, name, kind, size, sha256, mime_type, blob_key, created_at) into a
plain table with a primary key, in one transaction: the least a rebuild must write.
Target (issue 19): at least 50,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench._common import Report, main, postgres, progress
from services.catalog.projections import tree
from shared.contracts.catalog import FileUploaded, FolderCreated, file_stream, folder_stream
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit import db
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild

NAME = "rebuild"
TARGET_PER_S = 50_000
PER_FOLDER = 1_000
CAUSE = Cause(actor=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()))


def folder_changes(index: int) -> tuple[list[Change], list[tuple[Any, ...]]]:
    """One folder and its files, as changes to append, and the files' rows for the
    baseline."""
    folder_id = uuid.uuid4()
    changes = [
        Change(
            folder_stream(folder_id),
            1,
            FolderCreated(folder_id=folder_id, parent_id=None, name=f"folder-{index:05d}"),
        )
    ]
    rows = []
    for n in range(PER_FOLDER - 1):
        file_id = uuid.uuid4()
        digest = file_id.hex * 2
        event = FileUploaded(
            file_id=file_id,
            folder_id=folder_id,
            name=f"note-{n:04d}.txt",
            kind="text",
            size=64,
            sha256=digest,
            mime_type="text/plain",
            blob_key=f"sha256/{digest[:2]}/{digest[2:4]}/{digest}",
        )
        changes.append(Change(file_stream(file_id), 1, event))
        rows.append(
            (file_id, folder_id, event.name, "text", 64, digest, "text/plain", event.blob_key)
        )
    return changes, rows


async def fill(pool: asyncpg.Pool, store: EventStore, events: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    folders = max(1, events // PER_FOLDER)
    for index in range(folders):
        changes, made = folder_changes(index)
        rows += made
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, envelopes_of(changes, CAUSE))
        if index % 100 == 0:
            progress(f"  {index * PER_FOLDER:,} of {folders * PER_FOLDER:,} events appended")
    return rows


async def raw_copy(pool: asyncpg.Pool, rows: list[tuple[Any, ...]]) -> float:
    async with pool.acquire() as conn:
        await conn.execute(
            """DROP TABLE IF EXISTS bench_files;
               CREATE TABLE bench_files (id uuid PRIMARY KEY, folder_id uuid, name text,
                   kind text, size bigint, sha256 text, mime_type text, blob_key text,
                   created_at timestamptz DEFAULT now())"""
        )
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "bench_files",
                records=rows,
                columns=[
                    "id",
                    "folder_id",
                    "name",
                    "kind",
                    "size",
                    "sha256",
                    "mime_type",
                    "blob_key",
                ],
            )
        return time.perf_counter() - start


async def run(url: str, report: Report, events: int) -> None:
    pool = await db.connect_pool(url)
    try:
        store = EventStore("catalog")
        async with pool.acquire() as conn:
            await conn.execute("CREATE SCHEMA IF NOT EXISTS catalog")
            await store.setup(conn)
            await tree.setup(conn)
        progress(f"appending {events:,} events")
        rows = await fill(pool, store, events)
        async with pool.acquire() as conn:
            # A store as a rebuild meets it: settled, its rows' commit hints set and its
            # statistics known (autovacuum's work after a day of appends). Unvacuumed,
            # the rebuild's first read of each page wrote it out again, and autovacuum
            # ran beside the timed replay.
            await conn.execute("VACUUM ANALYZE catalog.events")
        total = len(rows) + len(rows) // (PER_FOLDER - 1)
        progress("rebuilding catalog.tree")
        with report.contention.measure():
            start = time.perf_counter()
            replayed = await rebuild(pool, store, tree)
            rebuild_s = time.perf_counter() - start
            copy_s = await raw_copy(pool, rows)
        if replayed != total:
            raise RuntimeError(f"{replayed:,} events replayed, {total:,} appended")
        async with pool.acquire() as conn:
            files = await conn.fetchval("SELECT count(*) FROM catalog.files")
        if files != len(rows):
            raise RuntimeError(f"{files:,} files after the rebuild, {len(rows):,} uploaded")
        per_s = replayed / rebuild_s
        report.figure(
            "rebuild_events_per_s",
            f"rebuild of catalog.tree: {replayed:,} events ({files:,} files)",
            per_s,
            "events/s",
            headline=True,
        )
        report.figure("rebuild_s", "  seconds", rebuild_s, "s", role="detail")
        report.baseline(
            "copy_rows_per_s",
            f"copy_records_to_table of the {len(rows):,} file rows, one transaction",
            len(rows) / copy_s,
            "rows/s",
        )
        report.ratio("ratio", "baseline time / rebuild time", copy_s, rebuild_s)
        report.target(f"at least {TARGET_PER_S:,} events/s", per_s >= TARGET_PER_S, f"{per_s:,.0f}")
    finally:
        await pool.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=None, help="1,000,000 (100,000 quick)")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    events = args.events or (100_000 if args.quick else 1_000_000)
    report.title = f"catalog rebuild from {events:,} events (baseline: raw COPY of the file rows)"
    with postgres(workdir, durable=True) as pg:
        asyncio.run(run(pg.url, report, events))


if __name__ == "__main__":
    main(NAME, "catalog rebuild", body, add_arguments)
