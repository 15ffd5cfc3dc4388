"""Composition root of the catalog service."""

from __future__ import annotations

from fastapi import FastAPI

from services.catalog import api, queries
from services.catalog.handlers import CONSUMES, Catalog, setup_reactions
from services.catalog.history import setup_history
from services.catalog.projections import cloud_synced, links, tree
from shared.contracts import topics
from shared.kit.service import Parts, Runtime, create_app, serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    parts = Parts("catalog", settings)
    catalog = Catalog(parts)

    async def schedules() -> None:
        every = settings.trash_purge_every_s
        parts.supervise("trash.purge", lambda: catalog.purge_expired_forever(every))
        parts.supervise(
            "folder_wait",
            lambda: catalog.give_up_waiting_forever(
                settings.folder_wait_s, settings.folder_wait_every_s
            ),
        )

    runtime = Runtime(
        parts,
        publishes=topics.CATALOG,
        consumes=CONSUMES,
        reactions=Catalog.reactions.bound(catalog),
        projections=(tree, links, cloud_synced),
        setups=(setup_reactions, setup_history),
        on_start=[schedules],
        audit_view=lambda access, items, _about: queries.audit_seen(parts.pool, access, items),
    )
    app = create_app(runtime, "Files catalog")
    api.install(app, catalog)
    return app


def main() -> None:
    serve("catalog", build, default_port=8081)
