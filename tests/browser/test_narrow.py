"""At a phone's width the app still works: the folder tree opens behind its toggle,
the details follow the content."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect

from shared.kit.stack import Stack
from tests.browser.conftest import make_folder, sign_in, unique, upload
from tests.e2e.support import text


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
