"""Files: uploads sniffed by content, details, edits, jobs, and content by range."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import urllib.parse
import uuid
from typing import Any

import httpx

from services.ingest.uploads.domain import StoredFile, record_upload
from shared.contracts.catalog import Media
from shared.contracts.ingest import FilesStored
from shared.kit.stack import Stack
from tests.conftest import eventually
from tests.e2e.support import (
    CONSISTENCY,
    ELF,
    PDF,
    error,
    folder,
    items,
    multipart,
    png,
    text,
    unique,
    upload,
    wav,
)


async def test_upload_sniffs_kinds_from_bytes_and_reads_its_own_writes(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("uploads"))
    image, notes, sound = png(32, 16), text("plain words\nsecond line\n"), wav(0.5)
    answer = await upload(
        api,
        top["id"],
        ("x.txt", image),
        ("notes.bin", notes),
        ("report.dat", PDF),
        ("sound.xyz", sound),
    )
    assert set(answer) == {"job_id", "files"}
    files = answer["files"]
    # Read-your-writes: the folder lists them as soon as the upload has answered.
    listed = await items(api, top["id"])
    assert sorted(i["id"] for i in listed) == sorted(f["id"] for f in files)

    assert [(f["name"], f["kind"], f["mime_type"]) for f in files] == [
        ("x.txt", "image", "image/png"),
        ("notes.bin", "text", "text/plain"),
        ("report.dat", "pdf", "application/pdf"),
        ("sound.xyz", "audio", "audio/wav"),
    ]
    assert files[0]["media"] == {"width": 32, "height": 16}
    assert abs(files[3]["media"]["duration_s"] - 0.5) < 0.01
    for f, data in zip(files, (image, notes, PDF, sound), strict=True):
        assert f["size"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()
        assert f["folder_id"] == top["id"]
        details = (await api.get(f"/v1/files/{f['id']}")).json()
        # The upload answers with the catalog's own view of each file: the same as its details
        # (which alone add the caller's role and the renditions made).
        assert f == {k: v for k, v in details.items() if k not in ("my_role", "renditions")}
        assert details["renditions"] == []
        assert details["source"] == {"type": "upload"}
        assert details["metadata"] == {}
        assert details["datasets"] == []
        assert details["created_by"] == (await api.get("/v1/users/me")).json()["id"]

    job = await api.get(f"/v1/jobs/{answer['job_id']}")
    assert job.status_code == 200, job.text
    found = job.json()
    assert found["id"] == answer["job_id"]
    assert found["status"] == "done"
    assert found["progress"] == {"done": 4, "total": 4}
    # In the order uploaded (the job's one page of stored files keeps it).
    assert [f["id"] for f in found["files"]] == [f["id"] for f in files]
    assert found["errors"] == []


async def test_unknown_content_refuses_the_whole_upload(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("refused"))
    refused = await api.post(
        f"/v1/folders/{top['id']}/files",
        files=[
            ("file", ("fine.txt", text("fine"), "text/plain")),
            ("file", ("program.bin", ELF, "application/octet-stream")),
            ("file", ("after.png", png(), "image/png")),
        ],
    )
    problem = error(refused, 415)
    assert "program.bin" in problem["message"]
    assert problem["details"]["name"] == "program.bin"

    random_bytes = bytes(range(256)) * 4 + os.urandom(512)
    error(
        await api.post(
            f"/v1/folders/{top['id']}/files",
            files=[("file", ("noise", random_bytes, "application/octet-stream"))],
        ),
        415,
    )
    # A later upload is visible once it answers; had the refused ones recorded anything
    # (they were sent earlier), it would be visible too.
    later = await upload(api, top["id"], ("later.txt", text("later")))
    listed = await items(api, top["id"])
    assert [i["name"] for i in listed] == ["later.txt"]
    assert [i["id"] for i in listed] == [later["files"][0]["id"]]
    hits = (await api.get("/v1/search", params={"q": "fine.txt", "folder_id": top["id"]})).json()
    assert hits["items"] == []


async def test_rename_change_metadata_and_delete_a_file(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("edit"))
    file = (await upload(api, top["id"], ("draft.txt", text("draft"))))["files"][0]

    renamed = await api.patch(f"/v1/files/{file['id']}", json={"name": "final.txt"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.headers.get(CONSISTENCY)
    assert renamed.json()["name"] == "final.txt"
    metadata = {"label": "cat", "boxes": [[1, 2, 3, 4]], "ok": True}
    changed = await api.patch(f"/v1/files/{file['id']}", json={"metadata": metadata})
    assert changed.status_code == 200, changed.text
    got = (await api.get(f"/v1/files/{file['id']}")).json()
    assert (got["name"], got["metadata"]) == ("final.txt", metadata)
    assert got["kind"] == "text" and got["sha256"] == file["sha256"]
    assert [i["name"] for i in await items(api, top["id"])] == ["final.txt"]
    content = await api.get(f"/v1/files/{file['id']}/content")
    assert "final.txt" in content.headers["content-disposition"]

    deleted = await api.delete(f"/v1/files/{file['id']}")
    assert deleted.status_code == 204, deleted.text
    assert deleted.headers.get(CONSISTENCY)
    error(await api.get(f"/v1/files/{file['id']}"), 404, "not_found")
    error(await api.get(f"/v1/files/{file['id']}/content"), 404)
    error(await api.patch(f"/v1/files/{file['id']}", json={"name": "zombie.txt"}), 404)
    error(await api.delete(f"/v1/files/{file['id']}"), 404)
    assert await items(api, top["id"]) == []


async def test_content_by_range(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ranges"))
    body = "".join(f"{n:02}-abcdef\n" for n in range(10)).encode()
    assert len(body) == 100
    name = "Notes für dich.txt"
    file = (await upload(api, top["id"], (name, body)))["files"][0]
    url = f"/v1/files/{file['id']}/content"

    whole = await api.get(url)
    assert whole.status_code == 200
    assert whole.content == body
    assert whole.headers["content-type"].startswith("text/plain")
    disposition = whole.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert urllib.parse.quote(name) in disposition

    first = await api.get(url, headers={"Range": "bytes=0-9"})
    assert (first.status_code, first.content) == (206, body[:10])
    assert first.headers["content-range"] == "bytes 0-9/100"
    suffix = await api.get(url, headers={"Range": "bytes=-10"})
    assert (suffix.status_code, suffix.content) == (206, body[-10:])
    assert suffix.headers["content-range"] == "bytes 90-99/100"
    open_ended = await api.get(url, headers={"Range": "bytes=5-"})
    assert (open_ended.status_code, open_ended.content) == (206, body[5:])
    past_end = await api.get(url, headers={"Range": "bytes=95-1000"})
    assert (past_end.status_code, past_end.content) == (206, body[95:])

    backwards = await api.get(url, headers={"Range": "bytes=5-2"})  # invalid, so ignored
    assert (backwards.status_code, backwards.content) == (200, body)

    unsatisfiable = await api.get(url, headers={"Range": "bytes=100-"})
    error(unsatisfiable, 416)
    assert unsatisfiable.headers.get("content-range") == "bytes */100"
    far = await api.get(url, headers={"Range": f"bytes={'9' * 30}-"})
    assert error(far, 416)["message"] == "range starts past the end"
    # Malformed (more digits than any offset has), so ignored: the whole file.
    endless = await api.get(url, headers={"Range": f"bytes={'9' * 5000}-"})
    assert (endless.status_code, endless.content) == (200, body)

    for method in ("POST", "PATCH", "DELETE"):
        refused = await api.request(method, url)
        assert refused.status_code in (404, 405), refused.status_code
        assert refused.content != body
    assert (await api.get(url)).content == body

    image = png(4, 4)
    picture = (await upload(api, top["id"], ("picture.txt", image)))["files"][0]
    served = await api.get(f"/v1/files/{picture['id']}/content")
    assert served.headers["content-type"] == "image/png"
    assert served.content == image


async def test_an_upload_of_several_pages_is_registered_whole_and_in_order(
    api: httpx.AsyncClient,
) -> None:
    """An upload's files travel to the catalog in pages of bounded size (ingest's
    FilesStored): 500 files with long names make three pages, and every file is listed
    once the upload's token is met, its job counting all, in their order."""
    top = await folder(api, unique("pages"))
    long = "n" * 230
    key = f"sha256/00/00/{'0' * 64}"  # as long as a real content key
    sent = [(f"{long}_{i:04d}.txt", text(f"file {i}\n")) for i in range(500)]
    stored = [
        StoredFile(uuid.uuid4(), name, "text", "text/plain", len(data), "0" * 64, key, Media())
        for name, data in sent
    ]
    made = record_upload(uuid.uuid4(), uuid.uuid4(), stored)
    assert sum(isinstance(c.event, FilesStored) for c in made) == 3  # what this test is of
    answer = await api.post(
        f"/v1/folders/{top['id']}/files",
        files=[("file", (name, data, "application/octet-stream")) for name, data in sent],
    )
    assert answer.status_code == 201, answer.text
    token = {CONSISTENCY: answer.headers[CONSISTENCY]}
    files = answer.json()["files"]
    assert [f["name"] for f in files] == [name for name, _ in sent]
    listed: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):  # 3 pages of 200
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = await api.get(f"/v1/folders/{top['id']}/items", params=params, headers=token)
        assert page.status_code == 200, page.text
        listed += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert sorted(i["id"] for i in listed) == sorted(f["id"] for f in files)
    job = (await api.get(f"/v1/jobs/{answer.json()['job_id']}", headers=token)).json()
    assert job["status"] == "done"
    assert job["progress"] == {"done": 500, "total": 500}
    assert [f["id"] for f in job["files"]] == [f["id"] for f in files]


def random_text(size: int) -> bytes:
    """Text (so that it is stored as text) that no two runs repeat, `size` bytes long."""
    lines = base64.encodebytes(os.urandom(size)).replace(b"\n", b"\r\n")
    return lines[:size]


async def test_a_streamed_upload_arrives_byte_exact_with_or_without_its_length(
    api: httpx.AsyncClient,
) -> None:
    """The gateway streams an upload on to ingest in pieces of its own size: whatever
    pieces the client sends it in, each file arrives whole and in order, sent with its
    Content-Length or in HTTP chunks (then it goes on in chunks)."""
    top = await folder(api, unique("streamed"))
    # Sizes around the gateway's piece (512 KiB) and ingest's in-memory part bound.
    sent = [
        ("a.txt", random_text(3 * 1024 * 1024 + 1)),
        ("b.txt", random_text(5)),
        ("c.txt", random_text(512 * 1024 - 1)),
    ]
    body, headers = multipart(*sent)

    async def in_odd_pieces() -> Any:
        for start in range(0, len(body), 7_001):
            yield body[start : start + 7_001]

    for length in ({"Content-Length": str(len(body))}, {}):
        answer = await api.post(
            f"/v1/folders/{top['id']}/files", content=in_odd_pieces(), headers=headers | length
        )
        assert answer.status_code == 201, answer.text
        files = answer.json()["files"]
        assert [(f["name"], f["size"]) for f in files] == [(n, len(d)) for n, d in sent]
        for f, (_, data) in zip(files, sent, strict=True):
            assert f["sha256"] == hashlib.sha256(data).hexdigest()
            content = await api.get(f"/v1/files/{f['id']}/content")
            assert content.status_code == 200
            assert content.content == data


async def test_a_client_gone_mid_upload_stores_nothing_and_breaks_nothing(
    platform: Stack, api: httpx.AsyncClient
) -> None:
    """A client that declares a long body, sends part of it and hangs up: the gateway
    drops the half-sent call to ingest; nothing is stored, and the next upload goes."""
    top = await folder(api, unique("gone"))
    body, headers = multipart(("whole.txt", random_text(2 * 1024 * 1024)))
    url = httpx.URL(str(api.base_url))
    _, writer = await asyncio.open_connection(url.host, url.port)
    head = (
        f"POST /v1/folders/{top['id']}/files HTTP/1.1\r\n"
        f"Host: {url.host}\r\n"
        f"Authorization: {api.headers['Authorization']}\r\n"
        f"Content-Type: {headers['Content-Type']}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    path = f"/v1/folders/{top['id']}/files"
    gateway_log = platform.data_dir / "logs" / "gateway.log"

    def logged(what: str) -> bool:
        return any(what in line and path in line for line in gateway_log.read_text().splitlines())

    async def seen_gone() -> bool:
        return logged("http.client_gone")

    await eventually(seen_gone, what="the gateway noting that the client left")
    assert not logged("unexpected_error")

    kept = await upload(api, top["id"], ("after.txt", text("after\n")))
    listed = await items(api, top["id"])
    assert [i["name"] for i in listed] == ["after.txt"]
    assert [f["name"] for f in kept["files"]] == ["after.txt"]


async def test_every_file_name_refused_is_named_in_one_answer(api: httpx.AsyncClient) -> None:
    """Before, the first name refused was the answer, and a client sent its batch again
    once per bad name."""
    top = await folder(api, unique("names-at-once"))
    path = f"/v1/folders/{top['id']}/files"
    sent = [
        ("ok.txt", b"a\n"),
        ("x\u202e1.txt", b"b\n"),
        ("y\u202e2.txt", b"c\n"),
        ("z.txt", b"d\n"),
    ]
    refused = error(
        await api.post(path, files=[("file", (n, b, "text/plain")) for n, b in sent]),
        422,
        "invalid_name",
    )
    details = refused["details"]
    # The first's fields as before, for a client that reads only those.
    assert (details["name"], details["part"]) == ("x\u202e1.txt", 2)
    assert [(r["part"], r["name"], r["code"], r["status"]) for r in details["refused"]] == [
        (2, "x\u202e1.txt", "invalid_name", 422),
        (3, "y\u202e2.txt", "invalid_name", 422),
    ]
    assert (
        "more_refused" not in details and "(and 1 more file: details.refused)" in refused["message"]
    )
    assert await items(api, top["id"]) == []
    # Past 1,000, the list stops and says there are more.
    many = [("file", (f"n\u202e{n}.txt", b"x", "text/plain")) for n in range(1002)]
    listed = error(await api.post(path, files=many), 422, "invalid_name")["details"]
    assert len(listed["refused"]) == 1000 and listed["more_refused"] is True


async def test_a_name_with_quotes_is_stored_as_it_was_named(api: httpx.AsyncClient) -> None:
    # httpx, like a browser's form, sends the quote in a filename as %22.
    top = await folder(api, unique("quotes"))
    answer = await api.post(
        f"/v1/folders/{top['id']}/files",
        files=[("file", ('say "hi".txt', b"hello\n", "text/plain"))],
    )
    assert answer.status_code == 201, answer.text
    [stored] = answer.json()["files"]
    assert stored["name"] == 'say "hi".txt'
    listed = (await api.get(f"/v1/folders/{top['id']}/items")).json()["items"]
    assert [item["name"] for item in listed] == ['say "hi".txt']
    # A CR or LF so sent is the control character it stands for: refused by name.
    refused = await api.post(
        f"/v1/folders/{top['id']}/files", files=[("file", ("a\nb.txt", b"x\n", "text/plain"))]
    )
    assert error(refused, 422, "invalid_name")["details"]["name"] == "a\nb.txt"
