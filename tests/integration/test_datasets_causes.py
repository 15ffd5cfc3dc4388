"""Who the datasets context credits with the links its reactions make.

One consumer batch holds a run of one type of event, whoever caused each: the link
changes a reaction records carry, for each file, the actor and causation of the event
that moved that file, never those of the batch's first event (the audit names who did
what, and a member's own audit is read by that actor).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from shared.contracts.catalog import (
    FilesRestored,
    FolderCreated,
    FolderDeleted,
    FolderRestored,
)
from shared.contracts.envelope import Cause, Envelope, Event, new_envelope
from tests.integration.test_datasets_reactions import (
    ADMIN,
    CAUSE,
    Context,
    datasets_consumer,
    deleted,
    uploaded,
)

ALICE, BOB = "alice", "bob"


@dataclass
class Catalog:
    """The catalog's store as the datasets consumer sees it, each event by its actor."""

    written: int = 0
    made: dict[str, str] = field(default_factory=dict)  # event id -> actor

    def event(self, event: Event, actor: str, request: str | None = None) -> Envelope:
        """`request`: the correlation id of the request that recorded it (its own if None)."""
        self.written += 1
        cause = Cause(actor=actor, correlation_id=request or f"request-{self.written}")
        made = new_envelope(event, stream_id=f"s-{uuid.uuid4()}", stream_version=1, cause=cause)
        self.made[str(made.event_id)] = actor
        return made.model_copy(update={"source": "catalog", "position": self.written})


@pytest.fixture
async def context(database_url: str) -> AsyncIterator[Context]:
    async with datasets_consumer(database_url) as made:
        yield made


async def recorded(context: Context, event_type: str) -> list[dict[str, Any]]:
    rows = await context.pool.fetch(
        """SELECT data, metadata->>'actor' AS actor, metadata->>'causation_id' AS causation
           FROM datasets.events WHERE type = $1 ORDER BY position""",
        event_type,
    )
    return [
        {
            "files": set(map(uuid.UUID, r["data"]["file_ids"])),
            "actor": r["actor"],
            "causation": r["causation"],
        }
        for r in rows
    ]


def credited(catalog: Catalog, events: list[dict[str, Any]]) -> dict[str, set[uuid.UUID]]:
    """Files by the actor each event names, checked against the event it says caused it."""
    by_actor: dict[str, set[uuid.UUID]] = {}
    for event in events:
        assert catalog.made[event["causation"]] == event["actor"]
        by_actor.setdefault(event["actor"], set()).update(event["files"])
    return by_actor


async def test_two_users_uploads_in_one_batch_are_linked_each_in_its_uploaders_name(
    context: Context,
) -> None:
    catalog = Catalog()
    top = uuid.uuid4()
    await context.apply(
        catalog.event(FolderCreated(folder_id=top, parent_id=None, name="top"), ALICE)
    )
    synced, _ = await context.datasets.create(
        CAUSE, ADMIN, name="synced", description="", synced_folder_id=top
    )
    alices, bobs = [uuid.uuid4(), uuid.uuid4()], [uuid.uuid4()]
    await context.apply(
        catalog.event(uploaded(alices[0], top), ALICE),
        catalog.event(uploaded(bobs[0], top), BOB),
        catalog.event(uploaded(alices[1], top), ALICE),
    )
    assert await context.members(synced) == {*alices, *bobs}
    linked = await recorded(context, "datasets.FilesLinked")
    assert credited(catalog, linked) == {ALICE: set(alices), BOB: set(bobs)}
    # Alice's two uploads: two events caused her files (one each).
    assert len(linked) == 3

    # Both delete their own files in one batch: each unlink in the deleter's name.
    await context.apply(
        catalog.event(deleted(bobs[0], top), BOB),
        *(catalog.event(deleted(f, top), ALICE) for f in alices),
    )
    unlinked = await recorded(context, "datasets.FilesUnlinked")
    assert credited(catalog, unlinked) == {ALICE: set(alices), BOB: set(bobs)}


async def test_folders_deleted_and_restored_together_credit_each_folders_actor(
    context: Context,
) -> None:
    """The set-based ways (a batch's folders deleted, then restored, at once): each
    file's links go and come back in the name of the deletion or restore above it, one
    event a request (a folder deleted with the one below it)."""
    catalog = Catalog()
    top, alices, inner, bobs = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    a_file, inner_file, b_file = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await context.apply(
        catalog.event(FolderCreated(folder_id=top, parent_id=None, name="top"), ALICE),
        catalog.event(FolderCreated(folder_id=alices, parent_id=top, name="a"), ALICE),
        catalog.event(FolderCreated(folder_id=inner, parent_id=alices, name="i"), ALICE),
        catalog.event(FolderCreated(folder_id=bobs, parent_id=top, name="b"), BOB),
        catalog.event(uploaded(a_file, alices), ALICE),
        catalog.event(uploaded(inner_file, inner), ALICE),
        catalog.event(uploaded(b_file, bobs), BOB),
    )
    synced, _ = await context.datasets.create(
        CAUSE, ADMIN, name="synced", description="", synced_folder_id=top
    )
    await context.apply(
        catalog.event(FolderDeleted(folder_id=bobs, parent_id=top, trashed=True), BOB),
        catalog.event(FolderDeleted(folder_id=alices, parent_id=top, trashed=True), ALICE, "a"),
        catalog.event(FolderDeleted(folder_id=inner, parent_id=alices, trashed=True), ALICE, "a"),
    )
    assert await context.members(synced) == set()
    unlinked = await recorded(context, "datasets.FilesUnlinked")
    assert credited(catalog, unlinked) == {ALICE: {a_file, inner_file}, BOB: {b_file}}
    assert len(unlinked) == 2

    await context.apply(
        catalog.event(FolderRestored(folder_id=alices, parent_id=top), ALICE, "b"),
        catalog.event(FolderRestored(folder_id=inner, parent_id=alices), ALICE, "b"),
        catalog.event(FolderRestored(folder_id=bobs, parent_id=top), BOB),
    )
    assert await context.members(synced) == {a_file, inner_file, b_file}
    linked = await recorded(context, "datasets.FilesLinked")
    # The files' first links (their uploads), then their links back.
    assert credited(catalog, linked[-2:]) == {ALICE: {a_file, inner_file}, BOB: {b_file}}
    await context.apply(
        catalog.event(FilesRestored(folder_id=alices, file_ids=[a_file]), ALICE),
        catalog.event(FilesRestored(folder_id=inner, file_ids=[inner_file]), ALICE),
        catalog.event(FilesRestored(folder_id=bobs, file_ids=[b_file]), BOB),
    )
    assert len(await recorded(context, "datasets.FilesLinked")) == len(linked)
