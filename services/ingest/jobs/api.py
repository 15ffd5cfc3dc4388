"""`GET /v1/jobs/{id}`: an upload's, an upload session's or an import's progress, files
and errors, as the jobs read model has them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from fastapi import APIRouter

from services.ingest.answers import Caller
from services.ingest.jobs.projections import file_ids
from shared.kit.errors import not_found
from shared.kit.http import JSONRoute
from shared.kit.service import Parts

# A session's progress in bytes, as its parts reach the store (sessions/handlers.py).
BytesProgress = Callable[[uuid.UUID], Awaitable[dict[str, int]]]


async def job(pool: asyncpg.Pool, job_id: uuid.UUID) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT * FROM ingest.jobs WHERE id = $1", job_id)
    if row is None:
        return None
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "folder_id": str(row["folder_id"]),
        "status": row["status"],
        "progress": {"done": row["done"], "total": row["total"]}
        | ({"skipped": row["skipped"]} if row["skipped"] else {}),
        "file_ids": await file_ids(pool, row),
        # An import's DICOM instances: the gateway adds the DICOM context's account.
        **({"dicom_instances": row["dicom_instances"]} if row["dicom_instances"] else {}),
        "errors": row["errors"],
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
    }


def router(parts: Parts, session_bytes: BytesProgress) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.get("/v1/jobs/{job_id}")
    async def get_job(job_id: uuid.UUID, _: Caller) -> dict[str, Any]:
        found = await job(parts.pool, job_id)
        if found is None:
            raise not_found("job", job_id)
        if found["kind"] == "session":
            # One file in parts: its progress is in bytes, as the parts reach the store.
            found["progress"]["bytes"] = await session_bytes(job_id)
        return found

    return api
