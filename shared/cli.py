"""`files`: run the platform, rebuild projections.

files run                    the whole platform on the embedded default
files rebuild <projection>   drop a read model and replay its events
files rebuild --all
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import time

from shared.kit.settings import Settings

# Where each projection lives, by name; imported by path so that this tool
# does not tie the services to one another.
PROJECTIONS = {
    "catalog.tree": ("catalog", "services.catalog.projections:tree"),
    "ingest.jobs": ("ingest", "services.ingest.projections:jobs"),
    "acl.users": ("acl", "services.acl.projections:users"),
    "acl.collaborators": ("acl", "services.acl.projections:collaborators"),
    "datasets.membership": ("datasets", "services.datasets.projections:membership"),
    "dicom.series": ("dicom", "services.dicom.projections:series"),
}


def _load_stack_env(settings: Settings) -> Settings:
    """Find the database of a running `make run` when none is configured."""
    env_file = settings.data_dir / "stack.env"
    if not settings.database_url and env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            os.environ.setdefault(key, value)
        return Settings()
    return settings


def run(settings: Settings) -> int:
    from shared.kit.stack import Stack

    stack = Stack(settings)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        stack.start()
        print(f"Files is running at {stack.gateway_url}  (API docs: {stack.gateway_url}/docs)")
        if stack.admin_key_is_new:
            print(f"First admin's API key (also in {stack.data_dir / 'admin.key'}):")
            print(f"  {stack.admin_key}")
        print(f"Logs: {stack.data_dir / 'logs'}/   Stop with Ctrl-C.", flush=True)
        while not stopping:
            stack.check_alive()
            time.sleep(0.2)
        return 0
    except RuntimeError as error:
        print(f"files: {error}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


async def rebuild(settings: Settings, names: list[str]) -> None:
    from shared.kit import db
    from shared.kit.eventstore import EventStore
    from shared.kit.projections import rebuild as replay

    pool = await db.connect_pool(settings.database_url)
    try:
        for name in names:
            schema, target = PROJECTIONS[name]
            module, _, attribute = target.partition(":")
            projection = getattr(importlib.import_module(module), attribute)
            started = time.perf_counter()
            count = await replay(pool, EventStore(schema), projection)
            took = time.perf_counter() - started
            print(f"{name}: replayed {count} events in {took:.2f} s")
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="files", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the whole platform on this machine")
    rebuild_parser = commands.add_parser("rebuild", help="rebuild read models from events")
    rebuild_parser.add_argument("projection", nargs="?", choices=sorted(PROJECTIONS))
    rebuild_parser.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "run":
        return run(settings)
    names = sorted(PROJECTIONS) if args.all else [args.projection] if args.projection else []
    if not names:
        parser.error("name a projection or pass --all")
    settings = _load_stack_env(settings)
    if not settings.database_url:
        parser.error("no database: set FILES_DATABASE_URL or start the platform with make run")
    asyncio.run(rebuild(settings, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
