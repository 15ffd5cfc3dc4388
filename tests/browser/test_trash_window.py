"""A Trash of thousands of items: drawn windowed as a dataset's files are (only the rows
in view are in the page), its keys (arrows, Shift, Ctrl/Cmd, Space, Ctrl/Cmd+A, Escape,
Delete, End, Home) working across the window, the keyboard's row scrolled into view; and
"Delete forever" of more items than the route takes at once (1,000 ids), in turns, its
question not closed while they go, a refusal midway saying what was deleted."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.sync_api import Page, Request, Route, expect

from shared.kit.stack import Stack
from tests.browser.conftest import ask_to_delete_all_forever, make_folder, sign_in, unique, upload
from tests.browser.test_roles_and_rename import _member
from tests.conftest import ADMIN_KEY

COUNT = 1_200


@dataclass
class Trash:
    editor: dict
    ids: set[str]


@pytest.fixture(scope="module")
def trash_of_many(platform: Stack) -> Iterator[Trash]:
    """An Editor of one folder whose 1,200 files are in the trash: their trash is those
    items. The tests below read it first, then delete it forever (in this order)."""
    with httpx.Client(
        base_url=platform.gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as api:
        folder = make_folder(api, unique("trash-window"))
        editor = _member(api, folder["id"], "editor")
        parts = [("file", (f"t{n:04d}.txt", f"{n}\n".encode())) for n in range(COUNT)]
        made = api.post(f"/v1/folders/{folder['id']}/files", files=parts, timeout=300)
        assert made.status_code == 201, made.text[:500]
        ids = [f["id"] for f in made.json()["files"]]
        # One request for them all: each file is its own item in the trash.
        deleted = api.post("/v1/delete", json={"file_ids": ids}, timeout=300)
        assert deleted.status_code == 200, deleted.text[:500]
        yield Trash(editor, set(ids))
        # Out of the trash, for the tests after these (a page of ids a request).
        left = sorted(set(ids) & {i["id"] for i in _trash(api)})
        for at in range(0, len(left), 200):
            gone = api.delete("/v1/trash", params={"file_ids": ",".join(left[at : at + 200])})
            assert gone.status_code == 200, gone.text[:500]


def _trash(api: httpx.Client) -> list[dict]:
    found: list[dict] = []
    cursor = None
    while True:
        params: dict = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/trash", params=params).json()
        found += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return found


def test_a_trash_of_thousands_is_windowed_and_its_keys_reach_the_last_item(
    page: Page, trash_of_many: Trash
) -> None:
    sign_in(page, trash_of_many.editor["api_key"])
    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    grid = trash.get_by_role("grid", name="Items in the trash")
    expect(grid).to_be_visible(timeout=60_000)
    total = COUNT
    rows = grid.locator("tbody tr:not(.spacer)")
    expect(grid).to_have_attribute("aria-rowcount", str(total + 1))
    assert 0 < rows.count() < 100, rows.count()

    # The newest first. Click the first, then the arrows.
    first = rows.first
    first.get_by_role("gridcell").nth(1).click()
    expect(trash.get_by_text("1 selected", exact=True)).to_be_visible()
    expect(first).to_have_attribute("aria-selected", "true")
    page.keyboard.press("ArrowDown")
    expect(grid.locator('tr[aria-rowindex="3"]')).to_have_attribute("aria-selected", "true")
    expect(first).to_have_attribute("aria-selected", "false")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+ArrowDown")
    expect(trash.get_by_text("3 selected", exact=True)).to_be_visible()
    page.keyboard.press("Escape")
    expect(trash.get_by_text("0 selected", exact=True)).to_be_visible()

    # End: the last item, drawn and in view, the first no longer in the page.
    page.keyboard.press("End")
    last = grid.locator(f'tr[aria-rowindex="{total + 1}"]')
    expect(last).to_have_attribute("aria-selected", "true")
    expect(last).to_be_in_viewport()
    expect(grid).to_have_attribute("aria-activedescendant", re.compile(r"^trash-"))
    assert grid.get_attribute("aria-activedescendant") == last.get_attribute("id")
    expect(grid.locator('tr[aria-rowindex="2"]')).to_have_count(0)
    assert rows.count() < 100, rows.count()
    # Space takes it out and back; Ctrl+Up moves without choosing, Space adds.
    page.keyboard.press("Space")
    expect(trash.get_by_text("0 selected", exact=True)).to_be_visible()
    page.keyboard.press("Space")
    page.keyboard.press("Control+ArrowUp")
    page.keyboard.press("Space")
    expect(trash.get_by_text("2 selected", exact=True)).to_be_visible()
    expect(grid.locator(f'tr[aria-rowindex="{total}"]')).to_be_in_viewport()

    # Delete asks about what is chosen; Escape keeps it.
    page.keyboard.press("Delete")
    question = page.get_by_role("alertdialog", name="Delete 2 items forever?")
    expect(question).to_be_visible()
    page.keyboard.press("Escape")
    expect(question).to_be_hidden()

    # Ctrl+A chooses every item, drawn or not; Home goes back to the first, in view.
    grid.focus()
    page.keyboard.press("Control+a")
    expect(trash.get_by_text(f"{total:,} selected", exact=True)).to_be_visible()
    page.keyboard.press("Home")
    expect(grid.locator('tr[aria-rowindex="2"]')).to_be_in_viewport()
    expect(trash.get_by_text("1 selected", exact=True)).to_be_visible()
    assert rows.count() < 100, rows.count()

    # A row's checkbox has the focus, and the list is scrolled far from it: its row stays
    # drawn, the focus on it (it went to the page, the row taken out).
    box = grid.locator('tr[aria-rowindex="2"] input[type="checkbox"]')
    box.focus()
    trash.evaluate("el => { el.scrollTop = 20000; }")
    expect(grid.locator('tr[aria-rowindex="600"]')).to_be_attached()
    expect(box).to_be_focused()
    assert rows.count() < 100, rows.count()


def test_more_than_a_thousand_items_are_deleted_forever_in_turns(
    page: Page, api: httpx.Client, trash_of_many: Trash
) -> None:
    """Ctrl+A then Delete in a trash of 1,200 items: the route takes 1,000 ids a request
    (they were all sent in one, and refused), so they go 500 a request. While they go the
    question stays (Cancel, Escape and "Close" wait: a refusal after it closed was lost)
    and the toolbar's "Delete forever" waits (a second one went at once); a refusal of the
    second request says what the first deleted, and "Delete forever" again deletes the
    rest."""
    sent: list[int] = []

    def counted(request: Request) -> None:
        if request.method == "DELETE" and urlparse(request.url).path == "/v1/trash":
            ids = parse_qs(urlparse(request.url).query).get("file_ids", [""])[0]
            sent.append(len(ids.split(",")) if ids else 0)

    page.on("request", counted)
    held: list[Route] = []
    deletes: list[Route] = []

    def second_held(route: Route) -> None:  # a function: Playwright takes no bound built-in
        if route.request.method == "DELETE":
            deletes.append(route)
            if len(deletes) == 2:
                held.append(route)
                return
        route.continue_()

    sign_in(page, trash_of_many.editor["api_key"])
    page.route(re.compile(r"/v1/trash\?"), second_held)
    trash, grid, question = ask_to_delete_all_forever(page, COUNT)
    question.get_by_role("button", name="Delete forever").click()

    # The second request held: the question cannot be closed, nor a second one asked.
    toolbar = page.locator('[role="toolbar"][aria-label="Trash actions"]')
    expect(toolbar.locator("button", has_text="Delete forever")).to_be_disabled()
    expect(question.get_by_role("button", name="Cancel")).to_be_disabled()
    expect(question.get_by_role("button", name="Close")).to_be_disabled()
    deadline = time.monotonic() + 60
    while not held:  # Playwright's events come in as it is called
        assert time.monotonic() < deadline, "the second request was not made"
        page.evaluate("0")
    assert sent == [500, 500], sent
    # Twice: Chromium lets a second Escape close a dialog whose cancel was refused.
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    expect(question).to_be_visible()
    held[0].fulfill(
        status=503, json={"detail": "The catalog is unavailable", "code": "unavailable"}
    )
    expect(question.get_by_role("alert")).to_contain_text(
        "Deleted forever 500 files, then the rest was refused"
    )
    # Read again: what was deleted is gone from the list and from the question, which
    # says what went and what did not.
    expect(question).to_have_accessible_name(f"Delete {COUNT - 500:,} items forever?")
    expect(question).to_contain_text(
        f"Deleted forever so far: 500 files. Not deleted: {COUNT - 500:,} items."
    )
    expect(grid).to_have_attribute("aria-rowcount", str(COUNT - 500 + 1))
    expect(question.get_by_role("button", name="Cancel")).to_be_enabled()

    page.unroute_all(behavior="ignoreErrors")
    question.get_by_role("button", name="Delete forever").click()
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(
        f"Deleted forever {COUNT:,} files"  # the first try's 500 too
    )
    expect(question).to_have_count(0)
    expect(trash.get_by_text("The trash is empty.")).to_be_visible()
    assert not trash_of_many.ids & {i["id"] for i in _trash(api)}
    assert max(sent) <= 500 and sum(sent) >= COUNT, sent


def test_a_refused_delete_forever_reads_the_trash_again(page: Page, api: httpx.Client) -> None:
    """The platform deleted the items, but its answer was lost (a 502 from a proxy): the
    trash is read again, not left listing them, and the question (about nothing now) is
    not left asking "Delete 0 items forever?": it closes, saying what became of them."""
    folder = make_folder(api, unique("purge-lost"))
    editor = _member(api, folder["id"], "editor")
    files = upload(api, folder["id"], ("a.txt", b"a"), ("b.txt", b"b"))
    deleted = api.post("/v1/delete", json={"file_ids": [f["id"] for f in files]})
    assert deleted.status_code == 200, deleted.text

    def answer_lost(route: Route) -> None:  # a function: Playwright takes no bound built-in
        if route.request.method != "DELETE":
            route.continue_()
            return
        route.fetch()
        route.fulfill(status=502, json={"detail": "Bad gateway", "code": "bad_gateway"})

    sign_in(page, editor["api_key"])
    page.route(re.compile(r"/v1/trash\?"), answer_lost)
    trash, _, question = ask_to_delete_all_forever(page, 2)
    question.get_by_role("button", name="Delete forever").click()
    notice = page.locator(".notices").get_by_role("status")
    expect(notice).to_contain_text(
        "Nothing is left to delete forever: the trash no longer holds the 2 items asked about"
    )
    expect(notice).to_contain_text("Bad Gateway")
    expect(question).to_have_count(0)
    expect(trash.get_by_text("The trash is empty.")).to_be_attached()
    page.unroute_all(behavior="ignoreErrors")
