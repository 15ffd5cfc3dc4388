"""A dataset's page: its files are chosen as a folder's are (click, Shift-click,
Ctrl/Cmd-click, the keyboard), and an Editor of the dataset removes them with "Remove
from dataset", asked first in the Confirm dialog; the files stay in their folders. A
synced dataset says what sync does with a file removed by hand (it stays out). Each
file's folder is named. An Admin of the dataset manages who has access ("Manage
access", as a folder's) and deletes it; a User of it sees who has access, read-only."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Browser, Locator, Page, expect

from shared.kit.stack import Stack
from tests.browser.conftest import items, make_folder, sign_in, unique, upload
from tests.e2e.support import CONSISTENCY, text


def members(api: httpx.Client, dataset: dict[str, Any]) -> set[str]:
    listed = api.get(f"/v1/datasets/{dataset['id']}/files", params={"limit": 1000})
    assert listed.status_code == 200, listed.text
    return {f["name"] for f in listed.json()["items"]}


def cell(grid: Locator, name: str) -> Locator:
    """A row's Kind cell: a click on the row that is not on its name's or folder's link."""
    return grid.get_by_role("row", name=name).locator("td").nth(2)


def test_choose_files_of_a_dataset_and_remove_them_from_it(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("set-source"))
    names = ["a.txt", "b.txt", "c.txt", "d.txt"]
    files = upload(api, folder["id"], *((n, text(n)) for n in names))
    dataset = api.post("/v1/datasets", json={"name": unique("Training")}).json()
    added = api.post(
        f"/v1/datasets/{dataset['id']}/files", json={"file_ids": [f["id"] for f in files]}
    )
    assert added.status_code == 200, added.text

    page.goto(f"/datasets/{dataset['id']}")
    region = page.get_by_role("region", name=f"Dataset {dataset['name']}")
    grid = region.get_by_role("grid", name="Files in the dataset")
    actions = region.get_by_role("toolbar", name="Dataset actions")
    remove = actions.get_by_role("button", name="Remove from dataset")
    expect(grid.get_by_role("row", name="d.txt")).to_be_visible()
    expect(remove).to_be_disabled()

    # Ctrl+A and Escape, as in a folder.
    grid.focus()
    page.keyboard.press("Control+a")
    expect(actions).to_contain_text("4 selected")
    page.keyboard.press("Escape")
    expect(actions).to_contain_text("0 selected")

    # Click, Shift-click a range, Ctrl-click out and in again.
    cell(grid, "a.txt").click()
    cell(grid, "c.txt").click(modifiers=["Shift"])
    expect(actions).to_contain_text("3 selected")
    cell(grid, "b.txt").click(modifiers=["Control"])
    expect(grid.get_by_role("row", name="b.txt")).to_have_attribute("aria-selected", "false")
    expect(actions).to_contain_text("2 selected")
    cell(grid, "b.txt").click(modifiers=["Control"])
    for name in ("a.txt", "b.txt", "c.txt"):
        expect(grid.get_by_role("row", name=name)).to_have_attribute("aria-selected", "true")
    expect(grid.get_by_role("row", name="d.txt")).to_have_attribute("aria-selected", "false")

    # Asked first: how many, which, from which dataset; Cancel has the focus; Escape keeps.
    remove.click()
    question = page.get_by_role(
        "alertdialog", name=f"Remove 3 files from dataset {dataset['name']}?"
    )
    expect(question).to_contain_text("a.txt, b.txt and c.txt")
    expect(question).to_contain_text("The files stay in their folders")
    expect(question.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(question).to_have_count(0)
    expect(remove).to_be_focused()
    assert members(api, dataset) == set(names)

    remove.click()
    question.get_by_role("button", name="Remove from dataset").click()
    expect(question).to_have_count(0)
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(
        f"Removed 3 files from {dataset['name']}"
    )
    expect(grid.get_by_role("row", name="a.txt")).to_have_count(0)
    expect(grid.get_by_role("row", name="d.txt")).to_be_visible()
    expect(region).to_contain_text("1 file")
    expect(grid).to_be_focused()  # the button that asked is disabled now: nothing chosen
    assert members(api, dataset) == {"d.txt"}
    # Only the links went: the files are still in their folder.
    assert {i["name"] for i in items(api, folder["id"])} == set(names)

    page.reload()
    expect(grid.get_by_role("row", name="d.txt")).to_be_visible()
    expect(grid.get_by_role("row", name="b.txt")).to_have_count(0)

    # One file, by the keyboard: Delete asks, naming it.
    grid.focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Delete")
    question = page.get_by_role("alertdialog", name=f"Remove d.txt from dataset {dataset['name']}?")
    expect(question).to_contain_text("The file stays in its folder")
    question.get_by_role("button", name="Remove from dataset").click()
    expect(region.get_by_text("No files yet")).to_be_visible()
    # The list went with its last file: the focus is on the page's heading, not lost.
    expect(region.get_by_role("heading", name=f"Dataset {dataset['name']}")).to_be_focused()
    assert members(api, dataset) == set()


def test_a_synced_dataset_says_a_file_removed_by_hand_stays_out(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("synced-source"))
    upload(api, folder["id"], ("kept.txt", text("k\n")), ("dropped.txt", text("d\n")))
    dataset = api.post(
        "/v1/datasets", json={"name": unique("Synced"), "synced_folder_id": folder["id"]}
    ).json()

    page.goto(f"/datasets/{dataset['id']}")
    region = page.get_by_role("region", name=f"Dataset {dataset['name']}")
    grid = region.get_by_role("grid", name="Files in the dataset")
    cell(grid, "dropped.txt").click()
    region.get_by_role("button", name="Remove from dataset").click()
    question = page.get_by_role(
        "alertdialog", name=f"Remove dropped.txt from dataset {dataset['name']}?"
    )
    expect(question).to_contain_text(f"synced with the folder {folder['name']}")
    expect(question).to_contain_text("stays out of it")
    question.get_by_role("button", name="Remove from dataset").click()
    expect(grid.get_by_role("row", name="dropped.txt")).to_have_count(0)

    # What the dialog said: the sync does not bring it back; a new file still joins
    # (once the datasets context has read the upload: its token waits for that).
    later = api.post(
        f"/v1/folders/{folder['id']}/files", files=[("file", ("later.txt", text("l\n")))]
    )
    assert later.status_code == 201, later.text
    joined = api.get(
        f"/v1/datasets/{dataset['id']}/files",
        headers={CONSISTENCY: later.headers[CONSISTENCY]},
    )
    assert {f["name"] for f in joined.json()["items"]} == {"kept.txt", "later.txt"}
    page.reload()
    expect(grid.get_by_role("row", name="later.txt")).to_be_visible()
    expect(grid.get_by_role("row", name="kept.txt")).to_be_visible()
    expect(grid.get_by_role("row", name="dropped.txt")).to_have_count(0)
    assert members(api, dataset) == {"kept.txt", "later.txt"}


def test_a_user_of_a_dataset_chooses_files_but_is_offered_no_removal(
    page: Page, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("set-viewed"))
    [seen] = upload(api, folder["id"], ("seen.txt", text("s\n")))
    dataset = api.post("/v1/datasets", json={"name": unique("Shared")}).json()
    api.post(f"/v1/datasets/{dataset['id']}/files", json={"file_ids": [seen["id"]]})
    email = f"{unique('set-user')}@example.com"
    made = api.post("/v1/users", json={"email": email, "name": "Set user", "org_role": "member"})
    assert made.status_code == 201, made.text
    for path in (f"/v1/folders/{folder['id']}", f"/v1/datasets/{dataset['id']}"):
        shared = api.post(f"{path}/collaborators", json={"emails": [email], "role": "user"})
        assert shared.status_code == 200, shared.text
    sign_in(page, made.json()["api_key"])

    page.goto(f"/datasets/{dataset['id']}")
    actions = page.get_by_role("toolbar", name="Dataset actions")
    expect(actions).to_contain_text("You can view this dataset, not change it.")
    expect(actions.get_by_role("button", name="Remove from dataset")).to_have_count(0)
    grid = page.get_by_role("grid", name="Files in the dataset")
    cell(grid, "seen.txt").click()
    page.keyboard.press("Delete")
    expect(page.get_by_role("alertdialog")).to_have_count(0)
    assert members(api, dataset) == {"seen.txt"}


def test_files_removed_elsewhere_meanwhile_are_left_out_and_the_rest_removed(
    admin_page: Page, api: httpx.Client
) -> None:
    """The page removes its choice in one request (all or none); one of the files gone
    from the dataset since the page was shown (another tab) does not stop the others."""
    page = admin_page
    folder = make_folder(api, unique("set-meanwhile"))
    files = upload(api, folder["id"], ("x.txt", text("x")), ("y.txt", text("y")))
    dataset = api.post("/v1/datasets", json={"name": unique("Meanwhile")}).json()
    ids = [f["id"] for f in files]
    assert api.post(f"/v1/datasets/{dataset['id']}/files", json={"file_ids": ids}).is_success

    page.goto(f"/datasets/{dataset['id']}")
    region = page.get_by_role("region", name=f"Dataset {dataset['name']}")
    grid = region.get_by_role("grid", name="Files in the dataset")
    expect(grid.get_by_role("row", name="y.txt")).to_be_visible()
    grid.focus()
    page.keyboard.press("Control+a")
    gone = api.delete(f"/v1/datasets/{dataset['id']}/files/{ids[0]}")
    assert gone.status_code == 204, gone.text

    region.get_by_role("button", name="Remove from dataset").click()
    question = page.get_by_role(
        "alertdialog", name=f"Remove 2 files from dataset {dataset['name']}?"
    )
    question.get_by_role("button", name="Remove from dataset").click()
    expect(question).to_have_count(0)
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(
        f"Removed 1 file from {dataset['name']}"
    )
    expect(region.get_by_text("No files yet")).to_be_visible()
    assert members(api, dataset) == set()


def roles(api: httpx.Client, dataset: dict[str, Any]) -> dict[str, str]:
    listed = api.get(f"/v1/datasets/{dataset['id']}/collaborators")
    assert listed.status_code == 200, listed.text
    return {c["email"]: c["role"] for c in listed.json()["items"]}


def until(check: Callable[[], bool], what: str) -> None:
    """What the page did, once the API says so (a write made by the browser, whose
    consistency token the test does not have)."""
    deadline = time.monotonic() + 15
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)  # ask again, within the deadline


def test_an_admin_manages_who_has_access_to_a_dataset_then_deletes_it(
    admin_page: Page, api: httpx.Client, browser: Browser, platform: Stack
) -> None:
    page = admin_page
    folder = make_folder(api, unique("set-access"))
    files = upload(api, folder["id"], ("kept.txt", text("k\n")))
    dataset = api.post("/v1/datasets", json={"name": unique("Shared set")}).json()
    added = api.post(f"/v1/datasets/{dataset['id']}/files", json={"file_ids": [files[0]["id"]]})
    assert added.status_code == 200, added.text
    made = api.post(
        "/v1/users",
        json={
            "email": f"{unique('set-member')}@example.com",
            "name": "Member",
            "org_role": "member",
        },
    )
    assert made.status_code == 201, made.text
    member = made.json()
    email = member["email"]

    page.goto(f"/datasets/{dataset['id']}")
    region = page.get_by_role("region", name=f"Dataset {dataset['name']}")
    grid = region.get_by_role("grid", name="Files in the dataset")
    # Where each file lives: its folder, by name, a link to it.
    row = grid.get_by_role("row", name="kept.txt")
    expect(row.get_by_role("link", name=folder["name"])).to_be_visible()

    # Invite: a role and an email, as for a folder.
    manage = region.get_by_role("button", name="Manage access")
    manage.click()
    dialog = page.get_by_role("dialog", name=f"Manage access: {dataset['name']}")
    expect(dialog.get_by_role("tab", name="Invite")).to_have_attribute("aria-selected", "true")
    dialog.get_by_label("Role").select_option("editor")
    dialog.get_by_label("Emails").fill(email)
    dialog.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(
        "Added 1 person as Editor"
    )
    until(lambda: roles(api, dataset).get(email) == "editor", "shared as Editor")

    # Manage: the role changed from the list; the creator's row is locked.
    dialog.get_by_role("tab", name="Manage").click()
    expect(dialog.get_by_role("row", name="admin@files.local")).to_contain_text("Admin")
    expect(
        dialog.get_by_role("row", name="admin@files.local").get_by_role("combobox")
    ).to_have_count(0)
    dialog.get_by_label(f"Role of {email}").select_option("user")
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(f"{email} is now User")
    until(lambda: roles(api, dataset) == {"admin@files.local": "admin", email: "user"}, "User")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(manage).to_be_focused()

    # A User of the dataset, on a phone: who has access, read-only; no Delete.
    context = browser.new_context(
        base_url=platform.gateway_url, viewport={"width": 390, "height": 800}
    )
    context.set_default_timeout(10_000)
    try:
        theirs = context.new_page()
        sign_in(theirs, member["api_key"])
        theirs.goto(f"/datasets/{dataset['id']}")
        their_region = theirs.get_by_role("region", name=f"Dataset {dataset['name']}")
        their_region.get_by_role("button", name="Manage access").click()
        expect(their_region.get_by_role("button", name="Delete dataset")).to_have_count(0)
        read_only = theirs.get_by_role("dialog", name=f"Manage access: {dataset['name']}")
        expect(read_only.get_by_role("row", name=email)).to_contain_text("User")
        expect(read_only).to_contain_text("only an Admin of this dataset changes who has access")
        expect(read_only.get_by_role("tab", name="Invite")).to_have_count(0)
        expect(read_only.get_by_role("combobox")).to_have_count(0)
        expect(read_only.get_by_role("button", name=re.compile("^Remove"))).to_have_count(0)
        box = read_only.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        width = theirs.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
    finally:
        context.close()

    # The Admin takes their access away, asked first.
    manage.click()
    dialog.get_by_role("tab", name="Manage").click()
    dialog.get_by_role("button", name=f"Remove {email}").click()
    question = page.get_by_role(
        "alertdialog", name=f"Remove {email} from dataset {dataset['name']}?"
    )
    question.get_by_role("button", name="Remove access").click()
    expect(dialog.get_by_role("row", name=email)).to_have_count(0)
    until(lambda: roles(api, dataset) == {"admin@files.local": "admin"}, "access removed")
    dialog.get_by_role("button", name="Close").click()

    # Delete dataset: asked first, the files stay; back on the list, without it.
    region.get_by_role("button", name="Delete dataset").click()
    question = page.get_by_role("alertdialog", name=f"Delete dataset {dataset['name']}?")
    expect(question).to_contain_text("Its file stays in its folder")
    question.get_by_role("button", name="Delete dataset").click()
    expect(page).to_have_url(re.compile(r"/datasets$"))
    listed = page.get_by_role("region", name="Datasets")
    expect(listed.get_by_role("heading", name="Datasets")).to_be_focused()
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(
        f"Deleted dataset {dataset['name']}"
    )
    expect(listed).not_to_contain_text("Loading")
    expect(listed.get_by_role("link", name=dataset["name"])).to_have_count(0)
    assert api.get(f"/v1/datasets/{dataset['id']}").status_code == 404
    assert {i["name"] for i in items(api, folder["id"])} == {"kept.txt"}


def test_a_dataset_of_thousands_of_files_draws_only_the_rows_in_view(
    admin_page: Page, api: httpx.Client
) -> None:
    """Every one of 5,000 rows drawn took the page 15 s to show (and 2 s a Ctrl+A):
    past a few hundred files only the rows in view are in the page, and the keyboard
    still reaches every one."""
    page = admin_page
    folder = make_folder(api, unique("thousands"))
    for start in range(0, 1_500, 300):
        upload(
            api,
            folder["id"],
            *[(f"m{n:04d}.txt", text(f"{n}\n")) for n in range(start, start + 300)],
        )
    dataset = api.post(
        "/v1/datasets", json={"name": unique("Thousands"), "synced_folder_id": folder["id"]}
    ).json()
    assert dataset["file_count"] == 1_500

    page.goto(f"/datasets/{dataset['id']}")
    region = page.get_by_role("region", name=f"Dataset {dataset['name']}")
    grid = region.get_by_role("grid", name="Files in the dataset")
    expect(grid.get_by_role("row", name="m0000.txt")).to_be_visible()
    assert grid.locator("tbody tr[aria-label]").count() < 100
    expect(grid).to_have_attribute("aria-rowcount", "1501")

    grid.focus()
    page.keyboard.press("Control+a")
    expect(region.get_by_text("1,500 selected")).to_be_visible()
    page.keyboard.press("Escape")
    page.keyboard.press("End")
    last = grid.get_by_role("row", name="m1499.txt")
    expect(last).to_be_in_viewport()
    expect(last).to_have_attribute("aria-selected", "true")
    expect(grid.get_by_role("row", name="m0000.txt")).to_have_count(0)
    page.keyboard.press("Home")
    expect(grid.get_by_role("row", name="m0000.txt")).to_be_in_viewport()

    # Scrolled away with the wheel, the row a key acts on is brought back into view, and
    # the grid names no row that is not drawn.
    first = grid.get_by_role("row", name="m0000.txt")
    grid.hover()
    page.mouse.wheel(0, 20_000)
    expect(first).to_have_count(0)
    expect(grid).not_to_have_attribute("aria-activedescendant", re.compile("."))
    page.keyboard.press(" ")
    expect(first).to_be_in_viewport()
    expect(first).to_have_attribute("aria-selected", "false")
    expect(grid).to_have_attribute("aria-activedescendant", re.compile("^member-"))
