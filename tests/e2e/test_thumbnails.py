"""Thumbnails on the running platform: every kind gets its picture (drawn by the
thumbnails context's workers, from the blob store), served with the file's rights, an
ETag and caching; hostile files are recorded as failures while the rest goes on; a
deleted file's pictures are released and reclaimed once no file uses them; the read
model rebuilt from its events equals the live one."""

from __future__ import annotations

import contextlib
import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from services.thumbnails import domain
from services.thumbnails.projections import thumbnails as model
from shared.contracts import thumbnails as ev
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit.blobs import BlobStore, open_blob_store
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from shared.kit.settings import Settings
from shared.kit.stack import Stack
from tests import thumbnail_fixtures as media
from tests.conftest import eventually
from tests.dicom_fixtures import ct_slice, slice_positions, uid
from tests.e2e.support import (
    decoding_workers,
    error,
    folder,
    holds_no_secret,
    member,
    unique,
    upload,
    wav,
)
from tests.e2e.test_dicom import finished, fresh_study, send
from tests.e2e.test_image_groups import group

WITHIN = 60.0  # drawing shares two cores with the whole platform and other tests


async def settled(
    api: httpx.AsyncClient, file_id: str, size: int | None = None, within: float = WITHIN
) -> httpx.Response:
    """The thumbnail's answer once it is no longer `thumbnail_not_ready`."""
    params = {"size": size} if size is not None else {}
    seen: list[httpx.Response] = []

    async def ready() -> bool:
        answer = await api.get(f"/v1/files/{file_id}/thumbnail", params=params)
        seen[:] = [answer]
        if answer.status_code == 404 and answer.json()["error"]["code"] == "thumbnail_not_ready":
            assert answer.headers["cache-control"] == "no-store"
            assert int(answer.headers["retry-after"]) > 0
            return False
        return True

    await eventually(ready, within, f"a thumbnail of {file_id}")
    return seen[0]


def picture(answer: httpx.Response) -> Image.Image:
    """The served picture, checked as a browser would get it."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/webp"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"].startswith("private, max-age=")
    assert answer.headers["etag"] == f'"{hashlib.sha256(answer.content).hexdigest()}"'
    image = Image.open(io.BytesIO(answer.content))
    image.load()
    assert image.format == "WEBP"
    return image


def dicom_series_of_greys(count: int) -> list[tuple[str, bytes]]:
    """A CT series whose slice k is uniformly k * 1000 (in slice order), windowed over
    0..4000: slice k shows as grey k * 64, so the middle one is told from the others."""
    study = fresh_study()
    series_uid = uid(study, 1)
    return [
        (
            f"slice-{k}.dcm",
            ct_slice(
                sop_uid=uid(study, 1, k + 1),
                series_uid=series_uid,
                study_uid=uid(study),
                position=position,
                instance_number=k + 1,
                rows=32,
                columns=32,
                pixel_data=np.full((32, 32), k * 1000, np.uint16).tobytes(),
                overrides={"WindowCenter": "2000", "WindowWidth": "4000"},
            ),
        )
        for k, position in enumerate(slice_positions(count))
    ]


@pytest.mark.timeout(600)  # seven kinds drawn, on two cores shared with everything
@pytest.mark.parametrize("blobs", ["s3", "local"], indirect=True)
async def test_every_kind_gets_its_thumbnail(api: httpx.AsyncClient, platform: Stack) -> None:
    top = await folder(api, unique("thumbs"))
    files = {
        f["name"]: f
        for f in (
            await upload(
                api,
                top["id"],
                ("wide.png", media.png(640, 480)),
                ("turned.jpg", media.jpeg(800, 400, orientation=6)),
                ("clip.mp4", media.mp4(160, 120)),
                ("portrait.mp4", media.mp4(160, 120, rotation=-90)),
                ("page.pdf", media.pdf(300, 200)),
                ("sound.wav", wav()),
            )
        )["files"]
    }
    made = await group(
        api,
        top["id"],
        "image_sequence",
        "frames",
        ("f0.png", media.png(300, 100, (250, 0, 0))),
        ("f1.png", media.png(300, 100, (0, 0, 250))),
    )
    job = await finished(api, await send(api, top["id"], *dicom_series_of_greys(5)))
    [series] = job["files"]

    wide = picture(await settled(api, files["wide.png"]["id"]))
    assert wide.size == (128, 96)  # the default size: 128 on the long side
    assert picture(await settled(api, files["wide.png"]["id"], size=512)).size == (512, 384)
    assert picture(await settled(api, files["wide.png"]["id"], size=200)).size == (512, 384)
    # EXIF orientation 6: 800x400 stored, shown 400 wide and 800 tall, red on top.
    turned = picture(await settled(api, files["turned.jpg"]["id"], size=512)).convert("RGB")
    assert turned.size == (256, 512)
    red, _, blue = turned.getpixel((128, 100))  # type: ignore[misc]
    assert red > 150 and blue < 100
    clip = picture(await settled(api, files["clip.mp4"]["id"])).convert("RGB")
    assert clip.size == (128, 96)
    assert clip.getpixel((5, 48))[1] > 150  # type: ignore[index]  # its green left quarter
    # A phone's portrait clip (stored 160x120, a clockwise quarter turn to show it) is
    # 120 wide and 160 high, and stands in its picture: its green left quarter on top.
    portrait = files["portrait.mp4"]
    assert (portrait["media"]["width"], portrait["media"]["height"]) == (120, 160)
    standing = picture(await settled(api, portrait["id"])).convert("RGB")
    assert standing.size == (96, 128)
    assert standing.getpixel((48, 5))[1] > 150  # type: ignore[index]
    assert standing.getpixel((48, 120))[1] < 150  # type: ignore[index]
    page = picture(await settled(api, files["page.pdf"]["id"], size=512)).convert("RGB")
    assert max(page.size) == 512 and page.getpixel((50, 50))[1] > 120  # type: ignore[index]
    # A sequence shows its first frame (red, not blue).
    first = picture(await settled(api, made["file"]["id"])).convert("RGB")
    assert first.size == (128, 43) and first.getpixel((60, 20))[0] > 200  # type: ignore[index]
    # A series shows its middle slice (of 5: the third, grey 128), windowed.
    middle = picture(await settled(api, series["id"])).convert("L")
    assert middle.size == (32, 32)
    assert abs(float(np.asarray(middle).mean()) - 128) < 12
    # Audio has no thumbnail: the web app shows its kind's icon.
    found = error(await settled(api, files["sound.wav"]["id"]), 404, "thumbnail_unavailable")
    assert found["details"]["kind"] == "audio"
    # Drawn by workers that hold none of the platform's secrets, nor the store's keys
    # (on S3 they read each file by its presigned URL).
    workers = decoding_workers(platform, "thumbnails", "--multiprocessing-fork")
    assert workers and all(holds_no_secret(platform, env) for env in workers), workers
    # Background work: on a busy machine the service (its consumer, runners, records)
    # yields to the upload path, and its drawing workers further (its re-encoding ones
    # stay at the service's: their wall-clock cap); the rest do not.
    nice = {c.name: psutil.Process(c.proc.pid).nice() for c in platform.children}
    assert nice["thumbnails"] == nice["gateway"] + Settings().thumbnail_nice > nice["gateway"]
    assert {n for n, v in nice.items() if v != nice["gateway"]} == {"thumbnails"}, nice
    levels = set()
    for worker in psutil.Process(platform.child("thumbnails").proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "spawn_main" in " ".join(worker.cmdline()):
                levels.add(worker.nice())
    drawing = nice["gateway"] + domain.WORKER_NICE
    assert drawing in levels and levels <= {drawing, nice["thumbnails"]}, levels


async def test_a_series_extended_later_shows_its_new_middle_slice(api: httpx.AsyncClient) -> None:
    """A series is drawn at once when it first comes; extended, it is drawn again from
    its new middle slice once it settles (FILES_THUMBNAIL_SERIES_SETTLE_S), not once for
    every part of a long upload."""
    top = await folder(api, unique("growing"))
    slices = dicom_series_of_greys(5)
    job = await finished(api, await send(api, top["id"], *slices[:3]))
    [series] = job["files"]
    first = picture(await settled(api, series["id"])).convert("L")
    assert abs(float(np.asarray(first).mean()) - 64) < 12  # the middle of 3: slice 1

    await finished(api, await send(api, top["id"], *slices[3:]))
    greys: list[float] = []

    async def redrawn() -> bool:
        answer = await api.get(f"/v1/files/{series['id']}/thumbnail")
        if answer.status_code != 200:
            return False
        greys.append(float(np.asarray(picture(answer).convert("L")).mean()))
        return abs(greys[-1] - 128) < 12  # the middle of 5: slice 2

    await eventually(redrawn, WITHIN, f"the series' new middle slice (greys seen: {greys})")


async def test_rights_etag_and_revalidation(api: httpx.AsyncClient, as_key: Any) -> None:
    mine = await folder(api, unique("thumbs-rights"))
    [file] = (await upload(api, mine["id"], ("p.png", media.png(200, 100))))["files"]
    served = await settled(api, file["id"])
    picture(served)
    etag = served.headers["etag"]
    # The same picture while it is unchanged: 304, no body, its ETag and caching again.
    again = await api.get(f"/v1/files/{file['id']}/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert (
        again.headers["etag"] == etag
        and again.headers["cache-control"] == served.headers["cache-control"]
    )
    other = await api.get(
        f"/v1/files/{file['id']}/thumbnail", headers={"If-None-Match": '"something else"'}
    )
    assert other.status_code == 200 and other.content == served.content
    # Someone who cannot see the file: 404, as for a file that does not exist.
    stranger = await member(api, "thumbs-stranger")
    as_stranger = as_key(stranger["api_key"])
    error(await as_stranger.get(f"/v1/files/{file['id']}/thumbnail"), 404, "not_found")
    error(
        await as_stranger.get(f"/v1/files/{file['id']}/thumbnail", headers={"If-None-Match": etag}),
        404,
        "not_found",
    )
    # An id that is not a UUID: as one that does not exist.
    error(await api.get(f"/v1/files/{unique('x')}/thumbnail"), 404, "not_found")
    error(
        await api.get("/v1/files/00000000-0000-4000-8000-000000000000/thumbnail"), 404, "not_found"
    )
    # Once shared with them (the user role), they see it.
    granted = await api.post(
        f"/v1/folders/{mine['id']}/collaborators",
        json={"emails": [stranger["email"]], "role": "user"},
    )
    assert granted.status_code in (200, 201), granted.text
    shown = await as_stranger.get(f"/v1/files/{file['id']}/thumbnail")
    assert shown.status_code == 200 and shown.headers["etag"] == etag
    error(await api.get(f"/v1/files/{file['id']}/thumbnail", params={"size": 0}), 422)
    error(await api.get(f"/v1/files/{file['id']}/thumbnail", params={"size": "big"}), 422)


async def test_hostile_images_fail_on_record_and_the_rest_goes_on(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    top = await folder(api, unique("thumbs-hostile"))
    files = {
        f["name"]: f
        for f in (
            await upload(
                api,
                top["id"],
                ("bomb.png", media.decompression_bomb()),
                ("cut.png", media.truncated_png()),
                ("fine.png", media.png(64, 64)),
            )
        )["files"]
    }
    bomb = error(await settled(api, files["bomb.png"]["id"]), 404, "thumbnail_unavailable")
    assert bomb["details"]["code"] == "too_large"
    assert "DecompressionBomb" in bomb["details"]["reason"]
    cut = error(await settled(api, files["cut.png"]["id"]), 404, "thumbnail_unavailable")
    assert cut["details"]["code"] == "unreadable" and "truncated" in cut["details"]["reason"]
    picture(await settled(api, files["fine.png"]["id"]))
    # The failures are events of the file's history, not retried: each file settled
    # once, with its code, in a page of its batch (not an event a file).
    bomb_id = files["bomb.png"]["id"]
    history = await api.get("/v1/audit", params={"subject_id": bomb_id})
    assert history.status_code == 200, history.text
    types = [e["type"] for e in history.json()["items"] if e["type"].startswith("thumbnails.")]
    assert types == ["thumbnails.ThumbnailsRequestedPage", "thumbnails.ThumbnailsSettled"]
    [page] = [e for e in history.json()["items"] if e["type"] == "thumbnails.ThumbnailsSettled"]
    [failed] = [f for f in page["data"]["files"] if f["file_id"] == bomb_id]
    assert (failed["code"], failed["renditions"]) == ("too_large", None)
    settling = await pool.fetch(
        """SELECT f->>'file_id' AS file_id, f->>'code' AS code FROM thumbnails.events,
                  jsonb_array_elements(data->'files') AS f
           WHERE type = 'thumbnails.ThumbnailsSettled' AND data->'file_ids' ?| $1::text[]
             AND f->>'file_id' = ANY($1::text[])""",
        [f["id"] for f in files.values()],
    )
    assert sorted((r["file_id"], r["code"]) for r in settling) == sorted(
        [
            (bomb_id, "too_large"),
            (files["cut.png"]["id"], "unreadable"),
            (files["fine.png"]["id"], None),
        ]
    )
    # The same bytes again are known undrawable at once (their source is settled).
    [again] = (await upload(api, top["id"], ("bomb-2.png", media.decompression_bomb())))["files"]
    error(await settled(api, again["id"]), 404, "thumbnail_unavailable")


@pytest.mark.parametrize("blobs", ["local"], indirect=True)
async def test_why_a_file_is_unreadable_never_names_where_the_server_keeps_it(
    api: httpx.AsyncClient, platform: Stack
) -> None:
    # On a local store a worker opens the blob by its path, and FFmpeg's and Pillow's
    # errors quote it: the reason, shown to whoever may see the file, named the data dir.
    video = media.mp4(frames=20)
    top = await folder(api, unique("thumbs-paths"))
    made = await upload(
        api,
        top["id"],
        ("cut.mp4", video[: len(video) // 2]),
        ("junk.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),
    )
    for file in made["files"]:
        failed = error(await settled(api, file["id"]), 404, "thumbnail_unavailable")
        assert failed["details"]["code"] == "unreadable", failed
        assert str(platform.settings.data_dir) not in str(failed), failed
        assert "/blobs/" not in str(failed) and "sha256" not in str(failed), failed


async def test_a_reason_recorded_with_a_server_path_before_they_were_cleaned_is_shown_without_it(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    # Replicas before the reasons were cleaned recorded them as the decoder said them, a
    # local blob's path in the data dir quoted: the row and the event stay so.
    top = await folder(api, unique("thumbs-old-paths"))
    [junk] = (await upload(api, top["id"], ("junk.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64)))[
        "files"
    ]
    error(await settled(api, junk["id"]), 404, "thumbnail_unavailable")
    file_id = uuid.UUID(junk["id"])
    old = "UnidentifiedImageError: cannot identify image file '/srv/files/.data/blobs/sha256/ab'"
    source = await pool.fetchval("SELECT source FROM thumbnails.files WHERE file_id = $1", file_id)
    store = EventStore("thumbnails")
    head = await pool.fetchval(
        "SELECT coalesce(max(stream_version), 0) FROM thumbnails.events WHERE stream_id = $1",
        ev.file_stream(file_id),
    )
    recorded = envelopes_of(
        [
            Change(
                ev.file_stream(file_id),
                head + 1,
                ev.ThumbnailFailed(file_id=file_id, source=source, code="unreadable", reason=old),
            )
        ],
        Cause(actor="system:test", correlation_id=str(uuid.uuid4())),
    )
    # Projected and recorded as the service does, one transaction: the read model stays
    # equal to its rebuild (another test compares them).
    async with pool.acquire() as conn, conn.transaction():
        await model.apply(conn, recorded)
        await store.append(conn, recorded)

    failed = error(await api.get(f"/v1/files/{junk['id']}/thumbnail"), 404, "thumbnail_unavailable")
    assert "/srv/files" not in str(failed) and "cannot identify image file" in str(failed), failed
    audit = await api.get("/v1/audit", params={"subject_id": junk["id"], "limit": 1000})
    assert audit.status_code == 200, audit.text
    reasons = [
        e["data"]["reason"] for e in audit.json()["items"] if e["type"] == ev.ThumbnailFailed.type
    ]
    assert reasons == ["UnidentifiedImageError: cannot identify image file '…'"], reasons


@pytest.fixture
async def store(platform: Any) -> AsyncIterator[BlobStore]:
    blobs = open_blob_store(platform.settings)
    yield blobs
    await blobs.close()


async def test_identical_files_share_pictures_that_go_when_the_last_file_goes(
    api: httpx.AsyncClient, store: BlobStore
) -> None:
    top = await folder(api, unique("thumbs-shared"))
    data = media.photo(seed=int.from_bytes(hashlib.sha256(top["id"].encode()).digest()[:4]))
    one, two = (await upload(api, top["id"], ("one.jpg", data), ("two.jpg", data)))["files"]
    first, second = await settled(api, one["id"]), await settled(api, two["id"])
    assert picture(first).size == (128, 96)
    assert first.headers["etag"] == second.headers["etag"]
    source = domain.source_of("image", hashlib.sha256(data).hexdigest())
    keys = [domain.blob_key(source, size, "webp") for size in domain.SIZES]
    assert all([await store.exists(k) for k in keys])
    assert (await api.delete(f"/v1/files/{one['id']}")).status_code == 204
    error(await api.get(f"/v1/files/{one['id']}/thumbnail"), 404, "not_found")
    # In the trash it keeps its pictures: restored, it shows them again at once.
    restored = await api.post("/v1/trash/restore", json={"file_ids": [one["id"]]})
    assert restored.status_code == 200, restored.text
    again = await api.get(f"/v1/files/{one['id']}/thumbnail")
    assert again.status_code == 200, again.text
    assert again.headers["etag"] == first.headers["etag"]
    # Gone for good: still one file using them, they stay (the sweep runs every 0.2 s in
    # the tests).
    assert (await api.delete(f"/v1/files/{one['id']}")).status_code == 204
    assert (await api.delete("/v1/trash")).status_code == 200
    assert (await settled(api, two["id"])).headers["etag"] == first.headers["etag"]
    assert all([await store.exists(k) for k in keys])
    assert (await api.delete(f"/v1/files/{two['id']}")).status_code == 204
    assert all([await store.exists(k) for k in keys])  # the trash keeps them
    assert (await api.delete("/v1/trash")).status_code == 200

    async def reclaimed() -> bool:
        return not any([await store.exists(k) for k in keys])

    await eventually(reclaimed, 20, "the shared pictures were reclaimed")


async def rows(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    return {
        "files": [
            dict(r) for r in await pool.fetch("SELECT * FROM thumbnails.files ORDER BY file_id")
        ],
        "sources": [
            dict(r) for r in await pool.fetch("SELECT * FROM thumbnails.sources ORDER BY source")
        ],
    }


async def older_history(pool: asyncpg.Pool, store: EventStore, drawn_id: str) -> None:
    """A file whose thumbnails were requested and made as its own events (before pages),
    then asked for again from other bytes in a page, and found undrawable in another:
    recorded and projected as the service does, in one transaction each."""
    file_id = uuid.uuid4()
    renditions = await pool.fetchval(
        "SELECT renditions FROM thumbnails.files WHERE file_id = $1", uuid.UUID(drawn_id)
    )
    source = await pool.fetchval(
        "SELECT source FROM thumbnails.files WHERE file_id = $1", uuid.UUID(drawn_id)
    )
    other = domain.source_of("image", hashlib.sha256(file_id.bytes).hexdigest())
    cause = Cause(actor="system:test", correlation_id=str(uuid.uuid4()))
    own = [
        Change(
            ev.file_stream(file_id),
            1,
            ev.ThumbnailsRequested(
                file_id=file_id, kind="image", source=source, blob_key="sha256/old"
            ),
        ),
        Change(
            ev.file_stream(file_id),
            2,
            ev.ThumbnailsMade(file_id=file_id, source=source, renditions=renditions),
        ),
    ]
    asked = ev.RequestedFile(file_id=file_id, kind="image", source=other, blob_key="sha256/x")
    failed = ev.SettledFile(file_id=file_id, source=other, code="unreadable", reason="cut")
    for changes in (
        own,
        [Change(ev.page_stream(uuid.uuid4()), 1, ev.ThumbnailsRequestedPage.page([asked]))],
        [Change(ev.page_stream(uuid.uuid4()), 1, ev.ThumbnailsSettled.page([failed]))],
    ):
        out = envelopes_of(changes, cause)
        async with pool.acquire() as conn, conn.transaction():
            await model.apply(conn, out)
            await store.append(conn, out)
    row = await pool.fetchrow("SELECT * FROM thumbnails.files WHERE file_id = $1", file_id)
    assert (row["version"], row["state"], row["source"], row["code"]) == (
        4,
        "failed",
        other,
        "unreadable",
    )


async def test_the_read_model_rebuilt_from_events_equals_the_live_one(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    top = await folder(api, unique("thumbs-rebuild"))
    made = (
        await upload(
            api,
            top["id"],
            ("a.png", media.png(90, 60)),
            ("b.png", media.decompression_bomb()),
            ("c.png", media.png(90, 61)),
        )
    )["files"]
    for file in made:
        await settled(api, file["id"])
    # Deleted forever, so that its pictures are released (the trash keeps them).
    assert (await api.delete(f"/v1/files/{made[2]['id']}")).status_code == 204
    gone = await api.delete("/v1/trash", params={"file_ids": made[2]["id"]})
    assert gone.status_code == 200 and gone.json()["purged_files"] == 1, gone.text

    async def released() -> bool:
        """The purge reaches the thumbnails context by the bus, after its answer."""
        state = await pool.fetchval(
            "SELECT state FROM thumbnails.files WHERE file_id = $1", uuid.UUID(made[2]["id"])
        )
        return bool(state == "released")

    await eventually(released, WITHIN, "the deleted file's thumbnails released")
    store = EventStore("thumbnails")
    # Recorded as pages; history from before them (a file's own events), then pages
    # about the same file, replay to the same rows.
    paged = await pool.fetchval(
        "SELECT count(*) FROM thumbnails.events WHERE type = 'thumbnails.ThumbnailsSettled'"
        " AND data->'file_ids' ? $1",
        made[0]["id"],
    )
    assert paged == 1
    await older_history(pool, store, made[0]["id"])

    async def quiet() -> bool:
        """Nothing pending, nothing left to reclaim: the live rows hold still."""
        busy = await pool.fetchval(
            """SELECT (SELECT count(*) FROM thumbnails.files WHERE state = 'pending')
                    + (SELECT count(*) FROM thumbnails.sources s WHERE released_at IS NOT NULL
                       AND NOT EXISTS (SELECT 1 FROM thumbnails.files f
                                       WHERE f.source = s.source AND f.state <> 'released'))"""
        )
        return bool(busy == 0)

    for _ in range(10):
        # Other tests' deletions may still be coming (series released by the DICOM
        # context): compared only when no event was recorded from before the live rows
        # were read until after the rebuild.
        await eventually(quiet, WITHIN, "the thumbnails context at rest")
        head = await store.head(pool)
        live = await rows(pool)
        assert await rebuild(pool, store, model) > 0
        rebuilt = await rows(pool)
        if await store.head(pool) == head:
            break
    else:
        raise AssertionError("the thumbnails context did not hold still for a rebuild")
    states = {r["state"] for r in live["files"]}
    assert {"made", "failed", "released"} <= states
    for table, found in live.items():
        differ = [(a, b) for a, b in zip(found, rebuilt[table], strict=False) if a != b]
        assert not differ and len(found) == len(rebuilt[table]), (table, differ[:3])
