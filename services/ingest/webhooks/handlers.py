"""Webhooks: registered by org admins, fed from the event stream, sent with retries.

A delivery is recorded by the consumer in the transaction that takes the event in
(ingest's inbox), one row per subscribed webhook: a crash before the commit sees the
event again, after it the row is there. A sender loop claims due deliveries with a
lease (FOR UPDATE SKIP LOCKED: replicas of ingest share the work), posts each, and
records the attempt; a delivery not answered 2xx is tried again, backing off, until
24 hours after it was made. The message id is the delivery's, the same at each attempt,
so a receiver can tell a retry from a new event.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import structlog

from services.ingest.imports.buckets.s3 import _Resolver
from services.ingest.imports.domain.endpoints import EndpointRule
from services.ingest.imports.egress import Egress, EndpointNotAllowed
from services.ingest.webhooks import domain
from shared.contracts.catalog import FileDeleted, FilesUploaded, FileUploaded
from shared.contracts.envelope import Cause, Change, Envelope, Event, envelopes_of
from shared.contracts.ingest import (
    UploadJobFinished,
    WebhookRegistered,
    WebhookRemoved,
    webhook_stream,
)
from shared.kit.access import Access
from shared.kit.db import Conn
from shared.kit.errors import Refused, not_found
from shared.kit.reactions import Bound, parse
from shared.kit.secrets import Sealer, key_material
from shared.kit.service import Handlers, Parts
from shared.kit.settings import Settings

log = structlog.get_logger()

DDL = """
CREATE TABLE IF NOT EXISTS ingest.webhooks (
    id uuid PRIMARY KEY,
    url text NOT NULL,
    events text[] NOT NULL,
    secret_sealed text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL
);
CREATE TABLE IF NOT EXISTS ingest.webhook_deliveries (
    id uuid PRIMARY KEY,
    webhook_id uuid NOT NULL REFERENCES ingest.webhooks(id) ON DELETE CASCADE,
    event_id uuid NOT NULL,
    event text NOT NULL,
    payload jsonb NOT NULL,
    -- pending | delivered | failed (given up)
    status text NOT NULL DEFAULT 'pending',
    attempts integer NOT NULL DEFAULT 0,
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz,
    lease_until timestamptz,
    delivered_at timestamptz,
    UNIQUE (webhook_id, event_id, event)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON ingest.webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_of
    ON ingest.webhook_deliveries (webhook_id, created_at DESC);
"""

# Deliveries one pass of the sender claims, and how long it holds them at least (a
# sender that died mid-attempt leaves its claim to the others after this).
BATCH = 32
LEASE_S = 120.0
# Deliveries ended (delivered or given up) are listed this long, then deleted.
KEEP_S = 30 * 24 * 3600.0
PRUNE_EVERY_S = 600.0


async def setup(conn: Conn) -> None:
    await conn.execute(DDL)


def require_org_admin(access: Access) -> None:
    if not access.org_admin:
        raise Refused(
            403,
            "forbidden",
            "managing webhooks needs the organisation admin role",
            {"role_needed": "org admin"},
        )


def _webhook_json(row: Any) -> dict[str, Any]:
    # Never the secret: it is shown once, when the webhook is made.
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
    }


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _delivery_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "event": row["event"],
        "event_id": str(row["event_id"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "created_at": row["created_at"].isoformat(),
        "next_attempt_at": _iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "delivered_at": _iso(row["delivered_at"]),
    }


def _uploaded(up: FileUploaded) -> tuple[str, dict[str, Any]]:
    return (
        "file.uploaded",
        {
            "file_id": str(up.file_id),
            "folder_id": str(up.folder_id),
            "name": up.name,
            "kind": up.kind,
            "size": up.size,
            "job_id": str(up.job_id) if up.job_id else None,
        },
    )


def _messages(
    conn_rows: dict[uuid.UUID, dict[str, Any]], e: Envelope
) -> list[tuple[uuid.UUID, str, dict[str, Any]]]:
    """What an event means to webhooks: (delivery's event id, event name, small payload)."""
    if e.type == FilesUploaded.type:
        # One delivery a file, as when each had its FileUploaded: a delivery is unique
        # by (webhook, event id, name), so each file's gets an id of its own, derived
        # from the page's and the file's (the same on a redelivery of the page).
        return [
            (uuid.uuid5(e.event_id, str(up.file_id)), *_uploaded(up))
            for up in parse(e, FilesUploaded).event.each()
        ]
    return [(e.event_id, name, data) for name, data in _messages_of_one(conn_rows, e)]


def _messages_of_one(
    conn_rows: dict[uuid.UUID, dict[str, Any]], e: Envelope
) -> list[tuple[str, dict[str, Any]]]:
    if e.type == FileUploaded.type:
        return [_uploaded(parse(e, FileUploaded).event)]
    if e.type == FileDeleted.type:
        gone = parse(e, FileDeleted).event
        return [
            (
                "file.deleted",
                {
                    "file_id": str(gone.file_id),
                    "folder_id": str(gone.folder_id),
                    "trashed": gone.trashed,
                },
            )
        ]
    if e.type == UploadJobFinished.type:
        ended = parse(e, UploadJobFinished).event
        job = conn_rows.get(ended.job_id)
        data = {
            "job_id": str(ended.job_id),
            "status": ended.status,
            "kind": job["kind"] if job else None,
            "folder_id": str(job["folder_id"]) if job else None,
        }
        found = [("job.completed", data)]
        if job is not None and job["kind"] == "sync":
            found.append(("folder.synced", data))
        return found
    return []


TRIGGERS: tuple[type[Event], ...] = (FileUploaded, FilesUploaded, FileDeleted, UploadJobFinished)


class Webhooks(Handlers):
    def __init__(self, parts: Parts, settings: Settings) -> None:
        super().__init__(parts)
        self.settings = settings
        # Webhooks' own exceptions (FILES_WEBHOOK_ALLOWED_ENDPOINTS), not the integrations':
        # an org admin's URL must not reach the platform's loopback ports.
        self.egress = Egress(EndpointRule.parse(settings.webhook_allowed_endpoints))
        self._sealer: Sealer | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def sealer(self) -> Sealer:
        if self._sealer is None:
            self._sealer = Sealer(key_material(self.settings.secret_key, self.settings.data_dir))
        return self._sealer

    # -- routes -------------------------------------------------------------------

    async def _check_address(self, host: str, port: int) -> None:
        try:
            await asyncio.to_thread(self.egress.addresses, host, port)
        except EndpointNotAllowed as refused:
            raise Refused(
                422,
                EndpointNotAllowed.code,
                f"the webhook's url may not be used: {refused.reason} (webhooks post to public"
                " addresses only, unless the operator lists the address in"
                " FILES_WEBHOOK_ALLOWED_ENDPOINTS)",
                {"host": refused.host, "address": refused.address, "reason": refused.reason},
            ) from None
        except OSError as failed:
            raise Refused(
                422,
                "unresolvable_url",
                f"the webhook's host {host[:100]} does not resolve: {failed.strerror or failed}",
                {"host": host[:100]},
            ) from None

    async def register(
        self, access: Access, cause: Cause, body: object
    ) -> tuple[dict[str, Any], int]:
        require_org_admin(access)
        registration = domain.parse_registration(body)
        await self._check_address(registration.host, registration.port)
        secret = registration.secret or domain.new_secret()
        webhook_id = uuid.uuid4()
        made = WebhookRegistered(
            webhook_id=webhook_id, url=registration.url, events=list(registration.events)
        )
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """INSERT INTO ingest.webhooks (id, url, events, secret_sealed, created_by)
                   VALUES ($1, $2, $3, $4, $5) RETURNING *""",
                webhook_id,
                registration.url,
                list(registration.events),
                self.sealer.seal(secret.encode(), str(webhook_id)),
                access.user_id,
            )
            position = await self.store.append(
                conn, envelopes_of([Change(webhook_stream(webhook_id), 1, made)], cause)
            )
        # Shown this once: sealed at rest, never listed.
        return {**_webhook_json(row), "secret": secret}, position

    async def listed(self, access: Access) -> dict[str, Any]:
        require_org_admin(access)
        rows = await self.pool.fetch(
            "SELECT * FROM ingest.webhooks ORDER BY created_at, id LIMIT 1000"
        )
        return {"items": [_webhook_json(r) for r in rows]}

    async def delete(self, access: Access, cause: Cause, webhook_id: uuid.UUID) -> int:
        require_org_admin(access)
        gone = WebhookRemoved(webhook_id=webhook_id)
        async with self.pool.acquire() as conn, conn.transaction():
            done = await conn.execute("DELETE FROM ingest.webhooks WHERE id = $1", webhook_id)
            if done.endswith(" 0"):
                raise not_found("webhook", webhook_id)
            return await self.store.append(
                conn, envelopes_of([Change(webhook_stream(webhook_id), 2, gone)], cause)
            )

    async def deliveries(
        self, access: Access, webhook_id: uuid.UUID, limit: int, status: str | None
    ) -> dict[str, Any]:
        require_org_admin(access)
        if not await self.pool.fetchval(
            "SELECT true FROM ingest.webhooks WHERE id = $1", webhook_id
        ):
            raise not_found("webhook", webhook_id)
        rows = await self.pool.fetch(
            """SELECT * FROM ingest.webhook_deliveries
               WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2)
               ORDER BY created_at DESC, id LIMIT $3""",
            webhook_id,
            status,
            limit,
        )
        return {"items": [_delivery_json(r) for r in rows]}

    # -- recording (in the consumer's transaction) --------------------------------

    async def record(self, conn: Conn, envelopes: Sequence[Envelope]) -> None:
        wanted = [e for e in envelopes if e.type in _TRIGGER_TYPES]
        if not wanted:
            return
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ingest.webhooks)"):
            return
        job_ids = [
            parse(e, UploadJobFinished).event.job_id
            for e in wanted
            if e.type == UploadJobFinished.type
        ]
        jobs: dict[uuid.UUID, dict[str, Any]] = {}
        if job_ids:
            rows = await conn.fetch(
                "SELECT id, kind, folder_id FROM ingest.jobs WHERE id = ANY($1::uuid[])", job_ids
            )
            jobs = {r["id"]: dict(r) for r in rows}
        event_ids: list[uuid.UUID] = []
        names: list[str] = []
        payloads: list[str] = []
        for e in wanted:
            for event_id, name, data in _messages(jobs, e):
                event_ids.append(event_id)
                names.append(name)
                payloads.append(
                    orjson.dumps(
                        {"type": name, "timestamp": e.occurred_at.isoformat(), "data": data}
                    ).decode()
                )
        if not names:
            return
        await conn.execute(
            """INSERT INTO ingest.webhook_deliveries
                   (id, webhook_id, event_id, event, payload, next_attempt_at)
               SELECT gen_random_uuid(), w.id, m.event_id, m.event, m.payload::jsonb, now()
               FROM unnest($1::uuid[], $2::text[], $3::text[]) AS m(event_id, event, payload)
               JOIN ingest.webhooks w ON m.event = ANY(w.events)
               ON CONFLICT (webhook_id, event_id, event) DO NOTHING""",
            event_ids,
            names,
            payloads,
        )

    # -- sending ------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=_Resolver(self.egress), limit=BATCH),
                timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s),
                trust_env=False,
                auto_decompress=False,
            )
        return self._http

    async def send_forever(self) -> None:
        pruned = 0.0
        while True:
            sent = await self.send_due()
            if time.monotonic() - pruned > PRUNE_EVERY_S:
                await self.pool.execute(
                    """DELETE FROM ingest.webhook_deliveries WHERE status <> 'pending'
                       AND created_at < now() - make_interval(secs => $1)""",
                    KEEP_S,
                )
                pruned = time.monotonic()
            if sent < BATCH:
                await asyncio.sleep(self.settings.webhook_poll_s)

    async def send_due(self) -> int:
        """Claims the due deliveries (a batch) and attempts each; how many."""
        rows = await self.pool.fetch(
            """UPDATE ingest.webhook_deliveries d
               SET lease_until = now() + make_interval(secs => $1)
               FROM ingest.webhooks w
               WHERE w.id = d.webhook_id AND d.id IN (
                   SELECT id FROM ingest.webhook_deliveries
                   WHERE status = 'pending' AND next_attempt_at <= now()
                     AND (lease_until IS NULL OR lease_until < now())
                   ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
               RETURNING d.id, d.payload::text AS payload, d.attempts, d.created_at,
                         w.id AS webhook_id, w.url, w.secret_sealed""",
            max(LEASE_S, 3 * self.settings.webhook_timeout_s),
            BATCH,
        )
        await asyncio.gather(*(self._attempt(r) for r in rows))
        return len(rows)

    async def _attempt(self, row: Any) -> None:
        body = row["payload"].encode()
        message_id = f"msg_{row['id'].hex}"
        timestamp = int(time.time())
        secret = self.sealer.open(row["secret_sealed"], str(row["webhook_id"])).decode()
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": domain.signature(secret, message_id, timestamp, body),
            "user-agent": "files-webhooks/1",
        }
        status: int | None = None
        error: str | None = None
        try:
            url = row["url"]
            target = urlsplit(url)
            port = target.port or (443 if target.scheme == "https" else 80)
            # aiohttp dials an address literal without its resolver: judged here too.
            await asyncio.to_thread(self.egress.addresses, target.hostname or "", port)
            async with self._session().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as answer:
                status = answer.status
                read = await answer.content.read(domain.MAX_ANSWER_BYTES)
                if not 200 <= status < 300:
                    # A short excerpt for the admin to tell why: never the receiver's
                    # whole page (what a wrongly allowed address answers stays there).
                    shown = read[: domain.ANSWER_SHOWN_BYTES].decode(errors="replace")
                    error = f"answered {status}: {shown}"
        except EndpointNotAllowed as refused:
            error = (
                f"the url may not be used: {refused.reason} (FILES_WEBHOOK_ALLOWED_ENDPOINTS"
                " names the private addresses webhooks may post to)"
            )
        except TimeoutError:
            error = f"no answer within {self.settings.webhook_timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as failed:
            error = f"{type(failed).__name__}: {str(failed)[:300]}"
        except Exception as failed:
            # Whatever else a receiver's answer raises is this attempt's failure, recorded
            # like the others: a delivery must never stop the sender.
            log.warning("webhook.attempt_raised", delivery=str(row["id"]), exc_info=True)
            error = f"{type(failed).__name__}"
        attempts = row["attempts"] + 1
        if error is None:
            await self.pool.execute(
                """UPDATE ingest.webhook_deliveries SET status = 'delivered', attempts = $2,
                   last_status = $3, last_error = NULL, delivered_at = now(),
                   lease_until = NULL, next_attempt_at = NULL WHERE id = $1""",
                row["id"],
                attempts,
                status,
            )
            return
        wait = domain.backoff_s(attempts, self.settings.webhook_retry_base_s)
        age = (datetime.now(UTC) - row["created_at"]).total_seconds()
        given_up = age + wait > self.settings.webhook_give_up_s
        log.info(
            "webhook.attempt_failed",
            delivery=str(row["id"]),
            attempts=attempts,
            status=status,
            given_up=given_up,
        )
        await self.pool.execute(
            """UPDATE ingest.webhook_deliveries SET attempts = $2, last_status = $3,
               last_error = $4, lease_until = NULL,
               status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
               next_attempt_at = now() + make_interval(secs => $6) WHERE id = $1""",
            row["id"],
            attempts,
            status,
            error,
            given_up,
            wait,
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


_TRIGGER_TYPES = frozenset(t.type for t in TRIGGERS)


class WithWebhooks(Bound):
    """A service's reactions, and webhooks' deliveries recorded beside them in the same
    transaction (webhooks read types other reactions may read too)."""

    def __init__(self, reactions: Bound, webhooks: Webhooks) -> None:
        self.by_type = reactions.by_type
        self.before = reactions.before
        self.types = reactions.types | _TRIGGER_TYPES
        self.reactions, self.webhooks = reactions, webhooks

    async def idle(self, pool: Conn | asyncpg.Pool) -> frozenset[str]:
        """With no webhook registered, the types only webhooks read are passed over (an
        upload's FilesUploaded pages: no inbox row nor whole decoding each). A webhook
        registered meanwhile gets the events of the batches after its registration, as
        it would when `record` finds it first."""
        if await pool.fetchval("SELECT EXISTS (SELECT 1 FROM ingest.webhooks)"):
            return frozenset()
        return _TRIGGER_TYPES - self.reactions.types

    async def __call__(self, conn: Conn, envelopes: Sequence[Envelope]) -> None:
        await self.reactions(conn, envelopes)
        await self.webhooks.record(conn, envelopes)
