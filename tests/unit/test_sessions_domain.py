"""Upload sessions, pure: the part plan, what completes a session, what opens one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.sessions.domain import (
    MAX_PARTS,
    MAX_SIZE,
    MIN_PART,
    MiB,
    Part,
    StoredPart,
    check_complete,
    check_open,
    missing,
    plan,
)
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
    assert check_open(body, 8 * MiB, 3600) == ("scan.mp4", 3 * 1024 * MiB, 64 * MiB, 60.0)
    # What the body leaves out is the service's: its part size, its longest lifetime.
    assert check_open({"name": "a.mp4", "size": 10}, 8 * MiB, 3600) == (
        "a.mp4",
        10,
        8 * MiB,
        3600.0,
    )


def test_opening_refuses_a_field_it_does_not_take() -> None:
    with pytest.raises(Refused) as refused:
        check_open({"name": "a.mp4", "size": 10, "colour": "red"}, 8 * MiB, 3600)
    assert (refused.value.code, refused.value.details["fields"][0]["field"]) == (
        "invalid_request",
        "colour",
    )
