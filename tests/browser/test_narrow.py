"""At a phone's width the app still works: the folder tree opens behind its toggle,
the details follow the content, the search has a row of its own, and a file's actions
keep to one row (Rename, Move and Delete behind "More")."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect

from shared.kit.stack import Stack
from tests.browser.conftest import make_folder, sign_in, unique, upload
from tests.e2e.support import png, text


def test_browse_and_upload_at_a_narrow_width(
    browser: Browser, platform: Stack, api: httpx.Client
) -> None:
    top = make_folder(api, unique("narrow"))
    sub = make_folder(api, "inside", top["id"])
    upload(api, sub["id"], ("n.txt", text()))
    context = browser.new_context(
        base_url=platform.gateway_url, viewport={"width": 390, "height": 800}
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        sign_in(page)
        tree = page.get_by_role("tree", name="Folder tree")
        expect(tree).to_be_hidden()
        toggle = page.get_by_role("button", name="Folders")
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        tree.get_by_role("treeitem", name=top["name"]).locator(".tree-row").first.click()
        expect(page.get_by_role("heading", name=top["name"], level=1)).to_be_visible()
        expect(tree).to_be_hidden()
        page.get_by_role("row", name="inside").dblclick()
        expect(page.get_by_role("row", name="n.txt")).to_be_visible()
        page.get_by_role("row", name="n.txt").click()
        expect(page.get_by_role("complementary", name="Details")).to_contain_text("Text")
        page.get_by_role("button", name="Upload files").click()
        dialog = page.get_by_role("dialog", name="Upload files")
        expect(dialog.get_by_role("tab", name="Import from private cloud")).to_be_visible()
        box = dialog.bounding_box()
        assert box is not None and box["width"] <= 390
    finally:
        context.close()


def test_the_search_and_a_file_s_actions_fit_a_phone_s_width(
    browser: Browser, platform: Stack, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("narrow-file"))
    name = unique("phone") + ".png"
    [photo] = upload(api, folder["id"], (name, png(8, 8)))
    context = browser.new_context(
        base_url=platform.gateway_url, viewport={"width": 390, "height": 800}
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        sign_in(page)
        page.goto(f"/files/{photo['id']}")
        expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()

        # The search box takes the width of the screen (less its margins), and its
        # suggestions are on the screen.
        search = page.get_by_role("searchbox", name="Search files")
        box = search.bounding_box()
        assert box is not None and box["width"] >= 390 - 40, box
        search.fill(name)
        hit = page.get_by_role("listbox", name="Search results").get_by_role("option", name=name)
        expect(hit).to_be_visible()
        shown = hit.bounding_box()
        assert shown is not None and shown["x"] >= 0 and shown["x"] + shown["width"] <= 390
        search.press("Escape")

        # The file's actions on one row; Rename, Move and Delete behind "More".
        actions = page.get_by_role("toolbar", name="File actions")
        download = actions.get_by_role("link", name="Download")
        more = actions.get_by_role("button", name="More")
        rows = {
            round(b["y"])
            for b in (
                download.bounding_box(),
                actions.get_by_role("button", name="Add to dataset").bounding_box(),
                more.bounding_box(),
            )
            if b is not None
        }
        assert len(rows) == 1, rows
        expect(actions.get_by_role("button", name="Rename")).to_be_hidden()
        more.click()
        menu = page.get_by_role("menu", name=f"More actions for {name}")
        for label in ("Rename", "Move to another folder", "Delete"):
            expect(menu.get_by_role("menuitem", name=label)).to_be_visible()
        menu.get_by_role("menuitem", name="Rename").click()
        dialog = page.get_by_role("dialog", name="Rename file")
        dialog.get_by_label("Name").fill("renamed-" + name)
        dialog.get_by_role("button", name="Rename").click()
        expect(page.get_by_role("heading", name="renamed-" + name, level=1)).to_be_visible()
        assert api.get(f"/v1/files/{photo['id']}").json()["name"] == "renamed-" + name

        # At a desk's width, the actions themselves and no "More".
        page.set_viewport_size({"width": 1280, "height": 800})
        expect(actions.get_by_role("button", name="Rename")).to_be_visible()
        expect(actions.get_by_role("button", name="More")).to_be_hidden()
    finally:
        context.close()
