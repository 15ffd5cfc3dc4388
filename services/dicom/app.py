"""Composition root of the DICOM service."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.dicom import api
from services.dicom.handlers import Dicom
from services.dicom.projections import series
from shared.contracts import limits, topics
from shared.kit.blobs import open_blob_store
from shared.kit.service import Parts, Runtime, create_app, serve
from shared.kit.settings import Settings

MAX_BATCH = 50


def build(settings: Settings) -> FastAPI:
    # pydicom logs what it finds odd in a file; the rejections say what matters.
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    parts = Parts("dicom", settings)
    blobs = open_blob_store(settings)
    dicom = Dicom(parts, blobs)

    async def forgetting() -> None:
        parts.supervise("objects.forget", dicom.forget_passed_objects_forever)

    runtime = Runtime(
        parts,
        publishes=topics.DICOM,
        consumes=(topics.INGEST, topics.CATALOG),
        reactions=Dicom.reactions.bound(dicom),
        projections=(series,),
        # Each batch reads its files' headers and commits the job's progress: small
        # batches make the progress move while a large upload is read.
        max_batch=MAX_BATCH,
        # An upload's parts come in pages of up to 1,000 (128 KiB): at most 8 pages a
        # partition a batch rather than the 64 of an 8 MiB fetch of a backlog, so one
        # transaction reads thousands of instances, not tens of thousands. Not below the
        # largest message, which a fetch must be able to hold whole.
        max_fetch_bytes=limits.MAX_MESSAGE_BYTES,
        on_start=[blobs.start, forgetting],
    )
    app = create_app(runtime, "Files DICOM")
    api.install(app, dicom)
    return app


def main() -> None:
    serve("dicom", build, default_port=8085)
