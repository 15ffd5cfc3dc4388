"""Deleting a file stops serving its bytes at once; the collector then reclaims bytes
no file refers to, and never those of a live file (identical uploads share a blob).

A deleted file goes to the trash first, its bytes kept: these tests empty the trash.
The test platform sweeps every 0.2 s with no grace period (tests/conftest.py), so
only the claim protocol keeps a blob that is being stored again."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.kit.blobs import BlobStore, content_key, open_blob_store
from tests.conftest import eventually
from tests.e2e.support import folder, text, unique, upload
from tests.e2e.test_dicom import finished, send
from tests.e2e.test_thumbnails import dicom_series_of_greys


@pytest.fixture
async def store(platform: Any) -> AsyncIterator[BlobStore]:
    """The platform's own blob store, to look at what is stored."""
    blobs = open_blob_store(platform.settings)
    yield blobs
    await blobs.close()


def key_of(data: bytes) -> str:
    return content_key(hashlib.sha256(data).hexdigest())


async def delete_for_good(api: httpx.AsyncClient, file_id: str) -> httpx.Response:
    """Delete a file and empty the trash: only then may its bytes go."""
    answer = await api.delete(f"/v1/files/{file_id}")
    if answer.status_code == 204:
        emptied = await api.delete("/v1/trash")
        assert emptied.status_code == 200, emptied.text
    return answer


async def reclaimed(api: httpx.AsyncClient, store: BlobStore, data: bytes) -> None:
    """Wait until the blob of `data` is gone from the store."""

    async def gone() -> bool:
        return not await store.exists(key_of(data))

    await eventually(gone, within=15, what="the blob was reclaimed")


async def a_sweep_passed(api: httpx.AsyncClient, store: BlobStore, folder_id: str) -> None:
    """A sentinel file, deleted now, is reclaimed: a sweep ran after every release
    that was recorded before it."""
    sentinel = text(f"sentinel {os.urandom(8).hex()}")
    [file] = (await upload(api, folder_id, ("sentinel.txt", sentinel)))["files"]
    assert (await delete_for_good(api, file["id"])).status_code == 204
    await reclaimed(api, store, sentinel)


async def test_a_deleted_file_is_not_served_at_once_and_its_bytes_are_reclaimed(
    api: httpx.AsyncClient, store: BlobStore
) -> None:
    top = await folder(api, unique("collect"))
    data = text(f"only copy {os.urandom(8).hex()}")
    [file] = (await upload(api, top["id"], ("only.txt", data)))["files"]
    assert await store.exists(key_of(data))
    assert (await delete_for_good(api, file["id"])).status_code == 204
    # Not served from the moment the delete answered, bytes or not.
    assert (await api.get(f"/v1/files/{file['id']}/content")).status_code == 404
    await reclaimed(api, store, data)


async def test_bytes_shared_by_identical_uploads_stay_while_one_file_has_them(
    api: httpx.AsyncClient, store: BlobStore
) -> None:
    top = await folder(api, unique("shared-bytes"))
    data = text(f"twice {os.urandom(8).hex()}")
    first = (await upload(api, top["id"], ("a.txt", data)))["files"][0]
    second = (await upload(api, top["id"], ("b.txt", data)))["files"][0]
    assert (await delete_for_good(api, first["id"])).status_code == 204

    async def released() -> bool:
        events = await api.get("/v1/audit", params={"type": "ingest.BlobsReleased"})
        return any(first["id"] in e["data"]["file_ids"] for e in events.json()["items"])

    await eventually(released, within=15, what="the first file's blob was released")
    await a_sweep_passed(api, store, top["id"])
    assert await store.exists(key_of(data))
    assert (await api.get(f"/v1/files/{second['id']}/content")).content == data
    # The last file goes: so do the bytes. Stored again, they are served again.
    assert (await delete_for_good(api, second["id"])).status_code == 204
    await reclaimed(api, store, data)
    third = (await upload(api, top["id"], ("c.txt", data)))["files"][0]
    assert (await api.get(f"/v1/files/{third['id']}/content")).content == data


async def test_the_collector_never_takes_the_bytes_of_a_file_stored_meanwhile(
    api: httpx.AsyncClient, store: BlobStore
) -> None:
    """Identical bytes uploaded again and again while the earlier copies are deleted:
    the collector races the uploads, and every live file keeps its bytes."""
    top = await folder(api, unique("race"))
    data = text(f"raced {os.urandom(8).hex()}")
    previous = (await upload(api, top["id"], ("0.txt", data)))["files"][0]
    for round_ in range(1, 15):
        delete = delete_for_good(api, previous["id"])
        answer, uploaded = await asyncio.gather(
            delete, upload(api, top["id"], (f"{round_}.txt", data))
        )
        assert answer.status_code == 204
        previous = uploaded["files"][0]
        assert (await api.get(f"/v1/files/{previous['id']}/content")).content == data
    await a_sweep_passed(api, store, top["id"])
    assert (await api.get(f"/v1/files/{previous['id']}/content")).content == data


async def test_a_dicom_series_deleted_for_good_frees_its_instances_and_a_rejected_one_its_bytes(
    api: httpx.AsyncClient, store: BlobStore
) -> None:
    """A DICOM instance's bytes are its series' while the series lives (in the trash too:
    it may come back) and go when it is deleted for good; an instance that joined no
    series (not DICOM) leaves nothing behind."""
    top = await folder(api, unique("series-bytes"))
    slices = dicom_series_of_greys(3)
    stray = text(f"not dicom {os.urandom(8).hex()}")
    job = await finished(api, await send(api, top["id"], *slices, ("stray.dcm", stray)))
    assert [e["code"] for e in job["errors"]] == ["not_dicom"]
    [series] = job["files"]
    await reclaimed(api, store, stray)
    await a_sweep_passed(api, store, top["id"])
    for _, data in slices:
        assert await store.exists(key_of(data)), "a live series' instance was reclaimed"

    assert (await api.delete(f"/v1/files/{series['id']}")).status_code == 204
    # In the trash: kept. (A stray's bytes going shows a sweep passed; emptying the
    # trash, as a_sweep_passed does, would purge the series.)
    sentinel = text(f"not dicom either {os.urandom(8).hex()}")
    await finished(api, await send(api, top["id"], ("sentinel.dcm", sentinel)))
    await reclaimed(api, store, sentinel)
    for _, data in slices:
        assert await store.exists(key_of(data)), "a trashed series' instance was reclaimed"
    emptied = await api.delete("/v1/trash")
    assert emptied.status_code == 200, emptied.text
    for _, data in slices:
        await reclaimed(api, store, data)
