"""Datasets, their files and their sharing: the datasets context's part of the API."""

from __future__ import annotations

import uuid

from pydantic import Field

from shared.api.catalog import File
from shared.api.common import IdName, Page, Shape, Strict


class NewDataset(Strict):
    name: str = Field(examples=["training set"])
    description: str = Field("", max_length=10_000)
    synced_folder_id: uuid.UUID | None = Field(None, description="follow this folder")
    create_backing_folder: bool = Field(
        False, description="make a top-level folder of the dataset's name and follow it"
    )


class DatasetChanges(Strict):
    name: str | None = None
    description: str | None = Field(None, max_length=10_000)


class FileIds(Strict):
    file_ids: list[uuid.UUID] = Field(max_length=100_000)


class Sharing(Strict):
    emails: list[str] = Field(min_length=1, max_length=1000)
    role: str = Field(description="user, editor or admin", examples=["user"])


class Dataset(Shape):
    id: str
    name: str
    description: str
    synced_folder_id: str | None
    synced: bool
    unsynced_from_folder_id: str | None
    file_count: int
    created_at: str
    created_by: str
    my_role: str | None
    version: int = Field(
        description="a key to watch, compared for equality: it changes at every change of"
        " the dataset the caller may see (its files they see, name, description, sync, their"
        " role), and not at changes to files they may not see"
    )


class Datasets(Page):
    items: list[Dataset]


class DatasetFiles(Page):
    items: list[File]


class Added(Shape):
    added: int


class Removed(Shape):
    removed: int


class Linked(Shape):
    items: list[IdName]


class Share(Shape):
    user_id: str
    role: str
    email: str | None = Field(None, description="absent when the ACL context could not be asked")
    name: str | None = None


class Shares(Page):
    items: list[Share]
