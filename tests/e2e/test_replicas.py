"""Two processes of one service on the running platform: the datasets context's two
consumers in one group (the partitions split between them), every upload into a
synced folder linked exactly once, and when one process dies the other takes its
partitions over without losing or repeating a link. (tests/integration/test_scale_out.py
shows the split and the relay's single leader on the kit itself.)"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg
import httpx

from tests.conftest import eventually
from tests.e2e.support import folder, text, unique, upload

LINKED = """SELECT coalesce(sum(jsonb_array_length(data->'file_ids')), 0)
            FROM datasets.events
            WHERE type = 'datasets.FilesLinked' AND data->>'dataset_id' = $1"""


async def file_count(api: httpx.AsyncClient, dataset_id: str) -> int:
    return int((await api.get(f"/v1/datasets/{dataset_id}")).json()["file_count"])


async def upload_many(api: httpx.AsyncClient, folder_id: str, requests: int, tag: str) -> int:
    for r in range(requests):
        await upload(
            api, folder_id, *((f"{tag}-{r}-{i}.txt", text(f"{tag} {r} {i}")) for i in range(10))
        )
    return requests * 10


async def test_two_datasets_processes_link_every_upload_once_even_when_one_dies(
    api: httpx.AsyncClient, stack: Any, pool: asyncpg.Pool
) -> None:
    synced = await folder(api, unique("replicas"))
    made = await api.post(
        "/v1/datasets", json={"name": unique("replicas"), "synced_folder_id": synced["id"]}
    )
    assert made.status_code == 201, made.text
    dataset_id = made.json()["id"]
    # A second process joins the group; /readyz says its consumer has joined.
    _, second = stack.add_replica("datasets")
    try:
        sent = await upload_many(api, synced["id"], 4, "both")

        async def all_linked() -> bool:
            return await file_count(api, dataset_id) == sent

        await eventually(all_linked, within=30, what="every upload linked")
        assert await pool.fetchval(LINKED, dataset_id) == sent

        # One process dies mid-stream, as if its machine went away.
        more = asyncio.create_task(upload_many(api, synced["id"], 6, "after"))

        async def streaming() -> bool:
            return await file_count(api, dataset_id) > sent

        await eventually(streaming, within=30, what="the next uploads being linked")
        stack.remove(second, signal.SIGKILL)
        sent += await more
        await eventually(all_linked, within=60, what="the survivor linked the rest")
        assert await pool.fetchval(LINKED, dataset_id) == sent
    finally:
        if second in stack.children:
            stack.remove(second)
