"""The worker that draws DICOM slices (`slices.render`): pixel data decoded in a process
without the platform's secrets (shared/kit/isolated.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.dicom import slices
from services.dicom.ranged import Ranged
from shared.kit import isolated
from shared.kit.errors import Refused
from shared.kit.media import ReadAt


def draw(request: dict[str, Any], read_at: ReadAt) -> bytes:
    """The slice of the file at the request's `path` (a local store's blob), or of one of
    `size` bytes read through the parent (S3's: the parent holds the keys)."""
    try:
        if "path" in request:
            return slices.render(Path(request["path"]), int(request["frame"]))
        size = int(request["size"])
        step = size if size <= slices.READ_WHOLE_UP_TO else 16 * 1024
        source = Ranged(read_at, size, step=step)
        return slices.render_file(source, size, int(request["frame"]))  # type: ignore[arg-type]
    except Refused as refused:
        raise isolated.Refusal(refused.status, refused.code, refused.message) from None


if __name__ == "__main__":
    isolated.serve(draw)
