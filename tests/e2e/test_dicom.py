"""DICOM series through the gateway, with real DICOM bytes built by pydicom."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from shared.kit.stack import Stack
from tests.conftest import eventually
from tests.dicom_fixtures import ct_dataset, ct_series, ct_slice, png_bytes, to_bytes, uid
from tests.e2e.support import error, folder, items, member, unique
from tests.e2e.test_access import invite
from tests.signing import sign_as_gateway

TAGS_3D = ["ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness"]


async def send(api: httpx.AsyncClient, folder_id: str, *files: tuple[str, bytes]) -> str:
    answer = await api.post(
        f"/v1/folders/{folder_id}/dicom",
        files=[("file", (name, data, "application/dicom")) for name, data in files],
    )
    assert answer.status_code == 202, answer.text
    assert set(answer.json()) == {"job_id"}
    return str(answer.json()["job_id"])


async def finished(api: httpx.AsyncClient, job_id: str, within: float = 20.0) -> dict[str, Any]:
    """The job once every instance is accepted or rejected and its files are in the catalog."""
    seen: dict[str, Any] = {}

    async def done() -> bool:
        answer = await api.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        seen.update(answer.json())
        return bool(seen["status"] == "done")

    try:
        await eventually(done, within, f"job {job_id} finishing")
    except AssertionError as late:
        raise AssertionError(f"{late}; last seen: {seen}") from None
    return seen


async def series_files(
    api: httpx.AsyncClient, folder_id: str, want: int, within: float = 20.0
) -> list[dict[str, Any]]:
    """The folder's dicom_series files, with their details, once there are `want`."""
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        found[:] = [i for i in await items(api, folder_id) if i.get("kind") == "dicom_series"]
        return len(found) >= want

    await eventually(listed, within, f"{want} series in the folder")
    details = []
    for item in found:
        answer = await api.get(f"/v1/files/{item['id']}")
        assert answer.status_code == 200, answer.text
        details.append(answer.json())
    return details


def slices(study: int, series: int, count: int, **fields: Any) -> list[tuple[str, bytes]]:
    return [
        (f"s{series}-{k:03}.dcm", data)
        for k, data in enumerate(ct_series(count, study=study, series=series, **fields))
    ]


def fresh_study() -> int:
    # UIDs under the fixtures' root, unique per test run: study numbers from a fresh uid.
    return int(uid().rsplit(".", 1)[1]) + 10_000


async def test_a_ct_series_with_every_tag_is_one_renderable_file(api: httpx.AsyncClient) -> None:
    where = await folder(api, unique("ct"))
    study = fresh_study()
    job_id = await send(api, where["id"], *reversed(slices(study, 1, 12)))
    job = await finished(api, job_id)
    assert job["progress"] == {"done": 12, "total": 12}
    assert job["errors"] == []
    [series] = await series_files(api, where["id"], 1)
    assert series["kind"] == "dicom_series"
    assert series["dicom"] == {
        "study_uid": uid(study),
        "series_uid": uid(study, 1),
        "patient_id": "PAT-0001",
        "modality": "CT",
        "instances": 12,
        "renderable_3d": True,
        "missing_3d_tags": [],
    }
    # The job lists the series file it made.
    again = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert [f["id"] for f in again["files"]] == [series["id"]]
    # Its content is the first slice along the slice direction.
    content = await api.get(f"/v1/files/{series['id']}/content")
    assert content.status_code == 200
    assert content.content == ct_series(12, study=study, series=1)[0]


async def test_a_series_without_3d_tags_says_which(api: httpx.AsyncClient) -> None:
    where = await folder(api, unique("no-3d"))
    study = fresh_study()
    files = slices(study, 1, 3, omit=("SliceThickness", "PixelSpacing"))
    await finished(api, await send(api, where["id"], *files))
    [series] = await series_files(api, where["id"], 1)
    assert series["dicom"]["renderable_3d"] is False
    assert series["dicom"]["missing_3d_tags"] == ["PixelSpacing", "SliceThickness"]
    assert series["dicom"]["instances"] == 3


async def test_files_missing_required_tags_name_each_tag(api: httpx.AsyncClient) -> None:
    where = await folder(api, unique("missing"))
    study = fresh_study()
    no_patient = to_bytes(
        ct_dataset(series_uid=uid(study, 1), study_uid=uid(study), omit=("PatientID",))
    )
    no_ids = to_bytes(ct_dataset(omit=("StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns")))
    good = slices(study, 2, 2)
    job = await finished(
        api,
        await send(api, where["id"], ("no-patient.dcm", no_patient), ("no-ids.dcm", no_ids), *good),
    )
    assert job["progress"] == {"done": 4, "total": 4}
    errors = {e["name"]: e for e in job["errors"]}
    assert set(errors) == {"no-patient.dcm", "no-ids.dcm"}
    for found in errors.values():
        assert set(found) == {"name", "code", "message", "details"}
        assert found["code"] == "missing_tags"
    assert errors["no-patient.dcm"]["details"]["missing_tags"] == ["PatientID"]
    assert errors["no-ids.dcm"]["details"]["missing_tags"] == [
        "Rows",
        "Columns",
        "StudyInstanceUID",
        "SeriesInstanceUID",
    ]
    assert "PatientID" in errors["no-patient.dcm"]["message"]
    # The other files of the job still import.
    [series] = await series_files(api, where["id"], 1)
    assert series["dicom"]["instances"] == 2


async def test_truncated_and_non_dicom_files_are_rejected_clearly(
    api: httpx.AsyncClient,
) -> None:
    where = await folder(api, unique("bad"))
    whole = ct_slice(rows=64, columns=64)
    job = await finished(
        api,
        await send(
            api,
            where["id"],
            ("cut.dcm", whole[: len(whole) - 1000]),
            ("picture.png", png_bytes()),
            ("notes.txt", b"not an image at all\n"),
        ),
    )
    assert job["progress"] == {"done": 3, "total": 3}
    errors = {e["name"]: e for e in job["errors"]}
    assert errors["cut.dcm"]["code"] == "truncated", errors["cut.dcm"]
    assert errors["picture.png"]["code"] == "not_dicom"
    assert errors["notes.txt"]["code"] == "not_dicom"
    assert "DICM" in errors["notes.txt"]["message"]
    assert job["files"] == []
    # The errors are the DICOM context's: paged from it, in the job's order.
    assert (job["error_count"], job["next_errors_cursor"]) == (3, None)
    assert await pages(api, job["id"], "errors", 2) == job["errors"]
    assert [i for i in await items(api, where["id"]) if i.get("kind") == "dicom_series"] == []


async def test_a_mixed_upload_makes_two_series_and_one_error(api: httpx.AsyncClient) -> None:
    where = await folder(api, unique("mixed"))
    study = fresh_study()
    first, second = slices(study, 1, 4), slices(study, 2, 3)
    mixed = [first[0], second[0], ("bad.dcm", b"garbage"), *first[1:], *second[1:]]
    job = await finished(api, await send(api, where["id"], *mixed))
    assert job["progress"] == {"done": 8, "total": 8}
    assert [(e["name"], e["code"]) for e in job["errors"]] == [("bad.dcm", "not_dicom")]
    found = await series_files(api, where["id"], 2)
    counts = {s["dicom"]["series_uid"]: s["dicom"]["instances"] for s in found}
    assert counts == {uid(study, 1): 4, uid(study, 2): 3}
    assert sorted(f["id"] for f in job["files"]) == sorted(s["id"] for s in found)
    assert job["file_count"] == 2 and job["error_count"] == 1
    paged = await pages(api, job["id"], "files", 1)
    assert [f["id"] for f in paged] == [f["id"] for f in job["files"]]


async def test_a_job_of_many_series_lists_each_once_page_after_page(
    api: httpx.AsyncClient,
) -> None:
    where = await folder(api, unique("many-series"))
    study = fresh_study()
    # Seven one-instance series, the first with a second instance sent last.
    sent = [part for n in range(1, 8) for part in slices(study, n, 1)]
    second = slices(study, 1, 2)[1]
    job = await finished(api, await send(api, where["id"], *sent, second))
    listed = [f["id"] for f in job["files"]]
    assert sorted(listed) == sorted(s["id"] for s in await series_files(api, where["id"], 7))
    assert (job["file_count"], job["next_files_cursor"]) == (7, None)
    for limit in (2, 3):
        assert [f["id"] for f in await pages(api, job["id"], "files", limit)] == listed


async def pages(api: httpx.AsyncClient, job_id: str, listed: str, limit: int) -> list[Any]:
    """Every item of a job's files or errors, `limit` a page."""
    found: list[Any] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await api.get(f"/v1/jobs/{job_id}/{listed}", params=params)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= limit
        found += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return found


async def test_the_same_instance_twice_is_one_instance(api: httpx.AsyncClient) -> None:
    where = await folder(api, unique("twice"))
    study = fresh_study()
    files = slices(study, 1, 3)
    job = await finished(api, await send(api, where["id"], *files, ("copy.dcm", files[0][1])))
    assert job["progress"] == {"done": 4, "total": 4}
    assert job["errors"] == []
    [series] = await series_files(api, where["id"], 1)
    assert series["dicom"]["instances"] == 3
    # Again in a later upload: still one instance each, still one file.
    await finished(api, await send(api, where["id"], files[1]))
    [again] = await series_files(api, where["id"], 1)
    assert again["id"] == series["id"]
    assert again["dicom"]["instances"] == 3


async def test_a_later_upload_extends_the_series(api: httpx.AsyncClient) -> None:
    where = await folder(api, unique("later"))
    other = await folder(api, unique("elsewhere"))
    study = fresh_study()
    files = slices(study, 1, 6)
    # Slices 0, 2, 3, 5 first; then 1 and 4, which go between them.
    first, later = [files[k] for k in (0, 2, 3, 5)], [files[1], files[4]]
    await finished(api, await send(api, where["id"], *first))
    [series] = await series_files(api, where["id"], 1)
    assert series["dicom"]["instances"] == 4
    job = await finished(api, await send(api, where["id"], *later))
    assert [f["id"] for f in job["files"]] == [series["id"]]

    async def extended() -> bool:
        found = (await api.get(f"/v1/files/{series['id']}")).json()
        return bool(found["dicom"]["instances"] == 6)

    await eventually(extended, 20, "the series extended")
    [same] = await series_files(api, where["id"], 1)
    assert same["id"] == series["id"]
    assert same["size"] > series["size"]
    # The viewer's slices follow the slice direction, those added in between included.
    shown = [
        (await api.get(f"/v1/files/{series['id']}/slices/{k}")).headers["etag"] for k in range(6)
    ]
    assert shown == [
        f'"{hashlib.sha256(data).hexdigest()[:32]}-{k}"' for k, (_, data) in enumerate(files)
    ]
    # The same series in another folder is another file there.
    await finished(api, await send(api, other["id"], *files[:2]))
    [there] = await series_files(api, other["id"], 1)
    assert there["id"] != series["id"]
    assert there["dicom"]["instances"] == 2


async def test_progress_moves_to_done_equals_total(api: httpx.AsyncClient, platform: Stack) -> None:
    where = await folder(api, unique("progress"))
    study = fresh_study()
    job_id = await send(api, where["id"], *slices(study, 1, 150))
    seen: list[tuple[int, int]] = []
    job: dict[str, Any] = {}

    async def done() -> bool:
        job.update((await api.get(f"/v1/jobs/{job_id}")).json())
        progress = job["progress"]
        assert progress["total"] == 150
        assert 0 <= progress["done"] <= progress["total"]
        seen.append((progress["done"], progress["total"]))
        return bool(job["status"] == "done")

    await eventually(done, 30, "the job finishing")
    assert seen[-1] == (150, 150)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    [series] = await series_files(api, where["id"], 1)
    assert series["dicom"]["instances"] == 150
    # Settled in several batches, the series is the job's one file.
    assert [f["id"] for f in job["files"]] == [series["id"]] and job["file_count"] == 1
    # Done was answered once the catalog had the DICOM context's events up to the job's
    # last settlement (its series' events come before it), which its account names: the
    # gateway waits for that position, not for the DICOM store's head.
    async with httpx.AsyncClient(
        base_url=platform.env["FILES_DICOM_URL"], event_hooks={"request": [sign_as_gateway]}
    ) as dicom:
        account = (await dicom.get(f"/internal/jobs/{job_id}")).json()
        head = (await dicom.get("/internal/consistency", params={"timeout": "0"})).json()
    assert 0 < account["position"] <= head["head"]["dicom"]
    async with httpx.AsyncClient(
        base_url=platform.env["FILES_CATALOG_URL"], event_hooks={"request": [sign_as_gateway]}
    ) as catalog:
        reached = await catalog.get(
            "/internal/consistency", params={"token": f"dicom:{account['position']}", "timeout": 0}
        )
    assert reached.json()["caught_up"] is True


async def test_the_dicom_route_needs_editor_and_multipart(api: httpx.AsyncClient) -> None:
    missing = await api.post(
        "/v1/folders/00000000-0000-0000-0000-000000000000/dicom",
        files=[("file", ("a.dcm", b"x", "application/dicom"))],
    )
    error(missing, 404, "not_found")
    where = await folder(api, unique("dicom-errors"))
    empty = await api.post(f"/v1/folders/{where['id']}/dicom", json={})
    error(empty, 415, "expected_multipart")


async def test_a_user_without_editor_role_cannot_upload_dicom(api: httpx.AsyncClient) -> None:
    where = await folder(api, unique("dicom-roles"))
    reader = await member(api, "reader")
    await invite(api, where["id"], reader["email"], "user")
    key = (await api.post(f"/v1/users/{reader['id']}/keys")).json()["api_key"]
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as as_reader:
        refused = await as_reader.post(
            f"/v1/folders/{where['id']}/dicom",
            files=[("file", ("a.dcm", ct_slice(), "application/dicom"))],
        )
    assert error(refused, 403, "forbidden")["details"]["role_needed"] == "editor"


async def test_a_deleted_series_file_is_not_extended_a_new_one_is_made(
    api: httpx.AsyncClient,
) -> None:
    where = await folder(api, unique("deleted-series"))
    study = fresh_study()
    files = slices(study, 1, 4)
    await finished(api, await send(api, where["id"], *files[:2]))
    [first] = await series_files(api, where["id"], 1)
    assert (await api.delete(f"/v1/files/{first['id']}")).status_code == 204
    # The next upload of that series starts a new file (the gateway lets the DICOM
    # context catch up with the deletion first).
    await finished(api, await send(api, where["id"], *files[2:]))
    [second] = await series_files(api, where["id"], 1)
    assert second["id"] != first["id"]
    assert second["dicom"]["instances"] == 2


async def test_a_series_back_from_the_trash_shows_its_slices_and_is_extended_again(
    api: httpx.AsyncClient,
) -> None:
    where = await folder(api, unique("trashed-series"))
    files = slices(fresh_study(), 1, 3)
    await finished(api, await send(api, where["id"], *files[:2]))
    [series] = await series_files(api, where["id"], 1)
    assert (await api.delete(f"/v1/files/{series['id']}")).status_code == 204
    restored = await api.post("/v1/trash/restore", json={"file_ids": [series["id"]]})
    assert restored.status_code == 200, restored.text
    for index in (0, 1):
        shown = await api.get(f"/v1/files/{series['id']}/slices/{index}")
        assert shown.status_code == 200, shown.text
        assert shown.headers["content-type"] == "image/png"
    # The folder has its series again: the next upload of it extends the restored file.
    await finished(api, await send(api, where["id"], *files[2:]))

    async def extended() -> bool:
        found = (await api.get(f"/v1/files/{series['id']}")).json()
        return bool(found["dicom"]["instances"] == 3)

    await eventually(extended, 20, "the restored series extended")
    [only] = await series_files(api, where["id"], 1)
    assert only["id"] == series["id"]


async def test_a_moved_series_file_is_extended_by_uploads_to_its_new_folder(
    api: httpx.AsyncClient,
) -> None:
    source = await folder(api, unique("move-from"))
    target = await folder(api, unique("move-to"))
    study = fresh_study()
    files = slices(study, 1, 5)
    await finished(api, await send(api, source["id"], *files[:3]))
    [series] = await series_files(api, source["id"], 1)
    moved = await api.post(
        "/v1/move", json={"file_ids": [series["id"]], "target_folder_id": target["id"]}
    )
    assert moved.status_code == 200, moved.text
    await finished(api, await send(api, target["id"], *files[3:]))

    async def extended() -> bool:
        found = (await api.get(f"/v1/files/{series['id']}")).json()
        return bool(found["dicom"]["instances"] == 5)

    await eventually(extended, 20, "the moved series extended")
    assert [i for i in await items(api, source["id"]) if i.get("kind") == "dicom_series"] == []
    [only] = await series_files(api, target["id"], 1)
    assert only["id"] == series["id"]


async def test_dicom_sent_as_plain_files_points_to_the_dicom_route(api: httpx.AsyncClient) -> None:
    where = await folder(api, unique("dicom-as-files"))
    answer = await api.post(
        f"/v1/folders/{where['id']}/files",
        files=[("file", ("scan.dcm", ct_slice(), "application/dicom"))],
    )
    assert "/dicom" in error(answer, 415, "unsupported_content")["message"]
