"""The keyboard alone: a dialog or a menu that closes gives the focus back to what opened
it (the toolbar's button, the folder's grid), so the person goes on from where they
were instead of from the top of the page."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.support import text


def test_focus_comes_back_after_a_dialog_or_a_menu_closes(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("keys"))
    upload(api, folder["id"], ("first.txt", text("1\n")), ("second.txt", text("2\n")))
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    expect(grid.get_by_role("row", name="second.txt")).to_be_visible()

    # A toolbar button's dialog, closed with Escape: the button has the focus again.
    new_folder = page.get_by_role("button", name="+ New folder")
    new_folder.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="New folder")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(new_folder).to_be_focused()

    # The item's menu (Shift+F10), closed with Escape: back in the grid, whose keys work.
    grid.focus()
    page.keyboard.press("ArrowDown")
    expect(grid.get_by_role("row", name="first.txt")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Shift+F10")
    menu = page.get_by_role("menu", name="Actions for first.txt")
    expect(menu.get_by_role("menuitem", name="Open")).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(grid).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(grid.get_by_role("row", name="second.txt")).to_have_attribute("aria-selected", "true")

    # A dialog opened from the menu (Rename), cancelled: back in the grid too.
    page.keyboard.press("Shift+F10")
    menu = page.get_by_role("menu", name="Actions for second.txt")
    menu.get_by_role("menuitem", name="Rename").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Rename file")
    expect(dialog.get_by_label("Name")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(grid).to_be_focused()
    page.keyboard.press("F2")
    expect(page.get_by_role("dialog", name="Rename file")).to_be_visible()


def test_the_first_arrow_key_chooses_the_first_item_in_both_views(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("first-key"))
    upload(api, folder["id"], *((f"f{n}.txt", text(f"{n}\n")) for n in range(6)))
    page.goto(f"/folders/{folder['id']}")
    grid = page.get_by_role("grid", name="Folder contents")
    for view in ("List", "Grid"):
        page.get_by_role("button", name=view).click()
        expect(grid.get_by_role("row", name="f5.txt")).to_be_visible()
        grid.focus()
        page.keyboard.press("ArrowDown")
        expect(grid.get_by_role("row", name="f0.txt")).to_have_attribute("aria-selected", "true")
        expect(page.get_by_text("6 items, 1 selected")).to_be_visible()
        page.reload()


def test_the_menu_key_after_select_all_opens_the_selections_menu(
    admin_page: Page, api: httpx.Client
) -> None:
    """Tab to the grid, Ctrl+A, Shift+F10: nothing is active yet, and the menu used to
    need an active item, so the keyboard had no way to "Add to dataset" the lot."""
    page = admin_page
    folder = make_folder(api, unique("keyed"))
    upload(api, folder["id"], ("one.txt", text("1\n")), ("two.txt", text("2\n")))

    page.goto(f"/folders/{folder['id']}")
    grid = page.get_by_role("grid", name="Folder contents")
    expect(grid.get_by_role("row")).to_have_count(2)
    grid.focus()
    page.keyboard.press("Control+a")
    page.keyboard.press("Shift+F10")
    menu = page.get_by_role("menu", name="Actions for 2 items")
    expect(menu.get_by_role("menuitem", name="Add to dataset")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="Add to dataset")).to_be_visible()


def test_a_suggested_person_is_chosen_with_the_arrow_keys(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("invite-by-keys"))
    email = f"{unique('kay')}@example.com"
    made = api.post("/v1/users", json={"email": email, "name": "Kay", "org_role": "member"})
    assert made.status_code == 201, made.text

    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="Manage access").click()
    dialog = page.get_by_role("dialog", name=f"Manage access: {folder['name']}")
    emails = dialog.get_by_role("combobox", name="Emails")
    emails.fill(email[:8])
    expect(emails).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("ArrowDown")
    option = dialog.get_by_role("option", name=email)
    expect(option).to_have_attribute("aria-selected", "true")
    expect(emails).to_have_attribute("aria-activedescendant", option.get_attribute("id") or "")
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("list", name="People to add")).to_contain_text(email)
    expect(emails).to_have_value("")

    # Escape closes the suggestions, not the dialog.
    emails.fill("admin@")
    expect(emails).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(emails).to_have_attribute("aria-expanded", "false")
    expect(dialog).to_be_visible()
    expect(emails).to_have_value("admin@")  # what was typed stays
    emails.fill("")

    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Add", exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("list", name="People to add")).to_have_count(0)
    people = api.get(f"/v1/folders/{folder['id']}/collaborators").json()["items"]
    assert {p["email"]: p["role"] for p in people}.get(email) == "user"


def test_the_focus_is_kept_after_an_upload_and_after_a_new_top_level_folder(
    admin_page: Page, api: httpx.Client
) -> None:
    """ "Upload" is disabled while it sends (and once all is sent): its focus fell to the
    page, and the keyboard started again from the top. It goes to "Close" once done. A
    folder made at the top level opens its page, where the button that asked is not:
    the keyboard goes on from the new page's heading (it too fell to the page)."""
    page = admin_page
    folder = make_folder(api, unique("kept-focus"))
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="+ Upload files").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Upload files")
    dialog.get_by_label("Files", exact=True).set_input_files(
        [{"name": "sent.txt", "mimeType": "text/plain", "buffer": text("sent\n")}]
    )
    dialog.get_by_role("button", name="Upload", exact=True).focus()
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("listitem", name="sent.txt")).to_contain_text("Uploaded")
    close = dialog.get_by_role("button", name="Close", exact=True).last
    expect(close).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_have_count(0)
    expect(page.get_by_role("button", name="+ Upload files")).to_be_focused()

    name = unique("made-top")
    page.goto("/")
    page.get_by_role("button", name="+ New folder").focus()
    page.keyboard.press("Enter")
    page.get_by_role("dialog", name="New folder").get_by_label("Name").fill(name)
    page.keyboard.press("Enter")
    heading = page.get_by_role("heading", name=name, level=1)
    expect(heading).to_be_visible()
    expect(heading).to_be_focused()


def test_the_focus_stays_on_add_in_add_to_dataset_and_manage_access(
    admin_page: Page, api: httpx.Client
) -> None:
    """ "Add" (to a dataset, or people to a folder) is disabled while it is asked: its
    focus fell to the page. It comes back to "Add" (now "Added"), or to "Emails" once
    the people are added (nothing left to add). A refusal is said in the API's words."""
    page = admin_page
    folder = make_folder(api, unique("focus-add"))
    upload(api, folder["id"], ("kept.txt", text("k\n")))
    dataset = api.post("/v1/datasets", json={"name": unique("focus-ds")}).json()
    email = f"{unique('erin')}@example.com"
    made = api.post("/v1/users", json={"email": email, "name": "Erin", "org_role": "member"})
    assert made.status_code == 201, made.text
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="kept.txt").click(button="right")
    page.get_by_role("menuitem", name="Add to dataset").click()
    dialog = page.get_by_role("dialog", name="Add to dataset")
    add = dialog.get_by_role("listitem", name=dataset["name"]).get_by_role("button")
    add.focus()
    page.keyboard.press("Enter")
    expect(add).to_have_text("Added")
    expect(add).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    page.keyboard.press("Escape")  # nothing chosen: the folder's details
    details = page.get_by_role("complementary", name="Details")
    details.get_by_role("button", name="Manage access").click()
    dialog = page.get_by_role("dialog", name=f"Manage access: {folder['name']}")
    emails = dialog.get_by_role("combobox", name="Emails")
    emails.fill("nobody-here@example.com")
    invite = dialog.get_by_role("button", name="Add", exact=True)
    invite.focus()
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("alert")).to_have_text(
        "no user has these emails: nobody-here@example.com"
    )
    expect(invite).to_be_focused()
    # The refusal is the Invite tab's: not shown under Manage.
    dialog.get_by_role("tab", name="Manage").click()
    expect(dialog.get_by_role("alert")).to_have_count(0)
    dialog.get_by_role("tab", name="Invite").click()
    emails.fill(email)
    invite.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(has_text="Added 1 person as User")).to_be_visible()
    expect(emails).to_be_focused()


def test_a_name_refused_in_new_folder_or_rename_gives_the_focus_back_to_its_button(
    admin_page: Page, api: httpx.Client
) -> None:
    """A name the platform refuses is said, and the focus comes back to the button
    pressed: it fell to the page while the button was disabled, and the keyboard
    started again from the top."""
    page = admin_page
    folder = make_folder(api, unique("refused-name"))
    upload(api, folder["id"], ("named.txt", text("n\n")))
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="+ New folder").click()
    dialog = page.get_by_role("dialog", name="New folder")
    name = dialog.get_by_label("Name")
    name.fill("a/b")
    create = dialog.get_by_role("button", name="Create")
    create.click()
    expect(dialog.get_by_role("alert")).to_contain_text("'/'")
    expect(create).to_be_focused()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="named.txt").click()
    page.keyboard.press("F2")
    dialog = page.get_by_role("dialog", name="Rename file")
    name = dialog.get_by_label("Name")
    name.fill("c/d.txt")
    rename = dialog.get_by_role("button", name="Rename")
    rename.click()
    expect(dialog.get_by_role("alert")).to_contain_text("'/'")
    expect(rename).to_be_focused()


def test_editing_a_description_keeps_the_focus_in_the_details(
    admin_page: Page, api: httpx.Client
) -> None:
    """The field has the focus once "Edit description" is pressed; Save (and Cancel)
    give it to "Edit description", which stands where the form was: not to the page,
    from whose top the keyboard would start again."""
    page = admin_page
    folder = make_folder(api, unique("described"))
    page.goto(f"/folders/{folder['id']}")
    details = page.get_by_role("complementary", name="Details")
    edit = details.get_by_role("button", name="Edit description")
    edit.focus()
    page.keyboard.press("Enter")
    field = details.get_by_label("Description")
    expect(field).to_be_focused()
    page.keyboard.type("Scans from March")
    details.get_by_role("button", name="Save").focus()
    page.keyboard.press("Enter")
    expect(details).to_contain_text("Scans from March")
    expect(edit).to_be_focused()
    assert api.get(f"/v1/folders/{folder['id']}").json()["description"] == "Scans from March"

    page.keyboard.press("Enter")
    expect(field).to_be_focused()
    details.get_by_role("button", name="Cancel").focus()
    page.keyboard.press("Enter")
    expect(edit).to_be_focused()
