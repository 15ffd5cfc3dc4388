"""Composition root of the access-control service."""

from __future__ import annotations

from fastapi import FastAPI

from services.acl import api
from services.acl.handlers import AccessControl
from services.acl.projections import collaborators, users
from shared.contracts import topics
from shared.kit import identity
from shared.kit.service import Parts, Runtime, create_app, serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    if settings.bootstrap_admin_key:
        # Refused at start, before anyone could guess it.
        identity.require_strong(
            "FILES_BOOTSTRAP_ADMIN_KEY", settings.bootstrap_admin_key, prefix="files_"
        )
    parts = Parts("acl", settings)
    acl = AccessControl(parts)

    async def bootstrap() -> None:
        if settings.bootstrap_admin_key:
            await acl.bootstrap(settings.bootstrap_admin_key)

    runtime = Runtime(
        parts,
        publishes=topics.ACL,
        consumes=(topics.CATALOG,),
        reactions=AccessControl.reactions.bound(acl),
        projections=(users, collaborators),
        on_start=[bootstrap],
    )
    app = create_app(runtime, "Files access control")
    api.install(app, acl)
    return app


def main() -> None:
    serve("acl", build, default_port=8083)
