"""Imports by reference of image groups and sequences (Encord's manifest shape), through
the gateway, against moto's S3 server as the customer's bucket."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
from minio import Minio

from services.ingest.collector.projections import blob_refs
from services.ingest.imports.domain import jobs as imports
from services.ingest.imports.domain import requests
from services.ingest.jobs.projections import jobs
from shared.contracts.envelope import Cause, envelopes_of
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3
from tests.conftest import eventually
from tests.dicom_fixtures import ct_series, uid
from tests.e2e.conftest import BUCKET
from tests.e2e.support import error, folder, items, png, text, unique
from tests.e2e.test_dicom import fresh_study, series_files, slices
from tests.e2e.test_imports import (
    another_ingest,
    finished,
    integration,
    put,
    register,
    start_import,
)


async def test_image_groups_and_sequences_import_by_reference_in_encord_s_shape(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3
) -> None:
    run = uuid.uuid4().hex[:8]
    frames = {f"{run}/g/{i}.png": png(4 + i, 3) for i in range(3)}
    frames |= {f"{run}/s/{i}.png": png(6, 6) for i in range(2)}
    frames |= {f"{run}/odd/0.png": png(6, 6), f"{run}/odd/1.png": png(7, 6)}
    frames |= {f"{run}/mixed/note.txt": text("not an image\n")}
    for key, data in frames.items():
        put(bucket, key, data)
    integration_id = await integration(api, moto)
    target = await folder(api, unique("groups"))
    manifest = {
        "image_groups": [
            {
                "title": "Cats",
                # Encord numbers the frames; their order is the numbers', not the JSON's.
                "objectUrl_2": f"s3://{BUCKET}/{run}/g/2.png",
                "objectUrl_0": f"s3://{BUCKET}/{run}/g/0.png",
                "objectUrl_1": f"{moto.endpoint}/{BUCKET}/{run}/g/1.png",
                "clientMetadata": {"site": "north"},
            },
            {
                "title": "Missing",
                "objectUrl_0": f"s3://{BUCKET}/{run}/g/0.png",
                "objectUrl_1": f"s3://{BUCKET}/{run}/g/absent.png",
            },
        ],
        "image_sequences": [
            {"title": "Walk", "objectUrls": [f"{run}/s/0.png", f"{run}/s/1.png"]},
            {"title": "Odd", "keys": [f"{run}/odd/0.png", f"{run}/odd/1.png"]},
            {"title": "Mixed", "keys": [f"{run}/s/0.png", f"{run}/mixed/note.txt"]},
        ],
    }
    job_id = await start_import(api, target["id"], integration_id=integration_id, manifest=manifest)
    job = await finished(api, job_id, files=2)
    assert job["progress"] == {"done": 5, "total": 5}
    assert sorted((e["name"], e["code"]) for e in job["errors"]) == [
        ("Missing", "object_not_found"),
        ("Mixed", "kind_mismatch"),
        ("Odd", "dimensions_differ"),
    ]
    missing = next(e for e in job["errors"] if e["name"] == "Missing")
    assert missing["details"]["entry"] == "manifest.image_groups[1]"
    assert missing["details"]["frames"] == [
        {"key": f"{run}/g/absent.png", "code": "object_not_found"}
    ]

    listed = {f["name"]: f for f in await items(api, target["id"])}
    assert {n for n, f in listed.items() if f.get("type", "file") == "file"} >= {"Cats", "Walk"}
    assert {n for n in listed if n in ("Missing", "Odd", "Mixed")} == set()
    cats, walk = listed["Cats"], listed["Walk"]
    assert (cats["kind"], walk["kind"]) == ("image_group", "image_sequence")
    assert cats["metadata"] == {"site": "north"}
    assert cats["source"]["type"] == "cloud" and cats["source"]["key"] == f"{run}/g/0.png"
    assert cats["group"]["images"] == 3
    assert cats["size"] == sum(len(frames[f"{run}/g/{i}.png"]) for i in range(3))

    # Its images stay in the bucket, in order, each read for its facts.
    images = [
        (await api.get(f"/v1/files/{file_id}")).json() for file_id in cats["group"]["file_ids"]
    ]
    assert [i["source"]["key"] for i in images] == [f"{run}/g/{i}.png" for i in range(3)]
    assert [i["media"]["width"] for i in images] == [4, 5, 6]
    assert images[1]["sha256"] == hashlib.sha256(frames[f"{run}/g/1.png"]).hexdigest()
    content = await api.get(f"/v1/files/{images[2]['id']}/content")
    assert content.status_code == 307, content.text
    async with httpx.AsyncClient() as outside:
        fetched = await outside.get(content.headers["location"])
    assert fetched.content == frames[f"{run}/g/2.png"]
    group_content = await api.get(f"/v1/files/{cats['id']}/content")
    assert group_content.status_code == 307, group_content.text
    assert f"{run}/g/0.png" in group_content.headers["location"]

    # An integration whose images are left is kept (they are files imported through it).
    refused = error(
        await api.delete(f"/v1/integrations/{integration_id}"), 409, "integration_in_use"
    )
    assert images[0]["id"] in refused["details"]["file_ids"]


async def test_a_group_entry_at_fault_refuses_the_import_whole(
    api: httpx.AsyncClient, moto: MotoS3
) -> None:
    integration_id = await integration(api, moto)
    target = await folder(api, unique("bad-groups"))
    for entry, problem in [
        ({"title": "g"}, "names no frame"),
        ({"title": "g", "objectUrl_1": "a.png"}, "no gap"),
        ({"title": "g", "objectUrl_0": "s3://another-bucket/a.png"}, "another-bucket"),
    ]:
        answer = await api.post(
            f"/v1/folders/{target['id']}/imports",
            json={
                "integration_id": integration_id,
                "manifest": {"images": [{"key": "ok.png"}], "image_sequences": [entry]},
            },
        )
        found = error(answer, 422, "invalid_manifest")
        assert "manifest.image_sequences[0]" in found["message"] and problem in found["message"]
    assert await items(api, target["id"]) == []


async def test_skip_duplicate_urls_and_upsert_metadata_match_what_the_folder_imported(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3
) -> None:
    run = uuid.uuid4().hex[:8]
    for name in ("a", "b", "c"):
        put(bucket, f"{run}/{name}.png", png(3, 3))
    integration_id = await integration(api, moto)
    target = await folder(api, unique("dupes"))
    url = f"s3://{BUCKET}/{run}/a.png"
    first = await finished(
        api,
        await start_import(
            api,
            target["id"],
            integration_id=integration_id,
            keys=[f"{run}/b.png"],
            manifest={"images": [{"objectUrl": url, "clientMetadata": {"v": 1}}]},
        ),
        files=2,
    )
    assert first["progress"] == {"done": 2, "total": 2}
    a_file = next(f for f in first["files"] if f["name"] == "a.png")

    # Skipped: objects this folder already has through this integration; c is new.
    skipping = await finished(
        api,
        await start_import(
            api,
            target["id"],
            integration_id=integration_id,
            keys=[f"{run}/b.png"],
            manifest={
                "images": [{"objectUrl": url}, {"key": f"{run}/c.png"}],
                "skip_duplicate_urls": True,
            },
        ),
        files=1,
    )
    assert skipping["progress"] == {"done": 3, "total": 3, "skipped": 2}
    assert [f["name"] for f in skipping["files"]] == ["c.png"]
    names = sorted(f["name"] for f in await items(api, target["id"]))
    assert names == ["a.png", "b.png", "c.png"]

    # Upserted: the file a.png already is takes the new metadata; no new file.
    upserting = await finished(
        api,
        await start_import(
            api,
            target["id"],
            integration_id=integration_id,
            manifest={
                "images": [{"objectUrl": url, "clientMetadata": {"v": 2, "w": "x"}}],
                "upsert_metadata": True,
            },
        ),
        files=1,
    )
    assert [f["id"] for f in upserting["files"]] == [a_file["id"]]
    assert upserting["progress"] == {"done": 1, "total": 1}

    async def replaced() -> bool:
        found = (await api.get(f"/v1/files/{a_file['id']}")).json()
        return bool(found["metadata"] == {"v": 2, "w": "x"})

    await eventually(replaced, within=15, what="a.png's metadata replaced")
    assert sorted(f["name"] for f in await items(api, target["id"])) == names

    # Another folder has imported none of them: nothing is skipped there.
    elsewhere = await folder(api, unique("dupes-elsewhere"))
    fresh = await finished(
        api,
        await start_import(
            api,
            elsewhere["id"],
            integration_id=integration_id,
            manifest={"images": [{"objectUrl": url}], "skip_duplicate_urls": True},
        ),
        files=1,
    )
    assert fresh["progress"] == {"done": 1, "total": 1}


async def test_a_group_or_sequence_imported_before_is_skipped_or_upserted_whole(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3
) -> None:
    run = uuid.uuid4().hex[:8]
    for i in range(3):
        put(bucket, f"{run}/g/{i}.png", png(4, 4))
    integration_id = await integration(api, moto)
    target = await folder(api, unique("group-dupes"))
    group_keys = [f"{run}/g/{i}.png" for i in range(3)]
    sequence_keys = group_keys[:2]

    def manifest(metadata: dict[str, Any], **flags: bool) -> dict[str, Any]:
        return {
            "image_groups": [
                {
                    "title": "Cats",
                    **{f"objectUrl_{i}": f"s3://{BUCKET}/{k}" for i, k in enumerate(group_keys)},
                    "clientMetadata": metadata,
                }
            ],
            "image_sequences": [
                {"title": "Walk", "keys": sequence_keys, "clientMetadata": metadata}
            ],
            **flags,
        }

    async def imported(body: dict[str, Any], files: int) -> dict[str, Any]:
        return await finished(
            api,
            await start_import(api, target["id"], integration_id=integration_id, manifest=body),
            files=files,
        )

    first = await imported(manifest({"v": 1}), files=2)
    made = {f["name"]: f["id"] for f in first["files"]}
    assert set(made) == {"Cats", "Walk"}

    def listed_groups(found: list[dict[str, Any]]) -> list[str]:
        return sorted(f["name"] for f in found if f.get("type", "file") == "file")

    before = listed_groups(await items(api, target["id"]))

    # The same entries again: skipped whole, nothing read, no new file.
    skipping = await imported(manifest({"v": 1}, skip_duplicate_urls=True), files=0)
    assert skipping["progress"] == {"done": 2, "total": 2, "skipped": 2}
    assert skipping["errors"] == []
    assert listed_groups(await items(api, target["id"])) == before

    # Upserted: the same files take the entries' new metadata.
    upserting = await imported(manifest({"v": 2}, upsert_metadata=True), files=2)
    assert sorted(f["id"] for f in upserting["files"]) == sorted(made.values())

    async def replaced() -> bool:
        for file_id in made.values():
            found = (await api.get(f"/v1/files/{file_id}")).json()
            if found["metadata"] != {"v": 2}:
                return False
        return True

    await eventually(replaced, within=15, what="the groups' metadata replaced")
    assert listed_groups(await items(api, target["id"])) == before

    # An entry is matched whole: fewer frames, or the same frames as another kind (a
    # group of the sequence's frames), is a new file.
    partly = await imported(
        {
            "image_groups": [{"title": "Fewer", "keys": group_keys[1:]}],
            "image_sequences": [{"title": "Cats again", "keys": group_keys}],
            "skip_duplicate_urls": True,
        },
        files=2,
    )
    assert partly["progress"] == {"done": 2, "total": 2}
    assert sorted(f["name"] for f in partly["files"]) == ["Cats again", "Fewer"]


async def test_dicom_series_import_by_reference_copied_and_assembled_as_uploads_are(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3
) -> None:
    run = uuid.uuid4().hex[:8]
    study = fresh_study()
    instances = slices(study, 1, 5)
    for name, data in instances:
        put(bucket, f"{run}/ct/{name}", data)
    put(bucket, f"{run}/ct/not-dicom.dcm", text("hello\n"))
    integration_id = await integration(api, moto)
    target = await folder(api, unique("dicom-by-ref"))
    manifest = {
        "dicom_series": [
            {
                "title": "CT head",
                "clientMetadata": {"site": "north"},
                **{
                    f"objectUrl_{i}": f"s3://{BUCKET}/{run}/ct/{name}"
                    for i, (name, _) in enumerate(reversed(instances))
                },
            },
            {
                "title": "Half there",
                "objectUrl_0": f"s3://{BUCKET}/{run}/ct/{instances[0][0]}",
                "objectUrl_1": f"s3://{BUCKET}/{run}/ct/absent.dcm",
            },
            {"title": "With a stranger", "objectUrls": [f"{run}/ct/not-dicom.dcm"]},
        ]
    }
    job_id = await start_import(api, target["id"], integration_id=integration_id, manifest=manifest)
    job = await finished(api, job_id, files=1)
    assert job["progress"] == {"done": 3, "total": 3}
    assert sorted((e["name"], e["code"]) for e in job["errors"]) == [
        ("Half there", "object_not_found"),
        ("not-dicom.dcm", "not_dicom"),
    ]
    [series] = await series_files(api, target["id"], 1)
    assert series["dicom"]["instances"] == 5 and series["dicom"]["series_uid"] == uid(study, 1)
    assert [f["id"] for f in job["files"]] == [series["id"]]
    # The entry's title names the one series it made; its clientMetadata is the file's.
    assert series["name"] == "CT head" and series["metadata"] == {"site": "north"}
    # Copied in: the content is ours (the first slice), not a redirect to the bucket.
    content = await api.get(f"/v1/files/{series['id']}/content")
    assert content.status_code == 200
    assert content.content == ct_series(5, study=study, series=1)[0]
    slice_png = await api.get(f"/v1/files/{series['id']}/slices/2")
    assert slice_png.status_code == 200 and slice_png.content.startswith(b"\x89PNG")


async def test_a_dicom_series_entry_imported_before_is_skipped_or_upserted_whole(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, pool: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    study = fresh_study()
    instances = slices(study, 1, 4)
    keys = [f"{run}/ct/{name}" for name, _ in instances]
    for key, (_, data) in zip(keys, instances, strict=True):
        put(bucket, key, data)
    integration_id = await integration(api, moto)
    target = await folder(api, unique("dicom-dupes"))

    async def imported(entry: dict[str, Any], files: int, **flags: bool) -> dict[str, Any]:
        return await finished(
            api,
            await start_import(
                api,
                target["id"],
                integration_id=integration_id,
                manifest={"dicom_series": [entry], **flags},
            ),
            files=files,
        )

    # No title: the series keeps the name its modality and UID make.
    first = await imported({"objectUrls": keys, "clientMetadata": {"v": 1}}, files=1)
    [series] = await series_files(api, target["id"], 1)
    assert series["name"] == f"CT series {uid(study, 1)}"
    assert series["metadata"] == {"v": 1}
    assert [f["id"] for f in first["files"]] == [series["id"]]

    # Ingest learns which series the entry made from the DICOM context's settlement,
    # which may come a moment after the job is done.
    async def known() -> bool:
        return bool(
            await pool.fetchval(
                """SELECT count(*) FROM ingest.cloud_series s
                   JOIN ingest.cloud_dicom_entries e USING (group_file_id)
                   WHERE e.folder_id = $1""",
                uuid.UUID(target["id"]),
            )
        )

    await eventually(known, within=15, what="the entry's series known to ingest")
    # What entries are matched on is a read model of ingest's events: rebuilt the same.
    tables = ("ingest.cloud_groups", "ingest.cloud_dicom_entries", "ingest.cloud_series")

    async def matched_on() -> dict[str, list[str]]:
        return {
            t: sorted(str(dict(r)) for r in await pool.fetch(f"SELECT * FROM {t}")) for t in tables
        }

    live = await matched_on()
    await rebuild(pool, EventStore("ingest"), blob_refs)
    assert await matched_on() == live

    # The same keys, in another order: skipped whole, nothing copied, no new series.
    skipping = await imported(
        {"objectUrls": list(reversed(keys))}, files=0, skip_duplicate_urls=True
    )
    assert skipping["progress"] == {"done": 1, "total": 1, "skipped": 1}
    assert skipping["errors"] == [] and "dicom_instances" not in skipping

    upserting = await imported(
        {"objectUrls": keys, "clientMetadata": {"v": 2}}, files=1, upsert_metadata=True
    )
    assert [f["id"] for f in upserting["files"]] == [series["id"]]

    async def replaced() -> bool:
        found = (await api.get(f"/v1/files/{series['id']}")).json()
        return bool(found["metadata"] == {"v": 2})

    await eventually(replaced, within=15, what="the series' metadata replaced")

    # Fewer instances are another entry: copied and read again (they are the series'
    # already, so it stays one file).
    partly = await imported({"objectUrls": keys[:2]}, files=1, skip_duplicate_urls=True)
    assert partly["progress"] == {"done": 1, "total": 1}
    assert [f["id"] for f in partly["files"]] == [series["id"]]
    assert [s["id"] for s in await series_files(api, target["id"], 1)] == [series["id"]]


async def test_a_gcs_integration_registers_and_imports_through_its_xml_api(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3
) -> None:
    """`provider: "gcs"` with an HMAC key: moto stands in for Google's XML API (the real
    one is not reached by the tests); region "auto", gs:// object URLs."""
    key = f"{uuid.uuid4().hex[:8]}/gcs.png"
    put(bucket, key, png(5, 5))
    answer = await register(api, moto, provider="gcs", region=None)
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert (made["provider"], made["region"]) == ("gcs", "auto")
    listed = (await api.get(f"/v1/integrations/{made['id']}")).json()
    assert listed["provider"] == "gcs" and "secret_key" not in listed
    target = await folder(api, unique("gcs"))
    job = await finished(
        api,
        await start_import(
            api,
            target["id"],
            integration_id=made["id"],
            manifest={"images": [{"objectUrl": f"gs://{BUCKET}/{key}", "title": "G"}]},
        ),
        files=1,
    )
    assert job["files"][0]["media"] == {"width": 5, "height": 5}
    refused = await register(api, moto, provider="gcs", session_token="t")
    assert error(refused, 422)["details"]["fields"][0]["field"] == "session_token"


async def test_an_interrupted_import_reads_its_groups_and_series_when_ingest_starts(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, platform: Stack, pool: Any
) -> None:
    """A job recorded (its groups' requests in its stream) whose process stopped before
    reading them is taken up by the next ingest to start: the group and the series are
    read from the bucket then, each once."""
    run = uuid.uuid4().hex[:8]
    for i in range(2):
        put(bucket, f"{run}/g/{i}.png", png(4, 4))
    study = fresh_study()
    for name, data in slices(study, 1, 3):
        put(bucket, f"{run}/ct/{name}", data)
    integration_id = await integration(api, moto)
    target = await folder(api, unique("resumed-groups"))
    me = (await api.get("/v1/users/me")).json()["id"]
    job_id = uuid.uuid4()
    request = requests.parse_request(
        {
            "integration_id": integration_id,
            "manifest": {
                "image_groups": [{"title": "G", "keys": [f"{run}/g/0.png", f"{run}/g/1.png"]}],
                "dicom_series": [
                    {"objectUrls": [f"{run}/ct/{name}" for name, _ in slices(study, 1, 3)]}
                ],
            },
        },
        BUCKET,
    )
    envelopes = envelopes_of(
        imports.start(job_id, uuid.UUID(target["id"]), request),
        Cause(actor=me, correlation_id="resume-groups"),
    )
    async with pool.acquire() as conn, conn.transaction():
        await jobs.apply(conn, envelopes)
        await EventStore("ingest").append(conn, envelopes)

    second = another_ingest(platform)
    try:
        job = await finished(api, str(job_id), files=2)
    finally:
        second.terminate()
        second.wait(30)
    assert job["progress"] == {"done": 2, "total": 2} and job["errors"] == []
    kinds = sorted(f["kind"] for f in job["files"])
    assert kinds == ["dicom_series", "image_group"]
    [series] = await series_files(api, target["id"], 1)
    assert series["dicom"]["instances"] == 3
