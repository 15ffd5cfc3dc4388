"""The one error type for refusals, pure (no I/O), so domains raise it too.

Its status is the HTTP status the gateway answers with; the code is snake_case
for programs, the message is for a person. The HTTP layer renders it in the
API's error format.
"""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def not_found(what: str, ident: object) -> Refused:
    return Refused(404, "not_found", f"{what} {ident} does not exist", {"id": str(ident)})
