"""Rebuilding the DICOM context's series from its own events gives the live rows back."""

from __future__ import annotations

import asyncpg
import httpx

from services.dicom.projections import series
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from tests.e2e.support import folder, unique
from tests.e2e.test_dicom import finished, fresh_study, send, series_files, slices

SNAPSHOT = {
    "dicom.series": "SELECT * FROM dicom.series ORDER BY file_id",
    "dicom.instances": "SELECT * FROM dicom.instances ORDER BY file_id, slice_key",
    "dicom.jobs": "SELECT * FROM dicom.jobs ORDER BY job_id",
    "dicom.job_files": "SELECT * FROM dicom.job_files ORDER BY job_id, file_id",
    "dicom.job_errors": "SELECT * FROM dicom.job_errors ORDER BY job_id, position",
    "dicom.import_entries": "SELECT * FROM dicom.import_entries ORDER BY entry_id",
}


async def rows(pool: asyncpg.Pool) -> dict[str, list[dict[str, object]]]:
    return {t: [dict(r) for r in await pool.fetch(q)] for t, q in SNAPSHOT.items()}


async def test_rebuilt_series_have_the_same_rows_as_the_live_ones(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    here = await folder(api, unique("dicom-rebuild"))
    there = await folder(api, unique("dicom-rebuild-to"))
    study = fresh_study()
    one, two = slices(study, 1, 5), slices(study, 2, 3)
    await finished(api, await send(api, here["id"], *one[:3], *two, ("x.dcm", b"junk")))
    await finished(api, await send(api, here["id"], *one[3:]))
    files = {s["dicom"]["series_uid"]: s for s in await series_files(api, here["id"], 2)}
    first, second = (files[uid] for uid in sorted(files))
    await api.post("/v1/move", json={"file_ids": [first["id"]], "target_folder_id": there["id"]})
    await api.delete(f"/v1/files/{second['id']}")
    # Uploads wait for the DICOM context to follow the catalog: after this one, it has.
    await finished(api, await send(api, there["id"], one[0]))
    live = await rows(pool)
    assert live["dicom.series"] and live["dicom.instances"] and live["dicom.jobs"]
    assert live["dicom.job_files"] and live["dicom.job_errors"]
    replayed = await rebuild(pool, EventStore("dicom"), series)
    assert replayed > 0
    assert await rows(pool) == live
