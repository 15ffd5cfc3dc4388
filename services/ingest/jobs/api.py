"""`GET /v1/jobs/{id}`: an upload's, an upload session's or an import's progress, the
first page of its files and errors (and how many there are), as the jobs read model has
them; `GET /v1/jobs/{id}/files` and `/errors` the rest, page by page
(shared/kit/job_pages.py). To its maker, and to those with a role on its folder
(decided here: `job_role`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query, Request

from services.ingest.answers import Caller
from services.ingest.jobs.projections import counts, errors_page, files_page
from shared.kit import job_pages
from shared.kit.access import require_role
from shared.kit.errors import Refused, not_found
from shared.kit.http import JSONRoute, access, cause, folder_path, signs_folder_path
from shared.kit.service import Parts

# A session's progress in bytes, as its parts reach the store (sessions/handlers.py).
BytesProgress = Callable[[uuid.UUID], Awaitable[dict[str, int]]]


async def job(pool: asyncpg.Pool, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The job with the first page of its files and errors, their counts and the cursors
    to the rest (None when the page holds them all)."""
    row = await pool.fetchrow("SELECT * FROM ingest.jobs WHERE id = $1", job_id)
    if row is None:
        return None
    # Counted after the pages are read: rows are only appended, so a count is never
    # less than its page, and one larger (rows appended meanwhile) gives a cursor.
    files = await files_page(pool, job_id, -1, job_pages.PAGE)
    errors = await errors_page(pool, job_id, -1, job_pages.PAGE)
    file_count, error_count = await counts(pool, job_id)
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "folder_id": str(row["folder_id"]),
        "status": row["status"],
        "progress": {"done": row["done"], "total": row["total"]}
        | ({"skipped": row["skipped"]} if row["skipped"] else {}),
        "file_ids": [i for _, i in files],
        # An import's DICOM instances: the gateway adds the DICOM context's account.
        **({"dicom_instances": row["dicom_instances"]} if row["dicom_instances"] else {}),
        "errors": [e for _, e in errors],
        "file_count": file_count,
        "error_count": error_count,
        "next_files_cursor": _next("files", files, file_count),
        "next_errors_cursor": _next("errors", errors, error_count),
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
    }


def _next(listed: job_pages.Listed, page: list[tuple[int, Any]], count: int) -> str | None:
    """The cursor after a first page, if it does not hold the whole list."""
    last = page[-1][0] if page else -1
    return job_pages.encode(listed, job_pages.INGEST, last) if len(page) < count else None


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


def path_needed(request: Request, found: dict[str, Any]) -> None:
    """The gateway asks as for the job's maker first (the common case: one round trip,
    no folder look-up); anyone else's right needs the folder's path, which it then finds
    in the catalog and signs. Nothing of the job is told before that."""
    if found["created_by"] != cause(request).actor and not signs_folder_path(request):
        raise Refused(
            409,
            "folder_path_needed",
            "the job is not the caller's: its folder's path must be signed",
            {"folder_id": found["folder_id"]},
        )


def router(parts: Parts, session_bytes: BytesProgress) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.get("/internal/jobs/{job_id}/owner", include_in_schema=False)
    async def owner(job_id: uuid.UUID) -> dict[str, Any]:
        """Whose job it is and its folder: gateways before 2026-12-06 (late) ask it before
        a job's pages and its cancel (this one asks as for the maker first, `path_needed`);
        kept while one may run in a rollout."""
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
        path_needed(request, found)
        job_role(request, found)
        if found["kind"] == "session":
            # One file in parts: its progress is in bytes, as the parts reach the store.
            found["progress"]["bytes"] = await session_bytes(job_id)
        return found

    async def page(
        job_id: uuid.UUID,
        request: Request,
        listed: job_pages.Listed,
        cursor: str | None,
        limit: int,
    ) -> dict[str, Any]:
        """A page of ingest's part of the job's files or errors, checked as the job is.
        `dicom`: the list goes on in the DICOM context's part (the gateway's to add)."""
        row = await parts.pool.fetchrow(
            "SELECT id, kind, folder_id, created_by, dicom_instances FROM ingest.jobs"
            " WHERE id = $1",
            job_id,
        )
        if row is None:
            raise not_found("job", job_id)
        whose = {
            "id": str(job_id),
            "folder_id": str(row["folder_id"]),
            "created_by": row["created_by"],
        }
        path_needed(request, whose)
        job_role(request, whose)
        part, after = job_pages.decode(cursor, listed)
        read = files_page if listed == "files" else errors_page
        # Past ingest's part (a cursor into the DICOM context's): nothing more here.
        found = await read(parts.pool, job_id, after, limit + 1) if part == job_pages.INGEST else []
        more = len(found) > limit
        found = found[:limit]
        return {
            "items": [item for _, item in found],
            "next_cursor": job_pages.encode(listed, part, found[-1][0]) if more else None,
            "part": part,
            "after": after,
            "dicom": row["kind"] == "dicom" or bool(row["dicom_instances"]),
        }

    @api.get("/v1/jobs/{job_id}/files")
    async def job_files(
        job_id: uuid.UUID,
        _: Caller,
        request: Request,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The job's file ids, in order, a page at a time (the gateway makes them Files)."""
        return await page(job_id, request, "files", cursor, limit)

    @api.get("/v1/jobs/{job_id}/errors")
    async def job_errors(
        job_id: uuid.UUID,
        _: Caller,
        request: Request,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The job's errors, in order, a page at a time."""
        return await page(job_id, request, "errors", cursor, limit)

    return api
