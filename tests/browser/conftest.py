"""Browser tests: the web app driven in Debian's Chromium by Playwright (its sync API,
run after every other test), each result checked through the API.

They run against the platform whose blobs are on local disk (`local_stack`): its
upload-session part URLs are the gateway's own, as the browser's same-origin policy
wants (an S3 store's part URLs need the bucket's CORS, see README). One browser per
session, a fresh context (cookies, storage) per test; a failing test leaves a
screenshot in `.artifacts/browser/`.

The admin signs in through the form once a session (`admin_state`); a test that asks
for `admin_page` (or `signed_in`, on the home page) starts from that session's cookie,
in a context of its own. A test
whose subject is signing in or out, or a session ending, signs in through the form
itself (`page` and `sign_in`): ending the shared session would sign every later test
out.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    Route,
    expect,
    sync_playwright,
)

from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY

ARTIFACTS = Path(os.environ.get("FILES_TEST_ARTIFACTS", ".artifacts")) / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A write's effects reach the view after the API's consistency wait (at most 5 s).
expect.set_options(timeout=15_000)
WEB_BUILD = Path(__file__).resolve().parents[2] / "web" / "dist" / "index.html"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests run last: Playwright's sync API keeps its event loop current
    in this thread while it runs, so no asyncio test may come after it starts. The
    first of them also waits for the platform to start (a minute on a busy machine)."""
    browser = [i for i in items if i.nodeid.startswith("tests/browser/")]
    for item in browser:
        item.add_marker(pytest.mark.timeout(300))
    items[:] = [i for i in items if not i.nodeid.startswith("tests/browser/")] + browser


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def platform(local_stack: Stack) -> Stack:
    if not WEB_BUILD.is_file():
        pytest.fail("the web app is not built: run `make web` (make test does)")
    return local_stack


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
        )
    browser = playwright.chromium.launch(
        executable_path=executable, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture
def api(platform: Stack) -> Iterator[httpx.Client]:
    """The admin's API client, to set up and to check what the app did."""
    with httpx.Client(
        base_url=platform.gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as client:
        yield client


def _context(browser: Browser, platform: Stack, **options: Any) -> BrowserContext:
    context = browser.new_context(
        base_url=platform.gateway_url, viewport={"width": 1280, "height": 800}, **options
    )
    context.set_default_timeout(10_000)
    return context


@pytest.fixture(scope="session")
def admin_state(browser: Browser, platform: Stack) -> dict[str, Any]:
    """The admin's session, signed in through the form once: its cookie, for the
    contexts of the tests that are not about signing in (each form sign-in cost a test
    about a second, most of it the app's first load and the session's start)."""
    context = _context(browser, platform)
    # A failure here is every admin test's (pytest keeps a session fixture's error):
    # the one sign-in is given the time a busy machine may take, not a step's 10 s.
    context.set_default_timeout(60_000)
    try:
        sign_in(context.new_page())
        return dict(context.storage_state())
    finally:
        context.close()


@pytest.fixture
def context(
    browser: Browser, platform: Stack, request: pytest.FixtureRequest
) -> Iterator[BrowserContext]:
    """A fresh context; the admin's session in it when the test asks for `admin_page` or
    `signed_in` (or for `admin_state`, to do something before the app's first load, then
    `home`)."""
    options: dict[str, Any] = {}
    if {"admin_page", "signed_in", "admin_state"} & set(request.fixturenames):
        options["storage_state"] = request.getfixturevalue("admin_state")
    context = _context(browser, platform, **options)
    yield context
    failed = any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
        for n, page in enumerate(context.pages):
            path = ARTIFACTS / f"{name}-{n}.png"
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot: {path}")
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def sign_in(page: Page, key: str = ADMIN_KEY) -> None:
    """Through the sign-in form, as a person does."""
    page.goto("/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def home(page: Page) -> None:
    """The app's home page, in a context signed in already (`admin_state`)."""
    page.goto("/")
    page.get_by_role("button", name="Sign out").wait_for()


@pytest.fixture
def admin_page(page: Page) -> Page:
    """A page signed in as the admin (the session's cookie, `context`), on no address
    yet: for a test whose first step is to go to one (a load of the home page before it
    would be a load for nothing)."""
    return page


@pytest.fixture
def signed_in(page: Page) -> Page:
    """The app's home page, signed in as the admin (the session's cookie, `context`)."""
    home(page)
    return page


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_folder(
    api: httpx.Client, name: str, parent_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, **fields}
    if parent_id:
        body["parent_id"] = parent_id
    answer = api.post("/v1/folders", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def upload(api: httpx.Client, folder_id: str, *files: tuple[str, bytes]) -> list[dict[str, Any]]:
    answer = api.post(
        f"/v1/folders/{folder_id}/files", files=[("file", (name, body)) for name, body in files]
    )
    assert answer.status_code == 201, answer.text
    return list(answer.json()["files"])


def items(api: httpx.Client, folder_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"/v1/folders/{folder_id}/items", params=params).json()
        found += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return found


def upload_dialog(page: Page, folder_id: str, tab: str | None = None) -> Locator:
    """A folder's page, its Upload files dialog open (on `tab`, else on Upload)."""
    page.goto(f"/folders/{folder_id}")
    page.get_by_role("button", name="Upload files").click()
    dialog = page.get_by_role("dialog", name="Upload files")
    if tab is not None:
        dialog.get_by_role("tab", name=tab).click()
    return dialog


def uploading(
    page: Page, folder_id: str, files: Path | list[Path], tab: str | None = None
) -> tuple[Locator, Locator]:
    """The Upload files dialog of a folder's page (on `tab`) sending `files`: the dialog
    and its list of files to upload."""
    dialog = upload_dialog(page, folder_id, tab)
    dialog.get_by_label("Files", exact=True).set_input_files(files)
    dialog.get_by_role("button", name="Upload", exact=True).click()
    return dialog, dialog.get_by_role("list", name="Files to upload")


def hold_the_folders_read(page: Page, folder_id: str) -> list[Route]:
    """The folder's own read (which brings the caller's role) held: its routes, to be
    let go with `continue_()` (and `page.unroute_all` at the test's end)."""
    held: list[Route] = []
    own = re.compile(rf"/v1/folders/{folder_id}(\?.*)?$")

    def hold(route: Route) -> None:  # a function: Playwright takes no bound built-in
        held.append(route)

    page.route(lambda url: bool(own.search(url)), hold)
    return held


def ask_to_delete_all_forever(page: Page, count: int) -> tuple[Locator, Locator, Locator]:
    """The Trash opened, its `count` items chosen (Ctrl+A) and "Delete forever" asked of
    them: the Trash, its grid and the question."""
    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    grid = trash.get_by_role("grid", name="Items in the trash")
    expect(grid).to_be_visible(timeout=60_000)
    grid.focus()
    page.keyboard.press("Control+a")
    expect(trash.get_by_text(f"{count:,} selected", exact=True)).to_be_visible()
    page.keyboard.press("Delete")
    question = page.get_by_role("alertdialog")
    expect(question).to_have_accessible_name(f"Delete {count:,} items forever?")
    return trash, grid, question
