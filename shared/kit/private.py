"""A service's memory kept from the other processes of its user.

A service holds the platform's secrets (its database URL, the service key), and some
run decoders of hostile files in worker processes of the same user (the thumbnails'
drawing workers), spawned from an environment the secrets were dropped from. That is
not enough by itself: the kernel keeps the environment a process started with, and
`/proc/<pid>/environ` of the service still shows it to any process of the same user,
as `/proc/<pid>/mem` and ptrace show the rest of its memory. Marking the service not
dumpable (PR_SET_DUMPABLE 0) makes those root's alone, so a worker a decoder's flaw
took over reads none of it. (Root, with CAP_SYS_PTRACE, still can: py-spy as root works.)

Nothing but the standard library here: a test runs it as another user, with the
system's Python.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

PR_SET_DUMPABLE = 4


def _prctl() -> ctypes._NamedFuncPointer | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name, use_errno=True), "prctl", None) if name else None
    except OSError:
        return None


def keep_memory_private() -> bool:
    """Make this process not dumpable; False where the system has no such switch. Its
    children get the switch back as they start another program (spawned workers do),
    and core dumps of this process are off."""
    prctl = _prctl()
    if prctl is None:
        return False
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    return True
