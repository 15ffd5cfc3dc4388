"""A full disk under a local blob store: uploads are refused `507 insufficient_storage`,
nothing is half-written (no spool left, no file listed whose bytes are not whole), and
once space is freed the same upload, sent again with its key, is stored.

The blobs are on a small file system of their own (tmpfs, so root only: skipped
otherwise); PostgreSQL is not on it. Run by `make chaos` (FILES_CHAOS_FAULTS=all), or
with FILES_CHAOS_FAULTS naming "full disk".
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from shared.kit.embedded import free_port
from shared.kit.settings import Settings
from shared.kit.stack import Stack
from tests.chaos import test_chaos as chaos
from tests.chaos.test_chaos import every_projection_equals_its_rebuild
from tests.conftest import ADMIN_KEY, eventually

# Named, it must run: a machine that cannot mount the small disk fails it.
NAMED = "full disk" in chaos.NAMED
pytestmark = [
    pytest.mark.skipif(
        not (chaos.ALL or NAMED), reason="make chaos only (FILES_CHAOS_FAULTS=all or 'full disk')"
    ),
    pytest.mark.timeout(600),
]

DISK = 16 * 1024 * 1024
FILE = 1024 * 1024  # spooled to the disk while received (larger than what is held in memory)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mounted = tmp_path / "blobs"
    mounted.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mounted)],
        capture_output=True,
    )
    if made.returncode != 0:
        why = f"a small file system needs mounting (root): {made.stderr.decode()}"
        if NAMED:
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield mounted
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


@pytest.fixture
def disk_stack(tmp_path: Path, small_disk: Path) -> Iterator[Stack]:
    settings = Settings(
        data_dir=tmp_path / "stack",
        database_url="",
        kafka_bootstrap="",
        blob_url=f"file://{small_disk}",
        http_port=free_port(),
        bootstrap_admin_key=ADMIN_KEY,
    )
    running = Stack(settings, durable=False)
    try:
        running.start(timeout=300)
        yield running
    finally:
        running.stop()


@pytest.fixture
async def disk_api(disk_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=disk_stack.gateway_url,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=90,
    ) as client:
        yield client


async def test_a_full_disk_refuses_uploads_whole_and_recovers_once_space_is_freed(
    disk_stack: Stack, disk_api: httpx.AsyncClient, small_disk: Path
) -> None:
    api = disk_api
    made = await api.post("/v1/folders", json={"name": "full disk"})
    assert made.status_code == 201, made.text
    folder_id = made.json()["id"]
    # What else fills the disk, leaving room for a few files only.
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (DISK - 4 * FILE))

    stored: dict[str, bytes] = {}  # file id -> its bytes
    refused: tuple[str, bytes] | None = None  # the key and bytes of the refused upload
    for n in range(12):
        content = os.urandom(FILE // 2).hex().encode()  # text, unlike any other
        key = str(uuid.uuid4())
        answer = await api.post(
            f"/v1/folders/{folder_id}/files",
            files=[("file", (f"big-{n}.txt", content))],
            headers={"Idempotency-Key": key},
        )
        if answer.status_code == 507:
            assert answer.json()["error"]["code"] == "insufficient_storage", answer.text
            refused = (key, content)
            break
        assert answer.status_code == 201, answer.text
        [file] = answer.json()["files"]
        stored[file["id"]] = content
    assert refused is not None, "the disk never filled"
    assert stored, "the disk was full before any upload"

    # Nothing half-written: no spool left behind, and the folder lists exactly the files
    # answered 201, each read back whole.
    incoming = small_disk / "incoming"

    async def no_spools() -> bool:
        return not incoming.exists() or not any(incoming.iterdir())

    await eventually(no_spools, within=30, what="the refused upload's spool dropped")
    listed = await api.get(f"/v1/folders/{folder_id}/items", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    assert {item["id"] for item in listed.json()["items"]} == set(stored)
    for file_id, content in stored.items():
        read = await api.get(f"/v1/files/{file_id}/content")
        assert read.status_code == 200 and read.content == content, file_id

    # Space freed: the same request, sent again with its key, is stored (not replayed
    # as the 507: a refusal for want of space is not kept as the key's answer).
    filler.unlink()
    key, content = refused
    again = await api.post(
        f"/v1/folders/{folder_id}/files",
        files=[("file", ("big-again.txt", content))],
        headers={"Idempotency-Key": key},
    )
    assert again.status_code == 201, again.text
    [file] = again.json()["files"]
    read = await api.get(f"/v1/files/{file['id']}/content")
    assert read.status_code == 200 and read.content == content

    assert await every_projection_equals_its_rebuild(disk_stack.env["FILES_DATABASE_URL"]) == []
