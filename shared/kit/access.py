"""What a caller may do, decided the same way in every context.

The gateway asks the ACL context once per request for the caller's organisation
role and folder grants, and passes them on in a header. A service that knows a
resource's folder path decides with `role_on`: the strongest role granted on any
folder of the path wins, and an organisation admin is an admin everywhere.

A caller without any role on a resource gets 404, so its existence does not
leak; one who sees it but lacks the role gets 403 naming the role needed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared.kit.errors import Refused

HEADER = "X-Files-Access"
RANK = {"user": 1, "editor": 2, "admin": 3}
ROLES = tuple(RANK)
SYNONYMS = {"viewer": "user"}


def role_name(role: str) -> str | None:
    """The canonical name of a role as a client may write it, or None if it is none."""
    role = SYNONYMS.get(role, role)
    return role if role in RANK else None


def valid_role(role: str) -> str:
    """The canonical role a client wrote ("viewer" is "user"), or 422."""
    name = role_name(role)
    if name is None:
        raise Refused(
            422,
            "invalid_role",
            f"{role[:50]!r} is not a role: use one of {', '.join(ROLES)} (viewer means user)",
            {"allowed_roles": list(ROLES)},
        )
    return name


def require_role(role: str | None, needed: str, what: str, on: str = "the folder") -> str:
    """`role` if it is at least `needed`: no role is 404 (`what` does not exist, as far
    as the caller can tell), too weak a role is 403 naming the one needed."""
    if role is None:
        raise Refused(404, "not_found", f"{what} does not exist")
    if RANK[role] < RANK[needed]:
        raise Refused(
            403,
            "forbidden",
            f"{what}: this needs the {needed} role on {on} (you have {role})",
            {"role_needed": needed, "role": role},
        )
    return role


def strongest(roles: Iterable[str]) -> str | None:
    return max(roles, key=RANK.__getitem__, default=None)


@dataclass(frozen=True)
class Access:
    user_id: str
    org_admin: bool = False
    grants: Mapping[uuid.UUID, str] = field(default_factory=dict)

    def role_on(self, path: Iterable[uuid.UUID]) -> str | None:
        if self.org_admin:
            return "admin"
        return strongest(self.grants[f] for f in path if f in self.grants)

    def require(self, path: Iterable[uuid.UUID], needed: str, what: str) -> str:
        """The caller's role on a resource at `path`, if at least `needed`."""
        return require_role(self.role_on(path), needed, what)

    @property
    def roots(self) -> list[uuid.UUID] | None:
        """The folders whose subtrees the caller sees; None when it sees everything."""
        return None if self.org_admin else list(self.grants)

    def encode(self) -> str:
        if self.org_admin:
            return f"{self.user_id};admin"
        grants = ",".join(f"{folder}:{role}" for folder, role in self.grants.items())
        return f"{self.user_id};member;{grants}"

    @classmethod
    def decode(cls, header: str) -> Access:
        user_id, _, rest = header.partition(";")
        org_role, _, grants = rest.partition(";")
        if not user_id or org_role not in ("admin", "member"):
            raise Refused(401, "unauthenticated", "malformed access header")
        pairs = (g.rpartition(":") for g in grants.split(",") if g)
        return cls(
            user_id=user_id,
            org_admin=org_role == "admin",
            grants={uuid.UUID(folder): role for folder, _, role in pairs if role in RANK},
        )
