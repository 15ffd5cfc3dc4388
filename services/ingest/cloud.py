"""The customer's bucket (any S3 API: AWS, MinIO, moto): `Reader`, a lean signed
HTTP/1.1 client of our own for everything ingest asks of it (the bucket check, its
region, the listing of a prefix, a GET per object), where minio's per-request cost
was most of ingest's CPU; the minio client only builds URLs and presigns them, and
never connects (its HTTP client refuses to).

Every connection is made through `egress.Egress` (the address rule, checked on the
address dialled) and every answer is read through an `egress.Budget` (bytes and time
caps): a hostile endpoint can neither make us reach inside our network nor hold our
memory or threads. Redirects are never followed.

Blocking calls: the handlers run them in worker threads. Errors become
`CloudProblem`s with a code and a message for a person, never the provider's raw
text: it can carry the access key. Credentials live in `Bucket`, out of its repr.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote as url_quote
from urllib.parse import unquote_plus
from xml.etree import ElementTree

import urllib3
from minio import Minio
from minio.helpers import quote

from services.ingest import media_facts
from services.ingest.domain.integrations import REGION, Endpoint
from services.ingest.egress import (
    MAX_ERROR_BYTES,
    MAX_HEAD_BYTES,
    Budget,
    CapReached,
    Caps,
    Egress,
    EndpointNotAllowed,
    ListingBudget,
)

CHUNK = 1024 * 1024
# An object up to this size is hashed in memory; a larger one is spooled to disk.
SPOOL_IN_MEMORY = 4 * 1024 * 1024
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 60.0
# A GET answered 5xx, or whose connection failed before an answer, is sent again.
RETRIES = 2
LISTING_PAGE = 1000
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
_REDIRECTS = {"PermanentRedirect", "TemporaryRedirect", "Redirect"}


class CloudProblem(Exception):
    """What the bucket said, as a code (`invalid_credentials`, `bucket_not_found`,
    `access_denied`, `endpoint_unreachable`, `endpoint_not_allowed`, `object_not_found`,
    `object_unreadable`, `bucket_error`, or a cap reached: `response_too_large`,
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
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)


class _Offline(urllib3.PoolManager):
    """minio's HTTP client: it builds and presigns URLs only, so it never connects
    (a connection here would bypass the address rule)."""

    def urlopen(self, *_: Any, **__: Any) -> Any:
        raise CloudProblem("bucket_error", "this client does not connect")


_OFFLINE = _Offline()


def not_allowed(refused: EndpointNotAllowed, bucket: Bucket) -> CloudProblem:
    shown = refused.address or refused.host
    return CloudProblem(
        "endpoint_not_allowed",
        f"{bucket.endpoint.url()} may not be reached: {refused.reason}. Endpoints on"
        " loopback, link-local, private, shared, multicast, reserved or cloud metadata"
        " addresses are refused unless the operator lists them in FILES_ALLOWED_ENDPOINTS",
        {"address": shown, "reason": refused.reason},
    )


def problem(error: Exception, bucket: Bucket) -> CloudProblem:
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
    where = f"bucket {bucket.name!r} at {bucket.endpoint.url()}"
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
    if code in _REDIRECTS:
        return CloudProblem(
            "bucket_error",
            f"{where} answered a redirect ({code}), which is not followed: check the"
            " integration's endpoint and region",
        )
    return CloudProblem("bucket_error", f"{where} answered {code or 'an error'}")


@dataclass(frozen=True)
class Read:
    """An object read once: its size, sha256 and media facts (kind, mime, sizes)."""

    size: int
    sha256: str
    facts: media_facts.Facts


class _Broken(Exception):
    """The connection broke or spoke no HTTP we understand: it is dropped."""


class _Connection:
    """One keep-alive HTTP/1.1 connection to the endpoint, for one thread at a time.

    The reads of an import are many small GETs: through minio and urllib3 each costs
    about 0.3 ms of CPU (header objects, email-module parsing, a signer rebuilt per
    request); this one writes the request as bytes and parses the status line and
    headers itself. Every read is within a `Budget` (bytes, deadline).
    """

    def __init__(self, egress: Egress, host: str, port: int, secure: bool) -> None:
        # The address rule's socket: the address dialled is the one checked.
        sock = egress.connect(host, port, CONNECT_TIMEOUT_S)
        try:
            if secure:
                # The certificate is verified against the host name (and SNI sent).
                sock = _tls().wrap_socket(sock, server_hostname=host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.buffer = bytearray()
        self.used = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self, budget: Budget) -> None:
        self.sock.settimeout(min(READ_TIMEOUT_S, budget.left()))
        try:
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            budget.left()  # a CapReached if the budget's deadline is what passed
            raise
        if not data:
            raise _Broken("the connection was closed")
        self.buffer += data

    def send(self, request: bytes) -> None:
        self.sock.settimeout(READ_TIMEOUT_S)
        self.sock.sendall(request)

    def head(self, budget: Budget) -> tuple[int, dict[bytes, bytes]]:
        """The response's status and headers (names lowercased)."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise CapReached(
                    "response_too_large",
                    f"{budget.what}: the response's headers went past {MAX_HEAD_BYTES} bytes",
                )
            self._fill(budget)
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

    def body(self, headers: dict[bytes, bytes], budget: Budget) -> Iterator[bytes]:
        """The response's body, in pieces of at most CHUNK bytes, within the budget."""
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            yield from self._chunked(budget)
            return
        length = headers.get(b"content-length")
        if length is None or not length.isdigit():
            raise _Broken("a response without a length")
        left = int(length)
        budget.declared(left)
        while left:
            if not self.buffer:
                self._fill(budget)
            piece = bytes(self.buffer[: min(left, CHUNK)])
            del self.buffer[: len(piece)]
            left -= len(piece)
            budget.take(len(piece))
            yield piece

    def _line(self, budget: Budget) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise _Broken("a line too long")
            self._fill(budget)
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def _chunked(self, budget: Budget) -> Iterator[bytes]:
        while size := int(self._line(budget).split(b";", 1)[0], 16):
            budget.declared(budget.received + size)
            left = size
            while left:
                if not self.buffer:
                    self._fill(budget)
                piece = bytes(self.buffer[: min(left, CHUNK)])
                del self.buffer[: len(piece)]
                left -= len(piece)
                budget.take(len(piece))
                yield piece
            if self._line(budget):
                raise _Broken("a chunk longer than it said")
        # After the last chunk: trailers, if any, up to a blank line.
        while self._line(budget):
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
        # inspect() sniffs the head first: the kind comes from the bytes.
        facts = media_facts.inspect(self.read_at, self.size)
        return Read(size=self.size, sha256=self.digest.hexdigest(), facts=facts)

    def __enter__(self) -> _Content:
        return self

    def __exit__(self, *_: object) -> None:
        if self.spool is not None:
            self.spool.close()


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


_T = TypeVar("_T")


def _joined(pieces: Iterator[bytes]) -> bytes:
    return b"".join(pieces)


class Reader:
    """What ingest asks of a bucket: the check that it answers, its region, the listing
    of a prefix (ListObjectsV2) and a GET of each object, signed (AWS Signature V4) here
    and sent on keep-alive connections of their own, one per thread."""

    def __init__(self, bucket: Bucket, egress: Egress, caps: Caps) -> None:
        self.bucket, self.egress, self.caps = bucket, egress, caps
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False

    def _addressing(self, region: str | None) -> Minio:
        """minio's client for its URLs (virtual host or path style, AWS's hosts) and
        presigning; it never connects."""
        return Minio(
            self.bucket.endpoint.host,
            access_key=self.bucket.access_key,
            secret_key=self.bucket.secret_key,
            secure=self.bucket.endpoint.secure,
            region=region,
            http_client=_OFFLINE,
        )

    def allowed(self) -> None:
        """The endpoint may be reached (its name resolves to an address the rule
        allows), or a CloudProblem `endpoint_not_allowed` naming the address."""
        endpoint = self.bucket.endpoint
        try:
            self.egress.addresses(endpoint.hostname, endpoint.port)
        except EndpointNotAllowed as refused:
            raise not_allowed(refused, self.bucket) from None
        except OSError as error:
            raise problem(error, self.bucket) from None

    def prepare(self) -> None:
        """The region (asked of the endpoint if the integration named none) and the
        URL the bucket's objects are at, as the minio client would address them."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            self.region = self.bucket.region or self._location()
            self.urls = self._addressing(self.region)
            url = self.urls._base_url.build(
                method="GET", region=self.region, bucket_name=self.bucket.name, object_name="k"
            )
            self.secure = url.scheme == "https"
            self.netloc = url.netloc
            self.host = url.hostname or ""
            self.port = url.port or (443 if self.secure else 80)
            self.path = url.path[:-1]  # the objects' path prefix: "/bucket/" or "/"
            listing = self.urls._base_url.build(
                method="GET", region=self.region, bucket_name=self.bucket.name
            )
            self.bucket_path = listing.path  # the bucket's: "/bucket" or "/"
            self._date = ""
            self._ready = True

    def _location(self) -> str:
        """GetBucketLocation, as minio asks it (path style, signed for us-east-1)."""
        url = self._addressing(None)._base_url.build(
            method="GET",
            region="us-east-1",
            bucket_name=self.bucket.name,
            query_params={"location": ""},
        )
        target = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
        request = self._signed(url.path, "location=", netloc=url.netloc, region="us-east-1")
        status, body = self._exchange(
            request,
            lambda: Budget(
                f"the location of bucket {self.bucket.name!r}",
                MAX_ERROR_BYTES,
                self.caps.response_s,
            ),
            _joined,
            target=(*target, url.scheme == "https"),
        )
        if status != 200:
            raise self._refusal(status, body, None)
        try:
            found = (ElementTree.fromstring(body).text or "").strip()
        except ElementTree.ParseError:
            raise self._not_xml("location") from None
        if not found:
            return "us-east-1"
        if found == "EU" and url.hostname and url.hostname.endswith("amazonaws.com"):
            return "eu-west-1"
        if not REGION.match(found):
            raise CloudProblem(
                "bucket_error",
                f"bucket {self.bucket.name!r} at {self.bucket.endpoint.url()} named a"
                " region that is not one; give the integration's region",
            )
        return found

    def _signing_key(self, day: str, region: str) -> bytes:
        key = hmac.digest(f"AWS4{self.bucket.secret_key}".encode(), day.encode(), "sha256")
        for part in (region, "s3", "aws4_request"):
            key = hmac.digest(key, part.encode(), "sha256")
        return key

    def _request(self, key: str) -> bytes:
        return self._signed(self.path + quote(key, safe="/~"), "")

    def _signed(
        self, path: str, query: str, *, netloc: str | None = None, region: str | None = None
    ) -> bytes:
        """A GET of `path` (URI-encoded) with `query` (encoded, sorted), signed; for the
        bucket's own host and region unless others are given."""
        now = time.gmtime()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
        day = amz_date[:8]
        netloc = netloc or self.netloc
        if region is not None:
            signing_key = self._signing_key(day, region)
        else:
            region = self.region
            if day != self._date:
                # Thread-safe enough: both values are set together, and a race makes
                # the same key twice.
                self._key, self._date = self._signing_key(day, region), day
            signing_key = self._key
        canonical = (
            f"GET\n{path}\n{query}\nhost:{netloc}\nx-amz-content-sha256:{_EMPTY_SHA256}\n"
            f"x-amz-date:{amz_date}\n\n{_SIGNED_HEADERS}\n{_EMPTY_SHA256}"
        )
        scope = f"{day}/{region}/s3/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        signature = hmac.new(signing_key, to_sign.encode(), "sha256").hexdigest()
        return (
            f"GET {path}{'?' if query else ''}{query} HTTP/1.1\r\nHost: {netloc}\r\n"
            f"x-amz-content-sha256: {_EMPTY_SHA256}\r\nx-amz-date: {amz_date}\r\n"
            f"Authorization: AWS4-HMAC-SHA256 Credential={self.bucket.access_key}/{scope},"
            f" SignedHeaders={_SIGNED_HEADERS}, Signature={signature}\r\n"
            "User-Agent: files-ingest\r\n\r\n"
        ).encode()

    def _connection(self) -> _Connection:
        found: _Connection | None = getattr(self._local, "conn", None)
        if found is None:
            found = _Connection(self.egress, self.host, self.port, self.secure)
            self._local.conn = found
        return found

    def _drop(self) -> None:
        found: _Connection | None = getattr(self._local, "conn", None)
        if found is not None:
            found.close()
            self._local.conn = None

    def _forget(self, own: _Connection | None) -> None:
        """A connection whose state is unknown after an error: closed."""
        if own is None:
            self._drop()
        else:
            own.close()

    def _exchange(
        self,
        request: bytes,
        budget: Callable[[], Budget],
        on_ok: Callable[[Iterator[bytes]], _T],
        *,
        key: str | None = None,
        target: tuple[str, int, bool] | None = None,
    ) -> tuple[int, _T | bytes]:
        """Send `request` and read its answer within a fresh `budget()` per attempt:
        (200, what `on_ok` made of the body) or (status, the error's body, at most
        MAX_ERROR_BYTES). Sent again after a 5xx or a connection that broke before an
        answer (RETRIES times); on the thread's keep-alive connection, or on one of its
        own to `target` (host, port, secure)."""
        what = f"{key!r}" if key is not None else "the answer"
        for attempt in range(RETRIES + 1):
            answered = reused = False
            own: _Connection | None = None
            try:
                allowance = budget()
                if target is None:
                    conn = self._connection()
                else:
                    conn = own = _Connection(self.egress, *target)
                reused, conn.used = conn.used, True
                conn.send(request)
                status, headers = conn.head(allowance)
                answered = True
                result: _T | bytes
                if status == 200:
                    result = on_ok(conn.body(headers, allowance))
                else:
                    allowance.max_bytes = MAX_ERROR_BYTES
                    result = b"".join(conn.body(headers, allowance))
            except (EndpointNotAllowed, CapReached) as refused:
                self._forget(own)
                raise problem(refused, self.bucket) from None
            except (OSError, _Broken, ValueError) as error:
                self._forget(own)
                if attempt < RETRIES and not answered:
                    # A kept-alive connection the endpoint had closed: at once, anew.
                    if not reused:
                        time.sleep(0.1 * (attempt + 1))
                    continue
                if answered:
                    raise CloudProblem(
                        "object_unreadable" if key is not None else "bucket_error",
                        f"{what} could not be read to its end ({type(error).__name__})",
                    ) from None
                raise CloudProblem(
                    "endpoint_unreachable",
                    f"{self.bucket.endpoint.url()} does not answer ({type(error).__name__})",
                ) from None
            if own is not None:
                own.close()
            elif headers.get(b"connection", b"").lower() == b"close":
                self._drop()
            if status >= 500 and attempt < RETRIES:
                time.sleep(0.1 * (attempt + 1))
                continue
            return status, result
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, key: str, spool_dir: Path) -> Read:
        """Stream the object once: hash it (a body of more than one piece spooled: in
        memory up to SPOOL_IN_MEMORY, else on disk), sniff its head, read its media
        facts. media.UnknownContent for a kind we do not take; CloudProblem when the
        bucket will not give it (or a cap is reached)."""
        self.prepare()
        status, answer = self._exchange(
            self._request(key),
            lambda: Budget(f"object {key!r}", None, self.caps.response_s),
            lambda pieces: _Content(pieces, spool_dir),
            key=key,
        )
        if isinstance(answer, _Content):
            with answer:
                return answer.facts()
        raise self._refusal(status, answer, key)

    def check(self) -> None:
        """The bucket exists and these credentials may list it, or a CloudProblem: one
        listing page, which needs the bucket and the right to list it, and whose errors
        (unlike a HEAD's) say which of the credentials or the bucket is wrong."""
        self.allowed()
        self.prepare()
        self._page("", None, 1, ListingBudget(self.caps, f"bucket {self.bucket.name!r}"))

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every object key under the prefix (ListObjectsV2, pages of 1,000; folder
        markers left out), or a CloudProblem, within the listing's caps. minio's
        listing takes about 30 us of CPU per key (an object with parsed dates for each);
        this reads the keys alone."""
        self.prepare()
        listing = ListingBudget(self.caps, f"the listing of {prefix!r}")
        token: str | None = None
        while True:
            keys, token = self._page(prefix, token, LISTING_PAGE, listing)
            yield from keys
            if token is None:
                return

    def _page(
        self, prefix: str, token: str | None, most: int, listing: ListingBudget
    ) -> tuple[list[str], str | None]:
        """One page: its keys, and the next page's token (None after the last)."""
        query = {"encoding-type": "url", "list-type": "2", "max-keys": str(most)}
        query["prefix"] = prefix
        if token is not None:
            query["continuation-token"] = token
        encoded = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
        )
        try:
            status, body = self._exchange(
                self._signed(self.bucket_path, encoded), listing.page, _joined
            )
        finally:
            listing.stopped()
        if status != 200:
            raise self._refusal(status, body, None)
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            raise self._not_xml("listing") from None
        encoded_keys = (root.findtext(f"{_S3}EncodingType") or "").lower() == "url"
        keys = []
        for found in root.iterfind(f"{_S3}Contents"):
            name = found.findtext(f"{_S3}Key") or ""
            if encoded_keys:
                name = unquote_plus(name)
            if name and not name.endswith("/"):
                keys.append(name)
        following = root.findtext(f"{_S3}NextContinuationToken")
        if (root.findtext(f"{_S3}IsTruncated") or "").lower() != "true":
            following = None
        elif not following:
            raise CloudProblem(
                "bucket_error",
                f"bucket {self.bucket.name!r} at {self.bucket.endpoint.url()} answered a"
                " truncated listing without a continuation token",
            )
        try:
            listing.done(following)
        except CapReached as cap:
            raise problem(cap, self.bucket) from None
        return keys, following

    def _not_xml(self, what: str) -> CloudProblem:
        return CloudProblem(
            "bucket_error",
            f"bucket {self.bucket.name!r} at {self.bucket.endpoint.url()} answered a {what}"
            " that is not XML",
        )

    def _refusal(self, status: int, body: bytes, key: str | None) -> CloudProblem:
        found = _ERROR_CODE.search(body)
        code = found.group(1).decode(errors="replace") if found else ""
        if not code:
            code = {403: "AccessDenied", 404: "NoSuchKey" if key else "NoSuchBucket"}.get(
                status, "Redirect" if 300 <= status < 400 else f"HTTP {status}"
            )
        return _refused(code, self.bucket, key)

    def presign(self, key: str, name: str, mime_type: str) -> str:
        """A GET URL of the object for a few minutes, served as an attachment of its
        type (computed here: nothing is sent to the bucket once its region is known)."""
        self.prepare()
        try:
            return self.urls.presigned_get_object(
                self.bucket.name,
                key,
                expires=PRESIGN_EXPIRY,
                response_headers={
                    "response-content-disposition": (
                        f"attachment; filename*=UTF-8''{url_quote(name)}"
                    ),
                    "response-content-type": mime_type,
                },
            )
        except Exception as error:
            raise problem(error, self.bucket) from None
