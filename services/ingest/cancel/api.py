"""`POST /v1/jobs/{id}/cancel`: a job stops; what it did stays (cancel/handlers.py)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from services.ingest.answers import Caller, recorded
from services.ingest.cancel.handlers import Cancelling
from services.ingest.jobs.api import job, job_role
from shared.kit.errors import not_found
from shared.kit.http import JSON, JSONRoute


def router(cancelling: Cancelling) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.post("/v1/jobs/{job_id}/cancel")
    async def cancel_job(job_id: uuid.UUID, caller: Caller, request: Request) -> JSON:
        # The job's own, or the editor role on its folder: decided here too (from the
        # path the gateway signs), not only by the gateway.
        found = await job(cancelling.pool, job_id)
        if found is None:
            raise not_found("job", job_id)
        job_role(request, found, "editor")
        return recorded(await cancelling.cancel(caller, job_id), 200)

    return api
