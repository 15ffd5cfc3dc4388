"""The client's models in step with the /openapi.json the running gateway serves: every
route the client calls is in the document, every field the client sends is one the
route takes (and every field it requires, the client can send), and where the document
declares an answer's fields, the client's model has exactly those."""

from __future__ import annotations

import re
from typing import Any

import httpx
from files_client.models import PAGE_ITEMS, ROUTES
from pydantic import BaseModel


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its $ref followed (and a single allOf/anyOf member unwrapped)."""
    for _ in range(10):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = doc["components"]["schemas"][name]
        elif len(schema.get("allOf", [])) == 1:
            schema = schema["allOf"][0]
        else:
            return schema
    return schema


def _fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def _answer_schema(doc: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    for status, answer in sorted(operation.get("responses", {}).items()):
        if status.startswith("2"):
            schema = answer.get("content", {}).get("application/json", {}).get("schema")
            return _resolve(doc, schema) if schema else None
    return None


def _compare(
    where: str,
    model: type[BaseModel],
    schema: dict[str, Any],
    problems: list[str],
    *,
    sent: bool,
) -> None:
    declared = set(schema.get("properties", {}))
    if not declared:
        return  # the document does not say which fields (a free-form object)
    ours = _fields(model)
    if sent:
        problems += [f"{where}: the client sends {f!r}, not a field" for f in ours - declared]
        missing = set(schema.get("required", [])) - ours
        problems += [
            f"{where}: the route requires {f!r}, the client cannot send it" for f in missing
        ]
    else:
        problems += [f"{where}: the model has {f!r}, the answer does not" for f in ours - declared]
        problems += [f"{where}: the answer has {f!r}, the model does not" for f in declared - ours]


async def test_the_client_models_match_the_served_openapi_document(
    api: httpx.AsyncClient,
) -> None:
    answer = await api.get("/openapi.json")
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    operations = {
        (method.upper(), _shape(path)): op
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if isinstance(op, dict)
    }
    problems: list[str] = []
    checked_bodies = checked_answers = 0
    for method, template, body, model in ROUTES:
        key = (method, _shape(template))
        where = f"{method} {template}"
        op = operations.get(key)
        if op is None:
            problems.append(f"{where}: the client calls it; /openapi.json does not have it")
            continue
        content = op.get("requestBody", {}).get("content", {})
        if isinstance(body, type):
            schema = content.get("application/json", {}).get("schema")
            if schema is None:
                problems.append(f"{where}: the client sends JSON; the route declares none")
            else:
                checked_bodies += bool(_resolve(doc, schema).get("properties"))
                _compare(where, body, _resolve(doc, schema), problems, sent=True)
        elif isinstance(body, tuple) and "multipart/form-data" in content:
            form = _resolve(doc, content["multipart/form-data"]["schema"])
            declared = set(form.get("properties", {}))
            if declared:
                problems += [f"{where}: no form field {f!r}" for f in set(body) - declared]
        if model is not None:
            schema = _answer_schema(doc, op)
            if schema is None:
                continue
            item = PAGE_ITEMS.get((method, template))
            if item is not None and "items" in schema.get("properties", {}):
                items = _resolve(doc, schema["properties"]["items"])
                schema = _resolve(doc, items.get("items", {}))
                model = item
            checked_answers += bool(schema.get("properties"))
            _compare(where, model, schema, problems, sent=False)
    assert not problems, "\n".join(problems)
    # The request bodies the document declares are checked field by field.
    assert checked_bodies >= 10, checked_bodies
