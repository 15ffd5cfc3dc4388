"""The gRPC API (`proto/files/v1/files.proto`), served by the gateway beside HTTP.

Each RPC is the HTTP request it stands for, made in-process to the gateway's own ASGI
app (no socket, no second implementation): authentication, rights, composition,
consistency waits and errors are those of the HTTP API by construction, and the
gateway instance (its caller cache, its connections to the services) is shared.
A unary RPC is one entry of `UNARY` (its method and path), served by one generic
path (`Api.unary`, JSON <-> proto by field name); the streaming ones (`STREAMED`) are
methods of `Api`.
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
import contextlib
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

from services.gateway import deadlines
from services.gateway.files_pb.files.v1 import files_pb2 as pb
from shared.contracts import rules
from shared.kit.errors import Refused
from shared.kit.http import JSON, error_body
from shared.kit.http_server import PUBLIC, SEND_PROGRESS
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
# Retry-After: when to send again a call refused for now (RESOURCE_EXHAUSTED past a
# caller's transfers, UNAVAILABLE), as an HTTP client is told.
PASSED_OUT = ("files-consistency", "x-request-id", "idempotent-replayed", "retry-after")
# A picture's messages stay well under gRPC's default 4 MiB message limit.
CHUNK = 1024 * 1024
# A download's messages, each given one `send_idle_s` per SEND_PROGRESS of it to be
# taken: a client reading as little as an HTTP one may (SEND_PROGRESS a bound) is never
# let go, and one that stops reading is within four bounds. Its pieces from ingest are
# this size or less already (a read from the socket), so no more messages are sent.
DOWNLOAD_MESSAGE = 4 * SEND_PROGRESS
# An error's details in its trailing metadata, at most: a client refuses metadata over
# 8 KiB (soft) or 16 KiB (hard) in all, and would see RESOURCE_EXHAUSTED, not the error.
DETAILS_LIMIT = 4096
# An error's message, at most, in bytes of UTF-8 (`grpc-message` carries them
# percent-encoded, up to three characters a byte): with the details, under those 8 KiB.
MESSAGE_LIMIT = 1000
# An upload's metadata in all (ingest's bound on the `metadata` field).
UPLOAD_METADATA_LIMIT = 4 * 1024 * 1024
# How long an app whose answer's reader went away has to end on its own (a streamed
# answer stops at the disconnect and runs its background work) before it is cancelled.
DISCONNECT_GRACE_S = 1.0


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
    if http == 507:
        return grpc.StatusCode.RESOURCE_EXHAUSTED  # the file store is full
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
        429: grpc.StatusCode.RESOURCE_EXHAUSTED,
        431: grpc.StatusCode.INVALID_ARGUMENT,
    }.get(http, grpc.StatusCode.UNKNOWN)


def bounded_details(details: Mapping[str, Any]) -> str:
    """The details as ASCII JSON of at most DETAILS_LIMIT bytes: lists (the files an
    upload refused, ...) cut from their end, `truncated: true` said; HTTP's answer has
    them whole."""
    found = dict(details)
    text = json.dumps(found, separators=(",", ":"))
    while len(text) > DETAILS_LIMIT:
        lists = [k for k, v in found.items() if isinstance(v, list) and v]
        if not lists:
            found = {"truncated": True}
            break
        longest = max(lists, key=lambda k: len(json.dumps(found[k])))
        found[longest] = found[longest][: len(found[longest]) // 2]
        found["truncated"] = True
        text = json.dumps(found, separators=(",", ":"))
    return json.dumps(found, separators=(",", ":"))


def bounded_message(message: str) -> str:
    """The message, cut to MESSAGE_LIMIT bytes of UTF-8 (a character never split; `…`
    says it was cut); HTTP's answer has it whole."""
    data = message.encode("utf-8", "replace")
    if len(data) <= MESSAGE_LIMIT:
        return data.decode("utf-8")
    return data[: MESSAGE_LIMIT - len("…".encode())].decode("utf-8", "ignore") + "…"


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
        headers: Iterable[tuple[str, str]],
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
                for k, v in [("host", "grpc"), *headers]
            ],
            "client": (peer, 0),
            "server": ("grpc", 0),
            "state": {},
        }
        self.app = app
        # The HTTP edge refuses a request line and headers past its bound before any
        # route runs, and the routes rely on it (the call to a service cannot carry a
        # query past 64 KiB): a request made of an RPC's fields is held to the same.
        head = len(path) + len(self.scope["query_string"])
        head += sum(len(k) + len(v) + 4 for k, v in self.scope["headers"])
        if head > PUBLIC.max_head:
            self.app = JSON(
                error_body(
                    "headers_too_large",
                    f"the request's fields make a request line and headers larger than"
                    f" {PUBLIC.max_head} bytes (as over HTTP)",
                    {"limit": PUBLIC.max_head},
                ),
                431,
            )
        self.body: AsyncIterator[bytes] | None = None
        self.pending: bytes | None = b""
        if isinstance(body, bytes):
            self.pending = body
        elif body is not None:
            self.body = body
        self.streamed = self.body is not None
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
            if self.ended.is_set():
                # Nobody reads the answers any more: a full queue would hold this task
                # until it is cancelled.
                with contextlib.suppress(asyncio.QueueFull):
                    self.answers.put_nowait(None)
            else:
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
        bounds) or not (the RPC failed or its client went away). Then the app hears
        the client went (http.disconnect) and is given a moment before it is
        cancelled: a streamed answer releases what it streams from (the service's
        answer, and its connection) in its background work, which a cancelled app
        never runs; the answer would hold its connection until a garbage collection."""
        self.ended.set()
        task = self.task
        if task is None or task.done():
            return
        # Not for a streamed request: grpc ends a cancelled client's stream as if it had
        # ended whole, and the app, given time, would store the upload cut short.
        grace = 0 if self.streamed else DISCONNECT_GRACE_S
        try:
            done, _ = await asyncio.wait({task}, timeout=10 if self.complete else grace)
            if not done and not self.complete:
                task.cancel()
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


M = TypeVar("M", bound=Message)


def _message(cls: type[M], data: Mapping[str, Any]) -> M:
    """A message from the HTTP API's JSON (fields of the same names; nulls unset)."""
    return cast(M, json_format.ParseDict(data, cls(), ignore_unknown_fields=True))


def _plain(message: Message) -> dict[str, Any]:
    """A request as the HTTP API's JSON: the fields set (a proto3 default is unset),
    repeated ones always (an empty list says "none"), int64 as numbers (not the strings
    of proto's JSON mapping), a Struct as its object, a Timestamp as RFC 3339."""
    found: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name["value"]
            found[field.name] = {
                k: _value(entry, v) for k, v in getattr(message, field.name).items()
            }
        elif field.is_repeated:
            found[field.name] = [_value(field, v) for v in getattr(message, field.name)]
    for field, value in message.ListFields():
        if not field.is_repeated:
            found[field.name] = _value(field, value)
    return found


def _value(field: Any, value: Any) -> Any:
    if field.message_type is None:
        return value
    if field.message_type.full_name.startswith("google.protobuf."):
        return json_format.MessageToDict(value)
    return _plain(value)


def _items(page: Mapping[str, Any]) -> dict[str, Any]:
    """A page of folders and files: each item in its own field of the `Item` oneof."""
    items = [{"folder" if i.get("type") == "folder" else "file": i} for i in page["items"]]
    return {"items": items, "next_cursor": page.get("next_cursor")}


@dataclass(frozen=True)
class Route:
    """The HTTP request a unary RPC stands for. The path's `{fields}` come from the
    request (an id is checked as a UUID first); its other fields are the query of a GET
    or DELETE, else the JSON body. The answer's JSON becomes the reply, by field name."""

    method: str
    path: str
    reshape: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    # The request's fields as the HTTP route takes them, where proto cannot say it.
    ask: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _filters(fields: dict[str, Any]) -> dict[str, Any]:
    """A listing's filters as HTTP's query: booleans as words, metadata as its keys,
    `kind` and `kinds` as one repeated `kind`."""
    kinds = [fields.pop("kind")] if fields.get("kind") else []
    kinds += fields.pop("kinds", [])
    if kinds:
        fields["kind"] = kinds
    for name in ("desc", "in_dataset", "dataset_synced"):
        if name in fields:
            fields[name] = "true" if fields[name] else "false"
    for key, value in fields.pop("metadata", {}).items():
        fields[f"metadata.{key}"] = value
    return fields


def _chosen(fields: dict[str, Any]) -> dict[str, Any]:
    """Neither list given names nothing to purge (not the whole trash: that is EmptyTrash)."""
    if not fields.get("file_ids") and not fields.get("folder_ids"):
        fields["file_ids"] = [","]
    return fields


def _schema_keys(fields: dict[str, Any]) -> dict[str, Any]:
    """Only an enum has values: proto's empty list is "none" for the other types."""
    for key in fields.get("keys", {}).values():
        if not key.get("values"):
            key.pop("values", None)
    return fields


# Every unary RPC of the proto, by "Service/Method"; the streaming ones are `STREAMED`.
UNARY: dict[str, Route] = {
    "Folders/CreateFolder": Route("POST", "/v1/folders"),
    "Folders/GetFolder": Route("GET", "/v1/folders/{folder_id}"),
    "Folders/ListFolders": Route("GET", "/v1/folders"),
    "Folders/ListItems": Route("GET", "/v1/folders/{folder_id}/items", _items, _filters),
    "Folders/UpdateFolder": Route("PATCH", "/v1/folders/{folder_id}"),
    "Folders/DeleteFolder": Route("DELETE", "/v1/folders/{folder_id}"),
    "Folders/GetFolderSummary": Route("GET", "/v1/folders/{folder_id}/summary"),
    "Files/GetFile": Route("GET", "/v1/files/{file_id}"),
    "Files/Search": Route("GET", "/v1/search", _items, _filters),
    "Files/UpdateFile": Route("PATCH", "/v1/files/{file_id}"),
    "Files/DeleteFile": Route("DELETE", "/v1/files/{file_id}"),
    "Files/Move": Route("POST", "/v1/move"),
    "Files/BulkDelete": Route("POST", "/v1/delete"),
    "Files/ListFileDatasets": Route("GET", "/v1/files/{file_id}/datasets"),
    "Files/LookupFiles": Route("POST", "/v1/files/lookup"),
    "Files/ReEncode": Route("POST", "/v1/files/re-encode"),
    "Files/UpdateFiles": Route("PATCH", "/v1/files"),
    "Files/GetMetadataSchema": Route("GET", "/v1/metadata-schema"),
    "Files/SetMetadataSchema": Route("PUT", "/v1/metadata-schema", ask=_schema_keys),
    "Datasets/CreateDataset": Route("POST", "/v1/datasets"),
    "Datasets/GetDataset": Route("GET", "/v1/datasets/{dataset_id}"),
    "Datasets/ListDatasets": Route("GET", "/v1/datasets"),
    "Datasets/UpdateDataset": Route("PATCH", "/v1/datasets/{dataset_id}"),
    "Datasets/DeleteDataset": Route("DELETE", "/v1/datasets/{dataset_id}"),
    "Datasets/AddFiles": Route("POST", "/v1/datasets/{dataset_id}/files"),
    "Datasets/RemoveFile": Route("DELETE", "/v1/datasets/{dataset_id}/files/{file_id}"),
    "Datasets/RemoveFiles": Route("POST", "/v1/datasets/{dataset_id}/files/remove"),
    "Datasets/ListDatasetFiles": Route("GET", "/v1/datasets/{dataset_id}/files"),
    "Datasets/ListDatasetCollaborators": Route("GET", "/v1/datasets/{dataset_id}/collaborators"),
    "Datasets/ShareDataset": Route("POST", "/v1/datasets/{dataset_id}/collaborators"),
    "Datasets/UnshareDataset": Route("DELETE", "/v1/datasets/{dataset_id}/collaborators/{user_id}"),
    "Collaborators/ListCollaborators": Route("GET", "/v1/folders/{folder_id}/collaborators"),
    "Collaborators/InviteCollaborators": Route("POST", "/v1/folders/{folder_id}/collaborators"),
    "Collaborators/ChangeRole": Route("PATCH", "/v1/folders/{folder_id}/collaborators/{user_id}"),
    "Collaborators/RemoveCollaborator": Route(
        "DELETE", "/v1/folders/{folder_id}/collaborators/{user_id}"
    ),
    "Jobs/GetJob": Route("GET", "/v1/jobs/{job_id}"),
    "Jobs/CancelJob": Route("POST", "/v1/jobs/{job_id}/cancel"),
    "Jobs/ListJobFiles": Route("GET", "/v1/jobs/{job_id}/files"),
    "Jobs/ListJobErrors": Route("GET", "/v1/jobs/{job_id}/errors"),
    "Users/CreateUser": Route("POST", "/v1/users"),
    "Users/ListUsers": Route("GET", "/v1/users"),
    "Users/GetMe": Route("GET", "/v1/users/me"),
    "Users/IssueKey": Route("POST", "/v1/users/{user_id}/keys"),
    "Users/ListKeys": Route("GET", "/v1/users/{user_id}/keys"),
    "Users/RevokeKey": Route("DELETE", "/v1/keys/{key_id}"),
    "Integrations/CreateIntegration": Route("POST", "/v1/integrations"),
    "Integrations/ListIntegrations": Route("GET", "/v1/integrations"),
    "Integrations/GetIntegration": Route("GET", "/v1/integrations/{integration_id}"),
    "Integrations/ShareIntegration": Route("PATCH", "/v1/integrations/{integration_id}"),
    "Integrations/RotateIntegration": Route("PATCH", "/v1/integrations/{integration_id}"),
    "Integrations/DeleteIntegration": Route("DELETE", "/v1/integrations/{integration_id}"),
    "Integrations/SyncFolder": Route("POST", "/v1/folders/{folder_id}/sync"),
    "Integrations/ImportObjects": Route("POST", "/v1/folders/{folder_id}/imports"),
    "Integrations/GetFolderSync": Route("GET", "/v1/folders/{folder_id}/sync"),
    "UploadSessions/OpenUploadSession": Route("POST", "/v1/folders/{folder_id}/uploads"),
    "UploadSessions/GetUploadSession": Route("GET", "/v1/uploads/{session_id}"),
    "UploadSessions/CompleteUploadSession": Route("POST", "/v1/uploads/{session_id}/complete"),
    "UploadSessions/AbortUploadSession": Route("DELETE", "/v1/uploads/{session_id}"),
    "Audit/ListEvents": Route("GET", "/v1/audit"),
    "Duplicates/ListDuplicates": Route("GET", "/v1/files/{file_id}/duplicates"),
    "Trash/ListTrash": Route("GET", "/v1/trash"),
    "Trash/RestoreFromTrash": Route("POST", "/v1/trash/restore"),
    "Trash/EmptyTrash": Route("DELETE", "/v1/trash"),
    "Trash/PurgeFromTrash": Route("DELETE", "/v1/trash", ask=_chosen),
    "Webhooks/CreateWebhook": Route("POST", "/v1/webhooks"),
    "Webhooks/ListWebhooks": Route("GET", "/v1/webhooks"),
    "Webhooks/DeleteWebhook": Route("DELETE", "/v1/webhooks/{webhook_id}"),
    "Webhooks/ListWebhookDeliveries": Route("GET", "/v1/webhooks/{webhook_id}/deliveries"),
    "Webhooks/RotateWebhookSecret": Route("POST", "/v1/webhooks/{webhook_id}/secret"),
    "Webhooks/RetryWebhookDelivery": Route(
        "POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"
    ),
}

# The streaming RPCs, each a method of `Api` of its name, and the route it stands for.
STREAMED: dict[str, tuple[str, str]] = {
    "Files/Upload": ("POST", "/v1/folders/{folder_id}/files"),
    "Files/Download": ("GET", "/v1/files/{file_id}/content"),
    "Files/UploadDicom": ("POST", "/v1/folders/{folder_id}/dicom"),
    "Files/UploadImageGroup": ("POST", "/v1/folders/{folder_id}/image-groups"),
    "Files/GetThumbnail": ("GET", "/v1/files/{file_id}/thumbnail"),
    "Files/GetSlice": ("GET", "/v1/files/{file_id}/slices/{index}"),
    "UploadSessions/PutPart": ("PUT", "/v1/uploads/{session_id}/parts/{number}"),
}

PATH_FIELD = re.compile(r"\{(\w+)\}")
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
# An upload session's part URL when the store is ours (a presigned S3 URL goes to S3).
PART_PATH = re.compile(r"/v1/uploads/[0-9a-fA-F-]{36}/parts/\d{1,5}")


def _quoted(name: str) -> bytes:
    """A file name as a multipart header's quoted string (python-multipart unescapes)."""
    return name.replace("\\", "\\\\").replace('"', '\\"').encode()


def _form(
    fields: Mapping[str, str],
    files: AsyncIterator[str | bytes],
    after: Callable[[], Mapping[str, str]] | None = None,
) -> tuple[str, AsyncIterator[bytes]]:
    """A multipart/form-data body (its content type, its bytes as they come): the form's
    fields, then its `file` parts from `files`, where a name starts the next file and
    bytes are its content, then the fields `after` gives once the files are sent (an
    upload's metadata, gathered from its headers). Nothing is held beyond the chunk at
    hand (and those fields)."""
    boundary = uuid.uuid4().hex

    def head(disposition: bytes, file: bool) -> bytes:
        kind = b"\r\nContent-Type: application/octet-stream" if file else b""
        return (
            f"--{boundary}\r\n".encode()
            + b"Content-Disposition: form-data; "
            + disposition
            + kind
            + b"\r\n\r\n"
        )

    async def body() -> AsyncIterator[bytes]:
        for name, value in fields.items():
            yield head(f'name="{name}"'.encode(), False) + value.encode() + b"\r\n"
        opened = False
        async for part in files:
            if isinstance(part, str):
                if problem := rules.name_problem(part, "file name"):
                    raise BadStream("invalid_name", problem, name=part[:300])
                yield (b"\r\n" if opened else b"") + head(
                    b'name="file"; filename="' + _quoted(part) + b'"', True
                )
                opened = True
            elif not opened:
                raise BadStream("invalid_request", "a chunk came before any file's name")
            elif part:
                yield part
        for name, value in (after() if after else {}).items():
            yield (b"\r\n" if opened else b"") + head(f'name="{name}"'.encode(), False)
            yield value.encode()
            opened = True
        yield (b"\r\n" if opened else b"") + f"--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", body()


def _error_trailer(
    http: int,
    code: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[tuple[str, str], ...]:
    """An error's trailing metadata: its code, details, HTTP status and passed headers."""
    trailing = [
        ("files-error-code", code),
        # ASCII-only JSON: metadata values must be printable ASCII.
        ("files-error-details", bounded_details(details or {})),
        ("files-http-status", str(http)),
    ]
    trailing += [(n, (headers or {})[n]) for n in PASSED_OUT if n in (headers or {})]
    return tuple(trailing)


class Api:
    """The RPCs: each the HTTP call it stands for, made to the app, and its errors.
    `send_idle_s`: how long a streamed answer's message may wait for its client to take
    it (FILES_HTTP_SEND_IDLE_S, as over HTTP)."""

    def __init__(self, app: ASGIApp, send_idle_s: float = PUBLIC.send_idle_s) -> None:
        self.app = app
        self.send_idle_s = send_idle_s

    @staticmethod
    def _headers(context: grpc.aio.ServicerContext) -> list[tuple[str, str]]:
        """The metadata passed in, each value kept: a key sent twice reaches the app as
        two headers, which it refuses (two `authorization`s are not the last one)."""
        return [
            (key.lower(), value)
            for key, value in context.invocation_metadata() or ()
            if key.lower() in PASSED_IN and isinstance(value, str)
        ]

    def open(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | Iterable[tuple[str, str]] | None = None,
        body: AsyncIterator[bytes] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Exchange:
        pairs = query.items() if isinstance(query, Mapping) else (query or ())
        params: list[tuple[str, str]] = []
        for k, v in pairs:
            for one in v if isinstance(v, list) else [v]:
                if one not in (None, "", 0):
                    params.append((k, str(one)))
        extra = {k.lower(): v for k, v in (headers or {}).items()}
        passed = [(k, v) for k, v in self._headers(context) if k not in extra]
        exchange = Exchange(
            self.app,
            method,
            path,
            params,
            [*passed, *extra.items()],
            body,
            context.peer() or "grpc",
        )
        # The client's deadline bounds the request's budget, when shorter: past it,
        # waiting on the services (and theirs on their databases) helps no one.
        left = context.time_remaining()
        if left is not None:
            exchange.scope["state"][deadlines.CLIENT_TIME_LEFT] = max(float(left), 0.0)
        return exchange

    async def call(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | Iterable[tuple[str, str]] | None = None,
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
        trailing = _error_trailer(http, code, details, headers)
        await context.abort(status_of(http, code), bounded_message(message), trailing)
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

    # -- unary RPCs: one generic path --------------------------------------------------

    async def unary(
        self, route: Route, reply: type[M], request: Message, context: grpc.aio.ServicerContext
    ) -> M:
        fields = _plain(request)
        if route.ask is not None:
            fields = route.ask(fields)
        values: dict[str, str] = {}
        for name in PATH_FIELD.findall(route.path):
            fields.pop(name, None)
            value = getattr(request, name)
            values[name] = (
                await self.uuid(context, value, name) if isinstance(value, str) else str(value)
            )
        path = route.path.format(**values)
        if route.method in ("GET", "DELETE"):
            answer = await self.call(context, route.method, path, query=fields)
        else:
            # A request with fields besides the path's sends them ({} for a PATCH of
            # nothing), one without sends no body.
            has_body = len(request.DESCRIPTOR.fields) > len(values)
            answer = await self.call(
                context, route.method, path, json_body=fields if has_body else None
            )
        if answer is None or reply is pb.Empty:
            return reply()
        return _message(reply, route.reshape(answer) if route.reshape else answer)

    # -- streaming RPCs ----------------------------------------------------------------

    async def _first(
        self, context: grpc.aio.ServicerContext, messages: AsyncIterator[Any], part: str, what: str
    ) -> Any:
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != part:
            await self.refuse(context, 422, "invalid_request", what)
        return first

    async def _upload_form(
        self,
        context: grpc.aio.ServicerContext,
        request_iterator: AsyncIterator[pb.UploadRequest],
        kind: str,
    ) -> Any:
        """Upload and UploadDicom: a header {folder_id, name}, chunks, another header..."""
        messages = aiter(request_iterator)
        first = await self._first(
            context,
            messages,
            "header",
            "an upload starts with a header {folder_id, name}, then the bytes in chunks",
        )
        folder_id = await self.uuid(context, first.header.folder_id, "header.folder_id")
        await self._check_name(context, first.header.name)
        # Each header's metadata, sent after the files as the upload's `metadata` field.
        metadata: dict[str, Any] = {}
        held = 0

        def described(header: pb.UploadHeader) -> None:
            nonlocal held
            if not header.HasField("metadata"):
                return
            found = json_format.MessageToDict(header.metadata)
            held += len(orjson.dumps(found))
            if held > UPLOAD_METADATA_LIMIT:
                raise BadStream(
                    "metadata_too_large",
                    f"an upload's metadata is at most {UPLOAD_METADATA_LIMIT} bytes in all",
                    limit=UPLOAD_METADATA_LIMIT,
                )
            metadata[header.name] = found

        def fields_after() -> dict[str, str]:
            return {"metadata": orjson.dumps(metadata).decode()} if metadata else {}

        async def files() -> AsyncIterator[str | bytes]:
            described(first.header)
            yield first.header.name
            async for message in messages:
                part = message.WhichOneof("part")
                if part == "chunk":
                    yield message.chunk
                elif part == "header":
                    header = message.header
                    if header.folder_id and header.folder_id != first.header.folder_id:
                        raise BadStream(
                            "invalid_request",
                            "every file of an upload goes to the first header's folder",
                            folder_id=header.folder_id,
                        )
                    described(header)
                    yield header.name
                else:
                    raise BadStream(
                        "invalid_request", "an upload message holds a header or a chunk"
                    )

        content_type, body = _form({}, files(), fields_after)
        return await self.call(
            context,
            "POST",
            f"/v1/folders/{folder_id}/{kind}",
            body=body,
            headers={"content-type": content_type},
        )

    async def _check_name(self, context: grpc.aio.ServicerContext, name: str) -> None:
        # Checked here as ingest would: a name with a line break would break the framing.
        if problem := rules.name_problem(name, "file name"):
            await self.refuse(context, 422, "invalid_name", problem, {"name": name[:300]})

    async def Upload(
        self, request_iterator: AsyncIterator[pb.UploadRequest], context: grpc.aio.ServicerContext
    ) -> pb.UploadResponse:
        # Each chunk goes on as it arrives: the gateway streams it to ingest.
        return _message(
            pb.UploadResponse, await self._upload_form(context, request_iterator, "files")
        )

    async def UploadDicom(
        self, request_iterator: AsyncIterator[pb.UploadRequest], context: grpc.aio.ServicerContext
    ) -> pb.JobRef:
        return _message(pb.JobRef, await self._upload_form(context, request_iterator, "dicom"))

    async def UploadImageGroup(
        self,
        request_iterator: AsyncIterator[pb.UploadImageGroupRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.ImageGroupUploaded:
        messages = aiter(request_iterator)
        first = await self._first(
            context,
            messages,
            "group",
            "an image group starts with a group header {folder_id, kind, name}, then per"
            " image a file_name and its bytes in chunks",
        )
        folder_id = await self.uuid(context, first.group.folder_id, "group.folder_id")

        async def files() -> AsyncIterator[str | bytes]:
            async for message in messages:
                part = message.WhichOneof("part")
                if part == "file_name":
                    yield message.file_name
                elif part == "chunk":
                    yield message.chunk
                else:
                    raise BadStream("invalid_request", "an image group has one group header")

        content_type, body = _form({"kind": first.group.kind, "name": first.group.name}, files())
        made = await self.call(
            context,
            "POST",
            f"/v1/folders/{folder_id}/image-groups",
            body=body,
            headers={"content-type": content_type},
        )
        return _message(pb.ImageGroupUploaded, made)

    async def PutPart(
        self, request_iterator: AsyncIterator[pb.PutPartRequest], context: grpc.aio.ServicerContext
    ) -> pb.StoredPart:
        messages = aiter(request_iterator)
        first = await self._first(
            context, messages, "header", "a part starts with a header {url}, then its bytes"
        )
        url = urllib.parse.urlsplit(first.header.url)
        if not PART_PATH.fullmatch(url.path):
            await self.refuse(
                context,
                422,
                "invalid_request",
                "url: not a part URL of this API (a presigned URL of the store takes the"
                " bytes itself: PUT them there)",
                {"fields": [{"field": "header.url", "problem": "not a part URL of this API"}]},
            )

        async def chunks() -> AsyncIterator[bytes]:
            async for message in messages:
                if message.WhichOneof("part") != "chunk":
                    raise BadStream("invalid_request", "a part has one header, then chunks")
                if message.chunk:
                    yield message.chunk

        stored = await self.call(
            context,
            "PUT",
            url.path,
            query=urllib.parse.parse_qsl(url.query),
            body=chunks(),
            headers={"content-type": "application/octet-stream"},
        )
        return _message(pb.StoredPart, stored)

    async def Download(
        self, request: pb.DownloadRequest, context: grpc.aio.ServicerContext
    ) -> None:
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
        query = {"rendition": request.rendition} if request.HasField("rendition") else None
        exchange = self.open(
            context, "GET", f"/v1/files/{file_id}/content", query=query, headers=headers
        )
        try:
            status, answer = await exchange.start()
            if status >= 300 and status != 307:
                data = b"".join([chunk async for chunk in exchange.chunks()])
                await self.fail(context, Answer(status, answer, data))
            self.trail(context, answer)
            header = pb.DownloadResponse(header=self._download_header(status, answer))
            if not await self._sent(context, header) or status == 307:
                return
            async for chunk in exchange.chunks():
                for at in range(0, len(chunk), DOWNLOAD_MESSAGE):
                    piece = chunk[at : at + DOWNLOAD_MESSAGE]
                    if not await self._sent(context, pb.DownloadResponse(chunk=piece), len(piece)):
                        return
            await self._ended_whole(context, exchange)
        finally:
            await exchange.close()

    async def _sent(
        self, context: grpc.aio.ServicerContext, message: Message, size: int = 0
    ) -> bool:
        """One message of a streamed answer (`size` bytes of a body), taken by its client
        within `send_idle_s` for each SEND_PROGRESS of it, as over HTTP, where a client
        that read that much has another bound (a message's progress is not seen until
        it is all taken: one bound for the whole of a 1 MiB one let go a client reading
        1 MiB/s). One that stops reading holds the write under HTTP/2's flow control,
        with its transfer's slot and ingest's answer, until the RPC's deadline, maybe
        never: it is let go, False (the RPC then returns, its status set: aborted, it
        waited for its status to be sent, behind the unread messages, holding all that
        as before); a client resumes with `offset`."""
        bounds = max(-(-size // SEND_PROGRESS), 1)
        try:
            async with asyncio.timeout(self.send_idle_s * bounds):
                await context.write(message)
        except TimeoutError:
            log.info("grpc.answer_unread", peer=context.peer(), idle_s=self.send_idle_s)
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details(
                f"the answer was read too slowly (under {SEND_PROGRESS // 1024} KiB in"
                f" {self.send_idle_s:g} s, FILES_HTTP_SEND_IDLE_S); ask again from where it"
                " got to (offset)"
            )
            context.set_trailing_metadata(_error_trailer(503, "unavailable", {"retry": True}))
            return False
        return True

    async def _ended_whole(self, context: grpc.aio.ServicerContext, exchange: Exchange) -> None:
        """An answer the app left unfinished (over HTTP its connection is closed) ends
        the stream with an error, never OK: the client would take what came for the
        whole. Why, if the app said (a download whose caller's right went: 401 or 403);
        else as a service that failed mid-way (503, try again)."""
        if exchange.complete:
            return
        cut = exchange.scope["state"].get("cut")
        if isinstance(cut, Refused):
            await self.refuse(context, cut.status, cut.code, cut.message, cut.details)
        await self.refuse(
            context,
            503,
            "unavailable",
            "the answer was cut short on our side; try again",
            {"retry": True},
        )

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

    async def _picture(
        self, context: grpc.aio.ServicerContext, path: str, query: Mapping[str, Any]
    ) -> AsyncIterator[pb.Picture]:
        exchange = self.open(context, "GET", path, query=query)
        try:
            status, answer = await exchange.start()
            if status >= 300:
                data = b"".join([chunk async for chunk in exchange.chunks()])
                await self.fail(context, Answer(status, answer, data))
            self.trail(context, answer)
            yield pb.Picture(
                header=pb.PictureHeader(
                    mime_type=answer.get("content-type", "").split(";")[0].strip(),
                    length=int(answer.get("content-length", "0") or 0),
                    etag=answer.get("etag", ""),
                )
            )
            async for chunk in exchange.chunks():
                for at in range(0, len(chunk), CHUNK):
                    yield pb.Picture(chunk=chunk[at : at + CHUNK])
            await self._ended_whole(context, exchange)
        finally:
            await exchange.close()

    async def GetThumbnail(
        self, request: pb.GetThumbnailRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Picture]:
        file_id = await self.uuid(context, request.file_id, "file_id")
        path = f"/v1/files/{file_id}/thumbnail"
        async for message in self._picture(context, path, {"size": request.size}):
            yield message

    async def GetSlice(
        self, request: pb.GetSliceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Picture]:
        file_id = await self.uuid(context, request.file_id, "file_id")
        path = f"/v1/files/{file_id}/slices/{request.index}"
        async for message in self._picture(context, path, {}):
            yield message

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """A handler per service of the proto: its unary RPCs by `UNARY`, its streaming
        ones (`STREAMED`) by the method of that name. An RPC with neither stops the
        gateway at start."""
        made = []
        for service in pb.DESCRIPTOR.services_by_name.values():
            methods = {}
            for method in service.methods:
                request, reply = (
                    getattr(pb, method.input_type.name),
                    getattr(pb, method.output_type.name),
                )
                codec = {
                    "request_deserializer": request.FromString,
                    "response_serializer": reply.SerializeToString,
                }
                name = f"{service.name}/{method.name}"
                streamed = (method.client_streaming, method.server_streaming)
                if name in UNARY and streamed == (False, False):
                    route = UNARY[name]

                    async def unary(
                        message: Message,
                        context: grpc.aio.ServicerContext,
                        route: Route = route,
                        reply: type[Message] = reply,
                    ) -> Message:
                        return await self.unary(route, reply, message, context)

                    methods[method.name] = grpc.unary_unary_rpc_method_handler(unary, **codec)
                elif name in STREAMED and streamed != (False, False):
                    kind = {
                        (True, False): grpc.stream_unary_rpc_method_handler,
                        (False, True): grpc.unary_stream_rpc_method_handler,
                    }[streamed]
                    methods[method.name] = kind(getattr(self, method.name), **codec)
                else:
                    raise RuntimeError(f"gRPC: no route for {name}")
            made.append(grpc.method_handlers_generic_handler(service.full_name, methods))
        return made


async def start(app: ASGIApp, host: str, port: int, send_idle_s: float) -> grpc.aio.Server:
    """A gRPC server for the gateway's app, listening on host:port."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(Api(app, send_idle_s).handlers())
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"gRPC: cannot listen on {address}")
    await server.start()
    log.info("grpc.started", address=address)
    return server
