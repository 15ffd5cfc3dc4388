"""Composition root of the access-control service."""

from __future__ import annotations

from fastapi import FastAPI

from services.acl import api
from services.acl.handlers import Access
from services.acl.projections import users
from shared.contracts import topics
from shared.kit.service import Runtime, create_app, serve
from shared.kit.settings import Settings


def build(settings: Settings) -> FastAPI:
    runtime = Runtime(name="acl", settings=settings, publishes=topics.ACL, setups=(users.setup,))
    access = Access(runtime)

    async def bootstrap() -> None:
        if settings.bootstrap_admin_key:
            await access.bootstrap(settings.bootstrap_admin_key)

    runtime.on_start.append(bootstrap)
    app = create_app(runtime, "Files access control")
    api.install(app, access)
    return app


def main() -> None:
    serve("acl", build, default_port=8083)
