"""A query parameter that takes one value, given twice: before, the last one was read
(`?limit=5&limit=500` listed 500); now a 422 names it, at the gateway for its declared
routes and in every service (the kit's route class) for its own. Those documented as
repeatable (`kind`, `includefield`, `metadata.<key>`) still take every value."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shared.kit.access import Access
from tests.e2e.support import error, folder, member, png, unique, upload
from tests.signing import as_user


def repeated(response: httpx.Response, parameter: str) -> None:
    refused = error(response, 422, "invalid_request")
    assert refused["details"]["parameter"] == parameter, refused
    assert refused["details"]["fields"] == [
        {"field": parameter, "problem": "given more than once; it takes one value"}
    ]
    assert parameter in refused["message"]


async def test_a_parameter_taking_one_value_given_twice_is_refused_naming_it(
    api: httpx.AsyncClient, platform: Any
) -> None:
    top = await folder(api, unique("repeated"))
    for n in range(3):
        await upload(api, top["id"], (f"{n}.png", png(2 + n, 2)))
    items = f"/v1/folders/{top['id']}/items"
    # The ACL context, DICOMweb, the catalog's listing (which refused them already, in
    # its own words) and search.
    for path, params, parameter in (
        ("/v1/users", [("limit", "1"), ("limit", "2")], "limit"),
        (f"/v1/folders/{top['id']}/dicomweb/studies", [("limit", "1"), ("limit", "2")], "limit"),
        (items, [("limit", "1"), ("limit", "500")], "limit"),
        (items, [("order", "name"), ("desc", "true"), ("order", "size")], "order"),
        ("/v1/search", [("q", "a"), ("q", "b")], "q"),
    ):
        repeated(await api.get(path, params=params), parameter)

    # Repeatable ones stay so.
    listed = await api.get(items, params=[("kind", "image"), ("kind", "video"), ("limit", "2")])
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["items"]) == 2
    key = f"k{uuid.uuid4().hex[:8]}"
    either = await api.get(items, params=[(f"metadata.{key}", "a"), (f"metadata.{key}", "b")])
    assert either.status_code == 200, either.text
    studies = await api.get(
        f"/v1/folders/{top['id']}/dicomweb/studies",
        params=[("includefield", "StudyDate"), ("includefield", "PatientName")],
    )
    assert studies.status_code in (200, 204), studies.text

    # A service itself (ingest's jobs), as the gateway would call it: refused before the
    # route reads anything.
    reader = await member(api, "repeat-reader")
    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        answer = await ingest.get(
            f"/v1/jobs/{uuid.uuid4()}/files",
            params=[("limit", "5"), ("limit", "500")],
            headers=as_user(reader["id"], Access(user_id=reader["id"])),
        )
        repeated(answer, "limit")
