"""The folder's own read refused for a moment (a 503 from a busy gateway) while its list
came: the page reads the folder again by itself, waiting longer each time, and shows it
without a click (it stayed "Loading folder…" with "Try again": test_cloud_synced.py was
flaky under load for it); refused past its waits, it says so, with "Try again"."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.support import text


def _refuse_reads(page: Page, folder_id: str, times: int | None) -> list[str]:
    """The folder's own reads (not its list's) answered 503, the first `times` of them
    (None: all): the reads refused."""
    refused: list[str] = []
    own = re.compile(rf"/v1/folders/{folder_id}(\?.*)?$")

    def busy(route: Route) -> None:  # a function: Playwright takes no bound built-in
        if route.request.method == "GET" and (times is None or len(refused) < times):
            refused.append(route.request.url)
            route.fulfill(
                status=503,
                json={"error": {"code": "unavailable", "message": "The catalog is unavailable"}},
            )
        else:
            route.fallback()

    page.route(lambda url: bool(own.search(url)), busy)
    return refused


def test_a_folder_whose_first_reads_are_refused_shows_without_a_click(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("read-again"))
    upload(api, folder["id"], ("note.txt", text("n\n")))
    # Three reads at once as the page opens (the page's own, its watch's and the folder
    # tree's), then the page's again: the page's first two are among these four.
    refused = _refuse_reads(page, folder["id"], 4)

    page.goto(f"/folders/{folder['id']}")
    expect(page.get_by_role("heading", name=folder["name"], level=1)).to_be_visible()
    assert len(refused) == 4, refused
    expect(page.get_by_role("button", name="Try again")).to_have_count(0)
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    expect(grid.get_by_role("row", name="note.txt")).to_be_visible()
    page.unroute_all(behavior="ignoreErrors")


def test_a_folder_refused_past_its_waits_says_so_and_try_again_reads_it(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("read-refused"))
    refused = _refuse_reads(page, folder["id"], None)
    # The page's clock, not the test's, waits the backoff (0.5 + 1 + 2 + 4 s).
    page.clock.install()

    page.goto(f"/folders/{folder['id']}")
    unavailable = page.get_by_role("region", name="Folder unavailable")
    said = unavailable.get_by_role("alert")
    deadline = time.monotonic() + 30
    while not said.is_visible():
        assert time.monotonic() < deadline, f"not said after {len(refused)} refused reads"
        page.clock.run_for(250)
    expect(said).to_contain_text("The catalog is unavailable")
    # Read again after each wait (with the watch's and the tree's reads at the open).
    assert len(refused) >= 5, refused
    page.unroute_all(behavior="ignoreErrors")
    unavailable.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("heading", name=folder["name"], level=1)).to_be_visible()
