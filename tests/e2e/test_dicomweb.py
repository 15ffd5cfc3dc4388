"""DICOMweb on a folder's series, driven by `dicomweb-client` as a viewer's back end would
be: QIDO-RS searches, WADO-RS retrieves (instances, metadata, frames, rendered), behind
the caller's key and the folder's rights."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from requests import HTTPError

from shared.kit.access import Access
from tests.dicom_fixtures import ct_dataset, to_bytes, uid
from tests.e2e.support import error, folder, member, unique
from tests.e2e.test_dicom import finished, fresh_study, send
from tests.signing import as_service, as_user


def series_of(
    study: int, series: int, count: int, modality: str, listed: dict[str, Any] | None = None
) -> list[tuple[str, bytes]]:
    """`count` 16x16 slices, slice k uniformly k * 100; `listed`: more header values."""
    return [
        (
            f"s{series}-{k}.dcm",
            to_bytes(
                ct_dataset(
                    sop_uid=uid(study, series, k + 1),
                    series_uid=uid(study, series),
                    study_uid=uid(study),
                    position=(0.0, 0.0, k * 2.0),
                    instance_number=k + 1,
                    rows=16,
                    columns=16,
                    pixel_data=np.full((16, 16), k * 100, np.uint16).tobytes(),
                    modality=modality,
                    overrides={"WindowCenter": "150", "WindowWidth": "300", **(listed or {})},
                )
            ),
        )
        for k in range(count)
    ]


def dicomweb(api: httpx.AsyncClient, folder_id: str, key: str) -> DICOMwebClient:
    return DICOMwebClient(
        url=f"{api.base_url}/v1/folders/{folder_id}/dicomweb",
        headers={"Authorization": f"Bearer {key}"},
    )


def value(attributes: dict[str, Any], tag: str) -> Any:
    found = attributes.get(tag, {}).get("Value", [None])
    return found[0] if len(found) == 1 else found


async def test_a_viewer_searches_and_retrieves_a_folder_s_series_and_nothing_else(
    api: httpx.AsyncClient,
) -> None:
    from tests.conftest import ADMIN_KEY

    here, elsewhere = await folder(api, unique("dicomweb")), await folder(api, unique("other"))
    study, other = fresh_study(), fresh_study() + 1
    described = {
        "PatientName": "Doe^Jane",
        "StudyDate": "20240105",
        "StudyDescription": "Chest CT",
        "AccessionNumber": "ACC-7",
    }
    ct = series_of(
        study, 1, 4, "CT", {**described, "SeriesNumber": 3, "SeriesDescription": "Axial"}
    )
    # A value that does not read cleanly is left out; the instance is still taken.
    mr = series_of(study, 2, 2, "MR", {**described, "ReferringPhysicianName": "Dr\x07Who"})
    for where, files in ((here, ct + mr), (elsewhere, series_of(other, 1, 2, "CT"))):
        job = await finished(api, await send(api, where["id"], *files))
        assert job["errors"] == [], job["errors"]
    client = dicomweb(api, here["id"], ADMIN_KEY)

    def run(method: str, *args: Any, **kwargs: Any) -> Any:
        return asyncio.to_thread(getattr(client, method), *args, **kwargs)

    # QIDO-RS: the folder's one study (not the other folder's), its series, their instances.
    [found] = await run("search_for_studies")
    assert value(found, "0020000D") == uid(study)
    assert value(found, "00100020") == "PAT-0001"
    assert sorted(value(found, "00080061")) == ["CT", "MR"]
    assert (value(found, "00201206"), value(found, "00201208")) == (2, 6)
    assert value(found, "00100010") == {"Alphabetic": "Doe^Jane"}
    assert (value(found, "00080020"), value(found, "00081030")) == ("20240105", "Chest CT")
    assert value(found, "00080050") == "ACC-7" and "Value" not in found["00080090"]
    assert await run("search_for_studies", search_filters={"PatientID": "PAT-*"}) != []
    assert await run("search_for_studies", search_filters={"PatientID": "nobody"}) == []
    # What a study list searches by: names regardless of case, dates by day or range.
    for filters, hits in (
        ({"PatientName": "doe^j*"}, 1),
        ({"PatientName": "Roe*"}, 0),
        ({"StudyDate": "20240105"}, 1),
        ({"StudyDate": "20240101-20240131"}, 1),
        ({"StudyDate": "-20231231"}, 0),
        ({"StudyDescription": "*chest*", "AccessionNumber": "ACC-7"}, 1),
        ({"AccessionNumber": "acc-7"}, 0),
    ):
        assert len(await run("search_for_studies", search_filters=filters)) == hits, filters
    # A series-level key picks the study; its figures still count all of its series.
    [picked] = await run("search_for_studies", search_filters={"SeriesDescription": "axial"})
    assert (value(picked, "00201206"), value(picked, "00201208")) == (2, 6)
    assert sorted(value(picked, "00080061")) == ["CT", "MR"]
    assert await run("search_for_studies", search_filters={"StudyInstanceUID": uid(other)}) == []
    series = await run("search_for_series", uid(study))
    assert [(value(s, "0020000E"), value(s, "00080060"), value(s, "00201209")) for s in series] == [
        (uid(study, 1), "CT", 4),
        (uid(study, 2), "MR", 2),
    ]
    assert [(value(s, "00200011"), value(s, "0008103E")) for s in series] == [
        (3, "Axial"),
        (None, None),
    ]
    [mr_only] = await run("search_for_series", search_filters={"Modality": "MR"})
    assert value(mr_only, "0020000E") == uid(study, 2)
    [third] = await run("search_for_series", search_filters={"SeriesNumber": "3"})
    assert value(third, "0020000E") == uid(study, 1)
    instances = await run("search_for_instances", uid(study), uid(study, 1))
    assert [value(i, "00080018") for i in instances] == [uid(study, 1, k) for k in range(1, 5)]
    assert [value(i, "00200013") for i in instances] == [1, 2, 3, 4]
    assert {value(i, "00080016") for i in instances} == {"1.2.840.10008.5.1.4.1.1.2"}
    page = await run("search_for_instances", uid(study), uid(study, 1), limit=2, offset=2)
    assert [value(i, "00080018") for i in page] == [uid(study, 1, 3), uid(study, 1, 4)]

    # WADO-RS: the instances as stored, byte for byte; their headers; a frame; a picture.
    retrieved = await run("retrieve_series", uid(study), uid(study, 1))
    sent = {ds.SOPInstanceUID: data for ds, data in ((_read(d), d) for _, d in ct)}
    assert {str(ds.SOPInstanceUID) for ds in retrieved} == set(sent)
    for ds in retrieved:
        assert ds.PixelData == _read(sent[str(ds.SOPInstanceUID)]).PixelData
    assert len(await run("retrieve_study", uid(study))) == 6
    # Each part names its instance's retrieve URL (what `files download` names files by).
    root = f"/v1/folders/{here['id']}/dicomweb"
    whole = await api.get(f"{root}/studies/{uid(study)}/series/{uid(study, 1)}")
    assert [
        line.split(b": ", 1)[1].decode()
        for line in whole.content.split(b"\r\n")
        if line.lower().startswith(b"content-location: ")
    ] == [
        f"{root}/studies/{uid(study)}/series/{uid(study, 1)}/instances/{uid(study, 1, k)}"
        for k in range(1, 5)
    ]
    headers = await run("retrieve_series_metadata", uid(study), uid(study, 2))
    assert [value(h, "00080018") for h in headers] == [uid(study, 2, 1), uid(study, 2, 2)]
    assert all("7FE00010" not in h and value(h, "00080060") == "MR" for h in headers)
    [frame] = await run(
        "retrieve_instance_frames", uid(study), uid(study, 1), uid(study, 1, 3), [1]
    )
    assert np.frombuffer(frame, np.uint16).tolist() == [200] * 256
    picture = await run(
        "retrieve_instance_rendered",
        uid(study),
        uid(study, 1),
        uid(study, 1, 3),
        media_types=("image/png",),
    )
    grey = np.asarray(Image.open(io.BytesIO(picture)).convert("L"))
    assert grey.shape == (16, 16) and abs(float(grey.mean()) - 170) < 3

    # Another folder's study is not there; an unknown frame is named; a bad UID is refused.
    with pytest.raises(HTTPError) as missing:
        await run("retrieve_study", uid(other))
    assert missing.value.response.status_code == 404
    path = f"/v1/folders/{here['id']}/dicomweb/studies/{uid(study)}/series/{uid(study, 1)}"
    no_frame = await api.get(f"{path}/instances/{uid(study, 1, 1)}/frames/2")
    assert (no_frame.status_code, no_frame.json()["error"]["code"]) == (404, "frame_not_found")
    # Asked for a kind of answer a resource is not given as: 406, naming what it is.
    for resource in (path, f"/v1/folders/{here['id']}/dicomweb/studies", f"{path}/metadata"):
        evil = await api.get(resource, headers={"Accept": "application/x-evil"})
        assert (evil.status_code, evil.json()["error"]["code"]) == (406, "not_acceptable")
    frames = await api.get(
        f"{path}/instances/{uid(study, 1, 1)}/frames/1",
        headers={"Accept": 'multipart/related; type="image/jpeg"'},
    )
    assert frames.status_code == 406 and "octet-stream" in frames.json()["error"]["message"]
    bad = await api.get(f"/v1/folders/{here['id']}/dicomweb/studies", params={"PatientID": "a\\b"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_query")
    ignored = await api.get(f"/v1/folders/{here['id']}/dicomweb/studies", params={"StudyTime": "1"})
    assert ignored.status_code == 200 and "StudyTime" in ignored.headers["warning"]
    bad_date = await api.get(
        f"/v1/folders/{here['id']}/dicomweb/studies", params={"StudyDate": "2024-01"}
    )
    assert bad_date.status_code == 400 and "StudyDate" in bad_date.json()["error"]["message"]

    # Someone who may not see the folder sees nothing of it, as an unknown folder.
    stranger = await member(api, "dicomweb-stranger")
    outside = dicomweb(api, here["id"], stranger["api_key"])
    with pytest.raises(HTTPError) as refused:
        await asyncio.to_thread(outside.search_for_studies)
    assert refused.value.response.status_code == 404
    with pytest.raises(HTTPError) as refused:
        await asyncio.to_thread(outside.retrieve_series, uid(study), uid(study, 1))
    assert refused.value.response.status_code == 404


async def test_the_dicom_context_itself_serves_a_folder_only_to_those_with_a_role_there(
    api: httpx.AsyncClient, platform: Any
) -> None:
    """Sent straight to the DICOM context with a signed identity, as the gateway sends
    them: searches and retrievals need the `user` role on the folder, decided there from
    the folder's path the gateway found in the catalog and signed in the caller's token
    (not only by the gateway); a call with no signed path, or a service's own token
    (no user), is refused."""
    top = await folder(api, unique("dicom-checks"))
    inner = await folder(api, "inner", top["id"])
    study = fresh_study()
    job = await finished(api, await send(api, inner["id"], *series_of(study, 1, 2, "CT")))
    assert job["errors"] == [], job["errors"]
    stranger = await member(api, "stranger")
    reader = await member(api, "reader")
    path = f"{top['id']},{inner['id']}"
    nothing = Access(user_id=stranger["id"])
    reading = Access(user_id=reader["id"], grants={uuid.UUID(top["id"]): "user"})
    base = f"/v1/folders/{inner['id']}/dicomweb"
    asked = (
        "/studies",
        f"/studies/{uid(study)}/series",
        f"/studies/{uid(study)}",
        f"/studies/{uid(study)}/metadata",
        f"/studies/{uid(study)}/series/{uid(study, 1)}/instances/{uid(study, 1, 1)}/rendered",
    )
    async with httpx.AsyncClient(base_url=platform.env["FILES_DICOM_URL"], timeout=30) as dicom:
        for route in asked:
            refused = await dicom.get(
                base + route, headers=as_user(stranger["id"], nothing, folder_path=path)
            )
            assert error(refused, 404, "not_found")["message"] == (
                f"folder {inner['id']} does not exist"
            ), route
            unsigned = await dicom.get(base + route, headers=as_user(reader["id"], reading))
            error(unsigned, 400, "invalid_folder_path")
            error(await dicom.get(base + route, headers=as_service()), 401, "unauthenticated")
            allowed = await dicom.get(
                base + route, headers=as_user(reader["id"], reading, folder_path=path)
            )
            assert allowed.status_code == 200, (route, allowed.text)


def _read(data: bytes) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(data))


async def test_instances_stored_through_stow_rs_are_found_and_bad_ones_named(
    api: httpx.AsyncClient,
) -> None:
    from tests.conftest import ADMIN_KEY

    here = await folder(api, unique("stow"))
    study = fresh_study()
    client = dicomweb(api, here["id"], ADMIN_KEY)
    datasets = [_read(data) for _, data in series_of(study, 1, 3, "CT")]

    answer = await asyncio.to_thread(client.store_instances, datasets)
    stored = [str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence]
    assert sorted(stored) == sorted(uid(study, 1, k) for k in range(1, 4))
    assert {str(i.ReferencedSOPClassUID) for i in answer.ReferencedSOPSequence} == {
        "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    }
    assert "FailedSOPSequence" not in answer
    # Stored as an upload is: found by search at once, and a series file in the folder.
    [found] = await asyncio.to_thread(client.search_for_series, uid(study))
    assert value(found, "00201209") == 3
    listed = (await api.get(f"/v1/folders/{here['id']}/items")).json()["items"]
    assert [i["kind"] for i in listed] == ["dicom_series"]

    # A part that is no DICOM file is named as not stored; none stored is a 409.
    boundary = "stow-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + b"not a dicom file"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    refused = await api.post(
        f"/v1/folders/{here['id']}/dicomweb/studies",
        content=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
    )
    assert refused.status_code == 409, refused.text
    [failure] = refused.json()["00081198"]["Value"]
    assert failure["00081197"]["Value"] == [0xC000]
    job = await api.get(refused.headers["content-location"])
    assert job.json()["errors"][0]["code"] == "not_dicom"
    # Parts of another type, and bodies of another shape, are refused before anything.
    wrong = await api.post(
        f"/v1/folders/{here['id']}/dicomweb/studies",
        content=body.replace(b"application/dicom", b"application/dicom+json"),
        headers={"Content-Type": f"multipart/related; boundary={boundary}"},
    )
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (415, "unsupported_media_type")
    form = await api.post(
        f"/v1/folders/{here['id']}/dicomweb/studies", files=[("file", ("a.dcm", b"x"))]
    )
    assert (form.status_code, form.json()["error"]["code"]) == (415, "expected_multipart")

    # Storing needs the editor role: someone who may not see the folder is told nothing.
    stranger = await member(api, "stow-stranger")
    with pytest.raises(HTTPError) as denied:
        await asyncio.to_thread(
            dicomweb(api, here["id"], stranger["api_key"]).store_instances, datasets
        )
    assert denied.value.response.status_code == 404


async def test_an_instance_whose_header_and_pixels_disagree_is_a_422_not_a_500(
    api: httpx.AsyncClient,
) -> None:
    """Instances accepted for their kept tags whose frames the header misdescribes, or
    with a value that does not parse: each frame asked of them is a 422 naming why, and
    their series' metadata is one whole JSON array (a raise mid-stream dropped it)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    here = await folder(api, unique("hostile-dicomweb"))
    study = fresh_study()

    def instance(series: int, **fields: Any) -> bytes:
        return to_bytes(
            ct_dataset(
                sop_uid=uid(study, series, 1),
                series_uid=uid(study, series),
                study_uid=uid(study),
                rows=4,
                columns=4,
                **fields,
            )
        )

    hostile = {
        1: instance(1, omit=["BitsAllocated"]),
        # Three frames named, one fragment held.
        2: instance(
            2,
            transfer_syntax=RLELossless,
            pixel_data=encapsulate([b"\0" * 40]),
            overrides={"NumberOfFrames": 3},
        ),
        # Five frames named, one held (uncompressed).
        3: instance(3, overrides={"NumberOfFrames": 5}),
        4: instance(4, overrides={"NumberOfFrames": "7777"}).replace(b"7777", b"zzzz"),
    }
    job = await finished(
        api, await send(api, here["id"], *((f"{n}.dcm", b) for n, b in hostile.items()))
    )
    assert job["progress"] == {"done": 4, "total": 4} and job["errors"] == []
    base = f"/v1/folders/{here['id']}/dicomweb/studies/{uid(study)}"
    for series, frame in ((1, 1), (2, 2), (3, 2), (4, 1)):
        path = f"{base}/series/{uid(study, series)}/instances/{uid(study, series, 1)}"
        answer = await api.get(f"{path}/frames/{frame}")
        error(answer, 422, "cannot_serve_frames")
        listed = await api.get(f"{base}/series/{uid(study, series)}/metadata")
        assert listed.status_code == 200 and len(listed.json()) == 1
    [junk] = (await api.get(f"{base}/series/{uid(study, 4)}/metadata")).json()
    assert "00280008" not in junk and value(junk, "00080018") == uid(study, 4, 1)

    # Values scanners write that strict DICOM would not, in elements an upload does not
    # check (a DS of 17 characters, an LO past 64), are served as they are.
    center = "40.00000000000001"
    sloppy = instance(5, overrides={"WindowCenter": center, "SeriesDescription": "s" * 70})
    job = await finished(api, await send(api, here["id"], ("5.dcm", sloppy)))
    assert job["errors"] == [], job
    answer = await api.get(f"{base}/series/{uid(study, 5)}/metadata")
    assert answer.status_code == 200, answer.text
    [kept] = answer.json()
    assert value(kept, "00281050") == float(center)
    assert value(kept, "0008103E") == "s" * 70


async def test_a_frame_named_again_is_answered_once(api: httpx.AsyncClient) -> None:
    """Frames 1,1,1 were three copies of the frame (100 names: a hundredfold answer from
    one short URL); each frame asked for is one part, in the order first asked."""
    here = await folder(api, unique("repeated-frames"))
    study = fresh_study()
    pixels = [bytes([n]) * (4 * 4 * 2) for n in (1, 2, 3)]
    instance = ct_dataset(
        sop_uid=uid(study, 1, 1),
        series_uid=uid(study, 1),
        study_uid=uid(study),
        rows=4,
        columns=4,
        pixel_data=b"".join(pixels),
        overrides={"NumberOfFrames": 3},
    )
    job = await finished(api, await send(api, here["id"], ("multi.dcm", to_bytes(instance))))
    assert job["errors"] == [], job
    path = (
        f"/v1/folders/{here['id']}/dicomweb/studies/{uid(study)}/series/{uid(study, 1)}"
        f"/instances/{uid(study, 1, 1)}/frames"
    )

    async def parts(frames: str) -> list[bytes]:
        answer = await api.get(f"{path}/{frames}")
        assert answer.status_code == 200, answer.text
        boundary = answer.headers["content-type"].split("boundary=")[1].encode()
        return [
            part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
            for part in answer.content.split(b"--" + boundary)[1:-1]
        ]

    assert await parts("1,1,1") == [pixels[0]]
    assert await parts("3,1,3,2,1") == [pixels[2], pixels[0], pixels[1]]
    assert await parts("2") == [pixels[1]]
