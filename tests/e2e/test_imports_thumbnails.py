"""Files imported by reference get thumbnails as uploads do, drawn when first asked for:
their objects are read through ingest (the only piece that reaches a customer's bucket)
by a URL signed for one object, which the thumbnails workers follow without holding any
key."""

from __future__ import annotations

import hashlib
import io
import secrets
import time
import uuid
from typing import Any

import asyncpg
import httpx
from minio import Minio
from PIL import Image

from shared.kit.access import Access
from shared.kit.http import file_ref
from shared.kit.stack import Stack
from tests import thumbnail_fixtures as media
from tests.cloud_fixtures import MotoS3
from tests.conftest import eventually
from tests.e2e.conftest import BUCKET
from tests.e2e.support import error, folder, items, member, unique, upload
from tests.e2e.test_cloud_sync import file, listing, sync, sync_done, synced_folder
from tests.e2e.test_imports import finished, integration, put, start_import
from tests.e2e.test_thumbnails import picture, settled
from tests.signing import SIGNER, as_user


def two_colours(width: int, height: int, left: tuple[int, int, int]) -> bytes:
    """A PNG whose left half is `left` and right half blue: told apart from another."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste(left, (0, 0, width // 2, height))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def colour_at(answer: httpx.Response, x: float, y: float) -> tuple[int, ...]:
    shown = picture(answer).convert("RGB")
    return tuple(shown.getpixel((int(shown.width * x), int(shown.height * y))))


def near(colour: tuple[int, ...], wanted: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(colour, wanted, strict=True))


async def imported_red_picture(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, key_prefix: str, folder_name: str
) -> tuple[bytes, str, dict[str, Any], dict[str, Any]]:
    """A PNG no other test uploads (red on its left), put in the bucket and imported into
    a new folder: its bytes, key, folder and imported file."""
    width = 64 + secrets.randbelow(1000)
    original = two_colours(width, 40, (255, 0, 0))
    key = f"{unique(key_prefix)}/shot.png"
    put(bucket, key, original)
    top = await folder(api, unique(folder_name))
    job_id = await start_import(
        api, top["id"], integration_id=await integration(api, moto), keys=[key]
    )
    await finished(api, job_id, files=1)
    [imported] = await items(api, top["id"])
    return original, key, top, imported


async def test_files_imported_by_reference_get_their_thumbnails(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, as_key: Any
) -> None:
    run = uuid.uuid4().hex[:8]
    objects = {
        f"{run}/red.png": two_colours(300, 200, (255, 0, 0)),
        f"{run}/clip.mp4": media.mp4(),
        f"{run}/page.pdf": media.pdf(300, 200),
    }
    for key, data in objects.items():
        put(bucket, key, data)
    integration_id = await integration(api, moto)
    top = await folder(api, unique("imported-pictures"))
    job_id = await start_import(api, top["id"], integration_id=integration_id, keys=list(objects))
    await finished(api, job_id, files=3)
    listed = {f["name"]: f for f in await items(api, top["id"])}

    red = await settled(api, listed["red.png"]["id"])
    assert picture(red).size == (128, 85)  # 300x200 fitted in 128 px
    assert near(colour_at(red, 0.2, 0.5), (255, 0, 0))
    assert near(colour_at(red, 0.8, 0.5), (0, 0, 255))
    large = await settled(api, listed["red.png"]["id"], size=512)
    assert picture(large).size == (300, 200)  # never upscaled
    clip = picture(await settled(api, listed["clip.mp4"]["id"]))
    shown = listed["clip.mp4"]["media"]
    assert clip.width == 128
    assert abs(clip.height - 128 * shown["height"] / shown["width"]) <= 1
    page = picture(await settled(api, listed["page.pdf"]["id"]))
    assert max(page.size) == 128

    # Who may not see the file may not see its picture either.
    as_stranger = as_key((await member(api, "imported-stranger"))["api_key"])
    error(await as_stranger.get(f"/v1/files/{listed['red.png']['id']}/thumbnail"), 404, "not_found")


async def test_an_imported_file_is_drawn_when_its_picture_is_first_asked_for(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, platform: Stack
) -> None:
    """An import draws nothing (its objects are not read again for pictures nobody may
    look at): the gateway passes what the catalog says a file was imported from, and
    the first ask for its picture requests it, as the thumbnails context itself."""
    key = f"{uuid.uuid4().hex[:8]}/before.png"
    data = two_colours(40, 20, (255, 0, 0))
    put(bucket, key, data)
    integration_id = await integration(api, moto)
    file_id = uuid.uuid4()
    someone = uuid.uuid4()
    asked = {
        "kind": "image",
        "imported": "true",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": str(len(data)),
        "blob_key": f"ref:{file_id}",
        "object": f"{integration_id}:{key}",
    }
    # As the gateway asks for an org admin's file: the file signed with its folder's path.
    headers = as_user(
        str(someone),
        Access(user_id=someone, org_admin=True),
        folder_path=str(uuid.uuid4()),
        object_ref=file_ref(file_id),
    )
    async with httpx.AsyncClient(
        base_url=platform.env["FILES_THUMBNAILS_URL"], timeout=30
    ) as thumbnails:
        path = f"/internal/thumbnails/{file_id}"
        first = await thumbnails.get(path, params=asked, headers=headers)
        error(first, 404, "thumbnail_not_ready")

        async def drawn() -> bool:
            answer = await thumbnails.get(path, params=asked, headers=headers)
            return answer.status_code == 200

        await eventually(drawn, within=60, what="the picture of a file asked for")
        answer = await thumbnails.get(path, params=asked, headers=headers)
        assert near(colour_at(answer, 0.2, 0.5), (255, 0, 0))
        # A group imported by reference is not drawn (its file is no object).
        group_id = uuid.uuid4()
        group = await thumbnails.get(
            f"/internal/thumbnails/{group_id}",
            params={**asked, "kind": "image_group"},
            headers={
                **headers,
                **as_user(
                    str(someone),
                    Access(user_id=someone, org_admin=True),
                    folder_path=str(uuid.uuid4()),
                    object_ref=file_ref(group_id),
                ),
            },
        )
        assert error(group, 404, "thumbnail_unavailable")["details"]["code"] == "imported"


async def test_a_synced_file_whose_object_changed_is_drawn_again(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3
) -> None:
    prefix = f"{unique('drawn-again')}/"
    put(bucket, f"{prefix}shot.png", two_colours(64, 64, (255, 0, 0)))
    synced = await synced_folder(api, await integration(api, moto), prefix)
    await sync_done(api, synced["sync_job_id"])

    async def listed() -> bool:
        return "shot.png" in await listing(api, synced["id"])

    await eventually(listed, within=20, what="the synced folder lists its object")
    shot = (await listing(api, synced["id"]))["shot.png"]
    assert near(colour_at(await settled(api, shot["id"]), 0.2, 0.5), (255, 0, 0))

    put(bucket, f"{prefix}shot.png", two_colours(64, 64, (0, 255, 0)))
    await sync(api, synced["id"])
    changed = ""

    async def green() -> bool:
        nonlocal changed
        if (await file(api, shot["id"]))["sha256"] == shot["sha256"]:
            return False
        answer = await api.get(f"/v1/files/{shot['id']}/thumbnail")
        if answer.status_code != 200:
            return False
        changed = str(colour_at(answer, 0.2, 0.5))
        return near(colour_at(answer, 0.2, 0.5), (0, 255, 0))

    await eventually(green, within=60, what=f"the new object's picture (last seen {changed})")


async def test_an_object_changed_after_its_import_gives_its_picture_to_no_identical_file(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3
) -> None:
    """Pictures are shared by files of the same bytes (their sha256). An imported file's
    are drawn from its object when first asked for: an object changed since its import
    (by whoever may write the bucket) gave its new picture to every file of the bytes
    imported, other people's uploads too. Drawn now, the object that is not those bytes
    any more is that file's failure alone."""
    original, key, top, imported = await imported_red_picture(
        api, bucket, moto, "changed", "changed-object"
    )
    assert imported["sha256"] == hashlib.sha256(original).hexdigest()
    # Changed before anyone asked for the imported file's picture (an import draws none).
    width = Image.open(io.BytesIO(original)).width
    put(bucket, key, two_colours(width, 40, (0, 255, 0)))
    drawn = await settled(api, imported["id"])

    [uploaded] = (await upload(api, top["id"], ("same.png", original)))["files"]
    assert uploaded["sha256"] == imported["sha256"]
    assert near(colour_at(await settled(api, uploaded["id"]), 0.2, 0.5), (255, 0, 0))
    assert error(drawn, 404, "thumbnail_unavailable")["details"]["code"] == "content_changed"


async def test_an_object_of_the_same_bytes_under_a_new_etag_is_still_drawn(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, pool: asyncpg.Pool
) -> None:
    """An ETag changes when the bytes do not too (a copy onto itself to apply SSE-KMS,
    metadata or a storage class; a re-upload in parts): the read of the range by the ETag
    recorded at import met a 412, and the file was `content_changed` for good. Ingest
    hashes the object once: the same bytes record its new ETag and are drawn."""
    original, key, _, imported = await imported_red_picture(
        api, bucket, moto, "reuploaded", "same-bytes-new-etag"
    )
    etag = "SELECT etag FROM ingest.cloud_files WHERE file_id = $1"
    before = await pool.fetchval(etag, uuid.UUID(imported["id"]))
    assert before is not None
    # The same bytes again, in parts (a copy onto itself keeps moto's ETag: the MD5).
    s3 = moto.client("s3")
    started = s3.create_multipart_upload(Bucket=BUCKET, Key=key)
    part = s3.upload_part(
        Bucket=BUCKET, Key=key, UploadId=started["UploadId"], PartNumber=1, Body=original
    )
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key=key,
        UploadId=started["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )
    now = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
    assert now != before

    drawn = await settled(api, imported["id"])
    assert near(colour_at(drawn, 0.2, 0.5), (255, 0, 0))
    assert await pool.fetchval(etag, uuid.UUID(imported["id"])) == now


async def test_an_object_imported_before_etags_that_no_longer_decodes_fails_that_file_alone(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, pool: asyncpg.Pool
) -> None:
    """A file imported before its object's ETag was recorded is read as the object is
    now: changed to bytes that do not decode, its drawing fails `unreadable`, which was
    recorded for the imported bytes' source, so an upload of those bytes was refused its
    picture too. A failure of a file drawn from an imported object is that file's alone."""
    original, key, top, imported = await imported_red_picture(
        api, bucket, moto, "undecodable", "undecodable-object"
    )
    # As an import from before 2026-12-07 left it: no ETag to read it by.
    await pool.execute(
        "UPDATE ingest.cloud_files SET etag = NULL WHERE file_id = $1", uuid.UUID(imported["id"])
    )
    put(bucket, key, b"\x00" * len(original))
    drawn = await settled(api, imported["id"])
    assert error(drawn, 404, "thumbnail_unavailable")["details"]["code"] == "unreadable"

    [uploaded] = (await upload(api, top["id"], ("same.png", original)))["files"]
    assert uploaded["sha256"] == imported["sha256"]
    assert near(colour_at(await settled(api, uploaded["id"]), 0.2, 0.5), (255, 0, 0))


async def test_ingest_reads_an_object_only_by_a_url_signed_for_it(
    api: httpx.AsyncClient, bucket: Minio, moto: MotoS3, platform: Stack
) -> None:
    run = uuid.uuid4().hex[:8]
    data = bytes(range(256)) * 8
    put(bucket, f"{run}/a.bin", data)
    put(bucket, f"{run}/b.bin", b"the other object")
    integration_id = await integration(api, moto)
    path = f"/internal/objects/{integration_id}"
    soon = int(time.time()) + 60

    def signed(key: str, expires: int = soon) -> dict[str, Any]:
        signature = SIGNER.object_read_mac(integration_id, key, expires)
        return {"key": key, "expires": expires, "signature": signature}

    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        first = f"{run}/a.bin"
        read = await ingest.get(path, params=signed(first), headers={"Range": "bytes=10-19"})
        assert read.status_code == 206, read.text
        assert read.content == data[10:20]
        assert read.headers["content-range"] == "bytes 10-19/*"
        ending = await ingest.get(path, params=signed(first), headers={"Range": "bytes=2040-4000"})
        assert (ending.status_code, ending.content) == (206, data[2040:])
        past = await ingest.get(path, params=signed(first), headers={"Range": "bytes=5000-5009"})
        assert past.status_code == 416

        # Another object with this object's signature; a forged, an expired signature.
        other = {**signed(first), "key": f"{run}/b.bin"}
        error(await ingest.get(path, params=other, headers={"Range": "bytes=0-9"}), 403)
        forged = {**signed(first), "signature": "x" * 43}
        error(await ingest.get(path, params=forged, headers={"Range": "bytes=0-9"}), 403)
        gone = signed(first, int(time.time()) - 1)
        error(await ingest.get(path, params=gone, headers={"Range": "bytes=0-9"}), 403)
        elsewhere = f"/internal/objects/{uuid.uuid4()}"
        error(
            await ingest.get(elsewhere, params=signed(first), headers={"Range": "bytes=0-9"}), 403
        )
        # One closed range, not more than a worker reads at once.
        error(await ingest.get(path, params=signed(first)), 400, "invalid_range")
        huge = {"Range": "bytes=0-99999999"}
        error(await ingest.get(path, params=signed(first), headers=huge), 400, "invalid_range")
        # A missing object: a 404, so the file is recorded as without a picture.
        missing = f"{run}/missing.bin"
        error(await ingest.get(path, params=signed(missing), headers={"Range": "bytes=0-9"}), 404)
        # The signature is the only right this route takes: an identity token is none.
        token_only = {"key": first, "expires": soon, "signature": ""}
        answer = await ingest.get(
            path,
            params=token_only,
            headers={**as_user(str(uuid.uuid4()), Access(user_id=uuid.uuid4(), grants={}))},
        )
        assert answer.status_code in (403, 422), answer.text
