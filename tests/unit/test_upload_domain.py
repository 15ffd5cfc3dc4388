"""An upload of files, pure: what ingest records for its stored files (no I/O)."""

from __future__ import annotations

import uuid

import orjson

from services.ingest.uploads.domain import StoredFile, record_upload, sent_file_name
from shared.contracts import ingest, limits
from shared.contracts.catalog import Media, Source


def stored(n: int) -> StoredFile:
    # Long names, so that pages are cut by bytes before they are by count.
    return StoredFile(
        file_id=uuid.uuid4(),
        name=f"{n:05d}-" + "x" * 200 + ".png",
        kind="image",
        mime_type="image/png",
        size=4096,
        sha256=f"{n:064x}",
        blob_key=f"sha256/{n:064x}",
        media=Media(width=8, height=8),
    )


def test_an_upload_records_its_files_in_bounded_pages_in_order() -> None:
    job_id, folder_id = uuid.uuid4(), uuid.uuid4()
    files = [stored(n) for n in range(1500)]
    given = {files[3].name: {"label": "cat"}}
    changes = record_upload(job_id, folder_id, files, given)

    assert [c.version for c in changes] == list(range(1, len(changes) + 1))
    assert {c.stream_id for c in changes} == {ingest.job_stream(job_id)}
    started, *pages, finished = [c.event for c in changes]
    assert isinstance(started, ingest.UploadJobStarted)
    assert (started.total, started.kind) == (1500, "upload")
    assert isinstance(finished, ingest.UploadJobFinished) and finished.status == "done"
    assert len(pages) > 2  # 1,500 files of ~600 bytes do not fit in two 128 KiB pages
    for page in pages:
        assert isinstance(page, ingest.FilesStored)
        assert (page.job_id, page.folder_id) == (job_id, folder_id)
        assert len(page.files) <= limits.PAGE_ITEMS
        assert len(orjson.dumps(page.model_dump(mode="json"))) <= limits.PAGE_BYTES + 1024

    # Every file once, in the order received, as the per-file events it stands for.
    each = [s for p in pages if isinstance(p, ingest.FilesStored) for s in p.each()]
    assert [(s.file_id, s.name, s.blob_key, s.sha256, s.size, s.media) for s in each] == [
        (f.file_id, f.name, f.blob_key, f.sha256, f.size, f.media) for f in files
    ]
    assert all((s.job_id, s.folder_id, s.source) == (job_id, folder_id, Source()) for s in each)
    assert [s.metadata for s in each[2:5]] == [{}, {"label": "cat"}, {}]


def test_a_small_upload_is_one_page() -> None:
    changes = record_upload(uuid.uuid4(), uuid.uuid4(), [stored(n) for n in range(100)])
    assert [type(c.event) for c in changes] == [
        ingest.UploadJobStarted,
        ingest.FilesStored,
        ingest.UploadJobFinished,
    ]


def test_a_file_name_as_html_forms_escape_it_reads_as_it_was_named() -> None:
    # Browsers, httpx and requests send a quote, CR and LF in a filename as %22, %0D, %0A.
    assert sent_file_name(b"say %22hi%22.txt") == 'say "hi".txt'
    assert sent_file_name(b"two%0D%0Alines.txt") == "two\r\nlines.txt"  # then refused
    assert sent_file_name("café 100%.txt".encode()) == "café 100%.txt"
    assert sent_file_name(b"50%25 %2F.txt") == "50%25 %2F.txt"  # only those three
    assert sent_file_name(None) is None
