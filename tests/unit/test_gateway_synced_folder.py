"""How the gateway composes `POST /v1/folders` with `cloud_sync` (compose.py), against
stand-in services: ingest is asked to configure the sync only with grants that give the
caller the editor role on the new folder and its path signed. A top-level folder's maker
is waited for (the ACL grants them its admin by reaction) and asked of the ACL afresh; a
subfolder's maker, already an editor of the parent, is not. When the grant does not come
within the request's budget, the folder is undone and the answer is an honest 503."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from starlette.requests import Request

from services.gateway.compose import Compose
from services.gateway.edge import Call, Gateway
from services.gateway.routes import ROUTES
from shared.kit import consistency
from shared.kit.access import Access

ROUTE = next(r for r in ROUTES if r.method == "POST" and r.template == "/v1/folders")
INTEGRATION = str(uuid.uuid4())
CLOUD_SYNC = {"integration_id": INTEGRATION, "prefix": "lab/"}
FOLLOWING = {"cloud_sync": {**CLOUD_SYNC, "sync_interval_s": 3600}, "job_id": str(uuid.uuid4())}


def user(user_id: str, grants: dict[str, str] | None = None, admin: bool = False) -> dict[str, Any]:
    access = Access(user_id, admin, {uuid.UUID(f): r for f, r in (grants or {}).items()})
    return {"id": user_id, "access": access.encode()}


def answer(status: int, body: Any = None, token: dict[str, int] | None = None) -> httpx.Response:
    headers = {consistency.HEADER: consistency.encode(token)} if token else {}
    return httpx.Response(
        status, content=orjson.dumps(body) if body is not None else b"", headers=headers
    )


class Services:
    """The gateway's calls, answered as the catalog, ingest and the ACL would; `granted`:
    whether the ACL has granted the maker of a new top-level folder its admin role by the
    time the gateway has waited for the catalog's token."""

    def __init__(self, caller: dict[str, Any], *, granted: bool, configured: int = 201) -> None:
        self.caller = caller
        self.granted = granted
        self.configured = configured
        self.calls: list[tuple[str, str, str, dict[str, Any] | None, str | None]] = []
        self.events: list[str] = []
        self.made: dict[str, Any] = {}

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        request: Request,
        user: dict[str, Any] | None = None,
        *,
        json: Any = None,
        folder_path: str | None = None,
        **_: Any,
    ) -> httpx.Response:
        self.calls.append((service, method, path, user, folder_path))
        self.events.append(f"{service} {method} {path}")
        if path == "/internal/cloud-sync/check":
            return answer(200, {})
        if (service, method, path) == ("catalog", "POST", "/v1/folders"):
            folder_id = str(uuid.uuid4())
            parent = json.get("parent_id")
            steps = [{"id": parent, "name": "parent"}] if parent else []
            self.made = {
                "type": "folder",
                "id": folder_id,
                "name": json["name"],
                "parent_id": parent,
                "path": [*steps, {"id": folder_id, "name": json["name"]}],
                "my_role": "editor" if parent else "admin",
            }
            return answer(201, self.made, {"catalog": 7})
        if service == "ingest" and path.endswith("/cloud-sync"):
            if self.configured != 201:
                return answer(self.configured, {"error": {"code": "already_synced"}})
            return answer(201, FOLLOWING, {"ingest": 3})
        if method == "DELETE":
            return answer(204, token={"catalog": 8})
        raise AssertionError(f"unexpected call {service} {method} {path}")

    async def wait_for(
        self, request: Request, token: dict[str, int], rounds: int = 3
    ) -> dict[str, int]:
        self.events.append(f"wait {consistency.encode(token)}")
        return {**token, "acl": 5}

    def forget_callers(self) -> None:
        self.events.append("forget")

    async def catch_up(self, request: Request, consumer: str, source: str) -> None:
        self.events.append(f"catch up {consumer} {source}")

    async def authenticate(self, request: Request) -> dict[str, Any] | None:
        self.events.append("authenticate")
        if self.granted and self.made and self.made["parent_id"] is None:
            grants = Access.decode(self.caller["access"]).grants
            fresh = {**{str(f): r for f, r in grants.items()}, self.made["id"]: "admin"}
            return user(self.caller["id"], fresh)
        return self.caller

    relay = staticmethod(Gateway.relay)


def call_of(caller: dict[str, Any], body: dict[str, Any]) -> Call:
    sent = orjson.dumps(body)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": sent, "more_body": False}

    request = Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/v1/folders",
            "headers": [(b"content-length", str(len(sent)).encode())],
            "query_string": b"",
            "state": {"correlation_id": "c0ffee"},
        },
        receive,
    )
    return Call(request, ROUTE, {}, caller)


async def made_by(services: Services, body: dict[str, Any]) -> httpx.Response:
    composed = await Compose(services).create_folder(call_of(services.caller, body))  # type: ignore[arg-type]
    return httpx.Response(
        composed.status_code, content=bytes(composed.body), headers=dict(composed.headers)
    )


def ingest_calls(services: Services) -> list[tuple[dict[str, Any] | None, str | None]]:
    return [
        (u, p)
        for s, m, path, u, p in services.calls
        if s == "ingest" and m == "POST" and path.endswith("/cloud-sync")
    ]


async def test_a_members_top_level_folder_is_configured_once_the_acl_granted_them_its_admin() -> (
    None
):
    member = user(str(uuid.uuid4()))
    services = Services(member, granted=True)
    made = await made_by(services, {"name": "lab", "cloud_sync": CLOUD_SYNC})

    assert made.status_code == 201, made.text
    folder = services.made
    # The answer's shape: the folder as the catalog answered, its sync and first job.
    assert made.json() == {
        **folder,
        "cloud_sync": FOLLOWING["cloud_sync"],
        "sync_job_id": FOLLOWING["job_id"],
    }
    # The catalog's token, waited for, then the caller asked again, before ingest.
    at = services.events.index(f"ingest POST /internal/folders/{folder['id']}/cloud-sync")
    assert services.events[at - 3 : at] == ["wait catalog:7", "forget", "authenticate"]
    ((signed, path),) = ingest_calls(services)
    assert path == folder["id"]
    assert signed is not None and signed["id"] == member["id"]
    assert Access.decode(signed["access"]).role_on([uuid.UUID(folder["id"])]) == "admin"
    # The consistency token, as before: the catalog's, grown by the wait for the grant.
    assert consistency.decode(made.headers[consistency.HEADER]) == {"catalog": 7, "acl": 5}
    assert not [c for c in services.calls if c[1] == "DELETE"]


async def test_a_late_grant_undoes_the_folder_and_answers_503_to_retry() -> None:
    member = user(str(uuid.uuid4()))
    services = Services(member, granted=False)
    made = await made_by(services, {"name": "lab", "cloud_sync": CLOUD_SYNC})

    assert made.status_code == 503, made.text
    assert made.headers["Retry-After"]
    error = made.json()["error"]
    assert error["code"] == "unavailable" and error["details"]["retry"] is True
    # Ingest was never asked with grants that do not give the role; the folder went.
    assert ingest_calls(services) == []
    folder = services.made
    ((_, _, _, undoer, _),) = [c for c in services.calls if c[1] == "DELETE"]
    assert undoer is not None and undoer["id"] == member["id"]
    assert Access.decode(undoer["access"]).role_on([uuid.UUID(folder["id"])]) == "admin"
    assert services.events[-1] == f"catalog DELETE /v1/folders/{folder['id']}"


async def test_a_subfolders_maker_is_already_its_editor_so_nothing_is_waited_for() -> None:
    parent = str(uuid.uuid4())
    editor = user(str(uuid.uuid4()), {parent: "editor"})
    services = Services(editor, granted=False)
    made = await made_by(services, {"name": "in", "parent_id": parent, "cloud_sync": CLOUD_SYNC})

    assert made.status_code == 201, made.text
    assert "authenticate" not in services.events
    assert not [e for e in services.events if e.startswith("wait")]
    ((signed, path),) = ingest_calls(services)
    assert signed == editor and path == f"{parent},{services.made['id']}"
    assert consistency.decode(made.headers[consistency.HEADER]) == {"catalog": 7}


async def test_an_org_admin_is_not_waited_for_before_ingest() -> None:
    admin = user(str(uuid.uuid4()), admin=True)
    services = Services(admin, granted=False)
    made = await made_by(services, {"name": "lab", "cloud_sync": CLOUD_SYNC})

    assert made.status_code == 201, made.text
    at = services.events.index(f"ingest POST /internal/folders/{services.made['id']}/cloud-sync")
    assert "authenticate" not in services.events[:at]
    assert [s for s in services.events[:at] if s.startswith("wait")] == []


async def test_a_refused_configuration_undoes_the_folder_as_its_now_granted_maker() -> None:
    member = user(str(uuid.uuid4()))
    services = Services(member, granted=True, configured=409)
    made = await made_by(services, {"name": "lab", "cloud_sync": CLOUD_SYNC})

    assert made.status_code == 409, made.text
    ((signed, _),) = ingest_calls(services)
    ((_, _, path, undoer, _),) = [c for c in services.calls if c[1] == "DELETE"]
    assert path == f"/v1/folders/{services.made['id']}" and undoer == signed
    # With grants the catalog takes for the delete (the old composition sent the cached
    # ones, which the catalog refused: the folder stayed, half made).
    assert undoer is not None
    assert Access.decode(undoer["access"]).role_on([uuid.UUID(services.made["id"])]) == "admin"
