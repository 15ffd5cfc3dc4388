"""`GET /v1/files/{id}/slices/{index}`: a DICOM series' slice as a PNG, for the viewer.

The catalog says whether the caller may see the file (404 as for any file they may
not see) and that it is a series; the DICOM context, which owns the instances, draws
the slice (services/dicom/slices.py).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import Response

from services.gateway.edge import error_response

if TYPE_CHECKING:
    from services.gateway.edge import Gateway

PASSED = ("content-type", "cache-control", "etag")


def wanted(parts: list[str], method: str) -> bool:
    return method == "GET" and len(parts) == 5 and parts[1] == "files" and parts[3] == "slices"


async def slice_image(
    gateway: Gateway, request: Request, user: dict[str, Any], file_id: str, index: str
) -> Response:
    try:
        uuid.UUID(file_id)
    except ValueError:
        return error_response(422, "invalid_request", f"{file_id!r} is not a file id")
    if not index.isdigit() or len(index) > 6:
        return error_response(422, "invalid_request", "the slice index is a number from 0")
    found = await gateway.http.get(
        f"{gateway.services['catalog']}/internal/files/{file_id}",
        headers=gateway._headers(request, user),
    )
    if found.status_code != 200:
        return gateway.relay(found)
    if found.json().get("kind") != "dicom_series":
        return error_response(
            422, "not_a_dicom_series", f"file {file_id} is not a DICOM series: it has no slices"
        )
    drawn = await gateway.http.get(
        f"{gateway.services['dicom']}/v1/files/{file_id}/slices/{int(index)}",
        headers=gateway._headers(request, user),
    )
    headers = {k: v for k, v in drawn.headers.items() if k.lower() in PASSED}
    headers["X-Content-Type-Options"] = "nosniff"
    return Response(drawn.content, drawn.status_code, headers=headers)
