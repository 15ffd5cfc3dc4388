"""The web app's sessions: an API key exchanged for an HttpOnly cookie.

`POST /v1/sessions {api_key}` asks the ACL context, which owns keys, to start a
session (recorded as `acl.SessionStarted`, only the token's hash kept) and sets its
token as a cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's
page sends it), Secure over TLS. `DELETE /v1/sessions` ends it on the server
(`acl.SessionEnded`) and clears the cookie. A revoked key ends its sessions.

A request without `Authorization` is authenticated by the cookie. Since a browser
sends the cookie by itself, a write authenticated by it must also show it comes from
the app (CSRF): it carries the `X-Files-CSRF` header, which no other site's page can
set on a request to us without a CORS preflight we never grant, and its `Origin` (and
`Sec-Fetch-Site`), when sent, must be ours.

A sign-in takes `Idempotency-Key` (kit/idempotency.py): sent again, it gets the same
session (its token kept sealed under the key, like a new API key's). Signing out needs
none: signing out again answers the same 204 and records nothing.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from services.gateway import deadlines
from shared.api.acl import SignIn
from shared.kit import consistency, idempotency
from shared.kit.errors import Refused
from shared.kit.http import JSON, error_body

if TYPE_CHECKING:
    from services.gateway.edge import Call, Gateway

COOKIE = "files_session"
# Over TLS the cookie's name has the `__Host-` prefix: a browser takes such a cookie only
# from this host, over TLS, for the whole site, so no sibling subdomain nor a plain-HTTP
# man in the middle can plant one beside ours (two values lock a user out: edge.py).
HOST_COOKIE = "__Host-" + COOKIE
CSRF_HEADER = "X-Files-CSRF"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
MAX_BODY = 4096


def _over_tls(request: Request) -> bool:
    """Whether the browser's connection is TLS: ours, or a proxy's in front of us."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def cookie_name(request: Request) -> str:
    """The session cookie's name on this request's connection."""
    return HOST_COOKIE if _over_tls(request) else COOKIE


def check_csrf(request: Request, what: str = "a write signed in by cookie") -> None:
    """A cookie-authenticated write (or a sign-in) must come from our own pages."""
    if not request.headers.get(CSRF_HEADER):
        raise Refused(
            403,
            "csrf_check_failed",
            f"{what} must send the {CSRF_HEADER} header (or use 'Authorization: Bearer <key>')",
        )
    origin = request.headers.get("origin")
    # The host only: behind a TLS-terminating proxy our own scheme may be http.
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise Refused(403, "csrf_check_failed", f"requests from {origin[:200]!r} are not accepted")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Refused(403, "csrf_check_failed", f"a {site} request is not accepted")


async def authenticate(gateway: Gateway, request: Request) -> dict[str, Any] | None:
    """The caller of a request signed in by the session cookie, or None."""
    token = request.cookies.get(cookie_name(request), "")
    if not token or len(token) > 1000:
        return None
    if request.method not in SAFE_METHODS:
        check_csrf(request)
    digest = "session:" + hashlib.sha256(token.encode()).hexdigest()
    return await gateway.caller_of(digest, request, {"session_token": token})


def _replayed(answer: Any, response: Response) -> Response:
    if answer.headers.get(idempotency.STATE_HEADER) == "replayed":
        response.headers[idempotency.REPLAYED_HEADER] = "true"
    return response


async def sign_in(gateway: Gateway, call: Call) -> Response:
    """`POST /v1/sessions`: the key exchanged for a session, its token set as the cookie.
    With an Idempotency-Key (checked well-formed by the dispatcher), scoped like any
    write's by the user it acts for: the key's."""
    request = call.request
    check_csrf(request, "a sign-in (what the web app sends to make a session)")
    body_bytes = bytearray()
    with deadlines.paused(request):  # the caller's sending: not a wait for a service
        async for chunk in request.stream():
            body_bytes += chunk
            if len(body_bytes) > MAX_BODY:
                return JSON(error_body("request_too_large", "a sign-in is a few bytes"), 413)
    try:
        body = SignIn.model_validate_json(bytes(body_bytes))
    except ValidationError:
        return JSON(error_body("invalid_request", 'send {"api_key": "<your key>"}'), 422)
    user = None
    headers = {}
    if (key := request.headers.get(idempotency.HEADER)) is not None:
        user = await gateway.user_of_key(request, body.api_key)
        if user is None:
            return JSON(error_body("unauthenticated", "unknown or revoked API key"), 401)
        headers[idempotency.HEADER] = key
    answer = await gateway.call(
        "acl",
        "POST",
        "/internal/sessions",
        request,
        user,
        json={"api_key": body.api_key},
        headers=headers,
    )
    if answer.status_code != 201:
        return gateway.relay(answer)
    started = answer.json()
    token = started.pop("token")
    response = _replayed(answer, gateway.relay(answer, body=started))
    response.set_cookie(
        cookie_name(request),
        token,
        max_age=int(gateway.settings.session_ttl_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_over_tls(request),
    )
    return response


async def sign_out(gateway: Gateway, call: Call) -> Response:
    """`DELETE /v1/sessions`: the session ended on the server, the cookie cleared. Sent
    again it answers the same 204 and records nothing: no key needed."""
    request = call.request
    check_csrf(request)
    token = request.cookies.get(cookie_name(request), "")
    headers = {}
    if token and len(token) <= 1000:
        answer = await gateway.call(
            "acl", "POST", "/internal/sessions/end", request, json={"session_token": token}
        )
        if answer.status_code >= 300:
            return gateway.relay(answer)
        headers = {consistency.HEADER: answer.headers.get(consistency.HEADER, "")}
        gateway.forget_callers()
    response = Response(status_code=204, headers=headers)
    response.delete_cookie(
        cookie_name(request),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_over_tls(request),
    )
    return response
