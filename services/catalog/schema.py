"""The metadata schema, pure: typed keys, what a value of each type is, and the range
filters typed keys allow.

The organisation has one schema: `{key: {type, values?, dimension?, retired}}`. A file's
metadata written through the catalog (`PATCH /v1/files/{id}`, `PATCH /v1/files`) is
checked against its active keys; keys it does not name stay free. A retired key is
kept (with its type) but no longer checked nor filtered by range; setting `retired`
back to false restores it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from services.catalog.listing import Listing
from shared.contracts import rules
from shared.contracts.metadata_schema import TYPES as TYPES
from shared.contracts.metadata_schema import Key as Key
from shared.contracts.metadata_schema import Schema as Schema
from shared.contracts.metadata_schema import check as check
from shared.contracts.metadata_schema import from_json as from_json
from shared.contracts.metadata_schema import parse_datetime as parse_datetime
from shared.kit.errors import Refused
from shared.kit.errors import invalid_parameter as invalid

RANGED = ("number", "datetime")
MAX_KEYS = 256
MAX_KEY = 200
MAX_ENUM_VALUES = 256
MAX_ENUM_VALUE = 200
MAX_DIMENSION = 4096
MAX_SCHEMA_BYTES = 64 * 1024


def _invalid(code: str, message: str, details: dict[str, Any]) -> Refused:
    return Refused(422, code, message, details)


def valid_schema(keys: dict[str, dict[str, Any]]) -> Schema:
    """A schema as given to `PUT /v1/metadata-schema`, checked whole."""
    if len(keys) > MAX_KEYS:
        raise _invalid("invalid_schema", f"at most {MAX_KEYS} keys", {"limit": MAX_KEYS})
    found: Schema = {}
    for name, given in keys.items():
        where = {"key": name[:MAX_KEY]}
        if not 1 <= len(name) <= MAX_KEY or "\x00" in name:
            raise _invalid("invalid_schema", f"a key is 1 to {MAX_KEY} characters", where)
        kind = given.get("type")
        if kind not in TYPES:
            raise _invalid(
                "invalid_schema", f"key {name!r}: type is one of {', '.join(TYPES)}", where
            )
        values = given.get("values")
        dimension = given.get("dimension")
        if kind == "enum":
            if not values or len(values) > MAX_ENUM_VALUES:
                raise _invalid(
                    "invalid_schema",
                    f"key {name!r}: an enum has 1 to {MAX_ENUM_VALUES} values",
                    where,
                )
            if any(not 1 <= len(v) <= MAX_ENUM_VALUE or "\x00" in v for v in values):
                raise _invalid(
                    "invalid_schema",
                    f"key {name!r}: enum values are 1 to {MAX_ENUM_VALUE} characters",
                    where,
                )
        elif values is not None:
            raise _invalid("invalid_schema", f"key {name!r}: only an enum has values", where)
        if kind == "embedding":
            if dimension is None or not 1 <= dimension <= MAX_DIMENSION:
                raise _invalid(
                    "invalid_schema",
                    f"key {name!r}: an embedding has a dimension from 1 to {MAX_DIMENSION}",
                    where,
                )
        elif dimension is not None:
            raise _invalid(
                "invalid_schema", f"key {name!r}: only an embedding has a dimension", where
            )
        found[name] = Key(
            kind,
            tuple(dict.fromkeys(values or ())),
            dimension,
            bool(given.get("retired", False)),
        )
    size = rules.metadata_size({k: v.as_json() for k, v in found.items()})
    if size > MAX_SCHEMA_BYTES:
        raise Refused(
            413,
            "schema_too_large",
            f"the schema is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES}",
            {"size": size, "limit": MAX_SCHEMA_BYTES},
        )
    return found


@dataclass(frozen=True)
class Range:
    """`metadata.<key>.gte` / `.lte`, typed."""

    key: str
    op: str  # ">=" or "<="
    type: str  # number or datetime
    value: Decimal | datetime


def typed_range(schema: Schema, parameter: str, key: str, op: str, text: str) -> Range:
    found = schema.get(key)
    if found is None or found.retired or found.type not in RANGED:
        raise invalid(
            parameter,
            "a range needs the key typed as a number or datetime in the metadata schema"
            + (f" (it is {found.type})" if found and not found.retired else ""),
        )
    if found.type == "number":
        try:
            number = Decimal(text)
        except InvalidOperation as error:
            raise invalid(parameter, "must be a number") from error
        if not number.is_finite():
            raise invalid(parameter, "must be a finite number")
        return Range(key, op, "number", number)
    when = parse_datetime(text)
    if when is None:
        raise invalid(parameter, "must be an RFC 3339 date-time with its offset")
    return Range(key, op, "datetime", when.astimezone(UTC))


def typed(schema: Schema, asked: Listing) -> Listing:
    """The listing with its ranges typed by the schema (422 naming a parameter whose key
    is not typed for a range, or whose value is not of the type)."""
    numbers = frozenset(
        k
        for k, _ in asked.metadata
        if (key := schema.get(k)) and not key.retired and key.type == "number"
    )
    found = tuple(typed_range(schema, *r) for r in asked.ranges)
    return replace(asked, typed_ranges=found, number_keys=numbers)
