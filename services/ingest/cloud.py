"""The customer's bucket, through the `minio` client (any S3 API: AWS, MinIO, moto).

Blocking calls (minio uses urllib3): the handlers run them in worker threads. Errors
become `CloudProblem`s with a code and a message for a person, never the provider's
raw text: it can carry the access key. Credentials live in `Bucket`, out of its repr.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from services.ingest.domain import media
from services.ingest.domain.integrations import Endpoint

CHUNK = 1024 * 1024
# An object up to this size is hashed in memory; a larger one is spooled to disk.
SPOOL_IN_MEMORY = 4 * 1024 * 1024
# Presigned content URLs live this long.
PRESIGN_EXPIRY = timedelta(minutes=5)

_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_MISSING_BUCKET = {"NoSuchBucket"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem"}
_MISSING_OBJECT = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}


class CloudProblem(Exception):
    """What the bucket said, as a code (`invalid_credentials`, `bucket_not_found`,
    `access_denied`, `endpoint_unreachable`, `object_not_found`, `object_unreadable`,
    `bucket_error`) and a message for a person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Bucket:
    endpoint: Endpoint
    region: str | None
    name: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)


def _http(pool_size: int) -> urllib3.PoolManager:
    # Few retries and short connect timeouts: an unreachable endpoint answers in seconds.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3.0, read=60.0),
        maxsize=pool_size,
        retries=urllib3.Retry(
            total=2, connect=1, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504)
        ),
    )


def client(bucket: Bucket, pool_size: int = 32) -> Minio:
    return Minio(
        bucket.endpoint.host,
        access_key=bucket.access_key,
        secret_key=bucket.secret_key,
        secure=bucket.endpoint.secure,
        region=bucket.region,
        http_client=_http(pool_size),
    )


def problem(error: Exception, bucket: Bucket, key: str | None = None) -> CloudProblem:
    """The CloudProblem an error of the client stands for."""
    where = f"bucket {bucket.name!r} at {bucket.endpoint.url()}"
    if isinstance(error, S3Error):
        code = error.code or ""
        if code in _CREDENTIALS:
            return CloudProblem(
                "invalid_credentials",
                f"the access key or secret key was refused by {bucket.endpoint.url()} ({code})",
            )
        if code in _MISSING_BUCKET:
            return CloudProblem("bucket_not_found", f"there is no {where}")
        if key is not None and code in _MISSING_OBJECT:
            return CloudProblem("object_not_found", f"{key!r} is not an object of {where}")
        if code in _DENIED:
            return CloudProblem(
                "access_denied",
                f"these credentials may not read {where} ({code}): they need to list and"
                " get its objects",
            )
        return CloudProblem("bucket_error", f"{where} answered {code or 'an error'}")
    if isinstance(error, urllib3.exceptions.HTTPError | OSError):
        return CloudProblem(
            "endpoint_unreachable",
            f"{bucket.endpoint.url()} does not answer ({type(error).__name__})",
        )
    if isinstance(error, ServerError | InvalidResponseError):
        return CloudProblem("bucket_error", f"{where} answered an unexpected response")
    return CloudProblem("bucket_error", f"{where}: {type(error).__name__}")


def check(s3: Minio, bucket: Bucket) -> None:
    """The bucket exists and these credentials may list it, or a CloudProblem."""
    try:
        # One page of a listing: it needs the bucket and the right to list it, and its
        # errors (unlike a HEAD's) say which of the credentials or the bucket is wrong.
        next(iter(s3.list_objects(bucket.name, recursive=True)), None)
    except Exception as error:
        raise problem(error, bucket) from None


def list_keys(s3: Minio, bucket: Bucket, prefix: str) -> Iterator[str]:
    """Every object key under the prefix, page by page (folder markers left out)."""
    try:
        for found in s3.list_objects(bucket.name, prefix=prefix or None, recursive=True):
            name = found.object_name
            if name and not found.is_dir and not name.endswith("/"):
                yield name
    except Exception as error:
        raise problem(error, bucket) from None


@dataclass(frozen=True)
class Read:
    """An object read once: its size, sha256 and media facts (kind, mime, sizes)."""

    size: int
    sha256: str
    facts: media.Media


def read(s3: Minio, bucket: Bucket, key: str, spool_dir: Path) -> Read:
    """Stream the object once: hash it while spooling it, sniff its head, read its media
    facts from the spool, drop the spool. media.UnknownContent for a kind we do not
    take; CloudProblem when the bucket will not give it."""
    try:
        response = s3.get_object(bucket.name, key)
    except Exception as error:
        raise problem(error, bucket, key) from None
    digest = hashlib.sha256()
    size = 0
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed below
        max_size=SPOOL_IN_MEMORY, dir=str(spool_dir)
    )
    try:
        try:
            for chunk in response.stream(CHUNK):
                digest.update(chunk)
                spool.write(chunk)
                size += len(chunk)
        except Exception as error:
            raise CloudProblem(
                "object_unreadable",
                f"{key!r} could not be read to its end ({type(error).__name__})",
            ) from None
        finally:
            response.close()
            response.release_conn()
        if size == 0:
            raise media.UnknownContent("empty file")

        def read_at(offset: int, length: int) -> bytes:
            spool.seek(offset)
            return spool.read(length)

        # inspect() sniffs the head first: the kind comes from the bytes.
        facts = media.inspect(read_at, size)
        return Read(size=size, sha256=digest.hexdigest(), facts=facts)
    finally:
        spool.close()


def presign(s3: Minio, bucket: Bucket, key: str, name: str, mime_type: str) -> str:
    """A GET URL of the object for a few minutes, served as an attachment of its type."""
    from urllib.parse import quote

    try:
        return s3.presigned_get_object(
            bucket.name,
            key,
            expires=PRESIGN_EXPIRY,
            response_headers={
                "response-content-disposition": f"attachment; filename*=UTF-8''{quote(name)}",
                "response-content-type": mime_type,
            },
        )
    except Exception as error:
        raise problem(error, bucket, key) from None
