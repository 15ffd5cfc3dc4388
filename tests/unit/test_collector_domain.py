"""The blob collector's decisions, pure: releases in bounded pages, reclaims whole."""

from __future__ import annotations

import uuid

from services.ingest.collector import domain
from shared.contracts import ingest as ev


def test_a_large_deletion_releases_its_blobs_in_bounded_pages() -> None:
    files = [uuid.uuid4() for _ in range(2 * ev.RELEASED_PER_EVENT + 7)]
    changes = domain.release(files)
    assert [len(c.event.file_ids) for c in changes] == [  # type: ignore[attr-defined]
        ev.RELEASED_PER_EVENT,
        ev.RELEASED_PER_EVENT,
        7,
    ]
    assert [f for c in changes for f in c.event.file_ids] == files  # type: ignore[attr-defined]
    # Each page is a fact of its own: a stream begun by it.
    assert len({c.stream_id for c in changes}) == 3
    assert {c.version for c in changes} == {1}
    assert domain.release([]) == []


def test_a_sweep_records_the_blobs_it_deleted() -> None:
    (change,) = domain.reclaim(["a", "b"])
    assert change.version == 1 and change.stream_id.startswith("blob-reclaim-")
    assert change.event == ev.BlobsReclaimed(blob_keys=["a", "b"])
