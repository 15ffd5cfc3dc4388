"""Events of the access-control context: users and API keys."""

from __future__ import annotations

import uuid
from typing import ClassVar

from shared.contracts.envelope import Event


def user_stream(user_id: uuid.UUID) -> str:
    return f"user-{user_id}"


class UserCreated(Event):
    type: ClassVar[str] = "acl.UserCreated"
    user_id: uuid.UUID
    email: str
    name: str
    org_role: str  # "admin" | "member"


class ApiKeyIssued(Event):
    """Only the key's hash is recorded; the key itself is shown once to its owner."""

    type: ClassVar[str] = "acl.ApiKeyIssued"
    key_id: uuid.UUID
    user_id: uuid.UUID
    key_hash: str


class ApiKeyRevoked(Event):
    type: ClassVar[str] = "acl.ApiKeyRevoked"
    key_id: uuid.UUID
    user_id: uuid.UUID


EVENTS: tuple[type[Event], ...] = (UserCreated, ApiKeyIssued, ApiKeyRevoked)
