"""One slice of a DICOM series as a PNG, for the web app's viewer.

The instance's pixels (uncompressed transfer syntaxes, and those pydicom decodes
with what is installed) are rescaled to Hounsfield or stored units, windowed by the
instance's own Window Center/Width when it has them (else by its range), and drawn
as 8-bit greyscale. Parsing is bounded: a file over MAX_BYTES, or an image over
MAX_PIXELS, is not rendered.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from shared.kit import isolated
from shared.kit.errors import Refused
from shared.kit.logs import log
from shared.kit.media import ReadAt

MAX_BYTES = 512 * 1024 * 1024
MAX_PIXELS = 64 * 1024 * 1024
RENDER_TIME_CAP_S = 30.0
#: An instance up to this size is read by range in one read, whole: a second request
#: (the header's, then the frame's) costs about as much as a MiB's transfer on S3.
READ_WHOLE_UP_TO = 1024 * 1024

_PIXEL_DATA: Final = 0x7FE00010
_LITTLE_NATIVE: Final = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_ONE_FRAME_LAYOUTS: Final = frozenset({"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"})

# Pixel data is decoded by C libraries (JPEG, JPEG 2000, JPEG-LS decoders), from files
# anyone with the editor role uploads: in a worker without the platform's secrets
# (services/dicom/renderer.py, shared/kit/isolated.py), one slice at a time a worker.
RENDERER = isolated.Isolated(
    "services.dicom.renderer", workers=2, max_answer=MAX_PIXELS + 16 * 1024 * 1024
)


def drawn(path: Path, frame: int = 0) -> bytes:
    """`render` in a worker: the PNG, or the refusal it said (422 when the worker failed
    or overran its cap: the file is what made it). Blocks: call it from a thread."""
    return _call({"path": str(path), "frame": frame})


def drawn_by_range(read_at: ReadAt, size: int, frame: int = 0) -> bytes:
    """`drawn` of a file of `size` bytes that the worker reads through `read_at` (a blob
    in S3, read by this process: the worker holds no key), as far as `render` needs:
    its header and the frame's bytes for an uncompressed one, else the whole file. An
    error of `read_at` is raised as it is."""
    # Every byte at most twice: the header's prefix and the frame read on their own.
    return _call({"size": size, "frame": frame}, read_at=read_at, size=size, budget=2 * size)


def _call(request: dict[str, Any], **reading: Any) -> bytes:
    try:
        return RENDERER.call(request, time_cap=RENDER_TIME_CAP_S, **reading)
    except isolated.Refusal as refused:
        status = refused.status if refused.status in (404, 422) else 422
        raise Refused(status, refused.code, refused.message) from None
    except isolated.WorkerFailed as failed:
        log.warning("dicom.render_failed", reason=str(failed)[:200])
        raise Refused(
            422, "cannot_render", "this slice cannot be rendered: its decoder failed or overran"
        ) from None


def _first(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Native:
    """Where an uncompressed instance's frames lie: its header (no pixel data), its
    frame count, each frame's bytes, and where the first starts."""

    header: Dataset
    frames: int
    frame_bytes: int
    at: int

    def frame_range(self, number: int) -> tuple[int, int]:
        """Offset and length of frame `number` (0 first)."""
        return self.at + number * self.frame_bytes, self.frame_bytes


def native_frames(file: IO[bytes], size: int) -> Native | None:
    """The frames of an uncompressed instance of `size` bytes, from its header alone
    (read up to its PixelData); None when they cannot be told so (encapsulated, not
    whole bytes a pixel, frames that do not fit the PixelData or the file, a header
    pydicom refuses): read the whole file then. Lengths come from the file and are
    checked against `size`, never trusted past it."""
    found: dict[str, int] = {}

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag != _PIXEL_DATA:
            return False
        found.update(at=file.tell(), length=length)
        return True

    try:
        header = read_partial(file, at_pixels, force=True)  # type: ignore[arg-type]
        if not found or found["length"] == 0xFFFFFFFF:
            return None
        rows, columns = int(header.Rows), int(header.Columns)
        samples, bits = int(getattr(header, "SamplesPerPixel", 1) or 1), int(header.BitsAllocated)
        frames = int(getattr(header, "NumberOfFrames", 1) or 1)
    except Exception:
        return None
    frame_bytes = rows * columns * samples * bits // 8
    if bits % 8 or frame_bytes <= 0 or frames <= 0:
        return None
    if frames * frame_bytes > found["length"] or found["at"] + found["length"] > size:
        return None
    return Native(header, frames, frame_bytes, found["at"])


def render(path: Path, frame: int = 0) -> bytes:
    """Frame `frame` (0 first) of the instance at `path`, as a PNG."""
    with open(path, "rb") as file:
        return render_file(file, os.fstat(file.fileno()).st_size, frame)


def render_file(file: IO[bytes], size: int, frame: int = 0) -> bytes:
    """Frame `frame` (0 first) of the instance in `file` (`size` bytes), as a PNG. An
    uncompressed frame is read alone, after the header (`native_frames`); otherwise the
    whole file is decoded."""
    # Imported here: the service starts without them, and only a viewer needs them.
    import numpy as np
    from PIL import Image

    if size > MAX_BYTES:
        raise Refused(422, "cannot_render", "this slice is too large to render")
    try:
        native = _one_frame(file, size, frame)
        if native is not None:
            ds, frames, pixels = native
        else:
            file.seek(0)
            ds = pydicom.dcmread(file, force=True)
            frames = _frames_in(ds)
            pixels = ds.pixel_array
    except Refused:
        raise
    except Exception as error:
        raise Refused(
            422, "cannot_render", f"this slice cannot be rendered: {type(error).__name__}"
        ) from None
    if not 0 <= frame < frames:
        raise Refused(404, "frame_not_found", f"frame {frame + 1} is not in 1..{frames}")
    if frames > 1 and native is None:
        pixels = pixels[frame]
    if pixels.ndim == 3:
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    else:
        values = pixels.astype(np.float64)
        slope = _first(getattr(ds, "RescaleSlope", None)) or 1.0
        intercept = _first(getattr(ds, "RescaleIntercept", None)) or 0.0
        values = values * slope + intercept
        center = _first(getattr(ds, "WindowCenter", None))
        width = _first(getattr(ds, "WindowWidth", None))
        if center is None or width is None or width <= 0:
            low, high = float(values.min()), float(values.max())
        else:
            low, high = center - width / 2, center + width / 2
        scaled = (values - low) / max(high - low, 1e-9)
        grey = np.clip(scaled * 255.0, 0, 255).astype(np.uint8)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            grey = 255 - grey
        image = Image.fromarray(grey)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _frames_in(ds: Dataset) -> int:
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if int(ds.Rows) * int(ds.Columns) * frames > MAX_PIXELS:
        raise Refused(422, "cannot_render", "this slice has too many pixels to render")
    return frames


def _one_frame(file: IO[bytes], size: int, frame: int) -> tuple[Dataset, int, Any] | None:
    """The header, frame count and pixels of frame `frame` alone, for an uncompressed
    instance in a little-endian syntax whose pixels pydicom lays out a sample a pixel or
    RGB (others' frames are sized otherwise: the whole file is decoded then)."""
    native = native_frames(file, size)
    if native is None:
        return None
    ds = native.header
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    photometric = getattr(ds, "PhotometricInterpretation", "")
    if syntax not in _LITTLE_NATIVE or photometric not in _ONE_FRAME_LAYOUTS:
        return None
    frames = _frames_in(ds)
    if not 0 <= frame < frames:
        return ds, frames, None
    offset, length = native.frame_range(frame)
    file.seek(offset)
    data = file.read(length)
    if len(data) != length:
        return None
    ds.PixelData = data
    if "NumberOfFrames" in ds:
        ds.NumberOfFrames = 1
    return ds, frames, ds.pixel_array
