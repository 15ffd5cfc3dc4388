"""The DICOM context's HTTP API: its account of a job, for the gateway to compose, and
a series' slices drawn as images for the web app's viewer (the gateway asks the
catalog first whether the caller may see the file, and signs the file with its
folder's path: the role is decided here again)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from services.dicom import dicomweb
from services.dicom.handlers import Dicom, to_worker
from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.errors import Refused
from shared.kit.http import JSON, JSONRoute, cause, identity_of, role_on_file, role_on_folder

Caller = Annotated[Cause, Depends(cause)]
# How long a retrieve of frames waits for its part of the process's frames budget.
FRAMES_MEMORY_WAIT_S = 5.0


class Holding(StreamingResponse):
    """A streamed answer whose memory is given back (`done`) when it ends: sent, failed
    or cut off. Not in the body's `finally`: a body never started (the client gone
    before it) runs none."""

    def __init__(
        self, content: AsyncIterator[bytes], done: Callable[[], None], media_type: str
    ) -> None:
        super().__init__(content, media_type=media_type)
        self.done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.done()


def router(dicom: Dicom) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.get("/internal/jobs/{job_id}", include_in_schema=False)
    async def job(
        job_id: uuid.UUID,
        files_from: Annotated[int, Query(ge=0)] = 0,
        errors_from: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> dict[str, Any]:
        """How many of the job's instances are settled, a page of their series files and
        of the errors (and how many there are), for the gateway to page a job's lists.
        A job none of whose instances is read yet is all zeros."""
        return await dicom.job(job_id, files_from, errors_from, limit)

    @api.get("/internal/jobs/{job_id}/settled", include_in_schema=False)
    async def settled(job_id: uuid.UUID) -> dict[str, Any]:
        """The job's instances accepted (with their UIDs) and rejected, so far."""
        return await dicom.settled(job_id)

    @api.post("/internal/jobs/{job_id}/cancel", include_in_schema=False)
    async def cancel(job_id: uuid.UUID, caller: Caller, request: Request) -> JSON:
        """A job cancelled: its instances not read yet are skipped (the gateway checked
        the caller's right, and asks ingest to record the job's end). This context knows
        neither the job's maker nor its folder: the gateway signs the job it checked
        (claim `obj`), and a token signed for anything else cancels nothing."""
        if identity_of(request).object_ref != f"job:{job_id}":
            raise Refused(
                400,
                "invalid_object_ref",
                f"the identity token does not sign job {job_id}: the gateway signs the job"
                " whose cancelling it allowed",
            )
        position = await dicom.cancel(caller, job_id)
        return JSON(
            {"cancelled": True},
            200,
            headers={consistency.HEADER: consistency.encode({"dicom": position})},
        )

    @api.get("/v1/files/{file_id}/slices/{index}")
    async def slice_image(
        file_id: uuid.UUID, index: Annotated[int, Path(ge=0, le=100_000)], request: Request
    ) -> Response:
        """Slice `index` (0 first, in slice order) of the series `file_id`, as a PNG, for
        those with a role on its folder (decided here too: role_on_file)."""
        role_on_file(request, file_id)
        png, etag = await dicom.slice_image(file_id, index)
        return Response(
            png,
            media_type="image/png",
            headers={"Cache-Control": "private, max-age=3600", "ETag": f'"{etag}"'},
        )

    return api


def _seen_folder(folder_id: uuid.UUID, request: Request) -> None:
    # Decided here too, not only by the gateway: the `user` role on the folder, from the
    # path the gateway found in the catalog and signed, and the caller's signed grants.
    role_on_folder(request, folder_id, "user")


def dicomweb_router(dicom: Dicom) -> APIRouter:
    """DICOMweb on one folder's series (services/dicom/dicomweb.py), for those with a
    role on the folder: the gateway asked the catalog, and this context checks again."""
    api = APIRouter(
        route_class=JSONRoute,
        prefix="/v1/folders/{folder_id}/dicomweb",
        dependencies=[Depends(_seen_folder)],
    )
    gate = asyncio.Semaphore(dicomweb.METADATA_PARALLEL)

    def found(answer: list[dict[str, Any]], query: dicomweb.Query) -> Response:
        return Response(
            orjson.dumps(answer), media_type=dicomweb.DICOM_JSON, headers=query.warning()
        )

    def query_of(request: Request) -> dicomweb.Query:
        return dicomweb.Query.parse(request.query_params.multi_items())

    @api.get("/studies")
    async def studies(folder_id: uuid.UUID, request: Request) -> Response:
        query = query_of(request)
        async with dicom.pool.acquire() as conn:
            return found(await dicomweb.search_studies(conn, folder_id, query), query)

    @api.get("/series")
    @api.get("/studies/{study_uid}/series")
    async def series(
        folder_id: uuid.UUID, request: Request, study_uid: str | None = None
    ) -> Response:
        query = query_of(request)
        async with dicom.pool.acquire() as conn:
            return found(await dicomweb.search_series(conn, folder_id, query, study_uid), query)

    @api.get("/instances")
    @api.get("/studies/{study_uid}/instances")
    @api.get("/studies/{study_uid}/series/{series_uid}/instances")
    async def instances(
        folder_id: uuid.UUID,
        request: Request,
        study_uid: str | None = None,
        series_uid: str | None = None,
    ) -> Response:
        query = query_of(request)
        async with dicom.pool.acquire() as conn:
            answer = await dicomweb.search_instances(conn, folder_id, query, study_uid, series_uid)
        return found(answer, query)

    async def stored(
        folder_id: uuid.UUID, study_uid: str, series_uid: str | None, sop_uid: str | None
    ) -> list[dicomweb.Stored]:
        async with dicom.pool.acquire() as conn:
            return await dicomweb.stored_instances(conn, folder_id, study_uid, series_uid, sop_uid)

    @api.get("/studies/{study_uid}")
    @api.get("/studies/{study_uid}/series/{series_uid}")
    @api.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
    async def retrieve(
        folder_id: uuid.UUID,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> Response:
        """The instances as stored, in one multipart/related answer, streamed."""
        wanted = await stored(folder_id, study_uid, series_uid, sop_uid)
        multipart = dicomweb.Multipart("application/dicom")
        return StreamingResponse(
            dicomweb.instance_parts(
                dicom.blobs,
                wanted,
                multipart,
                f"/v1/folders/{folder_id}/dicomweb",
            ),
            media_type=multipart.media_type,
        )

    @api.get("/studies/{study_uid}/metadata")
    @api.get("/studies/{study_uid}/series/{series_uid}/metadata")
    @api.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata")
    async def metadata(
        folder_id: uuid.UUID,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> Response:
        wanted = await stored(folder_id, study_uid, series_uid, sop_uid)
        return StreamingResponse(
            dicomweb.metadata(dicom.blobs, wanted, gate), media_type=dicomweb.DICOM_JSON
        )

    @api.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frames}")
    async def frames(
        folder_id: uuid.UUID, study_uid: str, series_uid: str, sop_uid: str, frames: str
    ) -> Response:
        numbers = dicomweb.frame_numbers(frames)
        [instance] = await stored(folder_id, study_uid, series_uid, sop_uid)
        bound = dicom.parts.settings.dicomweb_frames_max_bytes

        def native() -> list[tuple[str, bytes]] | None:
            return dicomweb.native_frames(
                dicomweb.opened(dicom.blobs, instance.blob_key), numbers, bound
            )

        # The frames are held until their answer is sent, after the gate is left, for
        # as long as the reader takes: each answer holds its part of the process's
        # budget from before they are read. Distinct frames are at most the instance's
        # bytes (and the bound); what they turn out to be is kept, the rest given back.
        # Taken inside the gate: one waiting for the gate holds none (the gate's four
        # could otherwise hold it all, and a fifth be refused busy, not queued).
        memory = dicom.frames_memory
        async with dicom.render_gate:
            held = await memory.take(min(instance.size, bound), FRAMES_MEMORY_WAIT_S)
            try:
                # An uncompressed frame is read alone, after the header; a compressed
                # one's fragments from a copy of the whole instance (a local store's is
                # in place).
                parts = await to_worker(native)
                if parts is None:
                    async with dicom.blobs.local_copy(instance.blob_key) as path:
                        parts = await to_worker(dicomweb.frames, path, numbers, bound)
            except BaseException:
                memory.give(held)
                raise
        read = sum(len(data) for _, data in parts)
        if read < held:
            memory.give(held - read)
            held = read
        multipart = dicomweb.Multipart(parts[0][0].split(";")[0])

        async def body() -> AsyncIterator[bytes]:
            # Part by part: the frames are not copied again into one body.
            for media, data in parts:
                yield multipart.head(len(data), media)
                yield data
                yield b"\r\n"
            yield multipart.end()

        return Holding(body(), lambda: memory.give(held), media_type=multipart.media_type)

    @api.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered")
    @api.get(
        "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frames}/rendered"
    )
    async def rendered(
        folder_id: uuid.UUID, study_uid: str, series_uid: str, sop_uid: str, frames: str = "1"
    ) -> Response:
        """A frame drawn as a PNG (the first, for an instance), windowed as the viewer's
        slices are."""
        numbers = dicomweb.frame_numbers(frames)
        if len(numbers) != 1:
            raise Refused(400, "invalid_frames", "one frame is rendered at a time")
        [instance] = await stored(folder_id, study_uid, series_uid, sop_uid)
        png = await dicom.draw(instance.blob_key, instance.size, numbers[0] - 1)
        return Response(png, media_type="image/png")

    return api


def install(app: FastAPI, dicom: Dicom) -> None:
    app.include_router(router(dicom))
    app.include_router(dicomweb_router(dicom))
