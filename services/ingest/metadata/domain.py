"""Metadata given with content, pure: an upload's `metadata` field (a JSON object from a
file part's name to that file's metadata) read and bounded, and metadata checked
against the organisation's metadata schema (the catalog's; ingest's mirror of it is
metadata/schema.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from shared.contracts import metadata_schema, rules
from shared.kit.errors import Refused


def file_metadata(
    field: bytes | bytearray | None, names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The upload's `metadata` field: a JSON object from a file part's name to that
    file's metadata (a JSON object of at most MAX_METADATA_BYTES). A name that is no
    file of the upload is refused: its metadata would be lost."""
    if field is None:
        return {}
    try:
        # orjson judges the text (invalid UTF-8, a lone surrogate, depth); the value is
        # the standard library's, which keeps an integer past 64 bits exact where orjson
        # makes it a double (1e+30, stored as such): `bounded` refuses it by name.
        orjson.loads(bytes(field))
        given = json.loads(bytes(field))
    except (orjson.JSONDecodeError, RecursionError) as error:
        raise Refused(
            422, "invalid_metadata", f"the 'metadata' field is not JSON: {error}"
        ) from None
    if not isinstance(given, dict):
        raise Refused(
            422,
            "invalid_metadata",
            "the 'metadata' field must be a JSON object from a file name to its metadata",
        )
    unknown = sorted(set(given) - set(names))
    if unknown:
        shown = [u[: rules.MAX_NAME] for u in unknown[:20]]
        raise Refused(
            422,
            "unknown_file_name",
            f"the 'metadata' field names files the upload does not have: "
            f"{', '.join(map(repr, shown))}",
            {"names": shown},
        )
    checked: dict[str, dict[str, Any]] = {}
    refusals: list[Refused] = []
    for name, found in given.items():
        try:
            checked[name] = bounded(found, name)
        except Refused as refusal:
            refusals.append(refusal)
    if refusals:
        raise refused_files(refusals)
    return checked


def bounded(metadata: object, name: str) -> dict[str, Any]:
    """A file's metadata as given: a JSON object of at most MAX_METADATA_BYTES, or a
    422/413 naming the file."""
    if not isinstance(metadata, dict):
        raise Refused(
            422,
            "invalid_metadata",
            f"file {name!r}: metadata must be a JSON object",
            {"name": name},
        )
    problem = rules.unstorable_metadata(metadata)
    if problem is not None:
        raise Refused(422, "invalid_metadata", f"file {name!r}: {problem}", {"name": name})
    size = rules.metadata_size(metadata)
    if size > rules.MAX_METADATA_BYTES:
        raise Refused(
            413,
            "metadata_too_large",
            f"file {name!r}: metadata is {size} bytes of JSON; at most {rules.MAX_METADATA_BYTES}",
            {"name": name, "size": size, "limit": rules.MAX_METADATA_BYTES},
        )
    return metadata


def check_metadata(
    schema: metadata_schema.Schema, metadata: dict[str, dict[str, Any]], what: str = "file"
) -> None:
    """Each file's metadata (by its name) against the schema: 422 naming each file that
    does not conform (`refused_files`), the key and the type it needs; nothing is then
    stored."""
    refusals: list[Refused] = []
    for name, found in metadata.items():
        mismatch = metadata_schema.mismatch(schema, found)
        if mismatch is not None:
            key, kind, needs = mismatch
            refusals.append(
                Refused(
                    422,
                    "metadata_type_mismatch",
                    f"{what} {name!r}: metadata key {key!r} must be {needs}",
                    {"name": name, "key": key, "type": kind, "needs": needs},
                )
            )
    if refusals:
        raise refused_files(refusals)


# A refusal of files' metadata lists at most this many (as a refusal of content lists
# its files: uploads/multipart.py's REFUSED_LISTED), in at most this many bytes of JSON
# (an entry repeats an enum's values and a name of 300 characters: 1,000 of them were
# 35 MB); a client sends the rest again without them, and hears of the others then.
REFUSED_LISTED = 1000
REFUSED_LISTED_BYTES = 1 << 20


def refused_files(refusals: list[Refused], total: int | None = None) -> Refused:
    """One refusal of several files' metadata: the first's status, code, message and
    details as they always were (a client that reads only those sets that file aside),
    and `details.refused` listing each file refused with its details and its own code,
    message and status, so a client sets every one aside in one round rather than one a request.
    `total`: how many were refused, where `refusals` stopped short of them all."""
    first = refusals[0]
    listed: list[dict[str, Any]] = []
    size = 1  # the list's brackets, with the last comma
    for r in refusals[:REFUSED_LISTED]:
        entry = {**r.details, "code": r.code, "message": r.message, "status": r.status}
        size += len(orjson.dumps(entry)) + 1  # and its comma
        if listed and size > REFUSED_LISTED_BYTES:
            break
        listed.append(entry)
    more = (total or len(refusals)) - 1
    message = first.message + (
        f" (and {more} more file{'s' if more > 1 else ''}: details.refused)" if more else ""
    )
    details: dict[str, Any] = {**first.details, "refused": listed}
    if len(refusals) > len(listed):
        details["more_refused"] = True
    return Refused(first.status, first.code, message, details)
