"""The conventions: error shape, auth, validation, consistency headers, open routes, users."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from tests.e2e.support import (
    CONSISTENCY,
    error,
    folder,
    items,
    multipart,
    png,
    text,
    unique,
    upload,
)

BAD_NAMES = {
    "empty": ("", "empty"),
    "blank": ("   ", "empty"),
    "too long": ("n" * 301, "300"),
    "slash": ("a/b", "/"),
    "control character": ("bell\x07", "control"),
    "nul": ("nul\x00", "control"),
    "dot": (".", "parts of paths"),
    "dot dot": ("..", "parts of paths"),
    # Shown as "invoiceexe.pdf": a right-to-left override turns the end around.
    "bidi override": ("invoice\u202efdp.exe", "U+202E"),
    "bidi isolate": ("a\u2067b", "U+2067"),
    "line separator": ("two\u2028lines", "U+2028"),
    # Shows as "report.pdf", beside the real one.
    "zero width space": ("re\u200bport.pdf", "U+200B"),
}


async def test_keys_are_required(api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        for path in ("/v1/folders", "/v1/users/me", f"/v1/files/{uuid.uuid4()}", "/v1/nowhere"):
            error(await anonymous.get(path), 401, "unauthenticated")
        error(await anonymous.post("/v1/folders", json={"name": "x"}), 401)
        for header in ("Bearer files_not_a_real_key", "Bearer", "Basic abc", "files_key"):
            error(await anonymous.get("/v1/folders", headers={"Authorization": header}), 401)
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/readyz")).json() == {"status": "ready"}
        document = await anonymous.get("/openapi.json")
        assert document.status_code == 200
        assert "/v1/folders" in document.json()["paths"]
        assert "/v1/folders/{folder_id}/items" in document.json()["paths"]


async def test_unknown_ids_are_404(api: httpx.AsyncClient) -> None:
    ghost = str(uuid.uuid4())
    for method, path in (
        ("GET", f"/v1/folders/{ghost}"),
        ("GET", f"/v1/folders/{ghost}/items"),
        ("GET", f"/v1/folders/{ghost}/summary"),
        ("PATCH", f"/v1/folders/{ghost}"),
        ("DELETE", f"/v1/folders/{ghost}"),
        ("GET", f"/v1/files/{ghost}"),
        ("GET", f"/v1/files/{ghost}/content"),
        ("PATCH", f"/v1/files/{ghost}"),
        ("DELETE", f"/v1/files/{ghost}"),
        ("GET", f"/v1/jobs/{ghost}"),
    ):
        body = {"name": "x"} if method == "PATCH" else None
        problem = error(await api.request(method, path, json=body), 404, "not_found")
        assert ghost in problem["message"], (method, path)
    error(await api.get("/v1/folders", params={"parent_id": ghost}), 404)
    error(await api.get("/v1/search", params={"q": "a", "folder_id": ghost}), 404)
    error(await api.post("/v1/folders", json={"name": "orphan", "parent_id": ghost}), 404)
    upload_to_nowhere = await api.post(
        f"/v1/folders/{ghost}/files", files=[("file", ("a.txt", b"abc", "text/plain"))]
    )
    error(upload_to_nowhere, 404)


async def test_unknown_routes_are_404(api: httpx.AsyncClient) -> None:
    for path in ("/v1/nowhere", "/v1/folders/x/y/z/w", "/nowhere", "/v1/"):
        error(await api.get(path), 404)


async def test_a_trailing_slash_is_served_not_redirected(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("slash"))
    for path in ("/v1/folders/", f"/v1/folders/{top['id']}/", f"/v1/folders/{top['id']}/items/"):
        answer = await api.get(path)
        assert answer.status_code == 200, (path, answer.status_code, answer.headers)
    assert (await api.get(f"/v1/folders/{top['id']}/")).json()["id"] == top["id"]


async def test_malformed_ids_are_404_as_unknown_ones(api: httpx.AsyncClient) -> None:
    """An id in a path that is not a UUID is answered exactly as an unknown id (and is
    never sent on); ids in bodies and queries are validated (422)."""
    ghost = str(uuid.uuid4())
    unknown = error(await api.get(f"/v1/folders/{ghost}"), 404, "not_found")
    malformed = error(await api.get("/v1/folders/not-a-uuid"), 404, "not_found")
    assert malformed == {**unknown, "message": unknown["message"].replace(ghost, "not-a-uuid")}
    for method, path in (
        ("GET", "/v1/folders/not-a-uuid"),
        ("GET", "/v1/folders/123/items"),
        ("GET", "/v1/folders/123/summary"),
        ("PATCH", "/v1/folders/123"),
        ("DELETE", "/v1/folders/123"),
        ("GET", "/v1/files/xyz"),
        ("GET", "/v1/files/xyz/content"),
        ("PATCH", "/v1/files/xyz"),
        ("DELETE", "/v1/files/xyz"),
        ("GET", "/v1/jobs/xyz"),
        ("POST", "/v1/folders/xyz/files"),
    ):
        body = {"name": "x"} if method == "PATCH" else None
        error(await api.request(method, path, json=body), 404, "not_found")
    error(await api.get("/v1/folders", params={"parent_id": "nope"}), 422)
    error(await api.get("/v1/search", params={"q": "a", "folder_id": "nope"}), 422)
    error(await api.post("/v1/move", json={"file_ids": ["x"], "target_folder_id": "y"}), 422)
    error(await api.post("/v1/delete", json={"folder_ids": [5]}), 422)


async def test_bodies_are_validated(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("bodies"))
    malformed = await api.post(
        "/v1/folders", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    error(malformed, 400, "malformed_json")
    patch = await api.patch(
        f"/v1/folders/{top['id']}", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    error(patch, 400)
    wrong_type = error(await api.post("/v1/folders", json={"name": 5}), 422)
    assert "name" in wrong_type["message"]
    assert "name" in {f["field"] for f in wrong_type["details"]["fields"]}
    missing = error(await api.post("/v1/folders", json={}), 422)
    assert "name" in missing["message"]
    not_object = error(await api.post("/v1/folders", json={"name": "m", "metadata": "text"}), 422)
    assert "metadata" in not_object["message"]
    error(await api.post("/v1/folders", json=["a list"]), 422)
    error(await api.post("/v1/move", json={"file_ids": []}), 422)
    error(await api.post("/v1/users", json={"email": 7}), 422)
    error(await api.post("/v1/folders", json={"name": "x", "surprise": 1}), 422)
    # A UTF-8 byte order mark before the JSON is let be (RFC 8259 8.1).
    marked = b'\xef\xbb\xbf{"name": "bom", "parent_id": "%s"}' % top["id"].encode()
    made = await api.post(
        "/v1/folders", content=marked, headers={"Content-Type": "application/json"}
    )
    assert made.status_code == 201, made.text


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'"\\ud800"', "surrogate"),  # an escape of half a character
        (b'"caf\xe9"', "UTF-8"),  # Latin-1, not UTF-8
        (b"1" * 5000, "double"),  # no number type holds it
    ],
    ids=["lone-surrogate", "not-utf8", "huge-number"],
)
async def test_text_that_is_no_unicode_is_malformed_json_in_every_service(
    api: httpx.AsyncClient, raw: bytes, problem: str
) -> None:
    """Each of these once got past the JSON parser and failed where it was stored (a
    500) or answered a vague 400; each service now names the problem."""
    top = await folder(api, unique("unicode"))
    json = {"Content-Type": "application/json"}
    for method, path, before, after in [
        ("POST", "/v1/folders", b'{"name": ', b"}"),  # catalog
        ("PATCH", f"/v1/folders/{top['id']}", b'{"name": ', b"}"),
        ("POST", "/v1/users", b'{"email": "u@example.com", "name": ', b"}"),  # acl
        ("POST", f"/v1/folders/{top['id']}/uploads", b'{"size": 10, "name": ', b"}"),  # ingest
        ("POST", "/v1/datasets", b'{"title": ', b"}"),  # datasets
    ]:
        answer = await api.request(method, path, content=before + raw + after, headers=json)
        found = error(answer, 400, "malformed_json")
        assert problem in found["message"], (path, found)
    assert await items(api, top["id"]) == []


@pytest.mark.parametrize("case", list(BAD_NAMES))
async def test_bad_names_are_refused_everywhere(api: httpx.AsyncClient, case: str) -> None:
    name, problem = BAD_NAMES[case]
    top = await folder(api, unique("names"))
    file = (await upload(api, top["id"], ("good.txt", text())))["files"][0]

    made = error(await api.post("/v1/folders", json={"name": name, "parent_id": top["id"]}), 422)
    assert problem in made["message"]
    renamed = error(await api.patch(f"/v1/folders/{top['id']}", json={"name": name}), 422)
    assert problem in renamed["message"]
    file_renamed = error(await api.patch(f"/v1/files/{file['id']}", json={"name": name}), 422)
    assert problem in file_renamed["message"]
    body, headers = multipart(("fine.txt", text()), (name, text()))
    uploaded = error(
        await api.post(f"/v1/folders/{top['id']}/files", content=body, headers=headers), 422
    )
    assert problem in uploaded["message"]

    assert (await api.get(f"/v1/folders/{top['id']}")).json()["name"] == top["name"]
    assert (await api.get(f"/v1/files/{file['id']}")).json()["name"] == "good.txt"
    listing = (await api.get(f"/v1/folders/{top['id']}/items")).json()["items"]
    assert [i["name"] for i in listing] == ["good.txt"]


async def test_longest_names_and_odd_characters_are_fine(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("odd"))
    longest = await folder(api, "n" * 300, top["id"])
    assert longest["name"] == "n" * 300
    odd = "Ünïcødé 🐱 👨\u200d👩\u200d👧 'quotes' \"double\" <tag> & % _ \\ back"
    # What text needs of the invisible characters: a flag's tags, an emoji's variation
    # selector, Persian's zero width non-joiner.
    wales = "\U0001f3f4\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f"
    odd += f" {wales} \u2764\ufe0f \u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    # Mongolian's vowel separator, a keycap, Devanagari's half form (a joiner after a virama).
    odd += " \u1828\u1823\u182e\u180e\u1820 1\ufe0f\u20e3 \u0915\u094d\u200d\u0937"
    made = await folder(api, odd, top["id"])
    assert (await api.get(f"/v1/folders/{made['id']}")).json()["name"] == odd
    body, headers = multipart(("ümlaut 🐱.txt", text("x")))
    answer = await api.post(f"/v1/folders/{top['id']}/files", content=body, headers=headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["files"][0]["name"] == "ümlaut 🐱.txt"


async def test_invisible_characters_are_refused_in_every_name(api: httpx.AsyncClient) -> None:
    """Datasets, integrations and image groups are named by the same rule as folders
    and files (the 422 names the character)."""
    top = await folder(api, unique("invisible"))
    for answer, code_point in (
        (await api.post("/v1/datasets", json={"name": "train\u2060set"}), "U+2060"),
        (
            await api.post(
                "/v1/integrations",
                json={
                    "name": "bucket\u00ad",
                    "provider": "s3",
                    "bucket": "b",
                    "access_key": "a",
                    "secret_key": "s",
                },
            ),
            "U+00AD",
        ),
        (
            await api.post(
                f"/v1/folders/{top['id']}/image-groups",
                files=[
                    ("kind", (None, "image_group")),
                    ("name", (None, "pets\u180e")),
                    ("file", ("a.png", png(), "image/png")),
                ],
            ),
            "U+180E",
        ),
        (await api.post("/v1/folders", json={"name": "\ufeffbom"}), "U+FEFF"),
        (await api.post("/v1/folders", json={"name": "flag\U000e0061"}), "U+E0061"),
        # A joiner or variation selector where no script needs one shows as nothing.
        (await api.post("/v1/folders", json={"name": "re\u200cport"}), "U+200C"),
        (await api.post("/v1/folders", json={"name": "re\ufe0fport"}), "U+FE0F"),
    ):
        refused = error(answer, 422)
        assert code_point in refused["message"], answer.text
    assert await items(api, top["id"]) == []


async def test_metadata_is_limited_to_64_kib(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("metadata"))
    file = (await upload(api, top["id"], ("m.txt", text())))["files"][0]
    big = {"blob": "x" * (64 * 1024)}
    fits = {"blob": "x" * (60 * 1024)}

    problem = error(await api.post("/v1/folders", json={"name": "big", "metadata": big}), 422)
    assert "metadata" in problem["message"]
    error(await api.patch(f"/v1/folders/{top['id']}", json={"metadata": big}), 422)
    error(await api.patch(f"/v1/files/{file['id']}", json={"metadata": big}), 422)
    assert (await api.get(f"/v1/folders/{top['id']}")).json()["metadata"] == {}
    assert (await api.get(f"/v1/files/{file['id']}")).json()["metadata"] == {}

    kept = await api.patch(f"/v1/files/{file['id']}", json={"metadata": fits})
    assert kept.status_code == 200, kept.text
    assert (await api.get(f"/v1/files/{file['id']}")).json()["metadata"] == fits


async def test_awkward_input_is_refused_not_a_500(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("awkward"))
    file = (await upload(api, top["id"], ("a.txt", text())))["files"][0]
    for body in (
        {"name": "nul in description", "description": "a\x00b"},
        {"name": "nul in metadata", "metadata": {"k": "a\x00b"}},
        {"name": "nul in a key", "metadata": {"a\x00": 1}},
        {"name": "huge number", "metadata": {"n": 2**80}},
    ):
        error(await api.post("/v1/folders", json=body), 422)
    error(await api.patch(f"/v1/files/{file['id']}", json={"metadata": {"n": -(2**70)}}), 422)
    error(await api.patch(f"/v1/folders/{top['id']}", json={"description": "\x00"}), 422)

    bad_cursors = [
        "not base64 !!",
        base64.urlsafe_b64encode(b"[1]").decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b"[0, 5, 6]").decode(),
        base64.urlsafe_b64encode(b'[0, "a\\u0000", "b"]').decode(),
        base64.urlsafe_b64encode(b'["x", "y", "z"]').decode(),
    ]
    for cursor in bad_cursors:
        for path, params in (
            (f"/v1/folders/{top['id']}/items", {}),
            ("/v1/folders", {}),
            ("/v1/search", {"q": "a"}),
        ):
            error(await api.get(path, params={**params, "cursor": cursor}), 422)
    for params in (
        {"q": "a\x00"},
        {"q": ""},
        {"q": "a", "kind": "te\x00xt"},
        {"q": "a", "limit": 0},
    ):
        error(await api.get("/v1/search", params=params), 422)
    error(await api.get(f"/v1/folders/{top['id']}/items", params={"kind": "\x00"}), 422)
    error(await api.get("/v1/folders", params={"limit": 1001}), 422)
    error(await api.get(f"/v1/folders/{top['id']}", headers={CONSISTENCY: "nonsense"}), 400)
    error(await api.post(f"/v1/folders/{top['id']}/files", content=b"x"), 415)
    empty = await api.post(
        f"/v1/folders/{top['id']}/files", data={"other": "field"}, files={"x": ("a", b"b")}
    )
    error(empty, 422)


async def test_every_write_answers_with_a_consistency_header(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("tokens"))
    other = await folder(api, unique("tokens-other"))
    file = (await upload(api, top["id"], ("a.png", png())))["files"][0]
    writes = [
        await api.patch(f"/v1/folders/{top['id']}", json={"description": "d"}),
        await api.patch(f"/v1/folders/{top['id']}", json={}),
        await api.patch(f"/v1/files/{file['id']}", json={"name": "b.png"}),
        await api.patch(f"/v1/files/{file['id']}", json={"name": "b.png"}),
        await api.post(
            "/v1/move", json={"file_ids": [file["id"]], "target_folder_id": other["id"]}
        ),
        await api.post(
            "/v1/move",
            json={"file_ids": [file["id"]], "target_folder_id": top["id"], "dry_run": True},
        ),
        await api.post("/v1/delete", json={"file_ids": [file["id"]], "dry_run": True}),
        await api.post("/v1/delete", json={"file_ids": [file["id"]]}),
        await api.delete(f"/v1/folders/{other['id']}"),
    ]
    for answer in writes:
        assert answer.status_code in (200, 204), answer.text
        token = answer.headers.get(CONSISTENCY)
        assert token, (answer.request.method, answer.request.url)
        # Sending it back is accepted, and the read sees the write.
        assert (
            await api.get(f"/v1/folders/{top['id']}", headers={CONSISTENCY: token})
        ).status_code == 200


async def test_bootstrap_admin_creates_a_member_whose_key_works(api: httpx.AsyncClient) -> None:
    me = await api.get("/v1/users/me")
    assert me.status_code == 200, me.text
    admin = me.json()
    assert admin["org_role"] == "admin"
    assert admin["email"] == "admin@files.local"
    uuid.UUID(admin["id"])

    email = f"member-{uuid.uuid4().hex[:8]}@example.com"
    created = await api.post(
        "/v1/users", json={"email": email, "name": "A Member", "org_role": "member"}
    )
    assert created.status_code == 201, created.text
    assert created.headers.get(CONSISTENCY)
    member = created.json()
    assert member["email"] == email and member["org_role"] == "member"
    assert member["api_key"]
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers={"Authorization": f"Bearer {member['api_key']}"}
    ) as as_member:
        found = await as_member.get("/v1/users/me")
        assert found.status_code == 200, found.text
        assert found.json()["id"] == member["id"]
        assert "api_key" not in found.json()
        error(await as_member.post("/v1/users", json={"email": "x@example.com", "name": "X"}), 403)
    error(await api.post("/v1/users", json={"email": email, "name": "Again"}), 409)
    error(await api.post("/v1/users", json={"email": "not an email", "name": "N"}), 422)
