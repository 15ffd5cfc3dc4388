"""DICOM reads on S3 (moto's server): what reading an instance fetches, and what it costs.

Setup (not timed): a bucket on moto's server, N instances of each kind put in it.
Timed, per round, each workload one way then the other (A/B, then B/A the next round):
- `settle`: `handlers.read_all` of N compressed instances (512x512, JPEG-like, one
  fragment of 400 KB): B reads the delimiter's item header after the fragment; A is the
  same code with no ranged read allowed (`fragment_reads` 0): a whole copy, as before.
- `metadata`: WADO-RS metadata of N plain 512x512 slices: B `dicomweb.metadata` (ranged
  header reads); A a whole copy each, then `header_json` of it (the code before).
- `render`: frame 3 of N 16-frame 256x256 instances (2 MB) drawn as the viewer's slice is: B
  `slices.drawn_by_range` (the header, then the frame); A a whole copy, then
  `slices.drawn` of it. `render1`: the same for N plain 512x512 slices (0.5 MB: read
  whole in one request either way, B without the spool file).
`--ways A` runs the whole copies alone: on a checkout before the ranged reads, the
code of then (its drawing decodes every frame). Figures: seconds and CPU-s of this
process (the service's part) and of the drawing workers, and MB fetched from the
store, per round; the ratio B/A of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from bench._common import Report, main, progress
from services.dicom import dicomweb, handlers, reader, slices
from shared.kit.blobs import S3BlobStore
from shared.kit.blobs.s3 import parse_url
from shared.kit.embedded import start_s3_server
from tests.dicom_fixtures import ct_dataset, ct_slice, to_bytes, uid

NAME = "dicom_s3"


class Counted(S3BlobStore):
    """An S3 store that counts the bytes it fetches, however they are read."""

    fetched = 0

    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        data, size = super().read_head(key, length)
        self.fetched += len(data)
        return data, size

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        data = super().read_at(key, offset, length)
        self.fetched += len(data)
        return data

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        async with super().local_copy(key) as path:
            self.fetched += path.stat().st_size
            yield path


def _compressed(n: int) -> bytes:
    ds = ct_dataset(rows=512, columns=512, sop_uid=uid(60, n), transfer_syntax=JPEGBaseline8Bit)
    frame = b"\xff\xd8" + bytes([n % 251]) * (400_000 - 4) + b"\xff\xd9"
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return to_bytes(ds)


def _frames(n: int) -> bytes:
    pixels = bytes((i * 13 + n) % 251 for i in range(256 * 256 * 2)) * 16
    ds = ct_dataset(rows=256, columns=256, sop_uid=uid(61, n), pixel_data=pixels)
    ds.NumberOfFrames = 16
    return to_bytes(ds)


@contextlib.contextmanager
def _whole_copies() -> Iterator[None]:
    """No item header read by range: each compressed instance copied whole (as a
    checkout from before those reads does anyway, without this attribute)."""
    before = vars(reader).get("fragment_reads")
    reader.fragment_reads = lambda size: 0  # type: ignore[assignment]
    try:
        yield
    finally:
        if before is not None:
            reader.fragment_reads = before  # type: ignore[assignment]


def _workers_cpu() -> float:
    total = 0.0
    for worker in list(slices.RENDERER._all):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / 100  # utime, stime: clock ticks
    return total


async def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    n, rounds = (10, 2) if args.quick else (args.count, args.rounds)
    moto = start_s3_server(workdir / "moto.log")
    url = f"s3://bench-{uuid.uuid4().hex[:8]}?endpoint={moto.url}&region=us-east-1"
    s3 = Counted(parse_url(url), workdir / "spool", "bench-key", "bench-secret")
    await s3.start()
    try:
        kinds: dict[str, Callable[[int], bytes]] = {
            "settle": _compressed,
            "metadata": lambda i: ct_slice(rows=512, columns=512, sop_uid=uid(62, i)),
            "render": _frames,
            "render1": lambda i: ct_slice(rows=512, columns=512, sop_uid=uid(63, i)),
        }
        keys: dict[str, list[str]] = {}
        sizes: dict[str, int] = {}
        for kind, make in kinds.items():
            made = [(f"{kind}/{i}", make(i)) for i in range(n)]
            await s3.put_many(made)
            keys[kind] = [k for k, _ in made]
            sizes.update((k, len(d)) for k, d in made)
        progress(f"{n} instances of each kind stored on moto")

        async def settle(ranged: bool) -> None:
            with contextlib.nullcontext() if ranged else _whole_copies():
                found = await handlers.read_all(s3, keys["settle"])
            assert all(not hasattr(f, "code") for f in found), found

        async def metadata(ranged: bool) -> None:
            wanted = [dicomweb.Stored(k, k, sizes[k]) for k in keys["metadata"]]
            if ranged:
                gate = asyncio.Semaphore(dicomweb.METADATA_PARALLEL)
                async for _ in dicomweb.metadata(s3, wanted, gate):
                    pass
                return
            for i in wanted:  # main's way: a whole copy, then its header (8 at once there)
                async with s3.local_copy(i.blob_key) as path:
                    await asyncio.to_thread(dicomweb.header_json, path)

        def drawing(kind: str, frame: int) -> Callable[[bool], Any]:
            async def draw(ranged: bool) -> None:
                for key in keys[kind]:
                    if ranged:
                        read_at = functools.partial(s3.read_at, key)
                        await asyncio.to_thread(slices.drawn_by_range, read_at, sizes[key], frame)
                    else:
                        async with s3.local_copy(key) as path:
                            await asyncio.to_thread(slices.drawn, path, frame)

            return draw

        work = {
            "settle": settle,
            "metadata": metadata,
            "render": drawing("render", 2),
            "render1": drawing("render1", 0),
        }
        ways = [w == "B" for w in args.ways]
        await drawing("render1", 0)(ways[0])  # the workers started, not timed
        seen: dict[tuple[str, bool], list[tuple[float, float, float, float]]] = {}
        for r in range(rounds):
            for kind, run in work.items():
                for ranged in ways if r % 2 == 0 else ways[::-1]:
                    s3.fetched = 0
                    cpu, workers, start = time.process_time(), _workers_cpu(), time.monotonic()
                    with report.contention.measure():
                        await run(ranged)
                    seen.setdefault((kind, ranged), []).append(
                        (
                            time.monotonic() - start,
                            time.process_time() - cpu,
                            _workers_cpu() - workers,
                            s3.fetched / 1e6,
                        )
                    )
            progress(f"round {r + 1} of {rounds}")
        for kind in work:
            a, b = seen.get((kind, False), []), seen.get((kind, True), [])
            for way, runs in (("A whole copy", a), ("B ranged", b)):
                if not runs:
                    continue
                role = "baseline" if way.startswith("A") else "product"
                for i, what, unit in ((0, "s", "s"), (1, "CPU-s", "CPU-s"), (3, "fetched", "MB")):
                    report.figure(
                        f"{kind}_{role}_{what}",
                        f"{kind} ({n}), {way}: {what}, median of rounds",
                        statistics.median(x[i] for x in runs),
                        unit,
                        role=role,
                    )
                if kind.startswith("render"):
                    report.figure(
                        f"{kind}_{role}_workers",
                        f"{kind} ({n}), {way}: workers' CPU-s, median",
                        statistics.median(x[2] for x in runs),
                        "CPU-s",
                        role=role,
                    )
            for i, what in ((0, "s"), (1, "CPU-s"), (3, "fetched")):
                if not (a and b):
                    break
                report.ratio(
                    f"{kind}_{what}",
                    f"{kind}: B/A {what}",
                    statistics.median(x[i] for x in b),
                    statistics.median(x[i] for x in a),
                )
        report.note("moto's per-request cost dominates the seconds; bytes fetched are exact")
    finally:
        await s3.close()
        slices.RENDERER.stop()
        moto.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=50, help="instances of each kind")
    parser.add_argument("--rounds", type=int, default=4, help="default 4")
    parser.add_argument(
        "--ways",
        choices=["AB", "A", "B"],
        default="AB",
        help="A: whole copies only (runs on the code before ranged reads too), B: ranged only",
    )


if __name__ == "__main__":
    main(
        NAME,
        "DICOM reads on S3: ranged reads against whole copies",
        lambda args, workdir, report: asyncio.run(body(args, workdir, report)),
        add_arguments,
    )
