"""One upload into a synced folder is one trace across the services that take part."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import orjson

from shared.kit.stack import Stack
from tests.conftest import eventually
from tests.e2e.support import CONSISTENCY, folder, unique


async def test_an_upload_into_a_synced_folder_is_one_trace(
    api: httpx.AsyncClient, platform: Stack
) -> None:
    top = await folder(api, unique("traced"))
    answer = await api.post(
        "/v1/datasets", json={"name": unique("ds"), "synced_folder_id": top["id"]}
    )
    assert answer.status_code == 201, answer.text
    dataset = answer.json()

    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    answer = await api.post(
        f"/v1/folders/{top['id']}/files",
        files=[("file", ("traced.txt", b"traced", "text/plain"))],
        headers={"traceparent": f"00-{trace_id}-{caller}-01"},
    )
    assert answer.status_code == 201, answer.text
    file_id = answer.json()["files"][0]["id"]
    answer = await api.get(
        f"/v1/datasets/{dataset['id']}/files", headers={CONSISTENCY: answer.headers[CONSISTENCY]}
    )
    assert [f["id"] for f in answer.json()["items"]] == [file_id]

    spans: list[dict[str, Any]] = []
    wanted = {
        ("gateway", "SERVER"),
        ("ingest", "SERVER"),
        ("ingest", "PRODUCER"),
        ("catalog", "CONSUMER"),
        ("catalog", "PRODUCER"),
        ("datasets", "CONSUMER"),
    }

    async def one_tree_through_every_service() -> bool:
        """Each span's parent is in the trace (or is the caller's span), and every
        service took part. Spans reach the file a little after they end."""
        lines = (
            await asyncio.to_thread(Path(platform.settings.trace_file).read_bytes)
        ).splitlines()
        spans[:] = [s for s in map(orjson.loads, lines) if s["trace_id"] == trace_id]
        ids = {s["span_id"] for s in spans} | {caller}
        connected = all(s["parent_id"] in ids for s in spans)
        return connected and wanted <= {(s["service"], s["kind"]) for s in spans}

    try:
        await eventually(one_tree_through_every_service, within=10, what="one trace")
    except AssertionError as error:
        seen = [(s["service"], s["kind"], s["name"], s["span_id"], s["parent_id"]) for s in spans]
        raise AssertionError(f"{error}; spans seen: {seen}") from None
