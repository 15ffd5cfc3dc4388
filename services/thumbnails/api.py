"""The thumbnails context's HTTP API: a file's picture, for the gateway to serve once the
catalog has said the caller may see the file (`GET /v1/files/{id}/thumbnail`); the
gateway signs the file with its folder's path, and the role is decided here again."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.thumbnails import domain
from services.thumbnails.handlers import Thumbnails
from services.thumbnails.renditions import Renditions
from shared.contracts import renditions as rendition_events
from shared.contracts.envelope import Cause
from shared.contracts.thumbnails import THUMBNAILED_KINDS
from shared.kit import consistency
from shared.kit.errors import Refused, not_found
from shared.kit.http import (
    JSON,
    JSONRoute,
    cause,
    error_body,
    files_ref,
    identity_of,
    role_on_file,
)
from shared.kit.logs import log
from shared.kit.media import without_paths

NOT_READY_RETRY_S = 2


def _missing(error: str, message: str, **details: object) -> JSON:
    headers = {"Cache-Control": "no-store"}
    if error == "thumbnail_not_ready":
        headers["Retry-After"] = str(NOT_READY_RETRY_S)
    return JSON(error_body(error, message, details), 404, headers=headers)


def router(thumbnails: Thumbnails) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.get("/internal/thumbnails/{file_id}", include_in_schema=False)
    async def thumbnail(
        file_id: uuid.UUID,
        request: Request,
        who: Annotated[Cause, Depends(cause)],
        size: int = Query(domain.SIZES[0], ge=1, le=domain.MAX_ASKED_SIZE),
        kind: str | None = Query(None, max_length=50),
        imported: bool = False,
        sha256: str | None = Query(None, max_length=64),
        bytes_: int | None = Query(None, alias="bytes", ge=0),
        blob_key: str | None = Query(None, max_length=200),
        object_ref: str | None = Query(None, alias="object", max_length=1100),
    ) -> Response:
        """The picture covering `size` px on the long side (the smallest made that does,
        else the largest). `kind`, `imported` and, for a file imported by reference, what
        it was imported from are the file's, as the catalog has it: a file this context
        has not heard of is not ready, unless it never will be. For those with a role on
        the file's folder (decided here too: role_on_file)."""
        role_on_file(request, file_id)
        row = await thumbnails.thumbnail(file_id)
        if row is None or row["state"] == "released":
            if kind is not None and kind not in THUMBNAILED_KINDS:
                return _missing(
                    "thumbnail_unavailable", f"files of kind {kind} have no thumbnail", kind=kind
                )
            if imported and kind != "dicom_series":
                if kind not in domain.DRAWN_BY_REFERENCE:
                    return _missing(
                        "thumbnail_unavailable",
                        f"{kind}s imported by reference have no thumbnail",
                        code="imported",
                    )
                if row is None and kind and sha256 and bytes_ is not None and blob_key:
                    # Imported files are drawn when first asked for (handlers.py
                    # `_uploaded` says why): requested now, by the one who wants it.
                    await thumbnails.request_imported(
                        file_id, kind, sha256, blob_key, object_ref, bytes_, who
                    )
            return _missing("thumbnail_not_ready", f"file {file_id} has no thumbnail yet")
        if row["state"] == "pending":
            await thumbnails.want(file_id)
            return _missing("thumbnail_not_ready", f"file {file_id} has no thumbnail yet")
        if row["state"] == "failed":
            return _missing(
                "thumbnail_unavailable",
                f"file {file_id} cannot have a thumbnail: {without_paths(row['reason'])}",
                code=row["code"],
                reason=without_paths(row["reason"]),
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


class ToReEncode(BaseModel):
    id: uuid.UUID
    kind: str = Field(max_length=50)
    # An image sequence's images, in order (the catalog's group: at most 1,000).
    members: list[uuid.UUID] = Field(default_factory=list, max_length=1000)


class ReEncode(BaseModel):
    files: list[ToReEncode] = Field(min_length=1, max_length=rendition_events.MAX_FILES)


class FileIds(BaseModel):
    ids: list[uuid.UUID] = Field(max_length=10_000)


def renditions_router(renditions: Renditions) -> APIRouter:
    """Re-encoding, for the gateway once the catalog has checked the caller's rights."""
    api = APIRouter(route_class=JSONRoute, prefix="/internal", include_in_schema=False)

    @api.post("/re-encode", status_code=202)
    async def re_encode(
        body: ReEncode, caller: Annotated[Cause, Depends(cause)], request: Request
    ) -> JSON:
        # This context knows no folders: the gateway signs the files whose editor role it
        # checked (claim `obj`), and a token signed for other files makes nothing.
        if identity_of(request).object_ref != files_ref(f.id for f in body.files):
            raise Refused(
                400,
                "invalid_object_ref",
                "the identity token does not sign these files: the gateway signs the files"
                " whose re-encoding it allowed",
            )
        files: list[dict[str, Any]] = [
            {"id": str(f.id), "kind": f.kind, "members": [str(m) for m in f.members]}
            for f in body.files
        ]
        job_id, position = await renditions.request(caller, files)
        answer = JSON({"job_id": str(job_id)}, 202)
        answer.headers[consistency.HEADER] = consistency.encode({"thumbnails": position})
        return answer

    @api.get("/renditions/{file_id}")
    async def rendition(file_id: uuid.UUID, request: Request) -> JSON:
        role_on_file(request, file_id)
        row = await renditions.rendition(file_id)
        if row is None or row["state"] in ("released",):
            return _no_rendition(
                file_id, "no web rendition yet: ask for one with POST /v1/files/re-encode"
            )
        if row["state"] == "pending":
            return _no_rendition(file_id, "no web rendition yet: it is being made", pending=True)
        if row["state"] == "failed":
            return _no_rendition(
                file_id,
                f"no web rendition: it could not be made ({without_paths(row['reason'])})",
                code=row["code"],
            )
        return JSON(
            {"rendition": rendition_events.WEB, "blob_key": row["blob_key"], **row["facts"]}
        )

    @api.post("/renditions")
    async def made(body: FileIds) -> dict[str, Any]:
        return {"made": await renditions.made(body.ids)}

    @api.get("/reencode-jobs/{job_id}")
    async def job(job_id: uuid.UUID, caller: Annotated[Cause, Depends(cause)]) -> dict[str, Any]:
        # A re-encode job is its maker's alone: anyone else is told there is none.
        found = await renditions.job(job_id)
        if found is None or found["created_by"] != caller.actor:
            raise not_found("job", job_id)
        return found

    return api


def _no_rendition(
    file_id: uuid.UUID, message: str, pending: bool = False, **details: object
) -> JSON:
    headers = {"Cache-Control": "no-store"}
    if pending:
        headers["Retry-After"] = str(NOT_READY_RETRY_S)
    return JSON(
        error_body(
            "rendition_not_found",
            f"file {file_id} has {message}",
            {"file_id": str(file_id), **details},
        ),
        404,
        headers=headers,
    )


def install(app: FastAPI, thumbnails: Thumbnails, renditions: Renditions) -> None:
    app.include_router(router(thumbnails))
    app.include_router(renditions_router(renditions))
