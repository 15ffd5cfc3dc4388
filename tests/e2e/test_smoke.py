"""The first thing a user does: make a folder, upload, list, search, download."""

from __future__ import annotations

import io

import httpx
from PIL import Image


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def test_upload_then_list_search_download(api: httpx.AsyncClient) -> None:
    folder = (await api.post("/v1/folders", json={"name": "smoke"})).json()
    image = png(64, 48)
    answer = await api.post(
        f"/v1/folders/{folder['id']}/files",
        files=[("file", ("cat.png", image, "application/octet-stream"))],
    )
    assert answer.status_code == 201, answer.text
    uploaded = answer.json()["files"][0]
    assert uploaded["kind"] == "image"
    assert uploaded["media"] == {"width": 64, "height": 48}

    listing = (await api.get(f"/v1/folders/{folder['id']}/items")).json()
    assert [i["name"] for i in listing["items"]] == ["cat.png"]

    hits = (await api.get("/v1/search", params={"q": "cat"})).json()["items"]
    assert any(h["id"] == uploaded["id"] and h["path"][0]["name"] == "smoke" for h in hits)

    content = await api.get(f"/v1/files/{uploaded['id']}/content")
    assert content.status_code == 200
    assert content.content == image
    part = await api.get(f"/v1/files/{uploaded['id']}/content", headers={"Range": "bytes=0-7"})
    assert part.status_code == 206
    assert part.content == image[:8]
