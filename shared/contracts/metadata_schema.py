"""The metadata schema's keys and what a value of each type is, pure: shared by the
catalog, which owns the schema (`PUT /v1/metadata-schema`) and checks every write of
metadata through it, and ingest, which checks metadata given at upload or in an import
manifest against its mirror of the schema before anything is stored."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.kit.errors import Refused

TYPES = ("number", "text", "boolean", "datetime", "uuid", "enum", "embedding")
NEEDS = {
    "number": "a number",
    "text": "a string",
    "boolean": "true or false",
    "datetime": "an RFC 3339 date-time string with its offset (2026-12-03T09:00:00Z)",
    "uuid": "a UUID string",
    "enum": "one of its values",
    "embedding": "a list of numbers",
}


@dataclass(frozen=True)
class Key:
    type: str
    values: tuple[str, ...] = ()
    dimension: int | None = None
    retired: bool = False

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"type": self.type, "retired": self.retired}
        if self.type == "enum":
            found["values"] = list(self.values)
        if self.type == "embedding":
            found["dimension"] = self.dimension
        return found


Schema = dict[str, Key]


def from_json(keys: dict[str, Any]) -> Schema:
    """A recorded schema (trusted: it was checked before it was recorded)."""
    return {
        name: Key(k["type"], tuple(k.get("values") or ()), k.get("dimension"), k["retired"])
        for name, k in keys.items()
    }


def parse_datetime(text: str) -> datetime | None:
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def conforms(key: Key, value: Any) -> bool:
    if key.type == "number":
        return _is_number(value)
    if key.type == "text":
        return isinstance(value, str)
    if key.type == "boolean":
        return isinstance(value, bool)
    if key.type == "datetime":
        return isinstance(value, str) and parse_datetime(value) is not None
    if key.type == "uuid":
        try:
            uuid.UUID(value)
        except (ValueError, TypeError, AttributeError):
            return False
        return True
    if key.type == "enum":
        return isinstance(value, str) and value in key.values
    # An embedding.
    return (
        isinstance(value, list)
        and len(value) == key.dimension
        and all(_is_number(v) for v in value)
    )


def mismatch(schema: Schema, metadata: dict[str, Any]) -> tuple[str, str, str] | None:
    """The first active typed key whose value is not of its type: (key, type, what it
    needs), or None."""
    for name, value in metadata.items():
        key = schema.get(name)
        if key is None or key.retired or conforms(key, value):
            continue
        needs = NEEDS[key.type]
        if key.type == "enum":
            needs += f" ({', '.join(key.values[:20])})"
        if key.type == "embedding":
            needs = f"a list of {key.dimension} numbers"
        return name, key.type, needs
    return None


def check(schema: Schema, metadata: dict[str, Any]) -> None:
    """Refuses metadata whose value at an active typed key is not of its type (422
    naming the key and the type it needs)."""
    found = mismatch(schema, metadata)
    if found is not None:
        name, kind, needs = found
        raise Refused(
            422,
            "metadata_type_mismatch",
            f"metadata key {name!r} must be {needs}",
            {"key": name, "type": kind, "needs": needs},
        )
