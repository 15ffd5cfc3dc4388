"""Collections that grow with user input travel in pages the bus carries: a 10,000-frame
image sequence (the most a multipart upload takes) and a DICOM series of more instances
than a page holds register end to end, and an upload right after each is listed at once
(nothing stalled behind them)."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import httpx
import pytest

from shared.contracts.limits import PAGE_ITEMS
from tests.conftest import eventually
from tests.dicom_fixtures import ct_series
from tests.e2e.support import CONSISTENCY, folder, items, text, unique, upload
from tests.e2e.test_dicom import finished, fresh_study, series_files

# Thousands of blobs: on local disk, so the figures are the bus's and not moto's.
pytestmark = pytest.mark.parametrize("blobs", ["local"], indirect=True)


def frame(n: int, width: int = 4, height: int = 4) -> bytes:
    """A tiny grey PNG whose pixels spell `n`: every frame its own content."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">L", len(data)) + body + struct.pack(">L", zlib.crc32(body))

    pixels = n.to_bytes(4, "big") + bytes(width * height - 4)
    rows = b"".join(b"\0" + pixels[r * width : (r + 1) * width] for r in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">LLBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def listed_at_once(api: httpx.AsyncClient, folder_id: str) -> None:
    """An upload answers once the catalog has it: the folder lists it straight away."""
    after = await upload(api, folder_id, ("after.txt", text()))
    listed = {i["id"] for i in await items(api, folder_id)}
    assert after["files"][0]["id"] in listed


async def listed_later(api: httpx.AsyncClient, accepted: httpx.Response) -> dict[str, Any]:
    """An image group answered 202 (stored, not yet listed): its file and folder once the
    catalog has them, as the 201 would have given them."""
    stored = accepted.json()
    token = {CONSISTENCY: accepted.headers[CONSISTENCY]}
    found: dict[str, Any] = {}

    async def listed() -> bool:
        answer = await api.get(f"/v1/files/{stored['file_id']}", headers=token)
        if answer.status_code == 200:
            found["file"] = answer.json()
        return answer.status_code == 200

    await eventually(listed, within=300, what="the stored image group listed")
    answer = await api.get(f"/v1/folders/{stored['folder_id']}", headers=token)
    assert answer.status_code == 200, answer.text
    return {"file": found["file"], "folder": answer.json()}


async def test_a_10000_frame_sequence_registers_and_the_next_upload_is_listed_at_once(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("long-sequence"))
    frames = [(f"frame_{n:05d}.png", frame(n)) for n in range(10_000)]
    fields: list[tuple[str, Any]] = [("kind", (None, "image_sequence")), ("name", (None, "scan"))]
    answer = await api.post(
        f"/v1/folders/{top['id']}/image-groups",
        files=fields + [("file", (n, data, "image/png")) for n, data in frames],
        timeout=600,  # 10,000 parts to receive, sniff and store on a busy machine
    )
    # 201 once the catalog lists it; 202 when the platform's wait ran out first (a
    # loaded machine): stored, so followed with its token as the client does.
    assert answer.status_code in (201, 202), answer.text
    made: dict[str, Any] = (
        answer.json() if answer.status_code == 201 else await listed_later(api, answer)
    )
    group = made["file"]["group"]
    # The File stays small: the first 1,000 ids, and how many there are.
    assert group["images"] == 10_000 and len(group["file_ids"]) == 1000
    assert group["constituent_folder_id"] == made["folder"]["id"]
    assert made["file"]["size"] == sum(len(data) for _, data in frames)
    first = [(await api.get(f"/v1/files/{i}")).json()["name"] for i in group["file_ids"][:3]]
    assert first == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    images = await items(api, made["folder"]["id"], limit=1000)
    assert len(images) == 10_000
    assert set(group["file_ids"]) <= {i["id"] for i in images}
    await listed_at_once(api, top["id"])
    # Its images stay with it, all of them: past the first 1,000 too.
    refused = await api.post("/v1/delete", json={"file_ids": [images[-1]["id"]]})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "constituent_of_group"


# Past a page's items (limits.PAGE_ITEMS: the settled instances' pages) and a
# page's bytes (PAGE_BYTES: the series' instances added), over the DICOM context's
# batches one after the other.
INSTANCES = PAGE_ITEMS + 200


async def test_a_series_of_pages_of_instances_registers_and_the_next_upload_is_listed_at_once(
    api: httpx.AsyncClient,
) -> None:
    where = await folder(api, unique("large-ct"))
    study = fresh_study()
    instances = [
        (f"ct-{k:04}.dcm", data)
        for k, data in enumerate(ct_series(INSTANCES, study=study, rows=2, columns=2))
    ]
    answer = await api.post(
        f"/v1/folders/{where['id']}/dicom",
        files=[("file", (name, data, "application/dicom")) for name, data in instances],
        timeout=600,
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    await listed_at_once(api, where["id"])
    job = await finished(api, job_id, within=300)
    assert job["progress"] == {"done": INSTANCES, "total": INSTANCES}, job
    assert job["errors"] == []
    (series,) = await series_files(api, where["id"], 1)
    assert series["dicom"]["instances"] == INSTANCES
    assert series["size"] == sum(len(data) for _, data in instances)
    await listed_at_once(api, where["id"])
