"""Calling a service directly, as the gateway does: with a signed identity token.

The test platforms use SERVICE_KEY (tests/conftest.py), so a test can play the
gateway: `as_user(...)` for a call made for a user, `sign_as_gateway` (an httpx event
hook) for the calls the gateway makes for no user. Their tokens name no service (as a
signer of the version before audiences did: every service accepts them for now), so
one set of headers serves calls to any service; tests/unit/test_identity.py and
tests/e2e/test_service_identity.py hold the audience's checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import httpx

from shared.kit import identity
from shared.kit.access import Access
from tests.conftest import SERVICE_KEY

SIGNER = identity.ServiceKey(SERVICE_KEY)


class Signed(Mapping[str, str]):
    """Request headers holding a token signed when they are sent (a token lives a
    minute; a module's constant would not), and any other headers given."""

    def __init__(
        self,
        actor: str,
        access: str | None,
        extra: Mapping[str, str],
        folder_path: str | None = None,
        object_ref: str | None = None,
        key_id: str | None = None,
    ) -> None:
        self.actor = actor
        self.access = access
        self.extra = dict(extra)
        self.folder_path = folder_path
        self.object_ref = object_ref
        self.key_id = key_id

    def __getitem__(self, name: str) -> str:
        if name == identity.HEADER:
            return SIGNER.sign(
                self.actor,
                self.access,
                audience=None,
                folder_path=self.folder_path,
                object_ref=self.object_ref,
                key_id=self.key_id,
            )
        return self.extra[name]

    def __iter__(self) -> Iterator[str]:
        yield identity.HEADER
        yield from self.extra

    def __len__(self) -> int:
        return 1 + len(self.extra)


def as_user(
    user_id: str,
    access: Access | str,
    *,
    folder_path: str | None = None,
    object_ref: str | None = None,
    key_id: str | None = None,
    **extra: str,
) -> Signed:
    """What the gateway sends for a user: who they are and what they may do, and for a
    call about a folder, the folder's path of ids (comma-separated, root first); for a
    file imported by reference, its object (`<integration id>:<key>`); the id of the key
    they were authenticated by."""
    encoded = access if isinstance(access, str) else access.encode()
    return Signed(user_id, encoded, extra, folder_path, object_ref, key_id)


def as_service(name: str = "gateway") -> Signed:
    """A service's call for no user."""
    return Signed(identity.SERVICE_PREFIX + name, None, {})


async def sign_as_gateway(request: httpx.Request) -> None:
    """Event hook: a call without a token goes as the gateway's own (as the gateway's
    client does)."""
    if identity.HEADER not in request.headers:
        request.headers[identity.HEADER] = SIGNER.for_service("gateway", audience=None)
