"""What the gateway does beyond forwarding: the rights it checks before a call (an
upload needs the editor role on its folder, which the catalog knows), and answers
that take parts from more than one context (a file with its datasets, a job with its
files, the audit of every store)."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse
import uuid
from typing import Any

import httpx
import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from services.gateway.edge import (
    MAX_JSON_BODY,
    Gateway,
    TooLarge,
    capped_body,
    error_response,
    note_idempotency,
)
from shared.kit import consistency
from shared.kit.http import JSON
from shared.kit.settings import Settings


def _audit_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as error:
        raise ValueError("not a cursor") from error
    if not isinstance(decoded, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in decoded.items()
    ):
        raise ValueError("not a cursor")
    return decoded


def _encode_audit_cursor(after: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(after)).decode()


class Compose:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings: Settings = gateway.settings

    async def find_folder(
        self, request: Request, user: dict[str, Any], folder_id: str, needed: str = "user"
    ) -> httpx.Response:
        return await self.gateway.http.get(
            f"{self.settings.catalog_url}/internal/folders/{folder_id}",
            params={"needed": needed},
            headers=self.gateway._headers(request, user),
        )

    async def collaborators(
        self, request: Request, user: dict[str, Any], folder_id: str
    ) -> Response:
        # The ACL context holds the grants, the catalog the folder's place in the tree.
        folder = await self.find_folder(request, user, folder_id)
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        headers = self.gateway._headers(request, user, with_body=True)
        headers["X-Files-Folder-Path"] = ",".join(folder.json()["path"])
        answer = await self.gateway.http.request(
            request.method,
            f"{self.settings.acl_url}{request.url.path.rstrip('/')}",
            params=request.query_params,
            content=await capped_body(request),
            headers=headers,
        )
        note_idempotency(request, "acl", user, answer)
        if request.method != "GET" and answer.status_code < 300:
            self.gateway.forget_callers()
        return self.gateway.relay(answer)

    async def _stored(
        self, request: Request, user: dict[str, Any], folder_id: str
    ) -> Response | tuple[httpx.Response, dict[str, int]]:
        """An upload into a folder: the editor role checked, the body streamed to ingest,
        and the catalog caught up with it (read-your-writes: the folder lists what was
        stored once this answers). The refusal to relay, or ingest's answer and the token."""
        folder = await self.find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        answer = await self.gateway.forward("ingest", request, user, stream_body=True)
        if answer.status_code != 201:
            return self.gateway.relay(answer)
        token = await self.gateway.wait_for(
            consistency.decode(answer.headers.get(consistency.HEADER, "")), rounds=1
        )
        return answer, token

    async def upload(self, request: Request, user: dict[str, Any], folder_id: str) -> Response:
        stored = await self._stored(request, user, folder_id)
        if isinstance(stored, Response):
            return stored
        answer, token = stored
        # The answer shows the files as the catalog registered them.
        uploaded = answer.json()
        ids = [f["id"] for f in uploaded["files"]]
        files = await self.files_by_id(request, user, ids)
        missing = len(files) < len(ids)
        if missing and (await self.find_folder(request, user, folder_id)).status_code == 404:
            return error_response(
                409,
                "folder_deleted",
                f"folder {folder_id} was deleted while the upload was stored",
                folder_id=folder_id,
                job_id=uploaded["job_id"],
            )
        # Past the consistency deadline the catalog may still be catching up: then the
        # answer is ingest's own account of the files.
        by_id = {f["id"]: f for f in uploaded["files"]} | {f["id"]: f for f in files}
        body = {"job_id": uploaded["job_id"], "files": [by_id[i] for i in ids]}
        return JSON(body, 201, headers={consistency.HEADER: consistency.encode(token)})

    async def upload_image_group(
        self, request: Request, user: dict[str, Any], folder_id: str
    ) -> Response:
        received = await self._stored(request, user, folder_id)
        if isinstance(received, Response):
            return received
        answer, token = received
        # Answered with the group's file and folder as the catalog has them.
        stored = answer.json()
        files = await self.files_by_id(request, user, [stored["file_id"]])
        made = await self.gateway.http.get(
            f"{self.settings.catalog_url}/v1/folders/{stored['folder_id']}",
            headers=self.gateway._headers(request, user),
        )
        if not files or made.status_code != 200:
            if (await self.find_folder(request, user, folder_id)).status_code == 404:
                return error_response(
                    409,
                    "folder_deleted",
                    f"folder {folder_id} was deleted while the image group was stored",
                    folder_id=folder_id,
                    job_id=stored["job_id"],
                )
            return error_response(
                503,
                "not_yet_registered",
                "the image group is stored but not yet listed; see its job",
                job_id=stored["job_id"],
            )
        body = {"file": files[0], "folder": made.json()}
        return JSON(body, 201, headers={consistency.HEADER: consistency.encode(token)})

    async def upload_dicom(
        self, request: Request, user: dict[str, Any], folder_id: str
    ) -> Response:
        # 202 once every part is stored: the DICOM context reads and assembles them after,
        # and the job (GET /v1/jobs/{id}) shows its progress, series files and errors.
        folder = await self.find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        # The DICOM context follows series files in the catalog (moved, deleted): let it
        # catch up first, so these instances join the series as the caller sees them now.
        await self.gateway.catch_up("dicom", "catalog")
        answer = await self.gateway.forward("ingest", request, user, stream_body=True)
        return self.gateway.relay(answer)

    def with_part_urls(self, request: Request, session: dict[str, Any]) -> dict[str, Any]:
        """Our own part URLs (the local store) are relative: made absolute here, with
        the address the client used."""
        base = str(request.base_url).rstrip("/")
        for part in session.get("parts", []):
            if part["url"].startswith("/"):
                part["url"] = base + part["url"]
        return session

    async def open_upload_session(
        self, request: Request, user: dict[str, Any], folder_id: str
    ) -> Response:
        # A session adds a file as an upload does: the editor role on the folder.
        folder = await self.find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        answer = await self.gateway.forward("ingest", request, user)
        if answer.status_code != 201:
            return self.gateway.relay(answer)
        return self.gateway.relay(answer, body=self.with_part_urls(request, answer.json()))

    async def upload_session(
        self, request: Request, user: dict[str, Any], session_id: str
    ) -> Response:
        """A session is the business of those who may upload into its folder."""
        found = await self.gateway.http.get(
            f"{self.settings.ingest_url}/v1/uploads/{session_id}",
            headers=self.gateway._headers(request, user),
        )
        if found.status_code != 200:
            return self.gateway.relay(found)
        session = found.json()
        folder = await self.find_folder(request, user, session["folder_id"], "editor")
        if folder.status_code != 200:
            # Not theirs to see: as if there were no such session.
            return error_response(404, "not_found", f"upload session {session_id} does not exist")
        if request.method == "GET":
            return self.gateway.relay(found, body=self.with_part_urls(request, session))
        answer = await self.gateway.forward("ingest", request, user)
        if request.method != "POST" or answer.status_code != 201:
            return self.gateway.relay(answer)
        # Completed: answer with the file as the catalog registered it, as an upload does.
        token = await self.gateway.wait_for(
            consistency.decode(answer.headers.get(consistency.HEADER, "")), rounds=1
        )
        completed = answer.json()
        registered = await self.files_by_id(request, user, [completed["file_id"]])
        if not registered:
            return error_response(
                409,
                "folder_deleted",
                f"folder {session['folder_id']} was deleted while the file was completed",
                folder_id=session["folder_id"],
                job_id=completed["job_id"],
            )
        body = {"job_id": completed["job_id"], "file": registered[0]}
        return JSON(body, 201, headers={consistency.HEADER: consistency.encode(token)})

    async def import_objects(
        self, request: Request, user: dict[str, Any], folder_id: str
    ) -> Response:
        # Imports by reference add files as uploads do: the editor role on the folder.
        # 202 once the job is recorded; GET /v1/jobs/{id} follows it.
        folder = await self.find_folder(request, user, folder_id, "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        try:
            answer = await self.gateway.forward("ingest", request, user)
        except TooLarge:
            return error_response(
                413,
                "request_too_large",
                f"the request body is over {MAX_JSON_BODY // (1024 * 1024)} MiB",
                limit=MAX_JSON_BODY,
            )
        return self.gateway.relay(answer)

    async def files_by_id(
        self, request: Request, user: dict[str, Any], ids: list[str]
    ) -> list[dict[str, Any]]:
        found = await self.gateway.http.post(
            f"{self.settings.catalog_url}/internal/files",
            json={"ids": ids},
            headers=self.gateway._headers(request, user),
        )
        by_id = {f["id"]: f for f in found.json()["items"]} if found.status_code == 200 else {}
        return [by_id[i] for i in ids if i in by_id]

    async def dataset_files(
        self, answer: httpx.Response, request: Request, user: dict[str, Any]
    ) -> Response:
        page = answer.json()
        items = await self.files_by_id(request, user, page["file_ids"])
        return JSON({"items": items, "next_cursor": page["next_cursor"]})

    async def file_with_datasets(
        self, answer: httpx.Response, request: Request, user: dict[str, Any]
    ) -> Response:
        file = answer.json()
        linked = await self.gateway.http.get(
            f"{self.settings.datasets_url}/v1/files/{file['id']}/datasets",
            headers=self.gateway._headers(request, user),
        )
        file["datasets"] = linked.json()["items"] if linked.status_code == 200 else []
        return self.gateway.relay(answer, body=file)

    async def with_dataset_impact(
        self, answer: httpx.Response, request: Request, user: dict[str, Any], action: str
    ) -> Response:
        result = answer.json()
        if not result.get("dry_run"):
            return self.gateway.relay(answer)
        asked = orjson.loads(await request.body())
        await self.gateway.catch_up("datasets", "catalog")
        impact = await self.gateway.http.post(
            f"{self.settings.datasets_url}/internal/impact",
            json={
                "file_ids": asked.get("file_ids", []),
                "folder_ids": asked.get("folder_ids", []),
                "target_folder_id": asked.get("target_folder_id") if action == "move" else None,
            },
        )
        result["datasets"] = impact.json()["datasets"] if impact.status_code == 200 else []
        return self.gateway.relay(answer, body=result)

    async def job_with_files(
        self, answer: httpx.Response, request: Request, user: dict[str, Any]
    ) -> Response:
        job = answer.json()
        if job.get("created_by") != user["id"]:
            # Someone else's job shows to those who may see its folder.
            folder = await self.find_folder(request, user, job["folder_id"])
            if folder.status_code != 200:
                return error_response(404, "not_found", f"job {job['id']} does not exist")
        if job.get("kind") == "dicom":
            # Ingest stored the parts; the DICOM context's account is the job's progress.
            account = await self.gateway.http.get(
                f"{self.settings.dicom_url}/internal/jobs/{job['id']}"
            )
            if account.status_code != 200:
                return self.gateway.relay(account)
            settled = account.json()
            job["progress"]["done"] = settled["done"]
            job["errors"] = settled["errors"]
            job["file_ids"] = settled["file_ids"]
            job["status"] = "done" if settled["done"] >= job["progress"]["total"] else "running"
            if job["status"] == "done":
                # Done means its series files are in the catalog: let it catch up (bounded).
                await self.gateway.catch_up("catalog", "dicom")
        job["files"] = await self.files_by_id(request, user, job.pop("file_ids", []))
        return JSON(job)

    async def audit(self, request: Request, user: dict[str, Any]) -> Response:
        """Events of every context, merged in time order; the cursor holds how far each
        context's store was read. Org admins see everything; a member asks about a
        subject they may see, or about their own actions."""
        if request.method != "GET":
            return error_response(405, "method_not_allowed", "the audit is read-only")
        query = request.query_params
        try:
            limit = int(query.get("limit", "100"))
            after = _audit_cursor(query.get("cursor"))
        except ValueError:
            return error_response(
                422, "invalid_cursor", "limit must be 1..1000 and cursor one we gave"
            )
        if not 1 <= limit <= 1000:
            return error_response(422, "invalid_limit", "limit must be between 1 and 1000")
        subjects = query.getlist("subject_id")
        if user["org_role"] != "admin":
            if not subjects and query.get("actor_id") != user["id"]:
                return error_response(
                    403,
                    "forbidden",
                    "the audit across subjects needs the organisation admin role: give a"
                    " subject_id you may see, or your own actor_id",
                    role_needed="org admin",
                )
            for subject in subjects:
                if not await self._may_see(request, user, subject):
                    return error_response(404, "not_found", f"subject {subject} does not exist")
        params = [
            (k, v)
            for k, v in query.multi_items()
            if k in ("subject_id", "actor_id", "type", "since", "until")
        ]
        answers = await asyncio.gather(
            *(
                self.gateway.http.get(
                    f"{url}/internal/audit",
                    params=[*params, ("after", str(after.get(name, 0))), ("limit", str(limit))],
                )
                for name, url in self.gateway.services.items()
            )
        )
        events: list[dict[str, Any]] = []
        exhausted = True
        for answer in answers:
            if answer.status_code != 200:
                return self.gateway.relay(answer)
            items = answer.json()["items"]
            exhausted = exhausted and len(items) < limit
            events += items
        events.sort(key=lambda e: (e["occurred_at"], e["source"], e["position"]))
        page = events[:limit]
        for event in page:
            after[event["source"]] = max(after.get(event["source"], 0), event["position"])
        more = not exhausted or len(events) > limit
        return JSON(
            {
                "items": [{k: v for k, v in e.items() if k not in ("position",)} for e in page],
                "next_cursor": _encode_audit_cursor(after) if more else None,
            }
        )

    async def _may_see(self, request: Request, user: dict[str, Any], subject: str) -> bool:
        if subject == user["id"]:
            return True
        try:
            uuid.UUID(subject)
        except ValueError:
            return False
        headers = self.gateway._headers(request, user)
        for url in (
            f"{self.settings.catalog_url}/internal/folders/{subject}",
            f"{self.settings.catalog_url}/internal/files/{subject}",
            f"{self.settings.datasets_url}/v1/datasets/{subject}",
        ):
            if (await self.gateway.http.get(url, headers=headers)).status_code == 200:
                return True
        return False

    async def thumbnail(self, request: Request, user: dict[str, Any], file_id: str) -> Response:
        """The file's picture: the catalog says whether the caller may see the file (404
        if not, as for its content), the thumbnails context serves it (or says why not)."""
        found = await self.gateway.http.get(
            f"{self.settings.catalog_url}/internal/files/{file_id}",
            headers=self.gateway._headers(request, user),
        )
        if found.status_code != 200:
            return self.gateway.relay(found)
        file = found.json()
        params = {
            "kind": file["kind"],
            "imported": "true" if (file.get("source") or {}).get("type") == "cloud" else "false",
        }
        if "size" in request.query_params:
            params["size"] = request.query_params["size"]
        headers = self.gateway._headers(request, user)
        if "if-none-match" in request.headers:
            headers["If-None-Match"] = request.headers["if-none-match"]
        answer = await self.gateway.http.get(
            f"{self.settings.thumbnails_url}/internal/thumbnails/{file_id}",
            params=params,
            headers=headers,
        )
        passed = ("content-type", "etag", "cache-control", "x-content-type-options", "retry-after")
        return Response(
            answer.content,
            answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k.lower() in passed},
        )

    async def content(self, request: Request, user: dict[str, Any]) -> Response:
        file_id = request.url.path.strip("/").split("/")[2]
        found = await self.gateway.http.get(
            f"{self.settings.catalog_url}/internal/files/{file_id}",
            headers=self.gateway._headers(request, user),
        )
        if found.status_code != 200:
            return self.gateway.relay(found)
        file = found.json()
        source = file.get("source") or {}
        if source.get("type") == "cloud":
            # Imported by reference: the bytes are in the customer's bucket. Ingest holds
            # the integration's credentials and answers a short-lived presigned URL.
            presigned = await self.gateway.http.get(
                f"{self.settings.ingest_url}/internal/integrations/{source.get('integration_id')}"
                "/presign",
                params={
                    "key": source.get("key", ""),
                    "name": file["name"],
                    "mime_type": file["mime_type"],
                },
            )
            if presigned.status_code != 200:
                return self.gateway.relay(presigned)
            return Response(
                status_code=307,
                headers={"Location": presigned.json()["url"], "Cache-Control": "no-store"},
            )
        upstream = self.gateway.http.build_request(
            "GET",
            f"{self.settings.ingest_url}/internal/blobs/{file['blob_key']}",
            headers={k: v for k, v in request.headers.items() if k.lower() == "range"},
        )
        answer = await self.gateway.http.send(upstream, stream=True)
        if answer.status_code not in (200, 206):
            await answer.aread()
            await answer.aclose()
            return self.gateway.relay(answer)
        headers = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() in ("content-length", "content-range", "accept-ranges")
        }
        quoted = urllib.parse.quote(file["name"])
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quoted}"
        headers["X-Content-Type-Options"] = "nosniff"
        return StreamingResponse(
            answer.aiter_raw(),
            answer.status_code,
            headers=headers,
            media_type=file["mime_type"],
            background=BackgroundTask(answer.aclose),
        )
