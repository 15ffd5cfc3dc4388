"""Dataset rules, given state, when a command, then events (no I/O)."""

from __future__ import annotations

import uuid

import pytest

from services.datasets import domain
from shared.contracts import datasets as ev


def dataset(version: int = 1, synced: uuid.UUID | None = None) -> domain.Dataset:
    return domain.Dataset(uuid.uuid4(), version, "cats", synced)


def test_a_synced_dataset_starts_with_the_folders_files_in_chunks() -> None:
    folder = uuid.uuid4()
    files = [uuid.uuid4() for _ in range(ev.IDS_PER_EVENT + 1)]
    changes = domain.create(uuid.uuid4(), "cats", "", folder, files)
    assert [type(c.event).__name__ for c in changes] == [
        "DatasetCreated",
        "FilesLinked",
        "FilesLinked",
    ]
    assert [c.version for c in changes] == [1, 2, 3]
    linked = [i for c in changes[1:] for i in c.event.file_ids]  # type: ignore[attr-defined]
    assert linked == files
    assert all(c.event.reason == "synced" for c in changes[1:])  # type: ignore[attr-defined]


def test_a_plain_dataset_starts_empty() -> None:
    [created] = domain.create(uuid.uuid4(), "cats", "d", None, [])
    assert isinstance(created.event, ev.DatasetCreated)
    assert created.event.synced_folder_id is None


@pytest.mark.parametrize("name", ["", "a/b", "x" * 301, "tab\tname"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(domain.Refused) as refused:
        domain.create(uuid.uuid4(), name, "", None, [])
    assert refused.value.status == 422


def test_linking_nothing_new_records_nothing() -> None:
    assert domain.link(dataset(), [], "added") == []


def test_link_and_unlink_continue_the_stream() -> None:
    d = dataset(version=4)
    [linked] = domain.link(d, [uuid.uuid4()], "added")
    [unlinked] = domain.unlink(d, [uuid.uuid4()], "file_deleted")
    assert (linked.version, unlinked.version) == (5, 5)
    assert linked.stream_id == ev.dataset_stream(d.id)


def test_update_without_change_records_nothing() -> None:
    d = dataset()
    assert domain.update(d, "desc", name="cats", new_description="desc") == []
    [renamed] = domain.update(d, "desc", name="dogs", new_description=None)
    assert renamed.event.name == "dogs"  # type: ignore[attr-defined]
    assert renamed.event.description == "desc"  # type: ignore[attr-defined]


def test_a_deleted_synced_folder_unsyncs_the_dataset() -> None:
    folder = uuid.uuid4()
    [change] = domain.unsync(dataset(synced=folder), folder)
    assert isinstance(change.event, ev.DatasetUnsynced)
    assert change.event.folder_id == folder


def test_a_bulk_request_names_the_files_it_misses_and_passes_when_none() -> None:
    wanted = [uuid.uuid4() for _ in range(100_000)]
    domain.files_refused(wanted, list(reversed(wanted)), "files_not_in_dataset", "are not in it")
    with pytest.raises(domain.Refused) as refused:
        domain.files_refused(wanted, wanted[12:], "files_not_in_dataset", "are not in it")
    assert (refused.value.status, refused.value.code) == (404, "files_not_in_dataset")
    assert refused.value.details == {
        "missing_file_ids": [str(i) for i in wanted[:12]],
        "missing": 12,
    }
    assert str(wanted[9]) in str(refused.value) and str(wanted[10]) not in str(refused.value)
