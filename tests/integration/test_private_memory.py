"""A worker that a decoder's flaw took over must not read its service's secrets from the
service itself: `/proc/<service>/environ` keeps the environment the service started
with, secrets included, whatever the service dropped from it later (shared/kit/private.py).

Run as a user that is not root (root reads any process's memory), with the system's
Python, the service's steps only: not dumpable, the secrets dropped from the
environment, a worker spawned, the worker looking at its parent."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
SECRET = "the-platforms-signing-key-0123456789"

SERVICE = """
import multiprocessing
import os
import sys

from shared.kit.private import keep_memory_private


def look_at_parent(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return "read: " + ("secret" if b"signing-key" in environ.read() else "nothing")
    except OSError as error:
        return f"refused: {error.strerror}"


if __name__ == "__main__":
    if sys.argv[1] == "private":
        keep_memory_private()
    del os.environ["FILES_SERVICE_KEY"]  # as keep_secrets_from_workers does
    with multiprocessing.get_context("spawn").Pool(1) as workers:
        print(workers.apply(look_at_parent, (os.getpid(),)))
"""


def as_another_user() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def run_service(mode: str, script: Path, python: str) -> str:
    done = subprocess.run(
        [python, str(script), mode],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "FILES_SERVICE_KEY": SECRET},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **as_another_user(),  # type: ignore[arg-type]
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_worker_cannot_read_its_services_environment() -> None:
    # The system's Python: the test's own may live where that user cannot go.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 to run as another user")
    folder = Path(tempfile.mkdtemp(prefix="private-memory-"))
    try:
        folder.chmod(0o755)
        script = folder / "service.py"
        script.write_text(SERVICE)
        script.chmod(0o644)
        # The hole is there to close: a dumpable service shows its first environment.
        assert run_service("dumpable", script, python) == "read: secret"
        assert run_service("private", script, python) == "refused: Permission denied"
    finally:
        shutil.rmtree(folder)
