"""Upload commands: a multipart body streamed to the blob store (uploads/multipart.py),
then its files, a DICOM series' instances or an image group recorded in one transaction
with the blobs they refer to."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from python_multipart import MultipartParser
from python_multipart.multipart import MultipartState, parse_options_header

from services.ingest.collector import claims
from services.ingest.collector.projections import UNDATED, blob_refs, claim_blobs, claimed
from services.ingest.jobs.projections import jobs
from services.ingest.media.facts import NO_MEDIA
from services.ingest.metadata.domain import check_metadata, file_metadata
from services.ingest.metadata.schema import current as current_schema
from services.ingest.uploads.domain import (
    record_dicom_upload,
    record_image_group,
    record_upload,
)
from services.ingest.uploads.multipart import METADATA_FIELD, Receiver
from shared.contracts.catalog import Media
from shared.contracts.envelope import Cause, Envelope, envelopes_of, now
from shared.kit.blobs import BlobStore, StoreRefused
from shared.kit.errors import Refused, storage_failed
from shared.kit.logs import log
from shared.kit.service import Handlers, Parts


class Uploads(Handlers):
    def __init__(self, parts: Parts, blobs: BlobStore) -> None:
        super().__init__(parts)
        self.blobs = blobs

    async def receive(
        self,
        cause: Cause,
        folder_id: uuid.UUID,
        content_type: str,
        body: AsyncIterator[bytes],
    ) -> tuple[dict[str, Any], int]:
        """Store every part of a multipart body; all files are recorded, or none."""
        metadata: dict[str, dict[str, Any]] = {}

        def given(receiver: Receiver) -> None:
            # Before the files' facts are read: metadata refused costs no decoding.
            metadata.update(
                file_metadata(
                    receiver.fields.get(METADATA_FIELD), [f.name for f in receiver.stored]
                )
            )

        receiver = await self._receive(content_type, body, check=given)
        return await self._record(cause, folder_id, receiver, metadata)

    async def _receive(
        self,
        content_type: str,
        body: AsyncIterator[bytes],
        *,
        dicom: bool = False,
        related: bool = False,
        check: Callable[[Receiver], None] | None = None,
    ) -> Receiver:
        """Every part of a multipart body in the blob store, or a refusal; `check`, what
        is to be refused of the body as received before its files' facts are read."""
        mime, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if mime != (b"multipart/related" if related else b"multipart/form-data") or not boundary:
            raise Refused(
                415,
                "expected_multipart",
                'store instances as multipart/related; type="application/dicom", one'
                " instance a part"
                if related
                else "upload files as multipart/form-data with one or more 'file' parts",
            )
        receiver = Receiver(self.blobs, dicom=dicom, related=related)
        received = False
        try:
            # In the try: a boundary the parser refuses (over 256 bytes) is the body's
            # fault, and the receiver's reservation of memory is given back.
            parser = MultipartParser(boundary, receiver.callbacks())
            listing = True
            async for chunk in body:
                # After a refusal the rest is read and dropped, so the client gets the
                # answer; after a refusal of content or of names, parsed on for the heads
                # of the later files (nothing stored), so the answer lists every refused one.
                if listing and receiver.reading_on:
                    try:
                        parser.write(chunk)
                    except Exception:
                        if receiver.refusal is None:
                            raise
                        # Malformed after the refusal: it stands, listing what it has.
                        listing = False
            receiver.end()
            if receiver.refusal is None:
                parser.finalize()
                if parser.state != MultipartState.END:
                    # Cut short: its last part never ended (its bytes may be missing),
                    # so nothing of it is taken.
                    raise Refused(
                        400,
                        "malformed_multipart",
                        "the multipart body ends before its closing boundary"
                        f" (--{boundary.decode('latin-1')}--): it was cut short",
                    )
            received = receiver.refusal is None
        except Refused:
            raise
        except OSError as error:
            # Our disk, while spooling a part (python-multipart raises no OSError).
            log.error("ingest.spool_failed", error=repr(error))
            raise storage_failed(error) from error
        except Exception as error:
            raise Refused(
                400, "malformed_multipart", f"the multipart body is malformed: {error}"
            ) from error
        finally:
            # The spools of an upload received whole wait for the commit.
            if not received:
                receiver.cleanup()
        if receiver.refusal:
            raise receiver.refusal
        try:
            if check is not None:
                check(receiver)
            # Out of the try above: a spool that cannot be read is our fault, not the body's.
            await asyncio.to_thread(receiver.read_facts)
        except BaseException:
            receiver.cleanup()
            raise
        return receiver

    async def _record(
        self,
        cause: Cause,
        folder_id: uuid.UUID,
        receiver: Receiver,
        metadata: dict[str, dict[str, Any]],
    ) -> tuple[dict[str, Any], int]:
        job_id = uuid.uuid4()
        # One moment for the whole upload: it is every file's created_at, here and in the catalog.
        at = now()
        try:
            changes = record_upload(job_id, folder_id, receiver.stored, metadata)
            position = await self._store(
                receiver, envelopes_of(changes, cause, at), metadata, stored_at=at
            )
        finally:
            receiver.cleanup()
        # Ingest's account of the files, in the catalog's File shape: the gateway answers
        # with the catalog's own once it has registered them, and with this only while
        # it has not (behind, or away): a stored upload is never answered as failed, so
        # a client does not send it again. (The shape's owner is the catalog; see the
        # README's "Decisions worth knowing".)
        created_at = at.isoformat()
        files = [
            {
                "type": "file",
                "id": str(f.file_id),
                "name": f.name,
                "kind": f.kind,
                "folder_id": str(folder_id),
                "size": f.size,
                "sha256": f.sha256,
                "mime_type": f.mime_type,
                # The shared empty facts of most small files: no model dumped for them.
                "media": {} if f.media is NO_MEDIA else media_json(f.media),
                "source": {"type": "upload"},
                "metadata": metadata.get(f.name, {}),
                "created_at": created_at,
                "created_by": cause.actor,
                "datasets": [],
            }
            for f in receiver.stored
        ]
        return {"job_id": str(job_id), "files": files}, position

    async def receive_dicom(
        self,
        cause: Cause,
        folder_id: uuid.UUID,
        content_type: str,
        body: AsyncIterator[bytes],
        *,
        related: bool = False,
    ) -> tuple[dict[str, Any], int]:
        """Store every part of a DICOM upload (multipart/related: DICOMweb's STOW-RS);
        the job runs on in the DICOM context."""
        receiver = await self._receive(content_type, body, dicom=True, related=related)
        job_id = uuid.uuid4()
        try:
            _no_metadata(receiver, "a DICOM upload")
            changes = record_dicom_upload(job_id, folder_id, receiver.instances)
            position = await self._store(receiver, envelopes_of(changes, cause))
        finally:
            receiver.cleanup()
        if related:
            return {"job_id": str(job_id), "instances": len(receiver.instances)}, position
        return {"job_id": str(job_id)}, position

    async def receive_image_group(
        self,
        cause: Cause,
        folder_id: uuid.UUID,
        content_type: str,
        body: AsyncIterator[bytes],
    ) -> tuple[dict[str, Any], int]:
        """Store the images of a group or sequence; all are recorded as one group, or none."""
        receiver = await self._receive(content_type, body)
        fields = {k: bytes(v).decode("utf-8", "replace") for k, v in receiver.fields.items()}
        job_id, group_file_id, constituent_folder_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        kind = fields.get("kind", "")
        try:
            _no_metadata(receiver, "an image group")
            changes = record_image_group(
                job_id,
                folder_id,
                group_file_id,
                constituent_folder_id,
                kind,
                fields.get("name", ""),
                receiver.stored,
            )
            position = await self._store(receiver, envelopes_of(changes, cause))
        finally:
            receiver.cleanup()
        return {
            "job_id": str(job_id),
            "file_id": str(group_file_id),
            "folder_id": str(constituent_folder_id),
        }, position

    async def _store(
        self,
        receiver: Receiver,
        envelopes: Sequence[Envelope],
        metadata: dict[str, dict[str, Any]] | None = None,
        *,
        stored_at: datetime | None = None,
    ) -> int:
        """Put the received blobs to the store, then record their events in one
        transaction. No database connection is held while the store is waited on (a
        hung store, up to 30 s a call, would hold one per upload and starve ingest's
        other routes): the blobs are claimed first in a short transaction of their own
        (collector/claims.py), which keeps the collector off them during the put and
        lets it reclaim them if nothing is ever recorded (a crash, a failed put). The
        recording transaction claims their rows as before (the collector cannot take one
        between the check and the events) and gives up its own claims; one gone
        meanwhile (dropped by the collector: a put longer than it keeps claims; or
        forgotten by a PostgreSQL crash) refuses the upload, nothing recorded. Metadata
        given is checked before the put (a refusal costs none) and again against the
        schema held until the commit. `stored_at`: the one time
        every envelope carries, which the claim dates the blobs with."""
        keys = sorted({w.key for w in receiver.writers})
        upload = uuid.uuid4()
        async with self.pool.acquire() as conn, conn.transaction():
            if metadata:
                check_metadata(await current_schema(conn, held=False), metadata)
            await claims.claim(conn, keys, upload, stored_at or now())
        try:
            # Its claims dated anew while the put goes on (a batch of GiBs to a slow
            # store may outlast the hour the collector keeps a claim).
            await claims.kept_while(self.pool, keys, upload, self.blobs.commit(receiver.writers))
        except (OSError, StoreRefused) as error:
            # A local store's disk (held blobs are written out only now), or the object
            # store: blobs put already stay claimed until the collector reclaims them.
            log.error("ingest.blob_commit_failed", error=repr(error))
            raise storage_failed(error) from error
        async with self.pool.acquire() as conn, conn.transaction():
            if metadata:
                check_metadata(await current_schema(conn), metadata)
            await claim_blobs(conn, keys, stored_at or UNDATED)
            if not await claims.settle(conn, keys, upload):
                log.error("ingest.blob_claims_reclaimed", blobs=len(keys))
                raise claims.refused()
            await jobs.apply(conn, envelopes)
            with claimed(keys, stored_at or UNDATED):
                await blob_refs.apply(conn, envelopes)
            return await self.store.append(conn, envelopes)


def media_json(media: Media) -> dict[str, Any]:
    """`media.model_dump(exclude_none=True)`, read from its fields (numbers, text and
    tuples of numbers: what the dump gives as they are): ~0.6 µs, the dump ~3.5 µs a file
    of an upload's answer."""
    return {k: v for k, v in vars(media).items() if v is not None}


def _no_metadata(receiver: Receiver, what: str) -> None:
    """Metadata is taken per file of an upload: elsewhere it would be dropped unseen."""
    if METADATA_FIELD in receiver.fields:
        raise Refused(
            422,
            "metadata_not_taken",
            f"{what} takes no 'metadata' field; set metadata on its file once it is stored",
        )
