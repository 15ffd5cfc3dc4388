"""Real audio and video files made here with PyAV (FFmpeg's encoders and muxers), for the
media facts tests and benchmark: what a camera, a phone or an audio editor would write."""

from __future__ import annotations

import functools
import io

import av
import numpy as np


@functools.cache
def video(
    fmt: str = "mp4",
    codec: str = "mpeg4",
    width: int = 64,
    height: int = 48,
    frames: int = 10,
    rate: int = 5,
    rotation: int = 0,
) -> bytes:
    """A video of `frames` flat frames, one brighter than the other, at `rate` a second
    (FFmpeg's MP4 and MOV muxers put the moov box at the end, after the mdat); `rotation`
    degrees counter-clockwise in its display matrix (-90: a phone held upright)."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for n in range(frames):
            pixels = np.full((height, width, 3), n * 20 % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@functools.cache
def audio(
    fmt: str, codec: str, rate: int = 44_100, channels: int = 2, seconds: float = 2.0
) -> bytes:
    """A sine tone of `seconds`, encoded with `codec` in the `fmt` container."""
    layout = "stereo" if channels == 2 else "mono"
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        t = np.arange(int(rate * seconds)) / rate
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, channels)[None, :], format="s16", layout=layout
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def mp3() -> bytes:
    return audio("mp3", "libmp3lame", 44_100, 2)


def ogg() -> bytes:
    return audio("ogg", "libopus", 48_000, 1)


def flac() -> bytes:
    return audio("flac", "flac", 22_050, 1)


def wav() -> bytes:
    return audio("wav", "pcm_s16le", 8_000, 1)


def m4a() -> bytes:
    return audio("ipod", "aac", 44_100, 2)
