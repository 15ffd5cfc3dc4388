"""A DICOM upload, pure: what ingest records for its stored parts (no I/O)."""

from __future__ import annotations

import uuid

import orjson

from services.ingest.uploads.domain import StoredInstance, record_dicom_upload
from shared.contracts import ingest, limits


def part(n: int) -> StoredInstance:
    # Long names, so that pages are cut by bytes before they are by count.
    return StoredInstance(f"{n:05d}-" + "x" * 200 + ".dcm", f"sha256/{n:064x}", f"{n:064x}", 9000)


def test_a_dicom_upload_records_its_parts_in_bounded_pages_in_order() -> None:
    job_id, folder_id = uuid.uuid4(), uuid.uuid4()
    parts = [part(n) for n in range(2500)]
    changes = record_dicom_upload(job_id, folder_id, parts)

    assert [c.version for c in changes] == list(range(1, len(changes) + 1))
    assert {c.stream_id for c in changes} == {ingest.job_stream(job_id)}
    started, *pages = [c.event for c in changes]
    assert isinstance(started, ingest.UploadJobStarted)
    assert (started.total, started.kind) == (2500, "dicom")
    assert all(isinstance(p, ingest.DicomInstancesStored) for p in pages)
    assert len(pages) > 2  # 2,500 parts of ~330 bytes do not fit in two 128 KiB pages
    for page in pages:
        assert isinstance(page, ingest.DicomInstancesStored)
        assert (page.job_id, page.folder_id) == (job_id, folder_id)
        assert len(page.instances) <= limits.PAGE_ITEMS
        assert len(orjson.dumps(page.model_dump(mode="json"))) <= limits.PAGE_BYTES + 1024

    # Every part once, in the order received, as the per-instance events it stands for.
    each = [s for p in pages if isinstance(p, ingest.DicomInstancesStored) for s in p.each()]
    assert [(s.name, s.blob_key, s.sha256, s.size) for s in each] == [
        (p.name, p.blob_key, p.sha256, p.size) for p in parts
    ]
    assert all((s.job_id, s.folder_id, s.entry_id) == (job_id, folder_id, None) for s in each)
