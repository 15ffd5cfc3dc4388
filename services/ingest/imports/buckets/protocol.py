"""S3's side of the conversation, pure: where a bucket's objects are addressed, and
what its answers say (a ListObjectsV2 page, a bucket's location, an error's code).

Listings are parsed here with ElementTree, keys only: botocore's parser makes a dict
with parsed dates for every object (about 70 us a key, 7 s of CPU for 100,000 keys),
which an import never reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_plus
from xml.etree import ElementTree

from botocore.utils import check_dns_name

from services.ingest.imports.domain.integrations import REGION, Endpoint

_S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_AWS_HOST = re.compile(r"^s3([.-][a-z0-9-]+)*\.amazonaws\.com(\.cn)?$")


class Unreadable(ValueError):
    """An answer that is not what S3 says; the message names what was wrong."""


@dataclass(frozen=True)
class Listed:
    """An object as a listing shows it: what a sync compares with what it knows."""

    key: str
    etag: str
    size: int
    last_modified: str


@dataclass(frozen=True)
class Page:
    keys: list[str]
    # The next page's continuation token; None after the last page.
    following: str | None
    # The same objects with their ETag, size and last-modified (what a sync compares).
    entries: list[Listed] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Addressing:
    """Where a bucket's requests go: the origin (scheme://host[:port]), the path of
    the bucket (`/bucket` for path style, `/` for a virtual host) and of its objects
    (`/bucket/` or `/`)."""

    origin: str
    bucket_path: str
    object_path: str

    def object_url(self, key: str) -> str:
        return self.origin + self.object_path + quote(key, safe="/~")


def is_aws(endpoint: Endpoint) -> bool:
    return bool(_AWS_HOST.match(endpoint.hostname))


def addressing(endpoint: Endpoint, bucket: str, region: str) -> Addressing:
    """AWS's own endpoints: the bucket's regional virtual host (path style on the
    regional host for a name that cannot be a host, such as one with dots over TLS).
    Any other S3 API (MinIO, Ceph, moto): path style, on the endpoint as given."""
    if is_aws(endpoint):
        scheme = "https" if endpoint.secure else "http"
        suffix = ".amazonaws.com.cn" if endpoint.hostname.endswith(".cn") else ".amazonaws.com"
        regional = f"s3.{region}{suffix}"
        if check_dns_name(bucket) and not (endpoint.secure and "." in bucket):
            return Addressing(f"{scheme}://{bucket}.{regional}", "/", "/")
        return Addressing(f"{scheme}://{regional}", f"/{bucket}", f"/{bucket}/")
    return Addressing(endpoint.url(), f"/{bucket}", f"/{bucket}/")


def parse_page(body: bytes) -> Page:
    """A ListObjectsV2 page: its keys (URL-decoded when the page says they are
    encoded; folder markers, keys ending in '/', left out) and the next token."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise Unreadable("a listing that is not XML") from None
    encoded = (root.findtext(f"{_S3}EncodingType") or "").lower() == "url"
    keys = []
    entries = []
    for found in root.iterfind(f"{_S3}Contents"):
        name = found.findtext(f"{_S3}Key") or ""
        if encoded:
            name = unquote_plus(name)
        if name and not name.endswith("/"):
            keys.append(name)
            size = found.findtext(f"{_S3}Size") or "0"
            entries.append(
                Listed(
                    name,
                    (found.findtext(f"{_S3}ETag") or "").strip('"'),
                    int(size) if size.isascii() and size.isdigit() else 0,
                    found.findtext(f"{_S3}LastModified") or "",
                )
            )
    following = root.findtext(f"{_S3}NextContinuationToken")
    if (root.findtext(f"{_S3}IsTruncated") or "").lower() != "true":
        return Page(keys, None, entries)
    if not following:
        raise Unreadable("a truncated listing without a continuation token")
    return Page(keys, following, entries)


def parse_location(body: bytes, endpoint: Endpoint) -> str:
    """A GetBucketLocation answer as a region (empty: us-east-1; AWS's legacy "EU":
    eu-west-1)."""
    try:
        found = (ElementTree.fromstring(body).text or "").strip()
    except ElementTree.ParseError:
        raise Unreadable("a location that is not XML") from None
    if not found:
        return "us-east-1"
    if found == "EU" and is_aws(endpoint):
        return "eu-west-1"
    if not REGION.match(found):
        raise Unreadable("a region that is not one; give the integration's region")
    return found


def error_code(status: int, body: bytes, key: str | None) -> str:
    """The S3 error code of an answer that is not a success (from its body, or its
    status when the body names none)."""
    found = _ERROR_CODE.search(body)
    if found:
        return found.group(1).decode(errors="replace")
    if 300 <= status < 400:
        return "Redirect"
    return {403: "AccessDenied", 404: "NoSuchKey" if key else "NoSuchBucket"}.get(
        status, f"HTTP {status}"
    )
