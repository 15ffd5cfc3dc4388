"""Webhooks: registered by org admins, sent signed (Standard Webhooks) to a receiver of
the test's own on loopback (on the one port the test platform's
FILES_WEBHOOK_ALLOWED_ENDPOINTS allows), tried again after a failure, listed with their
deliveries."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import grpc
import httpx
import pytest
from aiohttp import web
from minio import Minio

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.files_pb.files.v1 import files_pb2_grpc as rpc
from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3
from tests.conftest import WEBHOOK_RECEIVER_PORT, eventually
from tests.e2e.support import error, folder, member, png, unique, upload
from tests.e2e.test_cli import env, fails, ok
from tests.e2e.test_cloud_sync import sync_done, synced_folder
from tests.e2e.test_grpc import ADMIN
from tests.e2e.test_imports import put, register


@dataclass
class Receiver:
    url: str
    # (path, headers, body) of every request, in order.
    got: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    # Answers still to give a path before 200s.
    failures: dict[str, list[int]] = field(default_factory=dict)
    # A path that always answers 503 with this body.
    refusals: dict[str, bytes] = field(default_factory=dict)
    # A path whose next request is answered only once this is set.
    holds: dict[str, asyncio.Event] = field(default_factory=dict)

    def of(self, path: str, file_id: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [
            (headers, json.loads(body))
            for at, headers, body in self.got
            if at == path and json.loads(body)["data"].get("file_id") == file_id
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver("")

    async def take(request: web.Request) -> web.Response:
        found.got.append((request.path, dict(request.headers), await request.read()))
        held = found.holds.pop(request.path, None)
        if held is not None:
            await held.wait()
        if request.path in found.refusals:
            return web.Response(status=503, body=found.refusals[request.path])
        failing = found.failures.get(request.path)
        if failing:
            return web.Response(status=failing.pop(0), text="not now")
        return web.Response(status=200, text="ok")

    app = web.Application()
    app.router.add_post("/{name}", take)
    runner = web.AppRunner(app)
    await runner.setup()
    # On the one loopback port the platform's webhooks are allowed (tests/conftest.py).
    site = web.TCPSite(runner, "127.0.0.1", WEBHOOK_RECEIVER_PORT, reuse_port=True)
    await site.start()
    found.url = f"http://127.0.0.1:{WEBHOOK_RECEIVER_PORT}"
    yield found
    await runner.cleanup()


def verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The signature as the Standard Webhooks spec has a receiver check it."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    signatures = headers["webhook-signature"].split()
    given = [s.split(",", 1)[1] for s in signatures if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, g) for g in given)


async def test_an_upload_is_posted_signed_and_a_failure_is_tried_again(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    made = await api.post(
        "/v1/webhooks", json={"url": f"{receiver.url}/ok", "events": ["file.uploaded"]}
    )
    assert made.status_code == 201, made.text
    hook = made.json()
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    mine = "whsec_" + base64.b64encode(b"k" * 32).decode()
    flaky = await api.post(
        "/v1/webhooks",
        json={
            "url": f"{receiver.url}/flaky",
            "events": ["file.uploaded", "file.deleted"],
            "secret": mine,
        },
    )
    assert flaky.status_code == 201, flaky.text
    assert flaky.json()["secret"] == mine
    receiver.failures["/flaky"] = [500]
    try:
        # Listed, never with a secret.
        listed = await api.get("/v1/webhooks")
        assert listed.status_code == 200, listed.text
        ours = {h["id"]: h for h in listed.json()["items"]}
        assert {hook["id"], flaky.json()["id"]} <= set(ours)
        assert all("secret" not in h for h in listed.json()["items"])
        assert secret not in listed.text and mine not in listed.text

        target = await folder(api, unique("hooked"))
        sent = await upload(
            api, target["id"], *((f"{name}.png", png(4, 4 + n)) for n, name in enumerate("cab"))
        )
        file_id = sent["files"][0]["id"]

        async def posted() -> bool:
            return all(receiver.of("/ok", f["id"]) for f in sent["files"])

        await eventually(posted, within=30, what="file.uploaded posted to the receiver")
        # The catalog records the request's files as pages: still one delivery a file,
        # each of its own id.
        ones = [receiver.of("/ok", f["id"]) for f in sent["files"]]
        assert [len(one) for one in ones] == [1, 1, 1]
        assert len({one[0][0]["webhook-id"] for one in ones}) == 3
        assert [one[0][1]["data"]["name"] for one in ones] == ["c.png", "a.png", "b.png"]
        headers, body = receiver.of("/ok", file_id)[0]
        assert body["type"] == "file.uploaded"
        assert body["data"]["name"] == "c.png" and body["data"]["folder_id"] == target["id"]
        assert body["data"]["job_id"] == sent["job_id"] and body["data"]["kind"] == "image"
        raw = next(
            b
            for p, h, b in receiver.got
            if p == "/ok" and h is not None and json.loads(b)["data"].get("file_id") == file_id
        )
        assert verified(secret, headers, raw)
        assert not verified(mine, headers, raw)
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 120

        # The flaky receiver answered 500 first (to whichever file's message came first):
        # the same message comes again, and counts.
        async def refused() -> bool:
            return any(p == "/flaky" for p, _, _ in receiver.got)

        await eventually(refused, within=30, what="a delivery to the flaky receiver")
        failed = next(json.loads(b)["data"]["file_id"] for p, _, b in receiver.got if p == "/flaky")

        async def retried() -> bool:
            return len(receiver.of("/flaky", failed)) >= 2

        await eventually(retried, within=30, what="the failed delivery tried again")
        first, second = receiver.of("/flaky", failed)[:2]
        assert first[0]["webhook-id"] == second[0]["webhook-id"]
        deliveries_url = f"/v1/webhooks/{flaky.json()['id']}/deliveries"

        async def delivered() -> bool:
            answer = await api.get(deliveries_url)
            assert answer.status_code == 200, answer.text
            return any(
                d["status"] == "delivered" and d["attempts"] == 2
                for d in answer.json()["items"]
                if d["id"].replace("-", "") == first[0]["webhook-id"].removeprefix("msg_")
            )

        await eventually(delivered, within=30, what="the delivery listed as delivered")

        # A file deleted is posted to the webhook that asked for it.
        deleted = await api.delete(f"/v1/files/{file_id}")
        assert deleted.status_code in (200, 204), deleted.text

        async def deletion() -> bool:
            return any(b["type"] == "file.deleted" for _, b in receiver.of("/flaky", file_id))

        await eventually(deletion, within=30, what="file.deleted posted")
        assert all(b["type"] == "file.uploaded" for _, b in receiver.of("/ok", file_id))
    finally:
        for made_id in (hook["id"], flaky.json()["id"]):
            await api.delete(f"/v1/webhooks/{made_id}")


async def test_a_failed_delivery_keeps_only_the_start_of_the_answer(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.refusals["/loud"] = b"busy " + b"x" * 95 + b"TAIL-OF-A-LONG-PAGE" * 100
    made = await api.post(
        "/v1/webhooks", json={"url": f"{receiver.url}/loud", "events": ["file.uploaded"]}
    )
    assert made.status_code == 201, made.text
    try:
        target = await folder(api, unique("loud"))
        await upload(api, target["id"], ("cat.png", png(4, 4)))
        failed: list[dict[str, Any]] = []

        async def attempted() -> bool:
            answer = await api.get(f"/v1/webhooks/{made.json()['id']}/deliveries")
            assert answer.status_code == 200, answer.text
            failed[:] = [d for d in answer.json()["items"] if d["last_error"]]
            return bool(failed)

        await eventually(attempted, within=30, what="a failed attempt listed")
        assert failed[0]["last_status"] == 503
        assert failed[0]["last_error"] == "answered 503: busy " + "x" * 95
    finally:
        await api.delete(f"/v1/webhooks/{made.json()['id']}")


async def test_webhooks_are_org_admins_and_refuse_forbidden_addresses(
    api: httpx.AsyncClient, as_key: Any, receiver: Receiver, platform: Stack
) -> None:
    alice = as_key((await member(api, "alice"))["api_key"])
    body = {"url": f"{receiver.url}/ok", "events": ["job.completed"]}
    error(await alice.post("/v1/webhooks", json=body), 403)
    error(await alice.get("/v1/webhooks"), 403)
    made = await api.post("/v1/webhooks", json=body)
    assert made.status_code == 201, made.text
    hook_id = made.json()["id"]
    error(await alice.get(f"/v1/webhooks/{hook_id}/deliveries"), 403)
    error(await alice.delete(f"/v1/webhooks/{hook_id}"), 403)

    # The address rule of integrations: metadata, private and loopback addresses not
    # allowed. The platform lets integrations reach 127.0.0.1 (its local bucket), not
    # webhooks: the gateway's and the services' ports are not a webhook's to call.
    for url, why in (
        ("http://169.254.169.254/latest", "169.254.169.254"),
        ("http://10.1.2.3/hook", "10.1.2.3"),
        ("http://[::1]:9/hook", "::1"),
        (f"{platform.gateway_url}/v1/files", "loopback"),
        (f"{platform.env['FILES_CATALOG_URL']}/internal/folders", "loopback"),
        (f"http://localhost:{urlsplit(platform.env['FILES_INGEST_URL']).port}/x", "loopback"),
    ):
        refused = error(
            await api.post("/v1/webhooks", json={"url": url, "events": ["file.uploaded"]}),
            422,
            "endpoint_not_allowed",
        )
        assert why in refused["message"] or why in str(refused.get("details")), refused
        assert "FILES_WEBHOOK_ALLOWED_ENDPOINTS" in refused["message"], refused
    error(
        await api.post("/v1/webhooks", json={"url": "ftp://x/y", "events": ["file.uploaded"]}),
        422,
    )
    for events in (["nope"], [{}], [["file.uploaded"]], [None]):
        error(
            await api.post("/v1/webhooks", json={"url": f"{receiver.url}/ok", "events": events}),
            422,
            "invalid_events",
        )
    error(
        await api.post(
            "/v1/webhooks",
            json={"url": f"{receiver.url}/ok", "events": ["file.uploaded"], "secret": "plain"},
        ),
        422,
    )

    assert (await api.delete(f"/v1/webhooks/{hook_id}")).status_code == 204
    error(await api.delete(f"/v1/webhooks/{hook_id}"), 404)
    # Made and removed, in the audit trail; its secret nowhere in it.
    audit = await api.get("/v1/audit", params={"subject_id": hook_id})
    assert audit.status_code == 200, audit.text
    assert [e["type"] for e in audit.json()["items"]] == [
        "ingest.WebhookRegistered",
        "ingest.WebhookRemoved",
    ]
    assert made.json()["secret"] not in audit.text
    error(await api.get(f"/v1/webhooks/{hook_id}/deliveries"), 404)


__all__ = ["env"]  # the CLI's environment, a fixture of tests/e2e/test_cli.py


async def test_the_files_webhooks_command(
    env: dict[str, str], api: httpx.AsyncClient, receiver: Receiver
) -> None:
    added = ok(env, "webhooks", "add", f"{receiver.url}/cli", "--event", "file.uploaded")
    hook_id = added.split()[1].rstrip(":")
    secret = added.split("signing secret (shown once): ")[1].strip()
    assert secret.startswith("whsec_")
    listed = ok(env, "webhooks", "ls")
    assert hook_id in listed and secret not in listed
    refused = fails(env, "webhooks", "add", "http://169.254.169.254/x", "--event", "job.completed")
    assert "169.254.169.254" in refused, refused

    target = await folder(api, unique("cli-hooked"))
    sent = await upload(api, target["id"], ("dog.png", png(3, 3)))
    file_id = sent["files"][0]["id"]

    async def delivered() -> bool:
        return bool(receiver.of("/cli", file_id))

    await eventually(delivered, within=30, what="the CLI's webhook got file.uploaded")
    listed = ok(env, "webhooks", "deliveries", hook_id)
    assert "delivered" in listed
    delivery_id = next(line.split()[0] for line in listed.splitlines() if "delivered" in line)
    assert f"delivery {delivery_id} (file.uploaded): sent again" in ok(
        env, "webhooks", "retry", hook_id, delivery_id
    )

    async def twice() -> bool:
        return len(receiver.of("/cli", file_id)) == 2

    await eventually(twice, within=30, what="the delivery sent again by the CLI")
    rotated = ok(env, "webhooks", "rotate", hook_id, "--keep-previous", "0")
    assert "the one before no longer signs" in rotated
    newer = rotated.split("signing secret (shown once): ")[1].strip()
    assert newer.startswith("whsec_") and newer != secret
    assert "0 to 604800" in fails(env, "webhooks", "rotate", hook_id, "--keep-previous", "-1")
    assert hook_id in ok(env, "webhooks", "delete", hook_id)
    assert hook_id not in ok(env, "webhooks", "ls")


async def test_webhooks_over_grpc(stack: Stack, receiver: Receiver) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        hooks = rpc.WebhooksStub(channel)
        made = await hooks.CreateWebhook(
            pb.CreateWebhookRequest(url=f"{receiver.url}/ok", events=["folder.synced"]),
            metadata=ADMIN,
        )
        assert made.id and made.secret.startswith("whsec_")
        assert made.events == ["folder.synced"]
        listed = await hooks.ListWebhooks(pb.Empty(), metadata=ADMIN)
        assert made.id in [h.id for h in listed.items]
        assert all(not h.HasField("secret") for h in listed.items)
        deliveries = await hooks.ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(webhook_id=made.id, limit=10), metadata=ADMIN
        )
        assert list(deliveries.items) == []
        rotated = await hooks.RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(webhook_id=made.id, keep_previous_for_s=60),
            metadata=ADMIN,
        )
        assert rotated.secret.startswith("whsec_") and rotated.secret != made.secret
        assert rotated.HasField("previous_secret_valid_until")
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await hooks.RetryWebhookDelivery(
                pb.WebhookDeliveryRef(webhook_id=made.id, delivery_id=made.id), metadata=ADMIN
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        await hooks.DeleteWebhook(pb.WebhookRef(webhook_id=made.id), metadata=ADMIN)
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await hooks.DeleteWebhook(pb.WebhookRef(webhook_id=made.id), metadata=ADMIN)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_event_taken_while_ingest_is_down_is_posted_once_it_is_back(
    api: httpx.AsyncClient, stack: Stack, receiver: Receiver
) -> None:
    made = await api.post(
        "/v1/webhooks", json={"url": f"{receiver.url}/restart", "events": ["file.deleted"]}
    )
    assert made.status_code == 201, made.text
    hook_id = made.json()["id"]
    try:
        target = await folder(api, unique("hooked-restart"))
        file_id = (await upload(api, target["id"], ("gone.png", png(2, 2))))["files"][0]["id"]
        ingest = stack.child("ingest")
        ingest.proc.send_signal(signal.SIGKILL)
        ingest.proc.wait()
        # The catalog deletes it while ingest, the webhooks' consumer, is away.
        deleted = await api.delete(f"/v1/files/{file_id}")
        assert deleted.status_code in (200, 204), deleted.text

        async def posted() -> bool:
            return bool(receiver.of("/restart", file_id))

        await eventually(posted, within=120, what="file.deleted posted after ingest's restart")
        assert [b["type"] for _, b in receiver.of("/restart", file_id)] == ["file.deleted"]
        listed = await api.get(f"/v1/webhooks/{hook_id}/deliveries")
        # (Other tests' deletions may be there too: the webhook is the organisation's.)
        mine = receiver.of("/restart", file_id)[0][0]["webhook-id"].removeprefix("msg_")
        assert [
            (d["event"], d["status"])
            for d in listed.json()["items"]
            if d["id"].replace("-", "") == mine
        ] == [("file.deleted", "delivered")]
    finally:
        await api.delete(f"/v1/webhooks/{hook_id}")


async def test_a_sync_that_ends_is_posted_as_job_completed_and_folder_synced(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio, receiver: Receiver
) -> None:
    made = await api.post(
        "/v1/webhooks",
        json={"url": f"{receiver.url}/synced", "events": ["folder.synced", "job.completed"]},
    )
    assert made.status_code == 201, made.text
    try:
        prefix = f"{unique('hooked-sync')}/"
        put(bucket, f"{prefix}a.png", png(5, 5))
        integration = await register(api, moto)
        assert integration.status_code == 201, integration.text
        synced = await synced_folder(api, integration.json()["id"], prefix)
        job_id = synced["sync_job_id"]
        await sync_done(api, job_id)

        def of_job() -> dict[str, dict[str, Any]]:
            found = {}
            for at, _, body in receiver.got:
                message = json.loads(body)
                if at == "/synced" and message["data"].get("job_id") == job_id:
                    found[message["type"]] = message["data"]
            return found

        async def both() -> bool:
            return set(of_job()) == {"job.completed", "folder.synced"}

        await eventually(both, within=30, what="job.completed and folder.synced posted")
        expected = {"job_id": job_id, "status": "done", "kind": "sync", "folder_id": synced["id"]}
        assert of_job() == {"job.completed": expected, "folder.synced": expected}
    finally:
        await api.delete(f"/v1/webhooks/{made.json()['id']}")


def signatures(headers: dict[str, str]) -> list[str]:
    return headers["webhook-signature"].split()


async def test_a_rotated_secret_signs_beside_the_one_before_for_as_long_as_asked(
    api: httpx.AsyncClient, as_key: Any, receiver: Receiver, pool: Any
) -> None:
    first = "whsec_" + base64.b64encode(b"1" * 32).decode()
    made = await api.post(
        "/v1/webhooks",
        json={"url": f"{receiver.url}/rotated", "events": ["file.uploaded"], "secret": first},
    )
    assert made.status_code == 201, made.text
    hook_id = made.json()["id"]
    rotate = f"/v1/webhooks/{hook_id}/secret"
    try:
        alice = as_key((await member(api, "rotator"))["api_key"])
        error(await alice.post(rotate, json={}), 403)
        error(
            await api.post(rotate, json={"keep_previous_for_s": -5}), 422, "invalid_keep_previous"
        )
        error(await api.post(rotate, json={"secret": "plain"}), 422, "invalid_secret")
        error(await api.post(rotate, json={"url": "https://x.example"}), 422, "invalid_body")
        error(await api.post(f"/v1/webhooks/{uuid4()}/secret", json={}), 404)

        rotated = await api.post(rotate, json={})
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["secret"]
        assert second.startswith("whsec_") and second != first
        until = datetime.fromisoformat(rotated.json()["previous_secret_valid_until"])
        assert abs((until - datetime.now(UTC)).total_seconds() - 24 * 3600) < 600
        listed = {h["id"]: h for h in (await api.get("/v1/webhooks")).json()["items"]}
        assert listed[hook_id]["previous_secret_valid_until"] is not None
        assert "secret" not in listed[hook_id]

        async def delivered_to(file_id: str) -> tuple[dict[str, str], bytes]:
            async def posted() -> bool:
                return bool(receiver.of("/rotated", file_id))

            await eventually(posted, within=30, what="file.uploaded posted after a rotation")
            return next(
                (h, b)
                for p, h, b in receiver.got
                if p == "/rotated" and json.loads(b)["data"].get("file_id") == file_id
            )

        target = await folder(api, unique("rotated"))
        one = (await upload(api, target["id"], ("one.png", png(3, 3))))["files"][0]["id"]
        headers, body = await delivered_to(one)
        # Both sign: a receiver still on the first secret takes it, as one on the second.
        assert len(signatures(headers)) == 2
        assert verified(first, headers, body) and verified(second, headers, body)

        # Rotated again, the one before at once no longer signing: only the newest does.
        again = await api.post(rotate, json={"keep_previous_for_s": 0})
        assert again.status_code == 200, again.text
        third = again.json()["secret"]
        assert again.json()["previous_secret_valid_until"] is None
        two = (await upload(api, target["id"], ("two.png", png(3, 4))))["files"][0]["id"]
        headers, body = await delivered_to(two)
        assert len(signatures(headers)) == 1 and verified(third, headers, body)
        assert not verified(second, headers, body) and not verified(first, headers, body)

        # Its own secret, as at registration; a window under a second is one still.
        mine = "whsec_" + base64.b64encode(b"m" * 32).decode()
        given = await api.post(rotate, json={"secret": mine, "keep_previous_for_s": 0.4})
        assert given.status_code == 200 and given.json()["secret"] == mine
        assert await pool.fetchval(
            "SELECT previous_secret_sealed IS NOT NULL FROM ingest.webhooks WHERE id = $1",
            UUID(hook_id),
        )
    finally:
        assert (await api.delete(f"/v1/webhooks/{hook_id}")).status_code == 204
    audit = await api.get("/v1/audit", params={"subject_id": hook_id})
    assert [e["type"] for e in audit.json()["items"]] == [
        "ingest.WebhookRegistered",
        "ingest.WebhookSecretRotated",
        "ingest.WebhookSecretRotated",
        "ingest.WebhookSecretRotated",
        "ingest.WebhookRemoved",
    ]
    for secret in (first, second, third, mine):
        assert secret not in audit.text


async def test_a_delivery_given_up_is_sent_again_when_an_admin_asks(
    api: httpx.AsyncClient, as_key: Any, receiver: Receiver, pool: Any
) -> None:
    receiver.refusals["/given-up"] = b"down for maintenance"
    made = await api.post(
        "/v1/webhooks", json={"url": f"{receiver.url}/given-up", "events": ["file.uploaded"]}
    )
    assert made.status_code == 201, made.text
    hook_id = made.json()["id"]
    deliveries = f"/v1/webhooks/{hook_id}/deliveries"
    try:
        target = await folder(api, unique("given-up"))
        file_id = (await upload(api, target["id"], ("late.png", png(2, 3))))["files"][0]["id"]

        async def refused() -> bool:
            return bool(receiver.of("/given-up", file_id))

        await eventually(refused, within=30, what="an attempt the receiver refused")
        message_id = receiver.of("/given-up", file_id)[0][0]["webhook-id"]
        delivery_id = str(UUID(message_id.removeprefix("msg_")))

        # A day on: given up (as the sender records it past FILES_WEBHOOK_GIVE_UP_S),
        # between attempts: one in flight would record itself pending over it.
        async def given_up() -> bool:
            return bool(
                await pool.fetchval(
                    """UPDATE ingest.webhook_deliveries SET status = 'failed'
                       WHERE id = $1 AND lease_until IS NULL RETURNING true""",
                    UUID(delivery_id),
                )
            )

        await eventually(given_up, within=30, what="the delivery given up between attempts")
        retry = f"{deliveries}/{delivery_id}/retry"
        alice = as_key((await member(api, "retrier"))["api_key"])
        error(await alice.post(retry), 403)
        error(await api.post(f"{deliveries}/{uuid4()}/retry"), 404)
        error(await api.post(f"/v1/webhooks/{uuid4()}/deliveries/{delivery_id}/retry"), 404)

        del receiver.refusals["/given-up"]
        tried = len(receiver.of("/given-up", file_id))
        again = await api.post(retry)
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "pending" and again.json()["attempts"] == 0
        assert again.json()["retried_at"] is not None

        async def delivered() -> bool:
            found = {d["id"]: d for d in (await api.get(deliveries)).json()["items"]}
            return found[delivery_id]["status"] == "delivered"

        await eventually(delivered, within=30, what="the delivery sent again and delivered")
        sent = receiver.of("/given-up", file_id)
        assert len(sent) == tried + 1
        # The same message: a receiver that took it before drops it.
        assert {h["webhook-id"] for h, _ in sent} == {message_id}

        # One being attempted right now is not sent twice at once.
        await pool.execute(
            """UPDATE ingest.webhook_deliveries SET status = 'pending',
                   lease_until = now() + interval '1 minute', next_attempt_at = now()
               WHERE id = $1""",
            UUID(delivery_id),
        )
        error(await api.post(retry), 409, "delivery_in_flight")
    finally:
        await api.delete(f"/v1/webhooks/{hook_id}")


async def test_an_attempt_that_outlived_its_claim_does_not_undo_a_retry(
    api: httpx.AsyncClient, receiver: Receiver, pool: Any, platform: Any
) -> None:
    first_answer = receiver.holds["/stalled"] = asyncio.Event()
    receiver.failures["/stalled"] = [503]  # what the held attempt hears in the end
    made = await api.post(
        "/v1/webhooks", json={"url": f"{receiver.url}/stalled", "events": ["file.uploaded"]}
    )
    assert made.status_code == 201, made.text
    hook_id = made.json()["id"]
    deliveries = f"/v1/webhooks/{hook_id}/deliveries"
    try:
        target = await folder(api, unique("stalled"))
        file_id = (await upload(api, target["id"], ("slow.png", png(2, 3))))["files"][0]["id"]

        async def attempted() -> bool:
            return bool(receiver.of("/stalled", file_id))

        await eventually(attempted, within=30, what="the first attempt, held by the receiver")
        message_id = receiver.of("/stalled", file_id)[0][0]["webhook-id"]
        delivery_id = UUID(message_id.removeprefix("msg_"))
        # The sender stalled past its lease (as a process paused for minutes does): the
        # delivery is free again, and an admin sends it again.
        await pool.execute(
            """UPDATE ingest.webhook_deliveries SET lease_until = now() - interval '1 second'
               WHERE id = $1""",
            delivery_id,
        )
        again = await api.post(f"{deliveries}/{delivery_id}/retry")
        assert again.status_code == 200, again.text
        # The stalled attempt now hears its 503: too late to count.
        first_answer.set()
        ingest_log = platform.data_dir / "logs" / "ingest.log"

        async def outlived() -> bool:
            return any(
                "webhook.attempt_outlived_its_claim" in line and str(delivery_id) in line
                for line in ingest_log.read_text().splitlines()
            )

        await eventually(outlived, within=30, what="the stalled attempt's outcome set aside")

        async def delivered() -> bool:
            found = {d["id"]: d for d in (await api.get(deliveries)).json()["items"]}
            return found[str(delivery_id)]["status"] == "delivered"

        await eventually(delivered, within=30, what="the retry delivered")
        found = {d["id"]: d for d in (await api.get(deliveries)).json()["items"]}
        assert found[str(delivery_id)]["attempts"] == 1
        assert len(receiver.of("/stalled", file_id)) == 2
    finally:
        first_answer.set()
        await api.delete(f"/v1/webhooks/{hook_id}")
