"""The catalog's metadata schema as ingest follows it, and the check of metadata given
at upload or in an import manifest.

The catalog owns the schema (`PUT /v1/metadata-schema`) and records it whole in
`catalog.MetadataSchemaSet`; ingest keeps the latest in a mirror table as its
consumer applies the catalog's events, so an upload is checked in the very
transaction that would record it (a 422 naming the key and the type it needs, and
nothing stored), without a call to the catalog. A client that has just set the schema
sends the write's consistency token with its upload: the gateway waits until ingest has
applied it first (services/gateway/compose.py)."""

from __future__ import annotations

from collections.abc import Sequence

from shared.contracts.catalog import MetadataSchemaSet
from shared.contracts.metadata_schema import Schema, from_json
from shared.kit.db import Conn
from shared.kit.projections import Projection
from shared.kit.reactions import Reactions, Received
from shared.kit.service import Handlers

schema_mirror = Projection(
    name="ingest.metadata_schema",
    tables=("ingest.metadata_schema",),
    # Follows the catalog's events as the consumer applies them: not from our store.
    replayable=False,
    ddl="""
    CREATE TABLE IF NOT EXISTS ingest.metadata_schema (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        keys jsonb NOT NULL,
        version integer NOT NULL
    );
    """,
)


@schema_mirror.on(MetadataSchemaSet)
async def schema_set(conn: Conn, events: Sequence[Received[MetadataSchemaSet]]) -> None:
    last = events[-1]
    await conn.execute(
        """INSERT INTO ingest.metadata_schema (one, keys, version) VALUES (true, $1, $2)
           ON CONFLICT (one) DO UPDATE SET keys = excluded.keys, version = excluded.version
           WHERE ingest.metadata_schema.version < excluded.version""",
        last.event.keys,
        last.stream_version,
    )


class SchemaMirror(Handlers):
    reactions = Reactions("ingest")

    @reactions.on(MetadataSchemaSet)
    async def when_schema_set(
        self, conn: Conn, envelopes: Sequence[Received[MetadataSchemaSet]]
    ) -> None:
        await schema_mirror.apply_received(conn, envelopes)


async def current(conn: Conn, *, held: bool = True) -> Schema:
    """The schema as ingest has it, held (FOR SHARE) until the caller's commit; not held
    (`held=False`) for a check made early in a long transaction, which checks again,
    held, before it records (a lock held for minutes would stall the mirror's updates)."""
    lock = " FOR SHARE" if held else ""
    keys = await conn.fetchval(f"SELECT keys FROM ingest.metadata_schema{lock}")
    return from_json(keys or {})
