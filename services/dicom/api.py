"""The DICOM context's HTTP API: its account of a job, for the gateway to compose, and
a series' slices drawn as images for the web app's viewer (the gateway asks the
catalog first whether the caller may see the file)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path
from fastapi.responses import Response

from services.dicom.handlers import Dicom


def router(dicom: Dicom) -> APIRouter:
    api = APIRouter()

    @api.get("/internal/jobs/{job_id}", include_in_schema=False)
    async def job(job_id: uuid.UUID) -> dict[str, Any]:
        """How many of the job's instances are settled, their series files, the errors.
        A job none of whose instances is read yet is all zeros."""
        return await dicom.job(job_id)

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
