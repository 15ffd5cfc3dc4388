"""ACL's HTTP API: users, and key authentication for the gateway."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, ConfigDict

from services.acl.handlers import Access
from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.http import JSON, cause, error_body

Caller = Annotated[Cause, Depends(cause)]


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str
    name: str
    org_role: Literal["admin", "member"] = "member"


class KeyCheck(BaseModel):
    api_key: str


def router(access: Access) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/users", status_code=201)
    async def create_user(body: NewUser, caller: Caller) -> JSON:
        user, position = await access.create_user(
            caller, email=body.email, name=body.name, org_role=body.org_role
        )
        response = JSON(user, 201)
        response.headers[consistency.HEADER] = consistency.encode({"acl": position})
        return response

    @api.get("/v1/users/me")
    async def me(caller: Caller) -> dict[str, Any]:
        return await access.user(uuid.UUID(caller.actor))

    @api.post("/internal/authenticate", include_in_schema=False)
    async def authenticate(body: KeyCheck) -> JSON:
        user = await access.authenticate(body.api_key)
        if user is None:
            return JSON(error_body("unauthenticated", "unknown or revoked API key"), 401)
        return JSON(user)

    return api


def install(app: FastAPI, access: Access) -> None:
    app.include_router(router(access))
