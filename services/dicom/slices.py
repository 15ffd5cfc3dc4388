"""One slice of a DICOM series as a PNG, for the web app's viewer.

The instance's pixels (uncompressed transfer syntaxes, and those pydicom decodes
with what is installed) are rescaled to Hounsfield or stored units, windowed by the
instance's own Window Center/Width when it has them (else by its range), and drawn
as 8-bit greyscale. Parsing is bounded: a file over MAX_BYTES, or an image over
MAX_PIXELS, is not rendered.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom

from shared.kit import isolated
from shared.kit.errors import Refused
from shared.kit.logs import log

MAX_BYTES = 512 * 1024 * 1024
MAX_PIXELS = 64 * 1024 * 1024
RENDER_TIME_CAP_S = 30.0

# Pixel data is decoded by C libraries (JPEG, JPEG 2000, JPEG-LS decoders), from files
# anyone with the editor role uploads: in a worker without the platform's secrets
# (services/dicom/renderer.py, shared/kit/isolated.py), one slice at a time a worker.
RENDERER = isolated.Isolated(
    "services.dicom.renderer", workers=2, max_answer=MAX_PIXELS + 16 * 1024 * 1024
)


def drawn(path: Path, frame: int = 0) -> bytes:
    """`render` in a worker: the PNG, or the refusal it said (422 when the worker failed
    or overran its cap: the file is what made it). Blocks: call it from a thread."""
    try:
        return RENDERER.call({"path": str(path), "frame": frame}, time_cap=RENDER_TIME_CAP_S)
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


def render(path: Path, frame: int = 0) -> bytes:
    """Frame `frame` (0 first) of the instance at `path`, as a PNG."""
    # Imported here: the service starts without them, and only a viewer needs them.
    import numpy as np
    from PIL import Image

    if path.stat().st_size > MAX_BYTES:
        raise Refused(422, "cannot_render", "this slice is too large to render")
    try:
        ds = pydicom.dcmread(path, force=True)
        rows, columns = int(ds.Rows), int(ds.Columns)
        if rows * columns * int(getattr(ds, "NumberOfFrames", 1) or 1) > MAX_PIXELS:
            raise Refused(422, "cannot_render", "this slice has too many pixels to render")
        pixels = ds.pixel_array
    except Refused:
        raise
    except Exception as error:
        raise Refused(
            422, "cannot_render", f"this slice cannot be rendered: {type(error).__name__}"
        ) from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if not 0 <= frame < frames:
        raise Refused(404, "frame_not_found", f"frame {frame + 1} is not in 1..{frames}")
    if frames > 1:
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
