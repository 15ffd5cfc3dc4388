"""Envelopes: what building and reading one page of upload_small's files costs, step by step.

One page as upload_small makes them: 100 files of 4 KiB text (`ingest.FilesStored` in,
`catalog.FilesUploaded` out), in this process, no I/O. Each step is timed over
`--pages` pages (default 2,000; `--quick`: 200), `--rounds` rounds (default 5; 2 quick),
the best round counts; product and baseline alternate within each round.

Product, the path as it is: the message off the broker into an `Envelope`
(`bus.decode`, the type wanted), its event validated (`reactions.parse`), validated
"again" as a batch tried again after a transient failure gets it (the envelope keeps it),
the catalog's `register_page` building the page's files as `UploadedFile`s from the
stored page's (`contracts.envelope.trusted`), the new page's envelope (`new_envelope`),
and its JSON for the store (`eventstore.encoded`). Baseline: the same steps as they were
(validated again; pydantic's `model_construct` a file), and the floor: orjson alone
reading the same message and writing the same data.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench._common import Report, main, progress
from shared.contracts import catalog as cat
from shared.contracts import ingest
from shared.contracts.envelope import Cause, Envelope, new_envelope, trusted
from shared.kit import bus, eventstore
from shared.kit.reactions import parse

NAME = "envelopes"
FILES = 100


def stored_page() -> ingest.FilesStored:
    return ingest.FilesStored(
        job_id=uuid.uuid4(),
        folder_id=uuid.uuid4(),
        files=[
            ingest.StoredContent(
                file_id=uuid.uuid4(),
                name=f"file-{i:05}.txt",
                kind="text",
                size=4096,
                sha256=f"{i:064x}",
                mime_type="text/plain",
                blob_key=f"sha256/{i:064x}",
            )
            for i in range(FILES)
        ],
    )


def wire(event: cat.FilesUploaded) -> bytes:
    """The page as the relay publishes it: its stored envelope, placed."""
    envelope = new_envelope(
        event,
        stream_id=f"upload-page-{uuid.uuid4()}",
        stream_version=1,
        cause=Cause(actor="user:bench", correlation_id="c", causation_id=str(uuid.uuid4())),
    )
    return bus.encode(envelope.model_copy(update={"source": "catalog", "position": 7}))


def best(rounds: list[float]) -> float:
    return min(rounds)


def timed(step: Callable[[], Any], n: int) -> float:
    began = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - began


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    pages = args.pages or (200 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 5)
    report.title = f"one page of {FILES} files built and read, {pages:,} pages, best of {rounds}"
    page = stored_page()
    files = [cat.UploadedFile.model_construct(**dict(f)) for f in page.files]
    uploaded = cat.FilesUploaded.page(page.folder_id, page.job_id, files)
    value = wire(uploaded)
    wanted = frozenset({cat.FilesUploaded.type})
    decoded = bus.decode(value, wanted)
    cause = Cause(actor="user:bench", correlation_id="c")
    parse(decoded, cat.FilesUploaded)  # kept on the envelope: "again" reads it

    def new_envelope_of() -> Envelope:
        return new_envelope(uploaded, stream_id="s", stream_version=1, cause=cause)

    built = new_envelope_of()
    steps: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {
        "decode": (lambda: bus.decode(value, wanted), lambda: orjson.loads(value)),
        "parse": (lambda: parse(bus.decode(value, wanted), cat.FilesUploaded), None),
        "parse_again": (
            lambda: parse(decoded, cat.FilesUploaded),
            lambda: cat.FilesUploaded.model_validate(decoded.data),
        ),
        "build_files": (
            lambda: [trusted(cat.UploadedFile, f.__dict__) for f in page.files],
            lambda: [cat.UploadedFile.model_construct(**dict(f)) for f in page.files],
        ),
        "new_envelope": (new_envelope_of, None),
        "encode": (
            lambda: eventstore.encoded([built]),
            lambda: orjson.dumps(built.data),
        ),
    }
    product: dict[str, list[float]] = {k: [] for k in steps}
    baseline: dict[str, list[float]] = {k: [] for k, (_, b) in steps.items() if b}
    for r in range(rounds):
        progress(f"round {r + 1} of {rounds}")
        with report.contention.measure():
            for key, (ours, theirs) in steps.items():
                product[key].append(timed(ours, pages))
                if theirs is not None:
                    baseline[key].append(timed(theirs, pages))
    us = {k: best(v) / pages * 1e6 for k, v in product.items()}
    base = {k: best(v) / pages * 1e6 for k, v in baseline.items()}
    labels = {
        "decode": ("off the wire into an Envelope (bus.decode)", "orjson.loads alone"),
        "parse": ("decoded and validated (reactions.parse)", ""),
        "parse_again": ("validated again, a batch tried again", "model_validate again"),
        "build_files": ("the page's files built (trusted)", "model_construct a file"),
        "new_envelope": ("the page's envelope (new_envelope)", ""),
        "encode": ("its JSON for the store (eventstore.encoded)", "orjson.dumps of data"),
    }
    reading = us["parse"]
    writing = us["build_files"] + us["new_envelope"] + us["encode"]
    report.figure(
        "read_us_a_file",
        "a consumer's read of a page, µs a file",
        reading / FILES,
        "µs",
        headline=True,
    )
    report.figure("write_us_a_file", "the catalog's page built, µs a file", writing / FILES, "µs")
    for key, (label, base_label) in labels.items():
        unit = f"µs a page ({base_label}: {base[key]:,.1f} µs)" if key in base else "µs a page"
        report.figure(f"{key}_us", f"  {label}", us[key], unit, role="detail")
    for key in base:
        report.baseline(f"{key}_base_us", f"  {labels[key][1]}", base[key], "µs a page")
    report.ratio(
        "build_ratio",
        "building the files: model_construct / trusted",
        base["build_files"],
        us["build_files"],
    )
    report.note(f"{len(value):,} bytes a message; {pages:,} pages a round, {rounds} rounds")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pages", type=int, default=None, help="default 2,000 (200 quick)")
    parser.add_argument("--rounds", type=int, default=None, help="default 5 (2 quick)")


if __name__ == "__main__":
    main(NAME, "Envelopes built and read, step by step", body, add_arguments)
