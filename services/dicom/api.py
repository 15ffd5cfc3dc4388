"""The DICOM context's HTTP API: its account of a job, for the gateway to compose."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, FastAPI

from services.dicom.handlers import Dicom


def router(dicom: Dicom) -> APIRouter:
    api = APIRouter()

    @api.get("/internal/jobs/{job_id}", include_in_schema=False)
    async def job(job_id: uuid.UUID) -> dict[str, Any]:
        """How many of the job's instances are settled, their series files, the errors.
        A job none of whose instances is read yet is all zeros."""
        return await dicom.job(job_id)

    return api


def install(app: FastAPI, dicom: Dicom) -> None:
    app.include_router(router(dicom))
