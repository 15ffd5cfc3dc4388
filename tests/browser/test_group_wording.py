"""An image group's images cannot be deleted while the group stays (the seed): the Delete
dialog names the group by its name, without the id the API adds for programs."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, unique
from tests.e2e.support import png


def test_deleting_an_image_of_a_group_names_the_group_in_words(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("grouped"))
    made = api.post(
        f"/v1/folders/{folder['id']}/image-groups",
        data={"kind": "image_group", "name": "trio"},
        files=[("file", (f"{n}.png", png(10 + n, 10))) for n in range(3)],
    ).json()
    group, images = made["file"], made["folder"]

    page.goto(f"/folders/{images['id']}")
    # The folder read (its role decides what Delete may do) before the key is pressed:
    # its listing can come first on a loaded machine, and a Delete then does nothing.
    expect(page.get_by_role("heading", name="trio (images)", level=1)).to_be_visible()
    page.get_by_role("button", name="List").click()
    row = page.get_by_role("row", name="0.png")
    row.click()
    expect(row).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Delete")
    dialog = page.get_by_role("dialog", name="Delete")
    alert = dialog.get_by_role("alert")
    expect(alert).to_have_text(
        "These files or folders belong to an image group; delete the group instead: “trio”."
    )
    expect(alert).not_to_contain_text(group["id"])
    expect(dialog.get_by_role("button", name="Delete")).to_be_disabled()
