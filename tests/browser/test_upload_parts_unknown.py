"""A large file's upload session read while the store did not list its parts in time
(`parts_known: false`: none shown stored, a URL for every part) is read again a moment
later before the app sends anything: only the parts the store lacks are sent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import items, make_folder, unique


def test_a_session_read_with_its_parts_unknown_is_read_again_before_sending(
    signed_in: Page, api: httpx.Client, tmp_path: Path
) -> None:
    page = signed_in
    folder = make_folder(api, unique("unknown-parts"))
    size = 12 * 1024 * 1024  # two parts, of 8 MiB and 4 MiB
    big = tmp_path / "big.bin.txt"
    big.write_bytes(b"x" * size)
    puts: list[str] = []
    reads: list[bool] = []

    def drop_the_first_try(route: Route) -> None:
        puts.append(route.request.url)
        if len(puts) == 1:
            route.abort("connectionreset")
        else:
            route.continue_()

    def unknown_at_first(route: Route) -> None:
        """The first read after the dropped part answers as a store that did not list
        the parts: each part to send again, with the URL it was sent to."""
        if route.request.method != "GET":
            route.continue_()
            return
        session = route.fetch().json()
        if not reads:
            urls = {int(url.split("/parts/")[1].split("?")[0]): url for url in puts}
            session |= {"parts_known": False, "parts_stored": [], "bytes_stored": 0}
            session["parts"] = [
                {
                    "part": n,
                    "size": min(8 * 1024 * 1024, size - (n - 1) * 8 * 1024 * 1024),
                    "url": urls[n],
                }
                for n in sorted(urls)
            ]
        reads.append(session.get("parts_known", True))
        route.fulfill(status=200, content_type="application/json", body=json.dumps(session))

    page.route("**/v1/uploads/*/parts/*", drop_the_first_try)
    page.route(re.compile(r"/v1/uploads/[^/?]+$"), unknown_at_first)
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="Upload files").click()
    dialog = page.get_by_role("dialog", name="Upload files")
    dialog.get_by_label("Files", exact=True).set_input_files(big)
    dialog.get_by_role("button", name="Upload", exact=True).click()
    expect(dialog.get_by_role("listitem", name="big.bin.txt")).to_contain_text(
        "Uploaded", timeout=30_000
    )
    # Read again once the parts were unknown; the part stored was not sent again.
    assert reads == [False, True]
    assert len(puts) == 3, puts
    [stored] = items(api, folder["id"])
    assert stored["size"] == size
    assert api.get(f"/v1/files/{stored['id']}/content").content == b"x" * size
