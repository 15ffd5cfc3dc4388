"""A group's web rendition as it is sent: what makes the gateway ask the catalog again
whether its caller still sees the images (`Compose._images_still_seen`). The platform's
own cut is tests/e2e/test_reencode.py's; here, how often it asks and what it tells."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.gateway import deadlines
from services.gateway.compose import Compose
from services.gateway.edge import RECHECK_WAIT_S
from shared.kit.http import StreamCut

SEEN = {"id": "f1", "kind": "image_sequence", "group": {"images": ["a"], "file_ids": ["a"]}}


class Gateway:
    """The gateway as the recheck uses it: the caller's access now, and the catalog."""

    def __init__(self, answer: httpx.Response, access: str = "mine") -> None:
        self.access_changes = 0
        self.access = access
        self.answer = answer
        self.asked: list[dict[str, str]] = []

    async def authenticate(self, request: Any) -> dict[str, Any]:
        return {"id": "u1", "access": self.access}

    async def call(self, *args: Any, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        self.asked.append(headers)
        return self.answer


def _call() -> Any:
    request = types.SimpleNamespace(
        state=types.SimpleNamespace(access_changes=0),
        url=types.SimpleNamespace(path="/v1/files/f1/content"),
    )
    return types.SimpleNamespace(request=request, user={"id": "u1", "access": "mine"})


class _Answer:
    async def aclose(self) -> None:
        pass


async def _sent(gateway: Gateway, chunks: int, *, new_access_at: int | None = None) -> int:
    """Bytes sent of a body during which every chunk comes with a change of access
    (others' sign-ins, users made elsewhere); the caller's own access changes at
    `new_access_at`."""

    async def body() -> AsyncIterator[bytes]:
        for n in range(chunks):
            gateway.access_changes += 1
            if n == new_access_at:
                gateway.access = "changed"
            yield b"x"

    compose = Compose.__new__(Compose)
    compose.gateway = gateway  # type: ignore[assignment]
    return sum([len(c) async for c in compose._images_still_seen(body(), _Answer(), _call(), "f1")])  # type: ignore[arg-type]


async def test_others_changes_of_access_do_not_ask_the_catalog_the_callers_own_does() -> None:
    gateway = Gateway(httpx.Response(200, json=SEEN))
    assert await _sent(gateway, 100) == 100
    assert gateway.asked == []
    assert await _sent(gateway, 100, new_access_at=50) == 100
    assert len(gateway.asked) == 1


async def test_the_catalog_is_told_the_rechecks_own_deadline() -> None:
    gateway = Gateway(httpx.Response(200, json=SEEN))
    await _sent(gateway, 3, new_access_at=1)
    [told] = gateway.asked
    assert told == {deadlines.HEADER: deadlines.told(RECHECK_WAIT_S)}


async def test_an_answer_that_is_no_json_does_not_end_the_video() -> None:
    gateway = Gateway(httpx.Response(200, content=b"<html>a proxy's page</html>"))
    assert await _sent(gateway, 10, new_access_at=2) == 10


async def test_a_file_no_longer_found_ends_the_video_with_a_refusal() -> None:
    gateway = Gateway(httpx.Response(404, json={"error": {"code": "not_found"}}))
    with pytest.raises(StreamCut) as cut:
        await _sent(gateway, 10, new_access_at=2)
    assert cut.value.reason.status == 403
