"""Each service of the running platform believes only a caller the gateway signed for.

Reaching a service's port is not enough: without a valid `X-Files-Identity` token
(signed with the platform's service key, not expired) every route but health answers
401, `/internal/*` included, whatever `X-Files-Actor` / `X-Files-Access` say. The
services listen on loopback only.
"""

from __future__ import annotations

import time
import uuid

import httpx
import psutil
import pytest

from shared.kit import identity
from shared.kit.access import Access
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY
from tests.e2e.support import error
from tests.signing import SIGNER

OTHER_KEY = identity.ServiceKey(identity.new_key())
# An org admin, as a forger would claim to be.
ADMIN = Access(user_id=str(uuid.uuid4()), org_admin=True)
NOBODY = uuid.uuid4()

# Per service: a route that acts for a user, and one of its /internal/* routes.
ROUTES = {
    "catalog": ("/v1/folders", f"/internal/folders/{NOBODY}"),
    "ingest": (f"/v1/jobs/{NOBODY}", f"/internal/blobs/{'0' * 64}"),
    "acl": ("/v1/users", "/internal/users/lookup"),
    "datasets": ("/v1/datasets", "/internal/impact"),
    "dicom": (f"/internal/jobs/{NOBODY}", "/internal/audit"),
    "thumbnails": (f"/internal/reencode-jobs/{NOBODY}", "/internal/audit"),
}


FORGERIES = {
    "no token": {},
    "raw headers": {"X-Files-Actor": ADMIN.user_id, "X-Files-Access": ADMIN.encode()},
    "another key": {identity.HEADER: OTHER_KEY.sign(ADMIN.user_id, ADMIN.encode(), audience=None)},
    "expired": {
        identity.HEADER: SIGNER.sign(
            ADMIN.user_id, ADMIN.encode(), audience=None, now=time.time() - 120
        )
    },
    "not a token": {identity.HEADER: f"{ADMIN.user_id};admin"},
}


async def _call(url: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        if path in ("/internal/users/lookup", "/internal/impact", "/internal/authenticate"):
            body = {"emails": [], "file_ids": [], "api_key": ADMIN_KEY}
            return await client.post(path, json=body, headers=headers)
        return await client.get(path, headers=headers)


@pytest.mark.parametrize("service", ROUTES)
@pytest.mark.parametrize("forgery", FORGERIES)
async def test_a_service_refuses_calls_the_gateway_did_not_sign(
    stack: Stack, service: str, forgery: str
) -> None:
    url = stack.env[f"FILES_{service.upper()}_URL"]
    for path in (*ROUTES[service], "/internal/consistency"):
        answer = await _call(url, path, FORGERIES[forgery])
        error(answer, 401, "unauthenticated")


@pytest.fixture
async def admin(stack: Stack) -> dict[str, str]:
    """The platform's first admin, as the ACL context tells the gateway."""
    answer = await _call(
        stack.env["FILES_ACL_URL"],
        "/internal/authenticate",
        {identity.HEADER: SIGNER.for_service("gateway", audience="acl")},
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.mark.parametrize("service", ROUTES)
async def test_a_signed_call_is_answered_and_health_is_open(
    stack: Stack, service: str, admin: dict[str, str]
) -> None:
    url = stack.env[f"FILES_{service.upper()}_URL"]
    signed = {identity.HEADER: SIGNER.sign(admin["id"], admin["access"], audience=service)}
    for path in ROUTES[service]:
        answer = await _call(url, path, signed)
        assert answer.status_code in (200, 404), (path, answer.text)
    # The same caller's token for another service, as seen on the wire: refused here.
    elsewhere = "acl" if service != "acl" else "catalog"
    replayed = {identity.HEADER: SIGNER.sign(admin["id"], admin["access"], audience=elsewhere)}
    for path in ROUTES[service]:
        refused = error(await _call(url, path, replayed), 401, "unauthenticated")
        assert f"for the {elsewhere} service" in refused["message"]
    for path in ("/healthz", "/readyz"):
        assert (await _call(url, path, {})).status_code == 200


@pytest.mark.parametrize("service", ["catalog", "ingest", "acl", "datasets"])
async def test_a_service_token_does_not_act_for_a_user(stack: Stack, service: str) -> None:
    url = stack.env[f"FILES_{service.upper()}_URL"]
    public, internal = ROUTES[service]
    as_gateway = {identity.HEADER: SIGNER.for_service("gateway", audience=service)}
    refused = error(await _call(url, public, as_gateway), 401, "unauthenticated")
    assert "acts for a user" in refused["message"]
    if service != "catalog":  # the catalog's internal routes decide with the user's rights
        assert (await _call(url, internal, as_gateway)).status_code in (200, 404)


def test_services_listen_on_loopback_only(stack: Stack) -> None:
    for child in stack.children:
        if child.name not in ROUTES:
            continue
        listening = {
            c.laddr.ip
            for c in psutil.Process(child.proc.pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.1"}, (child.name, listening)
