""" "Move to another folder": typing a name that matches no folder one may move to says
so (the list stayed blank, the Move button greyed, with no word why); the folder the
selection is already in is not offered (a move there changed nothing)."""

from __future__ import annotations

import re
from collections import Counter

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.browser.test_dataset_page import until
from tests.e2e.support import text


def test_the_move_dialog_says_when_no_folder_matches_and_skips_the_current_one(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    top = make_folder(api, unique("move-from"))
    elsewhere = make_folder(api, unique("move-to"), top["id"])
    upload(api, top["id"], ("moving.txt", text("m\n")))
    page.goto(f"/folders/{top['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="moving.txt").click(button="right")
    page.get_by_role("menu", name="Actions for moving.txt").get_by_role(
        "menuitem", name="Move to another folder"
    ).click()
    dialog = page.get_by_role("dialog", name="Move to another folder")
    target = dialog.get_by_role("combobox", name="Target folder")

    nothing = unique("no-such-folder")
    target.fill(nothing)
    expect(dialog.get_by_role("status")).to_have_text(
        f"No folder you can move this to matches “{nothing}”."
    )
    expect(dialog.get_by_role("button", name="Move")).to_be_disabled()

    # The folder it is in already is no target.
    target.fill(top["name"])
    expect(dialog.get_by_role("status")).to_contain_text(top["name"])
    expect(dialog.get_by_role("option", name=top["name"])).to_have_count(0)

    target.fill(elsewhere["name"])
    dialog.get_by_role("option", name=elsewhere["name"]).click()
    expect(dialog.get_by_role("status")).to_have_count(0)
    expect(dialog).to_contain_text("This moves 1 file and 0 folders.")
    dialog.get_by_role("button", name="Move").click()
    expect(page.get_by_role("row", name="moving.txt")).to_be_hidden()


def test_the_move_dialog_offers_each_hit_as_its_sync_state_arrives_and_reads_a_failed_one_again(
    signed_in: Page, api: httpx.Client
) -> None:
    """A hit whose sync state is slow to come does not hold the others back; one whose
    read failed is offered (the dry run would say what the platform says) and read
    again at the next search, not remembered as not synced."""
    page = signed_in
    tag = unique("hits")
    slow, quick = make_folder(api, f"{tag}-slow"), make_folder(api, f"{tag}-quick")
    source = make_folder(api, unique("hits-from"))
    upload(api, source["id"], ("moving.txt", text("m\n")))
    search = {"q": tag, "kind": "folder"}
    until(
        lambda: len(api.get("/v1/search", params=search).json()["items"]) == 2,
        "search did not find the folders",
    )
    held: list[Route] = []
    reads: Counter[str] = Counter()

    def sync_read(route: Route) -> None:
        folder_id = route.request.url.split("/")[-2]
        reads[folder_id] += 1
        if folder_id == slow["id"] and reads[folder_id] == 1:
            held.append(route)
        else:
            route.continue_()

    page.route(re.compile(r"/v1/folders/[^/]+/sync$"), sync_read)
    page.goto(f"/folders/{source['id']}")
    page.get_by_role("button", name="List").click()
    page.get_by_role("row", name="moving.txt").click(button="right")
    page.get_by_role("menu", name="Actions for moving.txt").get_by_role(
        "menuitem", name="Move to another folder"
    ).click()
    dialog = page.get_by_role("dialog", name="Move to another folder")
    target = dialog.get_by_role("combobox", name="Target folder")
    target.fill(tag)
    options = dialog.get_by_role("option")
    expect(options).to_have_count(1)
    expect(options.first).to_have_accessible_name(quick["name"])
    assert held, "the slow hit's state was not asked for"
    held[0].fulfill(status=503, json={"error": {"code": "unavailable", "message": "busy"}})
    expect(options).to_have_count(2)
    # The next search asks for the failed one's state again (the quick one's is known).
    with page.expect_request(lambda r: r.url.endswith(f"/v1/folders/{slow['id']}/sync")):
        target.fill(f"{tag}-")
    expect(dialog.get_by_role("option", name=slow["name"])).to_be_visible()
    assert (reads[slow["id"]], reads[quick["id"]]) == (2, 1), reads
    page.unroute_all(behavior="ignoreErrors")
