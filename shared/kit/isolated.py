"""Work on hostile input (a decoder in C: FFmpeg, libwebp, JPEG 2000) in a process of
its own that holds none of the platform's secrets.

A worker is a child process started from a clean environment (no FILES_* setting, no
database URL, no service key), with its address space capped, that dies with its
parent. It is handed one request at a time over a pipe and reads the content it needs
through its parent, a range at a time (`ReadAt`): it opens no bucket, database or
socket of its own, and the parent checks every range it asks for (within the content,
within the byte budget) before reading it. A call that overruns its time cap, a worker
that dies or says something out of protocol, is killed; the next call starts another.
Its parent is not dumpable (shared/kit/private.py), so the worker cannot read the
parent's environment or memory through /proc either.

The protocol: frames of a kind byte, a 4-byte length and that many bytes. Parent to
worker: C (a call: JSON), D (the bytes of a range asked for). Worker to parent: Y
(ready), R (a range: JSON [offset, length]), A (the answer's bytes), E (the work
refused its input: JSON {status, code, message}, or {} when it merely failed).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.kit.logs import log

ReadAt = Callable[[int, int], bytes]
Work = Callable[[dict[str, Any], ReadAt], bytes]

FRAME = struct.Struct(">cI")
MAX_REQUEST = 64 * 1024  # a call or a range asked for: small JSON
ADDRESS_SPACE = 4 * 1024 * 1024 * 1024
# What a worker's environment keeps of its parent's: where Python and its packages are,
# and the locale. Nothing else, and never a FILES_* setting.
KEPT_ENV = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
ADDRESS_SPACE_ENV = "ISOLATED_ADDRESS_SPACE"


class WorkerFailed(Exception):
    """The worker did not answer within its cap, died, or broke the protocol: the work's
    outcome is unknown (its input may be what killed it)."""


class Busy(WorkerFailed):
    """No worker was free within the call's wait: the others are busy (perhaps each with
    a hostile input held to its cap); the outcome is unknown, nothing was sent."""


class Refusal(Exception):
    """The work refused its input (an HTTP status, a code and a message to answer with);
    raised by the work in the worker, raised again by `call` in the parent."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _clean_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in KEPT_ENV if name in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    return env


class _Worker:
    def __init__(self, module: str, address_space: int, start_timeout: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**_clean_env(), ADDRESS_SPACE_ENV: str(address_space)},
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_fd = self.proc.stdin.fileno()
        self.from_fd = self.proc.stdout.fileno()
        os.set_blocking(self.to_fd, False)
        try:
            kind, _ = self.receive(time.monotonic() + start_timeout, 0)
            if kind != b"Y":
                raise WorkerFailed(f"the worker started with {kind!r}, not ready")
        except BaseException:
            self.kill()
            raise

    @staticmethod
    def _ready(fd: int, event: int, deadline: float) -> bool:
        # poll, not select: a busy service's descriptors may be past select's 1,024.
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        waiting = select.poll()
        waiting.register(fd, event | select.POLLERR | select.POLLHUP)
        return bool(waiting.poll(left * 1000))

    def send(self, kind: bytes, payload: bytes, deadline: float) -> None:
        view = memoryview(FRAME.pack(kind, len(payload)) + payload)
        while view:
            if not self._ready(self.to_fd, select.POLLOUT, deadline):
                raise WorkerFailed("the worker took no more input within the time cap")
            try:
                view = view[os.write(self.to_fd, view) :]
            except BlockingIOError:
                continue
            except OSError as error:
                raise WorkerFailed(f"the worker is gone: {error}") from None

    def _read(self, count: int, deadline: float) -> bytes:
        out = bytearray()
        while len(out) < count:
            if not self._ready(self.from_fd, select.POLLIN, deadline):
                raise WorkerFailed("the worker did not answer within the time cap")
            try:
                chunk = os.read(self.from_fd, min(count - len(out), 1 << 20))
            except OSError as error:
                raise WorkerFailed(f"the worker's pipe failed: {error}") from None
            if not chunk:
                raise WorkerFailed(f"the worker died (exit status {self.proc.poll()})")
            out += chunk
        return bytes(out)

    def receive(self, deadline: float, max_answer: int) -> tuple[bytes, bytes]:
        kind, length = FRAME.unpack(self._read(FRAME.size, deadline))
        if length > (max_answer if kind == b"A" else MAX_REQUEST):
            raise WorkerFailed(f"the worker sent {length:,} bytes in one {kind!r} frame")
        return kind, self._read(length, deadline)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()


class Isolated:
    """Up to `workers` workers running `python -m <module>` (whose main calls `serve`),
    started when first needed. `call` blocks its thread: call it from a worker thread."""

    def __init__(
        self,
        module: str,
        *,
        workers: int = 2,
        max_answer: int = 1024 * 1024,
        address_space: int = ADDRESS_SPACE,
        start_timeout: float = 60.0,
    ) -> None:
        self.module = module
        self.max_answer = max_answer
        self.address_space = address_space
        self.start_timeout = start_timeout
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(workers):
            self._idle.put(None)  # a slot; its worker starts on first use
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        # A worker dies with the thread that started it (PR_SET_PDEATHSIG, so that it
        # never outlives its parent): started by the callers' threads, which come and go
        # (anyio's end after 10 s idle), one was killed as the next call took it. So one
        # thread of this pool's own, which never ends while the process runs, starts them.
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="isolated-start")

    def call(
        self,
        request: dict[str, Any],
        *,
        time_cap: float,
        read_at: ReadAt | None = None,
        size: int = 0,
        budget: int = 0,
        wait: float | None = None,
    ) -> bytes:
        """The work's answer to `request`, within `time_cap` seconds (a worker's start is
        not counted). The worker may read `size` bytes of content through `read_at`, at
        most `budget` bytes in all. A free worker is waited for at most `wait` seconds
        (None: for as long as it takes). Raises Refusal (the work refused the input),
        WorkerFailed (the outcome is unknown; Busy: no worker was free), or what
        `read_at` raised."""
        try:
            worker = self._idle.get(timeout=wait)
        except queue.Empty:
            raise Busy(f"no worker was free within {wait:g} s") from None
        settled = False
        try:
            if worker is not None and worker.proc.poll() is not None:
                # Gone while idle (killed, or out of memory): another one, nothing was
                # sent to it.
                self._forget(worker)
                worker = None
            if worker is None:
                try:
                    worker = self._starter.submit(
                        _Worker, self.module, self.address_space, self.start_timeout
                    ).result()
                except OSError as error:  # no process to be had (memory, process limit)
                    raise WorkerFailed(f"no worker could start: {error}") from None
                with self._lock:
                    self._all.add(worker)
            deadline = time.monotonic() + time_cap
            worker.send(b"C", json.dumps(request).encode(), deadline)
            served = 0
            while True:
                kind, payload = worker.receive(deadline, self.max_answer)
                if kind == b"A":
                    settled = True
                    return payload
                if kind == b"E":
                    said = json.loads(payload)
                    settled = True
                    if isinstance(said, dict) and isinstance(said.get("status"), int):
                        raise Refusal(
                            said["status"],
                            str(said.get("code"))[:50],
                            str(said.get("message"))[:300],
                        )
                    raise WorkerFailed("the work failed on this input")
                if kind != b"R" or read_at is None:
                    raise WorkerFailed(f"the worker sent {kind!r} out of protocol")
                offset, length = _range(payload)
                length = min(length, size - offset)
                if offset >= size or length <= 0 or served + length > budget:
                    raise WorkerFailed(
                        f"the worker asked for bytes {offset:,}+{length:,} of {size:,}"
                        f" ({served:,} of {budget:,} read)"
                    )
                data = bytes(read_at(offset, length)[:length])
                served += len(data)
                worker.send(b"D", data, deadline)
        except (ValueError, TypeError, struct.error) as error:
            raise WorkerFailed(f"the worker broke the protocol: {error}") from None
        finally:
            if worker is not None and not settled:
                self._forget(worker)
                worker = None
            self._idle.put(worker)

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def stop(self) -> None:
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.kill()
        # Its thread ends; a call after this starts workers from a new one.
        self._starter.shutdown(wait=False)
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="isolated-start")


def _range(payload: bytes) -> tuple[int, int]:
    offset, length = json.loads(payload)
    if not (isinstance(offset, int) and isinstance(length, int)) or offset < 0:
        raise ValueError(f"not a range: {payload[:100]!r}")
    return offset, length


# -- the worker's side ---------------------------------------------------------------


class _ParentGone(Exception):
    """The parent closed its end, or broke the protocol: the worker's cue to end. Not
    EOFError, which decoders raise for their input's end (PyAV's `av.error.EOFError` is
    one): a truncated file ended the worker, and the next file paid for a new one."""


def _frame_reader(fd: int) -> Callable[[], tuple[bytes, bytes]]:
    def read_exactly(count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            chunk = os.read(fd, count - len(out))
            if not chunk:
                raise _ParentGone
            out += chunk
        return bytes(out)

    def receive() -> tuple[bytes, bytes]:
        kind, length = FRAME.unpack(read_exactly(FRAME.size))
        return kind, read_exactly(length)

    return receive


def serve(work: Work) -> None:
    """A worker's main: answer calls with `work(request, read_at)` until the parent goes."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        return  # the parent died before the line above
    cap = int(os.environ.get(ADDRESS_SPACE_ENV, ADDRESS_SPACE))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    # The pipes are the protocol's alone: a decoder's prints go nowhere.
    calls, answers = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    receive = _frame_reader(calls)

    def send(kind: bytes, payload: bytes) -> None:
        view = memoryview(FRAME.pack(kind, len(payload)) + payload)
        while view:
            view = view[os.write(answers, view) :]

    def read_at(offset: int, length: int) -> bytes:
        send(b"R", json.dumps([offset, length]).encode())
        kind, data = receive()
        if kind != b"D":
            raise _ParentGone
        return data

    send(b"Y", b"")
    while True:
        try:
            kind, payload = receive()
        except _ParentGone:
            return
        if kind != b"C":
            return
        try:
            answer = work(json.loads(payload), read_at)
        except _ParentGone:
            return
        except Refusal as refused:
            said = {"status": refused.status, "code": refused.code, "message": refused.message}
            send(b"E", json.dumps(said).encode())
        except Exception as error:
            log.debug("isolated.work_failed", error=type(error).__name__)
            send(b"E", b"{}")
        else:
            send(b"A", answer)
