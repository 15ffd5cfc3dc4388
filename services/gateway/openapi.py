"""`/openapi.json`, made from the declared routes (routes.py) and the API's shapes
(shared/api/): every public route, its parameters, body, answer and errors.

Nothing here is asked of a service: the document is what the gateway serves, and
tests/e2e/test_openapi.py holds the two to each other in both directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.gateway import transfers
from services.gateway.routes import Multipart, Raw, Route
from shared.api.common import Error

REF = "#/components/schemas/{model}"


class Example(NamedTuple):
    """An error as the API answers it: `{error: {code, message, details}}`."""

    code: str
    message: str
    details: dict[str, Any] = {}


# Every error status the API answers, with an example of each of its codes worth knowing.
ERRORS: dict[int, tuple[str, tuple[Example, ...]]] = {
    400: (
        "The request is malformed: a path with encoded bytes or dot segments, a body that"
        " is not JSON, a consistency token that is malformed or ahead of its store",
        (
            Example(
                "invalid_path",
                "the path holds a percent-encoded byte (ids and names in paths are never encoded)",
            ),
        ),
    ),
    401: (
        "No valid API key",
        (Example("unauthenticated", "send a valid API key as 'Authorization: Bearer <key>'"),),
    ),
    403: (
        "The caller sees the resource but lacks the role",
        (
            Example(
                "forbidden",
                "this needs the editor role on folder 3f0c2a8e-…",
                {"role_needed": "editor"},
            ),
        ),
    ),
    404: (
        "No such resource, or one the caller may not see (the same answer); an id that is"
        " not a UUID is answered so too",
        (Example("not_found", "folder 3f0c2a8e-5b1d-4c47-9a51-0d6f1b2c3d4e does not exist"),),
    ),
    409: (
        "A conflict: a name taken, a concurrent change (retry), a folder admin",
        (Example("name_taken", "a folder named 'scans' is already there"),),
    ),
    413: (
        "Past a limit of size or count",
        (
            Example(
                "request_too_large",
                "the request body is over 16 MiB",
                {"limit": 16 * 1024 * 1024},
            ),
        ),
    ),
    415: (
        "Content of no kind we take",
        (Example("unsupported_content", "notes.bin is of no kind we take"),),
    ),
    416: (
        "The range cannot be satisfied",
        (Example("range_not_satisfiable", "range starts past the end"),),
    ),
    422: (
        "A value that breaks a rule. When the request's body or parameters failed"
        " validation, `details.fields` names each fault (the first 20) and"
        " `details.faults` counts them all; other refusals name what they refuse in"
        " `details` of their own",
        (
            Example(
                "invalid_request",
                "name: Field required",
                {"fields": [{"field": "name", "problem": "Field required"}], "faults": 1},
            ),
        ),
    ),
    429: (
        "The caller has as many uploads and downloads under way at this gateway as one may"
        " (`FILES_GATEWAY_TRANSFERS_PER_CALLER`); try again after `Retry-After`, once one"
        " has ended",
        (
            Example(
                "too_many_transfers",
                "you have 32 uploads and downloads under way at this gateway, as many as one"
                " caller may (FILES_GATEWAY_TRANSFERS_PER_CALLER); try again once one has ended",
                {"limit": 32, "retry": True},
            ),
        ),
    ),
    500: (
        "Our fault; quote the request id",
        (
            Example(
                "internal_error",
                "something went wrong on our side; quote request id 8d1e…",
                {"request_id": "8d1e…"},
            ),
        ),
    ),
    503: (
        "For now, try again shortly: a service did not answer in time, or the file store"
        " could not write what was sent (nothing of it was recorded). A write sent without"
        " an Idempotency-Key that timed out may have been applied: check before sending it"
        " again",
        (
            Example(
                "unavailable",
                "the catalog service did not answer within this request's time budget (15 s);"
                " try again shortly (a write sent again with the same Idempotency-Key is"
                " applied once)",
                {"service": "catalog", "retry": True, "cause": "timeout"},
            ),
            Example(
                "storage_unavailable",
                "the file store could not write: nothing of this upload was recorded; try again",
            ),
        ),
    ),
    507: (
        "The file store is full; nothing of the upload was recorded",
        (
            Example(
                "insufficient_storage",
                "the file store is full: nothing of this upload was recorded; try again"
                " once an operator has made room",
            ),
        ),
    ),
}
# What any route may answer besides its own (a 404 too: an id in a body or a query).
ALWAYS = (400, 404, 500, 503)
TOKEN_PATTERN = r"^[a-z_]+:[0-9]{1,18}(,[a-z_]+:[0-9]{1,18})*$"


def _models(routes: Sequence[Route]) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], Any], None] = {(Error, "serialization"): None}
    for route in routes:
        if isinstance(route.body, type):
            wanted[(route.body, "validation")] = None
        if isinstance(route.answer, type):
            wanted[(route.answer, "serialization")] = None
    refs, definitions = models_json_schema(list(wanted), ref_template=REF)
    return dict(refs), definitions.get("$defs", {})


def _tag(route: Route) -> str:
    first = route.template.split("/")[2]
    return {"move": "files", "delete": "files", "keys": "users"}.get(first, first)


def _parameters(route: Route) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {
            "name": p.name,
            "in": "path",
            "required": True,
            "schema": p.schema(),
            "description": f"the {p.names}'s id" if p.type == "uuid" else f"the {p.names}",
        }
        for p in route.params
    ]
    for q in route.query:
        schema = {"type": "array", "items": q.schema} if q.many else q.schema
        entry: dict[str, Any] = {"name": q.name, "in": q.where, "required": q.required}
        entry["schema"] = schema
        if q.many:
            entry |= {"style": "form", "explode": True}
        if q.description:
            entry["description"] = q.description
        found.append(entry)
    if route.method == "GET" and not route.public:
        found.append(
            {
                "name": "Files-Consistency",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": TOKEN_PATTERN},
                "description": "a write's token: the read waits (at most 5 s) until it is"
                " applied, and its reactions",
            }
        )
    return found


def _links(route: Route, routes: Sequence[Route]) -> dict[str, Any]:
    """What may follow a route whose answer gives ids: every route whose parameters it
    (with its own path's) fills."""
    if not route.gives:
        return {}
    known = {p.name: f"$request.path.{p.name}" for p in route.params}
    known |= {name: f"$response.body#{pointer}" for name, pointer in route.gives.items()}
    found = {}
    for then in routes:
        names = {p.name for p in then.params}
        if then is route or not names or not names <= set(known) or then.public:
            continue
        if not names & set(route.gives):
            continue
        found[then.name] = {
            "operationId": then.name,
            "parameters": {name: known[name] for name in sorted(names)},
        }
    return found


def _operation(
    route: Route, refs: dict[Any, dict[str, Any]], routes: Sequence[Route]
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [_tag(route)],
        "parameters": _parameters(route),
    }
    if route.description:
        operation["description"] = route.description
    if route.public:
        operation["security"] = []
    body = route.body
    if isinstance(body, type):
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(body, "validation")]}},
        }
    elif isinstance(body, Multipart):
        operation["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": body.schema}},
        }
    elif isinstance(body, Raw):
        operation["requestBody"] = {
            "required": True,
            "content": {body.media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    success: dict[str, Any] = {"description": route.summary}
    if isinstance(route.answer, type):
        success["content"] = {"application/json": {"schema": refs[(route.answer, "serialization")]}}
    elif isinstance(route.answer, Raw):
        # A file's own bytes are of its own type; a picture's, of the type named.
        media_type = "*/*" if route.answer == Raw() else route.answer.media_type
        schema = route.answer.schema or {"type": "string", "format": "binary"}
        success["content"] = {media_type: {"schema": dict(schema)}}
    if route.method != "GET":
        success["headers"] = {
            "Files-Consistency": {
                "description": "send it back on a read to see this write",
                "schema": {"type": "string"},
            }
        }
    links = _links(route, routes)
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(route.status): success}
    for status, meaning in route.also.items():
        responses[str(status)] = {"description": meaning}
        if 200 <= status < 300 and isinstance(route.answer, Raw):
            responses[str(status)]["content"] = success["content"]
    statuses = set(ALWAYS) | set(route.errors)
    if not route.public:
        statuses |= {401, 403}
    if route.query:
        statuses.add(422)
    if route.body is not None:
        statuses |= {413, 422}
    if route.method != "GET":
        statuses.add(409)  # at least `concurrent_change`: nothing written, try again
    if route.compose in transfers.COMPOSERS:
        statuses.add(429)
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    operation["responses"] = responses
    return operation


def document(routes: Sequence[Route]) -> dict[str, Any]:
    refs, schemas = _models(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route, refs, routes)
    error_ref = refs[(Error, "serialization")]
    responses = {
        f"E{status}": {
            "description": description,
            "content": {
                "application/json": {
                    "schema": error_ref,
                    "examples": {e.code: {"value": {"error": e._asdict()}} for e in examples},
                }
            },
        }
        for status, (description, examples) in ERRORS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Files",
            "version": "1",
            "description": "Folders, files, datasets and their access, by API key (or the"
            " web app's session cookie). Errors are `{error: {code, message, details}}`; lists are"
            " `{items, next_cursor}`; every write answers a `Files-Consistency` token.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "files_session",
                    "description": "the web app's, from `POST /v1/sessions`"
                    " (`__Host-files_session` over TLS); a write signed in by it needs the"
                    " `X-Files-CSRF` header",
                },
            },
        },
        "security": [{"apiKey": []}, {"session": []}],
    }
