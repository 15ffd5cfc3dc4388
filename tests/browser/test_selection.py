"""Selecting (click, shift-click, ctrl/cmd-click) and right-clicking a file, a folder or
a selection: "Add to dataset", "Move to another folder", "Delete", each dry run's
impact shown before it is confirmed."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import items, make_folder, unique, upload
from tests.e2e.support import text


def _selected(page: Page) -> list[str]:
    rows = page.get_by_role("grid", name="Folder contents").locator(
        '[role="row"][aria-selected="true"]'
    )
    return sorted(rows.evaluate_all("rows => rows.map(r => r.getAttribute('aria-label'))"))


def test_select_by_click_shift_click_and_ctrl_click(admin_page: Page, api: httpx.Client) -> None:
    page = admin_page
    folder = make_folder(api, unique("select"))
    upload(api, folder["id"], *[(f"f{n}.txt", text(f"{n}\n")) for n in range(6)])
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="f1.txt").click()
    page.get_by_role("row", name="f4.txt").click(modifiers=["Shift"])
    expect(page.get_by_role("row", name="f3.txt")).to_have_attribute("aria-selected", "true")
    assert _selected(page) == ["f1.txt", "f2.txt", "f3.txt", "f4.txt"]
    page.get_by_role("row", name="f2.txt").click(modifiers=["ControlOrMeta"])
    expect(page.get_by_role("row", name="f2.txt")).to_have_attribute("aria-selected", "false")
    page.get_by_role("row", name="f5.txt").click(modifiers=["ControlOrMeta"])
    assert _selected(page) == ["f1.txt", "f3.txt", "f4.txt", "f5.txt"]
    expect(page.get_by_text("4 selected")).to_be_visible()
    # Right-click the selection: one menu for all of it.
    page.get_by_role("row", name="f3.txt").click(button="right")
    menu = page.get_by_role("menu", name="Actions for 4 items")
    for item in ("Add to dataset", "Move to another folder", "Delete"):
        expect(menu.get_by_role("menuitem", name=item)).to_be_visible()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()


def test_move_a_selection_finding_the_target_as_you_type(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    source = make_folder(api, unique("from"))
    target_name = unique("target")
    target = make_folder(api, target_name)
    files = upload(
        api, source["id"], ("a.txt", text("a\n")), ("b.txt", text("b\n")), ("c.txt", text("c\n"))
    )
    dataset = api.post(
        "/v1/datasets", json={"name": unique("synced"), "synced_folder_id": source["id"]}
    ).json()

    page.goto(f"/folders/{source['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="a.txt").click()
    page.get_by_role("row", name="b.txt").click(modifiers=["Shift"])
    page.get_by_role("row", name="b.txt").click(button="right")
    page.get_by_role("menuitem", name="Move to another folder").click()
    dialog = page.get_by_role("dialog", name="Move to another folder")
    dialog.get_by_role("combobox", name="Target folder").fill(target_name[:10])
    dialog.get_by_role("option", name=target_name).click()
    impact = dialog.get_by_role("region", name="Impact")
    expect(impact).to_contain_text("This moves 2 files.")
    expect(impact).to_contain_text(f"{dataset['name']}: 2 links removed (synced dataset)")
    dialog.get_by_role("button", name="Move").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("row", name="a.txt")).to_be_hidden()
    assert sorted(i["name"] for i in items(api, target["id"])) == ["a.txt", "b.txt"]
    assert [i["name"] for i in items(api, source["id"])] == ["c.txt"]
    linked = api.get(f"/v1/datasets/{dataset['id']}/files").json()["items"]
    assert [f["id"] for f in linked] == [files[2]["id"]]


def test_delete_a_folder_shows_what_it_takes_first(admin_page: Page, api: httpx.Client) -> None:
    page = admin_page
    top = make_folder(api, unique("del"))
    doomed = make_folder(api, "doomed", top["id"])
    inner = make_folder(api, "inner", doomed["id"])
    upload(api, inner["id"], ("x.txt", text("x\n")), ("y.txt", text("y\n")))
    [one] = upload(api, doomed["id"], ("z.txt", text("z\n")))
    dataset = api.post("/v1/datasets", json={"name": unique("kept")}).json()
    api.post(f"/v1/datasets/{dataset['id']}/files", json={"file_ids": [one["id"]]})

    page.goto(f"/folders/{top['id']}")
    page.get_by_role("row", name="doomed").click(button="right")
    menu = page.get_by_role("menu", name="Actions for doomed")
    expect(menu.get_by_role("menuitem", name="Upload files")).to_be_visible()
    menu.get_by_role("menuitem", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete")
    impact = dialog.get_by_role("region", name="Impact")
    expect(impact).to_contain_text("3 files and 2 folders")
    expect(impact).to_contain_text(f"{dataset['name']}: 1 link removed")
    # The app reads the folder again once the delete and what it caused (links
    # removed) are done (it sends the delete's consistency token).
    with page.expect_response(lambda r: f"/v1/folders/{top['id']}/items" in r.url):
        dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("row", name="doomed")).to_be_hidden()
    expect(page.get_by_text("This folder is empty.")).to_be_visible()
    assert items(api, top["id"]) == []
    assert api.get(f"/v1/folders/{doomed['id']}").status_code == 404
    assert api.get(f"/v1/datasets/{dataset['id']}").json()["file_count"] == 0


def test_add_to_dataset_existing_and_a_new_synced_one(admin_page: Page, api: httpx.Client) -> None:
    page = admin_page
    folder = make_folder(api, unique("ds"))
    files = upload(api, folder["id"], ("p.txt", text("p\n")), ("q.txt", text("q\n")))
    existing = api.post("/v1/datasets", json={"name": unique("existing")}).json()

    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="p.txt").click()
    page.get_by_role("row", name="q.txt").click(modifiers=["Shift"])
    page.get_by_role("row", name="q.txt").click(button="right")
    page.get_by_role("menuitem", name="Add to dataset").click()
    dialog = page.get_by_role("dialog", name="Add to dataset")
    row = dialog.get_by_role("listitem", name=existing["name"])
    expect(row).to_contain_text("0 files")
    row.get_by_role("button", name="Add").click()
    expect(row.get_by_role("button", name="Added")).to_be_visible()
    expect(row).to_contain_text("2 files")
    linked = api.get(f"/v1/datasets/{existing['id']}/files").json()["items"]
    assert sorted(f["id"] for f in linked) == sorted(f["id"] for f in files)

    # A name a dataset has already: said, and no second one of that name made.
    dialog.get_by_role("tab", name="+New dataset").click()
    dialog.get_by_label("Name").fill(existing["name"])
    dialog.get_by_role("button", name="Add to new dataset").click()
    expect(dialog.get_by_role("alert")).to_have_text(
        f"A dataset named {existing['name']} exists already: add to it in the Datasets tab,"
        " or give another name."
    )
    listed = api.get("/v1/datasets", params={"limit": 1000}).json()["items"]
    assert [d["name"] for d in listed].count(existing["name"]) == 1

    name = unique("fresh")
    dialog.get_by_label("Name").fill(name)
    dialog.get_by_label("Description").fill("follows the folder")
    dialog.get_by_role("switch", name="Sync with folder").click()
    expect(dialog.get_by_role("switch", name="Sync with folder")).to_have_attribute(
        "aria-checked", "true"
    )
    dialog.get_by_role("button", name="Add to new dataset").click()
    expect(dialog).to_be_hidden()
    [made] = [
        d
        for d in api.get("/v1/datasets", params={"limit": 1000}).json()["items"]
        if d["name"] == name
    ]
    assert made["synced_folder_id"] == folder["id"] and made["description"] == "follows the folder"
    assert made["file_count"] == 2


def test_the_keyboard_goes_on_after_a_range_chosen_downward_and_deleted(
    admin_page: Page, api: httpx.Client
) -> None:
    """a..i, c to e chosen downward (the keyboard on e) and deleted: the keyboard is on f,
    the first item after them, not on h, at e's old place in the shorter list."""
    page = admin_page
    folder = make_folder(api, unique("range"))
    upload(api, folder["id"], *[(f"{n}.txt", text(f"{n}\n")) for n in "abcdefghi"])
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    grid.get_by_role("row", name="c.txt").click()
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    expect(page.locator("p.count")).to_have_text("9 items, 3 selected")
    assert _selected(page) == ["c.txt", "d.txt", "e.txt"]
    page.keyboard.press("Delete")
    page.get_by_role("dialog", name="Delete").get_by_role("button", name="Delete").click()
    expect(page.locator("p.count")).to_have_text("6 items")

    active = re.compile(r"\bactive\b")
    expect(grid.get_by_role("row", name="f.txt")).to_have_class(active)
    expect(grid.get_by_role("row", name="h.txt")).not_to_have_class(active)
