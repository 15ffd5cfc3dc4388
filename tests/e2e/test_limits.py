"""Limits that keep one request from taking the platform down, each a clear 413."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.support import error, folder, items, multipart, unique


async def test_a_json_body_over_16_mib_is_refused_before_it_is_read(
    api: httpx.AsyncClient,
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(450_000)]  # about 17 MB of JSON
    answer = await api.post("/v1/delete", json={"file_ids": ids})
    body = error(answer, 413, "request_too_large")
    assert "16 MiB" in body["message"]


async def test_an_upload_of_more_than_10000_files_is_refused_and_records_nothing(
    api: httpx.AsyncClient,
) -> None:
    where = await folder(api, unique("many"))
    body, headers = multipart(*[(f"f{i}.txt", b"hello\n") for i in range(10_001)])
    answer = await api.post(f"/v1/folders/{where['id']}/files", content=body, headers=headers)
    refused = error(answer, 413, "too_many_files")
    assert refused["details"]["limit"] == 10_000
    assert await items(api, where["id"]) == []
