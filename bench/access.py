"""Authorisation check latency: the decision the catalog makes for every request.

The catalog's folder table is created by its projection DDL (services/catalog/projections.py)
and filled directly with SQL: a tree 10 levels deep of 10,000 folders (10 top-level folders,
each folder with 2 children, the 10th level cut to make 10,000), so that paths hold 1 to 10
folder ids. 1,000 users, each with 1 to 5 grants (a random role on a folder at a random
level), encoded as the gateway passes them (`X-Files-Access`, `Access.encode`).

A check, for a random user and a random folder, is what `/internal/folders/{id}` does:
decode the caller's header (`Access.decode`), fetch the folder's path (`SELECT path FROM
catalog.folders WHERE id = $1`, through an asyncpg pool, as the catalog does), and decide
(`Access.require(path, "user", ...)`, which calls `role_on`; a refusal raises and is
caught). 20,000 checks one at a time, after an untimed warm-up; p50, p99, max.
The in-process part alone (decode + role_on, with the paths fetched beforehand) is timed
over the same checks, in µs.
Baseline: the bare asyncpg round trip `SELECT 1` through the same pool (p50, p99),
measured in rounds alternating with the checks'. Target: check p99 under 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg

from bench._common import Report, main, percentile, postgres, progress
from services.catalog.projections import tree
from shared.kit import db
from shared.kit.access import ROLES, Access
from shared.kit.errors import Refused

NAME = "access"
TARGET_P99_MS = 2.0
LEVELS = 10
SEED = 20261125
ROUNDS = 4

TOP_SQL = """
INSERT INTO catalog.folders
    (id, parent_id, name, description, metadata, path, version, created_at, created_by)
SELECT md5('folder/1/' || i)::uuid, NULL, 'folder_1_' || i, '', '{}',
       ARRAY[md5('folder/1/' || i)::uuid], 1, now(), 'bench'
FROM generate_series(0, $1::int - 1) AS i
"""

# Folder i of level $2 (of $1 folders) hangs below folder i * $3 / $1 of the level above
# (of $3 folders): each parent gets about $1 / $3 children.
LEVEL_SQL = """
INSERT INTO catalog.folders
    (id, parent_id, name, description, metadata, path, version, created_at, created_by)
SELECT c.id, p.id, 'folder_' || $2::int || '_' || i, '', '{}', p.path || c.id, 1, now(), 'bench'
FROM generate_series(0, $1::int - 1) AS i
CROSS JOIN LATERAL (SELECT md5('folder/' || $2::int || '/' || i)::uuid AS id) AS c
JOIN catalog.folders p
    ON p.id = md5('folder/' || ($2::int - 1) || '/' || (i * $3::int / $1::int))::uuid
"""


def level_sizes(folders: int) -> list[int]:
    """Folders per level: fan-out 2 from the top-level folders, the last level cut (or
    grown) so that the tree holds `folders`."""
    tops = max(round(folders / (2**LEVELS - 1)), 1)
    sizes = [tops * 2**d for d in range(LEVELS - 1)]
    sizes.append(max(folders - sum(sizes), 1))
    return sizes


async def fill(dsn: str, folders: int) -> tuple[list[int], float]:
    conn = await db.connect(dsn)
    try:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS catalog")
        await tree.setup(conn)
        sizes = level_sizes(folders)
        start = time.perf_counter()
        await conn.execute(TOP_SQL, sizes[0])
        for level in range(2, LEVELS + 1):
            await conn.execute(LEVEL_SQL, sizes[level - 1], level, sizes[level - 2])
        seconds = time.perf_counter() - start
        await conn.execute("VACUUM ANALYZE catalog.folders")
    finally:
        await conn.close()
    return sizes, seconds


def make_users(
    rng: random.Random, by_level: dict[int, list[uuid.UUID]], users: int
) -> list[Access]:
    """Members with 1 to 5 grants each: a random role on a folder of a random level."""
    found = []
    for n in range(users):
        grants = {}
        for _ in range(rng.randint(1, 5)):
            level = rng.randint(1, LEVELS)
            grants[rng.choice(by_level[level])] = rng.choice(ROLES)
        found.append(Access(user_id=f"user-{n:04d}", grants=grants))
    return found


async def check(pool: asyncpg.Pool, header: str, folder_id: uuid.UUID) -> str:
    """What `/internal/folders/{id}` decides: the caller's role, or the refusal's status."""
    access = Access.decode(header)
    path = await pool.fetchval("SELECT path FROM catalog.folders WHERE id = $1", folder_id)
    try:
        return access.require(path, "user", f"folder {folder_id}")
    except Refused as refused:
        return str(refused.status)


async def time_checks(
    pool: asyncpg.Pool, work: list[tuple[str, uuid.UUID]]
) -> tuple[list[float], Counter[str]]:
    timings, outcomes = [], Counter[str]()
    for header, folder_id in work:
        start = time.perf_counter()
        outcome = await check(pool, header, folder_id)
        timings.append(time.perf_counter() - start)
        outcomes[outcome] += 1
    return timings, outcomes


async def time_select_1(pool: asyncpg.Pool, n: int) -> list[float]:
    timings = []
    for _ in range(n):
        start = time.perf_counter()
        await pool.fetchval("SELECT 1")
        timings.append(time.perf_counter() - start)
    return timings


def time_in_process(
    work: list[tuple[str, uuid.UUID]], paths: dict[uuid.UUID, list[uuid.UUID]]
) -> tuple[list[float], list[float]]:
    """Seconds per check of decode + role_on (paths fetched beforehand), and of decode
    alone."""
    both, decode = [], []
    clock = time.perf_counter
    for header, folder_id in work:
        path = paths[folder_id]
        start = clock()
        access = Access.decode(header)
        middle = clock()
        access.role_on(path)
        end = clock()
        both.append(end - start)
        decode.append(middle - start)
    return both, decode


async def measure(dsn: str, report: Report, folders: int, users: int, checks: int) -> None:
    progress(f"filling catalog.folders: {folders:,} folders, {LEVELS} levels")
    sizes, fill_s = await fill(dsn, folders)
    progress(f"levels of {', '.join(f'{s:,}' for s in sizes)} folders, in {fill_s:.1f} s")
    pool = await db.connect_pool(dsn, min_size=1, max_size=2)
    try:
        rows = await pool.fetch("SELECT id, path FROM catalog.folders")
        paths = {r["id"]: list(r["path"]) for r in rows}
        by_level: dict[int, list[uuid.UUID]] = {}
        for folder_id, path in sorted(paths.items()):
            by_level.setdefault(len(path), []).append(folder_id)
        rng = random.Random(SEED)
        people = [a.encode() for a in make_users(rng, by_level, users)]
        folder_ids = sorted(paths)
        work = [(rng.choice(people), rng.choice(folder_ids)) for _ in range(checks)]

        progress(f"warm-up: {min(checks, 2_000):,} checks and as many SELECT 1")
        await time_checks(pool, work[:2_000])
        await time_select_1(pool, min(checks, 2_000))
        progress(f"timed: {checks:,} checks and {checks:,} SELECT 1, in {ROUNDS} rounds each")
        check_s: list[float] = []
        select_s: list[float] = []
        outcomes: Counter[str] = Counter()
        step = -(-checks // ROUNDS)
        with report.contention.measure():
            for first in range(0, checks, step):
                part = work[first : first + step]
                timings, counted = await time_checks(pool, part)
                check_s += timings
                outcomes += counted
                select_s += await time_select_1(pool, len(part))
            in_process_s, decode_s = time_in_process(work, paths)
    finally:
        await pool.close()

    ms = [s * 1e3 for s in check_s]
    base = [s * 1e3 for s in select_s]
    us = [s * 1e6 for s in in_process_s]
    dec_us = [s * 1e6 for s in decode_s]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    b50, b99 = percentile(base, 50), percentile(base, 99)
    n = len(ms)
    report.figure("check_p50_ms", f"check (decode, fetch path, require): p50 of {n:,}", p50, "ms")
    report.figure("check_p99_ms", "check p99", p99, "ms", headline=True)
    report.figure("check_max_ms", "check max", max(ms), "ms")
    report.figure(
        "in_process_p50_us", "in-process part (decode + role_on): p50", percentile(us, 50), "µs"
    )
    report.figure("in_process_p99_us", "in-process part: p99", percentile(us, 99), "µs")
    report.figure(
        "decode_p50_us", "  of which decode: p50", percentile(dec_us, 50), "µs", role="detail"
    )
    report.baseline("select_1_p50_ms", f"asyncpg pool SELECT 1 round trip: p50 of {n:,}", b50, "ms")
    report.baseline("select_1_p99_ms", "asyncpg pool SELECT 1 round trip: p99", b99, "ms")
    report.ratio("p50_ratio", "check p50 / SELECT 1 p50", p50, b50)
    report.ratio("p99_ratio", "check p99 / SELECT 1 p99", p99, b99)
    report.target(f"check p99 under {TARGET_P99_MS:.0f} ms", p99 < TARGET_P99_MS, f"{p99:.2f} ms")
    shown = ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))
    report.note(
        f"{len(paths):,} folders in {LEVELS} levels ({', '.join(f'{s:,}' for s in sizes)});"
        f" {users:,} users with {sum(h.count(':') for h in people):,} grants; outcomes: {shown}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folders", type=int, default=10_000, help="default 10,000")
    parser.add_argument("--users", type=int, default=1_000, help="default 1,000")
    parser.add_argument("--checks", type=int, default=None, help="default 20,000 (2,000 quick)")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    checks = args.checks or (2_000 if args.quick else 20_000)
    report.title = (
        f"authorisation check over {args.folders:,} folders {LEVELS} levels deep"
        " (baseline: SELECT 1 round trip)"
    )
    with postgres(workdir, durable=False) as pg:
        asyncio.run(measure(pg.url, report, args.folders, args.users, checks))


if __name__ == "__main__":
    main(NAME, "authorisation check latency", body, add_arguments)
