"""The gateway's HTTP app: health, docs, and one route for the whole `/v1` API, which
authenticates the caller, then forwards to the owning service or composes the answer
(services/gateway/edge.py, compose.py); gRPC beside it (grpc_api.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response

from services.gateway import sessions, slices, web
from services.gateway.compose import Compose
from services.gateway.edge import (
    MAX_JSON_BODY,
    PART_URL,
    Gateway,
    Replayed,
    TooLarge,
    error_response,
    route,
)
from shared.kit import consistency, idempotency, tracing
from shared.kit.http import CORRELATION_HEADER, JSON, install_errors
from shared.kit.service import serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    gateway = Gateway(settings)
    compose = Compose(gateway)

    @contextlib.asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        grpc_server = None
        if settings.grpc_port:
            # The gRPC API beside HTTP: each RPC is the HTTP request it stands for, made
            # to this very app in process (same gateway, rights, composition, errors).
            from services.gateway import grpc_api

            grpc_server = await grpc_api.start(served, settings.http_host, settings.grpc_port)
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
    )
    install_errors(app)
    openapi: dict[str, Any] = {}

    @app.middleware("http")
    async def correlate(request: Request, call_next: Any) -> Response:
        correlation = request.headers.get("x-request-id") or str(uuid.uuid4())
        request.state.correlation_id = correlation
        with structlog.contextvars.bound_contextvars(correlation_id=correlation):
            response: Response = await call_next(request)
        response.headers["X-Request-Id"] = correlation
        return response

    # The `traceparent` forwarded to the services (`Gateway._headers`) is then the one of
    # this request's server span (FastAPI's, when tracing is on).
    app.add_middleware(tracing.ForwardContext)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSON:
        answers = await asyncio.gather(
            *(gateway.http.get(f"{url}/readyz") for url in gateway.services.values()),
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
        if not openapi:
            openapi.update({"openapi": "3.1.0", "info": {"title": "Files", "version": "1"}})
            paths: dict[str, Any] = {}
            schemas: dict[str, Any] = {}
            for url in gateway.services.values():
                doc = (await gateway.http.get(f"{url}/openapi.json")).json()
                paths.update({p: v for p, v in doc.get("paths", {}).items() if p.startswith("/v1")})
                schemas.update(doc.get("components", {}).get("schemas", {}))
            openapi["paths"] = paths
            openapi["components"] = {
                "schemas": schemas,
                "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            }
            openapi["security"] = [{"apiKey": []}]
        return openapi

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="Files API")

    # The web app: its pages and sign-in sessions (before the catch-all `/v1` route).
    web.install(app, settings)
    sessions.install(app, gateway)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    async def public(rest: str, request: Request) -> Response:
        key = request.headers.get(idempotency.HEADER)
        if key is not None and request.method in idempotency.METHODS:
            if not idempotency.valid_key(key):
                return error_response(
                    400,
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 printable ASCII characters, no spaces",
                )
            try:
                return await gateway.keep_answer(request, await answer(request))
            except Replayed as replay:
                return replay.response
        return await answer(request)

    async def answer(request: Request) -> Response:
        if request.method == "PUT" and PART_URL.fullmatch(request.url.path):
            # A part of an upload session, sent to the URL the session gave: its
            # signature is the right (as a presigned S3 URL's is), not an API key.
            return gateway.relay(
                await gateway.http.put(
                    f"{settings.ingest_url}{request.url.path}",
                    params=request.query_params,
                    content=request.stream(),
                    headers={CORRELATION_HEADER: request.state.correlation_id},
                )
            )
        user = await gateway.authenticate(request)
        if user is None:
            return error_response(
                401, "unauthenticated", "send a valid API key as 'Authorization: Bearer <key>'"
            )
        structlog.contextvars.bind_contextvars(actor=user["id"])
        service = route(request.url.path, request.method)
        if service is None:
            return error_response(404, "not_found", f"no route {request.method} {request.url.path}")
        if request.method == "GET" and consistency.HEADER in request.headers:
            try:
                wanted = consistency.decode(request.headers[consistency.HEADER])
            except ValueError as error:
                return error_response(400, "invalid_consistency_token", str(error))
            await gateway.wait_for(wanted)
        parts = request.url.path.strip("/").split("/")
        if service == "gateway":
            return await compose.audit(request, user)
        if service == "ingest" and parts[1] == "folders" and parts[3] == "image-groups":
            return await compose.upload_image_group(request, user, parts[2])
        if service == "ingest" and parts[1] == "folders" and parts[3] == "dicom":
            return await compose.upload_dicom(request, user, parts[2])
        if service == "ingest" and parts[1] == "folders" and parts[3] == "imports":
            return await compose.import_objects(request, user, parts[2])
        if service == "ingest" and parts[1] == "folders" and parts[3] == "uploads":
            return await compose.open_upload_session(request, user, parts[2])
        if service == "ingest" and parts[1] == "uploads":
            return await compose.upload_session(request, user, parts[2])
        if service == "ingest" and parts[1] == "folders":
            return await compose.upload(request, user, parts[2])
        if service == "acl" and parts[1] == "folders":
            return await compose.collaborators(request, user, parts[2])
        if slices.wanted(parts, request.method):
            return await slices.slice_image(gateway, request, user, parts[2], parts[4])
        if parts[1:2] == ["files"] and parts[3:] == ["content"] and request.method == "GET":
            return await compose.content(request, user)
        if parts[1:2] == ["files"] and parts[3:] == ["thumbnail"] and request.method == "GET":
            return await compose.thumbnail(request, user, parts[2])
        if parts[1:2] == ["files"] and parts[3:] == ["datasets"]:
            # The catalog says whether the file exists; datasets only knows its links.
            found = await gateway.http.get(
                f"{settings.catalog_url}/internal/files/{parts[2]}",
                headers=gateway._headers(request, user),
            )
            if found.status_code != 200:
                return gateway.relay(found)
        if service == "datasets" and request.method != "GET":
            # The datasets context validates against its mirror of the catalog: let it
            # catch up with the catalog first, so a file uploaded a moment ago is known.
            await gateway.catch_up("datasets", "catalog")
        try:
            answer = await gateway.forward(service, request, user)
        except TooLarge:
            return error_response(
                413,
                "request_too_large",
                f"the request body is over {MAX_JSON_BODY // (1024 * 1024)} MiB",
                limit=MAX_JSON_BODY,
            )
        if service == "acl" and request.method != "GET" and answer.status_code < 300:
            gateway.forget_callers()
        if (
            parts[1:] == ["folders"]
            and request.method == "POST"
            and answer.status_code == 201
            and answer.json()["parent_id"] is None
        ):
            # The creator becomes the folder's admin in the ACL context, by reaction:
            # wait for it, so their next request finds the folder theirs.
            token = await gateway.wait_for(
                consistency.decode(answer.headers.get(consistency.HEADER, "")), rounds=2
            )
            gateway.forget_callers()
            return gateway.relay(answer, token)
        if answer.status_code != 200:
            return gateway.relay(answer)
        # Answers that take parts from more than one context.
        reading = request.method == "GET"
        if reading and parts[1] == "jobs":
            return await compose.job_with_files(answer, request, user)
        if reading and parts[1] == "datasets" and parts[3:] == ["files"]:
            return await compose.dataset_files(answer, request, user)
        if parts[1] == "files" and len(parts) == 3:
            return await compose.file_with_datasets(answer, request, user)
        if parts[1] in ("move", "delete"):
            return await compose.with_dataset_impact(answer, request, user, parts[1])
        return gateway.relay(answer)

    return app


def main() -> None:
    serve("gateway", build, default_port=None)
