"""Work on hostile input in a worker of its own (shared/kit/isolated.py): what the
parent sees whatever the worker does, with real processes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.kit.isolated import Busy, Isolated, Refusal, WorkerFailed

CONTENT = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Isolated]:
    monkeypatch.setenv("FILES_SERVICE_KEY", "the-platforms-signing-key-0123456789")
    monkeypatch.setenv("FILES_DATABASE_URL", "postgresql://files:db-password@db/files")
    pool = Isolated("tests.isolated_worker", workers=1, max_answer=64 * 1024)
    try:
        yield pool
    finally:
        pool.stop()


def call(pool: Isolated, time_cap: float = 30, **request: object) -> bytes:
    return pool.call(
        request,
        time_cap=time_cap,
        read_at=lambda offset, length: CONTENT[offset : offset + length],
        size=len(CONTENT),
        budget=8 * 1024,
    )


def echo(pool: Isolated) -> int:
    said = json.loads(call(pool, do="echo", n=1))
    assert said["n"] == 1
    pid: int = said["pid"]
    return pid


def test_a_worker_answers_and_is_kept_for_the_next_call(workers: Isolated) -> None:
    assert echo(workers) == echo(workers)


def test_a_worker_holds_none_of_the_platforms_secrets(workers: Isolated) -> None:
    env = json.loads(call(workers, do="env"))
    assert not [name for name in env if name.startswith("FILES_")], env
    assert "db-password" not in json.dumps(env) and "signing-key" not in json.dumps(env)


def test_a_worker_reads_the_content_through_its_parent_within_bounds(workers: Isolated) -> None:
    assert call(workers, do="read", ranges=[[0, 4], [300, 2]]) == CONTENT[:4] + CONTENT[300:302]
    # Past the end is cut to the end; nothing else past the bounds is served.
    assert call(workers, do="read", ranges=[[len(CONTENT) - 3, 100]]) == CONTENT[-3:]
    for ranges in ([[len(CONTENT), 1]], [[-1, 4]], [[0, 4096], [4096, 4096], [8192, 1]]):
        with pytest.raises(WorkerFailed):
            call(workers, do="read", ranges=ranges)
    echo(workers)


def test_an_error_of_the_parents_read_is_raised_as_it_is(workers: Isolated) -> None:
    def failing(offset: int, length: int) -> bytes:
        raise ConnectionError("the store went away")

    with pytest.raises(ConnectionError):
        workers.call(
            {"do": "read", "ranges": [[0, 4]]}, time_cap=30, read_at=failing, size=10, budget=10
        )
    echo(workers)


def test_a_worker_that_hangs_is_killed_at_its_cap_and_replaced(workers: Isolated) -> None:
    first = echo(workers)
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match="time cap"):
        call(workers, time_cap=0.5, do="hang")
    assert time.monotonic() - started < 10
    assert echo(workers) != first


def test_a_worker_that_dies_or_fails_leaves_the_outcome_unknown(workers: Isolated) -> None:
    first = echo(workers)
    with pytest.raises(WorkerFailed, match="died"):
        call(workers, do="die")
    with pytest.raises(WorkerFailed):
        call(workers, do="no such thing")
    assert echo(workers) != first


def test_a_decoders_end_of_file_fails_the_call_and_keeps_the_worker(workers: Isolated) -> None:
    """A truncated file's decoder raises EOFError (PyAV's does): the work failed, the
    worker serves the next call (it ended, and each such file cost a new one's start)."""
    first = echo(workers)
    with pytest.raises(WorkerFailed, match="failed on this input"):
        call(workers, do="eof")
    assert echo(workers) == first


def test_a_refusal_of_the_input_crosses_as_it_was_said(workers: Isolated) -> None:
    with pytest.raises(Refusal) as refused:
        call(workers, do="refuse")
    assert (refused.value.status, refused.value.code) == (422, "cannot_render")
    echo(workers)


def test_a_decoders_prints_do_not_reach_the_protocol(workers: Isolated) -> None:
    assert call(workers, do="print") == b"ok"
    echo(workers)


def test_an_answer_past_its_bound_is_refused(workers: Isolated) -> None:
    assert call(workers, do="huge", bytes=64 * 1024) == b"x" * 64 * 1024
    with pytest.raises(WorkerFailed, match="bytes in one"):
        call(workers, do="huge", bytes=64 * 1024 + 1)
    echo(workers)


def test_a_worker_gone_while_idle_is_started_again_for_the_next_call(workers: Isolated) -> None:
    first = echo(workers)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    # Dead (a zombie, not yet waited for) before the next call, as after its parent
    # thread's end.
    while Path(f"/proc/{first}/stat").read_text().split(")")[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed worker did not die"
        time.sleep(0.01)
    assert echo(workers) != first


def test_a_call_waits_for_a_busy_worker_at_most_its_wait(workers: Isolated) -> None:
    echo(workers)  # started: its start is not the wait measured
    outcome: list[BaseException] = []

    def hang() -> None:
        try:
            call(workers, time_cap=2, do="hang")
        except WorkerFailed as failed:
            outcome.append(failed)

    held = threading.Thread(target=hang)
    held.start()
    deadline = time.monotonic() + 10
    while not workers._idle.empty():  # the only worker taken by the hanging call
        assert time.monotonic() < deadline, "the hanging call took no worker"
        time.sleep(0.01)
    started = time.monotonic()
    with pytest.raises(Busy, match=r"no worker was free within 0\.2 s"):
        workers.call({"do": "echo"}, time_cap=30, wait=0.2)
    assert time.monotonic() - started < 1.5
    held.join()
    assert [type(failed) for failed in outcome] == [WorkerFailed]
    echo(workers)  # the hanging one killed at its cap, its slot back


def test_a_worker_started_by_a_thread_that_ended_serves_the_next_call(workers: Isolated) -> None:
    """A worker dies with the thread that started it (PR_SET_PDEATHSIG): started from the
    caller's thread, one of anyio's that ended after its idle time, it was killed as the
    next file's call took it, and that file lost its facts."""
    started: list[int] = []
    first = threading.Thread(target=lambda: started.append(echo(workers)))
    first.start()
    first.join()
    assert echo(workers) == started[0]
