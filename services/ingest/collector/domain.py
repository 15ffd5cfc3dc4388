"""The blob collector, pure: what releasing files and reclaiming blobs record.

Each is a stream of one event (`blob-release-…`, `blob-reclaim-…`): a release or a
reclaim is a fact about many files or blobs at once, owned by none of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from shared.contracts import ingest as ev
from shared.contracts.envelope import Change


def release(file_ids: Sequence[uuid.UUID]) -> list[Change]:
    """Files of ours that are gone release their blobs: an event per RELEASED_PER_EVENT,
    so no event grows with the size of a deletion."""
    return [
        Change(f"blob-release-{uuid.uuid4()}", 1, ev.BlobsReleased(file_ids=list(page)))
        for page in (
            file_ids[i : i + ev.RELEASED_PER_EVENT]
            for i in range(0, len(file_ids), ev.RELEASED_PER_EVENT)
        )
    ]


def reclaim(blob_keys: list[str]) -> list[Change]:
    """The bytes of these blobs were deleted (at most a sweep's batch of them)."""
    return [Change(f"blob-reclaim-{uuid.uuid4()}", 1, ev.BlobsReclaimed(blob_keys=blob_keys))]


def held(file_id: uuid.UUID, blob_keys: list[str]) -> Change:
    """A series' page of instances refers to their blobs (as bounded as the page)."""
    return Change(
        f"blob-hold-{uuid.uuid4()}", 1, ev.SeriesBlobsHeld(file_id=file_id, blob_keys=blob_keys)
    )


def dropped(file_id: uuid.UUID, blob_keys: list[str]) -> Change:
    """Instances that left a series (as bounded as the DICOM context's page)."""
    return Change(
        f"blob-drop-{uuid.uuid4()}", 1, ev.SeriesBlobsDropped(file_id=file_id, blob_keys=blob_keys)
    )


def unpinned(blob_keys: list[str]) -> Change:
    """Instances that joined no series (as bounded as the DICOM context's event)."""
    return Change(f"blob-unpin-{uuid.uuid4()}", 1, ev.BlobsUnpinned(blob_keys=blob_keys))
