"""Search latency over a large catalog: p50/p95 of the catalog's own search query.

The catalog's tables are created by its projection DDL (services/catalog/projections.py),
filled directly with SQL (generate_series): 20 top-level folders, 980 subfolders below
them, and 1,000,000 files (`--quick`: 50,000) named like "scan_000123_left.png", spread
over the subfolders. Then ANALYZE, and `services.catalog.queries.search(pool, Listing(q,
kinds, folder_id, cursor, limit=100), access)` is timed over a few hundred varied queries: common
and rare substrings, names, no match, one- and two-letter queries, with and without
`folder_id` (a top-level folder, a subfolder) and `kind`, and some second pages. One
untimed pass warms the caches; the timed pass follows.

Two callers, one workload each: an org admin, who sees everything, and a member granted
`user` on 1% of the folders (10 of the 980 subfolders, picked with a seeded random, about
1% of the files), whose searches are filtered to those subtrees. The member's workload is
the same kind, with its folder-scoped queries in the folders it can see.
Baseline: none, the figures themselves. Target: p95 under 50 ms, for each caller.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench._common import Report, main, percentile, postgres, progress
from services.catalog import listing, queries
from services.catalog.projections import tree
from shared.kit import db
from shared.kit.access import Access

NAME = "search"
TARGET_P95_MS = 50.0
TOPS = 20
SUBS = 980
# The member sees the subtrees of this many subfolders (1% of the 1,000 folders).
MEMBER_FOLDERS = 10
SEED = 20261125
PREFIXES = ("scan", "frame", "img", "ct", "mri", "xray", "thumb", "mask")
SIDES = ("left", "right", "front", "back", "top")
SITES = ("boston", "berlin", "tokyo", "lyon", "austin", "oslo", "seoul", "lima", "cairo", "perth")
MODALITIES = ("ct-scans", "lidar-drive")
WEATHER = ("sunny", "rain", "fog", "night", "snow", "dusk", "overcast")

Query = dict[str, Any]


def _array(values: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]"


FOLDERS_SQL = f"""
INSERT INTO catalog.folders
    (id, parent_id, name, description, metadata, path, version, created_at, created_by)
SELECT md5('top' || i)::uuid, NULL,
       ({_array(MODALITIES)})[i % 2 + 1] || '-' || ({_array(SITES)})[i % 10 + 1]
           || '-' || (2014 + i),
       'imported from the field kit', '{{}}', ARRAY[md5('top' || i)::uuid], 1, now(), 'bench'
FROM generate_series(1, {TOPS}) AS i;
INSERT INTO catalog.folders
    (id, parent_id, name, description, metadata, path, version, created_at, created_by)
SELECT md5('sub' || j)::uuid, md5('top' || (j % {TOPS} + 1))::uuid,
       'session_' || lpad(j::text, 3, '0') || '_' || ({_array(WEATHER)})[j % 7 + 1],
       '', '{{"camera": "front"}}',
       ARRAY[md5('top' || (j % {TOPS} + 1))::uuid, md5('sub' || j)::uuid], 1, now(), 'bench'
FROM generate_series(1, {SUBS}) AS j;
"""

FILES_SQL = f"""
INSERT INTO catalog.files
    (id, folder_id, name, kind, size, sha256, mime_type, media, blob_key, source, metadata,
     job_id, version, created_at, created_by)
SELECT gen_random_uuid(),
       md5('sub' || (g % {SUBS} + 1))::uuid,
       ({_array(PREFIXES)})[(h.v / 100) % 8 + 1] || '_' || lpad((g / {SUBS})::text, 6, '0')
           || '_' || ({_array(SIDES)})[(h.v / 20) % 5 + 1] || '.' || k.ext,
       k.kind, 4096 + h.v % 100000, h.m || h.m, k.mime,
       '{{"width": 640, "height": 480}}', 'sha256/00/00/' || h.m, '{{"type": "upload"}}',
       '{{}}', NULL, 1, now(), 'bench'
FROM generate_series($1::bigint, $2::bigint) AS g
-- A hash of g picks kind, side and prefix, independently of each other and of the folder.
CROSS JOIN LATERAL (
    SELECT md5(g::text) AS m, ('x' || substr(md5(g::text), 1, 8))::bit(32)::int & 2147483647 AS v
) AS h
CROSS JOIN LATERAL (
    SELECT CASE WHEN h.v % 20 < 14 THEN 'image' WHEN h.v % 20 < 16 THEN 'video'
                WHEN h.v % 20 < 18 THEN 'text' ELSE 'pdf' END AS kind,
           CASE WHEN h.v % 20 < 7 THEN 'png' WHEN h.v % 20 < 14 THEN 'jpg'
                WHEN h.v % 20 < 16 THEN 'mp4' WHEN h.v % 20 < 18 THEN 'txt' ELSE 'pdf' END AS ext,
           CASE WHEN h.v % 20 < 7 THEN 'image/png' WHEN h.v % 20 < 14 THEN 'image/jpeg'
                WHEN h.v % 20 < 16 THEN 'video/mp4' WHEN h.v % 20 < 18 THEN 'text/plain'
                ELSE 'application/pdf' END AS mime
) AS k
"""


async def fill(dsn: str, files: int) -> dict[str, float]:
    conn = await db.connect(dsn)
    timings = {}
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS catalog")
        await tree.setup(conn)
        # Load without the file indexes, then let the projection's DDL create them again.
        await conn.execute(
            "DROP INDEX catalog.files_folder, catalog.files_search, catalog.files_metadata,"
            " catalog.files_folder_created, catalog.files_folder_size"
        )
        start = time.perf_counter()
        await conn.execute(FOLDERS_SQL)
        step = 250_000
        for first in range(0, files, step):
            await conn.execute(FILES_SQL, first, min(first + step, files) - 1)
        timings["load_s"] = time.perf_counter() - start
        start = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await tree.setup(conn)
        timings["index_s"] = time.perf_counter() - start
        await conn.execute("VACUUM ANALYZE catalog.folders, catalog.files")
    finally:
        await conn.close()
    return timings


def workload(
    rng: random.Random, tops: list[uuid.UUID], subs: list[uuid.UUID], n: int, per_folder: int
) -> list[Query]:
    """`n` queries of varied selectivity, each tagged with a category.

    Folder-scoped queries pick from `tops` and `subs`; without `tops` (a member who was
    granted subfolders only) there are no queries in a top-level folder.
    """

    def number(width: int = 6) -> str:
        # Names number the files of each folder from 0 to about `per_folder`.
        return str(rng.randrange(0, per_folder)).zfill(width)

    absent: list[Query] = [
        {"q": "png", "kind": "video"},
        {"q": ".jpg", "kind": "pdf"},
        {"q": "mp4", "kind": "image", "folder_id": rng.choice(tops or subs)},
    ]
    makers: list[tuple[str, Callable[[], Query]]] = [
        ("common", lambda: {"q": rng.choice(PREFIXES + SIDES + ("png", "jpg", ".mp4"))}),
        ("common", lambda: {"q": f"{rng.choice(PREFIXES)}_"}),
        ("medium", lambda: {"q": f"{rng.choice(PREFIXES)}_{number()[:4]}"}),
        ("medium", lambda: {"q": number()}),
        ("rare", lambda: {"q": f"{rng.choice(PREFIXES)}_{number()}_{rng.choice(SIDES)}"}),
        ("rare", lambda: {"q": f"_{number()}_{rng.choice(SIDES)}.png"}),
        ("none", lambda: {"q": rng.choice(("zebra", "invoice", "qqq", "scan_9999999", "dicom"))}),
        ("short", lambda: {"q": rng.choice(("a", "e", "_", "1", "ct", "_l", "07", "n_"))}),
        ("folders", lambda: {"q": rng.choice(WEATHER + SITES + ("session", "lidar", "2020"))}),
        ("in_top", lambda: {"q": rng.choice(PREFIXES + SIDES), "folder_id": rng.choice(tops)}),
        ("in_top", lambda: {"q": f"_{number()}_", "folder_id": rng.choice(tops)}),
        ("in_sub", lambda: {"q": rng.choice(PREFIXES + SIDES), "folder_id": rng.choice(subs)}),
        (
            "in_sub",
            lambda: {"q": f"{rng.choice(PREFIXES)}_{number()}", "folder_id": rng.choice(subs)},
        ),
        ("kind", lambda: {"q": rng.choice(PREFIXES + SIDES), "kind": rng.choice(("video", "pdf"))}),
        ("kind", lambda: {"q": f"_{number()}", "kind": "image"}),
        # A filter that excludes every match of a common word: a user filters videos and
        # types "png".
        ("absent", lambda: rng.choice(absent)),
    ]
    if not tops:
        makers = [m for m in makers if m[0] != "in_top"]
    found = []
    for _ in range(n):
        category, make = rng.choice(makers)
        found.append({"category": category, "kind": None, "folder_id": None, **make()})
    return found


def describe(query: Query, tops: set[uuid.UUID]) -> str:
    text = f"q={query['q']!r}"
    if query["kind"]:
        text += f" kind={query['kind']}"
    if query["folder_id"]:
        text += " in a top-level folder" if query["folder_id"] in tops else " in a subfolder"
    return text


Timing = tuple[str, float, str, list[str]]


async def run_queries(
    pool: asyncpg.Pool, work: list[Query], pages: bool, tops: set[uuid.UUID], access: Access
) -> list[Timing]:
    """(category, seconds, what was asked and how many items came back, the ids of the
    items) per query."""
    timings = []
    for i, query in enumerate(work):
        asked = listing.Listing(
            q=query["q"],
            kinds=(query["kind"],) if query["kind"] else (),
            folder_id=query["folder_id"],
        )
        start = time.perf_counter()
        result = await queries.search(pool, asked, access)
        seconds = time.perf_counter() - start
        what = f"{describe(query, tops)}: {len(result['items'])} items"
        ids = [item["id"] for item in result["items"]]
        timings.append((query["category"], seconds, what, ids))
        if pages and i % 10 == 0 and result["next_cursor"]:
            start = time.perf_counter()
            later = dataclasses.replace(asked, cursor=result["next_cursor"])
            page = await queries.search(pool, later, access)
            seconds = time.perf_counter() - start
            what = f"{describe(query, tops)}, page 2: {len(page['items'])} items"
            timings.append(("next_page", seconds, what, [item["id"] for item in page["items"]]))
    return timings


def member_access(subs: list[uuid.UUID]) -> Access:
    """A member granted `user` on MEMBER_FOLDERS subfolders, the same ones every run."""
    chosen = random.Random(SEED).sample(sorted(subs), MEMBER_FOLDERS)
    return Access(user_id="bench-member", grants=dict.fromkeys(chosen, "user"))


def summarise(
    report: Report,
    results: list[Timing],
    key: str,
    who: str,
) -> float:
    """Figures for one caller's timed pass; returns its p95 in ms."""
    prefix = "" if key == "admin" else f"{key}_"
    all_ms = [t * 1e3 for _, t, *_ in results]
    p50, p95 = percentile(all_ms, 50), percentile(all_ms, 95)
    n = len(all_ms)
    report.figure(
        f"{prefix}p50_ms", f"{who}: search p50 over {n} queries", p50, "ms", headline=True
    )
    report.figure(
        f"{prefix}p95_ms", f"{who}: search p95 over {n} queries", p95, "ms", headline=True
    )
    report.figure(f"{prefix}p99_ms", f"{who}: search p99", percentile(all_ms, 99), "ms")
    report.figure(f"{prefix}max_ms", f"{who}: search max", max(all_ms), "ms")
    by_category: dict[str, list[float]] = defaultdict(list)
    for category, seconds, *_ in results:
        by_category[category].append(seconds * 1e3)
    for category, values in sorted(by_category.items()):
        report.figure(
            f"{prefix}p95_{category}_ms",
            f"{who}: p95 of '{category}' (n={len(values)}, p50 {percentile(values, 50):.1f} ms)",
            percentile(values, 95),
            "ms",
            role="detail",
        )
    rest = [t * 1e3 for category, t, *_ in results if category != "absent"]
    if len(rest) < len(all_ms):
        report.figure(
            f"{prefix}p95_without_absent_ms",
            f"{who}: p95 without the 'absent' queries ({len(rest)} queries)",
            percentile(rest, 95),
            "ms",
            role="detail",
        )
    for category, seconds, what, _ in sorted(results, key=lambda r: -r[1])[:8]:
        report.note(f"{who}, slow: {seconds * 1e3:,.0f} ms ({category}) {what}")
    return p95


async def measure(dsn: str, report: Report, files: int, count: int, custom_plans: bool) -> None:
    progress(f"filling catalog.folders ({TOPS + SUBS}) and catalog.files ({files:,})")
    timings = await fill(dsn, files)
    progress(f"loaded in {timings['load_s']:.1f} s, indexed in {timings['index_s']:.1f} s")
    if custom_plans:
        # A what-if, not the product's setting: never reuse a generic plan.
        conn = await db.connect(dsn)
        await conn.execute("ALTER ROLE postgres SET plan_cache_mode = force_custom_plan")
        await conn.close()
        report.note("what-if run: plan_cache_mode = force_custom_plan (--custom-plans)")
    pool = await db.connect_pool(dsn, max_size=4)
    try:
        tops = [
            r["id"]
            for r in await pool.fetch("SELECT id FROM catalog.folders WHERE parent_id IS NULL")
        ]
        subs = [
            r["id"]
            for r in await pool.fetch("SELECT id FROM catalog.folders WHERE parent_id IS NOT NULL")
        ]
        per_folder = max(files // SUBS, 1)
        admin = Access(user_id="bench", org_admin=True)
        member = member_access(subs)
        member_files = await pool.fetchval(
            "SELECT count(*) FROM catalog.files WHERE folder_id = ANY($1::uuid[])",
            list(member.grants),
        )
        runs = [
            (
                "admin",
                "org admin",
                admin,
                set(tops),
                workload(random.Random(SEED), tops, subs, count, per_folder),
            ),
            (
                "member",
                f"member ({MEMBER_FOLDERS} folders)",
                member,
                set(),
                workload(random.Random(SEED + 1), [], list(member.grants), count, per_folder),
            ),
        ]
        results = {}
        for key, who, access, run_tops, work in runs:
            progress(f"{who}: warm-up pass, {len(work)} queries")
            await run_queries(pool, work, pages=True, tops=run_tops, access=access)
            progress(f"{who}: timed pass, {len(work)} queries")
            with report.contention.measure():
                results[key] = await run_queries(
                    pool, work, pages=True, tops=run_tops, access=access
                )
    finally:
        await pool.close()

    for key, who, *_ in runs:
        p95 = summarise(report, results[key], key, who)
        report.target(
            f"{who}: p95 under {TARGET_P95_MS:.0f} ms", p95 < TARGET_P95_MS, f"{p95:.1f} ms"
        )
    report.note(
        f"{files:,} files in {TOPS + SUBS:,} folders, loaded in {timings['load_s']:.0f} s,"
        f" indexed in {timings['index_s']:.0f} s; one query at a time, limit 100; the member"
        f" sees {MEMBER_FOLDERS} subfolders holding {member_files:,} files"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="default 1,000,000 (50,000 quick)")
    parser.add_argument("--queries", type=int, default=None, help="default 400 (150 quick)")
    parser.add_argument(
        "--custom-plans",
        action="store_true",
        help="what-if: PostgreSQL plans every search afresh (plan_cache_mode=force_custom_plan)",
    )


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    files = args.files or (50_000 if args.quick else 1_000_000)
    count = args.queries or (150 if args.quick else 400)
    report.title = f"catalog search over {files:,} files, org admin and member (baseline: none)"
    with postgres(workdir, durable=False) as pg:
        asyncio.run(measure(pg.url, report, files, count, args.custom_plans))


if __name__ == "__main__":
    main(NAME, "catalog search latency", body, add_arguments)
