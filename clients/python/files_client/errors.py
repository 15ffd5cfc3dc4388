"""Errors as the API states them: its code, message and details, typed by kind.

try:
    c.get_folder(folder_id)
except NotFound as e:
    print(e.code, e.message, e.details)
"""

from __future__ import annotations

from typing import Any, cast

import httpx


class FilesError(Exception):
    """Any refusal or failure the API (or the way to it) reports. `status` is the HTTP
    status, or the one the API answers for it when the client found the problem itself
    (a path that names nothing: 404); None when there is none (unreachable)."""

    status: int | None = None

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class Invalid(FilesError):
    """400 or 422: the request is not acceptable as sent."""


class Unauthenticated(FilesError):
    """401: no key, or an unknown or revoked one."""

    status = 401


class Forbidden(FilesError):
    """403: the caller sees the resource but lacks the role (`details.role_needed`)."""

    status = 403


class NotFound(FilesError):
    """404: no such resource, or none the caller may see."""

    status = 404


class Conflict(FilesError):
    """409: the state does not allow it (`name_taken`, `parts_missing`, ...)."""

    status = 409


class TooLarge(FilesError):
    """413: past a limit (`too_many_files`, `request_too_large`, ...)."""

    status = 413


class UnsupportedContent(Invalid):
    """415: bytes of no kind the platform accepts (`unsupported_content`, `not_an_image`)."""

    status = 415


class RangeNotSatisfiable(Invalid):
    """416: a download range past the end of the file."""

    status = 416


class Unavailable(FilesError):
    """503 (or 502/504, 429), or the platform could not be reached: try again later.
    Raised once the client's retries are spent."""


class ServerError(FilesError):
    """Any other 5xx: a fault of the platform."""


class UploadRefused(FilesError):
    """Files of an upload the platform refused, each for its own reason (its bytes of no
    kind it accepts, its name, its metadata), while the others were stored: `uploaded`,
    the Files stored, in the order given; `refused`, each refused file's `Refusal` (its
    local file, and the API's status, code, message and details). The error raised is
    also the typed error of the first refusal (`UnsupportedContent`, `Invalid` or
    `TooLarge`), with its code and its details (`name`, `key`, `needs`, ...), to which
    `details` adds `refused` (each refused file's name, path, place in the list given
    (`index`, from 0), status, code, message and details) and `uploaded` (how many were
    stored)."""

    uploaded: list[Any]
    refused: list[Any]


def _refused_as(base: type[FilesError]) -> type[UploadRefused]:
    return cast(type[UploadRefused], type("UploadRefused", (UploadRefused, base), {}))


_REFUSED_AS: dict[type[FilesError], type[UploadRefused]] = {
    base: _refused_as(base) for base in (Invalid, UnsupportedContent, TooLarge)
}


def upload_refused(uploaded: list[Any], refused: list[Any]) -> UploadRefused:
    """The error of an upload some of whose files were refused (`Refusal`s: `file`,
    `status`, `code`, `message`, `details`), the others stored."""
    first = refused[0]
    base = BY_STATUS.get(first.status or 0, Invalid)
    kind = _REFUSED_AS.get(base, _REFUSED_AS[Invalid])
    total = len(uploaded) + len(refused)
    named = "; ".join(f"{r.file.name!r}: {r.code}: {r.message}" for r in refused[:5])
    more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
    error = kind(
        first.code,
        f"{len(refused)} of {total} files refused ({len(uploaded)} stored): {named}{more}",
        {
            # As the first refusal's own error had them: a caller reading `key` or
            # `upload_session_id` reads them as before.
            **first.details,
            "refused": [
                {
                    "name": r.file.name,
                    "path": str(r.file.path),
                    "index": r.index,
                    "status": r.status,
                    "code": r.code,
                    "message": r.message,
                    "details": r.details,
                }
                for r in refused
            ],
            "uploaded": len(uploaded),
        },
        first.status,
    )
    error.uploaded, error.refused = uploaded, refused
    return error


BY_STATUS: dict[int, type[FilesError]] = {
    400: Invalid,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedContent,
    416: RangeNotSatisfiable,
    422: Invalid,
    429: Unavailable,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from(response: httpx.Response) -> FilesError:
    """The typed error of an answer of 400 or more."""
    status = response.status_code
    kind = BY_STATUS.get(status, ServerError if status >= 500 else FilesError)
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
        details = body.get("details") or {}
    except Exception:
        text = response.text.strip().replace("\n", " ")[:300]
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
        message = f"{response.request.method} {response.request.url.path}: HTTP {status}" + (
            f": {text}" if text else ""
        )
        details = {}
    return kind(code, message, details if isinstance(details, dict) else {}, status)
