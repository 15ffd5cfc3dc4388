"""Upload sessions end with the API key that opened them.

A session's parts and its completion are refused once its key is revoked (the gateway
signs the opener's key for ingest to check, `domain.check_opener`); with S3 the parts
go to the bucket's presigned URLs, which the bucket would take until they expire. So a
revoked key's open sessions are ended here, as an abort ends one: the multipart upload
they name is aborted, and its part URLs answer `NoSuchUpload` from then on.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.ingest.sessions.handlers import Sessions
from shared.contracts.acl import ApiKeyRevoked
from shared.contracts.envelope import Cause
from shared.kit.db import Conn
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received


class Revocations:
    reactions = Reactions("ingest")

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    @reactions.on(ApiKeyRevoked)
    async def when_key_revoked(
        self, conn: Conn, revoked: Sequence[Received[ApiKeyRevoked]]
    ) -> None:
        for r in revoked:
            ended = await self.sessions.end_opened_with(conn, Cause.of(r), r.event.key_id)
            if ended:
                log.info("sessions.ended_with_key", key_id=str(r.event.key_id), sessions=ended)
