"""The whole API, written once: `Client` runs it at once, `AsyncClient` as awaitables.

Models answered by a client are bound to it: `folder.create_subfolder("day1")`,
`file.download("out/")`, `job.wait()` go through the client that fetched them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ConfigDict, PrivateAttr

from files_client import transfer
from files_client._core import (
    Async,
    Bound,
    Call,
    Driver,
    Emit,
    Feed,
    Gather,
    M,
    NextChunk,
    Op,
    Session,
    Sleep,
    Sync,
    collect,
    exchange,
    json_of,
    listing,
    operation,
)
from files_client.errors import (
    Conflict,
    FilesError,
    Invalid,
    NotFound,
    Unavailable,
    upload_refused,
)
from files_client.models import (
    ApiKey,
    AuditEvent,
    Collaborator,
    Data,
    DatasetChangesBody,
    DatasetCollaborator,
    DatasetData,
    DatasetRef,
    DeleteBody,
    Emptied,
    FileChangesBody,
    FileData,
    FileIdsBody,
    FileUpdatesBody,
    FolderChangesBody,
    FolderData,
    Impact,
    ImportBody,
    IntegrationChangeBody,
    IntegrationData,
    InvitationBody,
    JobData,
    JobError,
    LookupBody,
    MetadataSchema,
    MetadataSchemaBody,
    MoveBody,
    NewApiKey,
    NewDatasetBody,
    NewFolderBody,
    NewIntegrationBody,
    NewUser,
    NewUserBody,
    NewWebhookBody,
    ReEncodeBody,
    RestoreBody,
    Restored,
    RoleChangeBody,
    Summary,
    TrashItem,
    UploadSession,
    User,
    WebhookData,
    WebhookDelivery,
    WebhookSecretRotationBody,
)

__all__ = ["Async", "Sync"]

PathLike = str | os.PathLike[str]
Ref = str | uuid.UUID | Data
JobProgress = Callable[["Job[Any]"], None]
TERMINAL = ("done", "failed", "expired", "rejected", "aborted", "cancelled")


def _id(ref: Ref) -> str:
    """An id from an id or from anything that has one."""
    if isinstance(ref, Data):
        return str(getattr(ref, "id"))  # noqa: B009 (every model passed here has an id)
    return str(ref)


# Ids in one bulk call at most (lookup, edit).
BULK = 1000
# The datasets context takes at most this many file ids a request (shared/api FileIds).
REMOVED_A_REQUEST = 100_000


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _filters(
    kind: str | Sequence[str] | None,
    q: str | None,
    in_dataset: bool | None,
    metadata: dict[str, Any] | None,
    order: str | None,
    desc: bool,
) -> dict[str, Any]:
    """A listing's or search's filters and order as query parameters."""
    params: dict[str, Any] = {}
    if kind:
        params["kind"] = [kind] if isinstance(kind, str) else list(kind)
    if q:
        params["q"] = q
    if in_dataset is not None:
        params["in_dataset"] = _flag(in_dataset)
    for key, value in (metadata or {}).items():
        values = value if isinstance(value, list | tuple) else [value]
        params[f"metadata.{key}"] = [
            _flag(v) if isinstance(v, bool) else "null" if v is None else str(v) for v in values
        ]
    if order:
        params["order"] = order
    if desc:
        params["desc"] = "true"
    return params


def _ids(refs: Iterable[Ref]) -> list[str]:
    return [_id(r) for r in refs]


class _Bound(Bound[M]):
    """A model bound to the client that answered it."""

    _client: Any = PrivateAttr(None)

    def _driver(self) -> Driver:
        driver: Driver = self._client._driver()
        return driver

    @property
    def _api(self) -> Api[M]:
        api: Api[M] = self._client
        return api

    @property
    def _session(self) -> Session:
        session: Session = self._client._session
        return session


_ignored = ConfigDict(ignored_types=(operation, listing))
B = TypeVar("B", bound="_Bound[Any]")


def _bind(client: Any, kind: type[B], data: Any) -> B:
    """A model answered by `client`, bound to it, and so are the models inside it (a
    job's files)."""
    model: B = kind.model_validate(data)  # type: ignore[attr-defined]
    model._client = client
    for value in model.__dict__.values():
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, _Bound):
                inner._client = client
    return model


# -- the bound models -------------------------------------------------------------------


class Folder(FolderData, _Bound[M]):
    """A folder. `path` runs from the first folder the caller may see to this one."""

    model_config = _ignored

    @property
    def full_path(self) -> str:
        """Its path as `top/sub/this`."""
        return "/".join(p.name for p in self.path) or self.name

    @operation
    def refresh(self) -> Op[Folder[M]]:
        """The folder as it is now."""
        return (yield from type(self._api).get_folder.fn(self._api, self.id))

    @operation
    def create_subfolder(
        self, name: str, *, description: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Op[Folder[M]]:
        return (
            yield from type(self._api).create_folder.fn(
                self._api, name, description=description, parent=self.id, metadata=metadata
            )
        )

    @listing
    def subfolders(self) -> Feed[Folder[M]]:
        """Its subfolders, by name."""
        yield from type(self._api).list_folders.fn(self._api, parent=self.id)

    @listing
    def items(
        self,
        kind: str | Sequence[str] | None = None,
        *,
        page_size: int = 1000,
        q: str | None = None,
        in_dataset: bool | None = None,
        dataset_synced: bool | None = None,
        metadata: dict[str, Any] | None = None,
        order: str | None = None,
        desc: bool = False,
    ) -> Feed[Folder[M] | File[M]]:
        """Subfolders (Folder) first, then files (File), each by name or `order`
        (`"name"`, `"created_at"`, `"size"`; `desc` reverses it). Filters: `kind`
        (one or several: `"folder"`, `"image"`, ...), `q` (part of the name),
        `in_dataset`, `dataset_synced` (subfolders synced with a dataset), `metadata`
        (`{key: value}`, each must match; a list of values matches any; `{"key.gte":
        2, "key.lte": 9}` a range, for keys the metadata schema types as number or
        datetime)."""
        params = _filters(kind, q, in_dataset, metadata, order, desc)
        if dataset_synced is not None:
            params["dataset_synced"] = _flag(dataset_synced)
        yield from self._api._pages(f"/v1/folders/{self.id}/items", params, page_size)

    @listing
    def files(self, kind: str | Sequence[str] | None = None) -> Feed[File[M]]:
        """The files directly in it, by name."""
        yield from self._api._pages(
            f"/v1/folders/{self.id}/items", {"kind": kind} if kind else {}, 1000, only="file"
        )

    @operation
    def summary(self) -> Op[Summary]:
        """Counts by kind and bytes, below the folder."""
        found = yield from json_of(self._session, Call("GET", f"/v1/folders/{self.id}/summary"))
        return Summary.model_validate(found)

    @operation
    def update(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Op[Folder[M]]:
        fields = {"name": name, "description": description, "metadata": metadata}
        body = FolderChangesBody.model_validate({k: v for k, v in fields.items() if v is not None})
        found = yield from json_of(
            self._session, Call("PATCH", f"/v1/folders/{self.id}", json=body.as_json())
        )
        return self._api._folder(found)

    @operation
    def rename(self, name: str) -> Op[Folder[M]]:
        return (yield from type(self).update.fn(self, name=name))

    @operation
    def describe(self, description: str) -> Op[Folder[M]]:
        return (yield from type(self).update.fn(self, description=description))

    @operation
    def set_metadata(self, metadata: dict[str, Any]) -> Op[Folder[M]]:
        """Replace the folder's metadata (a JSON object of the client's own, ≤ 64 KiB)."""
        return (yield from type(self).update.fn(self, metadata=metadata))

    @operation
    def move_to(self, target: Ref) -> Op[Folder[M]]:
        """Move it (and everything below) into another folder."""
        yield from type(self._api).move.fn(self._api, [self], target)
        return (yield from type(self._api).get_folder.fn(self._api, self.id))

    @operation
    def delete(self) -> Op[None]:
        """Delete it and everything inside."""
        yield from exchange(self._session, Call("DELETE", f"/v1/folders/{self.id}"))

    @operation
    def upload(
        self,
        paths: Sequence[PathLike],
        *,
        metadata: dict[str, dict[str, Any]] | None = None,
        progress: transfer.Progress | None = None,
        parallel: int = transfer.PARALLEL,
        parts_from: int = transfer.PARTS_FROM,
    ) -> Op[list[File[M]]]:
        """Files into this folder (streamed; a file of `parts_from` bytes, 64 MiB, or
        more goes in parts, resumably); the Files in the order given. `metadata`: a file
        name's metadata, stored with it and checked against the metadata schema (a file
        that goes in parts too: its upload session is opened with it).

        Each file has its own outcome: files the platform refuses (their bytes of no kind
        it accepts, their name, their metadata) do not keep the others from being
        stored; once all are sent, `UploadRefused` is raised, holding the Files stored
        (`uploaded`) and each refused file with the API's code and message (`refused`),
        and typed as the first refusal is (`UnsupportedContent`, say)."""
        given = metadata or {}
        local = [(f := transfer.LocalFile.at(p)).described(given.get(f.name)) for p in paths]
        unknown = sorted(set(given) - {f.name for f in local})
        if unknown:
            raise FilesError(
                "unknown_file_name",
                f"metadata names files not uploaded: {', '.join(unknown[:20])}",
                {"names": unknown[:20]},
            )
        [found] = yield from transfer.upload_many(
            self._session,
            [(self.id, local)],
            progress,
            parallel=parallel,
            parts_from=parts_from,
            keep_going=True,
        )
        uploaded = [self._api._file(f) for f in found if not isinstance(f, transfer.Refusal)]
        refused = [f for f in found if isinstance(f, transfer.Refusal)]
        if refused:
            raise upload_refused(uploaded, refused)
        return uploaded

    @operation
    def upload_tree(
        self,
        plan: dict[tuple[str, ...], list[transfer.LocalFile]] | PathLike,
        *,
        progress: transfer.Progress | None = None,
        skip_existing: bool = True,
        journal: transfer.Journal | None = None,
        parallel: int = transfer.PARALLEL,
        parts_from: int = transfer.PARTS_FROM,
        keep_going: bool = False,
    ) -> Op[UploadReport[M]]:
        """Files into subfolders of this one (`("a", "b")`: the subfolder a/b, made if
        missing; `()`: this folder), all side by side. With `skip_existing`, a file the
        folder has already (same name, size and sha256) is not sent again: so an
        interrupted upload, run again, sends what is missing (a file skipped so that
        lacks metadata given with it gets those keys). A `journal` remembers
        upload sessions of large files, so their parts sent before are not sent again. A
        file the platform refuses (its content, name or metadata) does not keep the others
        from being uploaded: with `keep_going` it is in the report's `refused`; otherwise,
        once all are sent, `UploadRefused` is raised (as `upload` raises it).

        `plan` may be a local directory instead: it becomes a subfolder of its name, with
        its files and subdirectories below it (as `files upload DIR --to` does)."""
        tree: dict[tuple[str, ...], list[transfer.LocalFile]] = {}
        if isinstance(plan, dict):
            tree = plan
        else:
            for below, local in transfer.local_tree(plan):
                tree.setdefault(tuple(below), []).append(local)
        folders: dict[tuple[str, ...], Folder[M]] = {(): self}
        made: set[tuple[str, ...]] = set()
        for sub in sorted(tree):
            for depth in range(1, len(sub) + 1):
                key = sub[:depth]
                if key in folders:
                    continue
                parent = folders[key[:-1]]
                found = None
                if key[:-1] not in made:
                    found = yield from self._api._child_folder(parent, key[-1], list(key))
                if found is None:
                    found = yield from type(self._api).create_folder.fn(
                        self._api, key[-1], parent=parent.id
                    )
                    made.add(key)
                folders[key] = found
        work: list[tuple[str, list[transfer.LocalFile]]] = []
        skipped: list[File[M]] = []
        stale: list[tuple[int, dict[str, Any]]] = []
        for sub, files in tree.items():
            folder = folders[sub]
            todo = files
            if skip_existing and sub not in made and files:
                there: dict[tuple[str, int], list[File[M]]] = {}
                listed: list[File[M]] = yield from collect(
                    self._api._pages(f"/v1/folders/{folder.id}/items", {}, only="file")
                )
                for x in listed:
                    there.setdefault((x.name, x.size), []).append(x)
                todo = []
                for f in files:
                    same = there.get((f.name, f.size), [])
                    digest = transfer.sha256_of(f.path) if same else ""
                    match = next((x for x in same if x.sha256 == digest), None)
                    if match is None:
                        todo.append(f)
                    else:
                        skipped.append(match)
                        given = f.metadata or {}
                        if any(match.metadata.get(k, ...) != v for k, v in given.items()):
                            stale.append((len(skipped) - 1, given))
                        if progress:
                            progress(f.size)
            work.append((folder.id, todo))
        # A file there already, given metadata it lacks: the keys given are set on it
        # (merged: the others it has stay), as an upload would have stored them.
        for start in range(0, len(stale), 1000):
            batch = stale[start : start + 1000]
            changed = yield from type(self._api).update_files.fn(
                self._api, [{"id": skipped[n].id, "metadata": m} for n, m in batch]
            )
            for (n, _), now in zip(batch, changed, strict=True):
                skipped[n] = now
        earlier = transfer.Earlier()
        found_lists = yield from transfer.upload_many(
            self._session,
            work,
            progress,
            parallel=parallel,
            journal=journal,
            parts_from=parts_from,
            keep_going=True,
            earlier=earlier,
        )
        sent = [f for found in found_lists for f in found]
        uploaded = [self._api._file(f) for f in sent if not isinstance(f, transfer.Refusal)]
        refused = [f for f in sent if isinstance(f, transfer.Refusal)]
        if refused and not keep_going:
            raise upload_refused(uploaded, refused)
        whole = sum(f.size for f in uploaded)
        return UploadReport(uploaded, skipped, whole - earlier.bytes, refused, earlier.bytes)

    @operation
    def upload_file(
        self,
        path: PathLike,
        *,
        name: str | None = None,
        progress: transfer.Progress | None = None,
        session_id: str | None = None,
        part_size: int | None = None,
        parallel: int = transfer.PARALLEL,
        metadata: dict[str, Any] | None = None,
    ) -> Op[File[M]]:
        """One file as an upload session, in parts straight to the store, with its
        `metadata` if given (stored with it, checked against the metadata schema). Give
        the `session_id` of an interrupted one to send only the parts it lacks."""
        found = yield from transfer.upload_in_parts(
            self._session,
            self.id,
            transfer.LocalFile.at(path, name).described(metadata),
            progress,
            session_id=session_id,
            part_size=part_size,
            parallel=parallel,
        )
        return self._api._file(found)

    @operation
    def open_upload_session(
        self,
        name: str,
        size: int,
        *,
        part_size: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Op[UploadSession]:
        """An upload session to drive by hand: PUT each of `parts` to its URL, then
        `complete_upload_session` (the file is stored with `metadata`, if given)."""
        body: dict[str, Any] = {"name": name, "size": size}
        if part_size:
            body["part_size"] = part_size
        if metadata is not None:
            body["metadata"] = metadata
        found = yield from json_of(
            self._session, Call("POST", f"/v1/folders/{self.id}/uploads", json=body)
        )
        return UploadSession.model_validate(found)

    @operation
    def upload_image_group(
        self,
        paths: Sequence[PathLike],
        name: str,
        *,
        sequence: bool = False,
        progress: transfer.Progress | None = None,
        timeout: float = 600.0,
    ) -> Op[ImageGroup[M]]:
        """Images as one image group (or, `sequence=True`, an image sequence: same
        width and height, in this order): the group's file, and its images' folder.
        A group the platform stored but had not listed yet when it answered (202: a
        large one on a busy platform) is followed until it is, for up to `timeout`
        seconds; past that, `Unavailable` (code `timeout`) names its file and job."""
        local = [transfer.LocalFile.at(p) for p in paths]
        kind = "image_sequence" if sequence else "image_group"
        found = yield from json_of(
            self._session,
            Call(
                "POST",
                f"/v1/folders/{self.id}/image-groups",
                data={"kind": kind, "name": name},
                files=transfer.multipart(local, progress),
            ),
        )
        if "file" in found:
            return ImageGroup(self._api._file(found["file"]), self._api._folder(found["folder"]))
        # Stored already: sending it again would store a second group, so wait for this
        # one. The reads carry the answer's consistency token, so each first waits (on
        # the platform) for the catalog to reach it.
        api = self._api
        waited, delay = 0.0, 0.25
        while True:
            try:
                file = yield from type(api).get_file.fn(api, found["file_id"])
                # Its images' folder too (a 202 may also mean that read failed).
                images = yield from type(api).get_folder.fn(api, found["folder_id"])
                break
            except NotFound:
                if waited >= timeout:
                    raise Unavailable(
                        "timeout",
                        f"image group {name!r} was stored but is not listed after {timeout:g} s;"
                        f" its job {found['job_id']} follows it",
                        {k: found[k] for k in ("file_id", "folder_id", "job_id")},
                    ) from None
            yield Sleep(delay)
            waited += delay
            delay = min(delay * 1.5, 2.0)
        return ImageGroup(file, images)

    @operation
    def upload_dicom(
        self, paths: Sequence[PathLike], *, progress: transfer.Progress | None = None
    ) -> Op[Job[M]]:
        """DICOM instances; the series are assembled after: `job.wait()` for them."""
        local = [transfer.LocalFile.at(p) for p in paths]
        started = yield from json_of(
            self._session,
            Call(
                "POST",
                f"/v1/folders/{self.id}/dicom",
                files=transfer.multipart(local, progress),
            ),
        )
        return (yield from type(self._api).get_job.fn(self._api, started["job_id"]))

    @operation
    def import_objects(
        self,
        integration: Ref,
        *,
        keys: Sequence[str] | None = None,
        prefix: str | None = None,
        manifest: dict[str, Any] | None = None,
    ) -> Op[Job[M]]:
        """Objects of a cloud integration's bucket, by reference (not copied)."""
        fields: dict[str, Any] = {
            "integration_id": _id(integration),
            "keys": list(keys) if keys is not None else None,
            "prefix": prefix,
            "manifest": manifest,
        }
        body = ImportBody.model_validate({k: v for k, v in fields.items() if v is not None})
        started = yield from json_of(
            self._session,
            Call("POST", f"/v1/folders/{self.id}/imports", json=body.as_json()),
        )
        return (yield from type(self._api).get_job.fn(self._api, started["job_id"]))

    @operation
    def collaborators(self) -> Op[list[Collaborator]]:
        """Who has a role here: on this folder, or inherited from one above."""
        out: list[Collaborator] = []
        cursor = None
        while True:
            page = yield from json_of(
                self._session,
                Call(
                    "GET",
                    f"/v1/folders/{self.id}/collaborators",
                    params={"cursor": cursor} if cursor else {},
                ),
            )
            out += [Collaborator.model_validate(c) for c in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    @operation
    def add_collaborators(self, emails: Sequence[str], role: str) -> Op[list[Collaborator]]:
        """Give users (by email) a role here: `admin`, `editor` or `user`."""
        body = InvitationBody(emails=list(emails), role=role)
        page = yield from json_of(
            self._session,
            Call("POST", f"/v1/folders/{self.id}/collaborators", json=body.as_json()),
        )
        return [Collaborator.model_validate(c) for c in page["items"]]

    @operation
    def change_role(self, user: Ref, role: str) -> Op[Collaborator]:
        body = RoleChangeBody(role=role)
        found = yield from json_of(
            self._session,
            Call(
                "PATCH",
                f"/v1/folders/{self.id}/collaborators/{_user_id(user)}",
                json=body.as_json(),
            ),
        )
        return Collaborator.model_validate(found)

    @operation
    def remove_collaborator(self, user: Ref) -> Op[None]:
        yield from exchange(
            self._session,
            Call("DELETE", f"/v1/folders/{self.id}/collaborators/{_user_id(user)}"),
        )


def _user_id(user: Ref) -> str:
    return str(user.user_id) if isinstance(user, Collaborator) else _id(user)


class File(FileData, _Bound[M]):
    """A file: an image, video, image group or sequence, DICOM series, pdf, audio, text."""

    model_config = _ignored

    @property
    def full_path(self) -> str | None:
        """`top/sub/name` when its folder's path is known (search hits), else None."""
        names: list[str] = [entry.name for entry in self.path or []]
        return "/".join([*names, self.name]) if self.path is not None else None

    @operation
    def refresh(self) -> Op[File[M]]:
        return (yield from type(self._api).get_file.fn(self._api, self.id))

    @operation
    def folder(self) -> Op[Folder[M]]:
        return (yield from type(self._api).get_folder.fn(self._api, self.folder_id))

    @operation
    def download(
        self, to: PathLike = ".", *, progress: transfer.Progress | None = None
    ) -> Op[Path]:
        """Its bytes into a directory (one not there yet is made when `to` ends with a
        slash) or to a file path; a download that stopped goes on where it was. The path
        written. Into a directory it goes under its name, made safe for the disk, as
        `files download` names it; where other bytes hold that name, it is numbered
        (`a (2).png`: the first free, or holding this file already), never written over
        (a file path given is written over). A DICOM series is written as a directory of
        its instances (`<SOPInstanceUID>.dcm`), at that path."""
        dest, file = Path(to), self.model_dump()
        if dest.is_dir() or str(to).endswith(("/", os.sep)):
            return (
                yield from transfer.download_into(
                    self._session, file, dest, local_name(self), progress
                )
            )
        return (yield from transfer.download(self._session, file, dest, progress))

    @listing
    def content(self, *, offset: int = 0, rendition: str | None = None) -> Feed[bytes]:
        """Its bytes as a stream of chunks (from `offset`); `rendition="web"`: its web
        rendition's (`re_encode`), NotFound while there is none."""
        response = yield from transfer.content(self._session, self.id, offset, rendition)
        while chunk := (yield NextChunk(response)):
            yield Emit(chunk)

    @operation
    def update(
        self,
        *,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> Op[File[M]]:
        fields = {"name": name, "metadata": metadata, "description": description}
        body = FileChangesBody.model_validate({k: v for k, v in fields.items() if v is not None})
        found = yield from json_of(
            self._session, Call("PATCH", f"/v1/files/{self.id}", json=body.as_json())
        )
        return self._api._file(found)

    @operation
    def rename(self, name: str) -> Op[File[M]]:
        return (yield from type(self).update.fn(self, name=name))

    @operation
    def set_metadata(self, metadata: dict[str, Any]) -> Op[File[M]]:
        return (yield from type(self).update.fn(self, metadata=metadata))

    @operation
    def move_to(self, target: Ref) -> Op[File[M]]:
        yield from type(self._api).move.fn(self._api, [self], target)
        return (yield from type(self._api).get_file.fn(self._api, self.id))

    @operation
    def delete(self) -> Op[None]:
        """Delete it: it leaves every dataset too."""
        yield from exchange(self._session, Call("DELETE", f"/v1/files/{self.id}"))

    @operation
    def linked_datasets(self) -> Op[list[DatasetRef]]:
        """The datasets it is linked to (those the caller may see)."""
        found = yield from json_of(self._session, Call("GET", f"/v1/files/{self.id}/datasets"))
        return [DatasetRef.model_validate(d) for d in found["items"]]


@dataclass
class UploadReport(Generic[M]):
    """What `upload_tree` sent, the files it found there already, and those the
    platform refused (with `keep_going`). `bytes`: what this run sent of the files
    uploaded; `earlier_bytes`: what earlier runs had sent of them (the parts of the
    upload sessions it resumed). Files skipped count in neither."""

    uploaded: list[File[M]]
    skipped: list[File[M]]
    bytes: int
    refused: list[transfer.Refusal] = field(default_factory=list)
    earlier_bytes: int = 0


@dataclass
class ImageGroup(Generic[M]):
    """An image group or sequence: its file, and the folder that holds its images."""

    file: File[M]
    folder: Folder[M]


class Dataset(DatasetData, _Bound[M]):
    model_config = _ignored

    @operation
    def refresh(self) -> Op[Dataset[M]]:
        return (yield from type(self._api).get_dataset.fn(self._api, self.id))

    @operation
    def add(self, files: Iterable[Ref]) -> Op[int]:
        """Link files (adding one twice is no error); how many were added."""
        body = FileIdsBody(file_ids=_ids(files))
        found = yield from json_of(
            self._session, Call("POST", f"/v1/datasets/{self.id}/files", json=body.as_json())
        )
        return int(found["added"])

    @operation
    def remove(self, file: Ref) -> Op[None]:
        yield from exchange(
            self._session, Call("DELETE", f"/v1/datasets/{self.id}/files/{_id(file)}")
        )

    @operation
    def remove_files(self, files: Iterable[Ref]) -> Op[int]:
        """Unlink files, all or none (up to 100,000 a request: each request is); how
        many. One not in the dataset (or not seen) is NotFound naming it."""
        ids, removed = _ids(files), 0
        for start in range(0, len(ids), REMOVED_A_REQUEST):
            body = FileIdsBody(file_ids=ids[start : start + REMOVED_A_REQUEST])
            found = yield from json_of(
                self._session,
                Call("POST", f"/v1/datasets/{self.id}/files/remove", json=body.as_json()),
            )
            removed += int(found["removed"])
        return removed

    @listing
    def files(self, *, page_size: int = 1000) -> Feed[File[M]]:
        """Its files that the caller may see."""
        yield from self._api._pages(f"/v1/datasets/{self.id}/files", {}, page_size)

    @operation
    def update(self, *, name: str | None = None, description: str | None = None) -> Op[Dataset[M]]:
        fields = {"name": name, "description": description}
        body = DatasetChangesBody.model_validate({k: v for k, v in fields.items() if v is not None})
        found = yield from json_of(
            self._session, Call("PATCH", f"/v1/datasets/{self.id}", json=body.as_json())
        )
        return _bind(self._client, Dataset, found)

    @operation
    def delete(self) -> Op[None]:
        yield from exchange(self._session, Call("DELETE", f"/v1/datasets/{self.id}"))

    @operation
    def collaborators(self) -> Op[list[DatasetCollaborator]]:
        found = yield from json_of(
            self._session, Call("GET", f"/v1/datasets/{self.id}/collaborators")
        )
        return [DatasetCollaborator.model_validate(c) for c in found["items"]]

    @operation
    def share(self, emails: Sequence[str], role: str = "user") -> Op[list[DatasetCollaborator]]:
        body = InvitationBody(emails=list(emails), role=role)
        found = yield from json_of(
            self._session,
            Call("POST", f"/v1/datasets/{self.id}/collaborators", json=body.as_json()),
        )
        return [DatasetCollaborator.model_validate(c) for c in found["items"]]

    @operation
    def unshare(self, user: Ref) -> Op[None]:
        user_id = str(user.user_id) if isinstance(user, DatasetCollaborator) else _id(user)
        yield from exchange(
            self._session, Call("DELETE", f"/v1/datasets/{self.id}/collaborators/{user_id}")
        )


class Job(JobData, _Bound[M]):
    """An upload, DICOM, import or session job: its progress, files and errors."""

    model_config = _ignored
    files: list[File[Any]] = []

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @listing
    def all_files(self) -> Feed[File[M]]:
        """Every file of the job as it was fetched: `files` (its first page), then the
        rest, page by page, in the job's order."""
        for f in self.files:
            yield Emit(f)
        yield from self._api._after(
            f"/v1/jobs/{self.id}/files", self.next_files_cursor, self._api._file
        )

    @listing
    def all_errors(self) -> Feed[JobError]:
        """Every error of the job as it was fetched: `errors`, then the rest, page by
        page, in order."""
        for e in self.errors:
            yield Emit(e)
        yield from self._api._after(
            f"/v1/jobs/{self.id}/errors", self.next_errors_cursor, JobError.model_validate
        )

    @operation
    def refresh(self) -> Op[Job[M]]:
        return (yield from type(self._api).get_job.fn(self._api, self.id))

    @operation
    def cancel(self) -> Op[Job[M]]:
        """Stop it: what it did stays, the rest stops (status `cancelled`)."""
        return (yield from type(self._api).cancel_job.fn(self._api, self.id))

    @operation
    def wait(
        self,
        *,
        progress: JobProgress | None = None,
        timeout: float | None = None,
        poll_s: float = 0.25,
    ) -> Op[Job[M]]:
        """Poll until the job is done or failed, calling `progress(job)` whenever it
        moved; the finished job. A job that does not finish within `timeout` seconds
        raises `Unavailable` (code `timeout`)."""
        job: Job[M] = self
        waited = 0.0
        seen: tuple[Any, ...] | None = None
        delay = poll_s
        while True:
            mark = (job.status, job.progress.done, job.progress.total, job.progress.bytes)
            if mark != seen and progress is not None:
                progress(job)
            seen = mark
            if job.finished:
                return job
            if timeout is not None and waited >= timeout:
                raise Unavailable(
                    "timeout",
                    f"job {job.id} is still {job.status} after {timeout:g} s",
                    {"job_id": job.id},
                )
            yield Sleep(delay)
            waited += delay
            delay = min(delay * 1.5, 2.0)
            job = yield from type(self._api).get_job.fn(self._api, self.id)


class Integration(IntegrationData, _Bound[M]):
    model_config = _ignored

    @operation
    def share_with(self, users: Iterable[Ref]) -> Op[Integration[M]]:
        """Who may use it besides the org admins (org admins): the list replaces the one
        before, `[]` takes it back from everyone."""
        return (yield from type(self._api).share_integration.fn(self._api, self, users))

    @operation
    def delete(self) -> Op[None]:
        yield from exchange(self._session, Call("DELETE", f"/v1/integrations/{self.id}"))


class Webhook(WebhookData, _Bound[M]):
    model_config = _ignored

    @operation
    def rotate_secret(
        self, *, secret: str | None = None, keep_previous_for_s: float | None = None
    ) -> Op[Webhook[M]]:
        """See `rotate_webhook_secret`."""
        return (
            yield from type(self._api).rotate_webhook_secret.fn(
                self._api, self, secret=secret, keep_previous_for_s=keep_previous_for_s
            )
        )

    @operation
    def delete(self) -> Op[None]:
        yield from exchange(self._session, Call("DELETE", f"/v1/webhooks/{self.id}"))


# -- the client's own operations ---------------------------------------------------------


class Api(Bound[M]):
    """Everything the client does; `Client` and `AsyncClient` run it."""

    _session: Session

    # Models bound to this client.
    def _folder(self, data: Any) -> Folder[M]:
        return _bind(self, Folder, data)

    def _file(self, data: Any) -> File[M]:
        return _bind(self, File, data)

    def _item(self, data: dict[str, Any]) -> Folder[M] | File[M]:
        return self._folder(data) if data.get("type") == "folder" else self._file(data)

    def _pages(
        self,
        url: str,
        params: dict[str, Any],
        page_size: int = 1000,
        *,
        make: Callable[[dict[str, Any]], Any] | None = None,
        only: str | None = None,
    ) -> Feed[Any]:
        cursor = None
        while True:
            query = {**params, "limit": page_size, **({"cursor": cursor} if cursor else {})}
            page = yield from json_of(self._session, Call("GET", url, params=query))
            for item in page["items"]:
                if only is None or item.get("type") == only:
                    yield Emit((make or self._item)(item))
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def _after(
        self, url: str, cursor: str | None, make: Callable[[dict[str, Any]], Any]
    ) -> Feed[Any]:
        """The items of a listing after `cursor` (None: nothing after), page by page."""
        while cursor:
            query = {"limit": 1000, "cursor": cursor}
            page = yield from json_of(self._session, Call("GET", url, params=query))
            for item in page["items"]:
                yield Emit(make(item))
            cursor = page.get("next_cursor")

    # -- folders -------------------------------------------------------------------------

    @operation
    def create_folder(
        self,
        name: str,
        *,
        description: str | None = None,
        parent: Ref | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Op[Folder[M]]:
        """A folder: top-level, or inside `parent`."""
        fields = {
            "name": name,
            "description": description,
            "parent_id": _id(parent) if parent is not None else None,
            "metadata": metadata,
        }
        body = NewFolderBody.model_validate({k: v for k, v in fields.items() if v is not None})
        found = yield from json_of(self._session, Call("POST", "/v1/folders", json=body.as_json()))
        return self._folder(found)

    @operation
    def create_synced_folder(
        self,
        name: str,
        *,
        integration: Ref,
        prefix: str = "",
        parent: Ref | None = None,
        sync_interval_s: int | None = None,
    ) -> Op[Folder[M]]:
        """A folder that mirrors `prefix` of the integration's bucket (key paths become
        subfolders); its first sync runs at once (`sync_job_id`). Uploads into it are
        refused: put objects in the bucket."""
        cloud_sync: dict[str, Any] = {"integration_id": _id(integration), "prefix": prefix}
        if sync_interval_s is not None:
            cloud_sync["sync_interval_s"] = sync_interval_s
        fields = {
            "name": name,
            "parent_id": _id(parent) if parent is not None else None,
            "cloud_sync": cloud_sync,
        }
        body = NewFolderBody.model_validate({k: v for k, v in fields.items() if v is not None})
        found = yield from json_of(self._session, Call("POST", "/v1/folders", json=body.as_json()))
        return self._folder(found)

    @operation
    def sync_folder(self, folder: Ref) -> Op[Job[M]]:
        """Sync a cloud-synced folder with its bucket now: the job (wait on it)."""
        started = yield from json_of(self._session, Call("POST", f"/v1/folders/{_id(folder)}/sync"))
        return (yield from type(self).get_job.fn(self, started["job_id"]))

    @operation
    def get_folder(self, folder_id: Ref) -> Op[Folder[M]]:
        found = yield from json_of(self._session, Call("GET", f"/v1/folders/{_id(folder_id)}"))
        return self._folder(found)

    @operation
    def get_folder_by_path(self, path: str) -> Op[Folder[M]]:
        """The folder at `top/sub/name` (names from the top level)."""
        found = yield from type(self).resolve.fn(self, path)
        if not isinstance(found, Folder):
            raise NotFound("not_found", f"{path} is a file, not a folder", {"path": path})
        return found

    @listing
    def list_folders(self, parent: Ref | None = None) -> Feed[Folder[M]]:
        """The top-level folders the caller sees (a member: those shared with them), or
        the subfolders of `parent`."""
        params = {"parent_id": _id(parent)} if parent is not None else {}
        yield from self._pages("/v1/folders", params, make=self._folder)

    @operation
    def make_folders(self, path: str) -> Op[Folder[M]]:
        """The folder at `top/sub/name`, creating the missing ones along the path."""
        names = split_path(path)
        if not names:
            raise Invalid("invalid_path", "the path names no folder", {"path": path})
        current: Folder[M] | None = None
        for depth, name in enumerate(names):
            found = yield from self._child_folder(current, name, names[: depth + 1])
            if found is None:
                try:
                    found = yield from type(self).create_folder.fn(self, name, parent=current)
                except Conflict as error:
                    if error.code != "name_taken":
                        raise
                    # Made by someone else meanwhile: take it.
                    found = yield from self._child_folder(current, name, names[: depth + 1])
                    if found is None:
                        raise
            current = found
        assert current is not None
        return current

    def _child_folder(
        self, parent: Folder[M] | None, name: str, where: list[str]
    ) -> Op[Folder[M] | None]:
        matches: list[Folder[M]] = []
        params = {"parent_id": parent.id} if parent is not None else {}
        cursor = None
        while True:
            query = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = yield from json_of(self._session, Call("GET", "/v1/folders", params=query))
            matches += [
                self._folder(f) for f in page["items"] if f["name"].casefold() == name.casefold()
            ]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        exact = [f for f in matches if f.name == name] or matches
        if len(exact) > 1:
            raise Conflict(
                "ambiguous_path",
                f"{'/'.join(where)}: {len(exact)} folders have that name; name it by id",
                {
                    "path": "/".join(where),
                    "ids": [f.id for f in exact],
                    "created_by": [f.created_by for f in exact],
                },
            )
        return exact[0] if exact else None

    @operation
    def resolve(self, path: str) -> Op[Folder[M] | File[M]]:
        """The folder or file at `top/sub/name`; a bare id names either."""
        names = split_path(path)
        if not names:
            raise Invalid("invalid_path", "the path is empty", {"path": path})
        if len(names) == 1 and _is_uuid(names[0]):
            try:
                return (yield from type(self).get_folder.fn(self, names[0]))
            except NotFound:
                return (yield from type(self).get_file.fn(self, names[0]))
        current: Folder[M] | None = None
        for depth, name in enumerate(names):
            where = names[: depth + 1]
            if depth == 0 and _is_uuid(name):
                found: Folder[M] | File[M] | None = yield from type(self).get_folder.fn(self, name)
            else:
                found = yield from self._child_folder(current, name, where)
            if found is None and current is not None and depth == len(names) - 1:
                found = yield from self._file_in(current, name, where)
            if found is None:
                shown = "/".join(where)
                raise NotFound(
                    "not_found",
                    f"{shown}: no such folder or file",
                    {"path": "/".join(names), "missing": shown},
                )
            if isinstance(found, File):
                return found
            current = found
        assert current is not None
        return current

    def _file_in(self, folder: Folder[M], name: str, where: list[str]) -> Op[File[M] | None]:
        matches: list[File[M]] = []
        cursor = None
        while True:
            query: dict[str, Any] = {"q": name, "folder_id": folder.id, "limit": 1000}
            if cursor:
                query["cursor"] = cursor
            page = yield from json_of(self._session, Call("GET", "/v1/search", params=query))
            matches += [
                self._file(f)
                for f in page["items"]
                if f.get("type") == "file" and f["folder_id"] == folder.id and f["name"] == name
            ]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if len(matches) > 1:
            raise Conflict(
                "ambiguous_path",
                f"{'/'.join(where)}: {len(matches)} files have that name; name it by id",
                {"path": "/".join(where), "ids": [f.id for f in matches]},
            )
        return matches[0] if matches else None

    # -- files ---------------------------------------------------------------------------

    @operation
    def get_file(self, file_id: Ref) -> Op[File[M]]:
        """A file, with the datasets it is linked to."""
        found = yield from json_of(self._session, Call("GET", f"/v1/files/{_id(file_id)}"))
        return self._file(found)

    @operation
    def get_file_by_path(self, path: str) -> Op[File[M]]:
        found = yield from type(self).resolve.fn(self, path)
        if not isinstance(found, File):
            raise NotFound("not_found", f"{path} is a folder, not a file", {"path": path})
        return found

    @operation
    def download_many(
        self,
        files: Sequence[tuple[File[M], PathLike]],
        *,
        progress: transfer.Progress | None = None,
        parallel: int = transfer.PARALLEL,
        told: transfer.Told | None = None,
        overwrite: bool = True,
    ) -> Op[list[Path]]:
        """Files to local paths, side by side; each resumes a download that stopped, and
        one already there (its bytes; a DICOM series' instances) is not downloaded again:
        `told(path, "kept")`, or `told(path, "replaced")` for one that differed (without
        `overwrite`, left as it was: `told(path, "differs")`)."""
        ops = [
            transfer.download(
                self._session, f.model_dump(), Path(dest), progress, told, overwrite=overwrite
            )
            for f, dest in files
        ]
        paths: list[Path] = yield Gather(ops, parallel)
        return paths

    @operation
    def move(self, items: Iterable[Ref], target: Ref, *, dry_run: bool = False) -> Op[Impact]:
        """Move files and folders into `target`, all or nothing; `dry_run` tells what
        would move and which datasets would lose links, changing nothing."""
        files, folders = _split(items)
        body = MoveBody(file_ids=files, folder_ids=folders, target_folder_id=_id(target))
        if dry_run:
            body.dry_run = True
        found = yield from json_of(self._session, Call("POST", "/v1/move", json=body.as_json()))
        return Impact.model_validate(found)

    @operation
    def delete(self, items: Iterable[Ref], *, dry_run: bool = False) -> Op[Impact]:
        """Delete files and folders (with all they hold), all or nothing; `dry_run`
        tells the impact, changing nothing."""
        files, folders = _split(items)
        body = DeleteBody(file_ids=files, folder_ids=folders)
        if dry_run:
            body.dry_run = True
        found = yield from json_of(self._session, Call("POST", "/v1/delete", json=body.as_json()))
        return Impact.model_validate(found)

    @listing
    def duplicates_of(self, file: Ref) -> Feed[File[M]]:
        """The other files the caller may see that hold the same bytes (sha256)."""
        yield from self._pages(f"/v1/files/{_id(file)}/duplicates", {}, make=self._file)

    @listing
    def trash(self) -> Feed[TrashItem]:
        """What was deleted where the caller may see, newest first (a folder's contents
        come back with it, so they are not listed)."""
        yield from self._pages("/v1/trash", {}, make=TrashItem.model_validate)

    @operation
    def restore(self, *, files: Iterable[Ref] = (), folders: Iterable[Ref] = ()) -> Op[Restored]:
        """Put trashed files and folders back where they were, with their dataset
        links; trashed folders above them come back too."""
        body = RestoreBody(file_ids=[_id(f) for f in files], folder_ids=[_id(f) for f in folders])
        found = yield from json_of(
            self._session, Call("POST", "/v1/trash/restore", json=body.as_json())
        )
        return Restored.model_validate(found)

    @operation
    def empty_trash(self) -> Op[Emptied]:
        """Purge what the caller could restore; the bytes are then reclaimed."""
        found = yield from json_of(self._session, Call("DELETE", "/v1/trash"))
        return Emptied.model_validate(found)

    @operation
    def purge(self, *, files: Iterable[Ref] = (), folders: Iterable[Ref] = ()) -> Op[Emptied]:
        """ "Delete forever": these trashed files and folders (a folder with what was
        trashed inside it) go for good; what the caller could not restore stays."""
        params = {
            "file_ids": ",".join(_id(f) for f in files),
            "folder_ids": ",".join(_id(f) for f in folders),
        }
        found = yield from json_of(self._session, Call("DELETE", "/v1/trash", params=params))
        return Emptied.model_validate(found)

    @operation
    def re_encode(self, files: Iterable[Ref]) -> Op[Job[M]]:
        """Browser-playable H.264/AAC MP4 renditions of videos and image sequences (up
        to 1,000 a call; the editor role on each one's folder): the job, to `wait` on.
        `File.content(rendition="web")` then reads one."""
        body = ReEncodeBody(file_ids=[_id(f) for f in files])
        started = yield from json_of(
            self._session, Call("POST", "/v1/files/re-encode", json=body.as_json())
        )
        return (yield from type(self).get_job.fn(self, started["job_id"]))

    @listing
    def search(
        self,
        text: str | None = None,
        *,
        kind: str | Sequence[str] | None = None,
        folder: Ref | None = None,
        in_dataset: bool | None = None,
        metadata: dict[str, Any] | None = None,
        order: str | None = None,
        desc: bool = False,
    ) -> Feed[Folder[M] | File[M]]:
        """Files and folders whose name contains `text` and that match the filters (as
        `Folder.items` takes them), across everything the caller may see (or below
        `folder`); each with its `path`. Without `order`, in a stable order of the
        server's (the fastest)."""
        params = _filters(kind, text, in_dataset, metadata, order, desc)
        if folder is not None:
            params["folder_id"] = _id(folder)
        yield from self._pages("/v1/search", params)

    @operation
    def lookup_files(self, ids: Iterable[Ref]) -> Op[tuple[list[File[M]], list[str]]]:
        """Files by id, up to 1,000 at a time: those the caller may see, in the order
        asked, and the ids of the others (no such file, or not the caller's to see)."""
        found: list[File[M]] = []
        missing: list[str] = []
        wanted = [_id(i) for i in ids]
        for start in range(0, len(wanted), BULK):
            body = LookupBody(ids=wanted[start : start + BULK])
            page = yield from json_of(
                self._session, Call("POST", "/v1/files/lookup", json=body.as_json())
            )
            found += [self._file(f) for f in page["items"]]
            missing += page["not_found"]
        return found, missing

    @operation
    def metadata_schema(self) -> Op[MetadataSchema]:
        """The organisation's metadata schema: `keys` as `{key: {type, values?,
        dimension?, retired}}`."""
        found = yield from json_of(self._session, Call("GET", "/v1/metadata-schema"))
        return MetadataSchema.model_validate(found)

    @operation
    def set_metadata_schema(self, keys: dict[str, dict[str, Any]]) -> Op[MetadataSchema]:
        """Replace the metadata schema (org admins): `{key: {"type": "number"}, ...}`;
        types number, text, boolean, datetime, uuid, enum (`values`), embedding
        (`dimension`); `retired: True` stops checking a key, False restores it."""
        body = MetadataSchemaBody.model_validate({"keys": keys})
        found = yield from json_of(
            self._session, Call("PUT", "/v1/metadata-schema", json=body.as_json())
        )
        return MetadataSchema.model_validate(found)

    @operation
    def update_files(
        self, updates: Sequence[dict[str, Any]], *, metadata_mode: str = "merge"
    ) -> Op[list[File[M]]]:
        """Change up to 1,000 files in one call, all or nothing: each update is `{id,
        name?, description?, metadata?}`; `metadata_mode` "merge" sets the keys given
        (null removes one), "replace" replaces it all."""
        body = FileUpdatesBody.model_validate(
            {
                "updates": [{**u, "id": _id(u["id"])} for u in updates],
                "metadata_mode": metadata_mode,
            }
        )
        found = yield from json_of(self._session, Call("PATCH", "/v1/files", json=body.as_json()))
        return [self._file(f) for f in found["items"]]

    # -- upload sessions -----------------------------------------------------------------

    @operation
    def get_upload_session(self, session_id: str) -> Op[UploadSession]:
        found = yield from json_of(self._session, Call("GET", f"/v1/uploads/{session_id}"))
        return UploadSession.model_validate(found)

    @operation
    def complete_upload_session(self, session_id: str) -> Op[File[M]]:
        found = yield from json_of(
            self._session, Call("POST", f"/v1/uploads/{session_id}/complete")
        )
        return self._file((yield from transfer.completed_file(self._session, found)))

    @operation
    def abort_upload_session(self, session_id: str) -> Op[None]:
        yield from exchange(self._session, Call("DELETE", f"/v1/uploads/{session_id}"))

    # -- datasets ------------------------------------------------------------------------

    @operation
    def create_dataset(
        self,
        name: str,
        *,
        description: str | None = None,
        synced_folder: Ref | None = None,
        backing_folder: bool = False,
    ) -> Op[Dataset[M]]:
        """A dataset; synced with a folder, it follows the folder (and all below).
        `backing_folder`: a new top-level folder of its name is made for it to follow."""
        fields = {
            "name": name,
            "description": description,
            "synced_folder_id": _id(synced_folder) if synced_folder is not None else None,
            "create_backing_folder": True if backing_folder else None,
        }
        body = NewDatasetBody.model_validate({k: v for k, v in fields.items() if v is not None})
        found = yield from json_of(self._session, Call("POST", "/v1/datasets", json=body.as_json()))
        return _bind(self, Dataset, found)

    @operation
    def get_dataset(self, dataset_id: Ref) -> Op[Dataset[M]]:
        found = yield from json_of(self._session, Call("GET", f"/v1/datasets/{_id(dataset_id)}"))
        return _bind(self, Dataset, found)

    @listing
    def list_datasets(self) -> Feed[Dataset[M]]:
        """The datasets the caller sees."""
        yield from self._pages("/v1/datasets", {}, make=lambda d: _bind(self, Dataset, d))

    # -- jobs ----------------------------------------------------------------------------

    @operation
    def get_job(self, job_id: Ref) -> Op[Job[M]]:
        found = yield from json_of(self._session, Call("GET", f"/v1/jobs/{_id(job_id)}"))
        return _bind(self, Job, found)

    @operation
    def cancel_job(self, job_id: Ref) -> Op[Job[M]]:
        """Stop a job (an upload session, import or DICOM job): what it did stays, the
        rest stops; again is no error. A finished job raises Conflict (`job_finished`)."""
        found = yield from json_of(self._session, Call("POST", f"/v1/jobs/{_id(job_id)}/cancel"))
        return _bind(self, Job, found)

    @operation
    def wait_for_job(
        self, job_id: Ref, *, progress: JobProgress | None = None, timeout: float | None = None
    ) -> Op[Job[M]]:
        job = yield from type(self).get_job.fn(self, job_id)
        return (yield from type(job).wait.fn(job, progress=progress, timeout=timeout))

    # -- cloud integrations ----------------------------------------------------------------

    @operation
    def create_integration(
        self,
        name: str,
        *,
        bucket: str,
        access_key: str,
        secret_key: str,
        session_token: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        provider: str = "s3",
    ) -> Op[Integration[M]]:
        """Register a bucket (organisation admins); its credentials are never returned.
        `session_token` goes with temporary keys (STS). `provider="gcs"`: Google Cloud
        Storage with an HMAC key (its XML API)."""
        fields = {
            "name": name,
            "provider": provider,
            "bucket": bucket,
            "access_key": access_key,
            "secret_key": secret_key,
            "session_token": session_token,
            "endpoint": endpoint,
            "region": region,
        }
        body = NewIntegrationBody.model_validate({k: v for k, v in fields.items() if v is not None})
        found = yield from json_of(
            self._session, Call("POST", "/v1/integrations", json=body.as_json())
        )
        return _bind(self, Integration, found)

    @operation
    def get_integration(self, integration_id: Ref) -> Op[Integration[M]]:
        found = yield from json_of(
            self._session, Call("GET", f"/v1/integrations/{_id(integration_id)}")
        )
        return _bind(self, Integration, found)

    @operation
    def rotate_integration(
        self,
        integration: Ref,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        events_token: bool = False,
    ) -> Op[Integration[M]]:
        """New keys (checked against the bucket before they are kept), and/or a new
        events token (`events_token` of the answer, shown this once)."""
        fields: dict[str, Any] = {
            "access_key": access_key,
            "secret_key": secret_key,
            "session_token": session_token,
        }
        if events_token:
            fields["rotate_events_token"] = True
        body = IntegrationChangeBody.model_validate({k: v for k, v in fields.items() if v})
        found = yield from json_of(
            self._session,
            Call("PATCH", f"/v1/integrations/{_id(integration)}", json=body.as_json()),
        )
        return _bind(self, Integration, found)

    @operation
    def share_integration(self, integration: Ref, users: Iterable[Ref]) -> Op[Integration[M]]:
        """Who may use it besides the org admins (org admins): the list replaces the one
        before, `[]` takes it back from everyone (the API takes no version: of two admins
        changing it at once, the later write wins). A user that does not exist is
        Invalid (`unknown_users`)."""
        body = IntegrationChangeBody(shared_with=[_user_id(u) for u in users])
        found = yield from json_of(
            self._session,
            Call("PATCH", f"/v1/integrations/{_id(integration)}", json=body.as_json()),
        )
        return _bind(self, Integration, found)

    @listing
    def list_integrations(self) -> Feed[Integration[M]]:
        yield from self._pages("/v1/integrations", {}, make=lambda d: _bind(self, Integration, d))

    # -- webhooks (organisation admins) -----------------------------------------------------

    @operation
    def create_webhook(
        self, url: str, events: Sequence[str], *, secret: str | None = None
    ) -> Op[Webhook[M]]:
        """Events posted to `url`, signed as Standard Webhooks says; the answer's `secret`
        (whsec_..., made unless given) is shown this once."""
        fields: dict[str, Any] = {"url": url, "events": list(events)}
        if secret is not None:
            fields["secret"] = secret
        body = NewWebhookBody.model_validate(fields)
        found = yield from json_of(self._session, Call("POST", "/v1/webhooks", json=body.as_json()))
        return _bind(self, Webhook, found)

    @listing
    def list_webhooks(self) -> Feed[Webhook[M]]:
        yield from self._pages("/v1/webhooks", {}, make=lambda d: _bind(self, Webhook, d))

    @operation
    def delete_webhook(self, webhook: Ref) -> Op[None]:
        yield from exchange(self._session, Call("DELETE", f"/v1/webhooks/{_id(webhook)}"))

    @operation
    def rotate_webhook_secret(
        self, webhook: Ref, *, secret: str | None = None, keep_previous_for_s: float | None = None
    ) -> Op[Webhook[M]]:
        """A new signing secret (made unless given), in the answer's `secret` this once;
        the one before signs beside it for `keep_previous_for_s` (24 h unless given, 0 to
        7 days), so receivers can switch without missing a delivery."""
        body = WebhookSecretRotationBody.model_validate(
            {"secret": secret, "keep_previous_for_s": keep_previous_for_s}
        )
        found = yield from json_of(
            self._session,
            Call("POST", f"/v1/webhooks/{_id(webhook)}/secret", json=body.as_json()),
        )
        return _bind(self, Webhook, found)

    @operation
    def retry_webhook_delivery(self, webhook: Ref, delivery: Ref) -> Op[WebhookDelivery]:
        """A delivery sent again now under its message id (failed, delivered or pending),
        its attempts counted from now."""
        found = yield from json_of(
            self._session,
            Call("POST", f"/v1/webhooks/{_id(webhook)}/deliveries/{_id(delivery)}/retry"),
        )
        return WebhookDelivery.model_validate(found)

    @listing
    def webhook_deliveries(self, webhook: Ref) -> Feed[WebhookDelivery]:
        """A webhook's deliveries, newest first (status, attempts, last error)."""
        yield from self._pages(
            f"/v1/webhooks/{_id(webhook)}/deliveries", {}, make=WebhookDelivery.model_validate
        )

    # -- audit ---------------------------------------------------------------------------

    @listing
    def audit(
        self,
        *,
        subject: Ref | Sequence[Ref] | None = None,
        actor: Ref | None = None,
        type: str | Sequence[str] | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> Feed[AuditEvent]:
        """Events in time order, for what the caller may see (a member names a subject
        they see, or themselves as the actor)."""
        params: list[tuple[str, str]] = []
        subjects = [subject] if isinstance(subject, str | uuid.UUID | Data) else subject or []
        params += [("subject_id", _id(s)) for s in subjects]
        if actor is not None:
            params.append(("actor_id", _id(actor)))
        types = [type] if isinstance(type, str) else type or []
        params += [("type", t) for t in types]
        for key, value in (("since", since), ("until", until)):
            if value is not None:
                params.append((key, value.isoformat() if isinstance(value, datetime) else value))
        cursor: str | None = None
        while True:
            query = [*params, ("limit", "1000"), *([("cursor", cursor)] if cursor else [])]
            page = yield from json_of(self._session, Call("GET", "/v1/audit", params=query))
            for event in page["items"]:
                yield Emit(AuditEvent.model_validate(event))
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # -- users and keys --------------------------------------------------------------------

    @operation
    def me(self) -> Op[User]:
        return User.model_validate((yield from json_of(self._session, Call("GET", "/v1/users/me"))))

    @operation
    def create_user(self, email: str, name: str, *, org_role: str = "member") -> Op[NewUser]:
        """A user of the organisation (org admins); its first key is in `api_key`."""
        body = NewUserBody(email=email, name=name, org_role=org_role)  # type: ignore[arg-type]
        found = yield from json_of(self._session, Call("POST", "/v1/users", json=body.as_json()))
        return NewUser.model_validate(found)

    @listing
    def list_users(self) -> Feed[User]:
        yield from self._pages("/v1/users", {}, make=User.model_validate)

    @operation
    def issue_key(self, user: Ref) -> Op[NewApiKey]:
        """A new API key (shown only here); rotate by issuing one, then revoking the old."""
        found = yield from json_of(self._session, Call("POST", f"/v1/users/{_id(user)}/keys"))
        return NewApiKey.model_validate(found)

    @operation
    def list_keys(self, user: Ref) -> Op[list[ApiKey]]:
        found = yield from json_of(self._session, Call("GET", f"/v1/users/{_id(user)}/keys"))
        return [ApiKey.model_validate(k) for k in found["items"]]

    @operation
    def revoke_key(self, key: Ref) -> Op[None]:
        yield from exchange(self._session, Call("DELETE", f"/v1/keys/{_id(key)}"))


def _split(items: Iterable[Ref]) -> tuple[list[str], list[str]]:
    """File ids and folder ids; a bare id is taken as a file's unless it is a Folder."""
    files: list[str] = []
    folders: list[str] = []
    for item in items:
        if isinstance(item, FolderData):
            folders.append(item.id)
        elif isinstance(item, FileData):
            files.append(item.id)
        else:
            raise FilesError(
                "ambiguous_item",
                f"{item}: pass a File or Folder (a bare id does not say which it is)",
            )
    return files, folders


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def split_path(path: str) -> list[str]:
    """`top/sub/name` as names; empty parts (`a//b`, a leading `/`) are dropped."""
    return [part for part in path.split("/") if part]


# The extensions of the images the platform accepts, by their MIME type (the first is
# added); as the gateway names a group's download (services/gateway/compose.py): this
# wheel has none of the platform's code.
IMAGE_EXTENSIONS = {
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg", ".jpe"),
    "image/gif": (".gif",),
    "image/tiff": (".tif", ".tiff"),
    "image/webp": (".webp",),
    "image/bmp": (".bmp",),
}


# A name's length on the platform (its `rules.MAX_NAME`): an extension added to a group's
# name keeps it within, as the gateway's `download_name` does.
MAX_NAME = 300


def local_name(file: FileData) -> str:
    """The name a file is downloaded as, fit for the local disk. An image group's or
    sequence's content is its first image: it takes that image's extension (`cats.png`),
    so the OS opens it as one; a long name gives way to it, as the gateway's does."""
    name = file.name
    extensions = IMAGE_EXTENSIONS.get(file.mime_type)
    if (
        file.kind in ("image_group", "image_sequence")
        and extensions
        and not name.lower().endswith(extensions)
    ):
        name = name[: MAX_NAME - len(extensions[0])] + extensions[0]
    return safe_name(name)


# What no Windows file name holds (and `/`, `\\`: separators), replaced on every OS so a
# download is named the same everywhere; a name that is one of Windows' devices (before
# its first dot, case aside: `nul.txt`) is prefixed, never opened as the device.
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"0123456789", "¹", "²", "³"]}
)
# The most a name takes on common file systems (ext4, APFS: 255 bytes of UTF-8), less
# what a download adds while it runs (`.part`) and to a name taken twice (` (12345)`;
# `transfer.numbered` cuts the stem for more).
MAX_LOCAL_BYTES = 255 - len(".part") - len(" (12345)")


def safe_name(name: str) -> str:
    """A name fit for the local disk, the same on every OS: never a path of its own
    (`..`, `.`, separators, a Windows drive `C:`), no character Windows refuses (each
    `_`), no trailing dots or spaces (which Windows drops), no device name (`CON`,
    `nul.txt`: `_` before it), at most MAX_LOCAL_BYTES (the end of the stem gives way,
    the extension kept)."""
    cleaned = _UNSAFE.sub("_", name)
    if cleaned in (".", ".."):
        cleaned = cleaned.replace(".", "_")
    cleaned = cleaned.rstrip(". ") or "_"
    if cleaned.split(".", 1)[0].rstrip(" ").upper() in _DEVICES:
        cleaned = "_" + cleaned
    if len(cleaned.encode()) > MAX_LOCAL_BYTES:
        stem, dot, ext = cleaned.rpartition(".")
        if not dot or len(ext.encode()) > 32:
            stem, ext = cleaned, ""
        tail = f".{ext}" if ext else ""
        room = MAX_LOCAL_BYTES - len(tail.encode())
        # Cut at a character's boundary: no half of a UTF-8 sequence.
        stem = stem.encode()[:room].decode(errors="ignore").rstrip(". ") or "_"
        cleaned = stem + tail
    return cleaned
