"""The thumbnails context's pure rules: what is drawn for a kind, the sizes and where the
pictures are kept, the DICOM display transforms (rescale, window, min/max), caching.

No I/O here: services/thumbnails/render.py reads and decodes, handlers.py records.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# Pixels on the long side; a picture smaller than a size is kept at its own (never upscaled).
SIZES = (128, 512)
# `?size=` beyond this is refused; any size up to it gets the smallest made one that covers it.
MAX_ASKED_SIZE = 4096
CONTENT_TYPES = {"webp": "image/webp", "jpeg": "image/jpeg"}
# How long a browser may keep a picture before asking again (with its ETag): private,
# since it is the caller's right to see the file that lets it be shown.
CACHE_CONTROL = "private, max-age=3600"
# A failure's reason is kept short: events do not grow with what a hostile file says.
MAX_REASON = 300
# A file whose thumbnails were not settled after this many tries (each ended by a crash
# of the whole service, or a store that would not answer) is given up on.
MAX_ATTEMPTS = 3
# How much lower than the processes that started the service its workers (drawing,
# re-encoding) run: background work, which on a busy machine yields to everything else.
WORKER_NICE = 10

# What draws a kind: image groups and sequences are drawn from their first image, which is
# the group file's content; a DICOM series from its middle slice.
RENDERERS = {
    "image": "image",
    "image_group": "image",
    "image_sequence": "image",
    "video": "video",
    "pdf": "pdf",
    "dicom_series": "dicom",
}
_DRAWN_BY = frozenset(RENDERERS.values())
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Kinds drawn from the object they were imported from, by reference: a group's or
# sequence's file is no object of the bucket (its images are, each a file of its own).
DRAWN_BY_REFERENCE = frozenset({"image", "video", "pdf"})


def renderer_of(kind: str) -> str | None:
    return RENDERERS.get(kind)


# Why an imported file has no picture when its object is no longer the bytes its import
# read: the file's failure alone, never its source's (shared by every file of those bytes).
CONTENT_CHANGED = "content_changed"


def source_of(renderer: str, sha256: str) -> str:
    """What a thumbnail is of: the renderer and the sha256 of what it reads. Identical
    files have one source, so they share their pictures."""
    if renderer not in _DRAWN_BY or not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a source: {renderer}:{sha256}")
    return f"{renderer}:{sha256}"


def blob_key(source: str, size: int, fmt: str) -> str:
    """The picture's key in the blob store: from the source's sha256 and the size, in a
    prefix of its own (never a content key, so no file's bytes can be taken for one)."""
    renderer, _, sha256 = source.partition(":")
    return f"thumbnails/{renderer}/{sha256[:2]}/{sha256}/{size}.{fmt}"


def fit(width: int, height: int, size: int) -> tuple[int, int]:
    """The dimensions of a picture at most `size` on its long side, same aspect, at least
    one pixel each way."""
    if width <= 0 or height <= 0:
        raise ValueError("a picture has positive dimensions")
    longest = max(width, height)
    if longest <= size:
        return width, height
    scale = size / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def pick(sizes: Sequence[int], asked: int) -> int:
    """The size served for `?size=asked`: the smallest made that covers it, else the largest."""
    covering = [s for s in sizes if s >= asked]
    return min(covering) if covering else max(sizes)


def middle(count: int) -> int:
    """The index of the middle slice of `count` (in slice order); the later of two."""
    if count <= 0:
        raise ValueError("a series has at least one slice")
    return count // 2


Pixels = npt.NDArray[Any]
Grey = npt.NDArray[np.uint8]


def rescale(pixels: Pixels, slope: float | None, intercept: float | None) -> Pixels:
    """Stored values to modality values (Rescale Slope and Intercept, as for CT's HU)."""
    values = pixels.astype(np.float64)
    if slope is not None and slope != 1:
        values = values * slope
    if intercept:
        values = values + intercept
    return values


def window(pixels: Pixels, center: float, width: float) -> Grey:
    """DICOM's linear VOI function (PS3.3 C.11.2.1.2.1) to 8 bits: values up to
    c - 0.5 - (w-1)/2 are black, above c - 0.5 + (w-1)/2 white, linear between."""
    if width < 1:
        raise ValueError("a window is at least 1 wide")
    values = pixels.astype(np.float64)
    scaled = ((values - (center - 0.5)) / (width - 1 if width > 1 else 1) + 0.5) * 255.0
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    scaled = np.where(values <= low, 0.0, np.where(values > high, 255.0, scaled))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def min_max(pixels: Pixels) -> Grey:
    """The values' own range stretched to 8 bits (when the file names no window); a flat
    picture is black."""
    values = pixels.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.nan_to_num(values, nan=low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def first_value(value: Any) -> float | None:
    """A DICOM number that may be multi-valued (WindowCenter "40\\400"): its first value."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def display(
    pixels: Pixels,
    *,
    slope: float | None = None,
    intercept: float | None = None,
    center: float | None = None,
    width: float | None = None,
    inverted: bool = False,
) -> Grey:
    """A grey DICOM frame as 8 bits: rescaled, windowed by its WindowCenter/WindowWidth if
    it has a usable window, else stretched by min/max; MONOCHROME1 (`inverted`) is shown
    with its low values white."""
    values = rescale(pixels, slope, intercept)
    if center is not None and width is not None and width >= 1:
        grey = window(values, center, width)
    else:
        grey = min_max(values)
    return (255 - grey).astype(np.uint8) if inverted else grey


def short_reason(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def etag(sha256: str) -> str:
    return f'"{sha256}"'


def not_modified(if_none_match: str | None, sha256: str) -> bool:
    """Whether an If-None-Match header names this picture (weak comparison, or `*`)."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag(sha256):
            return True
    return False
