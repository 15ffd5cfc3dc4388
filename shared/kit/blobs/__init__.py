"""The blob store: content-addressed bytes, written while hashed, read by range.

Two adapters behind one interface (`BlobStore`), chosen by FILES_BLOB_URL: a local
directory (a path or `file://...`, the default `<data dir>/blobs`) or an S3 bucket
(`s3://bucket?endpoint=http://host:port&region=...&secure=false`).

Keys come from content hashes (or our own ids), never from a file name or other user
text. Identical uploads share one blob.
"""

from __future__ import annotations

import os

from shared.kit.blobs.base import (
    CHUNK,
    MIN_PART,
    BlobStore,
    BlobWriter,
    InvalidPart,
    PartInfo,
    UnknownUpload,
    check_key,
    content_key,
)
from shared.kit.blobs.local import LocalBlobStore
from shared.kit.blobs.s3 import S3BlobStore, parse_url
from shared.kit.settings import Settings

__all__ = [
    "CHUNK",
    "MIN_PART",
    "BlobStore",
    "BlobWriter",
    "InvalidPart",
    "LocalBlobStore",
    "PartInfo",
    "S3BlobStore",
    "UnknownUpload",
    "check_key",
    "content_key",
    "open_blob_store",
]


def open_blob_store(settings: Settings) -> BlobStore:
    """The store FILES_BLOB_URL names; call `start()` before use."""
    if not settings.blob_url.startswith("s3://"):
        return LocalBlobStore(settings.blob_root())
    access = settings.s3_access_key.get_secret_value() or os.environ.get("AWS_ACCESS_KEY_ID")
    secret = settings.s3_secret_key.get_secret_value() or os.environ.get("AWS_SECRET_ACCESS_KEY")
    return S3BlobStore(
        parse_url(settings.blob_url),
        settings.data_dir / "spool",
        access_key=access or None,
        secret_key=secret or None,
        session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
    )
