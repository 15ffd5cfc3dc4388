"""Image groups, pure: what ingest records and what the catalog registers (no I/O)."""

from __future__ import annotations

import uuid

import pytest

from services.catalog import domain
from services.ingest.uploads.domain import StoredFile, record_image_group
from shared.contracts import catalog as ev
from shared.contracts import ingest, limits
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


Recorded = tuple[ingest.ImageGroupStored, list[ingest.FileContentStored]]


def record(kind: str, *files: StoredFile, name: str = "g") -> Recorded:
    """The group's event, and its images from the pages before it."""
    ids = [uuid.uuid4() for _ in range(4)]
    changes = record_image_group(ids[0], ids[1], ids[2], ids[3], kind, name, files)
    events = [c.event for c in changes]
    assert [c.version for c in changes] == list(range(1, len(changes) + 1))
    assert len({c.stream_id for c in changes}) == 1
    (group,) = [e for e in events if isinstance(e, ingest.ImageGroupStored)]
    pages = [e for e in events if isinstance(e, ingest.ImageGroupImagesStored)]
    # The pages come before the group's event, in order.
    assert events.index(group) > max(events.index(p) for p in pages)
    assert [p.first for p in pages] == [
        sum(len(q.files) for q in pages[:n]) for n in range(len(pages))
    ]
    images = [f for p in pages for f in p.files]
    assert group.images == len(images) and group.files == []
    return group, images


def test_a_sequence_keeps_the_order_given() -> None:
    files = [image("c.png"), image("a.png"), image("b.png")]
    group, images = record("image_sequence", *files)
    assert [f.name for f in images] == ["c.png", "a.png", "b.png"]
    assert all(f.folder_id == group.constituent_folder_id for f in images)


def test_a_large_sequence_travels_in_pages_of_bounded_size() -> None:
    files = [image(f"frame_{n:05d}_" + "x" * 280 + ".png") for n in range(10_000)]
    ids = [uuid.uuid4() for _ in range(4)]
    changes = record_image_group(ids[0], ids[1], ids[2], ids[3], "image_sequence", "s", files)
    sizes = [limits.json_size(c.event.model_dump(mode="json")) for c in changes]
    assert max(sizes) < limits.PAGE_BYTES + 1024 < limits.MAX_EVENT_BYTES
    _, images = record("image_sequence", *files)
    assert [f.name for f in images] == [f.name for f in files]


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
    group, stored = record("image_group", image("a.png"), image("b.png"), name="cats")
    parent = domain.Folder(group.folder_id, None, "top", 1, (group.folder_id,))
    name = domain.constituent_folder_name("cats", {"cats (images)"})
    assert name == "cats (images 2)"
    changes = domain.register_image_group(group, stored, parent, name)
    created, *images, made = [c.event for c in changes]
    assert isinstance(created, ev.FolderCreated) and created.constituent_of == group.group_file_id
    uploaded = [i for i in images if isinstance(i, ev.FileUploaded)]
    assert [i.folder_id for i in uploaded] == [group.constituent_folder_id] * 2
    assert [i.constituent_of for i in uploaded] == [group.group_file_id] * 2
    assert isinstance(made, ev.FileUploaded) and made.kind == "image_group"
    assert made.group == {
        "constituent_folder_id": str(group.constituent_folder_id),
        "file_ids": [str(f.file_id) for f in stored],
        "images": 2,
    }
    gone = domain.register_image_group(group, stored, None, name)
    # Each image's content is released: one rejection per image.
    assert [type(c.event) for c in gone] == [ev.UploadRejected] * len(stored)
    assert [c.event.file_id for c in gone] == [f.file_id for f in stored]


def test_a_large_group_names_its_first_images_and_counts_them_all() -> None:
    group, stored = record("image_group", *[image(f"{n}.png") for n in range(2500)])
    parent = domain.Folder(group.folder_id, None, "top", 1, (group.folder_id,))
    *_, made = [c.event for c in domain.register_image_group(group, stored, parent, "g")]
    assert isinstance(made, ev.FileUploaded) and made.group is not None
    assert made.group["images"] == 2500
    assert made.group["file_ids"] == [str(f.file_id) for f in stored[: domain.GROUP_IDS_SHOWN]]


def test_constituents_name_their_group() -> None:
    gid = uuid.uuid4()
    with pytest.raises(domain.Conflict) as refused:
        domain.refuse_constituents([(gid, "cats")])
    assert "cats" in refused.value.message and refused.value.details["groups"][0]["id"] == str(gid)
    domain.refuse_constituents([])
