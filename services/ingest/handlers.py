"""Ingest commands: stream each uploaded part to the blob store while hashing and sniffing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from services.ingest import media_facts
from services.ingest.domain import media
from services.ingest.domain.uploads import (
    StoredFile,
    StoredInstance,
    check_file_name,
    record_dicom_upload,
    record_image_group,
    record_upload,
)
from services.ingest.projections import blob_refs, claim_blobs, file_ids, jobs
from shared.contracts.catalog import Media
from shared.contracts.envelope import Cause, Envelope, envelopes_of, now
from shared.kit.blobs import BlobStore, BlobWriter
from shared.kit.errors import Refused
from shared.kit.service import Handlers, Parts

# One upload is one transaction of events; more files go in further uploads.
MAX_FILES = 10_000
FIELD_LIMIT = 4096


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    head: bytearray = field(default_factory=bytearray)
    writer: BlobWriter | None = None
    name: str | None = None
    is_file: bool = False
    field: str = ""


class _Receiver:
    """Turns multipart callbacks into blob writes, one part at a time."""

    def __init__(self, blobs: BlobStore, *, dicom: bool = False) -> None:
        self.blobs = blobs
        # DICOM parts are stored as they are: the DICOM context reads them.
        self.dicom = dicom
        self.instances: list[StoredInstance] = []
        self.part: _Part | None = None
        self.header_field = b""
        self.header_value = b""
        self.stored: list[StoredFile] = []
        self.spools: list[BlobWriter] = []  # each stored file's, in the same order
        self.refusal: Refused | None = None
        self.writers: list[BlobWriter] = []
        # Form fields other than files (an image group's kind and name), a few KiB at most.
        self.fields: dict[str, bytearray] = {}

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        assert self.part is not None
        # Raw bytes: clients send file names in UTF-8, which a str here would mangle.
        self.part.headers[self.header_field.decode("latin-1").lower()] = bytes(self.header_value)
        self.header_field = self.header_value = b""

    def on_headers_finished(self) -> None:
        part = self.part
        assert part is not None
        _, options = parse_options_header(part.headers.get("content-disposition", b""))
        field_name = options.get(b"name", b"").decode()
        filename = options.get(b"filename")
        part.is_file = field_name == "file"
        if not part.is_file and filename is None:
            part.field = field_name
            self.fields[field_name] = bytearray()
        if not part.is_file or self.refusal:
            return
        try:
            part.name = check_file_name(
                filename.decode("utf-8", "replace") if filename is not None else None
            )
        except Refused as refusal:
            self.refusal = refusal
            return
        if len(self.writers) == MAX_FILES:
            self.refusal = Refused(
                413,
                "too_many_files",
                f"one upload takes at most {MAX_FILES} files; send the rest in another",
                {"limit": MAX_FILES},
            )
            return
        part.writer = self.blobs.writer()
        self.writers.append(part.writer)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part is not None and part.field and len(self.fields[part.field]) < FIELD_LIMIT:
            self.fields[part.field] += data[start:end][: FIELD_LIMIT - len(self.fields[part.field])]
        if part is None or part.writer is None or self.refusal:
            return
        chunk = memoryview(data)[start:end]
        if len(part.head) < media.HEAD_SIZE:
            part.head += chunk[: media.HEAD_SIZE - len(part.head)]
        part.writer.write(chunk)

    def on_part_end(self) -> None:
        part = self.part
        self.part = None
        if part is None or part.writer is None or self.refusal:
            return
        assert part.name is not None
        if self.dicom:
            key, sha = part.writer.finish()
            self.instances.append(StoredInstance(part.name, key, sha, part.writer.size))
            return
        try:
            kind, mime_type = media.sniff(bytes(part.head) if part.writer.size else b"")
        except media.UnknownContent as unknown:
            self.refusal = Refused(
                415,
                "unsupported_content",
                f"{part.name!r} is not a kind of file we accept: {unknown}",
                {"name": part.name, "accepted": ["image", "video", "pdf", "audio", "text"]},
            )
            return
        key, sha = part.writer.finish()
        self.stored.append(
            StoredFile(
                file_id=uuid.uuid4(),
                name=part.name,
                kind=kind,
                mime_type=mime_type,
                size=part.writer.size,
                sha256=sha,
                blob_key=key,
                media=Media(),
            )
        )
        self.spools.append(part.writer)

    def read_facts(self) -> None:
        """Each stored file's media facts, from its local spool (no round trip to the
        store); blocking, in a worker thread: a decoder may take up to its time cap."""
        self.stored = [
            replace(stored, media=media_facts.inspect(spool.read_at, spool.size).media)
            for stored, spool in zip(self.stored, self.spools, strict=True)
        ]

    def cleanup(self) -> None:
        """Drop every spool not committed (after a commit, nothing is left to drop)."""
        for writer in self.writers:
            writer.abort()


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
        receiver = await self._receive(content_type, body)
        return await self._record(cause, folder_id, receiver)

    async def _receive(
        self, content_type: str, body: AsyncIterator[bytes], *, dicom: bool = False
    ) -> _Receiver:
        """Every part of a multipart body in the blob store, or a refusal."""
        mime, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if mime != b"multipart/form-data" or not boundary:
            raise Refused(
                415,
                "expected_multipart",
                "upload files as multipart/form-data with one or more 'file' parts",
            )
        receiver = _Receiver(self.blobs, dicom=dicom)
        parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
        received = False
        try:
            async for chunk in body:
                # After a refusal the rest is read and dropped, so the client gets the answer.
                if not receiver.refusal:
                    parser.write(chunk)
            if receiver.refusal is None:
                parser.finalize()
            received = receiver.refusal is None
        except Refused:
            raise
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
            # Out of the try above: a spool that cannot be read is our fault, not the body's.
            await asyncio.to_thread(receiver.read_facts)
        except BaseException:
            receiver.cleanup()
            raise
        return receiver

    async def _record(
        self, cause: Cause, folder_id: uuid.UUID, receiver: _Receiver
    ) -> tuple[dict[str, Any], int]:
        job_id = uuid.uuid4()
        # One moment for the whole upload: it is every file's created_at, here and in the catalog.
        at = now()
        try:
            changes = record_upload(job_id, folder_id, receiver.stored)
            position = await self._store(receiver, envelopes_of(changes, cause, at))
        finally:
            receiver.cleanup()
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
                "media": f.media.model_dump(exclude_none=True),
                "source": {"type": "upload"},
                "metadata": {},
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
    ) -> tuple[dict[str, Any], int]:
        """Store every part of a DICOM upload; the job runs on in the DICOM context."""
        receiver = await self._receive(content_type, body, dicom=True)
        job_id = uuid.uuid4()
        try:
            changes = record_dicom_upload(job_id, folder_id, receiver.instances)
            position = await self._store(receiver, envelopes_of(changes, cause))
        finally:
            receiver.cleanup()
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

    async def _store(self, receiver: _Receiver, envelopes: Sequence[Envelope]) -> int:
        """Store the received blobs and record their events in one transaction, the
        blobs claimed first: the collector cannot take one between its store and the
        event that refers to it."""
        async with self.pool.acquire() as conn, conn.transaction():
            await claim_blobs(conn, sorted({w.key for w in receiver.writers}))
            await self.blobs.commit(receiver.writers)
            await jobs.apply(conn, envelopes)
            await blob_refs.apply(conn, envelopes)
            return await self.store.append(conn, envelopes)

    async def job(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM ingest.jobs WHERE id = $1", job_id)
        if row is None:
            return None
        return {
            "id": str(row["id"]),
            "kind": row["kind"],
            "folder_id": str(row["folder_id"]),
            "status": row["status"],
            "progress": {"done": row["done"], "total": row["total"]},
            "file_ids": await file_ids(self.pool, row),
            "errors": row["errors"],
            "created_at": row["created_at"].isoformat(),
            "created_by": row["created_by"],
        }
