"""An upload's files enter the catalog as pages (`catalog.FilesUploaded`), which every
reader of uploads takes as it took a `FileUploaded` a file."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.support import CONSISTENCY, folder, member, png, unique
from tests.e2e.test_access import invite
from tests.e2e.test_as_of import as_of
from tests.e2e.test_datasets import dataset, member_ids
from tests.e2e.test_thumbnails import settled


async def test_an_upload_enters_the_catalog_as_pages_that_every_reader_takes(
    api: httpx.AsyncClient, pool: Any, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    """The catalog records a request's files as `FilesUploaded` pages (one a partition
    of the catalog's topic their streams fall in), in streams of their own, not a
    `FileUploaded` a file; the synced dataset, the thumbnails, the audit and the
    history take the page as they took the files' events, and a file born in a page
    (at version 0: nothing in its own stream) changes as any other."""
    top = await folder(api, unique("paged"))
    other = await folder(api, unique("paged-other"))
    synced = await dataset(api, synced_folder_id=top["id"])
    sent = [(f"p{i}.png", png(8 + i, 8)) for i in range(5)]
    answer = await api.post(
        f"/v1/folders/{top['id']}/files",
        files=[("file", (name, data, "image/png")) for name, data in sent],
    )
    assert answer.status_code == 201, answer.text
    token = answer.headers[CONSISTENCY]
    files = answer.json()["files"]
    ids = [f["id"] for f in files]
    recorded = await pool.fetch(
        """SELECT stream_id, stream_version, type, data FROM catalog.events
           WHERE data->>'job_id' = $1 ORDER BY position""",
        answer.json()["job_id"],
    )
    assert {r["type"] for r in recorded} == {"catalog.FilesUploaded"}
    assert 1 <= len(recorded) <= 3  # the test platform's topics have 3 partitions
    assert all(r["stream_id"].startswith("upload-page-") for r in recorded)
    assert all(r["stream_version"] == 1 for r in recorded)
    assert sorted(i for r in recorded for i in r["data"]["file_ids"]) == sorted(ids)
    assert all(
        [f["file_id"] for f in r["data"]["files"]] == r["data"]["file_ids"] for r in recorded
    )
    assert not await pool.fetchval(
        "SELECT count(*) FROM catalog.events WHERE stream_id = ANY($1::text[])",
        [f"file-{i}" for i in ids],
    )

    # The dataset synced with the folder links them; each is drawn.
    assert await member_ids(api, synced["id"], token) == set(ids)
    for f in files:
        assert (await settled(api, f["id"])).status_code == 200
    # The thumbnails context records them as pages too: one request a catalog page (its
    # cause), each file settled once, and no event in the files' own streams.
    drawn = await pool.fetch(
        """SELECT type, data->'file_ids' AS ids FROM thumbnails.events
           WHERE data->'file_ids' ?| $1::text[] OR right(stream_id, 36) = ANY($1::text[])""",
        ids,
    )
    asked = [r["ids"] for r in drawn if r["type"] == "thumbnails.ThumbnailsRequestedPage"]
    made = [r["ids"] for r in drawn if r["type"] == "thumbnails.ThumbnailsSettled"]
    assert len(asked) == len(recorded) and len(asked) + len(made) == len(drawn) < 2 * len(ids)
    assert sorted(i for page in asked for i in page) == sorted(ids)
    assert sorted(i for page in made for i in page) == sorted(ids)

    # The audit of a file finds its page (which it may see whole here).
    audit = await api.get("/v1/audit", params={"subject_id": ids[0]})
    assert audit.status_code == 200, audit.text
    [page] = [e for e in audit.json()["items"] if e["type"] == "catalog.FilesUploaded"]
    assert ids[0] in page["data"]["file_ids"]
    assert {f["name"] for f in page["data"]["files"]} >= {"p0.png"}

    # Born at version 0: a rename, a move and a deletion are their streams' first
    # events; two renames at once take versions 1 and 2, neither lost.
    renames = await asyncio.gather(
        *(api.patch(f"/v1/files/{ids[0]}", json={"name": name}) for name in ("r1.png", "r2.png"))
    )
    assert [r.status_code for r in renames] == [200, 200], [r.text for r in renames]
    moved = await api.post("/v1/move", json={"file_ids": [ids[1]], "target_folder_id": other["id"]})
    assert moved.status_code == 200, moved.text
    assert (await api.delete(f"/v1/files/{ids[2]}")).status_code == 204
    versions = {
        r["stream_id"]: r["versions"]
        for r in await pool.fetch(
            """SELECT stream_id, array_agg(stream_version ORDER BY stream_version) AS versions
               FROM catalog.events WHERE stream_id = ANY($1::text[]) GROUP BY stream_id""",
            [f"file-{i}" for i in ids[:3]],
        )
    }
    assert versions == {f"file-{ids[0]}": [1, 2], f"file-{ids[1]}": [1], f"file-{ids[2]}": [1]}
    renamed = (await api.get(f"/v1/files/{ids[0]}")).json()["name"]
    assert renamed in ("r1.png", "r2.png")
    restored = await api.post("/v1/trash/restore", json={"file_ids": [ids[2]]})
    assert restored.status_code == 200, restored.text
    token = restored.headers[CONSISTENCY]
    # The synced dataset follows: the moved file left it, the restored one is back.
    assert await member_ids(api, synced["id"], token) == set(ids) - {ids[1]}

    # To a member who sees only where the moved file is now, the page names it alone.
    viewer = await member(api, "page-viewer")
    await invite(api, other["id"], viewer["email"], "user")
    seen = await as_key(viewer["api_key"]).get("/v1/audit", params={"subject_id": ids[1]})
    assert seen.status_code == 200, seen.text
    [alone] = [e for e in seen.json()["items"] if e["type"] == "catalog.FilesUploaded"]
    assert alone["data"]["file_ids"] == [ids[1]]
    assert [f["name"] for f in alone["data"]["files"]] == ["p1.png"]
    # So do the thumbnails' pages: the others' sources (their bytes' digests) are not shown.
    thumbs = [e for e in seen.json()["items"] if e["type"].startswith("thumbnails.")]
    assert {e["type"] for e in thumbs} == {
        "thumbnails.ThumbnailsRequestedPage",
        "thumbnails.ThumbnailsSettled",
    }
    assert all(e["data"]["file_ids"] == [ids[1]] for e in thumbs), thumbs
    assert all([f["file_id"] for f in e["data"]["files"]] == [ids[1]] for e in thumbs)

    # The history shows them where they were, with their upload's facts.
    now = datetime.now(UTC) + timedelta(seconds=1)
    here = {i["id"]: i for i in await as_of(api, top["id"], now)}
    assert set(here) == set(ids) - {ids[1]}
    assert here[ids[0]]["name"] == renamed
    assert here[ids[3]]["size"] == files[3]["size"]
    assert here[ids[3]]["created_at"] == files[3]["created_at"]
    [there] = await as_of(api, other["id"], now)
    assert (there["id"], there["name"], there["kind"]) == (ids[1], "p1.png", "image")
