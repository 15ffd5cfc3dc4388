"""Webhooks' rules, without I/O: the events one may subscribe to, the secret, the
signature (the Standard Webhooks spec, https://www.standardwebhooks.com), the backoff."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.kit.errors import Refused

# The names a webhook subscribes to, and what each means.
EVENTS = {
    "file.uploaded": "a file was registered in a folder (upload, import or sync)",
    "file.deleted": "a file was deleted (or went to the trash)",
    "job.completed": "an upload, import or sync job ended (done, failed or cancelled)",
    "folder.synced": "a cloud-synced folder's sync ended",
}
MAX_URL = 2048
MAX_EVENTS = len(EVENTS)
SECRET_PREFIX = "whsec_"
# The spec's secrets are 24 to 64 random bytes.
SECRET_BYTES = (24, 64)
# Longest backoff between two attempts; a delivery is given up this long after it was made.
MAX_BACKOFF_S = 3600.0
GIVE_UP_AFTER_S = 24 * 3600.0
# Bytes of a receiver's answer read, and the first of them kept (in the last error).
MAX_ANSWER_BYTES = 4096
ANSWER_SHOWN_BYTES = 100


@dataclass(frozen=True)
class Registration:
    url: str
    host: str
    port: int
    events: tuple[str, ...]
    secret: str | None


def _bad(code: str, message: str, **details: object) -> Refused:
    return Refused(422, code, message, dict(details))


def parse_registration(body: object) -> Registration:
    """`{url, events, secret?}` or 422 naming what is wrong."""
    if not isinstance(body, dict):
        raise _bad("invalid_body", "the body must be an object {url, events, secret?}")
    unknown = sorted(set(body) - {"url", "events", "secret"})
    if unknown:
        raise _bad("invalid_body", f"unknown field {unknown[0][:50]!r}", fields=unknown[:10])
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise _bad("invalid_url", "url is required: the https:// address events are sent to")
    if len(url) > MAX_URL:
        raise _bad("invalid_url", f"url is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _bad("invalid_url", "url is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad("invalid_url", "url must be an http:// or https:// address with a host")
    if parts.username is not None or parts.password is not None:
        raise _bad("invalid_url", "url may not carry a user name or password")
    events = body.get("events")
    if not isinstance(events, list) or not events or len(events) > MAX_EVENTS:
        raise _bad(
            "invalid_events",
            f"events must be a list of 1 to {MAX_EVENTS} of {', '.join(EVENTS)}",
            allowed_events=list(EVENTS),
        )
    for event in events:
        # A name is a string: an object or a list is not hashable, and `in` would raise.
        if not isinstance(event, str) or event not in EVENTS:
            shown = event[:50] if isinstance(event, str) else event
            raise _bad(
                "invalid_events",
                f"{shown!r} is not an event: use {', '.join(EVENTS)}",
                allowed_events=list(EVENTS),
            )
    secret = body.get("secret")
    if secret is not None:
        if not isinstance(secret, str):
            raise _bad("invalid_secret", "secret must be a string whsec_<base64>")
        secret_key(secret)
    return Registration(url, parts.hostname, port, tuple(dict.fromkeys(events)), secret)


# A rotated secret's predecessor still signs (beside it) this long by default, at most
# MAX_KEEP_PREVIOUS_S: receivers switch to the new secret in their own time.
KEEP_PREVIOUS_S = 24 * 3600.0
MAX_KEEP_PREVIOUS_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Rotation:
    secret: str | None
    keep_previous_s: float


def parse_rotation(body: object) -> Rotation:
    """`{secret?, keep_previous_for_s?}` (or no body) or 422 naming what is wrong."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise _bad("invalid_body", "the body must be an object {secret?, keep_previous_for_s?}")
    unknown = sorted(set(body) - {"secret", "keep_previous_for_s"})
    if unknown:
        raise _bad("invalid_body", f"unknown field {unknown[0][:50]!r}", fields=unknown[:10])
    secret = body.get("secret")
    if secret is not None:
        if not isinstance(secret, str):
            raise _bad("invalid_secret", "secret must be a string whsec_<base64>")
        secret_key(secret)
    keep = body.get("keep_previous_for_s", KEEP_PREVIOUS_S)
    number = isinstance(keep, int | float) and not isinstance(keep, bool)
    if not number or not 0 <= keep <= MAX_KEEP_PREVIOUS_S:
        raise _bad(
            "invalid_keep_previous",
            f"keep_previous_for_s must be a number of seconds from 0 to {MAX_KEEP_PREVIOUS_S:g}"
            " (7 days): how long the secret before still signs beside the new one",
            keep_previous_for_s=keep if number else None,
        )
    return Rotation(secret, float(keep))


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret, or 422."""
    low, high = SECRET_BYTES
    problem = f"secret must be whsec_ and the base64 of {low} to {high} random bytes"
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 200:
        raise _bad("invalid_secret", problem)
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise _bad("invalid_secret", problem) from None
    if not low <= len(key) <= high:
        raise _bad("invalid_secret", problem)
    return key


def signature(signing: Sequence[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`
    with each signing secret, space-delimited (the spec's way to rotate: a receiver accepts the
    message when any signature is one of its secrets')."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_key(s), signed, hashlib.sha256).digest()).decode()
        for s in signing
    )


def backoff_s(attempts: int, base_s: float) -> float:
    """Seconds before the next attempt after `attempts` failed ones: doubling from
    `base_s`, at most MAX_BACKOFF_S."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))
