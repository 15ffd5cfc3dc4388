"""Reactions and read models name the contracts they handle, and read them typed."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.contracts import READ_BY_NO_ONE, REGISTRY
from shared.contracts import catalog as cat
from shared.contracts.envelope import Cause, Envelope, new_envelope
from shared.contracts.ingest import ImageGroupStored
from shared.contracts.upcasting import CannotUpcast, upcast
from shared.kit.reactions import REGISTRATIONS, Reactions, Received, parse

SERVICES = ("acl", "catalog", "datasets", "dicom", "ingest", "thumbnails")


def registrations() -> list[Any]:
    for service in SERVICES:
        importlib.import_module(f"services.{service}.app")  # its reactions and read models
    return [r for r in REGISTRATIONS if not r.consumer.startswith("test")]


def test_every_registration_names_a_contract_type() -> None:
    found = registrations()
    assert {r.consumer.split(".")[0] for r in found} >= set(SERVICES)
    for r in found:
        assert REGISTRY.get(r.contract.type) is r.contract, r


def test_every_published_type_has_a_consumer_or_is_declared_read_by_no_one() -> None:
    read = {r.contract.type for r in registrations()}
    unread = set(REGISTRY) - read
    assert unread == set(READ_BY_NO_ONE), (
        f"no consumer, and not in READ_BY_NO_ONE: {sorted(unread - set(READ_BY_NO_ONE))};"
        f" declared unread but read: {sorted(set(READ_BY_NO_ONE) - unread)}"
    )


def test_a_trigger_is_a_contract_class_and_has_one_handler() -> None:
    reactions = Reactions("test")

    async def handler(self: object, conn: object, events: Sequence[Received[Any]]) -> None: ...

    with pytest.raises(TypeError):
        reactions.on("catalog.FileMoved")(handler)  # type: ignore[arg-type]
    reactions.on(cat.FileMoved)(handler)
    with pytest.raises(ValueError, match="two handlers"):
        reactions.on(cat.FileMoved)(handler)


def stored(event_type: str, version: int, data: dict[str, Any]) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(),
        type=event_type,
        schema_version=version,
        stream_id="s",
        stream_version=1,
        occurred_at=datetime.now(UTC),
        actor="a",
        correlation_id="c",
        data=data,
    )


async def test_handlers_get_events_parsed_into_their_contract() -> None:
    reactions = Reactions("test.parsed")
    seen: list[Received[cat.FileMoved]] = []

    class Owner:
        @reactions.on(cat.FileMoved)
        async def when_moved(self, conn: object, moved: Sequence[Received[cat.FileMoved]]) -> None:
            seen.extend(moved)

    ids = [str(uuid.uuid4()) for _ in range(3)]
    data = {"file_id": ids[0], "from_folder_id": ids[1], "to_folder_id": ids[2]}
    other = stored("catalog.FileRenamed", 1, {"file_id": ids[0], "name": "x"})
    await reactions.bound(Owner())(None, [stored(cat.FileMoved.type, 1, data), other])
    (moved,) = seen
    assert isinstance(moved.event, cat.FileMoved)
    assert moved.event.to_folder_id == uuid.UUID(ids[2])


def test_an_event_made_here_is_not_parsed_again() -> None:
    event = cat.FileRenamed(file_id=uuid.uuid4(), name="n")
    envelope = new_envelope(
        event, stream_id="s", stream_version=1, cause=Cause(actor="a", correlation_id="c")
    )
    assert parse(envelope, cat.FileRenamed).event is event
    copied = envelope.model_copy(update={"data": {**envelope.data, "name": "m"}})
    assert parse(copied, cat.FileRenamed).event.name == "m"


def test_an_event_read_off_the_wire_is_validated_once() -> None:
    # A batch applied again after a transient failure (or read by a reaction's `ahead`,
    # then by its handler) gets the same event, not a second validation of its page.
    ids = [str(uuid.uuid4()) for _ in range(3)]
    data = {"file_id": ids[0], "from_folder_id": ids[1], "to_folder_id": ids[2]}
    envelope = stored(cat.FileMoved.type, 1, data)
    first = parse(envelope, cat.FileMoved).event
    assert parse(envelope, cat.FileMoved).event is first
    lazy = stored(cat.FileMoved.type, 1, data)
    read = parse(lazy, cat.FileMoved, lazy=True).event
    assert parse(lazy, cat.FileMoved).event is read
    # What is remembered is the envelope's own data's event: one upcast on read is not.
    group = stored(ImageGroupStored.type, 1, OLD_GROUP)
    assert parse(group, ImageGroupStored).event is not parse(group, ImageGroupStored).event
    # Nor does a copy with other data keep it.
    copied = envelope.model_copy(update={"data": {**data, "to_folder_id": ids[1]}})
    assert parse(copied, cat.FileMoved).event.to_folder_id == uuid.UUID(ids[1])


def test_a_page_read_as_its_files_events_equals_them_validated() -> None:
    from shared.contracts import ingest
    from shared.contracts.envelope import trusted

    stored = {
        "file_id": str(uuid.uuid4()),
        "name": "a.png",
        "kind": "image",
        "size": 1,
        "sha256": "0" * 64,
        "mime_type": "image/png",
        "media": {"width": 2, "height": 3},
        "blob_key": "k",
    }
    page = {"job_id": str(uuid.uuid4()), "folder_id": str(uuid.uuid4()), "files": [stored]}
    (each,) = ingest.FilesStored.model_validate(page).each()
    alone = ingest.FileContentStored.model_validate({**stored, **page, "files": None})
    assert each == alone and each.model_dump_json() == alone.model_dump_json()
    (uploaded,) = cat.FilesUploaded.model_validate(
        {**page, "file_ids": [stored["file_id"]], "files": [stored]}
    ).each()
    assert uploaded == cat.FileUploaded.model_validate({**stored, **page})
    assert (
        uploaded.model_dump_json()
        == cat.FileUploaded.model_validate({**stored, **page}).model_dump_json()
    )
    # Defaults are its own (not shared with the next), and a missing field is an error,
    # not a model without it.
    one, two = (trusted(cat.UploadedFile, {**stored, "media": cat.Media()}) for _ in "ab")
    assert one.metadata == {} and one.metadata is not two.metadata
    with pytest.raises(KeyError, match="blob_key"):
        trusted(cat.UploadedFile, {k: v for k, v in stored.items() if k != "blob_key"})


OLD_GROUP = {
    "job_id": str(uuid.uuid4()),
    "group_file_id": str(uuid.uuid4()),
    "folder_id": str(uuid.uuid4()),
    "name": "scan",
    "kind": "image_sequence",
    "constituent_folder_id": str(uuid.uuid4()),
    "files": [],
}


def test_a_group_recorded_before_pages_reads_with_its_image_count() -> None:
    image = {
        "job_id": OLD_GROUP["job_id"],
        "file_id": str(uuid.uuid4()),
        "folder_id": str(uuid.uuid4()),
        "name": "a.png",
        "kind": "image",
        "size": 1,
        "sha256": "0" * 64,
        "mime_type": "image/png",
        "blob_key": "k",
    }
    envelope = stored(ImageGroupStored.type, 1, {**OLD_GROUP, "files": [image, image]})
    group = parse(envelope, ImageGroupStored).event
    assert (group.images, len(group.files)) == (2, 2)
    # The stored event keeps its version and shape: upcasting happens on read.
    assert envelope.schema_version == 1 and "images" not in envelope.data
    # A version-1 event of the pages era had its count already.
    paged = parse(stored(ImageGroupStored.type, 1, {**OLD_GROUP, "images": 7}), ImageGroupStored)
    assert (paged.event.images, paged.event.files) == (7, [])
    # Without the upcaster, the old shape would not read.
    with pytest.raises(CannotUpcast):
        upcast(ImageGroupStored.type, 3, OLD_GROUP, ImageGroupStored.version)
