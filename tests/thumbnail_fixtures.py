"""Real media files made here, for the thumbnails tests and benchmark: images from Pillow
(one with an EXIF orientation), a short MP4 from PyAV, a one-page PDF, and hostile ones
(a decompression bomb, a truncated image)."""

from __future__ import annotations

import io
import struct
import zlib

import av
import numpy as np
from PIL import Image


def png(
    width: int = 640, height: int = 480, colour: tuple[int, int, int] = (10, 120, 200)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def jpeg(width: int = 800, height: int = 400, orientation: int | None = None) -> bytes:
    """A JPEG whose left half is red, right half blue; with an EXIF orientation if asked
    (6: the viewer turns it 90° clockwise, so it shows tall)."""
    image = Image.new("RGB", (width, height), (220, 20, 20))
    image.paste((20, 20, 220), (width // 2, 0, width, height))
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def photo(seed: int, width: int = 1024, height: int = 768) -> bytes:
    """A JPEG with some texture (a gradient and noise), as a camera's would have."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    base = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1)
    noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def mp4(
    width: int = 160,
    height: int = 120,
    frames: int = 30,
    rate: int = 10,
    noise: bool = False,
    rotation: int = 0,
    container_format: str = "mp4",
) -> bytes:
    """A short H.264 video whose frames brighten one after another (with `noise`, random
    pixels besides: large, since noise does not compress); `rotation` degrees
    counter-clockwise in its display matrix, as a phone records a portrait clip; in MP4
    unless `container_format` names another of FFmpeg's muxers."""
    rng = np.random.default_rng(3)
    out = io.BytesIO()
    with av.open(out, "w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for n in range(frames):
            pixels = np.full((height, width, 3), (n * 8) % 256, np.uint8)
            if noise:
                pixels = rng.integers(0, 255, (height, width, 3), np.uint8)
            pixels[:, : width // 4] = (0, 200, 0)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def pdf(width: int = 300, height: int = 200) -> bytes:
    """A one-page PDF (a green page), as Pillow writes one."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 160, 60)).save(out, "PDF")
    return out.getvalue()


def decompression_bomb(side: int = 40_000) -> bytes:
    """A small PNG whose header claims side x side pixels (1.6 billion: past Pillow's
    limit), its data a few compressed rows of zeros."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">L", len(data)) + body + struct.pack(">L", zlib.crc32(body))

    header = struct.pack(">LLBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    """A real PNG cut short: its pixel data ends half way."""
    out = io.BytesIO()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), np.uint8), "RGB").save(out, "PNG")
    data = out.getvalue()
    return data[: len(data) // 2]
