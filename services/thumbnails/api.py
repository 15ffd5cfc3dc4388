"""The thumbnails context's HTTP API: a file's picture, for the gateway to serve once the
catalog has said the caller may see the file (`GET /v1/files/{id}/thumbnail`)."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response

from services.thumbnails import domain
from services.thumbnails.handlers import Thumbnails
from shared.contracts.thumbnails import THUMBNAILED_KINDS
from shared.kit.http import JSON, error_body
from shared.kit.logs import log

NOT_READY_RETRY_S = 2


def _missing(error: str, message: str, **details: object) -> JSON:
    headers = {"Cache-Control": "no-store"}
    if error == "thumbnail_not_ready":
        headers["Retry-After"] = str(NOT_READY_RETRY_S)
    return JSON(error_body(error, message, details), 404, headers=headers)


def router(thumbnails: Thumbnails) -> APIRouter:
    api = APIRouter()

    @api.get("/internal/thumbnails/{file_id}", include_in_schema=False)
    async def thumbnail(
        file_id: uuid.UUID,
        request: Request,
        size: int = Query(domain.SIZES[0], ge=1, le=domain.MAX_ASKED_SIZE),
        kind: str | None = Query(None, max_length=50),
        imported: bool = False,
    ) -> Response:
        """The picture covering `size` px on the long side (the smallest made that does,
        else the largest). `kind` and `imported` are the file's, as the catalog has it: a
        file this context has not heard of is not ready, unless it never will be."""
        row = await thumbnails.thumbnail(file_id)
        if row is None or row["state"] == "released":
            if kind is not None and kind not in THUMBNAILED_KINDS:
                return _missing(
                    "thumbnail_unavailable", f"files of kind {kind} have no thumbnail", kind=kind
                )
            if imported and kind != "dicom_series":
                return _missing(
                    "thumbnail_unavailable",
                    "files imported by reference have no thumbnail",
                    code="imported",
                )
            return _missing("thumbnail_not_ready", f"file {file_id} has no thumbnail yet")
        if row["state"] == "pending":
            await thumbnails.want(file_id)
            return _missing("thumbnail_not_ready", f"file {file_id} has no thumbnail yet")
        if row["state"] == "failed":
            return _missing(
                "thumbnail_unavailable",
                f"file {file_id} cannot have a thumbnail: {row['reason']}",
                code=row["code"],
                reason=row["reason"],
            )
        renditions = {r["size"]: r for r in row["renditions"]}
        chosen = renditions[domain.pick(list(renditions), size)]
        headers = {
            "ETag": domain.etag(chosen["sha256"]),
            "Cache-Control": domain.CACHE_CONTROL,
            "X-Content-Type-Options": "nosniff",
        }
        if domain.not_modified(request.headers.get("if-none-match"), chosen["sha256"]):
            return Response(status_code=304, headers=headers)
        try:
            data = await asyncio.to_thread(
                thumbnails.blobs.read_at, chosen["blob_key"], 0, chosen["bytes"]
            )
        except FileNotFoundError:
            log.error("thumbnails.picture_missing", file_id=str(file_id), key=chosen["blob_key"])
            return _missing("thumbnail_not_ready", f"file {file_id} has no thumbnail yet")
        return Response(data, 200, headers=headers, media_type=chosen["content_type"])

    return api


def install(app: FastAPI, thumbnails: Thumbnails) -> None:
    app.include_router(router(thumbnails))
