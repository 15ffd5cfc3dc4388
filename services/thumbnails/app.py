"""Composition root of the thumbnails service."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from fastapi import FastAPI

from services.thumbnails import api
from services.thumbnails.drawing import keep_secrets_from_workers
from services.thumbnails.handlers import LEASES, Thumbnails
from services.thumbnails.projections import thumbnails as model
from services.thumbnails.renditions import LEASES as RENDITION_LEASES
from services.thumbnails.renditions import Renditions
from services.thumbnails.renditions import model as renditions_model
from shared.contracts import topics
from shared.contracts.thumbnails import ThumbnailsRequestedPage, ThumbnailsSettled
from shared.kit.access import Access
from shared.kit.blobs import open_blob_store
from shared.kit.db import Conn
from shared.kit.service import Parts, Runtime, create_app, serve
from shared.kit.settings import Settings


async def _audit_seen(
    access: Access | None, items: list[dict[str, Any]], about: list[uuid.UUID] | None
) -> None:
    """A page names every file of a batch, which may be anyone's: a member (who asks
    about files they may see, the gateway checks) gets of a page the files asked about."""
    if access is None or access.roots is None:
        return  # a service's own call, or an admin's
    asked = {str(i) for i in about or ()}
    for item in items:
        if item["type"] in _PAGES:
            data = item["data"]
            data["files"] = [f for f in data.get("files", []) if f.get("file_id") in asked]
            data["file_ids"] = [f["file_id"] for f in data["files"]]


_PAGES = frozenset({ThumbnailsRequestedPage.type, ThumbnailsSettled.type})


async def _leases(conn: Conn) -> None:
    await conn.execute(LEASES)
    await conn.execute(RENDITION_LEASES)


async def _pages_by_file(conn: Conn) -> None:
    """The audit of a file finds its pages by the file's id (shared/kit/audit.py), not by
    reading every page of their type."""
    for page in _PAGES:
        name = "events_" + page.split(".")[1].lower() + "_ids"
        await conn.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON thumbnails.events"
            f" USING gin ((data->'file_ids')) WHERE type = '{page}'"
        )


def build(settings: Settings) -> FastAPI:
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    # Thumbnails are background work (a file is listed at once, its pictures moments
    # later): this process's consumer, runners and records yield to the uploads, the
    # catalog and the gateway on a busy machine. Before the drawing pool is made: its
    # workers are spawned at this niceness and go lower from it (render.start_worker).
    os.nice(settings.thumbnail_nice)
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
        setups=(_leases, _pages_by_file),
        on_start=[blobs.start, start_work],
        audit_view=_audit_seen,
        after_batch=thumbnails.after_batch,
    )
    app = create_app(runtime, "Files thumbnails")
    api.install(app, thumbnails, renditions)
    return app


def main() -> None:
    serve("thumbnails", build, default_port=8086)
