"""DICOMweb on a folder's series: QIDO-RS to search, WADO-RS to retrieve.

Rooted at `/v1/folders/{folder_id}/dicomweb`: a viewer (OHIF's `qidoRoot`/`wadoRoot`,
3D Slicer's DICOMweb browser, Weasis through its DICOMweb connector) or `dicomweb-client`
takes that as its base URL, with the caller's API key. The gateway first asks the
catalog whether the caller may see the folder (the catalog owns folder rights) and
signs the folder's path in the caller's token; this context decides the role again
from it (services/dicom/api.py), then serves the series whose files are in that folder
now: a series file moved away goes with its folder, one in the trash is not served.

Searches answer from what this context keeps of each instance (services/dicom/tags.py):
the UIDs, PatientID, Modality, InstanceNumber, Rows, Columns, what a study list shows
(`tags.LISTED`: PatientName, StudyDate, descriptions...), and counts. A series' study and
series attributes are those of one of its instances. A key a viewer sends that is not
kept (StudyTime) is not matched, and the answer says so in a `Warning` header as PS3.18
asks. Metadata is read from the instances' own headers.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import os
import re
import secrets
import struct
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import pydicom
from pydicom._private_dict import private_dictionaries
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement

from services.dicom import lean, slices
from services.dicom.ranged import Ranged
from shared.api.dicomweb import MAX_LIMIT, UNMATCHED
from shared.kit.blobs import BlobStore
from shared.kit.db import Conn
from shared.kit.errors import Refused
from shared.kit.logs import log

DICOM_JSON = "application/dicom+json"
# Instances whose headers are read at once for a metadata answer.
METADATA_PARALLEL = 8
# Instances up to SMALL_INSTANCE are read whole, GROUP_BYTES of them at a time.
SMALL_INSTANCE = 1024 * 1024
GROUP_BYTES = 4 * 1024 * 1024
# An element longer than this is left out of a metadata answer: PixelData is served as
# frames, and large private elements would only make the answer heavy.
INLINE_LIMIT = 64 * 1024
# The items and elements of sequences (nested ones too) a metadata answer converts for
# one instance, at most: pydicom makes an object of each, about 20 µs apiece (a private
# sequence of 300,000 empty items, 2.3 MB, took 12 s of CPU and 240 MB). A sequence that
# would take an instance past it is left out, as an element over INLINE_LIMIT is: at most
# about a second an instance, and room for the per-frame sequence of an enhanced
# multi-frame header of some 2,000 frames.
MAX_SEQUENCE_PARTS = 50_000
_LONG_VRS = frozenset(
    [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"]
)
_HEADER = struct.Struct("<HH2sH").unpack_from
_IMPLICIT_HEADER = struct.Struct("<HHL").unpack_from
_LENGTH = struct.Struct("<L").unpack_from
_ITEM = b"\xfe\xff\x00\xe0"
# Private elements some private dictionary of pydicom's holds as sequences, by group
# ("xx" where any) and the element's last byte (its creator's block aside).
_PRIVATE_SQ = frozenset(
    (key[:4], int(key[6:], 16))
    for entries in private_dictionaries.values()
    for key, entry in entries.items()
    if entry[0] == "SQ"
)

_UID = re.compile(r"[0-9]{1,64}(\.[0-9]{1,64}){0,63}")
_UID_KEYS = {
    "StudyInstanceUID": "studies",
    "SeriesInstanceUID": "series",
    "SOPInstanceUID": "instances",
}
# A frame's media type in its transfer syntax (PS3.18 8.7.3.5); uncompressed ones are
# application/octet-stream.
_FRAME_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}


# Listed attributes matched as text (wildcards `*`, `?`): names and descriptions
# regardless of case, the rest exactly. Their level: study (s), series (s) or instance (i).
_LISTED_TEXT = {
    "PatientName": ("s", True),
    "StudyDescription": ("s", True),
    "StudyID": ("s", False),
    "AccessionNumber": ("s", False),
    "ReferringPhysicianName": ("s", True),
    "SeriesDescription": ("s", True),
}
_LISTED_DATES = ("StudyDate", "PatientBirthDate")
_DATE = re.compile(r"[0-9]{8}")


@dataclass(frozen=True)
class Query:
    """A QIDO search: the keys matched, those ignored, the page."""

    studies: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()
    patient_id: str | None = None
    modality: str | None = None
    instance_number: int | None = None
    # Listed attributes (tags.LISTED): (keyword, pattern) texts, (keyword, first, last)
    # date ranges (either end open), SeriesNumber, SOPClassUIDs.
    texts: tuple[tuple[str, str], ...] = ()
    dates: tuple[tuple[str, str | None, str | None], ...] = ()
    series_number: int | None = None
    sop_classes: tuple[str, ...] = ()
    limit: int = MAX_LIMIT
    offset: int = 0
    ignored: tuple[str, ...] = ()

    @classmethod
    def parse(cls, params: Iterable[tuple[str, str]]) -> Query:
        found: dict[str, Any] = {}
        texts: dict[str, str] = {}
        dates: dict[str, tuple[str | None, str | None]] = {}
        ignored: list[str] = []
        for keyword, value in params:
            if keyword in _UID_KEYS:
                found[_UID_KEYS[keyword]] = _uids(keyword, value)
            elif keyword == "PatientID":
                found["patient_id"] = _text(keyword, value)
            elif keyword in ("Modality", "ModalitiesInStudy"):
                found["modality"] = _text(keyword, value)
            elif keyword == "InstanceNumber":
                found["instance_number"] = _number(keyword, value, 0, 2**31 - 1)
            elif keyword in _LISTED_TEXT and value:
                texts[keyword] = _text(keyword, value)
            elif keyword in _LISTED_DATES and value:
                dates[keyword] = _dates(keyword, value)
            elif keyword == "SeriesNumber" and value:
                found["series_number"] = _number(keyword, value, 0, 2**31 - 1)
            elif keyword == "SOPClassUID" and value:
                found["sop_classes"] = _uids(keyword, value)
            elif keyword == "limit":
                found["limit"] = _number(keyword, value, 1, MAX_LIMIT)
            elif keyword == "offset":
                found["offset"] = _number(keyword, value, 0, 10**9)
            elif keyword in UNMATCHED and value:
                ignored.append(keyword)
        return cls(
            **found,
            texts=tuple(texts.items()),
            dates=tuple((k, first, last) for k, (first, last) in dates.items()),
            ignored=tuple(sorted(set(ignored))),
        )

    def warning(self) -> dict[str, str]:
        if not self.ignored:
            return {}
        keys = ", ".join(self.ignored)
        return {
            "Warning": f'299 files "not matched, as this server keeps no such attribute: {keys}"'
        }


def _dates(key: str, value: str) -> tuple[str | None, str | None]:
    """A DA match (PS3.4 C.2.2.2.5): one day, or a range with either end open."""
    first, dash, last = value.partition("-")
    days = (first, last) if dash else (first, first)
    if (
        (not dash and not first)
        or (dash and not (first or last))
        or not all(not d or _DATE.fullmatch(d) for d in days)
    ):
        raise Refused(
            400, "invalid_query", f"{key} must be a date YYYYMMDD or a range A-B, A- or -B"
        )
    return days[0] or None, days[1] or None


def _uids(key: str, value: str) -> tuple[str, ...]:
    # UID list matching: several UIDs separated by commas (or backslashes).
    uids = tuple(u for u in re.split(r"[,\\]", value) if u)
    if not uids or len(uids) > 100 or not all(len(u) <= 64 and _UID.fullmatch(u) for u in uids):
        raise Refused(
            400, "invalid_query", f"{key} must be one or more DICOM UIDs (digits and dots)"
        )
    return uids


def _text(key: str, value: str) -> str:
    if not value or len(value) > 64 or re.search(r"[\x00-\x1f\\]", value):
        raise Refused(400, "invalid_query", f"{key} must be 1-64 characters, no control ones")
    return value


def _number(key: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", value) or not low <= int(value) <= high:
        raise Refused(400, "invalid_query", f"{key} must be a whole number from {low} to {high}")
    return int(value)


def _like(pattern: str) -> str:
    """A DICOM wildcard match (`*`, `?`) as a LIKE pattern."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def attribute(vr: str, *values: Any) -> dict[str, Any]:
    """One attribute in the DICOM JSON model (PS3.18 F.2)."""
    present = [v for v in values if v is not None]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


# A series whose instances all left (their objects gone from a synced bucket) keeps its
# row, for one that comes back; it is not served.
_HAS_INSTANCES = "EXISTS (SELECT 1 FROM dicom.instances h WHERE h.file_id = s.file_id)"


class Where:
    """A WHERE clause over dicom.series `s` (and dicom.instances `i`), built with
    numbered parameters: the folder always, then each key given."""

    def __init__(self, folder_id: uuid.UUID) -> None:
        self.args: list[Any] = [folder_id]
        self.terms = ["s.folder_id = $1", _HAS_INSTANCES]

    def add(self, term: str, value: Any) -> None:
        self.args.append(value)
        self.terms.append(term.format(f"${len(self.args)}"))

    def sql(self) -> str:
        return " AND ".join(self.terms)

    def page(self, query: Query) -> str:
        self.args += [query.limit, query.offset]
        return f"LIMIT ${len(self.args) - 1} OFFSET ${len(self.args)}"


def _series_terms(where: Where, query: Query, study_uid: str | None) -> None:
    """Terms on a series row `s` and its listed attributes `a` (one instance's)."""
    if study_uid is not None:
        where.add("s.study_uid = {}", study_uid)
    if query.studies:
        where.add("s.study_uid = ANY({})", list(query.studies))
    if query.series:
        where.add("s.series_uid = ANY({})", list(query.series))
    if query.patient_id is not None:
        where.add("s.patient_id LIKE {}", _like(query.patient_id))
    for keyword, pattern in query.texts:
        _, any_case = _LISTED_TEXT[keyword]
        like = "ILIKE" if any_case else "LIKE"
        where.add(f"a.v->>'{keyword}' {like} {{}}", _like(pattern))
    for keyword, first, last in query.dates:
        if first is not None:
            where.add(f"a.v->>'{keyword}' >= {{}}", first)
        if last is not None:
            where.add(f"a.v->>'{keyword}' <= {{}}", last)
    if query.series_number is not None:
        where.add(
            "CASE WHEN a.v->>'SeriesNumber' ~ '^[+-]?[0-9]{{1,9}}$'"
            " THEN (a.v->>'SeriesNumber')::int END = {}",
            query.series_number,
        )


# A series' listed attributes (tags.LISTED), those of one of its instances (study and
# series attributes are the same in each).
_LISTED = """LEFT JOIN LATERAL (
        SELECT i.facts->'listed' AS v FROM dicom.instances i
        WHERE i.file_id = s.file_id ORDER BY i.sop_uid LIMIT 1) a ON true"""


def _pn(value: str | None) -> dict[str, Any]:
    return attribute("PN", {"Alphabetic": value} if value else None)


def _study_attributes(r: Any) -> dict[str, Any]:
    return {
        "00100010": _pn(r["patient_name"]),
        "00100030": attribute("DA", r["birth_date"]),
        "00080020": attribute("DA", r["study_date"]),
        "00080030": attribute("TM", r["study_time"]),
        "00081030": attribute("LO", r["study_description"]),
        "00200010": attribute("SH", r["study_id"]),
        "00080050": attribute("SH", r["accession"]),
        "00080090": _pn(r["referring"]),
    }


_STUDY_COLUMNS = """min(a.v->>'PatientName') AS patient_name,
                   min(a.v->>'PatientBirthDate') AS birth_date,
                   min(a.v->>'StudyDate') AS study_date, min(a.v->>'StudyTime') AS study_time,
                   min(a.v->>'StudyDescription') AS study_description,
                   min(a.v->>'StudyID') AS study_id, min(a.v->>'AccessionNumber') AS accession,
                   min(a.v->>'ReferringPhysicianName') AS referring"""


async def search_studies(conn: Conn, folder_id: uuid.UUID, query: Query) -> list[dict[str, Any]]:
    where = Where(folder_id)
    _series_terms(where, query, None)
    having = ""
    if query.modality is not None:
        where.args.append(query.modality)
        having = f"HAVING ${len(where.args)} = ANY(array_agg(s.modality))"
    if query.sop_classes:
        where.add(
            "EXISTS (SELECT 1 FROM dicom.instances i WHERE i.file_id = s.file_id"
            " AND i.facts->'listed'->>'SOPClassUID' = ANY({}))",
            list(query.sop_classes),
        )
    # The studies with a series that matches; then each study's figures over all of its
    # series in the folder (a series-level key picks studies, it does not cut their counts).
    rows = await conn.fetch(
        f"""SELECT s.study_uid, min(s.patient_id) AS patient_id,
                   array_agg(DISTINCT s.modality) FILTER (WHERE s.modality IS NOT NULL)
                       AS modalities,
                   count(*) AS series,
                   sum((SELECT count(*) FROM dicom.instances i WHERE i.file_id = s.file_id))
                       AS instances,
                   {_STUDY_COLUMNS}
            FROM dicom.series s {_LISTED}
            WHERE s.folder_id = $1 AND {_HAS_INSTANCES} AND s.study_uid IN (
                SELECT s.study_uid FROM dicom.series s {_LISTED} WHERE {where.sql()})
            GROUP BY s.study_uid {having} ORDER BY s.study_uid {where.page(query)}""",
        *where.args,
    )
    return [
        {
            "0020000D": attribute("UI", r["study_uid"]),
            "00100020": attribute("LO", r["patient_id"]),
            **_study_attributes(r),
            "00080061": attribute("CS", *(r["modalities"] or ())),
            "00201206": attribute("IS", r["series"]),
            "00201208": attribute("IS", int(r["instances"] or 0)),
        }
        for r in rows
    ]


async def search_series(
    conn: Conn, folder_id: uuid.UUID, query: Query, study_uid: str | None = None
) -> list[dict[str, Any]]:
    where = Where(folder_id)
    _series_terms(where, query, study_uid)
    if query.modality is not None:
        where.add("s.modality = {}", query.modality)
    if query.sop_classes:
        where.add(
            "EXISTS (SELECT 1 FROM dicom.instances i WHERE i.file_id = s.file_id"
            " AND i.facts->'listed'->>'SOPClassUID' = ANY({}))",
            list(query.sop_classes),
        )
    rows = await conn.fetch(
        f"""SELECT s.study_uid, s.series_uid, s.patient_id, s.modality, a.v AS listed,
                   (SELECT count(*) FROM dicom.instances i WHERE i.file_id = s.file_id)
                       AS instances
            FROM dicom.series s {_LISTED} WHERE {where.sql()}
            ORDER BY s.study_uid, s.series_uid {where.page(query)}""",
        *where.args,
    )
    found = []
    for r in rows:
        listed = _json(r["listed"])
        found.append(
            {
                "0020000D": attribute("UI", r["study_uid"]),
                "0020000E": attribute("UI", r["series_uid"]),
                "00100020": attribute("LO", r["patient_id"]),
                "00100010": _pn(listed.get("PatientName")),
                "00080020": attribute("DA", listed.get("StudyDate")),
                "00080060": attribute("CS", r["modality"]),
                "00200011": attribute("IS", _integer(listed.get("SeriesNumber"))),
                "0008103E": attribute("LO", listed.get("SeriesDescription")),
                "00201209": attribute("IS", r["instances"]),
            }
        )
    return found


async def search_instances(
    conn: Conn,
    folder_id: uuid.UUID,
    query: Query,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> list[dict[str, Any]]:
    where = Where(folder_id)
    _series_terms(where, query, study_uid)
    if series_uid is not None:
        where.add("s.series_uid = {}", series_uid)
    if query.modality is not None:
        where.add("s.modality = {}", query.modality)
    if query.instances:
        where.add("i.sop_uid = ANY({})", list(query.instances))
    if query.instance_number is not None:
        where.add("(i.facts->>'instance_number')::bigint = {}", query.instance_number)
    if query.sop_classes:
        where.add("i.facts->'listed'->>'SOPClassUID' = ANY({})", list(query.sop_classes))
    rows = await conn.fetch(
        f"""SELECT s.study_uid, s.series_uid, s.patient_id, s.modality, i.sop_uid, i.facts
            FROM dicom.series s {_LISTED} JOIN dicom.instances i ON i.file_id = s.file_id
            WHERE {where.sql()}
            ORDER BY s.study_uid, s.series_uid, i.slice_key {where.page(query)}""",
        *where.args,
    )
    found = []
    for r in rows:
        facts = _json(r["facts"])
        listed = facts.get("listed") or {}
        found.append(
            {
                "0020000D": attribute("UI", r["study_uid"]),
                "0020000E": attribute("UI", r["series_uid"]),
                "00080018": attribute("UI", r["sop_uid"]),
                "00080016": attribute("UI", listed.get("SOPClassUID")),
                "00100020": attribute("LO", r["patient_id"]),
                "00080060": attribute("CS", r["modality"]),
                "00200013": attribute("IS", facts.get("instance_number")),
                "00280010": attribute("US", facts.get("rows")),
                "00280011": attribute("US", facts.get("columns")),
            }
        )
    return found


def _json(value: Any) -> dict[str, Any]:
    found = orjson.loads(value) if isinstance(value, str) else value
    return found if isinstance(found, dict) else {}


def _integer(text: str | None) -> int | None:
    return int(text) if text is not None and re.fullmatch(r"[+-]?[0-9]{1,9}", text) else None


@dataclass(frozen=True)
class Stored:
    sop_uid: str
    blob_key: str
    size: int
    study_uid: str = ""
    series_uid: str = ""


async def stored_instances(
    conn: Conn,
    folder_id: uuid.UUID,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[Stored]:
    """The instances asked for, in the folder, in slice order; 404 when there are none."""
    where = Where(folder_id)
    where.add("s.study_uid = {}", study_uid)
    if series_uid is not None:
        where.add("s.series_uid = {}", series_uid)
    if sop_uid is not None:
        where.add("i.sop_uid = {}", sop_uid)
    rows = await conn.fetch(
        f"""SELECT i.sop_uid, i.blob_key, i.size, s.study_uid, s.series_uid
            FROM dicom.series s JOIN dicom.instances i ON i.file_id = s.file_id
            WHERE {where.sql()} ORDER BY s.series_uid, i.slice_key""",
        *where.args,
    )
    if not rows:
        what = (
            f"instance {sop_uid}"
            if sop_uid
            else f"series {series_uid}"
            if series_uid
            else f"study {study_uid}"
        )
        raise Refused(404, "not_found", f"{what} is not in folder {folder_id}")
    return [
        Stored(r["sop_uid"], r["blob_key"], r["size"], r["study_uid"], r["series_uid"])
        for r in rows
    ]


class Multipart:
    """A multipart/related answer (PS3.18 8.7.3), streamed a part at a time."""

    def __init__(self, part_type: str) -> None:
        self.boundary = secrets.token_hex(16)
        self.part_type = part_type

    @property
    def media_type(self) -> str:
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def head(self, length: int, part_type: str | None = None, location: str = "") -> bytes:
        where = f"Content-Location: {location}\r\n" if location else ""
        return (
            f"--{self.boundary}\r\nContent-Type: {part_type or self.part_type}\r\n"
            f"Content-Length: {length}\r\n{where}\r\n"
        ).encode()

    def end(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()


async def instance_parts(
    blobs: BlobStore, instances: Sequence[Stored], multipart: Multipart, root: str = ""
) -> AsyncIterator[bytes]:
    """Each instance a part, with its retrieve URL under the DICOMweb `root` (PS3.18's
    Content-Location: a client names the file it writes by it). Small ones are read a
    group at a time in one worker thread and sent as one chunk (a series of 9 KiB slices
    went at 3 MiB/s one read and three sends an instance); large ones are streamed."""
    group: list[Stored] = []

    def head(i: Stored) -> bytes:
        uids = (i.study_uid, i.series_uid, i.sop_uid)
        where = ""
        if root and all(_UID.fullmatch(u) for u in uids):  # nothing but a UID in a header
            where = f"{root}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
        return multipart.head(i.size, location=where)

    def read(group: Sequence[Stored]) -> bytes:
        return b"".join(head(i) + blobs.read_at(i.blob_key, 0, i.size) + b"\r\n" for i in group)

    for instance in instances:
        if instance.size <= SMALL_INSTANCE:
            group.append(instance)
            if sum(i.size for i in group) >= GROUP_BYTES:
                yield await asyncio.to_thread(read, group)
                group = []
            continue
        if group:
            yield await asyncio.to_thread(read, group)
            group = []
        yield head(instance)
        async for chunk in blobs.stream(instance.blob_key, 0, instance.size - 1):
            yield chunk
        yield b"\r\n"
    if group:
        yield await asyncio.to_thread(read, group)
    yield multipart.end()


def opened(blobs: BlobStore, key: str) -> Ranged:
    """A stored instance as a file read by range, its first bytes and size in one read
    (`read_head`): a header costs that read, rarely a few more, never the whole blob.
    Blocks: call it in a thread."""
    head, size = blobs.read_head(key, lean.FIRST_BYTES)
    return Ranged(functools.partial(blobs.read_at, key), size, head)


def header_json(source: Path | IO[bytes] | Ranged) -> dict[str, Any]:
    """An instance's header in the DICOM JSON model: its file meta and dataset, pixels
    and elements over INLINE_LIMIT left out."""
    ds = pydicom.dcmread(source, stop_before_pixels=True, force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        ds.add_new(0x00020010, "UI", meta.TransferSyntaxUID)
    left_out: list[str] = []

    def too_large(element: Any) -> str:
        left_out.append(element.tag)
        return ""

    # An element whose value does not parse (a Number of Frames of "zz") is left out:
    # raised, it would end a streamed answer already begun, for every instance after it.
    # Element by element, read leniently: pydicom's `suppress_invalid_tags` reads under
    # its strict mode and drops what scanners commonly write (a UID component with a
    # leading zero, a DS of 17 characters), which viewers need to place the slices.
    found: dict[str, Any] = {}
    parts_left = MAX_SEQUENCE_PARTS
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset converts each element
        parts = _parts(ds.get_item(tag), parts_left + 1)
        if parts > parts_left:
            log.info("dicomweb.sequence_left_out", tag=f"{int(tag):08X}")
            continue
        parts_left -= parts
        try:
            found[f"{int(tag):08X}"] = ds[tag].to_json_dict(
                bulk_data_element_handler=too_large, bulk_data_threshold=INLINE_LIMIT
            )
        except Exception:
            log.info("dicomweb.element_left_out", tag=f"{int(tag):08X}")
    return {k: v for k, v in found.items() if "BulkDataURI" not in v}


def _parts(element: Any, most: int) -> int:
    """The items and elements a sequence holds (nested ones too), counted before pydicom
    converts it; `most` once there are that many, or where it cannot tell. 0 for an
    element that is no sequence."""
    if not isinstance(element, RawDataElement):  # converted (undefined length) as read
        if element.VR != "SQ":
            return 0
        count = 0
        for item in element.value:
            count += 1
            for tag in item.keys():  # noqa: SIM118 - iterating a Dataset converts each element
                count += 1 + _parts(item.get_item(tag), most - count)
                if count >= most:
                    return most
        return count
    value = element.value or b""
    if len(value) < 8 or not _holds_items(int(element.tag), element.VR, value):
        # Every item and element takes 8 bytes at least.
        return min(most, len(value) // 8) if _maybe_private_sequence(element.tag, element.VR) else 0
    if not element.is_little_endian:
        # Every item and element takes 8 bytes at least.
        return min(most, len(value) // 8)
    return _walked_parts(value, most, element.is_implicit_VR)


def _holds_items(tag: int, vr: str | None, value: bytes) -> bool:
    """Whether pydicom reads an element's value as a sequence: its VR says so, or,
    unknown (implicit VR, UN), the dictionary does or the value begins as items do. An
    implicit VR element has no VR of its own (None): charged as a sequence, every long
    value of an implicit VR file would be."""
    if vr not in (None, "UN"):
        return vr == "SQ"
    if value[:4] == _ITEM:
        return True
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


def _maybe_private_sequence(tag: int, vr: str | None) -> bool:
    """Whether pydicom may read a private element of no known VR as a sequence (some
    private dictionary of its creator's has it so), whatever its value holds."""
    if vr not in (None, "UN") or not tag >> 16 & 1:
        return False
    group, last = f"{tag >> 16:04X}", tag & 0xFF
    return (group, last) in _PRIVATE_SQ or (group[:2] + "xx", last) in _PRIVATE_SQ


def _walked_parts(value: bytes, most: int, implicit: bool) -> int:
    """Item and element headers in Little Endian bytes, walked in order (a sequence's
    items and an item's elements follow their headers, whatever their lengths or
    delimiters), each item read as pydicom reads it: in implicit VR within one, else as
    its first element's VR bytes tell. `most` once there are that many, or where the
    walk cannot follow pydicom."""
    count, at, end = 0, 0, len(value)
    # The items open at `at`: where each ends (None: at its delimiter), and its encoding.
    items: list[tuple[int | None, bool]] = []
    while at + 8 <= end:
        while items and items[-1][0] is not None and at >= items[-1][0]:
            items.pop()
        count += 1
        if count >= most:
            return most
        inside = items[-1][1] if items else implicit
        group, element, length = _IMPLICIT_HEADER(value, at)
        if group == 0xFFFE:  # an item or a delimiter: 8 bytes, its content follows
            if element == 0xE000:
                first_vr = value[at + 12 : at + 14]
                items.append(
                    (
                        None if length == 0xFFFFFFFF else at + 8 + length,
                        inside or not all(0x40 < b < 0x5B for b in first_vr),
                    )
                )
            elif element == 0xE00D and items:
                items.pop()
            at += 8
            continue
        if inside:
            vr = None
            at += 8
        else:
            _, _, raw_vr, length = _HEADER(value, at)
            if not b"AA" <= raw_vr <= b"ZZ":
                # pydicom reads it as implicit VR, a length of 4 bytes, where this walk
                # could skip what it parses: left out.
                return most
            if raw_vr in _LONG_VRS:
                if at + 12 > end:
                    return most
                (length,) = _LENGTH(value, at + 8)
                at += 12
            else:
                at += 8
            vr = raw_vr.decode()
        if vr == "SQ" or (
            vr in (None, "UN")
            and (
                length == 0xFFFFFFFF
                or _holds_items((group << 16) | element, vr, value[at : at + 4])
            )
        ):
            continue  # its items follow (a private sequence may be UN of undefined length)
        if length == 0xFFFFFFFF:
            return most  # a value pydicom parses that this walk does not
        if _maybe_private_sequence((group << 16) | element, vr):
            count += length // 8
        at += length
    return min(count, most)


async def metadata(
    blobs: BlobStore, instances: Sequence[Stored], gate: asyncio.Semaphore
) -> AsyncIterator[bytes]:
    """A JSON array of the instances' headers, read a few at a time, written as read."""

    def read(key: str) -> dict[str, Any]:
        return header_json(opened(blobs, key))

    async def one(instance: Stored) -> dict[str, Any]:
        async with gate:
            return await asyncio.to_thread(read, instance.blob_key)

    yield b"["
    for start in range(0, len(instances), METADATA_PARALLEL):
        batch = instances[start : start + METADATA_PARALLEL]
        for n, header in enumerate(await asyncio.gather(*(one(i) for i in batch))):
            yield (b"," if start + n else b"") + orjson.dumps(header)
    yield b"]"


def native_frames(
    source: Ranged, numbers: Sequence[int], max_bytes: int
) -> list[tuple[str, bytes]] | None:
    """`frames` of an uncompressed instance, each read alone after its header; None
    when the header does not tell where they lie (`slices.native_frames`): read the
    whole instance with `frames` then."""
    native = slices.native_frames(source, source.size)  # type: ignore[arg-type]
    syntax = getattr(
        getattr(native and native.header, "file_meta", None), "TransferSyntaxUID", None
    )
    if native is None or (syntax is not None and syntax.is_compressed):
        return None
    for number in numbers:
        if not 1 <= number <= native.frames:
            raise Refused(404, "frame_not_found", f"frame {number} is not in 1..{native.frames}")
    bits = int(native.header.BitsAllocated)
    if bits % 8:
        raise Refused(422, "cannot_serve_frames", f"frames of {bits}-bit pixels are not served")
    _bounded(len(numbers) * native.frame_bytes, max_bytes)
    found = []
    for number in numbers:
        offset, length = native.frame_range(number - 1)
        source.seek(offset)
        found.append(("application/octet-stream", source.read(length)))
    return found


def frames(path: Path, numbers: Sequence[int], max_bytes: int) -> list[tuple[str, bytes]]:
    """The frames asked for (1 first), each with its media type: the stored bytes of
    an uncompressed frame, or the compressed bitstream as the instance holds it. An
    instance whose header and pixel data disagree (accepted: its header is what we
    keep) is a 422 naming why, not a 500 nor a frame of no bytes."""
    try:
        return _frames(path, numbers, max_bytes)
    except (Refused, OSError, MemoryError):
        raise  # ours, or the store's: not the instance's fault
    except Exception as error:
        raise Refused(
            422,
            "cannot_serve_frames",
            f"this instance's frames cannot be read: {type(error).__name__}",
        ) from None


def _frames(path: Path, numbers: Sequence[int], max_bytes: int) -> list[tuple[str, bytes]]:
    # The header alone is parsed; the frames are read from the file, each of their
    # fragments counted against the bound before it is read. Parsed whole, a 300 MiB
    # instance took three times its size (its pixel data, a frame's fragments, and
    # their join) past the bound the frames' memory was charged.
    with path.open("rb") as file:
        ds = pydicom.dcmread(file, force=True, stop_before_pixels=True)
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is not None and syntax.is_deflated:
            # The file's bytes are not the dataset's: inflated whole, as before (rare).
            return _parsed_frames(pydicom.dcmread(path, force=True), numbers, max_bytes)
        implicit, little = ds.original_encoding
        length = _pixel_data_length(file, implicit is not False, little is not False)
        count = int(getattr(ds, "NumberOfFrames", 1) or 1)
        for number in numbers:
            if not 1 <= number <= count:
                raise Refused(404, "frame_not_found", f"frame {number} is not in 1..{count}")
        if length == UNDEFINED:
            media = _FRAME_TYPES.get(str(syntax), "application/octet-stream")
            found = _encapsulated(file, numbers, count, max_bytes, "<" if little else ">")
            return [(f"{media}; transfer-syntax={syntax}", found[n]) for n in numbers]
        size = _frame_size(ds)
        for number in numbers:
            if size <= 0 or number * size > length:
                raise _short(number, count)
        _bounded(len(numbers) * size, max_bytes)
        start = file.tell()
        found_native = []
        for number in numbers:
            file.seek(start + (number - 1) * size)
            found_native.append(("application/octet-stream", _read_exactly(file, size)))
        return found_native


UNDEFINED = 0xFFFFFFFF
ITEM, SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD


def _pixel_data_length(file: IO[bytes], implicit: bool, little: bool) -> int:
    """The length of the Pixel Data element the file is at (where a header read to
    before the pixels stopped), the file left at its value; 404 when it is not there."""
    order = "<" if little else ">"
    head = file.read(8)
    if len(head) < 8 or struct.unpack(f"{order}HH", head[:4]) != (0x7FE0, 0x0010):
        raise Refused(404, "not_found", "this instance has no pixel data")
    if implicit:
        return int(struct.unpack(f"{order}I", head[4:])[0])
    if head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC"):
        return int(struct.unpack(f"{order}I", _read_exactly(file, 4))[0])
    return int(struct.unpack(f"{order}H", head[6:])[0])


def _frame_size(ds: Any) -> int:
    bits = int(ds.BitsAllocated)
    if bits % 8:
        raise Refused(422, "cannot_serve_frames", f"frames of {bits}-bit pixels are not served")
    return int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) * bits // 8


def _encapsulated(
    file: IO[bytes], numbers: Sequence[int], count: int, max_bytes: int, order: str
) -> dict[int, bytes]:
    """The frames asked for of encapsulated pixel data, the file at its value: their
    fragments found from the items' heads, their size bounded, then read (only they)."""
    wanted = set(numbers)
    fragments = [
        (number, at, length)
        for number, at, length in _fragments_by_frame(file, count, max(numbers), order)
        if number in wanted
    ]
    missing = wanted - {number for number, _, _ in fragments}
    if missing:
        raise _short(min(missing), count)
    _bounded(sum(length for _, _, length in fragments), max_bytes)
    found: dict[int, list[bytes]] = {}
    for number, at, length in fragments:
        file.seek(at + 8)
        found.setdefault(number, []).append(_read_exactly(file, length))
    # A frame of one fragment is that fragment, not a copy.
    return {n: b"".join(found.pop(n)) for n in list(found)}


def _fragments_by_frame(
    file: IO[bytes], count: int, last: int, order: str
) -> Iterator[tuple[int, int, int]]:
    """Each fragment's frame, where its item starts and its length, up to frame `last`,
    the fragments told apart as pydicom's `generate_frames` does: by the basic offset
    table; else one fragment a frame, one frame of them all, or a JPEG end marker ending
    each (of the fragments, only those 10 last bytes are read). Hand-written beside
    pydicom: its `encaps` readers read every fragment's bytes as they walk, so a frame's
    size could only be known once its bytes were in memory; the bound needs the items'
    heads alone, first (tests/unit/test_dicom_frames.py holds the two equal)."""
    basic = _item(file, order)
    if basic is None or basic % 4:
        raise ValueError("no basic offset table")
    offsets = list(struct.unpack(f"{order}{basic // 4}I", _read_exactly(file, basic)))
    first = file.tell()
    rule = "offsets"
    if not offsets:
        held = sum(1 for _ in _fragments(file, order))
        file.seek(first)
        if held == 1 or count == 1:
            rule = "one"
        elif held == count:
            rule = "each"
        elif held > count:
            rule = "markers"
        else:
            raise ValueError("fewer fragments than frames")
    number = 1
    for index, (at, length) in enumerate(_fragments(file, order)):
        if rule == "offsets":
            number = bisect.bisect_right(offsets, at - first)
        elif rule == "each":
            number = index + 1
        if number > last:
            return
        yield number, at, length
        if rule == "markers":
            file.seek(at + 8 + max(length - 10, 0))
            if b"\xff\xd9" in _read_exactly(file, min(length, 10)):
                number += 1


def _item(file: IO[bytes], order: str) -> int | None:
    """The length of the item the file is at, the file left at its value; None at the
    end of the items."""
    head = file.read(8)
    if len(head) < 8:
        return None
    tag, length = struct.unpack(f"{order}II", head)
    tag = (tag & 0xFFFF) << 16 | tag >> 16  # group first, as DICOM writes it
    if tag == SEQUENCE_END:
        return None
    if tag != ITEM or length == UNDEFINED:
        raise ValueError(f"not a fragment item: {tag:08x}")
    return int(length)


# Past this many fragments, a walk of their items' heads is refused: an instance of
# empty fragments (8 bytes each) would be millions of them, a minute of Python's time.
MAX_FRAGMENTS = 250_000


def _fragments(file: IO[bytes], order: str) -> Iterator[tuple[int, int]]:
    """Where each fragment's item starts and its value's length, read item head by item
    head (the file is moved on, not read)."""
    end = os.fstat(file.fileno()).st_size
    for walked in itertools.count():
        at = file.tell()
        length = _item(file, order)
        if length is None:
            return
        if at + 8 + length > end:
            # A damaged length: trusted, it made a frame larger than the bound, a 413
            # asking for fewer frames that no request could satisfy.
            raise ValueError("a fragment runs past the end of the file")
        if walked == MAX_FRAGMENTS:
            raise Refused(
                422,
                "cannot_serve_frames",
                f"this instance's pixel data is in more than {MAX_FRAGMENTS:,} fragments",
            )
        yield at, length
        file.seek(at + 8 + length)


def _read_exactly(file: IO[bytes], length: int) -> bytes:
    data = file.read(length)
    if len(data) != length:
        raise ValueError("the pixel data ends early")
    return data


def _parsed_frames(ds: Any, numbers: Sequence[int], max_bytes: int) -> list[tuple[str, bytes]]:
    """The frames of a dataset parsed whole (a deflated one: its file's bytes are not
    its dataset's)."""
    if "PixelData" not in ds:
        raise Refused(404, "not_found", "this instance has no pixel data")
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    for number in numbers:
        if not 1 <= number <= count:
            raise Refused(404, "frame_not_found", f"frame {number} is not in 1..{count}")
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        from pydicom.encaps import generate_frames

        media = _FRAME_TYPES.get(str(syntax), "application/octet-stream")
        wanted = set(numbers)
        found = {
            n: bytes(frame)
            for n, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=count), 1)
            if n in wanted
        }
        missing = wanted - found.keys()
        if missing:
            raise _short(min(missing), count)
        _bounded(sum(len(frame) for frame in found.values()), max_bytes)
        return [(f"{media}; transfer-syntax={syntax}", found[n]) for n in numbers]
    size = _frame_size(ds)
    pixels = ds.PixelData
    for number in numbers:
        if size <= 0 or number * size > len(pixels):
            raise _short(number, count)
    _bounded(len(numbers) * size, max_bytes)
    return [("application/octet-stream", bytes(pixels[(n - 1) * size : n * size])) for n in numbers]


def _short(number: int, count: int) -> Refused:
    return Refused(
        422,
        "cannot_serve_frames",
        f"frame {number} is named by the header ({count} frames) but the pixel data does"
        " not hold it",
        {"frame": number, "frames_in_header": count},
    )


def _bounded(total: int, max_bytes: int) -> None:
    """A retrieve of frames is answered from memory: one past the bound is refused
    before it is read (uncompressed) or sent (compressed), not held."""
    if total > max_bytes:
        raise Refused(
            413,
            "frames_too_large",
            f"these frames are {total} bytes, more than one retrieve answers ({max_bytes}):"
            " ask for fewer at a time",
            {"bytes": total, "max_bytes": max_bytes},
        )


def frame_numbers(text: str) -> list[int]:
    """The frames asked for, each once, in the order first asked: a frame named again
    adds nothing to the answer (it was the same bytes again, up to 100 times)."""
    numbers = [int(n) for n in text.split(",") if n.isdigit()]
    if not numbers or len(numbers) != len(text.split(",")) or len(numbers) > 100:
        raise Refused(400, "invalid_frames", "frames are 1-100 numbers separated by commas")
    return list(dict.fromkeys(numbers))
