""" "Move to another folder": typing a name that matches no folder one may move to says
so (the list stayed blank, the Move button greyed, with no word why); the folder the
selection is already in is not offered (a move there changed nothing)."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.browser.test_dataset_page import until
from tests.e2e.support import text


def test_the_move_dialog_says_when_no_folder_matches_and_skips_the_current_one(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    top = make_folder(api, unique("move-from"))
    elsewhere = make_folder(api, unique("move-to"), top["id"])
    upload(api, top["id"], ("moving.txt", text("m\n")))
    page.goto(f"/folders/{top['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="moving.txt").click(button="right")
    page.get_by_role("menu", name="Actions for moving.txt").get_by_role(
        "menuitem", name="Move to another folder"
    ).click()
    dialog = page.get_by_role("dialog", name="Move to another folder")
    target = dialog.get_by_role("combobox", name="Target folder")

    nothing = unique("no-such-folder")
    target.fill(nothing)
    expect(dialog.get_by_role("status")).to_have_text(
        f"No folder you can move this to matches “{nothing}”."
    )
    expect(dialog.get_by_role("button", name="Move")).to_be_disabled()

    # The folder it is in already is no target.
    target.fill(top["name"])
    expect(dialog.get_by_role("status")).to_contain_text(top["name"])
    expect(dialog.get_by_role("option", name=top["name"])).to_have_count(0)

    target.fill(elsewhere["name"])
    dialog.get_by_role("option", name=elsewhere["name"]).click()
    expect(dialog.get_by_role("status")).to_have_count(0)
    expect(dialog).to_contain_text("This moves 1 file.")
    dialog.get_by_role("button", name="Move").click()
    expect(page.get_by_role("row", name="moving.txt")).to_be_hidden()


def test_the_move_dialog_says_when_its_search_fails_and_clears_it_at_the_next(
    admin_page: Page, api: httpx.Client
) -> None:
    """A search the platform could not answer is said in the dialog, in its words;
    before, the dialog showed nothing at all (no hit, no "No folder matches"), as if
    still looking. Typing again searches again, the message gone."""
    page = admin_page
    tag = unique("hits")
    there = make_folder(api, f"{tag}-there")
    source = make_folder(api, unique("hits-from"))
    upload(api, source["id"], ("moving.txt", text("m\n")))
    until(
        lambda: len(api.get("/v1/search", params={"q": tag, "kind": "folder"}).json()["items"]),
        "search did not find the folder",
    )

    def busy(route: Route) -> None:
        route.fulfill(
            status=503,
            json={"error": {"code": "unavailable", "message": "The catalog is busy."}},
        )

    page.goto(f"/folders/{source['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="moving.txt").click(button="right")
    page.get_by_role("menu", name="Actions for moving.txt").get_by_role(
        "menuitem", name="Move to another folder"
    ).click()
    dialog = page.get_by_role("dialog", name="Move to another folder")
    target = dialog.get_by_role("combobox", name="Target folder")
    page.route(re.compile(r"/v1/search\?"), busy)
    target.fill(tag)
    expect(dialog.get_by_role("alert")).to_have_text("The catalog is busy.")
    expect(target).to_be_focused()
    page.unroute_all(behavior="ignoreErrors")
    target.fill(f"{tag}-")
    expect(dialog.get_by_role("option", name=there["name"])).to_be_visible()
    expect(dialog.get_by_role("alert")).to_have_count(0)
