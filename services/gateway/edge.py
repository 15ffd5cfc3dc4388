"""The public edge: authenticates, routes to the services, waits for consistency.

It owns no data. Each `/v1` request is authenticated by API key: the ACL
service answers with the caller and what they may do (organisation role,
folder grants), cached for at most two seconds, and dropped at once after a
change of users, keys or collaborators: made through this replica, or announced
by the ACL context's events (every replica follows `files.acl`). The request
is then forwarded to the service that owns the resource with the caller and
their access in a signed token (shared/kit/identity.py); each service decides on
its own resources (the catalog knows folder paths, so it decides what a grant
reaches). Uploads and downloads are streamed through, never buffered.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.cookiejar
import json as stdjson
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from fastapi import Request
from fastapi.responses import Response

from services.gateway import deadlines, sessions
from services.gateway.routes import Route
from services.gateway.transfers import Transfers
from shared.contracts import topics
from shared.kit import consistency, idempotency, identity, tracing
from shared.kit.access import RANK, Access
from shared.kit.errors import Refused, repeated_parameter
from shared.kit.http import (
    CORRELATION_HEADER,
    JSON,
    ServiceTransport,
    StreamCut,
    error_body,
    only_reads,
)
from shared.kit.logs import log
from shared.kit.settings import Settings

# A cached view of a caller lives at most this long. A change of access drops every
# replica's cache when its event arrives (`ACL_FETCH_WAIT_MS`), and at once on the
# replica that made it; this bound holds if the events stop coming.
AUTH_TTL_S = 2.0
# The callers kept (signed-in users' keys and sessions), the least recently asked for
# dropped first; credentials no user has are kept apart, fewer, so a stream of made-up
# keys (no credential needed to send one) drops only its own kind, never a user's.
CALLERS_KEPT = 10_000
UNKNOWN_KEPT = 1_000
# How long the broker may hold the ACL follower's fetch that finds nothing. Kafka answers
# a held fetch as a record arrives; tansu (the embedded broker) looks again at doubling
# intervals, so an event comes within about half this (511 ms), inside AUTH_TTL_S. The
# consumers' 100 ms (FETCH_MAX_WAIT_MS) made the follower 10 of a platform at rest's 66
# fetches a second, each costing the broker about 1 ms of CPU and the gateway about as
# much: 9% of its CPU in upload_small (bench/README.md, "Dec 6, night (brokercost)").
ACL_FETCH_WAIT_MS = 1000
# How long what a service consumes is taken as known (`Gateway._round`): it is fixed for
# a version, and learnt again this often, so a rolling deploy that changes it is
# followed within this time.
CONSUMES_KNOWN_S = 60.0
# 100,000 ids as JSON are about 4 MB.
MAX_JSON_BODY = 16 * 1024 * 1024
# A service's 503 says when to try again (its own deadline passed, its database away).
PASSED_HEADERS = (
    "content-type",
    consistency.HEADER.lower(),
    "location",
    "content-range",
    "retry-after",
)
# Headers of the caller's own request that go on with it to the owning service: the
# reliability work keys retries by Idempotency-Key; the trace continues.
FORWARDED_WITH_BODY = ("content-type", "traceparent", "idempotency-key")
# A streamed body goes on to the service in pieces of about this size. uvicorn hands
# the app a piece of 64-300 KiB (what came in since the last read; it stops reading
# at 64 KiB held), and each piece sent costs httpx, httpcore, h11 and anyio a write of
# their own (a timeout scope, an event, a send): at 512x512 DICOM that was 1.3 CPU-s
# a GB proxied, 0.8 in half-MiB pieces (bench/README.md, "dicom"). Per request in
# flight it holds at most this much more than before.
FORWARDED_PIECE = 512 * 1024
# A download under way asks its caller again at most this often (from the cache, so
# about every AUTH_TTL_S the access service itself), and at once after a change of
# access: a look at the clock a chunk costs nothing a download would notice.
DOWNLOAD_RECHECK_S = 2.0
# How long a transfer under way waits for the access service to answer its recheck; past
# it, as unanswered (the transfer goes on): a hung service must not stall every download.
RECHECK_WAIT_S = 1.0


# How long a transfer waits for one of the cap's connections to a service (above it,
# FILES_GATEWAY_TRANSFERS_PER_SERVICE are open) before it is refused 503.
TRANSFER_WAIT_S = 2.0
# The one caller all part URLs of the version before count as (`Gateway.part_caller`).
UNSIGNED_PARTS = "parts:unsigned"
# A part URL's number and expiry as ingest writes them: ASCII digits, no sign, no
# spaces (int() takes "١٢٣" and " 7", which ingest refuses 422 after the body is sent).
DECIMAL = re.compile(r"[0-9]{1,12}")
# A connection that was made and then dropped under a request (not a timeout, not a
# refused connection: the service is up, the connection was not).
DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class TooLarge(Exception):
    pass


def _right_gone(gone: str, role: str | None) -> Refused:
    """Why a download was cut short, for an RPC's status (`StreamCut`)."""
    if gone == "key":
        return Refused(
            401,
            "unauthenticated",
            "the API key (or sign-in) this download was made with was revoked while it was"
            " sent: it was cut short",
        )
    return Refused(
        403,
        "forbidden",
        "the role on the folder that allowed this download went while it was sent: it was"
        " cut short",
        {"role_needed": "user", "role": role},
    )


async def in_pieces(
    chunks: AsyncIterator[bytes], size: int = FORWARDED_PIECE
) -> AsyncIterator[bytes]:
    """The body's chunks joined into pieces of at least `size` bytes (the last one
    shorter), in order; a chunk that big on its own goes on as it is, not copied."""
    held: list[bytes] = []
    length = 0
    async for chunk in chunks:
        if not chunk:
            continue
        held.append(chunk)
        length += len(chunk)
        if length >= size:
            # The chunks let go before the piece is sent: one piece held, not two.
            piece = held[0] if len(held) == 1 else b"".join(held)
            held, length = [], 0
            yield piece
    if held:
        yield b"".join(held)


def streamed_length(request: Request) -> dict[str, str]:
    """The caller's Content-Length, to send on with their streamed body: the service
    then reads it framed by its length, not in HTTP chunks (h11 would copy each piece
    to frame it). uvicorn has checked it (digits only, the body exactly that long, or
    the caller is gone); a body sent in chunks goes on in chunks."""
    length = request.headers.get("content-length")
    if (
        length is None
        or not (length.isascii() and length.isdigit())
        or "transfer-encoding" in request.headers
    ):
        return {}
    return {"content-length": length}


class Unavailable(Exception):
    """A service did not answer: unreachable, or past the timeout."""

    def __init__(
        self, service: str, error: Exception, *, busy: bool = False, spent: bool = False
    ) -> None:
        super().__init__(f"{service}: {error!r}")
        self.service = service
        # The gateway's cap on transfers to the service was reached: none was sent.
        self.busy = busy
        # The request's time budget ran out waiting for it (services/gateway/deadlines.py).
        self.spent = spent


@dataclass
class Call:
    """One public request, matched to its route: what every composer works from."""

    request: Request
    route: Route
    # The path parameters as parsed (canonical text), never the client's own text.
    values: dict[str, str]
    user: dict[str, Any] | None

    @property
    def path(self) -> str:
        return self.route.path(self.values)

    def query(self) -> list[tuple[str, str]]:
        """The query parameters the route declares; others stay here."""
        return [(k, v) for k, v in self.request.query_params.multi_items() if self.declares(k)]

    def declares(self, name: str) -> bool:
        return any(q.takes(name) for q in self.route.query if q.where == "query")

    def repeated(self) -> Refused | None:
        """A 422 naming a declared parameter that takes one value, given more than once."""
        return repeated_parameter(
            self.request.query_params.multi_items(),
            lambda name: any(
                q.takes(name) and q.one_value for q in self.route.query if q.where == "query"
            ),
        )

    def undeclared(self) -> list[str]:
        """The query parameters a strict route refuses."""
        if not self.route.strict_query:
            return []
        return sorted({k for k in self.request.query_params if not self.declares(k)})


async def _last_byte_bounds(
    pieces: AsyncIterator[bytes], bound: asyncio.Timeout, seconds: float
) -> AsyncIterator[bytes]:
    """A streamed body's pieces; once the last is sent, its answer is waited for a
    write's budget from then (`bound`, the call's). Ingest inspects the files and puts
    them in the store after the last byte: a budget counted from the request's start
    would leave it what the body's time left over (a stored upload answered 503, and
    the web app, which sends no key, stored it again), and 60 s of silence, which bound
    it before, may go on for ever."""
    async for piece in pieces:
        yield piece
    bound.reschedule(asyncio.get_running_loop().time() + seconds)


async def capped_body(request: Request) -> bytes:
    """A JSON body, read up to MAX_JSON_BODY: bulk ids fit, a runaway client does not.
    The caller's own sending is not waiting for a service: the request's budget is
    paused meanwhile."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise TooLarge
    body = bytearray()
    with deadlines.paused(request):
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON_BODY:
                raise TooLarge
    # Kept where Starlette keeps a body it read itself, for composing the answer.
    request._body = bytes(body)
    return request._body


def error_response(status: int, code: str, message: str, **details: Any) -> JSON:
    return JSON(error_body(code, message, details), status)


# Headers whose one value says who calls or which write this is. Sent twice, one part
# would pick the first and another the last (Starlette the first, gRPC's metadata the
# last), so a request could be authorised as one caller and acted on as another.
SINGLE_HEADERS = ("Authorization", idempotency.HEADER, sessions.CSRF_HEADER)


def repeated_header(request: Request) -> JSON | None:
    """A 400 naming a header (or the session cookie) the request sends more than once."""
    # Only values that differ are ambiguous (a client library may repeat one as it is).
    for name in SINGLE_HEADERS:
        times = len(set(request.headers.getlist(name)))
        if times > 1:
            return error_response(
                400,
                "duplicate_header",
                f"the {name} header is sent with {times} values: send it once",
                header=name,
            )
    if "authorization" in request.headers or (
        request.method == "DELETE" and request.url.path == "/v1/sessions"
    ):
        # A key's request reads no cookie; signing out must stay possible (it ends the
        # session it finds, and the browser's cookie with it).
        return None
    pairs = [
        [part.strip() for part in chunk.partition("=")[::2]]
        for value in request.headers.getlist("cookie")
        for chunk in value.split(";")
    ]
    cookie = sessions.cookie_name(request)
    times = len({value for name, value in pairs if name == cookie})
    if times > 1:
        return error_response(
            400,
            "duplicate_header",
            f"the {cookie} cookie is sent with {times} values: send it once"
            " (sign out, or clear the site's cookies, and sign in again)",
            header="Cookie",
            cookie=cookie,
        )
    return None


class Replayed(Exception):
    """A service gave back the answer this gateway composed the first time a keyed
    request was applied (kit/idempotency.py): it is relayed as it is."""

    def __init__(self, response: Response) -> None:
        super().__init__("replayed")
        self.response = response


def note_idempotency(
    request: Request, service: str, user: dict[str, Any], answer: httpx.Response
) -> None:
    """What the owning service did with the request's Idempotency-Key."""
    state = answer.headers.get(idempotency.STATE_HEADER)
    if state == "public":
        headers = {k: v for k, v in answer.headers.items() if k.lower() in idempotency.KEPT_HEADERS}
        headers[idempotency.REPLAYED_HEADER] = "true"
        raise Replayed(Response(answer.content, answer.status_code, headers=headers))
    if state in ("applied", "replayed"):
        request.state.idempotent = (service, state, user["id"])


def _decimal(value: object) -> int | None:
    """A number of a part URL written as ingest writes it (`DECIMAL`), else None."""
    text = str(value)
    return int(text) if DECIMAL.fullmatch(text) else None


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = {
            "catalog": settings.catalog_url,
            "ingest": settings.ingest_url,
            "acl": settings.acl_url,
            "datasets": settings.datasets_url,
            "dicom": settings.dicom_url,
            "thumbnails": settings.thumbnails_url,
        }
        self._keys: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        # Counts the times the cache was emptied: a download under way asks again after.
        self.access_changes = 0
        # The stores each service consumes, as its consistency answers say (and when
        # they said it): a round asks only the services that may have reacted.
        self._consumes: dict[str, tuple[float, frozenset[str]]] = {}
        # The event types each service applies, as its consistency answers say (and
        # when): a catch-up asks the source for the last event of those, not its head.
        self._applies: dict[str, tuple[float, frozenset[str]]] = {}
        # Signs who asks, on every call to a service (refused at start if weak or unset).
        self.identity = identity.ServiceKey(settings.service_key)
        self.transfers = Transfers(settings.gateway_transfers_per_caller)
        # Until when part URLs of the form before (naming no opener) are passed on
        # (`part_caller`): set by the operator for a rollout, never by a start, so that
        # a restart does not open that way again.
        until = settings.gateway_unsigned_parts_until
        self._unsigned_parts_until = until.timestamp() if until is not None else None
        # The lookups of a caller under way, by the key's digest and the count of changes
        # of access they began after: every download of a key asks again at its next
        # chunk after a change, and they share one call.
        self._asking: dict[tuple[str, int], asyncio.Future[dict[str, Any] | None]] = {}
        self.http: httpx.AsyncClient
        self.streams: httpx.AsyncClient
        self.fresh: httpx.AsyncClient
        self._follower: asyncio.Task[None]

    async def start(self) -> None:
        # Idle connections go before the services' 5 s keep-alive closes them: a call
        # sent on one as it closes would be lost.
        limits = httpx.Limits(
            max_connections=200, max_keepalive_connections=50, keepalive_expiry=2.0
        )
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0),
            transport=ServiceTransport(limits=limits),
            # A pool of its own for each service: httpcore looks over every connection of
            # a pool (is it expired, is it free) for each call it sends, and an upload's
            # consistency round alone keeps a few to each of six services open. Each pool
            # has the limits above (200 connections to each service, not to all six: the
            # services' database pools are what bounds the work they take at once).
            mounts={
                _origin(url): ServiceTransport(limits=limits) for url in self.services.values()
            },
            cookies=NoCookies(),
            event_hooks={"request": [_carry_trace]},
        )
        # Streamed bodies (uploads, their parts, STOW; downloads, DICOMweb's retrieves)
        # on pools of their own: each holds its connection for as long as its client
        # takes to send or read it, and 200 slow ones held every connection of the pools
        # above, so every other call to that service waited 60 s for one and failed. A
        # pool per service, with a high cap: httpcore looks over every connection of a
        # pool as each call starts and ends (some 4 µs a connection, on the event loop),
        # so the cap bounds that too. A transfer past it waits a moment for one to end,
        # then is refused 503 (Retry-After), never stalled. A body sent that pauses is cut
        # off (FILES_HTTP_BODY_IDLE_S); an answer not read is not (Known gaps).
        transfers = httpx.Limits(
            max_connections=self.settings.gateway_transfers_per_service,
            max_keepalive_connections=50,
            keepalive_expiry=2.0,
        )
        self.streams = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0, pool=TRANSFER_WAIT_S),
            transport=ServiceTransport(limits=transfers),
            mounts={
                _origin(url): ServiceTransport(limits=transfers) for url in self.services.values()
            },
            cookies=NoCookies(),
            event_hooks={"request": [_carry_trace]},
        )
        # For a plain read retried after its kept-alive connection was dropped: a
        # connection of its own (the pool's other idle ones may have been dropped too).
        # A download is retried on the pool of transfers instead, within its cap.
        self.fresh = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0),
            transport=ServiceTransport(limits=httpx.Limits(max_keepalive_connections=0)),
            cookies=NoCookies(),
        )
        self._follower = asyncio.create_task(self._follow_access_changes(), name="acl-follower")

    async def stop(self) -> None:
        self._follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._follower
        await self.http.aclose()
        await self.streams.aclose()
        await self.fresh.aclose()

    async def _follow_access_changes(self) -> None:
        """Every event of the ACL context (a key revoked, a grant removed or changed, a
        user changed) drops the cached callers, on every replica: each reads the whole
        topic from its end, in no consumer group."""
        while True:
            consumer = AIOKafkaConsumer(
                topics.ACL,
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=None,
                auto_offset_reset="latest",
                fetch_max_wait_ms=ACL_FETCH_WAIT_MS,
            )
            try:
                await consumer.start()
                async for message in consumer:
                    if message.value is not None:  # not a relay's filler (shared/kit/outbox.py)
                        self.forget_callers()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The cache's bound holds meanwhile; follow again after a pause.
                log.warning("gateway.acl_follower_failed", exc_info=True)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    # -- calls to the services -------------------------------------------------------

    def _headers(
        self,
        service: str,
        request: Request,
        user: dict[str, Any] | None = None,
        *,
        with_body: bool = False,
        folder_path: str | None = None,
        object_ref: str | None = None,
    ) -> dict[str, str]:
        """The headers of every call to `service`, the one place they are made: who
        asks, signed for that service only (the user, or the gateway itself for a call
        made for no user: a key lookup, a consistency wait, a blob read after the rights
        were checked),
        the request's correlation id (the service's own request id then matches ours),
        and the trace. `with_body` for the call that carries the caller's own request
        on (it keeps its content type and its Idempotency-Key; else a JSON call of ours
        would go out labelled as, say, the caller's multipart upload). `folder_path`, for
        a call about a folder whose role the gateway checked, is signed with the user,
        and with it `object_ref`, the object of a customer's bucket of the file whose
        folder it is (both from the same answer of the catalog). The id of the key the
        user was authenticated by, when the ACL context said it, is signed too."""
        correlation = request.state.correlation_id
        headers = {
            identity.HEADER: self.identity.sign(
                user["id"],
                user["access"],
                correlation,
                audience=service,
                folder_path=folder_path,
                object_ref=object_ref,
                key_id=user.get("key_id"),
            )
            if user is not None
            else self.identity.for_service("gateway", correlation, audience=service),
            CORRELATION_HEADER: correlation,
        }
        for name in FORWARDED_WITH_BODY if with_body else ("traceparent",):
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        return headers

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        request: Request,
        user: dict[str, Any] | None = None,
        *,
        params: Any = None,
        json: Any = None,
        content: Any = None,
        headers: dict[str, str] | None = None,
        with_body: bool = False,
        folder_path: str | None = None,
        object_ref: str | None = None,
        stream: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (httpx's, per call)
        shared: bool = False,
    ) -> httpx.Response:
        """Every call to a service goes through here and the one client: `path` is
        ours (a route's template filled with parsed values, or an internal route),
        never the client's. A service that does not answer raises Unavailable (a 503,
        never a 500: a write may or may not have been made, and the caller may retry it
        under its Idempotency-Key). A read whose kept-alive connection the service
        dropped (it closed it as idle while we sent) is sent once more, on a new one.
        `shared`: a call made for several requests (the caller's lookup), bounded by
        its own caller, not by this request's budget. `timeout`: the call's own bound
        of silence (a consistency wait's), within the budget's remainder all the same.
        A POST that only reads (`http.READ_POSTS`: its query too long for a URL) is
        told its deadline as a read is."""
        sent = {
            **self._headers(
                service,
                request,
                user,
                with_body=with_body,
                folder_path=folder_path,
                object_ref=object_ref,
            ),
            **(headers or {}),
        }
        if json is not None:
            content = json_body(json)
            if not any(name.lower() == "content-type" for name in sent):
                sent["content-type"] = "application/json"
        body_streamed = content is not None and not isinstance(content, bytes | str)
        budget = None if shared else deadlines.of(request)
        left = budget.left() if budget is not None else None
        if shared and timeout is None:
            # The caller's lookup: its own bound is a read's budget (`_ask_caller`).
            sent[deadlines.HEADER] = deadlines.told(self.settings.gateway_request_budget_s)
        if left is not None:
            if left <= 0:
                raise Unavailable(service, TimeoutError("the budget was spent"), spent=True)
            # A streamed body is told nothing: its time is not known ahead.
            if not body_streamed and (
                only_reads(method, path)
                or (
                    method in idempotency.METHODS
                    and any(name.lower() == idempotency.HEADER.lower() for name in sent)
                )
            ):
                # The service gives up a little before we do: its own answer (naming
                # what it waited for) then comes first. Giving up applies nothing: a
                # read, or a keyed write (its unit of work is abandoned).
                sent[deadlines.HEADER] = deadlines.told(left)
            elif not body_streamed and with_body and not getattr(request.state, "wrote", False):
                # The caller's own write, unkeyed, before anything of it was made (here
                # or by an earlier call of the request: a DICOM job's cancel is the
                # DICOM context's first): the service gives up well before we do, and
                # only before its commit begins (`db.committing`), so its "nothing
                # applied" is true and comes while we still wait; a commit begun has
                # the rest to be answered in.
                sent[deadlines.HEADER] = deadlines.told(left, unkeyed=True)
        if not shared and not only_reads(method, path):
            # From here something of the request may be made: none of its later writes
            # is told the unkeyed deadline, whose 503 says nothing was applied.
            request.state.wrote = True
        streamed = stream or body_streamed
        client = self.streams if streamed else self.http
        loop = asyncio.get_running_loop()
        # A streamed body's call is bounded by its silences (60 s), not the budget, until
        # its last byte; then by a write's budget from there (`_last_byte_bounds`):
        # ingest inspects the files and puts them in the store after the last byte
        # (given up on at the budget's remainder, a stored upload was answered 503).
        bound = asyncio.timeout_at(None if left is None or body_streamed else loop.time() + left)
        if body_streamed and budget is not None:
            content = _last_byte_bounds(content, bound, budget.seconds)
        built = client.build_request(
            method,
            self.services[service] + path,
            params=params,
            content=content,
            headers=sent,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            with (
                budget.paused()
                if budget is not None and body_streamed
                else contextlib.nullcontext()
            ):
                async with bound:
                    try:
                        answer = await client.send(built, stream=stream)
                    except DROPPED as error:
                        if method != "GET" or not isinstance(content, bytes | None):
                            raise  # a write, or a body that cannot be sent again
                        log.info("gateway.read_retried", upstream=service, error=repr(error))
                        # A download again on the pool of transfers, within the one cap
                        # of transfers to the service (a pool of its own was a second
                        # cap, and each download retried holds its connection as long as
                        # its client reads): the connection that failed has left it, and
                        # an idle one the service closed is not taken (httpcore sees it
                        # readable, at EOF).
                        client = self.streams if streamed else self.fresh
                        answer = await client.send(built, stream=stream)
        except httpx.PoolTimeout as error:
            raise Unavailable(service, error, busy=client is self.streams) from error
        except httpx.TransportError as error:
            raise Unavailable(service, error) from error
        except TimeoutError as error:
            if not bound.expired():
                raise
            log.warning("gateway.budget_spent", upstream=service, path=path)
            raise Unavailable(service, error, spent=True) from error
        if answer.status_code == 401 and identity.REFUSED_HEADER in answer.headers:
            # Our own token refused, before any route ran (nothing applied): most often
            # it expired while the call waited on a service that hung. Not the client's
            # credentials: a 503 to try again, never a 401 that would sign them out.
            if stream:
                await answer.aread()
                await answer.aclose()
            log.error("gateway.identity_refused", upstream=service, reason=answer.text[:300])
            raise Unavailable(service, RuntimeError(f"refused our identity token: {answer.text}"))
        return answer

    async def forward(
        self,
        call: Call,
        *,
        stream_body: bool = False,
        headers: dict[str, str] | None = None,
        folder_path: str | None = None,
    ) -> httpx.Response:
        """The caller's request, to the route's owner, at the route's own path. A write
        the service accepted is kept on the request: whatever fails after it, the
        caller gets that answer, never an error that would make them send it again."""
        request = call.request
        if stream_body:
            self.take_transfer(call)
            content: Any = in_pieces(request.stream())
            if call.user is not None:
                content = self._last_piece_checked(content, call, folder_path)
            headers = {**streamed_length(request), **(headers or {})}
        else:
            content = await capped_body(request)
        answer = await self.call(
            call.route.owner,
            request.method,
            call.path,
            request,
            call.user,
            params=call.query(),
            content=content,
            headers=headers,
            with_body=True,
            folder_path=folder_path,
        )
        if call.user is not None:
            note_idempotency(request, call.route.owner, call.user, answer)
        if request.method != "GET" and answer.status_code < 300:
            request.state.committed = answer
            if call.route.changes_access:
                self.forget_callers()
        return answer

    def take_transfer(self, call: Call) -> None:
        """One more transfer of the call's caller (`429` past their cap): a member by
        their user id, whichever key they use; a session's part, which comes as no one,
        by the session's opener its URL names (`part_caller`)."""
        caller = f"user:{call.user['id']}" if call.user is not None else self.part_caller(call)
        self.transfers.take(call.request.scope, caller)

    def part_caller(self, call: Call) -> str:
        """Whose cap an upload session's part counts in: its opener's, named by its URL
        and signed with it (`ServiceKey.upload_part_mac`). Checked here, before a slot is
        taken or ingest called: a forged or expired URL was sent on, its body streamed
        to ingest (which answers 403, but the body is sent whole before its answer is
        read), each on a slot of its own, as long as its client trickled. The URLs
        ingest signed before they named their opener (with a key the gateway does not
        hold) go on unchecked only while FILES_GATEWAY_UNSIGNED_PARTS_UNTIL holds, and
        only if they expire within a URL's lifetime, all in one cap: any number of
        forged ones hold no more than one caller's transfers."""
        query = call.request.query_params
        opener, signature = query.get("opener"), query.get("signature", "")
        number, expires = _decimal(call.values.get("number")), _decimal(query.get("expires"))
        session_id = str(call.values.get("session_id"))
        now = time.time()
        if number is not None and expires is not None:
            if opener is not None:
                if self.identity.upload_part_allowed(
                    session_id, number, expires, opener, signature, now
                ):
                    return f"user:{opener}"
            elif (
                self._unsigned_parts_until is not None
                and now <= self._unsigned_parts_until
                # An old ingest's clock may run ahead of ours: its fresh URLs, a little.
                and now <= expires <= now + identity.PART_URL_LIFETIME_S + identity.SKEW_S
            ):
                return UNSIGNED_PARTS
        raise Refused(403, "invalid_part_url", "this part URL is not valid or has expired")

    async def _last_piece_checked(
        self, pieces: AsyncIterator[bytes], call: Call, folder_path: str | None
    ) -> AsyncIterator[bytes]:
        """A streamed upload is allowed when it starts, and may outlast its caller's key
        or role. Its last piece is held until the caller is asked again (from the cache,
        which a revocation or a grant's change empties at once): refused, the service
        never has the whole body and records nothing, as for a client gone."""
        pending: bytes | None = None
        async for piece in pieces:
            if pending is not None:
                yield pending
            pending = piece
        await self._still_allowed(call, folder_path)
        if pending is not None:
            yield pending

    async def _still_allowed(self, call: Call, folder_path: str | None) -> None:
        refused = await self._asked_again(call, folder_path, "editor", "upload")
        if refused == ("key", None):
            raise Refused(
                401,
                "unauthenticated",
                "the API key (or sign-in) this upload was sent with was revoked while it was"
                " sent: nothing was stored",
            )
        if refused is not None:
            raise Refused(
                403,
                "forbidden",
                "the editor role on the folder went while this upload was sent: nothing was stored",
                {"role_needed": "editor", "role": refused[1]},
            )

    async def _asked_again(
        self, call: Call, folder_path: str | None, needed: str, what: str
    ) -> tuple[str, str | None] | None:
        """Whether the caller of a request under way still has its right: None if so, or
        if the access service does not answer (only a definite answer refuses what is
        under way: a revocation reaches this gateway's cache anyway, its access follower
        empties it, and a transfer of minutes lost to a blip of the access service is
        worse); ("key", None) if the key (or sign-in) is gone; ("role", the role the
        caller now has on the folder, below `needed`, or None) if the role went."""
        assert call.user is not None
        try:
            now = await asyncio.wait_for(self.authenticate(call.request), RECHECK_WAIT_S)
        except (Unavailable, Refused, TimeoutError) as away:
            if isinstance(away, Refused) and away.status != 503:
                raise
            log.warning(f"{what}.recheck_unanswered", path=call.request.url.path)
            return None
        if now is None or now.get("id") != call.user.get("id"):
            return ("key", None)
        if folder_path:
            path = [uuid.UUID(p) for p in folder_path.split(",")]
            role = Access.decode(now["access"]).role_on(path)
            if role is None or RANK[role] < RANK[needed]:
                return ("role", role)
        return None

    async def while_allowed(
        self, answer: httpx.Response, call: Call, folder_path: str | None
    ) -> AsyncIterator[bytes]:
        """A download's body, cut short once its caller's right goes. It was allowed when
        it started, and may outlast the caller's key or their role on the folder: the
        caller is asked again (from the cache) every DOWNLOAD_RECHECK_S, and at once
        after a change of access emptied the cache (a counter's look a chunk, not a
        call). Refused, the body ends where it is and the answer is left unfinished (the
        connection closed: `StreamCut`), and the service's answer let go (the answer's
        background task, which would, does not run after an error)."""
        # From before the caller was first asked: a change landing since is one to see.
        changes = getattr(call.request.state, "access_changes", self.access_changes)
        due = time.monotonic() + DOWNLOAD_RECHECK_S
        # Sending the body is no wait for an answer: its rechecks have their own bound.
        with deadlines.paused(call.request):
            async for chunk in answer.aiter_raw():
                if self.access_changes != changes or time.monotonic() >= due:
                    changes = self.access_changes
                    try:
                        refused = await self._asked_again(call, folder_path, "user", "download")
                    except Refused as error:
                        await answer.aclose()
                        raise StreamCut(error) from error
                    due = time.monotonic() + DOWNLOAD_RECHECK_S
                    if refused is not None:
                        log.warning(
                            "download.right_gone", path=call.request.url.path, gone=refused[0]
                        )
                        await answer.aclose()
                        raise StreamCut(_right_gone(*refused))
                yield chunk

    # -- authentication --------------------------------------------------------------

    async def authenticate(self, request: Request) -> dict[str, Any] | None:
        if not hasattr(request.state, "access_changes"):
            request.state.access_changes = self.access_changes
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            # The web app's session cookie (services/gateway/sessions.py).
            return await sessions.authenticate(self, request)
        return await self.user_of_key(request, key.strip())

    async def user_of_key(self, request: Request, key: str) -> dict[str, Any] | None:
        """The user an API key is of; None if unknown or revoked."""
        return await self.caller_of(
            hashlib.sha256(key.encode()).hexdigest(), request, {"api_key": key}
        )

    async def caller_of(
        self, digest: str, request: Request, credential: dict[str, str]
    ) -> dict[str, Any] | None:
        """The user of a credential (an API key, a session's token) by its digest: from
        the cache, else asked of the access service, in one call shared by every request
        that asks for the same credential meanwhile (after a change of access each
        download under way asks at its next chunk: N downloads of a key made N calls at
        once). A call begun before a change of access is not shared with a request that
        asks after it: its answer may be from before the change."""
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached and cached[0] > now:
            self._keys.move_to_end(digest)
            return cached[1]
        if self._unknown.get(digest, 0.0) > now:
            return None
        asked = (digest, self.access_changes)
        lookup = self._asking.get(asked)
        if lookup is None:
            lookup = asyncio.ensure_future(self._ask_caller(digest, request, credential))
            self._asking[asked] = lookup
            lookup.add_done_callback(lambda done: self._asked(asked, done))
        # Shielded: a request that stops waiting (a recheck's bound, its budget, a client
        # gone) does not end the call the others wait on.
        budget = deadlines.of(request)
        left = budget.left() if budget is not None else None
        if left is None:
            return await asyncio.shield(lookup)
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), left)
        except TimeoutError as error:
            raise Unavailable("acl", error, spent=True) from error

    def _asked(self, asked: tuple[str, int], done: asyncio.Future[Any]) -> None:
        if self._asking.get(asked) is done:
            del self._asking[asked]
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have stopped waiting

    async def _ask_caller(
        self, digest: str, request: Request, credential: dict[str, str]
    ) -> dict[str, Any] | None:
        now, changes = time.monotonic(), self.access_changes
        # Shared by every request asking meanwhile, each waiting up to its own budget
        # (`caller_of`): bounded as a read is, not by the budget of the one that began it
        # (a joiner with more time left found the lookup given up on with it).
        try:
            async with asyncio.timeout(self.settings.gateway_request_budget_s):
                answer = await self.call(
                    "acl", "POST", "/internal/authenticate", request, json=credential, shared=True
                )
        except TimeoutError as error:
            raise Unavailable("acl", error) from error
        if answer.status_code >= 500:
            # Not a refusal: the caller is unknown for now, and nothing is cached.
            raise Refused(503, "unavailable", "the access service did not answer; try again")
        user = answer.json() if answer.status_code == 200 else None
        self.remember_caller(digest, now, user, changes)
        return user

    def remember_caller(
        self, digest: str, now: float, user: dict[str, Any] | None, changes: int
    ) -> None:
        """Kept unless access changed while it was asked: that answer may be from before
        the change, and the cache was emptied so that the next look asks again."""
        if changes != self.access_changes:
            return
        if user is None:
            self._keys.pop(digest, None)
            kept: OrderedDict[str, Any] = self._unknown
            kept[digest] = now + AUTH_TTL_S
            bound = UNKNOWN_KEPT
        else:
            self._unknown.pop(digest, None)
            kept = self._keys
            kept[digest] = (now + AUTH_TTL_S, user)
            bound = CALLERS_KEPT
        kept.move_to_end(digest)
        while len(kept) > bound:
            kept.popitem(last=False)

    def forget_callers(self) -> None:
        """After a change of access made here: the next request asks the ACL again."""
        self._keys.clear()
        self._unknown.clear()
        self.access_changes += 1

    # -- consistency -----------------------------------------------------------------

    def budget(self, request: Request) -> float:
        """Seconds left of the request's one consistency budget: every wait of a
        request (a token's, a write's effects, a catch-up) draws on the same one, and
        ends within the request's time budget (`deadlines`), a little before it, so
        the service answers how far it got before it is told to give up. A write's
        wait cut short so is answered as one whose effects are not all visible yet:
        its own answer and token."""
        state = request.state
        deadline = getattr(state, "consistency_deadline", None)
        if deadline is None:
            deadline = time.monotonic() + self.settings.consistency_timeout_s
            state.consistency_deadline = deadline
        left = max(deadline - time.monotonic(), 0.0)
        whole = deadlines.of(request)
        within = whole.left() if whole is not None else None
        if within is not None:
            left = min(left, max(within - deadlines.CONSISTENCY_MARGIN_S, 0.0))
        return left

    def widen_budget(self, request: Request, times: int) -> None:
        """A route whose effects take longer to apply gets `times` the usual budget."""
        self.budget(request)
        request.state.consistency_deadline += (times - 1) * self.settings.consistency_timeout_s

    async def check_and_wait(self, request: Request, token: dict[str, int]) -> Response | None:
        """A client's token: wait for it (within the budget); a 400 naming the source
        if it names a store we do not have, or a position past a store's head (it
        would never come: waiting would only burn the budget)."""
        unknown = sorted(set(token) - set(self.services))
        if unknown:
            return error_response(
                400,
                "invalid_consistency_token",
                f"the consistency token names {', '.join(unknown)}, which is no store of ours",
                sources=unknown,
            )
        heads = await self._round(request, token, self.budget(request), strict=True)
        if isinstance(heads, Response):
            return heads
        grown = consistency.merge(token, heads)
        if grown != token and self.budget(request) > 0:
            # The reactions the token's events caused, for two more hops.
            await self.wait_for(request, grown, rounds=2)
        return None

    async def _round(
        self, request: Request, token: dict[str, int], left: float, *, strict: bool = False
    ) -> dict[str, int] | Response:
        """Ask every service to wait for the token (at most `left` s); the heads they
        answer. A service that fails to answer adds nothing (never an error: after a
        write, the write stands). `strict`: a service's 400 (a token past its head)
        ends the round at once and is the answer.

        Asked: the services that consume a store the token names (only they can have
        reacted to it), any whose consumption is not known (yet, or for a while), and,
        strictly, the stores the token names (their heads bound it). A service that
        consumes none of them would only answer its head, which merged in made the
        next round wait for writes the token did not cause."""
        now = time.monotonic()
        named = set(token)
        known = {
            name: consumed
            for name, (at, consumed) in self._consumes.items()
            if now - at < CONSUMES_KNOWN_S
        }
        askees = [
            name
            for name in self.services
            if name not in known or known[name] & named or (strict and name in named)
        ]
        asks = {
            asyncio.ensure_future(
                self.call(
                    name,
                    "GET",
                    "/internal/consistency",
                    request,
                    params={"token": consistency.encode(token), "timeout": f"{left:.3f}"},
                    timeout=left + 5.0,
                )
            ): name
            for name in askees
        }
        heads: dict[str, int] = {}
        pending = set(asks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for ask in done:
                    answer = ask.result() if ask.exception() is None else None
                    if answer is None:
                        log.warning("gateway.consistency_unanswered", upstream=asks[ask])
                    elif answer.status_code == 200:
                        heads = consistency.merge(heads, _heads(answer))
                        if (consumed := _consumed(answer)) is not None:
                            self._consumes[asks[ask]] = (time.monotonic(), consumed)
                        self._learn_applies(asks[ask], answer)
                    elif strict and answer.status_code == 400:
                        return self.relay(answer)
                    else:
                        log.warning(
                            "gateway.consistency_refused",
                            upstream=asks[ask],
                            status=answer.status_code,
                        )
        finally:
            for ask in pending:
                ask.cancel()
        return heads

    async def wait_for(
        self, request: Request, token: dict[str, int], rounds: int = 3
    ) -> dict[str, int]:
        """Wait until every service has applied the token, then the reactions it caused
        (up to `rounds` hops), within the request's budget. Never raises."""
        for _ in range(rounds):
            left = self.budget(request)
            heads = await self._round(request, token, left)
            assert not isinstance(heads, Response)
            grown = consistency.merge(token, heads)
            if grown == token or left == 0:
                return grown
            token = grown
        return token

    def _learn_applies(self, name: str, answer: httpx.Response) -> None:
        try:
            applies = answer.json().get("applies")
        except ValueError:
            return
        if isinstance(applies, list):
            self._applies[name] = (time.monotonic(), frozenset(map(str, applies)))

    async def catch_up(self, request: Request, consumer: str, source: str) -> None:
        """Wait (within the budget) until `consumer` has applied all `source` recorded
        of the event types it applies (when known): while a pipeline records, the
        source's head moves on with events the consumer passes over (the catalog's own
        listing events, for the DICOM context), and waiting for them costs a broker hop."""
        head = await self.head_for(request, consumer, source)
        if head is not None:
            await self.catch_up_to(request, consumer, head)

    async def head_for(
        self, request: Request, consumer: str, source: str, *, known: bool = False
    ) -> dict[str, int] | None:
        """What `consumer` must apply to have all `source` recorded of the event types
        it applies (catch_up's token): None if the source did not answer, or (`known`)
        if those types are not known here (catch_up_to learns them)."""
        params = {"token": "", "timeout": "0"}
        at, applies = self._applies.get(consumer, (0.0, frozenset()))
        if applies and time.monotonic() - at < CONSUMES_KNOWN_S:
            params["types"] = ",".join(sorted(applies))
        elif known:
            return None
        try:
            head = await self.call(source, "GET", "/internal/consistency", request, params=params)
            if head.status_code != 200:
                return None
        except Unavailable:
            log.warning("gateway.catch_up_failed", consumer=consumer, source=source)
            return None
        found: dict[str, int] = head.json()["head"]
        return found

    async def catch_up_to(self, request: Request, consumer: str, token: dict[str, int]) -> None:
        """Wait (within the budget) until `consumer` has applied `token`. A caller that
        knows the position it needs asks for it alone: a source's whole head moves on
        while a busy pipeline records, and chasing it costs a broker hop a look."""
        try:
            left = self.budget(request)
            answer = await self.call(
                consumer,
                "GET",
                "/internal/consistency",
                request,
                params={"token": consistency.encode(token), "timeout": f"{left:.3f}"},
                timeout=left + 5.0,
            )
            if answer.status_code == 200:
                self._learn_applies(consumer, answer)
        except Unavailable:
            log.warning("gateway.catch_up_failed", consumer=consumer, source=",".join(token))

    async def keep_answer(self, request: Request, response: Response) -> Response:
        """A keyed write the owning service applied (or gave back): the answer as composed
        here is kept with it, so that a retry gets this very answer."""
        noted = getattr(request.state, "idempotent", None)
        if noted is None or response.status_code >= 500 or not hasattr(response, "body"):
            return response
        service, state, scope = noted
        headers = [
            (k, v) for k, v in response.headers.items() if k.lower() in idempotency.KEPT_HEADERS
        ]
        try:
            await self.call(
                service,
                "PUT",
                "/internal/idempotency",
                request,
                json={
                    "scope": scope,
                    "key": request.headers[idempotency.HEADER],
                    "status": response.status_code,
                    "headers": headers,
                    "body": base64.b64encode(response.body).decode(),
                },
            )
        except Unavailable:
            # The service's own answer stays kept: a retry is composed again from it.
            log.warning("gateway.answer_not_kept", service=service)
        if state == "replayed":
            response.headers[idempotency.REPLAYED_HEADER] = "true"
        return response

    @staticmethod
    def relay(
        answer: httpx.Response, token: dict[str, int] | None = None, body: Any = None
    ) -> Response:
        """The service's answer, with its headers that matter; `body` replaces a JSON body."""
        headers = {k: v for k, v in answer.headers.items() if k.lower() in PASSED_HEADERS}
        if token:
            headers.pop(consistency.HEADER.lower(), None)
            headers[consistency.HEADER] = consistency.encode(token)
        if body is not None:
            headers.pop("content-length", None)
            return Response(orjson.dumps(body), answer.status_code, headers=headers)
        return Response(answer.content, answer.status_code, headers=headers)


class NoCookies(http.cookiejar.CookieJar):
    """The one client serves every caller: a cookie a service set must never ride on
    another caller's call, so none is kept (and none is parsed, on every answer)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        pass


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"


def json_body(value: Any) -> bytes:
    """A call's JSON: orjson (the ids of an upload's files, each call), or, for what it
    will not encode (deeper than 254 levels: a caller's body nests up to 1,024), the
    standard library; what neither encodes is refused as the caller's, never a 500."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        try:
            return stdjson.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        except (RecursionError, ValueError, TypeError):
            raise Refused(
                422, "invalid_request", "the request's JSON nests too deeply to be passed on"
            ) from None


def json_of(answer: httpx.Response) -> Any:
    """A service's JSON answer, read by orjson (httpx's `.json()` is the standard
    library's, several times slower on an upload's hundred files)."""
    return orjson.loads(answer.content)


def _consumed(answer: httpx.Response) -> frozenset[str] | None:
    """The stores a service consumes, from its consistency answer (None from one that
    does not say: an older version, asked every round as before)."""
    try:
        consumes = json_of(answer)["consumes"]
        return frozenset(str(c) for c in consumes) if isinstance(consumes, list) else None
    except (ValueError, KeyError, TypeError):
        return None


def _heads(answer: httpx.Response) -> dict[str, int]:
    try:
        head = json_of(answer)["head"]
        return {str(k): int(v) for k, v in head.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}


async def _carry_trace(request: httpx.Request) -> None:
    """Every call to a service (the caller's lookup and consistency waits too, not only
    forwarded requests) continues the request's trace."""
    if "traceparent" not in request.headers and (traceparent := tracing.current()):
        request.headers["traceparent"] = traceparent
