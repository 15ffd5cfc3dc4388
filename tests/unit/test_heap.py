"""A request body's buffers come from the heap (shared/kit/heap.py): uvicorn gathers
each socket read into a growing bytearray and hands it on as a new bytes object; with
glibc's defaults each such buffer of more than 128 KiB had pages of its own, faulted in
anew one page at a time (0.9 CPU-s of system time per GB a service received).

Counted in a process of its own (the allocator's settings are process-wide): the
page faults of 200 bodies of 288 KiB, gathered and copied as uvicorn does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BODIES = """
import resource
import sys

from shared.kit import heap

if sys.argv[1] == "kept" and not heap.keep_body_buffers():
    print("no mallopt")
    sys.exit(0)
read = bytes(96 * 1024)  # what one socket read brought


def bodies(n):
    for _ in range(n):
        body = bytearray()
        for _ in range(3):
            body += read
        bytes(body)


bodies(20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
bodies(200)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", BODIES, mode],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_a_bodys_buffers_are_not_faulted_in_anew_each_time() -> None:
    kept = faults("kept")
    if kept == "no mallopt":
        pytest.skip("this C library has no mallopt")
    # The hole is there to close: with the allocator's defaults, each body's pages anew.
    assert int(faults("default")) > 10_000
    assert int(kept) < 1_000
