"""`/openapi.json` and what the gateway serves are one and the same, both ways: every
documented operation is served (answered by its route, never "no route"), and every
other method or path is not (405, or a 404 "no route")."""

from __future__ import annotations

import errno
import re
import uuid
from typing import Any

import httpx
import schemathesis

from services.gateway.routes import ROUTES, Multipart, Raw
from shared.kit.errors import storage_failed
from tests.e2e.support import error

ID = "3f0c2a8e-5b1d-4c47-9a51-0d6f1b2c3d4e"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def document(api: httpx.AsyncClient) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        answer = await anonymous.get("/openapi.json")
    assert answer.status_code == 200
    found: dict[str, Any] = answer.json()
    return found


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


def filled(template: str) -> str:
    return template.replace("{number}", "1").replace("{index}", "0").format_map(_Ids())


class _Ids(dict[str, str]):
    def __missing__(self, _: str) -> str:
        return str(uuid.uuid4())


async def test_the_document_is_the_table_and_a_valid_openapi_3_1(api: httpx.AsyncClient) -> None:
    doc = await document(api)
    assert doc["openapi"].startswith("3.1")
    assert operations(doc) == {(r.method, r.template) for r in ROUTES}
    schemathesis.openapi.from_dict(doc).validate()
    for route in ROUTES:
        operation = doc["paths"][route.template][route.method.lower()]
        declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert declared == {p.name for p in route.params}, route.template
        for where in ("query", "header"):
            assert {p["name"] for p in operation["parameters"] if p["in"] == where} == {
                q.name for q in route.query if q.where == where
            } | ({"Files-Consistency"} if where == "header" and route.method == "GET" else set())
        assert str(route.status) in operation["responses"]
        if isinstance(route.body, type):
            assert "application/json" in operation["requestBody"]["content"]
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                ref = response["$ref"].rsplit("/", 1)[1]
                shown = doc["components"]["responses"][ref]["content"]["application/json"]
                assert shown["schema"]["$ref"].endswith("/Error")
                assert all(codes(doc, int(status))), (route.template, status)
        if route.owner == "ingest" and (
            isinstance(route.body, Multipart | Raw) or route.template.endswith("/complete")
        ):
            # Bytes a caller sends (a session's joined from its parts) are written to the
            # file store, which may be full.
            assert "507" in operation["responses"], route.template
    assert "/internal" not in str(list(doc["paths"]))
    # What a failing file store answers is shown with its own code, not only its status.
    for code in (errno.ENOSPC, errno.EIO):
        failed = storage_failed(OSError(code, "the disk said no"))
        assert failed.code in codes(doc, failed.status), failed.code
    assert {"unavailable", "storage_unavailable"} <= codes(doc, 503)


def codes(doc: dict[str, Any], status: int) -> set[str]:
    """The error codes the document shows as examples of a status."""
    shown = doc["components"]["responses"][f"E{status}"]["content"]["application/json"]
    return {example["value"]["error"]["code"] for example in shown["examples"].values()}


async def test_every_documented_operation_is_served(api: httpx.AsyncClient) -> None:
    doc = await document(api)
    for method, template in sorted(operations(doc)):
        answer = await api.request(method, filled(template))
        if answer.status_code in (404, 405):
            problem = answer.json()["error"]
            assert answer.status_code == 404, (method, template, problem)
            assert not problem["message"].startswith("no route"), (method, template)


async def test_nothing_undocumented_is_served(api: httpx.AsyncClient) -> None:
    doc = await document(api)
    documented = operations(doc)
    for template in doc["paths"]:
        for method in METHODS:
            if (method, template) in documented:
                continue
            refused = error(await api.request(method, filled(template)), 405, "method_not_allowed")
            assert method in refused["message"]
        error(await api.get(filled(template) + "/more/more"), 404, "not_found")
    for path in ("/v1/internal/audit", "/internal/audit", "/v1/consistency", "/v1", "/v1/x"):
        error(await api.get(path), 404)


async def test_the_web_app_is_served_but_not_documented(api: httpx.AsyncClient) -> None:
    doc = await document(api)
    for path in ("/", f"/folders/{ID}", f"/files/{ID}", f"/datasets/{ID}", "/search"):
        page = await api.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        assert path not in doc["paths"]
    assert all(path.startswith("/v1/") for path in doc["paths"])


async def test_the_docs_page_shows_the_document_with_nothing_of_another_origin(
    api: httpx.AsyncClient,
) -> None:
    """Swagger UI, built with the web app from a pinned package and served from here
    under the app's Content-Security-Policy: no script of another origin (a CDN's, as
    before) runs on the origin of the session cookie."""
    page = await api.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    linked = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page.text)
    assert linked and all(url.startswith("/assets/") for url in linked), linked
    assert "//" not in re.sub(r"<!doctype html>", "", page.text, flags=re.I), page.text
    [script] = [url for url in linked if url.endswith(".js")]
    bundle = await api.get(script)
    assert bundle.status_code == 200 and "/openapi.json" in bundle.text
