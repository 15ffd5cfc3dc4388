"""Image groups, pure: what ingest records and what the catalog registers (no I/O)."""

from __future__ import annotations

import uuid

import pytest

from services.catalog import domain
from services.ingest.domain.uploads import StoredFile, record_image_group
from shared.contracts import catalog as ev
from shared.contracts import ingest
from shared.contracts.catalog import Media
from shared.kit.errors import Refused


def image(name: str, width: int = 8, height: int = 6, kind: str = "image") -> StoredFile:
    return StoredFile(
        uuid.uuid4(),
        name,
        kind,
        "image/png",
        10,
        "ab" * 32,
        f"k/{name}",
        Media(width=width, height=height),
    )


def record(kind: str, *files: StoredFile, name: str = "g") -> list[ingest.ImageGroupStored]:
    ids = [uuid.uuid4() for _ in range(4)]
    changes = record_image_group(ids[0], ids[1], ids[2], ids[3], kind, name, files)
    return [c.event for c in changes if isinstance(c.event, ingest.ImageGroupStored)]


def test_a_sequence_keeps_the_order_given() -> None:
    files = [image("c.png"), image("a.png"), image("b.png")]
    (group,) = record("image_sequence", *files)
    assert [f.name for f in group.files] == ["c.png", "a.png", "b.png"]
    assert all(f.folder_id == group.constituent_folder_id for f in group.files)


@pytest.mark.parametrize(
    ("kind", "files", "status", "code"),
    [
        ("image_group", [], 422, "empty_group"),
        ("image_group", [image("a.png"), image("n.txt", kind="text")], 415, "not_an_image"),
        ("image_sequence", [image("a.png"), image("b.png", 9, 6)], 422, "dimensions_differ"),
        ("video_group", [image("a.png")], 422, "invalid_kind"),
    ],
)
def test_refusals(kind: str, files: list[StoredFile], status: int, code: str) -> None:
    with pytest.raises(Refused) as refused:
        record(kind, *files)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_a_group_may_mix_sizes() -> None:
    assert record("image_group", image("a.png"), image("b.png", 9, 6))


def test_the_catalog_registers_folder_images_and_group() -> None:
    (group,) = record("image_group", image("a.png"), image("b.png"), name="cats")
    parent = domain.Folder(group.folder_id, None, "top", 1, (group.folder_id,))
    name = domain.constituent_folder_name("cats", {"cats (images)"})
    assert name == "cats (images 2)"
    changes = domain.register_image_group(group, parent, name)
    created, *images, made = [c.event for c in changes]
    assert isinstance(created, ev.FolderCreated) and created.constituent_of == group.group_file_id
    assert [i.folder_id for i in images if isinstance(i, ev.FileUploaded)] == [
        group.constituent_folder_id
    ] * 2
    assert isinstance(made, ev.FileUploaded) and made.kind == "image_group"
    assert made.group == {
        "constituent_folder_id": str(group.constituent_folder_id),
        "file_ids": [str(f.file_id) for f in group.files],
    }
    gone = domain.register_image_group(group, None, name)
    # Each image's content is released: one rejection per image.
    assert [type(c.event) for c in gone] == [ev.UploadRejected] * len(group.files)
    assert [c.event.file_id for c in gone] == [f.file_id for f in group.files]


def test_constituents_name_their_group() -> None:
    gid = uuid.uuid4()
    with pytest.raises(domain.Conflict) as refused:
        domain.refuse_constituents([(gid, "cats")])
    assert "cats" in refused.value.message and refused.value.details["groups"][0]["id"] == str(gid)
    domain.refuse_constituents([])
