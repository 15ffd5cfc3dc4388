"""The global search's results page: hits in the order of their names, a page at a time,
and "Show more results" while there are more (none is silently left out)."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.support import text

PAGE = 100  # web/src/search.tsx RESULTS_PAGE


def test_many_results_come_by_name_and_all_can_be_shown(signed_in: Page, api: httpx.Client) -> None:
    page = signed_in
    needle = unique("needle")
    folder = make_folder(api, unique("haystack"))
    names = [f"{needle}-{n:03d}.txt" for n in range(PAGE + 5)]
    for start in range(0, len(names), 50):
        upload(
            api, folder["id"], *((name, text(f"{name}\n")) for name in names[start : start + 50])
        )

    search = page.get_by_role("combobox", name="Search files")
    search.fill(needle)
    search.press("Enter")
    expect(page).to_have_url(f"/search?q={needle}")
    results = page.get_by_role("region", name="Search results")
    hits = results.get_by_role("listitem")
    expect(hits).to_have_count(PAGE)
    expect(hits.first).to_contain_text(names[0])
    expect(hits.nth(PAGE - 1)).to_contain_text(names[PAGE - 1])
    expect(results.get_by_text(f"The first {PAGE} results, by name")).to_be_visible()

    results.get_by_role("button", name="Show more results").click()
    expect(hits).to_have_count(len(names))
    expect(hits.last).to_contain_text(names[-1])
    expect(results.get_by_text(f"{len(names)} results")).to_be_visible()
    expect(results.get_by_role("button", name="Show more results")).to_have_count(0)
