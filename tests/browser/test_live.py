"""What others change shows on the page a person has open, without a reload: a synced
dataset following its folder, a file's "Linked to", a role changed or access removed
(the page says the folder is no longer theirs, not a stale list and an id), and a large
folder read again keeps the selection made in it."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Browser, Page, expect

from shared.kit.stack import Stack
from tests.browser.conftest import _context, make_folder, sign_in, unique, upload
from tests.e2e.support import png, text


def test_a_synced_dataset_and_a_files_links_follow_changes_made_elsewhere(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("followed"))
    elsewhere = make_folder(api, unique("elsewhere"))
    [first] = upload(api, folder["id"], ("first.png", png(8, 8)))
    dataset = api.post(
        "/v1/datasets", json={"name": unique("Follows"), "synced_folder_id": folder["id"]}
    ).json()

    page.goto(f"/datasets/{dataset['id']}")
    region = page.get_by_role("region", name=f"Dataset {dataset['name']}")
    grid = region.get_by_role("grid", name="Files in the dataset")
    expect(grid.get_by_role("row", name="first.png")).to_be_visible()

    # Another person's upload into the folder joins the dataset: the open page shows it.
    upload(api, folder["id"], ("later.txt", text("l\n")))
    expect(grid.get_by_role("row", name="later.txt")).to_be_visible()
    expect(region).to_contain_text("2 files, synced with the folder")

    # The file's own page, open in a second tab: its "Linked to" loses the dataset when
    # the file is moved out of the synced folder elsewhere.
    file_page = page.context.new_page()
    file_page.goto(f"/files/{first['id']}")
    details = file_page.get_by_role("complementary", name="Details")
    details.get_by_role("tab", name="Linked to").click()
    expect(details.get_by_role("listitem", name=dataset["name"])).to_be_visible()
    moved = api.post(
        "/v1/move", json={"file_ids": [first["id"]], "target_folder_id": elsewhere["id"]}
    )
    assert moved.status_code == 200, moved.text
    expect(details.get_by_text("Not linked to any dataset.")).to_be_visible()
    expect(file_page.get_by_role("link", name=elsewhere["name"])).to_be_visible()

    expect(grid.get_by_role("row", name="first.png")).to_have_count(0)
    expect(region).to_contain_text("1 file, synced with the folder")


def test_a_member_sees_a_role_changed_and_access_removed_on_the_page_they_have_open(
    browser: Browser, platform: Stack, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("theirs-for-now"))
    upload(api, folder["id"], ("a.png", png(8, 8)))
    member = api.post(
        "/v1/users",
        json={"email": f"{unique('member')}@example.com", "name": "Member", "org_role": "member"},
    ).json()
    added = api.post(
        f"/v1/folders/{folder['id']}/collaborators",
        json={"emails": [member["email"]], "role": "editor"},
    )
    assert added.status_code == 200, added.text

    context = _context(browser, platform)
    try:
        page = context.new_page()
        sign_in(page, member["api_key"])
        page.goto(f"/folders/{folder['id']}")
        expect(page.get_by_role("button", name="+ Upload files")).to_be_visible()
        tree = page.get_by_role("tree")
        expect(tree.get_by_role("treeitem", name=folder["name"])).to_be_visible()

        # Made a User: the page stops offering what would now be refused.
        changed = api.patch(
            f"/v1/folders/{folder['id']}/collaborators/{member['id']}", json={"role": "user"}
        )
        assert changed.status_code == 200, changed.text
        expect(page.get_by_role("button", name="+ Upload files")).to_have_count(0)
        expect(page.get_by_text("You can view this folder, not change it.")).to_be_visible()

        # Removed: the page says so, in words, and no longer lists what they cannot see.
        removed = api.delete(f"/v1/folders/{folder['id']}/collaborators/{member['id']}")
        assert removed.status_code == 204, removed.text
        expect(page.get_by_role("heading", name="Folder not found")).to_be_visible()
        expect(page.get_by_role("alert").filter(has_text="not shared with you")).to_be_visible()
        expect(page.get_by_text("a.png")).to_have_count(0)
        expect(tree.get_by_role("treeitem", name=folder["name"])).to_have_count(0)
        expect(page.get_by_text(re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-"))).to_have_count(0)
    finally:
        context.close()


def test_a_large_folder_read_again_keeps_its_selection(signed_in: Page, api: httpx.Client) -> None:
    """A folder of more than one page (1,000 items) read again after a change made
    elsewhere: the list is replaced once whole, so every item chosen stays chosen."""
    page = signed_in
    folder = make_folder(api, unique("many"))
    for start in range(0, 1_200, 300):
        upload(
            api,
            folder["id"],
            *[(f"f{n:04d}.txt", text(f"{n}\n")) for n in range(start, start + 300)],
        )

    page.goto(f"/folders/{folder['id']}")
    count = page.locator("p.count")
    expect(count).to_have_text("1200 items")
    page.get_by_role("grid", name="Folder contents").focus()
    page.keyboard.press("Control+a")
    expect(count).to_have_text("1200 items, 1200 selected")

    upload(api, folder["id"], ("newcomer.txt", text("n\n")))
    expect(count).to_have_text("1201 items, 1200 selected")
