"""Ingest's HTTP API: uploads, jobs, and content by range."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from services.ingest.handlers import Uploads
from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.errors import not_found
from shared.kit.http import JSON, cause, error_body

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


def router(uploads: Uploads) -> APIRouter:
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
        return found

    @api.get("/internal/blobs/{key:path}", include_in_schema=False)
    async def blob(key: str, request: Request) -> Response:
        try:
            size = uploads.blobs.size(key)
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


def install(app: FastAPI, uploads: Uploads) -> None:
    app.include_router(router(uploads))
