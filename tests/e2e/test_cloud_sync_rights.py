"""Synced folders and the right to use their integration, end to end (moto as the
customer's bucket): an integration taken back from a member syncs nothing more of the
folders they set up, neither on request (theirs, or an editor's they invited) nor on a
bucket notification (the schedule's rounds: tests/integration/test_cloud_sync_merged.py,
which need not wait for one); and syncs of one folder are merged, so many requests at
once list the bucket once."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from minio import Minio

from tests.cloud_fixtures import MotoS3
from tests.e2e.conftest import BUCKET
from tests.e2e.support import error, member, text, unique
from tests.e2e.test_cloud_sync import listing, sync_done
from tests.e2e.test_imports import put, register


async def share(api: httpx.AsyncClient, integration_id: str, users: list[str]) -> None:
    shared = await api.patch(f"/v1/integrations/{integration_id}", json={"shared_with": users})
    assert shared.status_code == 200, shared.text


async def lent_integration(api: httpx.AsyncClient, moto: MotoS3, user_id: str) -> dict[str, Any]:
    answer = await register(api, moto)
    assert answer.status_code == 201, answer.text
    integration = dict(answer.json())
    await share(api, integration["id"], [user_id])
    return integration


async def made_synced(
    client: httpx.AsyncClient, integration_id: str, prefix: str, **more: Any
) -> dict[str, Any]:
    made = await client.post(
        "/v1/folders",
        json={
            "name": unique("synced"),
            "cloud_sync": {"integration_id": integration_id, "prefix": prefix, **more},
        },
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


async def latest_sync(client: httpx.AsyncClient, folder_id: str) -> dict[str, Any] | None:
    state = await client.get(f"/v1/folders/{folder_id}/sync")
    assert state.status_code == 200, state.text
    found: dict[str, Any] | None = state.json()["last_sync"]
    return found


async def told_not_usable(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "failed", job
    reason = [e for e in job["errors"] if not e["name"]]
    assert [e["code"] for e in reason] == ["integration_not_usable"], job
    assert "no longer shared" in reason[0]["message"]
    return dict(job)


async def test_an_integration_taken_back_syncs_nothing_more_on_request_or_notification(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, as_key: Any, platform: Any
) -> None:
    alice, bob = await member(api, "alice"), await member(api, "bob")
    integration = await lent_integration(api, moto, alice["id"])
    as_alice, as_bob = as_key(alice["api_key"]), as_key(bob["api_key"])
    prefix = f"{unique('unshared')}/"
    put(bucket, f"{prefix}one.txt", text("one\n"))
    top = await made_synced(as_alice, integration["id"], prefix)
    await sync_done(as_alice, top["sync_job_id"])
    invited = await as_alice.post(
        f"/v1/folders/{top['id']}/collaborators",
        json={"emails": [bob["email"]], "role": "editor"},
    )
    assert invited.status_code == 200, invited.text
    # Bob, an editor never lent the integration, syncs nothing through Alice's folder.
    error(await as_bob.post(f"/v1/folders/{top['id']}/sync"), 404, "not_found")
    await share(api, integration["id"], [])
    put(bucket, f"{prefix}after.txt", text("after the integration was taken back\n"))
    for client in (as_alice, as_bob):
        # As an import of hers would be: the integration is not found (no existence leak).
        refused = error(await client.post(f"/v1/folders/{top['id']}/sync"), 404, "not_found")
        assert integration["id"] in refused["message"]
    # A bucket notification starts no sync of her folder: its latest sync says why.
    record = {"s3": {"bucket": {"name": BUCKET}, "object": {"key": f"{prefix}after.txt"}}}
    sns = {"Type": "Notification", "Message": json.dumps({"Records": [record]})}
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as anyone:
        notified = await anyone.post(
            f"/v1/integrations/{integration['id']}/events",
            json=sns,
            headers={"Authorization": f"Bearer {integration['events_token']}"},
        )
    assert notified.status_code == 202, notified.text
    assert notified.json()["job_ids"] == []
    last = await latest_sync(as_bob, top["id"])
    assert last is not None and last["job_id"] != top["sync_job_id"]
    await told_not_usable(as_bob, last["job_id"])
    assert "after.txt" not in await listing(as_alice, top["id"])
    # An org admin may use every integration: their sync of the folder brings it.
    synced = await api.post(f"/v1/folders/{top['id']}/sync")
    assert synced.status_code == 202, synced.text
    await sync_done(api, synced.json()["job_id"])
    assert "after.txt" in await listing(as_alice, top["id"])
    # Shared with her again, she syncs again.
    await share(api, integration["id"], [alice["id"]])
    again = await as_alice.post(f"/v1/folders/{top['id']}/sync")
    assert again.status_code == 202, again.text


def listings_of(moto: MotoS3, prefix: str) -> int:
    """The listings of exactly this prefix moto's server logged (its request log: our
    fixture's file, open as the process's stderr)."""
    log = Path(os.readlink(f"/proc/{moto.process.pid}/fd/2"))
    found = 0
    for line in log.read_text(errors="replace").splitlines():
        request = line.partition('"GET ')[2].partition(" ")[0]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request).query)
        if "list-type" in query and query.get("prefix") == [prefix]:
            found += 1
    return found


async def test_syncs_asked_at_once_are_one_listing_of_the_bucket(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, platform: Any
) -> None:
    integration = (await register(api, moto)).json()
    prefix = f"{unique('flood')}/"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: put(bucket, f"{prefix}o{i}.txt", text(f"{i}\n")), range(300)))
    made = await made_synced(api, integration["id"], prefix)
    first = made["sync_job_id"]
    # While its first sync reads the 300 objects (or after it: whatever the timing), a
    # key is notified: one job has it, the first sync if it has not listed the bucket
    # yet, else one pending behind it, which lists once more when it ends.
    key = f"{prefix}notified.txt"
    put(bucket, key, text("notified\n"))
    record = {"s3": {"bucket": {"name": BUCKET}, "object": {"key": key}}}
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as anyone:
        notified = await anyone.post(
            f"/v1/integrations/{integration['id']}/events",
            json={"Records": [record]},
            headers={"Authorization": f"Bearer {integration['events_token']}"},
        )
    assert notified.status_code == 202, notified.text
    assert len(notified.json()["job_ids"]) == 1, notified.text
    # And 20 more syncs are asked at once: merged into a sync not listing yet, or the
    # one pending behind a listing one (never one job, nor one listing, each).
    answers = await asyncio.gather(*(api.post(f"/v1/folders/{made['id']}/sync") for _ in range(20)))
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    asked = {a.json()["job_id"] for a in answers}
    assert len(asked) <= 2, asked
    ids = asked | {first} | set(notified.json()["job_ids"])
    for job_id in ids:
        await sync_done(api, job_id)
    # Each job given is done: what was put before it was asked is synced.
    state = await api.get(f"/v1/folders/{made['id']}/sync")
    assert state.json()["objects"] == 301, state.json()
    assert 1 <= listings_of(moto, prefix) <= len(ids), ids
