"""How many streamed transfers each caller has under way at this gateway, capped.

The transfers to a service share a pool capped per gateway
(`FILES_GATEWAY_TRANSFERS_PER_SERVICE`): one member holding that many slow uploads or
unread downloads made every other member's transfers `503`. Each caller (a member, by
their user id, whichever key or sign-in they use; an upload session's parts, which come
as no one, count as their opener's, whom the signed part URL names) may have
`FILES_GATEWAY_TRANSFERS_PER_CALLER` at once; one more is `429` with Retry-After, before
anything is sent on.

A transfer's slot is taken by the route (`Transfers.take`), and given back by
`GiveBack`, a middleware around the whole exchange, once the app's call ends: after the
answer's last byte, or its client gone, or any error or cancellation. A download's
answer is sent after its route returned, so the slot cannot be given back by the route.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from shared.kit.errors import Refused

# Where a request keeps the callers whose slots it holds (in the ASGI scope's state).
HELD = "transfers_held"
# The composers whose routes take a slot (a streamed upload or download): their routes
# may answer 429 (services/gateway/openapi.py).
COMPOSERS = frozenset(
    {
        "content",
        "upload",
        "upload_image_group",
        "upload_dicom",
        "upload_part",
        "dicomweb",
        "store_instances",
    }
)


class Transfers:
    def __init__(self, per_caller: int) -> None:
        self.per_caller = per_caller
        self._under_way: dict[str, int] = {}

    def under_way(self, caller: str) -> int:
        return self._under_way.get(caller, 0)

    def take(self, scope: MutableMapping[str, Any], caller: str) -> None:
        """One more transfer of `caller`, given back when the request ends; `429` if
        they have as many under way as they may."""
        held = self._under_way.get(caller, 0)
        if held >= self.per_caller:
            raise Refused(
                429,
                "too_many_transfers",
                f"you have {held} uploads and downloads under way at this gateway, as many as"
                f" one caller may (FILES_GATEWAY_TRANSFERS_PER_CALLER); try again once one"
                " has ended",
                {"limit": self.per_caller, "retry": True},
            )
        # Counted and noted with no await between: nothing can end the request in between
        # and leave a slot taken that no one gives back.
        self._under_way[caller] = held + 1
        scope.setdefault("state", {}).setdefault(HELD, []).append(caller)

    def give_back(self, scope: MutableMapping[str, Any]) -> None:
        for caller in scope.get("state", {}).pop(HELD, ()):
            left = self._under_way[caller] - 1
            if left:
                self._under_way[caller] = left
            else:
                del self._under_way[caller]


class GiveBack:
    """The slots a request took, given back however its exchange ends."""

    def __init__(self, app: Any, transfers: Transfers) -> None:
        self.app = app
        self.transfers = transfers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.transfers.give_back(scope)
