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
from shared.kit.service import Runtime, create_app, serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    runtime = Runtime(
        name="ingest",
        settings=settings,
        publishes=topics.INGEST,
        # The catalog's deletions release the blobs of deleted files.
        consumes=(topics.CATALOG,),
        setups=(
            jobs.setup,
            projections.integrations.setup,
            projections.sessions.setup,
            projections.blob_refs.setup,
        ),
    )
    blobs = open_blob_store(settings)
    runtime.on_start.append(blobs.start)
    uploads = Uploads(runtime, blobs)
    material = secrets.key_material(settings.secret_key, settings.data_dir)
    sessions = Sessions(runtime, blobs, secrets.derive(material, "upload part urls"))
    collector = Collector(runtime, blobs)
    runtime.handle = collector.react
    imports = Imports(runtime, settings)
    # Imports a restart interrupted go on where they were.
    runtime.on_start.append(imports.resume)

    async def sweep() -> None:
        runtime.supervise(
            "sessions.expire", lambda: sessions.expire_forever(settings.upload_sweep_every_s)
        )
        runtime.supervise(
            "blobs.collect", lambda: collector.sweep_forever(settings.blob_gc_every_s)
        )

    runtime.on_start.append(sweep)
    app = create_app(runtime, "Files ingest")
    api.install(app, uploads, sessions, imports)
    return app


def main() -> None:
    serve("ingest", build, default_port=8082)
