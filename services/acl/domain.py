"""Users, API keys and folder collaborators, pure: state and a command in, events out."""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.contracts import acl as ev
from shared.contracts import rules
from shared.contracts.envelope import Change, Event, appended
from shared.kit.access import Access, valid_role
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


# -- API keys -----------------------------------------------------------------------


def may_manage_keys(caller: Caller, user_id: uuid.UUID) -> None:
    """A user manages their own keys; an organisation admin manages everyone's."""
    if caller.user_id != user_id and caller.org_role != "admin":
        raise Refused(
            403,
            "forbidden",
            "only the user or an organisation admin manages a user's keys (role needed: admin)",
            {"role_needed": "admin"},
        )


def issue_key(user_id: uuid.UUID, version: int, key_id: uuid.UUID, key: str) -> list[Change]:
    """`version` is the user's stream version before the key."""
    event = ev.ApiKeyIssued(key_id=key_id, user_id=user_id, key_hash=key_hash(key))
    return [Change(ev.user_stream(user_id), version + 1, event)]


@dataclass(frozen=True)
class Key:
    id: uuid.UUID
    user_id: uuid.UUID
    revoked: bool


def revoke_key(
    caller: Caller, key: Key | None, version: int, open_sessions: Sequence[uuid.UUID] = ()
) -> list[Change]:
    """Revoke a key (`version`: its user's stream version). Someone else's key is 404 to
    a member, as is an unknown key. Revoking a revoked key records nothing (204 again).
    The web app's sessions opened with the key end with it."""
    if key is None or (key.user_id != caller.user_id and caller.org_role != "admin"):
        raise Refused(404, "not_found", "this API key does not exist")
    if key.revoked:
        return []
    events: list[Event] = [ev.ApiKeyRevoked(key_id=key.id, user_id=key.user_id)]
    events += [
        ev.SessionEnded(session_id=session_id, user_id=key.user_id, reason="key_revoked")
        for session_id in open_sessions
    ]
    return appended(ev.user_stream(key.user_id), events, after=version)


# -- web app sessions ---------------------------------------------------------------
#
# The web app exchanges an API key for a session, so the key never stays in the
# browser: the session's token is an HttpOnly cookie, and only its hash is recorded.

MIN_SESSION_S = 60
MAX_SESSION_S = 30 * 24 * 3600


def new_session_token() -> str:
    return "files_session_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    user_id: uuid.UUID,
    version: int,
    key_id: uuid.UUID,
    session_id: uuid.UUID,
    token: str,
    now: datetime,
    ttl_s: float,
) -> list[Change]:
    """A session for the key's user (`version`: their stream's), until now + ttl."""
    ttl_s = min(max(ttl_s, MIN_SESSION_S), MAX_SESSION_S)
    event = ev.SessionStarted(
        session_id=session_id,
        user_id=user_id,
        key_id=key_id,
        token_hash=token_hash(token),
        expires_at=now + timedelta(seconds=ttl_s),
    )
    return [Change(ev.user_stream(user_id), version + 1, event)]


@dataclass(frozen=True)
class Session:
    id: uuid.UUID
    user_id: uuid.UUID
    ended: bool
    expires_at: datetime


def end_session(session: Session | None, version: int, now: datetime) -> list[Change]:
    """Signing out ends the session; one that is unknown, ended or expired records
    nothing (signing out twice is no error)."""
    if session is None or session.ended or session.expires_at <= now:
        return []
    event = ev.SessionEnded(session_id=session.id, user_id=session.user_id, reason="signed_out")
    return [Change(ev.user_stream(session.user_id), version + 1, event)]


# -- folder collaborators -----------------------------------------------------------
#
# A role on a folder holds for everything below it; the caller's roles come as an
# `Access` (org role and grants) and the folder as its path of ids, root first, so
# inherited roles count. Managing collaborators needs the admin role on the folder;
# seeing them, any role.


@dataclass(frozen=True)
class Folder:
    """A folder's access stream: its direct grants (user -> role) and version."""

    id: uuid.UUID
    version: int
    grants: Mapping[uuid.UUID, str]


def valid_path(folder_id: uuid.UUID, path: Sequence[uuid.UUID]) -> Sequence[uuid.UUID]:
    if not path or path[-1] != folder_id or len(set(path)) != len(path):
        raise Refused(
            400,
            "invalid_folder_path",
            "the folder path must list the folder's ancestors' ids, root first, then its own",
        )
    return path


def may_see(access: Access, path: Sequence[uuid.UUID]) -> str:
    """Anyone with a role on the folder (here or above) sees its collaborators."""
    return access.require(path, "user", "this folder")


def _may_manage(access: Access, path: Sequence[uuid.UUID]) -> None:
    access.require(path, "admin", "managing this folder's collaborators")


def _untouchable(access: Access, folder: Folder, user_id: uuid.UUID) -> None:
    """A folder's admins stay its admins: nobody removes them or changes their role,
    except an organisation admin. That exception is how a folder changes hands: an
    org admin invites the new admin, then changes or removes the old one."""
    if folder.grants.get(user_id) == "admin" and not access.org_admin:
        raise Refused(
            409,
            "admin_collaborator",
            "an admin of a folder cannot be removed and their role cannot be changed"
            " (an organisation admin can, to transfer the folder)",
            {"user_id": str(user_id)},
        )


def invite(
    access: Access,
    path: Sequence[uuid.UUID],
    folder: Folder,
    user_ids: Sequence[uuid.UUID],
    role: str,
    unknown_emails: Sequence[str] = (),
) -> list[Change]:
    """Grant `role` to each user, all or none: an email that is no user's refuses the
    whole call. Someone with a direct grant here has it changed instead (an admin's
    only by an org admin); the same role again records nothing."""
    _may_manage(access, path)
    role = valid_role(role)
    if unknown_emails:
        shown = ", ".join(unknown_emails[:10]) + (" …" if len(unknown_emails) > 10 else "")
        raise Refused(
            422,
            "unknown_emails",
            f"no user has these emails: {shown}",
            {"unknown_emails": list(unknown_emails)},
        )
    events: list[Event] = []
    for user_id in dict.fromkeys(user_ids):
        had = folder.grants.get(user_id)
        if had == role:
            continue
        if had is None:
            events.append(
                ev.CollaboratorAdded(
                    folder_id=folder.id, user_id=user_id, role=role, reason="invited"
                )
            )
        else:
            _untouchable(access, folder, user_id)
            events.append(
                ev.CollaboratorRoleChanged(
                    folder_id=folder.id, user_id=user_id, role=role, previous_role=had
                )
            )
    return _numbered(folder, events)


def change_role(
    access: Access, path: Sequence[uuid.UUID], folder: Folder, user_id: uuid.UUID, role: str
) -> list[Change]:
    _may_manage(access, path)
    role = valid_role(role)
    had = _direct(folder, user_id)
    if had == role:
        return []
    _untouchable(access, folder, user_id)
    event = ev.CollaboratorRoleChanged(
        folder_id=folder.id, user_id=user_id, role=role, previous_role=had
    )
    return _numbered(folder, [event])


def remove(
    access: Access, path: Sequence[uuid.UUID], folder: Folder, user_id: uuid.UUID
) -> list[Change]:
    _may_manage(access, path)
    had = _direct(folder, user_id)
    _untouchable(access, folder, user_id)
    event = ev.CollaboratorRemoved(
        folder_id=folder.id, user_id=user_id, previous_role=had, reason="removed"
    )
    return _numbered(folder, [event])


def when_top_level_folder_created(folder: Folder, creator: uuid.UUID) -> list[Change]:
    """The creator of a top-level folder becomes its admin (once: a redelivered
    creation, or a grant already there, records nothing)."""
    if creator in folder.grants:
        return []
    event = ev.CollaboratorAdded(
        folder_id=folder.id, user_id=creator, role="admin", reason="created the folder"
    )
    return _numbered(folder, [event])


def when_folder_deleted(folder: Folder) -> list[Change]:
    """Every grant on a deleted folder goes with it."""
    events: list[Event] = [
        ev.CollaboratorRemoved(
            folder_id=folder.id, user_id=user_id, previous_role=role, reason="folder_deleted"
        )
        for user_id, role in sorted(folder.grants.items())
    ]
    return _numbered(folder, events)


def _direct(folder: Folder, user_id: uuid.UUID) -> str:
    had = folder.grants.get(user_id)
    if had is None:
        raise Refused(
            404,
            "not_found",
            f"user {user_id} is not a collaborator of this folder (a role above it is"
            " managed on the folder that grants it)",
            {"user_id": str(user_id)},
        )
    return had


def _numbered(folder: Folder, events: Sequence[Event]) -> list[Change]:
    return appended(ev.folder_access_stream(folder.id), events, after=folder.version)
