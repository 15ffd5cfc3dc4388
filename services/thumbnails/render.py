"""Drawing thumbnails, in worker processes (services/thumbnails/handlers.py runs them with a
time cap per file, and a worker that dies or overruns is replaced).

Content is read by range from the blob store (a local file as it is; S3 by ranged GETs
through the block cache of shared/kit/media.py), only what the decoder asks for, within a
byte budget: a video's frame needs its index and a few packets, not the whole file. Each
decoder has its own bound: Pillow's decompression-bomb limit, a frame size for videos, a pixel data
size for DICOM, a render size for PDFs.
"""

from __future__ import annotations

import io
import os
import resource
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import httpx
from PIL import Image, ImageFile, ImageOps

from services.thumbnails import domain
from shared.kit.blobs import LocalBlobStore, open_blob_store
from shared.kit.media import (
    BLOCK,
    VIDEO_DEMUXERS,
    ContentChanged,
    OverBudget,
    RangeFile,
    open_container,
    presigned_reader,
    quiet_av,
    without_paths,
)
from shared.kit.settings import Settings

# Most bytes one file may make us read (a video reads its index and a few packets).
READ_BUDGET = 512 * 1024 * 1024
# Content up to this size is read by URL in one request: an image is decoded whole
# anyway, and each request to S3 (or through ingest, to a customer's bucket) costs a
# round trip that dwarfs its bytes (a 700 KB photo took three; a larger video still
# reads 256 KiB blocks, only those its decoder asks for).
WHOLE_AT_ONCE = 4 * 1024 * 1024
# A video frame or DICOM frame larger than this is not decoded.
MAX_FRAME_PIXELS = 64_000_000
MAX_DICOM_PIXEL_BYTES = 1024 * 1024 * 1024
# Frames decoded at most while looking for the one to show.
MAX_VIDEO_FRAMES = 240
# A worker's address space: a decoder that goes past it fails, not the machine.
ADDRESS_SPACE = 4 * 1024 * 1024 * 1024
QUALITY = {"webp": 80, "jpeg": 85}


class Unthumbnailable(Exception):
    """The content cannot be drawn; `code` and the message say why (recorded, not retried)."""

    def __init__(self, code: str, message: str) -> None:
        # Both in args: the exception crosses from the worker process pickled.
        super().__init__(code, message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return self.message


class SourceUnavailable(Exception):
    """The store did not answer: not the file's fault, tried again later."""


@dataclass(frozen=True)
class Job:
    renderer: str  # "image" | "video" | "pdf" | "dicom"
    blob_key: str
    size: int  # bytes of the content
    fmt: str  # "webp" | "jpeg"
    sizes: tuple[int, ...] = domain.SIZES
    # The content's presigned GET URL, on a store that is not local: the worker reads
    # this object and no other, without the store's keys.
    url: str | None = None


@dataclass(frozen=True)
class Picture:
    size: int
    data: bytes
    width: int
    height: int


# A local store's files, read in place; on S3, each job's presigned URL instead.
_store: LocalBlobStore | None = None
_http: httpx.Client | None = None


def start_worker(settings: Settings) -> None:
    """A worker process's start: where it reads content, the decoders' limits."""
    global _store, _http
    # Drawing is background work: when the machine is busy, uploads and reads go first.
    # A worker is spawned at the service's niceness (FILES_THUMBNAIL_NICE above what
    # started it), and ends domain.WORKER_NICE above what started the service, or at the
    # service's if that is lower still.
    os.nice(max(0, domain.WORKER_NICE - settings.thumbnail_nice))
    store = open_blob_store(settings)
    _store = store if isinstance(store, LocalBlobStore) else None
    _http = httpx.Client(timeout=30, follow_redirects=False)
    # Pillow warns past MAX_IMAGE_PIXELS (and refuses at twice that): a warning is a refusal.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > ADDRESS_SPACE:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, hard))
    import logging

    # pydicom and its pixel decoders, now rather than by the first DICOM series drawn:
    # ~0.1-0.2 CPU-s a worker (its dictionaries, and `requests` it imports), which that
    # picture paid (2.5 s of its wall clock on a busy machine, at the workers' niceness)
    # in every fresh worker: 0.3 of thumbnails' 0.6-0.8 CPU-s in bench.dicom's upload.
    import pydicom.pixels  # noqa: F401

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    quiet_av()


CHANGED = (
    "its object in the bucket is no longer the content imported (its ETag changed):"
    " import it again for its picture"
)


def opened(job: Job) -> BinaryIO:
    """The content as a file: the blob itself on a local store, else by ranges of its
    URL (the store's presigned one, or ingest's for an object imported by reference)."""
    if _store is not None and job.url is None:
        return open(_store.path(job.blob_key), "rb")
    assert _http is not None, "start_worker first"
    if job.url is None:
        raise SourceUnavailable("no URL to read the content by")
    block = job.size if 0 < job.size <= WHOLE_AT_ONCE else BLOCK
    return RangeFile(presigned_reader(job.url, _http), job.size, budget=READ_BUDGET, block=block)  # type: ignore[return-value]


def make(job: Job) -> list[Picture]:
    """The job's pictures, one per size; raises Unthumbnailable or SourceUnavailable."""
    try:
        source = opened(job)
    except FileNotFoundError as error:
        raise Unthumbnailable("content_missing", "the content is no longer stored") from error
    with source:
        try:
            picture = DRAW[job.renderer](source, max(job.sizes))
        except Exception as error:
            failed = source.failed if isinstance(source, RangeFile) else None
            if isinstance(failed, ContentChanged):
                # Ingest's 412 to an imported object's read (which a decoder may have
                # wrapped in an error of its own): the object is not its import's bytes.
                raise Unthumbnailable(domain.CONTENT_CHANGED, CHANGED) from error
            if isinstance(error, (Unthumbnailable, SourceUnavailable)):
                raise
            if isinstance(error, OverBudget):
                raise Unthumbnailable("too_large", f"drawing it: {error}") from error
            if isinstance(error, FileNotFoundError):
                raise Unthumbnailable(
                    "content_missing", "the content is no longer stored"
                ) from error
            if failed is not None:
                raise SourceUnavailable(str(failed)) from error
            raise Unthumbnailable("unreadable", describe(error)) from error
    try:
        return pictures(picture, job.sizes, job.fmt)
    except Exception as error:  # a mode or size no encoder takes: this file's failure
        raise Unthumbnailable("unreadable", describe(error)) from error


def ready() -> bool:
    """Nothing: a worker that answers has started (the pool is warmed with it)."""
    return True


def drawn(job: Job) -> list[Picture] | tuple[str, str]:
    """`make` in a worker: why the content cannot be drawn comes back as (code, message),
    not raised, since the pool formats and pickles the traceback of whatever is raised
    (13% of a busy worker's time with a stream of undrawable files)."""
    try:
        return make(job)
    except Unthumbnailable as error:
        return error.code, error.message


def drawn_together(
    jobs: list[Job],
) -> list[list[Picture] | tuple[str, str] | SourceUnavailable | None]:
    """`drawn` for each of a few small files in one task: a task's round trip through the
    pool (pickling, pebble's channel and locks, its threads) cost a worker more than
    finding a 4 KiB image unreadable. What one file raises is that file's, never its
    neighbours': a store (or disk) that did not answer is SourceUnavailable (tried again
    later), anything else None: the file is drawn again alone, as any file is."""
    out: list[list[Picture] | tuple[str, str] | SourceUnavailable | None] = []
    for job in jobs:
        try:
            out.append(drawn(job))
        except SourceUnavailable as error:
            out.append(error)
        except OSError as error:  # the local store's disk: EMFILE, EIO, ESTALE...
            out.append(SourceUnavailable(f"{type(error).__name__} errno {error.errno}"))
        except Exception:
            out.append(None)
    return out


def describe(error: BaseException) -> str:
    text = str(error) or "no detail"
    return domain.short_reason(f"{type(error).__name__}: {without_paths(text)}")


def pictures(image: Image.Image, sizes: tuple[int, ...], fmt: str) -> list[Picture]:
    """Encoded pictures, largest first, each made from the one before (cheaper, and as
    sharp as from the original at these sizes)."""
    image = displayable(image, fmt)
    out: list[Picture] = []
    for size in sorted(sizes, reverse=True):
        width, height = domain.fit(image.width, image.height, size)
        if out and (width, height) == (out[-1].width, out[-1].height):
            # An image within the smaller size too: the same picture, not encoded again.
            out.append(Picture(size, out[-1].data, width, height))
            continue
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
        buffer = io.BytesIO()
        if fmt == "webp":
            image.save(buffer, "WEBP", quality=QUALITY["webp"], method=4)
        else:
            image.save(buffer, "JPEG", quality=QUALITY["jpeg"], optimize=True)
        out.append(Picture(size, buffer.getvalue(), width, height))
    return sorted(out, key=lambda p: p.size)


def displayable(image: Image.Image, fmt: str) -> Image.Image:
    """RGB (or RGBA, which WebP keeps) with 8 bits a channel."""
    if image.mode == "La":
        # Premultiplied alpha (a TIFF's associated alpha): Pillow converts it to LA only.
        image = image.convert("LA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        image = Image.fromarray(domain.min_max(np.asarray(image)), "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        image = image.convert("RGBA")
        if fmt == "webp":
            return image
        flat = Image.new("RGB", image.size, (255, 255, 255))
        flat.paste(image, mask=image.getchannel("A"))
        return flat
    return image if image.mode == "RGB" else image.convert("RGB")


# -- one function per renderer: the content, the long side wanted -> a PIL image --------


def draw_image(source: BinaryIO, longest: int) -> Image.Image:
    """The (first frame of the) image, turned as its EXIF orientation says."""
    try:
        image = Image.open(source, formats=("PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise Unthumbnailable("too_large", describe(error)) from error
    with image:
        # JPEG decodes at 1/2, 1/4 or 1/8 scale straight from the DCT: far less work.
        image.draft("RGB", (longest, longest))
        image.load()
        turned = ImageOps.exif_transpose(image)
        return turned if turned is not image else image.copy()


def draw_video(source: BinaryIO, longest: int) -> Image.Image:
    """A frame a tenth of the way in (at most 5 s: past a fade-in, before a long film's
    middle), decoded from the nearest keyframe before it, turned as it is shown."""
    import av

    try:
        container = open_container(source, among=VIDEO_DEMUXERS)
    except av.error.FFmpegError as error:
        raise Unthumbnailable("unreadable", describe(error)) from error
    with container:
        if not container.streams.video:
            raise Unthumbnailable("unreadable", "the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # one core per worker: the pool is the parallelism
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_FRAME_PIXELS:
            raise Unthumbnailable("too_large", f"frames of {width}x{height} pixels")
        seconds = float(container.duration or 0) / 1_000_000
        target = min(seconds / 10, 5.0)
        if target > 0 and stream.time_base:
            container.seek(int(target / stream.time_base), stream=stream, backward=True)
        chosen = None
        for n, frame in enumerate(container.decode(stream)):
            chosen = frame
            at = frame.time if frame.time is not None else 0.0
            if at >= target or n >= MAX_VIDEO_FRAMES:
                break
        if chosen is None:
            raise Unthumbnailable("unreadable", "no frame could be decoded")
        image: Image.Image = chosen.to_image()  # type: ignore[no-untyped-call]
        return turned(image, chosen.rotation)


def turned(image: Image.Image, rotation: float) -> Image.Image:
    """The frame as players show it: turned by its display matrix (a phone's portrait
    clip is stored landscape with a quarter turn to apply), to the nearest quarter."""
    quarters = round(rotation / 90) % 4
    return image.rotate(90 * quarters, expand=True) if quarters else image


def draw_pdf(source: BinaryIO, longest: int) -> Image.Image:
    """The first page, rendered with its long side `longest` pixels."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(source)
    except pdfium.PdfiumError as error:
        raise Unthumbnailable("unreadable", describe(error)) from error
    try:
        if len(document) == 0:
            raise Unthumbnailable("unreadable", "the PDF has no page")
        page = document[0]
        width, height = page.get_size()
        if not (width > 0 and height > 0):
            raise Unthumbnailable("unreadable", "the first page has no size")
        scale = longest / max(width, height)
        image: Image.Image = page.render(scale=scale).to_pil()
        page.close()
        return image
    finally:
        document.close()


def draw_dicom(source: BinaryIO, longest: int) -> Image.Image:
    """The instance's middle frame (its only one, for most), windowed."""
    import numpy as np
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import pixel_array  # type: ignore[attr-defined]

    try:
        header = pydicom.dcmread(source, stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError) as error:
        raise Unthumbnailable("unreadable", describe(error)) from error
    rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
    frames = int(header.get("NumberOfFrames", 1) or 1)
    samples = int(header.get("SamplesPerPixel", 1) or 1)
    bits = int(header.get("BitsAllocated", 16) or 16)
    if rows <= 0 or columns <= 0:
        raise Unthumbnailable("unreadable", "the instance has no pixel dimensions")
    if rows * columns > MAX_FRAME_PIXELS or (
        rows * columns * frames * samples * max(bits, 8) // 8 > MAX_DICOM_PIXEL_BYTES
    ):
        raise Unthumbnailable("too_large", f"pixel data of {frames}x{rows}x{columns}")
    source.seek(0)
    frame = domain.middle(frames)
    pixels = pixel_array(source, index=frame if frames > 1 else None)
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2"))
    if samples > 1 or pixels.ndim == 3:
        # pydicom gives colour as RGB (YBR converted): show it as it is.
        return Image.fromarray(np.ascontiguousarray(pixels).astype(np.uint8), "RGB")
    grey = domain.display(
        pixels,
        slope=domain.first_value(header.get("RescaleSlope")),
        intercept=domain.first_value(header.get("RescaleIntercept")),
        center=domain.first_value(header.get("WindowCenter")),
        width=domain.first_value(header.get("WindowWidth")),
        inverted=photometric == "MONOCHROME1",
    )
    return Image.fromarray(grey, "L")


DRAW = {"image": draw_image, "video": draw_video, "pdf": draw_pdf, "dicom": draw_dicom}
