"""Routes of webhooks (org admins only, checked here)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response

from services.ingest.answers import Caller, recorded, recorded_no_content
from services.ingest.webhooks.handlers import Webhooks
from shared.kit.access import Access
from shared.kit.http import JSON, JSONRoute, access


def router(webhooks: Webhooks) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.post("/v1/webhooks", status_code=201)
    async def register_webhook(
        caller: Caller, who: Access = Depends(access), body: Any = Body(...)
    ) -> JSON:
        return recorded(await webhooks.register(who, caller, body), 201)

    @api.get("/v1/webhooks")
    async def list_webhooks(_: Caller, who: Access = Depends(access)) -> dict[str, Any]:
        return await webhooks.listed(who)

    @api.delete("/v1/webhooks/{webhook_id}", status_code=204)
    async def delete_webhook(
        webhook_id: uuid.UUID, caller: Caller, who: Access = Depends(access)
    ) -> Response:
        return recorded_no_content(await webhooks.delete(who, caller, webhook_id))

    @api.post("/v1/webhooks/{webhook_id}/secret")
    async def rotate_webhook_secret(
        webhook_id: uuid.UUID, caller: Caller, who: Access = Depends(access), body: Any = Body(None)
    ) -> JSON:
        return recorded(await webhooks.rotate(who, caller, webhook_id, body), 200)

    @api.post("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")
    async def retry_webhook_delivery(
        webhook_id: uuid.UUID, delivery_id: uuid.UUID, _: Caller, who: Access = Depends(access)
    ) -> dict[str, Any]:
        return await webhooks.retry(who, webhook_id, delivery_id)

    @api.get("/v1/webhooks/{webhook_id}/deliveries")
    async def webhook_deliveries(
        webhook_id: uuid.UUID,
        _: Caller,
        who: Access = Depends(access),
        limit: int = Query(100, ge=1, le=1000),
        status: Literal["pending", "delivered", "failed"] | None = None,
    ) -> dict[str, Any]:
        return await webhooks.deliveries(who, webhook_id, limit, status)

    return api
