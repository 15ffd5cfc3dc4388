"""The gateway's HTTP app: health, the API's document, and the `/v1` API, each request
matched against the declared routes (services/gateway/routes.py), authenticated, then
forwarded to the owning service or composed (edge.py, compose.py); gRPC beside it
(grpc_api.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.routing import Route as StarletteRoute

from services.gateway import deadlines, openapi, web
from services.gateway.compose import Compose
from services.gateway.edge import (
    MAX_JSON_BODY,
    Call,
    Gateway,
    Replayed,
    TooLarge,
    Unavailable,
    error_response,
    repeated_header,
)
from services.gateway.routes import TABLE, Refusal, Route
from services.gateway.transfers import GiveBack
from shared.kit import consistency, idempotency, tracing
from shared.kit.http import JSON, RETRY_AFTER_S, install_errors, only_reads
from shared.kit.logs import log
from shared.kit.service import READY_PROBE_S, serve, settle_heap
from shared.kit.settings import Settings

METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


def build(settings: Settings) -> FastAPI:
    gateway = Gateway(settings)
    compose = Compose(gateway)
    # Every route's composer exists: a typo in the table fails at start, not on a request.
    composers = {r.compose: getattr(compose, r.compose) for r in TABLE.routes if r.compose}

    @contextlib.asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        grpc_server = None
        if settings.grpc_port:
            # The gRPC API beside HTTP: each RPC is the HTTP request it stands for, made
            # to this very app in process (same gateway, rights, composition, errors).
            from services.gateway import grpc_api

            grpc_server = await grpc_api.start(
                served, settings.http_host, settings.grpc_port, settings.http_send_idle_s
            )
        settle_heap()
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            await gateway.stop()

    app = FastAPI(
        title="Files",
        version="1",
        lifespan=lifespan,
        default_response_class=JSON,
        openapi_url=None,
        # `/v1` is no route, not a redirect to `/v1/`.
        redirect_slashes=False,
    )
    # The `traceparent` forwarded to the services (`Gateway._headers`) is then the one of
    # this request's server span (FastAPI's, when tracing is on).
    app.add_middleware(tracing.ForwardContext)
    # A transfer's slot is given back once its exchange ends, however it ends (an
    # answer is streamed after its route returned).
    app.add_middleware(GiveBack, transfers=gateway.transfers)
    # Outermost: the request id, and a clean JSON 500 that keeps the connection usable.
    install_errors(app)
    document = openapi.document(TABLE.routes)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSON:
        answers = await asyncio.gather(
            # A service hung (its port open, nothing answered) is unready, told
            # within the orchestrator's probe timeout rather than after a minute.
            *(
                gateway.call(name, "GET", "/readyz", request, timeout=READY_PROBE_S + 0.5)
                for name in gateway.services
            ),
            return_exceptions=True,
        )
        unready = [
            name
            for name, answer in zip(gateway.services, answers, strict=True)
            if not isinstance(answer, httpx.Response) or answer.status_code != 200
        ]
        if unready:
            return JSON({"status": "unready", "services": unready}, 503)
        return JSON({"status": "ready"})

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> dict[str, Any]:
        return document

    # The web app's pages and the API's reference at /docs (not the API: kept out of
    # its document).
    web.install(app, settings)

    async def public(request: Request) -> Response:
        """One `/v1` request. A write with an Idempotency-Key (kit/idempotency.py) is
        answered as its first time if it was made before; else made, and the answer as
        composed here kept with it."""
        repeated = repeated_header(request)
        if repeated is not None:
            return repeated
        key = request.headers.get(idempotency.HEADER)
        if key is None or request.method not in idempotency.METHODS:
            return await guarded(request)
        if not idempotency.valid_key(key):
            return error_response(
                400,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 printable ASCII characters, no spaces",
            )
        try:
            return await gateway.keep_answer(request, await guarded(request))
        except Replayed as replay:
            return replay.response

    async def guarded(request: Request) -> Response:
        """The path checked and matched, the caller authenticated, the token waited
        for, then the route's composer or a plain forward. A service that does not
        answer is a 503; once a write was made, its own answer."""
        try:
            return await answer(request)
        except TooLarge:
            return error_response(
                413,
                "request_too_large",
                f"the request body is over {MAX_JSON_BODY // (1024 * 1024)} MiB",
                limit=MAX_JSON_BODY,
            )
        except Unavailable as error:
            committed = getattr(request.state, "committed", None)
            if committed is not None:
                return committed_answer(error, committed)
            log.warning(
                "gateway.service_unavailable",
                upstream=error.service,
                error=str(error),
                busy=error.busy,
            )
            if error.busy:
                why, cause = "has as many transfers under way as this gateway opens to it", "busy"
            elif error.spent:
                budget = deadlines.of(request)
                seconds = budget.seconds if budget is not None else 0.0
                why = f"did not answer within this request's time budget ({seconds:g} s)"
                cause = "timeout"
            else:
                why, cause = "did not answer in time", "service_unavailable"
            keyed = request.method in idempotency.METHODS and idempotency.HEADER in request.headers
            # No write of it sent to a service yet (a check before it, a read that is
            # a POST): nothing of it can have been made (`Gateway.call`).
            unsent = not getattr(request.state, "wrote", False)
            if error.busy or keyed or unsent or only_reads(request.method, request.url.path):
                then = (
                    "try again shortly (a write sent again with the same Idempotency-Key"
                    " is applied once)"
                )
            else:
                # A write without a key sent on: the service may have made it after all,
                # and sent again it would be made twice.
                then = (
                    "this write may have been applied: check before sending it again (a"
                    " write sent with an Idempotency-Key is applied once however often it is"
                    " sent)"
                )
            refused = error_response(
                503,
                "unavailable",
                f"the {error.service} service {why}; {then}",
                service=error.service,
                retry=True,
                cause=cause,
            )
            refused.headers["Retry-After"] = RETRY_AFTER_S
            return refused
        except Exception as error:
            committed = getattr(request.state, "committed", None)
            if committed is None:
                raise
            return committed_answer(error, committed)

    async def answer(request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        try:
            found = TABLE.match(request.method, raw.partition(b"?")[0])
        except Refusal as refusal:
            if refusal.status == 400:
                # A path refused outright (encoded bytes, dot segments): before anything.
                return error_response(400, refusal.code, refusal.message, **refusal.details)
            found = refusal
        route = found.route if found is not None else None
        request.state.budget = budget_of(request, route)
        user = None
        if route is None or not route.public:
            user = await gateway.authenticate(request)
            if user is None:
                return error_response(
                    401, "unauthenticated", "send a valid API key as 'Authorization: Bearer <key>'"
                )
            structlog.contextvars.bind_contextvars(actor=user["id"])
        if found is None:
            return error_response(404, "not_found", f"no route {request.method} {request.url.path}")
        if isinstance(found, Refusal):
            refused = error_response(found.status, found.code, found.message, **found.details)
            if found.status == 405:
                refused.headers["Allow"] = ", ".join(found.details["allowed"])
            return refused
        call = Call(request, found.route, found.values, user)
        unknown = call.undeclared()
        if unknown:
            return error_response(
                400,
                "unknown_parameter",
                f"this route takes no parameter {', '.join(repr(u[:100]) for u in unknown)}",
                parameters=[u[:100] for u in unknown],
            )
        repeated = call.repeated()
        if repeated is not None:
            return error_response(
                repeated.status, repeated.code, repeated.message, **repeated.details
            )
        if request.method == "GET" and consistency.HEADER in request.headers:
            try:
                wanted = consistency.decode(request.headers[consistency.HEADER])
            except ValueError as error:
                return error_response(400, "invalid_consistency_token", str(error))
            refused = await gateway.check_and_wait(request, wanted)
            if refused is not None:
                return refused
        if call.route.compose is None:
            return gateway.relay(await gateway.forward(call))
        composed: Response = await composers[call.route.compose](call)
        return composed

    def budget_of(request: Request, route: Route | None) -> deadlines.Budget:
        """A read's budget, or a write's (`long` routes' too); a gRPC client's own
        deadline, when shorter (services/gateway/grpc_api.py)."""
        long = request.method not in deadlines.READS or (route is not None and route.long)
        seconds = settings.gateway_write_budget_s if long else settings.gateway_request_budget_s
        given = request.scope["state"].get(deadlines.CLIENT_TIME_LEFT)
        return deadlines.Budget(min(seconds, given) if isinstance(given, float) else seconds)

    def committed_answer(error: Exception, committed: httpx.Response) -> Response:
        """The write was made: the caller gets the service's own answer to it (with its
        consistency token), never an error that would have them make it again."""
        log.error("gateway.failed_after_write", exc_info=error)
        return gateway.relay(committed)

    app.router.routes.append(StarletteRoute("/v1/{rest:path}", public, methods=METHODS))
    return app


def main() -> None:
    serve("gateway", build, default_port=None)
