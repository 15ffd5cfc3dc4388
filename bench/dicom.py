"""DICOM header parse and series assembly: instances/s, against a plain pydicom loop.

2,000 CT instances (`--quick`: 200) are written into the temp dir first, not timed: 10
series (`--series`) of 200 slices (`--slices`), 64x64 pixels of 16 bits (8 KiB of pixel data,
about 9 KiB a file), built with pydicom by `tests.dicom_fixtures.ct_series` in the DICOM
File Format (explicit VR little endian), every series with all the 3D tags; half of them
axial, half oblique (30° about x, 20° about z); two patients, five studies. The file list is
shuffled (seeded), so that series assembly has slices to order.

Product: `services.dicom.domain.read_instance(path)` for every file (headers only, every
kept tag checked), then `admit` and `assemble` over the instances; the result is checked
(every series whole, renderable, its slices in order along the normal). Instances/s over
the whole pass. Baseline: a plain `pydicom.dcmread(path, stop_before_pixels=True)` loop
over the same files, nothing else. One untimed pass of each warms the page cache; then
`--rounds` rounds (default 5), each timing the baseline then the product, and the best
round of each counts (the machine is shared; the best is the least disturbed).
Target: baseline time / product time at least 0.5 (the product at most twice as slow).
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import pydicom

from bench._common import Report, main, progress
from services.dicom.domain import Instance, admit, assemble, read_instance
from tests.dicom_fixtures import AXIAL, OBLIQUE, ct_series, uid

NAME = "dicom"
TARGET_RATIO = 0.5
SEED = 20261125
PIXELS = 64


def write_files(workdir: Path, series: int, slices: int) -> list[Path]:
    paths = []
    folder = workdir / "instances"
    folder.mkdir()
    for s in range(series):
        data = ct_series(
            slices,
            series=s + 1,
            study=s // 2 + 1,
            patient_id=f"PAT-{s % 2:04d}",
            orientation=AXIAL if s % 2 == 0 else OBLIQUE,
            rows=PIXELS,
            columns=PIXELS,
        )
        for k, content in enumerate(data):
            path = folder / f"s{s:02d}_{k:04d}.dcm"
            path.write_bytes(content)
            paths.append(path)
    random.Random(SEED).shuffle(paths)
    return paths


def baseline_pass(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        pydicom.dcmread(path, stop_before_pixels=True)
    return time.perf_counter() - start


def product_pass(paths: list[Path]) -> tuple[float, float, list[Instance], int]:
    """(total seconds, of which admit + assemble, instances, series)."""
    start = time.perf_counter()
    instances = []
    for path in paths:
        found = read_instance(path)
        if not isinstance(found, Instance):
            raise AssertionError(f"{path.name}: {found}")
        instances.append(found)
    parsed = time.perf_counter()
    admission = admit(instances)
    series = assemble(admission.accepted)
    end = time.perf_counter()
    if admission.refused:
        raise AssertionError(f"refused: {admission.refused[:3]}")
    return end - start, end - parsed, instances, len(series)


def check(paths: list[Path], series_count: int, slices: int) -> None:
    """The assembled series are whole, renderable and in slice order."""
    instances = [read_instance(path) for path in paths]
    found = assemble(i for i in instances if isinstance(i, Instance))
    if len(found) != series_count:
        raise AssertionError(f"{len(found)} series, expected {series_count}")
    for series in found:
        study = int(series.study_uid.rsplit(".", 1)[1])
        number = int(series.series_uid.rsplit(".", 1)[1])
        expected = tuple(uid(study, number, k + 1) for k in range(slices))
        if series.sop_uids != expected or not series.renderable_3d:
            raise AssertionError(f"series {series.series_uid} is not whole or not in order")


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    series = args.series
    slices = args.slices or (20 if args.quick else 200)
    rounds = args.rounds or (2 if args.quick else 5)
    count = series * slices
    report.title = (
        f"read_instance + admit + assemble over {count:,} CT instances of {PIXELS}x{PIXELS}"
        " (baseline: pydicom.dcmread(stop_before_pixels=True) loop)"
    )
    progress(f"writing {count:,} instances ({series} series of {slices})")
    start = time.perf_counter()
    paths = write_files(workdir, series, slices)
    written = time.perf_counter() - start
    size = sum(path.stat().st_size for path in paths)
    check(paths, series, slices)
    progress("warm-up: one untimed pass of each")
    baseline_pass(paths)
    product_pass(paths)

    base_times, product_times, assembly_times = [], [], []
    for r in range(rounds):
        progress(f"round {r + 1} of {rounds}")
        with report.contention.measure():
            base_times.append(baseline_pass(paths))
            total, assembly, _, _ = product_pass(paths)
        product_times.append(total)
        assembly_times.append(assembly)

    product_s, base_s = min(product_times), min(base_times)
    report.figure(
        "instances_per_s",
        f"read_instance + admit + assemble: {count:,} instances",
        count / product_s,
        "instances/s",
        headline=True,
    )
    report.figure("per_instance_us", "  per instance (best round)", product_s / count * 1e6, "µs")
    report.figure(
        "assembly_ms",
        f"  of which admit + assemble ({series} series)",
        min(assembly_times) * 1e3,
        "ms",
        role="detail",
    )
    report.baseline(
        "dcmread_per_s",
        f"pydicom.dcmread(path, stop_before_pixels=True): {count:,} files",
        count / base_s,
        "instances/s",
    )
    ratio = report.ratio("ratio", "baseline time / product time", base_s, product_s)
    report.target(
        f"baseline time / product time at least {TARGET_RATIO}",
        ratio >= TARGET_RATIO,
        f"{ratio:.2f}",
    )
    report.note(
        f"{count:,} files, {size / count / 1024:.1f} KiB each on average, written in"
        f" {written:.1f} s (not timed); {rounds} rounds, the best of each counts:"
        f" product {', '.join(f'{t:.3f}' for t in product_times)} s;"
        f" baseline {', '.join(f'{t:.3f}' for t in base_times)} s;"
        f" pydicom {pydicom.__version__}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--series", type=int, default=10, help="default 10")
    parser.add_argument("--slices", type=int, default=None, help="per series: 200 (20 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (2 quick)")


if __name__ == "__main__":
    main(NAME, "DICOM header parse and series assembly", body, add_arguments)
