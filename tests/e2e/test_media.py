"""Media facts come from the bytes of what is uploaded, through the whole platform."""

from __future__ import annotations

import httpx

from shared.kit.stack import Stack
from tests import media_fixtures
from tests.e2e.support import decoding_workers, folder, holds_no_secret, unique
from tests.unit.test_media import mp4


async def test_uploaded_video_and_audio_show_their_media_facts(
    api: httpx.AsyncClient, platform: Stack
) -> None:
    where = await folder(api, unique("media"))
    # Named like text files: the kind still comes from the bytes.
    answer = await api.post(
        f"/v1/folders/{where['id']}/files",
        files=[
            ("file", ("clip.txt", mp4(), "text/plain")),
            ("file", ("song.txt", media_fixtures.mp3(), "text/plain")),
        ],
    )
    assert answer.status_code == 201, answer.text
    clip, song = [
        (await api.get(f"/v1/files/{uploaded['id']}")).json() for uploaded in answer.json()["files"]
    ]
    assert (clip["kind"], clip["mime_type"]) == ("video", "video/mp4")
    assert clip["media"] == {
        "width": 1920,
        "height": 1080,
        "frames": 10,
        "duration_s": 1.0,
        "fps": 10.0,
        "codec": "mpeg4",
    }
    assert (song["kind"], song["mime_type"]) == ("audio", "audio/mpeg")
    assert song["media"] == {
        "duration_s": 2.0,
        "sample_rate": 44100,
        "channels": 2,
        "codec": "mp3",
    }
    # FFmpeg read them in a worker holding none of the platform's secrets.
    probers = decoding_workers(platform, "ingest", "services.ingest.media.prober")
    assert probers and all(holds_no_secret(platform, env) for env in probers), probers
