"""`POST /v1/jobs/{id}/cancel`: a job stops; what it did stays (cancel/handlers.py)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from services.ingest.answers import Caller, recorded
from services.ingest.cancel.handlers import Cancelling
from shared.kit.http import JSON, JSONRoute


def router(cancelling: Cancelling) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.post("/v1/jobs/{job_id}/cancel")
    async def cancel_job(job_id: uuid.UUID, caller: Caller) -> JSON:
        # The gateway checked the caller's right: the job's own, or the editor role on
        # its folder.
        return recorded(await cancelling.cancel(caller, job_id), 200)

    return api
