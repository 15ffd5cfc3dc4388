"""A "Delete forever" whose request is lost to the network while the trash cannot be read
again either: the question stays about what was asked (it read "Delete 0 items forever?",
its ids taken from a selection the failed read emptied), says what is not known to be
deleted, and asked again deletes it."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import ask_to_delete_all_forever, make_folder, sign_in, unique, upload
from tests.browser.test_roles_and_rename import _member

UNREACHABLE = "Files cannot be reached"


def test_a_delete_forever_lost_with_the_trash_unreadable_still_asks_about_what_was_asked(
    page: Page, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("purge-cut"))
    editor = _member(api, folder["id"], "editor")
    files = upload(api, folder["id"], ("first.txt", b"1"), ("second.txt", b"2"))
    ids = {f["id"] for f in files}
    deleted = api.post("/v1/delete", json={"file_ids": sorted(ids)})
    assert deleted.status_code == 200, deleted.text

    network = {"cut": False}
    deletes: list[str] = []

    def trash_route(route: Route) -> None:  # a function: Playwright takes no bound built-in
        # The network goes as the first "Delete forever" is sent: that request and the
        # trash's read after it are lost.
        if route.request.method == "DELETE":
            deletes.append(route.request.url)
            if len(deletes) == 1:
                network["cut"] = True
        if network["cut"]:
            route.abort("internetdisconnected")
        else:
            route.continue_()

    sign_in(page, editor["api_key"])
    page.route(lambda url: urlparse(url).path == "/v1/trash", trash_route)
    trash, _, question = ask_to_delete_all_forever(page, 2)
    question.get_by_role("button", name="Delete forever").click()

    expect(question.get_by_role("alert")).to_contain_text(UNREACHABLE)
    # The trash's read failed too (it emptied the selection): the question is the same.
    expect(trash.get_by_text("The trash could not be loaded")).to_be_visible()
    expect(question).to_have_accessible_name("Delete 2 items forever?")
    expect(question).to_contain_text(
        re.compile(r"Not known to be deleted: “(first|second)\.txt” and “(first|second)\.txt”\.")
    )
    expect(question).to_contain_text("“Delete forever” tries again on them.")
    again = question.get_by_role("button", name="Delete forever")
    expect(again).to_be_enabled()

    # The network back: asked again, it deletes what was asked.
    network["cut"] = False
    again.click()
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(
        "Deleted forever 2 files"
    )
    expect(question).to_have_count(0)
    expect(trash.get_by_text("The trash is empty.")).to_be_visible()
    listed = {i["id"] for i in api.get("/v1/trash", params={"limit": 1000}).json()["items"]}
    assert not ids & listed
    page.unroute_all(behavior="ignoreErrors")
