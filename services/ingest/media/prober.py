"""The worker that reads facts with decoders written in C: FFmpeg (a video's or an audio
file's facts) and libwebp (a WebP image's size), and Pillow's TIFF opener (whose strip
list is unbounded work), in a process of its own without the platform's secrets
(shared/kit/isolated.py). It reads the content through ingest, by range, within the same
budget and time cap as facts read in ingest itself."""

from __future__ import annotations

import time
from typing import Any

from services.ingest.media import facts
from shared.kit import isolated
from shared.kit.media import RangeFile, ReadAt


def probe(request: dict[str, Any], read_at: ReadAt) -> bytes:
    source = RangeFile(
        read_at,
        int(request["size"]),
        budget=facts.READ_BUDGET,
        deadline=time.monotonic() + float(request["time_cap"]),
        blocks_kept=facts.CACHE_BLOCKS,
    )
    media = facts.READERS[request["kind"]](source, request["mime_type"])
    return media.model_dump_json().encode()


if __name__ == "__main__":
    isolated.serve(probe)
