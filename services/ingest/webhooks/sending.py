"""Webhooks' deliveries sent: a loop claims the due ones with a lease (FOR UPDATE SKIP
LOCKED: replicas of ingest share the work), posts each signed, and records the attempt;
a delivery not answered 2xx is tried again, backing off, until it is given up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from services.ingest.imports.buckets.s3 import _Resolver
from services.ingest.imports.egress import Egress, EndpointNotAllowed
from services.ingest.webhooks import domain
from shared.kit.secrets import Sealer
from shared.kit.service import Handlers, Parts
from shared.kit.settings import Settings

log = structlog.get_logger()

# Deliveries one pass of the sender claims, and how long it holds them at least (a
# sender that died mid-attempt leaves its claim to the others after this).
BATCH = 32
LEASE_S = 120.0
# Deliveries ended (delivered or given up) are listed this long, then deleted.
KEEP_S = 30 * 24 * 3600.0
PRUNE_EVERY_S = 600.0


class Sender(Handlers):
    def __init__(
        self, parts: Parts, settings: Settings, egress: Egress, sealer: Callable[[], Sealer]
    ) -> None:
        super().__init__(parts)
        self.settings = settings
        self.egress = egress
        self.sealer = sealer
        self._http: aiohttp.ClientSession | None = None

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
                       AND coalesce(retried_at, created_at) < now() - make_interval(secs => $1)""",
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
               RETURNING d.id, d.payload::text AS payload, d.attempts, d.lease_until,
                         coalesce(d.retried_at, d.created_at) AS created_at,
                         w.id AS webhook_id, w.url, w.secret_sealed,
                         CASE WHEN w.previous_until > now()
                              THEN w.previous_secret_sealed END AS previous_sealed""",
            max(LEASE_S, 3 * self.settings.webhook_timeout_s),
            BATCH,
        )
        await asyncio.gather(*(self._attempt(r) for r in rows))
        return len(rows)

    async def _attempt(self, row: Any) -> None:
        body = row["payload"].encode()
        message_id = f"msg_{row['id'].hex}"
        timestamp = int(time.time())
        signing = [
            self.sealer().open(sealed, str(row["webhook_id"])).decode()
            for sealed in (row["secret_sealed"], row["previous_sealed"])
            if sealed is not None
        ]
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": domain.signature(signing, message_id, timestamp, body),
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
        # Recorded only under this attempt's own claim: once its lease ran out (the
        # process stalled) another sender or an admin's retry owns the delivery, and this
        # outcome, judged by the clock it was claimed with, must not undo theirs.
        if error is None:
            recorded = await self.pool.execute(
                """UPDATE ingest.webhook_deliveries SET status = 'delivered', attempts = $2,
                   last_status = $3, last_error = NULL, delivered_at = now(),
                   lease_until = NULL, next_attempt_at = NULL
                   WHERE id = $1 AND lease_until = $4""",
                row["id"],
                attempts,
                status,
                row["lease_until"],
            )
            self._outlived(row, recorded)
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
        recorded = await self.pool.execute(
            """UPDATE ingest.webhook_deliveries SET attempts = $2, last_status = $3,
               last_error = $4, lease_until = NULL,
               status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
               next_attempt_at = now() + make_interval(secs => $6)
               WHERE id = $1 AND lease_until = $7""",
            row["id"],
            attempts,
            status,
            error,
            given_up,
            wait,
            row["lease_until"],
        )
        self._outlived(row, recorded)

    @staticmethod
    def _outlived(row: Any, recorded: str) -> None:
        if recorded == "UPDATE 0":
            # Worth an operator's look: a sender stalled for longer than its lease.
            log.warning("webhook.attempt_outlived_its_claim", delivery=str(row["id"]))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
