"""Re-encoding on the running platform (issue 17): a video in a codec browsers do not play
gets a web rendition (H.264/AAC in MP4) by a job, served beside the original by range;
an image sequence gets a video; rights are the folder's editor role; other kinds, unknown
ids and hostile bytes are refused or failed by name; "Delete forever" takes the rendition's
bytes with the file."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import AsyncIterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import grpc
import httpx
import numpy as np
import pytest
from files_client import Client

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.files_pb.files.v1 import files_pb2_grpc as rpc
from services.thumbnails.renditions import rendition_key
from shared.kit.blobs import BlobStore, open_blob_store
from tests import thumbnail_fixtures as media
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import error, folder, member, png, unique, upload
from tests.e2e.test_access import LARGE, download_with_the_right_taken, gateway_logged, invite
from tests.e2e.test_cli import ok
from tests.e2e.test_image_groups import group

WITHIN = 120.0  # encoding shares two cores with the whole platform and other tests


def mpeg4_avi(seconds: int = 2, rate: int = 10, width: int = 96, height: int = 64) -> bytes:
    """A short MPEG-4 Part 2 video with MP2 sound in AVI: neither plays in a browser."""
    out = io.BytesIO()
    with av.open(out, "w", format="avi") as container:
        video = container.add_stream("mpeg4", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("mp2", rate=44100)
        audio.layout = "stereo"
        for n in range(seconds * rate):
            pixels = np.full((height, width, 3), (n * 20) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = n
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = 1152
        for n in range(seconds * 44100 // samples):
            tone = (np.sin(np.arange(samples) / 10) * 8000).astype(np.int16)
            sound = av.AudioFrame.from_ndarray(
                np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo"
            )
            sound.sample_rate, sound.pts, sound.time_base = 44100, n * samples, Fraction(1, 44100)
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return out.getvalue()


def streams_of(data: bytes) -> dict[str, str]:
    """What a player finds in the bytes: each stream's type and codec."""
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name.startswith("mov"), container.format.name
        found = {s.type: s.codec_context.name for s in container.streams}
        frames = sum(1 for _ in container.decode(video=0))
    assert frames > 0
    return found


async def finished(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def ended() -> bool:
        answer = await api.get(f"/v1/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        seen[:] = [answer.json()]
        return bool(seen[0]["status"] != "running")

    await eventually(ended, WITHIN, f"re-encode job {job_id}")
    return seen[0]


async def re_encode(api: httpx.AsyncClient, *file_ids: str) -> dict[str, Any]:
    answer = await api.post("/v1/files/re-encode", json={"file_ids": list(file_ids)})
    assert answer.status_code == 202, answer.text
    return await finished(api, answer.json()["job_id"])


@pytest.fixture
async def store(platform: Any) -> AsyncIterator[BlobStore]:
    blobs = open_blob_store(platform.settings)
    yield blobs
    await blobs.close()


async def test_a_video_gets_a_web_rendition_served_by_range(
    api: httpx.AsyncClient, store: BlobStore
) -> None:
    top = await folder(api, unique("reencode"))
    original = mpeg4_avi()
    video = (await upload(api, top["id"], ("clip.avi", original)))["files"][0]
    assert video["kind"] == "video"
    content = f"/v1/files/{video['id']}/content"
    none_yet = error(await api.get(content, params={"rendition": "web"}), 404)
    assert "no web rendition yet" in none_yet["message"]
    assert (await api.get(f"/v1/files/{video['id']}")).json()["renditions"] == []

    job = await re_encode(api, video["id"])
    assert job["kind"] == "re_encode" and job["status"] == "done", job
    assert job["progress"] == {"done": 1, "total": 1} and job["errors"] == []
    assert [f["id"] for f in job["files"]] == [video["id"]]

    web = await api.get(content, params={"rendition": "web"})
    assert web.status_code == 200, web.text
    assert web.headers["content-type"] == "video/mp4"
    assert streams_of(web.content) == {"video": "h264", "audio": "aac"}
    # The original is untouched beside it.
    assert (await api.get(content)).content == original
    # By range, as a player asks.
    part = await api.get(content, params={"rendition": "web"}, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == web.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(web.content)}"
    assert (await api.get(f"/v1/files/{video['id']}")).json()["renditions"] == ["web"]
    error(await api.get(content, params={"rendition": "4k"}), 422)

    # Asked again: done at once, nothing made twice.
    again = await re_encode(api, video["id"])
    assert again["status"] == "done" and again["errors"] == []

    # "Delete forever" takes the rendition's bytes with the file.
    key = rendition_key(video["id"])
    assert await store.exists(key)
    assert (await api.delete(f"/v1/files/{video['id']}")).status_code == 204
    assert await store.exists(key), "the trash keeps it, for a restore"
    purged = await api.delete("/v1/trash", params={"file_ids": video["id"]})
    assert purged.status_code == 200 and purged.json()["purged_files"] == 1, purged.text

    async def reclaimed() -> bool:
        return not await store.exists(key)

    await eventually(reclaimed, 60, "the rendition's bytes deleted")


async def test_an_image_sequence_gets_a_video(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("reencode-seq"))
    frames = [(f"f{n}.png", png(32, 24)) for n in range(5)]
    made = await group(api, top["id"], "image_sequence", "walk", *frames)
    job = await re_encode(api, made["file"]["id"])
    assert job["status"] == "done", job
    web = await api.get(f"/v1/files/{made['file']['id']}/content", params={"rendition": "web"})
    assert web.status_code == 200, web.text
    assert streams_of(web.content) == {"video": "h264"}


async def test_re_encoding_is_refused_by_name(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("reencode-refused"))
    video = (await upload(api, top["id"], ("clip.avi", mpeg4_avi(seconds=1))))["files"][0]
    picture = (await upload(api, top["id"], ("a.png", png())))["files"][0]

    # Another kind: 422 naming it, no job.
    refused = error(await api.post("/v1/files/re-encode", json={"file_ids": [picture["id"]]}), 422)
    assert refused["details"]["not_re_encoded"] == [picture["id"]]
    assert "image" in refused["message"]
    # An unknown id: 404 naming it.
    nobody = "00000000-0000-4000-8000-000000000017"
    missing = error(
        await api.post("/v1/files/re-encode", json={"file_ids": [video["id"], nobody]}), 404
    )
    assert missing["details"]["missing_files"] == [nobody]
    # Bounds and shape.
    error(await api.post("/v1/files/re-encode", json={"file_ids": []}), 422)
    error(await api.post("/v1/files/re-encode", json={"file_ids": ["x"]}), 422)
    many = [video["id"]] * 1001
    error(await api.post("/v1/files/re-encode", json={"file_ids": many}), 422)

    # Someone who only uses the folder may see the video but not re-encode it; a
    # stranger does not even see it; neither sees the owner's job.
    user, stranger = await member(api, "re-user"), await member(api, "re-stranger")
    granted = await api.post(
        f"/v1/folders/{top['id']}/collaborators", json={"emails": [user["email"]], "role": "user"}
    )
    assert granted.status_code in (200, 201), granted.text
    started = await api.post("/v1/files/re-encode", json={"file_ids": [video["id"]]})
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    for person, status in ((user, 403), (stranger, 404)):
        async with httpx.AsyncClient(
            base_url=str(api.base_url),
            headers={"Authorization": f"Bearer {person['api_key']}"},
            timeout=30,
        ) as theirs:
            answer = await theirs.post("/v1/files/re-encode", json={"file_ids": [video["id"]]})
            found = error(answer, status)
            assert video["id"] in found["message"]
            error(await theirs.get(f"/v1/jobs/{job_id}"), 404, "not_found")
            error(await theirs.get(f"/v1/jobs/{job_id}/files"), 404, "not_found")
    assert (await finished(api, job_id))["status"] == "done"
    # Its pages are the thumbnails context's (ingest has no such job), to its maker.
    page = await api.get(f"/v1/jobs/{job_id}/files")
    assert page.status_code == 200, page.text
    assert [f["id"] for f in page.json()["items"]] == [video["id"]]


async def test_hostile_bytes_fail_the_item_by_name(api: httpx.AsyncClient) -> None:
    """A "video" that is not one (the kind comes from its name's type here) fails its item
    with a reason; the job ends."""
    top = await folder(api, unique("reencode-hostile"))
    good = mpeg4_avi(seconds=1)
    broken = good[:200] + bytes(len(good) - 200)  # the header, then zeros
    files = (await upload(api, top["id"], ("broken.avi", broken)))["files"]
    if files[0]["kind"] != "video":
        pytest.skip("the broken file is not taken for a video")
    job = await re_encode(api, files[0]["id"])
    assert job["status"] == "failed", job
    (failure,) = job["errors"]
    assert failure["details"]["file_id"] == files[0]["id"] and failure["message"]


@pytest.mark.parametrize("blobs", ["local"], indirect=True)
async def test_why_an_item_failed_never_names_where_the_server_keeps_it(
    api: httpx.AsyncClient, platform: Any
) -> None:
    # On a local store the encoder opens the blob by its path, which FFmpeg's error
    # quoted: the job's errors, shown to its maker, named the data dir.
    video = media.mp4(frames=20)  # its index at the end: cut, nothing is readable
    top = await folder(api, unique("reencode-paths"))
    files = (await upload(api, top["id"], ("cut.mp4", video[: len(video) // 2])))["files"]
    job = await re_encode(api, files[0]["id"])
    assert job["status"] == "failed", job
    (failure,) = job["errors"]
    assert failure["message"] and str(platform.settings.data_dir) not in str(failure), failure


def test_the_client_the_cli_and_grpc_re_encode(platform: Any, tmp_path: Path) -> None:
    """The Python client's `re_encode` and `content(rendition=)`, `files reencode`, and
    gRPC's `ReEncode` and `Download` with a rendition, against the same platform."""
    for name in ("clip.avi", "other.avi"):
        (tmp_path / name).write_bytes(mpeg4_avi(seconds=1))
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as client:
        top = client.create_folder(unique("reencode-client"))
        clip, other = top.upload([tmp_path / "clip.avi", tmp_path / "other.avi"])
        job = client.re_encode([clip]).wait(timeout=WITHIN)
        assert (job.kind, job.status, job.errors) == ("re_encode", "done", [])
        web = b"".join(clip.content(rendition="web"))
        assert streams_of(web) == {"video": "h264", "audio": "aac"}
        assert client.get_file(clip.id).renditions == ["web"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("FILES_")}
    env |= {
        "FILES_URL": platform.gateway_url,
        "FILES_API_KEY": ADMIN_KEY,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    assert "done, 1/1" in ok(env, "reencode", other.id, "--wait")

    with grpc.insecure_channel(platform.grpc_target) as channel:
        files = rpc.FilesStub(channel)
        admin = (("authorization", f"Bearer {ADMIN_KEY}"),)
        started = files.ReEncode(pb.ReEncodeRequest(file_ids=[other.id]), metadata=admin)
        assert started.job_id
        answer = files.Download(
            pb.DownloadRequest(file_id=other.id, rendition="web"), metadata=admin
        )
        data = b"".join(c.chunk for c in answer if c.WhichOneof("part") == "chunk")
        assert streams_of(data) == {"video": "h264", "audio": "aac"}


async def test_a_sequence_moved_alone_shows_its_video_only_to_who_sees_its_images(
    api: httpx.AsyncClient, as_key: Any, platform: Any
) -> None:
    """A sequence's video is made of all its images: once its file has moved on its own
    into a folder where a member has a role and its images stay where they have none, the
    member is refused the video (HTTP and gRPC's Download), as a re-encode of it is."""
    home, shared = await folder(api, unique("seq-home")), await folder(api, unique("seq-shared"))
    frames = [(f"f{n}.png", png(32, 24)) for n in range(3)]
    made = await group(api, home["id"], "image_sequence", "private walk", *frames)
    sequence = made["file"]["id"]
    assert (await re_encode(api, sequence))["status"] == "done"
    moved = await api.post(
        "/v1/move", json={"file_ids": [sequence], "target_folder_id": shared["id"]}
    )
    assert moved.status_code == 200, moved.text
    viewer = await member(api, "viewer")
    invited = await api.post(
        f"/v1/folders/{shared['id']}/collaborators",
        json={"emails": [viewer["email"]], "role": "user"},
    )
    assert invited.status_code == 200, invited.text
    client = as_key(viewer["api_key"])
    seen = await client.get(f"/v1/files/{sequence}")
    assert seen.status_code == 200, seen.text
    # Not offered to them either.
    assert seen.json()["renditions"] == [], seen.text

    web = f"/v1/files/{sequence}/content"
    refused = error(await client.get(web, params={"rendition": "web"}), 403, "forbidden")
    assert sequence in refused["message"] and "no role" in refused["message"], refused
    assert refused["details"] == {"role_needed": "user", "forbidden_files": [sequence]}

    def download() -> grpc.RpcError:
        with grpc.insecure_channel(platform.grpc_target) as channel:
            answer = rpc.FilesStub(channel).Download(
                pb.DownloadRequest(file_id=sequence, rendition="web"),
                metadata=(("authorization", f"Bearer {viewer['api_key']}"),),
            )
            with pytest.raises(grpc.RpcError) as raised:
                b"".join(c.chunk for c in answer)
            return raised.value

    failed = await asyncio.to_thread(download)
    assert failed.code() == grpc.StatusCode.PERMISSION_DENIED, failed
    assert "no role" in (failed.details() or ""), failed.details()
    # Who sees the images is offered and served the video, as before.
    assert (await api.get(f"/v1/files/{sequence}")).json()["renditions"] == ["web"]
    served = await api.get(web, params={"rendition": "web"})
    assert served.status_code == 200, served.text
    assert streams_of(served.content) == {"video": "h264"}


@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_a_sequences_video_under_way_ends_when_its_images_are_no_longer_seen(
    api: httpx.AsyncClient, as_key: Any, platform: Any, store: BlobStore, transport: str
) -> None:
    """A member who sees a sequence's file (moved on its own) and its images starts its
    video; their role on the images' folder is taken away, the file's folder kept: the
    video ends there, short of its bytes (over gRPC `PERMISSION_DENIED`), and asking
    again is refused 403. (The rendition's bytes are replaced by a large blob: encoding
    48 MB of video would take minutes of the platform's two cores.)"""
    home, shared = await folder(api, unique("seq-cut-home")), await folder(api, unique("seq-cut"))
    frames = [(f"f{n}.png", png(32, 24)) for n in range(3)]
    sequence = (await group(api, home["id"], "image_sequence", "walk", *frames))["file"]["id"]
    assert (await re_encode(api, sequence))["status"] == "done"
    await store.put(rendition_key(uuid.UUID(sequence)), b"v" * LARGE)
    moved = await api.post(
        "/v1/move", json={"file_ids": [sequence], "target_folder_id": shared["id"]}
    )
    assert moved.status_code == 200, moved.text
    viewer = await member(api, "seq-viewer")
    for where in (home, shared):
        await invite(api, where["id"], viewer["email"], "user")
    client = as_key(viewer["api_key"])
    assert (await client.get(f"/v1/files/{sequence}")).json()["renditions"] == ["web"]

    async def take() -> None:
        removed = await api.delete(f"/v1/folders/{home['id']}/collaborators/{viewer['id']}")
        assert removed.status_code == 204, removed.text

    async def gone(_: float = 0.0) -> bool:
        # The file still seen (its folder's role kept), its images not: no video offered.
        seen = await client.get(f"/v1/files/{sequence}")
        assert seen.status_code == 200, seen.text
        return bool(seen.json()["renditions"] == [])

    web = f"/v1/files/{sequence}/content"
    if transport == "http":
        delivered, broke = await download_with_the_right_taken(
            client, sequence, take, gone, within=5.0, params={"rendition": "web"}
        )
        assert broke and delivered < LARGE, delivered
        assert gateway_logged(platform, "rendition.images_gone", web)
    else:
        delivered = 0
        async with grpc.aio.insecure_channel(platform.grpc_target) as channel:
            stream = rpc.FilesStub(channel).Download(
                pb.DownloadRequest(file_id=sequence, rendition="web"),
                metadata=(("authorization", f"Bearer {viewer['api_key']}"),),
            )
            messages = aiter(stream)
            assert (await anext(messages)).header.size == LARGE
            delivered += len((await anext(messages)).chunk)
            await take()
            await eventually(gone, within=5.0, what="the images no longer seen")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for message in messages:
                    delivered += len(message.chunk)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, caught.value.details()
        assert "images" in (caught.value.details() or ""), caught.value.details()
        assert delivered < LARGE
    refused = error(await client.get(web, params={"rendition": "web"}), 403, "forbidden")
    assert refused["details"] == {"role_needed": "user", "forbidden_files": [sequence]}
