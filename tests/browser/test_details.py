"""The details panel: a folder's summary and "Manage access" (Invite and Manage tabs,
admins locked, a person removed only once the admin confirms); a file's facts and "Linked
to" (View, Remove once confirmed); history from the audit."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.support import png, text


def _user(api: httpx.Client, prefix: str) -> dict:
    answer = api.post(
        "/v1/users",
        json={
            "email": f"{unique(prefix)}@example.com",
            "name": prefix.title(),
            "org_role": "member",
        },
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_manage_access_invite_change_remove_and_admins_locked(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("shared"))
    ann, bob = _user(api, "ann"), _user(api, "bob")
    page.goto(f"/folders/{folder['id']}")
    details = page.get_by_role("complementary", name="Details")
    expect(details).to_contain_text("Your role")
    details.get_by_role("button", name="Manage access").click()
    dialog = page.get_by_role("dialog", name=f"Manage access: {folder['name']}")
    expect(dialog.get_by_role("tab", name="Invite")).to_have_attribute("aria-selected", "true")
    dialog.get_by_label("Role").select_option("editor")
    emails = dialog.get_by_label("Emails")
    emails.fill(ann["email"])
    emails.press("Enter")
    emails.fill(bob["email"])
    dialog.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Added 2 people as Editor")
    roles = {
        c["email"]: c["role"]
        for c in api.get(f"/v1/folders/{folder['id']}/collaborators").json()["items"]
    }
    assert roles[ann["email"]] == "editor" and roles[bob["email"]] == "editor"

    dialog.get_by_role("tab", name="Manage").click()
    dialog.get_by_label(f"Role of {ann['email']}").select_option("user")
    expect(dialog.get_by_label(f"Role of {ann['email']}")).to_have_value("user")
    # Each change is confirmed in words, as the invite is.
    expect(page.get_by_role("status")).to_contain_text(f"{ann['email']} is now User")

    # Removing a person asks first, naming who and from where; Cancel and Escape keep
    # them, and give the focus back to their "Remove".
    remove_bob = dialog.get_by_role("button", name=f"Remove {bob['email']}")
    question = f"Remove {bob['email']} from folder {folder['name']}?"
    confirm = page.get_by_role("alertdialog", name=question)
    remove_bob.click()
    expect(confirm).to_contain_text("They will lose access to it and everything in it.")
    expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_have_count(0)
    expect(remove_bob).to_be_focused()
    remove_bob.press("Enter")
    expect(confirm).to_be_visible()
    page.keyboard.press("Escape")
    expect(confirm).to_have_count(0)
    expect(dialog).to_be_visible()  # Escape closed the question, not Manage access
    expect(remove_bob).to_be_focused()
    emails_now = {
        c["email"] for c in api.get(f"/v1/folders/{folder['id']}/collaborators").json()["items"]
    }
    assert bob["email"] in emails_now

    remove_bob.click()
    confirm.get_by_role("button", name="Remove access").click()
    expect(confirm).to_have_count(0)
    expect(remove_bob).to_be_hidden()
    expect(page.get_by_role("status")).to_contain_text(
        f"Removed {bob['email']} from {folder['name']}"
    )
    # The row went with its button: the focus is on the tab of the list it was in.
    expect(dialog.get_by_role("tab", name="Manage")).to_be_focused()
    admin = dialog.get_by_role("row", name="admin@files.local")
    expect(admin).to_contain_text("Admin")
    expect(admin.get_by_role("combobox")).to_have_count(0)
    expect(admin.get_by_role("button", name="Remove admin@files.local")).to_have_count(0)
    # Why, in words on the page (what a screen reader reads), not only a lock's tooltip.
    expect(
        admin.get_by_text("Locked: an Admin cannot be removed, and their role cannot be changed.")
    ).to_be_visible()
    roles = {
        c["email"]: c["role"]
        for c in api.get(f"/v1/folders/{folder['id']}/collaborators").json()["items"]
    }
    assert roles == {"admin@files.local": "admin", ann["email"]: "user"}


def test_file_facts_linked_to_view_and_remove_and_history(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("facts"))
    [image] = upload(api, folder["id"], ("shot.png", png(32, 24)))
    upload(api, folder["id"], ("other.txt", text()))
    first = api.post("/v1/datasets", json={"name": unique("first")}).json()
    second = api.post("/v1/datasets", json={"name": unique("second")}).json()
    for d in (first, second):
        api.post(f"/v1/datasets/{d['id']}/files", json={"file_ids": [image["id"]]})

    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("row", name="shot.png").click()
    details = page.get_by_role("complementary", name="Details")
    expect(details).to_contain_text("32 \u00d7 24")
    expect(details).to_contain_text("Image")
    details.get_by_role("tab", name="Linked to").click()
    linked = details.get_by_role("list", name="Datasets")
    expect(linked.get_by_role("listitem")).to_have_count(2)
    # Removing the file from a dataset asks first, naming the file and the dataset.
    remove = linked.get_by_role("listitem", name=second["name"]).get_by_role(
        "button", name="Remove"
    )
    confirm = page.get_by_role(
        "alertdialog", name=f"Remove shot.png from dataset {second['name']}?"
    )
    remove.click()
    expect(confirm).to_contain_text("only this link goes")
    page.keyboard.press("Escape")
    expect(confirm).to_have_count(0)
    expect(remove).to_be_focused()
    expect(linked.get_by_role("listitem")).to_have_count(2)
    assert len(api.get(f"/v1/files/{image['id']}/datasets").json()["items"]) == 2

    remove.click()
    confirm.get_by_role("button", name="Remove from dataset").click()
    expect(linked.get_by_role("listitem")).to_have_count(1)
    expect(page.get_by_role("status")).to_contain_text(f"Removed shot.png from {second['name']}")
    expect(details.get_by_role("tab", name="Linked to")).to_be_focused()
    assert [d["id"] for d in api.get(f"/v1/files/{image['id']}/datasets").json()["items"]] == [
        first["id"]
    ]
    page.reload()  # the link is gone on the platform, not only from the page
    page.get_by_role("row", name="shot.png").click()
    details.get_by_role("tab", name="Linked to").click()
    expect(linked.get_by_role("listitem")).to_have_count(1)
    expect(linked.get_by_role("listitem", name=second["name"])).to_have_count(0)
    linked.get_by_role("listitem", name=first["name"]).get_by_role("button", name="View").click()
    expect(page).to_have_url(f"/datasets/{first['id']}")
    expect(page.get_by_role("link", name="shot.png")).to_be_visible()

    # History: who did what, when.
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("row", name="shot.png").click()
    details.get_by_role("tab", name="History").click()
    history = details.get_by_role("list", name="History")
    expect(history).to_contain_text("File uploaded")
    expect(history).to_contain_text("Administrator (you)")
    audit = api.get("/v1/audit", params={"subject_id": image["id"]}).json()["items"]
    # The upload's page (FilesUploaded) names the file; its history says "File uploaded".
    assert any(
        e["type"] == "catalog.FilesUploaded" and image["id"] in e["data"]["file_ids"] for e in audit
    )


def test_the_datasets_page_lists_datasets_and_opens_one(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("listed"))
    [one] = upload(api, folder["id"], ("one.txt", text("1\n")))
    plain = api.post("/v1/datasets", json={"name": unique("plain"), "description": "mine"}).json()
    api.post(f"/v1/datasets/{plain['id']}/files", json={"file_ids": [one["id"]]})
    synced = api.post(
        "/v1/datasets", json={"name": unique("synced"), "synced_folder_id": folder["id"]}
    ).json()

    page.goto("/")
    page.get_by_role("link", name="Datasets", exact=True).click()
    expect(page).to_have_url("/datasets")
    listed = page.get_by_role("region", name="Datasets")
    expect(listed.get_by_role("row", name=plain["name"])).to_contain_text("1 file")
    expect(listed.get_by_role("row", name=plain["name"])).to_contain_text("mine")
    # A synced dataset names the folder it follows (not "its folder"), on its page too.
    listed.get_by_role("row", name=synced["name"]).get_by_role("link", name=folder["name"]).click()
    expect(page).to_have_url(f"/folders/{folder['id']}")
    page.go_back()
    listed.get_by_role("link", name=synced["name"]).click()
    dataset = page.get_by_role("region", name=f"Dataset {synced['name']}")
    expect(dataset).to_contain_text(f"1 file, synced with the folder {folder['name']}")
    # The file's row names its folder too: the one followed is the sentence's link.
    expect(
        dataset.get_by_role("row", name="one.txt").get_by_role("link", name=folder["name"])
    ).to_be_visible()
    dataset.locator("p", has_text="synced with the folder").get_by_role(
        "link", name=folder["name"]
    ).click()
    expect(page).to_have_url(f"/folders/{folder['id']}")
    page.go_back()
    page.go_back()
    listed.get_by_role("link", name=plain["name"]).click()
    expect(page).to_have_url(f"/datasets/{plain['id']}")
    expect(page.get_by_role("link", name="one.txt")).to_be_visible()
    page.reload()  # its own address
    expect(page.get_by_role("link", name="one.txt")).to_be_visible()
    assert page.request.get("/datasets").status == 200


def test_edit_description_looks_like_an_action_apart_from_the_facts(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("described"), description="What is in here")
    page.goto(f"/folders/{folder['id']}")
    details = page.get_by_role("complementary", name="Details")
    edit = details.get_by_role("button", name="Edit description")
    expect(edit).to_be_visible()
    # Not a bold heading in the text's colour, glued to the facts below: the links' colour,
    # and a gap before "Kind".
    link = page.get_by_role("navigation", name="Breadcrumb").get_by_role("link", name="Files")
    link_colour = link.evaluate("e => getComputedStyle(e).color")
    assert edit.evaluate("e => getComputedStyle(e).color") == link_colour
    assert edit.evaluate("e => getComputedStyle(e).fontWeight") == "400"
    below = details.get_by_text("Kind", exact=True).bounding_box()
    box = edit.bounding_box()
    assert box is not None and below is not None
    assert below["y"] - (box["y"] + box["height"]) >= 8, (box, below)
    edit.click()
    expect(details.get_by_label("Description")).to_have_value("What is in here")
