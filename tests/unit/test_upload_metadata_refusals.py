"""An upload's metadata refused: every file at fault named at once (`details.refused`),
the first as before at the top level, so a client sets them all aside in one round."""

from __future__ import annotations

import json

import orjson
import pytest

from services.ingest.metadata import domain
from services.ingest.metadata.domain import check_metadata, file_metadata
from shared.contracts import rules
from shared.contracts.metadata_schema import Key
from shared.kit.errors import Refused


def test_every_file_whose_metadata_no_store_takes_is_named_at_once() -> None:
    """Before, the first file at fault was refused alone: 500 files each with a bad
    value took 500 requests, each sending the whole batch again."""
    given = {
        "a.png": {"ok": 1},
        "b.png": {"note": "a\x00b"},
        "c.png": {"blob": "x" * (rules.MAX_METADATA_BYTES + 1)},
        "d.png": ["not", "an", "object"],
    }
    with pytest.raises(Refused) as refused:
        file_metadata(json.dumps(given).encode(), list(given))
    error = refused.value
    # The first's status, code and details, as before (a client of before reads these).
    assert (error.status, error.code, error.details["name"]) == (422, "invalid_metadata", "b.png")
    assert error.message.startswith("file 'b.png': ") and "2 more files" in error.message
    listed = error.details["refused"]
    assert [(r["name"], r["code"], r["status"]) for r in listed] == [
        ("b.png", "invalid_metadata", 422),
        ("c.png", "metadata_too_large", 413),
        ("d.png", "invalid_metadata", 422),
    ]
    assert listed[1]["limit"] == rules.MAX_METADATA_BYTES
    assert listed[2]["message"] == "file 'd.png': metadata must be a JSON object"


def test_every_file_whose_metadata_the_schema_refuses_is_named_at_once() -> None:
    schema = {"score": Key("number")}
    given = {f"{n}.png": {"score": n if n % 2 else "high"} for n in range(6)}
    with pytest.raises(Refused) as refused:
        check_metadata(schema, given)
    error = refused.value
    assert (error.status, error.code) == (422, "metadata_type_mismatch")
    assert {k: error.details[k] for k in ("name", "key", "type")} == {
        "name": "0.png",
        "key": "score",
        "type": "number",
    }
    assert [(r["name"], r["key"], r["code"]) for r in error.details["refused"]] == [
        (f"{n}.png", "score", "metadata_type_mismatch") for n in (0, 2, 4)
    ]
    # One file at fault: its refusal as it always was, listed alone.
    with pytest.raises(Refused) as one:
        check_metadata(schema, {"a.png": {"score": "x"}})
    assert one.value.message == "file 'a.png': metadata key 'score' must be a number"
    assert [r["name"] for r in one.value.details["refused"]] == ["a.png"]


def test_the_list_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(domain, "REFUSED_LISTED", 2)
    with pytest.raises(Refused) as refused:
        check_metadata({"n": Key("number")}, {f"{n}": {"n": "x"} for n in range(5)})
    assert len(refused.value.details["refused"]) == 2
    assert refused.value.details["more_refused"] is True


def test_the_list_is_bounded_in_bytes_too() -> None:
    """Each entry repeats its file's name (up to 300 characters, in its message too): a
    thousand of them were megabytes, built in ingest and carried by the gateway."""
    names = {f"{'é' * 290}{n:04}.png": {"n": "x"} for n in range(domain.REFUSED_LISTED)}
    with pytest.raises(Refused) as refused:
        check_metadata({"n": Key("number")}, names)
    listed = refused.value.details["refused"]
    assert len(orjson.dumps(listed)) <= domain.REFUSED_LISTED_BYTES
    assert 0 < len(listed) < domain.REFUSED_LISTED
    assert refused.value.details["more_refused"] is True
