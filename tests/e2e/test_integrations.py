"""Who may use a cloud integration, which endpoints it may name, and what a hostile
endpoint can cost the platform: through the gateway, against moto's S3 server and a
hostile endpoint of the tests' own (tests/hostile_s3.py).

The caps and the address rule are settings of ingest; to reach them in seconds, a
second ingest process (with small caps, allowing only the hostile endpoint's
127.0.0.1:<port>) runs beside the platform's, with a gateway of its own in front.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psutil
import pytest
from minio import Minio

from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.conftest import BUCKET
from tests.e2e.support import error, folder, items, member, png, unique
from tests.e2e.test_imports import finished, integration, put, register, start_import
from tests.hostile_s3 import GOOD_KEYS, HostileS3

HOSTILE_KEY, HOSTILE_SECRET = "AKIAHOSTILE0EXAMPLE", "hostile-secret-never-shown-0123456789"
# The second ingest's caps: small, so each is reached in a second or so.
CAPS = {
    "FILES_CLOUD_RESPONSE_TIMEOUT_S": "1",
    "FILES_CLOUD_LISTING_TIMEOUT_S": "3",
    "FILES_CLOUD_LISTING_MAX_PAGES": "40",
    "FILES_IMPORT_MAX_KEYS": "50",
}


async def ended(api: httpx.AsyncClient, job_id: str, files: int = 0) -> dict[str, Any]:
    """The job once it is no longer running and the catalog lists its `files` files."""
    job: dict[str, Any] = {}

    async def over() -> bool:
        nonlocal job
        answer = await api.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        job = answer.json()
        return job["status"] != "running" and len(job["files"]) >= files

    await eventually(over, within=30, what=f"import job {job_id} ended with {files} files")
    return job


# -- sharing ---------------------------------------------------------------------------


async def test_an_integration_is_used_by_org_admins_and_the_users_it_is_shared_with(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, as_key: Any, platform: Stack
) -> None:
    run = uuid.uuid4().hex[:8]
    put(bucket, f"{run}/cat.png", png(4, 4))
    put(bucket, f"{run}/dog.png", png(5, 5))
    integration_id = await integration(api, moto)
    one = f"/v1/integrations/{integration_id}"
    target = await folder(api, unique("shared-imports"))
    alice, bob = await member(api, "alice"), await member(api, "bob")
    invited = await api.post(
        f"/v1/folders/{target['id']}/collaborators",
        json={"emails": [alice["email"], bob["email"]], "role": "editor"},
    )
    assert invited.status_code == 200, invited.text
    as_alice, as_bob = as_key(alice["api_key"]), as_key(bob["api_key"])
    imports = f"/v1/folders/{target['id']}/imports"
    cat = {"integration_id": integration_id, "keys": [f"{run}/cat.png"]}
    seen: list[str] = []

    # Registered, it is the org admins' only: editors of the folder find nothing.
    for who in (as_alice, as_bob):
        error(await who.get(one), 404)
        error(await who.post(imports, json=cat), 404)
        assert (await who.get("/v1/integrations")).json()["items"] == []

    shared = await api.patch(one, json={"shared_with": [alice["id"]]})
    seen.append(shared.text)
    assert shared.status_code == 200, shared.text
    assert shared.json()["shared_with"] == [alice["id"]]
    assert shared.headers.get("Files-Consistency")

    # Alice may see it (not whom it is shared with) and import through it.
    hers = await as_alice.get(one)
    seen.append(hers.text)
    assert hers.status_code == 200
    assert hers.json()["id"] == integration_id and "shared_with" not in hers.json()
    listed = await as_alice.get("/v1/integrations")
    seen.append(listed.text)
    assert [i["id"] for i in listed.json()["items"]] == [integration_id]
    job = await finished(as_alice, await start_import(as_alice, target["id"], **cat), files=1)
    assert job["created_by"] == alice["id"]
    # ... but not change or remove it.
    error(await as_alice.patch(one, json={"shared_with": []}), 403, "forbidden")
    error(await as_alice.delete(one), 403, "forbidden")

    # Bob, an editor of the same folder, still finds nothing: not on get, not on import,
    # not on change.
    error(await as_bob.get(one), 404)
    error(await as_bob.post(imports, json=cat), 404)
    error(await as_bob.patch(one, json={"shared_with": [bob["id"]]}), 404)
    error(await as_bob.delete(one), 404)
    assert (await as_bob.get("/v1/integrations")).json()["items"] == []

    # Sharing names users that exist, by id.
    nobody = str(uuid.uuid4())
    unknown = error(
        await api.patch(one, json={"shared_with": [alice["id"], nobody]}), 422, "unknown_users"
    )
    assert unknown["details"]["unknown_users"] == [nobody]
    error(await api.patch(one, json={"shared_with": [alice["email"]]}), 422, "invalid_request")
    error(await api.patch(f"/v1/integrations/{uuid.uuid4()}", json={"shared_with": []}), 404)

    # Unsharing takes it back at once.
    taken_back = await api.patch(one, json={"shared_with": []})
    assert taken_back.status_code == 200 and taken_back.json()["shared_with"] == []
    error(await as_alice.get(one), 404)
    dog = {"integration_id": integration_id, "keys": [f"{run}/dog.png"]}
    error(await as_alice.post(imports, json=dog), 404)
    assert [f["name"] for f in await items(api, target["id"])] == ["cat.png"]
    # The admin still imports through it.
    await finished(api, await start_import(api, target["id"], **dog), files=1)

    # Each change is an audited event of the integration.
    audit = await api.get("/v1/audit", params={"subject_id": integration_id})
    seen.append(audit.text)
    changes = [e for e in audit.json()["items"] if e["type"] == "ingest.IntegrationShared"]
    admin = (await api.get("/v1/users/me")).json()["id"]
    assert [(e["data"]["shared_with"], e["actor_id"]) for e in changes] == [
        ([alice["id"]], admin),
        ([], admin),
    ]
    logs = "".join(p.read_text(errors="replace") for p in (platform.data_dir / "logs").iterdir())
    for where in [*seen, logs]:
        assert moto.secret_key not in where
        assert moto.access_key not in where


async def test_sharing_sent_again_with_its_key_is_applied_once(
    api: httpx.AsyncClient, moto: MotoS3
) -> None:
    one = f"/v1/integrations/{await integration(api, moto)}"
    alice = await member(api, "alice")
    keyed = {"Idempotency-Key": str(uuid.uuid4())}
    first = await api.patch(one, json={"shared_with": [alice["id"]]}, headers=keyed)
    assert first.status_code == 200, first.text
    assert (await api.patch(one, json={"shared_with": []})).status_code == 200
    # A retry of the first (its answer lost, say) answers it again, and changes nothing.
    again = await api.patch(one, json={"shared_with": [alice["id"]]}, headers=keyed)
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Files-Consistency"] == first.headers["Files-Consistency"]
    assert (await api.get(one)).json()["shared_with"] == []
    error(
        await api.patch(one, json={"shared_with": []}, headers=keyed), 422, "idempotency_key_reused"
    )


# -- endpoint addresses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "address", "reason"),
    [
        ("http://169.254.169.254", "169.254.169.254", "is a cloud metadata address"),
        ("http://[fd00:ec2::254]", "fd00:ec2::254", "is a cloud metadata address"),
        ("http://metadata.google.internal", "metadata.google.internal", "metadata name"),
        ("http://169.254.10.1:9000", "169.254.10.1", "is a link-local address"),
        ("http://[fe80::1]:9000", "fe80::1", "is a link-local address"),
        ("http://10.1.2.3:9000", "10.1.2.3", "is a private address"),
        ("http://172.16.5.4", "172.16.5.4", "is a private address"),
        ("http://192.168.1.10:9000", "192.168.1.10", "is a private address"),
        ("http://[fd12::1]:9000", "fd12::1", "is a private address"),
        ("http://100.64.1.1", "100.64.1.1", "is a carrier-grade NAT address"),
        ("http://127.0.0.2:9000", "127.0.0.2", "is a loopback address"),
        ("http://[::1]:9000", "::1", "is a loopback address"),
        ("http://0.0.0.0:9000", "0.0.0.0", "is a unspecified address"),
        ("http://224.0.0.1", "224.0.0.1", "is a multicast address"),
        ("http://240.0.0.1", "240.0.0.1", "is a reserved address"),
        ("http://[::ffff:169.254.169.254]", "169.254.169.254", "is a cloud metadata address"),
    ],
)
async def test_an_endpoint_on_a_refused_address_is_not_registered(
    api: httpx.AsyncClient, moto: MotoS3, endpoint: str, address: str, reason: str
) -> None:
    name = unique("refused")
    answer = await register(api, moto, name=name, endpoint=endpoint)
    found = error(answer, 422, "endpoint_not_allowed")
    assert found["details"]["address"] == address
    assert reason in found["details"]["reason"] and reason in found["message"]
    assert "FILES_ALLOWED_ENDPOINTS" in found["message"]
    listed = (await api.get("/v1/integrations", params={"limit": 1000})).json()["items"]
    assert name not in [i["name"] for i in listed]


# -- a second ingest with small caps, and a hostile endpoint --------------------------------


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileS3]:
    server = HostileS3()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(stack: Stack, hostile: HostileS3) -> Iterator[tuple[str, Any]]:
    """A gateway in front of an ingest process that allows only the hostile endpoint
    (127.0.0.1 on its port) and reads with small caps; its URL and ingest's process."""
    env = {"FILES_ALLOWED_ENDPOINTS": f"127.0.0.1:{hostile.port}", **CAPS}
    ingest_url, ingest = stack.add_replica("ingest", env=env)
    gateway_url, gateway = stack.add_replica(
        "gateway", env={"FILES_INGEST_URL": ingest_url, "FILES_GRPC_PORT": "0"}
    )
    try:
        yield gateway_url, ingest
    finally:
        stack.remove(gateway)
        stack.remove(ingest)


@pytest.fixture
async def strict_api(strict: tuple[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=strict[0], headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as client:
        yield client


async def hostile_integration(api: httpx.AsyncClient, hostile: HostileS3, name: str) -> str:
    answer = await api.post(
        "/v1/integrations",
        json={
            "name": unique(name),
            "provider": "s3",
            "endpoint": hostile.endpoint,
            "region": "us-east-1",
            "bucket": name,
            "access_key": HOSTILE_KEY,
            "secret_key": HOSTILE_SECRET,
        },
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def import_prefix(
    api: httpx.AsyncClient, integration_id: str, files: int = 0
) -> dict[str, Any]:
    """An import of the whole bucket, once it ended with `files` files."""
    target = await folder(api, unique("hostile"))
    job_id = await start_import(api, target["id"], integration_id=integration_id, prefix="")
    return await ended(api, job_id, files)


async def the_platform_goes_on(api: httpx.AsyncClient, hostile: HostileS3) -> None:
    """After whatever the hostile endpoint did, an import of a good bucket works."""
    good = await hostile_integration(api, hostile, "good")
    job = await import_prefix(api, good, files=len(GOOD_KEYS))
    assert (job["status"], len(job["files"]), job["errors"]) == ("done", len(GOOD_KEYS), [])


async def test_loopback_is_refused_where_it_is_not_allowed_at_registration_and_at_use(
    api: httpx.AsyncClient, strict_api: httpx.AsyncClient, moto: MotoS3, hostile: HostileS3
) -> None:
    """This ingest allows 127.0.0.1 on the hostile endpoint's port only: moto, on
    another port of 127.0.0.1, is refused when registered, and an integration the
    platform registered earlier is refused when an import would use it."""
    found = error(await register(strict_api, moto), 422, "endpoint_not_allowed")
    assert found["details"] == {
        "bucket": BUCKET,
        "endpoint": moto.endpoint,
        "address": "127.0.0.1",
        "reason": "127.0.0.1 is a loopback address",
    }
    elsewhere = await integration(api, moto)  # the platform's ingest allows 127.0.0.1
    target = await folder(strict_api, unique("not-allowed"))
    refused = await strict_api.post(
        f"/v1/folders/{target['id']}/imports",
        json={"integration_id": elsewhere, "keys": ["any.png"]},
    )
    assert error(refused, 422, "endpoint_not_allowed")["details"]["address"] == "127.0.0.1"
    await the_platform_goes_on(strict_api, hostile)


@pytest.mark.parametrize(
    ("name", "code", "files"),
    [
        ("endless", "listing_too_large", 0),  # 40 pages, each truncated, never ending
        ("looping", "listing_loop", 0),  # the same continuation token again
        ("slow", "listing_timeout", 0),  # pages of 0.4 s, for more than 3 s
        ("many", "listing_too_large", 50),  # 1,000 objects a page: the first 50 imported
    ],
)
async def test_a_listing_that_never_ends_ends_the_job_with_a_named_error(
    strict_api: httpx.AsyncClient, hostile: HostileS3, name: str, code: str, files: int
) -> None:
    integration_id = await hostile_integration(strict_api, hostile, name)
    job = await import_prefix(strict_api, integration_id, files)
    assert job["status"] == "failed"
    assert job["errors"][-1]["code"] == code, job["errors"]
    assert len(job["files"]) == files
    await the_platform_goes_on(strict_api, hostile)


async def test_huge_and_trickling_answers_and_redirects_are_named_errors(
    strict_api: httpx.AsyncClient, hostile: HostileS3, strict: tuple[str, Any], stack: Stack
) -> None:
    # A listing refused with an endless error body: the registration says so.
    hostile.sent = 0
    answer = await strict_api.post(
        "/v1/integrations",
        json={
            "name": unique("huge"),
            "provider": "s3",
            "endpoint": hostile.endpoint,
            "region": "us-east-1",
            "bucket": "huge-listing-error",
            "access_key": HOSTILE_KEY,
            "secret_key": HOSTILE_SECRET,
        },
    )
    error(answer, 422, "response_too_large")
    assert hostile.sent < 32 * 1024 * 1024  # of the gibibyte it would send

    # Objects answered with endless error bodies: each is refused, then the job.
    hostile.sent = 0
    job = await import_prefix(
        strict_api, await hostile_integration(strict_api, hostile, "huge-error")
    )
    assert job["status"] == "failed" and job["errors"][-1]["code"] == "response_too_large"
    per_object = [e["details"].get("reason") for e in job["errors"][:-1]]
    assert per_object == ["response_too_large"] * 3
    assert hostile.sent < 64 * 1024 * 1024

    # Objects that trickle in: each stops at its deadline, then the job.
    job = await import_prefix(strict_api, await hostile_integration(strict_api, hostile, "trickle"))
    assert job["status"] == "failed" and job["errors"][-1]["code"] == "response_timeout"

    # A redirect is not followed: the object is refused, its target never visited.
    job = await import_prefix(
        strict_api, await hostile_integration(strict_api, hostile, "redirect")
    )
    assert job["status"] == "done" and len(job["errors"]) == 3
    assert all("redirect" in e["message"] for e in job["errors"])
    assert hostile.trap_visits == 0

    # The ingest that read all this is alive, small, and imports on.
    ingest = psutil.Process(strict[1].proc.pid)
    assert ingest.is_running() and ingest.memory_info().rss < 512 * 1024 * 1024
    await the_platform_goes_on(strict_api, hostile)
    logs = "".join(p.read_text(errors="replace") for p in (stack.data_dir / "logs").iterdir())
    assert HOSTILE_SECRET not in logs and HOSTILE_KEY not in logs
