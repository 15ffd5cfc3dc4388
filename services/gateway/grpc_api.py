"""The gRPC API (`proto/files/v1/files.proto`), served by the gateway beside HTTP.

Each RPC is the HTTP request it stands for, made in-process to the gateway's own ASGI
app (no socket, no second implementation): authentication, rights, composition,
consistency waits and errors are those of the HTTP API by construction, and the
gateway instance (its caller cache, its connections to the services) is shared.
Bodies stream through the ASGI interface both ways: an upload's chunks become the
multipart body as they arrive (the gateway streams it on to ingest), a download's
chunks are passed on as the app sends them. Nothing holds a whole file.

Errors become gRPC status codes (`STATUS`), with the HTTP API's error code, details
(JSON) and status in the trailing metadata: `files-error-code`,
`files-error-details`, `files-http-status`. A write's `Files-Consistency` token is
trailing metadata `files-consistency`; a read that sends it back as metadata waits.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

import grpc
import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.files_pb.files.v1 import files_pb2_grpc as rpc
from shared.contracts import rules
from shared.kit.logs import log

ASGIApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]],
    Awaitable[None],
]

# Metadata passed on to the HTTP request as headers, and answer headers passed back as
# trailing metadata.
PASSED_IN = (
    "authorization",
    "files-consistency",
    "x-request-id",
    "traceparent",
    "idempotency-key",
)
PASSED_OUT = ("files-consistency", "x-request-id", "idempotent-replayed")
# A download's messages stay well under gRPC's default 4 MiB message limit.
CHUNK = 1024 * 1024


def status_of(http: int, code: str) -> grpc.StatusCode:
    """The gRPC status for an HTTP error of the API."""
    if http == 409:
        if code == "name_taken":
            return grpc.StatusCode.ALREADY_EXISTS
        if code == "concurrent_change":
            return grpc.StatusCode.ABORTED  # nothing was written: retry
        return grpc.StatusCode.FAILED_PRECONDITION
    if http == 503:
        return grpc.StatusCode.UNAVAILABLE
    if http >= 500:
        return grpc.StatusCode.INTERNAL
    return {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        401: grpc.StatusCode.UNAUTHENTICATED,
        403: grpc.StatusCode.PERMISSION_DENIED,
        404: grpc.StatusCode.NOT_FOUND,
        405: grpc.StatusCode.UNIMPLEMENTED,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
        415: grpc.StatusCode.INVALID_ARGUMENT,
        416: grpc.StatusCode.OUT_OF_RANGE,
        422: grpc.StatusCode.INVALID_ARGUMENT,
    }.get(http, grpc.StatusCode.UNKNOWN)


# -- the gateway's app, in process -------------------------------------------------------


class BadStream(Exception):
    """The client's stream of messages broke the RPC's rules (refused as 422)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


class Exchange:
    """One HTTP request to the ASGI app: the request body pulled from an async iterator
    as the app reads it, the answer's messages queued (a few at a time) as it sends."""

    def __init__(
        self,
        app: ASGIApp,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        body: AsyncIterator[bytes] | bytes | None,
        peer: str,
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": urllib.parse.urlencode(list(query)).encode(),
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in {"host": "grpc", **headers}.items()
            ],
            "client": (peer, 0),
            "server": ("grpc", 0),
            "state": {},
        }
        self.app = app
        self.body: AsyncIterator[bytes] | None = None
        self.pending: bytes | None = b""
        if isinstance(body, bytes):
            self.pending = body
        elif body is not None:
            self.body = body
        self.failure: BadStream | None = None
        # The app sent its whole answer: it may still finish its background work.
        self.complete = False
        self.finished = False
        self.answers: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=4)
        self.ended = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> dict[str, Any]:
        if self.body is not None:
            try:
                chunk = await anext(self.body)
            except StopAsyncIteration:
                self.body = None
                return {"type": "http.request", "body": b"", "more_body": False}
            except BadStream as failure:
                # As if the client had gone: the app drops what it was streaming.
                self.failure, self.body = failure, None
                self.ended.set()
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": True}
        if self.pending is not None:
            body, self.pending = self.pending, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.ended.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        await self.answers.put(message)

    async def _next(self) -> dict[str, Any] | None:
        """The app's next message; None once it has finished."""
        if self.finished:
            return None
        message = await self.answers.get()
        self.finished = message is None
        return message

    async def _run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception:
            if self.failure is None:
                log.error("grpc.app_error", path=self.scope["path"], exc_info=True)
        finally:
            await self.answers.put(None)

    async def start(self) -> tuple[int, dict[str, str]]:
        """The answer's status and headers (lower-cased names)."""
        self.task = asyncio.create_task(self._run())
        while True:
            message = await self._next()
            if message is None:
                return 500, {}
            if message["type"] == "http.response.start":
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1")
                    for k, v in message.get("headers", [])
                }
                return int(message["status"]), headers

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._next()
            if message is None:
                return
            if message["type"] != "http.response.body":
                continue
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                self.complete = True
                return

    async def close(self) -> None:
        """The app's answer was read whole (its background work may finish, within
        bounds) or not (the RPC failed or its client went away: the app is cancelled,
        which drops what it was streaming)."""
        self.ended.set()
        task = self.task
        if task is None or task.done():
            return
        if not self.complete:
            task.cancel()
        try:
            await asyncio.wait({task}, timeout=10)
        finally:
            if not task.done():
                task.cancel()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


# -- the servicers ------------------------------------------------------------------------


class Api:
    """What every servicer shares: the HTTP call an RPC stands for, and its errors."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
        found = {}
        for key, value in context.invocation_metadata() or ():
            if key.lower() in PASSED_IN and isinstance(value, str):
                found[key.lower()] = value
        return found

    def open(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: AsyncIterator[bytes] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Exchange:
        params = [(k, str(v)) for k, v in (query or {}).items() if v not in (None, "", 0)]
        return Exchange(
            self.app,
            method,
            path,
            params,
            {**self._headers(context), **(headers or {})},
            body,
            context.peer() or "grpc",
        )

    async def call(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        json_body: Any = None,
        body: AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The answer's JSON; an error answer aborts the RPC with its status."""
        content: AsyncIterator[bytes] | bytes | None = body
        extra = dict(headers or {})
        if json_body is not None:
            content = orjson.dumps(json_body)
            extra["content-type"] = "application/json"
        exchange = self.open(context, method, path, query=query, body=content, headers=extra)
        try:
            status, answer_headers = await exchange.start()
            data = b"".join([chunk async for chunk in exchange.chunks()])
        finally:
            await exchange.close()
        if exchange.failure is not None:
            await self.refuse(
                context,
                422,
                exchange.failure.code,
                exchange.failure.message,
                exchange.failure.details,
            )
        answer = Answer(status, answer_headers, data)
        self.trail(context, answer.headers)
        if status >= 300:
            await self.fail(context, answer)
        return answer.json()

    @staticmethod
    def trail(context: grpc.aio.ServicerContext, headers: Mapping[str, str]) -> None:
        context.set_trailing_metadata(
            tuple((name, headers[name]) for name in PASSED_OUT if name in headers)
        )

    async def fail(self, context: grpc.aio.ServicerContext, answer: Answer) -> NoReturn:
        try:
            error = answer.json()["error"]
            code, message, details = error["code"], error["message"], error["details"]
        except Exception:
            code = "internal_error" if answer.status >= 500 else "http_error"
            message, details = f"the request failed with HTTP status {answer.status}", {}
        await self.refuse(context, answer.status, code, message, details, answer.headers)

    @staticmethod
    async def refuse(
        context: grpc.aio.ServicerContext,
        http: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> NoReturn:
        trailing = [
            ("files-error-code", code),
            # ASCII-only JSON: metadata values must be printable ASCII.
            ("files-error-details", json.dumps(details or {}, separators=(",", ":"))),
            ("files-http-status", str(http)),
        ]
        trailing += [(n, (headers or {})[n]) for n in PASSED_OUT if n in (headers or {})]
        await context.abort(status_of(http, code), message, tuple(trailing))
        raise AssertionError("unreachable")  # abort raises

    async def uuid(self, context: grpc.aio.ServicerContext, value: str, field: str) -> str:
        """An id from a request, checked before it becomes part of a path."""
        try:
            return str(uuid.UUID(value))
        except ValueError:
            problem = "not a valid UUID"
            await self.refuse(
                context,
                422,
                "invalid_request",
                f"{field}: {problem}",
                {"fields": [{"field": field, "problem": problem}]},
            )


M = TypeVar("M", bound=Message)


def _message(cls: type[M], data: Mapping[str, Any]) -> M:
    """A message from the HTTP API's JSON (fields of the same names; nulls unset)."""
    return cast(M, json_format.ParseDict(data, cls(), ignore_unknown_fields=True))


def _item(data: Mapping[str, Any]) -> pb.Item:
    kind = "folder" if data.get("type") == "folder" else "file"
    return _message(pb.Item, {kind: data})


def _struct(message: Message, field: str) -> dict[str, Any] | None:
    if not message.HasField(field):
        return None
    found: dict[str, Any] = json_format.MessageToDict(getattr(message, field))
    return found


def _page(limit: int, cursor: str) -> dict[str, Any]:
    return {"limit": limit, "cursor": cursor}


class Folders(rpc.FoldersServicer, Api):
    async def CreateFolder(
        self, request: pb.CreateFolderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Folder:
        body: dict[str, Any] = {"name": request.name, "description": request.description}
        if request.HasField("parent_id"):
            body["parent_id"] = await self.uuid(context, request.parent_id, "parent_id")
        if (metadata := _struct(request, "metadata")) is not None:
            body["metadata"] = metadata
        return _message(pb.Folder, await self.call(context, "POST", "/v1/folders", json_body=body))

    async def GetFolder(
        self, request: pb.GetFolderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Folder:
        folder_id = await self.uuid(context, request.folder_id, "folder_id")
        return _message(pb.Folder, await self.call(context, "GET", f"/v1/folders/{folder_id}"))

    async def ListFolders(
        self, request: pb.ListFoldersRequest, context: grpc.aio.ServicerContext
    ) -> pb.FolderPage:
        query = _page(request.limit, request.cursor)
        if request.HasField("parent_id"):
            query["parent_id"] = await self.uuid(context, request.parent_id, "parent_id")
        page = await self.call(context, "GET", "/v1/folders", query=query)
        return _message(pb.FolderPage, page)

    async def ListItems(
        self, request: pb.ListItemsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ItemPage:
        folder_id = await self.uuid(context, request.folder_id, "folder_id")
        query = {"kind": request.kind, **_page(request.limit, request.cursor)}
        page = await self.call(context, "GET", f"/v1/folders/{folder_id}/items", query=query)
        return pb.ItemPage(items=[_item(i) for i in page["items"]], next_cursor=page["next_cursor"])

    async def UpdateFolder(
        self, request: pb.UpdateFolderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Folder:
        folder_id = await self.uuid(context, request.folder_id, "folder_id")
        body: dict[str, Any] = {}
        for field in ("name", "description"):
            if request.HasField(field):
                body[field] = getattr(request, field)
        if (metadata := _struct(request, "metadata")) is not None:
            body["metadata"] = metadata
        folder = await self.call(context, "PATCH", f"/v1/folders/{folder_id}", json_body=body)
        return _message(pb.Folder, folder)

    async def DeleteFolder(
        self, request: pb.DeleteFolderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        folder_id = await self.uuid(context, request.folder_id, "folder_id")
        await self.call(context, "DELETE", f"/v1/folders/{folder_id}")
        return pb.Empty()


CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def _quoted(name: str) -> bytes:
    """A file name as a multipart header's quoted string (python-multipart unescapes)."""
    return name.replace("\\", "\\\\").replace('"', '\\"').encode()


class Files(rpc.FilesServicer, Api):
    async def Upload(
        self, request_iterator: AsyncIterator[pb.UploadRequest], context: grpc.aio.ServicerContext
    ) -> pb.UploadResponse:
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "header":
            await self.refuse(
                context,
                422,
                "invalid_request",
                "an upload starts with a header {folder_id, name}, then the bytes in chunks",
            )
        folder_id = await self.uuid(context, first.header.folder_id, "header.folder_id")
        await self._check_name(context, first.header.name)
        boundary = uuid.uuid4().hex

        def head(name: str) -> bytes:
            return (
                f"--{boundary}\r\n".encode()
                + b'Content-Disposition: form-data; name="file"; filename="'
                + _quoted(name)
                + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            )

        async def multipart() -> AsyncIterator[bytes]:
            # Each chunk goes on as it arrives: the gateway streams it to ingest.
            yield head(first.header.name)
            async for message in messages:
                part = message.WhichOneof("part")
                if part == "chunk":
                    if message.chunk:
                        yield message.chunk
                elif part == "header":
                    header = message.header
                    if header.folder_id and header.folder_id != first.header.folder_id:
                        raise BadStream(
                            "invalid_request",
                            "every file of an upload goes to the first header's folder",
                            folder_id=header.folder_id,
                        )
                    if problem := rules.name_problem(header.name, "file name"):
                        raise BadStream("invalid_name", problem, name=header.name[:300])
                    yield b"\r\n" + head(header.name)
                else:
                    raise BadStream(
                        "invalid_request", "an upload message holds a header or a chunk"
                    )
            yield f"\r\n--{boundary}--\r\n".encode()

        uploaded = await self.call(
            context,
            "POST",
            f"/v1/folders/{folder_id}/files",
            body=multipart(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        return pb.UploadResponse(
            job_id=uploaded["job_id"], files=[_message(pb.File, f) for f in uploaded["files"]]
        )

    async def _check_name(self, context: grpc.aio.ServicerContext, name: str) -> None:
        # Checked here as ingest would: a name with a line break would break the framing.
        if problem := rules.name_problem(name, "file name"):
            await self.refuse(context, 422, "invalid_name", problem, {"name": name[:300]})

    async def Download(
        self, request: pb.DownloadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadResponse]:
        file_id = await self.uuid(context, request.file_id, "file_id")
        headers: dict[str, str] = {}
        if request.HasField("offset") or request.HasField("length"):
            offset = request.offset
            if offset < 0 or (request.HasField("length") and request.length <= 0):
                await self.refuse(
                    context,
                    422,
                    "invalid_range",
                    "offset must be at least 0 and length at least 1",
                    {"offset": offset, "length": request.length},
                )
            end = str(offset + request.length - 1) if request.HasField("length") else ""
            headers["range"] = f"bytes={offset}-{end}"
        exchange = self.open(context, "GET", f"/v1/files/{file_id}/content", headers=headers)
        try:
            status, answer = await exchange.start()
            if status >= 300 and status != 307:
                data = b"".join([chunk async for chunk in exchange.chunks()])
                await self.fail(context, Answer(status, answer, data))
            self.trail(context, answer)
            yield pb.DownloadResponse(header=self._download_header(status, answer))
            if status == 307:
                return
            async for chunk in exchange.chunks():
                for at in range(0, len(chunk), CHUNK):
                    yield pb.DownloadResponse(chunk=chunk[at : at + CHUNK])
        finally:
            await exchange.close()

    @staticmethod
    def _download_header(status: int, answer: Mapping[str, str]) -> pb.DownloadHeader:
        disposition = answer.get("content-disposition", "")
        _, _, quoted = disposition.partition("filename*=UTF-8''")
        header = pb.DownloadHeader(
            name=urllib.parse.unquote(quoted),
            mime_type=answer.get("content-type", "").split(";")[0].strip(),
        )
        if status == 307:
            header.redirect_url = answer.get("location", "")
        elif (found := CONTENT_RANGE.fullmatch(answer.get("content-range", ""))) is not None:
            first, last, size = (int(g) for g in found.groups())
            header.size, header.offset, header.length = size, first, last - first + 1
        else:
            header.size = header.length = int(answer.get("content-length", "0") or 0)
        return header

    async def GetFile(
        self, request: pb.GetFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.File:
        file_id = await self.uuid(context, request.file_id, "file_id")
        return _message(pb.File, await self.call(context, "GET", f"/v1/files/{file_id}"))

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ItemPage:
        query = {"q": request.q, "kind": request.kind, **_page(request.limit, request.cursor)}
        if request.HasField("folder_id"):
            query["folder_id"] = await self.uuid(context, request.folder_id, "folder_id")
        page = await self.call(context, "GET", "/v1/search", query=query)
        return pb.ItemPage(items=[_item(i) for i in page["items"]], next_cursor=page["next_cursor"])


class Datasets(rpc.DatasetsServicer, Api):
    async def CreateDataset(
        self, request: pb.CreateDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.Dataset:
        body: dict[str, Any] = {"name": request.name, "description": request.description}
        if request.HasField("synced_folder_id"):
            body["synced_folder_id"] = await self.uuid(
                context, request.synced_folder_id, "synced_folder_id"
            )
        made = await self.call(context, "POST", "/v1/datasets", json_body=body)
        return _message(pb.Dataset, made)

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.Dataset:
        dataset_id = await self.uuid(context, request.dataset_id, "dataset_id")
        return _message(pb.Dataset, await self.call(context, "GET", f"/v1/datasets/{dataset_id}"))

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DatasetPage:
        query = _page(request.limit, request.cursor)
        return _message(
            pb.DatasetPage, await self.call(context, "GET", "/v1/datasets", query=query)
        )

    async def UpdateDataset(
        self, request: pb.UpdateDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.Dataset:
        dataset_id = await self.uuid(context, request.dataset_id, "dataset_id")
        body = {f: getattr(request, f) for f in ("name", "description") if request.HasField(f)}
        changed = await self.call(context, "PATCH", f"/v1/datasets/{dataset_id}", json_body=body)
        return _message(pb.Dataset, changed)

    async def DeleteDataset(
        self, request: pb.DeleteDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        dataset_id = await self.uuid(context, request.dataset_id, "dataset_id")
        await self.call(context, "DELETE", f"/v1/datasets/{dataset_id}")
        return pb.Empty()

    async def AddFiles(
        self, request: pb.AddFilesRequest, context: grpc.aio.ServicerContext
    ) -> pb.AddFilesResponse:
        dataset_id = await self.uuid(context, request.dataset_id, "dataset_id")
        # The ids go as given: the datasets context names those it refuses.
        body = {"file_ids": list(request.file_ids)}
        added = await self.call(context, "POST", f"/v1/datasets/{dataset_id}/files", json_body=body)
        return pb.AddFilesResponse(added=added["added"])

    async def RemoveFile(
        self, request: pb.RemoveFileRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        dataset_id = await self.uuid(context, request.dataset_id, "dataset_id")
        file_id = await self.uuid(context, request.file_id, "file_id")
        await self.call(context, "DELETE", f"/v1/datasets/{dataset_id}/files/{file_id}")
        return pb.Empty()

    async def ListDatasetFiles(
        self, request: pb.ListDatasetFilesRequest, context: grpc.aio.ServicerContext
    ) -> pb.FilePage:
        dataset_id = await self.uuid(context, request.dataset_id, "dataset_id")
        query = _page(request.limit, request.cursor)
        page = await self.call(context, "GET", f"/v1/datasets/{dataset_id}/files", query=query)
        return _message(pb.FilePage, page)


class Collaborators(rpc.CollaboratorsServicer, Api):
    async def ListCollaborators(
        self, request: pb.ListCollaboratorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollaboratorPage:
        folder_id = await self.uuid(context, request.folder_id, "folder_id")
        found = await self.call(context, "GET", f"/v1/folders/{folder_id}/collaborators")
        return _message(pb.CollaboratorPage, found)

    async def InviteCollaborators(
        self, request: pb.InviteCollaboratorsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollaboratorPage:
        folder_id = await self.uuid(context, request.folder_id, "folder_id")
        body = {"emails": list(request.emails), "role": request.role}
        found = await self.call(
            context, "POST", f"/v1/folders/{folder_id}/collaborators", json_body=body
        )
        return _message(pb.CollaboratorPage, found)

    async def ChangeRole(
        self, request: pb.ChangeRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.Collaborator:
        folder_id = await self.uuid(context, request.folder_id, "folder_id")
        user_id = await self.uuid(context, request.user_id, "user_id")
        changed = await self.call(
            context,
            "PATCH",
            f"/v1/folders/{folder_id}/collaborators/{user_id}",
            json_body={"role": request.role},
        )
        return _message(pb.Collaborator, changed)

    async def RemoveCollaborator(
        self, request: pb.RemoveCollaboratorRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        folder_id = await self.uuid(context, request.folder_id, "folder_id")
        user_id = await self.uuid(context, request.user_id, "user_id")
        await self.call(context, "DELETE", f"/v1/folders/{folder_id}/collaborators/{user_id}")
        return pb.Empty()


class Jobs(rpc.JobsServicer, Api):
    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        job_id = await self.uuid(context, request.job_id, "job_id")
        return _message(pb.Job, await self.call(context, "GET", f"/v1/jobs/{job_id}"))


async def start(app: ASGIApp, host: str, port: int) -> grpc.aio.Server:
    """A gRPC server for the gateway's app, listening on host:port."""
    server = grpc.aio.server()
    rpc.add_FoldersServicer_to_server(Folders(app), server)  # type: ignore[no-untyped-call]
    rpc.add_FilesServicer_to_server(Files(app), server)  # type: ignore[no-untyped-call]
    rpc.add_DatasetsServicer_to_server(Datasets(app), server)  # type: ignore[no-untyped-call]
    rpc.add_CollaboratorsServicer_to_server(Collaborators(app), server)  # type: ignore[no-untyped-call]
    rpc.add_JobsServicer_to_server(Jobs(app), server)  # type: ignore[no-untyped-call]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"gRPC: cannot listen on {address}")
    await server.start()
    log.info("grpc.started", address=address)
    return server
