"""The catalog's HTTP API: the Folders and Files parts of the public contract.

The gateway authenticates and forwards; the caller arrives in headers.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, Field

from services.catalog import domain, history, listing, queries
from services.catalog.handlers import CONSUMES, Catalog
from shared.api.catalog import (
    Delete,
    FileChanges,
    FileLookup,
    FileUpdates,
    FolderChanges,
    MetadataSchemaChanges,
    Move,
    NewFolder,
    Restore,
)
from shared.contracts.envelope import Cause
from shared.kit import consistency
from shared.kit.access import RANK, Access
from shared.kit.errors import Refused
from shared.kit.http import JSON, JSONRoute, access, cause
from shared.kit.service import source_of

Caller = Annotated[Cause, Depends(cause)]
Rights = Annotated[Access, Depends(access)]
Limit = Annotated[int, Query(ge=1, le=1000)]
# An empty query value (`?parent_id=`, as the contract writes it) means "not given".
Blank = BeforeValidator(lambda value: None if value == "" else value)
FolderId = Annotated[uuid.UUID | None, Blank]


class FileIds(BaseModel):
    ids: list[uuid.UUID] = Field(max_length=100_000)


def _written(body: Any, position: int, status: int = 200) -> JSON:
    # Every write answers with a token, even one that changed nothing (position 0).
    response = JSON(body, status)
    response.headers[consistency.HEADER] = consistency.encode({"catalog": position})
    return response


def router(catalog: Catalog) -> APIRouter:
    api = APIRouter(route_class=JSONRoute, prefix="/v1")

    @api.post("/folders", status_code=201)
    async def create_folder(body: NewFolder, caller: Caller, rights: Rights) -> JSON:
        folder_id, position = await catalog.create_folder(
            caller,
            name=body.name,
            description=body.description,
            parent_id=body.parent_id,
            metadata=body.metadata,
            access=rights,
        )
        if body.parent_id is None:
            # Its creator is its admin: granted by the ACL context in reaction, which
            # the gateway waits for; this answer must not wait to say so.
            rights = dataclasses.replace(rights, grants={**rights.grants, folder_id: "admin"})
        return _written(await queries.folder(catalog.pool, folder_id, rights), position, 201)

    @api.get("/folders")
    async def list_folders(
        rights: Rights,
        parent_id: FolderId = None,
        cursor: str | None = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        return await queries.folders(catalog.pool, parent_id, cursor, limit, rights)

    @api.get("/folders/{folder_id}")
    async def get_folder(folder_id: uuid.UUID, rights: Rights) -> dict[str, Any]:
        return await queries.folder(catalog.pool, folder_id, rights)

    @api.get("/folders/{folder_id}/summary")
    async def folder_summary(folder_id: uuid.UUID, rights: Rights) -> dict[str, Any]:
        return await queries.summary(catalog.pool, folder_id, rights)

    # A page of up to 1,000 items is JSON-ready as built (strings, numbers, the rows'
    # JSON): rendered as it is, not walked again by FastAPI's response serialisation,
    # which was a third of the catalog's CPU for such a page (py-spy, 2026-12-06).
    @api.get("/folders/{folder_id}/items", response_model=dict[str, Any])
    async def folder_items(folder_id: uuid.UUID, request: Request, rights: Rights) -> JSON:
        params = request.query_params.multi_items()
        as_of = [v for k, v in params if k == "as_of"]
        if as_of:
            # The folder as it was: from the history, by name; no filters there.
            others = sorted({k for k, _ in params if k not in ("as_of", "cursor", "limit")})
            if others or len(as_of) > 1:
                raise Refused(
                    400,
                    "unsupported_with_as_of",
                    "as_of takes only cursor and limit (once each)",
                    {"parameters": others or ["as_of"]},
                )
            asked = listing.parse([(k, v) for k, v in params if k != "as_of"], listing.ITEMS_PARAMS)
            return JSON(
                await history.items_as_of(
                    catalog.pool,
                    folder_id,
                    history.parse_as_of(as_of[0]),
                    rights,
                    asked.limit,
                    asked.cursor,
                )
            )
        asked = listing.parse(params, listing.ITEMS_PARAMS)
        return JSON(await queries.items(catalog.pool, folder_id, asked, rights))

    @api.patch("/folders/{folder_id}")
    async def update_folder(
        folder_id: uuid.UUID, body: FolderChanges, caller: Caller, rights: Rights
    ) -> JSON:
        position = await catalog.update_folder(
            caller,
            folder_id,
            name=body.name,
            description=body.description,
            metadata=body.metadata,
            access=rights,
        )
        return _written(await queries.folder(catalog.pool, folder_id, rights), position)

    @api.delete("/folders/{folder_id}", status_code=204)
    async def delete_folder(folder_id: uuid.UUID, caller: Caller, rights: Rights) -> Response:
        _, position = await catalog.delete(
            caller, file_ids=[], folder_ids=[folder_id], dry_run=False, access=rights
        )
        response = Response(status_code=204)
        response.headers[consistency.HEADER] = consistency.encode({"catalog": position})
        return response

    @api.get("/files/{file_id}")
    async def get_file(file_id: uuid.UUID, rights: Rights) -> dict[str, Any]:
        return await queries.file(catalog.pool, file_id, rights)

    @api.get("/files/{file_id}/duplicates")
    async def file_duplicates(
        file_id: uuid.UUID, rights: Rights, limit: Limit = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        return await queries.duplicates(catalog.pool, file_id, rights, limit, cursor)

    @api.patch("/files/{file_id}")
    async def update_file(
        file_id: uuid.UUID, body: FileChanges, caller: Caller, rights: Rights
    ) -> JSON:
        position = await catalog.update_file(
            caller,
            file_id,
            name=body.name,
            description=body.description,
            metadata=body.metadata,
            access=rights,
        )
        return _written(await queries.file(catalog.pool, file_id, rights), position)

    @api.patch("/files")
    async def edit_files(body: FileUpdates, caller: Caller, rights: Rights) -> JSON:
        edits = [domain.FileEdit(u.id, u.name, u.description, u.metadata) for u in body.updates]
        ids, position = await catalog.edit_files(caller, edits, body.metadata_mode, rights)
        found = await queries.lookup(catalog.pool, ids, rights)
        return _written({"updated": len(ids), "items": found["items"]}, position)

    @api.get("/metadata-schema")
    async def get_metadata_schema(rights: Rights) -> dict[str, Any]:
        return await queries.metadata_schema(catalog.pool)

    @api.put("/metadata-schema")
    async def put_metadata_schema(
        body: MetadataSchemaChanges, caller: Caller, rights: Rights
    ) -> JSON:
        keys = {k: v.model_dump(exclude_none=True) for k, v in body.keys.items()}
        position = await catalog.set_schema(caller, keys, rights)
        return _written(await queries.metadata_schema(catalog.pool), position)

    @api.post("/files/lookup")
    async def lookup_files(body: FileLookup, rights: Rights) -> dict[str, Any]:
        return await queries.lookup(catalog.pool, body.ids, rights)

    @api.delete("/files/{file_id}", status_code=204)
    async def delete_file(file_id: uuid.UUID, caller: Caller, rights: Rights) -> Response:
        _, position = await catalog.delete(
            caller, file_ids=[file_id], folder_ids=[], dry_run=False, access=rights
        )
        response = Response(status_code=204)
        response.headers[consistency.HEADER] = consistency.encode({"catalog": position})
        return response

    @api.post("/move")
    async def move(body: Move, caller: Caller, rights: Rights) -> JSON:
        result, position = await catalog.move(
            caller,
            file_ids=body.file_ids,
            folder_ids=body.folder_ids,
            target_id=body.target_folder_id,
            dry_run=body.dry_run,
            access=rights,
        )
        return _written(result, position)

    @api.post("/delete")
    async def delete(body: Delete, caller: Caller, rights: Rights) -> JSON:
        result, position = await catalog.delete(
            caller,
            file_ids=body.file_ids,
            folder_ids=body.folder_ids,
            dry_run=body.dry_run,
            access=rights,
        )
        return _written(result, position)

    @api.get("/trash")
    async def trash(
        rights: Rights, limit: Limit = 100, cursor: str | None = None
    ) -> dict[str, Any]:
        return await catalog.trash(rights, limit=limit, cursor=cursor)

    @api.post("/trash/restore")
    async def restore(body: Restore, caller: Caller, rights: Rights) -> JSON:
        result, position = await catalog.restore(
            caller, file_ids=body.file_ids, folder_ids=body.folder_ids, access=rights
        )
        return _written(result, position)

    @api.delete("/trash")
    async def empty_trash(
        caller: Caller,
        rights: Rights,
        file_ids: Annotated[list[str] | None, Query(max_length=1000)] = None,
        folder_ids: Annotated[list[str] | None, Query(max_length=1000)] = None,
    ) -> JSON:
        """Without ids, the whole trash the caller could restore; with them ("Delete
        forever"), only those (repeated or comma-separated), the rest untouched."""
        result, position = await catalog.empty_trash(
            caller,
            rights,
            file_ids=_ids(file_ids, "file_ids"),
            folder_ids=_ids(folder_ids, "folder_ids"),
        )
        return _written(result, position)

    @api.get("/search", response_model=dict[str, Any])
    async def search(request: Request, rights: Rights) -> JSON:
        asked = listing.parse(
            request.query_params.multi_items(), listing.SEARCH_PARAMS, q_required=True
        )
        # A page as JSON-ready as the folder's items (above).
        return JSON(await queries.search(catalog.pool, asked, rights))

    return api


def _ids(values: list[str] | None, name: str) -> list[uuid.UUID] | None:
    if values is None:
        return None
    texts = [t.strip() for v in values for t in v.split(",") if t.strip()]
    if len(texts) > 1000:
        raise domain.Invalid("too_many_ids", f"{name} takes at most 1,000 ids")
    try:
        return [uuid.UUID(t) for t in texts]
    except ValueError:
        bad = next(t for t in texts if not _is_uuid(t))
        raise domain.Invalid("invalid_id", f"{name}: {bad[:64]!r} is not an id") from None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def internal(catalog: Catalog) -> APIRouter:
    api = APIRouter(route_class=JSONRoute, prefix="/internal", include_in_schema=False)

    @api.get("/files/{file_id}")
    async def file_with_blob(file_id: uuid.UUID, rights: Rights) -> dict[str, Any]:
        return await queries.file(catalog.pool, file_id, rights, internal=True)

    @api.get("/folders/{folder_id}")
    async def folder_access(
        folder_id: uuid.UUID, rights: Rights, needed: str = "user"
    ) -> dict[str, Any]:
        """Whether the caller has `needed` on the folder (404 or 403 if not), and its
        path: the gateway asks before an upload and before collaborator changes."""
        if needed not in RANK:
            raise domain.Invalid("invalid_role", f"no role {needed!r}")
        path = await catalog.pool.fetchval(
            "SELECT path FROM catalog.folders WHERE id = $1", folder_id
        )
        if path is None:
            raise domain.NotFound("not_found", f"folder {folder_id} does not exist")
        role = rights.require(path, needed, f"folder {folder_id}")
        return {"id": str(folder_id), "path": [str(p) for p in path], "my_role": role}

    @api.post("/files")
    async def files_by_id(
        body: FileIds,
        rights: Rights,
        token: str = "",
        timeout: float = Query(0.0, ge=0, le=30),  # noqa: ASYNC109
    ) -> JSON:
        """Those of these files the caller may see. With a consistency `token`: read once
        the catalog has applied what it names of the stores it consumes (or `timeout`
        has passed), and answered with the catalog's position, as its consistency route
        would: an upload's answer waits and reads in one call, not in two (or in a round
        asking every consumer of the upload's store, when only the catalog's reaction is
        in the answer)."""
        try:
            wanted = consistency.decode(token)
        except ValueError as error:
            raise Refused(400, "invalid_consistency_token", str(error)) from error
        mine = {source_of(t) for t in CONSUMES}
        relevant = {k: v for k, v in wanted.items() if k in mine}
        parts = catalog.parts
        if relevant:
            await consistency.wait_until_caught_up(
                lambda: parts.inbox.watermarks(catalog.pool), relevant, timeout, parts.moved
            )
        response = JSON({"items": await queries.files(catalog.pool, body.ids, rights)})
        if token:
            # What the caller is told it may read now is durable first (as the
            # consistency route's answer: a consumer's commit wakes the wait before its
            # flush, kit/db.py).
            head = await parts.store.durable_head(catalog.pool)
            response.headers[consistency.HEADER] = consistency.encode({"catalog": head})
        return response

    return api


def install(app: FastAPI, catalog: Catalog) -> None:
    app.include_router(router(catalog))
    app.include_router(internal(catalog))
