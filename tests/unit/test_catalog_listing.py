"""The catalog's listing filters, cursors, bulk edits and metadata schema, pure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.catalog import domain, listing, schema
from shared.kit.errors import Refused

ITEMS = listing.ITEMS_PARAMS


def test_parameters_are_parsed_and_unknown_ones_refused() -> None:
    asked = listing.parse(
        [
            ("q", "cat"),
            ("kind", "image"),
            ("kind", "folder"),
            ("kind", ""),
            ("in_dataset", "false"),
            ("order", "size"),
            ("desc", "true"),
            ("metadata.site", "lyon"),
            ("metadata.site", "paris"),
            ("metadata.score.gte", "3"),
            ("limit", "7"),
        ],
        ITEMS,
    )
    assert asked.kinds == ("image", "folder") and asked.in_dataset is False
    assert (asked.order, asked.desc, asked.limit) == ("size", True, 7)
    assert asked.metadata == (("site", ("lyon", "paris")),)
    assert asked.ranges == (("metadata.score.gte", "score", ">=", "3"),)
    assert not asked.folders_wanted  # in_dataset is about files
    with pytest.raises(Refused) as refused:
        listing.parse([("sort", "name"), ("q", "x")], ITEMS)
    assert (refused.value.status, refused.value.details["parameters"]) == (400, ["sort"])
    for params, parameter in (
        ([("order", "colour")], "order"),
        ([("desc", "1")], "desc"),
        ([("q", "a"), ("q", "b")], "q"),
        ([("kind", "Image")], "kind"),
        ([("kind", "imag")], "kind"),
        ([("limit", "1001")], "limit"),
        ([("metadata.", "x")], "metadata."),
    ):
        with pytest.raises(Refused) as refused:
            listing.parse(params, ITEMS)
        assert refused.value.status == 422 and refused.value.details["parameter"] == parameter
    with pytest.raises(Refused):
        listing.parse([("folder_id", str(uuid.uuid4()))], listing.SEARCH_PARAMS, q_required=True)


def test_a_cursor_names_its_order_and_reads_back() -> None:
    ident = uuid.uuid4()
    when = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    for order, section, key in (("name", 1, "a.png"), ("created_at", 1, when), ("size", 1, 42)):
        cursor = listing.encode_cursor(order, True, section, key, ident)  # type: ignore[arg-type]
        found = listing.decode_cursor(cursor, order, True)  # type: ignore[arg-type]
        assert (found.section, found.key, found.id) == (section, key, ident)
        with pytest.raises(Refused) as refused:
            listing.decode_cursor(cursor, order, False)  # type: ignore[arg-type]
        assert (refused.value.status, refused.value.code) == (400, "cursor_order_mismatch")
    # Folders have no size: by name, so their key is a name.
    cursor = listing.encode_cursor("size", False, 0, "alpha", ident)
    assert listing.decode_cursor(cursor, "size", False).key == "alpha"
    bad = listing.encode_cursor("size", False, 1, "not a size", ident)
    with pytest.raises(Refused) as refused:
        listing.decode_cursor(bad, "size", False)
    assert refused.value.status == 422


def test_metadata_values_stand_for_their_json_types() -> None:
    assert listing.metadata_candidates("5") == ["5", 5]
    assert listing.metadata_candidates("true") == ["true", True]
    assert listing.metadata_candidates("lyon") == ["lyon"]
    assert listing.metadata_candidates('{"a": 1}') == ['{"a": 1}']


def _described(metadata: dict[str, object]) -> domain.Described:
    file = domain.File(uuid.uuid4(), uuid.uuid4(), "a.png", 3, "k", "s")
    return domain.Described(file, "", dict(metadata))


def test_a_bulk_edit_merges_replaces_and_refuses_whole() -> None:
    one, two = _described({"a": 1, "b": 2}), _described({"a": 1})
    changes = domain.bulk_edit(
        [one, two],
        [
            domain.FileEdit(one.file.id, name="b.png", description="d", metadata={"b": None}),
            domain.FileEdit(two.file.id, metadata={"c": 3}),
        ],
        "merge",
    )
    # Grouped by kind, each file's versions in order.
    assert [(c.stream_id, c.version, c.event.type) for c in changes] == [
        (f"file-{one.file.id}", 4, "catalog.FileRenamed"),
        (f"file-{one.file.id}", 5, "catalog.FileMetadataChanged"),
        (f"file-{two.file.id}", 4, "catalog.FileMetadataChanged"),
        (f"file-{one.file.id}", 6, "catalog.FileDescribed"),
    ]
    assert changes[1].event.metadata == {"a": 1}  # type: ignore[attr-defined]
    assert changes[2].event.metadata == {"a": 1, "c": 3}  # type: ignore[attr-defined]
    replaced = domain.bulk_edit([two], [domain.FileEdit(two.file.id, metadata={"z": 0})], "replace")
    assert replaced[0].event.metadata == {"z": 0}  # type: ignore[attr-defined]
    with pytest.raises(Refused) as refused:
        domain.bulk_edit(
            [one, two],
            [domain.FileEdit(one.file.id, name="ok"), domain.FileEdit(two.file.id, name="a/b")],
            "merge",
        )
    assert refused.value.details["file_id"] == str(two.file.id)
    with pytest.raises(Refused, match="once"):
        domain.check_bulk_edit([domain.FileEdit(one.file.id)] * 2, "merge")
    with pytest.raises(Refused):
        domain.check_bulk_edit([domain.FileEdit(uuid.uuid4()) for _ in range(1001)], "merge")


def test_the_schema_checks_types_and_types_ranges() -> None:
    typed = schema.valid_schema(
        {
            "n": {"type": "number"},
            "t": {"type": "datetime"},
            "e": {"type": "enum", "values": ["a", "b"]},
            "v": {"type": "embedding", "dimension": 2},
            "u": {"type": "uuid"},
            "old": {"type": "number", "retired": True},
        }
    )
    schema.check(typed, {"n": 1.5, "t": "2026-01-01T00:00:00Z", "e": "a", "v": [1, 2], "old": "x"})
    schema.check(typed, {"u": str(uuid.uuid4()), "free": {"any": "thing"}})
    for bad in ({"n": True}, {"t": "2026-01-01"}, {"e": "c"}, {"v": [1, "2"]}, {"u": "x"}):
        with pytest.raises(Refused) as refused:
            schema.check(typed, bad)
        assert refused.value.details["key"] == next(iter(bad))
    for wrong in (
        {"type": "colour"},
        {"type": "enum", "values": []},
        {"type": "text", "dimension": 3},
    ):
        with pytest.raises(Refused):
            schema.valid_schema({"k": wrong})
    found = schema.typed_range(typed, "metadata.n.gte", "n", ">=", "2.5")
    assert (found.type, found.value) == ("number", Decimal("2.5"))
    found = schema.typed_range(typed, "metadata.t.lte", "t", "<=", "2026-01-01T02:00:00+02:00")
    assert found.value == datetime(2026, 1, 1, tzinfo=UTC)
    for key, text in (("e", "a"), ("old", "1"), ("missing", "1"), ("n", "NaN"), ("t", "soon")):
        with pytest.raises(Refused):
            schema.typed_range(typed, f"metadata.{key}.gte", key, ">=", text)


def test_a_schema_is_set_by_org_admins_and_the_same_one_records_nothing() -> None:
    keys = {"n": {"type": "number"}}
    with pytest.raises(Refused) as refused:
        domain.set_schema(0, {}, keys, org_admin=False)
    assert refused.value.status == 403
    [change] = domain.set_schema(0, {}, keys, org_admin=True)
    assert (change.stream_id, change.version) == ("metadata-schema", 1)
    recorded = change.event.keys  # type: ignore[attr-defined]
    assert recorded == {"n": {"type": "number", "retired": False}}
    assert domain.set_schema(1, recorded, keys, org_admin=True) == []
