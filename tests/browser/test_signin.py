"""Signing in: an API key exchanged for an HttpOnly, SameSite=Strict session cookie;
the key never stays in the browser; signing out ends the session on the server;
cookie-authenticated writes need the app's CSRF header and our own origin."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Request, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from shared.kit.stack import Stack
from tests.browser.conftest import items, make_folder, sign_in, unique, upload_dialog, uploading
from tests.conftest import ADMIN_KEY
from tests.e2e.support import png


def an_editor_of(api: httpx.Client, folder: dict) -> dict:
    """A new member, made an Editor of `folder`."""
    user = api.post(
        "/v1/users",
        json={"email": f"{unique('web')}@example.com", "name": "Web", "org_role": "member"},
    ).json()
    added = api.post(
        f"/v1/folders/{folder['id']}/collaborators",
        json={"emails": [user["email"]], "role": "editor"},
    )
    assert added.status_code == 200, added.text
    return user


def _cookie(page: Page) -> dict:
    [cookie] = [c for c in page.context.cookies() if c["name"] == "files_session"]
    return dict(cookie)


def test_sign_in_with_an_api_key_and_sign_out(page: Page, platform: Stack) -> None:
    page.goto("/")
    page.get_by_label("API key").fill("files_not_a_real_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")
    sign_in(page)
    expect(page.get_by_role("combobox", name="Search files")).to_be_visible()

    cookie = _cookie(page)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain HTTP here; Secure over TLS
    stored = page.evaluate(
        "JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage})"
    )
    assert ADMIN_KEY not in stored
    assert ADMIN_KEY not in page.evaluate("document.cookie")

    with httpx.Client(base_url=platform.gateway_url) as client:
        me = client.get("/v1/users/me", cookies={"files_session": cookie["value"]})
        assert me.status_code == 200 and me.json()["email"] == "admin@files.local"

        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("API key")).to_be_visible()
        # Ended on the server: the old cookie no longer signs anyone in.
        again = client.get("/v1/users/me", cookies={"files_session": cookie["value"]})
        assert again.status_code == 401
    # A reload stays signed out.
    page.reload()
    expect(page.get_by_label("API key")).to_be_visible()


def test_cookie_writes_need_the_csrf_header_and_our_origin(platform: Stack) -> None:
    with httpx.Client(base_url=platform.gateway_url) as client:
        started = client.post(
            "/v1/sessions", json={"api_key": ADMIN_KEY}, headers={"X-Files-CSRF": "1"}
        )
        assert started.status_code == 201, started.text
        assert "token" not in started.json() and started.json()["user"]["org_role"] == "admin"
        token = started.cookies["files_session"]
        jar = {"files_session": token}
        body = {"name": unique("csrf")}
        refused = client.post("/v1/folders", json=body, cookies=jar)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_check_failed"
        foreign = client.post(
            "/v1/folders",
            json=body,
            cookies=jar,
            headers={"X-Files-CSRF": "1", "Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        cross_site = client.post(
            "/v1/folders",
            json=body,
            cookies=jar,
            headers={"X-Files-CSRF": "1", "Sec-Fetch-Site": "cross-site"},
        )
        assert cross_site.status_code == 403
        own = client.post(
            "/v1/folders",
            json=body,
            cookies=jar,
            headers={"X-Files-CSRF": "1", "Origin": platform.gateway_url},
        )
        assert own.status_code == 201, own.text
        # Reads need no header; a key in Authorization needs no CSRF header either.
        assert client.get(f"/v1/folders/{own.json()['id']}", cookies=jar).status_code == 200
        # Behind a TLS-terminating proxy the cookie is Secure, and named `__Host-` so
        # that no other host (a sibling subdomain) can set one beside it.
        tls = {"X-Files-CSRF": "1", "X-Forwarded-Proto": "https"}
        secure = client.post("/v1/sessions", json={"api_key": ADMIN_KEY}, headers=tls)
        assert secure.headers["set-cookie"].startswith("__Host-files_session=")
        assert "secure" in secure.headers["set-cookie"].lower()
        assert "samesite=strict" in secure.headers["set-cookie"].lower()
        hosted = secure.headers["set-cookie"].split(";")[0]
        over_tls = {"X-Forwarded-Proto": "https"}
        me = client.get("/v1/users/me", headers={"Cookie": hosted, **over_tls})
        assert me.status_code == 200, me.text
        # A cookie without the prefix, as another host could plant, names nobody there.
        planted = {"Cookie": f"files_session={jar['files_session']}", **over_tls}
        assert client.get("/v1/users/me", headers=planted).status_code == 401
        # No header, no session: a page elsewhere cannot sign a browser in either.
        assert client.post("/v1/sessions", json={"api_key": ADMIN_KEY}).status_code == 403


def test_revoking_the_key_ends_its_sessions_and_the_audit_keeps_no_secret(
    api: httpx.Client, platform: Stack
) -> None:
    user = api.post(
        "/v1/users",
        json={"email": f"{unique('web')}@example.com", "name": "Web", "org_role": "member"},
    ).json()
    issued = api.post(f"/v1/users/{user['id']}/keys").json()
    with httpx.Client(base_url=platform.gateway_url) as client:
        started = client.post(
            "/v1/sessions", json={"api_key": issued["api_key"]}, headers={"X-Files-CSRF": "1"}
        )
        assert started.status_code == 201
        jar = {"files_session": started.cookies["files_session"]}
        assert client.get("/v1/users/me", cookies=jar).json()["id"] == user["id"]
        assert api.delete(f"/v1/keys/{issued['id']}").status_code == 204
        assert client.get("/v1/users/me", cookies=jar).status_code == 401
    audit = api.get("/v1/audit", params={"subject_id": user["id"]}).json()["items"]
    kinds = [e["type"] for e in audit]
    assert "acl.SessionStarted" in kinds
    ended = [e for e in audit if e["type"] == "acl.SessionEnded"]
    assert ended and ended[0]["data"]["reason"] == "key_revoked"
    assert all("token_hash" not in e["data"] for e in audit)
    assert jar["files_session"] not in str(audit)


def test_a_session_that_ends_mid_upload_keeps_the_page_and_the_rest_is_sent_after(
    page: Page, api: httpx.Client, platform: Stack, tmp_path: Path
) -> None:
    """The session ends while the app is open (signed out in another tab, expired, its key
    revoked): a sign-in dialog over the page, which stays as it was. Before, the whole
    app gave way to the sign-in page, and with it the upload's list of what was sent.
    (Its own sign-in: it ends it.)"""
    sign_in(page)
    folder = make_folder(api, unique("ended"))
    chosen = []
    for i in range(3):
        chosen.append(tmp_path / f"f{i}.png")
        chosen[-1].write_bytes(png(5 + i, 5))
    dialog = upload_dialog(page, folder["id"])
    dialog.get_by_label("Files", exact=True).set_input_files(chosen)
    with httpx.Client(base_url=platform.gateway_url) as client:
        ended = client.delete(
            "/v1/sessions",
            cookies={"files_session": _cookie(page)["value"]},
            headers={"X-Files-CSRF": "1"},
        )
        assert ended.status_code == 204, ended.text
    dialog.get_by_role("button", name="Upload", exact=True).click()

    again = page.get_by_role("dialog", name="Your session has ended")
    expect(again.get_by_label("API key")).to_be_focused()
    listed = dialog.get_by_role("list", name="Files to upload")
    for f in chosen:
        expect(listed.get_by_role("listitem", name=f.name)).to_contain_text(
            "Not sent: the session ended"
        )
    assert items(api, folder["id"]) == []
    page.keyboard.press("Escape")  # not a way out that would lose the page
    expect(again).to_be_visible()
    again.get_by_label("API key").fill("files_not_a_real_key")
    again.get_by_role("button", name="Sign in").click()
    expect(again.get_by_role("alert")).to_contain_text("unknown or revoked")
    again.get_by_label("API key").fill(ADMIN_KEY)
    again.get_by_role("button", name="Sign in").click()
    expect(again).to_be_hidden()

    dialog.get_by_role("button", name="Upload", exact=True).click()
    for f in chosen:
        expect(listed.get_by_role("listitem", name=f.name)).to_contain_text("Uploaded")
    assert sorted(i["name"] for i in items(api, folder["id"])) == ["f0.png", "f1.png", "f2.png"]

    # "Leave" gives the page up for the sign-in page.
    with httpx.Client(base_url=platform.gateway_url) as client:
        client.delete(
            "/v1/sessions",
            cookies={"files_session": _cookie(page)["value"]},
            headers={"X-Files-CSRF": "1"},
        )
    # The app may notice the end by itself (its live updates) before a click makes it ask:
    # then the dialog holds the page and these clicks cannot land.
    try:
        dialog.get_by_role("button", name="Close").first.click(timeout=3000)
        page.get_by_role("link", name="Trash").click(timeout=3000)
    except PlaywrightTimeoutError:
        expect(again).to_be_visible()
    again.get_by_role("button", name="Leave").click()
    expect(page.get_by_role("heading", name="Files", level=1)).to_be_visible()
    expect(page).to_have_url("/")


@pytest.mark.parametrize("how", ["resumed", "gone", "revoked"])
def test_a_large_file_cut_off_by_a_session_that_ended_goes_on_after_signing_in_again(
    page: Page, api: httpx.Client, platform: Stack, tmp_path: Path, how: str
) -> None:
    """A large file's upload session, cut off when the sign-in ended (its first part
    stored, the others' connections dropped while signed out), goes on once the person
    signs in again: "Upload" sends only the parts it is missing and completes it. Before,
    a new session sent it whole. If the session has gone meanwhile (aborted here, as an
    expired one is; or its key was revoked, ending the sign-in and, once ingest reads
    it, the session), the file is sent anew in a session of its own, and its row says so."""
    folder = make_folder(api, unique("resumed"))
    if how == "revoked":
        user = an_editor_of(api, folder)
        first, second = (api.post(f"/v1/users/{user['id']}/keys").json() for _ in range(2))
        sign_in(page, first["api_key"])
        key_again = second["api_key"]
    else:
        sign_in(page)
        key_again = ADMIN_KEY
    # Three parts (the app asks for 8 MiB ones): the first stored before the sign-in
    # ends, two missing after it; the last part need not be large to be one.
    size = 16 * 1024 * 1024 + 64 * 1024
    body = (b"resumed, not sent twice\n" * (size // 24 + 1))[:size]
    big = tmp_path / "big.bin.txt"
    big.write_bytes(body)
    cookie = _cookie(page)["value"]
    phase = ["before"]
    asked: list[tuple[str, str, int]] = []  # (phase, session, part) of every part PUT
    stored: list[int] = []  # parts that reached the platform before the sign-in ended
    ended: list[bool] = []

    def part_of(url: str) -> tuple[str, int]:
        found = re.search(r"/v1/uploads/([^/]+)/parts/(\d+)", url)
        assert found, url
        return found[1], int(found[2])

    def end_the_sign_in() -> None:
        if how == "revoked":
            assert api.delete(f"/v1/keys/{first['id']}").status_code == 204
            return
        with httpx.Client(base_url=platform.gateway_url) as client:
            signed_out = client.delete(
                "/v1/sessions", headers={"Cookie": f"files_session={cookie}", "X-Files-CSRF": "1"}
            )
            assert signed_out.status_code == 204, signed_out.text

    def cut_off(route: Route) -> None:
        if phase[0] == "before" and route.request.method == "PUT":
            if not ended:
                ended.append(True)
                end_the_sign_in()
            # A revoked key's parts are refused anyway: all their connections drop.
            if how == "revoked" or part_of(route.request.url)[1] != 1:
                route.abort("connectionreset")
                return
        route.continue_()

    def on_request(request: Request) -> None:
        if request.method == "PUT" and "/parts/" in request.url:
            asked.append((phase[0], *part_of(request.url)))

    def on_finished(request: Request) -> None:
        if request.method == "PUT" and "/parts/" in request.url and phase[0] == "before":
            response = request.response()
            if response is not None and response.ok:
                stored.append(part_of(request.url)[1])

    page.on("request", on_request)
    page.on("requestfinished", on_finished)
    page.route("**/v1/uploads/*/parts/*", cut_off)
    dialog, listed = uploading(page, folder["id"], big)
    row = listed.get_by_role("listitem", name=big.name)
    expect(row).to_contain_text("Not sent: the session ended", timeout=30_000)
    again = page.get_by_role("dialog", name="Your session has ended")
    expect(again.get_by_label("API key")).to_be_focused()
    assert stored == ([] if how == "revoked" else [1])
    [opened] = {session for _, session, _ in asked}
    assert items(api, folder["id"]) == []
    if how == "gone":
        assert api.delete(f"/v1/uploads/{opened}").status_code == 204

    phase[0] = "after"
    again.get_by_label("API key").fill(key_again)
    again.get_by_role("button", name="Sign in").click()
    expect(again).to_be_hidden()
    dialog.get_by_role("button", name="Upload", exact=True).click()
    expect(row).to_contain_text("Uploaded", timeout=30_000)

    after = [(session, part) for when, session, part in asked if when == "after"]
    if how == "resumed":
        # Only the parts the session was missing: the one it had was not sent again.
        expect(row).not_to_contain_text("sent again")
        assert sorted(after) == [(opened, 2), (opened, 3)]
        assert api.get(f"/v1/uploads/{opened}").json()["status"] == "completed"
    else:
        expect(row).to_contain_text("Its earlier upload had ended: sent again from the start.")
        [new] = {session for session, _ in after} - {opened}
        assert sorted(part for session, part in after if session == new) == [1, 2, 3]
    [listed] = items(api, folder["id"])
    assert listed["name"] == "big.bin.txt" and listed["size"] == size
    assert listed["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_large_file_is_not_sent_on_the_session_of_one_who_signed_out(
    page: Page, api: httpx.Client, platform: Stack, tmp_path: Path
) -> None:
    """Found by review43: another editor signs in on the same browser (in another tab)
    while a large file's parts go; asked again for its parts after a failed one, the
    session shows them without URLs (its opener's alone), and the app PUT them to
    "undefined". The file is not sent, and says why."""
    folder = make_folder(api, unique("switched"))
    user = an_editor_of(api, folder)
    key = api.post(f"/v1/users/{user['id']}/keys").json()["api_key"]
    sign_in(page)
    # Large (an upload session, web/src/upload.tsx's SESSION_AT), in two parts: the
    # first refused is what makes the app ask the session for its parts again.
    size = 9 * 1024 * 1024
    body = (b"not theirs to send\n" * (size // 19 + 1))[:size]
    big = tmp_path / "big.bin.txt"
    big.write_bytes(body)
    switched: list[bool] = []
    sent_to: list[str] = []

    def switch_then_fail(route: Route) -> None:
        if not switched:
            switched.append(True)
            with httpx.Client(base_url=platform.gateway_url) as client:
                started = client.post(
                    "/v1/sessions", json={"api_key": key}, headers={"X-Files-CSRF": "1"}
                )
                assert started.status_code == 201, started.text
            page.context.add_cookies(
                [{**_cookie(page), "value": started.cookies["files_session"]}]  # type: ignore[list-item]
            )
        route.fulfill(status=503, json={"code": "unavailable", "message": "try again"})

    page.on("request", lambda r: r.method == "PUT" and sent_to.append(r.url))
    page.route("**/v1/uploads/*/parts/*", switch_then_fail)
    _, listed = uploading(page, folder["id"], big)
    row = listed.get_by_role("listitem", name=big.name)
    expect(row).to_contain_text("someone else signed in on this browser", timeout=30_000)
    assert sent_to and all("/v1/uploads/" in url for url in sent_to), sent_to
    [opened] = {re.search(r"/v1/uploads/([^/]+)/", url)[1] for url in sent_to}  # type: ignore[index]
    assert api.get(f"/v1/uploads/{opened}").json()["status"] == "open"
    assert items(api, folder["id"]) == []
