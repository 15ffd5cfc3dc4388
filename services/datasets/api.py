"""The datasets' HTTP API: the Datasets part of the contract and "linked to"."""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from services.datasets import domain
from services.datasets.handlers import Datasets
from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.http import JSON, cause

Caller = Annotated[Cause, Depends(cause)]
Limit = Annotated[int, Query(ge=1, le=1000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewDataset(Strict):
    name: str
    description: str = Field("", max_length=10_000)
    synced_folder_id: uuid.UUID | None = None


class DatasetChanges(Strict):
    name: str | None = None
    description: str | None = Field(None, max_length=10_000)


class FileIds(Strict):
    file_ids: list[uuid.UUID] = Field(max_length=100_000)


class Impact(BaseModel):
    file_ids: list[uuid.UUID] = Field(default_factory=list)
    folder_ids: list[uuid.UUID] = Field(default_factory=list)
    target_folder_id: uuid.UUID | None = None


def _written(body: Any, position: int, status: int = 200) -> Response:
    response: Response = JSON(body, status) if body is not None else Response(status_code=status)
    response.headers[consistency.HEADER] = consistency.encode({"datasets": position})
    return response


def _cursor(value: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([value])).decode()


def _after(cursor: str | None) -> uuid.UUID:
    if not cursor:
        return uuid.UUID(int=0)
    try:
        [value] = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return uuid.UUID(value)
    except Exception as error:
        raise domain.Refused(
            422, "invalid_cursor", "the cursor is not one this API gave out"
        ) from error


def dataset_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"],
        "synced_folder_id": str(row["synced_folder_id"]) if row["synced_folder_id"] else None,
        "synced": row["synced_folder_id"] is not None,
        "unsynced_from_folder_id": str(row["unsynced_from"]) if row["unsynced_from"] else None,
        "file_count": row["file_count"],
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
    }


def router(datasets: Datasets) -> APIRouter:
    api = APIRouter()

    async def one(dataset_id: uuid.UUID) -> dict[str, Any]:
        row = await datasets.pool.fetchrow(
            "SELECT * FROM datasets.datasets WHERE id = $1", dataset_id
        )
        if row is None:
            raise domain.Refused(404, "not_found", f"dataset {dataset_id} does not exist")
        return dataset_json(row)

    @api.post("/v1/datasets", status_code=201)
    async def create(body: NewDataset, caller: Caller) -> Response:
        dataset_id, position = await datasets.create(
            caller,
            name=body.name,
            description=body.description,
            synced_folder_id=body.synced_folder_id,
        )
        return _written(await one(dataset_id), position, 201)

    @api.get("/v1/datasets")
    async def list_datasets(_: Caller, cursor: str | None = None, limit: Limit = 100) -> Any:
        rows = await datasets.pool.fetch(
            "SELECT * FROM datasets.datasets WHERE id > $1 ORDER BY id LIMIT $2",
            _after(cursor),
            limit + 1,
        )
        more = len(rows) > limit
        return {
            "items": [dataset_json(r) for r in rows[:limit]],
            "next_cursor": _cursor(str(rows[limit - 1]["id"])) if more else None,
        }

    @api.get("/v1/datasets/{dataset_id}")
    async def get(dataset_id: uuid.UUID, _: Caller) -> Any:
        return await one(dataset_id)

    @api.patch("/v1/datasets/{dataset_id}")
    async def update(dataset_id: uuid.UUID, body: DatasetChanges, caller: Caller) -> Response:
        position = await datasets.update(
            caller, dataset_id, name=body.name, description=body.description
        )
        return _written(await one(dataset_id), position)

    @api.delete("/v1/datasets/{dataset_id}")
    async def delete(dataset_id: uuid.UUID, caller: Caller) -> Response:
        return _written(None, await datasets.delete(caller, dataset_id), 204)

    @api.post("/v1/datasets/{dataset_id}/files")
    async def add_files(dataset_id: uuid.UUID, body: FileIds, caller: Caller) -> Response:
        added, position = await datasets.add_files(caller, dataset_id, body.file_ids)
        return _written({"added": added}, position)

    @api.delete("/v1/datasets/{dataset_id}/files/{file_id}")
    async def remove_file(dataset_id: uuid.UUID, file_id: uuid.UUID, caller: Caller) -> Response:
        return _written(None, await datasets.remove_file(caller, dataset_id, file_id), 204)

    @api.get("/v1/datasets/{dataset_id}/files")
    async def files(
        dataset_id: uuid.UUID, _: Caller, cursor: str | None = None, limit: Limit = 100
    ) -> Any:
        """File ids, a page at a time; the gateway adds each file's details."""
        await one(dataset_id)
        rows = await datasets.pool.fetch(
            """SELECT file_id FROM datasets.members WHERE dataset_id = $1 AND file_id > $2
               ORDER BY file_id LIMIT $3""",
            dataset_id,
            _after(cursor),
            limit + 1,
        )
        more = len(rows) > limit
        return {
            "file_ids": [str(r["file_id"]) for r in rows[:limit]],
            "next_cursor": _cursor(str(rows[limit - 1]["file_id"])) if more else None,
        }

    @api.get("/v1/files/{file_id}/datasets")
    async def linked_to(file_id: uuid.UUID, _: Caller) -> Any:
        rows = await datasets.pool.fetch(
            """SELECT d.id, d.name FROM datasets.members m
               JOIN datasets.datasets d ON d.id = m.dataset_id
               WHERE m.file_id = $1 ORDER BY d.name, d.id""",
            file_id,
        )
        return {"items": [{"id": str(r["id"]), "name": r["name"]} for r in rows]}

    @api.post("/internal/impact", include_in_schema=False)
    async def impact(body: Impact) -> Any:
        return {
            "datasets": await datasets.impact(body.file_ids, body.folder_ids, body.target_folder_id)
        }

    return api


def install(app: FastAPI, datasets: Datasets) -> None:
    app.include_router(router(datasets))
