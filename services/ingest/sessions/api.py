"""Upload session routes: a large file in parts, straight to the store, resumable."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response

from services.ingest.answers import Caller, Editor, recorded, recorded_no_content
from services.ingest.sessions.handlers import Sessions
from shared.kit.errors import not_found
from shared.kit.http import JSON, JSONRoute, identity_of, role_on_folder
from shared.kit.identity import OPENER_HEADER


def router(
    sessions: Sessions, writable: Callable[[uuid.UUID, Request], Awaitable[None]]
) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    @api.post("/v1/folders/{folder_id}/uploads", status_code=201)
    async def open_session(
        folder_id: uuid.UUID,
        request: Request,
        caller: Caller,
        _: Editor,
        body: dict[str, Any] = Body(...),
    ) -> JSON:
        await writable(folder_id, request)
        # Bound to the key it is opened with (signed by the gateway): see domain.check_opener.
        key_id = identity_of(request).key_id
        opened = await sessions.open(caller, folder_id, body, uuid.UUID(key_id) if key_id else None)
        return recorded(opened, 201)

    @api.get("/internal/uploads/{session_id}/opener", include_in_schema=False)
    async def opener(session_id: uuid.UUID) -> dict[str, Any]:
        """Who opened the session, with which key, for which folder: for the gateway to
        find what they may do now (domain.check_opener)."""
        row = await sessions.pool.fetchrow(
            "SELECT folder_id, created_by, key_id FROM ingest.sessions WHERE id = $1",
            session_id,
        )
        if row is None:
            raise not_found("upload session", session_id)
        return {
            "folder_id": str(row["folder_id"]),
            "created_by": row["created_by"],
            "key_id": str(row["key_id"]) if row["key_id"] else None,
        }

    # The editor role on its folder, decided here too, as for completing and aborting
    # it; its part URLs, the right to send its bytes, to its opener only.
    @api.get("/v1/uploads/{session_id}")
    async def session(session_id: uuid.UUID, request: Request, caller: Caller) -> dict[str, Any]:
        role_on_folder(request, await sessions.folder_of(session_id), "editor")
        found = await sessions.state(session_id, caller.actor)
        if found is None:
            raise not_found("upload session", session_id)
        return found

    @api.put("/v1/uploads/{session_id}/parts/{number}")
    async def put_part(
        session_id: uuid.UUID,
        number: int,
        request: Request,
        expires: int = Query(...),
        signature: str = Query(..., max_length=64),
        opener: str | None = Query(None, max_length=256),
    ) -> dict[str, Any]:
        # No caller: the URL's signature is the right, as with a presigned S3 URL, while
        # the session's opener keeps theirs: asked of the ACL context and the catalog
        # (sessions.put_part), not taken from the gateway.
        return await sessions.put_part(
            session_id, number, expires, signature, request.stream(), opened_by=opener
        )

    # Completing adds the file to the session's folder, aborting drops what was sent:
    # the editor role there, decided here too (as for the routes that add to a folder).
    @api.post("/v1/uploads/{session_id}/complete", status_code=201)
    async def complete(session_id: uuid.UUID, request: Request, caller: Caller) -> JSON:
        role_on_folder(request, await sessions.folder_of(session_id), "editor")
        # And the opener's right, which the parts came under (the gateway signs it).
        token = request.headers.get(OPENER_HEADER)
        opener = None
        if token is not None:
            with contextlib.suppress(Exception):  # a bad token is no opener
                opener = sessions.parts.identity.verify(token, audience="ingest")
        return recorded(await sessions.complete(caller, session_id, opener), 201)

    @api.delete("/v1/uploads/{session_id}", status_code=204)
    async def abort(session_id: uuid.UUID, request: Request, caller: Caller) -> Response:
        role_on_folder(request, await sessions.folder_of(session_id), "editor")
        return recorded_no_content(await sessions.abort(caller, session_id))

    return api
