"""What the e2e tests share: small real files, folders with unique names, error checks."""

from __future__ import annotations

import contextlib
import io
import re
import uuid
import wave
from typing import Any

import httpx
import psutil
from PIL import Image

from services.thumbnails.drawing import SECRET_ENV
from shared.kit.stack import Stack

CONSISTENCY = "Files-Consistency"

# An ELF executable's header: bytes no accepted kind starts with, and not text.
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56) + bytes(range(256))
PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
    b"trailer << /Root 1 0 R >>\n%%EOF\n"
)


def png(width: int = 8, height: int = 6) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


def wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * int(seconds * rate))
    return out.getvalue()


def text(body: str = "hello, files\n") -> bytes:
    return body.encode()


def unique(prefix: str) -> str:
    """A top-level name no other test (or earlier run on the same stack) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is an error in the contract's shape; returns its `error` object."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    found = body["error"]
    assert set(found) == {"code", "message", "details"}, found
    assert re.fullmatch(r"[a-z][a-z0-9_]*", found["code"]), found
    assert isinstance(found["message"], str) and found["message"], found
    assert isinstance(found["details"], dict), found
    if code is not None:
        assert found["code"] == code, found
    return dict(found)


async def folder(
    api: httpx.AsyncClient, name: str, parent_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, **fields}
    if parent_id is not None:
        body["parent_id"] = parent_id
    answer = await api.post("/v1/folders", json=body)
    assert answer.status_code == 201, answer.text
    assert answer.headers.get(CONSISTENCY), answer.headers
    return dict(answer.json())


async def upload(
    api: httpx.AsyncClient, folder_id: str, *files: tuple[str, bytes]
) -> dict[str, Any]:
    """Upload files in one request; returns {job_id, files} (files in the order sent)."""
    answer = await api.post(
        f"/v1/folders/{folder_id}/files",
        files=[("file", (name, data, "application/octet-stream")) for name, data in files],
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers.get(CONSISTENCY), answer.headers
    return dict(answer.json())


def multipart(*files: tuple[str, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written by hand, so a file name goes on the wire exactly as given."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, data in files:
        body += (
            f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="file"; filename="'
            + name.encode()
            + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def items(
    api: httpx.AsyncClient, folder_id: str, limit: int | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every item of a folder, page by page, checking that pages never overlap."""
    found: list[dict[str, Any]] = []
    cursor = None
    if limit is not None:
        params["limit"] = limit
    for _ in range(1000):
        page_params = {**params, **({"cursor": cursor} if cursor else {})}
        answer = await api.get(f"/v1/folders/{folder_id}/items", params=page_params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert set(page) == {"items", "next_cursor"}, page
        if limit is not None:
            assert len(page["items"]) <= limit
        found += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [i["id"] for i in found]
    assert len(ids) == len(set(ids)), f"an item came twice: {[i['name'] for i in found]}"
    return found


async def pages(
    api: httpx.AsyncClient, path: str, limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Every item of any list route, page by page, with no item twice."""
    found: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = await api.get(path, params=query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= limit
        found += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    keys = [(i.get("type"), i["id"]) for i in found]
    assert len(keys) == len(set(keys)), "an item came twice across pages"
    return found


async def member(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """A new member of the organisation (no grants yet); its `api_key` is shown once."""
    answer = await api.post(
        "/v1/users",
        json={"email": f"{unique(name)}@example.com", "name": name, "org_role": "member"},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def decoding_workers(platform: Stack, service: str, module: str) -> list[dict[str, str]]:
    """The environments of a service's workers that run `module` (shared/kit/isolated.py):
    what a decoder's flaw there could read of its own."""
    found = []
    for proc in psutil.Process(platform.child(service).proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if module in proc.cmdline():
                found.append(proc.environ())
    return found


def holds_no_secret(platform: Stack, environment: dict[str, str]) -> bool:
    """No setting that is a secret, by name, nor the platform's own keys, by value."""
    values = "\n".join(environment.values())
    return not set(environment) & SECRET_ENV and not any(
        secret in values for secret in (platform.service_key, platform.admin_key)
    )
