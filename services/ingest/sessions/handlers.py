"""Upload sessions: a large file sent in parts straight to the store, then completed.

The parts go to presigned URLs of the store (S3), or, with the local store, to a
route of ours whose URLs are signed the same way. Completing reads the assembled
object once, for its sha256 and media facts, then copies it under its content key (the
assembled object goes once that is recorded).

A completion records, in its own transaction, that its assembled object is left to
delete (`ingest.session_objects_left`), and deletes it once committed: a process that
dies in between, or a store that refuses the delete, leaves the row, and the sessions'
sweep deletes what it names, so no completed upload keeps two copies of its bytes.

A session opened with metadata is owed it (`ingest.session_metadata_owed`) until a
completion of this version carries it: a replica of a version before sessions took
metadata (while a rollout from it goes on, or after a rollback to it) completes one
without (it neither reads the metadata nor clears the row), and the sweep gives the
file its metadata after the fact (`ingest.UploadSessionMetadataRestored`).

A session ended otherwise (aborted, cancelled, expired, its opener's right gone) is
ended in the database first: its end's transaction notes the store's side of it
(`ingest.session_uploads_left`: its multipart upload to abort, an object a completion
assembled to delete), and the store is called only once that has committed, by the
sessions' reclaimer (`reclaim_forever`), woken by the commit. So a hung store (up to
30 s a call) holds no database connection and no session's row while it is waited on:
before, each end held both, and enough ends at once (a revoked key's sessions, a sweep
of expired ones) starved ingest's pool. A process that dies between the commit and the
store's answer, or a store that refuses, leaves the note, and the next round does it.
A completion notes its assembly before the store begins it (`ingest.session_assemblies`)
and dates it anew while it goes on: one that dies or is cancelled before it records
(the store perhaps assembling still) leaves it, and once it is old and the session has
ended, the reclaimer deletes the object, which the end's note may have missed.

It runs over 500 lines because every way a session ends (completed, aborted, cancelled,
expired, its opener's key or role gone) locks its row and ends it through the same
private helpers (`_row`, `_end`), which other modules should not call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterable, Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg

from services.ingest.collector import claims
from services.ingest.collector.projections import blob_refs, claim_blobs
from services.ingest.jobs.projections import jobs
from services.ingest.media import facts as media_facts
from services.ingest.media import kinds
from services.ingest.metadata.domain import check_metadata
from services.ingest.metadata.schema import current as current_schema
from services.ingest.sessions import domain
from services.ingest.sessions.openers import Openers, Unanswered
from services.ingest.sessions.projections import sessions
from services.ingest.uploads.domain import StoredFile
from shared.contracts.envelope import Cause, envelopes_of, now
from shared.kit import idempotency
from shared.kit.blobs import BlobStore, UnknownUpload, content_key
from shared.kit.db import Conn
from shared.kit.errors import Refused, storage_failed
from shared.kit.identity import PART_URL_LIFETIME_S
from shared.kit.logs import log
from shared.kit.service import Handlers, Parts

# A part's URL stays valid this long; GET on the session gives fresh ones.
URL_LIFETIME = timedelta(seconds=PART_URL_LIFETIME_S)
# The sweep leaves a completion this long to delete its own object.
LEFT_AFTER = timedelta(minutes=1)
# How long a completion's stamp keeps expiry off its session: longer than the read and
# copy of the largest file (5 TiB, hours) take; a completion that died leaves its
# session to expire this much late.
COMPLETING_KEPT = timedelta(hours=24)
# How long a read of an open session (its GET, its job's progress) waits for the store
# to list a page of its parts (1,000): well within the gateway's read budget (15 s), so
# a hung store (30 s a call) does not hang the read; past it the session is shown from
# what the database has, its parts unknown (`_view`). A page, not the listing: a
# session of 10,000 parts on a slow but answering store is listed whole, if within
# `PARTS_TOTAL_S` of the read's first call.
PARTS_WAIT_S = 5.0
# How long a read waits for the whole listing, however its pages come: under the
# gateway's read budget (15 s) with room for the rest of the read, so a slow listing (or
# a store paging without end) gives `parts_known: false`, not the gateway's 503 (on which
# the Python client opens a new session and sends the file again).
PARTS_TOTAL_S = 10.0
# A session (`s`) no completion began within `COMPLETING_KEPT` ($1). A completion stamps
# it holding the session's row, which expiry takes (SKIP LOCKED) before it reads this.
NOT_COMPLETING = """NOT EXISTS (SELECT 1 FROM ingest.sessions_completing c
    WHERE c.session_id = s.id AND c.since > now() - $1::interval)"""
# Deletes the sweep has in flight at once (each a request to S3).
SWEEP_DELETES = 16
# A store's side of an ended session the store refused (or did not answer) is tried
# again this much later, twice as late after each refusal up to `RECLAIM_AT_MOST` (a
# key the store refuses for good costs a request a day); a round takes this many.
RECLAIM_AGAIN = timedelta(minutes=1)
RECLAIM_AT_MOST = timedelta(days=1)
RECLAIM_PAGE = 1000
# A completion's note of the object it assembles (`ingest.session_assemblies`) is dated
# anew this often while it goes on, and taken for a completion that is gone (its process
# died, or it was cancelled with a call to the store perhaps still in flight) once not
# dated for `ASSEMBLY_KEPT`: well past a renewal or two missed, and past the longest call
# the store may still finish after its caller gave up on it.
ASSEMBLY_RENEW = timedelta(minutes=1)
ASSEMBLY_KEPT = timedelta(minutes=10)

# The assembled objects completions have left to delete. Filled, when the table is
# made, with the sessions completed before it (an older ingest kept no account of what
# its completions failed to delete; a delete of a gone key is no error, so each of
# those costs one request, once).
DDL = """
DO $$
BEGIN
    IF to_regclass('ingest.session_objects_left') IS NULL THEN
        CREATE TABLE ingest.session_objects_left (
            session_id uuid PRIMARY KEY,
            store_key text NOT NULL,
            -- When it was noted, not when its transaction began (which hashed the file).
            since timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX session_objects_left_since ON ingest.session_objects_left (since);
        INSERT INTO ingest.session_objects_left (session_id, store_key, since)
            SELECT id, store_key, '-infinity' FROM ingest.sessions WHERE status = 'completed';
    END IF;
END $$;
-- When the last completion of an open session began: expiry leaves it be a while
-- (`COMPLETING_KEPT`). Not the read model's (no event's; a rebuild leaves it be); gone
-- once the session ends.
CREATE TABLE IF NOT EXISTS ingest.sessions_completing (
    session_id uuid PRIMARY KEY,
    since timestamptz NOT NULL
);
-- The store's side of the sessions ended otherwise than completed (their multipart
-- upload to abort, an object a completion assembled to delete): noted by the end's
-- transaction, done once it has committed, then forgotten. Not the read model's.
CREATE TABLE IF NOT EXISTS ingest.session_uploads_left (
    session_id uuid PRIMARY KEY,
    store_key text NOT NULL,
    upload_id text NOT NULL,
    -- Not tried before then: noted at the end, put back after a failed try.
    due timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS session_uploads_left_due ON ingest.session_uploads_left (due);
-- Tries the store refused, and when it was noted (added later: a note from before is
-- dated by the start that added them): an operator's view of the old ones (README).
ALTER TABLE ingest.session_uploads_left
    ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS noted_at timestamptz NOT NULL DEFAULT now();
-- The completions under way since before their assembly: each notes its session's
-- object before the store is asked to assemble it, dates it anew while it goes on, and
-- forgets it in the transaction that records (or refuses) it. One left undated past
-- `ASSEMBLY_KEPT`, its session ended, is a completion gone before it recorded: the
-- reclaimer deletes its object. Not the read model's.
CREATE TABLE IF NOT EXISTS ingest.session_assemblies (
    holder uuid PRIMARY KEY,
    session_id uuid NOT NULL,
    alive timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS session_assemblies_alive ON ingest.session_assemblies (alive);
"""


async def setup(conn: Conn) -> None:
    await conn.execute(DDL)
    # Sessions opened before it were opened by replicas whose completions carry their
    # metadata, or by older ones that took none: nothing is owed for them.
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS ingest.session_metadata_owed (session_id uuid PRIMARY KEY)"
    )


def _signature(secret: bytes, session_id: uuid.UUID, number: int, expires: int) -> str:
    """The signature of a part URL handed out before they were signed with the service
    key (`ServiceKey.upload_part_mac`): still taken until it expires. Drop it in the
    version after."""
    message = f"{session_id}:{number}:{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class Sessions(Handlers):
    def __init__(
        self, parts: Parts, blobs: BlobStore, signing_key: bytes, openers: Openers | None = None
    ) -> None:
        super().__init__(parts)
        self.blobs = blobs
        self.openers = openers
        self._signing_key = signing_key
        settings = parts.settings
        self.part_size = settings.upload_part_size
        self.ttl_s = settings.upload_session_ttl_s
        # Set once an end has committed: the reclaimer does its store's side now.
        self._reclaim_now = asyncio.Event()
        # An end noted in a transaction the consumer commits (a revocation's).
        self._ended_in_batch = False

    # -- commands --------------------------------------------------------------------

    async def open(
        self,
        cause: Cause,
        folder_id: uuid.UUID,
        body: dict[str, Any],
        key_id: uuid.UUID | None = None,
    ) -> tuple[dict[str, Any], int]:
        name, size, part_size, lifetime, metadata = domain.check_open(
            body, self.part_size, self.ttl_s
        )
        if metadata:
            # Before anything is opened in the store: a refusal leaves nothing behind.
            async with self.pool.acquire() as conn:
                await _check_metadata(conn, name, metadata)
        session_id = uuid.uuid4()
        store_key = f"uploads/{session_id.hex}"
        upload_id = await self.blobs.create_multipart(store_key)
        at = now()
        changes = domain.open_session(
            session_id,
            folder_id,
            name,
            size,
            part_size,
            store_key,
            upload_id,
            domain.expires(at, lifetime),
            key_id,
            metadata,
        )
        try:
            envelopes = envelopes_of(changes, cause, at)
            async with self.pool.acquire() as conn, conn.transaction():
                await jobs.apply(conn, envelopes)
                await sessions.apply(conn, envelopes)
                if metadata:
                    await conn.execute(
                        "INSERT INTO ingest.session_metadata_owed (session_id) VALUES ($1)",
                        session_id,
                    )
                position = await self.store.append(conn, envelopes)
                row = await self._row(conn, session_id)
        except BaseException:
            # Not recorded: no session row names the store's upload, so no sweep would.
            with contextlib.suppress(Exception):
                await self.blobs.abort_multipart(store_key, upload_id)
            raise
        assert row is not None
        return self._view(row, []), position

    async def put_part(
        self,
        session_id: uuid.UUID,
        number: int,
        expires: int,
        signature: str,
        chunks: AsyncIterable[bytes],
        opener: domain.Opener | None = None,
        opened_by: str | None = None,
    ) -> dict[str, Any]:
        """A part sent to our own URL (the local store): the signature is the right,
        while its opener keeps theirs (`domain.check_opener`), as the ACL context and
        the catalog say now (`openers.Openers`; `opener` only where there are none).
        `opened_by`, the opener's id the URL names, is signed with the rest; a URL
        naming none is of the version before."""
        if opened_by is not None:
            valid = self.parts.identity.upload_part_allowed(
                str(session_id), number, expires, opened_by, signature
            )
        else:
            wanted = _signature(self._signing_key, session_id, number, expires)
            # Compared as bytes: a signature of any text is refused, never an error.
            given = signature.encode("utf-8", "surrogatepass")
            valid = hmac.compare_digest(wanted.encode(), given) and expires >= time.time()
        if not valid:
            raise Refused(403, "invalid_part_url", "this part URL is not valid or has expired")
        async with self.pool.acquire() as conn, conn.transaction():
            # Held as a completion holds it to stamp it: none takes a part once one
            # has begun, which reads the parts' bytes (see LocalBlobStore._join).
            row = await self._row(conn, session_id, " FOR SHARE")
            completing = row is not None and await conn.fetchval(
                f"SELECT NOT {NOT_COMPLETING} FROM (SELECT $2::uuid AS id) s",
                COMPLETING_KEPT,
                session_id,
            )
        if row is None or row["status"] != "open":
            raise Refused(404, "not_found", f"upload session {session_id} is not open")
        if completing:
            raise Refused(
                409,
                "session_completing",
                f"upload session {session_id} is being completed: it takes no more parts",
            )
        if self.openers is not None and row["key_id"] is not None:
            # Asked here, from the row just read, rather than by the gateway, which had to
            # ask us for the row first: two calls a part, not three.
            try:
                opener = await self.openers.of(row)
            except Unanswered:
                raise Refused(
                    503, "unavailable", "the access service did not answer; try again"
                ) from None
        domain.check_opener(row, opener)
        if not 1 <= number <= row["parts"]:
            raise Refused(
                422, "invalid_part", f"this session has parts 1 to {row['parts']}", {"part": number}
            )
        expected = domain.plan(row["size"], row["part_size"])[number - 1].size
        try:
            etag = await self.blobs.put_part(
                row["store_key"], row["upload_id"], number, domain.at_most(chunks, expected, number)
            )
        except (FileNotFoundError, UnknownUpload):
            # The session's parts went while this one streamed (aborted, expired, or
            # assembled by a completion).
            raise Refused(404, "not_found", f"upload session {session_id} is not open") from None
        except OSError as error:
            log.error("ingest.part_store_failed", error=repr(error))
            raise storage_failed(error) from error
        return {"part": number, "etag": etag}

    async def state(self, session_id: uuid.UUID, actor: str | None = None) -> dict[str, Any] | None:
        """The session as `actor` may see it: its part URLs (the right to send its bytes,
        valid hours after a part is stored) are its opener's alone."""
        row = await self._row(self.pool, session_id)
        if row is None:
            return None
        urls = actor is None or actor == row["created_by"]
        if row["status"] != "open":
            return self._view(row, [], urls=urls)
        stored = await self._stored_now(row)
        return self._view(row, stored or [], known=stored is not None, urls=urls)

    async def bytes_progress(self, session_id: uuid.UUID) -> dict[str, int]:
        """Bytes of the file in the store so far, of its size."""
        row = await self._row(self.pool, session_id)
        if row is None:
            return {"done": 0, "total": 0}
        if row["status"] == "completed":
            return {"done": row["size"], "total": row["size"]}
        if row["status"] != "open":
            return {"done": 0, "total": row["size"]}
        stored = await self._stored_now(row)
        if stored is None:
            return {"done": 0, "total": row["size"], "known": False}
        return {"done": self._view(row, stored)["bytes_stored"], "total": row["size"]}

    async def complete(
        self, cause: Cause, session_id: uuid.UUID, opener: domain.Opener | None = None
    ) -> tuple[dict[str, Any], int]:
        """Assemble the parts, read the file once, copy it under its content key, and
        register it, while its opener keeps their right (`domain.check_opener`). No
        database connection is held while the store is waited on (a hung store, up to
        30 s a call, would hold one per completion and starve ingest's other routes):
        the session is read, then assembled, read and copied with none, its content key
        claimed before the copy (collector/claims.py, as an upload's blobs), then
        recorded in a transaction holding the session, which checks it is still open:
        of two completions at once both may assemble, read and copy the same bytes, and
        the second to record finds the session completed (409). Its metadata is checked
        against the schema as it is now (it may have changed since the session opened):
        a 422 leaves the session open, to abort or complete once the schema takes it."""
        async with self.pool.acquire() as conn:
            row = await self._open(conn, session_id, lock=False)
            domain.check_opener(row, opener)
            metadata = row["metadata"] or {}
            if metadata:
                # Before the file is assembled and read (minutes for a large one), so a
                # refusal comes at once; not held while it is read.
                await _check_metadata(conn, row["name"], metadata, held=False)
        # Expiry leaves it be from now (the row is not held while the parts are
        # assembled, read and copied, and expiry would delete them under this); a
        # session past its time is not begun (else completing it again and again, each
        # refused, would keep it from expiring).
        async with self.pool.acquire() as conn, conn.transaction():
            held = await self._open(conn, session_id, lock=True)
            if held["expires_at"] <= now():
                raise Refused(
                    409,
                    "session_ended",
                    f"upload session {session_id} has expired",
                    {"status": "expired"},
                )
            stamped = await conn.fetchval(
                "INSERT INTO ingest.sessions_completing (session_id, since)"
                " VALUES ($1, clock_timestamp()) ON CONFLICT (session_id)"
                " DO UPDATE SET since = clock_timestamp() RETURNING since",
                session_id,
            )
        try:
            return await self._completed(cause, session_id, opener, row, metadata)
        except BaseException:
            # Not recorded: its stamp goes, unless a completion alongside stamped since.
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "DELETE FROM ingest.sessions_completing WHERE session_id = $1 AND since = $2",
                    session_id,
                    stamped,
                )
            raise

    async def _completed(
        self,
        cause: Cause,
        session_id: uuid.UUID,
        opener: domain.Opener | None,
        row: asyncpg.Record,
        metadata: dict[str, Any],
    ) -> tuple[dict[str, Any], int]:
        """`complete` once begun (stamped): assembled, read, copied, recorded."""
        plan = domain.plan(row["size"], row["part_size"])
        try:
            stored, assembled = await self._stored(row)
        except OSError as error:  # the local store's assembly alongside, not done yet
            await self._check_open(session_id)
            raise storage_failed(error) from error
        try:
            domain.check_complete(plan, stored)
        except Refused:
            # Or a completion alongside recorded the file and deleted its object since
            # the session was read: that one's answer (409 `session_ended`) comes first.
            await self._check_open(session_id)
            raise
        # Noted before the store assembles the object, in a statement of its own, and
        # dated anew until this ends: one that dies or is cancelled before it records
        # leaves the note, and once its session has ended the reclaimer deletes the
        # object (`_note_assemblies_gone`), which nothing else would note again (the
        # end's note may be done before the store put it there).
        assembly = uuid.uuid4()
        await self.pool.execute(
            "INSERT INTO ingest.session_assemblies (holder, session_id) VALUES ($1, $2)",
            assembly,
            session_id,
        )
        renewing = asyncio.ensure_future(self._keep_assembly(assembly))
        try:
            return await self._recorded(
                cause, session_id, opener, row, metadata, stored, assembled, assembly
            )
        finally:
            renewing.cancel()

    async def _recorded(
        self,
        cause: Cause,
        session_id: uuid.UUID,
        opener: domain.Opener | None,
        row: asyncpg.Record,
        metadata: dict[str, Any],
        stored: list[domain.StoredPart],
        assembled: bool,
        assembly: uuid.UUID,
    ) -> tuple[dict[str, Any], int]:
        """`_completed` once its assembly is noted: assembled, read, copied, recorded,
        the note forgotten in the transaction that records (or refuses) it."""
        key = row["store_key"]
        try:
            if not assembled:
                await self._join(row, stored)
            file = await self._read(key, row)
        except UnknownUpload:
            # Ended in the store between its listing and now (a bucket's lifecycle
            # rule): its parts are gone, and the session ends as an expired one does
            # (a client would otherwise resume it, part after refused part).
            await self._end_open(cause, session_id, "expired")
            raise Refused(
                409,
                "session_lost",
                f"the store no longer has the parts of upload session {session_id}:"
                " open a new session and send the file again",
            ) from None
        except Refused:
            # The assembled object is no file we take: it goes, and the session ends.
            await self.blobs.delete(key)
            await self._end_open(cause, session_id, "rejected")
            raise
        except OSError as error:
            # The local store writes the file whole from its parts (its disk may be
            # full), then it is read back; or a completion alongside recorded the file
            # and deleted the object this one was reading. Still open, the session keeps
            # its parts or its assembled object: completing again may do.
            await self._check_open(session_id)
            log.error("ingest.session_join_failed", error=repr(error))
            raise storage_failed(error) from error
        holder = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            await claims.claim(conn, [file.blob_key], holder, now())
        try:
            # A copy: the assembled object stays where completing again finds it until
            # this is recorded (then it goes, below). Its claim is dated anew while it
            # goes on (a file of terabytes: hours). Failed, the claim stays until the
            # collector drops it and reclaims what the copy left.
            await claims.kept_while(
                self.pool, [file.blob_key], holder, self.blobs.copy(key, file.blob_key)
            )
        except OSError as error:
            # Or ended meanwhile (aborted, expired, another completion recorded it and
            # deleted the object copied from): that answer (409) first.
            await self._check_open(session_id)
            log.error("ingest.session_store_failed", error=repr(error))
            raise storage_failed(error) from error
        rejected: Refused | None = None
        noted = False
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM ingest.session_assemblies WHERE holder = $1", assembly)
            await claim_blobs(conn, [file.blob_key])
            if not await claims.settle(conn, [file.blob_key], holder):
                log.error("ingest.blob_claims_reclaimed", blobs=1)
                raise claims.refused()
            try:
                row = await self._open(conn, session_id, lock=True)
                domain.check_opener(row, opener)
                if metadata:
                    # Again, now held (FOR SHARE) until the commit that records the
                    # file; after the copy (minutes on S3 for a large file), which the
                    # schema's changes must not wait for.
                    await _check_metadata(conn, row["name"], metadata)
            except Refused as refusal:
                # Ended meanwhile (another completion, its expiry, its opener's right
                # gone), or its metadata no longer taken: the copy, dated now, is
                # reclaimed after the collector's grace unless a file refers to it.
                await claim_blobs(conn, [file.blob_key], now())
                noted = await self._note_again(conn, session_id)
                rejected = refusal
            else:
                changes = domain.complete_session(
                    session_id, row["folder_id"], row["version"], file, metadata
                )
                envelopes = envelopes_of(changes, cause)
                await jobs.apply(conn, envelopes)
                await sessions.apply(conn, envelopes)
                await blob_refs.apply(conn, envelopes)
                await conn.execute(
                    "INSERT INTO ingest.session_objects_left (session_id, store_key)"
                    " VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    session_id,
                    key,
                )
                await self._forget_completing(conn, session_id)
                if metadata:  # carried by the event that stores the file
                    await conn.execute(
                        "DELETE FROM ingest.session_metadata_owed WHERE session_id = $1",
                        session_id,
                    )
                position = await self.store.append(conn, envelopes)
        if rejected is not None:
            if noted:  # once the note has committed (unkeyed, the hook runs at once)
                idempotency.after_commit(self.reclaim_soon)
            raise rejected
        try:
            await self.blobs.delete(key)
            await self._forget_left([session_id])
        except Exception as error:  # recorded already: the sweep deletes it later
            log.warning("ingest.session_object_left", key=key, error=repr(error))
        return {"job_id": str(session_id), "file_id": str(file.file_id)}, position

    async def _keep_assembly(self, assembly: uuid.UUID) -> None:
        """A completion's note of its assembly dated anew every `ASSEMBLY_RENEW` while it
        goes on (cancelled once it ends), so the reclaimer does not take it for gone."""
        while True:
            await asyncio.sleep(ASSEMBLY_RENEW.total_seconds())  # a schedule
            try:
                await self.pool.execute(
                    "UPDATE ingest.session_assemblies SET alive = clock_timestamp()"
                    " WHERE holder = $1",
                    assembly,
                )
            # InterfaceError: the pool closing as the replica drains; the next one may do.
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("ingest.session_assembly_not_renewed", error=repr(error))

    async def _join(self, row: asyncpg.Record, stored: list[domain.StoredPart]) -> None:
        """The session's parts assembled in the store into its object."""
        try:
            await self.blobs.complete_multipart(
                row["store_key"],
                row["upload_id"],
                [(p.number, p.etag) for p in sorted(stored, key=_number)],
            )
        except (UnknownUpload, OSError):
            # Assembled by a completion alongside, since the listing: the local store
            # finds the parts folder gone once it opens a part that one's assembly
            # deleted (it moves the object into place first); a store may fail the
            # second of two assemblies at once.
            if not await self._assembled(row):
                raise

    async def _check_open(self, session_id: uuid.UUID) -> None:
        """409 if the session ended since it was read (`_open`'s refusal), its store's
        side noted again first (`_note_again`)."""
        async with self.pool.acquire() as conn:
            if await self._note_again(conn, session_id):
                idempotency.after_commit(self.reclaim_soon)
        async with self.pool.acquire() as conn:
            await self._open(conn, session_id, lock=False)

    async def _note_again(self, conn: Conn, session_id: uuid.UUID) -> bool:
        """A completion that finds its session ended (aborted, expired, its opener's
        right gone while it assembled, read or copied) notes its store's side again,
        for the reclaimer: the end's note may have been done before the assembly put
        the object in place (a store's assembly of a huge file, the local store's join),
        which would stay for good. Done twice, it costs requests only; an open session
        (a refusal that leaves it open) is not noted. Whether it noted: the caller wakes
        the reclaimer once `conn`'s transaction has committed (`idempotency.after_commit`
        runs its hook at once outside a keyed request)."""
        noted = await conn.fetchval(
            """INSERT INTO ingest.session_uploads_left (session_id, store_key, upload_id)
               SELECT id, store_key, upload_id FROM ingest.sessions
               WHERE id = $1 AND status <> 'open'
               ON CONFLICT (session_id) DO UPDATE SET due = clock_timestamp()
               RETURNING true""",
            session_id,
        )
        return bool(noted)

    async def _end_open(self, cause: Cause, session_id: uuid.UUID, status: str) -> None:
        """A session whose parts are gone ended as `status`, if nothing ended it since it
        was read (then `_open`'s 409)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._open(conn, session_id, lock=True)
            await self._end(conn, cause, row, status, parts_gone=True)

    async def folder_of(self, session_id: uuid.UUID) -> uuid.UUID:
        """The folder a session adds its file to (it never changes); 404 if none."""
        row = await self._row(self.pool, session_id)
        if row is None:
            raise Refused(404, "not_found", f"upload session {session_id} does not exist")
        folder_id: uuid.UUID = row["folder_id"]
        return folder_id

    async def abort(self, cause: Cause, session_id: uuid.UUID) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._open(conn, session_id, lock=True)
            position = await self._end(conn, cause, row, "aborted")
        # Once committed: a keyed abort's transaction commits with its answer, after this.
        idempotency.after_commit(self.reclaim_soon)
        return position

    async def cancel(self, conn: Conn, cause: Cause, session_id: uuid.UUID) -> int:
        """The session's job cancelled (jobs/handlers.py): ended as an abort ends it, in
        the caller's transaction (which has `reclaim_soon` called once that has committed:
        `idempotency.after_commit`); 409 if it ended first."""
        row = await self._open(conn, session_id, lock=True)
        return await self._end(conn, cause, row, "cancelled")

    async def end_opened_with(self, conn: Conn, cause: Cause, key_id: uuid.UUID) -> int:
        """Abort the open sessions a key opened."""
        opened = "SELECT id FROM ingest.sessions WHERE status = 'open' AND key_id = $1 ORDER BY id"
        return await self.end_open(conn, cause, [r["id"] for r in await conn.fetch(opened, key_id)])

    async def opened_by(self, conn: Conn, users: list[str]) -> list[asyncpg.Record]:
        """The open sessions these users opened with a key (one opened before keys were
        recorded is left to its signature: `domain.check_opener`), as the check reads them."""
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT id, folder_id, created_by, key_id FROM ingest.sessions"
            " WHERE status = 'open' AND created_by = ANY($1::text[]) AND key_id IS NOT NULL"
            " ORDER BY id",
            users,
        )
        return rows

    async def end_open(self, conn: Conn, cause: Cause, session_ids: list[uuid.UUID]) -> int:
        """Abort those of these sessions still open (locked as a completion locks them,
        in order): ended already, by a completion or an earlier delivery, is no error."""
        ended = 0
        for session_id in sorted(session_ids):
            row = await self._row(conn, session_id, " FOR UPDATE")
            if row is not None and row["status"] == "open":
                await self._end(conn, cause, row, "aborted")
                ended += 1
        return ended

    async def expire(self) -> int:
        """End the sessions past their time; the reclaimer deletes their parts after."""
        cause = Cause(actor="system:upload-sessions", correlation_id=str(uuid.uuid4()))
        ended = 0
        async with self.pool.acquire() as conn:
            for session_id in await conn.fetch(
                "SELECT id FROM ingest.sessions s WHERE status = 'open' AND expires_at < now()"
                f" AND {NOT_COMPLETING} ORDER BY expires_at LIMIT 1000",
                COMPLETING_KEPT,
            ):
                async with conn.transaction():
                    # Skipped if a completion holds it, or one began lately (it holds
                    # the row only as it records, and expiry would delete the parts it
                    # is assembling); ended only if still open.
                    fresh = await conn.fetchval(
                        "SELECT id FROM ingest.sessions s WHERE id = $2 AND status = 'open'"
                        f" AND {NOT_COMPLETING} FOR UPDATE SKIP LOCKED",
                        COMPLETING_KEPT,
                        session_id["id"],
                    )
                    # Again, in a snapshot of its own: a completion's stamp committed
                    # after the statement above began was not in its snapshot.
                    if fresh and not await conn.fetchval(
                        f"SELECT {NOT_COMPLETING} FROM (SELECT $2::uuid AS id) s",
                        COMPLETING_KEPT,
                        fresh,
                    ):
                        fresh = None
                    row = await self._row(conn, fresh) if fresh else None
                    if row is not None:
                        await self._end(conn, cause, row, "expired")
                        ended += 1
        if ended:
            self.reclaim_soon()
        return ended

    async def restore_metadata(self) -> int:
        """Give the files of sessions completed without their metadata (by an older
        replica) their metadata, a thousand at most a round; forget what is owed to
        sessions that ended without a file. Each in its own transaction, the row locked
        (another replica's sweep skips it), recorded and forgotten at once: killed in
        between, the next round does it, never twice."""
        cause = Cause(actor="system:upload-sessions", correlation_id=str(uuid.uuid4()))
        restored = 0
        async with self.pool.acquire() as conn:
            await conn.execute(
                """DELETE FROM ingest.session_metadata_owed o USING ingest.sessions s
                   WHERE s.id = o.session_id AND s.status NOT IN ('open', 'completed')"""
            )
            # Completed by a replica that carried the metadata but knew nothing of the
            # note (7be07d1 and af901f3 do): owed nothing, and a restore would bring back
            # metadata an editor may have cleared since.
            await conn.execute(
                """DELETE FROM ingest.session_metadata_owed o USING ingest.sessions s
                   WHERE s.id = o.session_id AND s.status = 'completed'
                     AND EXISTS (SELECT FROM ingest.events e
                                 WHERE e.stream_id = 'upload-job-' || o.session_id::text
                                   AND e.type = 'ingest.FileContentStored'
                                   AND coalesce(e.data->'metadata', '{}'::jsonb)
                                       <> '{}'::jsonb)"""
            )
            for owed in await conn.fetch(
                """SELECT o.session_id FROM ingest.session_metadata_owed o
                   JOIN ingest.sessions s ON s.id = o.session_id
                   WHERE s.status = 'completed' ORDER BY o.session_id LIMIT 1000"""
            ):
                async with conn.transaction():
                    if not await conn.fetchval(
                        """DELETE FROM ingest.session_metadata_owed WHERE session_id = $1
                           RETURNING session_id""",
                        owed["session_id"],
                    ):
                        continue  # another replica's sweep did it
                    row = await self._row(conn, owed["session_id"])
                    assert row is not None
                    changes = domain.restore_metadata(
                        row["id"], row["version"], row["file_id"], row["metadata"] or {}
                    )
                    await self.store.append(conn, envelopes_of(changes, cause))
                    restored += 1
        return restored

    async def delete_objects_left(self) -> int:
        """Delete the assembled objects completions left behind (see the module's doc),
        a thousand at most a round."""
        rows = await self.pool.fetch(
            "SELECT session_id, store_key FROM ingest.session_objects_left"
            " WHERE since < now() - $1::interval ORDER BY since LIMIT 1000",
            LEFT_AFTER,
        )
        gate = asyncio.Semaphore(SWEEP_DELETES)

        gone: list[uuid.UUID] = []
        kept: list[uuid.UUID] = []

        async def delete(row: asyncpg.Record) -> None:
            async with gate:
                try:
                    await self.blobs.delete(row["store_key"])
                except Exception as error:  # the store away: a later round tries again
                    log.warning(
                        "ingest.session_object_left", key=row["store_key"], error=repr(error)
                    )
                    kept.append(row["session_id"])
                else:
                    gone.append(row["session_id"])

        await asyncio.gather(*(delete(r) for r in rows))
        await self._forget_left(gone)
        if kept:
            # To the back of the queue: keys the store keeps refusing do not hold up others.
            await self.pool.execute(
                "UPDATE ingest.session_objects_left SET since = now()"
                " WHERE session_id = ANY($1::uuid[])",
                kept,
            )
        return len(gone)

    async def reclaim(self) -> int:
        """The store's side of ended sessions (`ingest.session_uploads_left`), a page at
        most a round: each multipart upload aborted, then its key deleted (an object a
        completion assembled but never recorded goes with the session; S3 may still
        take an abort of a completed upload, so the abort is not a sign), no database
        connection held meanwhile. Both are the same done twice (an upload or a key
        gone is no error): a note done by two replicas at once, or again after a crash
        before it was forgotten, costs requests only. Returns the notes done."""
        await self._note_assemblies_gone()
        rows = await self.pool.fetch(
            "SELECT session_id, store_key, upload_id, due FROM ingest.session_uploads_left"
            " WHERE due <= now() ORDER BY due LIMIT $1",
            RECLAIM_PAGE,
        )
        gate = asyncio.Semaphore(SWEEP_DELETES)
        gone: list[asyncpg.Record] = []
        kept: list[asyncpg.Record] = []
        errors: list[str] = []

        async def end(row: asyncpg.Record) -> None:
            async with gate:
                try:
                    with contextlib.suppress(UnknownUpload):  # gone already: the same
                        await self.blobs.abort_multipart(row["store_key"], row["upload_id"])
                    await self.blobs.delete(row["store_key"])
                except Exception as error:  # the store away: a later round tries again
                    kept.append(row)
                    errors.append(repr(error))
                else:
                    gone.append(row)

        await asyncio.gather(*(end(r) for r in rows))
        if gone:
            # Those not noted again meanwhile (`_note_again`: a completion's assembly may
            # have put the object back after this round deleted it).
            await self.pool.execute(
                """DELETE FROM ingest.session_uploads_left l
                   USING unnest($1::uuid[], $2::timestamptz[]) AS d (session_id, due)
                   WHERE l.session_id = d.session_id AND l.due = d.due""",
                [r["session_id"] for r in gone],
                [r["due"] for r in gone],
            )
        if kept:
            # Later, and behind the others: a store refusing some keys holds up no other.
            # One line a round, not one a note: a store refusing for good is no flood.
            # Those noted again meanwhile stay due at once (as the delete above: their
            # completion's object may have come after this round's calls).
            log.warning(
                "ingest.session_uploads_left",
                refused=len(kept),
                of=len(rows),
                error=errors[0],
            )
            await self.pool.execute(
                """UPDATE ingest.session_uploads_left l
                   SET attempts = l.attempts + 1,
                       due = now() + least($3::interval * power(2, least(l.attempts, 30)),
                                           $4::interval)
                   FROM unnest($1::uuid[], $2::timestamptz[]) AS d (session_id, due)
                   WHERE l.session_id = d.session_id AND l.due = d.due""",
                [r["session_id"] for r in kept],
                [r["due"] for r in kept],
                RECLAIM_AGAIN,
                RECLAIM_AT_MOST,
            )
        if len(rows) == RECLAIM_PAGE:
            self.reclaim_soon()  # more are due
        return len(gone)

    async def _note_assemblies_gone(self) -> None:
        """The objects of completions gone before they recorded (their note not dated
        for `ASSEMBLY_KEPT`: a crash, or a cancel whose call to the store may have gone
        on), once their session has ended, noted for the reclaimer, and their notes
        forgotten, in one transaction. An open session keeps its object (completing it
        again uses it; its end notes it)."""
        await self.pool.execute(
            """WITH gone AS (
                   DELETE FROM ingest.session_assemblies a USING ingest.sessions s
                   WHERE s.id = a.session_id AND s.status <> 'open'
                     AND a.alive < now() - $1::interval
                   RETURNING s.id, s.store_key, s.upload_id)
               INSERT INTO ingest.session_uploads_left (session_id, store_key, upload_id)
               SELECT DISTINCT id, store_key, upload_id FROM gone
               ON CONFLICT (session_id) DO UPDATE SET due = clock_timestamp()""",
            ASSEMBLY_KEPT,
        )

    def reclaim_soon(self) -> None:
        """An end has committed: the reclaimer does its store's side now."""
        self._reclaim_now.set()

    async def after_batch(self) -> None:
        """The consumer's batch committed: the sessions its reactions ended (a revoked
        key's, a lowered role's) have their store's side done now."""
        if self._ended_in_batch:
            self._ended_in_batch = False
            self.reclaim_soon()

    async def reclaim_forever(self, every_s: float) -> None:
        """`reclaim` once an end has committed, and every `every_s` for what a crash
        left or the store refused."""
        while True:
            self._reclaim_now.clear()  # an end committed from here on wakes the next
            try:
                done = await self.reclaim()
                if done:
                    log.info("sessions.uploads_reclaimed", count=done)
            except Exception:
                log.error("sessions.reclaim_failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reclaim_now.wait(), every_s)

    async def _forget_left(self, session_ids: list[uuid.UUID]) -> None:
        if session_ids:
            await self.pool.execute(
                "DELETE FROM ingest.session_objects_left WHERE session_id = ANY($1::uuid[])",
                session_ids,
            )

    async def expire_forever(self, every_s: float) -> None:
        while True:
            # Each on its own: one failing every round does not stop the other.
            try:
                ended = await self.expire()
                if ended:
                    log.info("sessions.expired", count=ended)
            except Exception:
                log.error("sessions.expire_failed", exc_info=True)
            try:
                restored = await self.restore_metadata()
                if restored:
                    log.warning("sessions.metadata_restored", count=restored)
            except Exception:
                log.error("sessions.metadata_restore_failed", exc_info=True)
            try:
                deleted = await self.delete_objects_left()
                if deleted:
                    log.info("sessions.objects_left_deleted", count=deleted)
            except Exception:
                log.error("sessions.objects_left_failed", exc_info=True)
            await asyncio.sleep(every_s)  # a schedule, not a wait for a reaction

    # -- helpers ---------------------------------------------------------------------

    async def _end(
        self,
        conn: Conn,
        cause: Cause,
        row: asyncpg.Record,
        status: str,
        *,
        parts_gone: bool = False,
    ) -> int:
        if not parts_gone:
            # Done by the reclaimer once this commits (the module's doc).
            await conn.execute(
                "INSERT INTO ingest.session_uploads_left (session_id, store_key, upload_id)"
                " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                row["id"],
                row["store_key"],
                row["upload_id"],
            )
            self._ended_in_batch = True
        envelopes = envelopes_of(domain.end_session(row["id"], row["version"], status), cause)
        await jobs.apply(conn, envelopes)
        await sessions.apply(conn, envelopes)
        await self._forget_completing(conn, row["id"])
        return await self.store.append(conn, envelopes)

    async def _forget_completing(self, conn: Conn, session_id: uuid.UUID) -> None:
        """Ended: its completions' stamp goes."""
        await conn.execute(
            "DELETE FROM ingest.sessions_completing WHERE session_id = $1", session_id
        )

    async def _open(self, conn: Conn, session_id: uuid.UUID, *, lock: bool) -> asyncpg.Record:
        row = await self._row(conn, session_id, lock=" FOR UPDATE" if lock else "")
        if row is None:
            raise Refused(404, "not_found", f"upload session {session_id} does not exist")
        if row["status"] != "open":
            raise Refused(
                409,
                "session_ended",
                f"upload session {session_id} is {row['status']}",
                {"status": row["status"]},
            )
        return row

    async def _row(
        self, conn: Conn | asyncpg.Pool, session_id: uuid.UUID, lock: str = ""
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            f"""SELECT s.*, (SELECT max(stream_version) FROM ingest.events
                             WHERE stream_id = 'upload-job-' || s.id::text) AS version
                FROM ingest.sessions s WHERE s.id = $1{lock}""",
            session_id,
        )
        return row

    async def _stored(
        self, row: asyncpg.Record, paged: Callable[[], None] | None = None
    ) -> tuple[list[domain.StoredPart], bool]:
        """The parts in the store, and whether they are assembled already (`paged`: as
        the store's `list_parts`)."""
        try:
            parts = await self.blobs.list_parts(row["store_key"], row["upload_id"], paged=paged)
        except UnknownUpload:
            # Ended in the store while the session is open: a completion assembled the
            # parts and then died, or its transaction failed, before it was recorded (the
            # hash of a large file takes minutes). The whole object there: every part
            # counts as stored, and completing again goes on from it.
            if await self._assembled(row):
                plan = domain.plan(row["size"], row["part_size"])
                return [domain.StoredPart(p.number, p.size, "") for p in plan], True
            return [], False
        return [domain.StoredPart(p.part_number, p.size, p.etag) for p in parts], False

    async def _stored_now(self, row: asyncpg.Record) -> list[domain.StoredPart] | None:
        """The parts in the store for a read, or None if the store did not give a page
        of them within `PARTS_WAIT_S` (hung, or away), or not all within `PARTS_TOTAL_S`."""
        loop = asyncio.get_running_loop()
        until = loop.time() + PARTS_TOTAL_S
        try:
            async with asyncio.timeout(min(PARTS_WAIT_S, PARTS_TOTAL_S)) as bound:

                def paged() -> None:  # the store answers: the next page has as long
                    bound.reschedule(min(loop.time() + PARTS_WAIT_S, until))

                return (await self._stored(row, paged))[0]
        except (TimeoutError, OSError) as error:
            log.warning("ingest.session_parts_unknown", session=str(row["id"]), error=repr(error))
            return None

    async def _assembled(self, row: asyncpg.Record) -> bool:
        size: int = row["size"]
        try:
            return await self.blobs.size(row["store_key"]) == size
        except FileNotFoundError:
            return False

    async def _read(self, key: str, row: asyncpg.Record) -> StoredFile:
        """Hash and sniff the assembled object, reading it once; media facts by range."""
        digest = hashlib.sha256()
        head = bytearray()
        size = 0
        async for chunk in self.blobs.stream(key, 0, row["size"] - 1):
            digest.update(chunk)
            if len(head) < kinds.HEAD_SIZE:
                head += chunk[: kinds.HEAD_SIZE - len(head)]
            size += len(chunk)
        try:
            kind, mime_type = kinds.sniff(bytes(head))
        except kinds.UnknownContent as unknown:
            raise Refused(
                415,
                "unsupported_content",
                f"{row['name']!r} is not a kind of file we accept: {unknown}",
                {"name": row["name"]},
            ) from None
        facts = await asyncio.to_thread(
            media_facts.inspect, lambda off, n: self.blobs.read_at(key, off, n), size
        )
        sha = digest.hexdigest()
        return StoredFile(
            file_id=uuid.uuid4(),
            name=row["name"],
            kind=kind,
            mime_type=mime_type,
            size=size,
            sha256=sha,
            blob_key=content_key(sha),
            media=facts.media,
        )

    def _part_url(self, row: asyncpg.Record, number: int) -> str:
        url = self.blobs.presign_part(row["store_key"], row["upload_id"], number, URL_LIFETIME)
        if url is not None:
            return url
        expires = int(time.time() + URL_LIFETIME.total_seconds())
        opener = row["created_by"]
        signature = self.parts.identity.upload_part_mac(str(row["id"]), number, expires, opener)
        query = urlencode({"expires": expires, "opener": opener, "signature": signature})
        # Relative: the gateway makes it absolute with the address the client used.
        return f"/v1/uploads/{row['id']}/parts/{number}?{query}"

    def _view(
        self,
        row: asyncpg.Record,
        stored: list[domain.StoredPart],
        *,
        known: bool = True,
        urls: bool = True,
    ) -> dict[str, Any]:
        """The session as answered. Its parts not `known` (the store did not list them in
        time): none shown stored, and a URL for each (any may be missing; a part sent
        again replaces the one stored), with `parts_known: false` so that a client may
        ask again rather than send it all. Without `urls` (for any but its opener), the
        parts still missing are shown with no URL."""
        plan = domain.plan(row["size"], row["part_size"])
        gaps = set(domain.missing(plan, stored)) if row["status"] == "open" else set()
        expires_at: datetime = row["expires_at"]
        return {
            "id": str(row["id"]),
            "job_id": str(row["id"]),
            "folder_id": str(row["folder_id"]),
            "name": row["name"],
            "size": row["size"],
            "part_size": row["part_size"],
            "status": row["status"],
            "expires_at": expires_at.isoformat(),
            "file_id": str(row["file_id"]) if row["file_id"] else None,
            "metadata": row["metadata"] or {},
            "parts_known": known,
            "parts_stored": [
                {"part": p.number, "size": p.size, "etag": p.etag}
                for p in sorted(stored, key=_number)
            ],
            "bytes_stored": sum(p.size for p in stored if p.number not in gaps),
            "parts": [
                {"part": p.number, "size": p.size}
                | ({"url": self._part_url(row, p.number)} if urls else {})
                for p in plan
                if p.number in gaps
            ],
        }


def _number(part: domain.StoredPart) -> int:
    return part.number


async def _check_metadata(
    conn: Conn, name: str, metadata: dict[str, Any], *, held: bool = True
) -> None:
    """The file's metadata against the schema, refused as an upload's would be."""
    check_metadata(await current_schema(conn, held=held), {name: metadata})
