"""An upload session's file stored without its metadata (completed by an ingest replica
of a version before sessions took it) takes it from ingest's later
`UploadSessionMetadataRestored`, if it has none yet: metadata given it since is kept,
and a file deleted since takes nothing. The catalog consumer's apply step against a
real PostgreSQL (tests/integration/test_catalog_folder_order.py)."""

from __future__ import annotations

import uuid

from services.catalog import domain
from shared.contracts.ingest import FileContentStored, UploadSessionMetadataRestored
from tests.integration.test_catalog_folder_order import catalog_consumer, top


async def test_a_file_stored_without_its_sessions_metadata_takes_it_once_unless_it_has_some(
    database_url: str,
) -> None:
    async with catalog_consumer(database_url) as context:
        folder_id = uuid.uuid4()
        await context.record(*top(folder_id, "scans"))
        stored = [
            FileContentStored(
                job_id=uuid.uuid4(),
                file_id=uuid.uuid4(),
                folder_id=folder_id,
                name=name,
                kind="text",
                size=1,
                sha256="0" * 64,
                mime_type="text/plain",
                blob_key=f"blobs/{name}",
            )
            for name in ("bare.txt", "edited.txt", "cleared.txt")
        ]
        await context.batch(*(context.ingest.event(s) for s in stored))
        bare, edited, cleared = stored

        async def patch(s: FileContentStored, metadata: dict[str, str]) -> None:
            row = await context.pool.fetchrow(
                "SELECT id, folder_id, name, version, blob_key, sha256, metadata"
                " FROM catalog.files WHERE id = $1",
                s.file_id,
            )
            found = dict(row)
            was = found.pop("metadata")
            await context.record(
                *domain.update_file(domain.File(**found), was, name=None, metadata=metadata)
            )

        # Given metadata by a PATCH before ingest's sweep came to it; or given some and
        # cleared on purpose (its metadata empty, as a file never given any).
        await patch(edited, {"site": "mine"})
        await patch(cleared, {"site": "mine"})
        await patch(cleared, {})

        def restored(s: FileContentStored) -> UploadSessionMetadataRestored:
            return UploadSessionMetadataRestored(
                session_id=s.job_id, file_id=s.file_id, metadata={"site": "x"}
            )

        gone = uuid.uuid4()  # a file deleted since (or never registered)
        await context.batch(
            context.ingest.event(restored(bare)),
            context.ingest.event(restored(edited)),
            context.ingest.event(restored(cleared)),
            context.ingest.event(
                UploadSessionMetadataRestored(
                    session_id=uuid.uuid4(), file_id=gone, metadata={"site": "x"}
                )
            ),
        )
        metadata = {
            r["name"]: r["metadata"]
            for r in await context.pool.fetch("SELECT name, metadata FROM catalog.files")
        }
        assert metadata == {
            "bare.txt": {"site": "x"},
            "edited.txt": {"site": "mine"},
            "cleared.txt": {},
        }


async def test_metadata_the_schema_now_refuses_is_not_restored(database_url: str) -> None:
    async with catalog_consumer(database_url) as context:
        folder_id = uuid.uuid4()
        await context.record(*top(folder_id, "scans"))
        stored = FileContentStored(
            job_id=uuid.uuid4(),
            file_id=uuid.uuid4(),
            folder_id=folder_id,
            name="typed.txt",
            kind="text",
            size=1,
            sha256="0" * 64,
            mime_type="text/plain",
            blob_key="blobs/typed.txt",
        )
        await context.batch(context.ingest.event(stored))
        # `site` typed a number after the session opened with a word for it.
        await context.pool.execute(
            """INSERT INTO catalog.metadata_schema (id, keys, version)
               VALUES (1, '{"site": {"type": "number", "retired": false}}', 1)
               ON CONFLICT (id) DO UPDATE SET keys = excluded.keys"""
        )
        await context.batch(
            context.ingest.event(
                UploadSessionMetadataRestored(
                    session_id=stored.job_id, file_id=stored.file_id, metadata={"site": "x"}
                )
            )
        )
        assert (
            await context.pool.fetchval(
                "SELECT metadata FROM catalog.files WHERE id = $1", stored.file_id
            )
            == {}
        )
