"""`files upload` (the command, in a process of its own) against the raw API path.

Product: `files upload DIR --to <new folder>` of a directory of 10,000 small files (4 KiB:
a PNG header and random bytes; `--quick`: 1,000), and `files upload BIG --to ...` of one
1 GiB file (`--quick`: 64 MiB), timed from the command's start to its exit (process start,
folder made, files sent: small ones 500 a request, 4 requests in flight; the large one as
an upload session, 64 MiB parts, 4 in flight). Not a terminal: no progress bar.
Baselines, in the same run: the raw HTTP path by hand with httpx: the small files as
multipart POSTs of 100 files, 4 in flight (what bench.upload_small measures), into a
folder made beforehand; the large file as an upload session done by hand (open, PUT the
parts from the file 4 at a time, complete), as bench.upload_session does.
Each side runs `--rounds` times (2; 1 with --quick), alternating; the best counts. Each
round sends bytes the store has not seen (8 bytes of the large file changed; small files
random), so no content key is skipped. The folder is checked to list every file.
Target: the command at ≥ 80% of the raw path's rate, for both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench._common import ADMIN_KEY, MB, CpuMeter, MiB, Report, main, progress, stack
from bench.upload_large import Content
from bench.upload_session import PART_SIZE, put_parts, write_content

NAME = "cli_upload"
FILES = str(Path(sys.executable).parent / "files")
PNG_HEAD = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000010000000100802000000")
TARGET = 0.8


def small_tree(root: Path, count: int, size: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"img_{i:05d}.png").write_bytes(PNG_HEAD + os.urandom(size - len(PNG_HEAD)))


def mark(path: Path, round_no: int) -> None:
    with open(path, "r+b") as f:
        f.seek(MiB)
        f.write(uuid.uuid4().bytes[:8] + round_no.to_bytes(4, "big"))


def run_cli(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([FILES, *args], env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"files {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return elapsed


def new_folder(api: httpx.Client, prefix: str) -> dict[str, Any]:
    answer = api.post("/v1/folders", json={"name": f"{prefix}-{uuid.uuid4().hex[:8]}"})
    answer.raise_for_status()
    return dict(answer.json())


def listed(api: httpx.Client, folder_id: str) -> int:
    answer = api.get(f"/v1/folders/{folder_id}/summary")
    answer.raise_for_status()
    return int(answer.json()["files"])


def raw_small(api: httpx.Client, folder_id: str, paths: list[Path], batch: int, par: int) -> float:
    def post(group: list[Path]) -> None:
        parts = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in group]
        answer = api.post(f"/v1/folders/{folder_id}/files", files=parts)
        if answer.status_code != 201:
            raise RuntimeError(f"upload answered {answer.status_code}: {answer.text[:300]}")

    groups = [paths[i : i + batch] for i in range(0, len(paths), batch)]
    start = time.perf_counter()
    with ThreadPoolExecutor(par) as pool:
        for done in [pool.submit(post, g) for g in groups]:
            done.result()
    return time.perf_counter() - start


def raw_session(api: httpx.Client, parts_http: httpx.Client, folder_id: str, path: Path) -> float:
    start = time.perf_counter()
    answer = api.post(
        f"/v1/folders/{folder_id}/uploads",
        json={"name": path.name, "size": path.stat().st_size, "part_size": PART_SIZE},
    )
    answer.raise_for_status()
    session = answer.json()
    put_parts(parts_http, path, session["parts"], 4)
    done = api.post(f"/v1/uploads/{session['id']}/complete")
    if done.status_code not in (201, 202):  # 202: stored, not listed yet
        raise RuntimeError(f"complete answered {done.status_code}: {done.text[:300]}")
    return time.perf_counter() - start


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", type=int, default=None, help="default 10,000 (1,000 quick)")
    parser.add_argument("--size-mib", type=int, default=None, help="default 1024 (64 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="default 2 (1 quick)")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    count = args.files or (1_000 if args.quick else 10_000)
    size = (args.size_mib or (64 if args.quick else 1024)) * MiB
    rounds = args.rounds or (1 if args.quick else 2)
    small_size = 4096
    report.title = (
        f"`files upload` of {count:,} files of 4 KiB and of one {size / MiB:,.0f} MiB file,"
        f" against the raw HTTP path (best of {rounds})"
    )
    progress(f"writing {rounds} x {count:,} small files and {size / MiB:,.0f} MiB (not timed)")
    trees = []
    for r in range(rounds):
        for side in ("cli", "raw"):
            root = workdir / f"small-{side}-{r}" / "shots"
            small_tree(root, count, small_size)
            trees.append(root)
    big = workdir / "big" / "scan.png"
    big.parent.mkdir()
    write_content(Content(size), big)

    found: dict[str, list[float]] = {"cli_small": [], "raw_small": [], "cli_big": [], "raw_big": []}
    with stack(workdir) as running:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FILES_")},
            "FILES_URL": running.gateway_url,
            "FILES_API_KEY": ADMIN_KEY,
            "XDG_CONFIG_HOME": str(workdir / "config"),
            "XDG_STATE_HOME": str(workdir / "state"),
        }
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        everyone = {c.name: c.proc.pid for c in running.children}
        with (
            httpx.Client(base_url=running.gateway_url, headers=headers, timeout=600) as api,
            httpx.Client(timeout=600) as parts_http,
        ):
            # Warm-up, not timed: each path once, a few files.
            warm = workdir / "warm" / "w"
            small_tree(warm, 20, small_size)
            run_cli(env, "upload", str(warm), "--to", f"warm-{uuid.uuid4().hex[:6]}")
            raw_small(api, new_folder(api, "warm")["id"], sorted(warm.iterdir()), 100, 4)
            with report.contention.measure(), CpuMeter(everyone) as cpu:
                for r in range(rounds):
                    cli_tree, raw_tree = trees[2 * r], trees[2 * r + 1]
                    top = f"cli-{uuid.uuid4().hex[:8]}"
                    found["cli_small"].append(run_cli(env, "upload", str(cli_tree), "--to", top))
                    target = new_folder(api, "raw")
                    paths = sorted(raw_tree.iterdir())
                    found["raw_small"].append(raw_small(api, target["id"], paths, 100, 4))
                    found_cli = listed(api, _folder_id(api, f"{top}/shots"))
                    if found_cli != count or listed(api, target["id"]) != count:
                        raise RuntimeError(f"the folders list {found_cli} and not {count}")
                    progress(
                        f"round {r + 1}, small: files upload"
                        f" {count / found['cli_small'][-1]:,.0f} files/s,"
                        f" raw {count / found['raw_small'][-1]:,.0f} files/s"
                    )
                    mark(big, 2 * r + 1)
                    top = f"cli-big-{uuid.uuid4().hex[:8]}"
                    found["cli_big"].append(run_cli(env, "upload", str(big), "--to", top))
                    mark(big, 2 * r + 2)
                    target = new_folder(api, "raw-big")
                    found["raw_big"].append(raw_session(api, parts_http, target["id"], big))
                    progress(
                        f"round {r + 1}, large: files upload"
                        f" {size / found['cli_big'][-1] / MB:,.0f} MB/s,"
                        f" raw {size / found['raw_big'][-1] / MB:,.0f} MB/s"
                    )
        running.check_alive()

    cli_small, raw_small_s = min(found["cli_small"]), min(found["raw_small"])
    cli_big, raw_big = min(found["cli_big"]), min(found["raw_big"])
    small_rate, raw_small_rate = count / cli_small, count / raw_small_s
    big_rate, raw_big_rate = size / cli_big / MB, size / raw_big / MB
    report.figure("small_files_per_s", f"files upload, {count:,} small files", small_rate,
                  "files/s", headline=True)  # fmt: skip
    report.figure("small_s", f"files upload, {count:,} small files", cli_small, "s")
    report.baseline("raw_small_files_per_s", "raw multipart, 100 a request, 4 in flight",
                    raw_small_rate, "files/s")  # fmt: skip
    small_ratio = report.ratio("small_ratio", "small: command / raw", small_rate, raw_small_rate)
    report.figure("large_mb_per_s", f"files upload, one {size / MiB:,.0f} MiB file", big_rate,
                  "MB/s", headline=True)  # fmt: skip
    report.baseline("raw_large_mb_per_s", "upload session by hand, 4 parts in flight",
                    raw_big_rate, "MB/s")  # fmt: skip
    big_ratio = report.ratio("large_ratio", "large: command / raw", big_rate, raw_big_rate)
    report.target(f"small files: ≥ {TARGET:.0%} of raw", small_ratio >= TARGET,
                  f"{small_ratio:.2f}")  # fmt: skip
    report.target(f"one large file: ≥ {TARGET:.0%} of raw", big_ratio >= TARGET,
                  f"{big_ratio:.2f}")  # fmt: skip
    report.note(f"CPU-seconds, all rounds, both sides: {cpu.describe()}")
    report.note(
        "seconds of each round: "
        + "; ".join(f"{k} " + ", ".join(f"{s:.2f}" for s in v) for k, v in found.items())
    )


def _folder_id(api: httpx.Client, path: str) -> str:
    parent = None
    for name in path.split("/"):
        params = {"parent_id": parent} if parent else {}
        page = api.get("/v1/folders", params={**params, "limit": 1000}).json()
        parent = next(f["id"] for f in page["items"] if f["name"] == name)
    assert parent is not None
    return parent


if __name__ == "__main__":
    main(NAME, "files upload against the raw HTTP path", body, add_arguments)
