"""DICOM objects in a cloud-synced prefix: copied in and assembled into series in the
synced folder (the subfolder their key path names), as uploaded DICOM is."""

from __future__ import annotations

import httpx
from minio import Minio

from tests.cloud_fixtures import MotoS3
from tests.conftest import eventually
from tests.dicom_fixtures import ct_series, uid
from tests.e2e.support import png, unique
from tests.e2e.test_cloud_sync import listing, sync, sync_done, synced_folder
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
