"""The DICOM context's HTTP API: its account of a job, for the gateway to compose, and
a series' slices drawn as images for the web app's viewer (the gateway asks the
catalog first whether the caller may see the file)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path
from fastapi.responses import Response

from services.dicom.handlers import Dicom
from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.http import JSON, cause

Caller = Annotated[Cause, Depends(cause)]


def router(dicom: Dicom) -> APIRouter:
    api = APIRouter()

    @api.get("/internal/jobs/{job_id}", include_in_schema=False)
    async def job(job_id: uuid.UUID) -> dict[str, Any]:
        """How many of the job's instances are settled, their series files, the errors.
        A job none of whose instances is read yet is all zeros."""
        return await dicom.job(job_id)

    @api.post("/internal/jobs/{job_id}/cancel", include_in_schema=False)
    async def cancel(job_id: uuid.UUID, caller: Caller) -> JSON:
        """A job cancelled: its instances not read yet are skipped (the gateway checked
        the caller's right, and asks ingest to record the job's end)."""
        position = await dicom.cancel(caller, job_id)
        return JSON(
            {"cancelled": True},
            200,
            headers={consistency.HEADER: consistency.encode({"dicom": position})},
        )

    @api.get("/v1/files/{file_id}/slices/{index}")
    async def slice_image(
        file_id: uuid.UUID, index: Annotated[int, Path(ge=0, le=100_000)]
    ) -> Response:
        """Slice `index` (0 first, in slice order) of the series `file_id`, as a PNG."""
        png, etag = await dicom.slice_image(file_id, index)
        return Response(
            png,
            media_type="image/png",
            headers={"Cache-Control": "private, max-age=3600", "ETag": f'"{etag}"'},
        )

    return api


def install(app: FastAPI, dicom: Dicom) -> None:
    app.include_router(router(dicom))
