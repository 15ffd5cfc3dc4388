"""Fault injection for the chaos tests (tests/chaos/): off unless FILES_FAULTS_DIR is set,
which only the tests do.

A process that reaches a fault point while a file of that point's name is in the
directory takes the file (one process per file) and dies on the spot, SIGKILL, as if
its machine went away at that instant.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from shared.kit.logs import log

_DIR = os.environ.get("FILES_FAULTS_DIR", "")


def strike(point: str) -> None:
    if not _DIR:
        return
    try:
        (Path(_DIR) / point).unlink()
    except FileNotFoundError:
        return
    log.warning("fault.injected", point=point, pid=os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
