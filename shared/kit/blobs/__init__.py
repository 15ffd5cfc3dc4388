"""The blob store: content-addressed bytes, written while hashed, read by range.

Two adapters behind one interface (`BlobStore`), chosen by FILES_BLOB_URL: a local
directory (a path or `file://...`, the default `<data dir>/blobs`) or an S3 bucket
(`s3://bucket?endpoint=http://host:port&region=...&secure=false`).

Keys come from content hashes (or our own ids), never from a file name or other user
text. Identical uploads share one blob.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from shared.kit.blobs.base import (
    CHUNK,
    MIN_PART,
    BlobStore,
    BlobWriter,
    Held,
    InvalidPart,
    PartInfo,
    StoreRefused,
    StoreUnavailable,
    UnknownUpload,
    check_key,
    content_key,
)
from shared.kit.blobs.local import LocalBlobStore
from shared.kit.settings import Settings

if TYPE_CHECKING:
    from shared.kit.blobs.s3 import S3BlobStore

__all__ = [
    "CHUNK",
    "MIN_PART",
    "BlobStore",
    "BlobWriter",
    "Held",
    "InvalidPart",
    "LocalBlobStore",
    "PartInfo",
    "S3BlobStore",
    "StoreRefused",
    "StoreUnavailable",
    "UnknownUpload",
    "check_key",
    "content_key",
    "open_blob_store",
]


def __getattr__(name: str) -> Any:
    # The S3 adapter (and minio with it) is imported on first use: importing it was half
    # of what a spawned thumbnail worker spent starting, on a local store that never uses it.
    if name == "S3BlobStore":
        from shared.kit.blobs.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_blob_store(settings: Settings) -> BlobStore:
    """The store FILES_BLOB_URL names; call `start()` before use."""
    if not settings.blob_url.startswith("s3://"):
        return LocalBlobStore(settings.blob_root())
    from shared.kit.blobs.s3 import S3BlobStore, parse_url

    access = settings.s3_access_key.get_secret_value() or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = settings.s3_secret_key.get_secret_value() or os.environ.get("AWS_SECRET_ACCESS_KEY")
    return S3BlobStore(
        parse_url(settings.blob_url),
        settings.data_dir / "spool",
        access_key=access or None,
        secret_key=secret or None,
        session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
    )
