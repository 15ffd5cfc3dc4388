"""What an import request asks for, pure: its body validated by pydantic models.

A request names objects of the integration's bucket by key, by prefix, or by a
manifest in the style of Encord's cloud import JSON:

    {"images": [{"objectUrl": "s3://bucket/cats/1.png", "title": "cat 1",
                 "clientMetadata": {"camera": "left"}}],
     "videos": [{"key": "clips/a.mp4"}],
     "audio": [...], "pdfs": [...], "text": [...],
     "image_groups": [{"title": "g", "objectUrl_0": "...", "objectUrl_1": "..."}],
     "dicom_series": [{"title": "s", "objectUrl_0": "..."}],
     "skip_duplicate_urls": true}

Each object becomes a file whose kind comes from its bytes; the manifest's section
must agree (domain/jobs.py `check_kind`). An entry of `image_groups` or
`image_sequences` (or of `image_groups` with Encord's `createVideo: true`) names its
frames, in order, as `objectUrl_0`, `objectUrl_1`, ... or a list `objectUrls` (or
`keys`): it becomes one group file whose images stay in the bucket. An entry of
`dicom_series` names its instances the same way: they are copied into the blob store
and assembled into series by the DICOM context, as an upload's are, the entry's title
and clientMetadata naming and describing the series they make. A malformed request or manifest
is refused whole (422 naming every problem, `invalid_manifest` when one is in the
manifest), recording nothing. An object URL must name the integration's own bucket:
the models are validated with it in their context.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.ingest.imports.domain.problems import named, refusal
from shared.api.common import Strict
from shared.contracts import ingest as ev
from shared.contracts import rules
from shared.kit.errors import Refused

# Objects named in one request (keys and manifest entries); a prefix lists any number.
MAX_OBJECTS = 100_000
MAX_KEY_BYTES = 1024
# Manifest sections imported one file per entry, and the kind each entry must have.
FILE_SECTIONS = {
    "images": "image",
    "videos": "video",
    "audio": "audio",
    "pdfs": "pdf",
    "text": "text",
    "nifti": "nifti",
}
# Manifest sections imported one group file per entry, and the group's kind.
GROUP_SECTIONS = {
    "image_groups": "image_group",
    "image_sequences": "image_sequence",
    "dicom_series": "dicom_series",
}
# Frames one group entry names at most.
MAX_FRAMES = 10_000
_OBJECT_URL_N = re.compile(r"objectUrl_(\d{1,6})")


@dataclass(frozen=True)
class Rejection:
    """One object (or manifest entry) that is not imported, for the job's errors."""

    name: str
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportGroup:
    """An image group or sequence of a manifest: its frames' keys, in order."""

    kind: str
    name: str
    entry: str
    keys: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    # The manifest named it (`title`); else `name` is made up.
    titled: bool = False


@dataclass(frozen=True)
class ImportRequest:
    integration_id: uuid.UUID
    objects: list[ev.ImportObject]
    prefix: str | None
    groups: list[ImportGroup] = field(default_factory=list)
    skip_duplicate_urls: bool = False
    upsert_metadata: bool = False


def key_of(reference: str, bucket: str) -> str:
    """The object key an `objectUrl` (or a bare key) names in `bucket`; ValueError if it
    names another bucket or nothing.

    `s3://bucket/key` (or Google's `gs://bucket/key`);
    `https://bucket.s3[.region].amazonaws.com/key` (virtual-hosted)
    or `http(s)://host/bucket/key` (path style, any S3 endpoint), percent-decoded.
    """
    if "://" not in reference:
        return _key(reference)
    parsed = urllib.parse.urlsplit(reference)
    if parsed.scheme in ("s3", "gs"):
        if parsed.netloc != bucket:
            raise ValueError(f"names bucket {parsed.netloc!r}, not the integration's {bucket!r}")
        # Everything after the bucket, as written (an s3:// URI is not percent-encoded).
        return _key(reference.split("://", 1)[1][len(bucket) + 1 :])
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("is neither an s3:// (gs://) nor an http(s):// URL of an object")
    path = urllib.parse.unquote(parsed.path)
    if parsed.hostname.startswith(f"{bucket}."):
        return _key(path[1:])
    if path.startswith(f"/{bucket}/"):
        return _key(path[len(bucket) + 2 :])
    raise ValueError(f"is not an object of the integration's bucket {bucket!r}")


def _key(key: str) -> str:
    if not key:
        raise ValueError("names no object (the key is empty)")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"has a key longer than {MAX_KEY_BYTES} bytes")
    return key


def _integration_id(value: object) -> uuid.UUID:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return uuid.UUID(value)
    raise ValueError("must be an integration's id")


Key = Annotated[str, AfterValidator(_key)]


class Entry(BaseModel):
    """One object of a manifest's file section. Encord's entries carry more fields than
    these (`createVideo`, per-kind metadata): they are ignored, not refused, so a
    manifest written for Encord imports here as it is."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    object_url: str | None = Field(None, alias="objectUrl")
    key: str | None = None
    title: str | None = None
    # Encord's `clientMetadata`, or `metadata`.
    client_metadata: dict[str, Any] = Field(
        default_factory=dict, validation_alias=AliasChoices("clientMetadata", "metadata")
    )

    @field_validator("object_url")
    @classmethod
    def _in_the_bucket(cls, url: str | None, info: ValidationInfo) -> str | None:
        return None if url is None else key_of(url, (info.context or {})["bucket"])

    @field_validator("key")
    @classmethod
    def _a_key(cls, key: str | None) -> str | None:
        return None if key is None else _key(key)

    @field_validator("title")
    @classmethod
    def _a_name(cls, title: str | None) -> str | None:
        problem = None if title is None else rules.name_problem(title, "title")
        if problem:
            raise ValueError(problem)
        return title

    @field_validator("client_metadata")
    @classmethod
    def _bounded(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        try:
            size = rules.metadata_size(metadata)
        except ValueError:
            raise ValueError("must be valid JSON (no NaN or Infinity)") from None
        if size > rules.MAX_METADATA_BYTES:
            raise ValueError(f"is {size} bytes; at most {rules.MAX_METADATA_BYTES}")
        return metadata

    @model_validator(mode="after")
    def _one_reference(self) -> Entry:
        if (self.object_url is None) == (self.key is None):
            raise ValueError("needs an objectUrl or a key (one of them)")
        return self

    def object(self, kind: str) -> ev.ImportObject:
        found = self.object_url if self.object_url is not None else self.key
        assert found is not None
        return ev.ImportObject(
            key=found, title=self.title, kind=kind, metadata=self.client_metadata
        )


class GroupEntry(BaseModel):
    """An image group or sequence: its frames as Encord names them (`objectUrl_0`,
    `objectUrl_1`, ...), or as a list (`objectUrls`, or `keys`), with a `title` (the group
    file's name) and `clientMetadata` (its metadata). Other fields are ignored, as in
    `Entry`; `createVideo: true` makes an entry of `image_groups` a sequence."""

    model_config = ConfigDict(extra="allow", frozen=True)

    title: str | None = None
    client_metadata: dict[str, Any] = Field(
        default_factory=dict, validation_alias=AliasChoices("clientMetadata", "metadata")
    )
    create_video: StrictBool = Field(False, alias="createVideo")
    object_urls: list[str] | None = Field(None, alias="objectUrls")
    keys: list[str] | None = None

    _a_name = field_validator("title")(Entry._a_name.__func__)  # type: ignore[attr-defined]
    _bounded = field_validator("client_metadata")(Entry._bounded.__func__)  # type: ignore[attr-defined]

    @model_validator(mode="after")
    def _frames_in_the_bucket(self, info: ValidationInfo) -> GroupEntry:
        self.frames(info.context or {})
        return self

    def frames(self, context: dict[str, Any]) -> list[str]:
        """The frames' keys in order, or ValueError naming the fault."""
        numbered = sorted(
            (int(m.group(1)), value)
            for name, value in (self.model_extra or {}).items()
            if (m := _OBJECT_URL_N.fullmatch(name))
        )
        if [n for n, _ in numbered] != list(range(len(numbered))):
            raise ValueError("numbers its objectUrl_N from 0 with no gap")
        given = [v for _, v in numbered] + list(self.object_urls or []) + list(self.keys or [])
        if not given:
            raise ValueError("names no frame: give objectUrl_0, objectUrl_1, ... or objectUrls")
        if len(given) > MAX_FRAMES:
            raise ValueError(f"names {len(given)} frames; at most {MAX_FRAMES}")
        keys = []
        for i, url in enumerate(given):
            if not isinstance(url, str):
                raise ValueError(f"frame {i} is not a string")
            try:
                keys.append(key_of(url, context.get("bucket", "")))
            except ValueError as error:
                raise ValueError(f"frame {i} {error}") from None
        return keys


class Manifest(Strict):
    images: list[Entry] | None = None
    videos: list[Entry] | None = None
    audio: list[Entry] | None = None
    pdfs: list[Entry] | None = None
    text: list[Entry] | None = None
    nifti: list[Entry] | None = None
    image_groups: list[GroupEntry] | None = None
    image_sequences: list[GroupEntry] | None = None
    dicom_series: list[GroupEntry] | None = None
    # An object already imported into the folder through the integration is skipped;
    # named again with clientMetadata, its files get that metadata (upsert), not a copy.
    # A group, sequence or DICOM series entry likewise, matched whole (groups.py).
    skip_duplicate_urls: StrictBool = False
    upsert_metadata: StrictBool = False


class ImportBody(Strict):
    """`POST /v1/folders/{id}/imports`: what to import, by keys, prefix or manifest."""

    integration_id: uuid.UUID
    keys: list[Key] | None = None
    prefix: str | None = None
    manifest: Manifest | None = None

    @field_validator("integration_id", mode="before")
    @classmethod
    def _an_id(cls, value: object) -> uuid.UUID:
        return _integration_id(value)

    @field_validator("prefix")
    @classmethod
    def _short(cls, prefix: str | None) -> str | None:
        if prefix is not None and len(prefix.encode()) > MAX_KEY_BYTES:
            raise ValueError(f"must be a string of at most {MAX_KEY_BYTES} bytes")
        return prefix

    @model_validator(mode="after")
    def _names_something(self) -> ImportBody:
        if self.keys is None and self.prefix is None and self.manifest is None:
            raise ValueError("name what to import: keys, prefix or manifest")
        return self


def integration_of(body: object) -> uuid.UUID:
    """The integration an import request names (to look up its bucket), or 422."""
    try:
        return _integration_id(body.get("integration_id") if isinstance(body, dict) else None)
    except ValueError as error:
        raise _invalid([{"field": "integration_id", "problem": str(error)}]) from None


def parse_request(body: object, bucket: str) -> ImportRequest:
    """The objects a request body names in `bucket`, or 422 naming every problem."""
    try:
        request = ImportBody.model_validate(body, context={"bucket": bucket})
    except ValidationError as error:
        raise _invalid(named(error, _unknown)) from None
    objects = [ev.ImportObject(key=k) for k in request.keys or []]
    groups: list[ImportGroup] = []
    manifest = request.manifest
    if manifest is not None:
        for section, kind in FILE_SECTIONS.items():
            objects += [e.object(kind) for e in getattr(manifest, section) or []]
        for section, kind in GROUP_SECTIONS.items():
            for i, group in enumerate(getattr(manifest, section) or []):
                where = f"manifest.{section}[{i}]"
                keys = group.frames({"bucket": bucket})
                groups.append(
                    ImportGroup(
                        kind="image_sequence"
                        if group.create_video and kind != "dicom_series"
                        else kind,
                        name=group.title or _default_title(keys[0]),
                        entry=where,
                        keys=keys,
                        metadata=group.client_metadata,
                        titled=group.title is not None,
                    )
                )
    if len(objects) + sum(len(g.keys) for g in groups) > MAX_OBJECTS:
        raise Refused(
            413,
            "too_many_objects",
            f"one import names at most {MAX_OBJECTS} objects; import the rest in another,"
            " or by prefix",
            {"limit": MAX_OBJECTS},
        )
    return ImportRequest(
        request.integration_id,
        _unique(objects),
        request.prefix,
        groups,
        skip_duplicate_urls=manifest is not None and manifest.skip_duplicate_urls,
        upsert_metadata=manifest is not None and manifest.upsert_metadata,
    )


def _default_title(key: str) -> str:
    """A group without a title is named after its first frame's folder (else the frame)."""
    parts = key.rstrip("/").split("/")
    return parts[-2] if len(parts) > 1 and parts[-2] else parts[-1]


def _unique(objects: list[ev.ImportObject]) -> list[ev.ImportObject]:
    """Each key once, as first named: an object is one file per import."""
    seen: set[str] = set()
    out = []
    for o in objects:
        if o.key not in seen:
            seen.add(o.key)
            out.append(o)
    return out


def _unknown(field: str) -> str:
    if field.startswith("manifest."):
        sections = [*FILE_SECTIONS, *GROUP_SECTIONS]
        return f"is not a section; use {', '.join(sections)}"
    return "is not a field of an import"


def _invalid(problems: list[dict[str, str]]) -> Refused:
    in_manifest = any(p["field"].startswith("manifest") for p in problems)
    return refusal(problems, "invalid_manifest" if in_manifest else "invalid_request")
