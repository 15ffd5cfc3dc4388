"""DICOM objects in a cloud-synced prefix: copied in and assembled into series in the
synced folder (the subfolder their key path names), as uploaded DICOM is."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import httpx
from minio import Minio

from tests.cloud_fixtures import MotoS3
from tests.conftest import eventually
from tests.dicom_fixtures import ct_series, ct_slice, slice_positions, uid
from tests.e2e.conftest import BUCKET
from tests.e2e.support import error, png, unique
from tests.e2e.test_cloud_sync import file, listing, sync, sync_done, synced_folder
from tests.e2e.test_dicom import fresh_study, series_files
from tests.e2e.test_imports import integration, put


async def test_dicom_objects_of_a_synced_prefix_become_series_of_the_folder(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio
) -> None:
    prefix = f"{unique('sync-dicom')}/"
    study = fresh_study()
    instances = ct_series(5, study=study, series=1)
    for k, data in enumerate(instances[:3]):
        put(bucket, f"{prefix}scans/{k:03}.dcm", data)
    put(bucket, f"{prefix}cover.png", png(4, 4))
    folder = await synced_folder(api, await integration(api, moto), prefix)
    first = await sync_done(api, folder["sync_job_id"])
    assert first["errors"] == []
    assert first["progress"] == {"done": 4, "total": 4}

    top = await listing(api, folder["id"])
    assert top["cover.png"]["kind"] == "image"
    scans = top["scans"]
    assert scans["type"] == "folder"
    [series] = await series_files(api, scans["id"], 1)
    assert series["dicom"]["series_uid"] == uid(study, 1)
    assert series["dicom"]["instances"] == 3
    assert series["id"] in [f["id"] for f in first["files"]]
    content = await api.get(f"/v1/files/{series['id']}/content")
    assert content.status_code == 200 and content.content == instances[0]

    # Unchanged objects are not read again; new instances extend the series.
    again = await sync(api, folder["id"])
    assert again["progress"] == {"done": 0, "total": 0}
    for k in (3, 4):
        put(bucket, f"{prefix}scans/{k:03}.dcm", instances[k])
    more = await sync(api, folder["id"])
    assert more["progress"] == {"done": 2, "total": 2} and more["errors"] == []
    [extended] = await series_files(api, scans["id"], 1)

    async def five() -> bool:
        found = (await api.get(f"/v1/files/{series['id']}")).json()
        return bool(found["dicom"]["instances"] == 5)

    await eventually(five, within=20, what="the series extended to 5 instances")
    assert extended["id"] == series["id"]


async def test_a_synced_dicom_object_gone_leaves_its_series_and_the_last_one_tombstones_it(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, pool: Any
) -> None:
    """An instance whose object left the bucket is no longer the series' (its file's
    count, slices, content, DICOMweb; its blob released); a series left with none is a
    tombstone, as a synced file whose object is gone, and comes back with its object.
    A sync run again applies nothing twice."""
    prefix = f"{unique('sync-dicom-gone')}/"
    study = fresh_study()
    ct = ct_series(3, study=study, series=1)
    single = ct_series(1, study=study, series=2)
    for k, data in enumerate(ct):
        put(bucket, f"{prefix}scans/{k:03}.dcm", data)
    put(bucket, f"{prefix}scans/single.dcm", single[0])
    folder = await synced_folder(api, await integration(api, moto), prefix)
    assert (await sync_done(api, folder["sync_job_id"]))["errors"] == []
    scans = (await listing(api, folder["id"]))["scans"]
    found = {s["dicom"]["series_uid"]: s for s in await series_files(api, scans["id"], 2)}
    series, alone = found[uid(study, 1)], found[uid(study, 2)]
    assert series["dicom"]["instances"] == 3
    root = f"/v1/folders/{scans['id']}/dicomweb/studies/{uid(study)}/series"

    async def held(file_id: str) -> int:
        count: int = await pool.fetchval(
            "SELECT count(*) FROM ingest.blob_series WHERE file_id = $1", uuid.UUID(file_id)
        )
        return count

    await eventually(lambda: _is(held(series["id"]), 3), within=20, what="3 blobs held")

    # The first slice's object goes: the series has two, shows the next one first.
    bucket.remove_object(BUCKET, f"{prefix}scans/000.dcm")
    await sync(api, folder["id"])

    async def two() -> bool:
        return bool((await file(api, series["id"]))["dicom"]["instances"] == 2)

    await eventually(two, within=20, what="the series down to 2 instances")
    shown = await file(api, series["id"])
    assert "tombstone" not in shown
    content = await api.get(f"/v1/files/{series['id']}/content")
    assert content.status_code == 200 and content.content == ct[1]
    assert (await api.get(f"/v1/files/{series['id']}/slices/1")).status_code == 200
    assert (await api.get(f"/v1/files/{series['id']}/slices/2")).status_code == 404
    qido = await api.get(root)
    assert qido.status_code == 200, qido.text
    counts = {s["0020000E"]["Value"][0]: s["00201209"]["Value"][0] for s in qido.json()}
    assert counts == {uid(study, 1): 2, uid(study, 2): 1}
    gone_sop = uid(study, 1, 1)
    wado = await api.get(f"{root}/{uid(study, 1)}/instances/{gone_sop}")
    assert wado.status_code == 404, wado.text
    await eventually(lambda: _is(held(series["id"]), 2), within=20, what="its blob released")

    # Run again: nothing applied twice.
    stream = f"dicom-series-{series['id']}"
    version = "SELECT max(stream_version) FROM dicom.events WHERE stream_id = $1"
    before = await pool.fetchval(version, stream)
    again = await sync(api, folder["id"])
    assert again["progress"] == {"done": 0, "total": 0}
    assert await pool.fetchval(version, stream) == before

    # The last instance of a series goes: its file is a tombstone, as a plain one.
    bucket.remove_object(BUCKET, f"{prefix}scans/single.dcm")
    await sync(api, folder["id"])

    async def tombstoned() -> bool:
        return bool((await file(api, alone["id"])).get("tombstone"))

    await eventually(tombstoned, within=20, what="the emptied series a tombstone")
    error(await api.get(f"/v1/files/{alone['id']}/content"), 410, "object_gone")
    qido = await api.get(root)
    assert [s["0020000E"]["Value"][0] for s in qido.json()] == [uid(study, 1)]
    await eventually(lambda: _is(held(alone["id"]), 0), within=20, what="its blob released")

    # Back under the same key: the same file, no longer a tombstone.
    put(bucket, f"{prefix}scans/single.dcm", single[0])
    await sync(api, folder["id"])

    async def back() -> bool:
        shown = await file(api, alone["id"])
        return "tombstone" not in shown and shown["dicom"]["instances"] == 1

    await eventually(back, within=20, what="the series back with its object")
    content = await api.get(f"/v1/files/{alone['id']}/content")
    assert content.status_code == 200 and content.content == single[0]
    listed = {s["id"] for s in await series_files(api, scans["id"], 2)}
    assert listed == {series["id"], alone["id"]}


async def _is(count: Awaitable[int], want: int) -> bool:
    return await count == want


async def test_a_synced_dicom_object_whose_bytes_changed_is_replaced_in_its_series(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, pool: Any
) -> None:
    """New bytes under the same SOP Instance UID replace the instance (the series serves
    them; the old blob is let go); another SOP Instance UID, or bytes no longer DICOM,
    are the old instance gone and a new arrival."""
    prefix = f"{unique('sync-dicom-changed')}/"
    study = fresh_study()
    ct = ct_series(3, study=study, series=1)
    for k, data in enumerate(ct):
        put(bucket, f"{prefix}scans/{k:03}.dcm", data)
    folder = await synced_folder(api, await integration(api, moto), prefix)
    assert (await sync_done(api, folder["sync_job_id"]))["errors"] == []
    scans = (await listing(api, folder["id"]))["scans"]
    [series] = await series_files(api, scans["id"], 1)
    assert series["dicom"]["instances"] == 3
    root = f"/v1/folders/{scans['id']}/dicomweb/studies/{uid(study)}/series/{uid(study, 1)}"

    # The first slice's bytes change under its SOP Instance UID (the file's content);
    # the third's key now holds another instance of the series; the second's, a PNG.
    changed = ct_series(3, study=study, series=1, pixel_data=bytes([7]) * 128)
    assert changed[0] != ct[0]
    put(bucket, f"{prefix}scans/000.dcm", changed[0])
    other = ct_slice(
        sop_uid=uid(study, 1, 9),
        series_uid=uid(study, 1),
        study_uid=uid(study),
        position=slice_positions(3)[2],
        instance_number=1,
    )
    put(bucket, f"{prefix}scans/002.dcm", other)
    put(bucket, f"{prefix}scans/001.dcm", png(4, 4))
    job = await sync(api, folder["id"])
    assert job["errors"] == []

    async def replaced() -> bool:
        shown = await file(api, series["id"])
        return bool(shown["dicom"]["instances"] == 2 and shown["sha256"] != series["sha256"])

    await eventually(replaced, within=20, what="the series with its changed instances")
    content = await api.get(f"/v1/files/{series['id']}/content")
    assert content.status_code == 200 and content.content == changed[0]
    instances = await api.get(f"{root}/instances")
    assert instances.status_code == 200, instances.text
    assert {i["00080018"]["Value"][0] for i in instances.json()} == {
        uid(study, 1, 1),
        uid(study, 1, 9),
    }
    for sop, want in ((uid(study, 1, 1), 200), (uid(study, 1, 3), 404), (uid(study, 1, 2), 404)):
        answer = await api.get(f"{root}/instances/{sop}")
        assert answer.status_code == want, (sop, answer.text)
    retrieved = await api.get(f"{root}/instances/{uid(study, 1, 1)}")
    assert bytes([7]) * 128 in retrieved.content  # the new pixels

    async def plain() -> bool:
        found = await listing(api, scans["id"])
        return found.get("001.dcm", {}).get("kind") == "image"

    await eventually(plain, within=20, what="the key that is no longer DICOM a plain file")

    # The blobs the series holds are its two instances' (the replaced ones let go).
    stream = f"dicom-series-{series['id']}"
    shown = await pool.fetch(
        "SELECT blob_key FROM dicom.instances WHERE file_id = $1", uuid.UUID(series["id"])
    )

    async def held() -> bool:
        rows = await pool.fetch(
            "SELECT blob_key FROM ingest.blob_series WHERE file_id = $1", uuid.UUID(series["id"])
        )
        return {r["blob_key"] for r in rows} == {r["blob_key"] for r in shown}

    await eventually(held, within=20, what="only the current instances' blobs held")
    assert len(shown) == 2

    # Run again: nothing applied twice.
    version = "SELECT max(stream_version) FROM dicom.events WHERE stream_id = $1"
    before = await pool.fetchval(version, stream)
    again = await sync(api, folder["id"])
    assert again["progress"] == {"done": 0, "total": 0}
    assert await pool.fetchval(version, stream) == before
