"""The bucket adapter kept: aiohttp speaks HTTP, botocore signs (AWS Signature V4,
with an STS session token when the integration has one); the requests are the few an
import makes (the location, ListObjectsV2 pages, a GET per object, ranges of one for
the thumbnails' workers). It runs over 500 lines because the guarantees below hold in
one place, `_exchange`, which every request goes through.

Why not a library's whole client (bench/README.md has the figures): obstore follows
redirects, reads a listing's or an error's body whole whatever its size, and resolves
names itself (no hook to connect to the address checked); aiobotocore's client keeps
those guarantees through its `http_session_cls` seam but spends about 1.1 ms of CPU a
GET in botocore's request pipeline, 4 to 5 times this adapter.

The guarantees of services/ingest/imports/egress.py hold here:
- a name is resolved by `_Resolver` (the address rule, egress.Egress) and aiohttp
  connects to the addresses it returned, TLS verified against the name: what was
  checked is what is dialled. aiohttp never asks a resolver about an address
  literal, so a literal endpoint is judged by the rule before the first request;
- every answer is read within an egress.Budget (bytes, time), an error's body and a
  listing page within their byte caps, a listing within its ListingBudget;
- redirects are not followed; no proxy is taken from the environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import (
    AssumeRoleWithWebIdentityCredentialFetcher,
    DeferredRefreshableCredentials,
    ReadOnlyCredentials,
    RefreshableCredentials,
)
from botocore.credentials import Credentials as Signing
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import Session
from botocore.utils import FileWebIdentityTokenLoader
from yarl import URL

from services.ingest.imports.buckets import protocol
from services.ingest.imports.buckets.content import Content
from services.ingest.imports.buckets.port import (
    CONTENT_CHANGED,
    Bucket,
    CloudProblem,
    Ranged,
    Read,
    WebIdentity,
    not_allowed,
    problem,
    refused,
    where,
)
from services.ingest.imports.domain.endpoints import as_address
from services.ingest.imports.egress import (
    MAX_ERROR_BYTES,
    Budget,
    CapReached,
    Caps,
    Egress,
    EndpointNotAllowed,
    ListingBudget,
)
from shared.kit.blobs import BlobWriter
from shared.kit.settings import Settings

CONNECT_TIMEOUT_S = 3.0
# A request answered 5xx, or whose connection failed before an answer, is sent again.
RETRIES = 2
LISTING_PAGE = 1000
# Connections kept to one bucket (reads of an import run this many at a time, at most).
CONNECTIONS = 64
PRESIGN_EXPIRY = timedelta(minutes=5)
# Headers of an answer: each line at most this long (aiohttp's caps).
MAX_HEADER_LINE = 16 * 1024

_T = TypeVar("_T")
ROLE_SESSION = "files-ingest"


@dataclass(frozen=True)
class Sts:
    """How ingest assumes a role with its web identity (FILES_CLOUD_* settings)."""

    token_file: str = ""
    endpoint: str = ""

    @classmethod
    def of(cls, settings: Settings) -> Sts:
        return cls(settings.cloud_web_identity_token_file, settings.cloud_sts_endpoint)


def _signing(bucket: Bucket, sts: Sts) -> Signing:
    """botocore's credentials for the bucket: its keys as they are, or a role assumed
    with the platform's web identity, fetched on first use and refreshed by botocore
    before they expire."""
    given = bucket.credentials
    if not isinstance(given, WebIdentity):
        return Signing(given.access_key, given.secret_key, given.session_token)
    if not sts.token_file:
        raise CloudProblem(
            "web_identity_unavailable",
            f"role {given.role_arn} cannot be assumed: this platform has no web identity"
            " (FILES_CLOUD_WEB_IDENTITY_TOKEN_FILE); give the integration keys instead",
        )
    session = Session()
    region = bucket.region or "us-east-1"

    def sts_client(service: str, config: Any = None) -> Any:
        return session.create_client(
            service, region_name=region, endpoint_url=sts.endpoint or None, config=config
        )

    fetcher = AssumeRoleWithWebIdentityCredentialFetcher(
        sts_client,
        FileWebIdentityTokenLoader(sts.token_file),
        given.role_arn,
        extra_args={"RoleSessionName": ROLE_SESSION},
    )
    return DeferredRefreshableCredentials(
        fetcher.fetch_credentials, "assume-role-with-web-identity"
    )


class _Resolver(AbstractResolver):
    """The address rule where aiohttp turns names into addresses."""

    def __init__(self, egress: Egress) -> None:
        self.egress = egress

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await asyncio.to_thread(self.egress.addresses, host, port)
        return [
            ResolveResult(
                hostname=host,
                host=str(sockaddr[0]),
                port=port,
                family=family_found,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
            for family_found, sockaddr in found
        ]

    async def close(self) -> None:
        return None


def _expired(budget: Budget) -> CapReached:
    try:
        budget.left()
    except CapReached as reached:
        return reached
    return CapReached("response_timeout", f"{budget.what} did not arrive in time")


async def _body(response: aiohttp.ClientResponse, budget: Budget) -> AsyncIterator[bytes]:
    """The answer's body as it comes, within the budget."""
    if response.content_length is not None:
        budget.declared(response.content_length)
    while True:
        try:
            async with asyncio.timeout(budget.left()):
                piece = await response.content.readany()
        except TimeoutError:
            raise _expired(budget) from None
        if not piece:
            return
        budget.take(len(piece))
        yield piece


async def _joined(pieces: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in pieces])


class S3Reader:
    """A bucket read over its S3 API; one aiohttp session (a pool of keep-alive
    connections) per bucket, made on first use in the running loop."""

    def __init__(self, bucket: Bucket, egress: Egress, caps: Caps, sts: Sts = Sts()) -> None:
        self.bucket, self.egress, self.caps, self.sts = bucket, egress, caps, sts
        self._signing: Signing | None = None
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self.region = ""
        self.urls: protocol.Addressing | None = None

    # -- set-up -----------------------------------------------------------------------

    async def allowed(self) -> None:
        endpoint = self.bucket.endpoint
        try:
            await asyncio.to_thread(self.egress.addresses, endpoint.hostname, endpoint.port)
        except EndpointNotAllowed as refusal:
            raise not_allowed(refusal, self.bucket) from None
        except OSError as error:
            raise problem(error, self.bucket) from None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            endpoint = self.bucket.endpoint
            if as_address(endpoint.hostname) is not None:
                # aiohttp dials an address literal without asking the resolver.
                try:
                    self.egress.addresses(endpoint.hostname, endpoint.port)
                except EndpointNotAllowed as refusal:
                    raise not_allowed(refusal, self.bucket) from None
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    resolver=_Resolver(self.egress),
                    limit=CONNECTIONS,
                    ssl=ssl.create_default_context(),
                ),
                timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S),
                auto_decompress=False,
                trust_env=False,
                max_line_size=MAX_HEADER_LINE,
                max_field_size=MAX_HEADER_LINE,
            )
        return self._http

    async def prepare(self) -> protocol.Addressing:
        """The region (asked of the endpoint when the integration named none) and where
        the bucket's requests go."""
        if self.urls is not None:
            return self.urls
        async with self._lock:
            if self.urls is None:
                region = self.bucket.region or await self._location()
                self.region = region
                self.urls = protocol.addressing(self.bucket.endpoint, self.bucket.name, region)
        return self.urls

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- the requests -----------------------------------------------------------------

    async def _frozen(self) -> ReadOnlyCredentials:
        """The credentials to sign with now: a role's are fetched (or refreshed, when
        they are about to expire) from STS in a worker thread."""
        if self._signing is None:
            self._signing = _signing(self.bucket, self.sts)
        signing = self._signing
        if not (isinstance(signing, RefreshableCredentials) and signing.refresh_needed()):
            return signing.get_frozen_credentials()
        try:
            return await asyncio.to_thread(signing.get_frozen_credentials)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "an error")
            raise CloudProblem(
                "invalid_credentials",
                f"the integration's role could not be assumed with this platform's web"
                f" identity: STS answered {code}",
            ) from None
        except (BotoCoreError, OSError) as error:
            raise CloudProblem(
                "endpoint_unreachable",
                f"STS, which gives the integration's role its credentials, does not answer"
                f" ({type(error).__name__})",
            ) from None

    def _headers(self, url: str, auth: S3SigV4Auth) -> dict[str, str]:
        request = AWSRequest("GET", url)
        auth.add_auth(request)
        return dict(request.headers.items())

    async def _exchange(
        self,
        url: str,
        budget: Callable[[], Budget],
        on_ok: Callable[[AsyncIterator[bytes]], Awaitable[_T]],
        *,
        key: str | None = None,
        region: str | None = None,
        byte_range: str | None = None,
        if_match: str | None = None,
        seen: dict[str, str] | None = None,
    ) -> tuple[int, _T | bytes]:
        """GET `url`, signed, and read its answer within a fresh `budget()` per attempt:
        (200, what `on_ok` made of the body) or (status, the error's body, at most
        MAX_ERROR_BYTES). Sent again after a 5xx, or a connection that failed before
        an answer, RETRIES times. With `byte_range` (`bytes=a-b`, sent unsigned, as S3
        allows any header that is not `x-amz-*`), a 206 is the answer `on_ok` reads;
        with `if_match` (an ETag, unquoted; unsigned too) a 412 says the object is no
        longer that one. `seen` gets the read answer's ETag (unquoted), if it has one."""
        http = self._session()
        target = URL(url, encoded=True)
        for attempt in range(RETRIES + 1):
            answered = False
            response: aiohttp.ClientResponse | None = None
            try:
                allowance = budget()
                signer = S3SigV4Auth(await self._frozen(), "s3", region or self.region)
                headers = self._headers(url, signer)
                if byte_range is not None:
                    headers["Range"] = byte_range
                if if_match is not None:
                    headers["If-Match"] = f'"{if_match}"'
                try:
                    async with asyncio.timeout(allowance.left()):
                        response = await http.get(target, headers=headers, allow_redirects=False)
                except aiohttp.ClientError:
                    raise
                except TimeoutError:
                    raise _expired(allowance) from None
                answered = True
                result: _T | bytes
                if response.status == 200 or (byte_range is not None and response.status == 206):
                    etag = response.headers.get("ETag", "")
                    # A weak one (W/"...") never matches If-Match's strong comparison.
                    if seen is not None and etag and not etag.startswith("W/"):
                        seen["etag"] = etag.strip('"')
                    result = await on_ok(_body(response, allowance))
                else:
                    allowance.max_bytes = MAX_ERROR_BYTES
                    result = await _joined(_body(response, allowance))
                response.release()
            except (EndpointNotAllowed, CapReached) as refusal:
                if response is not None:
                    response.close()
                raise problem(refusal, self.bucket) from None
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                if response is not None:
                    response.close()
                if attempt < RETRIES and not answered:
                    await asyncio.sleep(0.1 * attempt)
                    continue
                if answered:
                    what = f"{key!r}" if key is not None else "the answer"
                    raise CloudProblem(
                        "object_unreadable" if key is not None else "bucket_error",
                        f"{what} could not be read to its end ({type(error).__name__})",
                    ) from None
                raise CloudProblem(
                    "endpoint_unreachable",
                    f"{self.bucket.endpoint.url()} does not answer ({type(error).__name__})",
                ) from None
            if response.status >= 500 and attempt < RETRIES:
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            return response.status, result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _location(self) -> str:
        """GetBucketLocation, path style on the endpoint as given, signed for us-east-1."""
        endpoint = self.bucket.endpoint
        status, body = await self._exchange(
            f"{endpoint.url()}/{self.bucket.name}?location",
            lambda: Budget(
                f"the location of bucket {self.bucket.name!r}",
                MAX_ERROR_BYTES,
                self.caps.response_s,
            ),
            _joined,
            region="us-east-1",
        )
        if status != 200:
            raise refused(protocol.error_code(status, body, None), self.bucket)
        try:
            return protocol.parse_location(body, endpoint)
        except protocol.Unreadable as unreadable:
            raise CloudProblem(
                "bucket_error", f"{where(self.bucket)} answered {unreadable}"
            ) from None

    async def read(self, key: str, spool_dir: Path) -> Read:
        urls = await self.prepare()
        # Its ETag: what later reads of it for this file name (`read_range`'s if_match).
        seen: dict[str, str] = {}

        async def spooled(pieces: AsyncIterator[bytes]) -> Content:
            content = Content(spool_dir)
            try:
                async for piece in pieces:
                    content.add(piece)
            except BaseException:
                content.close()
                raise
            return content

        status, answer = await self._exchange(
            urls.object_url(key),
            lambda: Budget(f"object {key!r}", None, self.caps.response_s),
            spooled,
            key=key,
            seen=seen,
        )
        if not isinstance(answer, Content):
            raise refused(protocol.error_code(status, answer, key), self.bucket, key)
        answer.etag = seen.get("etag")
        try:
            # In a worker thread even from memory: a video's or WebP's facts are read by
            # the prober process (services/ingest/media/prober.py), a round trip or two
            # (and its start, the first time) that must not hold the event loop.
            return await asyncio.to_thread(answer.facts)
        finally:
            answer.close()

    async def hashed(self, key: str) -> tuple[str, str | None]:
        urls = await self.prepare()
        seen: dict[str, str] = {}

        async def digest(pieces: AsyncIterator[bytes]) -> str:
            # A fresh digest per attempt: a retried GET starts again from the first byte.
            sha256 = hashlib.sha256()
            async for piece in pieces:
                sha256.update(piece)
            return sha256.hexdigest()

        status, answer = await self._exchange(
            urls.object_url(key),
            lambda: Budget(f"object {key!r}", None, self.caps.response_s),
            digest,
            key=key,
            seen=seen,
        )
        if not isinstance(answer, str):
            raise refused(protocol.error_code(status, answer, key), self.bucket, key)
        return answer, seen.get("etag")

    async def copy(self, key: str, writer: Callable[[], BlobWriter]) -> BlobWriter:
        urls = await self.prepare()

        async def written(pieces: AsyncIterator[bytes]) -> BlobWriter:
            # A fresh spool per attempt: a retried GET starts again from the first byte.
            spool = writer()
            try:
                async for piece in pieces:
                    spool.write(piece)
                spool.finish()
            except BaseException:
                spool.abort()
                raise
            return spool

        status, answer = await self._exchange(
            urls.object_url(key),
            lambda: Budget(f"object {key!r}", None, self.caps.response_s),
            written,
            key=key,
        )
        if not isinstance(answer, BlobWriter):
            raise refused(protocol.error_code(status, answer, key), self.bucket, key)
        return answer

    async def read_run(self, keys: Sequence[str], spool_dir: Path) -> list[Read | Exception]:
        found: list[Read | Exception] = []
        for key in keys:
            try:
                found.append(await self.read(key, spool_dir))
            except Exception as error:
                found.append(error)
        return found

    async def check(self) -> None:
        """One listing page: it needs the bucket and the right to list it, and its
        errors (unlike a HEAD's) say which of the credentials or the bucket is wrong."""
        await self.allowed()
        await self.prepare()
        await self._page("", None, 1, ListingBudget(self.caps, f"bucket {self.bucket.name!r}"))

    async def pages(self, prefix: str) -> AsyncGenerator[list[str], None]:
        await self.prepare()
        listing = ListingBudget(self.caps, f"the listing of {prefix!r}")
        token: str | None = None
        while True:
            page = await self._page(prefix, token, LISTING_PAGE, listing)
            yield page.keys
            if page.following is None:
                return
            token = page.following

    async def listing(self, prefix: str) -> AsyncGenerator[list[protocol.Listed], None]:
        await self.prepare()
        listing = ListingBudget(self.caps, f"the listing of {prefix!r}")
        token: str | None = None
        while True:
            page = await self._page(prefix, token, LISTING_PAGE, listing)
            yield page.entries or []
            if page.following is None:
                return
            token = page.following

    async def _page(
        self, prefix: str, token: str | None, most: int, listing: ListingBudget
    ) -> protocol.Page:
        urls = await self.prepare()
        query = {"encoding-type": "url", "list-type": "2", "max-keys": str(most), "prefix": prefix}
        if token is not None:
            query["continuation-token"] = token
        encoded = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items())
        )
        try:
            status, body = await self._exchange(
                f"{urls.origin}{urls.bucket_path}?{encoded}", listing.page, _joined
            )
        finally:
            listing.stopped()
        if status != 200:
            raise refused(protocol.error_code(status, body, None), self.bucket)
        try:
            page = protocol.parse_page(body)
        except protocol.Unreadable as unreadable:
            raise CloudProblem(
                "bucket_error", f"{where(self.bucket)} answered {unreadable}"
            ) from None
        try:
            listing.done(page.following)
        except CapReached as cap:
            raise problem(cap, self.bucket) from None
        return page

    async def read_range(
        self, key: str, first: int, last: int, if_match: str | None = None
    ) -> Ranged:
        urls = await self.prepare()
        length = last - first + 1
        status, answer = await self._exchange(
            urls.object_url(key),
            lambda: Budget(f"object {key!r}", length, self.caps.response_s),
            _joined,
            key=key,
            byte_range=f"bytes={first}-{last}",
            if_match=if_match,
        )
        if status == 412:
            raise CloudProblem(
                CONTENT_CHANGED,
                f"object {key!r} is no longer the one imported (its ETag changed)",
            )
        if status == 416:
            return Ranged(b"", first)  # at or past its end, as a file read there gives
        if status not in (200, 206) or not isinstance(answer, bytes):
            raise refused(protocol.error_code(status, answer, key), self.bucket, key)
        if status == 200:
            # A bucket that ignores Range sent the whole object: only one within the
            # budget got here (a larger one is `response_too_large`).
            return Ranged(answer[first : last + 1], first)
        return Ranged(answer, first)

    async def presign(self, key: str, name: str, mime_type: str) -> str:
        """Computed here: nothing is sent to the bucket once its region is known."""
        urls = await self.prepare()
        disposition = quote(f"attachment; filename*=UTF-8''{quote(name)}", safe="")
        request = AWSRequest(
            "GET",
            f"{urls.object_url(key)}?response-content-disposition={disposition}"
            f"&response-content-type={quote(mime_type, safe='')}",
        )
        S3SigV4QueryAuth(
            await self._frozen(), "s3", self.region, expires=int(PRESIGN_EXPIRY.total_seconds())
        ).add_auth(request)
        return str(request.url)
