"""Upload routes: files, a DICOM series' instances, an image group or sequence, each a
multipart body streamed to the store."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request

from services.ingest.answers import Caller, Editor, recorded
from services.ingest.uploads.handlers import Uploads
from shared.kit.http import JSON, JSONRoute


def router(
    uploads: Uploads, writable: Callable[[uuid.UUID, Request], Awaitable[None]]
) -> APIRouter:
    """`writable`: refuses (409) uploads into a folder that takes none (a cloud-synced one)."""
    api = APIRouter(route_class=JSONRoute)

    @api.post("/v1/folders/{folder_id}/files", status_code=201)
    async def upload(folder_id: uuid.UUID, request: Request, caller: Caller, _: Editor) -> JSON:
        await writable(folder_id, request)
        return recorded(
            await uploads.receive(
                caller, folder_id, request.headers.get("content-type", ""), request.stream()
            ),
            201,
        )

    @api.post("/v1/folders/{folder_id}/dicom", status_code=202)
    async def upload_dicom(
        folder_id: uuid.UUID, request: Request, caller: Caller, _: Editor
    ) -> JSON:
        await writable(folder_id, request)
        return recorded(
            await uploads.receive_dicom(
                caller, folder_id, request.headers.get("content-type", ""), request.stream()
            ),
            202,
        )

    @api.post("/v1/folders/{folder_id}/dicomweb/studies", status_code=202)
    async def store_instances(
        folder_id: uuid.UUID, request: Request, caller: Caller, _: Editor
    ) -> JSON:
        """DICOMweb's STOW-RS: a DICOM upload whose body is multipart/related; the
        gateway waits for its job and answers as PS3.18 says."""
        await writable(folder_id, request)
        return recorded(
            await uploads.receive_dicom(
                caller,
                folder_id,
                request.headers.get("content-type", ""),
                request.stream(),
                related=True,
            ),
            202,
        )

    @api.post("/v1/folders/{folder_id}/image-groups", status_code=201)
    async def upload_image_group(
        folder_id: uuid.UUID, request: Request, caller: Caller, _: Editor
    ) -> JSON:
        await writable(folder_id, request)
        return recorded(
            await uploads.receive_image_group(
                caller, folder_id, request.headers.get("content-type", ""), request.stream()
            ),
            201,
        )

    return api
