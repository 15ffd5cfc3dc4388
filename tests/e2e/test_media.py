"""Media facts come from the bytes of what is uploaded, through the whole platform."""

from __future__ import annotations

import httpx

from tests.e2e.support import folder, unique
from tests.unit.test_media import mp4


async def test_an_uploaded_video_shows_its_duration_frames_and_size(
    api: httpx.AsyncClient,
) -> None:
    where = await folder(api, unique("videos"))
    # Named like a text file: the kind still comes from the bytes.
    answer = await api.post(
        f"/v1/folders/{where['id']}/files",
        files=[("file", ("clip.txt", mp4(), "text/plain"))],
    )
    assert answer.status_code == 201, answer.text
    [uploaded] = answer.json()["files"]
    details = (await api.get(f"/v1/files/{uploaded['id']}")).json()
    assert details["kind"] == "video"
    assert details["mime_type"] == "video/mp4"
    assert details["media"] == {"width": 1920, "height": 1080, "frames": 300, "duration_s": 10.0}
