"""Datasets, pure: what is recorded when files are linked, unlinked, synced.

Decisions take the dataset's state and return events with the versions they
make on the dataset's stream. Ids come in with the command; no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from shared.contracts import datasets as ev
from shared.contracts import rules
from shared.contracts.envelope import Change, Event
from shared.kit.errors import Refused


@dataclass(frozen=True)
class Dataset:
    id: uuid.UUID
    version: int
    name: str
    synced_folder_id: uuid.UUID | None


def _unstorable(text: str) -> bool:
    """NUL and lone surrogates, which JSON can carry but PostgreSQL text cannot."""
    return "\x00" in text or (not text.isascii() and not _encodes(text))


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


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
    stream = ev.dataset_stream(dataset_id)
    return [Change(stream, version + i, e) for i, e in enumerate(events, start=1)]


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
