"""`files dlq`: the events consumers gave up on, and re-driving them.

files dlq list [--service S] [--status ST]   dead letters, newest first
files dlq show ID                            one, with its envelope and error
files dlq replay ID | --all [--service S]    through the same handler, once

Dead letters live in each service's schema (`<service>.dead_letters`, written by the
inbox consumer, shared/kit/inbox.py). A replay is asked for here and done by the
service itself: its consumer picks the request up (within a second), runs the event
through its handler under the inbox and marks it `replayed` in that transaction, so a
second replay finds nothing to do. This command waits for the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

# Only `files dlq` connects: every other verb of `files` registers this parser too, and
# asyncpg alone took ~0.4 s to import, paid by each `files ls`.
if TYPE_CHECKING:
    import asyncpg

    from shared.kit.settings import Settings

STATUSES = ("dead", "replay_requested", "replayed", "replay_failed")
COLUMNS = (
    "id, consumer, topic, event_id, type, source, position, envelope, raw, error, tries,"
    " first_failed_at, last_failed_at, status, replay_requested_at, replayed_at, replay_error"
)
# How often `replay` looks whether the services are done.
POLL_S = 0.2


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a dead letter's id (a UUID)") from None


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "dlq",
        help="list, show and replay the events consumers dead-lettered",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="dead letters, newest first")
    listing.add_argument("--service", help="only this service's (acl, catalog, ...)")
    listing.add_argument("--status", choices=STATUSES, help="only those in this state")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = verbs.add_parser("show", help="one dead letter, with its envelope")
    show.add_argument("id", type=_uuid)
    replay = verbs.add_parser("replay", help="re-drive through the same handler, once")
    replay.add_argument("id", type=_uuid, nargs="?")
    replay.add_argument("--all", action="store_true", help="every one not yet replayed")
    replay.add_argument("--service", help="with --all: only this service's")
    replay.add_argument(
        "--wait", type=float, default=60.0, metavar="S", help="give the services S seconds"
    )
    return parser


async def _schemas(conn: asyncpg.Connection, service: str | None) -> list[str]:
    rows = await conn.fetch(
        """SELECT table_schema FROM information_schema.tables
           WHERE table_name = 'dead_letters' AND ($1::text IS NULL OR table_schema = $1)
           ORDER BY table_schema""",
        service,
    )
    return [r["table_schema"] for r in rows]


async def _rows(
    conn: asyncpg.Connection,
    service: str | None,
    where: str = "true",
    *args: Any,
) -> list[tuple[str, asyncpg.Record]]:
    found = []
    for schema in await _schemas(conn, service):
        rows = await conn.fetch(f"SELECT {COLUMNS} FROM {schema}.dead_letters WHERE {where}", *args)
        found += [(schema, r) for r in rows]
    found.sort(key=lambda sr: sr[1]["last_failed_at"], reverse=True)
    return found


def _json(schema: str, row: asyncpg.Record) -> dict[str, Any]:
    out: dict[str, Any] = {"service": schema}
    for key, value in row.items():
        if key == "raw":
            value = value.decode("utf-8", "replace") if value is not None else None
        out[key] = value
    return out


def _line(schema: str, row: asyncpg.Record) -> str:
    at = f"{row['source']}:{row['position']}" if row["source"] else "-"
    error = " ".join(str(row["error"]).split())
    return (
        f"{row['id']}  {schema:<9} {row['status']:<16} {row['type'] or '(not an event)':<28}"
        f" {at:<16} tries {row['tries']:<3} {row['last_failed_at']:%Y-%m-%d %H:%M:%S}  "
        f"{error[:80]}"
    )


async def _list(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    where, params = ("status = $1", [args.status]) if args.status else ("true", [])
    rows = await _rows(conn, args.service, where, *params)
    for schema, row in rows:
        print(
            orjson.dumps(_json(schema, row), default=str).decode()
            if args.json
            else _line(schema, row)
        )
    if not rows:
        print("files dlq: no dead letters", file=sys.stderr)
    return 0


async def _find(conn: asyncpg.Connection, dead_letter: uuid.UUID) -> tuple[str, asyncpg.Record]:
    found = await _rows(conn, None, "id = $1", dead_letter)
    if not found:
        raise LookupError(f"no dead letter {dead_letter}")
    return found[0]


async def _show(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    schema, row = await _find(conn, args.id)
    print(orjson.dumps(_json(schema, row), default=str, option=orjson.OPT_INDENT_2).decode())
    return 0


async def _replay(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    if args.all:
        wanted = await _rows(conn, args.service, "status IN ('dead', 'replay_failed')")
    else:
        schema, row = await _find(conn, args.id)
        if row["status"] == "replayed":
            print(f"{row['id']}: replayed already, at {row['replayed_at']:%Y-%m-%d %H:%M:%S}")
            return 0
        wanted = [(schema, row)]
    if not wanted:
        print("files dlq: nothing to replay", file=sys.stderr)
        return 0
    for schema, row in wanted:
        await conn.execute(
            f"""UPDATE {schema}.dead_letters
                SET status = 'replay_requested', replay_requested_at = now()
                WHERE id = $1 AND status <> 'replayed'""",
            row["id"],
        )
    pending = {row["id"]: schema for schema, row in wanted}
    failed = 0
    deadline = time.monotonic() + args.wait
    while pending:
        for dead_letter, schema in list(pending.items()):
            now = await conn.fetchrow(
                f"SELECT status, replay_error FROM {schema}.dead_letters WHERE id = $1",
                dead_letter,
            )
            if now is not None and now["status"] == "replay_requested":
                continue
            del pending[dead_letter]
            if now is None:
                failed += 1
                print(f"{dead_letter}: gone from {schema}.dead_letters")
            elif now["status"] == "replayed":
                print(f"{dead_letter}: replayed ({schema})")
            else:
                failed += 1
                print(f"{dead_letter}: replay failed ({schema}): {now['replay_error']}")
        if pending and time.monotonic() > deadline:
            for dead_letter, schema in pending.items():
                print(
                    f"{dead_letter}: still waiting for {schema}'s consumer after {args.wait:g} s"
                    " (is the service running?); it will replay it when it runs"
                )
            return 1
        if pending:
            await asyncio.sleep(POLL_S)  # the services' consumers act; we look again
    return 1 if failed else 0


async def main(settings: Settings, args: argparse.Namespace) -> int:
    from shared.kit import db

    conn = await db.connect(settings.database_url)
    try:
        if args.verb == "list":
            return await _list(conn, args)
        if args.verb == "show":
            return await _show(conn, args)
        return await _replay(conn, args)
    except LookupError as missing:
        print(f"files dlq: {missing}", file=sys.stderr)
        return 1
    finally:
        await conn.close()


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.verb == "replay" and (args.id is None) == (not args.all):
        parser.error("replay takes either a dead letter's id or --all")
    if args.verb == "replay" and args.service and not args.all:
        parser.error("--service goes with --all")
