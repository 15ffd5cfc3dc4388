"""`GET /v1/jobs/{id}`: an upload's, an upload session's or an import's progress, files
and errors, as the jobs read model has them; to its maker, and to those with a role on
its folder (decided here: `job_role`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from fastapi import APIRouter, Request

from services.ingest.answers import Caller
from services.ingest.jobs.projections import file_ids
from shared.kit.access import require_role
from shared.kit.errors import Refused, not_found
from shared.kit.http import JSONRoute, access, cause, folder_path
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


def job_role(request: Request, found: dict[str, Any], needed: str = "user") -> None:
    """A job is its maker's, and the business of those with `needed` on its folder,
    decided here from the caller's signed grants and the folder's path the gateway
    found in the catalog and signed (a job of a folder they cannot see is not found)."""
    caller = cause(request)
    if found["created_by"] == caller.actor:
        return
    folder_id = uuid.UUID(found["folder_id"])
    path = folder_path(request)
    if path[-1] != folder_id:
        raise Refused(
            400, "invalid_folder_path", f"the signed folder path is not folder {folder_id}'s"
        )
    role = access(request).role_on(path)
    if role is None:
        raise not_found("job", found["id"])
    require_role(role, needed, f"job {found['id']}", "its folder")


def router(parts: Parts, session_bytes: BytesProgress) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.get("/internal/jobs/{job_id}/owner", include_in_schema=False)
    async def owner(job_id: uuid.UUID) -> dict[str, Any]:
        """Whose job it is and its folder: the gateway asks the catalog about the folder
        (and signs its path) before it asks for the job for anyone but its maker."""
        row = await parts.pool.fetchrow(
            "SELECT folder_id, created_by FROM ingest.jobs WHERE id = $1", job_id
        )
        if row is None:
            raise not_found("job", job_id)
        return {"folder_id": str(row["folder_id"]), "created_by": row["created_by"]}

    @api.get("/v1/jobs/{job_id}")
    async def get_job(job_id: uuid.UUID, _: Caller, request: Request) -> dict[str, Any]:
        found = await job(parts.pool, job_id)
        if found is None:
            raise not_found("job", job_id)
        job_role(request, found)
        if found["kind"] == "session":
            # One file in parts: its progress is in bytes, as the parts reach the store.
            found["progress"]["bytes"] = await session_bytes(job_id)
        return found

    return api
