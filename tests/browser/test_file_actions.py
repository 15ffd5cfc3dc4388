"""A file's own page (`/files/<id>`) has the actions the folder view's menu has for a
file, by the same dialogs: Download, Add to dataset, Rename, Move to another folder and
Delete (to the Trash, after which the page goes to the file's folder and says so). A
User (viewer) of the folder gets Download and Add to dataset, and is told why no more."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    hold_the_folders_read,
    items,
    make_folder,
    sign_in,
    unique,
    upload,
)
from tests.e2e.support import png, text


def test_a_file_page_downloads_adds_to_a_dataset_renames_moves_and_deletes(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    home = make_folder(api, unique("file-home"))
    away = make_folder(api, unique("file-away"))
    body = png(16, 12)
    [cat] = upload(api, home["id"], ("cat.png", body))
    dataset = api.post("/v1/datasets", json={"name": unique("Training")}).json()

    page.goto(f"/files/{cat['id']}")
    expect(page.get_by_role("heading", name="cat.png", level=1)).to_be_visible()
    actions = page.get_by_role("toolbar", name="File actions")

    # Download: the file's own bytes, under its name.
    with page.expect_download() as downloading:
        actions.get_by_role("link", name="Download").click()
    download = downloading.value
    assert download.suggested_filename == "cat.png"
    path = download.path()
    assert path is not None and path.read_bytes() == body

    # Add to dataset: the folder view's dialog; the focus comes back to the button.
    actions.get_by_role("button", name="Add to dataset").click()
    dialog = page.get_by_role("dialog", name="Add to dataset")
    dialog.get_by_role("listitem", name=dataset["name"]).get_by_role("button", name="Add").click()
    # (An image's page has a status of its own, the zoom level: the notice is the other.)
    notices = page.locator(".notices").get_by_role("status")
    expect(notices).to_contain_text(f"Added 1 file to {dataset['name']}")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(actions.get_by_role("button", name="Add to dataset")).to_be_focused()
    linked = api.get(f"/v1/files/{cat['id']}/datasets").json()["items"]
    assert [d["id"] for d in linked] == [dataset["id"]]

    # Rename: the page's title follows, and so does the platform (after a reload too).
    actions.get_by_role("button", name="Rename").click()
    dialog = page.get_by_role("dialog", name="Rename file")
    dialog.get_by_label("Name").fill("kitten.png")
    dialog.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("heading", name="kitten.png", level=1)).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="kitten.png", level=1)).to_be_visible()
    assert api.get(f"/v1/files/{cat['id']}").json()["name"] == "kitten.png"

    # Move: the breadcrumbs name the new folder.
    actions.get_by_role("button", name="Move to another folder").click()
    dialog = page.get_by_role("dialog", name="Move to another folder")
    dialog.get_by_role("combobox", name="Target folder").fill(away["name"])
    dialog.get_by_role("option", name=away["name"]).click()
    expect(dialog).to_contain_text("This moves 1 file.")
    dialog.get_by_role("button", name="Move").click()
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs.get_by_role("link", name=away["name"])).to_be_visible()
    expect(crumbs.get_by_role("link", name=home["name"])).to_have_count(0)
    assert api.get(f"/v1/files/{cat['id']}").json()["folder_id"] == away["id"]

    # Delete: to the Trash; the page goes to the folder it was in and says so.
    actions.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete")
    expect(dialog).to_contain_text("This deletes 1 file.")
    dialog.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(f"/folders/{away['id']}")
    expect(page.get_by_role("heading", name=away["name"], level=1)).to_be_visible()
    expect(notices).to_contain_text("Deleted kitten.png: it is in the Trash")
    expect(page.get_by_text("This folder is empty.")).to_be_visible()
    assert items(api, away["id"]) == []
    trash = api.get("/v1/trash", params={"limit": 1000}).json()["items"]
    assert cat["id"] in {i["id"] for i in trash}


def test_a_viewer_of_the_folder_gets_no_write_action_on_a_file_page(
    page: Page, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("file-viewed"))
    [note] = upload(api, folder["id"], ("note.txt", text("n\n")))
    email = f"{unique('viewer')}@example.com"
    made = api.post("/v1/users", json={"email": email, "name": "Viewer", "org_role": "member"})
    assert made.status_code == 201, made.text
    added = api.post(
        f"/v1/folders/{folder['id']}/collaborators", json={"emails": [email], "role": "user"}
    )
    assert added.status_code == 200, added.text
    sign_in(page, made.json()["api_key"])

    page.goto(f"/files/{note['id']}")
    actions = page.get_by_role("toolbar", name="File actions")
    expect(actions).to_contain_text("You can view this file, not change it.")
    expect(actions.get_by_role("link", name="Download")).to_be_visible()
    expect(actions.get_by_role("button", name="Add to dataset")).to_be_visible()
    for refused in ("Rename", "Move to another folder", "Delete"):
        expect(actions.get_by_role("button", name=refused)).to_have_count(0)


def test_a_file_page_downloads_from_its_toolbar_only_and_links_not_to_itself(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("file-once"))
    [note] = upload(api, folder["id"], ("once.txt", text("once\n")))

    # The folder view's details panel: the file's "Download" and "Open" (its page).
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="once.txt").click()
    details = page.get_by_role("complementary", name="Details")
    expect(details.get_by_role("link", name="Download")).to_be_visible()
    details.get_by_role("link", name="Open").click()
    expect(page).to_have_url(f"/files/{note['id']}")

    # On that page, one "Download" (the toolbar's) and no link to the page itself.
    expect(page.get_by_role("heading", name="once.txt", level=1)).to_be_visible()
    expect(details.get_by_text("Text", exact=True)).to_be_visible()  # its facts are read
    expect(page.get_by_role("link", name="Download")).to_have_count(1)
    expect(
        page.get_by_role("toolbar", name="File actions").get_by_role("link", name="Download")
    ).to_be_visible()
    expect(details.get_by_role("link", name="Open")).to_have_count(0)
    expect(page.locator(f'a[href="/files/{note["id"]}"]')).to_have_count(0)


def test_a_file_pages_editing_actions_show_disabled_until_the_folders_role_is_read(
    admin_page: Page, api: httpx.Client
) -> None:
    """On a busy platform the file arrives before its folder (with the caller's role on
    it): Rename, Move and Delete are there, disabled and saying why, and enabled once the
    role is read; before, they were missing until then, and the row of actions moved."""
    page = admin_page
    folder = make_folder(api, unique("late-file-role"))
    [late] = upload(api, folder["id"], ("late.txt", text("late\n")))
    held = hold_the_folders_read(page, folder["id"])
    page.goto(f"/files/{late['id']}")
    expect(page.get_by_role("heading", name="late.txt", level=1)).to_be_visible()
    actions = page.get_by_role("toolbar", name="File actions")
    expect(actions.get_by_role("button", name="Add to dataset")).to_be_enabled()
    for action in ("Rename", "Move to another folder", "Delete"):
        button = actions.get_by_role("button", name=action)
        expect(button).to_be_disabled()
        expect(button).to_have_attribute("title", "Your role on this folder is still being read.")
    expect(actions).not_to_contain_text("You can view this file")
    assert held, "the folder's own read was not made"
    for route in held:
        route.continue_()
    for action in ("Rename", "Move to another folder", "Delete"):
        expect(actions.get_by_role("button", name=action)).to_be_enabled()
    actions.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("dialog", name="Delete")).to_be_visible()
    page.unroute_all(behavior="ignoreErrors")


def mia(api: httpx.Client, *roles: tuple[dict[str, Any], str]) -> str:
    """Mia, a member with these roles on these folders: her API key."""
    email = f"{unique('mia')}@example.com"
    made = api.post("/v1/users", json={"email": email, "name": "Mia", "org_role": "member"})
    assert made.status_code == 201, made.text
    for folder, role in roles:
        added = api.post(
            f"/v1/folders/{folder['id']}/collaborators", json={"emails": [email], "role": role}
        )
        assert added.status_code == 200, added.text
    return str(made.json()["api_key"])


def test_a_file_moved_away_while_its_page_is_open_waits_for_its_new_folders_role(
    page: Page, api: httpx.Client
) -> None:
    """Mia edits one folder and only views another: her file moved from the first to
    the second by someone else, the page no longer offers Rename, Move and Delete by the
    first folder's role while it reads the second's (before, they stayed enabled, each
    refused once pressed, and for good if that read failed)."""
    edited, viewed = make_folder(api, unique("mia-edits")), make_folder(api, unique("mia-views"))
    [note] = upload(api, edited["id"], ("moving.txt", text("m\n")))
    sign_in(page, mia(api, (edited, "editor"), (viewed, "user")))

    page.goto(f"/files/{note['id']}")
    actions = page.get_by_role("toolbar", name="File actions")
    expect(actions.get_by_role("button", name="Rename")).to_be_enabled()
    held = hold_the_folders_read(page, viewed["id"])
    moved = api.post("/v1/move", json={"file_ids": [note["id"]], "target_folder_id": viewed["id"]})
    assert moved.status_code == 200, moved.text
    expect(page.get_by_role("heading", name="moving.txt", level=1)).to_be_visible()
    # Seen, and the new folder's read on its way: nothing offered by the old role.
    expect(actions.get_by_role("button", name="Rename")).to_be_disabled()
    assert held, "the new folder's read was not made"
    for route in held:
        route.continue_()
    expect(actions).to_contain_text("You can view this file, not change it.")
    for refused in ("Rename", "Move to another folder", "Delete"):
        expect(actions.get_by_role("button", name=refused)).to_have_count(0)
    page.unroute_all(behavior="ignoreErrors")


def test_a_moved_files_new_folder_unread_says_nothing_of_the_old_folders_role(
    page: Page, api: httpx.Client
) -> None:
    """Moved into another folder Mia edits, whose read then fails: the page does not
    tell her she may only view the file (that was the old folder's role, or none), nor
    show the old folder's path."""
    first, second = make_folder(api, unique("mia-a")), make_folder(api, unique("mia-b"))
    [note] = upload(api, first["id"], ("moved.txt", text("m\n")))
    sign_in(page, mia(api, (first, "editor"), (second, "editor")))
    page.goto(f"/files/{note['id']}")
    actions = page.get_by_role("toolbar", name="File actions")
    expect(actions.get_by_role("button", name="Rename")).to_be_enabled()
    held = hold_the_folders_read(page, second["id"])
    moved = api.post("/v1/move", json={"file_ids": [note["id"]], "target_folder_id": second["id"]})
    assert moved.status_code == 200, moved.text
    expect(actions.get_by_role("button", name="Rename")).to_be_disabled()
    for route in held:
        route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "busy"}})
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs.get_by_role("link", name=first["name"])).to_have_count(0)
    expect(actions.get_by_role("button", name="Rename")).to_have_count(0)
    expect(actions).not_to_contain_text("You can view this file")
    page.unroute_all(behavior="ignoreErrors")


def test_a_file_pages_f2_and_delete_act_as_in_a_folder_and_wait_for_the_role(
    admin_page: Page, api: httpx.Client
) -> None:
    """F2 and Delete on a file's page open its Rename and Delete, as in a folder; pressed
    before the folder's role is read they wait for it, said in words."""
    page = admin_page
    folder = make_folder(api, unique("keyed-file"))
    [keyed] = upload(api, folder["id"], ("keyed.txt", text("keyed\n")))
    held = hold_the_folders_read(page, folder["id"])
    page.goto(f"/files/{keyed['id']}")
    expect(page.get_by_role("heading", name="keyed.txt", level=1)).to_be_visible()
    page.keyboard.press("Delete")
    notice = page.locator(".notices").get_by_role("status")
    expect(notice).to_contain_text("Delete waits for your role on this folder")
    assert held, "the folder's own read was not made"
    for route in held:
        route.continue_()
    dialog = page.get_by_role("dialog", name="Delete")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.keyboard.press("F2")
    renaming = page.get_by_role("dialog", name="Rename file")
    expect(renaming).to_be_visible()
    page.keyboard.press("Escape")
    expect(renaming).to_be_hidden()
    page.unroute_all(behavior="ignoreErrors")


def test_a_file_pages_f2_tells_a_user_they_may_not(page: Page, api: httpx.Client) -> None:
    folder = make_folder(api, unique("keyed-viewed"))
    [keyed] = upload(api, folder["id"], ("viewed.txt", text("viewed\n")))
    sign_in(page, mia(api, (folder, "user")))
    page.goto(f"/files/{keyed['id']}")
    actions = page.get_by_role("toolbar", name="File actions")
    expect(actions).to_contain_text("You can view this file, not change it.")
    page.keyboard.press("F2")
    expect(page.locator(".notices").get_by_role("status").last).to_contain_text(
        "You can view this file, not change it."
    )
    expect(page.get_by_role("dialog")).to_have_count(0)
