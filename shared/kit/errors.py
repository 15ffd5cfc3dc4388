"""The one error type for refusals, pure (no I/O), so domains raise it too.

Its status is the HTTP status the gateway answers with; the code is snake_case
for programs, the message is for a person. The HTTP layer renders it in the
API's error format.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable
from typing import Any

# How many of a request's faults a 422 names, and how much of each it shows: a body of
# 16 MiB can hold 600,000 unknown keys or one 16 MB key, and each was named, whole, in
# the answer.
FAULTS_NAMED = 20
FAULT_CHARS = 200


def clipped(text: str) -> str:
    """A caller's text in a refusal: at most FAULT_CHARS of it."""
    return text if len(text) <= FAULT_CHARS else text[:FAULT_CHARS] + "…"


class Refused(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def invalid_parameter(parameter: str, problem: str, **more: Any) -> Refused:
    """The shape FastAPI gives a bad query value: 422 with the field named (and `more`
    details, for a caller to act on without reading the message)."""
    return Refused(
        422,
        "invalid_request",
        f"{parameter}: {problem}",
        {"fields": [{"field": parameter, "problem": problem}], "parameter": parameter} | more,
    )


def repeated_parameter(
    params: Iterable[tuple[str, str]], takes_one: Callable[[str], bool]
) -> Refused | None:
    """A 422 naming the first query parameter that takes one value and is given more
    than once: read as the last (`?limit=5&limit=500`), it was a guess at which one the
    caller meant."""
    seen: set[str] = set()
    for name, _ in params:
        if name in seen and takes_one(name):
            return invalid_parameter(clipped(name), "given more than once; it takes one value")
        seen.add(name)
    return None


def not_found(what: str, ident: object) -> Refused:
    return Refused(404, "not_found", f"{what} {ident} does not exist", {"id": str(ident)})


def storage_failed(error: Exception) -> Refused:
    """The local disk failed while keeping what a caller sent: not the caller's fault,
    so never a 4xx about their request, and not a 500 either. A full disk (or quota) is
    507; anything else 503, to be tried again. Nothing of the request is recorded; the
    message names no path of ours."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return Refused(
            507,
            "insufficient_storage",
            "the file store is full: nothing of this upload was recorded; try again once"
            " an operator has made room",
        )
    return Refused(
        503,
        "storage_unavailable",
        "the file store could not write: nothing of this upload was recorded; try again",
    )
