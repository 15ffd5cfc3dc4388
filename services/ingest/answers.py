"""What every capability's routes share: the caller, and answers that carry the
position a command recorded (the gateway waits on it: read-your-writes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from fastapi.responses import Response

from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.http import JSON, cause

Caller = Annotated[Cause, Depends(cause)]


def _token(position: int) -> str:
    return consistency.encode({"ingest": position})


def recorded(result: tuple[dict[str, Any], int], status: int) -> JSON:
    """A command's answer body, and the position it recorded."""
    body, position = result
    return JSON(body, status, headers={consistency.HEADER: _token(position)})


def recorded_no_content(position: int) -> Response:
    """A 204: nothing to say but the position recorded."""
    return Response(status_code=204, headers={consistency.HEADER: _token(position)})
