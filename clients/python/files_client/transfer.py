"""Bytes in and out, streamed: multipart uploads of many files, upload sessions in parts
(resumable), downloads that continue where they stopped. Operations of `_core`, so
both clients share them."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import httpx
from python_multipart.multipart import MultipartParser, parse_options_header

from files_client._core import Call, Gather, NextChunk, Op, Session, Sleep, exchange, json_of
from files_client.errors import FilesError, Invalid, NotFound, Unavailable, UnsupportedContent
from files_client.names import name_problem

if os.name == "posix":
    import fcntl

MiB = 1024 * 1024
# Files at least this large go as upload sessions, in parts, straight to the store.
PARTS_FROM = 64 * MiB
# A part is read from disk in pieces of this size, never whole.
PIECE = 1 * MiB
# A multipart request carries at most this many files and about this many bytes: one
# request is all or nothing, so a broken connection costs one batch at most.
BATCH_FILES = 500
BATCH_BYTES = 256 * MiB
# The most of a request's `metadata` field ingest takes (uploads/multipart.py's
# METADATA_FIELD_LIMIT; a unit test holds the two equal): past it the request is refused
# naming no file. A batch's metadata stays within METADATA_BATCH_BYTES, below it, so
# files with large metadata (an embedding each) go in more requests.
METADATA_FIELD_LIMIT = 4 * MiB
METADATA_BATCH_BYTES = METADATA_FIELD_LIMIT - 512 * 1024
PARALLEL = 4

Progress = Callable[[int], None]
# What a download found at its destination: "kept" (the bytes were there already, not
# downloaded again), "replaced" (something else was there: downloaded again over it) or,
# when it may not write over what is there, "differs" (something else was there: left
# as it is, nothing written).
Told = Callable[[Path, str], None]


@dataclass(frozen=True)
class LocalFile:
    path: Path
    name: str
    size: int
    # Its metadata, given with the upload (checked against the metadata schema).
    metadata: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def described(self, metadata: dict[str, Any] | None) -> LocalFile:
        return self if metadata is None else replace(self, metadata=metadata)

    @classmethod
    def at(cls, path: str | os.PathLike[str], name: str | None = None) -> LocalFile:
        p = Path(path)
        st = p.stat()
        if not p.is_file():
            raise FilesError("not_a_file", f"{p} is not a file", {"path": str(p)})
        return cls(p, name or p.name, st.st_size)


def local_tree(directory: str | os.PathLike[str]) -> list[tuple[list[str], LocalFile]]:
    """Each regular file below `directory` with the subfolders it goes to: the directory
    becomes a folder of its name, each subdirectory a subfolder (as `cp -r` does; sorted;
    links to directories not followed)."""
    top = Path(directory)
    if not top.is_dir():
        raise FilesError("not_a_directory", f"{top} is not a directory", {"path": str(top)})
    base = top.resolve().name
    out: list[tuple[list[str], LocalFile]] = []
    for root, dirs, names in os.walk(top, followlinks=False):
        dirs.sort()
        rel = Path(root).relative_to(top).parts
        for name in sorted(names):
            full = Path(root) / name
            if full.is_file():
                out.append(([base, *rel], LocalFile.at(full)))
    return out


class _Counted:
    """Reports the bytes as they are read, once each (a retry sends again but does not
    count again), so progress is what was read to be sent at least once: ahead of the
    wire by at most one piece of a batch's body (`_drivers.COALESCE`)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.high = 0
        self.lock = threading.Lock()

    def advance(self, position: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            if position > self.high:
                self.progress(position - self.high)
                self.high = position


class LazyFile:
    """A file for a multipart body, opened only while it is read: a batch of hundreds of
    files holds at most one of them open. Its size is known without opening it."""

    def __init__(self, path: Path, size: int, counted: _Counted) -> None:
        self.path, self.size, self.counted = path, size, counted
        self.pos = 0
        self.handle: IO[bytes] | None = None

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence] + offset
        if self.handle is not None:
            self.handle.seek(self.pos)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        if self.handle is None:
            if self.pos >= self.size:
                return b""
            self.handle = open(self.path, "rb")  # noqa: SIM115 (closed at the end of the file)
            self.handle.seek(self.pos)
        data = self.handle.read(n)
        self.pos += len(data)
        self.counted.advance(self.pos)
        if not data or self.pos >= self.size:
            self.close()
        return data

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class FileSlice(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A part of a file as a request body: read in pieces, for either client."""

    def __init__(self, path: Path, offset: int, size: int, counted: _Counted) -> None:
        self.path, self.offset, self.size, self.counted = path, offset, size, counted

    def __iter__(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            sent = 0
            while sent < self.size:
                data = f.read(min(PIECE, self.size - sent))
                if not data:
                    raise FilesError(
                        "file_changed", f"{self.path} became shorter while it was sent"
                    )
                sent += len(data)
                self.counted.advance(sent)
                yield data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for data in self:
            yield data


def batches(files: list[LocalFile]) -> list[list[LocalFile]]:
    """The files in requests of at most BATCH_FILES files, about BATCH_BYTES bytes and
    METADATA_BATCH_BYTES of metadata (a file past either goes alone)."""
    out: list[list[LocalFile]] = []
    current: list[LocalFile] = []
    size = described = 0
    for f in files:
        # Its entry in the `metadata` field as `multipart` writes it: `"name": {...}`
        # and a separator, the length of this object.
        entry = len(json.dumps({f.name: f.metadata})) if f.metadata is not None else 0
        if current and (
            len(current) >= BATCH_FILES
            or size + f.size > BATCH_BYTES
            or described + entry > METADATA_BATCH_BYTES
        ):
            out.append(current)
            current, size, described = [], 0, 0
        current.append(f)
        size += f.size
        described += entry
    if current:
        out.append(current)
    return out


def multipart(
    files: list[LocalFile], progress: Progress | None, counters: list[_Counted] | None = None
) -> Callable[[], list[Any]]:
    # A name the platform refuses is refused here, before it is sent: HTML's form
    # encoding (httpx's) would send a control character in it as `%XX`, which the
    # platform cannot tell from those characters in a name.
    for f in files:
        if problem := name_problem(f.name, "file name"):
            raise Invalid("invalid_name", problem, {"name": f.name})
    counters = counters or [_Counted(progress) for _ in files]

    given = {f.name: f.metadata for f in files if f.metadata is not None}

    def parts() -> list[Any]:
        found: list[Any] = [
            ("file", (f.name, LazyFile(f.path, f.size, c), "application/octet-stream"))
            for f, c in zip(files, counters, strict=True)
        ]
        if given:
            found.append(("metadata", (None, json.dumps(given), "application/json")))
        return found

    return parts


@dataclass(frozen=True)
class Refusal:
    """A file the platform would not take (its bytes of no kind it accepts, its name or
    its metadata), while the others sent with it were taken: the API's code and message,
    its HTTP status (None for one the client refused itself), and the details the API
    gave of this file's refusal (`key` and `needs` of a metadata type mismatch, `part`
    and `reason` of content refused, the `upload_session_id` of a large file's)."""

    file: LocalFile
    code: str
    message: str
    status: int | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False)
    # The file's place (from 0) in the list the caller gave for its folder; `part` in
    # `details`, where the API gave one, is that place from 1 (the API's own counts
    # the files of the request it refused, which a batch sent again no longer starts with).
    index: int | None = None

    def placed(self, index: int) -> Refusal:
        said = {**self.details, "part": index + 1} if "part" in self.details else self.details
        return replace(self, index=index, details=said)


# Refusals of files by name (the first in `details.name`; each file whose metadata is
# refused in `details.refused`): a request that holds one is refused whole (ingest
# stores all of a request or nothing), so it goes again without them.
REFUSED_BY_NAME = frozenset(
    {"invalid_name", "invalid_metadata", "metadata_type_mismatch", "metadata_too_large"}
)


# The keys of an error's details that list the files refused, not of one file's refusal.
_LISTING = ("refused", "more_refused")


def _refused_in(error: FilesError, files: list[LocalFile]) -> dict[int, Refusal]:
    """The files of a batch (by place) that a refusal of content, of a name or of a
    file's metadata names, each with its own refusal; none when it names none of them
    (then the batch as a whole fails)."""
    listed = error.details.get("refused")
    entries = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    found: dict[int, Refusal] = {}
    if (error.status, error.code) == (415, "unsupported_content") and entries:
        accepted = error.details.get("accepted")
        for entry in entries:
            place = entry.get("part")
            if isinstance(place, int) and 1 <= place <= len(files):
                reason = entry.get("reason")
                message = (
                    f"{files[place - 1].name!r} is not a kind of file we accept: {reason}"
                    if reason
                    else error.message
                )
                said = {"accepted": accepted, **entry} if accepted is not None else dict(entry)
                found[place - 1] = Refusal(
                    files[place - 1], error.code, message, error.status, said
                )
    elif error.code in REFUSED_BY_NAME and entries:
        # Each file whose name or metadata is refused, listed with its own code and
        # message (an older platform lists none, naming the first only: below). A name
        # refused is listed by its place (`part`: the name given may be cut), metadata
        # by the file's name.
        for entry in entries:
            said = {k: v for k, v in entry.items() if k not in ("code", "message", "status")}
            code, why, status = entry.get("code"), entry.get("message"), entry.get("status")
            refusal = Refusal(
                files[0],
                code if isinstance(code, str) else error.code,
                why if isinstance(why, str) else error.message,
                status if isinstance(status, int) else error.status,
                said,
            )
            place = entry.get("part")
            if isinstance(place, int) and 1 <= place <= len(files):
                found[place - 1] = replace(refusal, file=files[place - 1])
                continue
            for n, f in enumerate(files):
                if f.name == entry.get("name"):
                    found[n] = replace(refusal, file=f)
    elif error.code in REFUSED_BY_NAME | {"unsupported_content"} and isinstance(
        error.details.get("name"), str
    ):
        # A name or a file's metadata refused, or a platform that names only the first
        # file refused: every file of that name in the batch goes aside (none of them is
        # taken in this run).
        said = {k: v for k, v in error.details.items() if k not in _LISTING}
        found = {
            n: Refusal(f, error.code, error.message, error.status, said)
            for n, f in enumerate(files)
            if f.name == error.details["name"]
        }
    elif error.code == "metadata_too_large" and len(files) == 1 and files[0].metadata:
        # The field as a whole, naming no file: a file whose metadata alone passes the
        # field's limit goes in a batch of its own (`batches`), so it is this one.
        found = {0: Refusal(files[0], error.code, error.message, error.status, error.details)}
    return found


def upload_batch(
    session: Session,
    folder_id: str,
    files: list[LocalFile],
    progress: Progress | None,
    *,
    keep_going: bool = False,
) -> Op[list[dict[str, Any] | Refusal]]:
    """One multipart request. With `keep_going`, a file refused for its content, its
    name or its metadata is set aside and the request sent again without it (a request
    is all or nothing), so the others are taken: each file's File, or its Refusal, in
    the order given."""
    counters = [_Counted(progress) for _ in files]
    out: dict[int, dict[str, Any] | Refusal] = {}
    left = list(range(len(files)))
    while left:
        sending = [files[n] for n in left]
        try:
            answer = yield from json_of(
                session,
                Call(
                    "POST",
                    f"/v1/folders/{folder_id}/files",
                    files=multipart(sending, progress, [counters[n] for n in left]),
                ),
            )
        except FilesError as error:
            refused = _refused_in(error, sending) if keep_going else {}
            if not refused:
                raise
            for place, refusal in refused.items():
                out[left[place]] = refusal
            left = [n for place, n in enumerate(left) if place not in refused]
            continue
        out.update(zip(left, answer["files"], strict=True))
        break
    return [out[n] for n in range(len(files))]


class Journal:
    """Where upload sessions are remembered between runs, so an interrupted upload of
    a large file continues with the parts it has not sent, and where a large file the
    platform refused is remembered, so a run again does not send all of it for the same
    refusal (a JSON file, 0600). Its keys name the file as it was (`journal_key`: size
    and modification time), so a file changed since is sent again."""

    def __init__(self, path: Path, retry_refused: bool = False) -> None:
        self.path = path
        self.retry_refused = retry_refused
        self.lock = threading.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            found = json.loads(self.path.read_text())
            return found if isinstance(found, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write(self, entries: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, self.path)

    def get(self, key: str) -> str | None:
        with self.lock:
            found = self._read().get(key)
            return found if isinstance(found, str) else None

    def put(self, key: str, session_id: str) -> None:
        self._set(key, session_id)

    def drop(self, key: str) -> None:
        with self.lock:
            entries = self._read()
            if entries.pop(key, None) is not None:
                self._write(entries)

    def refusal(self, key: str) -> tuple[str, str] | None:
        """The code and message of the platform's refusal of this file, as it is now."""
        if self.retry_refused:
            return None
        with self.lock:
            found = self._read().get(key)
        if isinstance(found, dict) and isinstance(found.get("refused"), dict):
            said = found["refused"]
            return str(said.get("code", "")), str(said.get("message", ""))
        return None

    def refused(self, key: str, code: str, message: str) -> None:
        self._set(key, {"refused": {"code": code, "message": message[:1000]}})

    def _set(self, key: str, value: Any) -> None:
        with self.lock:
            entries = self._read()
            entries[key] = value
            self._write(entries)


class Earlier:
    """The bytes of the files uploaded that an earlier run had sent: the parts of the
    upload sessions resumed, stored before this run."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n


def journal_key(session: Session, folder_id: str, f: LocalFile) -> str:
    st = f.path.stat()
    parts = [session.base_url, folder_id, str(f.path.resolve()), f.name]
    return "|".join([*parts, str(st.st_size), str(st.st_mtime_ns)])


def put_part(
    session: Session, url: str, f: LocalFile, offset: int, size: int, counted: _Counted
) -> Op[int]:
    response = yield from exchange(
        session,
        Call(
            "PUT",
            url,
            stream_body=lambda: FileSlice(f.path, offset, size, counted),
            headers={"Content-Length": str(size)},
            auth=False,
        ),
    )
    return response.status_code


# An open session read while the store did not list its parts in time (`parts_known:
# false`) shows none stored and every part to send. Resuming, it is read again up to
# this many times, the first this long after, then twice as long each time (7 s of
# waits, besides each read's up to 10 s for the listing), before every part is sent.
UNKNOWN_PARTS_READS = 3
UNKNOWN_PARTS_WAIT_S = 1.0


def session_state(session: Session, session_id: str) -> Op[dict[str, Any]]:
    """An upload session as its GET answers, its parts known if the store lists them
    within a few reads."""
    delay, reads = UNKNOWN_PARTS_WAIT_S, 0
    while True:
        state = yield from json_of(session, Call("GET", f"/v1/uploads/{session_id}"))
        assert state is not None
        if state.get("parts_known", True) or reads == UNKNOWN_PARTS_READS:
            return dict(state)
        reads += 1
        yield Sleep(delay)
        delay *= 2


def upload_in_parts(
    session: Session,
    folder_id: str,
    f: LocalFile,
    progress: Progress | None,
    *,
    journal: Journal | None = None,
    session_id: str | None = None,
    part_size: int | None = None,
    parallel: int = PARALLEL,
    earlier: Earlier | None = None,
) -> Op[dict[str, Any]]:
    """One file as an upload session: opened (or resumed: `session_id`, or the one the
    journal remembers), its missing parts PUT side by side, completed. `earlier` counts
    the bytes of a resumed session that were stored before, once it is completed."""
    key = journal_key(session, folder_id, f) if journal else ""
    said = journal.refusal(key) if journal else None
    if said is not None:
        code, message = said
        raise UnsupportedContent(
            code,
            f"{message} (refused by an earlier run, and the file has not changed since:"
            " not sent again)",
            {"refused_earlier": True},
            415,
        )
    state: dict[str, Any] | None = None
    known = session_id or (journal.get(key) if journal else None)
    if known:
        try:
            state = yield from session_state(session, known)
        except FilesError:
            state = None
        # A session opened with other metadata would store the file with that: not it.
        # Nor one opened by another (the journal is the OS user's, not the key's): its
        # missing parts come without URLs, shown to its opener only.
        if state is not None and (
            state["status"] != "open"
            or state["size"] != f.size
            or (state.get("metadata") or {}) != (f.metadata or {})
            or any(not part.get("url") for part in state["parts"])
        ):
            state = None
    if state is None:
        body: dict[str, Any] = {"name": f.name, "size": f.size}
        if part_size:
            body["part_size"] = part_size
        if f.metadata is not None:
            # Stored with the file when the session completes: never listed without it.
            body["metadata"] = f.metadata
        state = yield from json_of(
            session, Call("POST", f"/v1/folders/{folder_id}/uploads", json=body)
        )
        assert state is not None
        if journal:
            journal.put(key, state["id"])
    stored_before = int(state.get("bytes_stored") or 0)
    if progress and stored_before:
        progress(stored_before)  # parts already in the store count as sent
    part_size = int(state["part_size"])
    # Still `parts_known: false` after its reads: every part is sent. Sending again a
    # part the store has is harmless (the store keeps the last one sent, the same bytes);
    # it costs the bytes, not the file.
    ops = []
    for part in state["parts"]:
        offset = (int(part["part"]) - 1) * part_size
        ops.append(put_part(session, part["url"], f, offset, int(part["size"]), _Counted(progress)))
    try:
        yield Gather(ops, parallel)
        done = yield from json_of(session, Call("POST", f"/v1/uploads/{state['id']}/complete"))
    except FilesError as error:
        # Resumable: upload_file(..., session_id=...) sends only the parts still missing.
        error.details.setdefault("upload_session_id", state["id"])
        # A session refused at completion (no kind we accept) has ended: nothing to
        # resume, and the same bytes would be refused again.
        if journal and error.status == 415:
            journal.refused(key, error.code, error.message)
        elif error.code in ("session_ended", "session_lost") and journal:
            journal.drop(key)
        raise
    if journal:
        journal.drop(key)
    if earlier is not None and stored_before:
        earlier.add(stored_before)
    return (yield from completed_file(session, done))


# How long a completed session's file stored but not listed yet is followed.
LISTED_WITHIN_S = 60.0


def completed_file(
    session: Session, done: dict[str, Any], timeout: float | None = None
) -> Op[dict[str, Any]]:
    """A completed upload session's file. A 202 (stored, its file not listed yet: the
    catalog busy or away when the gateway read it) is followed until it is listed, for
    `timeout` seconds by the clock: the reads carry the answer's consistency token.
    Completing again would find the session ended, so this is the one way to its file.
    Still not found then (deleted since, or the catalog far behind), it is `NotFound`
    naming the file and its job, never `Unavailable`: the bytes are stored, and a caller
    retrying on `Unavailable` would upload them again. A platform unavailable while
    following is `Unavailable` naming them too."""
    if "file" in done:
        return dict(done["file"])
    named = {"file_id": done["file_id"], "job_id": done["job_id"]}
    ends = time.monotonic() + (LISTED_WITHIN_S if timeout is None else timeout)
    delay = 0.25
    while True:
        try:
            found = yield from json_of(session, Call("GET", f"/v1/files/{done['file_id']}"))
            assert found is not None
            return dict(found)
        except FilesError as error:
            if not isinstance(error, NotFound | Unavailable):
                raise
            error.details.update(named)
            if isinstance(error, Unavailable) or time.monotonic() >= ends:
                raise
        yield Sleep(delay)
        delay = min(delay * 1.5, 2.0)


def _refusable(op: Op[dict[str, Any]], f: LocalFile) -> Op[dict[str, Any] | Refusal]:
    try:
        return (yield from op)
    except FilesError as error:
        # An upload session is the one file's: a refusal of its content (at completion),
        # its name or its metadata (at opening) is that file's alone.
        if error.status != 415 and error.code not in REFUSED_BY_NAME:
            raise
        said = {k: v for k, v in error.details.items() if k not in _LISTING}
        return Refusal(f, error.code, error.message, error.status, said)


def upload_many(
    session: Session,
    work: list[tuple[str, list[LocalFile]]],
    progress: Progress | None = None,
    *,
    parallel: int = PARALLEL,
    journal: Journal | None = None,
    parts_from: int = PARTS_FROM,
    keep_going: bool = False,
    earlier: Earlier | None = None,
) -> Op[list[list[Any]]]:
    """Files into folders (`(folder id, files)` each): small ones in multipart batches,
    large ones in parts, all side by side. Each folder's files come back in the order
    given. With `keep_going`, a file refused (its content, name or metadata) comes back
    as its Refusal and the others are taken; otherwise the refusal is raised."""
    ops: list[Op[Any]] = []
    # Each request's files by their places in their folder's list: the same file given
    # twice is two places, each with its own outcome.
    slots: list[tuple[int, list[int]]] = []
    found: list[dict[int, Any]] = [{} for _ in work]
    for n, (folder_id, files) in enumerate(work):
        sending = []
        for i, f in enumerate(files):
            problem = name_problem(f.name, "file name")
            if problem is None:
                sending.append(i)
            elif keep_going:
                found[n][i] = Refusal(f, "invalid_name", problem, None, {"name": f.name})
            else:
                raise Invalid("invalid_name", problem, {"name": f.name})
        small = [i for i in sending if files[i].size < parts_from]
        for group in batches([files[i] for i in small]):
            ops.append(upload_batch(session, folder_id, group, progress, keep_going=keep_going))
            slots.append((n, small[: len(group)]))
            small = small[len(group) :]
        for i in sending:
            f = files[i]
            if f.size >= parts_from:
                op = upload_in_parts(
                    session, folder_id, f, progress, journal=journal, earlier=earlier
                )
                ops.append(_refusable(op, f) if keep_going else op)
                slots.append((n, [i]))
    results = yield Gather(ops, parallel)
    for (n, places), answer in zip(slots, results, strict=True):
        found[n].update(zip(places, answer if isinstance(answer, list) else [answer], strict=True))
    return [
        [_placed(found[n][i], i) for i in range(len(files))] for n, (_, files) in enumerate(work)
    ]


def _placed(outcome: Any, index: int) -> Any:
    return outcome.placed(index) if isinstance(outcome, Refusal) else outcome


# The most bytes a downloaded name takes (ext4, APFS: 255 of UTF-8), with the `.part`
# it is written through.
NAME_BYTES = 255 - len(".part")


def numbered(name: str, n: int, *, directory: bool = False) -> str:
    """The `n`th of a name taken (`a (2).png`, `notes (2)`), within NAME_BYTES: the stem
    gives way, never the number or the extension. A directory has no extension (a
    series named by its UID ends in `.94`)."""
    dotted = "." in name.strip(".") and not directory
    stem, dot, ext = name.rpartition(".") if dotted else (name, "", "")
    tail = f" ({n}).{ext}" if dot else f" ({n})"
    if len(tail.encode()) > 64:  # not an extension: a long name with a dot in it
        stem, tail = name, f" ({n})"
    return stem.encode()[: NAME_BYTES - len(tail.encode())].decode(errors="ignore") + tail


def _checked(file: dict[str, Any]) -> str | None:
    """The sha256 that a file's bytes are checked by, where it is its content's."""
    sha256 = file.get("sha256")
    unchecked = file.get("kind") in ("dicom_series", "image_group", "image_sequence")
    return None if unchecked or not sha256 else str(sha256)


def _names(directory: Path, name: str, *, of_directory: bool = False) -> Iterator[Path]:
    """A name, then its numbered ones (`a (2).png`, ...), in a directory."""
    yield directory / name
    for n in itertools.count(2):
        yield directory / numbered(name, n, directory=of_directory)


def _taken(path: Path) -> bool:
    """Whether a name is somebody's: there, or being written (its `.part` locked, as an
    explicit path's download writes through: a dead run's is nobody's)."""
    return os.path.lexists(path) or _being_written(path.with_name(path.name + ".part"))


def _lock(fd: int) -> bool:
    """Whether this open file is now ours alone (an exclusive lock on it, which dies
    with the process that holds it, so a crashed run's `.part` is free to resume). Only
    POSIX has one here: on Windows (msvcrt's locks are on bytes, and a file open there
    cannot be renamed) every download takes it."""
    if os.name != "posix":
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _being_written(part: Path) -> bool:
    """Whether a download is writing a `.part` now (holds its lock); on Windows, whether
    it is there."""
    if os.name != "posix":
        return os.path.lexists(part)
    try:
        # Not blocking on a FIFO of that name: only a regular file has a download.
        fd = os.open(part, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return not _lock(fd)
    finally:
        os.close(fd)


def _same(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open at `fd` (not unlinked or replaced since
    it was opened)."""
    try:
        now, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


@contextmanager
def _writing(part: Path) -> Iterator[IO[bytes]]:
    """`part` open for this download alone, locked until it is closed (after the bytes
    take their name): another download of it meanwhile, in this process or another, is
    `download_busy` rather than appending to it."""
    while True:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        try:
            if not _lock(fd):
                raise FilesError(
                    "download_busy", f"{part}: another download of this file is writing it"
                )
            # Locked after its download took it and unlinked it: a new `.part` then.
            if os.name != "posix" or _same(fd, part):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    with os.fdopen(fd, "r+b") as out:
        yield out


def _named(out: IO[bytes]) -> None:
    """Ready for its `.part` to take its name: written, and on Windows closed (a file
    open there cannot be renamed), the name taken unlocked."""
    out.flush()
    if os.name != "posix":
        out.close()


def _drop_stale(part: Path) -> None:
    """A `.part` no download is writing, removed (its file is there whole)."""
    if os.name != "posix":
        with contextlib.suppress(OSError):  # open in another download: not removable
            part.unlink()
        return
    try:
        # Not blocking on a FIFO of that name: only a regular file has a download.
        fd = os.open(part, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        if _lock(fd) and _same(fd, part):
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
    finally:
        os.close(fd)


def part_of(directory: Path, name: str, file_id: str) -> Path:
    """The `.part` a file downloaded into a directory is written through: hidden, named
    by the file's id, so that a download of another file of that name (side by side, or
    after this one stopped) never writes into it nor resumes from it."""
    tail = "." + re.sub(r"[^A-Za-z0-9_-]", "_", file_id)[:64] + ".part"
    room = 255 - 1 - len(tail.encode())
    return directory / ("." + name.encode()[:room].decode(errors="ignore") + tail)


def download_into(
    session: Session,
    file: dict[str, Any],
    directory: Path,
    name: str,
    progress: Progress | None = None,
) -> Op[Path]:
    """A file downloaded into a directory, as `files download` places a folder's files:
    under its name, unless other bytes hold it (or another download is writing it); then
    the first numbered name (`a (2).png`) that is free or holds this file (a run again
    keeps it). Its bytes go through its own `.part` (`part_of`: a download that stopped
    goes on there) and take a name only where none is there when it is done: two
    downloads of same-named files side by side get two names, never each other's bytes.
    Bytes are known by the file's sha256 where it is its content's; a DICOM series is a
    directory, taken when it is empty or holds only that series' instances."""
    if file.get("kind") == "dicom_series":
        dest = yield from _series_place(session, file, directory, name)
        return (yield from dicom_series(session, file, dest, progress))
    directory.mkdir(parents=True, exist_ok=True)
    size, sha256 = int(file["size"]), _checked(file)
    part = part_of(directory, name, str(file["id"]))
    for candidate in _names(directory, name):
        if sha256 and _holds(candidate, size, sha256):
            # A run that stopped before, its file got since (or it died between
            # taking the name and removing its `.part`): nothing will resume it.
            _drop_stale(part)
            if progress:
                progress(size)
            return candidate
        if not _taken(candidate):
            break
    with _writing(part) as out:
        yield from _receive(session, file, part, out, progress)
        _named(out)
        for candidate in _names(directory, name):
            if _being_written(candidate.with_name(candidate.name + ".part")):
                continue
            try:
                _claim(part, candidate)
            except FileExistsError:
                if not (sha256 and _holds(candidate, size, sha256)):
                    continue
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            return candidate
    raise AssertionError("unreachable: the names never run out")


def _claim(part: Path, dest: Path) -> None:
    """`part`'s bytes under `dest` only if no name `dest` is there (FileExistsError
    otherwise): a hard link, which never writes over; where the disk has none (FAT, some
    network shares), `dest` made empty with O_EXCL (ours, then) and `part` moved onto
    it."""
    try:
        os.link(part, dest)
    except FileExistsError:
        raise
    except OSError:
        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            os.replace(part, dest)
        except OSError:
            dest.unlink()
            raise


def _series_place(session: Session, file: dict[str, Any], directory: Path, name: str) -> Op[Path]:
    """Where a DICOM series goes in a directory: the first of its names that is not
    there, or is a directory empty or holding only this series' instances (an earlier
    run's); a directory of other files (another series of that name) is numbered past."""
    url = _series_url(file)
    uids: set[str] | None = None
    directory.mkdir(parents=True, exist_ok=True)
    for candidate in _names(directory, name, of_directory=True):
        try:
            candidate.mkdir()  # made here: ours, not another run's that looked too
            return candidate
        except FileExistsError:
            pass
        try:
            there = {p.name for p in candidate.iterdir()} if candidate.is_dir() else None
        except OSError:
            there = None
        if there is None:
            continue
        mine = {n for n in there if not _INSTANCE_PART.fullmatch(n)}
        if mine and uids is None:
            uids = {f"{uid}.dcm" for uid in (yield from _series_uids(session, url))}
        if not mine - (uids or set()):
            return candidate
    raise AssertionError("unreachable: the names never run out")


def _holds(path: Path, size: int, sha256: str) -> bool:
    """Whether a regular file at `path` has these bytes (its size, then its sha256)."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
        return sha256_of(path) == sha256
    except OSError:
        return False


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(PIECE):
            digest.update(data)
    return digest.hexdigest()


# -- downloads -------------------------------------------------------------------------


def content(
    session: Session, file_id: str, offset: int = 0, rendition: str | None = None
) -> Op[httpx.Response]:
    """The streamed answer of a file's content (following a redirect to a bucket)."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    params = {"rendition": rendition} if rendition else None
    response = yield from exchange(
        session,
        Call("GET", f"/v1/files/{file_id}/content", headers=headers, params=params, stream=True),
    )
    if response.status_code in (301, 302, 303, 307, 308):
        location = response.headers["location"]
        yield from _drain(response)
        response = yield from exchange(
            session, Call("GET", location, headers=headers, stream=True, auth=False)
        )
    return response


def _drain(response: httpx.Response) -> Op[None]:
    while (yield NextChunk(response)):
        pass


def download(
    session: Session,
    file: dict[str, Any],
    dest: Path,
    progress: Progress | None = None,
    told: Told | None = None,
    *,
    overwrite: bool = True,
) -> Op[Path]:
    """A file's bytes into `dest`, through `<dest>.part`: a download that stopped (in an
    earlier run, or a broken connection now) goes on from where it was (HTTP Range). The
    sha256 is checked where it is the content's; a `dest` that holds those bytes already
    (a run again after an interruption) is left as it is, not downloaded again, and
    `told` hears "kept" (or "replaced" when other bytes were there). Without `overwrite`,
    a `dest` holding other bytes is left as it is, nothing written, and `told` hears
    "differs". A DICOM series is a directory of its instances (`dicom_series`)."""
    if file.get("kind") == "dicom_series":
        return (yield from dicom_series(session, file, dest, progress, told, overwrite=overwrite))
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    size, sha256 = int(file["size"]), _checked(file)
    if sha256 and _holds(dest, size, sha256):
        if progress:
            progress(size)
        if told:
            told(dest, "kept")
        return dest
    # A link there, even one to nothing, is something there: never followed to nothing
    # and replaced silently.
    if sha256 and not overwrite and os.path.lexists(dest):
        return _differs(dest, size, progress, told)
    with _writing(part) as out:
        there = os.path.lexists(dest)
        yield from _receive(session, file, part, out, progress)
        _named(out)
        # An image group's content is not checked by its sha256: what came is compared
        # with what is there.
        came = (size, sha256) if sha256 else (part.stat().st_size, sha256_of(part))
        if not sha256 and there and _holds(dest, *came):
            return _drop(part, dest, told, "kept")
        if not overwrite:
            # What is there now, made while the bytes came, is not written over either:
            # the name is taken only where none is (a link, never a replace).
            try:
                _claim(part, dest)
            except FileExistsError:
                return _drop(part, dest, told, "kept" if _holds(dest, *came) else "differs")
            return _drop(part, dest, None, "")
        if told and there:
            told(dest, "replaced")
        os.replace(part, dest)
    return dest


def _drop(part: Path, dest: Path, told: Told | None, what: str) -> Path:
    """A download's `.part` removed, done with (its bytes `dest`'s, or not wanted), and
    what it found there said."""
    with contextlib.suppress(FileNotFoundError):  # moved onto `dest` (`_claim`)
        part.unlink()
    if told:
        told(dest, what)
    return dest


def _differs(dest: Path, size: int, progress: Progress | None, told: Told | None) -> Path:
    """`dest` holds something else, not to be written over: left as it is, and said."""
    if progress:
        progress(size)
    if told:
        told(dest, "differs")
    return dest


def _receive(
    session: Session,
    file: dict[str, Any],
    part: Path,
    out: IO[bytes],
    progress: Progress | None,
) -> Op[None]:
    """A file's bytes into `part`, open as `out` for this download alone, going on from
    what it holds (HTTP Range), the sha256 checked where it is the content's (a `part`
    that fails it is removed)."""
    size = int(file["size"])
    have = os.fstat(out.fileno()).st_size
    if have > size:
        have = 0
    digest = hashlib.sha256()
    out.seek(0)
    while out.tell() < have and (data := out.read(min(PIECE, have - out.tell()))):
        digest.update(data)
    out.truncate(have)
    if have and progress:
        progress(have)
    # A `.part` whole already (its run stopped before taking the name) needs no request.
    broken, asked = 0, bool(have)
    while have < size or not asked:
        response = yield from content(session, file["id"], have)
        asked = True
        if response.status_code != 206 and have:
            if progress:
                progress(-have)  # sent whole again: counted again from the start
            have, digest = 0, hashlib.sha256()
        out.seek(have)
        out.truncate(have)
        try:
            while data := (yield NextChunk(response)):
                out.write(data)
                digest.update(data)
                have += len(data)
                if progress:
                    progress(len(data))
        except httpx.TransportError:
            broken += 1
            if broken >= session.retries.attempts:
                raise
            yield Sleep(session.retries.delay(broken))
            continue
        break
    sha256 = _checked(file)
    if sha256 and digest.hexdigest() != sha256:
        out.truncate(0)
        with contextlib.suppress(OSError):
            part.unlink()
        raise FilesError(
            "checksum_mismatch",
            f"{file.get('name')}: the bytes received do not match the file's sha256",
            {"file_id": file["id"]},
        )


_UID = re.compile(r"[0-9]{1,64}(\.[0-9]{1,64}){0,63}")


def dicom_series(
    session: Session,
    file: dict[str, Any],
    dest: Path,
    progress: Progress | None = None,
    told: Told | None = None,
    *,
    overwrite: bool = True,
) -> Op[Path]:
    """A DICOM series' instances, byte for byte as stored, into the directory `dest`,
    each `<SOPInstanceUID>.dcm`: one WADO-RS retrieve of the series (its folder's
    DICOMweb), streamed, each instance written through a `.part` file. The series'
    sha256 (the hash of its instances' hashes in slice order) is checked. A broken
    connection starts the series again. A `dest` that holds the series already (each
    instance's file, their hashes in slice order making the series' sha256) is left as
    it is ("kept"); one holding some of its instances (a run that stopped, the series
    extended since) is downloaded into, told nothing; one holding something else (a
    `.dcm` of no instance of it, all of them there but one changed) is downloaded again
    ("replaced"), or without `overwrite` left as it is ("differs"). Without `overwrite`,
    an instance's file there is never written over: one with other bytes than the
    platform's is left as it is, the rest downloaded, and `told` hears "differs". Where
    half of the instances or more are there, only the others are retrieved
    (`_rest_of_series`), and the whole series if the result does not match its sha256."""
    url = _series_url(file)
    there, uids = yield from _series_there(session, file, dest, url)
    if there is False and not overwrite:
        return _differs(dest, int(file["size"]), progress, told)
    if there is not None and told:
        told(dest, "kept" if there else "replaced")
    if there:
        if progress:
            progress(int(file["size"]))
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    if there is None and uids:
        rest = _rest_of_series(session, file, dest, url, uids, progress, overwrite)
        if (yield from rest):
            return dest
    instances = yield from _retrieve(session, url, dest, progress, overwrite)
    digest = hashlib.sha256("\n".join(instances.digests).encode()).hexdigest()
    if file.get("sha256") and digest != file["sha256"]:
        raise FilesError(
            "checksum_mismatch",
            f"{dest.name}: the {len(instances.digests)} instances received do not match the"
            " series' sha256 (was it extended meanwhile? download it again)",
            {"file_id": file["id"]},
        )
    if instances.differ and told:
        told(dest, "differs")
    return dest


def _rest_of_series(
    session: Session,
    file: dict[str, Any],
    dest: Path,
    url: str,
    uids: list[str],
    progress: Progress | None,
    overwrite: bool,
) -> Op[bool]:
    """Some of the series' instances there (a run that stopped, the series extended
    since): only the others are retrieved, one WADO-RS retrieve each, then the whole is
    checked from the files there by the series' sha256 (the API has no instance's own).
    True when the series is there. False when the whole series is to be retrieved:
    fewer than half of it there (one retrieve, not many), or the whole not matching the
    series' sha256, in either mode. Which file is wrong, nothing here tells (the API has
    no instance's sha256): one there edited, one received damaged, the series extended
    meanwhile. So the instances this call wrote go and the whole retrieve decides: it
    compares each file there with the bytes received (an edit is "differs", or written
    over with `overwrite`) and checks the series' sha256 (`checksum_mismatch`)."""
    missing = [uid for uid in uids if not (dest / f"{uid}.dcm").is_file()]
    if not file.get("sha256") or len(missing) * 2 > len(uids):
        return False
    counted = 0
    placed: list[Path] = []
    for uid in missing:
        got = yield from _retrieve(session, f"{url}/instances/{uid}", dest, progress, overwrite)
        counted += got.received
        placed += got.placed
        if got.differ:  # written meanwhile, by another run
            break
    digests = []
    for uid in uids:
        try:
            digests.append(sha256_of(dest / f"{uid}.dcm"))
        except OSError:  # gone meanwhile: the series is not there
            digests.append("")
    if hashlib.sha256("\n".join(digests).encode()).hexdigest() != file["sha256"]:
        # Left there, a damaged instance received would pass for a local edit.
        for path in placed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if progress:
            progress(-counted)
        return False
    if progress:
        progress(int(file["size"]) - counted)
    return True


def _retrieve(
    session: Session, url: str, dest: Path, progress: Progress | None, overwrite: bool
) -> Op[_Instances]:
    """A WADO-RS retrieve's instances into `dest`; a broken connection starts it again."""
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    broken = 0
    while True:
        response = yield from exchange(session, Call("GET", url, headers=accept, stream=True))
        instances = _Instances(dest, progress, overwrite=overwrite)
        try:
            _, options = parse_options_header(response.headers.get("content-type", ""))
            boundary = options.get(b"boundary")
            if not boundary:
                raise FilesError("bad_answer", f"{url}: the answer is not multipart")
            parser = MultipartParser(boundary, instances.callbacks())
            while data := (yield NextChunk(response)):
                parser.write(data)
            parser.finalize()
        except httpx.TransportError:
            instances.abandon()
            broken += 1
            if broken >= session.retries.attempts:
                raise
            yield Sleep(session.retries.delay(broken))
            continue
        except BaseException:
            instances.abandon()
            raise
        return instances


def _series_there(
    session: Session, file: dict[str, Any], dest: Path, url: str
) -> Op[tuple[bool | None, list[str] | None]]:
    """Whether the directory `dest` holds the series (True), something else (False) or
    nothing of it yet (None), with its instances' UIDs where they were listed. Held
    means what a download would write, checked as the API defines the series' sha256:
    each instance's `<SOPInstanceUID>.dcm` there, and the hash of their sha256s, in
    slice order, the series' sha256. Names alone would pass an instance cut short or
    changed. Some of its instances alone (a run that stopped, or the series extended
    since) is the series not there yet: the download goes on (`_rest_of_series`). A
    `.dcm` of no instance of the series is something else. Other files in the directory
    are not the series' and are left out, as a folder's download leaves other local
    files alone."""
    try:
        local = {p.name for p in dest.iterdir() if p.suffix == ".dcm" and p.is_file()}
    except OSError:  # not there, or not a directory: downloaded as new
        return None, None
    if not local:
        return None, None
    uids = yield from _series_uids(session, url)
    names = {f"{uid}.dcm" for uid in uids}
    if local - names:
        return False, uids
    if local != names:
        return None, uids
    if not file.get("sha256"):
        return False, uids
    digests = []
    for uid in uids:
        try:
            digests.append(sha256_of(dest / f"{uid}.dcm"))
        except OSError:
            return False, uids
    return hashlib.sha256("\n".join(digests).encode()).hexdigest() == str(file["sha256"]), uids


def _series_url(file: dict[str, Any]) -> str:
    facts = file.get("dicom") or {}
    study, series = facts.get("study_uid"), facts.get("series_uid")
    if not (isinstance(study, str) and isinstance(series, str)):
        raise FilesError("not_a_series", f"{file.get('name')}: no study and series UIDs")
    return f"/v1/folders/{file['folder_id']}/dicomweb/studies/{study}/series/{series}"


def _series_uids(session: Session, url: str) -> Op[list[str]]:
    """A series' SOP Instance UIDs in its slice order: the platform's (the DICOM
    context's slice keys), in which QIDO-RS lists them, a page of DICOM JSON at a time."""
    uids: list[str] = []
    accept = {"Accept": "application/dicom+json"}
    while True:
        page = yield from json_of(
            session,
            Call(
                "GET",
                f"{url}/instances",
                headers=accept,
                params={"limit": QIDO_PAGE, "offset": len(uids)},
            ),
        )
        for entry in page or ():
            value = (entry.get("00080018") or {}).get("Value") or [None]
            uids.append(str(value[0]))
        if len(page or ()) < QIDO_PAGE:
            break
    return uids


# A QIDO-RS page: the most the DICOM context answers at once.
QIDO_PAGE = 1000


# An instance being written (`_Instances._part`): an earlier run's, not another file.
_INSTANCE_PART = re.compile(r"\.instance-[0-9]{6}\.part")


class _Instances:
    """The parts of a WADO-RS answer as files: each named by the SOP Instance UID at the
    end of its Content-Location (else by its place), written through a `.part` file."""

    def __init__(self, dest: Path, progress: Progress | None, *, overwrite: bool = True) -> None:
        self.dest = dest
        self.progress = progress
        # Without it, an instance's file there is not written over: one holding other
        # bytes (a local edit) is left as it is, and the series `differ`s.
        self.overwrite = overwrite
        self.differ = False
        self.placed: list[Path] = []  # the instances' files this answer wrote
        self.size = 0  # the instance being written's
        self.digests: list[str] = []
        self.received = 0  # bytes, for a progress taken back when the series starts again
        self.out: IO[bytes] | None = None
        self.digest = hashlib.sha256()
        self.field = b""
        self.headers: dict[bytes, bytes] = {}

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._field,
            "on_header_value": self._value,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self.headers, self.field, self.digest, self.size = {}, b"", hashlib.sha256(), 0
        self.out = open(self._part(), "wb")  # noqa: SIM115 - closed at the part's end

    def _part(self) -> Path:
        return self.dest / f".instance-{len(self.digests) + 1:06d}.part"

    def _field(self, data: bytes, start: int, end: int) -> None:
        self.field = data[start:end].lower()

    def _value(self, data: bytes, start: int, end: int) -> None:
        self.headers[self.field] = self.headers.get(self.field, b"") + data[start:end]

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self.out is not None
        piece = data[start:end]
        self.out.write(piece)
        self.digest.update(piece)
        self.size += len(piece)
        self.received += len(piece)
        if self.progress:
            self.progress(len(piece))

    def _end(self) -> None:
        assert self.out is not None
        self.out.close()
        self.out = None
        sop = self.headers.get(b"content-location", b"").decode("latin-1").rsplit("/", 1)[-1]
        name = sop if _UID.fullmatch(sop) else f"instance-{len(self.digests) + 1:06d}"
        digest, part, there = self.digest.hexdigest(), self._part(), self.dest / f"{name}.dcm"
        if self.overwrite:
            os.replace(part, there)
            self.placed.append(there)
        else:
            try:
                _claim(part, there)
            except FileExistsError:
                if not _holds(there, self.size, digest):
                    self.differ = True
            else:
                self.placed.append(there)
            with contextlib.suppress(FileNotFoundError):  # moved onto `there` (`_claim`)
                part.unlink()
        self.digests.append(digest)

    def abandon(self) -> None:
        """The answer broke: its open part goes, and what it counted is taken back."""
        if self.out is not None:
            self.out.close()
            with contextlib.suppress(OSError):
                self._part().unlink()
        if self.progress and self.received:
            self.progress(-self.received)
