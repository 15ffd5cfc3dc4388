"""Blobs in an S3 bucket (MinIO, AWS S3 or any S3-compatible store), through the minio
client. minio is synchronous: every call runs in this store's own thread pool, so the
event loop never waits on the network and a burst of reads cannot starve other threads.

Uploads are spooled to local files while hashed (the key is the hash, known only at the
end) and put under their content keys at commit.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import re
import shutil
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import certifi
import httpx
import urllib3
from minio import Minio
from minio.commonconfig import ComposeSource, CopySource
from minio.datatypes import Part
from minio.error import InvalidResponseError, MinioException, S3Error
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, ProtocolError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse

from shared.kit.blobs.base import (
    CHUNK,
    BlobWriter,
    Held,
    InvalidPart,
    PartInfo,
    StoreRefused,
    StoreUnavailable,
    UnknownUpload,
    check_key,
    check_part_number,
    sweep_spools,
)

T = TypeVar("T")
# S3 error codes that say "not now" (a retry may succeed); any other S3Error refuses.
_FOR_NOW = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed"}
)
THREADS = 32
# A store that hangs (its port open, nothing answered) fails a call within these, so an
# upload is answered `503 storage_unavailable` by ingest, within the gateway's own 60 s
# wait for ingest, and gives back its database connection and thread. A store that
# goes silent longer than SILENCE_S on a healthy call is taken as hung too.
CONNECT_S = 5.0
SILENCE_S = 30.0
# A request's body goes out in slices of this, each within SILENCE_S (see _Paced).
SEND_SLICE = 256 * 1024
# Blobs put side by side at commit, and parts of one large blob.
PARALLEL_PUTS = 8
PART_SIZE = 16 * 1024 * 1024
MAX_COPY = 5 * 1024**3
# A ranged GET's answer: `bytes <first>-<last>/<whole size>`.
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    endpoint: str  # host[:port]
    secure: bool
    region: str | None


def parse_url(url: str) -> S3Location:
    """`s3://bucket?endpoint=http://host:port&region=eu-west-1&secure=false`; without an
    endpoint, AWS S3."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError("an S3 blob URL is s3://<bucket>[?endpoint=...&region=...]")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    endpoint = query.get("endpoint", "s3.amazonaws.com")
    secure = True
    if "://" in endpoint:
        scheme, _, endpoint = endpoint.partition("://")
        secure = scheme == "https"
    if "secure" in query:
        secure = query["secure"].lower() not in ("false", "0", "no")
    region = query.get("region") or os.environ.get("AWS_REGION") or None
    return S3Location(parts.netloc, endpoint.rstrip("/"), secure, region)


def _missing(error: S3Error, key: str) -> Exception:
    if error.code in ("NoSuchKey", "ResourceNotFound"):
        return FileNotFoundError(key)
    if error.code == "NoSuchUpload":
        return UnknownUpload(key)
    if error.code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):
        return InvalidPart(error.message or error.code)
    return error


class _Paced(HTTPConnection):
    """urllib3 sends a request under its connect timeout, and a socket's timeout bounds a
    whole sendall: minio's 16 MiB part would have to be sent within CONNECT_S. Here the
    connect timeout bounds the connecting only; the body goes in slices, each with
    SILENCE_S, so a store taking it slowly but steadily gets it, and one that stops
    taking it fails within SILENCE_S."""

    def send(self, data: Any) -> None:
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.sock.settimeout(SILENCE_S)
        if not isinstance(data, bytes | bytearray | memoryview):
            super().send(data)
            return
        view = memoryview(data).cast("B")
        for at in range(0, len(view), SEND_SLICE):
            super().send(view[at : at + SEND_SLICE])


class _PacedTLS(_Paced, HTTPSConnection):
    pass


class _PacedPool(HTTPConnectionPool):
    ConnectionCls = _Paced


class _PacedTLSPool(HTTPSConnectionPool):
    ConnectionCls = _PacedTLS


def _silent(error: Exception | None) -> bool:
    """The store took (some of) the request, then said nothing for SILENCE_S."""
    if isinstance(error, ReadTimeoutError):
        return True
    return isinstance(error, ProtocolError) and any(isinstance(a, TimeoutError) for a in error.args)


class _Retry(urllib3.Retry):
    """urllib3's, except that a store that fell silent is not asked again: each try
    would wait SILENCE_S more behind a caller already gone. A connection dropped before
    an answer (a kept-alive one the store had closed, a reset) is tried again."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if _silent(error):
            # As urllib3 raises when its retries are spent (what callers look for).
            raise MaxRetryError(_pool, url, error) from error  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)


@contextmanager
def _unavailable() -> Iterator[None]:
    """A connection error of urllib3 (refused, reset, silent, retries spent) as
    StoreUnavailable: an I/O error of the store, answered 503, never a 500."""
    try:
        yield
    except urllib3.exceptions.HTTPError as error:
        what = type(getattr(error, "reason", None) or error).__name__
        raise StoreUnavailable(f"the object store did not answer ({what})") from error
    except InvalidResponseError as error:
        # An answer that is no S3 one (a proxy's error page, a store failing inside:
        # moto answers two completions of one upload at once with an HTML 500).
        raise StoreUnavailable("the object store answered no S3 answer") from error


def _part_size(size: int) -> int:
    """16 MiB parts, larger when a blob would need more than 10,000 of them."""
    return max(PART_SIZE, -(-size // 9_999))


class S3BlobStore:
    def __init__(
        self,
        location: S3Location,
        spool_dir: Path,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
    ) -> None:
        self.bucket = location.bucket
        self.spool_dir = spool_dir
        http = urllib3.PoolManager(
            maxsize=THREADS,
            timeout=urllib3.Timeout(connect=CONNECT_S, read=SILENCE_S),
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=_Retry(
                total=5, connect=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        http.pool_classes_by_scheme = {"http": _PacedPool, "https": _PacedTLSPool}
        self._client = Minio(
            location.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            secure=location.secure,
            region=location.region,
            # As minio's own, with a connection for each of our threads.
            http_client=http,
        )
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="s3")
        self._http: httpx.AsyncClient | None = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        with _unavailable():
            return await loop.run_in_executor(self._threads, functools.partial(fn, *args, **kwargs))

    async def start(self) -> None:
        """Create the bucket if it is missing (also caches its region, so presigning
        needs no network), and drop the spools a crash left behind."""
        await asyncio.to_thread(sweep_spools, self.spool_dir)
        if not await self._call(self._client.bucket_exists, self.bucket):
            try:
                await self._call(self._client.make_bucket, self.bucket)
            except S3Error as error:
                if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._threads.shutdown(wait=False, cancel_futures=True)

    def writer(self, hold: Held | None = None) -> BlobWriter:
        return BlobWriter(self.spool_dir, hold)

    async def commit(self, writers: Sequence[BlobWriter]) -> None:
        """Put each spool under its content key, unless that key is there already
        (identical bytes share one blob), a few side by side."""

        async def put(w: BlobWriter) -> None:
            if await self.exists(w.key):
                return
            if w.held is not None:
                # Held in memory: put as it is, no spool file written and read back.
                await self._call(self._put_held, w)
                return
            await self._call(
                self._client.fput_object,
                self.bucket,
                w.key,
                str(w.path),
                part_size=_part_size(w.size),
                num_parallel_uploads=2,
            )

        try:
            unique = {check_key(w.key): w for w in writers}
            await self._side_by_side(put, unique.values())
        finally:
            for w in writers:
                w.abort()

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        # Every key checked before a byte is sent; a key given twice: the last bytes.
        unique = {check_key(key): data for key, data in items}
        await self._side_by_side(lambda item: self._put_bytes(*item), unique.items())

    async def put(self, key: str, data: bytes) -> None:
        await self.put_many([(key, data)])

    async def _put_bytes(self, key: str, data: bytes | bytearray) -> None:
        # One PUT: S3 shows an object whole or not at all.
        await self._call(self._client.put_object, self.bucket, key, io.BytesIO(data), len(data))

    def _put_held(self, writer: BlobWriter) -> None:
        # Lent in the thread: a commit cancelled meanwhile leaves the upload's memory
        # reserved until the PUT is done with it.
        with writer.lent() as held:
            self._client.put_object(self.bucket, writer.key, io.BytesIO(held), len(held))

    async def _side_by_side(self, put: Callable[[T], Awaitable[None]], items: Iterable[T]) -> None:
        """`put` for each item, PARALLEL_PUTS at a time; the first failure raised (an
        S3 error as StoreUnavailable or StoreRefused), the others cancelled."""
        gate = asyncio.Semaphore(PARALLEL_PUTS)

        async def gated(item: T) -> None:
            async with gate:
                await put(item)

        try:
            async with asyncio.TaskGroup() as group:
                for item in items:
                    group.create_task(gated(item))
        except ExceptionGroup as failed:
            first = failed.exceptions[0]  # the first failure says enough
            if isinstance(first, MinioException):
                code = getattr(first, "code", None) or type(first).__name__
                if isinstance(first, S3Error) and code not in _FOR_NOW:
                    raise StoreRefused(f"the object store refused a blob ({code})") from first
                # What a failing disk is to the local store: the caller answers 503.
                raise StoreUnavailable(f"the object store did not take a blob ({code})") from first
            raise first from None

    async def size(self, key: str) -> int:
        try:
            found = await self._call(self._client.stat_object, self.bucket, check_key(key))
        except S3Error as error:
            raise _missing(error, key) from error
        return int(found.size or 0)

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except FileNotFoundError:
            return False
        return True

    async def delete(self, key: str) -> None:
        await self._call(self._client.remove_object, self.bucket, check_key(key))

    async def _get(self, key: str, offset: int = 0, length: int = 0) -> Any:
        try:
            return await self._call(
                self._client.get_object, self.bucket, check_key(key), offset, length
            )
        except S3Error as error:
            raise _missing(error, key) from error

    async def stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        response = await self._get(key, start, end - start + 1)
        try:
            while chunk := await self._call(response.read, CHUNK):
                yield chunk
        finally:
            response.close()
            response.release_conn()

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        response = await self._get(key)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"copy-{uuid.uuid4().hex}"
        try:
            try:
                await self._call(_save, response, path)
            finally:
                response.close()
                response.release_conn()
            yield path
        finally:
            path.unlink(missing_ok=True)

    @_unavailable()
    def read_at(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            response = self._client.get_object(self.bucket, check_key(key), offset, length)
        except S3Error as error:
            if error.code == "InvalidRange":
                return b""  # at or past the end, as a file read there gives nothing
            raise _missing(error, key) from error
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    @_unavailable()
    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        if length <= 0:
            raise ValueError("a head of at least one byte")
        try:
            response = self._client.get_object(self.bucket, check_key(key), 0, length)
        except S3Error as error:
            if error.code == "InvalidRange":
                return b"", 0  # no first byte: the blob is empty
            raise _missing(error, key) from error
        try:
            data = bytes(response.read())
            if response.status == 200:  # the range ignored: the whole blob came
                return data[:length], len(data)
            found = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range") or "")
        finally:
            response.close()
            response.release_conn()
        if found is None or int(found[1]) != 0 or int(found[2]) != len(data) - 1:
            # An OSError, as a read that failed: the caller reads the blob another way.
            raise StoreUnavailable(f"the object store answered a ranged read of {key} oddly")
        return data, int(found[3])

    async def copy(self, source: str, target: str) -> None:
        """A server-side copy: no byte passes through us."""
        if not await self.exists(target):
            source_key, target_key = check_key(source), check_key(target)
            if await self.size(source) <= MAX_COPY:
                await self._call(
                    self._client.copy_object,
                    self.bucket,
                    target_key,
                    CopySource(self.bucket, source_key),
                )
            else:  # one CopyObject takes at most 5 GiB; compose copies in parts
                await self._call(
                    self._client.compose_object,
                    self.bucket,
                    target_key,
                    [ComposeSource(self.bucket, source_key)],
                )

    # Multipart, through minio's S3 calls (private in minio 7.2, but plain S3 APIs).

    async def create_multipart(self, key: str) -> str:
        return await self._call(
            self._client._create_multipart_upload, self.bucket, check_key(key), {}
        )

    def presign_part(self, key: str, upload_id: str, part_number: int, expires: timedelta) -> str:
        return self._client.get_presigned_url(
            "PUT",
            self.bucket,
            check_key(key),
            expires=expires,
            extra_query_params={
                "uploadId": upload_id,
                "partNumber": str(check_part_number(part_number)),
            },
        )

    def presigned_get(self, key: str, expires: timedelta) -> str:
        return self._client.presigned_get_object(self.bucket, check_key(key), expires=expires)

    async def put_part(
        self, key: str, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        """Spooled first: S3 wants a part's length before its bytes. Then PUT to the
        presigned URL, streamed from the spool."""
        url = self.presign_part(key, upload_id, part_number, timedelta(hours=1))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        spool = self.spool_dir / f"part-{uuid.uuid4().hex}"
        try:
            async with await anyio.open_file(spool, "wb") as f:
                async for chunk in chunks:
                    await f.write(chunk)

            async def body() -> AsyncIterator[bytes]:
                async with await anyio.open_file(spool, "rb") as f:
                    while chunk := await f.read(CHUNK):
                        yield chunk

            if self._http is None:
                self._http = httpx.AsyncClient(timeout=httpx.Timeout(SILENCE_S, connect=CONNECT_S))
            size = spool.stat().st_size
            try:
                response = await self._http.put(
                    url, content=body(), headers={"Content-Length": str(size)}
                )
            except httpx.TransportError as error:
                what = type(error).__name__
                raise StoreUnavailable(f"the object store did not take a part ({what})") from error
        finally:
            spool.unlink(missing_ok=True)
        if response.status_code == 404:
            raise UnknownUpload(upload_id)
        if response.status_code >= 500:
            raise StoreUnavailable(f"the object store did not take a part ({response.status_code})")
        response.raise_for_status()
        return response.headers["etag"].strip('"')

    async def list_parts(
        self, key: str, upload_id: str, *, paged: Callable[[], None] | None = None
    ) -> list[PartInfo]:
        parts: list[PartInfo] = []
        marker: str | None = None
        markers: set[str] = set()
        while True:
            try:
                page = await self._call(
                    self._client._list_parts,
                    self.bucket,
                    check_key(key),
                    upload_id,
                    part_number_marker=marker,
                )
            except S3Error as error:
                raise _missing(error, upload_id) from error
            parts += [PartInfo(p.part_number, p.etag, p.size or 0) for p in page.parts]
            if paged is not None:
                paged()
            if not page.is_truncated or not page.next_part_number_marker:
                return parts
            marker = page.next_part_number_marker
            if marker in markers:  # a store paging in a circle would be listed for ever
                raise StoreUnavailable(f"the object store listed parts from {marker} again")
            markers.add(marker)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        try:
            await self._call(
                self._client._complete_multipart_upload,
                self.bucket,
                check_key(key),
                upload_id,
                [Part(n, etag.strip('"')) for n, etag in parts],
            )
        except S3Error as error:
            raise _missing(error, upload_id) from error

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            await self._call(
                self._client._abort_multipart_upload, self.bucket, check_key(key), upload_id
            )
        except S3Error as error:
            raise _missing(error, upload_id) from error


def _save(response: Any, path: Path) -> None:
    with open(path, "wb") as f:
        shutil.copyfileobj(response, f, CHUNK)
