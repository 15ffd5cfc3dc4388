"""Only a top-level folder's creator, or an org admin, may rename it (the catalog refuses
anyone else, its editors and admins included): the app shows them Rename disabled,
saying who may, in the folder page's menu, the tree's menu and on F2, and still offers
it for their own top-level folders and for the folders inside a shared one."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, sign_in, unique
from tests.browser.test_roles_and_rename import _member

WHO_MAY = "Only its creator or an organisation admin may rename a top-level folder."


def test_a_shared_top_level_folder_offers_its_editor_no_rename(
    page: Page, api: httpx.Client
) -> None:
    shared = make_folder(api, unique("shared"))
    make_folder(api, "inside", shared["id"])
    editor = _member(api, shared["id"], "editor")
    sign_in(page, editor["api_key"])
    own = make_folder(
        httpx.Client(
            base_url=str(api.base_url),
            headers={"Authorization": f"Bearer {editor['api_key']}"},
            timeout=30,
        ),
        unique("mine"),
    )

    # The top level's list: Rename shown disabled, with who may; Move and Delete as before.
    page.goto("/")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    grid.get_by_role("row", name=shared["name"]).click(button="right")
    menu = page.get_by_role("menu", name=f"Actions for {shared['name']}")
    rename = menu.get_by_role("menuitem", name="Rename")
    expect(rename).to_have_attribute("aria-disabled", "true")
    expect(rename).to_have_attribute("title", WHO_MAY)
    expect(menu.get_by_role("menuitem", name="Delete")).not_to_have_attribute(
        "aria-disabled", "true"
    )
    rename.click(force=True)
    expect(page.get_by_role("dialog")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()

    # F2 says who may, and opens nothing.
    grid.get_by_role("row", name=shared["name"]).click()
    page.keyboard.press("F2")
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(WHO_MAY)
    expect(page.get_by_role("dialog")).to_have_count(0)

    # Their own top-level folder is theirs to rename.
    grid.get_by_role("row", name=own["name"]).click(button="right")
    menu = page.get_by_role("menu", name=f"Actions for {own['name']}")
    expect(menu.get_by_role("menuitem", name="Rename")).not_to_have_attribute(
        "aria-disabled", "true"
    )
    page.keyboard.press("Escape")

    # The tree's menu, alike; a folder inside the shared one is renamed as before.
    tree = page.get_by_role("tree", name="Folder tree")
    tree.get_by_role("treeitem", name=shared["name"]).locator(".tree-row").first.click(
        button="right"
    )
    menu = page.get_by_role("menu", name=f"Actions for {shared['name']}")
    expect(menu.get_by_role("menuitem", name="Rename")).to_have_attribute("title", WHO_MAY)
    page.keyboard.press("Escape")
    page.goto(f"/folders/{shared['id']}")
    page.get_by_role("button", name="List").click()
    grid.get_by_role("row", name="inside").click()
    page.keyboard.press("F2")
    dialog = page.get_by_role("dialog", name="Rename folder")
    dialog.get_by_label("Name").fill("renamed-inside")
    dialog.get_by_role("button", name="Rename").click()
    expect(grid.get_by_role("row", name="renamed-inside")).to_be_visible()


def test_an_org_admin_renames_a_members_top_level_folder(
    admin_page: Page, api: httpx.Client
) -> None:
    member = api.post(
        "/v1/users",
        json={"email": f"{unique('m')}@example.com", "name": "Member", "org_role": "member"},
    ).json()
    with httpx.Client(
        base_url=str(api.base_url),
        headers={"Authorization": f"Bearer {member['api_key']}"},
        timeout=30,
    ) as theirs:
        # Named to come first in the admin's top level, by name, among every test's.
        folder = make_folder(theirs, unique("0-theirs"))
    page = admin_page
    page.goto("/")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    grid.get_by_role("row", name=folder["name"]).click()
    page.keyboard.press("F2")
    expect(page.get_by_role("dialog", name="Rename folder")).to_be_visible()


def test_a_folder_shared_on_its_own_is_renamed_by_its_editor(page: Page, api: httpx.Client) -> None:
    """Shared alone, a folder shows its editor no parent, as a top-level one does: the
    platform says which may be renamed (`may_rename`), and this one may (the app took
    it for top-level and refused, where the platform would not)."""
    top = make_folder(api, unique("private-top"))
    alone = make_folder(api, unique("alone"), top["id"])
    editor = _member(api, alone["id"], "editor")
    sign_in(page, editor["api_key"])
    page.goto("/")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    grid.get_by_role("row", name=alone["name"]).click()
    page.keyboard.press("F2")
    dialog = page.get_by_role("dialog", name="Rename folder")
    dialog.get_by_label("Name").fill(alone["name"] + "-renamed")
    dialog.get_by_role("button", name="Rename").click()
    expect(grid.get_by_role("row", name=alone["name"] + "-renamed")).to_be_visible()
