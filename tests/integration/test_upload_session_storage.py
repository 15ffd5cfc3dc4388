"""Completing an upload session when the local file store fails it: a file it cannot
write from the parts is the disk's fault (507 full, 503 otherwise), never a 500, nothing
recorded, and the session still open with its parts, so completing again does it; an
assembled object it cannot delete once the file is recorded is deleted by the sweep."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.ingest.collector.projections import blob_refs
from services.ingest.jobs.projections import jobs
from services.ingest.sessions import handlers
from services.ingest.sessions.handlers import Sessions, _signature
from services.ingest.sessions.projections import sessions
from shared.contracts.envelope import Cause
from shared.kit.blobs import LocalBlobStore, UnknownUpload, content_key, local
from shared.kit.errors import Refused
from shared.kit.service import Parts
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, fresh_database
from tests.unit.test_upload_storage import DISK_FAILURES

CAUSE = Cause(actor="test", correlation_id="test")
KEY = b"upload part urls of the test"


@dataclass
class Context:
    sessions: Sessions
    blobs: LocalBlobStore
    pool: asyncpg.Pool


@pytest.fixture
async def context(database_url: str, tmp_path: Path) -> AsyncIterator[Context]:
    async with fresh_database(database_url, "t_sessions") as pool:
        parts = Parts("ingest", Settings(service_key=SERVICE_KEY, data_dir=tmp_path))
        parts.pool = pool
        async with pool.acquire() as conn:
            await parts.store.setup(conn)
            for projection in (jobs, sessions, blob_refs):
                await projection.setup(conn)
            await handlers.setup(conn)
        blobs = LocalBlobStore(tmp_path / "blobs")
        yield Context(Sessions(parts, blobs, KEY), blobs, pool)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def completed_once(
    context: Context, data: bytes, metadata: dict[str, object] | None = None
) -> uuid.UUID:
    """A session of one part, sent."""
    body = {"name": "notes.txt", "size": len(data)}
    opened, _ = await context.sessions.open(
        CAUSE, uuid.uuid4(), body if metadata is None else {**body, "metadata": metadata}
    )
    session_id = uuid.UUID(opened["id"])
    expires = int(time.time() + 3600)
    await context.sessions.put_part(
        session_id, 1, expires, _signature(KEY, session_id, 1, expires), chunks(data)
    )
    return session_id


@DISK_FAILURES
async def test_a_disk_failing_as_a_session_completes_is_the_stores_fault_and_keeps_it_open(
    context: Context, monkeypatch: pytest.MonkeyPatch, code: int, status: int, named: str
) -> None:
    data = b"a text file sent in one part\n" * 100
    session_id = await completed_once(context, data)

    def disk_says_no(*args: object) -> None:
        raise OSError(code, "the disk said no", str(context.blobs.root / "incoming" / "x"))

    monkeypatch.setattr(LocalBlobStore, "_join", disk_says_no)
    with pytest.raises(Refused) as refused:
        await context.sessions.complete(CAUSE, session_id)
    assert (refused.value.status, refused.value.code) == (status, named)
    assert str(context.blobs.root) not in refused.value.message
    state = await context.sessions.state(session_id)
    assert state is not None and state["status"] == "open"
    # Nor is it kept from expiring: the stamp of a completion under way went with it
    # (completing it again and again, each refused, kept it for good).
    assert not await context.pool.fetchval("SELECT count(*) FROM ingest.sessions_completing")
    monkeypatch.undo()
    done, _ = await context.sessions.complete(CAUSE, session_id)
    assert done["job_id"] == str(session_id)
    state = await context.sessions.state(session_id)
    assert state is not None and state["status"] == "completed"
    stored = context.blobs.path(content_key(hashlib.sha256(data).hexdigest()))
    assert stored.read_bytes() == data


async def test_an_assembled_object_the_store_would_not_delete_is_deleted_by_the_sweep(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"a file whose assembled copy outlives its completion\n" * 100
    session_id = await completed_once(context, data)
    store_key = f"uploads/{session_id.hex}"

    async def store_says_no(self: LocalBlobStore, key: str) -> None:
        raise OSError(5, "the store said no")

    monkeypatch.setattr(LocalBlobStore, "delete", store_says_no)
    # Recorded all the same: only the space of the assembled copy is left behind.
    done, _ = await context.sessions.complete(CAUSE, session_id)
    assert done["job_id"] == str(session_id)
    assert await context.blobs.exists(store_key)
    assert await context.blobs.exists(content_key(hashlib.sha256(data).hexdigest()))
    # The sweep leaves a fresh completion its own delete, and tries again while the
    # store refuses.
    assert await context.sessions.delete_objects_left() == 0
    monkeypatch.setattr(handlers, "LEFT_AFTER", timedelta(0))
    assert await context.sessions.delete_objects_left() == 0
    assert await context.blobs.exists(store_key)

    monkeypatch.undo()
    monkeypatch.setattr(handlers, "LEFT_AFTER", timedelta(0))
    assert await context.sessions.delete_objects_left() == 1
    assert not await context.blobs.exists(store_key)
    stored = context.blobs.path(content_key(hashlib.sha256(data).hexdigest()))
    assert stored.read_bytes() == data
    assert await context.sessions.delete_objects_left() == 0


async def test_a_completion_that_deletes_its_object_leaves_nothing_to_sweep(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_id = await completed_once(context, b"deleted at once\n" * 100)
    await context.sessions.complete(CAUSE, session_id)
    assert not await context.blobs.exists(f"uploads/{session_id.hex}")
    assert await context.pool.fetchval("SELECT count(*) FROM ingest.session_objects_left") == 0
    # Its note of the assembly went with its record.
    assert await context.pool.fetchval("SELECT count(*) FROM ingest.session_assemblies") == 0


async def test_sessions_completed_before_the_sweep_existed_are_swept_once(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"completed by an older ingest\n" * 100
    session_id = await completed_once(context, data)
    await context.sessions.complete(CAUSE, session_id)
    # An older ingest, which kept no such table, may have left the object behind.
    await context.blobs.put(f"uploads/{session_id.hex}", data)
    await context.pool.execute("DROP TABLE ingest.session_objects_left")
    async with context.pool.acquire() as conn:
        await handlers.setup(conn)
        await handlers.setup(conn)  # made once: a restart adds nothing
    assert await context.sessions.delete_objects_left() == 1
    assert not await context.blobs.exists(f"uploads/{session_id.hex}")


async def test_metadata_the_schema_refuses_once_the_file_is_copied_keeps_the_session_open(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema changed while a large file was read and copied: the held check (after
    the copy, so the schema's changes never wait for one) refuses, nothing is recorded,
    the session stays open, and the copy's blob is dated now, for the collector to
    reclaim after its grace unless a file comes to refer to it."""
    data = b"a text file with metadata\n" * 100
    calls: list[bool] = []
    turned = False

    async def schema_turns(conn: object, name: str, metadata: object, *, held: bool = True) -> None:
        calls.append(held)
        if held and turned:
            raise Refused(422, "metadata_type_mismatch", f"file {name!r}: site must be a number")

    monkeypatch.setattr(handlers, "_check_metadata", schema_turns)
    opened, _ = await context.sessions.open(
        CAUSE, uuid.uuid4(), {"name": "notes.txt", "size": len(data), "metadata": {"site": "x"}}
    )
    session_id = uuid.UUID(opened["id"])
    expires = int(time.time() + 3600)
    await context.sessions.put_part(
        session_id, 1, expires, _signature(KEY, session_id, 1, expires), chunks(data)
    )
    calls.clear()
    turned = True
    with pytest.raises(Refused) as refused:
        await context.sessions.complete(CAUSE, session_id)
    assert (refused.value.status, refused.value.code) == (422, "metadata_type_mismatch")
    assert calls == [False, True]
    state = await context.sessions.state(session_id)
    assert state is not None and state["status"] == "open"
    key = content_key(hashlib.sha256(data).hexdigest())
    assert context.blobs.path(key).read_bytes() == data
    row = await context.pool.fetchrow(
        """SELECT b.stored_at > now() - interval '1 minute' AS dated,
                  EXISTS (SELECT 1 FROM ingest.blob_files f WHERE f.blob_key = b.key) AS used
           FROM ingest.blobs b WHERE b.key = $1""",
        key,
    )
    assert row is not None and (row["dated"], row["used"]) == (True, False)
    assert not await context.pool.fetchval(
        "SELECT count(*) FROM ingest.events WHERE type = $1", "ingest.FileContentStored"
    )


async def test_a_session_whose_opening_fails_to_record_leaves_no_upload_in_the_store(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def append_fails(*args: object, **kwargs: object) -> int:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(context.sessions.store, "append", append_fails)
    with pytest.raises(RuntimeError):
        await context.sessions.open(CAUSE, uuid.uuid4(), {"name": "a.txt", "size": 10})
    left = context.blobs.root / "multipart"
    assert not left.exists() or list(left.iterdir()) == []


async def test_a_session_an_older_replica_completes_without_its_metadata_gets_it_after(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a rollout from a version before sessions took metadata goes on (or after a
    rollback to it), a session opened with metadata on a newer replica may be completed
    by an older one, whose file event carries none. The newer replica's sweep records
    the metadata for the catalog, once; a newer completion, or a session ended without a
    file, leaves nothing owed."""

    async def any_metadata(conn: object, name: str, metadata: object, *, held: bool = True) -> None:
        pass

    monkeypatch.setattr(handlers, "_check_metadata", any_metadata)
    data = b"a file with metadata\n" * 100
    older, newer, aborted, carried_it = [
        await completed_once(context, data, {"site": "x"}) for _ in range(4)
    ]
    read = Sessions._open

    async def as_an_older_replica(
        self: Sessions, conn: object, session_id: uuid.UUID, *, lock: bool
    ) -> dict[str, object]:
        # The version before knew no metadata column: its completion carries none, and
        # it clears nothing owed.
        return {**await read(self, conn, session_id, lock=lock), "metadata": None}  # type: ignore[arg-type]

    monkeypatch.setattr(Sessions, "_open", as_an_older_replica)
    stored, _ = await context.sessions.complete(CAUSE, older)
    monkeypatch.setattr(Sessions, "_open", read)
    await context.sessions.complete(CAUSE, newer)
    await context.sessions.abort(CAUSE, aborted)
    # A replica of the version just before carries the metadata but knows no note: its
    # file had the metadata (an editor may have cleared it since), so nothing is owed.
    await context.sessions.complete(CAUSE, carried_it)
    await context.pool.execute(
        "INSERT INTO ingest.session_metadata_owed (session_id) VALUES ($1)", carried_it
    )
    carried = {
        r["job"]: r["metadata"]
        for r in await context.pool.fetch(
            """SELECT data->>'job_id' AS job, data->'metadata' AS metadata FROM ingest.events
               WHERE type = 'ingest.FileContentStored'"""
        )
    }
    assert carried == {
        str(older): {},
        str(newer): {"site": "x"},
        str(carried_it): {"site": "x"},
    }

    assert await context.sessions.restore_metadata() == 1
    assert await context.sessions.restore_metadata() == 0  # once
    restored = await context.pool.fetch(
        "SELECT stream_id, data FROM ingest.events WHERE type = $1",
        "ingest.UploadSessionMetadataRestored",
    )
    assert [(r["stream_id"], r["data"]) for r in restored] == [
        (
            f"upload-job-{older}",
            {"session_id": str(older), "file_id": stored["file_id"], "metadata": {"site": "x"}},
        )
    ]
    assert await context.pool.fetchval("SELECT count(*) FROM ingest.session_metadata_owed") == 0


async def test_a_completion_finding_the_parts_gone_under_another_ones_assembly_goes_on(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two completions at once: the local store's assembly of one deletes the parts
    folder the other is reading (it moves the object into place first). The other
    finds the object assembled and goes on, never a 503."""
    data = b"a file two completions assemble at once\n" * 100
    session_id = await completed_once(context, data)
    join = LocalBlobStore._join

    def the_other_assembles_first(
        self: LocalBlobStore, folder: Path, parts: list[tuple[int, str]], final: Path
    ) -> None:
        join(self, folder, parts, final)
        number, etag = parts[0]
        raise FileNotFoundError(2, "No such file or directory", str(folder / f"{number}.{etag}"))

    monkeypatch.setattr(LocalBlobStore, "_join", the_other_assembles_first)
    done, _ = await context.sessions.complete(CAUSE, session_id)
    assert done["job_id"] == str(session_id)
    stored = context.blobs.path(content_key(hashlib.sha256(data).hexdigest()))
    assert stored.read_bytes() == data


async def test_a_copy_failing_once_the_session_ended_answers_that_it_ended(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aborted (or completed alongside) while its object was copied: 409, not 503."""
    session_id = await completed_once(context, b"aborted while copied\n" * 100)

    async def aborted_meanwhile(self: LocalBlobStore, source: str, target: str) -> None:
        await context.sessions.abort(CAUSE, session_id)
        raise OSError(5, "the store said no")

    monkeypatch.setattr(LocalBlobStore, "copy", aborted_meanwhile)
    with pytest.raises(Refused) as refused:
        await context.sessions.complete(CAUSE, session_id)
    assert (refused.value.status, refused.value.code) == (409, "session_ended")


async def test_a_completion_refused_as_it_records_wakes_the_reclaimer_once_committed(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aborted while its object was copied (the copy done): the completion, refused as
    it records, notes its store's side again and wakes the reclaimer after its
    transaction has committed, unkeyed as the browser completes, not inside it (the
    reclaimer's round would not see the note, and wait for its next sweep)."""
    session_id = await completed_once(context, b"aborted while copied\n" * 100)
    copy = LocalBlobStore.copy

    async def aborted_meanwhile(self: LocalBlobStore, source: str, target: str) -> None:
        await context.sessions.abort(CAUSE, session_id)
        await copy(self, source, target)

    def in_transaction() -> bool:  # any of the pool's connections (asyncpg's own)
        holders = context.pool._holders  # type: ignore[attr-defined]
        return any(h._con is not None and h._con.is_in_transaction() for h in holders)

    woken: list[bool] = []
    monkeypatch.setattr(context.sessions, "reclaim_soon", lambda: woken.append(in_transaction()))
    monkeypatch.setattr(LocalBlobStore, "copy", aborted_meanwhile)
    with pytest.raises(Refused) as refused:
        await context.sessions.complete(CAUSE, session_id)
    assert (refused.value.status, refused.value.code) == (409, "session_ended")
    assert woken == [False, False]  # the abort's, then the completion's: each committed
    assert await context.pool.fetchval(
        "SELECT count(*) FROM ingest.session_uploads_left WHERE session_id = $1", session_id
    )


async def test_expiry_leaves_a_session_being_completed_be(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its time passes while a completion reads and copies it (holding no row): expiry
    skips it, and the completion records the file. Stamped long ago (a completion that
    died), it expires."""
    data = b"completed as its time runs out\n" * 100
    session_id = await completed_once(context, data)
    expired: list[int] = []
    copy = LocalBlobStore.copy

    async def expiry_runs_meanwhile(self: LocalBlobStore, source: str, target: str) -> None:
        # Its time runs out once it has begun.
        await context.pool.execute(
            "UPDATE ingest.sessions SET expires_at = now() - interval '1 second'"
        )
        expired.append(await context.sessions.expire())
        await copy(self, source, target)

    monkeypatch.setattr(LocalBlobStore, "copy", expiry_runs_meanwhile)
    done, _ = await context.sessions.complete(CAUSE, session_id)
    assert (done["job_id"], expired) == (str(session_id), [0])
    state = await context.sessions.state(session_id)
    assert state is not None and state["status"] == "completed"

    monkeypatch.undo()
    dead = await completed_once(context, data)
    await context.pool.execute(
        "UPDATE ingest.sessions SET expires_at = now() - interval '1 second' WHERE id = $1", dead
    )
    await context.pool.execute(
        "INSERT INTO ingest.sessions_completing VALUES ($1, now() - $2::interval)",
        dead,
        handlers.COMPLETING_KEPT + timedelta(seconds=1),
    )
    assert await context.sessions.expire() == 1
    state = await context.sessions.state(dead)
    assert state is not None and state["status"] == "expired"
    assert not await context.pool.fetchval("SELECT count(*) FROM ingest.sessions_completing")

    # Past its time before it began: refused, and nothing stamped that would keep it.
    late = await completed_once(context, data)
    await context.pool.execute(
        "UPDATE ingest.sessions SET expires_at = now() - interval '1 second' WHERE id = $1", late
    )
    with pytest.raises(Refused) as refused:
        await context.sessions.complete(CAUSE, late)
    assert refused.value.code == "session_ended"
    assert not await context.pool.fetchval("SELECT count(*) FROM ingest.sessions_completing")


async def test_a_part_sent_while_a_completion_is_under_way_is_refused(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion reads the parts' bytes: none is taken once one has begun (409 naming
    it), and the file stored is what was sent before."""
    data = b"the bytes the completion began with\n" * 100
    other = data.replace(b"began", b"ended")
    session_id = await completed_once(context, data)
    expires = int(time.time() + 3600)
    signature = _signature(KEY, session_id, 1, expires)
    refused: list[Refused] = []
    join = Sessions._join

    async def sent_meanwhile(self: Sessions, row: asyncpg.Record, stored: list[Any]) -> None:
        with pytest.raises(Refused) as sent:
            await self.put_part(session_id, 1, expires, signature, chunks(other))
        refused.append(sent.value)
        await join(self, row, stored)

    monkeypatch.setattr(Sessions, "_join", sent_meanwhile)
    done, _ = await context.sessions.complete(CAUSE, session_id)
    [sent] = refused
    assert (sent.status, sent.code) == (409, "session_completing")
    assert str(session_id) in sent.message
    assert done["job_id"] == str(session_id)
    stored = context.blobs.path(content_key(hashlib.sha256(data).hexdigest()))
    assert stored.read_bytes() == data


async def test_an_assembly_begun_alongside_never_replaces_the_assembled_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two completions of one upload, the second begun from other bytes of part 1 sent
    while the first assembled (a PUT begun before the first completion): the second's
    assembly, finishing while the first completion hashes the object, must not replace
    it, or the first would link those bytes under the first's hash."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    key = f"uploads/{uuid.uuid4().hex}"
    upload_id = await blobs.create_multipart(key)
    first, second = b"x" * 1000, b"y" * 1000
    first_tag = await blobs.put_part(key, upload_id, 1, chunks(first))
    second_tag = hashlib.md5(second, usedforsecurity=False).hexdigest()
    folder = blobs.root / "multipart" / upload_id
    final = blobs.path(key)
    copy = shutil.copyfileobj
    second_opened, first_placed = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def assemble_the_second() -> None:
        try:
            blobs._join(folder, [(1, second_tag)], final)
        except BaseException as error:
            failed.append(error)

    other = threading.Thread(target=assemble_the_second)

    def copying(source: Any, target: Any, length: int = 0) -> None:
        if source.name.endswith(f"1.{first_tag}"):
            copy(source, target, length)
            # The other bytes land in place of part 1, and the second assembly opens them.
            (folder / f"1.{second_tag}").write_bytes(second)
            (folder / f"1.{first_tag}").unlink()
            other.start()
            assert second_opened.wait(10), "the second assembly never began"
        else:
            second_opened.set()
            assert first_placed.wait(10), "the first assembly never ended"
            copy(source, target, length)

    monkeypatch.setattr(shutil, "copyfileobj", copying)
    await blobs.complete_multipart(key, upload_id, [(1, first_tag)])
    first_placed.set()
    other.join(10)
    assert final.read_bytes() == first
    [error] = failed
    assert isinstance(error, FileNotFoundError)
    # Its parts went with the first assembly; the second left nothing behind.
    assert not folder.exists()
    assert not list((blobs.root / "incoming").iterdir())


async def test_an_upload_whose_assembly_died_once_it_took_the_upload_is_aborted_whole(
    tmp_path: Path,
) -> None:
    """Killed between taking the upload's name file and placing the object: the store
    says it busy (503s, as while an assembly goes on) until the session expires; the
    abort of its expiry deletes the parts all the same."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    key = f"uploads/{uuid.uuid4().hex}"
    upload_id = await blobs.create_multipart(key)
    await blobs.put_part(key, upload_id, 1, chunks(b"sent before the crash\n"))
    folder = blobs.root / "multipart" / upload_id
    (folder / "key").rename(folder / "joined")
    with pytest.raises(local.Assembling):
        await blobs.list_parts(key, upload_id)
    with pytest.raises(UnknownUpload):  # another upload's name is not this one's
        await blobs.abort_multipart(f"uploads/{uuid.uuid4().hex}", upload_id)
    await blobs.abort_multipart(key, upload_id)
    assert not folder.exists()
    with pytest.raises(UnknownUpload):
        await blobs.abort_multipart(key, upload_id)


async def test_a_completion_alongside_one_that_assembles_is_told_to_try_again(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review43: a second completion whose assembly asked for the upload after
    the first's had taken it (its name file moved) but before it placed the object found
    it gone, and ended the session as expired (409 session_lost) while the first stored
    the file. It is the store busy (503); asked again, the session has ended completed."""
    data = b"two completions, one assembly\n" * 100
    session_id = await completed_once(context, data)
    loop = asyncio.get_running_loop()
    join, replace = Sessions._join, local._replace
    second_listed, second_done = asyncio.Event(), threading.Event()
    second: list[BaseException] = []
    joins: list[bool] = []

    async def completing_again() -> None:
        try:
            await context.sessions.complete(CAUSE, session_id)
        except BaseException as error:
            second.append(error)
        finally:
            second_done.set()

    async def both_listed(self: Sessions, row: asyncpg.Record, stored: list[Any]) -> None:
        joins.append(True)
        if len(joins) == 1:  # the first: the second lists the parts too
            task = asyncio.create_task(completing_again())
            await asyncio.wait_for(second_listed.wait(), 10)
            await join(self, row, stored)
            await task
        else:
            second_listed.set()
            await go_on.wait()
            await join(self, row, stored)

    go_on = asyncio.Event()

    def taken_not_placed(spool: str | Path, final: str) -> list[str]:
        # The first's assembly has taken the upload: the second's goes now.
        loop.call_soon_threadsafe(go_on.set)
        assert second_done.wait(10), "the second completion never ended"
        return replace(spool, final)

    monkeypatch.setattr(Sessions, "_join", both_listed)
    monkeypatch.setattr(local, "_replace", taken_not_placed)
    done, _ = await context.sessions.complete(CAUSE, session_id)
    assert done["job_id"] == str(session_id)
    [busy] = second
    assert isinstance(busy, Refused) and (busy.status, busy.code) == (503, "storage_unavailable")
    state = await context.sessions.state(session_id)
    assert state is not None and state["status"] == "completed"
    stored = context.blobs.path(content_key(hashlib.sha256(data).hexdigest()))
    assert stored.read_bytes() == data
    with pytest.raises(Refused) as again:
        await context.sessions.complete(CAUSE, session_id)
    assert again.value.code == "session_ended"


async def test_an_object_assembled_after_its_sessions_end_was_done_goes_with_its_completion(
    context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aborted while the store assembled its object, the abort's note done before the
    object came (a large file's assembly takes minutes): the completion, cancelled
    before it records (its caller gone; or its process killed), left the object for
    good. Its note of the assembly, once not dated for `ASSEMBLY_KEPT`, has the
    reclaimer delete it; before then it is left be (the store may still be assembling)."""
    session_id = await completed_once(context, b"assembled after the abort\n" * 100)
    key = f"uploads/{session_id.hex}"
    placed = context.blobs.path(key)
    aside = placed.with_name("aside")
    assemble = LocalBlobStore.complete_multipart
    assembled = asyncio.Event()

    async def aborted_meanwhile(self: LocalBlobStore, *args: Any) -> None:
        await assemble(self, *args)
        placed.rename(aside)  # not in place yet when the abort's note is done
        await context.sessions.abort(CAUSE, session_id)
        assert await context.sessions.reclaim() == 1
        aside.rename(placed)
        assembled.set()
        await asyncio.Event().wait()  # cancelled here, before it records

    monkeypatch.setattr(LocalBlobStore, "complete_multipart", aborted_meanwhile)
    completing = asyncio.ensure_future(context.sessions.complete(CAUSE, session_id))
    await asyncio.wait_for(assembled.wait(), 30)
    completing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await completing
    await context.sessions.reclaim()
    assert await context.blobs.exists(key)  # within the grace: the store may still assemble
    monkeypatch.setattr(handlers, "ASSEMBLY_KEPT", timedelta(0))
    assert await context.sessions.reclaim() == 1
    assert not await context.blobs.exists(key)
    assert await context.pool.fetchval("SELECT count(*) FROM ingest.session_assemblies") == 0
