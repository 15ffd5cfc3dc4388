"""`files`: run and operate the platform (run, rebuild, audit); use it (upload, ls, ...).

The user verbs are the Python client's (files_client/cli.py): login, upload, ls,
search, mv, rm, download, datasets, share, unshare, jobs, history, import, sync,
integrations, users, keys, webhooks.

files run                    the whole platform on the embedded default
files rebuild <projection>   drop a read model and replay its events
files rebuild --all
files audit [filters]        every context's events, merged in time order (see --help)
files dlq list|show|replay   events consumers dead-lettered, and re-driving them
files upload PATH... --to FOLDER/PATH, files ls [PATH], ...  (files <verb> --help)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared import dlq

# The operator's verbs need the platform's settings; the user's verbs (the client's) do
# not, and each `files ls` would pay pydantic-settings' import.
if TYPE_CHECKING:
    from shared.kit.settings import Settings

# Where each projection lives, by name; imported by path so that this tool
# does not tie the services to one another.
PROJECTIONS = {
    "catalog.tree": ("catalog", "services.catalog.projections:tree"),
    "ingest.jobs": ("ingest", "services.ingest.jobs.projections:jobs"),
    "ingest.sessions": ("ingest", "services.ingest.sessions.projections:sessions"),
    "ingest.blobs": ("ingest", "services.ingest.collector.projections:blob_refs"),
    "ingest.integrations": ("ingest", "services.ingest.imports.projections:integrations"),
    "acl.users": ("acl", "services.acl.projections:users"),
    "acl.collaborators": ("acl", "services.acl.projections:collaborators"),
    "datasets.membership": ("datasets", "services.datasets.projections:membership"),
    "dicom.series": ("dicom", "services.dicom.projections:series"),
    "thumbnails.files": ("thumbnails", "services.thumbnails.projections:thumbnails"),
    "thumbnails.renditions": ("thumbnails", "services.thumbnails.renditions:model"),
}


def _load_stack_env(settings: Settings) -> Settings:
    """Find the database of a running `make run` when none is configured."""
    from shared.kit.settings import Settings

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
    # Exits and restarts of the pieces are shown as they happen (and kept in stack.log).
    stack.echo = True
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        stack.start()
        print(f"Files is running: open the web app at {stack.gateway_url}/")
        print(f"API docs at {stack.gateway_url}/docs")
        print(f"gRPC (files.v1, proto/files/v1/files.proto) at {stack.grpc_target}")
        if stack.admin_key_is_new:
            print(f"First admin's API key (also in {stack.data_dir / 'admin.key'}):")
            print(f"  {stack.admin_key}")
        print(f"Logs: {stack.data_dir / 'logs'}/   Stop with Ctrl-C.", flush=True)
        # The stack supervises its pieces (restarts what exits) until it is stopped.
        while not stopping:
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
            print(f"{name}: replayed {count} events in {took:.2f} s", flush=True)
    finally:
        await pool.close()


def _subject(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def _time(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time (e.g. 2024-05-01 or 2024-05-01T12:00:00Z)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return n


AUDIT_EPILOG = """\
Reads the event store of every context (acl, catalog, datasets, dicom, ingest,
thumbnails) directly and read-only, in one snapshot, merged in time order. Filters
combine; --subject and --type may be repeated. --since is inclusive, --until
exclusive; a time without an offset is UTC. The followed causes and effects are shown
whatever the filters.
Secrets (key hashes, passwords, sealed credentials) are redacted as in GET /v1/audit.

examples:
  files audit --subject <folder id> --follow-effects     what deleting it did
  files audit --actor <user id> --since 2024-05-01 --json
  files audit --correlation <request id>                 one request's consequences
"""


def _audit_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "audit",
        help="replay the history of a file, folder, dataset, user or time range",
        description="Replay the events of every context, in order, with the causation chain.",
        epilog=AUDIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--subject",
        type=_subject,
        action="append",
        metavar="UUID",
        help="a file, folder, dataset, user, job... id (repeatable)",
    )
    add("--actor", metavar="ID", help="who did it: a user id, or system...")
    add(
        "--type",
        action="append",
        metavar="TYPE",
        help="an event type such as catalog.FolderDeleted (repeatable)",
    )
    add("--since", type=_time, metavar="TIME", help="from this time on (ISO 8601)")
    add("--until", type=_time, metavar="TIME", help="before this time (ISO 8601)")
    add("--correlation", metavar="ID", help="every event of one request (its correlation id)")
    add("--limit", type=_positive, metavar="N", help="show at most N events")
    add(
        "--follow-causes",
        action="store_true",
        help="also the events that caused these, up the chain, across contexts",
    )
    add(
        "--follow-effects",
        action="store_true",
        help="also the events these caused, transitively, across contexts",
    )
    add("--json", action="store_true", help="one JSON object per line instead of a table")
    return parser


async def audit(settings: Settings, args: argparse.Namespace) -> int:
    import orjson

    from shared.kit import db
    from shared.kit.replay import Selection, Table, replay

    selection = Selection(
        subject_ids=args.subject,
        actor_id=args.actor,
        types=args.type,
        since=args.since,
        until=args.until,
        correlation_id=args.correlation,
    )
    table = None if args.json else Table()
    shown = 0
    conn = await db.connect(settings.database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            events = replay(
                conn,
                selection,
                follow_causes=args.follow_causes,
                follow_effects=args.follow_effects,
                limit=args.limit,
            )
            async for event in events:
                if table is None:
                    line = orjson.dumps(event).decode()
                else:
                    if not shown:
                        print(table.header())
                    line = table.row(event)
                print(line, flush=shown % 100 == 0)
                shown += 1
    finally:
        await conn.close()
    sys.stdout.flush()
    if not shown:
        print("files audit: no events match", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="files", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the whole platform on this machine")
    rebuild_parser = commands.add_parser("rebuild", help="rebuild read models from events")
    rebuild_parser.add_argument("projection", nargs="?", choices=sorted(PROJECTIONS))
    rebuild_parser.add_argument("--all", action="store_true")
    audit_parser = _audit_parser(commands)
    dlq_parser = dlq.add_parser(commands)
    from files_client import cli as user_cli

    user_cli.register(commands)
    args = parser.parse_args(argv)
    if getattr(args, "user_command", None):
        return user_cli.run(args)
    from shared.kit.settings import Settings

    settings = Settings()
    if args.command == "run":
        return run(settings)
    if args.command == "dlq":
        dlq.check(dlq_parser, args)
        settings = _load_stack_env(settings)
        if not settings.database_url:
            dlq_parser.error("no database: set FILES_DATABASE_URL or start the platform")
        return asyncio.run(dlq.main(settings, args))
    if args.command == "audit":
        if args.since and args.until and args.until <= args.since:
            audit_parser.error("--until must be later than --since")
        settings = _load_stack_env(settings)
        if not settings.database_url:
            audit_parser.error(
                "no database: set FILES_DATABASE_URL or start the platform with make run"
            )
        try:
            return asyncio.run(audit(settings, args))
        except BrokenPipeError:  # `files audit | head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
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
