"""The catalog's mirror of ingest's cloud-synced folders: which folders users may not
fill by hand, whatever order ingest's events arrive in, and kept across a rebuild of
the tree."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from services.catalog import domain
from services.catalog.projections import cloud_synced, synced_root, tree
from services.ingest.imports.projections import synced
from services.ingest.imports.sync import Syncs
from shared.contracts import ingest as ing
from shared.contracts.envelope import Cause, Event, envelopes_of, new_envelope
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from shared.kit.reactions import received
from shared.kit.settings import Settings
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


async def test_folders_synced_before_the_mirror_are_listed_once_and_mirrored(
    database_url: str,
) -> None:
    """An ingest whose synced folders were configured before the catalog mirrored them
    lists them once at start (every replica after finds the list made); the catalog takes
    in the listed folders that still exist, and refuses hand-made ones in them."""
    cause = Cause(actor="test", correlation_id="c")
    async with fresh_database(database_url, "listed") as pool:
        ingest_store, catalog_store = EventStore("ingest"), EventStore("catalog")
        async with pool.acquire() as conn:
            for store in (ingest_store, catalog_store):
                await store.setup(conn)
            for projection in (synced, tree, cloud_synced):
                await projection.setup(conn)
        root, key, purged = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        top = domain.Folder(root, None, "bucket", 1, ())
        made = [
            *domain.create_folder(root, None, "bucket", "", {}),
            *domain.create_folder(key, replace(top, path=(root,)), "a", "", {}),
        ]
        async with pool.acquire() as conn, conn.transaction():
            envelopes = envelopes_of(made, cause)
            await tree.apply(conn, envelopes)
            await catalog_store.append(conn, envelopes)
            # Ingest's read model as an older version left it; `purged`'s folder is
            # gone from the catalog (its FolderSyncEnded not yet applied there).
            for folder in (root, purged):
                await conn.execute(
                    """INSERT INTO ingest.synced_folders (folder_id, integration_id, prefix,
                           created_at, created_by) VALUES ($1, $2, 'p/', now(), 'someone')""",
                    folder,
                    uuid.uuid4(),
                )
            await conn.execute(
                "INSERT INTO ingest.synced_subfolders (folder_id, root_folder_id) VALUES ($1, $2)",
                key,
                root,
            )
        parts: Any = SimpleNamespace(pool=pool, store=ingest_store, settings=Settings())
        syncs = Syncs(parts, None, None)  # type: ignore[arg-type]
        await asyncio.gather(syncs.list_synced_once(), syncs.list_synced_once())
        await syncs.list_synced_once()
        async with pool.acquire() as conn:
            listed = await ingest_store.read_stream(conn, ing.SYNCED_FOLDERS_LISTED_STREAM)
        assert [e.type for e in listed] == ["ingest.CloudSyncedFoldersListed"]
        assert {(f["folder_id"], f["root_folder_id"]) for f in listed[0].data["folders"]} == {
            (str(root), str(root)),
            (str(key), str(root)),
            (str(purged), str(purged)),
        }
        async with pool.acquire() as conn, conn.transaction():
            await cloud_synced.apply_received(conn, received(listed, ing.CloudSyncedFoldersListed))
            mirrored = dict(
                await conn.fetch("SELECT folder_id, root_folder_id FROM catalog.cloud_synced")
            )
            path = await conn.fetchval("SELECT path FROM catalog.folders WHERE id = $1", key)
            found = await synced_root(conn, path)
        assert mirrored == {root: root, key: root}
        assert found is not None and found["id"] == root
