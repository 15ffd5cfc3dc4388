"""Composition root of the ingest service."""

from __future__ import annotations

from fastapi import FastAPI

from services.ingest import api, projections
from services.ingest.collector import Collector
from services.ingest.handlers import Uploads
from services.ingest.imports import Imports
from services.ingest.projections import jobs
from services.ingest.sessions import Sessions
from shared.contracts import topics
from shared.kit import secrets
from shared.kit.blobs import open_blob_store
from shared.kit.service import Parts, Runtime, create_app, serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    parts = Parts("ingest", settings)
    blobs = open_blob_store(settings)
    uploads = Uploads(parts, blobs)
    material = secrets.key_material(settings.secret_key, settings.data_dir)
    sessions = Sessions(parts, blobs, secrets.derive(material, "upload part urls"))
    collector = Collector(parts, blobs)
    imports = Imports(parts, settings)

    async def sweep() -> None:
        parts.supervise(
            "sessions.expire", lambda: sessions.expire_forever(settings.upload_sweep_every_s)
        )
        parts.supervise("blobs.collect", lambda: collector.sweep_forever(settings.blob_gc_every_s))

    runtime = Runtime(
        parts,
        publishes=topics.INGEST,
        # The catalog's deletions release the blobs of deleted files.
        consumes=(topics.CATALOG,),
        reactions=Collector.reactions.bound(collector),
        projections=(
            jobs,
            projections.integrations,
            projections.sessions,
            projections.blob_refs,
        ),
        # Imports a restart interrupted go on where they were.
        on_start=[blobs.start, imports.resume, sweep],
    )
    app = create_app(runtime, "Files ingest")
    api.install(app, uploads, sessions, imports)
    return app


def main() -> None:
    serve("ingest", build, default_port=8082)
