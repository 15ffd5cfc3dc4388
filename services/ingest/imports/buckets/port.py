"""What ingest asks of a customer's bucket, whatever library speaks to it.

`BucketReader`: the endpoint may be reached, the bucket answers with these
credentials, the keys under a prefix (page by page), one object streamed once (size,
sha256, media facts) and a presigned GET of it. Every problem is a `CloudProblem` with
a code and a message for a person, never the provider's raw text (it can carry the
access key). Credentials live in `Credentials`, out of every repr.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.ingest.imports.buckets.protocol import Listed
from services.ingest.imports.domain.integrations import (
    BucketCredentials,
    Credentials,
    Endpoint,
    WebIdentity,
)
from services.ingest.imports.egress import CapReached, EndpointNotAllowed
from services.ingest.media import facts as media_facts
from shared.kit.blobs import BlobWriter

_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_MISSING_BUCKET = {"NoSuchBucket"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem"}
_MISSING_OBJECT = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
_REDIRECTS = {"PermanentRedirect", "TemporaryRedirect", "Redirect"}


__all__ = [
    "Bucket",
    "BucketCredentials",
    "BucketReader",
    "CloudProblem",
    "Credentials",
    "Listed",
    "Ranged",
    "Read",
    "WebIdentity",
]


# A read naming the ETag its object had (`If-Match`) met another one: the object changed.
CONTENT_CHANGED = "content_changed"


class CloudProblem(Exception):
    """What the bucket said, as a code (`invalid_credentials`, `bucket_not_found`,
    `access_denied`, `endpoint_unreachable`, `endpoint_not_allowed`, `object_not_found`,
    `object_unreadable`, `bucket_error`, `content_changed`, or a cap reached: `response_too_large`,
    `response_timeout`, `listing_too_large`, `listing_timeout`, `listing_loop`) and a
    message for a person."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True)
class Bucket:
    endpoint: Endpoint
    region: str | None
    name: str
    credentials: BucketCredentials


@dataclass(frozen=True)
class Read:
    """An object read once: its size, sha256 and media facts (kind, mime, sizes)."""

    size: int
    sha256: str
    facts: media_facts.Facts
    # The object's ETag as the GET that read it answered (unquoted; None if it sent none).
    etag: str | None = None


@dataclass(frozen=True)
class Ranged:
    """A range of an object: its bytes and where they start."""

    data: bytes
    first: int


class BucketReader(Protocol):
    bucket: Bucket

    async def allowed(self) -> None:
        """The endpoint's name resolves to an address the rule allows, or a
        CloudProblem `endpoint_not_allowed` naming the address."""

    async def check(self) -> None:
        """The bucket exists and these credentials may list it, or a CloudProblem."""

    def pages(self, prefix: str) -> AsyncGenerator[list[str], None]:
        """The object keys under the prefix, a listing page at a time (folder markers
        left out), within the listing's caps; a CloudProblem ends it."""
        ...

    def listing(self, prefix: str) -> AsyncGenerator[list[Listed], None]:
        """As `pages`, with each object's ETag, size and last-modified."""
        ...

    async def read(self, key: str, spool_dir: Path) -> Read:
        """The object streamed once: hashed, sniffed, its media facts read.
        media_facts.UnknownContent for a kind we do not take; CloudProblem when the bucket
        will not give it (or a cap is reached)."""
        ...

    async def copy(self, key: str, writer: Callable[[], BlobWriter]) -> BlobWriter:
        """The object streamed into a new spool of the blob store's (`writer()`), hashed
        and finished, not yet committed (a DICOM instance, copied: README); CloudProblem
        when the bucket will not give it."""
        ...

    async def read_run(self, keys: Sequence[str], spool_dir: Path) -> list[Read | Exception]:
        """The objects read one after the other, each as `read` gives it or the
        exception it raised (a CloudProblem, media_facts.UnknownContent, ...)."""
        ...

    async def presign(self, key: str, name: str, mime_type: str) -> str:
        """A GET URL of the object for a few minutes, served as an attachment."""
        ...

    async def read_range(
        self, key: str, first: int, last: int, if_match: str | None = None
    ) -> Ranged:
        """Bytes `first` to `last` (inclusive) of the object, as far as it has them
        (none when `first` is past its end); CloudProblem when the bucket will not give
        them (`content_changed` when its ETag is no longer `if_match`)."""
        ...

    async def hashed(self, key: str) -> tuple[str, str | None]:
        """The object's sha256, read whole as it streams (none of it kept), and the ETag
        that GET answered (unquoted; None if none, or a weak one); CloudProblem as
        `read`."""
        ...

    async def close(self) -> None: ...


def where(bucket: Bucket) -> str:
    return f"bucket {bucket.name!r} at {bucket.endpoint.url()}"


def not_allowed(refused: EndpointNotAllowed, bucket: Bucket) -> CloudProblem:
    shown = refused.address or refused.host
    return CloudProblem(
        "endpoint_not_allowed",
        f"{bucket.endpoint.url()} may not be reached: {refused.reason}. Endpoints on"
        " loopback, link-local, private, shared, multicast, reserved or cloud metadata"
        " addresses are refused unless the operator lists them in FILES_ALLOWED_ENDPOINTS",
        {"address": shown, "reason": refused.reason},
    )


def problem(error: BaseException, bucket: Bucket) -> CloudProblem:
    """The CloudProblem an unexpected error stands for."""
    if isinstance(error, CloudProblem):
        return error
    if isinstance(error, EndpointNotAllowed):
        return not_allowed(error, bucket)
    if isinstance(error, CapReached):
        return CloudProblem(error.code, f"{bucket.endpoint.url()}: {error.message}")
    if isinstance(error, OSError):
        return CloudProblem(
            "endpoint_unreachable",
            f"{bucket.endpoint.url()} does not answer ({type(error).__name__})",
        )
    return CloudProblem("bucket_error", f"{where(bucket)}: {type(error).__name__}")


def refused(code: str, bucket: Bucket, key: str | None = None) -> CloudProblem:
    """The CloudProblem an S3 error code stands for."""
    if code in _CREDENTIALS:
        return CloudProblem(
            "invalid_credentials",
            f"the access key, secret key or session token was refused by"
            f" {bucket.endpoint.url()} ({code})",
        )
    if code in _MISSING_BUCKET:
        return CloudProblem("bucket_not_found", f"there is no {where(bucket)}")
    if key is not None and code in _MISSING_OBJECT:
        return CloudProblem("object_not_found", f"{key!r} is not an object of {where(bucket)}")
    if code in _DENIED:
        return CloudProblem(
            "access_denied",
            f"these credentials may not read {where(bucket)} ({code}): they need to list"
            " and get its objects",
        )
    if code in _REDIRECTS:
        return CloudProblem(
            "bucket_error",
            f"{where(bucket)} answered a redirect ({code}), which is not followed: check the"
            " integration's endpoint and region",
        )
    return CloudProblem("bucket_error", f"{where(bucket)} answered {code or 'an error'}")
