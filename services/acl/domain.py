"""Users and API keys, pure."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
import uuid
from dataclasses import dataclass

from shared.contracts import acl as ev
from shared.contracts import rules
from shared.contracts.envelope import Change
from shared.kit.errors import Refused

EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
ORG_ROLES = ("admin", "member")


@dataclass(frozen=True)
class Caller:
    user_id: uuid.UUID
    org_role: str


def new_key() -> str:
    return "files_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # Keys are long random strings, so a fast hash is enough; it is never the key itself.
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(
    caller: Caller | None,
    user_id: uuid.UUID,
    key_id: uuid.UUID,
    key: str,
    *,
    email: str,
    name: str,
    org_role: str,
) -> list[Change]:
    """caller None is the bootstrap: the platform creating its first admin."""
    if caller is not None and caller.org_role != "admin":
        raise Refused(
            403, "forbidden", "only organisation admins create users (role needed: admin)"
        )
    if not EMAIL.match(email):
        raise Refused(422, "invalid_email", f"{email!r} is not an email address")
    if org_role not in ORG_ROLES:
        raise Refused(422, "invalid_role", f"org_role must be one of {', '.join(ORG_ROLES)}")
    if not name.strip() or len(name) > rules.MAX_NAME:
        raise Refused(422, "invalid_name", "the user's name must have 1 to 300 characters")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise Refused(422, "invalid_name", "the user's name contains control characters")
    stream = ev.user_stream(user_id)
    return [
        Change(
            stream,
            1,
            ev.UserCreated(user_id=user_id, email=email.lower(), name=name, org_role=org_role),
        ),
        Change(stream, 2, ev.ApiKeyIssued(key_id=key_id, user_id=user_id, key_hash=key_hash(key))),
    ]
