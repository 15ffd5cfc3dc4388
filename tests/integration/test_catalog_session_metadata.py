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
            for name in ("bare.txt", "edited.txt")
        ]
        await context.batch(*(context.ingest.event(s) for s in stored))
        bare, edited = stored
        row = await context.pool.fetchrow(
            "SELECT id, folder_id, name, version, blob_key, sha256 FROM catalog.files"
            " WHERE id = $1",
            edited.file_id,
        )
        # Given metadata by a PATCH before ingest's sweep came to it.
        await context.record(
            *domain.update_file(domain.File(**row), {}, name=None, metadata={"site": "mine"})
        )

        def restored(s: FileContentStored) -> UploadSessionMetadataRestored:
            return UploadSessionMetadataRestored(
                session_id=s.job_id, file_id=s.file_id, metadata={"site": "x"}
            )

        gone = uuid.uuid4()  # a file deleted since (or never registered)
        await context.batch(
            context.ingest.event(restored(bare)),
            context.ingest.event(restored(edited)),
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
        assert metadata == {"bare.txt": {"site": "x"}, "edited.txt": {"site": "mine"}}
