"""Run every benchmark (or the ones named), each in a process of its own, then sum up.

uv run python -m bench                 # all of them, full sizes (what `make bench` runs)
uv run python -m bench --quick         # small sizes: a smoke run
uv run python -m bench search eventstore
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCHMARKS = (
    "upload_small",
    "upload_large",
    "upload_session",
    "eventstore",
    "rebuild",
    "search",
    "catalog_filters",
    "access",
    "datasets",
    "trash",
    "dicom",
    "dicom_s3",
    "imports",
    "cloud_sync",
    "gateway",
    "thumbnails",
    "reencode",
    "media_facts",
    "cli_upload",
    "envelopes",
)
TIMEOUT_S = {"quick": 300, "full": 1800}


def run_one(name: str, quick: bool) -> tuple[int, dict[str, Any] | None, float]:
    with tempfile.TemporaryDirectory(prefix="files-bench-") as tmp:
        out = Path(tmp) / "figures.json"
        cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(out)]
        if quick:
            cmd.append("--quick")
        start = time.monotonic()
        proc = subprocess.Popen(cmd)
        try:
            code = proc.wait(timeout=TIMEOUT_S["quick" if quick else "full"])
        except subprocess.TimeoutExpired:
            print(f"!! bench.{name} timed out; stopping it", flush=True)
            code = 124
        finally:
            if proc.poll() is None:
                # SIGTERM lets the benchmark stop the processes it started.
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        figures = json.loads(out.read_text()) if out.exists() and code == 0 else None
        return code, figures, time.monotonic() - start


def summary(results: dict[str, tuple[int, dict[str, Any] | None, float]]) -> str:
    out = ["", "== summary =="]
    for name, (code, figures, seconds) in results.items():
        if figures is None:
            out.append(f"  {name} FAILED (exit status {code}) after {seconds:.0f} s")
            continue
        lines = figures["lines"]
        heads = [x for x in lines if x.get("headline")]
        heads = heads or [x for x in lines if x["kind"] == "product"][:1]
        out.append(f"  {name} ({seconds:.0f} s)")
        for x in heads:
            out.append(f"      {x['label']}: {x['value']:,.1f} {x['unit']}")
        for x in lines:
            if x["kind"] == "ratio":
                out.append(f"      ratio {x['label']}: {x['value']:.3f}")
        for t in figures["targets"]:
            verdict = "MET    " if t["met"] else "NOT MET"
            out.append(f"      {verdict} {t['label']} ({t['measured']})")
        share = figures["contention"]["others_share"]
        if share >= 0.05:
            out.append(f"      machine shared: other processes used {share:.0%} of it meanwhile")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; there are {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    results = {}
    for name in names:
        results[name] = run_one(name, args.quick)
        print(flush=True)
    print(summary(results), flush=True)
    if any(code != 0 for code, _, _ in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
