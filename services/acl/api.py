"""ACL's HTTP API: users, API keys, folder collaborators, and key authentication for
the gateway.

The gateway authenticates the caller and signs who they are and what they may do in
their identity token (`shared/kit/identity.py`). For collaborator routes it first asks
the catalog for the folder and signs its path of ids, root first, in the same token.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from services.acl.handlers import AccessControl
from shared.api.acl import Invitation, NewUser, RoleChange
from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.access import Access
from shared.kit.http import (
    CORRELATION_HEADER,
    JSON,
    JSONRoute,
    access,
    cause,
    error_body,
    folder_path,
)

Caller = Annotated[Cause, Depends(cause)]
Grants = Annotated[Access, Depends(access)]
Limit = Annotated[int, Query(ge=1, le=1000)]


Path = Annotated[list[uuid.UUID], Depends(folder_path)]


class KeyCheck(BaseModel):
    """An API key, or a web app session's token; or a key's id (the gateway asking
    whether the key that opened an upload session is still valid, and what its user may
    do now)."""

    api_key: str | None = None
    session_token: str | None = None
    key_id: uuid.UUID | None = None


class SignIn(BaseModel):
    api_key: Annotated[str, Field(max_length=1000)]


class SignOut(BaseModel):
    session_token: Annotated[str, Field(max_length=1000)]


class Lookup(BaseModel):
    emails: list[Annotated[str, Field(max_length=320)]] = Field([], max_length=100_000)
    # Users by id (an integration's sharing, a dataset's collaborators): which of them do
    # not exist, and the others' emails and names.
    ids: list[uuid.UUID] = Field([], max_length=100_000)


def _correlation(request: Request) -> str:
    return request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4())


def _written(body: Any, position: int, status: int = 200) -> Response:
    # Every write answers with a token, even one that changed nothing (position 0).
    response = Response(status_code=204) if status == 204 else JSON(body, status)
    response.headers[consistency.HEADER] = consistency.encode({"acl": position})
    return response


def router(acl: AccessControl) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    # -- users -----------------------------------------------------------------------

    @api.post("/v1/users", status_code=201)
    async def create_user(body: NewUser, caller: Caller) -> Response:
        user, position = await acl.create_user(
            caller, email=body.email, name=body.name, org_role=body.org_role
        )
        return _written(user, position, 201)

    @api.get("/v1/users")
    async def list_users(
        caller: Caller, cursor: str | None = None, limit: Limit = 100
    ) -> dict[str, Any]:
        return await acl.list_users(caller, cursor, limit)

    @api.get("/v1/users/me")
    async def me(caller: Caller) -> dict[str, Any]:
        return await acl.user(uuid.UUID(caller.actor))

    # -- API keys --------------------------------------------------------------------

    @api.post("/v1/users/{user_id}/keys", status_code=201)
    async def issue_key(user_id: uuid.UUID, caller: Caller) -> Response:
        key, position = await acl.issue_key(caller, user_id)
        return _written(key, position, 201)

    @api.get("/v1/users/{user_id}/keys")
    async def keys(user_id: uuid.UUID, caller: Caller) -> dict[str, Any]:
        return await acl.keys(caller, user_id)

    @api.delete("/v1/keys/{key_id}", status_code=204)
    async def revoke_key(key_id: uuid.UUID, caller: Caller) -> Response:
        """Revoking a key that is already revoked answers 204 again and records nothing."""
        return _written(None, await acl.revoke_key(caller, key_id), 204)

    # -- folder collaborators --------------------------------------------------------

    @api.get("/v1/folders/{folder_id}/collaborators")
    async def collaborators(
        folder_id: uuid.UUID, _: Caller, grants: Grants, path: Path
    ) -> dict[str, Any]:
        return await acl.collaborators(grants, path, folder_id)

    @api.post("/v1/folders/{folder_id}/collaborators")
    async def invite(
        folder_id: uuid.UUID, body: Invitation, caller: Caller, grants: Grants, path: Path
    ) -> Response:
        listed, position = await acl.invite(caller, grants, path, folder_id, body.emails, body.role)
        return _written(listed, position)

    @api.patch("/v1/folders/{folder_id}/collaborators/{user_id}")
    async def change_role(
        folder_id: uuid.UUID,
        user_id: uuid.UUID,
        body: RoleChange,
        caller: Caller,
        grants: Grants,
        path: Path,
    ) -> Response:
        collaborator, position = await acl.change_role(
            caller, grants, path, folder_id, user_id, body.role
        )
        return _written(collaborator, position)

    @api.delete("/v1/folders/{folder_id}/collaborators/{user_id}", status_code=204)
    async def remove(
        folder_id: uuid.UUID, user_id: uuid.UUID, caller: Caller, grants: Grants, path: Path
    ) -> Response:
        return _written(None, await acl.remove(caller, grants, path, folder_id, user_id), 204)

    # -- for the gateway and the other services --------------------------------------

    @api.post("/internal/authenticate", include_in_schema=False)
    async def authenticate(body: KeyCheck) -> JSON:
        user = await acl.authenticate(body.api_key, body.session_token, body.key_id)
        if user is None:
            return JSON(error_body("unauthenticated", "unknown or revoked API key"), 401)
        return JSON(user)

    # The web app's sessions, for the gateway (POST and DELETE /v1/sessions there).

    @api.post("/internal/sessions", include_in_schema=False)
    async def start_session(body: SignIn, request: Request) -> Response:
        token, session, position = await acl.start_session(
            body.api_key, _correlation(request), acl.parts.settings.session_ttl_s
        )
        return _written({**session, "token": token}, position, 201)

    @api.post("/internal/sessions/end", include_in_schema=False)
    async def end_session(body: SignOut, request: Request) -> Response:
        return _written(None, await acl.end_session(body.session_token, _correlation(request)), 204)

    @api.post("/internal/users/lookup", include_in_schema=False)
    async def lookup(body: Lookup) -> dict[str, Any]:
        return await acl.lookup(body.emails, body.ids)

    return api


def install(app: FastAPI, acl: AccessControl) -> None:
    app.include_router(router(acl))
