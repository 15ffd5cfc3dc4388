"""What a person may do follows their role on the folder: a User (viewer) is offered no
editing action (no upload, new folder, rename, move, delete, no access changes, nothing to
restore in the Trash); an Editor renames files and folders ("Rename", F2) and edits a
folder's description, with the API's refusals shown."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import (
    hold_the_folders_read,
    items,
    make_folder,
    sign_in,
    unique,
    upload,
)
from tests.e2e.support import png, text

ROLE_PENDING = "Your role on this folder is still being read."


def _member(api: httpx.Client, folder_id: str, role: str) -> dict:
    answer = api.post(
        "/v1/users",
        json={"email": f"{unique(role)}@example.com", "name": role.title(), "org_role": "member"},
    )
    assert answer.status_code == 201, answer.text
    user = dict(answer.json())
    added = api.post(
        f"/v1/folders/{folder_id}/collaborators", json={"emails": [user["email"]], "role": role}
    )
    assert added.status_code == 200, added.text
    return user


def test_a_viewer_is_offered_no_editing_action(page: Page, api: httpx.Client) -> None:
    folder = make_folder(api, unique("looked-at"))
    make_folder(api, "inner", folder["id"])
    [doomed, _] = upload(api, folder["id"], ("gone.txt", text("x\n")), ("kept.png", png(8, 8)))
    assert api.post("/v1/delete", json={"file_ids": [doomed["id"]]}).status_code == 200
    viewer = _member(api, folder["id"], "user")
    sign_in(page, viewer["api_key"])

    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    expect(grid.get_by_role("row", name="kept.png")).to_be_visible()
    expect(page.get_by_role("button", name="+ New folder")).to_have_count(0)
    expect(page.get_by_role("button", name="+ Upload files")).to_have_count(0)

    for name in ("kept.png", "inner"):
        grid.get_by_role("row", name=name).click(button="right")
        menu = page.get_by_role("menu", name=f"Actions for {name}")
        expect(menu.get_by_role("menuitem", name="Add to dataset")).to_be_visible()
        for refused in ("Rename", "Move to another folder", "Delete", "Upload files"):
            expect(menu.get_by_role("menuitem", name=refused)).to_have_count(0)
        page.keyboard.press("Escape")
        expect(menu).to_be_hidden()
    grid.get_by_role("row", name="kept.png").click()
    for key in ("Delete", "F2"):
        page.keyboard.press(key)
        expect(page.get_by_role("dialog")).to_have_count(0)

    # History names people (not ids), also for one who may not list the users.
    grid.get_by_role("row", name="kept.png").click()
    details = page.get_by_role("complementary", name="Details")
    details.get_by_role("tab", name="History").click()
    history = details.get_by_role("list", name="History")
    expect(history).to_contain_text("File uploaded")
    expect(history).to_contain_text("Administrator <admin@files.local>")
    expect(history).not_to_contain_text("system:")

    # Manage access: who has it, read-only.
    grid.get_by_role("row", name="kept.png").click(modifiers=["Control"])
    expect(details).to_contain_text("Your role")
    expect(details).to_contain_text("User")
    expect(details.get_by_role("button", name="Edit description")).to_have_count(0)
    details.get_by_role("button", name="Manage access").click()
    dialog = page.get_by_role("dialog", name=f"Manage access: {folder['name']}")
    expect(dialog.get_by_role("row", name=viewer["email"])).to_be_visible()
    expect(dialog.get_by_role("tab", name="Invite")).to_have_count(0)
    expect(dialog.get_by_role("combobox")).to_have_count(0)
    expect(dialog.get_by_role("button", name="Remove", exact=False)).to_have_count(0)
    dialog.get_by_role("button", name="Close").click()

    # The trash shows what was deleted there, with nothing to restore or purge.
    page.get_by_role("link", name="Trash", exact=True).click()
    trash = page.get_by_role("region", name="Trash")
    expect(trash.get_by_role("row", name="gone.txt")).to_be_visible()
    expect(trash.get_by_role("checkbox", name="Choose gone.txt")).to_be_disabled()
    expect(trash.get_by_role("button", name="Empty trash")).to_be_disabled()
    expect(trash.get_by_role("button", name="Restore")).to_be_disabled()


def test_an_editor_renames_and_edits_a_description_and_sees_refusals(
    page: Page, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("renamed"))
    make_folder(api, "taken", folder["id"])
    make_folder(api, "old-name", folder["id"])
    upload(api, folder["id"], ("before.txt", text("x\n")))
    editor = _member(api, folder["id"], "editor")
    sign_in(page, editor["api_key"])
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    expect(page.get_by_role("button", name="+ Upload files")).to_be_visible()

    # A file by F2.
    grid.get_by_role("row", name="before.txt").click()
    page.keyboard.press("F2")
    dialog = page.get_by_role("dialog", name="Rename file")
    dialog.get_by_label("Name").fill("after.txt")
    dialog.get_by_role("button", name="Rename").click()
    expect(grid.get_by_role("row", name="after.txt")).to_be_visible()
    assert "after.txt" in {i["name"] for i in items(api, folder["id"])}

    # A folder by its menu: a taken name and a bad name are refused, in words.
    grid.get_by_role("row", name="old-name").click(button="right")
    page.get_by_role("menu", name="Actions for old-name").get_by_role(
        "menuitem", name="Rename"
    ).click()
    dialog = page.get_by_role("dialog", name="Rename folder")
    dialog.get_by_label("Name").fill("taken")
    dialog.get_by_role("button", name="Rename").click()
    expect(dialog.get_by_role("alert")).to_contain_text("already")
    dialog.get_by_label("Name").fill("a/b")
    dialog.get_by_role("button", name="Rename").click()
    expect(dialog.get_by_role("alert")).to_contain_text("'/'")
    # A 409 that is not a taken name (a write that raced another: nothing was written)
    # says so in the API's words, not "already".
    raced = "another request changed the same things at the same time; try again"

    def race(route: Route) -> None:
        if route.request.method != "PATCH":
            route.continue_()
            return
        route.fulfill(
            status=409,
            json={"error": {"code": "concurrent_change", "message": raced, "details": {}}},
        )

    page.route("**/v1/folders/*", race)
    dialog.get_by_label("Name").fill("new-name")
    dialog.get_by_role("button", name="Rename").click()
    expect(dialog.get_by_role("alert")).to_contain_text(raced)
    expect(dialog.get_by_role("alert")).not_to_contain_text("already")
    page.unroute("**/v1/folders/*", race)
    dialog.get_by_label("Name").fill("new-name")
    dialog.get_by_role("button", name="Rename").click()
    expect(grid.get_by_role("row", name="new-name")).to_be_visible()
    assert {i["name"] for i in items(api, folder["id"])} == {"taken", "new-name", "after.txt"}

    # The folder's description, in its details panel.
    grid.get_by_role("row", name="new-name").click()
    details = page.get_by_role("complementary", name="Details")
    details.get_by_role("button", name="Edit description").click()
    details.get_by_label("Description").fill("Scans from March")
    details.get_by_role("button", name="Save").click()
    expect(details).to_contain_text("Scans from March")
    [renamed] = [i for i in items(api, folder["id"]) if i["name"] == "new-name"]
    assert renamed["description"] == "Scans from March"

    # An editor sees who has access, and changes nothing.
    grid.get_by_role("row", name="new-name").click(modifiers=["Control"])
    details.get_by_role("button", name="Manage access").click()
    dialog = page.get_by_role("dialog", name=f"Manage access: {folder['name']}")
    expect(dialog.get_by_role("row", name=editor["email"])).to_be_visible()
    expect(dialog.get_by_role("combobox")).to_have_count(0)


def test_a_menu_opened_before_the_folders_role_arrives_gains_the_editing_actions(
    admin_page: Page, api: httpx.Client
) -> None:
    """On a busy platform the folder's contents can arrive before the folder itself (with
    the caller's role on it): a right-click then offers what anyone may do, shows the
    editing actions disabled, saying why, and enables them in the open menu once the
    role is known."""
    page = admin_page
    folder = make_folder(api, unique("late-role"))
    name = unique("late") + ".txt"
    upload(api, folder["id"], (name, text("late\n")))
    held: list[Route] = []
    holding = True
    own = re.compile(rf"/v1/folders/{folder['id']}(\?.*)?$")

    def folder_itself(url: str) -> bool:
        return bool(own.search(url))

    def hold(route: Route) -> None:
        if holding:
            held.append(route)
        else:
            route.continue_()

    page.route(folder_itself, hold)
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name=name).click(button="right")
    menu = page.get_by_role("menu", name=f"Actions for {name}")
    expect(menu.get_by_role("menuitem", name="Add to dataset")).to_be_enabled()
    for action in ("Rename", "Move to another folder", "Delete"):
        item = menu.get_by_role("menuitem", name=action)
        expect(item).to_be_disabled()
        expect(item).to_have_attribute("title", ROLE_PENDING)
    # Pressed, a disabled item does nothing and says why: the menu stays, no dialog opens.
    menu.get_by_role("menuitem", name="Delete").click(force=True)
    expect(menu).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert held, "the folder's own read was not made"
    holding = False
    for route in held:
        route.continue_()
    expect(menu.get_by_role("menuitem", name="Delete")).to_be_enabled()
    expect(menu.get_by_role("menuitem", name="Rename")).to_be_enabled()
    menu.get_by_role("menuitem", name="Delete").click()
    expect(page.get_by_role("dialog", name="Delete")).to_be_visible()


def test_delete_pressed_before_the_folders_role_arrives_asks_once_it_does(
    admin_page: Page, api: httpx.Client
) -> None:
    """The Delete key on a file chosen before the folder's role has arrived waits for it,
    and says so, then asks as it would have; before, it did nothing, silently."""
    page = admin_page
    folder = make_folder(api, unique("late-key"))
    name = unique("late") + ".txt"
    upload(api, folder["id"], (name, text("late\n")))
    held = hold_the_folders_read(page, folder["id"])
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name=name).click()
    page.keyboard.press("Delete")
    expect(page.get_by_role("status").filter(has_text="Delete waits for your role")).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert held, "the folder's own read was not made"
    for route in held:
        route.continue_()
    dialog = page.get_by_role("dialog", name="Delete")
    expect(dialog).to_contain_text("1 file")
    page.unroute_all(behavior="ignoreErrors")


def test_a_key_waiting_for_the_role_is_dropped_once_the_person_goes_on(
    admin_page: Page, api: httpx.Client
) -> None:
    """Delete pressed before the folder's role arrived, then another file chosen and
    "Add to dataset" opened: the role arriving leaves that dialog as it is (the Delete
    asked for the earlier choice is dropped, not opened over it)."""
    page = admin_page
    folder = make_folder(api, unique("late-drop"))
    first, second = unique("first") + ".txt", unique("second") + ".txt"
    upload(api, folder["id"], (first, text("1\n")), (second, text("2\n")))
    held = hold_the_folders_read(page, folder["id"])
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name=first).click()
    page.keyboard.press("Delete")
    expect(page.get_by_role("status").filter(has_text="Delete waits for your role")).to_be_visible()
    page.get_by_role("row", name=second).click(button="right")
    page.get_by_role("menu", name=f"Actions for {second}").get_by_role(
        "menuitem", name="Add to dataset"
    ).click()
    expect(page.get_by_role("dialog", name="Add to dataset")).to_be_visible()
    assert held, "the folder's own read was not made"
    for route in held:
        route.continue_()
    expect(page.locator("#folder-title")).to_have_text(folder["name"])
    # The role's render has run its effects (Preact runs them after the next frame).
    page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.evaluate("new Promise((r) => setTimeout(r))")
    expect(page.get_by_role("dialog", name="Add to dataset")).to_be_visible()
    expect(page.get_by_role("dialog", name="Delete")).to_have_count(0)
    page.unroute_all(behavior="ignoreErrors")
