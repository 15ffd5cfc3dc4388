"""Composition root of the datasets service."""

from __future__ import annotations

from fastapi import FastAPI

from services.datasets import api
from services.datasets.handlers import Datasets, audit_seen
from services.datasets.projections import membership, tree
from shared.contracts import topics
from shared.kit.service import Parts, Runtime, create_app, serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    parts = Parts("datasets", settings)
    datasets = Datasets(parts)
    runtime = Runtime(
        parts,
        publishes=topics.DATASETS,
        consumes=(topics.CATALOG,),
        reactions=Datasets.reactions.bound(datasets),
        projections=(membership, tree),
        audit_view=lambda access, items, _about: audit_seen(parts.pool, access, items),
    )
    app = create_app(runtime, "Files datasets")
    api.install(app, datasets)
    return app


def main() -> None:
    serve("datasets", build, default_port=8084)
