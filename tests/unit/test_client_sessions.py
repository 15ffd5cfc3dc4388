"""A completed upload session answered `202 {job_id, file_id}` (stored, its file not
listed yet: the catalog busy or away when the gateway read it) gives the client its
file once listed, read with the answer's consistency token; it was a `KeyError`."""

from __future__ import annotations

from typing import Any

import files_client
import httpx
import pytest
from files_client.errors import NotFound

FILE = {"id": "3f1c2a9e-0000-4000-8000-000000000001", "name": "a.txt", "kind": "text"}
FILE.update(folder_id="3f1c2a9e-0000-4000-8000-0000000000f0", size=2, sha256="0" * 64)
FILE["mime_type"] = "text/plain"
ACCEPTED = {"job_id": "3f1c2a9e-0000-4000-8000-0000000000a0", "file_id": FILE["id"]}


def _platform(listed_after: int, asked: list[tuple[str, str]]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        asked.append((request.url.path, request.headers.get("Files-Consistency", "")))
        if request.method == "POST":
            return httpx.Response(202, json=ACCEPTED, headers={"Files-Consistency": "catalog:41"})
        reads = sum(1 for path, _ in asked if path.startswith("/v1/files/"))
        if reads <= listed_after:
            return httpx.Response(
                404, json={"error": {"code": "not_found", "message": "no such file"}}
            )
        return httpx.Response(200, json=FILE)

    return httpx.MockTransport(answer)


def _client(transport: httpx.MockTransport) -> files_client.Client:
    return files_client.Client(
        "http://files.test", api_key="k", http=httpx.Client(transport=transport)
    )


def test_a_session_completed_but_not_listed_yet_gives_its_file_once_listed() -> None:
    asked: list[tuple[str, str]] = []
    client = _client(_platform(listed_after=2, asked=asked))
    file = client.complete_upload_session("s1")
    assert file.id == FILE["id"] and file.name == "a.txt"
    reads = [token for path, token in asked if path == f"/v1/files/{FILE['id']}"]
    assert len(reads) == 3 and all(token == "catalog:41" for token in reads), asked


def test_a_file_never_listed_is_not_found_naming_it_and_its_job(monkeypatch: Any) -> None:
    """Not `Unavailable`: the bytes are stored, and a caller retrying on it would upload
    them again."""
    from files_client import transfer

    monkeypatch.setattr(transfer, "LISTED_WITHIN_S", 0.0)
    client = _client(_platform(listed_after=10**6, asked=[]))
    with pytest.raises(NotFound) as refused:
        client.complete_upload_session("s1")
    assert refused.value.details["file_id"] == FILE["id"]
    assert refused.value.details["job_id"] == ACCEPTED["job_id"]
