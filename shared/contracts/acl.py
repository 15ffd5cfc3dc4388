"""Events of the access-control context: users, API keys, folder collaborators."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

from shared.contracts.envelope import Event


def user_stream(user_id: uuid.UUID) -> str:
    return f"user-{user_id}"


def folder_access_stream(folder_id: uuid.UUID) -> str:
    """Who may do what on one folder: its collaborators' grants, in order."""
    return f"folder-access-{folder_id}"


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


class CollaboratorAdded(Event):
    """A user was granted a role on a folder (and so on everything below it).

    `reason`: "invited", or "created the folder" (the creator of a top-level folder
    becomes its admin).
    """

    type: ClassVar[str] = "acl.CollaboratorAdded"
    folder_id: uuid.UUID
    user_id: uuid.UUID
    role: str  # "admin" | "editor" | "user"
    reason: str


class CollaboratorRoleChanged(Event):
    type: ClassVar[str] = "acl.CollaboratorRoleChanged"
    folder_id: uuid.UUID
    user_id: uuid.UUID
    role: str
    previous_role: str


class CollaboratorRemoved(Event):
    """A grant was withdrawn. `reason`: "removed", or "folder_deleted"."""

    type: ClassVar[str] = "acl.CollaboratorRemoved"
    folder_id: uuid.UUID
    user_id: uuid.UUID
    previous_role: str
    reason: str


class SessionStarted(Event):
    """Someone signed in to the web app with an API key: a browser session, on the
    user's stream. Only the session token's hash is recorded (the token is the
    browser's cookie); it ends at `expires_at` without an event, or earlier by
    SessionEnded."""

    type: ClassVar[str] = "acl.SessionStarted"
    session_id: uuid.UUID
    user_id: uuid.UUID
    key_id: uuid.UUID
    token_hash: str
    expires_at: datetime


class SessionEnded(Event):
    """A browser session ended before its expiry. `reason`: "signed_out", or
    "key_revoked" (the key it was opened with was revoked)."""

    type: ClassVar[str] = "acl.SessionEnded"
    session_id: uuid.UUID
    user_id: uuid.UUID
    reason: str


EVENTS: tuple[type[Event], ...] = (
    UserCreated,
    ApiKeyIssued,
    ApiKeyRevoked,
    CollaboratorAdded,
    CollaboratorRoleChanged,
    CollaboratorRemoved,
    SessionStarted,
    SessionEnded,
)
