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


async def test_a_refusal_names_a_bounded_few_of_the_faults_it_found(
    api: httpx.AsyncClient,
) -> None:
    # Every unknown key was named twice, whole, in the answer: 8 MB sent came back as
    # 62 MB (600,000 keys), a 4 MB key as 8 MB.
    body: dict[str, object] = {"name": unique("keys")}
    body.update({f"{i:06d}" + "k" * 994: 1 for i in range(5_000)})
    answer = await api.post("/v1/folders", json=body)
    refused = error(answer, 422, "invalid_request")
    assert len(answer.content) < 16 * 1024
    fields = refused["details"]["fields"]
    assert 1 <= len(fields) <= 20 and refused["details"]["faults"] == 5_000
    assert fields[0]["field"].startswith("000000k") and len(fields[0]["field"]) <= 201
    assert "and 4980 more" in refused["message"]
