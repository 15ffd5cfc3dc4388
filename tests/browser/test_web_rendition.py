"""A video with a web rendition plays it: the file's page points its player at
`?rendition=web` (browsers cannot play the original's codec), and at the original before."""

from __future__ import annotations

import time

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.test_reencode import mpeg4_avi


def test_the_player_uses_the_web_rendition_once_made(admin_page: Page, api: httpx.Client) -> None:
    page = admin_page
    folder = make_folder(api, unique("web-rendition"))
    (clip,) = upload(api, folder["id"], ("clip.avi", mpeg4_avi(seconds=1)))
    page.goto(f"/files/{clip['id']}")
    player = page.get_by_label("Video clip.avi")
    expect(player).to_have_attribute("src", f"/v1/files/{clip['id']}/content")

    started = api.post("/v1/files/re-encode", json={"file_ids": [clip["id"]]})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 120
    while (job := api.get(f"/v1/jobs/{started.json()['job_id']}").json())["status"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.2)  # polling the job, within the deadline
    assert job["status"] == "done", job
    page.reload()
    expect(player).to_have_attribute("src", f"/v1/files/{clip['id']}/content?rendition=web")
