"""Upload sessions, pure: the part plan, what completes a session, what opens one."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.metadata.domain import file_metadata
from services.ingest.sessions.domain import (
    MAX_PARTS,
    MAX_SIZE,
    MIN_PART,
    MiB,
    Part,
    StoredPart,
    check_complete,
    check_open,
    complete_session,
    missing,
    plan,
)
from services.ingest.uploads.domain import StoredFile
from shared.contracts.catalog import Media
from shared.contracts.ingest import FileContentStored
from shared.contracts.rules import MAX_METADATA_BYTES
from shared.kit.errors import Refused


def test_a_plan_cuts_the_file_into_parts_of_the_chosen_size_the_last_shorter() -> None:
    assert plan(150 * MiB, 64 * MiB) == [
        Part(1, 64 * MiB),
        Part(2, 64 * MiB),
        Part(3, 22 * MiB),
    ]
    assert plan(64 * MiB, 64 * MiB) == [Part(1, 64 * MiB)]
    assert plan(10, 64 * MiB) == [Part(1, 10)]


@given(size=st.integers(1, MAX_SIZE), part_size=st.integers(MIN_PART, 5 * 1024 * MiB))
def test_every_plan_covers_the_file_within_s3_rules(size: int, part_size: int) -> None:
    parts = plan(size, part_size)
    assert sum(p.size for p in parts) == size
    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert len(parts) <= MAX_PARTS
    assert all(p.size >= MIN_PART for p in parts[:-1])
    assert all(p.size == parts[0].size for p in parts[:-1])


def test_a_file_too_big_for_10000_parts_gets_larger_parts() -> None:
    parts = plan(1024 * 1024 * MiB, 64 * MiB)  # 1 TiB
    assert len(parts) <= MAX_PARTS
    assert parts[0].size % MiB == 0 and parts[0].size > 64 * MiB


def test_completion_names_the_parts_missing_or_of_the_wrong_size() -> None:
    parts = plan(20 * MiB, MIN_PART)  # 4 parts of 5 MiB
    stored = [StoredPart(1, MIN_PART, "a"), StoredPart(3, 1000, "c")]
    assert missing(parts, stored) == [2, 3, 4]
    with pytest.raises(Refused) as refused:
        check_complete(parts, stored)
    assert refused.value.status == 409
    assert refused.value.code == "parts_missing"
    assert refused.value.details["missing_parts"] == [2, 3, 4]
    assert refused.value.details["wrong_sizes"] == {"3": 1000}
    check_complete(parts, [StoredPart(p.number, p.size, "e") for p in parts])


@pytest.mark.parametrize(
    ("name", "size", "part_size", "lifetime", "code"),
    [
        (None, 10, MIN_PART, 60, "missing_file_name"),
        ("a/b.mp4", 10, MIN_PART, 60, "invalid_name"),
        ({}, 10, MIN_PART, 60, "invalid_name"),
        (["a.mp4"], 10, MIN_PART, 60, "invalid_name"),
        ("a.mp4", 0, MIN_PART, 60, "invalid_size"),
        ("a.mp4", "10", MIN_PART, 60, "invalid_size"),
        ("a.mp4", True, MIN_PART, 60, "invalid_size"),
        ("a.mp4", MAX_SIZE + 1, MIN_PART, 60, "file_too_large"),
        ("a.mp4", 10, MIN_PART - 1, 60, "invalid_part_size"),
        ("a.mp4", 10, "big", 60, "invalid_part_size"),
        ("a.mp4", 10, MIN_PART, 0, "invalid_expiry"),
        ("a.mp4", 10, MIN_PART, 3601, "invalid_expiry"),
        ("a.mp4", 10, MIN_PART, "soon", "invalid_expiry"),
    ],
)
def test_opening_refuses_what_cannot_be_uploaded(
    name: object, size: object, part_size: object, lifetime: object, code: str
) -> None:
    body = {"name": name, "size": size, "part_size": part_size, "expires_in_s": lifetime}
    with pytest.raises(Refused) as refused:
        check_open({k: v for k, v in body.items() if v is not None}, 64 * MiB, 3600)
    assert refused.value.code == code
    assert refused.value.status == (413 if code == "file_too_large" else 422)
    assert refused.value.message.split()[0] not in ("Value", "Input")  # our words


def test_opening_accepts_a_named_file_of_some_bytes() -> None:
    body = {"name": "scan.mp4", "size": 3 * 1024 * MiB, "part_size": 64 * MiB, "expires_in_s": 60}
    assert check_open(body, 8 * MiB, 3600) == ("scan.mp4", 3 * 1024 * MiB, 64 * MiB, 60.0, {})
    # What the body leaves out is the service's: its part size, its longest lifetime.
    assert check_open({"name": "a.mp4", "size": 10}, 8 * MiB, 3600) == (
        "a.mp4",
        10,
        8 * MiB,
        3600.0,
        {},
    )


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_opening_refuses_an_integer_no_store_holds() -> None:
    """JSON's numbers have no bound; the events' (orjson's) integers stop at 64 bits."""
    body = {"name": "a.mp4", "size": 10, "metadata": {"n": 2**80}}
    with pytest.raises(Refused) as refused:
        check_open(body, 8 * MiB, 3600)
    assert (refused.value.status, refused.value.code) == (422, "invalid_metadata")
    assert "64-bit" in refused.value.message


def test_opening_takes_the_files_metadata_bounded_as_an_uploads() -> None:
    given = {"name": "a.mp4", "size": 10, "metadata": {"site": "paris", "n": [1, 2]}}
    assert check_open(given, 8 * MiB, 3600)[4] == {"site": "paris", "n": [1, 2]}
    assert check_open({**given, "metadata": None}, 8 * MiB, 3600)[4] == {}


@pytest.mark.parametrize(
    ("metadata", "status", "code"),
    [
        (["site"], 422, "invalid_metadata"),
        ("site=paris", 422, "invalid_metadata"),
        (7, 422, "invalid_metadata"),
        ({"blob": "x" * (MAX_METADATA_BYTES + 1)}, 413, "metadata_too_large"),
        # What no store holds: refused before anything is opened (they were a 500 at
        # the session's append, its store upload left behind).
        ({"site": "pa\x00ris"}, 422, "invalid_metadata"),
        ({"si\x00te": "paris"}, 422, "invalid_metadata"),
        ({"deep": _nested(300)}, 422, "invalid_metadata"),
    ],
)
def test_opening_refuses_metadata_an_upload_would_refuse_in_the_same_words(
    metadata: object, status: int, code: str
) -> None:
    body = {"name": "a.mp4", "size": 10, "metadata": metadata}
    with pytest.raises(Refused) as session:
        check_open(body, 8 * MiB, 3600)
    with pytest.raises(Refused) as upload:
        file_metadata(json.dumps({"a.mp4": metadata}).encode(), ["a.mp4"])
    assert (session.value.status, session.value.code) == (status, code)
    # An upload lists each file it refuses besides (`refused`: here this one alone).
    listed = upload.value.details.pop("refused")
    assert [(r["name"], r["code"]) for r in listed] == [("a.mp4", code)]
    assert (session.value.message, session.value.details) == (
        upload.value.message,
        upload.value.details,
    )


def test_a_completed_session_stores_its_file_with_the_metadata_in_one_event() -> None:
    session_id, folder_id = uuid.uuid4(), uuid.uuid4()
    file = StoredFile(uuid.uuid4(), "a.mp4", "video", "video/mp4", 10, "s", "k", Media())
    changes = complete_session(session_id, folder_id, 3, file, {"site": "paris"})
    stored = [c.event for c in changes if isinstance(c.event, FileContentStored)]
    assert [s.metadata for s in stored] == [{"site": "paris"}]
    assert [type(c.event).__name__ for c in changes] == [
        "FileContentStored",
        "UploadJobFinished",
    ]
    # A session opened before metadata was taken completes as before.
    before = complete_session(session_id, folder_id, 3, file)
    assert [c.event.metadata for c in before if isinstance(c.event, FileContentStored)] == [{}]


def test_opening_refuses_a_field_it_does_not_take() -> None:
    with pytest.raises(Refused) as refused:
        check_open({"name": "a.mp4", "size": 10, "colour": "red"}, 8 * MiB, 3600)
    assert (refused.value.code, refused.value.details["fields"][0]["field"]) == (
        "invalid_request",
        "colour",
    )


def test_an_unknown_key_is_named_clipped_not_echoed_whole() -> None:
    # A 16 MB body may be one unknown key: it came back whole, two or three times.
    with pytest.raises(Refused) as refused:
        check_open({"name": "a.mp4", "size": 10, "k" * 1_000_000: 1, "x": 2}, 8 * MiB, 3600)
    details = refused.value.details
    assert len(json.dumps(details)) + len(refused.value.message) < 1024
    assert details["fields"][0]["field"].startswith("kkk") and details["faults"] == 2
