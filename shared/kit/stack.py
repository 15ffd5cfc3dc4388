"""The whole platform on one machine: PostgreSQL, the broker, every service, the gateway.

Each piece runs as a child process with its log under `<data dir>/logs/`.
Pieces given by the environment (FILES_DATABASE_URL, FILES_KAFKA_BOOTSTRAP)
are used instead of starting embedded ones.

Once started, the platform is supervised: a piece that exits is started again, on
the same port (PostgreSQL on the same data dir), backing off while it keeps dying;
each exit and restart is a line of `<data dir>/logs/stack.log`. A watchdog asks each
service and gateway for its `/healthz` (liveness: answered by the process alone, never
by its database or broker) and kills one that stopped answering and is not working
either (stopped, or using next to no CPU: hung, deadlocked), which the supervisor then
starts again (FILES_WATCHDOG_*). One that stops answering while busy on the CPU (a long
computation holding its event loop) is slow, not hung: noted, left running, until it
has missed many more probes in a row than a hung one may (an endless loop, a livelock:
killed too). One that has not answered since it started is judged so once its start's
grace is over (it may hang before it ever answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from shared.kit import identity
from shared.kit.embedded import (
    Child,
    _die_with_parent,
    free_ports,
    spawn_postgres,
    start_broker,
    start_postgres,
)
from shared.kit.settings import Settings

SERVICES = ("acl", "catalog", "ingest", "datasets", "dicom", "thumbnails")
# A piece that exits is started again after this, doubling while it keeps dying...
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
# ...and forgiven once it has stayed up this long.
STEADY_S = 30.0
SUPERVISE_EVERY_S = 0.2
# A process that used at least this share of a CPU since the watchdog's last round is
# busy, not hung: its missed /healthz is not counted. A hung one (stopped, or blocked on
# a lock) uses next to none; a busy one, most of a CPU, a good share of it even on a
# loaded machine.
BUSY_CPU_SHARE = 0.05
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class _Tended:
    """How to start a piece again, and how long to wait before the next try."""

    restart: Callable[[], subprocess.Popen[bytes]]
    backoff: float = FIRST_BACKOFF_S
    started: float = 0.0
    due: float | None = None
    # Liveness (`_watch`), for a piece that serves HTTP: where it answers, the process
    # judged (a new one starts afresh), whether it has answered since it started (one
    # not yet is judged only `grace` after its start: FILES_WATCHDOG_START_S, doubled
    # each time a start is killed so), the probes in a row it has missed since while
    # idle and whatever its CPU, the CPU time it had used at the last round and when
    # (monotonic; 0: not yet), and whether it was noted slow.
    health: str = ""
    pid: int = 0
    answered: bool = False
    grace: float = 0.0
    missed: int = 0
    unanswered: int = 0
    cpu_s: float = 0.0
    cpu_at: float = 0.0
    slow: bool = False


def admin_key(settings: Settings, data_dir: Path) -> tuple[str, bool]:
    """The first admin's key: from the environment, the data dir, or made now (True)."""
    if settings.bootstrap_admin_key:
        return settings.bootstrap_admin_key, False
    path = data_dir / "admin.key"
    if path.exists():
        return path.read_text().strip(), False
    key = "files_" + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key, True


def service_key(settings: Settings, data_dir: Path) -> str:
    """FILES_SERVICE_KEY, or the data dir's `service.key` (made now if missing, 0600).
    Kept, not made each start: upload sessions' part URLs are signed with it, and a
    fresh one made those handed out before a restart refused (`files upload` 403)."""
    if settings.service_key.get_secret_value():
        return settings.service_key.get_secret_value()
    path = data_dir / "service.key"
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole, synced, then linked into place: a crash mid-write leaves no empty
        # key behind, and of two launchers at once the first link wins (both read it).
        made = data_dir / f".service.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(identity.new_key() + "\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(made, path)
        finally:
            made.unlink(missing_ok=True)
    key = path.read_text().strip()
    try:
        identity.require_strong(str(path), key)
    except identity.WeakSecret as error:
        raise identity.WeakSecret(
            f"{error} (delete {path} to have a new one made, or set FILES_SERVICE_KEY)"
        ) from None
    return key


def _ready(url: str, probe: str = "/readyz", timeout: float = 1) -> bool:
    with (
        contextlib.suppress(Exception),
        urllib.request.urlopen(f"{url}{probe}", timeout=timeout) as r,
    ):
        return bool(r.status == 200)
    return False


def _cpu(pid: int) -> tuple[bool, float] | None:
    """Whether the process is stopped (SIGSTOP, a debugger), and the CPU time its main
    thread has used, in seconds; None where /proc does not tell (not Linux, or gone).
    The main thread's, where the event loop that answers `/healthz` runs: a loop hung
    while another thread works (a bucket's stream, a hash, a `to_thread` job) is not
    busy."""
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return None
    # After "pid (comm) ": the state, then utime and stime as the 12th and 13th fields
    # (proc(5)); the name may hold spaces and parentheses, so from its last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] in "Tt", (int(fields[11]) + int(fields[12])) / _TICKS


def _busy(tended: _Tended, pid: int) -> bool:
    """Whether the process used at least BUSY_CPU_SHARE of a CPU since the last round,
    and is not stopped; its use noted for the next. Not busy where that is unknown (the
    first round, or no /proc): a missed probe counts, as it always did."""
    sample = _cpu(pid)
    if sample is None:
        return False
    stopped, used = sample
    now = time.monotonic()
    last_used, last_at = tended.cpu_s, tended.cpu_at
    tended.cpu_s, tended.cpu_at = used, now
    return not stopped and last_at > 0 and used - last_used >= BUSY_CPU_SHARE * (now - last_at)


def _local(host: str) -> str:
    """Where this machine reaches a server listening on `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


class Stack:
    def __init__(
        self, settings: Settings, *, durable: bool = True, pg_options: Sequence[str] = ()
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.durable = durable
        # More settings for the embedded PostgreSQL (a benchmark's pg_stat_statements).
        self.pg_options = tuple(pg_options)
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self.gateway_url = ""
        # The gateway's gRPC API (host:port), on FILES_GRPC_PORT or a free port.
        self.grpc_target = ""
        self.admin_key = ""
        self.admin_key_is_new = False
        # Ports webhooks may post to (FILES_WEBHOOK_ALLOWED_ENDPOINTS): never a service's.
        self._webhook_ports: set[int] = set()
        self.service_key = ""
        # Supervision: every child's restart, the exits seen, and the thread tending them.
        self.echo = False  # also print exits and restarts on stderr (`files run`)
        self.exits: list[tuple[str, int, float]] = []
        self._tended: dict[int, _Tended] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        # Rounds of liveness probes done (a test waits on it), and a count raised at
        # the start and the end of a pause of every client (`_restart_broker`): a
        # round that overlaps one judges nothing.
        self.watch_rounds = 0
        self._pauses = 0

    def start(self, timeout: float = 90) -> None:
        s = self.settings
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            self.admin_key, self.admin_key_is_new = admin_key(s, self.data_dir)
            named = "FILES_BOOTSTRAP_ADMIN_KEY"
            if not s.bootstrap_admin_key:
                named = f"the admin key in {self.data_dir / 'admin.key'}"
            identity.require_strong(named, self.admin_key, prefix="files_")
            # Services answer only calls signed with it, and part URLs are signed with it.
            self.service_key = service_key(s, self.data_dir)
            identity.ServiceKey(self.service_key)
        except identity.WeakSecret as weak:
            raise RuntimeError(str(weak)) from None
        database_url, bootstrap = s.database_url, s.kafka_bootstrap
        if not database_url:
            pgdata, pg_log = self.data_dir / "pg", logs / "postgres.log"
            pg = start_postgres(pgdata, durable=self.durable, log=pg_log, options=self.pg_options)
            self._adopt(
                pg,
                lambda: (
                    spawn_postgres(
                        pgdata,
                        durable=self.durable,
                        log=pg_log,
                        port=pg.port,
                        restart=True,
                        options=self.pg_options,
                    ).proc
                ),
            )
            database_url = pg.url
        if not bootstrap:
            broker = start_broker(log=logs / "broker.log")
            self._adopt(broker, lambda: self._restart_broker(broker))
            bootstrap = broker.url
        # A service given a receiver's port would take its deliveries.
        self._webhook_ports = {int(p) for p in re.findall(r":(\d+)", s.webhook_allowed_endpoints)}
        *chosen, free_grpc = free_ports(
            len(SERVICES) + 1, {s.http_port, s.grpc_port, *self._webhook_ports}
        )
        ports = dict(zip(SERVICES, chosen, strict=True))
        grpc_port = s.grpc_port or free_grpc
        self.env = {
            # A bucket on this machine (MinIO, moto) may be an integration's.
            "FILES_ALLOWED_ENDPOINTS": "127.0.0.1",
            **os.environ,
            # What the caller set reaches the services (S3 keys, sweep intervals, ...).
            **{
                f"FILES_{name.upper()}": _env_value(getattr(s, name)) for name in s.model_fields_set
            },
            "FILES_DATA_DIR": str(self.data_dir),
            "FILES_DATABASE_URL": database_url,
            "FILES_KAFKA_BOOTSTRAP": bootstrap,
            "FILES_BLOB_URL": s.blob_url or str(self.data_dir / "blobs"),
            "FILES_BOOTSTRAP_ADMIN_KEY": self.admin_key,
            "FILES_SERVICE_KEY": self.service_key,
            "FILES_HTTP_PORT": str(s.http_port),
            "FILES_GRPC_PORT": str(grpc_port),
            **{f"FILES_{n.upper()}_URL": f"http://127.0.0.1:{p}" for n, p in ports.items()},
        }
        for name, port in ports.items():
            self._spawn(name, ["--port", str(port)], logs)
        deadline = time.monotonic() + timeout
        self._wait([f"http://127.0.0.1:{p}" for p in ports.values()], deadline)
        self._spawn("gateway", [], logs)
        self.gateway_url = f"http://{s.http_host}:{s.http_port}"
        self.grpc_target = f"{s.http_host}:{grpc_port}"
        self._wait([self.gateway_url], deadline)
        self._answered(self.children)
        # For `files rebuild` and `files audit`; the URL holds the database's password.
        found = self.data_dir / "stack.env"
        found.touch(mode=0o600)
        found.chmod(0o600)
        found.write_text(f"FILES_DATABASE_URL={database_url}\nFILES_KAFKA_BOOTSTRAP={bootstrap}\n")
        self.supervise()

    def supervise(self) -> None:
        """Start the threads that start again what exits, and kill what hangs."""
        self._supervisor = threading.Thread(target=self._supervise, name="stack", daemon=True)
        self._supervisor.start()
        if self.settings.watchdog_every_s:
            self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
            self._watchdog.start()

    def add_gateway(self, timeout: float = 30) -> str:
        """Start one more gateway replica in front of the same services; its URL."""
        # HTTP only: the gRPC port is the first gateway's.
        url, _ = self.add_replica("gateway", timeout, {"FILES_GRPC_PORT": "0"})
        return url

    def add_replica(
        self,
        name: str,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        probe: str = "/readyz",
    ) -> tuple[str, Child]:
        """Start one more process of a service (its consumer joins the same group, its
        relay competes for the same lock); its URL and process, once `probe` answers
        200 (`/healthz` for one that is never to be ready)."""
        [port] = free_ports(1, self._webhook_ports)
        child = self._spawn(name, ["--port", str(port)], self.data_dir / "logs", env)
        url = f"http://127.0.0.1:{port}"
        # Only the replica watched: a piece that died earlier and was started again
        # (a test's deliberate kill) is the supervisor's business, not this start's.
        self._wait([url], time.monotonic() + timeout, probe, watched=child)
        self._answered([child])
        return url, child

    def remove(self, child: Child, sig: int = signal.SIGTERM) -> None:
        """Stop one process (SIGKILL: as if its machine died) and forget it: it is not
        started again."""
        with self._lock:
            if child not in self.children:
                # The stack stopped first, and the child with it: the S3 platform stops
                # after its last test (tests/conftest.py), before a module's fixture that
                # added a replica to it is torn down.
                return
            self.children.remove(child)
            self._tended.pop(id(child), None)
        child.stop(sig)

    @contextlib.contextmanager
    def down(self, name: str) -> Iterator[None]:
        """The first process of that name killed (SIGKILL) and kept down while the block
        runs, then started again by the supervisor: a piece away for as long as a test
        needs (restarted at once, it is away for half a second)."""
        with self._lock:
            child = next(c for c in self.children if c.name == name)
            tended = self._tended.pop(id(child))
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait()
        try:
            yield
        finally:
            with self._lock:
                self._tended[id(child)] = tended

    def child(self, name: str) -> Child:
        """The first process of that name (a service, "gateway", "postgres", "broker")."""
        with self._lock:
            return next(c for c in self.children if c.name == name)

    def _spawn(
        self, name: str, args: list[str], logs: Path, env: dict[str, str] | None = None
    ) -> Child:
        if name != "gateway":
            # Only the gateway listens on FILES_HTTP_HOST; the services, on loopback only.
            args = ["--host", "127.0.0.1", *args]

        def popen() -> subprocess.Popen[bytes]:
            out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
            return subprocess.Popen(
                [sys.executable, "-m", f"services.{name}", *args],
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=out,
                preexec_fn=_die_with_parent,
            )

        child = Child(name, popen(), "")
        port = args[args.index("--port") + 1] if "--port" in args else self.settings.http_port
        host = "127.0.0.1" if name != "gateway" else _local(self.settings.http_host)
        self._adopt(child, popen, f"http://{host}:{port}")
        return child

    def _adopt(
        self, child: Child, restart: Callable[[], subprocess.Popen[bytes]], health: str = ""
    ) -> None:
        with self._lock:
            self.children.append(child)
            self._tended[id(child)] = _Tended(
                restart,
                started=time.monotonic(),
                health=health,
                grace=self.settings.watchdog_start_s,
            )

    def _restart_broker(self, broker: Child) -> subprocess.Popen[bytes]:
        """The broker again, on its port, with its topics made before any client of ours
        can write to it. It lost them with its messages, and the tansu broker loses
        messages written while a topic is being made (auto-created by a write, or made
        by us at the same time): so the processes that talk to it are paused (SIGSTOP)
        from before it listens until its topics are made, a second or two."""
        from shared.kit import bus

        clients = [
            c.proc
            for c in self.children
            if c.name not in ("postgres", "broker") and c.proc.poll() is None
        ]
        self._pauses += 1
        for proc in clients:
            proc.send_signal(signal.SIGSTOP)
        try:
            started = start_broker(log=self.data_dir / "logs" / "broker.log", port=broker.port)
            try:
                asyncio.run(
                    asyncio.wait_for(
                        bus.ensure_topics(broker.url, self.settings.topic_partitions), timeout=10
                    )
                )
            except Exception as error:
                self._note("broker.topics_not_made", error=repr(error))
        finally:
            for proc in clients:
                proc.send_signal(signal.SIGCONT)
            self._pauses += 1
        return started.proc

    # -- supervision ---------------------------------------------------------------

    def _note(self, event: str, **fields: object) -> None:
        line = {"time": datetime.now(UTC).isoformat(), "event": event, **fields}
        with open(self.data_dir / "logs" / "stack.log", "a") as out:
            out.write(json.dumps(line) + "\n")
        if self.echo:
            print(
                f"files: {event} {' '.join(f'{k}={v}' for k, v in fields.items())}",
                file=sys.stderr,
                flush=True,
            )

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            with self._lock:
                for child in list(self.children):
                    if not self._stopping.is_set():
                        self._tend(child)

    def _tend(self, child: Child) -> None:
        tended = self._tended.get(id(child))
        if tended is None:
            return
        now = time.monotonic()
        if child.proc.poll() is None:
            if tended.due is None and now - tended.started > STEADY_S:
                tended.backoff = FIRST_BACKOFF_S
            return
        if tended.due is None:
            status = child.proc.returncode
            self.exits.append((child.name, status, time.time()))
            tended.due = now + tended.backoff
            self._note(
                "exited",
                name=child.name,
                status=status,
                restart_in_s=tended.backoff,
                log=str(self.data_dir / "logs" / f"{child.name}.log"),
            )
            return
        if now < tended.due:
            return
        try:
            child.proc = tended.restart()
        except Exception as error:
            self._note("restart_failed", name=child.name, error=repr(error))
            tended.due = now + tended.backoff
        else:
            self._note("restarted", name=child.name, pid=child.proc.pid)
            tended.started, tended.due = time.monotonic(), None
        tended.backoff = min(tended.backoff * 2, MAX_BACKOFF_S)

    def _watch(self) -> None:
        """Liveness: each round, every service's and gateway's /healthz asked side by
        side; one that missed `watchdog_failures` in a row idle, or
        `watchdog_busy_failures` busy, is killed, to be started again by the
        supervisor."""
        s = self.settings
        round_at = time.monotonic()
        with ThreadPoolExecutor(thread_name_prefix="watchdog") as probes:
            # A round every `watchdog_every_s` from the start of the last, however long
            # its probes waited: a hung process is judged in about failures x every.
            while not self._stopping.wait(
                max(0.0, round_at + s.watchdog_every_s - time.monotonic())
            ):
                round_at = time.monotonic()
                with self._lock:
                    pauses = self._pauses
                    watched = [
                        (child, tended, child.proc)
                        for child in self.children
                        if (tended := self._tended.get(id(child))) is not None
                        and tended.health
                        and tended.due is None
                        and child.proc.poll() is None
                    ]
                answers = list(
                    probes.map(
                        lambda w: _ready(w[1].health, "/healthz", s.watchdog_timeout_s), watched
                    )
                )
                with self._lock:
                    if self._pauses == pauses and not pauses % 2:
                        for (child, tended, proc), alive in zip(watched, answers, strict=True):
                            if child.proc is proc and not self._stopping.is_set():
                                self._judge(child, tended, proc, alive)
                    self.watch_rounds += 1

    def _answered(self, children: list[Child]) -> None:
        """These processes answered as they started (`_wait`): judged from the first
        round, not only once they have answered it (one could hang before)."""
        with self._lock:
            for child in children:
                tended = self._tended.get(id(child))
                if tended is not None and tended.health:
                    tended.pid, tended.answered, tended.missed = child.proc.pid, True, 0

    def _judge(
        self, child: Child, tended: _Tended, proc: subprocess.Popen[bytes], alive: bool
    ) -> None:
        s = self.settings
        if tended.pid != proc.pid:
            tended.pid, tended.answered, tended.missed, tended.unanswered = proc.pid, False, 0, 0
            tended.cpu_at, tended.slow = 0.0, False
        busy = _busy(tended, proc.pid)
        if alive:
            tended.answered, tended.missed, tended.unanswered, tended.slow = True, 0, 0, False
            tended.grace = s.watchdog_start_s
            return
        # Not yet answered: still starting (importing, connecting: a service answers
        # /healthz 5 s into its start, its migrations and rebuilds going on) until its
        # grace is over; then judged as any other.
        starting = not tended.answered
        if starting and time.monotonic() - tended.started < tended.grace:
            return
        tended.unanswered += 1
        if busy:
            # Its event loop held by a long computation: killed, it would lose that
            # work, and under load every replica could be, over and over. Noted once;
            # killed only once it has been so much longer than any computation of ours
            # (an endless loop, a livelock).
            tended.missed = 0
            if tended.unanswered < s.watchdog_busy_failures:
                if not tended.slow:
                    tended.slow = True
                    self._note(
                        "slow",
                        name=child.name,
                        pid=proc.pid,
                        reason=f"/healthz not answered in {s.watchdog_timeout_s:g} s,"
                        " busy on the CPU",
                        action="left running",
                    )
                return
            why = "busy on the CPU, never answering"
        else:
            tended.missed += 1
            if tended.missed < s.watchdog_failures:
                return
            why = "stopped or using next to no CPU"
        if starting:
            why += f", never answered since it started {tended.grace:g} s or more ago"
            # The next start has twice as long, up to 16 times the setting: one slow to
            # serve (a loaded machine's imports) gets there in a few tries, and one that
            # hangs each time is still restarted.
            tended.grace = min(2 * tended.grace, 16 * s.watchdog_start_s) or s.watchdog_every_s
        self._note(
            "unresponsive",
            name=child.name,
            pid=proc.pid,
            reason=(
                f"/healthz not answered {tended.unanswered} times in a row"
                f" (every {s.watchdog_every_s:g} s, {s.watchdog_timeout_s:g} s each), {why}"
            ),
            action="killed (SIGKILL), to be started again",
        )
        # SIGKILL: a stopped process takes no other signal, and a hung one may not act
        # on SIGTERM. The supervisor sees it exit and starts it again.
        proc.send_signal(signal.SIGKILL)
        tended.missed, tended.unanswered = 0, 0

    def _wait(
        self, urls: list[str], deadline: float, probe: str = "/readyz", watched: Child | None = None
    ) -> None:
        pending = list(urls)
        while pending:
            if watched is None:
                self.check_alive()
            elif watched.proc.poll() is not None:
                log = self.data_dir / "logs" / f"{watched.name}.log"
                raise RuntimeError(
                    f"{watched.name} exited with status {watched.proc.returncode}; see {log}"
                )
            pending = [u for u in pending if not _ready(u, probe)]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not ready in time: {', '.join(pending)}")
            time.sleep(0.1)

    def check_alive(self) -> None:
        """Raise, naming its log, if any piece has exited since the start, even one
        started again since (a benchmark's figures would not be of one run)."""
        exited = [(name, status) for name, status, _ in self.exits]
        exited += [(c.name, c.proc.returncode) for c in self.children if c.proc.poll() is not None]
        for name, status in exited:
            raise RuntimeError(
                f"{name} exited with status {status};"
                f" see {self.data_dir / 'logs' / (name + '.log')}"
            )

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        if self._watchdog is not None:
            self._watchdog.join()
        # Services first, so nothing talks to a database or broker that is gone.
        for child in reversed(self.children):
            if child.name == "postgres":
                child.stop(signal.SIGINT)  # fast shutdown: roll back, checkpoint, exit
            else:
                child.stop()
        self.children.clear()
