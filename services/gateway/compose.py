"""What the gateway does beyond forwarding: the rights it checks before a call (an
upload needs the editor role on its folder, which the catalog knows), and answers
that take parts from more than one context (a file with its datasets, a job with its
files, the audit of every store).

Each composer answers one or more routes of the table (services/gateway/routes.py,
`Route.compose` names it) and takes the matched `Call`: the route, its parsed
parameters, the caller. Every call to a service goes through `Gateway.call`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import time
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import httpx
import orjson
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from services.gateway import deadlines, dicomweb, sessions
from services.gateway.edge import (
    DOWNLOAD_RECHECK_S,
    RECHECK_WAIT_S,
    Call,
    Gateway,
    Unavailable,
    capped_body,
    error_response,
    json_body,
    json_of,
)
from services.gateway.routes import PARAMS
from shared.api.ingest import ReEncodeFiles
from shared.contracts import rules
from shared.kit import consistency, job_pages
from shared.kit.access import RANK, Access
from shared.kit.errors import Refused
from shared.kit.http import (
    JSON,
    RETRY_AFTER_S,
    StreamCut,
    error_body,
    file_ref,
    files_ref,
)
from shared.kit.identity import OPENER_HEADER
from shared.kit.logs import log

# The catalog registers a group's images all at once: a large group (10,000 frames)
# may take longer than one consistency budget. An image-group upload's budget is this
# many of them (still bounded), spent in as many waits before it answers 202.
GROUP_WAITS = 5
# DICOM jobs remembered as such (a few hundred bytes each).
DICOM_JOBS_KNOWN = 10_000
# A group's web rendition under way asks the catalog again whether its caller still sees
# the images this often (and at once after a change of access): a move of their folder
# (or of a folder above it) out of the caller's reach is no event a gateway follows. A
# catalog read per such download per 10 s; a role taken away is seen at its ACL event.
IMAGES_RECHECK_S = 10.0


def _audit_cursor(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as error:
        raise ValueError("not a cursor") from error
    if not isinstance(decoded, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in decoded.items()
    ):
        raise ValueError("not a cursor")
    return decoded


# A job's lists as the job's answer names them: (its items, count, cursor to the rest).
_LISTS: dict[job_pages.Listed, tuple[str, str, str]] = {
    "files": ("file_ids", "file_count", "next_files_cursor"),
    "errors": ("errors", "error_count", "next_errors_cursor"),
}


def _joined(job: dict[str, Any], listed: job_pages.Listed, account: dict[str, Any]) -> None:
    """The DICOM context's part of a job's list (its account's first page) after
    ingest's, in the job's answer: as much of it as the job's first page has room for,
    the count of both, and a cursor into the DICOM context's part for the rest."""
    items, count, cursor = _LISTS[listed]
    theirs = account["file_ids" if listed == "files" else "errors"]
    their_count = account["file_count" if listed == "files" else "error_count"]
    job[count] = job.get(count, len(job[items])) + their_count
    if job.get(cursor) is not None:
        return  # ingest's part fills the page: the DICOM context's comes later
    room = max(job_pages.PAGE - len(job[items]), 0)
    job[items] = job[items] + theirs[:room]
    job[cursor] = job_pages.encode(listed, job_pages.DICOM, room) if their_count > room else None


def _code(answer: httpx.Response) -> str | None:
    """The code of a service's error answer, if it is one."""
    try:
        code = answer.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def _bounded(job: dict[str, Any]) -> None:
    """A job whose lists are whole (a re-encode job's files are at most 1,000, the first
    page) answered with their counts and no cursors, as any other job is."""
    for listed in _LISTS:
        items, count, cursor = _LISTS[listed]
        job[count] = len(job.get(items, []))
        job[cursor] = None


def _encode_audit_cursor(after: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(after)).decode()


def _read_answered(service: str, answer: httpx.Response) -> httpx.Response:
    """A read of ours the service could not answer (its own `503`: it gave up at the
    deadline it was told, or its database is away) is the service unavailable, as
    when it is silent: never an answer with nothing in it (a file said not to exist)."""
    if answer.status_code != 503:
        return answer
    try:
        timed_out = json_of(answer)["error"]["details"]["cause"] == "timeout"
    except (ValueError, KeyError, TypeError):
        timed_out = False
    raise Unavailable(service, RuntimeError(f"answered 503: {answer.text[:300]}"), spent=timed_out)


def _is_editor(user: dict[str, Any], path: list[str]) -> bool:
    """Whether the caller's grants give them the editor role on a folder at `path`."""
    role = Access.decode(user["access"]).role_on(uuid.UUID(step) for step in path)
    return role is not None and RANK[role] >= RANK["editor"]


def _with_role(user: dict[str, Any], folder: dict[str, Any]) -> dict[str, Any]:
    """The caller with the role on a folder they just made that the catalog's answer
    names (`my_role`: a top-level folder's maker is its admin), before the ACL records
    it: only to undo that very folder, never to act in it."""
    access = Access.decode(user["access"])
    if folder.get("my_role") not in RANK:
        return user
    grants = {**access.grants, uuid.UUID(folder["id"]): folder["my_role"]}
    return {**user, "access": dataclasses.replace(access, grants=grants).encode()}


def images_unseen(file: dict[str, Any]) -> bool:
    """A sequence whose file moved on its own, away from its images: the catalog does not
    name them to a caller with no role where they are (`group.file_ids` empty), and its
    video would show them all. (Its content and thumbnail are its first image alone, the
    group file's own content, shown to whoever sees the file.)"""
    group = file.get("group") or {}
    return file["kind"] == "image_sequence" and bool(group.get("images")) and not group["file_ids"]


class Compose:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        # Jobs ingest said are DICOM ones (a kind never changes), most recent last: a
        # poll of one asks the DICOM context's account beside ingest's job.
        self._dicom_jobs: dict[str, None] = {}

    async def find_folder(self, call: Call, folder_id: str, needed: str = "user") -> httpx.Response:
        """Whether the caller has `needed` on the folder (else the catalog's 404/403)."""
        return await self.gateway.call(
            "catalog",
            "GET",
            f"/internal/folders/{folder_id}",
            call.request,
            call.user,
            params={"needed": needed},
        )

    @staticmethod
    def path_of(folder: httpx.Response) -> str:
        """The folder's path, as `find_folder` answered it, for the service that acts on
        it to decide the caller's role again (signed in the caller's identity token:
        `shared/kit/http.py` folder_path)."""
        return ",".join(folder.json()["path"])

    async def files_by_id(self, call: Call, ids: list[str]) -> list[dict[str, Any]]:
        """The files the caller may see, in the order asked; [] if the catalog fails."""
        if not ids:
            return []
        found = _read_answered(
            "catalog",
            await self.gateway.call(
                "catalog",
                "POST",
                "/internal/files",
                call.request,
                call.user,
                json={"ids": ids},
            ),
        )
        by_id = {f["id"]: f for f in json_of(found)["items"]} if found.status_code == 200 else {}
        return [by_id[i] for i in ids if i in by_id]

    async def files_caught_up(
        self, call: Call, ids: list[str], token: dict[str, int]
    ) -> list[dict[str, Any]]:
        """The files the caller may see, in the order asked, read once the catalog has
        applied `token` (within the request's budget): the wait and the read in one
        call. As files_by_id, [] if the catalog refuses; unlike an upload's answer
        (`registered`), an unavailable catalog is the caller's 503: a job said to be
        done with none of its files would be taken at its word."""
        if not token:
            return await self.files_by_id(call, ids)
        if not ids:
            await self.gateway.catch_up_to(call.request, "catalog", token)
            return []
        found = await self._read_caught_up(call, ids, token)
        by_id = {f["id"]: f for f in json_of(found)["items"]} if found.status_code == 200 else {}
        return [by_id[i] for i in ids if i in by_id]

    async def _read_caught_up(
        self, call: Call, ids: list[str], token: dict[str, int]
    ) -> httpx.Response:
        """The catalog's read of these files once it has applied `token`, within the
        request's budget: the wait and the read in one call."""
        left = self.gateway.budget(call.request)
        answer = await self.gateway.call(
            "catalog",
            "POST",
            "/internal/files",
            call.request,
            call.user,
            # The catalog waits 30 s at most (its route's bound), as for a round.
            params={"token": consistency.encode(token), "timeout": f"{min(left, 30):.3f}"},
            json={"ids": ids},
            timeout=left + 5.0,
        )
        return _read_answered("catalog", answer)

    async def registered(
        self, call: Call, ids: list[str], token: dict[str, int]
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The files the caller may see, in the order asked, read once the catalog has
        applied `token` (within the request's budget); and the token grown by the
        catalog's position. None of them if the catalog fails: the write stands."""
        if not ids:
            return [], token
        try:
            found = await self._read_caught_up(call, ids, token)
        except Unavailable:
            log.warning("gateway.upload_read_failed")
            return [], token
        if found.status_code != 200:
            log.warning("gateway.upload_read_refused", status=found.status_code)
            return [], token
        try:
            read = consistency.decode(found.headers.get(consistency.HEADER, ""))
        except ValueError:
            read = {}
        by_id = {f["id"]: f for f in json_of(found)["items"]}
        return [by_id[i] for i in ids if i in by_id], consistency.merge(token, read)

    # -- the web app's sessions (services/gateway/sessions.py) ------------------------

    async def sign_in(self, call: Call) -> Response:
        return await sessions.sign_in(self.gateway, call)

    async def sign_out(self, call: Call) -> Response:
        return await sessions.sign_out(self.gateway, call)

    # -- catalog ---------------------------------------------------------------------

    async def create_folder(self, call: Call) -> Response:
        try:
            asked = orjson.loads(await capped_body(call.request))
        except orjson.JSONDecodeError:
            asked = None
        if isinstance(asked, dict) and asked.get("cloud_sync") is not None:
            return await self._create_synced_folder(call, asked)
        answer = await self.gateway.forward(call)
        return await self._folder_made(call, answer)

    async def _folder_made(self, call: Call, answer: httpx.Response, body: Any = None) -> Response:
        if answer.status_code != 201 or answer.json().get("parent_id") is not None:
            return self.gateway.relay(answer, body=body)
        # The creator becomes the folder's admin in the ACL context, by reaction:
        # wait for it, so their next request finds the folder theirs.
        token = await self.gateway.wait_for(
            call.request, consistency.decode(answer.headers.get(consistency.HEADER, "")), rounds=2
        )
        self.gateway.forget_callers()
        return self.gateway.relay(answer, token, body=body)

    async def _create_synced_folder(self, call: Call, asked: dict[str, Any]) -> Response:
        """A folder that mirrors a bucket prefix: ingest says whether the caller may use
        the integration, the catalog makes the folder (its own rights), then ingest
        records what it follows and starts its first sync, deciding itself that the
        caller is an editor of the folder, from the folder's path signed with the
        caller's grants (as for every folder route of ingest)."""
        cloud_sync = asked.pop("cloud_sync")
        checked = await self.gateway.call(
            "ingest",
            "POST",
            "/internal/cloud-sync/check",
            call.request,
            call.user,
            json=cloud_sync,
        )
        if checked.status_code != 200:
            return self.gateway.relay(checked)
        made = await self.gateway.call(
            "catalog", "POST", "/v1/folders", call.request, call.user, json=asked
        )
        if made.status_code != 201:
            return self.gateway.relay(made)
        folder = made.json()
        # The answer's path: {id, name} steps from the first folder the caller may see
        # (no folder above it grants them anything: the role decided on it is theirs).
        path = [str(step["id"]) for step in folder["path"]]
        user = await self._editor_of_made(call, made, path)
        if user is None:
            # Not half made: undone as its maker (the catalog answered their role on it,
            # which the ACL has not recorded yet), and the caller may simply try again.
            assert call.user is not None
            await self._unmake(call, folder, _with_role(call.user, folder))
            log.warning("gateway.synced_folder_grant_late", folder_id=folder["id"])
            refused = error_response(
                503,
                "unavailable",
                "the access service did not make you the new folder's admin in time, so"
                " the folder was not kept (it went to the Trash); try again shortly",
                service="acl",
                retry=True,
            )
            refused.headers["Retry-After"] = RETRY_AFTER_S
            return refused
        synced = await self.gateway.call(
            "ingest",
            "POST",
            f"/internal/folders/{folder['id']}/cloud-sync",
            call.request,
            user,
            json=cloud_sync,
            folder_path=",".join(path),
        )
        if synced.status_code != 201:
            # Not half made: the folder that would not follow its prefix goes again.
            await self._unmake(call, folder, user)
            return self.gateway.relay(synced)
        following = synced.json()
        # Read-your-writes: the catalog refuses folders made and moves into a synced
        # folder once it has ingest's FolderSyncConfigured; the next request of anyone
        # is refused already (bounded by the request's budget).
        await self.gateway.catch_up(call.request, "catalog", "ingest")
        body = {**folder, "cloud_sync": following["cloud_sync"], "sync_job_id": following["job_id"]}
        return await self._folder_made(call, made, body)

    async def _editor_of_made(
        self, call: Call, made: httpx.Response, path: list[str]
    ) -> dict[str, Any] | None:
        """The caller, with grants that give them the editor role on the folder just made
        (at `path`), or None if the ACL does not give it within the request's budget.

        A subfolder's maker has it already (the catalog asked editor on the parent, and
        the path holds the parent), as an org admin has it everywhere: no wait. A
        top-level folder's maker becomes its admin in the ACL context, by reaction: the
        catalog's token waited for (the ACL applies it with the grant, in one
        transaction), then the caller asked of the ACL afresh (the cached one predates
        the grant)."""
        assert call.user is not None
        if _is_editor(call.user, path):
            return call.user
        await self.gateway.wait_for(
            call.request, consistency.decode(made.headers.get(consistency.HEADER, "")), rounds=1
        )
        self.gateway.forget_callers()
        try:
            fresh = await self.gateway.authenticate(call.request)
        except (Refused, Unavailable):
            log.warning("gateway.caller_not_found_again", exc_info=True)
            return None
        return fresh if fresh is not None and _is_editor(fresh, path) else None

    async def _unmake(self, call: Call, folder: dict[str, Any], user: dict[str, Any]) -> None:
        """The folder just made goes again (to the trash, as any delete of the caller's)."""
        with contextlib.suppress(Unavailable):
            gone = await self.gateway.call(
                "catalog", "DELETE", f"/v1/folders/{folder['id']}", call.request, user
            )
            if gone.status_code != 204:
                log.warning(
                    "gateway.folder_not_unmade", folder_id=folder["id"], status=gone.status_code
                )

    async def sync_folder(self, call: Call) -> Response:
        # A sync adds files as an import does: the editor role on the folder.
        folder = await self.find_folder(call, call.values["folder_id"], "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        return self.gateway.relay(
            await self.gateway.forward(call, folder_path=self.path_of(folder))
        )

    async def sync_state(self, call: Call) -> Response:
        # Any role on the folder: its page says what it follows, and why nothing is added.
        folder = await self.find_folder(call, call.values["folder_id"])
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        return self.gateway.relay(
            await self.gateway.forward(call, folder_path=self.path_of(folder))
        )

    async def integration_events(self, call: Call) -> Response:
        """A bucket's notification: its token (never an API key) goes to ingest, which
        checks it; Bearer, MinIO's raw auth_token, or HTTP Basic's password."""
        given = call.request.headers.get("authorization", "")
        scheme, _, rest = given.partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip()
        elif scheme.lower() == "basic":
            try:
                token = base64.b64decode(rest.strip()).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                token = ""
        else:
            token = given.strip()
        headers = {"X-Files-Events-Token": token} if token and len(token) <= 200 else {}
        return self.gateway.relay(await self.gateway.forward(call, headers=headers))

    async def file_with_datasets(self, call: Call) -> Response:
        answer = await self.gateway.forward(call)
        if answer.status_code != 200:
            return self.gateway.relay(answer)
        file = answer.json()
        path = f"/v1/files/{call.values['file_id']}/datasets"
        linked = await self.gateway.call("datasets", "GET", path, call.request, call.user)
        file["datasets"] = linked.json()["items"] if linked.status_code == 200 else []
        # One the caller would be refused (`_rendition`) is not offered.
        unseen = images_unseen(file)
        file["renditions"] = [] if unseen else await self.renditions_of(call, file["id"])
        return self.gateway.relay(answer, body=file)

    async def renditions_of(self, call: Call, file_id: str) -> list[str]:
        """The renditions made of the file (`web`), as the thumbnails context has them."""
        try:
            made = await self.gateway.call(
                "thumbnails", "POST", "/internal/renditions", call.request, json={"ids": [file_id]}
            )
        except Unavailable:
            return []
        return ["web"] if made.status_code == 200 and made.json()["made"] else []

    async def re_encode(self, call: Call) -> Response:
        """Web renditions of these files: the catalog says which the caller may see (404
        naming the others) and whether they edit each one's folder (403 naming those they
        do not); only videos and image sequences (422 naming the others). The thumbnails
        context records the job and makes them; 202 with the job's id."""
        try:
            asked = ReEncodeFiles.model_validate_json(await capped_body(call.request))
        except ValidationError as error:
            return error_response(
                422,
                "invalid_request",
                "the body must be {file_ids: [1 to 1,000 file ids]}",
                errors=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()][:20],
            )
        ids = [str(i) for i in dict.fromkeys(asked.file_ids)]
        files = await self.files_by_id(call, ids)
        if missing := sorted(set(ids) - {f["id"] for f in files}):
            return error_response(
                404,
                "not_found",
                f"these files do not exist: {', '.join(missing[:20])}",
                missing_files=missing,
            )
        # The editor role on each distinct folder, asked 16 at a time.
        folders = sorted({f["folder_id"] for f in files})
        limit = asyncio.Semaphore(16)

        async def editor_on(folder_id: str) -> httpx.Response:
            async with limit:
                return await self.find_folder(call, folder_id, "editor")

        answers = await asyncio.gather(*(editor_on(f) for f in folders))
        weak: list[str] = []
        for folder_id, editor in zip(folders, answers, strict=True):
            if editor.status_code == 403:
                weak += [f["id"] for f in files if f["folder_id"] == folder_id]
            elif editor.status_code != 200:
                return self.gateway.relay(editor)
        if weak:
            return error_response(
                403,
                "forbidden",
                f"these files need the editor role on their folder: {', '.join(sorted(weak)[:20])}",
                role_needed="editor",
                forbidden_files=sorted(weak),
            )
        others = [f for f in files if f["kind"] not in ("video", "image_sequence")]
        if others:
            named = ", ".join(f"{f['id']} ({f['kind']})" for f in others[:20])
            return error_response(
                422,
                "not_re_encoded",
                f"only videos and image sequences are re-encoded, not: {named}",
                not_re_encoded=[f["id"] for f in others],
            )
        unseen = [f["id"] for f in files if images_unseen(f)]
        if unseen:
            return error_response(
                403,
                "forbidden",
                "these image sequences' images are in folders you have no role on:"
                f" {', '.join(unseen[:20])}",
                role_needed="user",
                forbidden_files=unseen,
            )
        # What the thumbnails context knows of each file's content comes from the catalog.
        await self.gateway.catch_up(call.request, "thumbnails", "catalog")
        body = {
            "files": [
                {
                    "id": f["id"],
                    "kind": f["kind"],
                    "members": (f.get("group") or {}).get("file_ids", []),
                }
                for f in files
            ]
        }
        answer = await self.gateway.call(
            "thumbnails",
            "POST",
            "/internal/re-encode",
            call.request,
            call.user,
            json=body,
            object_ref=files_ref(f["id"] for f in files),
        )
        return self.gateway.relay(answer)

    async def with_dataset_impact(self, call: Call) -> Response:
        """A move or delete; a dry run also says which datasets would lose links: those
        the caller may see by name, the others as a count (`hidden_datasets`)."""
        answer = await self.gateway.forward(call)
        if answer.status_code != 200:
            return self.gateway.relay(answer)
        result = answer.json()
        if not result.get("dry_run"):
            return self.gateway.relay(answer)
        asked = orjson.loads(await call.request.body())
        await self.gateway.catch_up(call.request, "datasets", "catalog")
        moving = call.route.template == "/v1/move"
        impact = await self.gateway.call(
            "datasets",
            "POST",
            "/internal/impact",
            call.request,
            call.user,
            json={
                "file_ids": asked.get("file_ids", []),
                "folder_ids": asked.get("folder_ids", []),
                "target_folder_id": asked.get("target_folder_id") if moving else None,
            },
        )
        found = impact.json() if impact.status_code == 200 else {}
        result["datasets"] = found.get("datasets", [])
        result["hidden_datasets"] = found.get("hidden_datasets", 0)
        return self.gateway.relay(answer, body=result)

    async def content(self, call: Call) -> Response:
        request = call.request
        found = await self.gateway.call(
            "catalog", "GET", f"/internal/files/{call.values['file_id']}", request, call.user
        )
        if found.status_code != 200:
            return self.gateway.relay(found)
        file = found.json()
        if file.get("tombstone"):
            return error_response(
                410,
                "object_gone",
                f"file {file['id']}'s object is gone from its bucket (a tombstone); it comes"
                " back if the object does",
                file_id=file["id"],
            )
        source = file.get("source") or {}
        rendition = dict(call.query()).get("rendition")
        if rendition is not None:
            return await self._rendition(call, file, rendition)
        if source.get("type") == "cloud":
            # Imported by reference: the bytes are in the customer's bucket. Ingest holds
            # the integration's credentials and answers a short-lived presigned URL.
            # The object is signed with the folder's path: ingest presigns that one only.
            integration = urllib.parse.quote(str(source.get("integration_id")), safe="")
            presigned = await self.gateway.call(
                "ingest",
                "GET",
                f"/internal/integrations/{integration}/presign",
                request,
                call.user,
                folder_path=",".join(file.get("folder_path") or ()),
                object_ref=f"{source.get('integration_id')}:{source.get('key', '')}",
                params={
                    "key": source.get("key", ""),
                    "name": download_name(file),
                    "mime_type": file["mime_type"],
                },
            )
            if presigned.status_code != 200:
                return self.gateway.relay(presigned)
            return Response(
                status_code=307,
                headers={"Location": presigned.json()["url"], "Cache-Control": "no-store"},
            )
        return await self._blob(
            call, file, file["blob_key"], download_name(file), file["mime_type"]
        )

    async def _rendition(self, call: Call, file: dict[str, Any], rendition: str) -> Response:
        """A rendition of the file the caller may see (the thumbnails context made it, or
        says why there is none), served as its content is: by range."""
        if rendition != "web":
            return error_response(
                422,
                "unknown_rendition",
                f"no rendition {rendition!r}: `web` is the one made",
                rendition=rendition,
            )
        if images_unseen(file):
            return error_response(
                403,
                "forbidden",
                f"image sequence {file['id']}'s images are in a folder you have no role on:"
                " its video would show them",
                role_needed="user",
                forbidden_files=[file["id"]],
            )
        path, ref = self.signed_file(file)
        made = await self.gateway.call(
            "thumbnails",
            "GET",
            f"/internal/renditions/{file['id']}",
            call.request,
            call.user,
            folder_path=path,
            object_ref=ref,
        )
        if made.status_code != 200:
            return self.gateway.relay(made)
        stem = file["name"].rsplit(".", 1)[0] or "video"
        return await self._blob(
            call,
            file,
            made.json()["blob_key"],
            f"{stem}.web.mp4",
            "video/mp4",
            # A group's video shows its images: seeing the group's file is not enough.
            shows_images=bool((file.get("group") or {}).get("images")),
        )

    async def _images_still_seen(
        self, body: AsyncIterator[bytes], answer: httpx.Response, call: Call, file_id: str
    ) -> AsyncIterator[bytes]:
        """A group's web rendition as it is sent (`body`, already cut if the caller's key
        or role on the group file's folder goes), cut short too once the caller no longer
        sees its images: the catalog is asked again, with the caller's access as it is
        now, at once after a change of access and every IMAGES_RECHECK_S (their folder
        may have moved). Only a definite answer cuts, as `while_allowed`'s."""
        gateway = self.gateway
        changes = getattr(call.request.state, "access_changes", gateway.access_changes)
        due = time.monotonic() + IMAGES_RECHECK_S
        # Every event of the access topic is a change (anyone's sign-in too): the catalog
        # is asked on one only if the caller's own access differs from the last asked
        # with (a move is the timer's to see).
        asked_with = (call.user or {}).get("access")
        # Closed with this one: the rechecks' pause of the request's budget ends with it.
        async with contextlib.aclosing(cast(AsyncGenerator[bytes, None], body)):
            async for chunk in body:
                if gateway.access_changes != changes or time.monotonic() >= due:
                    changes = gateway.access_changes
                    timed = time.monotonic() >= due
                    answered, gone, asked_with = await self._images_gone(
                        call, file_id, None if timed else asked_with
                    )
                    # Unanswered, asked again sooner: the change may have been a refusal.
                    due = time.monotonic() + (IMAGES_RECHECK_S if answered else DOWNLOAD_RECHECK_S)
                    if gone is not None:
                        log.warning("rendition.images_gone", path=call.request.url.path)
                        await answer.aclose()
                        raise StreamCut(gone)
                yield chunk

    async def _images_gone(
        self, call: Call, file_id: str, unless_access: Any = None
    ) -> tuple[bool, Refused | None, Any]:
        """Whether the access service and the catalog answered, why the caller may no
        longer see the group's images (for the answer cut short) or None if they may (or
        if no answer said they may not), and the caller's access asked with. The catalog
        is not asked if the caller's access is still `unless_access`."""
        try:
            async with asyncio.timeout(RECHECK_WAIT_S):
                now = await self.gateway.authenticate(call.request)
                if now is None or now.get("id") != (call.user or {}).get("id"):
                    return True, None, unless_access  # the key went: `while_allowed` cuts
                if unless_access is not None and now.get("access") == unless_access:
                    return True, None, unless_access
                found = await self.gateway.call(
                    "catalog",
                    "GET",
                    f"/internal/files/{file_id}",
                    call.request,
                    now,
                    # The budget is paused while the body is sent: told the recheck's own.
                    headers={deadlines.HEADER: deadlines.told(RECHECK_WAIT_S)},
                )
                seen = found.status_code == 200 and not images_unseen(found.json())
        except (Unavailable, Refused, TimeoutError, ValueError):
            # ValueError: a 200 that is no JSON is no answer either.
            log.warning("rendition.recheck_unanswered", path=call.request.url.path)
            return False, None, unless_access
        if seen:
            return True, None, now.get("access")
        if found.status_code not in (200, 403, 404):
            log.warning("rendition.recheck_unanswered", path=call.request.url.path)
            return False, None, unless_access
        return (
            True,
            Refused(
                403,
                "forbidden",
                f"image sequence {file_id} or its images went out of your sight (moved from the"
                " folders you have a role on, or deleted) while its video was sent: it was cut"
                " short",
                {"role_needed": "user", "forbidden_files": [file_id]},
            ),
            unless_access,
        )

    async def _blob(
        self,
        call: Call,
        file: dict[str, Any],
        key: str,
        name: str,
        mime_type: str,
        *,
        shows_images: bool = False,
    ) -> Response:
        """The blob of `file` (its content, or a rendition of it), streamed from ingest by
        range, and cut short if the caller's right to the file's folder goes meanwhile
        (`shows_images`: or their sight of its group's images)."""
        request = call.request
        self.gateway.take_transfer(call)
        answer = await self.gateway.call(
            "ingest",
            "GET",
            f"/internal/blobs/{urllib.parse.quote(key, safe='/')}",
            request,
            headers={k: v for k, v in request.headers.items() if k.lower() == "range"},
            stream=True,
        )
        if answer.status_code not in (200, 206):
            await answer.aread()
            await answer.aclose()
            return self.gateway.relay(answer)
        headers = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() in ("content-length", "content-range", "accept-ranges")
        }
        headers["Content-Disposition"] = content_disposition(name)
        headers["X-Content-Type-Options"] = "nosniff"
        body = self.gateway.while_allowed(answer, call, ",".join(file.get("folder_path") or ()))
        if shows_images:
            body = self._images_still_seen(body, answer, call, file["id"])
        return StreamingResponse(
            body,
            answer.status_code,
            headers=headers,
            media_type=mime_type,
            background=BackgroundTask(answer.aclose),
        )

    # -- collaborators (acl) ---------------------------------------------------------

    async def collaborators(self, call: Call) -> Response:
        # The ACL context holds the grants, the catalog the folder's place in the tree.
        folder = await self.find_folder(call, call.values["folder_id"])
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        return self.gateway.relay(
            await self.gateway.forward(call, folder_path=self.path_of(folder))
        )

    # -- uploads, sessions, imports (ingest) -----------------------------------------

    async def _stored(
        self, call: Call, *, wait: bool = True
    ) -> Response | tuple[httpx.Response, dict[str, int]]:
        """An upload into a folder: the editor role checked, the body streamed to ingest,
        and (`wait`) the catalog caught up with it (read-your-writes: the folder lists
        what was stored once this answers). The refusal to relay, or ingest's answer and
        the token."""
        folder = await self.find_folder(call, call.values["folder_id"], "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        await self.after_callers_writes(call)
        answer = await self.gateway.forward(
            call, stream_body=True, folder_path=self.path_of(folder)
        )
        if answer.status_code != 201:
            return self.gateway.relay(answer)
        token = consistency.decode(answer.headers.get(consistency.HEADER, ""))
        if wait:
            token = await self.gateway.wait_for(call.request, token, rounds=1)
        return answer, token

    async def _folder_gone(self, call: Call, folder_id: str) -> bool:
        """Whether the catalog says the folder is gone; not if it cannot say (a write
        made is then answered as made, not with the catalog's 503)."""
        try:
            return (await self.find_folder(call, folder_id)).status_code == 404
        except Unavailable:
            log.warning("gateway.folder_check_failed", folder_id=folder_id)
            return False

    async def _listed(self, call: Call, ids: list[str]) -> list[dict[str, Any]]:
        """As files_by_id, after a write was made: a catalog that cannot answer has not
        listed them yet (the write's own answer follows), as for `registered`."""
        try:
            return await self.files_by_id(call, ids)
        except Unavailable:
            log.warning("gateway.written_read_failed")
            return []

    async def upload(self, call: Call) -> Response:
        # Only the catalog's reaction to the stored files is in the answer: it waits for
        # them and reads them in one call, rather than a round asking every consumer of
        # ingest's store first (the token in the answer still names ingest's position:
        # a caller's next request waits for them all).
        stored = await self._stored(call, wait=False)
        if isinstance(stored, Response):
            return stored
        answer, token = stored
        folder_id = call.values["folder_id"]
        # The answer shows the files as the catalog registered them.
        uploaded = json_of(answer)
        ids = [f["id"] for f in uploaded["files"]]
        files, token = await self.registered(call, ids, token)
        if len(files) < len(ids) and await self._folder_gone(call, folder_id):
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

    async def upload_image_group(self, call: Call) -> Response:
        self.gateway.widen_budget(call.request, GROUP_WAITS)
        received = await self._stored(call)
        if isinstance(received, Response):
            return received
        answer, token = received
        folder_id = call.values["folder_id"]
        # Answered with the group's file and folder as the catalog has them.
        stored = answer.json()
        files = await self._listed(call, [stored["file_id"]])
        for _ in range(GROUP_WAITS):
            if files:
                break
            token = await self.gateway.wait_for(call.request, token, rounds=1)
            files = await self._listed(call, [stored["file_id"]])
        made = None
        if files:
            try:
                made = await self.gateway.call(
                    "catalog", "GET", f"/v1/folders/{stored['folder_id']}", call.request, call.user
                )
            except Unavailable:
                log.warning("gateway.written_read_failed")
        if made is None or made.status_code != 200:
            if await self._folder_gone(call, folder_id):
                return error_response(
                    409,
                    "folder_deleted",
                    f"folder {folder_id} was deleted while the image group was stored",
                    folder_id=folder_id,
                    job_id=stored["job_id"],
                )
            # Stored (a retry would store it twice), not yet listed within the budget:
            # accepted, and its job follows it.
            return JSON(
                {k: stored[k] for k in ("job_id", "file_id", "folder_id")},
                202,
                headers={consistency.HEADER: consistency.encode(token)},
            )
        body = {"file": files[0], "folder": made.json()}
        return JSON(body, 201, headers={consistency.HEADER: consistency.encode(token)})

    async def upload_dicom(self, call: Call) -> Response:
        # 202 once every part is stored: the DICOM context reads and assembles them after,
        # and the job (GET /v1/jobs/{id}) shows its progress, series files and errors.
        folder = await self.find_folder(call, call.values["folder_id"], "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        # The DICOM context follows series files in the catalog (moved, deleted): let it
        # catch up first, so these instances join the series as the caller sees them now.
        await self.gateway.catch_up(call.request, "dicom", "catalog")
        return self.gateway.relay(
            await self.gateway.forward(call, stream_body=True, folder_path=self.path_of(folder))
        )

    async def import_objects(self, call: Call) -> Response:
        # Imports by reference add files as uploads do: the editor role on the folder.
        # 202 once the job is recorded; GET /v1/jobs/{id} follows it.
        folder = await self.find_folder(call, call.values["folder_id"], "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        await self.after_callers_writes(call)
        return self.gateway.relay(
            await self.gateway.forward(call, folder_path=self.path_of(folder))
        )

    async def after_callers_writes(self, call: Call) -> None:
        """An upload, import or upload session checks the metadata it carries against
        ingest's mirror of the catalog's schema: when the caller sends a token, ingest
        first applies the catalog's events up to it (a schema they just set), within the
        budget. Only that: a client sends its token with every call, and uploads must
        not wait for every service. A token that cannot be read is left to the write
        (as before)."""
        try:
            wanted = consistency.decode(call.request.headers.get(consistency.HEADER, ""))
        except ValueError:
            return
        if "catalog" not in wanted:
            return
        left = self.gateway.budget(call.request)
        try:
            await self.gateway.call(
                "ingest",
                "GET",
                "/internal/consistency",
                call.request,
                params={
                    "token": consistency.encode({"catalog": wanted["catalog"]}),
                    "timeout": f"{left:.3f}",
                },
                timeout=left + 5.0,
            )
        except Unavailable:
            log.warning("gateway.schema_wait_failed")

    def with_part_urls(self, call: Call, session: dict[str, Any]) -> dict[str, Any]:
        """Our own part URLs (the local store) are relative: made absolute here, with
        the address the client used."""
        base = str(call.request.base_url).rstrip("/")
        for part in session.get("parts", []):
            # No URL for a caller other than the session's opener.
            if part.get("url", "").startswith("/"):
                part["url"] = base + part["url"]
        return session

    async def open_upload_session(self, call: Call) -> Response:
        # A session adds a file as an upload does: the editor role on the folder.
        folder = await self.find_folder(call, call.values["folder_id"], "editor")
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        # Its metadata is checked against the schema as an upload's is.
        await self.after_callers_writes(call)
        answer = await self.gateway.forward(call, folder_path=self.path_of(folder))
        if answer.status_code != 201:
            return self.gateway.relay(answer)
        return self.gateway.relay(answer, body=self.with_part_urls(call, answer.json()))

    async def upload_session(self, call: Call) -> Response:
        """A session is the business of those who may upload into its folder. Its folder
        is found first (where ingest recorded it was opened), so that every call to
        ingest about it carries the folder's path and ingest decides the role too."""
        session_id = call.values["session_id"]
        opened = await self.gateway.call(
            "ingest", "GET", f"/internal/uploads/{session_id}/opener", call.request
        )
        if opened.status_code != 200:
            return self.gateway.relay(opened)
        where = opened.json()
        folder = await self.find_folder(call, where["folder_id"], "editor")
        if folder.status_code != 200:
            # Not theirs to see: as if there were no such session.
            return error_response(404, "not_found", f"upload session {session_id} does not exist")
        if call.request.method == "GET":
            found = await self.gateway.forward(call, folder_path=self.path_of(folder))
            if found.status_code != 200:
                return self.gateway.relay(found)
            return self.gateway.relay(found, body=self.with_part_urls(call, found.json()))
        headers = None
        if call.request.method == "POST":
            found = await self.gateway.call(
                "ingest",
                "GET",
                f"/v1/uploads/{session_id}",
                call.request,
                call.user,
                folder_path=self.path_of(folder),
            )
            if found.status_code != 200:
                return self.gateway.relay(found)
            if found.json().get("metadata"):
                # Its metadata is checked again, against the schema as the caller last set it.
                await self.after_callers_writes(call)
            # Completing: ingest checks the opener's right too (their key, their role).
            opener, path = await self.session_opener(call, where)
            if opener is not None:
                signed = self.gateway.identity.sign(
                    opener["id"],
                    opener["access"],
                    call.request.state.correlation_id,
                    audience="ingest",
                    folder_path=path,
                    key_id=opener.get("key_id"),
                )
                headers = {OPENER_HEADER: signed}
        # Completing may copy the file within the store (a server-side copy of a large
        # one takes minutes): bounded by its silence, as before, not the request's budget.
        completing = call.request.method == "POST"
        with deadlines.paused(call.request) if completing else contextlib.nullcontext():
            answer = await self.gateway.forward(
                call, folder_path=self.path_of(folder), headers=headers
            )
        if call.request.method != "POST" or answer.status_code != 201:
            return self.gateway.relay(answer)
        # Completed: answer with the file as the catalog registered it, as an upload does.
        token = await self.gateway.wait_for(
            call.request, consistency.decode(answer.headers.get(consistency.HEADER, "")), rounds=1
        )
        completed = answer.json()
        registered = await self._listed(call, [completed["file_id"]])
        if not registered:
            if await self._folder_gone(call, where["folder_id"]):
                return error_response(
                    409,
                    "folder_deleted",
                    f"folder {where['folder_id']} was deleted while the file was completed",
                    folder_id=where["folder_id"],
                    job_id=completed["job_id"],
                )
            # Completed (its session has ended), not yet listed within the budget, or
            # the catalog did not answer: accepted, as an image group is, with the
            # token to read the file with.
            return JSON(
                {k: completed[k] for k in ("job_id", "file_id")},
                202,
                headers={consistency.HEADER: consistency.encode(token)},
            )
        body = {"job_id": completed["job_id"], "file": registered[0]}
        return JSON(body, 201, headers={consistency.HEADER: consistency.encode(token)})

    async def upload_part(self, call: Call) -> Response:
        """A part of an upload session, sent to the URL the session gave: its signature
        is the right (as a presigned S3 URL's is), not an API key. Checked here first, a
        forged or expired one refused before anything is read or sent on, and counted in
        its opener's cap (`Gateway.part_caller`); ingest checks it again, and that the
        session's opener keeps their right, asking the ACL context and the catalog
        itself (it has the session's key and folder at hand: asked from here, that was a
        third call a part, to ingest for them). Sent as no one's."""
        return self.gateway.relay(
            await self.gateway.forward(dataclasses.replace(call, user=None), stream_body=True)
        )

    async def session_opener(
        self, call: Call, opened: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The user who opened an upload session (`opened`: ingest's record of who, with
        which key, where), as the ACL context has them now, if the key they opened it
        with is still valid; and the session's folder path if they may still upload
        there (the editor role). (None, None) for a revoked key or a session opened
        before keys were recorded."""
        if opened.get("key_id") is None:
            return None, None
        answer = await self.gateway.call(
            "acl",
            "POST",
            "/internal/authenticate",
            call.request,
            json={"key_id": opened["key_id"]},
        )
        if answer.status_code >= 500:
            raise Refused(503, "unavailable", "the access service did not answer; try again")
        if answer.status_code != 200 or answer.json()["id"] != opened["created_by"]:
            return None, None
        opener: dict[str, Any] = answer.json()
        folder = await self.gateway.call(
            "catalog",
            "GET",
            f"/internal/folders/{opened['folder_id']}",
            call.request,
            opener,
            params={"needed": "editor"},
        )
        return opener, self.path_of(folder) if folder.status_code == 200 else None

    async def job_path(
        self, call: Call, answer: httpx.Response, needed: str = "user"
    ) -> Response | str | None:
        """Ingest was asked about a job as for its maker, with no folder path (its maker
        needs none: one round trip, no look-up). None if that was its answer; for anyone
        else (409 `folder_path_needed`, naming the job's folder) the folder's path if they
        have `needed` there (signed for ingest, which decides again), else a refusal: 404
        as for no such job if they do not see the folder, the catalog's 403 if they see
        it without `needed`."""
        if answer.status_code != 409 or _code(answer) != "folder_path_needed":
            return None
        folder_id = answer.json()["error"]["details"]["folder_id"]
        folder = await self.find_folder(call, folder_id, needed)
        if folder.status_code == 404:
            # Word for word ingest's for a job it does not have: existence does not leak.
            job_id = call.values["job_id"]
            return error_response(404, "not_found", f"job {job_id} does not exist", id=job_id)
        if folder.status_code != 200:
            return self.gateway.relay(folder)
        return self.path_of(folder)

    async def job_with_files(self, call: Call) -> Response:
        """A job, polled by its maker's client as it runs: ingest is asked as for its
        maker first, with no owner look-up nor folder path (it decides; for anyone else
        it names the folder, whose path is then found and signed, and it decides again).
        A known DICOM job's account is asked beside it: it is used only once ingest has
        granted the caller the job."""
        job_id = call.values["job_id"]
        account: asyncio.Future[httpx.Response] | None = None
        if job_id in self._dicom_jobs:
            account = asyncio.ensure_future(self._dicom_account(call, job_id))
        try:
            answer = await self.gateway.forward(call)
            if answer.status_code == 404:
                # Not ingest's: a re-encode job (the thumbnails context's), to its maker.
                return await self.re_encode_job(call, answer)
            path = await self.job_path(call, answer)
            if isinstance(path, Response):
                return path
            if path is not None:
                answer = await self.gateway.forward(call, folder_path=path)
            if answer.status_code != 200:
                return self.gateway.relay(answer)
            job = answer.json()
            if job.get("kind") == "dicom":
                self._dicom_jobs[job_id] = None
                if len(self._dicom_jobs) > DICOM_JOBS_KNOWN:
                    del self._dicom_jobs[next(iter(self._dicom_jobs))]
            return await self._job(call, job, account)
        finally:
            if account is not None and not account.done():
                account.cancel()
            elif account is not None and not account.cancelled():
                account.exception()  # unused (ingest refused): not logged as unretrieved

    async def _dicom_account(self, call: Call, job_id: str) -> httpx.Response:
        return await self.gateway.call("dicom", "GET", f"/internal/jobs/{job_id}", call.request)

    async def _re_encode_account(self, call: Call) -> httpx.Response:
        """The thumbnails context's account of a re-encode job (a job ingest does not
        know), asked as the caller: it answers its maker only."""
        return await self.gateway.call(
            "thumbnails",
            "GET",
            f"/internal/reencode-jobs/{call.values['job_id']}",
            call.request,
            call.user,
        )

    async def re_encode_job(self, call: Call, not_ingests: httpx.Response) -> Response:
        found = await self._re_encode_account(call)
        if found.status_code != 200:
            return self.gateway.relay(not_ingests)
        job = found.json()
        job.setdefault("errors", [])
        _bounded(job)
        job["files"] = await self.files_by_id(call, job.pop("file_ids", []))
        return JSON(job)

    async def job_files(self, call: Call) -> Response:
        return await self._job_page(call, "files")

    async def job_errors(self, call: Call) -> Response:
        return await self._job_page(call, "errors")

    async def _job_page(self, call: Call, listed: job_pages.Listed) -> Response:
        """A page of a job's files (as Files) or errors: ingest checks the caller's right
        (asked as for the job's maker first, as `job_with_files` does) and the cursor, and
        answers its part; the DICOM context's part follows it."""
        params = call.request.query_params
        given = params.get("limit", "100")
        # ASCII digits only, checked here for both owners' jobs: "²" passes isdigit, and
        # int() refused it (a 500); ingest's own check takes "+5", " 5" and "1_0", which
        # this page's DICOM part would then have filled to 100.
        if not (
            given.isascii()
            and given.isdigit()
            and len(given.lstrip("0")) <= 4
            and 1 <= int(given) <= 1000
        ):
            problem = "a whole number from 1 to 1000"
            return error_response(
                422,
                "invalid_request",
                f"limit must be {problem}",
                fields=[{"field": "limit", "problem": problem}],
                faults=1,
                parameter="limit",
            )
        limit = int(given)
        answer = await self.gateway.forward(call)
        if answer.status_code == 404:
            # Not ingest's: a re-encode job (the thumbnails context's), to its maker.
            return await self._re_encode_page(call, answer, listed, params.get("cursor"), limit)
        path = await self.job_path(call, answer)
        if isinstance(path, Response):
            return path
        if path is not None:
            answer = await self.gateway.forward(call, folder_path=path)
        if answer.status_code != 200:
            return self.gateway.relay(answer)
        page = answer.json()
        items: list[Any] = page["items"]
        cursor: str | None = page["next_cursor"]
        if page["dicom"] and cursor is None:
            # Ingest's part ended: the page goes on with the DICOM context's (from the
            # cursor's place in it), as much as it has room for.
            start = page["after"] if page["part"] == job_pages.DICOM else 0
            room = limit - len(items)
            files = listed == "files"
            account = await self.gateway.call(
                "dicom",
                "GET",
                f"/internal/jobs/{call.values['job_id']}",
                call.request,
                params={"files_from" if files else "errors_from": start, "limit": max(room, 1)},
            )
            if account.status_code != 200:
                return self.gateway.relay(account)
            found = account.json()
            items = items + found["file_ids" if files else "errors"][:room]
            more = found["file_count" if files else "error_count"] > start + room
            cursor = job_pages.encode(listed, job_pages.DICOM, start + room) if more else None
        if listed == "files":
            items = await self.files_by_id(call, items)
        return JSON({"items": items, "next_cursor": cursor})

    async def _re_encode_page(
        self,
        call: Call,
        not_ingests: httpx.Response,
        listed: job_pages.Listed,
        cursor: str | None,
        limit: int,
    ) -> Response:
        """A page of a re-encode job's lists (the thumbnails context's, at most 1,000
        files: read whole and paged here), to its maker."""
        found = await self._re_encode_account(call)
        if found.status_code != 200:
            return self.gateway.relay(not_ingests)
        try:
            _, after = job_pages.decode(cursor, listed)
        except Refused as refused:
            return error_response(refused.status, refused.code, refused.message, **refused.details)
        whole = found.json().get("file_ids" if listed == "files" else "errors", [])
        start = after + 1
        items = whole[start : start + limit]
        more = len(whole) > start + limit
        last = start + limit - 1
        next_cursor = job_pages.encode(listed, job_pages.INGEST, last) if more else None
        if listed == "files":
            items = await self.files_by_id(call, items)
        return JSON({"items": items, "next_cursor": next_cursor})

    async def _job(
        self,
        call: Call,
        job: dict[str, Any],
        asked: asyncio.Future[httpx.Response] | None = None,
    ) -> Response:
        """A job as ingest has it, with the DICOM context's account (`asked` already, if
        given) and its files. An ended job's files are read once the catalog has caught
        up (its listing names them), in the one call that reads them."""
        token: dict[str, int] = {}
        if job.get("kind") == "dicom":
            # Ingest stored the parts; the DICOM context's account is the job's progress.
            account = await (asked or self._dicom_account(call, job["id"]))
            if account.status_code != 200:
                return self.gateway.relay(account)
            settled = account.json()
            job["progress"]["done"] = settled["done"]
            _joined(job, "errors", settled)
            _joined(job, "files", settled)
            if settled.get("cancelled") or job["status"] == "cancelled":
                job["status"] = "cancelled"
            else:
                done = settled["done"] >= job["progress"]["total"]
                job["status"] = "done" if done else "running"
            if job["status"] == "done":
                # Done means its series files are in the catalog: let it catch up (bounded)
                # to the job's last settlement, recorded after its series' events, not to
                # the DICOM store's head, which later uploads keep moving.
                if "position" in settled:
                    token = {"dicom": settled["position"]}
                else:  # a DICOM replica from before the position was given
                    await self.gateway.catch_up(call.request, "catalog", "dicom")
        elif job.get("kind") in ("import", "sync") and job.get("dicom_instances"):
            # DICOM objects imported or synced: their instances were copied in; the
            # DICOM context's account gives the series' files and the instances refused,
            # and the job is done once it has settled every one.
            account = await self._dicom_account(call, job["id"])
            if account.status_code != 200:
                return self.gateway.relay(account)
            settled = account.json()
            _joined(job, "errors", settled)
            _joined(job, "files", settled)
            if job["status"] == "done" and settled["done"] < job["dicom_instances"]:
                job["status"] = "running"
            if job["status"] in ("done", "failed", "cancelled"):
                token = await self._heads(call, "ingest", "dicom")
        elif job.get("status") in ("done", "failed", "cancelled"):
            # Ended: every file it stored is listed with it, so the catalog (whose
            # listing names them) catches up with ingest first (bounded), as for DICOM.
            token = await self._heads(call, "ingest")
        job.pop("dicom_instances", None)
        job["files"] = await self.files_caught_up(call, job.pop("file_ids", []), token)
        return JSON(job)

    async def _heads(self, call: Call, *sources: str) -> dict[str, int]:
        """What the catalog must apply to have all `sources` recorded of what it
        applies (asked side by side); if that is not known here, the catalog is caught
        up with each the long way (learning it) and {} is given."""
        heads = await asyncio.gather(
            *(self.gateway.head_for(call.request, "catalog", s, known=True) for s in sources)
        )
        token: dict[str, int] = {}
        for source, head in zip(sources, heads, strict=True):
            if head is None:
                await self.gateway.catch_up(call.request, "catalog", source)
            else:
                token = consistency.merge(token, head)
        return token

    async def cancel_job(self, call: Call) -> Response:
        """A job stops: the caller's own, or one in a folder they edit (one they cannot
        see is not found). A DICOM job's instances not read yet are skipped (the DICOM
        context is told first, then ingest records the end). Answered with the job as
        it now is."""
        job_id = call.values["job_id"]
        path = f"/v1/jobs/{job_id}"
        # Read as for its maker first (no owner look-up), as `job_with_files` does.
        found = await self.gateway.call("ingest", "GET", path, call.request, call.user)
        signed = await self.job_path(call, found, "editor")
        if isinstance(signed, Response):
            return signed
        if signed is not None:
            found = await self.gateway.call(
                "ingest", "GET", path, call.request, call.user, folder_path=signed
            )
        if found.status_code != 200:
            return self.gateway.relay(found)
        job = found.json()
        token: dict[str, int] = {}
        if job["kind"] == "dicom" and job["status"] == "running":
            account = await self.gateway.call(
                "dicom", "GET", f"/internal/jobs/{job_id}", call.request
            )
            if account.status_code != 200:
                return self.gateway.relay(account)
            if account.json()["done"] >= job["progress"]["total"]:
                # Not error_response: its details would take `status` for the answer's.
                return JSON(
                    error_body(
                        "job_finished",
                        f"job {job_id} is done: nothing is left to cancel",
                        {"id": job_id, "status": "done"},
                    ),
                    409,
                )
            told = await self.gateway.call(
                "dicom",
                "POST",
                f"/internal/jobs/{job_id}/cancel",
                call.request,
                call.user,
                object_ref=f"job:{job_id}",
            )
            if told.status_code != 200:
                return self.gateway.relay(told)
            token = consistency.decode(told.headers.get(consistency.HEADER, ""))
        answer = await self.gateway.forward(call, folder_path=signed)
        if answer.status_code != 200:
            return self.gateway.relay(answer)
        token = consistency.merge(
            token, consistency.decode(answer.headers.get(consistency.HEADER, ""))
        )
        # The answer kept for a failure from here (`committed`) names the DICOM
        # context's cancel too: a caller's next read waits for both.
        answer.headers[consistency.HEADER] = consistency.encode(token)
        token = await self.gateway.wait_for(call.request, token, rounds=1)
        now = await self.gateway.call(
            "ingest", "GET", path, call.request, call.user, folder_path=signed
        )
        if now.status_code != 200:
            # Cancelled all the same: its own answer, never the read's refusal.
            return self.gateway.relay(answer)
        composed = await self._job(call, now.json())
        composed.headers[consistency.HEADER] = consistency.encode(token)
        return composed

    # -- datasets --------------------------------------------------------------------

    async def create_dataset(self, call: Call) -> Response:
        """`create_backing_folder: true`: a top-level folder of the dataset's name is made
        first (in the catalog, as the caller), then the dataset synced with it. If the
        dataset is refused, the folder goes again (to the trash)."""
        try:
            asked = orjson.loads(await capped_body(call.request))
        except orjson.JSONDecodeError:
            asked = None
        if not isinstance(asked, dict) or asked.get("create_backing_folder") is not True:
            return await self.after_catalog(call)
        if asked.get("synced_folder_id") is not None:
            return error_response(
                422,
                "invalid_request",
                "create_backing_folder makes the synced folder: give no synced_folder_id",
            )
        # What cannot be passed on is refused before anything is made (nothing to undo).
        json_body(asked)
        name, description = asked.get("name"), asked.get("description", "")
        made = await self.gateway.call(
            "catalog",
            "POST",
            "/v1/folders",
            call.request,
            call.user,
            json={"name": name, "description": description},
        )
        if made.status_code != 201:
            return self.gateway.relay(made)
        folder_id = made.json()["id"]
        # The creator becomes the folder's admin by the ACL's reaction: wait for it, then
        # ask who the caller is again, so the datasets context sees the grant.
        await self.gateway.wait_for(
            call.request, consistency.decode(made.headers.get(consistency.HEADER, "")), rounds=2
        )
        self.gateway.forget_callers()
        user = await self.gateway.authenticate(call.request) or call.user
        await self.gateway.catch_up(call.request, "datasets", "catalog")
        body = {k: v for k, v in asked.items() if k != "create_backing_folder"}
        answer = await self.gateway.call(
            "datasets",
            "POST",
            "/v1/datasets",
            call.request,
            user,
            json={**body, "synced_folder_id": folder_id},
        )
        if answer.status_code != 201:
            await self.gateway.call(
                "catalog", "DELETE", f"/v1/folders/{folder_id}", call.request, user
            )
        else:
            call.request.state.committed = answer
        return self.gateway.relay(answer)

    async def after_catalog(self, call: Call) -> Response:
        """A write to a dataset: the datasets context validates against its mirror of
        the catalog, so it catches up first (a file uploaded a moment ago is known)."""
        await self.gateway.catch_up(call.request, "datasets", "catalog")
        return self.gateway.relay(await self.gateway.forward(call))

    async def dataset_files(self, call: Call) -> Response:
        answer = await self.gateway.forward(call)
        if answer.status_code != 200:
            return self.gateway.relay(answer)
        page = answer.json()
        items = await self.files_by_id(call, page["file_ids"])
        return JSON({"items": items, "next_cursor": page["next_cursor"]})

    async def linked_datasets(self, call: Call) -> Response:
        # The catalog says whether the file exists; datasets only knows its links.
        found = await self.gateway.call(
            "catalog", "GET", f"/internal/files/{call.values['file_id']}", call.request, call.user
        )
        if found.status_code != 200:
            return self.gateway.relay(found)
        return self.gateway.relay(await self.gateway.forward(call))

    # -- the audit -------------------------------------------------------------------

    async def audit(self, call: Call) -> Response:
        """Events of every context, merged in time order; the cursor holds how far each
        context's store was read. Org admins see everything; a member asks about a
        subject they may see, or about their own actions."""
        user = call.user or {}
        query = call.request.query_params
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
        if user.get("org_role") != "admin":
            if not subjects and query.get("actor_id") != user.get("id"):
                return error_response(
                    403,
                    "forbidden",
                    "the audit across subjects needs the organisation admin role: give a"
                    " subject_id you may see, or your own actor_id",
                    role_needed="org admin",
                )
            for subject in subjects:
                if not await self._may_see(call, subject):
                    return error_response(404, "not_found", f"subject {subject} does not exist")
        params = [
            (k, v)
            for k, v in query.multi_items()
            if k in ("subject_id", "actor_id", "type", "since", "until")
        ]
        answers = await asyncio.gather(
            *(
                self.gateway.call(
                    name,
                    "GET",
                    "/internal/audit",
                    call.request,
                    # As the caller: each service takes out of its events what they list
                    # that the caller may not see (a dataset's links to others' files).
                    call.user,
                    params=[*params, ("after", str(after.get(name, 0))), ("limit", str(limit))],
                )
                for name in self.gateway.services
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
                # Rows the caller may not see (`hidden`, a service's `audit_view`) take
                # their place in the page and the cursor moves past them, but are not
                # shown: a page may come back short, or empty with a cursor to the rest.
                "items": [
                    {k: v for k, v in e.items() if k != "position"}
                    for e in page
                    if not e.get("hidden")
                ],
                "next_cursor": _encode_audit_cursor(after) if more else None,
            }
        )

    async def _may_see(self, call: Call, subject: str) -> bool:
        user = call.user or {}
        if subject == user.get("id"):
            return True
        if PARAMS["folder_id"].parse(subject) is None:  # not a UUID: nothing of ours
            return False
        for service, path in (
            ("catalog", f"/internal/folders/{subject}"),
            ("catalog", f"/internal/files/{subject}"),
            ("datasets", f"/v1/datasets/{subject}"),
        ):
            answer = await self.gateway.call(service, "GET", path, call.request, call.user)
            if answer.status_code == 200:
                return True
        return False

    # -- pictures (thumbnails, DICOM slices) -----------------------------------------

    async def _seen_file(self, call: Call) -> httpx.Response:
        """The file as the catalog shows it to the caller (404 if they may not see it)."""
        path = f"/internal/files/{call.values['file_id']}"
        return await self.gateway.call("catalog", "GET", path, call.request, call.user)

    @staticmethod
    def signed_file(file: dict[str, Any]) -> tuple[str, str]:
        """The file's folder path and the file, from the catalog's one answer, to sign in
        the caller's token (folder_path, object_ref): the context that serves something
        of the file decides the role again from them (shared/kit/http.py role_on_file)."""
        return ",".join(file.get("folder_path") or ()), file_ref(file["id"])

    @staticmethod
    def _picture(answer: httpx.Response, passed: tuple[str, ...]) -> Response:
        headers = {k: v for k, v in answer.headers.items() if k.lower() in passed}
        headers["X-Content-Type-Options"] = "nosniff"
        return Response(answer.content, answer.status_code, headers=headers)

    async def dicomweb(self, call: Call) -> Response:
        return await dicomweb.retrieve(self, call)

    async def store_instances(self, call: Call) -> Response:
        return await dicomweb.store(self, call)

    async def thumbnail(self, call: Call) -> Response:
        """The file's picture: the catalog says whether the caller may see the file (404
        if not, as for its content), the thumbnails context serves it (or says why not)."""
        found = await self._seen_file(call)
        if found.status_code != 200:
            return self.gateway.relay(found)
        file = found.json()
        source = file.get("source") or {}
        imported = source.get("type") == "cloud"
        params = [
            ("kind", file["kind"]),
            ("imported", "true" if imported else "false"),
            *call.query(),
        ]
        if imported and source.get("integration_id") and source.get("key"):
            # What a file imported by reference is drawn from: the thumbnails context
            # draws such a file when its picture is first asked for.
            params += [
                ("sha256", file["sha256"]),
                ("bytes", str(file["size"])),
                ("blob_key", file["blob_key"]),
                ("object", f"{source['integration_id']}:{source['key']}"),
            ]
        headers = {k: v for k, v in call.request.headers.items() if k.lower() == "if-none-match"}
        path, ref = self.signed_file(file)
        answer = await self.gateway.call(
            "thumbnails",
            "GET",
            f"/internal/thumbnails/{call.values['file_id']}",
            call.request,
            call.user,
            params=params,
            headers=headers,
            folder_path=path,
            object_ref=ref,
        )
        return self._picture(answer, ("content-type", "etag", "cache-control", "retry-after"))

    async def slice_image(self, call: Call) -> Response:
        """A DICOM series' slice as a PNG, for the viewer: the catalog says whether the
        caller may see the file and that it is a series; the DICOM context, which owns
        the instances, draws it (services/dicom/slices.py)."""
        found = await self._seen_file(call)
        if found.status_code != 200:
            return self.gateway.relay(found)
        file_id = call.values["file_id"]
        if found.json().get("kind") != "dicom_series":
            return error_response(
                422, "not_a_dicom_series", f"file {file_id} is not a DICOM series: it has no slices"
            )
        path, ref = self.signed_file(found.json())
        drawn = await self.gateway.call(
            "dicom", "GET", call.path, call.request, call.user, folder_path=path, object_ref=ref
        )
        return self._picture(drawn, ("content-type", "cache-control", "etag"))


# The extensions of the images ingest accepts, by their MIME type (the first is added).
IMAGE_EXTENSIONS = {
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg", ".jpe"),
    "image/gif": (".gif",),
    "image/tiff": (".tif", ".tiff"),
    "image/webp": (".webp",),
    "image/bmp": (".bmp",),
}


def download_name(file: dict[str, Any]) -> str:
    """The name a file's content is downloaded as. An image group's or sequence's content
    is its first image, and its name the group's (`cats`): it takes that image's
    extension, so the OS the file lands on opens it as one (`cats.png`). A DICOM series'
    is one of its instances, and its name ends with its series UID's last number
    (`CT series 1.2.840.5`, an extension `.5` to the OS): it takes `.dcm`."""
    name = str(file["name"])
    if file.get("kind") == "dicom_series":
        extensions: tuple[str, ...] | None = (".dcm",)
    elif file.get("kind") in ("image_group", "image_sequence"):
        extensions = IMAGE_EXTENSIONS.get(str(file.get("mime_type")))
    else:
        extensions = None
    if not extensions or name.lower().endswith(extensions):
        return name
    # Within a name's length (a presigned URL's name is one): a long name gives way.
    return name[: rules.MAX_NAME - len(extensions[0])] + extensions[0]


def content_disposition(name: str) -> str:
    """An attachment of this name (RFC 6266): `filename*` the whole name in UTF-8,
    percent-encoded (quotes, CR/LF, `;` and every non-ASCII character included), and
    `filename` an ASCII stand-in for clients that know only it (each character that is
    not printable ASCII, a quote or a backslash is `_`)."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    encoded = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}"
