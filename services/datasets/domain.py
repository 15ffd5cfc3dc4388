"""Datasets, pure: what is recorded when files are linked, unlinked, synced, shared;
and who may do what with a dataset.

Decisions take the dataset's state and return events with the versions they
make on the dataset's stream. Ids come in with the command; no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.contracts import datasets as ev
from shared.contracts import rules
from shared.contracts.envelope import Change, Event, appended
from shared.kit.access import Access, require_role, valid_role
from shared.kit.errors import Refused


@dataclass(frozen=True)
class Dataset:
    id: uuid.UUID
    version: int
    name: str
    synced_folder_id: uuid.UUID | None
    created_by: str = ""


# -- who may do what ---------------------------------------------------------------
# A dataset's roles: "user" sees it and the files in it the caller may see, "editor"
# also adds and removes files and renames it, "admin" also deletes and shares it.


def role_of(access: Access, created_by: str, shared_role: str | None) -> str | None:
    """The caller's role on a dataset: its creator and org admins are its admins,
    anyone else has the role it was shared with them with, if any."""
    if access.org_admin or access.user_id == created_by:
        return "admin"
    return shared_role


def require(role: str | None, needed: str, dataset_id: uuid.UUID) -> str:
    """The caller's role, if at least `needed`; a dataset they do not see does not exist."""
    return require_role(role, needed, f"dataset {dataset_id}", on="the dataset")


def _unstorable(text: str) -> bool:
    """NUL, which JSON can carry but PostgreSQL text cannot (a lone surrogate never
    gets this far: shared/kit/http.py refuses it as malformed JSON)."""
    return "\x00" in text


def valid_name(name: str) -> str:
    problem = rules.name_problem(name, "dataset name")
    if problem is None and _unstorable(name):
        problem = "the dataset name contains characters that are not valid Unicode text"
    if problem:
        shown = name[: rules.MAX_NAME].encode(errors="replace").decode()
        raise Refused(422, "invalid_name", problem, {"name": shown})
    return name


def valid_description(description: str) -> str:
    if _unstorable(description):
        raise Refused(
            422,
            "invalid_description",
            "the description contains NUL or characters that are not valid Unicode text",
        )
    return description


def _numbered(dataset_id: uuid.UUID, version: int, events: Sequence[Event]) -> list[Change]:
    return appended(ev.dataset_stream(dataset_id), events, after=version)


def _chunks(file_ids: Sequence[uuid.UUID]) -> list[list[uuid.UUID]]:
    ids = list(file_ids)
    return [ids[i : i + ev.IDS_PER_EVENT] for i in range(0, len(ids), ev.IDS_PER_EVENT)]


def create(
    dataset_id: uuid.UUID,
    name: str,
    description: str,
    synced_folder_id: uuid.UUID | None,
    files_in_folder: Sequence[uuid.UUID],
) -> list[Change]:
    """A synced dataset starts with the files below its folder."""
    created = ev.DatasetCreated(
        dataset_id=dataset_id,
        name=valid_name(name),
        description=valid_description(description),
        synced_folder_id=synced_folder_id,
    )
    linked = [
        ev.FilesLinked(dataset_id=dataset_id, file_ids=chunk, reason="synced")
        for chunk in _chunks(files_in_folder)
    ]
    return _numbered(dataset_id, 0, [created, *linked])


def update(
    dataset: Dataset, description: str, *, name: str | None, new_description: str | None
) -> list[Change]:
    changed_name = dataset.name if name is None else valid_name(name)
    changed_description = (
        description if new_description is None else valid_description(new_description)
    )
    if changed_name == dataset.name and changed_description == description:
        return []
    event = ev.DatasetUpdated(
        dataset_id=dataset.id, name=changed_name, description=changed_description
    )
    return _numbered(dataset.id, dataset.version, [event])


def delete(dataset: Dataset) -> list[Change]:
    return _numbered(dataset.id, dataset.version, [ev.DatasetDeleted(dataset_id=dataset.id)])


def link(dataset: Dataset, new_file_ids: Sequence[uuid.UUID], reason: str) -> list[Change]:
    """new_file_ids: the files not yet in the dataset (adding one twice is no error)."""
    return _numbered(
        dataset.id,
        dataset.version,
        [
            ev.FilesLinked(dataset_id=dataset.id, file_ids=chunk, reason=reason)
            for chunk in _chunks(new_file_ids)
        ],
    )


def unlink(dataset: Dataset, member_ids: Sequence[uuid.UUID], reason: str) -> list[Change]:
    return _numbered(
        dataset.id,
        dataset.version,
        [
            ev.FilesUnlinked(dataset_id=dataset.id, file_ids=chunk, reason=reason)
            for chunk in _chunks(member_ids)
        ],
    )


def unsync(dataset: Dataset, folder_id: uuid.UUID) -> list[Change]:
    event = ev.DatasetUnsynced(
        dataset_id=dataset.id, folder_id=folder_id, reason="the synced folder was deleted"
    )
    return _numbered(dataset.id, dataset.version, [event])


def resync(dataset: Dataset, folder_id: uuid.UUID) -> list[Change]:
    return _numbered(
        dataset.id,
        dataset.version,
        [ev.DatasetResynced(dataset_id=dataset.id, folder_id=folder_id)],
    )


def share(
    dataset: Dataset, shares: Mapping[str, str], user_ids: Sequence[uuid.UUID], role: str
) -> list[Change]:
    """shares: the dataset's current shares, {user id: role}. Sharing again with the
    same role records nothing; the creator is always its admin, so is left as is."""
    canonical = valid_role(role)
    events: list[Event] = [
        ev.DatasetShared(dataset_id=dataset.id, user_id=user_id, role=canonical)
        for user_id in dict.fromkeys(user_ids)
        if str(user_id) != dataset.created_by and shares.get(str(user_id)) != canonical
    ]
    return _numbered(dataset.id, dataset.version, events)


def unshare(dataset: Dataset, shares: Mapping[str, str], user_id: uuid.UUID) -> list[Change]:
    if str(user_id) == dataset.created_by:
        raise Refused(
            409,
            "creator_stays_admin",
            f"user {user_id} created dataset {dataset.name!r} and stays its admin",
            {"user_id": str(user_id)},
        )
    if str(user_id) not in shares:
        raise Refused(
            404,
            "not_found",
            f"dataset {dataset.name!r} is not shared with user {user_id}",
            {"user_id": str(user_id)},
        )
    return _numbered(
        dataset.id, dataset.version, [ev.DatasetUnshared(dataset_id=dataset.id, user_id=user_id)]
    )


def files_refused(
    wanted: Sequence[uuid.UUID], found: Sequence[uuid.UUID], code: str, why: str
) -> None:
    """A bulk request over files is all or none: those of `wanted` not `found` refuse it
    (404 `code`), the first ten named in the message (`why` says what they are not),
    the first thousand in the details."""
    present = set(found)
    missing = [str(i) for i in wanted if i not in present]
    if missing:
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        raise Refused(
            404,
            code,
            f"{len(missing)} of these files {why}: {shown}",
            {"missing_file_ids": missing[:1000], "missing": len(missing)},
        )
