"""Service identity tokens: what a service believes about its caller, and nothing else."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import Depends, FastAPI

from services.acl.app import build as build_acl
from shared.contracts.envelope import Cause
from shared.kit import identity
from shared.kit.access import Access
from shared.kit.http import JSON, access, cause, install_errors
from shared.kit.settings import Settings
from shared.kit.stack import Stack, service_key
from tests.conftest import ADMIN_KEY

KEY_TEXT = "Zt1d0b3-vQ8_kLm2nP4rS6tU8wX0yZ2aB4cD6eF8gH0"
KEY = identity.ServiceKey(KEY_TEXT)
OTHER = identity.ServiceKey("different-key-Q8_kLm2nP4rS6tU8wX0yZ2aB4cD6e")
ADMIN = Access(user_id=str(uuid.uuid4()), org_admin=True)


def test_a_signed_token_carries_the_caller() -> None:
    token = KEY.sign(ADMIN.user_id, ADMIN.encode(), "corr-1", audience="things")
    found = KEY.verify(token)
    assert (found.actor, found.access, found.correlation_id) == (
        ADMIN.user_id,
        ADMIN.encode(),
        "corr-1",
    )
    assert found.expires_at - found.issued_at == identity.TTL_S
    assert found.service is None
    assert found.folder_path is None


def test_the_folder_path_a_call_is_about_is_signed_with_the_caller() -> None:
    path = f"{uuid.uuid4()},{uuid.uuid4()}"
    assert KEY.verify(
        KEY.sign(ADMIN.user_id, ADMIN.encode(), audience="things", folder_path=path)
    ).folder_path == (path)


def test_a_token_is_for_the_one_service_it_names() -> None:
    token = KEY.sign(ADMIN.user_id, ADMIN.encode(), audience="catalog")
    assert KEY.verify(token, audience="catalog").audience == "catalog"
    with pytest.raises(identity.Unauthenticated, match="for the catalog service, not the acl"):
        KEY.verify(token, audience="acl")
    # Named by no service: a signer of the version before audiences, accepted while an
    # upgrade rolls out.
    legacy = KEY.sign(ADMIN.user_id, ADMIN.encode(), audience=None)
    assert KEY.verify(legacy, audience="acl").audience is None
    # The audience is signed: changing it breaks the signature.
    with pytest.raises(identity.Unauthenticated, match="signature"):
        KEY.verify(_tampered(token, aud="acl"), audience="acl")


def test_a_service_token_names_the_service_and_grants_nothing() -> None:
    found = KEY.verify(KEY.for_service("datasets", "corr-2", audience="acl"))
    assert (found.actor, found.access, found.service) == ("service:datasets", None, "datasets")


def test_an_object_url_signature_reads_that_object_until_it_expires_and_nothing_else() -> None:
    integration, soon = str(uuid.uuid4()), int(time.time()) + 60
    signature = KEY.object_read_mac(integration, "a/b.png", soon)
    assert KEY.object_read_allowed(integration, "a/b.png", soon, signature)
    assert not KEY.object_read_allowed(integration, "a/c.png", soon, signature)
    assert not KEY.object_read_allowed(str(uuid.uuid4()), "a/b.png", soon, signature)
    assert not KEY.object_read_allowed(integration, "a/b.png", soon + 1, signature)
    assert not OTHER.object_read_allowed(integration, "a/b.png", soon, signature)
    assert not KEY.object_read_allowed(integration, "a/b.png", soon, signature, now=soon + 1)
    # Its own domain of the key: no identity token passes for one, nor the reverse.
    token = KEY.for_service("thumbnails", audience="ingest")
    assert not KEY.object_read_allowed(integration, "a/b.png", soon, token.rsplit(".", 1)[1])
    with pytest.raises(identity.Unauthenticated):
        KEY.verify(f"v1.{signature}.{signature}")


def _tampered(token: str, **changes: Any) -> str:
    version, body, mac = token.split(".")
    claims = orjson.loads(base64.b64decode(body))
    forged = base64.b64encode(orjson.dumps({**claims, **changes}))
    return f"{version}.{forged.decode()}.{mac}"


def _signed_by_hand(claims: dict[str, Any]) -> str:
    signed = b"v1." + base64.b64encode(orjson.dumps(claims))
    return (signed + b"." + base64.b64encode(KEY._mac(signed))).decode()


LONG_LIVED = {"sub": "someone", "acc": "someone;admin", "cid": None, "iat": int(time.time())}
LONG_LIVED["exp"] = LONG_LIVED["iat"] + 3600


@pytest.mark.parametrize(
    ("token", "says"),
    [
        (OTHER.sign("someone", "someone;admin", audience="things"), "signature"),
        (
            _tampered(KEY.sign("member", "member;member;", audience="things"), acc="member;admin"),
            "signature",
        ),
        (
            _tampered(KEY.sign("member", "member;", audience="things", folder_path="a"), fp="b"),
            "signature",
        ),
        (
            KEY.sign(
                "someone", "someone;admin", audience="things", now=time.time() - identity.TTL_S - 1
            ),
            "expired",
        ),
        (KEY.sign("someone", "someone;admin", audience="things", now=time.time() + 3600), "future"),
        (_signed_by_hand(LONG_LIVED), "lives longer"),
        ("", "malformed"),
        ("v1", "malformed"),
        ("v1..", "malformed"),
        ("v2.e30.AAAA", "malformed"),
        ("someone;admin", "malformed"),
    ],
)
def test_forged_expired_or_malformed_tokens_are_refused(token: str, says: str) -> None:
    with pytest.raises(identity.Unauthenticated, match=says):
        KEY.verify(token)


@pytest.mark.parametrize(
    "secret",
    ["", "a" * 64, "0123456789" * 3, "deadbeef" * 3, "files-key", "Zt1d0b3-vQ8_kLm2nP4r"],
)
def test_a_weak_service_key_is_refused(secret: str) -> None:
    with pytest.raises(identity.WeakSecret, match="FILES_SERVICE_KEY"):
        identity.ServiceKey(secret)


@pytest.mark.parametrize(
    ("secret", "bits"),
    [
        ("0123456789" * 4, 40 * 3.32),
        ("0123456789abcdef" * 2, 128),
        ("Zt1d0b3-vQ8_kLm2nP4rS6", 22 * 6),
        ("ab" * 20, 40 * 4),
        ("x", 0),
        ("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 0),
    ],
)
def test_strength_is_length_times_the_bits_of_the_alphabet(secret: str, bits: float) -> None:
    assert identity.strength_bits(secret) == pytest.approx(bits, abs=0.1)


def test_the_key_is_never_shown() -> None:
    secret = "Zt1d0b3-vQ8_kLm2nP4rS6tU8wX0yZ2aB4cD6eF8gH0"
    assert secret not in repr(identity.ServiceKey(secret))
    with pytest.raises(identity.WeakSecret) as refused:
        identity.ServiceKey("short-secret-value")
    assert "short-secret-value" not in str(refused.value)


# -- the middleware ---------------------------------------------------------------------


def _app() -> FastAPI:
    app = FastAPI(default_response_class=JSON)
    app.add_middleware(identity.Authenticated, key=KEY, audience="things")
    install_errors(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/things")
    async def for_a_user(
        caller: Cause = Depends(cause), rights: Access = Depends(access)
    ) -> dict[str, Any]:
        return {"actor": caller.actor, "admin": rights.org_admin, "cid": caller.correlation_id}

    @app.get("/internal/things")
    async def for_anyone() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def _get(path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(path, headers=headers)


RAW = {"X-Files-Actor": ADMIN.user_id, "X-Files-Access": ADMIN.encode()}
REFUSED = [
    {},
    RAW,
    {**RAW, "X-Correlation-Id": "x"},
    {identity.HEADER: OTHER.sign(ADMIN.user_id, ADMIN.encode(), audience="things")},
    {
        identity.HEADER: KEY.sign(
            ADMIN.user_id, ADMIN.encode(), audience="things", now=time.time() - 61
        )
    },
    {identity.HEADER: _tampered(KEY.sign("m", "m;member;", audience="things"), acc=ADMIN.encode())},
    # Sound, but for another service: seen on the wire, it cannot be replayed here.
    {identity.HEADER: KEY.sign(ADMIN.user_id, ADMIN.encode(), audience="catalog")},
    {identity.HEADER: KEY.for_service("gateway", audience="catalog")},
    {identity.HEADER: "v1.%%%%.%%%%"},
    {identity.HEADER: "v1.bm90IGpzb24." + "A" * 43},
]


@pytest.mark.parametrize("path", ["/v1/things", "/internal/things"])
@pytest.mark.parametrize("headers", REFUSED)
async def test_a_service_refuses_any_call_without_a_valid_token(
    path: str, headers: dict[str, str]
) -> None:
    answer = await _get(path, headers)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "unauthenticated"


async def test_a_signed_call_reaches_the_route_with_the_signed_caller() -> None:
    signed = {identity.HEADER: KEY.sign(ADMIN.user_id, ADMIN.encode(), "corr-3", audience="things")}
    answer = await _get("/v1/things", {**signed, "X-Files-Actor": "someone-else"})
    assert answer.json() == {"actor": ADMIN.user_id, "admin": True, "cid": "corr-3"}
    assert (await _get("/internal/things", signed)).status_code == 200


async def test_a_service_token_does_not_act_for_a_user() -> None:
    service = {identity.HEADER: KEY.for_service("gateway", audience="things")}
    refused = await _get("/v1/things", service)
    assert refused.status_code == 401
    assert "acts for a user" in refused.json()["error"]["message"]
    assert (await _get("/internal/things", service)).status_code == 200


async def test_health_needs_no_token() -> None:
    assert (await _get("/healthz", {})).status_code == 200


# -- the bootstrap admin key -------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "files_admin",
        "files_" + "a" * 40,
        "files_0123456789",
        "files_Zt1d0b3-vQ8_kLm2nP4r",  # 20 URL-safe characters: 120 bits
        "admin-password",
    ],
)
def test_a_weak_bootstrap_admin_key_is_refused_at_start(key: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bootstrap_admin_key=key, service_key=KEY_TEXT)
    with pytest.raises(RuntimeError, match="FILES_BOOTSTRAP_ADMIN_KEY is too weak"):
        Stack(settings).start()
    assert not (tmp_path / "pg").exists()  # refused before anything started
    with pytest.raises(identity.WeakSecret, match="FILES_BOOTSTRAP_ADMIN_KEY is too weak"):
        build_acl(settings)


@pytest.mark.parametrize(
    "key", ["files_Zt1d0b3-vQ8_kLm2nP4rS6", "files_" + "0123456789abcdef" * 2, ADMIN_KEY]
)
def test_a_strong_bootstrap_admin_key_is_taken(key: str, tmp_path: Path) -> None:
    build_acl(Settings(data_dir=tmp_path, bootstrap_admin_key=key, service_key=KEY_TEXT))


def test_the_embedded_platforms_service_key_outlives_a_restart(tmp_path: Path) -> None:
    """Under `make run` (FILES_SERVICE_KEY unset) the service key was made afresh at each
    start: part URLs, signed with it, handed out before a restart were refused after
    (403 to a `files upload` under way). It is made once, kept in the data dir (0600),
    and a part URL of before the restart is taken after it."""
    settings = Settings(data_dir=tmp_path)
    before = identity.ServiceKey(service_key(settings, tmp_path))
    session_id, expires = str(uuid.uuid4()), int(time.time()) + 3600
    signature = before.upload_part_mac(session_id, 1, expires, "opener")
    after = identity.ServiceKey(service_key(settings, tmp_path))
    assert after.upload_part_allowed(session_id, 1, expires, "opener", signature)
    assert (tmp_path / "service.key").stat().st_mode & 0o777 == 0o600
    # Set, it is the one used, and the file is not read.
    assert service_key(Settings(data_dir=tmp_path, service_key=KEY_TEXT), tmp_path) == KEY_TEXT
    # Nothing but the key is left beside it; a key file emptied (a crash of a version
    # that wrote it in place) is refused naming the file, not the variable alone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["service.key"]
    (tmp_path / "service.key").write_text("")
    with pytest.raises(identity.WeakSecret, match=r"service\.key"):
        service_key(settings, tmp_path)
