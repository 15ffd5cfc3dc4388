"""How a cloud-synced folder's page follows a running sync (web/src/sync.tsx): its job
read again after 1 s, then each time later up to every 5 s, and not while the tab is
hidden. The page's clock is Playwright's (`page.clock`): the seconds between reads are
the app's own timers run fast, not waited for. The folder's sync state and its job are
answered by the test (a running sync whose job answers as the test says): the timing is
the app's, whatever the platform's sync does."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import make_folder, unique

# The fake clock's reading at each read of the job, and the reads under way (until the
# app has taken the answer: its next timer is set by then).
COUNT_JOB_READS = """
(() => {
  const reads = (window.__jobReads = []);
  window.__inFlight = 0;
  const fetchFirst = window.fetch.bind(window);
  window.fetch = (input, init) => {
    const url = typeof input === "string" ? input : input.url;
    if (!url.includes("/v1/jobs/")) return fetchFirst(input, init);
    reads.push(Date.now());
    window.__inFlight++;
    return fetchFirst(input, init).then(
      (response) => {
        const json = response.json.bind(response);
        response.json = () => json().finally(() => window.__inFlight--);
        return response;
      },
      (error) => {
        window.__inFlight--;
        throw error;
      },
    );
  };
})();
"""


def _following(page: Page, api: httpx.Client, job: Callable[[Route], None]) -> str:
    """A folder whose sync state says a sync is running, its job answered by `job`; its
    page opened on the page's own clock, paused once the sync is shown running."""
    folder = make_folder(api, unique("polled"))
    job_id = str(uuid.uuid4())
    state: dict[str, Any] = {
        "cloud_synced": True,
        "synced_folder_id": folder["id"],
        "cloud_sync": {
            "integration_id": str(uuid.uuid4()),
            "integration_name": "lab",
            "prefix": "scans/",
            "sync_interval_s": 3600,
        },
        "paused": False,
        "objects": 0,
        "last_sync": {
            "job_id": job_id,
            "status": "running",
            "started_at": datetime.now(UTC).isoformat(),
        },
    }
    page.route(f"**/v1/folders/{folder['id']}/sync", lambda route: route.fulfill(json=state))
    page.route(f"**/v1/jobs/{job_id}", job)
    # The page's time moves only as the test says, from before it loads.
    page.clock.install()
    page.clock.pause_at(datetime.now(UTC) + timedelta(seconds=1))
    page.add_init_script(COUNT_JOB_READS)
    page.goto(f"/folders/{folder['id']}")
    status = page.get_by_role("region", name="Cloud sync").get_by_role("status")
    deadline = time.monotonic() + 15
    while not _reads(page):
        assert time.monotonic() < deadline, "the job was not read"
        _run(page, 100)
    expect(status).to_contain_text("Syncing since")
    return job_id


def _settle(page: Page) -> None:
    """Until no read of the job is under way (each answer taken by the app)."""
    deadline = time.monotonic() + 10
    while page.evaluate("window.__inFlight"):
        assert time.monotonic() < deadline, "a read of the job did not end"


def _run(page: Page, ms: int, step: int = 100) -> None:
    """The page's clock moved on by `ms`, `step` at a time, each read answered."""
    for _ in range(ms // step):
        page.clock.run_for(step)
        _settle(page)


def _reads(page: Page) -> list[int]:
    return list(page.evaluate("window.__jobReads ?? []"))


def test_a_running_syncs_job_is_read_less_and_less_often_while_it_cannot_be_read(
    admin_page: Page, api: httpx.Client
) -> None:
    """Its job answering 503 (a restart): read again after 1 s, 2 s, 4 s, then every 5 s,
    not at a fixed pace."""
    page = admin_page

    def unavailable(route: Route) -> None:
        route.fulfill(
            status=503,
            headers={"Retry-After": "1"},
            json={"error": {"code": "unavailable", "message": "restarting", "details": {}}},
        )

    _following(page, api, unavailable)
    _run(page, 20_000)
    reads = _reads(page)
    gaps = [later - earlier for earlier, later in itertools.pairwise(reads)]
    # The app's timers, to the test's step of 100 ms (an answer taken a step late).
    assert len(gaps) >= 5, gaps
    for gap, due in zip(gaps, (1_000, 2_000, 4_000, 5_000, 5_000), strict=False):
        assert due <= gap <= due + 200, gaps
    page.unroute_all(behavior="ignoreErrors")


def test_a_running_syncs_job_is_not_read_while_the_tab_is_hidden(
    admin_page: Page, api: httpx.Client
) -> None:
    """Hidden, the tab reads nothing for as long as it stays so (its reads come due and
    wait); shown again, the job is read at once, and then on the same pace."""
    page = admin_page
    _following(page, api, lambda route: route.fulfill(json={"status": "running"}))
    before = _reads(page)
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
            Object.defineProperty(document, "visibilityState", {
                configurable: true,
                get: () => (hidden ? "hidden" : "visible"),
            });
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        True,
    )
    _run(page, 60_000, step=1_000)
    assert _reads(page) == before
    hidden_until = page.evaluate("Date.now()")
    page.evaluate(
        """() => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
            Object.defineProperty(document, "visibilityState", {
                configurable: true,
                get: () => "visible",
            });
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    _settle(page)
    # Read at once, on the clock's very tick it showed at.
    assert _reads(page) == [*before, hidden_until]
    _run(page, 10_000)
    assert len(_reads(page)) > len(before) + 1
    expect(page.get_by_role("region", name="Cloud sync").get_by_role("status")).to_contain_text(
        "Syncing since"
    )
    page.unroute_all(behavior="ignoreErrors")
