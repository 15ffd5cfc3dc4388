"""An upload of files, pure: what ingest records for its stored files (no I/O)."""

from __future__ import annotations

import dataclasses
import uuid

import orjson
import pytest
from pydantic import ValidationError

from services.ingest.uploads.domain import StoredFile, record_upload, sent_file_name
from services.ingest.uploads.handlers import media_json
from services.ingest.uploads.multipart import _with_media
from shared.contracts import catalog, ingest, limits
from shared.contracts.catalog import Media, Source
from shared.contracts.envelope import Cause, envelopes_of


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


def test_the_catalogs_page_of_an_upload_is_bounded_as_ingests_and_reads_as_its_files() -> None:
    """A `FilesUploaded` carries the files of one `FilesStored` page (of a partition):
    the largest page ingest makes fits in an event, and no page may hold more files
    than a stored page does; `file_ids` names its files, for the audit."""
    job_id, folder_id = uuid.uuid4(), uuid.uuid4()
    files = [stored(n) for n in range(1500)]
    pages = [c.event for c in record_upload(job_id, folder_id, files, {files[0].name: {"a": 1}})]
    uploaded = [
        catalog.FilesUploaded.page(
            p.folder_id,
            p.job_id,
            [catalog.UploadedFile.model_construct(**dict(f)) for f in p.files],
        )
        for p in pages
        if isinstance(p, ingest.FilesStored)
    ]
    for page in uploaded:
        data = page.model_dump(mode="json")
        assert catalog.FilesUploaded.model_validate(data) == page  # what consumers read
        assert limits.json_size(data) <= limits.MAX_EVENT_BYTES
    each = [f for page in uploaded for f in page.each()]
    assert [f.file_id for f in each] == [f.file_id for f in files]
    assert each[0].metadata == {"a": 1} and each[1].metadata == {}
    assert all(
        (f.folder_id, f.job_id, f.source, f.group, f.constituent_of)
        == (folder_id, job_id, Source(type="upload"), None, None)
        for f in each
    )
    assert each[5] == catalog.FileUploaded.model_validate(each[5].model_dump())

    one = uploaded[0].model_dump(mode="json")
    with pytest.raises(ValidationError, match="file_ids"):
        catalog.FilesUploaded.model_validate({**one, "file_ids": one["file_ids"][::-1]})
    with pytest.raises(ValidationError):
        catalog.FilesUploaded.model_validate({**one, "files": [], "file_ids": []})
    too_many = [one["files"][0]] * (limits.PAGE_ITEMS + 1)
    with pytest.raises(ValidationError, match="at most 1000"):
        catalog.FilesUploaded.model_validate(
            {**one, "files": too_many, "file_ids": [f["file_id"] for f in too_many]}
        )


def test_an_upload_pages_data_is_its_events_own_json_dumped_once() -> None:
    """Each page's data is the files' dumps made to size the pages, given to the
    envelope (not dumped again), and equal, as JSON too, to the event's own dump, with
    metadata of every JSON kind."""
    files = [stored(n) for n in range(700)]
    given = {
        files[1].name: {"score": 1e16, "small": 2.5e-7, "text": "é\u2028\U0001f600", "n": None},
        files[2].name: {"nested": [1, {"a": True, "b": [None, -0.0]}], "big": 2**62},
    }
    changes = record_upload(uuid.uuid4(), uuid.uuid4(), files, given)
    envelopes = envelopes_of(changes, Cause(actor="user:u", correlation_id="c"))
    pages = [(c, e) for c, e in zip(changes, envelopes, strict=True) if c.data is not None]
    assert [type(c.event) for c, _ in pages] == [ingest.FilesStored] * (len(changes) - 2)
    for change, envelope in pages:
        own = change.event.model_dump(mode="json")
        assert envelope.data is change.data
        assert change.data == own and orjson.dumps(change.data) == orjson.dumps(own)
    for change, envelope in [(changes[0], envelopes[0]), (changes[-1], envelopes[-1])]:
        assert change.data is None
        assert envelope.data == change.event.model_dump(mode="json")  # dumped by the envelope


@pytest.mark.parametrize(
    "media",
    [
        Media(width=64, height=48),
        Media(width=0, height=0, frames=1, duration_s=0.0, fps=29.97, codec="h264"),
        Media(sample_rate=44100, channels=2, duration_s=1.5, codec="mp3"),
        Media(dims=(64, 64, 30), voxel_size=(0.5, 0.5, 2.0), datatype="int16"),
        Media(dims=(), voxel_size=()),
    ],
)
def test_an_answers_media_is_the_facts_dump_without_nulls(media: Media) -> None:
    """The upload's answer reads a file's facts from their fields: what their dump
    without nulls gives, as values and as JSON."""
    assert media_json(media) == media.model_dump(exclude_none=True)
    assert orjson.dumps(media_json(media)) == orjson.dumps(media.model_dump(exclude_none=True))


def test_a_file_with_facts_is_its_record_with_them() -> None:
    media, one = Media(width=64, height=48), stored(1)
    assert _with_media(one, media) == dataclasses.replace(one, media=media)
    plain = stored(2)
    assert _with_media(plain, plain.media) is plain
