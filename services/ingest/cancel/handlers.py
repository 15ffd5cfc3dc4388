"""`POST /v1/jobs/{id}/cancel`: a job stops; what it did stays.

An upload (files, an image group) is stored whole in the transaction that answers it:
it is finished before anyone could cancel it (409). An upload session is ended as an
abort ends it (its parts are deleted). An import records its end, `cancelled`, on its
stream: the runner's next batch then finds the stream moved on (its append expects the
version it read) and stops, recording nothing more, here or in another replica; the task
of this process is cancelled at once too. A DICOM job's instances are stored already:
its end here says so, and the DICOM context is told by the gateway to skip those it has
not read (services/dicom). A cancelled job answers again as it did (idempotent)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from services.ingest.jobs.projections import jobs
from services.ingest.sessions.handlers import Sessions
from shared.contracts import ingest as ev
from shared.contracts.envelope import Cause, appended, envelopes_of
from shared.kit import idempotency
from shared.kit.errors import Refused, not_found
from shared.kit.service import Handlers, Parts

CANCELLED = "cancelled"


class Cancelling(Handlers):
    def __init__(
        self, parts: Parts, sessions: Sessions, stop_import: Callable[[uuid.UUID], None]
    ) -> None:
        super().__init__(parts)
        self.sessions = sessions
        self.stop_import = stop_import

    async def cancel(self, cause: Cause, job_id: uuid.UUID) -> tuple[dict[str, Any], int]:
        answer = await self._cancel(cause, job_id)
        # A session's end: its store's side is done once it has committed, never inside
        # the transaction (sessions/handlers.py); a keyed cancel commits with its answer.
        idempotency.after_commit(self.sessions.reclaim_soon)
        return answer

    async def _cancel(self, cause: Cause, job_id: uuid.UUID) -> tuple[dict[str, Any], int]:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT kind FROM ingest.jobs WHERE id = $1", job_id)
            if row is None:
                raise not_found("job", job_id)
            kind = row["kind"]
            if kind != "session":
                # The row lock orders this with an import's batches (they update it too);
                # a session is locked by its own row, as an abort locks it.
                row = await conn.fetchrow(
                    "SELECT kind, status FROM ingest.jobs WHERE id = $1 FOR UPDATE", job_id
                )
            else:
                row = await conn.fetchrow(
                    "SELECT kind, status FROM ingest.jobs WHERE id = $1", job_id
                )
            assert row is not None  # a job is never removed
            status = row["status"]
            answer = {"id": str(job_id), "kind": kind, "status": CANCELLED}
            if status == CANCELLED:
                return answer, 0
            if status != "running" or kind in ("upload", "image_group", "image_sequence"):
                ended = "done" if status == "running" else status
                raise Refused(
                    409,
                    "job_finished",
                    f"job {job_id} is {ended}: nothing is left to cancel (an upload is"
                    " stored whole before it answers)",
                    {"id": str(job_id), "status": ended},
                )
            if kind == "session":
                return answer, await self.sessions.cancel(conn, cause, job_id)
            version = await conn.fetchval(
                "SELECT max(stream_version) FROM ingest.events WHERE stream_id = $1",
                ev.job_stream(job_id),
            )
            envelopes = envelopes_of(
                appended(
                    ev.job_stream(job_id),
                    [ev.UploadJobFinished(job_id=job_id, status=CANCELLED)],
                    after=version,
                ),
                cause,
            )
            await jobs.apply(conn, envelopes)
            position = await self.store.append(conn, envelopes)
        if kind == "import":
            self.stop_import(job_id)
        return answer, position
