"""Which ACL events make ingest look at upload sessions again, and what a delivery of one
again does (services/ingest/sessions/revocations.py); the sessions and the rights are
fakes here, the e2e tests (tests/e2e/test_sessions.py) have the real ones."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

from services.ingest.sessions.handlers import Sessions
from services.ingest.sessions.openers import Openers
from services.ingest.sessions.revocations import Revocations
from shared.contracts import acl as ev
from shared.contracts.envelope import Cause, Envelope, Event, new_envelope
from shared.kit.errors import Refused

ALICE, BOB, CAROL = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
FOLDER = uuid.uuid4()


class FakeSessions:
    """Open sessions: id -> opener's user id; ended ones leave."""

    def __init__(self, opened: Mapping[uuid.UUID, uuid.UUID]) -> None:
        self.open = dict(opened)
        self.asked: list[list[str]] = []

    async def opened_by(self, conn: object, users: list[str]) -> list[dict[str, Any]]:
        self.asked.append(sorted(users))
        return [
            {"id": s, "folder_id": FOLDER, "created_by": str(u), "key_id": uuid.uuid4()}
            for s, u in self.open.items()
            if str(u) in users
        ]

    async def end_open(self, conn: object, cause: Cause, session_ids: list[uuid.UUID]) -> int:
        ended = [s for s in session_ids if self.open.pop(s, None) is not None]
        return len(ended)


class FakeOpeners:
    """Refuses the sessions named (their opener lost the right)."""

    def __init__(self, lost: set[uuid.UUID]) -> None:
        self.lost = lost
        self.checked: list[uuid.UUID] = []

    async def refused(self, rows: Sequence[Mapping[str, Any]]) -> dict[uuid.UUID, Refused]:
        self.checked += [r["id"] for r in rows]
        return {
            r["id"]: Refused(403, "upload_right_lost", "lost") for r in rows if r["id"] in self.lost
        }


def delivered(*events: Event) -> list[Envelope]:
    cause = Cause(actor=str(uuid.uuid4()), correlation_id="c")
    return [
        new_envelope(e, stream_id=ev.folder_access_stream(FOLDER), stream_version=i, cause=cause)
        for i, e in enumerate(events, 1)
    ]


def removed(user: uuid.UUID, had: str) -> ev.CollaboratorRemoved:
    return ev.CollaboratorRemoved(
        folder_id=FOLDER, user_id=user, previous_role=had, reason="removed"
    )


def changed(user: uuid.UUID, had: str, role: str) -> ev.CollaboratorRoleChanged:
    return ev.CollaboratorRoleChanged(folder_id=FOLDER, user_id=user, role=role, previous_role=had)


def reacting(sessions: FakeSessions, openers: FakeOpeners) -> Any:
    return Revocations.reactions.bound(
        Revocations(cast(Sessions, sessions), cast(Openers, openers))
    )


async def test_a_role_that_stays_editor_or_never_was_costs_no_question() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    sessions = FakeSessions({a: ALICE, b: BOB})
    openers = FakeOpeners({a, b})
    await reacting(sessions, openers)(
        None,
        delivered(
            changed(ALICE, "editor", "admin"),
            changed(ALICE, "user", "editor"),
            changed(BOB, "admin", "editor"),
            removed(BOB, "user"),
        ),
    )
    assert sessions.asked == [] and openers.checked == []
    assert set(sessions.open) == {a, b}


async def test_a_lowered_role_ends_the_sessions_its_user_may_no_longer_send_to_and_again_none() -> (
    None
):
    lost, kept, bobs, carols = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    sessions = FakeSessions({lost: ALICE, kept: ALICE, bobs: BOB, carols: CAROL})
    openers = FakeOpeners({lost, bobs, carols})
    react = reacting(sessions, openers)
    events = delivered(removed(ALICE, "editor"), removed(BOB, "admin"))
    await react(None, events)
    # One look at the open sessions of the batch's users; Carol's role did not change.
    assert sessions.asked == [sorted([str(ALICE), str(BOB)])]
    assert set(sessions.open) == {kept, carols}
    # Delivered again: what ended is not open any more; what was kept stays.
    await react(None, events)
    assert set(sessions.open) == {kept, carols}
    await react(None, delivered(changed(ALICE, "admin", "viewer")))
    assert set(sessions.open) == {kept, carols}
