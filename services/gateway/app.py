"""The public edge: authenticates, routes to the services, waits for consistency.

It owns no data. Each `/v1` request is authenticated by API key: the ACL
service answers with the caller and what they may do (organisation role,
folder grants), cached for at most half a second, and dropped at once after a
change of users, keys or collaborators made through this replica. The request
is then forwarded to the service that owns the resource with the caller and
their access in headers; each service decides on its own resources (the
catalog knows folder paths, so it decides what a grant reaches). Uploads and
downloads are streamed through, never buffered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from shared.kit import access, consistency, tracing
from shared.kit.http import ACTOR_HEADER, CORRELATION_HEADER, JSON, error_body, install_errors
from shared.kit.service import serve
from shared.kit.settings import Settings

# Another replica's cached view of a caller lives at most this long: a revoked key or
# grant stops working there within it, and at once on the replica that revoked it.
AUTH_TTL_S = 0.5
# 100,000 ids as JSON are about 4 MB.
MAX_JSON_BODY = 16 * 1024 * 1024
PASSED_HEADERS = ("content-type", consistency.HEADER.lower(), "location", "content-range")


class TooLarge(Exception):
    pass


async def capped_body(request: Request) -> bytes:
    """A JSON body, read up to MAX_JSON_BODY: bulk ids fit, a runaway client does not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise TooLarge
    # Kept where Starlette keeps a body it read itself, for composing the answer.
    request._body = bytes(body)
    return request._body


def _error(status: int, code: str, message: str, **details: Any) -> JSON:
    return JSON(error_body(code, message, details), status)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = {
            "catalog": settings.catalog_url,
            "ingest": settings.ingest_url,
            "acl": settings.acl_url,
            "datasets": settings.datasets_url,
            "dicom": settings.dicom_url,
        }
        self._keys: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self.http: httpx.AsyncClient

    async def start(self) -> None:
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            event_hooks={"request": [_carry_trace]},
        )

    async def stop(self) -> None:
        await self.http.aclose()

    # -- authentication --------------------------------------------------------------

    async def authenticate(self, request: Request) -> dict[str, Any] | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        digest = hashlib.sha256(key.strip().encode()).hexdigest()
        cached = self._keys.get(digest)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        answer = await self.http.post(
            f"{self.services['acl']}/internal/authenticate", json={"api_key": key.strip()}
        )
        user = answer.json() if answer.status_code == 200 else None
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (now + AUTH_TTL_S, user)
        return user

    # -- consistency -----------------------------------------------------------------

    async def wait_for(self, token: dict[str, int], rounds: int = 3) -> dict[str, int]:
        """Wait until every service has applied the token, then the reactions it caused."""
        deadline = time.monotonic() + self.settings.consistency_timeout_s
        for _ in range(rounds):
            left = max(deadline - time.monotonic(), 0.0)
            answers = await asyncio.gather(
                *(
                    self.http.get(
                        f"{url}/internal/consistency",
                        params={"token": consistency.encode(token), "timeout": f"{left:.3f}"},
                    )
                    for url in self.services.values()
                ),
                return_exceptions=True,
            )
            heads = [a.json()["head"] for a in answers if isinstance(a, httpx.Response)]
            grown = consistency.merge(token, *heads)
            if grown == token or left == 0:
                return grown
            token = grown
        return token

    async def catch_up(self, consumer: str, source: str) -> None:
        """Wait (bounded) until `consumer` has applied everything `source` has recorded."""
        head = await self.http.get(
            f"{self.services[source]}/internal/consistency", params={"token": "", "timeout": "0"}
        )
        if head.status_code != 200:
            return
        await self.http.get(
            f"{self.services[consumer]}/internal/consistency",
            params={
                "token": consistency.encode(head.json()["head"]),
                "timeout": str(self.settings.consistency_timeout_s),
            },
        )

    # -- forwarding ------------------------------------------------------------------

    def forget_callers(self) -> None:
        """After a change of access made here: the next request asks the ACL again."""
        self._keys.clear()

    def _headers(
        self, request: Request, user: dict[str, Any], *, with_body: bool = False
    ) -> dict[str, str]:
        """Who asks, for a call to a service; `with_body` when the call carries the
        caller's own body, which keeps its content type (else a JSON call of ours would
        go out labelled as, say, the caller's multipart upload)."""
        headers = {
            ACTOR_HEADER: user["id"],
            access.HEADER: user["access"],
            CORRELATION_HEADER: request.state.correlation_id,
        }
        for name in ("content-type", "traceparent") if with_body else ("traceparent",):
            if name in request.headers:
                headers[name] = request.headers[name]
        return headers

    async def forward(
        self, service: str, request: Request, user: dict[str, Any], *, stream_body: bool = False
    ) -> httpx.Response:
        # Without a trailing slash: the service would redirect to its own, internal address.
        url = f"{self.services[service]}{request.url.path.rstrip('/')}"
        content: Any = request.stream() if stream_body else await capped_body(request)
        return await self.http.request(
            request.method,
            url,
            params=request.query_params,
            content=content,
            headers=self._headers(request, user, with_body=True),
        )

    @staticmethod
    def relay(
        answer: httpx.Response, token: dict[str, int] | None = None, body: Any = None
    ) -> Response:
        """The service's answer, with its headers that matter; `body` replaces a JSON body."""
        headers = {k: v for k, v in answer.headers.items() if k.lower() in PASSED_HEADERS}
        if token:
            headers.pop(consistency.HEADER.lower(), None)
            headers[consistency.HEADER] = consistency.encode(token)
        if body is not None:
            headers.pop("content-length", None)
            return Response(orjson.dumps(body), answer.status_code, headers=headers)
        return Response(answer.content, answer.status_code, headers=headers)


async def _carry_trace(request: httpx.Request) -> None:
    """Every call to a service (the caller's lookup and consistency waits too, not only
    forwarded requests) continues the request's trace."""
    if "traceparent" not in request.headers and (traceparent := tracing.current()):
        request.headers["traceparent"] = traceparent


def _audit_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as error:
        raise ValueError("not a cursor") from error
    if not isinstance(decoded, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in decoded.items()
    ):
        raise ValueError("not a cursor")
    return decoded


def _encode_audit_cursor(after: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(after)).decode()


PART_URL = re.compile(r"/v1/uploads/[0-9a-fA-F-]{36}/parts/\d{1,5}")


def route(path: str, method: str) -> str | None:
    """Which service owns a public path."""
    parts = path.strip("/").split("/")[1:]  # drop "v1"
    if not parts:
        return None
    head = parts[0]
    if head in ("users", "keys") or (head == "folders" and parts[2:3] == ["collaborators"]):
        return "acl"
    if head == "audit":
        return "gateway"
    if head in ("jobs", "integrations", "uploads"):
        return "ingest"
    if head == "datasets" or (head == "files" and parts[2:] == ["datasets"]):
        return "datasets"
    if (
        head == "folders"
        and len(parts) == 3
        and parts[2] in ("files", "dicom", "image-groups", "imports", "uploads")
        and method == "POST"
    ):
        return "ingest"
    if head in ("folders", "files", "move", "delete", "search"):
        return "catalog"
    return None


def build(settings: Settings) -> FastAPI:
    gateway = Gateway(settings)

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

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
    async def public(rest: str, request: Request) -> Response:
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
            return _error(
                401, "unauthenticated", "send a valid API key as 'Authorization: Bearer <key>'"
            )
        structlog.contextvars.bind_contextvars(actor=user["id"])
        service = route(request.url.path, request.method)
        if service is None:
            return _error(404, "not_found", f"no route {request.method} {request.url.path}")
        if request.method == "GET" and consistency.HEADER in request.headers:
            try:
                wanted = consistency.decode(request.headers[consistency.HEADER])
            except ValueError as error:
                return _error(400, "invalid_consistency_token", str(error))
            await gateway.wait_for(wanted)
        parts = request.url.path.strip("/").split("/")
        if service == "gateway":
            return await audit(request, user)
        if service == "ingest" and parts[1] == "folders" and parts[3] == "image-groups":
            return await upload_image_group(request, user, parts[2])
        if service == "ingest" and parts[1] == "folders" and parts[3] == "dicom":
            return await upload_dicom(request, user, parts[2])
        if service == "ingest" and parts[1] == "folders" and parts[3] == "imports":
            return await import_objects(request, user, parts[2])
        if service == "ingest" and parts[1] == "folders" and parts[3] == "uploads":
            return await open_upload_session(request, user, parts[2])
        if service == "ingest" and parts[1] == "uploads":
            return await upload_session(request, user, parts[2])
        if service == "ingest" and parts[1] == "folders":
            return await upload(request, user, parts[2])
        if service == "acl" and parts[1] == "folders":
            return await collaborators(request, user, parts[2])
        if parts[1:2] == ["files"] and parts[3:] == ["content"] and request.method == "GET":
            return await content(request, user)
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
            return _error(
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
            return await job_with_files(answer, request, user)
        if reading and parts[1] == "datasets" and parts[3:] == ["files"]:
            return await dataset_files(answer, request, user)
        if parts[1] == "files" and len(parts) == 3:
            return await file_with_datasets(answer, request, user)
        if parts[1] in ("move", "delete"):
            return await with_dataset_impact(answer, request, user, parts[1])
        return gateway.relay(answer)

    async def find_folder(
        request: Request, user: dict[str, Any], folder_id: str, needed: str = "user"
    ) -> httpx.Response:
        return await gateway.http.get(
            f"{settings.catalog_url}/internal/folders/{folder_id}",
            params={"needed": needed},
            headers=gateway._headers(request, user),
        )

    async def collaborators(request: Request, user: dict[str, Any], folder_id: str) -> Response:
        # The ACL context holds the grants, the catalog the folder's place in the tree.
        folder = await find_folder(request, user, folder_id)
        if folder.status_code != 200:
            return gateway.relay(folder)
        headers = gateway._headers(request, user, with_body=True)
        headers["X-Files-Folder-Path"] = ",".join(folder.json()["path"])
        answer = await gateway.http.request(
            request.method,
            f"{settings.acl_url}{request.url.path.rstrip('/')}",
            params=request.query_params,
            content=await capped_body(request),
            headers=headers,
        )
        if request.method != "GET" and answer.status_code < 300:
            gateway.forget_callers()
        return gateway.relay(answer)

    async def upload(request: Request, user: dict[str, Any], folder_id: str) -> Response:
        folder = await find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return gateway.relay(folder)
        answer = await gateway.forward("ingest", request, user, stream_body=True)
        if answer.status_code != 201:
            return gateway.relay(answer)
        # Read-your-writes: the folder lists the files once this answers, and the
        # answer shows them as the catalog registered them.
        token = await gateway.wait_for(
            consistency.decode(answer.headers.get(consistency.HEADER, "")), rounds=1
        )
        uploaded = answer.json()
        ids = [f["id"] for f in uploaded["files"]]
        registered = await gateway.http.post(
            f"{settings.catalog_url}/internal/files",
            json={"ids": ids},
            headers=gateway._headers(request, user),
        )
        files = registered.json()["items"] if registered.status_code == 200 else []
        missing = len(files) < len(ids)
        if missing and (await find_folder(request, user, folder_id)).status_code == 404:
            return _error(
                409,
                "folder_deleted",
                f"folder {folder_id} was deleted while the upload was stored",
                folder_id=folder_id,
                job_id=uploaded["job_id"],
            )
        # Past the consistency deadline the catalog may still be catching up: then the
        # answer is ingest's own account of the files.
        by_id = {f["id"]: f for f in uploaded["files"]} | {f["id"]: f for f in files}
        body = {"job_id": uploaded["job_id"], "files": [by_id[i] for i in ids]}
        return JSON(body, 201, headers={consistency.HEADER: consistency.encode(token)})

    async def upload_image_group(
        request: Request, user: dict[str, Any], folder_id: str
    ) -> Response:
        folder = await find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return gateway.relay(folder)
        answer = await gateway.forward("ingest", request, user, stream_body=True)
        if answer.status_code != 201:
            return gateway.relay(answer)
        # Read-your-writes: answer with the group's file and folder as the catalog has them.
        token = await gateway.wait_for(
            consistency.decode(answer.headers.get(consistency.HEADER, "")), rounds=1
        )
        stored = answer.json()
        registered = await gateway.http.post(
            f"{settings.catalog_url}/internal/files",
            json={"ids": [stored["file_id"]]},
            headers=gateway._headers(request, user),
        )
        files = registered.json()["items"] if registered.status_code == 200 else []
        made = await gateway.http.get(
            f"{settings.catalog_url}/v1/folders/{stored['folder_id']}",
            headers=gateway._headers(request, user),
        )
        if not files or made.status_code != 200:
            if (await find_folder(request, user, folder_id)).status_code == 404:
                return _error(
                    409,
                    "folder_deleted",
                    f"folder {folder_id} was deleted while the image group was stored",
                    folder_id=folder_id,
                    job_id=stored["job_id"],
                )
            return _error(
                503,
                "not_yet_registered",
                "the image group is stored but not yet listed; see its job",
                job_id=stored["job_id"],
            )
        body = {"file": files[0], "folder": made.json()}
        return JSON(body, 201, headers={consistency.HEADER: consistency.encode(token)})

    async def upload_dicom(request: Request, user: dict[str, Any], folder_id: str) -> Response:
        # 202 once every part is stored: the DICOM context reads and assembles them after,
        # and the job (GET /v1/jobs/{id}) shows its progress, series files and errors.
        folder = await find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return gateway.relay(folder)
        # The DICOM context follows series files in the catalog (moved, deleted): let it
        # catch up first, so these instances join the series as the caller sees them now.
        await gateway.catch_up("dicom", "catalog")
        answer = await gateway.forward("ingest", request, user, stream_body=True)
        return gateway.relay(answer)

    def with_part_urls(request: Request, session: dict[str, Any]) -> dict[str, Any]:
        """Our own part URLs (the local store) are relative: made absolute here, with
        the address the client used."""
        base = str(request.base_url).rstrip("/")
        for part in session.get("parts", []):
            if part["url"].startswith("/"):
                part["url"] = base + part["url"]
        return session

    async def open_upload_session(
        request: Request, user: dict[str, Any], folder_id: str
    ) -> Response:
        # A session adds a file as an upload does: the editor role on the folder.
        folder = await find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return gateway.relay(folder)
        answer = await gateway.forward("ingest", request, user)
        if answer.status_code != 201:
            return gateway.relay(answer)
        return gateway.relay(answer, body=with_part_urls(request, answer.json()))

    async def upload_session(request: Request, user: dict[str, Any], session_id: str) -> Response:
        """A session is the business of those who may upload into its folder."""
        found = await gateway.http.get(
            f"{settings.ingest_url}/v1/uploads/{session_id}",
            headers=gateway._headers(request, user),
        )
        if found.status_code != 200:
            return gateway.relay(found)
        session = found.json()
        folder = await find_folder(request, user, session["folder_id"], "editor")
        if folder.status_code != 200:
            # Not theirs to see: as if there were no such session.
            return _error(404, "not_found", f"upload session {session_id} does not exist")
        if request.method == "GET":
            return gateway.relay(found, body=with_part_urls(request, session))
        answer = await gateway.forward("ingest", request, user)
        if request.method != "POST" or answer.status_code != 201:
            return gateway.relay(answer)
        # Completed: answer with the file as the catalog registered it, as an upload does.
        token = await gateway.wait_for(
            consistency.decode(answer.headers.get(consistency.HEADER, "")), rounds=1
        )
        completed = answer.json()
        registered = await files_by_id(request, user, [completed["file_id"]])
        if not registered:
            return _error(
                409,
                "folder_deleted",
                f"folder {session['folder_id']} was deleted while the file was completed",
                folder_id=session["folder_id"],
                job_id=completed["job_id"],
            )
        body = {"job_id": completed["job_id"], "file": registered[0]}
        return JSON(body, 201, headers={consistency.HEADER: consistency.encode(token)})

    async def import_objects(request: Request, user: dict[str, Any], folder_id: str) -> Response:
        # Imports by reference add files as uploads do: the editor role on the folder.
        # 202 once the job is recorded; GET /v1/jobs/{id} follows it.
        folder = await find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return gateway.relay(folder)
        try:
            answer = await gateway.forward("ingest", request, user)
        except TooLarge:
            return _error(
                413,
                "request_too_large",
                f"the request body is over {MAX_JSON_BODY // (1024 * 1024)} MiB",
                limit=MAX_JSON_BODY,
            )
        return gateway.relay(answer)

    async def files_by_id(
        request: Request, user: dict[str, Any], ids: list[str]
    ) -> list[dict[str, Any]]:
        found = await gateway.http.post(
            f"{settings.catalog_url}/internal/files",
            json={"ids": ids},
            headers=gateway._headers(request, user),
        )
        by_id = {f["id"]: f for f in found.json()["items"]} if found.status_code == 200 else {}
        return [by_id[i] for i in ids if i in by_id]

    async def dataset_files(
        answer: httpx.Response, request: Request, user: dict[str, Any]
    ) -> Response:
        page = answer.json()
        items = await files_by_id(request, user, page["file_ids"])
        return JSON({"items": items, "next_cursor": page["next_cursor"]})

    async def file_with_datasets(
        answer: httpx.Response, request: Request, user: dict[str, Any]
    ) -> Response:
        file = answer.json()
        linked = await gateway.http.get(
            f"{settings.datasets_url}/v1/files/{file['id']}/datasets",
            headers=gateway._headers(request, user),
        )
        file["datasets"] = linked.json()["items"] if linked.status_code == 200 else []
        return gateway.relay(answer, body=file)

    async def with_dataset_impact(
        answer: httpx.Response, request: Request, user: dict[str, Any], action: str
    ) -> Response:
        result = answer.json()
        if not result.get("dry_run"):
            return gateway.relay(answer)
        asked = orjson.loads(await request.body())
        await gateway.catch_up("datasets", "catalog")
        impact = await gateway.http.post(
            f"{settings.datasets_url}/internal/impact",
            json={
                "file_ids": asked.get("file_ids", []),
                "folder_ids": asked.get("folder_ids", []),
                "target_folder_id": asked.get("target_folder_id") if action == "move" else None,
            },
        )
        result["datasets"] = impact.json()["datasets"] if impact.status_code == 200 else []
        return gateway.relay(answer, body=result)

    async def job_with_files(
        answer: httpx.Response, request: Request, user: dict[str, Any]
    ) -> Response:
        job = answer.json()
        if job.get("created_by") != user["id"]:
            # Someone else's job shows to those who may see its folder.
            folder = await find_folder(request, user, job["folder_id"])
            if folder.status_code != 200:
                return _error(404, "not_found", f"job {job['id']} does not exist")
        if job.get("kind") == "dicom":
            # Ingest stored the parts; the DICOM context's account is the job's progress.
            account = await gateway.http.get(f"{settings.dicom_url}/internal/jobs/{job['id']}")
            if account.status_code != 200:
                return gateway.relay(account)
            settled = account.json()
            job["progress"]["done"] = settled["done"]
            job["errors"] = settled["errors"]
            job["file_ids"] = settled["file_ids"]
            job["status"] = "done" if settled["done"] >= job["progress"]["total"] else "running"
            if job["status"] == "done":
                # Done means its series files are in the catalog: let it catch up (bounded).
                await gateway.catch_up("catalog", "dicom")
        job["files"] = await files_by_id(request, user, job.pop("file_ids", []))
        return JSON(job)

    async def audit(request: Request, user: dict[str, Any]) -> Response:
        """Events of every context, merged in time order; the cursor holds how far each
        context's store was read. Org admins see everything; a member asks about a
        subject they may see, or about their own actions."""
        if request.method != "GET":
            return _error(405, "method_not_allowed", "the audit is read-only")
        query = request.query_params
        try:
            limit = int(query.get("limit", "100"))
            after = _audit_cursor(query.get("cursor"))
        except ValueError:
            return _error(422, "invalid_cursor", "limit must be 1..1000 and cursor one we gave")
        if not 1 <= limit <= 1000:
            return _error(422, "invalid_limit", "limit must be between 1 and 1000")
        subjects = query.getlist("subject_id")
        if user["org_role"] != "admin":
            if not subjects and query.get("actor_id") != user["id"]:
                return _error(
                    403,
                    "forbidden",
                    "the audit across subjects needs the organisation admin role: give a"
                    " subject_id you may see, or your own actor_id",
                    role_needed="org admin",
                )
            for subject in subjects:
                if not await _may_see(request, user, subject):
                    return _error(404, "not_found", f"subject {subject} does not exist")
        params = [
            (k, v)
            for k, v in query.multi_items()
            if k in ("subject_id", "actor_id", "type", "since", "until")
        ]
        answers = await asyncio.gather(
            *(
                gateway.http.get(
                    f"{url}/internal/audit",
                    params=[*params, ("after", str(after.get(name, 0))), ("limit", str(limit))],
                )
                for name, url in gateway.services.items()
            )
        )
        events: list[dict[str, Any]] = []
        exhausted = True
        for answer in answers:
            if answer.status_code != 200:
                return gateway.relay(answer)
            items = answer.json()["items"]
            exhausted = exhausted and len(items) < limit
            events += items
        events.sort(key=lambda e: (e["occurred_at"], e["source"], e["position"]))
        page = events[:limit]
        for event in page:
            after[event["source"]] = max(after.get(event["source"], 0), event["position"])
        more = not exhausted or len(events) > limit
        return JSON(
            {
                "items": [{k: v for k, v in e.items() if k not in ("position",)} for e in page],
                "next_cursor": _encode_audit_cursor(after) if more else None,
            }
        )

    async def _may_see(request: Request, user: dict[str, Any], subject: str) -> bool:
        if subject == user["id"]:
            return True
        try:
            uuid.UUID(subject)
        except ValueError:
            return False
        headers = gateway._headers(request, user)
        for url in (
            f"{settings.catalog_url}/internal/folders/{subject}",
            f"{settings.catalog_url}/internal/files/{subject}",
            f"{settings.datasets_url}/v1/datasets/{subject}",
        ):
            if (await gateway.http.get(url, headers=headers)).status_code == 200:
                return True
        return False

    async def content(request: Request, user: dict[str, Any]) -> Response:
        file_id = request.url.path.strip("/").split("/")[2]
        found = await gateway.http.get(
            f"{settings.catalog_url}/internal/files/{file_id}",
            headers=gateway._headers(request, user),
        )
        if found.status_code != 200:
            return gateway.relay(found)
        file = found.json()
        source = file.get("source") or {}
        if source.get("type") == "cloud":
            # Imported by reference: the bytes are in the customer's bucket. Ingest holds
            # the integration's credentials and answers a short-lived presigned URL.
            presigned = await gateway.http.get(
                f"{settings.ingest_url}/internal/integrations/{source.get('integration_id')}"
                "/presign",
                params={
                    "key": source.get("key", ""),
                    "name": file["name"],
                    "mime_type": file["mime_type"],
                },
            )
            if presigned.status_code != 200:
                return gateway.relay(presigned)
            return Response(
                status_code=307,
                headers={"Location": presigned.json()["url"], "Cache-Control": "no-store"},
            )
        upstream = gateway.http.build_request(
            "GET",
            f"{settings.ingest_url}/internal/blobs/{file['blob_key']}",
            headers={k: v for k, v in request.headers.items() if k.lower() == "range"},
        )
        answer = await gateway.http.send(upstream, stream=True)
        if answer.status_code not in (200, 206):
            await answer.aread()
            await answer.aclose()
            return gateway.relay(answer)
        headers = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() in ("content-length", "content-range", "accept-ranges")
        }
        quoted = urllib.parse.quote(file["name"])
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quoted}"
        headers["X-Content-Type-Options"] = "nosniff"
        return StreamingResponse(
            answer.aiter_raw(),
            answer.status_code,
            headers=headers,
            media_type=file["mime_type"],
            background=BackgroundTask(answer.aclose),
        )

    return app


def main() -> None:
    serve("gateway", build, default_port=None)
