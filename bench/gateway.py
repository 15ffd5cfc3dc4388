"""Gateway overhead: `GET /v1/folders/{id}` through the gateway against the same request
straight to the catalog, in one run.

The whole platform runs as child processes (`bench._common.stack`). One folder is made;
then requests, one at a time over one keep-alive connection each (`http.client`: the
least a client can add, and the same for both), alternate in rounds between:

- product: `GET /v1/folders/{id}` to the gateway with the admin's API key (the gateway
  matches the route, finds the caller in its two-second cache, forwards to the catalog
  through its httpx client and relays the answer);
- baseline: the same GET to the catalog itself, with the caller's identity token as
  the gateway signs it (`X-Files-Identity`, signed afresh before each round: a token
  lives 60 s) and `X-Correlation-Id`.

10,000 of each (`--quick`: 1,000) after an untimed warm-up, in 4 rounds of each kind,
alternating, so that a burst of load elsewhere on the machine falls on both. p50, p99,
max; target: gateway p50 at most 1.3x the catalog's. Where the CPU went (gateway,
catalog, PostgreSQL, this client) is printed. `--profile` also runs one more gateway
under pyinstrument for a round of its own (its report in bench/.out/gateway-profile.txt).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from bench._common import (
    ADMIN_KEY,
    OUT_DIR,
    CpuMeter,
    Report,
    main,
    percentile,
    progress,
    stack,
)
from shared.kit import identity
from shared.kit.embedded import free_port
from shared.kit.identity import ServiceKey

NAME = "gateway"
# A gateway under pyinstrument, its time charged where the CPU spent it (async mode off:
# an await is not the awaiting frame's time), the report written when it stops.
PROFILED = """
import sys
from pyinstrument import Profiler
from services.gateway.app import main
out = sys.argv.pop(1)
profiler = Profiler(interval=0.0005, async_mode="disabled")
profiler.start()
try:
    main()
finally:
    profiler.stop()
    with open(out, "w") as f:
        f.write(profiler.output_text(show_all=True))
"""
TARGET_P50_RATIO = 1.3
ROUNDS = 4


class Client:
    """One keep-alive connection, timing each request from send to the last byte read."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=30)
        self.headers = headers

    def get(self, path: str) -> tuple[float, int, bytes]:
        start = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        answer = self.conn.getresponse()
        body = answer.read()
        return (time.perf_counter() - start) * 1000, answer.status, body

    def close(self) -> None:
        self.conn.close()


def rounds(
    clients: dict[str, Client],
    path: str,
    n: int,
    report: Report,
    before: Callable[[], None],
) -> dict[str, list[float]]:
    """n requests of each kind, in ROUNDS alternating rounds; `before` each round."""
    times: dict[str, list[float]] = {name: [] for name in clients}
    per_round = max(n // ROUNDS, 1)
    for _ in range(ROUNDS):
        for name, client in clients.items():
            before()
            # A fresh connection, opened untimed: the last one idled through the other
            # kind's round, maybe past the server's keep-alive (5 s).
            client.close()
            client.get(path)
            with report.contention.measure():
                for _ in range(per_round):
                    ms, status, body = client.get(path)
                    if status != 200:
                        raise RuntimeError(f"{name}: {status} {body[:200]!r}")
                    times[name].append(ms)
    return times


def the_admin(acl_url: str, key: ServiceKey) -> dict[str, str]:
    """The admin as the ACL context tells the gateway: id and access string."""
    acl = urllib.parse.urlsplit(acl_url)
    conn = http.client.HTTPConnection(acl.hostname or "", acl.port, timeout=30)
    conn.request(
        "POST",
        "/internal/authenticate",
        body=json.dumps({"api_key": ADMIN_KEY}),
        headers={
            "Content-Type": "application/json",
            identity.HEADER: key.for_service("gateway", "bench-gateway", audience="acl"),
        },
    )
    user: dict[str, str] = json.loads(conn.getresponse().read())
    conn.close()
    return user


def profile(env: dict[str, str], path: str, n: int) -> Path:
    """One more gateway, in front of the same services, under pyinstrument, while `n`
    requests go through it; its report (py-spy cannot read this machine's processes)."""
    OUT_DIR.mkdir(exist_ok=True)
    out = OUT_DIR / "gateway-profile.txt"
    port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-c", PROFILED, str(out), "--port", str(port)],
        env={**env, "FILES_GRPC_PORT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(url, {"Authorization": f"Bearer {ADMIN_KEY}"})
                if client.get(path)[1] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for _ in range(n):
            client.get(path)
        client.close()
    finally:
        gateway.send_signal(signal.SIGINT)
        gateway.wait(60)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", type=int, default=None, help="default 10,000 (1,000 quick)")
    parser.add_argument("--profile", action="store_true", help="profile a gateway (pyinstrument)")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    n = args.requests or (1_000 if args.quick else 10_000)
    report.title = (
        f"gateway overhead: GET /v1/folders/{{id}} through the gateway vs straight to the"
        f" catalog, {n:,} requests each, one at a time"
    )
    progress("starting the stack")
    with stack(workdir) as running:
        gateway = Client(running.gateway_url, {"Authorization": f"Bearer {ADMIN_KEY}"})
        made = http.client.HTTPConnection(
            urllib.parse.urlsplit(running.gateway_url).hostname or "",
            urllib.parse.urlsplit(running.gateway_url).port,
            timeout=30,
        )
        made.request(
            "POST",
            "/v1/folders",
            body=json.dumps({"name": "bench-gateway"}),
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
        )
        answer = made.getresponse()
        folder = json.loads(answer.read())
        made.close()
        if answer.status != 201:
            raise RuntimeError(f"no folder: {answer.status} {folder}")
        path = f"/v1/folders/{folder['id']}"
        key = ServiceKey(running.env["FILES_SERVICE_KEY"])
        admin = the_admin(running.env["FILES_ACL_URL"], key)
        catalog = Client(running.env["FILES_CATALOG_URL"], {})

        def sign() -> None:
            catalog.headers = {
                identity.HEADER: key.sign(
                    admin["id"], admin["access"], "bench-gateway", audience="catalog"
                ),
                "X-Correlation-Id": "bench-gateway",
            }

        sign()
        clients = {"gateway": gateway, "catalog": catalog}
        # The two answers are the same folder.
        assert json.loads(gateway.get(path)[2])["id"] == json.loads(catalog.get(path)[2])["id"]
        progress("warming up")
        rounds(clients, path, max(n // 10, 200), Report(NAME, "", True), sign)
        progress(f"{n:,} requests of each kind, in {ROUNDS} alternating rounds")
        pids = {c.name: c.proc.pid for c in running.children}
        with CpuMeter(pids) as cpu:
            times = rounds(clients, path, n, report, sign)
        if args.profile:
            progress("profiling a gateway of its own with pyinstrument")
            out = profile(running.env, path, min(n, 5_000))
            report.note(f"pyinstrument profile of a gateway: {out}")
        gateway.close()
        catalog.close()
        running.check_alive()

    g, c = times["gateway"], times["catalog"]
    g50, g99 = percentile(g, 50), percentile(g, 99)
    c50, c99 = percentile(c, 50), percentile(c, 99)
    label = f"through the gateway: p50 of {len(g):,}"
    report.figure("gateway_p50_ms", label, g50, "ms", headline=True)
    report.figure("gateway_p99_ms", "through the gateway: p99", g99, "ms")
    report.figure("gateway_max_ms", "through the gateway: max", max(g), "ms", role="detail")
    report.baseline("catalog_p50_ms", f"straight to the catalog: p50 of {len(c):,}", c50, "ms")
    report.baseline("catalog_p99_ms", "straight to the catalog: p99", c99, "ms")
    ratio = report.ratio("p50_ratio", "p50: gateway / catalog", g50, c50)
    report.ratio("p99_ratio", "p99: gateway / catalog", g99, c99)
    share = g50 - c50
    report.figure("overhead_p50_ms", "the gateway's own share at p50", share, "ms", role="detail")
    report.target(
        f"gateway p50 at most {TARGET_P50_RATIO}x the catalog's",
        ratio <= TARGET_P50_RATIO,
        f"{ratio:.2f}x ({g50:.2f} ms vs {c50:.2f} ms)",
    )
    report.note(f"CPU-seconds while measuring: {cpu.describe()}")


if __name__ == "__main__":
    main(NAME, "gateway overhead", body, add_arguments)
