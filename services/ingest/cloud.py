"""The customer's bucket (any S3 API: AWS, MinIO, moto): the `minio` client for the
check, the region and presigned URLs; `Reader`, a lean signed HTTP/1.1 client of our
own, for what an import does per object (list it, GET it), where minio's per-request
cost was most of ingest's CPU.

Blocking calls: the handlers run them in worker threads. Errors
become `CloudProblem`s with a code and a message for a person, never the provider's
raw text: it can carry the access key. Credentials live in `Bucket`, out of its repr.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import http.client
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO
from urllib.parse import unquote_plus
from xml.etree import ElementTree

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import quote

from services.ingest.domain import media
from services.ingest.domain.integrations import Endpoint

CHUNK = 1024 * 1024
# An object up to this size is hashed in memory; a larger one is spooled to disk.
SPOOL_IN_MEMORY = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 60.0
# A GET answered 5xx, or whose connection failed before an answer, is sent again.
RETRIES = 2
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SIGNED_HEADERS = "host;x-amz-content-sha256;x-amz-date"
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"
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
    if isinstance(error, S3Error):
        return _refused(error.code or "", bucket, key)
    if isinstance(error, urllib3.exceptions.HTTPError | OSError | http.client.HTTPException):
        return CloudProblem(
            "endpoint_unreachable",
            f"{bucket.endpoint.url()} does not answer ({type(error).__name__})",
        )
    where = f"bucket {bucket.name!r} at {bucket.endpoint.url()}"
    if isinstance(error, ServerError | InvalidResponseError):
        return CloudProblem("bucket_error", f"{where} answered an unexpected response")
    return CloudProblem("bucket_error", f"{where}: {type(error).__name__}")


def _refused(code: str, bucket: Bucket, key: str | None = None) -> CloudProblem:
    """The CloudProblem an S3 error code stands for."""
    where = f"bucket {bucket.name!r} at {bucket.endpoint.url()}"
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


def check(s3: Minio, bucket: Bucket) -> None:
    """The bucket exists and these credentials may list it, or a CloudProblem."""
    try:
        # One page of a listing: it needs the bucket and the right to list it, and its
        # errors (unlike a HEAD's) say which of the credentials or the bucket is wrong.
        next(iter(s3.list_objects(bucket.name, recursive=True)), None)
    except Exception as error:
        raise problem(error, bucket) from None


@dataclass(frozen=True)
class Read:
    """An object read once: its size, sha256 and media facts (kind, mime, sizes)."""

    size: int
    sha256: str
    facts: media.Media


class _Broken(Exception):
    """The connection broke or spoke no HTTP we understand: it is dropped."""


class _Connection:
    """One keep-alive HTTP/1.1 connection to the endpoint, for one thread at a time.

    The reads of an import are many small GETs: through minio and urllib3 each costs
    about 0.3 ms of CPU (header objects, email-module parsing, a signer rebuilt per
    request); this one writes the request as bytes and parses the status line and
    headers itself.
    """

    def __init__(self, host: str, port: int, secure: bool) -> None:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        if secure:
            sock = _tls().wrap_socket(sock, server_hostname=host)
        sock.settimeout(READ_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buffer = bytearray()
        self.used = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(CHUNK)
        if not data:
            raise _Broken("the connection was closed")
        self.buffer += data

    def send(self, request: bytes) -> None:
        self.sock.sendall(request)

    def head(self) -> tuple[int, dict[bytes, bytes]]:
        """The response's status and headers (names lowercased)."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > 64 * 1024:
                raise _Broken("response headers too long")
            self._fill()
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[: end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _Broken("not an HTTP/1.1 response")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def body(self, headers: dict[bytes, bytes]) -> Iterator[bytes]:
        """The response's body, in pieces of at most CHUNK bytes."""
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            yield from self._chunked()
            return
        length = headers.get(b"content-length")
        if length is None or not length.isdigit():
            raise _Broken("a response without a length")
        left = int(length)
        while left:
            if not self.buffer:
                self._fill()
            piece = bytes(self.buffer[: min(left, CHUNK)])
            del self.buffer[: len(piece)]
            left -= len(piece)
            yield piece

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > 64 * 1024:
                raise _Broken("a line too long")
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _chunked(self) -> Iterator[bytes]:
        while size := int(self._line().split(b";", 1)[0], 16):
            left = size
            while left:
                if not self.buffer:
                    self._fill()
                piece = bytes(self.buffer[: min(left, CHUNK)])
                del self.buffer[: len(piece)]
                left -= len(piece)
                yield piece
            if self._line():
                raise _Broken("a chunk longer than it said")
        # After the last chunk: trailers, if any, up to a blank line.
        while self._line():
            pass


class _Content:
    """A body read whole: one piece kept as it is, more spooled (in memory up to
    SPOOL_IN_MEMORY, else in a temp file); hashed on the way."""

    def __init__(self, pieces: Iterator[bytes], spool_dir: Path) -> None:
        first = next(pieces, b"")
        self.digest = hashlib.sha256(first)
        self.size = len(first)
        self.data: bytes | None = first
        self.spool: IO[bytes] | None = None
        try:
            for piece in pieces:
                if self.spool is None:
                    self.spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - see __exit__
                        max_size=SPOOL_IN_MEMORY, dir=str(spool_dir)
                    )
                    self.spool.write(first)
                    self.data = None
                self.digest.update(piece)
                self.spool.write(piece)
                self.size += len(piece)
        except BaseException:
            self.__exit__()
            raise

    def read_at(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.spool is not None
        self.spool.seek(offset)
        return self.spool.read(length)

    def facts(self) -> Read:
        if self.size == 0:
            raise media.UnknownContent("empty file")
        # inspect() sniffs the head first: the kind comes from the bytes.
        facts = media.inspect(self.read_at, self.size)
        return Read(size=self.size, sha256=self.digest.hexdigest(), facts=facts)

    def __enter__(self) -> _Content:
        return self

    def __exit__(self, *_: object) -> None:
        if self.spool is not None:
            self.spool.close()


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


class Reader:
    """What an import asks of a bucket, per object: its listing (ListObjectsV2) and a
    GET of each object, signed (AWS Signature V4) here and sent on keep-alive
    connections of their own, one per thread. The bucket check, the region lookup and
    presigned URLs stay with the minio client."""

    def __init__(self, s3: Minio, bucket: Bucket) -> None:
        self.s3, self.bucket = s3, bucket
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False

    def _prepare(self) -> None:
        """The region (asked of the endpoint if the integration named none) and the
        URL the bucket's objects are at, as the minio client would address them."""
        with self._lock:
            if self._ready:
                return
            try:
                self.region = self.bucket.region or self.s3._get_region(self.bucket.name)
            except Exception as error:
                raise problem(error, self.bucket) from None
            url = self.s3._base_url.build(
                method="GET", region=self.region, bucket_name=self.bucket.name, object_name="k"
            )
            self.secure = url.scheme == "https"
            self.netloc = url.netloc
            self.host = url.hostname or ""
            self.port = url.port or (443 if self.secure else 80)
            self.path = url.path[:-1]  # the objects' path prefix: "/bucket/" or "/"
            listing = self.s3._base_url.build(
                method="GET", region=self.region, bucket_name=self.bucket.name
            )
            self.bucket_path = listing.path  # the bucket's: "/bucket" or "/"
            self._date = ""
            self._ready = True

    def _signing_key(self, day: str) -> bytes:
        key = hmac.digest(f"AWS4{self.bucket.secret_key}".encode(), day.encode(), "sha256")
        for part in (self.region, "s3", "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        return key

    def _request(self, key: str) -> bytes:
        return self._signed(self.path + quote(key, safe="/~"), "")

    def _signed(self, path: str, query: str) -> bytes:
        """A GET of `path` (URI-encoded) with `query` (encoded, sorted), signed."""
        now = time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        day = amz_date[:8]
        if day != self._date:
            # Thread-safe enough: both values are set together, and a race makes the
            # same key twice.
            self._key, self._date = self._signing_key(day), day
        signing_key = self._key
        canonical = (
            f"GET\n{path}\n{query}\nhost:{self.netloc}\nx-amz-content-sha256:{_EMPTY_SHA256}\n"
            f"x-amz-date:{amz_date}\n\n{_SIGNED_HEADERS}\n{_EMPTY_SHA256}"
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(signing_key, to_sign.encode(), "sha256").hexdigest()
        return (
            f"GET {path}{'?' if query else ''}{query} HTTP/1.1\r\nHost: {self.netloc}\r\n"
            f"x-amz-content-sha256: {_EMPTY_SHA256}\r\nx-amz-date: {amz_date}\r\n"
            f"Authorization: AWS4-HMAC-SHA256 Credential={self.bucket.access_key}/{scope},"
            f" SignedHeaders={_SIGNED_HEADERS}, Signature={signature}\r\n"
            "User-Agent: files-ingest\r\n\r\n"
        ).encode()

    def _connection(self) -> _Connection:
        found: _Connection | None = getattr(self._local, "conn", None)
        if found is None:
            found = _Connection(self.host, self.port, self.secure)
            self._local.conn = found
        return found

    def _drop(self) -> None:
        found: _Connection | None = getattr(self._local, "conn", None)
        if found is not None:
            found.close()
            self._local.conn = None

    def read(self, key: str, spool_dir: Path) -> Read:
        """Stream the object once: hash it (a body of more than one piece spooled: in
        memory up to SPOOL_IN_MEMORY, else on disk), sniff its head, read its media
        facts. media.UnknownContent for a kind we do not take; CloudProblem when the
        bucket will not give it."""
        if not self._ready:
            self._prepare()
        request = self._request(key)
        for attempt in range(RETRIES + 1):
            answered = reused = False
            try:
                conn = self._connection()
                reused, conn.used = conn.used, True
                conn.send(request)
                status, headers = conn.head()
                answered = True
                if status == 200:
                    content = _Content(conn.body(headers), spool_dir)
                else:
                    refusal = b"".join(conn.body(headers))[:65536]
            except (OSError, _Broken, ValueError) as error:
                self._drop()
                if attempt < RETRIES and not answered:
                    # A kept-alive connection the endpoint had closed: at once, anew.
                    if not reused:
                        time.sleep(0.1 * (attempt + 1))
                    continue
                if answered:
                    raise CloudProblem(
                        "object_unreadable",
                        f"{key!r} could not be read to its end ({type(error).__name__})",
                    ) from None
                raise CloudProblem(
                    "endpoint_unreachable",
                    f"{self.bucket.endpoint.url()} does not answer ({type(error).__name__})",
                ) from None
            if headers.get(b"connection", b"").lower() == b"close":
                self._drop()
            if status == 200:
                with content:
                    return content.facts()
            if status >= 500 and attempt < RETRIES:
                time.sleep(0.1 * (attempt + 1))
                continue
            raise self._refusal(status, refusal, key)
        raise AssertionError("unreachable")  # pragma: no cover

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every object key under the prefix (ListObjectsV2, pages of 1,000; folder
        markers left out), or a CloudProblem. minio's listing takes about 30 us of CPU
        per key (an object with parsed dates for each); this reads the keys alone."""
        if not self._ready:
            self._prepare()
        token: str | None = None
        while True:
            query = {"encoding-type": "url", "list-type": "2", "max-keys": "1000"}
            query["prefix"] = prefix
            if token is not None:
                query["continuation-token"] = token
            encoded = "&".join(
                f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
            )
            status, body = self._fetch(self._signed(self.bucket_path, encoded))
            if status != 200:
                raise self._refusal(status, body, None)
            try:
                root = ElementTree.fromstring(body)
            except ElementTree.ParseError:
                raise CloudProblem(
                    "bucket_error",
                    f"bucket {self.bucket.name!r} at {self.bucket.endpoint.url()} answered a"
                    " listing that is not XML",
                ) from None
            encoded_keys = (root.findtext(f"{_S3}EncodingType") or "").lower() == "url"
            for found in root.iterfind(f"{_S3}Contents"):
                name = found.findtext(f"{_S3}Key") or ""
                if encoded_keys:
                    name = unquote_plus(name)
                if name and not name.endswith("/"):
                    yield name
            token = root.findtext(f"{_S3}NextContinuationToken")
            if (root.findtext(f"{_S3}IsTruncated") or "").lower() != "true":
                return
            if not token:
                raise CloudProblem(
                    "bucket_error",
                    f"bucket {self.bucket.name!r} at {self.bucket.endpoint.url()} answered a"
                    " truncated listing without a continuation token",
                )

    def _fetch(self, request: bytes) -> tuple[int, bytes]:
        """A small response whole (status, body); retried as a read is."""
        for attempt in range(RETRIES + 1):
            answered = reused = False
            try:
                conn = self._connection()
                reused, conn.used = conn.used, True
                conn.send(request)
                status, headers = conn.head()
                answered = True
                body = b"".join(conn.body(headers))
            except (OSError, _Broken, ValueError) as error:
                self._drop()
                if attempt < RETRIES and not answered:
                    if not reused:
                        time.sleep(0.1 * (attempt + 1))
                    continue
                raise CloudProblem(
                    "endpoint_unreachable",
                    f"{self.bucket.endpoint.url()} does not answer ({type(error).__name__})",
                ) from None
            if headers.get(b"connection", b"").lower() == b"close":
                self._drop()
            if status >= 500 and attempt < RETRIES:
                time.sleep(0.1 * (attempt + 1))
                continue
            return status, body
        raise AssertionError("unreachable")  # pragma: no cover

    def _refusal(self, status: int, body: bytes, key: str | None) -> CloudProblem:
        found = _ERROR_CODE.search(body)
        code = found.group(1).decode(errors="replace") if found else ""
        if not code:
            code = {403: "AccessDenied", 404: "NoSuchKey" if key else "NoSuchBucket"}.get(
                status, f"HTTP {status}"
            )
        return _refused(code, self.bucket, key)


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
