"""Webhooks: registered by org admins, fed from the event stream, sent with retries.

A delivery is recorded by the consumer in the transaction that takes the event in
(ingest's inbox), one row per subscribed webhook: a crash before the commit sees the
event again, after it the row is there. The sender (sending.py) posts it, tried again
until 24 hours after it was made (or an admin's retry). The message id is the
delivery's, the same at each attempt, so a receiver can tell a retry from a new event.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog

from services.ingest.imports.domain.endpoints import EndpointRule
from services.ingest.imports.egress import Egress, EndpointNotAllowed
from services.ingest.webhooks import domain
from services.ingest.webhooks.sending import Sender
from shared.contracts.catalog import FileDeleted, FilesUploaded, FileUploaded
from shared.contracts.envelope import Cause, Change, Envelope, Event, envelopes_of
from shared.contracts.ingest import (
    UploadJobFinished,
    WebhookRegistered,
    WebhookRemoved,
    WebhookSecretRotated,
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
-- The webhook's stream version (its events: made 1, each rotation one more, removed);
-- the secret before a rotation, signing beside the new one until `previous_until`.
ALTER TABLE ingest.webhooks ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
ALTER TABLE ingest.webhooks ADD COLUMN IF NOT EXISTS previous_secret_sealed text;
ALTER TABLE ingest.webhooks ADD COLUMN IF NOT EXISTS previous_until timestamptz;
-- When an admin last asked a delivery to be sent again: its attempts and the time it
-- is given up after count from then.
ALTER TABLE ingest.webhook_deliveries ADD COLUMN IF NOT EXISTS retried_at timestamptz;
"""


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
    # Never a secret: one is shown once, when the webhook is made or its secret rotated.
    previous = row["previous_until"]
    return {
        "id": str(row["id"]),
        "url": row["url"],
        "events": list(row["events"]),
        "created_at": row["created_at"].isoformat(),
        "created_by": row["created_by"],
        "previous_secret_valid_until": (
            previous.isoformat() if previous and previous > datetime.now(UTC) else None
        ),
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
        "retried_at": _iso(row["retried_at"]),
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
        self.sender = Sender(parts, settings, self.egress, lambda: self.sealer)

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
            version = await conn.fetchval(
                "DELETE FROM ingest.webhooks WHERE id = $1 RETURNING version", webhook_id
            )
            if version is None:
                raise not_found("webhook", webhook_id)
            return await self.store.append(
                conn, envelopes_of([Change(webhook_stream(webhook_id), version + 1, gone)], cause)
            )

    async def rotate(
        self, access: Access, cause: Cause, webhook_id: uuid.UUID, body: object
    ) -> tuple[dict[str, Any], int]:
        """A new signing secret, answered this once; the one before signs beside it for
        the time asked (0: not at all), so receivers can switch without missing one."""
        require_org_admin(access)
        rotation = domain.parse_rotation(body)
        secret = rotation.secret or domain.new_secret()
        async with self.pool.acquire() as conn, conn.transaction():
            # A rotation within the window of the one before drops that one's secret:
            # two signatures at most.
            row = await conn.fetchrow(
                """UPDATE ingest.webhooks SET
                       previous_secret_sealed = CASE WHEN $3::float8 > 0 THEN secret_sealed END,
                       previous_until = CASE WHEN $3::float8 > 0
                                        THEN now() + make_interval(secs => $3) END,
                       secret_sealed = $2, version = version + 1
                   WHERE id = $1 RETURNING *""",
                webhook_id,
                self.sealer.seal(secret.encode(), str(webhook_id)),
                rotation.keep_previous_s,
            )
            if row is None:
                raise not_found("webhook", webhook_id)
            rotated = WebhookSecretRotated(
                webhook_id=webhook_id, previous_valid_until=row["previous_until"]
            )
            position = await self.store.append(
                conn,
                envelopes_of([Change(webhook_stream(webhook_id), row["version"], rotated)], cause),
            )
        return {**_webhook_json(row), "secret": secret}, position

    async def retry(
        self, access: Access, webhook_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> dict[str, Any]:
        """A delivery sent again now, under its message id (a receiver that took it
        drops it): a failed one (given up), a delivered one the receiver lost, or a
        pending one not to wait for its next attempt. Its attempts count again from
        here, and it is given up as long after this as after its event."""
        require_org_admin(access)
        row = await self.pool.fetchrow(
            """UPDATE ingest.webhook_deliveries SET status = 'pending', attempts = 0,
                   next_attempt_at = now(), retried_at = now(), delivered_at = NULL,
                   lease_until = NULL
               WHERE id = $2 AND webhook_id = $1
                 AND NOT (status = 'pending' AND lease_until >= now())
               RETURNING *""",
            webhook_id,
            delivery_id,
        )
        if row is not None:
            return _delivery_json(row)
        leased = await self.pool.fetchval(
            """SELECT true FROM ingest.webhook_deliveries
               WHERE id = $2 AND webhook_id = $1""",
            webhook_id,
            delivery_id,
        )
        if leased is None:
            raise not_found("delivery", delivery_id)
        raise Refused(
            409,
            "delivery_in_flight",
            f"delivery {delivery_id} is being attempted now: see its outcome in the"
            " webhook's deliveries, and ask again if it fails",
            {"delivery_id": str(delivery_id)},
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
