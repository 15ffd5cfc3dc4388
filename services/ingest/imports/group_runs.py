"""An import's image groups, sequences and DICOM series, read after its single objects:
each group's frames read once (as single objects are) and the group recorded whole; a
DICOM series' instances copied into the blob store and stored as an upload's parts are
(README: "DICOM series by reference"). A mixin of the Runner (imports/runner.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from services.ingest.collector import claims
from services.ingest.collector.projections import blob_refs, claim_blobs
from services.ingest.imports.buckets.port import Bucket, BucketReader
from services.ingest.imports.domain import groups
from services.ingest.imports.domain import jobs as domain
from services.ingest.imports.domain.requests import Rejection
from services.ingest.jobs.projections import jobs
from shared.contracts import ingest as ev
from shared.contracts.envelope import Cause, Change, envelopes_of, now
from shared.kit.blobs import BlobStore, BlobWriter
from shared.kit.service import Handlers


class GroupRuns(Handlers):
    readers: int
    run_size: int
    fatal: tuple[str, ...]
    blobs: BlobStore
    bucket_of: Callable[[uuid.UUID], Awaitable[tuple[Bucket, BucketReader] | None]]

    async def _append(self, state: domain.JobState, cause: Cause, changes: list[Change]) -> None:
        raise NotImplementedError

    async def _fail_removed(self, state: domain.JobState, cause: Cause) -> None:
        raise NotImplementedError

    async def _read_run(
        self, reader: BucketReader, run: list[ev.ImportObject], state: domain.JobState | None = None
    ) -> list[domain.Found | Rejection | domain.Matched]:
        raise NotImplementedError

    @staticmethod
    def _refused(obj: ev.ImportObject, error: Exception) -> Rejection:
        raise NotImplementedError

    async def _groups(self, state: domain.JobState, cause: Cause, reader: BucketReader) -> bool:
        """Read each pending group's frames (self.readers runs at a time) and record it whole,
        or its refusal; True when the job stopped (as `_flush`)."""
        gate = asyncio.Semaphore(self.readers)

        async def read(
            run: list[ev.ImportObject],
        ) -> list[domain.Found | Rejection | domain.Matched]:
            async with gate:
                return await self._read_run(reader, run)

        for group in state.pending_groups():
            if state.matches_imported:
                match = groups.matched(state, group, await self._imported_group(state, group))
                if match is not None:
                    await self._append(state, cause, groups.settled(state, match))
                    state.settled_groups.add(group.group_file_id)
                    continue
            if group.kind == "dicom_series":
                if await self._dicom_series(state, cause, reader, group):
                    return True
                continue
            frames = groups.frames_of(group)
            results = [
                r
                for run in await asyncio.gather(
                    *(
                        read(frames[i : i + self.run_size])
                        for i in range(0, len(frames), self.run_size)
                    )
                )
                for r in run
            ]
            if await self.bucket_of(state.integration_id) is None:
                await self._fail_removed(state, cause)
                return True
            refusal = groups.refused(group, results)
            if refusal is None:
                found = [r for r in results if isinstance(r, domain.Found)]
                changes = groups.stored(
                    state.job_id,
                    state.folder_id,
                    state.integration_id,
                    state.version,
                    group,
                    found,
                )
            else:
                changes = groups.rejected(state.job_id, state.version, refusal)
            await self._append(state, cause, changes)
            state.settled_groups.add(group.group_file_id)
            reasons = {r.details.get("reason") for r in results if isinstance(r, Rejection)}
            fatal = len(reasons) == 1 and reasons <= set(self.fatal)
            if fatal and all(isinstance(r, Rejection) for r in results):
                (reason,) = reasons
                await self._append(
                    state,
                    cause,
                    domain.fail(
                        state.job_id,
                        state.version,
                        str(reason),
                        f"every frame of {group.entry} was refused by the bucket: {reason}",
                    ),
                )
                return True
        return False

    async def _imported_group(
        self, state: domain.JobState, group: domain.GroupState
    ) -> list[uuid.UUID]:
        """The group files an entry of these frames already made in the job's folder
        through its integration (ingest.cloud_groups), or the series files the instances
        of a DICOM series entry of these keys joined (ingest.cloud_series); at most 100."""
        query = (
            """SELECT DISTINCT s.file_id FROM ingest.cloud_dicom_entries e
               JOIN ingest.cloud_series s ON s.group_file_id = e.group_file_id
               WHERE e.integration_id = $1 AND e.folder_id = $2 AND e.frames_sha256 = $3
               ORDER BY s.file_id LIMIT 100"""
            if group.kind == "dicom_series"
            else """SELECT file_id FROM ingest.cloud_groups
               WHERE integration_id = $1 AND folder_id = $2 AND frames_sha256 = $3
               ORDER BY file_id LIMIT 100"""
        )
        rows = await self.pool.fetch(
            query,
            state.integration_id,
            state.folder_id,
            groups.frames_sha256(group.kind, group.keys),
        )
        return [r["file_id"] for r in rows]

    async def _dicom_series(
        self,
        state: domain.JobState,
        cause: Cause,
        reader: BucketReader,
        group: domain.GroupState,
    ) -> bool:
        """A DICOM series entry: its instances copied from the bucket into the blob store
        (self.readers at a time), then stored as an upload's parts are, in one transaction with
        their blobs; or, if one cannot be copied, the entry refused whole and nothing
        kept. True when the job stopped."""
        gate = asyncio.Semaphore(self.readers)
        instances = groups.frames_of(group)

        async def copy(obj: ev.ImportObject) -> BlobWriter | Rejection:
            refused = domain.check_object(obj)
            if refused is not None:
                return refused
            async with gate:
                try:
                    return await reader.copy(obj.key, self.blobs.writer)
                except Exception as error:
                    return self._refused(obj, error)

        copies = await asyncio.gather(*(copy(obj) for obj in instances))
        writers = [c for c in copies if isinstance(c, BlobWriter)]
        try:
            if await self.bucket_of(state.integration_id) is None:
                await self._fail_removed(state, cause)
                return True
            refusal = groups.refused(group, copies)
            if refusal is not None:
                await self._append(
                    state, cause, groups.rejected(state.job_id, state.version, refusal)
                )
                state.settled_groups.add(group.group_file_id)
                return False
            changes = groups.dicom_copied(
                state,
                group,
                [(o, w.key, w.sha256, w.size) for o, w in zip(instances, writers, strict=True)],
            )
            envelopes = envelopes_of(changes, cause)
            keys = sorted({w.key for w in writers})
            holder = uuid.uuid4()
            # As an upload's blobs: claimed, put with no database connection held (a
            # hung store would hold one a series), then recorded (collector/claims.py);
            # claims dated anew while the put goes on (a series of GiBs to a slow store).
            async with self.pool.acquire() as conn, conn.transaction():
                await claims.claim(conn, keys, holder, now())
            await claims.kept_while(self.pool, keys, holder, self.blobs.commit(writers))
            async with self.pool.acquire() as conn, conn.transaction():
                await claim_blobs(conn, keys)
                if not await claims.settle(conn, keys, holder):
                    # A put longer than the collector keeps claims: the job stops as on
                    # the store's error, nothing of the series recorded.
                    raise claims.refused()
                await jobs.apply(conn, envelopes)
                await blob_refs.apply(conn, envelopes)
                await self.store.append(conn, envelopes)
            state.version += len(envelopes)
            state.settled_groups.add(group.group_file_id)
            return False
        finally:
            for w in writers:
                w.abort()
