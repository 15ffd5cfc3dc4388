"""The datasets' HTTP API: the Datasets part of the contract, "linked to", and sharing.

Every route but the internal ones takes the caller's access (`X-Files-Access`,
set by the gateway): a dataset the caller may not see answers 404, as if it
did not exist, and files of folders they may not see are left out.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from services.datasets import domain
from services.datasets.handlers import Datasets, Seen, files_seen, visible_files
from shared.api.datasets import DatasetChanges, FileIds, NewDataset, Sharing
from shared.contracts.envelope import Cause
from shared.kit import access as access_rules
from shared.kit import consistency
from shared.kit.http import JSON, JSONRoute, access, cause

Caller = Annotated[Cause, Depends(cause)]
Access = Annotated[access_rules.Access, Depends(access)]
Limit = Annotated[int, Query(ge=1, le=1000)]

# Datasets with the caller's share of each ($1: the caller's user id).
WITH_SHARE = """
    SELECT d.*, s.role AS shared_role FROM datasets.datasets d
    LEFT JOIN datasets.shares s ON s.dataset_id = d.id AND s.user_id = $1
"""
# Whether the caller sees the dataset ($2: whether they are an org admin).
VISIBLE = "($2::boolean OR d.created_by = $1 OR s.role IS NOT NULL)"


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


def dataset_json(row: Any, my_role: str | None, seen: Seen) -> dict[str, Any]:
    """A dataset as the caller may see it: `file_count` counts the files of it they see
    (`visible_files`), as its file list lists them."""
    answer = {
        "id": str(row["id"]),
        "name": row["name"],
        "description": row["description"],
        "synced_folder_id": str(row["synced_folder_id"]) if row["synced_folder_id"] else None,
        "synced": row["synced_folder_id"] is not None,
        "unsynced_from_folder_id": str(row["unsynced_from"]) if row["unsynced_from"] else None,
        "file_count": seen.file_count,
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
        "my_role": my_role,
    }
    return answer | {"version": change_key(row, answer, seen.files_key)}


def change_key(row: Any, answer: dict[str, Any], files_key: int | None) -> int:
    """A key that changes at every change of the dataset the caller may see, so a page
    that watches it misses none (a file moved out and another in leave the count as it
    was). The stream's version to a caller who sees every file; to anyone else, a digest
    of what they see: its version also moves at links and unlinks of files they may not
    see, and would tell them of those, and of how many (as its count would)."""
    if files_key is None:
        return int(row["version"])
    seen = [files_key] + [answer[k] for k in ("name", "description", "my_role")]
    seen += [answer["synced_folder_id"], answer["unsynced_from_folder_id"]]
    digest = hashlib.blake2b(orjson.dumps(seen), digest_size=8).digest()
    # Below 2**53: a number JavaScript reads exactly.
    return int.from_bytes(digest) >> 11


def router(datasets: Datasets) -> APIRouter:
    api = APIRouter(route_class=JSONRoute)

    async def one(dataset_id: uuid.UUID, caller: access_rules.Access) -> dict[str, Any]:
        row = await datasets.pool.fetchrow(
            f"{WITH_SHARE} WHERE d.id = $2", caller.user_id, dataset_id
        )
        role = (
            None if row is None else domain.role_of(caller, row["created_by"], row["shared_role"])
        )
        role = domain.require(role, "user", dataset_id)
        seen = await visible_files(datasets.pool, caller, [row])
        return dataset_json(row, role, seen[dataset_id])

    async def collaborators(dataset_id: uuid.UUID) -> dict[str, Any]:
        creator = await datasets.pool.fetchval(
            "SELECT created_by FROM datasets.datasets WHERE id = $1", dataset_id
        )
        shares = await datasets.pool.fetch(
            """SELECT user_id, role FROM datasets.shares WHERE dataset_id = $1
               ORDER BY array_position(ARRAY['admin', 'editor', 'user'], role), user_id""",
            dataset_id,
        )
        owner = [{"user_id": creator, "role": "admin"}] if creator is not None else []
        items = owner + [{"user_id": r["user_id"], "role": r["role"]} for r in shares]
        people = await datasets.people([str(x["user_id"]) for x in items])
        for x in items:
            x.update(people.get(str(x["user_id"]), {}))
        return {"items": items, "next_cursor": None}

    @api.post("/v1/datasets", status_code=201)
    async def create(body: NewDataset, caller: Caller, rights: Access) -> Response:
        if body.create_backing_folder:
            # The gateway makes the folder (the catalog's) and asks again with it.
            raise domain.Refused(
                422, "invalid_request", "create_backing_folder is made through the gateway"
            )
        dataset_id, position = await datasets.create(
            caller,
            rights,
            name=body.name,
            description=body.description,
            synced_folder_id=body.synced_folder_id,
        )
        return _written(await one(dataset_id, rights), position, 201)

    @api.get("/v1/datasets")
    async def list_datasets(rights: Access, cursor: str | None = None, limit: Limit = 100) -> Any:
        """The datasets the caller sees: their own, those shared with them (all, for an
        org admin)."""
        rows = await datasets.pool.fetch(
            f"{WITH_SHARE} WHERE {VISIBLE} AND d.id > $3 ORDER BY d.id LIMIT $4",
            rights.user_id,
            rights.org_admin,
            _after(cursor),
            limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        seen = await visible_files(datasets.pool, rights, rows)
        return {
            "items": [
                dataset_json(
                    r, domain.role_of(rights, r["created_by"], r["shared_role"]), seen[r["id"]]
                )
                for r in rows
            ],
            "next_cursor": _cursor(str(rows[-1]["id"])) if more else None,
        }

    @api.get("/v1/datasets/{dataset_id}")
    async def get(dataset_id: uuid.UUID, rights: Access) -> Any:
        return await one(dataset_id, rights)

    @api.patch("/v1/datasets/{dataset_id}")
    async def update(
        dataset_id: uuid.UUID, body: DatasetChanges, caller: Caller, rights: Access
    ) -> Response:
        position = await datasets.update(
            caller, rights, dataset_id, name=body.name, description=body.description
        )
        return _written(await one(dataset_id, rights), position)

    @api.delete("/v1/datasets/{dataset_id}")
    async def delete(dataset_id: uuid.UUID, caller: Caller, rights: Access) -> Response:
        return _written(None, await datasets.delete(caller, rights, dataset_id), 204)

    @api.post("/v1/datasets/{dataset_id}/files")
    async def add_files(
        dataset_id: uuid.UUID, body: FileIds, caller: Caller, rights: Access
    ) -> Response:
        added, position = await datasets.add_files(caller, rights, dataset_id, body.file_ids)
        return _written({"added": added}, position)

    @api.post("/v1/datasets/{dataset_id}/files/remove")
    async def remove_files(
        dataset_id: uuid.UUID, body: FileIds, caller: Caller, rights: Access
    ) -> Response:
        removed, position = await datasets.remove_files(caller, rights, dataset_id, body.file_ids)
        return _written({"removed": removed}, position)

    @api.delete("/v1/datasets/{dataset_id}/files/{file_id}")
    async def remove_file(
        dataset_id: uuid.UUID, file_id: uuid.UUID, caller: Caller, rights: Access
    ) -> Response:
        position = await datasets.remove_file(caller, rights, dataset_id, file_id)
        return _written(None, position, 204)

    @api.get("/v1/datasets/{dataset_id}/files")
    async def files(
        dataset_id: uuid.UUID, rights: Access, cursor: str | None = None, limit: Limit = 100
    ) -> Any:
        """File ids, a page at a time, of the files the caller sees (filtered before the
        page is cut); the gateway adds each file's details."""
        await datasets.require(datasets.pool, dataset_id, rights, "user")
        joins, seen, seen_args = files_seen(rights, param=4)
        if not seen_args:  # an org admin sees every file
            query = """SELECT m.file_id FROM datasets.members m
                       WHERE m.dataset_id = $1 AND m.file_id > $2
                       ORDER BY m.file_id LIMIT $3"""
        else:
            query = f"""SELECT m.file_id FROM datasets.members m
                        JOIN datasets.files f ON f.id = m.file_id {joins}
                        WHERE m.dataset_id = $1 AND m.file_id > $2 AND {seen}
                        ORDER BY m.file_id LIMIT $3"""
        rows = await datasets.pool.fetch(query, dataset_id, _after(cursor), limit + 1, *seen_args)
        more = len(rows) > limit
        return {
            "file_ids": [str(r["file_id"]) for r in rows[:limit]],
            "next_cursor": _cursor(str(rows[limit - 1]["file_id"])) if more else None,
        }

    @api.get("/v1/files/{file_id}/datasets")
    async def linked_to(file_id: uuid.UUID, rights: Access) -> Any:
        """The datasets the caller sees that the file is in, with the caller's role on
        each (what the web app's "Linked to" offers: Remove only to an Editor of it)."""
        if not await datasets.sees_file(datasets.pool, rights, file_id):
            raise domain.Refused(404, "not_found", f"file {file_id} does not exist")
        rows = await datasets.pool.fetch(
            f"""SELECT d.id, d.name, d.created_by, d.shared_role FROM ({WITH_SHARE}) AS d
                JOIN datasets.members m ON m.dataset_id = d.id
                WHERE m.file_id = $3 AND ($2::boolean OR d.created_by = $1
                                          OR d.shared_role IS NOT NULL)
                ORDER BY d.name, d.id""",
            rights.user_id,
            rights.org_admin,
            file_id,
        )
        return {
            "items": [
                {
                    "id": str(r["id"]),
                    "name": r["name"],
                    "my_role": domain.role_of(rights, r["created_by"], r["shared_role"]),
                }
                for r in rows
            ]
        }

    @api.get("/v1/datasets/{dataset_id}/collaborators")
    async def list_collaborators(dataset_id: uuid.UUID, rights: Access) -> Any:
        """Who may use the dataset: its creator (its admin), then those it is shared with."""
        await datasets.require(datasets.pool, dataset_id, rights, "user")
        return await collaborators(dataset_id)

    @api.post("/v1/datasets/{dataset_id}/collaborators")
    async def share(
        dataset_id: uuid.UUID, body: Sharing, caller: Caller, rights: Access
    ) -> Response:
        """Share with users by email, with a role (sharing again changes the role);
        an unknown email refuses the whole call."""
        position = await datasets.share(caller, rights, dataset_id, body.emails, body.role)
        return _written(await collaborators(dataset_id), position)

    @api.delete("/v1/datasets/{dataset_id}/collaborators/{user_id}")
    async def unshare(
        dataset_id: uuid.UUID, user_id: uuid.UUID, caller: Caller, rights: Access
    ) -> Response:
        return _written(None, await datasets.unshare(caller, rights, dataset_id, user_id), 204)

    @api.post("/internal/impact", include_in_schema=False)
    async def impact(body: Impact, request: Request) -> Any:
        """The links a move or delete would remove, per dataset. Asked for a user (the
        gateway signs the caller's token): the datasets they may see by name, the
        others only as a count, as a dry run shows them."""
        found = await datasets.impact(body.file_ids, body.folder_ids, body.target_folder_id)
        caller = getattr(request.state, "identity", None)
        if caller is None or caller.access is None or not found:
            return {"datasets": found, "hidden_datasets": 0}
        rights = access_rules.Access.decode(caller.access)
        rows = await datasets.pool.fetch(
            f"{WITH_SHARE} WHERE d.id = ANY($2::uuid[])",
            rights.user_id,
            [uuid.UUID(d["id"]) for d in found],
        )
        seen = {
            str(r["id"])
            for r in rows
            if domain.role_of(rights, r["created_by"], r["shared_role"]) is not None
        }
        shown = [d for d in found if d["id"] in seen]
        return {"datasets": shown, "hidden_datasets": len(found) - len(shown)}

    return api


def install(app: FastAPI, datasets: Datasets) -> None:
    app.include_router(router(datasets))
