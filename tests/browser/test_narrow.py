"""At a phone's width the app still works: the folder tree opens behind its toggle,
the details follow the content, the search has a row of its own, and a file's actions
keep to one row (Rename, Move and Delete behind "More"); a User's file page says they
can view, not change, and nothing of it is wider than the screen."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect

from shared.kit.stack import Stack
from tests.browser.conftest import home, make_folder, sign_in, unique, upload
from tests.browser.test_roles_and_rename import _member
from tests.e2e.support import CONSISTENCY, png, text


def test_browse_and_upload_at_a_narrow_width(
    browser: Browser, platform: Stack, api: httpx.Client, admin_state: dict
) -> None:
    top = make_folder(api, unique("narrow"))
    sub = make_folder(api, "inside", top["id"])
    upload(api, sub["id"], ("n.txt", text()))
    context = browser.new_context(
        base_url=platform.gateway_url,
        viewport={"width": 390, "height": 800},
        storage_state=admin_state,
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        home(page)
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
    browser: Browser, platform: Stack, api: httpx.Client, admin_state: dict
) -> None:
    folder = make_folder(api, unique("narrow-file"))
    name = unique("phone") + ".png"
    [photo] = upload(api, folder["id"], (name, png(8, 8)))
    context = browser.new_context(
        base_url=platform.gateway_url,
        viewport={"width": 390, "height": 800},
        storage_state=admin_state,
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        home(page)
        page.goto(f"/files/{photo['id']}")
        expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()

        # The search box takes the width of the screen (less its margins), and its
        # suggestions are on the screen.
        search = page.get_by_role("combobox", name="Search files")
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


def test_a_user_s_file_page_fits_a_phone_s_width(
    browser: Browser, platform: Stack, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("narrow-viewer"))
    inner = make_folder(api, "scans-of-the-second-week", folder["id"])
    # A name as phones and scanners write them: long, with no space to break at.
    name = "PXL_20261206_031245123_scan_of_the_left_knee_series_0004_final.png"
    [photo] = upload(api, inner["id"], (name, png(8, 8)))
    viewer = _member(api, folder["id"], "user")
    # Linked to a dataset shared with the User as a User, and to one of their own.
    theirs = api.post("/v1/datasets", json={"name": unique("Knee model, version twelve")}).json()
    linked = api.post(f"/v1/datasets/{theirs['id']}/files", json={"file_ids": [photo["id"]]})
    assert linked.status_code == 200, linked.text
    shared = api.post(
        f"/v1/datasets/{theirs['id']}/collaborators",
        json={"emails": [viewer["email"]], "role": "user"},
    )
    assert shared.status_code == 200, shared.text
    with httpx.Client(
        base_url=platform.gateway_url,
        headers={"Authorization": f"Bearer {viewer['api_key']}"},
        timeout=30,
    ) as as_viewer:
        own = as_viewer.post("/v1/datasets", json={"name": unique("Mine")}).json()
        linked = as_viewer.post(f"/v1/datasets/{own['id']}/files", json={"file_ids": [photo["id"]]})
        assert linked.status_code == 200, linked.text
        # Both links seen by the User before the page opens (the consistency token of
        # the last write).
        token = linked.headers.get(CONSISTENCY, "")
        seen = as_viewer.get(
            f"/v1/files/{photo['id']}/datasets", headers={CONSISTENCY: token}
        ).json()["items"]
        assert sorted(d["id"] for d in seen) == sorted([theirs["id"], own["id"]])
    context = browser.new_context(
        base_url=platform.gateway_url, viewport={"width": 390, "height": 800}
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        sign_in(page, viewer["api_key"])
        page.goto(f"/files/{photo['id']}")
        expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
        actions = page.get_by_role("toolbar", name="File actions")
        note = page.get_by_text("You can view this file, not change it.")
        expect(note).to_be_visible()
        details = page.get_by_role("complementary", name="Details")
        expect(details).to_contain_text("SHA-256")

        # Nothing is wider than the screen: no sideways scrolling.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        # What a User may do is on the screen, and nothing they may not.
        for shown in (
            note,
            actions.get_by_role("link", name="Download"),
            actions.get_by_role("button", name="Add to dataset"),
        ):
            shown.scroll_into_view_if_needed()
            expect(shown).to_be_in_viewport()
            box = shown.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        for refused in ("Rename", "Move to another folder", "Delete", "More"):
            expect(actions.get_by_role("button", name=refused)).to_have_count(0)
        # "Linked to": each dataset can be viewed; only the one that is theirs to change
        # offers "Remove" (a User of the other one would be refused).
        details.get_by_role("tab", name="Linked to").click()
        links = details.get_by_role("list", name="Datasets")
        expect(links.get_by_role("listitem")).to_have_count(2)
        mine = links.get_by_role("listitem", name=own["name"])
        others = links.get_by_role("listitem", name=theirs["name"])
        expect(mine.get_by_role("button", name="Remove")).to_be_visible()
        expect(others.get_by_role("button", name="View")).to_be_visible()
        expect(others.get_by_role("button", name="Remove")).to_have_count(0)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        actions.get_by_role("button", name="Add to dataset").click()
        dialog = page.get_by_role("dialog", name="Add to dataset")
        expect(dialog).to_be_visible()
        box = dialog.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    finally:
        context.close()


def test_the_folders_drawer_by_keyboard_at_a_narrow_width(
    browser: Browser, platform: Stack, api: httpx.Client, admin_state: dict
) -> None:
    """Opened with Enter, the drawer had no focus (Tab went on through the top bar, the
    page under the drawer next) and Escape left it open; a folder opened from it left the
    focus in the hidden drawer (then on the page's body)."""
    top = make_folder(api, unique("drawer"))
    other = make_folder(api, unique("drawer-other"))
    context = browser.new_context(
        base_url=platform.gateway_url,
        viewport={"width": 390, "height": 800},
        storage_state=admin_state,
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        home(page)
        page.goto(f"/folders/{top['id']}")
        # The tree, hidden in its drawer, has been read.
        hidden = page.get_by_role("treeitem", name=top["name"], include_hidden=True)
        expect(hidden).to_have_count(1)
        tree = page.get_by_role("tree", name="Folder tree")
        toggle = page.get_by_role("button", name="Folders")
        toggle.focus()
        page.keyboard.press("Enter")
        current = tree.get_by_role("treeitem", name=top["name"]).locator(".tree-row").first
        expect(current).to_be_focused()
        page.keyboard.press("Escape")
        expect(toggle).to_have_attribute("aria-expanded", "false")
        expect(tree).to_be_hidden()
        expect(toggle).to_be_focused()

        page.keyboard.press("Enter")
        expect(current).to_be_focused()
        tree.get_by_role("treeitem", name=other["name"]).locator(".tree-row").first.click()
        expect(page).to_have_url(f"/folders/{other['id']}")
        expect(tree).to_be_hidden()
        expect(toggle).to_be_focused()
    finally:
        context.close()
