"""The gateway's transport to the services: a connection closed as it is made is a lost
connection (a 503 to the caller), not an error of ours."""

from __future__ import annotations

import httpx
import pytest

from shared.kit.http import ServiceTransport


async def test_a_peer_gone_as_the_connection_is_made_is_a_connect_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def gone(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        # What anyio raises when the socket was closed before it was asked for its peer.
        raise AttributeError("'NoneType' object has no attribute 'getpeername'")

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", gone)
    async with httpx.AsyncClient(transport=ServiceTransport()) as http:
        with pytest.raises(httpx.ConnectError, match="closed as it was made"):
            await http.get("http://127.0.0.1:9/")


async def test_other_attribute_errors_are_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    async def bug(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        raise AttributeError("'dict' object has no attribute 'status'")

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", bug)
    async with httpx.AsyncClient(transport=ServiceTransport()) as http:
        with pytest.raises(AttributeError, match="status"):
            await http.get("http://127.0.0.1:9/")
