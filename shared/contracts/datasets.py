"""Events of the datasets context: datasets, their files, folder sync, and sharing."""

from __future__ import annotations

import uuid
from typing import ClassVar

from shared.contracts.envelope import Event

# Ids per FilesLinked/FilesUnlinked event, so that one event stays well under
# Kafka's default message size while 100,000 files are linked in one call.
IDS_PER_EVENT = 5_000


def dataset_stream(dataset_id: uuid.UUID) -> str:
    return f"dataset-{dataset_id}"


class DatasetCreated(Event):
    type: ClassVar[str] = "datasets.DatasetCreated"
    dataset_id: uuid.UUID
    name: str
    description: str = ""
    synced_folder_id: uuid.UUID | None = None


class DatasetUpdated(Event):
    type: ClassVar[str] = "datasets.DatasetUpdated"
    dataset_id: uuid.UUID
    name: str
    description: str


class DatasetDeleted(Event):
    type: ClassVar[str] = "datasets.DatasetDeleted"
    dataset_id: uuid.UUID


class FilesLinked(Event):
    """reason: "added" (by a user), "synced" (the file is in the synced folder) or
    "restored" (the file came back from the trash with the links it lost)."""

    type: ClassVar[str] = "datasets.FilesLinked"
    dataset_id: uuid.UUID
    file_ids: list[uuid.UUID]
    reason: str


class FilesUnlinked(Event):
    """reason: "removed", "file_deleted" or "moved_out" (of the synced folder)."""

    type: ClassVar[str] = "datasets.FilesUnlinked"
    dataset_id: uuid.UUID
    file_ids: list[uuid.UUID]
    reason: str


class DatasetUnsynced(Event):
    """The synced folder was deleted: the dataset keeps its files and stops following."""

    type: ClassVar[str] = "datasets.DatasetUnsynced"
    dataset_id: uuid.UUID
    folder_id: uuid.UUID
    reason: str


class DatasetResynced(Event):
    """The synced folder it stopped following came back from the trash: it follows it
    again."""

    type: ClassVar[str] = "datasets.DatasetResynced"
    dataset_id: uuid.UUID
    folder_id: uuid.UUID


class DatasetShared(Event):
    """The dataset is shared with a user, with a role: "user", "editor" or "admin".
    Sharing with someone it is already shared with changes their role."""

    type: ClassVar[str] = "datasets.DatasetShared"
    dataset_id: uuid.UUID
    user_id: uuid.UUID
    role: str


class DatasetUnshared(Event):
    type: ClassVar[str] = "datasets.DatasetUnshared"
    dataset_id: uuid.UUID
    user_id: uuid.UUID


EVENTS: tuple[type[Event], ...] = (
    DatasetCreated,
    DatasetUpdated,
    DatasetDeleted,
    FilesLinked,
    FilesUnlinked,
    DatasetUnsynced,
    DatasetResynced,
    DatasetShared,
    DatasetUnshared,
)
