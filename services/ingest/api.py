"""Ingest's HTTP API: uploads, jobs, and content by range."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse

from services.ingest.handlers import Uploads
from services.ingest.imports import Imports
from services.ingest.sessions import Sessions
from shared.contracts.envelope import Cause
from shared.kit import access as access_rules
from shared.kit import consistency
from shared.kit.errors import not_found
from shared.kit.http import JSON, access, cause, error_body

Caller = Annotated[Cause, Depends(cause)]
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single satisfiable range, None for the whole file.

    Raises ValueError when the range cannot be satisfied.
    """
    if not header:
        return None
    match = RANGE.match(header.strip())
    if not match:
        return None  # multiple or malformed ranges: RFC 9110 lets us send the whole
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(size - length, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range, so the header is ignored (RFC 9110, 14.2)
    if start >= size:
        raise ValueError("range starts past the end")
    return start, min(int(last), size - 1) if last else size - 1


def _received(result: tuple[dict[str, Any], int], status: int) -> JSON:
    body, position = result
    response = JSON(body, status)
    response.headers[consistency.HEADER] = consistency.encode({"ingest": position})
    return response


def router(uploads: Uploads, sessions: Sessions) -> APIRouter:
    api = APIRouter()

    @api.post("/v1/folders/{folder_id}/files", status_code=201)
    async def upload(folder_id: uuid.UUID, request: Request, caller: Caller) -> JSON:
        return _received(
            await uploads.receive(
                caller, folder_id, request.headers.get("content-type", ""), request.stream()
            ),
            201,
        )

    @api.post("/v1/folders/{folder_id}/dicom", status_code=202)
    async def upload_dicom(folder_id: uuid.UUID, request: Request, caller: Caller) -> JSON:
        return _received(
            await uploads.receive_dicom(
                caller, folder_id, request.headers.get("content-type", ""), request.stream()
            ),
            202,
        )

    @api.post("/v1/folders/{folder_id}/image-groups", status_code=201)
    async def upload_image_group(folder_id: uuid.UUID, request: Request, caller: Caller) -> JSON:
        return _received(
            await uploads.receive_image_group(
                caller, folder_id, request.headers.get("content-type", ""), request.stream()
            ),
            201,
        )

    @api.get("/v1/jobs/{job_id}")
    async def job(job_id: uuid.UUID, _: Caller) -> dict[str, Any]:
        found = await uploads.job(job_id)
        if found is None:
            raise not_found("job", job_id)
        if found["kind"] == "session":
            # One file in parts: its progress is in bytes, as the parts reach the store.
            found["progress"]["bytes"] = await sessions.bytes_progress(job_id)
        return found

    @api.get("/internal/blobs/{key:path}", include_in_schema=False)
    async def blob(key: str, request: Request) -> Response:
        try:
            size = await uploads.blobs.size(key)
        except (KeyError, FileNotFoundError):
            raise not_found("content", key) from None
        try:
            wanted = parse_range(request.headers.get("range"), size)
        except ValueError as error:
            return JSON(
                error_body("range_not_satisfiable", str(error), {"size": size}),
                416,
                headers={"Content-Range": f"bytes */{size}"},
            )
        start, end = wanted or (0, size - 1)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
        status = 200
        if wanted is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if size == 0:
            return Response(b"", 200, headers={"Accept-Ranges": "bytes"})
        return StreamingResponse(uploads.blobs.stream(key, start, end), status, headers=headers)

    return api


def cloud_router(imports: Imports) -> APIRouter:
    """Cloud integrations and imports by reference (services/ingest/imports.py)."""
    api = APIRouter()

    @api.post("/v1/integrations", status_code=201)
    async def register_integration(
        caller: Caller, who: access_rules.Access = Depends(access), body: dict[str, Any] = Body(...)
    ) -> JSON:
        return _received(await imports.register(who, caller, body), 201)

    @api.get("/v1/integrations")
    async def list_integrations(
        _: Caller,
        who: access_rules.Access = Depends(access),
        limit: int = Query(100, ge=1, le=1000),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        return await imports.integrations(who, limit, cursor)

    @api.get("/v1/integrations/{integration_id}")
    async def get_integration(
        integration_id: uuid.UUID, _: Caller, who: access_rules.Access = Depends(access)
    ) -> dict[str, Any]:
        return await imports.integration(who, integration_id)

    @api.patch("/v1/integrations/{integration_id}")
    async def share_integration(
        integration_id: uuid.UUID,
        caller: Caller,
        who: access_rules.Access = Depends(access),
        body: dict[str, Any] = Body(...),
    ) -> JSON:
        # {shared_with: [user ids]}: who may use it besides the org admins.
        return _received(await imports.share(who, caller, integration_id, body), 200)

    @api.delete("/v1/integrations/{integration_id}", status_code=204)
    async def remove_integration(
        integration_id: uuid.UUID, caller: Caller, who: access_rules.Access = Depends(access)
    ) -> Response:
        position = await imports.remove(who, caller, integration_id)
        return Response(
            status_code=204,
            headers={consistency.HEADER: consistency.encode({"ingest": position})},
        )

    @api.post("/v1/folders/{folder_id}/imports", status_code=202)
    async def import_objects(
        folder_id: uuid.UUID,
        caller: Caller,
        who: access_rules.Access = Depends(access),
        body: dict[str, Any] = Body(...),
    ) -> JSON:
        # The gateway checked the editor role on the folder, as for uploads; whether
        # the caller may use the integration is decided here.
        return _received(await imports.start_import(who, caller, folder_id, body), 202)

    @api.get("/internal/integrations/{integration_id}/presign", include_in_schema=False)
    async def presign(
        integration_id: uuid.UUID,
        key: str = Query(..., min_length=1, max_length=1024),
        name: str = Query(..., min_length=1, max_length=300),
        mime_type: str = Query("application/octet-stream", max_length=200),
    ) -> dict[str, str]:
        return {"url": await imports.presign(integration_id, key, name, mime_type)}

    return api


def sessions_router(sessions: Sessions) -> APIRouter:
    """Upload sessions: large files in parts, straight to the store, resumable."""
    api = APIRouter()

    @api.post("/v1/folders/{folder_id}/uploads", status_code=201)
    async def open_session(
        folder_id: uuid.UUID, caller: Caller, body: dict[str, Any] = Body(...)
    ) -> JSON:
        # The gateway checked the editor role on the folder, as for uploads.
        return _received(await sessions.open(caller, folder_id, body), 201)

    @api.get("/v1/uploads/{session_id}")
    async def session(session_id: uuid.UUID, _: Caller) -> dict[str, Any]:
        found = await sessions.state(session_id)
        if found is None:
            raise not_found("upload session", session_id)
        return found

    @api.put("/v1/uploads/{session_id}/parts/{number}")
    async def put_part(
        session_id: uuid.UUID,
        number: int,
        request: Request,
        expires: int = Query(...),
        signature: str = Query(..., max_length=64),
    ) -> dict[str, Any]:
        # No caller: the URL's signature is the right, as with a presigned S3 URL.
        return await sessions.put_part(session_id, number, expires, signature, request.stream())

    @api.post("/v1/uploads/{session_id}/complete", status_code=201)
    async def complete(session_id: uuid.UUID, caller: Caller) -> JSON:
        return _received(await sessions.complete(caller, session_id), 201)

    @api.delete("/v1/uploads/{session_id}", status_code=204)
    async def abort(session_id: uuid.UUID, caller: Caller) -> Response:
        position = await sessions.abort(caller, session_id)
        return Response(
            status_code=204,
            headers={consistency.HEADER: consistency.encode({"ingest": position})},
        )

    return api


def install(app: FastAPI, uploads: Uploads, sessions: Sessions, imports: Imports) -> None:
    app.include_router(router(uploads, sessions))
    app.include_router(sessions_router(sessions))
    app.include_router(cloud_router(imports))
