"""Stored content by range, for the gateway's downloads (`/internal/blobs/{key}`): what
uploads and upload sessions stored, whichever blob store holds it."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from shared.kit.blobs import BlobStore
from shared.kit.errors import not_found
from shared.kit.http import JSON, JSONRoute, error_body

# Digits bounded: any offset past 32 digits is past every file, and Python's int() of
# thousands of digits raises its own words.
RANGE = re.compile(r"^bytes=(\d{0,32})-(\d{0,32})$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single satisfiable range, None for the whole file.

    Raises ValueError when the range cannot be satisfied.
    """
    if not header:
        return None
    match = RANGE.match(header.strip())
    if not match:
        return None  # multiple or malformed ranges: RFC 9110 lets us send the whole
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(size - length, 0), size - 1
    start = int(first)
    if last and int(last) < start:
        return None  # not a valid range, so the header is ignored (RFC 9110, 14.2)
    if start >= size:
        raise ValueError("range starts past the end")
    return start, min(int(last), size - 1) if last else size - 1


def router(blobs: BlobStore) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.get("/internal/blobs/{key:path}", include_in_schema=False)
    async def blob(key: str, request: Request) -> Response:
        try:
            size = await blobs.size(key)
        except (KeyError, FileNotFoundError):
            raise not_found("content", key) from None
        try:
            wanted = parse_range(request.headers.get("range"), size)
        except ValueError as error:
            return JSON(
                error_body("range_not_satisfiable", str(error), {"size": size}),
                416,
                headers={"Content-Range": f"bytes */{size}"},
            )
        start, end = wanted or (0, size - 1)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
        status = 200
        if wanted is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if size == 0:
            return Response(b"", 200, headers={"Accept-Ranges": "bytes"})
        return StreamingResponse(blobs.stream(key, start, end), status, headers=headers)

    return api
