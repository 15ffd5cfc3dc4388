"""`files dlq` against the running platform: every context that consumes keeps its dead
letters where the command reads them (the thumbnails context too)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from shared.kit import db
from shared.kit.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
CONSUMING = {"acl", "catalog", "datasets", "dicom", "ingest", "thumbnails"}


async def files_dlq(platform: Stack, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        "dlq",
        *args,
        cwd=ROOT,
        env={**os.environ, "FILES_DATABASE_URL": platform.settings.database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_files_dlq_reads_the_dead_letters_of_every_consuming_context(
    platform: Stack,
) -> None:
    conn = await db.connect(platform.settings.database_url)
    try:
        kept = {
            r["table_schema"]
            for r in await conn.fetch(
                "SELECT table_schema FROM information_schema.tables"
                " WHERE table_name = 'dead_letters'"
            )
        }
    finally:
        await conn.close()
    assert kept >= CONSUMING
    for service in sorted(CONSUMING):
        code, out = await files_dlq(platform, "list", "--service", service, "--json")
        assert code == 0, out
    code, out = await files_dlq(platform, "replay", "--all", "--service", "thumbnails")
    assert code == 0, out
