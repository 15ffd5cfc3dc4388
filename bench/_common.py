"""What every benchmark shares: arguments, a temp data dir, the pieces to start, the report.

Each benchmark owns everything it starts: a temp data dir of its own, free ports, and the
child processes (PostgreSQL, the broker, the services), which are stopped on the way out
whatever happened. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from shared.kit.embedded import Child, free_port, start_broker, start_postgres
from shared.kit.settings import Settings
from shared.kit.stack import Stack

ADMIN_KEY = "files_bench_admin_key_0123456789abcdef"
OUT_DIR = Path(__file__).parent / ".out"
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MB = 1_000_000


# -- the machine ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _tree_cpu_seconds() -> float:
    """CPU time of this process and every descendant, including reaped grandchildren."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


class Contention:
    """How much CPU other processes on the machine used while we measured.

    Approximate: the machine's busy time minus our process tree's. Another engineer's test
    suite running at the same time shows up here.
    """

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._start: tuple[float, float, float] | None = None

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))

    def start(self) -> None:
        # What the file system had to write before is written before we measure: the
        # previous run's cleanup (its 10,000 blobs and its PostgreSQL cluster deleted)
        # and this run's own setup (files generated, the baseline loop) were otherwise
        # written back by the product's first syncfs, charged to ingest (3.0 or 7.0
        # CPU-s for the same upload_small, depending on what ran just before).
        os.sync()
        self._start = (time.monotonic(), self._busy(), _tree_cpu_seconds())

    def stop(self) -> None:
        if self._start is None:
            return
        t0, busy0, ours0 = self._start
        wall = time.monotonic() - t0
        others = max((self._busy() - busy0) - (_tree_cpu_seconds() - ours0), 0.0)
        self.samples.append((wall, others))
        self._start = None

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()

    def summary(self) -> dict[str, float]:
        wall = sum(w for w, _ in self.samples)
        others = sum(o for _, o in self.samples)
        cores = len(os.sched_getaffinity(0))
        share = others / (wall * cores) if wall else 0.0
        return {"wall_s": round(wall, 2), "others_cpu_s": round(others, 2), "others_share": share}


# -- the report ----------------------------------------------------------------------


@dataclass
class Report:
    name: str
    title: str
    quick: bool
    lines: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    contention: Contention = field(default_factory=Contention)

    def figure(
        self,
        key: str,
        label: str,
        value: float,
        unit: str,
        role: str = "product",
        headline: bool = False,
    ) -> float:
        self.lines.append(
            {
                "kind": role,
                "key": key,
                "label": label,
                "value": value,
                "unit": unit,
                "headline": headline,
            }
        )
        return value

    def baseline(self, key: str, label: str, value: float, unit: str) -> float:
        return self.figure(key, label, value, unit, role="baseline")

    def ratio(self, key: str, label: str, product: float, baseline: float) -> float:
        value = product / baseline if baseline else float("nan")
        self.lines.append(
            {"kind": "ratio", "key": key, "label": label, "value": value, "unit": "x"}
        )
        return value

    def target(self, label: str, met: bool, measured: str) -> None:
        self.targets.append({"label": label, "met": met, "measured": measured})

    def note(self, text: str) -> None:
        self.notes.append(text)

    def render(self) -> str:
        out = [f"== {self.name}{' (--quick)' if self.quick else ''}: {self.title} =="]
        width = max((len(line["label"]) for line in self.lines), default=20)
        for line in self.lines:
            value = line["value"]
            shown = f"{value:,.3f}" if line["kind"] == "ratio" else _number(value)
            out.append(f"  {line['kind']:<9} {line['label']:<{width}}  {shown:>14} {line['unit']}")
        for t in self.targets:
            verdict = "MET" if t["met"] else "NOT MET"
            out.append(f"  target    {t['label']}: {verdict} ({t['measured']})")
        c = self.contention.summary()
        if c["wall_s"]:
            out.append(
                f"  machine   other processes used {c['others_cpu_s']:.1f} CPU-s during"
                f" {c['wall_s']:.1f} s of measurement ({c['others_share']:.0%} of the machine)"
            )
        out += [f"  note      {n}" for n in self.notes]
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "quick": self.quick,
            "machine": machine(),
            "lines": self.lines,
            "targets": self.targets,
            "notes": self.notes,
            "contention": self.contention.summary(),
        }


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile, p in 0..100."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(int(-(-p * len(ordered) // 100)), 1)
    return ordered[min(rank, len(ordered)) - 1]


# -- running one benchmark -----------------------------------------------------------


def _terminate(signum: int, _frame: object) -> None:
    # Turn SIGTERM into an exception so every `finally` runs and the children are stopped.
    raise SystemExit(128 + signum)


def main(
    name: str,
    title: str,
    body: Callable[[argparse.Namespace, Path, Report], None],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=title)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temp data dir")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    # platformdirs (imported by the embedded pieces) warns about XDG_RUNTIME_DIR; not ours.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    signal.signal(signal.SIGTERM, _terminate)
    report = Report(name, title, args.quick)
    info = machine()
    print(
        f"# bench.{name}: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB,"
        f" load {info['loadavg_1m']}, {info['date']}",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix=f"files-bench-{name}-"))
    failed = False
    try:
        body(args, workdir, report)
    except BaseException:
        failed = True
        _show_logs(workdir)
        raise
    finally:
        if args.keep or (failed and os.environ.get("FILES_BENCH_KEEP_ON_ERROR")):
            print(f"# data kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if not failed:
            print(report.render(), flush=True)
            data = report.as_dict()
            OUT_DIR.mkdir(exist_ok=True)
            suffix = "-quick" if args.quick else ""
            (OUT_DIR / f"{name}{suffix}.json").write_text(json.dumps(data, indent=2))
            if args.json:
                args.json.write_text(json.dumps(data, indent=2))


def _show_logs(workdir: Path, lines: int = 30) -> None:
    for log in sorted(workdir.rglob("*.log")):
        with contextlib.suppress(OSError):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                print(f"--- last {len(tail)} lines of {log.name} ---", file=sys.stderr)
                print("\n".join(tail), file=sys.stderr)


def progress(text: str) -> None:
    print(f"  .. {text}", flush=True)


# -- the pieces ----------------------------------------------------------------------


@contextlib.contextmanager
def postgres(workdir: Path, *, durable: bool = True) -> Iterator[Child]:
    """An embedded PostgreSQL of our own, stopped on the way out (from the main thread)."""
    child = start_postgres(workdir / "pg", durable=durable, log=workdir / "postgres.log")
    try:
        yield child
    finally:
        child.stop(signal.SIGINT)


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[Child]:
    child = start_broker(log=workdir / "broker.log")
    try:
        yield child
    finally:
        child.stop()


@contextlib.contextmanager
def stack(
    workdir: Path, *, durable: bool = True, pg_options: tuple[str, ...] = (), **overrides: Any
) -> Iterator[Stack]:
    """The whole platform as child processes, with its own PostgreSQL and broker.

    `overrides` are more Settings fields (`blob_url=...`, `s3_access_key=...`); the
    services get them as FILES_* variables; `pg_options` more PostgreSQL settings
    (`PgStats.OPTIONS`). Start it from the main thread: the children get SIGTERM when the
    thread that started them ends (PR_SET_PDEATHSIG).
    """
    fields: dict[str, Any] = {
        "data_dir": workdir / "stack",
        "database_url": "",
        "kafka_bootstrap": "",
        "blob_url": "",
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "bootstrap_admin_key": ADMIN_KEY,
    }
    settings = Settings(**{**fields, **overrides})
    running = Stack(settings, durable=durable, pg_options=pg_options)
    try:
        running.start()
        yield running
    finally:
        running.stop()


class CpuMeter:
    """CPU-seconds each named process (with its descendants) used between start and stop.

    Shows where the time of an end-to-end benchmark goes: gateway, ingest, catalog,
    PostgreSQL (the postmaster and its backends), the broker, and this client.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "client": os.getpid()}
        self.used: dict[str, float] = {}
        # Of `used`, the time in the kernel: where a blob commit's syncfs shows.
        self.kernel: dict[str, float] = {}
        self._start: dict[str, tuple[float, float]] = {}

    def _snapshot(self) -> dict[str, tuple[float, float]]:
        found = {}
        for name, pid in self.pids.items():
            total = kernel = 0.0
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                kids = [] if name == "client" else proc.children(recursive=True)
                for p in [proc, *kids]:
                    with contextlib.suppress(psutil.Error):
                        t = p.cpu_times()
                        total += t.user + t.system
                        kernel += t.system
                        if name != "client":
                            total += t.children_user + t.children_system
                            kernel += t.children_system
            found[name] = (total, kernel)
        return found

    def __enter__(self) -> CpuMeter:
        self._start = self._snapshot()
        return self

    def __exit__(self, *_: object) -> None:
        end = self._snapshot()
        zero = (0.0, 0.0)
        self.used = {n: max(end[n][0] - self._start.get(n, zero)[0], 0.0) for n in end}
        self.kernel = {n: max(end[n][1] - self._start.get(n, zero)[1], 0.0) for n in end}

    def describe(self) -> str:
        ordered = sorted(self.used.items(), key=lambda kv: -kv[1])
        return ", ".join(
            f"{name} {seconds:.1f}"
            + (f" (kernel {self.kernel[name]:.1f})" if self.kernel.get(name, 0) >= 0.5 else "")
            for name, seconds in ordered
        )


class PgStats:
    """PostgreSQL's statements by total time while measured (pg_stat_statements).

    A benchmark's option only: the embedded PostgreSQL preloads the module when asked
    (`OPTIONS` to `stack`), never in the platform's own configuration. The counters are
    reset as the measure starts and read as it ends, so the stack's start (migrations)
    is left out.
    """

    OPTIONS = (
        "shared_preload_libraries=pg_stat_statements",
        # Statements run inside functions and DO blocks are counted as themselves too.
        "pg_stat_statements.track=all",
        "pg_stat_statements.max=5000",
    )

    def __init__(self, url: str, postmaster: int, services: dict[str, int], top: int = 30) -> None:
        self.url = url
        self.top = top
        self.rows: list[dict[str, Any]] = []
        self.all: list[dict[str, Any]] = []
        self.totals: dict[str, float] = {}
        # Whose are PostgreSQL's CPU-seconds: each backend's client port matched to a
        # service's sockets, else the backend's type (autovacuum, walwriter, ...).
        self.postmaster = postmaster
        self.services = services
        self._cpu_start: dict[int, float] = {}
        self._reaped_start = 0.0
        self._commits_start = 0
        self.commits = 0
        self.cpu_by: dict[str, float] = {}

    async def _run(self, sql: str) -> list[Any]:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    def _processes(self) -> tuple[dict[int, float], float]:
        used: dict[int, float] = {}
        reaped = 0.0
        with contextlib.suppress(psutil.Error):
            master = psutil.Process(self.postmaster)
            t = master.cpu_times()
            reaped = t.children_user + t.children_system
            for proc in [master, *master.children()]:
                with contextlib.suppress(psutil.Error):
                    c = proc.cpu_times()
                    used[proc.pid] = c.user + c.system
        return used, reaped

    def _owners(self, activity: list[Any]) -> dict[int, str]:
        ports: dict[int, str] = {}
        for name, pid in self.services.items():
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(pid)
                for proc in [top, *top.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        for c in proc.net_connections(kind="tcp"):
                            if c.laddr:
                                ports[c.laddr.port] = name
        owners = {}
        for a in activity:
            port = a["client_port"]
            owners[a["pid"]] = ports.get(port, "other client") if port else a["backend_type"]
        return owners

    def _commits(self) -> int:
        import asyncio

        (row,) = asyncio.run(
            self._run("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        )
        return int(row["xact_commit"])

    def reset(self) -> None:
        import asyncio

        asyncio.run(self._run("SELECT pg_stat_statements_reset()"))
        self._commits_start = self._commits()
        self._cpu_start, self._reaped_start = self._processes()

    def read(self) -> None:
        import asyncio

        used, reaped = self._processes()
        self.commits = self._commits() - self._commits_start
        activity = asyncio.run(
            self._run("SELECT pid, client_port, backend_type FROM pg_stat_activity")
        )
        owners = self._owners(activity)
        by: dict[str, float] = {}
        for pid, seconds in used.items():
            name = "postmaster" if pid == self.postmaster else owners.get(pid, "gone")
            by[name] = by.get(name, 0.0) + seconds - self._cpu_start.get(pid, 0.0)
        # Processes that ended meanwhile (autovacuum workers, a pool's closed backends).
        by["ended processes"] = reaped - self._reaped_start
        self.cpu_by = dict(sorted(by.items(), key=lambda kv: -kv[1]))
        rows = asyncio.run(
            self._run(
                "SELECT query, calls, total_exec_time, rows, shared_blks_hit,"
                " shared_blks_read, wal_records, wal_bytes::bigint FROM pg_stat_statements"
                " WHERE query NOT LIKE '%pg_stat_statements%'"
                " ORDER BY total_exec_time DESC"
            )
        )
        self.totals = {
            "statements": len(rows),
            "calls": sum(r["calls"] for r in rows),
            "ms": sum(r["total_exec_time"] for r in rows),
        }
        self.all = [dict(r) for r in rows]
        self.rows = [dict(r) for r in rows[: self.top]]
        # The most frequent too: a cheap statement issued per batch costs its round trip,
        # parse and transaction more than its execution shows.
        chosen = {r["query"] for r in self.rows}
        frequent = sorted(rows, key=lambda r: -r["calls"])[: self.top // 2]
        self.rows += [dict(r) for r in frequent if r["query"] not in chosen]

    def describe(self, per: int | None = None) -> str:
        """A table of the top statements; `per` files turns calls into calls a file."""
        t = self.totals
        out = [
            "PostgreSQL's CPU-s by whose backend: "
            + ", ".join(f"{k} {v:.2f}" for k, v in self.cpu_by.items() if v >= 0.01),
            f"pg_stat_statements: {t.get('calls', 0):,} calls of {t.get('statements', 0)}"
            f" statements, {t.get('ms', 0.0):,.0f} ms of execution in all, {self.commits:,}"
            f" commits; by time, then the most frequent:",
            f"{'ms':>9} {'calls':>8} {'rows':>8} {'/file':>6} {'ms/call':>8} {'blks':>8}"
            f" {'wal':>7}  query",
        ]
        for r in self.rows:
            text = " ".join(str(r["query"]).split())
            per_file = f"{r['calls'] / per:6.2f}" if per else "     -"
            out.append(
                f"{r['total_exec_time']:9,.0f} {r['calls']:8,} {r['rows']:8,} {per_file}"
                f" {r['total_exec_time'] / max(r['calls'], 1):8.3f}"
                f" {r['shared_blks_hit'] + r['shared_blks_read']:8,} {r['wal_records']:7,}"
                f"  {text[:200]}"
            )
        return "\n".join(out)


class RssSampler:
    """Peak resident memory of some processes, sampled in a thread every `interval` s."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.peak = dict.fromkeys(pids, 0)
        self.start_rss = dict.fromkeys(pids, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                rss = proc.memory_info().rss
                self.peak[name] = max(self.peak[name], rss)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                self.start_rss[name] = proc.memory_info().rss
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
