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
import re
import time
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from fastapi import Request
from fastapi.responses import Response

from services.gateway import sessions
from shared.contracts import topics
from shared.kit import consistency, idempotency, identity, tracing
from shared.kit.errors import Refused
from shared.kit.http import JSON, ServiceTransport, error_body
from shared.kit.logs import log
from shared.kit.settings import Settings

# A cached view of a caller lives at most this long. A change of access drops every
# replica's cache when its event arrives (tens of milliseconds), and at once on the
# replica that made it; this bound holds if the events stop coming.
AUTH_TTL_S = 2.0
# 100,000 ids as JSON are about 4 MB.
MAX_JSON_BODY = 16 * 1024 * 1024
PASSED_HEADERS = ("content-type", consistency.HEADER.lower(), "location", "content-range")


class TooLarge(Exception):
    pass


async def capped_body(request: Request) -> bytes:
    """A JSON body, read up to MAX_JSON_BODY: bulk ids fit, a runaway client does not."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BODY:
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY:
            raise TooLarge
    # Kept where Starlette keeps a body it read itself, for composing the answer.
    request._body = bytes(body)
    return request._body


def error_response(status: int, code: str, message: str, **details: Any) -> JSON:
    return JSON(error_body(code, message, details), status)


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
        self._keys: dict[str, tuple[float, dict[str, Any] | None]] = {}
        # Signs who asks, on every call to a service (refused at start if weak or unset).
        self.identity = identity.ServiceKey(settings.service_key)
        self.http: httpx.AsyncClient
        self._follower: asyncio.Task[None]

    async def start(self) -> None:
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=5.0),
            # Idle connections go before the services' 5 s keep-alive closes them: a call
            # sent on one as it closes would be lost (and answered 503).
            transport=ServiceTransport(
                limits=httpx.Limits(
                    max_connections=200, max_keepalive_connections=50, keepalive_expiry=2.0
                )
            ),
            event_hooks={"request": [_carry_trace, self._sign_for_gateway]},
        )

        self._follower = asyncio.create_task(self._follow_access_changes(), name="acl-follower")

    async def stop(self) -> None:
        self._follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._follower
        await self.http.aclose()

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
                fetch_max_wait_ms=20,
            )
            try:
                await consumer.start()
                async for _ in consumer:
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

    # -- authentication --------------------------------------------------------------

    async def authenticate(self, request: Request) -> dict[str, Any] | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            # The web app's session cookie (services/gateway/sessions.py).
            return await sessions.authenticate(self, request)
        return await self.user_of_key(key.strip())

    async def user_of_key(self, key: str) -> dict[str, Any] | None:
        """The user an API key is of; None if unknown or revoked."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        cached = self._keys.get(digest)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        answer = await self.http.post(
            f"{self.services['acl']}/internal/authenticate", json={"api_key": key}
        )
        if answer.status_code >= 500:
            # Not a refusal: the caller is unknown for now, and nothing is cached.
            raise Refused(503, "unavailable", "the access service did not answer; try again")
        user = answer.json() if answer.status_code == 200 else None
        self.remember_caller(digest, now, user)
        return user

    def remember_caller(self, digest: str, now: float, user: dict[str, Any] | None) -> None:
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[digest] = (now + AUTH_TTL_S, user)

    # -- consistency -----------------------------------------------------------------

    async def wait_for(self, token: dict[str, int], rounds: int = 3) -> dict[str, int]:
        """Wait until every service has applied the token, then the reactions it caused."""
        deadline = time.monotonic() + self.settings.consistency_timeout_s
        for _ in range(rounds):
            left = max(deadline - time.monotonic(), 0.0)
            answers = await asyncio.gather(
                *(
                    self.http.get(
                        f"{url}/internal/consistency",
                        params={"token": consistency.encode(token), "timeout": f"{left:.3f}"},
                    )
                    for url in self.services.values()
                ),
                return_exceptions=True,
            )
            heads = [
                a.json()["head"]
                for a in answers
                if isinstance(a, httpx.Response) and a.status_code == 200
            ]
            grown = consistency.merge(token, *heads)
            if grown == token or left == 0:
                return grown
            token = grown
        return token

    async def catch_up(self, consumer: str, source: str) -> None:
        """Wait (bounded) until `consumer` has applied everything `source` has recorded."""
        head = await self.http.get(
            f"{self.services[source]}/internal/consistency", params={"token": "", "timeout": "0"}
        )
        if head.status_code != 200:
            return
        await self.http.get(
            f"{self.services[consumer]}/internal/consistency",
            params={
                "token": consistency.encode(head.json()["head"]),
                "timeout": str(self.settings.consistency_timeout_s),
            },
        )

    # -- forwarding ------------------------------------------------------------------

    def forget_callers(self) -> None:
        """After a change of access made here: the next request asks the ACL again."""
        self._keys.clear()

    def _headers(
        self, request: Request, user: dict[str, Any], *, with_body: bool = False
    ) -> dict[str, str]:
        """Who asks, for a call to a service; `with_body` when the call carries the
        caller's own body, which keeps its content type (else a JSON call of ours would
        go out labelled as, say, the caller's multipart upload)."""
        headers = {
            identity.HEADER: self.identity.sign(
                user["id"], user["access"], request.state.correlation_id
            )
        }
        passed = (
            ("content-type", "traceparent", "idempotency-key") if with_body else ("traceparent",)
        )
        for name in passed:
            if name in request.headers:
                headers[name] = request.headers[name]
        return headers

    async def _sign_for_gateway(self, call: httpx.Request) -> None:
        """A call made for no user (a key lookup, a consistency wait, a blob read after
        the rights were checked) is signed as the gateway's own."""
        if identity.HEADER not in call.headers:
            call.headers[identity.HEADER] = self.identity.for_service("gateway")

    async def forward(
        self, service: str, request: Request, user: dict[str, Any], *, stream_body: bool = False
    ) -> httpx.Response:
        # Without a trailing slash: the service would redirect to its own, internal address.
        url = f"{self.services[service]}{request.url.path.rstrip('/')}"
        content: Any = request.stream() if stream_body else await capped_body(request)
        answer = await self.http.request(
            request.method,
            url,
            params=request.query_params,
            content=content,
            headers=self._headers(request, user, with_body=True),
        )
        note_idempotency(request, service, user, answer)
        return answer

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
            await self.http.put(
                f"{self.services[service]}/internal/idempotency",
                json={
                    "scope": scope,
                    "key": request.headers[idempotency.HEADER],
                    "status": response.status_code,
                    "headers": headers,
                    "body": base64.b64encode(response.body).decode(),
                },
            )
        except httpx.TransportError:
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


async def _carry_trace(request: httpx.Request) -> None:
    """Every call to a service (the caller's lookup and consistency waits too, not only
    forwarded requests) continues the request's trace."""
    if "traceparent" not in request.headers and (traceparent := tracing.current()):
        request.headers["traceparent"] = traceparent


PART_URL = re.compile(r"/v1/uploads/[0-9a-fA-F-]{36}/parts/\d{1,5}")


def route(path: str, method: str) -> str | None:
    """Which service owns a public path."""
    parts = path.strip("/").split("/")[1:]  # drop "v1"
    if not parts:
        return None
    head = parts[0]
    if head in ("users", "keys") or (head == "folders" and parts[2:3] == ["collaborators"]):
        return "acl"
    if head == "audit":
        return "gateway"
    if head in ("jobs", "integrations", "uploads"):
        return "ingest"
    if head == "datasets" or (head == "files" and parts[2:] == ["datasets"]):
        return "datasets"
    if (
        head == "folders"
        and len(parts) == 3
        and parts[2] in ("files", "dicom", "image-groups", "imports", "uploads")
        and method == "POST"
    ):
        return "ingest"
    if head in ("folders", "files", "move", "delete", "search"):
        return "catalog"
    return None
