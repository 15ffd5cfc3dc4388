"""The HTTP conventions every service shares: the error format, the caller, health."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, MutableMapping
from typing import Any

import asyncpg
import httpx
import orjson
import structlog
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi._compat import ModelField, field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from shared.contracts.envelope import Cause
from shared.kit import access as access_rules
from shared.kit import db, idempotency
from shared.kit.blobs.base import StoreUnavailable
from shared.kit.errors import FAULTS_NAMED, Refused, clipped, repeated_parameter
from shared.kit.eventstore import ConcurrencyConflict, EventTooLarge
from shared.kit.identity import Identity
from shared.kit.logs import log


class JSON(JSONResponse):
    """JSON rendered by orjson: UUIDs and datetimes as strings, fast."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            # Text with a lone surrogate (a client's own JSON, echoed in a refusal) is
            # no UTF-8: written escaped, as JSON allows, rather than failing the answer.
            return json.dumps(content, ensure_ascii=True, default=str).encode()


CORRELATION_HEADER = "X-Correlation-Id"
# Gateway to service: the milliseconds its caller will still wait for this call's answer
# (services/gateway/deadlines.py); past them the service stops waiting (`Deadline`).
DEADLINE_HEADER = "Files-Deadline-Ms"
# The methods `Deadline` gives up on as reads: they apply nothing.
READS = frozenset({"GET", "HEAD"})
# The POSTs that only read (their query too long for a URL: many ids, a key), which the
# gateway tells their deadline as reads: `Deadline` treats them as reads.
READ_POSTS = frozenset(
    {
        "/internal/files",
        "/internal/impact",
        "/internal/authenticate",
        "/internal/cloud-sync/check",
        "/internal/renditions",
        "/internal/users/lookup",
        "/v1/files/lookup",
    }
)


def only_reads(method: str, path: str) -> bool:
    """Whether a call to `path` only reads: given up on, it applies nothing."""
    return method in READS or (method == "POST" and path in READ_POSTS)


REQUEST_ID_HEADER = "X-Request-Id"
# A request id we take from a caller: short, printable, nothing a log line or a header
# could be bent with. Anything else is replaced by one of ours.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


# Seconds a 503 asks a client to wait: the launcher restarts a process within a couple.
RETRY_AFTER_S = "1"


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path"))


async def _api_error(_: Request, error: Exception) -> JSON:
    assert isinstance(error, Refused)
    # A 503 always says when to come back, whichever layer gave up; so does a 429.
    headers = {"Retry-After": RETRY_AFTER_S} if error.status in (429, 503) else None
    return JSON(error_body(error.code, error.message, error.details), error.status, headers=headers)


class _StrictJSONRequest(Request):
    """A request whose JSON body must be Unicode text: invalid UTF-8 and a lone
    surrogate's escape (`"\\ud800"`) are malformed JSON, as are numbers no double holds.
    The standard library's parser took a lone surrogate (which PostgreSQL then refused to
    store: a 500) and answered invalid UTF-8 or a 5,000-digit number with a vague 400."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # A UTF-8 byte order mark, which JSON parsers may ignore (RFC 8259 8.1), is.
            body = (await self.body()).removeprefix(b"\xef\xbb\xbf")
            # orjson refuses all three (its error is a json.JSONDecodeError); the value is
            # the standard library's, which keeps integers past 64 bits exact where orjson
            # makes them doubles (the metadata rules refuse those by name).
            orjson.loads(body)
            self._json = json.loads(body)
        return self._json


def _query_params(dependant: Dependant) -> Iterator[ModelField]:
    """A route's query parameters, its dependencies' too."""
    yield from dependant.query_params
    for below in dependant.dependencies:
        yield from _query_params(below)


class JSONRoute(APIRoute):
    """Every service route's class (`APIRouter(route_class=JSONRoute)`): its JSON body
    parsed strictly (`_StrictJSONRequest`); a parse error is `400 malformed_json`
    naming the problem (orjson's error is a `json.JSONDecodeError`, which FastAPI turns
    into a validation error). A query parameter it takes one value of, given more than
    once, is `422 invalid_request` naming it (FastAPI would read the last)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # As FastAPI decides it: a parameter typed as a sequence reads every value given.
        single = frozenset(
            field.alias
            for field in _query_params(self.dependant)
            if not field_annotation_is_sequence(field.field_info.annotation)
        )

        async def strict(request: Request) -> Response:
            if single and request.scope["query_string"]:
                repeated = repeated_parameter(
                    request.query_params.multi_items(), single.__contains__
                )
                if repeated is not None:
                    raise repeated
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return strict


async def _validation_error(_: Request, error: Exception) -> JSON:
    assert isinstance(error, RequestValidationError)
    problems = error.errors()
    invalid = next((p for p in problems if p.get("type") == "json_invalid"), None)
    if invalid is not None:
        why = (invalid.get("ctx") or {}).get("error")
        message = "the request body is not valid JSON" + (f": {why}" if why else "")
        return JSON(error_body("malformed_json", message), 400)
    # A few, each clipped: a body of 16 MiB can hold 600,000 unknown keys or one 16 MB
    # key, and every one was named twice in the answer (8 MB in, 62 MB out).
    fields = [
        {"field": clipped(_location(tuple(p["loc"]))), "problem": clipped(p["msg"])}
        for p in problems[:FAULTS_NAMED]
    ]
    message = "; ".join(f"{f['field'] or 'body'}: {f['problem']}" for f in fields)
    if len(problems) > FAULTS_NAMED:
        message += f"; and {len(problems) - FAULTS_NAMED} more"
    details = {"fields": fields, "faults": len(problems)}
    return JSON(error_body("invalid_request", message, details), 422)


async def _http_error(_: Request, error: Exception) -> JSON:
    assert isinstance(error, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    # Its headers kept: a 405's Allow.
    return JSON(error_body(code, str(error.detail)), error.status_code, headers=error.headers)


def unexpected_error(request_id: str) -> JSON:
    return JSON(
        error_body(
            "internal_error",
            f"something went wrong on our side; quote request id {request_id}",
            {"request_id": request_id},
        ),
        500,
    )


class StreamCut(Exception):
    """An answer cut short on purpose after it began (a download whose caller's right
    went: services/gateway/edge.py `while_allowed`). The connection is closed, the only
    honest end of a body sent short; `reason` is what an RPC that stands for the request
    ends with (`request.state.cut`)."""

    def __init__(self, reason: Refused) -> None:
        super().__init__(reason.message)
        self.reason = reason


class Guard:
    """The outermost middleware of every app: each request gets an id (the caller's
    `X-Request-Id`, or the gateway's `X-Correlation-Id`, when sane; else a new one),
    bound to its log lines, kept as `request.state.correlation_id` and sent back as
    `X-Request-Id`; and an error nothing else handled becomes a JSON 500
    `internal_error` carrying that id.

    It answers here and does not raise again. Starlette's last-resort handler sends its
    500 and then re-raises, so that the server logs it; uvicorn, seeing an exception
    after the answer began, closes the connection, and the client's next request on
    that keep-alive connection is reset. An error after the answer began (a stream cut
    short) is raised: closing the connection is then the only honest end.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name in (b"x-request-id", b"x-correlation-id") and _SANE_ID.fullmatch(value):
                request_id = value.decode()
                break
        request_id = request_id or str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = request_id
        started = False
        echoed = (b"x-request-id", request_id.encode())

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=request_id):
            try:
                await self.app(scope, receive, sending)
            except StreamCut as cut:
                if not started:
                    raise
                # Logged where it was cut. Left unfinished, the answer's connection is
                # closed by uvicorn (which notes it in a line of its own); an in-process
                # caller (the gRPC API) finds why in the request's state.
                scope["state"]["cut"] = cut.reason
            except ClientDisconnect:
                # The client went away mid-request (gave up on an upload, timed out):
                # there is no one to answer, and nothing of ours went wrong.
                log.info("http.client_gone", method=scope.get("method"), path=scope.get("path"))
            except Exception as error:
                log.error(
                    "http.unexpected_error",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    exc_info=error,
                )
                if started:
                    raise
                await unexpected_error(request_id)(scope, receive, sending)


class Deadline:
    """ASGI middleware: a call whose caller said how long it will wait
    (`DEADLINE_HEADER`) is given up on then, if it has not begun its answer: the
    handler is cancelled (a read's statement stopped, a write's transaction rolled
    back or a keyed write's unit of work abandoned: nothing of it applied) and the
    call answered `503`, `cause: timeout`, `applied: false`. Past the gateway's budget
    nobody reads the answer, and a handler that waited on a hung database would hold
    its pool's connections and its request for a minute more. An answer once begun (a
    blob's download) goes on: its body is not waited for; so does a request whose
    transaction began its commit (`db.committing`): it is made, and answered so. An
    unkeyed write is held so too from its first statement outside a transaction
    (`db.bare`: it may have written then, with no commit to mark it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        wait = None
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"files-deadline-ms" and value.isdigit() and len(value) < 10:
                    wait = int(value) / 1000
                    break
        if wait is None:
            await self.app(scope, receive, send)
            return
        # A keyed write's statements run in its unit of work, committed after it.
        unkeyed_write = not only_reads(scope["method"], scope.get("path", "")) and not (
            idempotency.keyed()
        )
        held = False
        bound = asyncio.timeout(wait)

        def hold() -> None:
            nonlocal held
            if not held and not bound.expired():
                held = True
                bound.reschedule(None)

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                hold()
            await send(message)

        token = db.committing.set(hold)
        bare = db.bare.set(hold if unkeyed_write else None)
        try:
            async with bound:
                await self.app(scope, receive, sending)
        except TimeoutError:
            if held or not bound.expired():
                raise
            log.warning("http.caller_gave_up", method=scope.get("method"), path=scope.get("path"))
            answer = JSON(
                error_body(
                    "unavailable",
                    "this call ran out of the time its caller gave it (a database or service"
                    " it waited for did not answer); nothing of it was applied, try again",
                    {"retry": True, "cause": "timeout", "applied": False},
                ),
                503,
                headers={"Retry-After": RETRY_AFTER_S},
            )
            await answer(scope, receive, send)
        finally:
            held = True  # a task the handler left behind, committing later: nothing to hold
            db.bare.reset(bare)
            db.committing.reset(token)


async def _raced(_: Request, error: Exception) -> JSON:
    # Two writers took the same stream (optimistic concurrency) or locked the same rows
    # in opposite orders (PostgreSQL aborted one): nothing was written, try again.
    return JSON(
        error_body(
            "concurrent_change",
            "another request changed the same things at the same time; try again",
        ),
        409,
    )


async def _too_large(_: Request, error: Exception) -> JSON:
    # The request would record an event the bus cannot carry: nothing was written.
    assert isinstance(error, EventTooLarge)
    return JSON(
        error_body(
            "event_too_large",
            f"this request would record an event of {error.size} bytes ({error.event_type});"
            f" at most {error.limit} are allowed: send less in one request",
            {"size": error.size, "limit": error.limit, "event_type": error.event_type},
        ),
        413,
    )


# What a lost database, broker or service raises: the request did not complete, and
# trying again later is the remedy (the launcher or orchestrator restarts what died).
UNAVAILABLE: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # the connection dropped or was refused
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,  # "connection is closed"; others are ours (see below)
    # A connection PostgreSQL dropped mid-query, then reset as the pool takes it back:
    # "cannot switch to state ...; another operation is in progress" (others are ours).
    asyncpg.InternalClientError,
    ConnectionError,  # refused or reset before PostgreSQL or a service spoke
    TimeoutError,
    KafkaError,
    httpx.TransportError,  # a service that is down, restarting, or too slow
    StoreUnavailable,  # the object store down, silent or failing (a route's read of a blob)
)


class ServiceTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, where a connection the peer closes as it is made (a service
    killed as it accepts) is a ConnectError: anyio then asks a socket that is already
    gone for its peer and raises AttributeError, which would be a 500."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except AttributeError as error:
            if "getpeername" not in str(error):
                raise
            raise httpx.ConnectError("connection closed as it was made", request=request) from error


def unavailable(message: str) -> JSON:
    body = error_body("unavailable", message, {"retry": True})
    return JSON(body, 503, headers={"Retry-After": RETRY_AFTER_S})


async def _unavailable(request: Request, error: Exception) -> JSON:
    if isinstance(error, asyncpg.InterfaceError) and "closed" not in str(error):
        raise error  # a misuse of a connection: a bug, answered by the Guard
    if isinstance(error, asyncpg.InternalClientError) and "in progress" not in str(error):
        raise error  # a misuse of a connection: a bug, answered by the Guard
    if isinstance(error, httpx.TransportError):
        what = "a service did not answer"
    elif isinstance(error, KafkaError):
        what = "the message broker did not answer"
    elif isinstance(error, StoreUnavailable):
        what = "the file store did not answer"
    else:
        what = "the database did not answer"
    log.warning("http.unavailable", error=repr(error))
    return unavailable(
        f"{what}; try again in a moment (a write sent again with the same"
        " Idempotency-Key is applied once)"
    )


def install_errors(app: FastAPI) -> None:
    """The error format for every refusal; call it after adding any other middleware,
    so that the guard is the outermost."""
    app.add_middleware(Guard)
    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, _unavailable)
    app.add_exception_handler(Refused, _api_error)
    app.add_exception_handler(ConcurrencyConflict, _raced)
    app.add_exception_handler(EventTooLarge, _too_large)
    app.add_exception_handler(asyncpg.DeadlockDetectedError, _raced)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def identity_of(request: Request) -> Identity:
    """The verified caller of this call (`shared/kit/identity.py`); never a raw header."""
    found = getattr(request.state, "identity", None)
    if not isinstance(found, Identity):
        raise Refused(401, "unauthenticated", "no caller: requests come through the gateway")
    return found


def _user(request: Request) -> Identity:
    found = identity_of(request)
    if found.access is None:
        # A service's own token: it may wait, look up, read blobs, never act as a user.
        raise Refused(
            401, "unauthenticated", "this route acts for a user: a service's token is not enough"
        )
    return found


def cause(request: Request) -> Cause:
    """Who is asking: the user the gateway authenticated, as its signed token says."""
    caller = _user(request)
    correlation = caller.correlation_id or str(uuid.uuid4())
    structlog.contextvars.bind_contextvars(correlation_id=correlation, actor=caller.actor)
    return Cause(
        actor=caller.actor,
        correlation_id=correlation,
        traceparent=request.headers.get("traceparent"),
    )


def folder_path(request: Request) -> list[uuid.UUID]:
    """The folder's path of ids, root first, as the gateway found it in the catalog
    (which owns the tree) while it checked the caller's role there, signed in the
    caller's identity token: the service that acts on the folder decides the role again
    from it and the caller's signed grants, with no round trip of its own. A route of
    the gateway that forgot the check signs no path: refused."""
    signed = _user(request).folder_path
    if not signed:
        raise Refused(
            400,
            "invalid_folder_path",
            "no folder path in the identity token: requests come through the gateway,"
            " which signs it",
        )
    try:
        return [uuid.UUID(part.strip()) for part in signed.split(",")]
    except ValueError:
        raise Refused(
            400, "invalid_folder_path", "the identity token's folder path must list folder ids"
        ) from None


def signs_folder_path(request: Request) -> bool:
    """Whether the gateway signed a folder's path in the caller's identity token."""
    return bool(_user(request).folder_path)


def role_on_folder(request: Request, folder_id: uuid.UUID, needed: str) -> str:
    """The caller's role on the folder of the route, if at least `needed` (404 or 403
    as the catalog would answer), from the path the gateway sent."""
    path = folder_path(request)
    if path[-1] != folder_id:
        raise Refused(
            400, "invalid_folder_path", f"the signed folder path is not folder {folder_id}'s"
        )
    return access(request).require(path, needed, f"folder {folder_id}")


def file_ref(file_id: uuid.UUID | str) -> str:
    """The object claim the gateway signs for a call about one file (`role_on_file`)."""
    return f"file:{file_id}"


def files_ref(file_ids: Iterable[uuid.UUID | str]) -> str:
    """The object claim the gateway signs for a call about a set of files whose rights it
    checked (a re-encode): their ids' digest, order and repeats aside."""
    ids = sorted({str(i).lower() for i in file_ids})
    return "files:" + hashlib.sha256(",".join(ids).encode()).hexdigest()


def role_on_file(request: Request, file_id: uuid.UUID, needed: str = "user") -> str:
    """The caller's role on the folder a file is in, if at least `needed` (404 as for an
    unknown file, 403), for a context that serves something of the file (its picture,
    its slices) and does not own the tree: the gateway signs the file (claim `obj`) with
    its folder's path, both from the one answer of the catalog, so a path checked for
    one file is no right on another."""
    if _user(request).object_ref != file_ref(file_id):
        raise Refused(
            400,
            "invalid_object_ref",
            f"the identity token does not sign file {file_id}: the gateway signs the file"
            " whose folder it checked, with that folder's path",
        )
    return access(request).require(folder_path(request), needed, f"file {file_id}")


def access(request: Request) -> access_rules.Access:
    """What the caller may do: their organisation role and folder grants, as the
    gateway found them in the ACL context for this request and signed."""
    encoded = _user(request).access
    assert encoded is not None
    return access_rules.Access.decode(encoded)
