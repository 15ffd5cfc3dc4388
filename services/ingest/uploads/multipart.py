"""A multipart upload as it streams in: each `file` part written to the blob store while
its head is kept for the sniffer; other form fields (an image group's kind and name)
kept, a few KiB at most. Small files (64 KiB at most each, 8 MiB a request: the blob
store's `Held` budget) stay in memory until the commit; anything more is spooled to disk
as it comes, so a request's memory is bounded whatever its size, and so are all
requests' together (`HELD_TOTAL`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.multipart import parse_options_header

from services.ingest.media import facts as media_facts
from services.ingest.media import kinds
from services.ingest.metadata.domain import refused_files
from services.ingest.uploads.domain import (
    StoredFile,
    StoredInstance,
    check_file_name,
    sent_file_name,
)
from shared.contracts.catalog import Media
from shared.kit.blobs import BlobStore, BlobWriter, Held
from shared.kit.errors import Refused

if TYPE_CHECKING:
    # python-multipart declares its callbacks' shape for type checkers only.
    from python_multipart.multipart import MultipartCallbacks

# One upload is one transaction of events; more files go in further uploads.
MAX_FILES = 10_000
FIELD_LIMIT = 4096
# The `metadata` field (a JSON object from file name to that file's metadata): held
# whole to be parsed, so bounded; more is refused, never cut.
METADATA_FIELD = "metadata"
METADATA_FIELD_LIMIT = 4 * 1024 * 1024
# Small files (up to the store's HOLD_PER_BLOB each) stay in memory until the commit
# writes their spools in its worker thread, and are inspected from memory: at most this
# much of a request is kept so, the rest is spooled as it comes.
HELD_LIMIT = 8 * 1024 * 1024
# What a process's uploads may hold so at once, each request reserving its HELD_LIMIT
# when it starts: the requests beyond it (the 33rd at once) spool every part as it
# comes, so many concurrent uploads cannot grow ingest's memory past this.
HELD_TOTAL = 256 * 1024 * 1024
# A refusal of content lists every file part it refuses (their heads still sniffed, their
# bytes no longer stored), as one of names does each file whose name it refuses (by
# `refused_files`, as metadata's), so a client sends the rest again in one more request;
# at most this many are listed (and at most MAX_FILES parts looked at: past either, the
# rest of the body is read and dropped, not parsed).
REFUSED_LISTED = 1000
# The form fields an upload reads (the upload's metadata, an image group's kind and
# name); any other is read and dropped, so a body of many fields holds nothing.
KEPT_FIELDS = frozenset({METADATA_FIELD, "kind", "name"})
# Files' ids drawn from one read of randomness (16 bytes each): 1 KiB a read.
ID_BLOCK = 64
# A part's headers, bytes: a Content-Disposition with a long file name is a few hundred.
PART_HEAD_LIMIT = 16 * 1024
# The Content-Disposition every client we know writes for a form's field or file: read
# by one match (0.5 µs) rather than python-multipart's general parse (5 µs, a per-part
# cost of every small upload). Only values without a quote, backslash or semicolon
# match, so for these the general parse gives the same name and filename (nothing to
# unquote, no IE path, no `key*=`); anything else goes to it.
_PLAIN_DISPOSITION = re.compile(rb'form-data; name="([^"\\;]*)"(?:; filename="([^"\\;]*)")?')


def disposition(value: bytes) -> tuple[bytes, bytes | None]:
    """A part's field name and filename (None when it has none), as python-multipart's
    `parse_options_header` reads them."""
    plain = _PLAIN_DISPOSITION.fullmatch(value)
    if plain is not None:
        return plain.group(1), plain.group(2)
    _, options = parse_options_header(value)
    return options.get(b"name", b""), options.get(b"filename")


class Allowance:
    """Bytes left to reserve; taken and given back on the event loop only (a request's
    own `Held` is what its commit's threads touch)."""

    def __init__(self, total: int) -> None:
        self.left = total

    def take(self, most: int) -> int:
        taken = min(most, self.left)
        self.left -= taken
        return taken

    def give(self, taken: int) -> None:
        self.left += taken


PROCESS_HELD = Allowance(HELD_TOTAL)


@dataclass
class Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    head: bytearray = field(default_factory=bytearray)
    writer: BlobWriter | None = None
    name: str | None = None
    is_file: bool = False
    field: str = ""
    number: int = 0  # its place among the body's file parts, from 1
    # After a refusal of content: only its head is kept, to be sniffed, never stored.
    sniffed_only: bool = False


class Receiver:
    """Turns multipart callbacks into blob writes, one part at a time."""

    def __init__(self, blobs: BlobStore, *, dicom: bool = False, related: bool = False) -> None:
        self.blobs = blobs
        # DICOM parts are stored as they are: the DICOM context reads them.
        self.dicom = dicom
        # A multipart/related body (DICOMweb's STOW-RS): every part is an instance, of
        # type application/dicom, named by its place in the body.
        self.related = related
        self.instances: list[StoredInstance] = []
        self.part: Part | None = None
        self.header_field = b""
        self.header_value = b""
        self.part_head = 0
        self.stored: list[StoredFile] = []
        self.spools: list[BlobWriter] = []  # each stored file's, in the same order
        self._allowance = PROCESS_HELD
        self._reserved = self._allowance.take(HELD_LIMIT)
        self.held = Held(self._reserved)
        self.refusal: Refused | None = None
        # Each file refused for its name, its place in `part` (`end` makes them the refusal).
        self.refused_names: list[Refused] = []
        self.names_refused = 0  # all of them, listed or not
        self.writers: list[BlobWriter] = []
        self.file_parts = 0
        # Form fields other than files (an image group's kind and name), a few KiB at most.
        self.fields: dict[str, bytearray] = {}
        self._ids = b""  # randomness for the next files' ids (`_file_id`)
        self._ids_at = 0

    def callbacks(self) -> MultipartCallbacks:
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
        self.part = Part()
        self.part_head = 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        if self._head_fits(end - start):
            self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        if self._head_fits(end - start):
            self.header_value += data[start:end]

    def _head_fits(self, size: int) -> bool:
        self.part_head += size
        if self.part_head <= PART_HEAD_LIMIT:
            return True
        self.refusal = self.refusal or Refused(
            400,
            "malformed_multipart",
            f"a part's headers are larger than {PART_HEAD_LIMIT} bytes",
            {"limit": PART_HEAD_LIMIT},
        )
        return False

    def on_header_end(self) -> None:
        assert self.part is not None
        # Raw bytes: clients send file names in UTF-8, which a str here would mangle.
        self.part.headers[self.header_field.decode("latin-1").lower()] = bytes(self.header_value)
        self.header_field = self.header_value = b""

    def on_headers_finished(self) -> None:
        part = self.part
        assert part is not None
        if self.related:
            self._related_part(part)
            return
        name, filename = disposition(part.headers.get("content-disposition", b""))
        field_name = name.decode()
        part.is_file = field_name == "file"
        if not part.is_file and filename is None and field_name in KEPT_FIELDS:
            part.field = field_name
            self.fields[field_name] = bytearray()
        if part.is_file:
            self.file_parts += 1
            part.number = self.file_parts
        if part.is_file and self._refused_content():
            with contextlib.suppress(Refused):
                part.name = check_file_name(sent_file_name(filename))
            part.sniffed_only = part.name is not None
            return
        if not part.is_file or (self.refusal and not self.refused_names):
            return
        try:
            part.name = check_file_name(sent_file_name(filename))
        except Refused as refusal:
            self._refuse_name(part, refusal)
            return
        if self.refusal is None:
            self._write(part)

    def _refuse_name(self, part: Part, refusal: Refused) -> None:
        """A file's name refused: the request is, and the later files' names are still
        checked (none of their bytes stored), so the answer names every one at once."""
        self.names_refused += 1
        if len(self.refused_names) <= REFUSED_LISTED:  # one more tells there are more
            details = {**refusal.details, "part": part.number}
            self.refused_names.append(
                Refused(refusal.status, refusal.code, refusal.message, details)
            )
        self.refusal = self.refusal or self.refused_names[0]

    def end(self) -> None:
        """The body read: a refusal of names becomes one naming each file refused."""
        if self.refused_names:
            self.refusal = refused_files(self.refused_names, self.names_refused)

    def _write(self, part: Part) -> None:
        if len(self.writers) == MAX_FILES:
            self.refusal = Refused(
                413,
                "too_many_files",
                f"one upload takes at most {MAX_FILES} files; send the rest in another",
                {"limit": MAX_FILES},
            )
            return
        part.writer = self.blobs.writer(self.held)
        self.writers.append(part.writer)

    def _related_part(self, part: Part) -> None:
        if self.refusal:
            return
        number = len(self.writers) + 1
        media_type, _ = parse_options_header(part.headers.get("content-type", b""))
        if media_type != b"application/dicom":
            self.refusal = Refused(
                415,
                "unsupported_media_type",
                f"part {number} is {media_type.decode('latin-1')[:100]!r}: each part must be"
                " application/dicom (a DICOM file); metadata and bulk data parts are not taken",
                {"part": number},
            )
            return
        part.is_file, part.name = True, f"instance-{number}.dcm"
        self._write(part)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        if part is not None and part.field == METADATA_FIELD:
            held = self.fields[part.field]
            if len(held) + end - start > METADATA_FIELD_LIMIT:
                self.refusal = self.refusal or Refused(
                    413,
                    "metadata_too_large",
                    f"the 'metadata' field is larger than {METADATA_FIELD_LIMIT} bytes;"
                    " upload fewer files at once",
                    {"limit": METADATA_FIELD_LIMIT},
                )
                return
            held += data[start:end]
        elif part is not None and part.sniffed_only:
            if len(part.head) < kinds.HEAD_SIZE:
                part.head += data[start:end][: kinds.HEAD_SIZE - len(part.head)]
        elif part is not None and part.field and len(self.fields[part.field]) < FIELD_LIMIT:
            self.fields[part.field] += data[start:end][: FIELD_LIMIT - len(self.fields[part.field])]
        if part is None or part.writer is None or self.refusal:
            return
        chunk = memoryview(data)[start:end]
        if len(part.head) < kinds.HEAD_SIZE:
            part.head += chunk[: kinds.HEAD_SIZE - len(part.head)]
        part.writer.write(chunk)

    def on_part_end(self) -> None:
        part = self.part
        self.part = None
        if part is not None and part.sniffed_only:
            self._sniff_refused(part)
            return
        if part is None or part.writer is None or self.refusal:
            return
        assert part.name is not None
        if self.dicom:
            key, sha = part.writer.finish()
            self.instances.append(StoredInstance(part.name, key, sha, part.writer.size))
            return
        try:
            kind, mime_type = kinds.sniff(bytes(part.head) if part.writer.size else b"")
        except kinds.UnknownContent as unknown:
            self.refusal = Refused(
                415,
                "unsupported_content",
                f"{part.name!r} is not a kind of file we accept: {unknown}",
                {
                    "name": part.name,
                    "part": part.number,
                    "accepted": ["image", "video", "pdf", "audio", "text", "nifti"],
                    # This one and each later one refused too (the rest are taken if
                    # sent again without them).
                    "refused": [{"part": part.number, "name": part.name, "reason": str(unknown)}],
                },
            )
            return
        key, sha = part.writer.finish()
        self.stored.append(
            StoredFile(
                file_id=self._file_id(),
                name=part.name,
                kind=kind,
                mime_type=mime_type,
                size=part.writer.size,
                sha256=sha,
                blob_key=key,
                media=media_facts.NO_MEDIA,  # its facts are read next (`read_facts`)
            )
        )
        self.spools.append(part.writer)

    def _file_id(self) -> uuid.UUID:
        """A random (version 4) id, from randomness read for up to ID_BLOCK files at once:
        `uuid4()` reads it once an id, a system call that lets go of the GIL on the event
        loop (see `_SpoolNames`)."""
        if self._ids_at == len(self._ids):
            self._ids, self._ids_at = os.urandom(16 * ID_BLOCK), 0
        at, self._ids_at = self._ids_at, self._ids_at + 16
        return uuid.UUID(bytes=self._ids[at : at + 16], version=4)

    @property
    def reading_on(self) -> bool:
        """Whether the body is still parsed: until a refusal, or to list every refused
        file after a refusal of content (within REFUSED_LISTED and MAX_FILES) or of names
        (within MAX_FILES: past REFUSED_LISTED, only counted, for the message's "and N
        more")."""
        if self.refusal is None:
            return True
        if self.refused_names:
            return self.file_parts <= MAX_FILES
        return (
            self._refused_content()
            and self.file_parts <= MAX_FILES
            and not self.refusal.details.get("more_refused")
        )

    def _refused_content(self) -> bool:
        return self.refusal is not None and self.refusal.code == "unsupported_content"

    def _sniff_refused(self, part: Part) -> None:
        assert self.refusal is not None and part.name is not None
        try:
            kinds.sniff(bytes(part.head))
        except kinds.UnknownContent as unknown:
            listed = self.refusal.details["refused"]
            if len(listed) < REFUSED_LISTED:
                listed.append({"part": part.number, "name": part.name, "reason": str(unknown)})
            else:
                self.refusal.details["more_refused"] = True

    def read_facts(self) -> None:
        """Each stored file's media facts, from memory or its local spool (no round trip
        to the store); blocking, in a worker thread: a decoder may take up to its time cap."""
        with self.held.in_use():
            self.stored = [
                _with_media(stored, media_facts.inspect(spool.read_at, spool.size).media)
                for stored, spool in zip(self.stored, self.spools, strict=True)
            ]

    def cleanup(self) -> None:
        """Drop every spool not committed (after a commit, nothing is left to drop),
        and give back the request's reservation of memory (once, however often called):
        at once, or, when the request was cancelled while a worker thread still reads
        its bytes (a commit, media inspection: a thread runs on), once that thread is
        done, so all requests together never hold more than HELD_TOTAL."""
        for writer in self.writers:
            writer.abort()
        reserved, self._reserved = self._reserved, 0
        if not reserved:
            return
        allowance, loop = self._allowance, asyncio.get_running_loop()

        def give_back() -> None:  # in the worker thread, as it is done
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process ends
                loop.call_soon_threadsafe(allowance.give, reserved)

        if self.held.unused(give_back):
            allowance.give(reserved)


def _with_media(stored: StoredFile, media: Media) -> StoredFile:
    # A file without facts (text, a PDF, a header that gives none) keeps its record as it
    # is; one with facts is made again from its fields (~3 µs), not by `replace`, whose
    # look-up of the fields doubles that (~6 µs a file).
    return stored if media is stored.media else StoredFile(**{**vars(stored), "media": media})
