"""What receiving an upload asks of the local disk and memory: a disk that fails is the
store's fault (507 when full, 503 otherwise), not a malformed body, and leaves no spool;
memory held for small files is bounded for all requests of a process together."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.ingest.metadata import domain
from services.ingest.uploads import multipart
from services.ingest.uploads.handlers import Uploads
from shared.kit.blobs.base import BlobWriter
from shared.kit.blobs.local import LocalBlobStore
from shared.kit.errors import Refused
from tests.conftest import eventually

BOUNDARY = "files-test-boundary"


def body(name: str, content: bytes) -> list[bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    whole = head + content + f"\r\n--{BOUNDARY}--\r\n".encode()
    return [whole[i : i + 16384] for i in range(0, len(whole), 16384)]


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


def png(size: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8)


# A disk error and what the upload answers for it: full (507) or failing (503).
DISK_FAILURES = pytest.mark.parametrize(
    ("code", "status", "named"),
    [(errno.ENOSPC, 507, "insufficient_storage"), (errno.EIO, 503, "storage_unavailable")],
)


@DISK_FAILURES
async def test_a_disk_failing_under_a_part_is_the_stores_fault_and_leaves_no_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, status: int, named: str
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")

    def failing(self: BlobWriter) -> None:
        raise OSError(code, "the disk said no", str(self.path))

    # Past what an upload holds in memory (64 KiB a blob), a part goes to a spool file.
    monkeypatch.setattr(BlobWriter, "_open", failing)
    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=store),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            chunks(body("big.png", png(200_000))),
        )
    assert (refused.value.status, refused.value.code) == (status, named)
    assert "nothing of this upload was recorded" in refused.value.message
    assert str(tmp_path) not in refused.value.message
    incoming = tmp_path / "blobs" / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir())


@pytest.mark.parametrize(
    "cut",
    [
        # A whole part, then one whose bytes stop before its boundary.
        lambda whole: (
            whole[: -len(f"\r\n--{BOUNDARY}--\r\n")] + whole[: whole.index(b"\x89")] + b"cut"
        ),
        # The closing boundary's "--" never came (a new part begun, nothing more).
        lambda whole: whole[: -len("--\r\n")] + b"\r\n",
        # The one part never ended.
        lambda whole: whole[: -len(f"\r\n--{BOUNDARY}--\r\n")],
    ],
    ids=["second-part-cut", "no-closing-dashes", "only-part-cut"],
)
async def test_a_body_cut_short_is_refused_whole_and_leaves_no_spool(
    tmp_path: Path, cut: Callable[[bytes], bytes]
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    left = multipart.PROCESS_HELD.left
    whole = b"".join(body("whole.png", png(200_000)))
    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=store),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            chunks([cut(whole)]),
        )
    assert (refused.value.status, refused.value.code) == (400, "malformed_multipart")
    assert f"--{BOUNDARY}--" in refused.value.message
    incoming = tmp_path / "blobs" / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir())
    assert multipart.PROCESS_HELD.left == left


async def test_a_malformed_body_is_still_the_callers(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=store),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            chunks([f"--{BOUNDARY}\r\nno headers end here".encode()]),
        )
    assert (refused.value.status, refused.value.code) == (400, "malformed_multipart")


async def test_uploads_beyond_the_process_allowance_spool_every_part_and_give_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All uploads of a process together hold at most HELD_TOTAL in memory: a request
    that starts when it is reserved spools its small files as they come (and is stored
    all the same); a request's reservation is given back once, when it is cleaned up."""
    allowance = multipart.Allowance(2 * multipart.HELD_LIMIT + 1000)
    monkeypatch.setattr(multipart, "PROCESS_HELD", allowance)
    store = LocalBlobStore(tmp_path / "blobs")
    first, second = multipart.Receiver(store), multipart.Receiver(store)
    assert allowance.left == 1000
    third = await Uploads._receive(
        SimpleNamespace(blobs=store),  # type: ignore[arg-type]
        f"multipart/form-data; boundary={BOUNDARY}",
        chunks(body("small.png", png(4096))),
    )
    assert allowance.left == 0
    (spool,) = third.spools
    assert spool.held is None and spool.path.exists()  # on disk, not in memory
    assert third.stored[0].size == 4096
    third.cleanup()
    third.cleanup()
    assert allowance.left == 1000
    first.cleanup()
    second.cleanup()
    assert allowance.left == 2 * multipart.HELD_LIMIT + 1000
    held = await Uploads._receive(
        SimpleNamespace(blobs=store),  # type: ignore[arg-type]
        f"multipart/form-data; boundary={BOUNDARY}",
        chunks(body("small.png", png(4096))),
    )
    assert held.spools[0].held is not None  # with room again, a small file stays in memory
    held.cleanup()
    assert allowance.left == 2 * multipart.HELD_LIMIT + 1000


async def test_a_boundary_the_parser_refuses_is_the_bodys_fault_and_gives_memory_back(
    tmp_path: Path,
) -> None:
    """python-multipart refuses a boundary of more than 256 bytes as it is made: a 400
    about the body, and the request's reservation of memory given back."""
    left = multipart.PROCESS_HELD.left
    long = "b" * 300
    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=LocalBlobStore(tmp_path / "blobs")),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={long}",
            chunks([f"--{long}\r\n".encode()]),
        )
    assert (refused.value.status, refused.value.code) == (400, "malformed_multipart")
    assert multipart.PROCESS_HELD.left == left


async def test_a_cancelled_commit_keeps_its_memory_reserved_until_its_thread_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client goes away while the commit's worker thread writes a held file's spool
    (a thread cannot be stopped): the request is cleaned up at once, but its reservation
    stays taken while the thread still has the bytes, and is given back when it is done,
    so all requests together never hold more than the process allows."""
    total = 2 * multipart.HELD_LIMIT
    allowance = multipart.Allowance(total)
    monkeypatch.setattr(multipart, "PROCESS_HELD", allowance)
    store = LocalBlobStore(tmp_path / "blobs")
    receiver = await Uploads._receive(
        SimpleNamespace(blobs=store),  # type: ignore[arg-type]
        f"multipart/form-data; boundary={BOUNDARY}",
        chunks(body("small.png", png(4096))),
    )
    (writer,) = receiver.writers
    assert writer.held is not None
    incoming = store.root / "incoming"
    writing, release = threading.Event(), threading.Event()
    real_open = os.open

    def slow_disk(path: str | Path, *args: Any, **kwargs: Any) -> int:
        if Path(path).parent == incoming:
            writing.set()
            assert release.wait(30), "the test never released the disk"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", slow_disk)

    async def commit() -> None:
        try:
            await store.commit(receiver.writers)
        finally:
            receiver.cleanup()

    committing = asyncio.create_task(commit())
    try:
        await eventually(holds(writing.is_set), what="the commit's thread writing the spool")
        committing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await committing
        assert writer.held is None  # dropped by the cleanup...
        assert allowance.left == total - multipart.HELD_LIMIT  # ...but still in the thread
    finally:
        release.set()
    await eventually(holds(lambda: allowance.left == total), what="the reservation given back")
    assert not any(incoming.iterdir())
    assert not await store.exists(writer.key)


async def test_a_request_cancelled_while_its_files_are_inspected_keeps_its_memory_reserved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with a commit: media inspection reads the held files in a worker thread, which
    runs on when the client goes away; the reservation is given back once it is done."""
    total = 2 * multipart.HELD_LIMIT
    allowance = multipart.Allowance(total)
    monkeypatch.setattr(multipart, "PROCESS_HELD", allowance)
    inspecting, release = threading.Event(), threading.Event()
    inspect = multipart.media_facts.inspect

    def slow_decoder(read_at: Callable[[int, int], bytes], size: int) -> Any:
        inspecting.set()
        assert release.wait(30), "the test never released the decoder"
        return inspect(read_at, size)

    monkeypatch.setattr(multipart.media_facts, "inspect", slow_decoder)
    receiving = asyncio.create_task(
        Uploads._receive(
            SimpleNamespace(blobs=LocalBlobStore(tmp_path / "blobs")),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            chunks(body("small.png", png(4096))),
        )
    )
    try:
        await eventually(holds(inspecting.is_set), what="the file being inspected")
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        assert allowance.left == total - multipart.HELD_LIMIT
    finally:
        release.set()
    await eventually(holds(lambda: allowance.left == total), what="the reservation given back")


def form(*parts: tuple[str, str | None, bytes]) -> list[bytes]:
    """A multipart/form-data body of (field, file name or None, bytes) parts."""
    body = b""
    for field, filename, data in parts:
        named = f'; filename="{filename}"' if filename is not None else ""
        body += (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"{named}\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return [body + f"--{BOUNDARY}--\r\n".encode()]


async def test_form_fields_an_upload_does_not_read_are_not_kept(tmp_path: Path) -> None:
    received = await Uploads._receive(
        SimpleNamespace(blobs=LocalBlobStore(tmp_path / "blobs")),  # type: ignore[arg-type]
        f"multipart/form-data; boundary={BOUNDARY}",
        chunks(
            form(
                *[(f"junk{i}", None, b"j" * 4000) for i in range(500)], ("file", "a.png", png(100))
            )
        ),
    )
    try:
        assert received.fields == {} and [f.name for f in received.stored] == ["a.png"]
    finally:
        received.cleanup()


async def test_a_parts_headers_past_their_limit_are_the_bodys_fault(tmp_path: Path) -> None:
    huge = f"--{BOUNDARY}\r\nX-Pad: {'p' * (multipart.PART_HEAD_LIMIT + 1)}\r\n\r\nx\r\n"
    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=LocalBlobStore(tmp_path / "blobs")),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            chunks([huge.encode() + f"--{BOUNDARY}--\r\n".encode()]),
        )
    assert (refused.value.status, refused.value.code) == (400, "malformed_multipart")


async def test_a_refusal_of_content_stops_listing_at_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multipart, "REFUSED_LISTED", 2)
    sniffed = []
    sniff = multipart.kinds.sniff

    def counted(head: bytes) -> tuple[str, str]:
        sniffed.append(head)
        return sniff(head)

    monkeypatch.setattr(multipart.kinds, "sniff", counted)
    elf = b"\x7fELF" + bytes(60)
    [whole] = form(*[("file", f"x{i}.bin", elf) for i in range(100)])
    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=LocalBlobStore(tmp_path / "blobs")),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            # In small reads: parsing stops at the read after the list is full.
            chunks([whole[i : i + 64] for i in range(0, len(whole), 64)]),
        )
    details = refused.value.details
    assert [r["name"] for r in details["refused"]] == ["x0.bin", "x1.bin"]
    assert details["more_refused"] is True
    assert len(sniffed) <= 4


async def test_a_refusal_of_names_past_its_list_counts_every_file_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the body was read only until one past the list's bound, and the message
    said "and 1000 more" (here 2) however many were refused."""
    monkeypatch.setattr(multipart, "REFUSED_LISTED", 2)
    monkeypatch.setattr(domain, "REFUSED_LISTED", 2)
    sent = [("file", f"x\u202e{i}.png", b"x") for i in range(7)]
    [whole] = form(*sent, ("file", "ok.png", b"y"))
    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=LocalBlobStore(tmp_path / "blobs")),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            chunks([whole[i : i + 64] for i in range(0, len(whole), 64)]),
        )
    assert refused.value.code == "invalid_name"
    assert "(and 6 more files: details.refused)" in refused.value.message, refused.value
    details = refused.value.details
    assert len(details["refused"]) == 2 and details["more_refused"] is True


async def test_a_refusal_of_content_stands_when_the_body_is_malformed_after_it(
    tmp_path: Path,
) -> None:
    """Still listing refused files, the parser meets a malformed part: the answer is the
    415 with what it listed, not the body's 400, and the rest is read and dropped."""
    [refused_part] = form(("file", "program.bin", b"\x7fELF" + bytes(60)))
    garbage = f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n".encode()
    read = []

    async def sent() -> AsyncIterator[bytes]:
        for chunk in (refused_part.rpartition(f"--{BOUNDARY}--".encode())[0], garbage, b"z" * 100):
            read.append(chunk)
            yield chunk

    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=LocalBlobStore(tmp_path / "blobs")),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            sent(),
        )
    assert (refused.value.status, refused.value.code) == (415, "unsupported_content")
    assert [r["name"] for r in refused.value.details["refused"]] == ["program.bin"]
    assert len(read) == 3
