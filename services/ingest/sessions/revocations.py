"""Upload sessions end with the right of who opened them.

A session's parts and its completion are refused once the API key that opened it is
revoked, or its opener no longer has the editor role on its folder (the gateway signs
the opener's key and access for ingest to check, `domain.check_opener`); with S3 the
parts go to the bucket's presigned URLs, which the bucket would take until they expire.
So such sessions are ended here, as an abort ends one: the multipart upload they name
is aborted once the consumer's batch has committed (`Sessions.after_batch`: never while
its transaction waits on the store), and its part URLs answer `NoSuchUpload` from then on.

A revoked key ends every open session it opened. A collaborator's role that went down
from editor or admin (removed, or changed to user), on any folder, may have taken the
right on the folders below it, or not (a grant above may still give it): each open
session of that user is checked again as a part is (`openers.Openers`), and those
refused are ended. A role that stays editor or above, or that was never more than user,
takes no right, and costs nothing. The check reads the rights as they are now, so a
delivery again, or one that comes after the role was given back, ends nothing more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.ingest.sessions.handlers import Sessions
from services.ingest.sessions.openers import Openers
from shared.contracts.acl import ApiKeyRevoked, CollaboratorRemoved, CollaboratorRoleChanged
from shared.contracts.envelope import Cause
from shared.kit.access import RANK, role_name
from shared.kit.db import Conn
from shared.kit.logs import log
from shared.kit.reactions import Reactions, Received

EDITOR = RANK["editor"]


class Revocations:
    reactions = Reactions("ingest")

    def __init__(self, sessions: Sessions, openers: Openers) -> None:
        self.sessions = sessions
        self.openers = openers

    @reactions.on(ApiKeyRevoked)
    async def when_key_revoked(
        self, conn: Conn, revoked: Sequence[Received[ApiKeyRevoked]]
    ) -> None:
        for r in revoked:
            ended = await self.sessions.end_opened_with(conn, Cause.of(r), r.event.key_id)
            if ended:
                log.info("sessions.ended_with_key", key_id=str(r.event.key_id), sessions=ended)

    @reactions.on(CollaboratorRemoved)
    async def when_collaborator_removed(
        self, conn: Conn, removed: Sequence[Received[CollaboratorRemoved]]
    ) -> None:
        await self._check_again(
            conn,
            {r.event.user_id: r for r in removed if _rank(r.event.previous_role) >= EDITOR},
        )

    @reactions.on(CollaboratorRoleChanged)
    async def when_role_changed(
        self, conn: Conn, changed: Sequence[Received[CollaboratorRoleChanged]]
    ) -> None:
        await self._check_again(
            conn,
            {
                r.event.user_id: r
                for r in changed
                if _rank(r.event.previous_role) >= EDITOR and _rank(r.event.role) < EDITOR
            },
        )

    async def _check_again(
        self,
        conn: Conn,
        lowered: dict[uuid.UUID, Received[CollaboratorRemoved] | Received[CollaboratorRoleChanged]],
    ) -> None:
        """End the open sessions of these users whose opener the part check refuses now;
        each ended under the event that lowered its opener's role (the last of the batch)."""
        if not lowered:
            return
        rows = await self.sessions.opened_by(conn, [str(u) for u in lowered])
        if not rows:
            return
        refused = await self.openers.refused(rows)
        for user_id, r in lowered.items():
            theirs = [
                row["id"]
                for row in rows
                if row["id"] in refused and row["created_by"] == str(user_id)
            ]
            ended = await self.sessions.end_open(conn, Cause.of(r), theirs)
            if ended:
                log.info(
                    "sessions.ended_with_role",
                    user_id=str(user_id),
                    folder_id=str(r.event.folder_id),
                    sessions=ended,
                )


def _rank(role: str) -> int:
    name = role_name(role)
    return RANK[name] if name is not None else 0
