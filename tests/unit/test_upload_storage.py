"""A disk that fails while an upload is received: the caller is told it is the store's
fault (507 when full, 503 otherwise), not that their body is malformed, and no spool
of the upload is left behind."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from services.ingest.uploads.handlers import Uploads
from shared.kit.blobs.base import BlobWriter
from shared.kit.blobs.local import LocalBlobStore
from shared.kit.errors import Refused

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


def png(size: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8)


@pytest.mark.parametrize(
    ("code", "status", "named"),
    [(errno.ENOSPC, 507, "insufficient_storage"), (errno.EIO, 503, "storage_unavailable")],
)
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


async def test_a_malformed_body_is_still_the_callers(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(Refused) as refused:
        await Uploads._receive(
            SimpleNamespace(blobs=store),  # type: ignore[arg-type]
            f"multipart/form-data; boundary={BOUNDARY}",
            chunks([f"--{BOUNDARY}\r\nno headers end here".encode()]),
        )
    assert (refused.value.status, refused.value.code) == (400, "malformed_multipart")
