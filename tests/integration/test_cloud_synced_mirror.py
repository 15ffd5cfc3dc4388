"""The catalog's mirror of ingest's cloud-synced folders: which folders users may not
fill by hand, whatever order ingest's events arrive in, and kept across a rebuild of
the tree."""

from __future__ import annotations

import uuid
from dataclasses import replace

from services.catalog import domain
from services.catalog.projections import cloud_synced, synced_root, tree
from shared.contracts import ingest as ing
from shared.contracts.envelope import Cause, Event, envelopes_of, new_envelope
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from shared.kit.reactions import received
from tests.conftest import fresh_database


async def test_the_mirror_knows_synced_folders_in_any_order_and_outlives_a_rebuild(
    database_url: str,
) -> None:
    store = EventStore("catalog")
    cause = Cause(actor="test", correlation_id="c")
    async with fresh_database(database_url, "synced") as pool:
        async with pool.acquire() as conn:
            await store.setup(conn)
            await tree.setup(conn)
            await cloud_synced.setup(conn)
        root, key, plain = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        top = domain.Folder(root, None, "bucket", 1, ())
        made = [
            *domain.create_folder(root, None, "bucket", "", {}),
            *domain.create_folder(key, replace(top, path=(root,)), "a", "", {}),
            *domain.create_folder(plain, None, "plain", "", {}),
        ]
        async with pool.acquire() as conn, conn.transaction():
            envelopes = envelopes_of(made, cause)
            await tree.apply(conn, envelopes)
            await store.append(conn, envelopes)

        async def mirror(event: Event) -> None:
            envelope = new_envelope(
                event, stream_id=ing.sync_stream(root), stream_version=1, cause=cause
            )
            async with pool.acquire() as conn, conn.transaction():
                await cloud_synced.apply_received(conn, received([envelope], type(event)))

        async def root_of(folder_id: uuid.UUID) -> uuid.UUID | None:
            async with pool.acquire() as conn:
                path = await conn.fetchval(
                    "SELECT path FROM catalog.folders WHERE id = $1", folder_id
                )
                found = await synced_root(conn, path)
            return None if found is None else found["id"]

        # The key path's subfolder comes in before its root is known to follow a prefix
        # (another partition): nothing is refused until it is.
        await mirror(
            ing.SyncFolderNeeded(
                job_id=uuid.uuid4(), root_folder_id=root, folder_id=key, parent_id=root, name="a"
            )
        )
        assert await root_of(key) is None
        await mirror(
            ing.FolderSyncConfigured(folder_id=root, integration_id=uuid.uuid4(), prefix="p/")
        )
        assert (await root_of(root), await root_of(key), await root_of(plain)) == (root, root, None)
        # Moved out, the key path's subfolder is still the sync's.
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE catalog.folders SET path = $2 WHERE id = $1", key, [plain, key]
            )
        assert await root_of(key) == root

        # The mirror follows ingest, not the catalog's store: a rebuild of the tree keeps it.
        assert await rebuild(pool, store, tree) > 0
        assert (await root_of(root), await root_of(key)) == (root, root)

        # Ended (purged): its subfolders are plain folders again.
        await mirror(ing.FolderSyncEnded(folder_id=root))
        assert (await root_of(root), await root_of(key)) == (None, None)
