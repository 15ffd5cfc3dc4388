"""Routes of cloud integrations and imports by reference."""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import Response

from services.ingest.answers import Caller, Editor, recorded, recorded_no_content
from services.ingest.imports import objects
from services.ingest.imports.handlers import Imports, Integrations
from services.ingest.imports.sync import Syncs
from shared.kit.access import Access
from shared.kit.errors import Refused
from shared.kit.http import JSON, JSONRoute, access, folder_path, identity_of, role_on_folder

# The most one read of an object may ask: a worker reads 256 KiB blocks.
MAX_RANGE = 8 * 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d{1,15})-(\d{1,15})$")


def _one_range(header: str | None) -> tuple[int, int]:
    """(first, last) of the one closed range an object's read must name."""
    match = _RANGE.match((header or "").strip())
    if match is None:
        raise Refused(
            400, "invalid_range", "name one range of bytes, `Range: bytes=<first>-<last>`"
        )
    first, last = int(match[1]), int(match[2])
    if last < first or last - first + 1 > MAX_RANGE:
        raise Refused(
            400,
            "invalid_range",
            f"a range of 1 to {MAX_RANGE} bytes, its last byte not before its first",
        )
    return first, last


def router(integrations: Integrations, imports: Imports, syncs: Syncs) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.post("/internal/cloud-sync/check")
    async def check_cloud_sync(
        _: Caller, who: Access = Depends(access), body: dict[str, Any] = Body(...)
    ) -> dict[str, Any]:
        # Before the catalog makes the folder: may the caller use this integration?
        await syncs.check(who, body)
        return {}

    @api.post("/internal/folders/{folder_id}/cloud-sync", status_code=201)
    async def configure_cloud_sync(
        folder_id: uuid.UUID,
        caller: Caller,
        _: Editor,
        who: Access = Depends(access),
        body: dict[str, Any] = Body(...),
    ) -> JSON:
        # After the catalog made the folder: the editor role on it, decided here from the
        # path the gateway signs (a top-level folder's maker once the ACL granted it), as
        # well as the integration's use.
        return recorded(await syncs.configure(who, caller, folder_id, body), 201)

    @api.post("/v1/folders/{folder_id}/sync", status_code=202)
    async def sync_folder(
        folder_id: uuid.UUID, caller: Caller, _: Editor, who: Access = Depends(access)
    ) -> JSON:
        # An editor of the folder who may use its integration; while a sync of the whole
        # prefix runs, its job's id (one listing of the bucket for many requests).
        return recorded(await syncs.requested(who, caller, folder_id), 202)

    @api.get("/v1/folders/{folder_id}/sync")
    async def sync_state(folder_id: uuid.UUID, request: Request) -> dict[str, Any]:
        # Anyone with a role on the folder sees what it follows (a User too: the page
        # says why nothing can be added to it).
        role_on_folder(request, folder_id, "user")
        return await syncs.state(folder_id, access(request), folder_path(request))

    @api.get("/internal/folders/{folder_id}/cloud-sync")
    async def cloud_sync_of(folder_id: uuid.UUID) -> dict[str, Any]:
        return await syncs.folder_json(folder_id)

    @api.post("/v1/integrations/{integration_id}/events", status_code=202)
    async def integration_events(
        integration_id: uuid.UUID,
        body: Any = Body(...),
        token: str | None = Header(None, alias="X-Files-Events-Token", max_length=200),
    ) -> dict[str, Any]:
        # No caller: the integration's events token is the right (checked here).
        return await syncs.notified(integration_id, token, body)

    @api.post("/v1/integrations", status_code=201)
    async def register_integration(
        caller: Caller, who: Access = Depends(access), body: dict[str, Any] = Body(...)
    ) -> JSON:
        return recorded(await integrations.register(who, caller, body), 201)

    @api.get("/v1/integrations")
    async def list_integrations(
        _: Caller,
        who: Access = Depends(access),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        return await integrations.visible(who, limit, cursor)

    @api.get("/v1/integrations/{integration_id}")
    async def get_integration(
        integration_id: uuid.UUID, _: Caller, who: Access = Depends(access)
    ) -> dict[str, Any]:
        return await integrations.integration(who, integration_id)

    @api.patch("/v1/integrations/{integration_id}")
    async def share_integration(
        integration_id: uuid.UUID,
        caller: Caller,
        who: Access = Depends(access),
        body: dict[str, Any] = Body(...),
    ) -> JSON:
        # {shared_with: [user ids]}: who may use it besides the org admins.
        return recorded(await integrations.share(who, caller, integration_id, body), 200)

    @api.delete("/v1/integrations/{integration_id}", status_code=204)
    async def remove_integration(
        integration_id: uuid.UUID, caller: Caller, who: Access = Depends(access)
    ) -> Response:
        return recorded_no_content(await integrations.remove(who, caller, integration_id))

    @api.post("/v1/folders/{folder_id}/imports", status_code=202)
    async def import_objects(
        folder_id: uuid.UUID,
        request: Request,
        caller: Caller,
        _: Editor,
        who: Access = Depends(access),
        body: dict[str, Any] = Body(...),
    ) -> JSON:
        # Whether the caller may use the integration is decided here too.
        await syncs.refuse_uploads(folder_id, who, folder_path(request))
        return recorded(await imports.start_import(who, caller, folder_id, body), 202)

    @api.get("/internal/objects/{integration_id}", include_in_schema=False)
    async def object_range(
        integration_id: uuid.UUID,
        request: Request,
        key: str = Query(..., min_length=1, max_length=1024),
        expires: int = Query(...),
        signature: str = Query(..., min_length=1, max_length=100),
        file_id: uuid.UUID | None = Query(None, alias="file"),
        sha256: str | None = Query(None, max_length=64),
    ) -> Response:
        # A thumbnail worker's read of a file imported by reference. It holds no key, so
        # it sends no identity token (the middleware lets this path through): the URL's
        # signature, made by the thumbnails service for this object alone, is the right.
        # Reading through here keeps every request to a customer's bucket in ingest,
        # behind its address rule and caps. `file`, `sha256`: whose bytes are wanted (read
        # only while the object is still what the read of them found: 412 otherwise).
        # Not signed: they grant nothing, and naming others only makes the read fail.
        if not integrations.parts.identity.object_read_allowed(
            str(integration_id), key, expires, signature
        ):
            raise Refused(403, "invalid_object_url", "this object URL is not valid or has expired")
        first, last = _one_range(request.headers.get("range"))
        data = await objects.read_range(
            integrations, integration_id, key, first, last, file_id, sha256
        )
        if not data:
            return Response(status_code=416, headers={"Content-Range": "bytes */*"})
        return Response(
            data,
            206,
            headers={"Content-Range": f"bytes {first}-{first + len(data) - 1}/*"},
            media_type="application/octet-stream",
        )

    @api.get("/internal/integrations/{integration_id}/presign", include_in_schema=False)
    async def presign(
        integration_id: uuid.UUID,
        request: Request,
        who: Access = Depends(access),
        key: str = Query(..., min_length=1, max_length=1024),
        name: str = Query(..., min_length=1, max_length=300),
        mime_type: str = Query("application/octet-stream", max_length=200),
    ) -> dict[str, str]:
        # For a user who may see the file: the gateway signs its folder's path (as the
        # catalog answered it) in the caller's token; a service's token alone presigns
        # nothing. And only the object of that file: the gateway signs it with the path,
        # from the same answer of the catalog, so no token for a file of folder A
        # presigns an object of a file of folder B, nor any other key of the bucket.
        who.require(folder_path(request), "user", f"the file of object {key!r}")
        signed = identity_of(request).object_ref
        if signed is None:
            raise Refused(
                400,
                "invalid_object_ref",
                "no object in the identity token: a presigned URL is for the object of a file"
                " whose folder the gateway checked, which it signs with the folder's path",
            )
        if signed != f"{integration_id}:{key}":
            raise Refused(
                403,
                "object_not_of_file",
                f"object {key[:200]!r} of integration {integration_id} is not the object of"
                " the file whose folder was checked: only that one is presigned",
                {"integration_id": str(integration_id)},
            )
        return {"url": await integrations.presign(integration_id, key, name, mime_type)}

    return api
