"""Re-encoding's queue on a real PostgreSQL: each person's files are claimed in turn,
and one person may have at most `reencode_max_pending` files waiting."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from services.thumbnails import renditions as rendition_model
from services.thumbnails.projections import thumbnails as thumbnails_model
from services.thumbnails.renditions import LEASES, Renditions
from shared.contracts.envelope import Cause
from shared.kit.blobs import LocalBlobStore
from shared.kit.consistency import Signal
from shared.kit.errors import Refused
from shared.kit.eventstore import EventStore
from shared.kit.settings import Settings
from tests.conftest import fresh_database


@pytest.fixture
async def queue(database_url: str, tmp_path: Path) -> AsyncIterator[Renditions]:
    store = EventStore("thumbnails")
    async with fresh_database(database_url, "renditions") as pool:
        async with pool.acquire() as conn:
            await store.setup(conn)
            await thumbnails_model.setup(conn)
            await rendition_model.model.setup(conn)
            await conn.execute(LEASES)
        settings = Settings(
            data_dir=tmp_path, blob_url=str(tmp_path / "blobs"), reencode_max_pending=5
        )
        runtime: Any = SimpleNamespace(pool=pool, store=store, settings=settings, moved=Signal())
        yield Renditions(runtime, LocalBlobStore(settings.blob_root()))


async def ask(queue: Renditions, actor: str, count: int) -> list[uuid.UUID]:
    """A job of `count` stored videos asked for by `actor`: their file ids, in order."""
    ids = [uuid.uuid4() for _ in range(count)]
    await queue.pool.executemany(
        """INSERT INTO thumbnails.files (file_id, version, kind, source, blob_key, state,
               requested_at, request_id, correlation_id)
           VALUES ($1, 1, 'video', 'video:x', $2, 'drawn', now(), $1, 'c')""",
        [(i, f"sha256/aa/bb/{i.hex}") for i in ids],
    )
    cause = Cause(actor=actor, correlation_id=f"c-{uuid.uuid4()}")
    await queue.request(cause, [{"id": str(i), "kind": "video"} for i in ids])
    return ids


async def claimed(queue: Renditions) -> uuid.UUID:
    [file] = await queue.claim()
    file_id: uuid.UUID = file["file_id"]
    return file_id


async def test_each_person_s_files_are_claimed_in_turn(queue: Renditions) -> None:
    many = await ask(queue, "user:many", 4)
    one = await ask(queue, "user:one", 1)
    other = await ask(queue, "user:other", 2)
    # The first asker's first, then each other's first before the first asker's second.
    order = [await claimed(queue) for _ in range(7)]
    assert order[:3] == [many[0], one[0], other[0]]
    assert order[3:] == [many[1], other[1], many[2], many[3]]
    assert await queue.claim() == []


async def test_one_person_s_waiting_files_are_capped_by_name(queue: Renditions) -> None:
    await ask(queue, "user:many", 3)
    with pytest.raises(Refused) as refused:
        await ask(queue, "user:many", 3)
    assert (refused.value.status, refused.value.code) == (429, "too_many_pending")
    assert "at most 5 may wait" in refused.value.message
    assert refused.value.details == {"pending": 3, "adding": 3, "max_pending": 5}
    await ask(queue, "user:many", 2)  # within the cap
    await ask(queue, "user:other", 5)  # another person's files are theirs to count
    made = await queue.claim()
    await queue.pool.execute(
        "UPDATE thumbnails.renditions SET state = 'made' WHERE file_id = $1", made[0]["file_id"]
    )
    await ask(queue, "user:many", 1)  # one made: room for one more


async def test_a_file_s_turn_is_its_place_when_it_was_asked_for(queue: Renditions) -> None:
    many = await ask(queue, "user:many", 3)
    for _ in range(2):
        made = await claimed(queue)
        await queue.pool.execute(
            "UPDATE thumbnails.renditions SET state = 'made' WHERE file_id = $1", made
        )
    other = await ask(queue, "user:other", 1)
    # The third of three keeps its third turn: another person's first comes before it
    # (stored when asked for, a turn is read from an index, not ranked at each claim).
    assert [await claimed(queue), await claimed(queue)] == [other[0], many[2]]
