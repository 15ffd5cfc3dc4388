"""files_client's pure parts: the routes it calls are the ones it declares (and checks
against /openapi.json), tokens merge, errors map to their types, names stay names."""

from __future__ import annotations

import re
from pathlib import Path

import files_client
import httpx
from files_client import errors
from files_client._core import Consistency, Retries
from files_client.api import safe_name, split_path
from files_client.models import ROUTES

SOURCES = Path(files_client.__file__).parent


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_route_the_client_calls_is_declared_in_routes() -> None:
    declared = {(m, _shape(p)) for m, p, _, _ in ROUTES}
    called: set[tuple[str, str]] = set()
    for source in ("api.py", "transfer.py"):
        text = (SOURCES / source).read_text()
        for method, path in re.findall(r'Call\(\s*"([A-Z]+)",\s*f?"(/v1/[^"]*)"', text):
            called.add((method, _shape(path.split("?")[0])))
        for path in re.findall(r'_pages\(\s*f?"(/v1/[^"]*)"', text):
            called.add(("GET", _shape(path)))
    assert called, "no calls found: the pattern no longer matches the sources"
    assert called - declared == set()
    # And nothing declared that the client never calls.
    assert declared - called == set()


def test_consistency_tokens_keep_the_newest_position_of_each_context() -> None:
    token = Consistency()
    assert token.header() == ""
    token.merge("catalog:5,acl:0,ingest:3")
    token.merge("catalog:4,datasets:9")
    token.merge(None)
    token.merge("garbage,:x,catalog:")
    assert token.header() == "catalog:5,datasets:9,ingest:3"


def test_retries_back_off_and_follow_retry_after() -> None:
    policy = Retries(attempts=5, first_delay_s=0.2, max_delay_s=1.0)
    assert 0.1 <= policy.delay(0) <= 0.2
    assert 0.5 <= policy.delay(10) <= 1.0
    asked = httpx.Response(503, headers={"Retry-After": "2"})
    assert policy.delay(0, asked) == 2.0


def test_errors_carry_the_api_code_message_and_details() -> None:
    request = httpx.Request("GET", "http://files/v1/folders/x")
    body = {"error": {"code": "name_taken", "message": "taken", "details": {"name": "a"}}}
    found = errors.error_from(httpx.Response(409, json=body, request=request))
    assert isinstance(found, errors.Conflict)
    assert (found.code, found.message, found.details, found.status) == (
        "name_taken",
        "taken",
        {"name": "a"},
        409,
    )
    kinds = {
        400: errors.Invalid,
        401: errors.Unauthenticated,
        403: errors.Forbidden,
        404: errors.NotFound,
        413: errors.TooLarge,
        415: errors.UnsupportedContent,
        422: errors.Invalid,
        503: errors.Unavailable,
        500: errors.ServerError,
    }
    for status, kind in kinds.items():
        assert type(errors.error_from(httpx.Response(status, json=body, request=request))) is kind
    bare = errors.error_from(httpx.Response(502, text="<html>bad gateway</html>", request=request))
    assert isinstance(bare, errors.Unavailable) and "HTTP 502" in bare.message


def test_paths_split_on_slashes_and_names_never_escape_a_directory() -> None:
    assert split_path("/scans//day1/a.png") == ["scans", "day1", "a.png"]
    assert [safe_name(n) for n in ("..", ".", "a\\b", "ok.png")] == ["__", "_", "a\\b", "ok.png"]
