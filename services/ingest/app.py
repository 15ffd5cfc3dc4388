"""Composition root of the ingest service."""

from __future__ import annotations

from fastapi import FastAPI

from services.ingest import api
from services.ingest.handlers import Uploads
from services.ingest.projections import jobs
from shared.contracts import topics
from shared.kit.blobs import LocalBlobStore
from shared.kit.service import Runtime, create_app, serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    runtime = Runtime(
        name="ingest",
        settings=settings,
        publishes=topics.INGEST,
        setups=(jobs.setup,),
    )
    uploads = Uploads(runtime, LocalBlobStore(settings.blob_root()))
    app = create_app(runtime, "Files ingest")
    api.install(app, uploads)
    return app


def main() -> None:
    serve("ingest", build, default_port=8082)
