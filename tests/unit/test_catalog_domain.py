"""Catalog rules, given state, when a command, then events (no I/O)."""

from __future__ import annotations

import uuid
import zlib

import pytest

from services.catalog import domain
from shared.contracts import catalog as ev
from shared.contracts.catalog import Media
from shared.contracts.ingest import FileContentStored, FilesStored, StoredContent
from shared.kit.access import Access
from shared.kit.errors import Refused


def folder(name: str, parent: domain.Folder | None = None, version: int = 1) -> domain.Folder:
    fid = uuid.uuid4()
    return domain.Folder(
        id=fid,
        parent_id=parent.id if parent else None,
        name=name,
        version=version,
        path=(*(parent.path if parent else ()), fid),
    )


def file(name: str, where: domain.Folder, version: int = 1) -> domain.File:
    return domain.File(uuid.uuid4(), where.id, name, version, "sha256/ab/cd/abcd", "abcd")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 301, "301 characters"),
        ("a/b", "'/'"),
        ("bell\x07", "control characters"),
        ("new\nline", "control characters"),
        ("invoice\u202efdp.exe", "U\\+202E"),
        ("paragraph\u2029break", "U\\+2029"),
        ("re\u200bport.pdf", "U\\+200B \\(zero width space, invisible\\)"),
        ("word\u2060joiner", "U\\+2060"),
        ("\ufeffbom.txt", "U\\+FEFF"),
        ("mongolian\u180e", "U\\+180E"),
        ("soft\u00adhyphen", "U\\+00AD"),
        (".", "parts of paths"),
        ("..", "parts of paths"),
    ],
)
def test_bad_names_are_refused_with_the_reason(name: str, problem: str) -> None:
    with pytest.raises(domain.Invalid, match=problem):
        domain.create_folder(uuid.uuid4(), None, name, "", {})


def test_names_of_300_characters_and_unicode_are_fine() -> None:
    for dotted in ("...", ".hidden", "a..b"):
        domain.create_folder(uuid.uuid4(), None, dotted, "", {})
    changes = domain.create_folder(uuid.uuid4(), None, "é" * 300, "", {})
    assert changes[0].event.name == "é" * 300  # type: ignore[attr-defined]


def test_metadata_over_64_kib_is_refused() -> None:
    with pytest.raises(domain.Invalid, match="at most 65536"):
        domain.create_folder(uuid.uuid4(), None, "x", "", {"blob": "x" * 65_536})


def test_create_records_parent_and_starts_the_stream() -> None:
    parent = folder("top")
    [change] = domain.create_folder(uuid.uuid4(), parent, "child", "d", {"a": 1})
    assert change.version == 1
    assert isinstance(change.event, ev.FolderCreated)
    assert change.event.parent_id == parent.id


def test_moving_a_folder_into_itself_or_below_is_a_cycle() -> None:
    top = folder("top")
    child = folder("child", top)
    with pytest.raises(domain.Conflict, match="into itself"):
        domain.move([top], [], top)
    with pytest.raises(domain.Conflict, match="one of its own subfolders"):
        domain.move([top], [], child)


def test_move_records_one_event_per_item_that_changes_place() -> None:
    top, other = folder("top"), folder("other")
    sub = folder("sub", top)
    f_in_top, f_in_other = file("a.png", top, version=3), file("b.png", other)
    changes = domain.move([sub], [f_in_top, f_in_other], other)
    moved = {type(c.event).__name__: c for c in changes}
    assert set(moved) == {"FolderMoved", "FileMoved"}
    assert moved["FileMoved"].version == 4
    assert len(changes) == 2  # b.png already lives in the target


def test_two_folders_of_one_name_cannot_move_into_one_place() -> None:
    target = folder("t")
    with pytest.raises(domain.Conflict, match="two folders named"):
        domain.move([folder("Same"), folder("same")], [], target)


def test_delete_records_folders_outermost_first_then_files() -> None:
    top = folder("top")
    sub = folder("sub", top)
    deeper = folder("deeper", sub)
    changes = domain.delete([deeper, top, sub], [file("f", deeper)])
    kinds = [type(c.event).__name__ for c in changes]
    assert kinds == ["FolderDeleted", "FolderDeleted", "FolderDeleted", "FileDeleted"]
    order = [c.event.folder_id for c in changes[:3]]  # type: ignore[attr-defined]
    assert order == [top.id, sub.id, deeper.id]


def test_update_without_change_records_nothing() -> None:
    f = folder("same")
    assert domain.update_folder(f, "d", {}, name="same", description="d", metadata={}) == []
    changes = domain.update_folder(f, "d", {}, name="new", description="e", metadata=None)
    assert [c.version for c in changes] == [2, 3]


def stored(folder_id: uuid.UUID) -> FileContentStored:
    return FileContentStored(
        job_id=uuid.uuid4(),
        file_id=uuid.uuid4(),
        folder_id=folder_id,
        name="a.png",
        kind="image",
        size=3,
        sha256="ab",
        mime_type="image/png",
        media=Media(width=1),
        blob_key="sha256/ab",
    )


def test_stored_content_becomes_an_uploaded_file() -> None:
    where = folder("top")
    change = domain.register_upload(stored(where.id), where)
    assert isinstance(change.event, ev.FileUploaded)
    assert change.event.media.width == 1


def test_content_for_a_folder_that_went_away_is_rejected() -> None:
    change = domain.register_upload(stored(uuid.uuid4()), None)
    assert isinstance(change.event, ev.UploadRejected)
    # One the catalog never saw waits for it (its request may come later), until it
    # has waited its time: then it is rejected as never made.
    assert not domain.waits(folder("top"), seen=False, overdue=False)
    assert not domain.waits(None, seen=True, overdue=False)
    assert domain.waits(None, seen=False, overdue=False)
    assert not domain.waits(None, seen=False, overdue=True)
    never = domain.register_upload(stored(uuid.uuid4()), None, never_made=True)
    assert isinstance(never.event, ev.UploadRejected)
    assert never.event.reason == domain.NEVER_MADE != change.event.reason


def test_restored_files_come_back_in_batches_each_beside_its_files_streams() -> None:
    # The relay's choice stood in for by a hash of the stream id into 3 partitions.
    def partition_of(streams: object) -> list[int]:
        return [zlib.crc32(s.encode()) % 3 for s in streams]  # type: ignore[attr-defined]

    def stream_in(partition: int) -> str:
        while partition_of([stream := ev.restore_stream(uuid.uuid4())]) != [partition]:
            pass
        return stream

    top = folder("scans", version=3)
    inner = folder("ct", top, version=2)
    files = [file(f"f{i}.png", top if i % 4 else inner, version=2) for i in range(12_000)]
    changes = domain.restore([inner, top], files, partition_of=partition_of, stream_in=stream_in)
    assert [(c.stream_id, c.version, type(c.event)) for c in changes[:2]] == [
        (ev.folder_stream(top.id), 4, ev.FolderRestored),
        (ev.folder_stream(inner.id), 3, ev.FolderRestored),
    ]
    batches = changes[2:]
    where = {f.id: f.folder_id for f in files}
    back: list[uuid.UUID] = []
    by_stream: dict[str, list[int]] = {}
    for c in batches:
        assert isinstance(c.event, ev.FilesRestored)
        assert 0 < len(c.event.file_ids) <= ev.FILES_PER_RESTORED
        assert {where[i] for i in c.event.file_ids} == {c.event.folder_id}
        # Each file's restore is in its own stream's partition.
        assert set(partition_of([ev.file_stream(i) for i in c.event.file_ids])) == set(
            partition_of([c.stream_id])
        )
        by_stream.setdefault(c.stream_id, []).append(c.version)
        back += c.event.file_ids
    assert sorted(back) == sorted(where)
    assert len(by_stream) == 3 and all(v == list(range(1, len(v) + 1)) for v in by_stream.values())


def test_a_move_gives_the_mover_no_more_rights_and_keeps_items_in_their_tree() -> None:
    top, sub, own, other = (uuid.uuid4() for _ in range(4))
    editor = Access("m", grants={top: "editor", own: "admin", other: "editor"})

    def folder_at(*path: uuid.UUID) -> domain.Folder:
        return domain.Folder(id=path[-1], parent_id=None, name="t", version=1, path=path)

    item = uuid.uuid4()
    domain.check_move_rights(editor, [("folder", item, "x", (top, item))], folder_at(top, sub))
    with pytest.raises(Refused, match="would give you the admin role") as more:
        domain.check_move_rights(editor, [("file", item, "x", (top,))], folder_at(own))
    assert more.value.details["role"] == "editor"
    with pytest.raises(Refused, match="out of its top-level folder"):
        domain.check_move_rights(editor, [("folder", item, "x", (top, item))], folder_at(other))
    # An admin of the item may take it anywhere it edits; so may an org admin.
    admin = Access("a", grants={top: "admin", other: "editor"})
    domain.check_move_rights(admin, [("folder", item, "x", (top, item))], folder_at(other))
    domain.check_move_rights(
        Access("o", org_admin=True), [("file", item, "x", (top,))], folder_at(own)
    )


def test_a_stored_page_enters_as_pages_each_beside_its_files_streams() -> None:
    """One `FilesUploaded` a partition the page's files' streams fall in, each in a new
    page stream of that partition at version 1; nothing in the files' own streams."""

    def partition_of(streams: object) -> list[int]:
        return [zlib.crc32(s.encode()) % 3 for s in streams]  # type: ignore[attr-defined]

    def stream_in(partition: int) -> str:
        while partition_of([stream := ev.upload_page_stream(uuid.uuid4())]) != [partition]:
            pass
        return stream

    top = folder("uploads")
    files = [stored(top.id).model_copy(update={"metadata": {"n": n}}) for n in range(30)]
    page = FilesStored(
        job_id=uuid.uuid4(),
        folder_id=top.id,
        files=[
            StoredContent(**{k: getattr(f, k) for k in StoredContent.model_fields}) for f in files
        ],
    )
    changes = domain.register_page(page, top, partition_of=partition_of, stream_in=stream_in)
    assert len(changes) == 3
    entered: list[uuid.UUID] = []
    for c in changes:
        assert isinstance(c.event, ev.FilesUploaded)
        assert c.stream_id.startswith("upload-page-") and c.version == 1
        assert (c.event.folder_id, c.event.job_id) == (top.id, page.job_id)
        assert c.event.file_ids == [f.file_id for f in c.event.files]
        assert set(partition_of([ev.file_stream(i) for i in c.event.file_ids])) == set(
            partition_of([c.stream_id])
        )
        entered += c.event.file_ids
    assert sorted(entered) == sorted(f.file_id for f in files)
    # What the per-file path would have recorded, file by file.
    each = {u.file_id: u for c in changes for u in c.event.each()}  # type: ignore[attr-defined]
    for f in files:
        alone = domain.register_upload(f.model_copy(update={"job_id": page.job_id}), top).event
        assert each[f.file_id].model_dump() == alone.model_dump()

    # The folder went away: each file rejected in its own stream, as before pages.
    gone = domain.register_page(page, None, partition_of=partition_of, stream_in=stream_in)
    assert [(c.stream_id, c.version, type(c.event)) for c in gone] == [
        (ev.file_stream(f.file_id), 1, ev.UploadRejected) for f in files
    ]
