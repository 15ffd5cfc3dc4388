"""`files` runs for the tests, each in a process of its own, forked from one that has
imported the command once.

A run of the console script spent about 0.5 s starting the interpreter and importing
the client before it did anything, and the CLI tests run it a few hundred times: that
was the largest share of their time. A forked run is still a process of its own, with
its own environment, working directory, stdin, stdout and stderr (files, as a pipe is
not a terminal, or a terminal the caller reads: `terminal`) and exit code; only the
interpreter's start and the imports are shared. The tests of what only the console
script does (Ctrl-C, and one test of the progress bar on a terminal) still start it.

The server (`python -m tests.files_forks`) reads one request a line on stdin, forks,
answers the child's pid, then its exit status.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the run asked for, then exit with its code."""
    code: Any = 1
    try:
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        for fd, path, flags in (
            (0, request["stdin"], os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY),
            (2, request["stderr"], os.O_WRONLY),
        ):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        # As the interpreter opens them for files that are not terminals.
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        from shared.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as leaving:
            code = leaving.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code & 0xFF)


def serve() -> None:
    import files_client.cli  # noqa: F401  (what each run would import)

    import shared.cli  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


class Forks:
    """The test session's server; started at its first run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.server: subprocess.Popen[str] | None = None

    def _started(self) -> subprocess.Popen[str]:
        if self.server is None or self.server.poll() is not None:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "tests.files_forks"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        return self.server

    def _answer(self, server: subprocess.Popen[str], timeout: float | None) -> dict[str, Any]:
        assert server.stdout is not None
        if timeout is not None:
            ready, _, _ = select.select([server.stdout], [], [], timeout)
            if not ready:
                raise TimeoutError
        line = server.stdout.readline()
        assert line, f"the files fork server stopped ({server.poll()})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(
        self,
        argv: list[str],
        env: dict[str, str],
        stdin: str | None = None,
        cwd: Path | None = None,
        timeout: float = 120,
        terminal: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`terminal`: the path of a terminal (a pty's follower) the run's stderr is, as
        a person's is; what it writes there is the caller's to read, as it comes."""
        with self.lock, tempfile.TemporaryDirectory(prefix="files-run-") as scratch:
            place = Path(scratch)
            (place / "stdin").write_text(stdin or "", encoding="utf-8")
            (place / "stdout").touch()
            (place / "stderr").touch()
            request = {
                "argv": argv,
                "env": env,
                "cwd": str(cwd or Path.cwd()),
                **{name: str(place / name) for name in ("stdin", "stdout", "stderr")},
                **({"stderr": terminal} if terminal else {}),
            }
            server = self._started()
            assert server.stdin is not None
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            pid = self._answer(server, 30)["pid"]
            try:
                status = self._answer(server, timeout)["status"]
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._answer(server, 30)
                raise subprocess.TimeoutExpired(["files", *argv], timeout) from None
            return subprocess.CompletedProcess(
                ["files", *argv],
                status,
                (place / "stdout").read_text(encoding="utf-8"),
                (place / "stderr").read_text(encoding="utf-8", errors="backslashreplace"),
            )

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            assert self.server.stdin is not None
            self.server.stdin.close()
            self.server.wait(10)


FORKS = Forks()
atexit.register(FORKS.close)

if __name__ == "__main__":
    serve()
