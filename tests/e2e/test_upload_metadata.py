"""Metadata given at upload (a multipart field `metadata`, from a part's file name to
that file's metadata) and in an import's manifest, checked against the organisation's
metadata schema before anything is stored, and searchable as soon as the upload
answers (issue 17)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from files_client import Client
from google.protobuf import struct_pb2
from minio import Minio

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3
from tests.conftest import ADMIN_KEY
from tests.e2e import test_grpc
from tests.e2e.conftest import BUCKET
from tests.e2e.support import CONSISTENCY, error, folder, items, png, text, unique
from tests.e2e.test_cli import env, files, ok
from tests.e2e.test_imports import finished, integration
from tests.e2e.test_sessions import PART, big_png

__all__ = ["env"]  # the command's environment, a fixture of test_cli's
client = test_grpc.client  # the gRPC client, a fixture of test_grpc's


async def _typed(api: httpx.AsyncClient, **keys: dict[str, Any]) -> dict[str, str]:
    """The schema with these keys added (the schema is the organisation's: other tests'
    keys stay); the headers that carry the write's consistency token."""
    found = (await api.get("/v1/metadata-schema")).json()["keys"]
    put = await api.put("/v1/metadata-schema", json={"keys": {**found, **keys}})
    assert put.status_code == 200, put.text
    return {CONSISTENCY: put.headers[CONSISTENCY]}


def _files(*files: tuple[str, bytes], metadata: Any = None) -> dict[str, Any]:
    parts: list[tuple[str, Any]] = [
        ("file", (name, data, "application/octet-stream")) for name, data in files
    ]
    if metadata is not None:
        given = metadata if isinstance(metadata, str | bytes) else json.dumps(metadata)
        parts.append(("metadata", (None, given)))
    return {"files": parts}


async def test_metadata_given_at_upload_is_checked_stored_and_found_by_search(
    api: httpx.AsyncClient,
) -> None:
    tag = uuid.uuid4().hex[:8]
    score, site = f"score{tag}", f"site{tag}"
    token = await _typed(
        api, **{score: {"type": "number"}, site: {"type": "enum", "values": ["paris", "lyon"]}}
    )
    top = await folder(api, unique("upmeta"))
    url = f"/v1/folders/{top['id']}/files"

    # A value not of its key's type: 422 naming the file, the key and the type it
    # needs, and nothing is stored (the other file neither).
    wrong = await api.post(
        url,
        headers=token,
        **_files(
            ("a.png", png()),
            ("b.txt", text()),
            ("c.txt", text()),
            metadata={"a.png": {score: 1}, "b.txt": {score: "high"}, "c.txt": {score: "low"}},
        ),
    )
    refused = error(wrong, 422, "metadata_type_mismatch")
    assert refused["details"]["key"] == score
    assert refused["details"]["type"] == "number"
    assert "'b.txt'" in refused["message"] and score in refused["message"]
    # Every file at fault listed, each with its own details: a client sets them all
    # aside at once (before, one was named a request).
    assert [(r["name"], r["key"], r["needs"]) for r in refused["details"]["refused"]] == [
        ("b.txt", score, "a number"),
        ("c.txt", score, "a number"),
    ]
    enum = error(
        await api.post(
            url, headers=token, **_files(("a.png", png()), metadata={"a.png": {site: "rome"}})
        ),
        422,
        "metadata_type_mismatch",
    )
    assert "paris" in enum["details"]["needs"]
    # Metadata for a file the upload does not have, not an object, not JSON, too big.
    unknown = error(
        await api.post(url, **_files(("a.png", png()), metadata={"c.png": {"x": 1}})),
        422,
        "unknown_file_name",
    )
    assert unknown["details"]["names"] == ["c.png"]
    error(await api.post(url, **_files(("a.png", png()), metadata="[1]")), 422, "invalid_metadata")
    error(await api.post(url, **_files(("a.png", png()), metadata="{no")), 422, "invalid_metadata")
    error(
        await api.post(url, **_files(("a.png", png()), metadata={"a.png": ["x"]})),
        422,
        "invalid_metadata",
    )
    # An integer past 64 bits, as the stores cannot hold it: refused, not made a double.
    past = error(
        await api.post(url, **_files(("a.png", png()), metadata={"a.png": {"n": 2**64}})),
        422,
        "invalid_metadata",
    )
    assert "a.png" in past["message"]
    big = {"a.png": {"blob": "x" * 70_000}}
    error(await api.post(url, **_files(("a.png", png()), metadata=big)), 413, "metadata_too_large")
    huge = json.dumps({"a.png": {}, "pad": "x" * (5 * 1024 * 1024)})
    error(await api.post(url, **_files(("a.png", png()), metadata=huge)), 413, "metadata_too_large")
    assert await items(api, top["id"]) == []

    # Right: each file carries its own metadata, in the answer and the listing.
    made = await api.post(
        url,
        headers=token,
        **_files(
            ("a.png", png()),
            ("b.txt", text()),
            ("c.txt", text("c")),
            metadata={"a.png": {score: 7, site: "paris", "free": [1, 2]}, "b.txt": {score: 2}},
        ),
    )
    assert made.status_code == 201, made.text
    answered = {f["name"]: f["metadata"] for f in made.json()["files"]}
    assert answered == {
        "a.png": {score: 7, site: "paris", "free": [1, 2]},
        "b.txt": {score: 2},
        "c.txt": {},
    }
    listed = {f["name"]: f["metadata"] for f in await items(api, top["id"])}
    assert listed == answered

    # Search finds the uploaded file by its upload metadata, at once (read-your-writes).
    after = {CONSISTENCY: made.headers[CONSISTENCY]}
    found = await api.get("/v1/search", params={f"metadata.{site}": "paris"}, headers=after)
    assert found.status_code == 200, found.text
    assert [f["name"] for f in found.json()["items"]] == ["a.png"]
    ranged = await api.get("/v1/search", params={f"metadata.{score}.gte": "5"}, headers=after)
    assert [f["name"] for f in ranged.json()["items"]] == ["a.png"]

    # An image group takes no metadata field: it would be lost.
    group = await api.post(
        f"/v1/folders/{top['id']}/image-groups",
        files=[
            ("file", ("g.png", png(), "image/png")),
            ("kind", (None, "image_group")),
            ("name", (None, "g")),
            ("metadata", (None, json.dumps({"g.png": {}}))),
        ],
    )
    error(group, 422, "metadata_not_taken")


async def test_an_import_manifest_gives_titles_and_metadata_checked_by_the_schema(
    api: httpx.AsyncClient, moto: MotoS3, bucket: Minio
) -> None:
    tag = uuid.uuid4().hex[:8]
    score = f"score{tag}"
    token = await _typed(api, **{score: {"type": "number"}})
    run = unique("manifest-meta")
    for name in ("a.png", "b.png"):
        data = png()
        bucket.put_object(BUCKET, f"{run}/{name}", io.BytesIO(data), len(data))
    integration_id = await integration(api, moto)
    top = await folder(api, unique("importmeta"))
    url = f"/v1/folders/{top['id']}/imports"

    def manifest(a: Any) -> dict[str, Any]:
        return {
            "integration_id": integration_id,
            "manifest": {
                "images": [
                    {"key": f"{run}/a.png", "title": "First", "metadata": {score: a}},
                    {"key": f"{run}/b.png", "clientMetadata": {"camera": "left"}},
                ]
            },
        }

    refused = error(await api.post(url, json=manifest("high"), headers=token), 422)
    assert refused["code"] == "metadata_type_mismatch"
    assert refused["details"]["key"] == score and refused["details"]["type"] == "number"
    assert f"{run}/a.png" in refused["message"]
    assert await items(api, top["id"]) == []

    started = await api.post(url, json=manifest(3), headers=token)
    assert started.status_code == 202, started.text
    await finished(api, started.json()["job_id"], files=2)
    listed = {f["name"]: f["metadata"] for f in await items(api, top["id"])}
    assert listed == {"First": {score: 3}, "b.png": {"camera": "left"}}
    found = await api.get("/v1/search", params={f"metadata.{score}": "3"})
    assert [f["name"] for f in found.json()["items"]] == ["First"]


async def test_the_client_the_command_and_grpc_upload_with_metadata(
    api: httpx.AsyncClient,
    platform: Stack,
    env: dict[str, str],
    tmp_path: Path,
    client: test_grpc.Client,
) -> None:
    tag = uuid.uuid4().hex[:8]
    score = f"score{tag}"
    await _typed(api, **{score: {"type": "number"}})
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "b.txt").write_bytes(text())
    paths = [tmp_path / "a.png", tmp_path / "b.txt"]
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        top = c.create_folder(unique("client-upmeta"))
        made = top.upload(paths, metadata={"a.png": {score: 1, "who": "client"}})
        assert [(f.name, f.metadata) for f in made] == [
            ("a.png", {score: 1, "who": "client"}),
            ("b.txt", {}),
        ]
    given = tmp_path / "meta.json"
    given.write_text(json.dumps({"b.txt": {score: 2}}))
    path = unique("cli-upmeta")
    ok(env, "upload", *map(str, paths), "--to", path, "--metadata", str(given))
    listed = ok(env, "ls", path, "--json")
    assert {
        (f["name"], json.dumps(f["metadata"])) for f in map(json.loads, listed.splitlines())
    } == {("a.png", "{}"), ("b.txt", json.dumps({score: 2}))}
    given.write_text(json.dumps({"b.txt": {score: "two"}}))
    # The file refused by name, with the platform's code (exit 3: some files refused).
    done = files(env, "upload", str(paths[1]), "--to", path + "-2", "--metadata", str(given))
    assert done.returncode == 3, done
    refused = done.stderr.splitlines()[0]
    assert refused.startswith(f"files upload: {paths[1]}: refused: metadata_type_mismatch: ")
    assert score in refused and "number" in refused

    top_id = (await folder(api, unique("grpc-upmeta")))["id"]
    described = struct_pb2.Struct()
    described.update({score: 3})

    async def send() -> Any:
        header = pb.UploadHeader(folder_id=top_id, name="g.png", metadata=described)
        yield pb.UploadRequest(header=header)
        yield pb.UploadRequest(chunk=png())
        yield pb.UploadRequest(header=pb.UploadHeader(name="h.txt"))
        yield pb.UploadRequest(chunk=b"h")

    answer = await client.files.Upload(send(), metadata=test_grpc.ADMIN)
    assert [(f.name, dict(f.metadata)) for f in answer.files] == [
        ("g.png", {score: 3.0}),
        ("h.txt", {}),
    ]


async def test_a_large_file_goes_in_parts_with_its_metadata_in_one_write(
    api: httpx.AsyncClient, platform: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    """The client and the command open the file's upload session with its metadata: no
    PATCH once it is stored, so no metadata change in its history."""
    tag = uuid.uuid4().hex[:8]
    score = f"score{tag}"
    await _typed(api, **{score: {"type": "number"}})
    big = tmp_path / "big.png"
    big.write_bytes(big_png(PART + 3))

    async def one_write(file_id: str) -> None:
        answer = await api.get("/v1/audit", params={"subject_id": file_id, "limit": 100})
        types = [e["type"] for e in answer.json()["items"]]
        assert "catalog.FileUploaded" in types, types
        assert "catalog.FileMetadataChanged" not in types, types

    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        top = c.create_folder(unique("client-parts-meta"))
        [made] = top.upload([big], metadata={"big.png": {score: 4}}, parts_from=PART)
        assert made.metadata == {score: 4}
    await one_write(made.id)

    given = tmp_path / "meta.json"
    given.write_text(json.dumps({"big.png": {score: 5, "site": "lyon"}}))
    path = unique("cli-parts-meta")
    ok(env, "upload", str(big), "--to", path, "--parts-from", str(PART), "--metadata", str(given))
    [listed] = [json.loads(line) for line in ok(env, "ls", path, "--json").splitlines()]
    assert listed["metadata"] == {score: 5, "site": "lyon"}
    await one_write(listed["id"])
