"""Filters and order of folder listings and search, pure: the query parsed and checked,
keyset cursors made and read, and the SQL conditions a listing adds (text and
parameters; the queries run them).

A listing has two sections, folders then files, each in the order asked for
(`name`, `created_at` or `size`; folders have no size and go by name then), ties broken
by id. A cursor carries the order it was made for, the section and the last row's
(key, id): under any order a page starts exactly after the last one, whatever was
added or removed meanwhile, and a cursor sent with another order is refused (400).

A filter a section cannot meet leaves it out: `in_dataset` is about files,
`dataset_synced` about folders, `kind` names file kinds (and `folder`).
"""

from __future__ import annotations

import base64
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import orjson

from shared.contracts.catalog import FILE_KINDS
from shared.kit.errors import Refused, repeated_parameter
from shared.kit.errors import invalid_parameter as invalid

Order = Literal["name", "created_at", "size"]
ORDERS: tuple[Order, ...] = ("name", "created_at", "size")
METADATA = "metadata."
MAX_QUERY = 300
MAX_KINDS = 20
MAX_METADATA_FILTERS = 20
MAX_METADATA_KEY = 200
MAX_METADATA_VALUE = 1000
KINDS = frozenset({"folder", *FILE_KINDS})
# `metadata.<key>.gte` / `.lte`: a range, for keys the schema types as number or datetime.
RANGE_SUFFIXES = (".gte", ".lte")

ITEMS_PARAMS = frozenset(
    {"q", "kind", "in_dataset", "dataset_synced", "order", "desc", "cursor", "limit"}
)
SEARCH_PARAMS = frozenset(
    {"q", "kind", "folder_id", "in_dataset", "order", "desc", "cursor", "limit"}
)


def _storable(text: str) -> bool:
    return "\x00" not in text


@dataclass(frozen=True)
class Listing:
    """What a listing or a search asks for."""

    q: str | None = None
    kinds: tuple[str, ...] = ()
    in_dataset: bool | None = None
    dataset_synced: bool | None = None
    order: Order | None = None
    desc: bool = False
    # (key, values): a file or folder matches a key when its value is any of them.
    metadata: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (parameter, key, ">=" or "<=", text): `metadata.<key>.gte`/`.lte` as given, and
    # once read against the schema, typed (`schema.Range`).
    ranges: tuple[tuple[str, str, str, str], ...] = ()
    typed_ranges: tuple[Any, ...] = ()
    # Keys the schema types as numbers: their equality filters go through the typed
    # side table, whose (key, value, file) index lists the matches in id order.
    number_keys: frozenset[str] = frozenset()
    folder_id: uuid.UUID | None = None
    cursor: str | None = None
    limit: int = 100
    given: frozenset[str] = field(default_factory=frozenset)

    @property
    def folders_wanted(self) -> bool:
        # Ranges are on files' typed metadata, which is what is indexed.
        return (
            (not self.kinds or "folder" in self.kinds)
            and self.in_dataset is None
            and not self.ranges
        )

    @property
    def files_wanted(self) -> bool:
        return any(k != "folder" for k in self.kinds) or (
            not self.kinds and self.dataset_synced is None
        )

    @property
    def file_kinds(self) -> tuple[str, ...]:
        return tuple(k for k in self.kinds if k != "folder")


def _bool(parameter: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise invalid(parameter, f"must be true or false, not {value[:50]!r}")
    return value == "true"


def parse(
    params: list[tuple[str, str]], allowed: frozenset[str], *, q_required: bool = False
) -> Listing:
    """The listing a query string asks for. Unknown parameters are a 400 naming them;
    bad values a 422 naming the parameter. A search (`q_required`) names something to
    look for: q, or a filter."""
    unknown = sorted(
        {name for name, _ in params if name not in allowed and not name.startswith(METADATA)}
    )
    if unknown:
        raise Refused(
            400,
            "unknown_parameter",
            f"this route takes no parameter {', '.join(repr(u[:100]) for u in unknown)}",
            {"parameters": [u[:100] for u in unknown], "allowed": sorted(allowed)},
        )
    repeated = repeated_parameter(
        params, lambda name: name != "kind" and not name.startswith(METADATA)
    )
    if repeated is not None:
        raise repeated
    single: dict[str, str] = {}
    kinds: list[str] = []
    metadata: dict[str, list[str]] = {}
    ranges: list[tuple[str, str, str, str]] = []
    for name, value in params:
        if not _storable(value) or not _storable(name):
            raise invalid(name[:100], "contains a NUL character")
        if name == "kind":
            if value:  # `kind=` (empty) means not given, as the contract writes it
                kinds.append(value)
        elif name.startswith(METADATA):
            key = name[len(METADATA) :]
            if key.endswith(RANGE_SUFFIXES):
                # Typed against the schema by the query (schema.typed_range).
                ranges.append((name[:100], key[:-4], ">=" if key.endswith(".gte") else "<=", value))
                continue
            if not key or len(key) > MAX_METADATA_KEY:
                raise invalid(name[:100], f"the key must be 1 to {MAX_METADATA_KEY} characters")
            if len(value) > MAX_METADATA_VALUE:
                raise invalid(name[:100], f"at most {MAX_METADATA_VALUE} characters")
            metadata.setdefault(key, []).append(value)
        else:
            single[name] = value
    for kind in kinds:
        if kind not in KINDS:
            # Refused, not answered as an empty listing: a typo would pass for "none".
            # The kinds as data too: a client suggests the closest from them, keeping no
            # list of its own that would fall behind the platform's.
            raise invalid(
                "kind",
                f"{kind[:50]!r} is not a kind; the kinds: {', '.join(sorted(KINDS))}",
                kind=kind[:50],
                kinds=["folder", *FILE_KINDS],
            )
    if len(kinds) > MAX_KINDS:
        raise invalid("kind", f"at most {MAX_KINDS} kinds")
    if sum(len(v) for v in metadata.values()) + len(ranges) > MAX_METADATA_FILTERS:
        raise invalid("metadata", f"at most {MAX_METADATA_FILTERS} metadata filters")
    q = single.get("q")
    if q is not None and not 1 <= len(q) <= MAX_QUERY:
        raise invalid("q", f"must be 1 to {MAX_QUERY} characters")
    if q is None and q_required and not (kinds or metadata or ranges or "in_dataset" in single):
        raise invalid("q", "Field required, unless a filter is given (kind, in_dataset, metadata)")
    order = single.get("order")
    if order is not None and order not in ORDERS:
        raise invalid("order", f"must be one of {', '.join(ORDERS)}, not {order[:50]!r}")
    limit_text = single.get("limit", "100")
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= 1000:
        raise invalid("limit", "must be an integer from 1 to 1000")
    folder_id = None
    if single.get("folder_id"):
        try:
            folder_id = uuid.UUID(single["folder_id"])
        except ValueError as error:
            raise invalid("folder_id", "must be a UUID") from error
    return Listing(
        q=q,
        kinds=tuple(dict.fromkeys(kinds)),
        in_dataset=_bool("in_dataset", single["in_dataset"]) if "in_dataset" in single else None,
        dataset_synced=(
            _bool("dataset_synced", single["dataset_synced"])
            if "dataset_synced" in single
            else None
        ),
        order=order,
        desc=_bool("desc", single["desc"]) if "desc" in single else False,
        metadata=tuple((k, tuple(dict.fromkeys(v))) for k, v in metadata.items()),
        ranges=tuple(ranges),
        folder_id=folder_id,
        cursor=single.get("cursor") or None,
        limit=int(limit_text),
        given=frozenset(single) | ({"kind"} if kinds else frozenset()),
    )


# -- cursors -------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """Where a page starts: after (key, id) of `section` (0 folders, 1 files)."""

    section: int = 0
    key: Any = None
    id: uuid.UUID | None = None


def encode_cursor(order: Order, desc: bool, section: int, key: Any, ident: uuid.UUID) -> str:
    if isinstance(key, datetime):
        key = key.isoformat()
    values = [order, desc, section, key, str(ident)]
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode()


def _malformed() -> Refused:
    return Refused(422, "invalid_cursor", "the cursor is not one this API gave out")


def section_key_type(order: Order, section: int) -> type:
    if section == 0 or order == "name":
        # Folders have no size: by name then.
        return str if order != "created_at" else datetime
    return {"created_at": datetime, "size": int}[order]


def decode_cursor(cursor: str, order: Order, desc: bool) -> Position:
    """The position a cursor names, for a listing in `order`.

    A cursor of the listings before orders came, `[section, name, id]`, reads as one
    by name, ascending.
    """
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as error:
        raise _malformed() from error
    if not isinstance(values, list):
        raise _malformed()
    if len(values) == 3 and type(values[0]) is int:
        values = ["name", False, *values]
    if len(values) != 5 or values[0] not in ORDERS or type(values[1]) is not bool:
        raise _malformed()
    made_for, made_desc, section, key, ident = values
    if (made_for, made_desc) != (order, desc):
        raise Refused(
            400,
            "cursor_order_mismatch",
            f"the cursor was made for order={made_for} desc={str(made_desc).lower()};"
            f" this request asks for order={order} desc={str(desc).lower()}",
            {"parameter": "cursor", "cursor_order": made_for, "order": order},
        )
    if section not in (0, 1) or type(section) is not int or not isinstance(ident, str):
        raise _malformed()
    if section == 0 and key == "" and ident == "":
        return Position(0)  # the start (an old cursor's "files follow" too, below)
    if section == 1 and key == "" and ident == "":
        return Position(1)
    want = section_key_type(order, section)
    try:
        parsed_id = uuid.UUID(ident)
        if want is datetime:
            if not isinstance(key, str):
                raise ValueError(key)
            key = datetime.fromisoformat(key)
            if key.tzinfo is None:
                raise ValueError(key)
        elif type(key) is not want or (isinstance(key, str) and not _storable(key)):
            raise ValueError(key)
    except (ValueError, TypeError) as error:
        raise _malformed() from error
    return Position(section, key, parsed_id)


def start_of_files(order: Order, desc: bool) -> str:
    values = [order, desc, 1, "", ""]
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode()


# -- SQL -----------------------------------------------------------------------------


def like_pattern(q: str) -> str:
    """`q` as an ILIKE pattern matching it anywhere, its wildcards taken literally."""
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def metadata_candidates(value: str) -> list[Any]:
    """The JSON values a query's text may stand for: `5` is the number 5 or the text "5",
    `true` the boolean or the text."""
    found: list[Any] = [value]
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return found
    scalar = isinstance(parsed, bool | int) or parsed is None
    if scalar or (isinstance(parsed, float) and math.isfinite(parsed)):
        found.append(parsed)
    return found


# The longest text value catalog.metadata_values keeps (catalog.metadata_entries).
TEXT_INDEXED = 200
# The predicate of the containment index (catalog.files_metadata): a condition on a
# file's metadata says it too, or the planner cannot take that index.
NOT_EMPTY = "<> '{}'::jsonb"


class Conditions:
    """SQL conditions with numbered parameters, starting after those already taken."""

    def __init__(self, args: list[Any]) -> None:
        self.args = args
        self.parts: list[str] = []
        # A condition goes through the typed side table (catalog.metadata_values).
        self.typed = False

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, sql: str) -> None:
        self.parts.append(sql)

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"


def filters(listing: Listing, alias: str, args: list[Any], *, files: bool) -> Conditions:
    """The conditions a listing puts on a section's rows (`alias` the table's)."""
    where = Conditions(args)
    if listing.q is not None:
        where.add(f"{alias}.name ILIKE {where.arg(like_pattern(listing.q))}")
    if files:
        kinds = listing.file_kinds
        if kinds:
            # One equality each, not ANY(): the trigram-and-kind index narrows by them.
            where.add("(" + " OR ".join(f"{alias}.kind = {where.arg(k)}" for k in kinds) + ")")
        if listing.in_dataset is not None:
            linked = f"EXISTS (SELECT 1 FROM catalog.file_links l WHERE l.file_id = {alias}.id)"
            where.add(linked if listing.in_dataset else f"NOT {linked}")
        by_key: dict[str, list[Any]] = {}
        for r in listing.typed_ranges:
            by_key.setdefault(r.key, []).append(r)
        for key, ranges in by_key.items():
            # The typed side table (catalog.metadata_values), indexed by (key, value).
            terms = [f"v.key = {where.arg(key)}"]
            for r in ranges:
                column = "num" if r.type == "number" else "at"
                terms.append(f"v.{column} {r.op} {where.arg(r.value)}")
            where.add(
                "EXISTS (SELECT 1 FROM catalog.metadata_values v"
                f" WHERE v.file_id = {alias}.id AND {' AND '.join(terms)})"
            )
            where.typed = True
    elif listing.dataset_synced is not None:
        synced = f"EXISTS (SELECT 1 FROM catalog.synced_folders s WHERE s.folder_id = {alias}.id)"
        where.add(synced if listing.dataset_synced else f"NOT {synced}")
    for key, values in listing.metadata:
        if files and key in listing.number_keys:
            numbers = [v for v in (_number(value) for value in values) if v is not None]
            if not numbers:
                where.add("FALSE")
                continue
            # One value as a plain equality: PostgreSQL then reads the (key, num, file_id)
            # index in file order and stops at the page (with = ANY it walks the key).
            match = (
                f"v.num = {where.arg(numbers[0])}::numeric"
                if len(numbers) == 1
                else f"v.num = ANY({where.arg(numbers)}::numeric[])"
            )
            where.add(
                "EXISTS (SELECT 1 FROM catalog.metadata_values v"
                f" WHERE v.file_id = {alias}.id AND v.key = {where.arg(key)} AND {match})"
            )
            where.typed = True
            continue
        if (
            files
            and all(metadata_candidates(value) == [value] for value in values)
            and all(len(value) <= TEXT_INDEXED for value in values)
        ):
            # Texts only, each short enough for the side table: its (key, txt, file_id)
            # index lists the matches in file order (a plain equality for one value, as
            # for numbers above).
            match = (
                f"v.txt = {where.arg(values[0])}"
                if len(values) == 1
                else f"v.txt = ANY({where.arg(list(values))}::text[])"
            )
            where.add(
                "EXISTS (SELECT 1 FROM catalog.metadata_values v"
                f" WHERE v.file_id = {alias}.id AND v.key = {where.arg(key)} AND {match})"
            )
            where.typed = True
            continue
        # Containment documents (the pool encodes them as JSON): the GIN index serves them,
        # whose predicate the condition repeats (it holds for every match).
        docs = [{key: v} for value in values for v in metadata_candidates(value)]
        where.add(
            "("
            + " OR ".join(f"{alias}.metadata @> {where.arg(d)}::jsonb" for d in docs)
            + f") AND {alias}.metadata {NOT_EMPTY}"
        )
    return where


def _number(text: str) -> Decimal | None:
    try:
        found = Decimal(text)
    except InvalidOperation:
        return None
    return found if found.is_finite() else None


def order_key(listing: Listing, alias: str, section: int) -> str:
    """The column a section is ordered by."""
    order = listing.order or "name"
    if section == 0 and order == "size":
        return f"{alias}.name"
    return f"{alias}.{order}"


def keyset(
    listing: Listing, alias: str, section: int, after: Position, where: Conditions
) -> tuple[str, str]:
    """The condition past the cursor and the ORDER BY, for a section."""
    column = order_key(listing, alias, section)
    direction = "DESC" if listing.desc else "ASC"
    ordering = f"{column} {direction}, {alias}.id {direction}"
    if after.section != section or after.id is None:
        return "TRUE", ordering
    op = "<" if listing.desc else ">"
    key, ident = where.arg(after.key), where.arg(after.id)
    return f"({column}, {alias}.id) {op} ({key}, {ident}::uuid)", ordering


def row_key(listing: Listing, section: int, row: Any) -> Any:
    order = listing.order or "name"
    if section == 0 and order == "size":
        return row["name"]
    return row[order]
