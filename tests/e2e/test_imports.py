"""Cloud integrations and imports by reference, through the gateway, against a real S3
API: moto's server as the customer's bucket (its own process, checking signatures)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from minio import Minio

from services.dicom.projections import series as dicom_series
from services.ingest.imports.domain import jobs as imports
from services.ingest.imports.domain import requests
from services.ingest.jobs.projections import jobs
from shared.contracts.envelope import Cause, envelopes_of
from shared.kit import job_pages
from shared.kit.access import Access
from shared.kit.embedded import free_port
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3
from tests.conftest import eventually
from tests.e2e.conftest import BUCKET
from tests.e2e.support import ELF, error, folder, items, member, png, text, unique
from tests.e2e.test_dicom import finished as dicom_finished
from tests.e2e.test_dicom import fresh_study
from tests.e2e.test_dicom import send as dicom_send
from tests.e2e.test_dicom import slices as dicom_slices
from tests.signing import as_service, as_user
from tests.unit.test_media import mp4


def put(s3: Minio, key: str, data: bytes) -> None:
    s3.put_object(BUCKET, key, io.BytesIO(data), len(data))


async def register(api: httpx.AsyncClient, moto: MotoS3, **fields: Any) -> httpx.Response:
    body = {
        "name": unique("lab"),
        "provider": "s3",
        "endpoint": moto.endpoint,
        "region": "us-east-1",
        "bucket": BUCKET,
        "access_key": moto.access_key,
        "secret_key": moto.secret_key,
        **fields,
    }
    return await api.post("/v1/integrations", json=body)


async def integration(api: httpx.AsyncClient, moto: MotoS3) -> str:
    answer = await register(api, moto)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def finished(api: httpx.AsyncClient, job_id: str, files: int) -> dict[str, Any]:
    """The job once it is done and the catalog lists its `files` files."""
    job: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal job
        answer = await api.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["status"] != "failed", job
        return job["status"] == "done" and len(job["files"]) == files

    await eventually(done, within=30, what=f"import job {job_id} done with {files} files")
    return job


async def start_import(api: httpx.AsyncClient, folder_id: str, **body: Any) -> str:
    answer = await api.post(f"/v1/folders/{folder_id}/imports", json=body)
    assert answer.status_code == 202, answer.text
    assert answer.headers.get("Files-Consistency")
    return str(answer.json()["job_id"])


async def test_an_integration_is_checked_and_its_secret_never_shown(
    api: httpx.AsyncClient, moto: MotoS3, platform: Stack, as_key: Any
) -> None:
    moto.auth(True)  # the bucket now checks signatures, as S3 does
    seen: list[str] = []
    try:
        good = await register(api, moto)
        seen.append(good.text)
        assert good.status_code == 201, good.text
        made = good.json()
        assert set(made) >= {"id", "name", "provider", "bucket", "endpoint", "region"}
        assert (made["provider"], made["bucket"]) == ("s3", BUCKET)
        assert made["endpoint"] == moto.endpoint and "created_at" in made

        wrong_name = unique("wrong")
        wrong = await register(api, moto, name=wrong_name, secret_key="not-the-secret")
        seen.append(wrong.text)
        found = error(wrong, 422, "invalid_credentials")
        assert "secret key" in found["message"]
        error(await register(api, moto, bucket="no-such-bucket"), 422, "bucket_not_found")
        unreachable = await register(api, moto, endpoint="http://127.0.0.1:9")
        error(unreachable, 422, "endpoint_unreachable")
        error(await register(api, moto, provider="azure"), 422, "invalid_request")
    finally:
        moto.auth(False)

    listed = await api.get("/v1/integrations")
    seen.append(listed.text)
    assert listed.status_code == 200
    names = [i["name"] for i in listed.json()["items"]]
    assert made["name"] in names and wrong_name not in names
    one = await api.get(f"/v1/integrations/{made['id']}")
    seen.append(one.text)
    # The same, less the events token: it is answered once, at registration.
    assert one.json() == {k: v for k, v in made.items() if k != "events_token"}

    # A member may not register; integrations not shared with them do not exist for them.
    dana = as_key((await member(api, "dana"))["api_key"])
    error(await register(dana, moto), 403, "forbidden")
    assert (await dana.get("/v1/integrations")).json()["items"] == []
    error(await dana.get(f"/v1/integrations/{made['id']}"), 404)
    error(await dana.delete(f"/v1/integrations/{made['id']}"), 404)

    audit = await api.get("/v1/audit", params={"subject_id": made["id"]})
    seen.append(audit.text)
    events = [e for e in audit.json()["items"] if e["subject_id"] == made["id"]]
    # Registered, and its events token set (only the token's hash, which the audit drops).
    registered, token = events
    assert registered["type"] == "ingest.IntegrationRegistered"
    assert token["type"] == "ingest.IntegrationEventsTokenSet"
    assert token["data"] == {"integration_id": made["id"]}
    assert registered["data"]["bucket"] == BUCKET
    assert not {k for k in registered["data"] if "sealed" in k or "secret" in k}

    gone = await api.delete(f"/v1/integrations/{made['id']}")
    assert gone.status_code == 204
    error(await api.get(f"/v1/integrations/{made['id']}"), 404)

    logs = "".join(p.read_text(errors="replace") for p in (platform.data_dir / "logs").iterdir())
    for where in [*seen, logs]:
        assert moto.secret_key not in where
        assert moto.access_key not in where
    assert made["events_token"] not in logs
    assert "not-the-secret" not in logs


async def test_temporary_keys_import_with_their_session_token_and_a_role_needs_an_identity(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, platform: Stack
) -> None:
    """Keys from STS (AssumeRole) with their session token: registered, then used by
    an import while the bucket checks every signature; the token is never shown. An
    integration by role needs the platform's web identity, which this one lacks."""
    run = uuid.uuid4().hex[:8]
    put(bucket, f"{run}/cat.png", png(4, 3))
    iam = moto.client("iam")
    anyone = {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
    role = iam.create_role(
        RoleName=f"importer-{run}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [anyone]}),
    )
    iam.put_role_policy(
        RoleName=f"importer-{run}",
        PolicyName="s3",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    sts = moto.client("sts")
    role_arn = role["Role"]["Arn"]
    granted = sts.assume_role(RoleArn=role_arn, RoleSessionName="files")["Credentials"]
    temporary = {
        "access_key": granted["AccessKeyId"],
        "secret_key": granted["SecretAccessKey"],
        "session_token": granted["SessionToken"],
    }
    moto.auth(True)
    try:
        without = {k: v for k, v in temporary.items() if k != "session_token"}
        error(await register(api, moto, **without), 422, "invalid_credentials")
        answer = await register(api, moto, **temporary)
        assert answer.status_code == 201, answer.text
        assert granted["SessionToken"] not in answer.text
        target = await folder(api, unique("temporary"))
        job_id = await start_import(
            api, target["id"], integration_id=answer.json()["id"], keys=[f"{run}/cat.png"]
        )
        await finished(api, job_id, files=1)
    finally:
        moto.auth(False)
    by_role = {"access_key": None, "secret_key": None, "role_arn": role_arn}
    error(await register(api, moto, **by_role), 422, "web_identity_unavailable")
    both = await register(api, moto, role_arn=role_arn)
    assert error(both, 422, "invalid_request")["details"]["fields"][0]["field"] == "access_key"
    logs = "".join(p.read_text(errors="replace") for p in (platform.data_dir / "logs").iterdir())
    assert granted["SessionToken"] not in logs and granted["SecretAccessKey"] not in logs


async def test_imports_by_keys_prefix_and_manifest_register_files_by_reference(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, platform: Stack
) -> None:
    run = uuid.uuid4().hex[:8]
    objects = {
        f"{run}/img/cat.png": png(8, 6),
        f"{run}/img/dog.png": png(5, 7),
        f"{run}/img/notes.txt": text("field notes\n"),
        f"{run}/img/program.bin": ELF,
        f"{run}/clips/walk.mp4": mp4(),
    }
    for key, data in objects.items():
        put(bucket, key, data)
    integration_id = await integration(api, moto)

    # By keys: a missing key is reported, the rest imports.
    by_keys = await folder(api, unique("by-keys"))
    job_id = await start_import(
        api,
        by_keys["id"],
        integration_id=integration_id,
        keys=[f"{run}/img/cat.png", f"{run}/missing.png", f"{run}/clips/walk.mp4"],
    )
    job = await finished(api, job_id, files=2)
    assert job["progress"] == {"done": 3, "total": 3}
    assert [(e["name"], e["code"]) for e in job["errors"]] == [
        (f"{run}/missing.png", "object_not_found")
    ]
    listed = {f["name"]: f for f in await items(api, by_keys["id"])}
    assert set(listed) == {"cat.png", "walk.mp4"}
    cat, walk = listed["cat.png"], listed["walk.mp4"]
    assert (cat["kind"], cat["size"]) == ("image", len(objects[f"{run}/img/cat.png"]))
    assert cat["sha256"] == hashlib.sha256(objects[f"{run}/img/cat.png"]).hexdigest()
    assert cat["media"] == {"width": 8, "height": 6}
    assert cat["source"] == {
        "type": "cloud",
        "integration_id": integration_id,
        "key": f"{run}/img/cat.png",
    }
    assert walk["kind"] == "video" and walk["media"]["width"] == 1920
    details = (await api.get(f"/v1/files/{cat['id']}")).json()
    assert details["source"] == cat["source"]

    # Content: a redirect to a short-lived presigned URL of the customer's bucket.
    content = await api.get(f"/v1/files/{cat['id']}/content")
    assert content.status_code == 307, content.text
    location = content.headers["location"]
    assert location.startswith(moto.endpoint) and "X-Amz-Expires=300" in location
    async with httpx.AsyncClient() as outside:
        fetched = await outside.get(location)
    assert fetched.status_code == 200
    assert fetched.content == objects[f"{run}/img/cat.png"]
    assert fetched.headers["content-disposition"].startswith("attachment")
    # Ingest, which holds the bucket's credentials, presigns for a user who may see the
    # file (the path of its folder signed by the gateway), never for a token alone.
    presign = f"/internal/integrations/{integration_id}/presign"
    asked = {"key": f"{run}/img/dog.png", "name": "dog.png"}
    stranger = await member(api, "user")
    nobody = Access(user_id=stranger["id"], grants={})
    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        error(await ingest.get(presign, params=asked, headers=as_service()), 401)
        pathless = as_user(stranger["id"], nobody)
        error(await ingest.get(presign, params=asked, headers=pathless), 400)
        elsewhere = as_user(stranger["id"], nobody, folder_path=by_keys["id"])
        error(await ingest.get(presign, params=asked, headers=elsewhere), 404, "not_found")

    # By prefix: every object under it; what is no accepted kind is reported.
    by_prefix = await folder(api, unique("by-prefix"))
    job_id = await start_import(
        api, by_prefix["id"], integration_id=integration_id, prefix=f"{run}/img/"
    )
    job = await finished(api, job_id, files=3)
    assert job["progress"] == {"done": 4, "total": 4}
    assert [(e["name"], e["code"]) for e in job["errors"]] == [
        (f"{run}/img/program.bin", "unsupported_content")
    ]
    kinds = {f["name"]: f["kind"] for f in await items(api, by_prefix["id"])}
    assert kinds == {"cat.png": "image", "dog.png": "image", "notes.txt": "text"}

    # By manifest (Encord's cloud import JSON): titles and client metadata; an "images"
    # entry that is text is a kind mismatch (groups, sequences, DICOM series:
    # test_imports_groups.py).
    by_manifest = await folder(api, unique("by-manifest"))
    manifest = {
        "images": [
            {
                "objectUrl": f"s3://{BUCKET}/{run}/img/dog.png",
                "title": "Dog",
                "clientMetadata": {"camera": "left"},
            },
            {"objectUrl": f"{moto.endpoint}/{BUCKET}/{run}/img/notes.txt"},
        ],
        "videos": [{"key": f"{run}/clips/walk.mp4", "title": "Walk"}],
    }
    job_id = await start_import(
        api, by_manifest["id"], integration_id=integration_id, manifest=manifest
    )
    job = await finished(api, job_id, files=2)
    assert job["progress"] == {"done": 3, "total": 3}
    assert sorted((e["name"], e["code"]) for e in job["errors"]) == [
        (f"{run}/img/notes.txt", "kind_mismatch"),
    ]
    named = {f["name"]: f for f in await items(api, by_manifest["id"])}
    assert set(named) == {"Dog", "Walk"}
    assert named["Dog"]["metadata"] == {"camera": "left"}
    assert named["Dog"]["media"] == {"width": 5, "height": 7}

    # A malformed manifest is refused whole, naming the entry; nothing is recorded.
    bad = await api.post(
        f"/v1/folders/{by_manifest['id']}/imports",
        json={"integration_id": integration_id, "manifest": {"images": [{"title": "x"}]}},
    )
    assert "manifest.images[0]" in error(bad, 422, "invalid_manifest")["message"]
    unknown = await api.post(
        f"/v1/folders/{by_manifest['id']}/imports",
        json={"integration_id": str(uuid.uuid4()), "keys": ["a"]},
    )
    error(unknown, 404)


async def test_an_integration_files_were_imported_through_is_kept_until_they_are_gone(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3
) -> None:
    """Removing an integration while files imported through it are left would leave them
    with no content: refused, naming them, as long as one is left (in the trash too)."""
    key = f"{uuid.uuid4().hex[:8]}/kept.png"
    put(bucket, key, png(4, 4))
    integration_id = await integration(api, moto)
    top = await folder(api, unique("kept-by-files"))
    job = await finished(
        api, await start_import(api, top["id"], integration_id=integration_id, keys=[key]), 1
    )
    [file] = job["files"]

    refused = error(
        await api.delete(f"/v1/integrations/{integration_id}"), 409, "integration_in_use"
    )
    assert refused["details"]["file_ids"] == [file["id"]]
    assert file["id"] in refused["message"]
    assert (await api.delete(f"/v1/files/{file['id']}")).status_code == 204
    in_trash = error(await api.delete(f"/v1/integrations/{integration_id}"), 409)
    assert in_trash["details"]["file_ids"] == [file["id"]]

    purged = await api.delete("/v1/trash", params={"file_ids": file["id"]})
    assert purged.status_code == 200, purged.text
    answers: list[int] = []

    async def removed() -> bool:
        answer = await api.delete(f"/v1/integrations/{integration_id}")
        answers.append(answer.status_code)
        return answer.status_code == 204

    await eventually(removed, within=15, what=f"the integration removed (answers: {answers})")


async def viewer_of(api: httpx.AsyncClient, folder_id: str) -> dict[str, Any]:
    """A new member with the viewer's role on the folder."""
    viewer = await member(api, "viewer")
    invited = await api.post(
        f"/v1/folders/{folder_id}/collaborators",
        json={"emails": [viewer["email"]], "role": "viewer"},
    )
    assert invited.status_code == 200, invited.text
    return viewer


async def test_ingest_presigns_only_the_object_of_the_file_whose_folder_was_checked(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, platform: Stack, as_key: Any
) -> None:
    """A viewer of folder A holds a token signed for A's file (its folder's path and its
    object): with it, ingest presigns that object and no other, whatever ids the call
    names: not the object of a file of folder B, not a key of the bucket no file is,
    not A's key through another integration. Through the gateway they get A's file and
    nothing of B's."""
    run = uuid.uuid4().hex[:8]
    objects = {
        f"{run}/a.png": png(3, 3),
        f"{run}/b.png": png(4, 4),
        f"{run}/private/payroll.txt": text("never imported\n"),
    }
    for key, data in objects.items():
        put(bucket, key, data)
    integration_id = await integration(api, moto)
    other_integration = await integration(api, moto)
    in_a = await folder(api, unique("presign-a"))
    in_b = await folder(api, unique("presign-b"))
    await finished(
        api,
        await start_import(api, in_a["id"], integration_id=integration_id, keys=[f"{run}/a.png"]),
        files=1,
    )
    await finished(
        api,
        await start_import(api, in_b["id"], integration_id=integration_id, keys=[f"{run}/b.png"]),
        files=1,
    )
    [file_b] = await items(api, in_b["id"])
    viewer = await viewer_of(api, in_a["id"])
    as_viewer = as_key(viewer["api_key"])
    [file_a] = await items(as_viewer, in_a["id"])

    # Through the gateway: A's file, by a presigned URL; B's does not exist for them.
    content = await as_viewer.get(f"/v1/files/{file_a['id']}/content")
    assert content.status_code == 307, content.text
    error(await as_viewer.get(f"/v1/files/{file_b['id']}/content"), 404, "not_found")

    # At ingest, with the token the gateway signs for A's file.
    grants = Access(user_id=viewer["id"], grants={uuid.UUID(in_a["id"]): "user"})
    for_a = as_user(
        viewer["id"],
        grants,
        folder_path=in_a["id"],
        object_ref=f"{integration_id}:{run}/a.png",
    )
    presign = f"/internal/integrations/{integration_id}/presign"
    async with (
        httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest,
        httpx.AsyncClient(timeout=30) as outside,
    ):
        own = await ingest.get(
            presign, params={"key": f"{run}/a.png", "name": "a.png"}, headers=for_a
        )
        assert own.status_code == 200, own.text
        assert (await outside.get(own.json()["url"])).content == objects[f"{run}/a.png"]

        mixed = [
            (presign, f"{run}/b.png"),  # the object of B's file
            (presign, f"{run}/private/payroll.txt"),  # a key no file is
            (f"/internal/integrations/{other_integration}/presign", f"{run}/a.png"),
        ]
        for route, key in mixed:
            answer = await ingest.get(route, params={"key": key, "name": "x.png"}, headers=for_a)
            refused = error(answer, 403, "object_not_of_file")
            assert "url" not in answer.text and "X-Amz-Signature" not in answer.text
            assert key[:20] in refused["message"]
        # A token with the folder's path and no object presigns nothing.
        pathless_object = as_user(viewer["id"], grants, folder_path=in_a["id"])
        asked = {"key": f"{run}/a.png", "name": "a.png"}
        error(await ingest.get(presign, params=asked, headers=pathless_object), 400)


async def test_importing_needs_the_editor_role_on_the_folder(
    api: httpx.AsyncClient, moto: MotoS3, as_key: Any
) -> None:
    integration_id = await integration(api, moto)
    shared = await folder(api, unique("shared"))
    hidden = await folder(api, unique("hidden"))
    viewer = await viewer_of(api, shared["id"])
    client = as_key(viewer["api_key"])
    body = {"integration_id": integration_id, "keys": ["anything.png"]}
    found = error(await client.post(f"/v1/folders/{shared['id']}/imports", json=body), 403)
    assert found["details"]["role_needed"] == "editor"
    error(await client.post(f"/v1/folders/{hidden['id']}/imports", json=body), 404)


async def test_ingest_itself_checks_the_editor_role_for_an_import(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, platform: Stack
) -> None:
    """Sent straight to ingest as the gateway would send them, a viewer of the folder
    who may use the integration is refused all the same: nothing is imported."""
    integration_id = await integration(api, moto)
    shared = await folder(api, unique("shared"))
    viewer = await viewer_of(api, shared["id"])
    lent = await api.patch(
        f"/v1/integrations/{integration_id}", json={"shared_with": [viewer["id"]]}
    )
    assert lent.status_code == 200, lent.text
    prefix = unique("not-theirs")
    put(bucket, f"{prefix}/sneaked.png", png(3, 3))
    put(bucket, f"{prefix}/allowed.png", png(4, 4))
    grants = Access(user_id=viewer["id"], grants={uuid.UUID(shared["id"]): "user"})
    sneaked = {"integration_id": integration_id, "keys": [f"{prefix}/sneaked.png"]}
    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        refused = await ingest.post(
            f"/v1/folders/{shared['id']}/imports",
            json=sneaked,
            # The folder's path, as the gateway sends it once the catalog answered.
            headers=as_user(viewer["id"], grants, folder_path=shared["id"]),
        )
        found = error(refused, 403)
        assert found["details"]["role_needed"] == "editor"
        # A gateway route that forgot to ask the catalog sends no path: refused too.
        pathless = await ingest.post(
            f"/v1/folders/{shared['id']}/imports",
            json=sneaked,
            headers=as_user(viewer["id"], grants),
        )
        error(pathless, 400, "invalid_folder_path")
    # The admin's import into the folder lands alone.
    job_id = await start_import(
        api, shared["id"], integration_id=integration_id, keys=[f"{prefix}/allowed.png"]
    )
    await finished(api, job_id, 1)
    assert [i["name"] for i in await items(api, shared["id"])] == ["allowed.png"]


def another_ingest(platform: Stack) -> subprocess.Popen[bytes]:
    """One more ingest process on the platform's database (as after a restart)."""
    with open(platform.data_dir / "logs" / "ingest-resume.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.ingest", "--port", str(free_port())],
            env=platform.env,
            stdout=log,
            stderr=log,
        )


async def test_an_interrupted_import_resumes_from_its_events_when_ingest_starts(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, platform: Stack, pool: Any
) -> None:
    """A job whose process stopped after recording its start (and one batch) is taken up
    by the next ingest process to start: it reads the job's stream, skips what is settled,
    lists the prefix again and imports the rest."""
    run = uuid.uuid4().hex[:8]
    for key in (f"{run}/a.png", f"{run}/b.png", f"{run}/more/c.png", f"{run}/more/d.png"):
        put(bucket, key, png(4, 4))
    integration_id = await integration(api, moto)
    target = await folder(api, unique("resumed"))
    me = (await api.get("/v1/users/me")).json()["id"]
    job_id = uuid.uuid4()
    request = requests.parse_request(
        {
            "integration_id": integration_id,
            "keys": [f"{run}/a.png", f"{run}/b.png"],
            "prefix": f"{run}/more/",
        },
        BUCKET,
    )
    started = imports.start(job_id, uuid.UUID(target["id"]), request)
    # The first batch settled a.png (as refused, so that resuming cannot read it again).
    settled = imports.batch(
        job_id,
        uuid.UUID(target["id"]),
        uuid.UUID(integration_id),
        len(started),
        [],
        [imports.rejection(request.objects[0], "object_unreadable", "before the restart")],
    )
    envelopes = envelopes_of(started + settled, Cause(actor=me, correlation_id="resume-test"))
    async with pool.acquire() as conn, conn.transaction():
        await jobs.apply(conn, envelopes)
        await EventStore("ingest").append(conn, envelopes)

    second = another_ingest(platform)
    try:
        job = await finished(api, str(job_id), files=3)
    finally:
        second.terminate()
        second.wait(30)
    assert job["progress"] == {"done": 4, "total": 4}
    assert [e["code"] for e in job["errors"]] == ["object_unreadable"]
    names = sorted(f["name"] for f in await items(api, target["id"]))
    assert names == ["b.png", "c.png", "d.png"]


async def test_an_import_s_files_survive_a_rebuild_of_the_jobs_projection(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, pool: Any
) -> None:
    """An import's files are kept apart from its job's row (appended a batch at a time);
    `files rebuild ingest.jobs` replays them, in the same order."""
    run = uuid.uuid4().hex[:8]
    keys = [f"{run}/{i}.png" for i in range(5)]
    for i, key in enumerate(keys):
        put(bucket, key, png(3, 3 + i))
    integration_id = await integration(api, moto)
    target = await folder(api, unique("rebuilt"))
    job_id = await start_import(
        api, target["id"], integration_id=integration_id, keys=[*keys, f"{run}/gone.png"]
    )
    job = await finished(api, job_id, files=5)
    assert [f["name"] for f in job["files"]] == [k.rsplit("/", 1)[1] for k in keys]

    await rebuild(pool, EventStore("ingest"), jobs)
    again = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert again == job


async def test_a_job_larger_than_a_page_answers_its_first_page_and_pages_the_rest(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, platform: Stack, tmp_path: Path
) -> None:
    """A job's answer stays bounded: the first 1,000 files (and errors), how many there
    are and a cursor; its files and errors pages list every one once, in order, to
    those who may see the job only, and a cursor not given out is a 400. The client and
    `files jobs show --json` give them all."""
    run = uuid.uuid4().hex[:8]
    names = [f"{n:05d}.txt" for n in range(job_pages.PAGE + 50)]
    refused = [f"{run}/zz-{n}.bin" for n in range(3)]
    with ThreadPoolExecutor(8) as puts:
        list(puts.map(lambda n: put(bucket, f"{run}/{n}", n.encode()), names))
        list(puts.map(lambda key: put(bucket, key, ELF), refused))
    integration_id = await integration(api, moto)
    target = await folder(api, unique("large-job"))
    job_id = await start_import(api, target["id"], integration_id=integration_id, prefix=f"{run}/")
    job: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal job
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] != "failed", job
        return job["status"] == "done" and job["file_count"] == len(names)

    await eventually(done, within=120, what=f"import job {job_id} of {len(names)} files")
    assert len(job["files"]) == job_pages.PAGE and job["next_files_cursor"]
    assert [e["name"] for e in job["errors"]] == refused
    assert (job["error_count"], job["next_errors_cursor"]) == (3, None)

    async def pages(listed: str, limit: int, cursor: str | None = None) -> list[Any]:
        found: list[Any] = []
        while True:
            params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            page = await api.get(f"/v1/jobs/{job_id}/{listed}", params=params)
            assert page.status_code == 200, page.text
            found += page.json()["items"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return found

    # In the job's order (the order its files were registered in): the pages begin
    # with the job's first page, and hold every file once.
    every = await pages("files", 400)
    assert [f["id"] for f in every[: job_pages.PAGE]] == [f["id"] for f in job["files"]]
    assert sorted(f["name"] for f in every) == names
    rest = await pages("files", 1000, job["next_files_cursor"])
    assert [f["id"] for f in rest] == [f["id"] for f in every[job_pages.PAGE :]]
    assert [e["code"] for e in await pages("errors", 2)] == ["unsupported_content"] * 3

    stranger = await member(api, "user")
    for listed in ("files", "errors"):
        as_stranger = {"Authorization": f"Bearer {stranger['api_key']}"}
        error(await api.get(f"/v1/jobs/{job_id}/{listed}", headers=as_stranger), 404)
        garbage = await api.get(f"/v1/jobs/{job_id}/{listed}", params={"cursor": "garbage"})
        error(garbage, 400, "invalid_cursor")
    crossed = await api.get(
        f"/v1/jobs/{job_id}/errors", params={"cursor": job["next_files_cursor"]}
    )
    error(crossed, 400, "invalid_cursor")


async def test_a_job_s_lists_kept_on_its_row_move_to_the_tables_when_ingest_starts(
    api: httpx.AsyncClient, pool: Any
) -> None:
    """A job recorded before its files and errors were rows kept them in jsonb arrays on
    the job's row: the read model's setup moves them, in order, once."""
    target = await folder(api, unique("kept-on-the-row"))
    uploaded = (
        await api.post(
            f"/v1/folders/{target['id']}/files",
            files=[("file", (f"{n}.txt", text(f"{n}\n"), "text/plain")) for n in range(3)],
        )
    ).json()
    me = (await api.get("/v1/users/me")).json()["id"]
    file_ids = [f["id"] for f in uploaded["files"]]
    errors = [
        {"name": f"bad-{n}", "code": "unsupported_content", "message": "no", "details": {}}
        for n in range(2)
    ]
    job_id = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO ingest.jobs (id, folder_id, status, total, done, files, errors,
                                        created_at, created_by, kind)
               VALUES ($1, $2, 'done', 5, 5, $3, $4, now(), $5, 'upload')""",
            job_id,
            uuid.UUID(target["id"]),
            file_ids[:2],
            errors,
            me,
        )
        await jobs.setup(conn)
        await jobs.setup(conn)  # again: nothing left to move
        row = await conn.fetchrow("SELECT files, errors FROM ingest.jobs WHERE id = $1", job_id)
        assert (row["files"], row["errors"]) == ([], [])
        # A replica of the version before, during the upgrade, appends to the emptied
        # arrays: the next start moves those after the rows, none lost.
        await conn.execute(
            "UPDATE ingest.jobs SET files = $2, errors = $3 WHERE id = $1",
            job_id,
            file_ids[2:],
            errors[1:],
        )
        await jobs.setup(conn)
    try:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert [f["id"] for f in job["files"]] == [*file_ids[:2], file_ids[2]]
        assert job["errors"] == [*errors, errors[1]]
        assert (job["file_count"], job["error_count"]) == (3, 3)
    finally:
        # No event made this job: the shared platform's read model is left as its events
        # make it (test_replay compares it with its rebuild).
        async with pool.acquire() as conn, conn.transaction():
            for table in ("ingest.job_files", "ingest.job_errors", "ingest.jobs"):
                column = "id" if table == "ingest.jobs" else "job_id"
                await conn.execute(f"DELETE FROM {table} WHERE {column} = $1", job_id)


async def test_a_dicom_job_s_lists_kept_on_its_row_move_to_tables(
    api: httpx.AsyncClient, pool: Any
) -> None:
    """The DICOM context's account of a job kept its series files and refused instances
    in jsonb arrays on the job's row: its setup moves them to rows, and the job shows
    the same files and errors."""
    where = await folder(api, unique("dicom-kept-on-the-row"))
    study = fresh_study()
    sent = [("a.txt", b"not dicom\n"), *dicom_slices(study, 1, 1), ("b.png", png(2, 2))]
    job = await dicom_finished(
        api, await dicom_send(api, where["id"], *sent, *dicom_slices(study, 2, 1))
    )
    assert [e["name"] for e in job["errors"]] == ["a.txt", "b.png"]
    assert job["file_count"] == 2 and len(job["files"]) == 2
    job_id = uuid.UUID(job["id"])
    async with pool.acquire() as conn, conn.transaction():
        # As a row from before kept them (files each once, by id).
        await conn.execute(
            """UPDATE dicom.jobs SET
                   errors = (SELECT jsonb_agg(error ORDER BY position) FROM dicom.job_errors
                             WHERE job_id = $1),
                   files = (SELECT jsonb_agg(file_id ORDER BY file_id) FROM dicom.job_files
                            WHERE job_id = $1),
                   file_count = 0
               WHERE job_id = $1""",
            job_id,
        )
        await conn.execute("DELETE FROM dicom.job_errors WHERE job_id = $1", job_id)
        await conn.execute("DELETE FROM dicom.job_files WHERE job_id = $1", job_id)
        await dicom_series.setup(conn)
    again = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert again["errors"] == job["errors"] and again["error_count"] == 2
    # Moved rows are numbered by id, the order pages were read in before.
    assert again["files"] == sorted(job["files"], key=lambda f: f["id"])
    assert again["file_count"] == 2
    # Placed again as the job listed them, as a rebuild from the events places them
    # (tests/integration/test_dicom_rebuild.py compares the whole table).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE dicom.job_files SET position = -position WHERE job_id = $1", job_id
        )
        await conn.executemany(
            "UPDATE dicom.job_files SET position = $3 WHERE job_id = $1 AND file_id = $2",
            [(job_id, uuid.UUID(f["id"]), n) for n, f in enumerate(job["files"], 1)],
        )
