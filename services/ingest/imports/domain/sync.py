"""Cloud-synced folders, pure: what `cloud_sync` asks, the ids of the subfolders key
paths make, the events token, and the keys an S3 event notification names."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import unquote_plus

import orjson

from shared.kit.errors import Refused

# Records one notification may carry (S3 sends one; MinIO and SQS batches, a few).
MAX_RECORDS = 1000
MAX_PREFIX_BYTES = 1024
SUBFOLDERS = uuid.UUID("6b3c1f0e-2d4a-4e59-9a51-0c1d7f3e8a21")


def subfolder_id(root: uuid.UUID, path: str) -> uuid.UUID:
    """The subfolder a key path names below a synced folder: the same on every run."""
    return uuid.uuid5(SUBFOLDERS, f"{root}/{path}")


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A notification token and its SHA-256 (the one kept)."""
    token = "fst_" + secrets.token_urlsafe(32)
    return token, token_sha256(token)


@dataclass(frozen=True)
class SyncConfig:
    folder_id: uuid.UUID
    integration_id: uuid.UUID
    prefix: str
    sync_interval_s: int | None


def parse_cloud_sync(body: object) -> tuple[uuid.UUID, str, int | None]:
    """`cloud_sync: {integration_id, prefix, sync_interval_s?}`, or 422 naming the field.
    `integration_name` is ignored: a folder's sync state says it, and may be sent back."""
    problems: list[dict[str, str]] = []
    if not isinstance(body, dict):
        raise Refused(422, "invalid_request", "cloud_sync must be an object")
    unknown = set(body) - {"integration_id", "integration_name", "prefix", "sync_interval_s"}
    problems += [
        {"field": f"cloud_sync.{f}", "problem": "is not a field of cloud_sync"} for f in unknown
    ]
    integration_id: uuid.UUID | None = None
    try:
        integration_id = uuid.UUID(str(body.get("integration_id")))
    except ValueError:
        problems.append({"field": "cloud_sync.integration_id", "problem": "must be an id"})
    prefix = body.get("prefix", "")
    if not isinstance(prefix, str) or len(prefix.encode()) > MAX_PREFIX_BYTES:
        problems.append(
            {"field": "cloud_sync.prefix", "problem": f"must be at most {MAX_PREFIX_BYTES} bytes"}
        )
    interval = body.get("sync_interval_s")
    if interval is not None and (type(interval) is not int or not 60 <= interval <= 7 * 24 * 3600):
        problems.append(
            {"field": "cloud_sync.sync_interval_s", "problem": "must be 60 to 604800 seconds"}
        )
    if problems or integration_id is None:
        raise Refused(
            422,
            "invalid_request",
            "; ".join(f"{p['field']} {p['problem']}" for p in problems),
            {"problems": problems},
        )
    return integration_id, str(prefix), interval


def relative(prefix: str, key: str) -> list[str]:
    """The parts of a key below the prefix: subfolders, then the file's name."""
    return [p for p in key[len(prefix) :].split("/") if p]


def _member(value: object, name: str) -> object:
    """`value[name]` if `value` is an object: any part of a record may be of another
    type (`"s3": "x"`), which is the notification's fault, not ours."""
    return value.get(name) if isinstance(value, dict) else None


def notified_keys(body: object) -> list[tuple[str, str]]:
    """(bucket, key) of each record of an S3 event notification: S3's own JSON (sent
    through SNS, whose `Message` holds it, or SQS to HTTP), or MinIO's webhook target's
    (`Records`, with `Key` `bucket/key` at the top). 422 when it is neither."""
    if isinstance(body, dict) and body.get("Type") == "SubscriptionConfirmation":
        raise Refused(
            422, "subscription_confirmation", "confirm the SNS subscription at its SubscribeURL"
        )
    if isinstance(body, dict) and isinstance(body.get("Message"), str):
        try:
            body = orjson.loads(body["Message"])
        except orjson.JSONDecodeError:
            raise Refused(422, "invalid_notification", "Message is not JSON") from None
    records = body.get("Records") if isinstance(body, dict) else None
    if isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
        return []
    if not isinstance(records, list):
        raise Refused(
            422, "invalid_notification", "not an S3 event notification: it has no Records"
        )
    if len(records) > MAX_RECORDS:
        raise Refused(
            413,
            "too_many_records",
            f"at most {MAX_RECORDS} records a notification",
            {"limit": MAX_RECORDS},
        )
    found: list[tuple[str, str]] = []
    for i, record in enumerate(records):
        s3 = _member(record, "s3")
        bucket = _member(_member(s3, "bucket"), "name")
        key = _member(_member(s3, "object"), "key")
        if not isinstance(bucket, str) or not isinstance(key, str) or not key:
            raise Refused(
                422,
                "invalid_notification",
                f"Records[{i}] names no s3.bucket.name and s3.object.key",
            )
        # S3 sends keys URL-encoded (spaces as '+').
        found.append((bucket, unquote_plus(key)))
    return found
