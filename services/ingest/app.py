"""Composition root of the ingest service, built in one direction: the blob store and
the collector, then each capability (uploads, upload sessions, integrations and
imports), then the runtime that runs their read models and reactions, then the routes.

    content ─┐
    uploads ─┼─> jobs (read model), collector (blob refs), media, metadata (the
    sessions ┤   catalog's schema mirrored; uploads and imports check against it)
    imports ─┘   (sessions also take uploads' domain: a session's file is an upload's)
    cancel ────> jobs, sessions (an import is told through a callable)
"""

from __future__ import annotations

import uuid

from fastapi import FastAPI, Request

from services.ingest import content
from services.ingest.cancel import api as cancel_api
from services.ingest.cancel.handlers import Cancelling
from services.ingest.collector.handlers import Collector
from services.ingest.collector.projections import blob_refs
from services.ingest.imports import api as imports_api
from services.ingest.imports.handlers import Imports, Integrations
from services.ingest.imports.projections import integrations as integrations_model
from services.ingest.imports.projections import synced
from services.ingest.imports.sync import Syncs
from services.ingest.jobs import api as jobs_api
from services.ingest.jobs.projections import jobs
from services.ingest.metadata.schema import SchemaMirror, schema_mirror
from services.ingest.sessions import api as sessions_api
from services.ingest.sessions import handlers as sessions_handlers
from services.ingest.sessions.handlers import Sessions
from services.ingest.sessions.openers import Openers
from services.ingest.sessions.projections import sessions as sessions_model
from services.ingest.sessions.revocations import Revocations
from services.ingest.uploads import api as uploads_api
from services.ingest.uploads.handlers import Uploads
from services.ingest.webhooks import api as webhooks_api
from services.ingest.webhooks import handlers as webhooks_model
from services.ingest.webhooks.handlers import Webhooks, WithWebhooks
from shared.contracts import topics
from shared.kit import secrets
from shared.kit.blobs import open_blob_store
from shared.kit.http import access, folder_path
from shared.kit.reactions import Bound
from shared.kit.service import Parts, Runtime, create_app, serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    parts = Parts("ingest", settings)
    blobs = open_blob_store(settings)
    collector = Collector(parts, blobs)
    uploads = Uploads(parts, blobs)
    material = secrets.key_material(settings.secret_key, settings.data_dir)
    openers = Openers(settings.acl_url, settings.catalog_url, parts.identity)
    sessions = Sessions(parts, blobs, secrets.derive(material, "upload part urls"), openers)
    integrations = Integrations(parts, settings)
    imports = Imports(parts, integrations, blobs)
    syncs = Syncs(parts, integrations, blobs)
    cancelling = Cancelling(parts, sessions, imports.stop)
    webhooks = Webhooks(parts, settings)
    react = Bound.joined(
        Collector.reactions.bound(collector),
        SchemaMirror.reactions.bound(SchemaMirror(parts)),
        Revocations.reactions.bound(Revocations(sessions, openers)),
        Syncs.reactions.bound(syncs),
        Imports.reactions.bound(imports),
    )

    async def sweep() -> None:
        parts.supervise(
            "sessions.expire", lambda: sessions.expire_forever(settings.upload_sweep_every_s)
        )
        parts.supervise(
            "sessions.reclaim", lambda: sessions.reclaim_forever(settings.upload_sweep_every_s)
        )
        parts.supervise("blobs.collect", lambda: collector.sweep_forever(settings.blob_gc_every_s))
        parts.supervise("syncs.schedule", syncs.schedule_forever)
        parts.supervise("webhooks.send", webhooks.sender.send_forever)

    runtime = Runtime(
        parts,
        publishes=topics.INGEST,
        # The catalog's deletions release the blobs of deleted files and end the syncs
        # of deleted synced folders; its metadata schema is mirrored to check metadata
        # given at upload. The DICOM context's series hold their instances' blobs until
        # released.
        # Webhooks are sent for files uploaded and deleted (catalog) and for jobs that
        # ended (ingest's own). A revoked API key ends the upload sessions it opened, and a
        # lowered role those its user may no longer send parts to (ACL).
        consumes=(topics.CATALOG, topics.DICOM, topics.INGEST, topics.ACL),
        reactions=WithWebhooks(react, webhooks),
        projections=(jobs, integrations_model, synced, sessions_model, blob_refs, schema_mirror),
        setups=(webhooks_model.setup, sessions_handlers.setup),
        # Imports and syncs a restart interrupted go on where they were.
        on_start=[blobs.start, imports.resume, syncs.resume, syncs.list_synced_once, sweep],
        # Sessions its reactions ended have their store's side done once committed.
        after_batch=sessions.after_batch,
    )
    app = create_app(runtime, "Files ingest")

    async def writable(folder_id: uuid.UUID, request: Request) -> None:
        await syncs.refuse_uploads(folder_id, access(request), folder_path(request))

    app.include_router(uploads_api.router(uploads, writable))
    app.include_router(sessions_api.router(sessions, writable))
    app.include_router(imports_api.router(integrations, imports, syncs))
    app.include_router(jobs_api.router(parts, sessions.bytes_progress))
    app.include_router(cancel_api.router(cancelling))
    app.include_router(content.router(blobs))
    app.include_router(webhooks_api.router(webhooks))
    return app


def main() -> None:
    serve("ingest", build, default_port=8082)
