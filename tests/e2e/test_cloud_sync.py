"""Cloud-synced folders, end to end: a folder that follows a prefix of a bucket (moto's
S3 server, its own process), synced on demand and by a bucket notification posted to
the integration's events route."""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
import uuid
from pathlib import Path
from typing import Any

import httpx
from files_client import Client
from minio import Minio

from services.ingest.imports.projections import synced
from services.ingest.jobs.projections import jobs
from shared.contracts import ingest as ev
from shared.contracts.catalog import Source
from shared.contracts.envelope import Cause, appended, envelopes_of
from shared.kit.access import Access
from shared.kit.eventstore import EventStore
from tests.cloud_fixtures import MotoS3
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.conftest import BUCKET
from tests.e2e.support import error, folder, items, member, multipart, png, text, unique, upload
from tests.e2e.support import folder as make_folder
from tests.e2e.test_cli import files
from tests.e2e.test_imports import another_ingest, put, register, viewer_of
from tests.signing import as_user


async def synced_folder(api: httpx.AsyncClient, integration_id: str, prefix: str) -> dict[str, Any]:
    answer = await api.post(
        "/v1/folders",
        json={
            "name": unique("synced"),
            "cloud_sync": {"integration_id": integration_id, "prefix": prefix},
        },
    )
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert made["cloud_sync"]["prefix"] == prefix and made["sync_job_id"]
    return dict(made)


async def sync_done(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal job
        answer = await api.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["status"] != "failed", job
        return bool(job["status"] == "done")

    await eventually(done, within=30, what=f"sync job {job_id} done")
    return job


async def sync(api: httpx.AsyncClient, folder_id: str) -> dict[str, Any]:
    answer = await api.post(f"/v1/folders/{folder_id}/sync")
    assert answer.status_code == 202, answer.text
    return await sync_done(api, answer.json()["job_id"])


async def listing(api: httpx.AsyncClient, folder_id: str) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in await items(api, folder_id)}


async def file(api: httpx.AsyncClient, file_id: str) -> dict[str, Any]:
    answer = await api.get(f"/v1/files/{file_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def test_a_synced_folder_follows_its_prefix(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio
) -> None:
    prefix = f"{unique('sync')}/"
    cat, note = png(9, 7), text("first\n")
    put(bucket, f"{prefix}cat.png", cat)
    put(bucket, f"{prefix}notes/a.txt", note)
    put(bucket, f"{prefix}notes/deep/b.txt", text("deep\n"))
    # Two key paths that differ in Unicode form only (they look the same).
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    put(bucket, f"{prefix}{composed}/x.txt", text("composed\n"))
    put(bucket, f"{prefix}{decomposed}/y.txt", text("decomposed\n"))
    answer = await register(api, moto)
    assert answer.status_code == 201, answer.text
    integration = answer.json()
    assert integration["events_token"]
    folder = await synced_folder(api, integration["id"], prefix)
    # The catalog knows it synced as soon as it is answered: no folder made in it by hand.
    refused = await api.post("/v1/folders", json={"name": "mine", "parent_id": folder["id"]})
    found = error(refused, 409, "folder_cloud_synced")
    assert found["details"]["synced_folder_id"] == folder["id"]
    assert repr(folder["name"]) in found["message"] and "bucket" in found["message"]
    await sync_done(api, folder["sync_job_id"])

    # Files from the bytes; key paths as subfolders.
    async def listed() -> bool:
        found = await listing(api, folder["id"])
        return {"cat.png", "notes"} <= set(found) and len(found) == 4

    await eventually(listed, within=20, what="the synced folder lists its objects")
    top = await listing(api, folder["id"])
    image = top["cat.png"]
    assert (image["kind"], image["sha256"]) == ("image", hashlib.sha256(cat).hexdigest())
    assert image["source"]["key"] == f"{prefix}cat.png"
    notes = top["notes"]
    assert notes["type"] == "folder"

    async def deep() -> bool:
        below = await listing(api, notes["id"])
        return "a.txt" in below and "deep" in below

    await eventually(deep, within=20, what="subfolders made from key paths")
    a_txt = (await listing(api, notes["id"]))["a.txt"]
    # As with a folder of that name made by hand, the second is told apart by its id.
    forms = sorted(n for n in top if unicodedata.normalize("NFC", n).startswith(composed))
    plain = [n for n in forms if n in (composed, decomposed)]
    assert len(forms) == 2 and len(plain) == 1, forms
    told = next(n for n in forms if n not in plain)
    assert re.fullmatch(r"caf(\u00e9|e\u0301) \([0-9a-f]{8}\)", told), told

    # A dataset synced with the folder has its files.
    made = await api.post(
        "/v1/datasets", json={"name": unique("ds"), "synced_folder_id": folder["id"]}
    )
    assert made.status_code == 201, made.text
    dataset_id = made.json()["id"]

    async def in_dataset(file_id: str, present: bool) -> bool:
        answer = await api.get(f"/v1/datasets/{dataset_id}/files", params={"limit": 1000})
        assert answer.status_code == 200, answer.text
        return (file_id in {f["id"] for f in answer.json()["items"]}) == present

    await eventually(lambda: in_dataset(image["id"], True), within=20, what="dataset has it")

    # Uploads into a synced folder (and its subfolders) are refused, naming why.
    body, headers = multipart(("x.txt", text()))
    refused = await api.post(f"/v1/folders/{folder['id']}/files", content=body, headers=headers)
    assert "cloud-synced" in error(refused, 409, "folder_cloud_synced")["message"]
    body, headers = multipart(("x.txt", text()))
    refused = await api.post(f"/v1/folders/{notes['id']}/files", content=body, headers=headers)
    error(refused, 409, "folder_cloud_synced")
    # Nor a folder made by hand in a key path's subfolder, nor anything moved in.
    refused = await api.post("/v1/folders", json={"name": "mine", "parent_id": notes["id"]})
    found = error(refused, 409, "folder_cloud_synced")
    assert found["details"]["synced_folder_id"] == folder["id"]
    assert repr(folder["name"]) in found["message"]
    outside = await make_folder(api, unique("outside"))
    mine = (await upload(api, outside["id"], ("mine.txt", text())))["files"][0]
    plain = await make_folder(api, "plain", outside["id"])
    for target in (folder["id"], notes["id"]):
        moved = await api.post(
            "/v1/move",
            json={
                "file_ids": [mine["id"]],
                "folder_ids": [plain["id"]],
                "target_folder_id": target,
            },
        )
        found = error(moved, 409, "folder_cloud_synced")
        assert found["details"]["synced_folder_id"] == folder["id"]
    assert set(await listing(api, outside["id"])) == {"mine.txt", "plain"}
    assert set(await listing(api, notes["id"])) == {"a.txt", "deep"}
    # A folder's answer says whether that rule holds for it (a key path's subfolder, and
    # in a listing and a search too): the web app's move dialog leaves those out by it.
    for shown, follows in ((folder, True), (notes, True), (outside, False), (plain, False)):
        got = await api.get(f"/v1/folders/{shown['id']}")
        assert got.json()["cloud_synced"] is follows, shown["name"]
    assert (await listing(api, notes["id"]))["deep"]["cloud_synced"] is True
    assert (await listing(api, outside["id"]))["plain"]["cloud_synced"] is False
    hits = await api.get("/v1/search", params={"q": "notes", "kind": "folder"})
    assert [h["cloud_synced"] for h in hits.json()["items"] if h["id"] == notes["id"]] == [True]

    # An unchanged re-sync reads nothing and changes nothing.
    again = await sync(api, folder["id"])
    assert again["files"] == [] and again["errors"] == []

    # Gone: a tombstone, content 410, out of the synced dataset.
    bucket.remove_object(BUCKET, f"{prefix}cat.png")
    await sync(api, folder["id"])

    async def tombstoned() -> bool:
        return bool((await file(api, image["id"])).get("tombstone"))

    await eventually(tombstoned, within=20, what="the gone object's file is a tombstone")
    content = await api.get(f"/v1/files/{image['id']}/content", follow_redirects=False)
    error(content, 410, "object_gone")
    await eventually(lambda: in_dataset(image["id"], False), within=20, what="out of dataset")

    # Back under the same key: the same file, no longer a tombstone, back in the dataset.
    put(bucket, f"{prefix}cat.png", cat)
    await sync(api, folder["id"])

    async def back() -> bool:
        return "tombstone" not in await file(api, image["id"])

    await eventually(back, within=20, what="the returned object's file is back")
    assert (await listing(api, folder["id"]))["cat.png"]["id"] == image["id"]
    await eventually(lambda: in_dataset(image["id"], True), within=20, what="back in dataset")
    content = await api.get(f"/v1/files/{image['id']}/content", follow_redirects=False)
    assert content.status_code == 307, content.text

    # Changed bytes: read again, a new sha256 (and an event says so).
    changed = text("second, longer\n")
    put(bucket, f"{prefix}notes/a.txt", changed)
    await sync(api, folder["id"])

    async def rehashed() -> bool:
        return bool((await file(api, a_txt["id"]))["sha256"] == hashlib.sha256(changed).hexdigest())

    await eventually(rehashed, within=20, what="the changed object's new sha256")
    history = await api.get("/v1/audit", params={"subject_id": a_txt["id"]})
    assert history.status_code == 200, history.text
    assert "catalog.FileContentChanged" in {e["type"] for e in history.json()["items"]}

    # Moving out and deleting stay allowed; the sync's folders are there as before.
    moved = await api.post(
        "/v1/move", json={"file_ids": [a_txt["id"]], "target_folder_id": outside["id"]}
    )
    assert moved.status_code == 200, moved.text
    assert (await file(api, a_txt["id"]))["folder_id"] == outside["id"]
    assert (await api.delete(f"/v1/files/{image['id']}")).status_code == 204
    assert set(await listing(api, notes["id"])) == {"deep"}


async def test_a_bucket_notification_makes_a_new_object_visible(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, platform: Any
) -> None:
    prefix = f"{unique('notified')}/"
    answer = await register(api, moto)
    assert answer.status_code == 201, answer.text
    integration = answer.json()
    token = integration["events_token"]
    folder = await synced_folder(api, integration["id"], prefix)
    await sync_done(api, folder["sync_job_id"])
    key = f"{prefix}new.png"
    put(bucket, key, png(5, 5))
    # S3's event notification JSON, as SNS wraps it (MinIO's webhook sends the record as is).
    record = {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": 10}},
    }
    sns = {"Type": "Notification", "Message": json.dumps({"Records": [record]})}
    route = f"/v1/integrations/{integration['id']}/events"
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as anyone:
        error(await anyone.post(route, json=sns), 401)
        wrong = await anyone.post(route, json=sns, headers={"Authorization": "Bearer nope"})
        error(wrong, 403)
        # The listing does not move for a refused notification.
        assert "new.png" not in await listing(api, folder["id"])
        good = await anyone.post(route, json=sns, headers={"Authorization": f"Bearer {token}"})
        assert good.status_code == 202, good.text
        assert good.json()["records"] == 1 and len(good.json()["job_ids"]) == 1
        # MinIO's webhook target: its auth_token as the header, the records at the top.
        minio = await anyone.post(
            route,
            json={
                "EventName": "s3:ObjectCreated:Put",
                "Key": f"{BUCKET}/{key}",
                "Records": [record],
            },
            headers={"Authorization": token},
        )
        assert minio.status_code == 202, minio.text

    async def visible() -> bool:
        return "new.png" in await listing(api, folder["id"])

    await eventually(visible, within=10, what="the notified object visible in the folder")
    assert [f for f in (await listing(api, folder["id"])).values() if f["name"] == "new.png"]


async def test_integrations_listed_rotated_and_kept_while_used(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, platform: Any, as_key: Any
) -> None:
    answer = await register(api, moto)
    assert answer.status_code == 201, answer.text
    integration = answer.json()
    listed = await api.get("/v1/integrations", params={"limit": 1000})
    assert listed.status_code == 200
    shown = json.dumps(listed.json())
    assert moto.secret_key not in shown and "events_token" not in shown
    assert integration["events_token"] not in shown

    # Rotation: new keys checked against the bucket first.
    moto.auth(True)
    try:
        wrong = await api.patch(
            f"/v1/integrations/{integration['id']}",
            json={"access_key": moto.access_key, "secret_key": "not-the-secret"},
        )
        error(wrong, 422, "invalid_credentials")
        rotated = await api.patch(
            f"/v1/integrations/{integration['id']}",
            json={
                "access_key": moto.access_key,
                "secret_key": moto.secret_key,
                "rotate_events_token": True,
            },
        )
        assert rotated.status_code == 200, rotated.text
    finally:
        moto.auth(False)
    fresh = rotated.json()["events_token"]
    assert fresh and fresh != integration["events_token"]
    assert moto.secret_key not in rotated.text

    # Removal is refused while a synced folder follows it, naming the folder.
    kept_prefix = f"{unique('kept')}/"
    put(bucket, f"{kept_prefix}k/x.txt", text())
    folder = await synced_folder(api, integration["id"], kept_prefix)
    await sync_done(api, folder["sync_job_id"])
    # A key path's subfolder moved out is still the sync's (new keys under it arrive
    # there): no folder is made in it by hand while the sync lasts.
    k = (await listing(api, folder["id"]))["k"]
    away = await make_folder(api, unique("away"))
    moved = await api.post(
        "/v1/move", json={"folder_ids": [k["id"]], "target_folder_id": away["id"]}
    )
    assert moved.status_code == 200, moved.text
    refused = await api.post("/v1/folders", json={"name": "mine", "parent_id": k["id"]})
    assert error(refused, 409, "folder_cloud_synced")["details"]["synced_folder_id"] == folder["id"]
    # Who sees only where it went is refused too, and not told which folder syncs it.
    editor = await member(api, "away-editor")
    invited = await api.post(
        f"/v1/folders/{away['id']}/collaborators",
        json={"emails": [editor["email"]], "role": "editor"},
    )
    assert invited.status_code == 200, invited.text
    refused = await as_key(editor["api_key"]).post(
        "/v1/folders", json={"name": "mine", "parent_id": k["id"]}
    )
    found = error(refused, 409, "folder_cloud_synced")
    assert folder["id"] not in refused.text and repr(folder["name"]) not in refused.text
    # Nor is an upload there (ingest refuses it), while the admin is told.
    for who, told in ((as_key(editor["api_key"]), False), (api, True)):
        refused = await who.post(
            f"/v1/folders/{k['id']}/files", files=[("file", ("y.txt", text(), "text/plain"))]
        )
        found = error(refused, 409, "folder_cloud_synced")
        assert (folder["id"] in refused.text) is told, refused.text
    x_txt = (await listing(api, k["id"]))["x.txt"]
    assert (await api.delete(f"/v1/files/{x_txt['id']}")).status_code == 204
    gone = await api.delete("/v1/trash", params={"file_ids": x_txt["id"]})
    assert gone.status_code == 200, gone.text
    refused = await api.delete(f"/v1/integrations/{integration['id']}")
    found = error(refused, 409, "integration_in_use")
    assert found["details"]["folder_ids"] == [folder["id"]]
    assert (await api.get(f"/v1/integrations/{integration['id']}")).status_code == 200
    # Ingest decides the editor role itself, from the folder's path the gateway sends: a
    # member with no grant, sent straight to ingest as the gateway would send them, is
    # refused, and so is a call without the path.
    stranger = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        refused = await ingest.post(
            f"/v1/folders/{folder['id']}/sync",
            headers=as_user(stranger, Access(user_id=stranger), folder_path=folder["id"]),
        )
        assert refused.status_code == 404, refused.text
        pathless = await ingest.post(
            f"/v1/folders/{folder['id']}/sync",
            headers=as_user(stranger, Access(user_id=stranger)),
        )
        error(pathless, 400, "invalid_folder_path")
    # In the trash it is paused and still holds the integration (it may come back);
    # restored, it syncs again; purged, it follows nothing and the integration may go.
    assert (await api.delete(f"/v1/folders/{folder['id']}")).status_code == 204
    kept = error(await api.delete(f"/v1/integrations/{integration['id']}"), 409)
    assert kept["details"]["folder_ids"] == [folder["id"]]
    restored = await api.post("/v1/trash/restore", json={"folder_ids": [folder["id"]]})
    assert restored.status_code == 200, restored.text
    again = await api.post(f"/v1/folders/{folder['id']}/sync")
    assert again.status_code == 202, again.text
    await sync_done(api, again.json()["job_id"])
    assert (await api.delete(f"/v1/folders/{folder['id']}")).status_code == 204
    purged = await api.delete("/v1/trash", params={"folder_ids": folder["id"]})
    assert purged.status_code == 200, purged.text

    async def removed() -> bool:
        answer = await api.delete(f"/v1/integrations/{integration['id']}")
        assert answer.status_code in (204, 409), answer.text
        return answer.status_code == 204

    await eventually(removed, within=20, what="the integration removed once unused")

    # The sync ended: its subfolder is a plain folder again.
    async def plain() -> bool:
        made = await api.post("/v1/folders", json={"name": "mine", "parent_id": k["id"]})
        assert made.status_code in (201, 409), made.text
        return made.status_code == 201

    await eventually(plain, within=20, what="a folder made in the ended sync's subfolder")
    # Bad cloud_sync: named.
    bad = await api.post(
        "/v1/folders",
        json={"name": unique("bad"), "cloud_sync": {"integration_id": "nope", "prefix": ""}},
    )
    assert bad.status_code in (400, 422), bad.text


async def test_ingest_itself_checks_the_editor_role_before_a_folder_follows_a_prefix(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, platform: Any
) -> None:
    """Sent straight to ingest's configure route as the gateway would send them (signed,
    by someone who may use the integration), a member with no role on the folder finds
    nothing, a viewer is refused, and a call without the folder's path, or with another
    folder's, is refused: the folder follows no prefix and reads nothing."""
    integration_id = (await register(api, moto)).json()["id"]
    target = await folder(api, unique("not-synced"))
    viewer = await viewer_of(api, target["id"])
    mallory = await member(api, "mallory")
    theirs = await folder(api, unique("mallorys"))
    invited = await api.post(
        f"/v1/folders/{theirs['id']}/collaborators",
        json={"emails": [mallory["email"]], "role": "editor"},
    )
    assert invited.status_code == 200, invited.text
    lent = await api.patch(
        f"/v1/integrations/{integration_id}", json={"shared_with": [viewer["id"], mallory["id"]]}
    )
    assert lent.status_code == 200, lent.text
    prefix = f"{unique('sneaked')}/"
    put(bucket, f"{prefix}sneaked.png", png(3, 3))
    body = {"integration_id": integration_id, "prefix": prefix}
    route = f"/internal/folders/{target['id']}/cloud-sync"
    own = Access(user_id=mallory["id"], grants={uuid.UUID(theirs["id"]): "editor"})
    viewing = Access(user_id=viewer["id"], grants={uuid.UUID(target["id"]): "user"})
    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        # No role on it: as if it did not exist.
        stranger = as_user(mallory["id"], own, folder_path=target["id"])
        error(await ingest.post(route, json=body, headers=stranger), 404, "not_found")
        # A viewer: told the role needed.
        found = error(
            await ingest.post(
                route, json=body, headers=as_user(viewer["id"], viewing, folder_path=target["id"])
            ),
            403,
            "forbidden",
        )
        assert found["details"]["role_needed"] == "editor"
        # No path signed (a gateway route that forgot the check), or the path of a folder
        # the caller edits rather than this one's: refused.
        pathless = as_user(mallory["id"], own)
        error(await ingest.post(route, json=body, headers=pathless), 400, "invalid_folder_path")
        elsewhere = as_user(mallory["id"], own, folder_path=theirs["id"])
        error(await ingest.post(route, json=body, headers=elsewhere), 400, "invalid_folder_path")
    # The folder follows nothing and lists nothing.
    error(await api.post(f"/v1/folders/{target['id']}/sync"), 409, "not_cloud_synced")
    assert await items(api, target["id"]) == []


async def test_a_member_makes_a_synced_folder_at_the_top_level_and_below_one_they_edit(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, as_key: Any
) -> None:
    """Through the gateway, a member (no org admin: their admin grant on a new top-level
    folder comes from the ACL, by reaction) makes a synced folder and sees it synced; an
    editor of a folder makes one inside it; a viewer may not."""
    integration_id = (await register(api, moto)).json()["id"]
    parent = await folder(api, unique("lab"))
    alice, vera = await member(api, "alice"), await member(api, "vera")
    for who, role in ((alice, "editor"), (vera, "viewer")):
        invited = await api.post(
            f"/v1/folders/{parent['id']}/collaborators",
            json={"emails": [who["email"]], "role": role},
        )
        assert invited.status_code == 200, invited.text
    lent = await api.patch(
        f"/v1/integrations/{integration_id}", json={"shared_with": [alice["id"], vera["id"]]}
    )
    assert lent.status_code == 200, lent.text
    as_alice, as_vera = as_key(alice["api_key"]), as_key(vera["api_key"])
    prefix = f"{unique('hers')}/"
    put(bucket, f"{prefix}cat.png", png(5, 4))

    top = await synced_folder(as_alice, integration_id, prefix)
    assert top["parent_id"] is None and top["my_role"] == "admin"
    assert top["cloud_sync"]["integration_id"] == integration_id
    await sync_done(as_alice, top["sync_job_id"])
    assert set(await listing(as_alice, top["id"])) == {"cat.png"}
    # Theirs at once: they sync it again themselves.
    assert (await sync(as_alice, top["id"]))["files"] == []

    made = await as_alice.post(
        "/v1/folders",
        json={
            "name": unique("inside"),
            "parent_id": parent["id"],
            "cloud_sync": {"integration_id": integration_id, "prefix": prefix},
        },
    )
    assert made.status_code == 201, made.text
    inside = made.json()
    assert inside["parent_id"] == parent["id"] and inside["my_role"] == "editor"
    await sync_done(as_alice, inside["sync_job_id"])
    assert set(await listing(as_alice, inside["id"])) == {"cat.png"}

    name = unique("viewed")
    refused = await as_vera.post(
        "/v1/folders",
        json={
            "name": name,
            "parent_id": parent["id"],
            "cloud_sync": {"integration_id": integration_id, "prefix": prefix},
        },
    )
    assert error(refused, 403, "forbidden")["details"]["role_needed"] == "editor"
    assert name not in await listing(api, parent["id"])


def test_the_client_and_cli_make_and_sync_a_synced_folder(
    platform: Any, moto: MotoS3, bucket: Minio, tmp_path: Path
) -> None:
    prefix = f"{unique('cli')}/"
    put(bucket, f"{prefix}one.png", png(4, 4))
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        made = c.create_integration(
            unique("cli"),
            bucket=BUCKET,
            access_key=moto.access_key,
            secret_key=moto.secret_key,
            endpoint=moto.endpoint,
            region="us-east-1",
        )
        assert made.events_token
        name = unique("clisync")
        folder = c.create_synced_folder(name, integration=made, prefix=prefix)
        assert folder.cloud_sync and folder.sync_job_id
        c.wait_for_job(folder.sync_job_id, timeout=30)
        put(bucket, f"{prefix}two.png", png(3, 3))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FILES_")},
            "FILES_URL": platform.gateway_url,
            "FILES_API_KEY": ADMIN_KEY,
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_STATE_HOME": str(tmp_path / "state"),
        }
        done = files(env, "sync", name)
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert "1 new file(s)" in done.stdout
        listed = files(env, "integrations", "ls")
        assert listed.returncode == 0 and made.id in listed.stdout, listed
        assert moto.secret_key not in listed.stdout
        rotated = c.rotate_integration(made, events_token=True)
        assert rotated.events_token and rotated.events_token != made.events_token
        names = {f.name for f in folder.items()}
        assert {"one.png", "two.png"} <= names


async def test_an_interrupted_sync_runs_again_and_applies_nothing_twice(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, platform: Any, pool: Any
) -> None:
    """A sync whose process stopped after one batch (x.png recorded) is run again by the
    next ingest to start: x.png is known by key and ETag and not recorded again; y.png,
    not yet recorded, is."""
    prefix = f"{unique('resumed')}/"
    answer = await register(api, moto)
    assert answer.status_code == 201, answer.text
    integration = answer.json()
    folder = await synced_folder(api, integration["id"], prefix)
    await sync_done(api, folder["sync_job_id"])
    put(bucket, f"{prefix}x.png", png(6, 6))
    put(bucket, f"{prefix}y.png", png(7, 7))
    x = bucket.stat_object(BUCKET, f"{prefix}x.png")
    me = (await api.get("/v1/users/me")).json()["id"]
    job_id, file_id, root = uuid.uuid4(), uuid.uuid4(), uuid.UUID(folder["id"])
    source = Source(type="cloud", integration_id=uuid.UUID(integration["id"]), key=x.object_name)
    recorded = [
        ev.UploadJobStarted(job_id=job_id, folder_id=root, total=0, kind="sync"),
        ev.FileContentStored(
            job_id=job_id,
            file_id=file_id,
            folder_id=root,
            name="x.png",
            kind="image",
            size=x.size,
            sha256=hashlib.sha256(png(6, 6)).hexdigest(),
            mime_type="image/png",
            blob_key=f"ref:{file_id}",
            source=source,
        ),
        ev.CloudObjectSynced(
            job_id=job_id,
            root_folder_id=root,
            key=x.object_name,
            file_id=file_id,
            etag=(x.etag or "").strip('"'),
            size=x.size or 0,
            last_modified="",
        ),
    ]
    envelopes = envelopes_of(
        appended(ev.job_stream(job_id), recorded), Cause(actor=me, correlation_id="resume-sync")
    )
    async with pool.acquire() as conn, conn.transaction():
        await jobs.apply(conn, envelopes)
        await synced.apply(conn, envelopes)
        await EventStore("ingest").append(conn, envelopes)

    second = another_ingest(platform)
    try:
        await sync_done(api, str(job_id))
    finally:
        second.terminate()
        second.wait(30)

    async def both() -> bool:
        return {"x.png", "y.png"} <= set(await listing(api, folder["id"]))

    await eventually(both, within=20, what="x.png and y.png listed")
    names = [i["name"] for i in await items(api, folder["id"])]
    assert sorted(names) == ["x.png", "y.png"]
    assert (await listing(api, folder["id"]))["x.png"]["id"] == str(file_id)


async def test_a_folders_sync_state_is_read_by_anyone_with_a_role_on_it(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, as_key: Any
) -> None:
    """`GET /v1/folders/{id}/sync`: the prefix, the objects listed and the latest sync,
    for a User of the folder too; a key path's subfolder says it is in a synced folder
    (naming it only to who has a role there); a plain folder follows nothing; a
    stranger finds no folder. The integration is named to anyone with a role on the
    folder, also to a User who may not read the integration itself."""
    integration = (await register(api, moto)).json()
    integration_id = integration["id"]
    prefix = f"{unique('state')}/"
    put(bucket, f"{prefix}cat.png", png(5, 4))
    put(bucket, f"{prefix}deep/dog.png", png(4, 5))
    top = await synced_folder(api, integration_id, prefix)
    await sync_done(api, top["sync_job_id"])
    una, stranger = await member(api, "una"), await member(api, "stranger")
    invited = await api.post(
        f"/v1/folders/{top['id']}/collaborators", json={"emails": [una["email"]], "role": "user"}
    )
    assert invited.status_code == 200, invited.text
    as_una, as_stranger = as_key(una["api_key"]), as_key(stranger["api_key"])

    answer = await as_una.get(f"/v1/folders/{top['id']}/sync")
    assert answer.status_code == 200, answer.text
    state = answer.json()
    assert state["cloud_synced"] and state["synced_folder_id"] == top["id"]
    assert state["cloud_sync"]["prefix"] == prefix and state["paused"] is False
    assert state["cloud_sync"]["integration_name"] == integration["name"]
    error(await as_una.get(f"/v1/integrations/{integration_id}"), 404, "not_found")
    assert state["objects"] == 2
    assert state["last_sync"]["job_id"] == top["sync_job_id"]
    assert state["last_sync"]["status"] == "done"

    deep = (await listing(api, top["id"]))["deep"]
    inside = (await as_una.get(f"/v1/folders/{deep['id']}/sync")).json()
    assert inside == {"cloud_synced": True, "synced_folder_id": top["id"]}
    # Moved out to a folder the stranger edits, it still says what it is, not whose.
    theirs = await folder(api, unique("theirs"))
    lent = await api.post(
        f"/v1/folders/{theirs['id']}/collaborators",
        json={"emails": [stranger["email"]], "role": "editor"},
    )
    assert lent.status_code == 200, lent.text
    moved = await api.post(
        "/v1/move", json={"folder_ids": [deep["id"]], "target_folder_id": theirs["id"]}
    )
    assert moved.status_code == 200, moved.text
    assert (await as_stranger.get(f"/v1/folders/{deep['id']}/sync")).json() == {
        "cloud_synced": True
    }

    plain = (await api.get(f"/v1/folders/{theirs['id']}/sync")).json()
    assert plain == {"cloud_synced": False}
    error(await as_stranger.get(f"/v1/folders/{top['id']}/sync"), 404, "not_found")

    # What the state says it follows, sent back as it is, makes a folder following the
    # same (the name, read-only, is ignored rather than refused).
    again = await api.post(
        "/v1/folders", json={"name": unique("echoed"), "cloud_sync": state["cloud_sync"]}
    )
    assert again.status_code == 201, again.text
    assert again.json()["cloud_sync"]["prefix"] == prefix
    await sync_done(api, again.json()["sync_job_id"])
