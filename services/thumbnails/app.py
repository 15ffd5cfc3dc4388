"""Composition root of the thumbnails service."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.thumbnails import api
from services.thumbnails.drawing import keep_secrets_from_workers
from services.thumbnails.handlers import LEASES, Thumbnails
from services.thumbnails.projections import thumbnails as model
from services.thumbnails.renditions import LEASES as RENDITION_LEASES
from services.thumbnails.renditions import Renditions
from services.thumbnails.renditions import model as renditions_model
from shared.contracts import topics
from shared.kit.blobs import open_blob_store
from shared.kit.db import Conn
from shared.kit.service import Parts, Runtime, create_app, serve
from shared.kit.settings import Settings


async def _leases(conn: Conn) -> None:
    await conn.execute(LEASES)
    await conn.execute(RENDITION_LEASES)


def build(settings: Settings) -> FastAPI:
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    blobs = open_blob_store(settings)
    keep_secrets_from_workers()
    parts = Parts("thumbnails", settings)
    thumbnails = Thumbnails(parts, blobs)
    renditions = Renditions(parts, blobs)
    thumbnails.renditions = renditions

    async def start_work() -> None:
        parts.supervise("drawing", thumbnails.run)
        parts.supervise("sweep", lambda: thumbnails.sweep_forever(settings.blob_gc_every_s))
        parts.supervise("re-encoding", renditions.run)

    runtime = Runtime(
        parts,
        publishes=topics.THUMBNAILS,
        # Files registered and deleted (catalog); DICOM series' slices (dicom).
        consumes=(topics.CATALOG, topics.DICOM),
        reactions=Thumbnails.reactions.bound(thumbnails),
        projections=(model, renditions_model),
        setups=(_leases,),
        on_start=[blobs.start, start_work],
    )
    app = create_app(runtime, "Files thumbnails")
    api.install(app, thumbnails, renditions)
    return app


def main() -> None:
    serve("thumbnails", build, default_port=8086)
