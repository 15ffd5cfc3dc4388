"""The worker that draws DICOM slices (`slices.render`): pixel data decoded in a process
without the platform's secrets (shared/kit/isolated.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.dicom import slices
from shared.kit import isolated
from shared.kit.errors import Refused
from shared.kit.media import ReadAt


def draw(request: dict[str, Any], _: ReadAt) -> bytes:
    try:
        return slices.render(Path(request["path"]), int(request["frame"]))
    except Refused as refused:
        raise isolated.Refusal(refused.status, refused.code, refused.message) from None


if __name__ == "__main__":
    isolated.serve(draw)
