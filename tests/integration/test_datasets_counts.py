"""A dataset's `file_count` as a member sees it, on a dataset of 100,000 files: counted
in one statement over the dataset's links and the mirror of the catalog's tree (no
round trip a file), right, and in a time a page of datasets can afford."""

from __future__ import annotations

import time
import uuid
from typing import Any

from services.datasets.handlers import VISIBLE_COUNTS, visible_files
from shared.kit.access import Access
from tests.integration.test_datasets_reactions import datasets_consumer

FILES = 100_000
FOLDERS = 200  # the files spread over them; the member sees the first half of them


async def visible_file_counts(pool: Any, access: Access, rows: Any) -> dict[uuid.UUID, int]:
    return {k: seen.file_count for k, seen in (await visible_files(pool, access, rows)).items()}


async def test_a_members_count_of_a_large_dataset_is_one_statement(database_url: str) -> None:
    async with datasets_consumer(database_url) as context:
        pool = context.pool
        top_seen, top_hidden = uuid.uuid4(), uuid.uuid4()
        folders = [uuid.uuid4() for _ in range(FOLDERS)]
        tops = [top_seen if i < FOLDERS // 2 else top_hidden for i in range(FOLDERS)]
        files = [uuid.uuid4() for _ in range(FILES)]
        where = [folders[i % FOLDERS] for i in range(FILES)]
        big, small, empty = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await pool.execute(
            """INSERT INTO datasets.folders (id, parent_id, path)
               SELECT x.id, x.top, ARRAY[x.top, x.id]
               FROM unnest($1::uuid[], $2::uuid[]) AS x(id, top)""",
            folders,
            tops,
        )
        await pool.execute(
            "INSERT INTO datasets.files (id, folder_id)"
            " SELECT * FROM unnest($1::uuid[], $2::uuid[])",
            files,
            where,
        )
        await pool.execute(
            """INSERT INTO datasets.datasets
               (id, name, description, file_count, version, created_at, created_by)
               SELECT x.id, 'd', '', x.n, 1, now(), 'someone'
               FROM unnest($1::uuid[], $2::bigint[]) AS x(id, n)""",
            [big, small, empty],
            [FILES, 3, 0],
        )
        await pool.execute(
            "INSERT INTO datasets.members (dataset_id, file_id) SELECT $1, unnest($2::uuid[])",
            big,
            files,
        )
        # The small one: a file seen, one hidden, one the mirror does not know (yet).
        await pool.execute(
            "INSERT INTO datasets.members (dataset_id, file_id) SELECT $1, unnest($2::uuid[])",
            small,
            [files[0], files[FOLDERS - 1], uuid.uuid4()],
        )
        await pool.execute("ANALYZE datasets.members, datasets.files, datasets.folders")
        rows = await pool.fetch(
            "SELECT * FROM datasets.datasets WHERE id = ANY($1::uuid[]) ORDER BY id",
            [big, small, empty],
        )

        member = Access(user_id="member", grants={top_seen: "user"})
        started = time.perf_counter()
        counts = await visible_file_counts(pool, member, rows)
        took = time.perf_counter() - started
        assert counts == {big: FILES // 2, small: 1, empty: 0}
        # A grant below: one folder's files.
        one_folder = Access(user_id="member", grants={folders[3]: "editor"})
        assert (await visible_file_counts(pool, one_folder, rows))[big] == FILES // FOLDERS
        # No grant: nothing, and no statement; an org admin: the count kept.
        assert await visible_file_counts(pool, Access(user_id="x"), rows) == {
            big: 0,
            small: 0,
            empty: 0,
        }
        admin = Access(user_id="admin", org_admin=True)
        assert await visible_file_counts(pool, admin, rows) == {big: FILES, small: 3, empty: 0}

        plan = "\n".join(
            r[0]
            for r in await pool.fetch(
                f"EXPLAIN (ANALYZE, BUFFERS) {VISIBLE_COUNTS}", [big], [top_seen]
            )
        )
        print(f"\n{FILES:,} files, the member's count in {took * 1000:.0f} ms\n{plan}")
        # Generous (a loaded, shared machine): about 50 ms when quiet.
        assert took < 5.0, plan
