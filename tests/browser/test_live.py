"""What others change shows on the page a person has open, without a reload: a synced
dataset following its folder, a file's "Linked to", a role changed or access removed
(the page says the folder is no longer theirs, not a stale list and an id), and a large
folder read again keeps the selection made in it."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import APIResponse, Browser, Locator, Page, Request, Route, expect
from playwright.sync_api import Error as PlaywrightError

from shared.kit.stack import Stack
from tests.browser.conftest import _context, make_folder, sign_in, unique, upload
from tests.browser.test_signin import _cookie
from tests.conftest import ADMIN_KEY
from tests.e2e.support import png, text

# The pages' watch looks every 5 s (web/src/store.ts, WATCH_MS). Tests of what it sees
# run the pages' clock (`page.clock`, installed before they load) a tick on at a time,
# rather than wait for it: the app's logic is its own, only its timers run fast.
WATCH_MS = 5_000
# The tick under way when the change was made, and the two after it.
TICKS = 3


def _ticks_until(page: Page, seen: Callable[[], None]) -> None:
    """The watch's next ticks, run at once, until `seen` passes (an `expect` with a short
    timeout, which gives the platform that time to apply the change before the next tick).
    The app shows a change at the tick after it (README, "What others change"): a tick
    whose read came before the platform had the change is followed by another, but a
    change shown later than that (a look skipped, a busy folder's 30 s) fails."""
    for tick in range(1, TICKS + 1):
        page.clock.run_for(WATCH_MS)
        try:
            return seen()
        except AssertionError:
            if tick == TICKS:
                raise


def test_a_synced_dataset_and_a_files_links_follow_changes_made_elsewhere(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("followed"))
    elsewhere = make_folder(api, unique("elsewhere"))
    [first] = upload(api, folder["id"], ("first.png", png(8, 8)))
    dataset = api.post(
        "/v1/datasets", json={"name": unique("Follows"), "synced_folder_id": folder["id"]}
    ).json()

    page.clock.install()
    page.goto(f"/datasets/{dataset['id']}")
    region = page.get_by_role("region", name=f"Dataset {dataset['name']}")
    grid = region.get_by_role("grid", name="Files in the dataset")
    expect(grid.get_by_role("row", name="first.png")).to_be_visible()

    # Another person's upload into the folder joins the dataset: the open page shows it.
    upload(api, folder["id"], ("later.txt", text("l\n")))
    _ticks_until(
        page, lambda: expect(grid.get_by_role("row", name="later.txt")).to_be_visible(timeout=1_000)
    )
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

    def both_seen() -> None:
        # The two pages' clock is their context's: each tick is both pages'.
        expect(details.get_by_text("Not linked to any dataset.")).to_be_visible(timeout=1_000)
        expect(grid.get_by_role("row", name="first.png")).to_have_count(0, timeout=1_000)

    _ticks_until(page, both_seen)
    expect(file_page.get_by_role("link", name=elsewhere["name"])).to_be_visible()
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
        page.clock.install()
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
        upload_button = page.get_by_role("button", name="+ Upload files")
        _ticks_until(page, lambda: expect(upload_button).to_have_count(0, timeout=1_000))
        expect(page.get_by_text("You can view this folder, not change it.")).to_be_visible()

        # Removed: the page says so, in words, and no longer lists what they cannot see.
        removed = api.delete(f"/v1/folders/{folder['id']}/collaborators/{member['id']}")
        assert removed.status_code == 204, removed.text
        not_found = page.get_by_role("heading", name="Folder not found")
        _ticks_until(page, lambda: expect(not_found).to_be_visible(timeout=1_000))
        expect(page.get_by_role("alert").filter(has_text="not shared with you")).to_be_visible()
        expect(page.get_by_text("a.png")).to_have_count(0)
        expect(tree.get_by_role("treeitem", name=folder["name"])).to_have_count(0)
        expect(page.get_by_text(re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-"))).to_have_count(0)
    finally:
        context.close()


def test_a_large_folder_read_again_keeps_its_selection(admin_page: Page, api: httpx.Client) -> None:
    """A folder of more than one page (1,000 items) read again after a change made
    elsewhere: the list is replaced once whole, so every item chosen stays chosen."""
    page = admin_page
    folder = make_folder(api, unique("many"))
    for start in range(0, 1_200, 300):
        upload(
            api,
            folder["id"],
            *[(f"f{n:04d}.txt", text(f"{n}\n")) for n in range(start, start + 300)],
        )

    page.clock.install()
    page.goto(f"/folders/{folder['id']}")
    count = page.locator("p.count")
    expect(count).to_have_text("1,200 items")
    page.get_by_role("grid", name="Folder contents").focus()
    page.keyboard.press("Control+a")
    expect(count).to_have_text("1,200 items, 1,200 selected")

    upload(api, folder["id"], ("newcomer.txt", text("n\n")))
    _ticks_until(
        page, lambda: expect(count).to_have_text("1,201 items, 1,200 selected", timeout=1_000)
    )


RETURN_TO_TAB = "document.dispatchEvent(new Event('visibilitychange'))"


def test_a_file_deleted_here_stays_gone_while_its_folder_is_read_again_page_by_page(
    admin_page: Page, api: httpx.Client
) -> None:
    """A folder read again keeps its old list on screen until the new one is whole: what
    was deleted here stays hidden until then, not shown again under the old list once the
    new read's first page answers. Pages of two (the app asks for 1,000), the second of
    each read held back."""
    page = admin_page
    folder = make_folder(api, unique("paged"))
    upload(api, folder["id"], *[(f"{n}.txt", text(f"{n}\n")) for n in "abcd"])
    hold = {"on": False}
    held: list[Route] = []

    def paged(route: Route) -> None:
        url = route.request.url.replace("limit=1000", "limit=2")
        if hold["on"] and "cursor=" in url:
            held.append(route)
        else:
            route.continue_(url=url)

    page.route(f"**/v1/folders/{folder['id']}/items?*", paged)
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    count = page.locator("p.count")
    expect(count).to_have_text("4 items")

    grid.get_by_role("row", name="a.txt").click()
    hold["on"] = True
    page.keyboard.press("Delete")
    with page.expect_request(lambda r: "cursor=" in r.url):
        page.get_by_role("dialog", name="Delete").get_by_role("button", name="Delete").click()
    expect(count).to_have_text(re.compile(r"^3 items"))
    # Something else makes the views read again while the first reread waits for its
    # second page (here: coming back to the tab).
    with page.expect_request(lambda r: "/items?" in r.url and "cursor=" not in r.url):
        page.evaluate(RETURN_TO_TAB)
    expect(count).to_have_text(re.compile(r"^3 items"))
    expect(grid.get_by_role("row", name="a.txt")).to_have_count(0)

    hold["on"] = False
    for route in held:
        with contextlib.suppress(PlaywrightError):  # a read given up for a later one
            route.continue_(url=route.request.url.replace("limit=1000", "limit=2"))
    expect(grid.get_by_role("row", name="d.txt")).to_be_visible()
    expect(count).to_have_text(re.compile(r"^3 items"))
    expect(grid.get_by_role("row", name="a.txt")).to_have_count(0)


def test_a_datasets_read_overtaken_by_a_later_one_does_not_land_last(
    admin_page: Page, api: httpx.Client
) -> None:
    """Two reads of a dataset's files under way at once (the tab come back to, then a
    change seen): the first one's answer, if it comes last, is dropped."""
    page = admin_page
    folder = make_folder(api, unique("overtaken"))
    upload(api, folder["id"], ("first.png", png(8, 8)))
    dataset = api.post(
        "/v1/datasets", json={"name": unique("Overtaken"), "synced_folder_id": folder["id"]}
    ).json()
    before = api.get(f"/v1/datasets/{dataset['id']}/files").json()
    hold = {"on": False}
    held: list[Route] = []

    def files(route: Route) -> None:
        if hold["on"]:
            hold["on"] = False
            held.append(route)
        else:
            route.continue_()

    page.route(f"**/v1/datasets/{dataset['id']}/files?*", files)
    page.clock.install()
    page.goto(f"/datasets/{dataset['id']}")
    grid = page.get_by_role("grid", name="Files in the dataset")
    expect(grid.get_by_role("row", name="first.png")).to_be_visible()

    hold["on"] = True
    with page.expect_request(lambda r: f"/v1/datasets/{dataset['id']}/files" in r.url):
        page.evaluate(RETURN_TO_TAB)
    upload(api, folder["id"], ("later.txt", text("l\n")))
    later = grid.get_by_role("row", name="later.txt")
    _ticks_until(page, lambda: expect(later).to_be_visible(timeout=1_000))

    # The first read answers now, with what was there when it was asked.
    [route] = held
    with contextlib.suppress(PlaywrightError):  # given up already
        route.fulfill(json={**before, "next_cursor": None})
    # One more round trip and a frame, so that an answer taken would be on screen.
    page.evaluate("() => fetch('/v1/users/me').then(() => new Promise(requestAnimationFrame))")
    expect(grid.get_by_role("row", name="later.txt")).to_be_visible()
    expect(grid.get_by_role("row", name="first.png")).to_be_visible()


def test_coming_back_after_the_session_ended_leaves_no_errors_once_signed_in_again(
    page: Page, api: httpx.Client, platform: Stack
) -> None:
    """Back to the tab while the session has ended: nothing is read (each read would be
    refused and leave its error); signed in again as the same person, the page reads
    again, with what changed meanwhile. (Its own sign-in: it ends it.)"""
    sign_in(page)
    folder = make_folder(api, unique("away"))
    upload(api, folder["id"], ("kept.txt", text("k\n")))
    page.clock.install()
    page.goto(f"/folders/{folder['id']}")
    count = page.locator("p.count")
    expect(count).to_have_text("1 item")
    with httpx.Client(base_url=platform.gateway_url) as client:
        ended = client.delete(
            "/v1/sessions",
            cookies={"files_session": _cookie(page)["value"]},
            headers={"X-Files-CSRF": "1"},
        )
        assert ended.status_code == 204, ended.text
    again = page.get_by_role("dialog", name="Your session has ended")
    # The page's watch, at its next tick, is refused.
    _ticks_until(page, lambda: expect(again).to_be_visible(timeout=1_000))
    page.evaluate(RETURN_TO_TAB)
    upload(api, folder["id"], ("meanwhile.txt", text("m\n")))

    again.get_by_label("API key").fill(ADMIN_KEY)
    again.get_by_role("button", name="Sign in").click()
    expect(again).to_be_hidden()
    expect(count).to_have_text("2 items")
    expect(page.locator(".error-text")).to_have_count(0)


def open_described_folder(page: Page, api: httpx.Client) -> tuple[dict[str, Any], Locator]:
    """A folder described "As it was", open, and its details panel."""
    folder = make_folder(api, unique("described"), description="As it was")
    page.clock.install()
    page.goto(f"/folders/{folder['id']}")
    return folder, page.get_by_role("complementary", name="Details")


def test_a_folders_description_changed_elsewhere_shows_in_its_details(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder, details = open_described_folder(page, api)
    expect(details.get_by_text("As it was")).to_be_visible()
    changed = api.patch(f"/v1/folders/{folder['id']}", json={"description": "As it is now"})
    assert changed.status_code == 200, changed.text
    now = details.get_by_text("As it is now")
    _ticks_until(page, lambda: expect(now).to_be_visible(timeout=1_000))


def test_the_keyboard_stays_on_its_item_when_the_list_read_again_puts_one_before_it(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("keyboard"))
    upload(api, folder["id"], ("b.txt", text("b\n")), ("c.txt", text("c\n")))
    page.clock.install()
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    grid.get_by_role("row", name="c.txt").click()
    expect(grid.get_by_role("row", name="c.txt")).to_have_attribute("aria-selected", "true")

    upload(api, folder["id"], ("a.txt", text("a\n")))
    first = grid.get_by_role("row", name="a.txt")
    _ticks_until(page, lambda: expect(first).to_be_visible(timeout=1_000))
    page.keyboard.press("ArrowUp")  # from c.txt, not from the place it was at
    expect(grid.get_by_role("row", name="b.txt")).to_have_attribute("aria-selected", "true")
    expect(page.locator("p.count")).to_have_text("3 items, 1 selected")


def test_a_folder_changing_at_every_tick_is_read_again_when_it_stops_not_at_every_tick(
    admin_page: Page, api: httpx.Client
) -> None:
    """An upload going on into the folder shown (its count changes at every tick of the
    page's watch: made so here, by answering the watch with a count that grows) has the
    list read when it starts and once it stops (or every 30 s), not at every tick, which
    cut off any list slower to read than a tick."""
    page = admin_page
    folder = make_folder(api, unique("busy"))
    upload(api, folder["id"], ("a.txt", text("a\n")))
    watched = f"/v1/folders/{folder['id']}"
    state = {"growing": False, "added": 0, "served": 0}

    def growing(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        state["served"] += 1
        state["added"] += state["growing"]
        body["file_count"] += state["added"]
        route.fulfill(response=response, json=body)

    lists: list[str] = []
    page.on("request", lambda r: f"{watched}/items" in r.url and lists.append(r.url))
    # The folder's reads under way (the watch's, the views'): a tick is run only once
    # they have all answered, as a tick while the watch's read is under way is skipped.
    under_way: set[Request] = set()
    page.on("request", lambda r: watched in r.url and under_way.add(r))
    page.on("requestfinished", lambda r: under_way.discard(r))
    page.on("requestfailed", lambda r: under_way.discard(r))

    def tick() -> None:
        _until(page, lambda: not under_way, "the folder's reads answered")
        served = state["served"]
        page.clock.run_for(WATCH_MS)
        _until(page, lambda: state["served"] > served, "the watch's tick")
        _until(page, lambda: not under_way, "the folder's reads answered")

    page.route(f"**{watched}", growing)
    page.clock.install()
    page.goto(f"/folders/{folder['id']}")
    expect(page.locator("p.count")).to_have_text("1 item")

    read = len(lists)
    state["growing"] = True
    # Three ticks of the watch, run at once, each answered with a count that grew (the
    # views' reads of the folder are also answered so: the page's, the tree's).
    for _ in range(3):
        tick()
    assert len(lists) == read + 1, lists[read:]

    state["growing"] = False
    with page.expect_request(lambda r: f"{watched}/items" in r.url, timeout=15_000):
        tick()
    assert len(lists) == read + 2, lists[read:]
    # The watch goes on ticking: none of its reads is left half answered at the close.
    page.unroute_all(behavior="ignoreErrors")


def _until(page: Page, done: Callable[[], bool], what: str) -> None:
    """Waits on `done`, each look a frame apart (events and routes are taken meanwhile)."""
    deadline = time.monotonic() + 15
    while not done():
        assert time.monotonic() < deadline, what
        page.evaluate("() => new Promise(requestAnimationFrame)")


def test_a_change_made_while_every_read_failed_is_read_once_they_answer_again(
    admin_page: Page, api: httpx.Client
) -> None:
    """Back to the tab while the network is not (waking from sleep): the views' reads
    and the watch's fail. The watch's next answer, with what changed meanwhile, has the
    views read again: it is not taken as what they read."""
    page = admin_page
    folder = make_folder(api, unique("asleep"))
    upload(api, folder["id"], ("a.txt", text("a\n")))
    page.clock.install()
    page.goto(f"/folders/{folder['id']}")
    count = page.locator("p.count")
    expect(count).to_have_text("1 item")

    down = {"on": True}
    page.route("**/v1/**", lambda route: route.abort() if down["on"] else route.fallback())
    upload(api, folder["id"], ("b.txt", text("b\n")))
    watched = f"/v1/folders/{folder['id']}"
    under_way: set[Request] = set()
    failed: list[str] = []
    page.on("request", lambda r: watched in r.url and under_way.add(r))
    page.on("requestfinished", lambda r: under_way.discard(r))
    page.on("requestfailed", lambda r: (under_way.discard(r), failed.append(r.url)))
    page.evaluate(RETURN_TO_TAB)
    # The watch's read (asked at once) and the views' (asked once drawn) have failed.
    _until(
        page,
        lambda: not under_way and any(f"{watched}/items" in u for u in failed),
        "the reads begun on coming back failed",
    )
    expect(count).to_have_text(re.compile(r"^1 item"))

    down["on"] = False
    _ticks_until(page, lambda: expect(count).to_have_text(re.compile(r"^2 items"), timeout=1_000))


def test_a_description_changed_elsewhere_while_edited_here_shows_after_cancel(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder, details = open_described_folder(page, api)
    details.get_by_role("button", name="Edit description").click()
    renamed = unique("renamed")
    changed = api.patch(
        f"/v1/folders/{folder['id']}", json={"name": renamed, "description": "As it is now"}
    )
    assert changed.status_code == 200, changed.text
    # The page has read the folder again (its name shows) while the description is edited.
    heading = details.get_by_role("heading", name=renamed)
    _ticks_until(page, lambda: expect(heading).to_be_visible(timeout=1_000))
    expect(details.get_by_role("textbox", name="Description")).to_have_value("As it was")

    details.get_by_role("button", name="Cancel").click()
    expect(details.get_by_text("As it is now")).to_be_visible()


def test_a_change_made_while_an_earlier_watch_read_was_under_way_is_seen(
    admin_page: Page, api: httpx.Client
) -> None:
    """The views read again (the tab come back to) while the watch's tick still waits
    for its answer: the watch asks at once too, not after that answer, so that a change
    made once the views have read is seen as one, not taken for what they read. The held
    tick answers last, with what was there when it was asked."""
    page = admin_page
    folder = make_folder(api, unique("overtaken-watch"))
    upload(api, folder["id"], ("a.txt", text("a\n")))
    watched = f"/v1/folders/{folder['id']}"
    under_way: set[Request] = set()
    page.on("request", lambda r: watched in r.url and under_way.add(r))
    page.on("requestfinished", lambda r: under_way.discard(r))
    page.on("requestfailed", lambda r: under_way.discard(r))
    hold = {"on": False}
    held: list[tuple[Route, APIResponse]] = []

    def folder_read(route: Route) -> None:
        if hold["on"]:
            hold["on"] = False
            held.append((route, route.fetch()))
        else:
            route.fallback()

    page.route(f"**{watched}", folder_read)
    page.clock.install()
    page.goto(f"/folders/{folder['id']}")
    count = page.locator("p.count")
    expect(count).to_have_text("1 item")
    _until(page, lambda: not under_way, "the page's first reads answered")
    hold["on"] = True  # the next read of the folder: the watch's tick
    page.clock.run_for(WATCH_MS)
    _until(page, lambda: bool(held), "the watch's tick asked")
    [(tick, answer)] = held

    with page.expect_response(lambda r: f"{watched}/items" in r.url):
        page.evaluate(RETURN_TO_TAB)
    _until(page, lambda: under_way <= {tick.request}, "the views' reads answered")
    upload(api, folder["id"], ("c.txt", text("c\n")))
    tick.fulfill(response=answer)
    _ticks_until(page, lambda: expect(count).to_have_text("2 items", timeout=1_000))


def test_a_file_moved_out_and_another_in_between_two_looks_show_on_the_dataset_page(
    admin_page: Page, api: httpx.Client
) -> None:
    """The dataset's count is the same after a move out and a move in: its page watches
    the dataset's version, which each of them changed."""
    page = admin_page
    folder = make_folder(api, unique("swapped"))
    elsewhere = make_folder(api, unique("swapped-from"))
    [leaving] = upload(api, folder["id"], ("leaving.png", png(8, 8)))
    [coming] = upload(api, elsewhere["id"], ("coming.txt", text("c\n")))
    dataset = api.post(
        "/v1/datasets", json={"name": unique("Swapped"), "synced_folder_id": folder["id"]}
    ).json()
    page.clock.install()
    page.goto(f"/datasets/{dataset['id']}")
    region = page.get_by_role("region", name=f"Dataset {dataset['name']}")
    grid = region.get_by_role("grid", name="Files in the dataset")
    expect(grid.get_by_role("row", name="leaving.png")).to_be_visible()

    # No look of the watch while the two moves are made: both land between two looks.
    watched = f"**/v1/datasets/{dataset['id']}"
    page.route(watched, lambda route: route.abort())
    for moved, target in ((leaving, elsewhere), (coming, folder)):
        answer = api.post(
            "/v1/move", json={"file_ids": [moved["id"]], "target_folder_id": target["id"]}
        )
        assert answer.status_code == 200, answer.text
    _until(
        page,
        lambda: (
            [f["name"] for f in api.get(f"/v1/datasets/{dataset['id']}/files").json()["items"]]
            == ["coming.txt"]
        ),
        "the dataset follows its folder",
    )
    page.unroute(watched)

    coming_row = grid.get_by_role("row", name="coming.txt")
    _ticks_until(page, lambda: expect(coming_row).to_be_visible(timeout=1_000))
    expect(grid.get_by_role("row", name="leaving.png")).to_have_count(0)
    expect(region).to_contain_text("1 file, synced with the folder")
