"""What every capability's routes share: the caller, and answers that carry the
position a command recorded (the gateway waits on it: read-your-writes)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response

from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.http import JSON, cause, role_on_folder

Caller = Annotated[Cause, Depends(cause)]


def _editor(folder_id: uuid.UUID, request: Request) -> str:
    return role_on_folder(request, folder_id, "editor")


# A route that adds to its folder (an upload, a session, an import, a sync): the editor
# role, decided here too, from the caller's signed grants and the folder's path the
# gateway sends (shared/kit/http.py), not only by the gateway.
Editor = Annotated[str, Depends(_editor)]


def _token(position: int) -> str:
    return consistency.encode({"ingest": position})


def recorded(result: tuple[dict[str, Any], int], status: int) -> JSON:
    """A command's answer body, and the position it recorded."""
    body, position = result
    return JSON(body, status, headers={consistency.HEADER: _token(position)})


def recorded_no_content(position: int) -> Response:
    """A 204: nothing to say but the position recorded."""
    return Response(status_code=204, headers={consistency.HEADER: _token(position)})
