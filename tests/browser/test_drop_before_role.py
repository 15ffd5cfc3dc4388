"""Files dropped on a folder's page before the folder (and the person's role on it) is
read are kept until it is, the page saying "Reading N files…": then "Upload files" opens
for that folder, or a notice says in words why nothing may be uploaded there. (They were
refused: "The folder is still being read: drop the files again in a moment.")"""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import hold_the_folders_read, make_folder, sign_in, unique
from tests.browser.test_drop_files import _drop, _files
from tests.browser.test_roles_and_rename import _member


def _let_go(page: Page, held: list) -> None:
    # The held reads go on; later ones (the page's watch) are no longer held.
    for route in held:
        route.continue_()
    page.unroute_all(behavior="ignoreErrors")


def test_a_drop_before_the_role_is_read_waits_then_opens_upload(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("early-drop"))
    held = hold_the_folders_read(page, folder["id"])
    page.goto(f"/folders/{folder['id']}")
    expect(page.get_by_role("heading", name="Loading folder…", level=1)).to_be_visible()
    _drop(page, "Folder", _files(page, ["early.txt"]))
    content = page.get_by_role("region", name="Folder")
    expect(content.get_by_role("status")).to_have_text("Reading 1 file…")
    dialog = page.get_by_role("dialog", name="Upload files")
    expect(dialog).to_have_count(0)
    expect(page.locator(".notices")).not_to_contain_text("still being read")
    assert held, "the folder's own read was not made"

    _let_go(page, held)
    expect(dialog).to_contain_text(f"Into folder {folder['name']}")
    listed = dialog.get_by_role("list", name="Files to upload")
    expect(listed.get_by_role("listitem", name="early.txt")).to_be_visible()
    content = page.get_by_role("region", name=folder["name"])
    expect(content.get_by_role("status")).to_have_count(0)


def test_a_drop_before_the_role_is_read_is_refused_in_words_for_a_user(
    page: Page, api: httpx.Client
) -> None:
    folder = make_folder(api, unique("early-user"))
    user = _member(api, folder["id"], "user")
    sign_in(page, user["api_key"])
    held = hold_the_folders_read(page, folder["id"])
    page.goto(f"/folders/{folder['id']}")
    expect(page.get_by_role("heading", name="Loading folder…", level=1)).to_be_visible()
    _drop(page, "Folder", _files(page, ["early.txt"]))
    expect(page.get_by_role("region", name="Folder").get_by_role("status")).to_have_text(
        "Reading 1 file…"
    )
    assert held, "the folder's own read was not made"

    _let_go(page, held)
    expect(page.locator(".notices").get_by_role("alert")).to_contain_text(
        f"The files dropped on “{folder['name']}” were not added. You can view this folder,"
        " not change it."
    )
    expect(page.get_by_role("dialog", name="Upload files")).to_have_count(0)
    content = page.get_by_role("region", name=folder["name"])
    expect(content.get_by_role("status")).to_have_count(0)


def test_a_drop_held_for_the_role_waits_on_the_folders_read_not_its_lists(
    signed_in: Page, api: httpx.Client
) -> None:
    """The folder's list refused while its own read is held, after the drop: the drop
    still waits for the folder and opens "Upload files" (it was refused: "it could not
    be read", the page saying the folder could not be read)."""
    page = signed_in
    folder = make_folder(api, unique("list-fails"))
    listed = re.compile(rf"/v1/folders/{folder['id']}/items")
    lists: list[Route] = []

    def hold(route: Route) -> None:  # a function: Playwright takes no bound built-in
        lists.append(route)

    page.route(lambda url: bool(listed.search(url)), hold)
    held = hold_the_folders_read(page, folder["id"])
    page.goto(f"/folders/{folder['id']}")
    expect(page.get_by_role("heading", name="Loading folder…", level=1)).to_be_visible()
    _drop(page, "Folder", _files(page, ["early.txt"]))
    status = page.get_by_role("region", name="Folder").get_by_role("status")
    expect(status).to_have_text("Reading 1 file…")
    assert held, "the folder's own read was not made"
    assert lists, "the folder's list was not read"

    for route in lists:
        route.fulfill(status=503, json={"detail": "unavailable", "code": "unavailable"})
    expect(page.get_by_role("region", name="Folder").get_by_role("alert")).to_be_visible()
    expect(status).to_have_text("Reading 1 file…")
    expect(page.locator(".notices")).not_to_contain_text("could not be read")

    _let_go(page, held)
    dialog = page.get_by_role("dialog", name="Upload files")
    expect(dialog).to_contain_text(f"Into folder {folder['name']}")
    expect(page.locator(".notices")).not_to_contain_text("could not be read")
