"""The Trash view: a file deleted in its folder shows in the trash; "Restore" puts it
back in its folder; "Delete forever" purges only the item chosen."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import items, make_folder, unique, upload
from tests.e2e.support import text


def test_delete_see_in_trash_restore_and_delete_forever(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("trash-ui"))
    kept, doomed = unique("kept") + ".txt", unique("doomed") + ".txt"
    upload(api, folder["id"], (kept, text("kept\n")), (doomed, text("doomed\n")))

    # Deleted in its folder, as a person does.
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    for name in (kept, doomed):
        page.get_by_role("row", name=name).click(button="right")
        page.get_by_role("menu", name=f"Actions for {name}").get_by_role(
            "menuitem", name="Delete"
        ).click()
        dialog = page.get_by_role("dialog", name="Delete")
        # What a delete does: the item waits in the Trash for the days the platform keeps it.
        days = api.post("/v1/delete", json={"file_ids": [], "dry_run": True}).json()["trash_days"]
        expect(dialog).to_contain_text(f"stays {days:g} days")
        expect(dialog).not_to_contain_text("cannot be undone")
        dialog.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("row", name=name)).to_be_hidden()
    assert items(api, folder["id"]) == []

    # Both are in the trash.
    page.get_by_role("link", name="Trash", exact=True).click()
    trash = page.get_by_role("region", name="Trash")
    expect(trash.get_by_role("row", name=kept)).to_be_visible()
    expect(trash.get_by_role("row", name=doomed)).to_be_visible()
    # Where each was, so two files of one name can be told apart (and where Restore puts it).
    expect(trash.get_by_role("columnheader", name="Was in")).to_be_visible()
    expect(
        trash.get_by_role("row", name=kept).get_by_role("link", name=folder["name"])
    ).to_be_visible()

    # Restore one: it leaves the trash and is back in its folder.
    trash.get_by_role("checkbox", name=f"Choose {kept}").check()
    expect(trash.get_by_text("1 selected")).to_be_visible()
    trash.get_by_role("button", name="Restore").click()
    expect(trash.get_by_role("row", name=kept)).to_be_hidden()
    expect(trash.get_by_role("row", name=doomed)).to_be_visible()

    # Delete the other forever (confirmed first): gone from the trash for good.
    trash.get_by_role("checkbox", name=f"Choose {doomed}").check()
    trash.get_by_role("button", name="Delete forever").click()
    page.get_by_role("alertdialog", name="Delete 1 item forever?").get_by_role(
        "button", name="Delete forever"
    ).click()
    expect(trash.get_by_role("row", name=doomed)).to_be_hidden()
    listed = api.get("/v1/trash", params={"limit": 1000}).json()["items"]
    assert doomed not in {i["name"] for i in listed}

    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    expect(page.get_by_role("row", name=kept)).to_be_visible()
    assert [i["name"] for i in items(api, folder["id"])] == [kept]


def test_what_is_deleted_here_and_restored_elsewhere_shows_again_without_a_reload(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    parent = make_folder(api, unique("back-again"))
    child = make_folder(api, "child", parent["id"])
    [note] = upload(api, parent["id"], ("note.txt", text("n\n")))
    page.goto(f"/folders/{parent['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    for name in ("child", "note.txt"):
        grid.get_by_role("row", name=name).click(button="right")
        page.get_by_role("menu", name=f"Actions for {name}").get_by_role(
            "menuitem", name="Delete"
        ).click()
        page.get_by_role("dialog", name="Delete").get_by_role("button", name="Delete").click()
        expect(grid.get_by_role("row", name=name)).to_be_hidden()
    expect(grid).to_be_hidden()

    # Restored elsewhere (the CLI, another tab); its read model caught up before the tab looks.
    answer = api.post(
        "/v1/trash/restore", json={"file_ids": [note["id"]], "folder_ids": [child["id"]]}
    )
    assert answer.status_code == 200, answer.text
    listed = api.get(
        f"/v1/folders/{parent['id']}/items",
        headers={"Files-Consistency": answer.headers["Files-Consistency"]},
    ).json()["items"]
    assert {i["name"] for i in listed} == {"child", "note.txt"}

    # In the same tab, no reload: the folder opens (not its parent instead), and its
    # parent lists both again.
    page.evaluate(
        "id => { history.pushState(null, '', '/folders/' + id);"
        " dispatchEvent(new PopStateEvent('popstate')); }",
        child["id"],
    )
    expect(page.get_by_role("heading", name="child", level=1)).to_be_visible()
    expect(page).to_have_url(f"/folders/{child['id']}")
    page.go_back()
    expect(page.get_by_role("heading", name=parent["name"], level=1)).to_be_visible()
    expect(grid.get_by_role("row", name="child")).to_be_visible()
    expect(grid.get_by_role("row", name="note.txt")).to_be_visible()


def test_a_restore_refused_for_a_name_already_there_says_where_and_what_to_do(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    name = unique("twin")
    first = make_folder(api, name)
    assert api.post("/v1/delete", json={"folder_ids": [first["id"]]}).status_code == 200
    make_folder(api, name)  # another of that name, where the first was

    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    trash.get_by_role("checkbox", name=f"Choose {name}").check()
    trash.get_by_role("button", name="Restore").click()
    expect(trash.get_by_role("alert")).to_contain_text(
        "a folder of the same name is already where it was"
    )
    expect(trash.get_by_role("alert")).not_to_contain_text("already exists here")
    expect(trash.get_by_role("row", name=name)).to_be_visible()  # still in the trash


def test_choose_all_in_the_trash_chooses_every_item_one_may_restore(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("many-deleted"))
    names = [unique("gone") + ".txt" for _ in range(3)]
    files = upload(api, folder["id"], *((n, text(n)) for n in names))
    deleted = api.post("/v1/delete", json={"file_ids": [f["id"] for f in files]})
    assert deleted.status_code == 200, deleted.text

    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    for name in names:
        expect(trash.get_by_role("checkbox", name=f"Choose {name}")).to_be_visible()
    choosable = trash.get_by_role("checkbox", name=re.compile("^Choose (?!all)")).filter(
        has_not=page.locator(":disabled")
    )
    everything = trash.get_by_role("checkbox", name="Choose all")
    everything.check()
    for name in names:
        expect(trash.get_by_role("checkbox", name=f"Choose {name}")).to_be_checked()
    expect(trash.get_by_text(f"{choosable.count()} selected", exact=True)).to_be_visible()
    everything.uncheck()
    expect(trash.get_by_text("0 selected", exact=True)).to_be_visible()
    # One chosen by hand: "Choose all" is neither all nor none.
    trash.get_by_role("checkbox", name=f"Choose {names[0]}").check()
    assert everything.evaluate("e => e.indeterminate")


def test_delete_forever_and_empty_trash_are_asked_in_the_confirm_dialog(
    admin_page: Page, api: httpx.Client
) -> None:
    """The same modal question as every removal: it names how many and what, says it
    cannot be undone, has the focus on Cancel, Escape keeps everything, and the focus
    goes back to the button that asked."""
    page = admin_page
    folder = make_folder(api, unique("forever"))
    names = [unique("bin") + ".txt" for _ in range(2)]
    files = upload(api, folder["id"], *((n, text(n)) for n in names))
    assert api.post("/v1/delete", json={"file_ids": [f["id"] for f in files]}).status_code == 200

    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    for name in names:
        # Chosen once the row is whole (its folder's name read): as a person sees it.
        row = trash.get_by_role("row", name=name)
        expect(row.get_by_role("link", name=folder["name"])).to_be_visible()
        row.get_by_role("checkbox", name=f"Choose {name}").check()
    expect(trash.get_by_text("2 selected", exact=True)).to_be_visible()
    asking = trash.get_by_role("button", name="Delete forever")
    asking.click()
    question = page.get_by_role("alertdialog", name="Delete 2 items forever?")
    one, two = (re.escape(n) for n in names)  # named in the Trash's order
    expect(question).to_contain_text(
        re.compile(rf"({one}|{two}) and ({one}|{two}) will be gone for good")
    )
    expect(question).to_contain_text("This cannot be undone.")
    expect(question.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(question).to_have_count(0)
    expect(asking).to_be_focused()
    listed = {i["id"] for i in api.get("/v1/trash", params={"limit": 1000}).json()["items"]}
    assert {f["id"] for f in files} <= listed  # nothing went

    # "Empty trash" asks the same way; Cancel keeps everything.
    emptying = trash.get_by_role("button", name="Empty trash")
    emptying.click()
    question = page.get_by_role("alertdialog", name="Empty the trash?")
    expect(question).to_contain_text("deleted forever. This cannot be undone.")
    question.get_by_role("button", name="Cancel").click()
    expect(question).to_have_count(0)
    expect(emptying).to_be_focused()

    asking.click()
    page.get_by_role("alertdialog", name="Delete 2 items forever?").get_by_role(
        "button", name="Delete forever"
    ).click()
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(
        "Deleted forever 2 files"
    )
    # The button that asked is disabled now (nothing chosen): the focus is on the page.
    expect(asking).to_be_disabled()
    expect(trash.get_by_role("heading", name="Trash", level=1)).to_be_focused()
    for name in names:
        expect(trash.get_by_role("row", name=name)).to_have_count(0)
    listed = {i["id"] for i in api.get("/v1/trash", params={"limit": 1000}).json()["items"]}
    assert not {f["id"] for f in files} & listed


def test_a_file_deleted_before_its_folder_is_an_item_of_its_own(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("before-folder"))
    alone, went = unique("alone") + ".txt", unique("went") + ".txt"
    upload(api, folder["id"], (alone, text("a\n")), (went, text("w\n")))
    [alone_id] = [i["id"] for i in items(api, folder["id"]) if i["name"] == alone]
    assert api.post("/v1/delete", json={"file_ids": [alone_id]}).status_code == 200
    assert api.post("/v1/delete", json={"folder_ids": [folder["id"]]}).status_code == 200

    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    # The folder counts what went with it; the file deleted before is a row of its own,
    # waiting in that folder.
    expect(trash.get_by_role("row", name=folder["name"])).to_contain_text("Folder (1 file)")
    row = trash.get_by_role("row", name=alone)
    expect(row).to_contain_text(f"{folder['name']} (in the Trash)")
    expect(trash.get_by_role("row", name=went)).to_be_hidden()

    # The folder comes back with what went with it; the file stays in the trash.
    trash.get_by_role("checkbox", name=f"Choose {folder['name']}").check()
    trash.get_by_role("button", name="Restore").click()
    expect(trash.get_by_role("row", name=folder["name"])).to_be_hidden()
    expect(row).to_be_visible()
    assert [i["name"] for i in items(api, folder["id"])] == [went]
