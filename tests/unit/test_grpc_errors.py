"""What a gRPC error carries stays under a client's metadata limit (8 KiB in all), or
the client sees RESOURCE_EXHAUSTED instead of the error."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import grpc
import pytest

from services.gateway.grpc_api import (
    DETAILS_LIMIT,
    MESSAGE_LIMIT,
    Api,
    bounded_details,
    bounded_message,
)


def test_a_long_message_is_cut_whole_characters_and_said_cut() -> None:
    assert bounded_message("the name 'a.png' is taken") == "the name 'a.png' is taken"
    # A name of 300 four-byte characters, as a refusal may quote it.
    long = f"the name {'😀' * 300!r} contains control characters"
    cut = bounded_message(long)
    assert cut.endswith("…") and long.startswith(cut[:-1])
    assert len(cut.encode()) <= MESSAGE_LIMIT
    # As grpc-message carries it, with the largest details: under 8 KiB.
    encoded = urllib.parse.quote(cut.encode(), safe="")
    details = bounded_details({"refused": [{"name": "x" * 250}] * 100})
    assert len(encoded) + len(details) < 8 * 1024
    assert len(details) <= DETAILS_LIMIT and json.loads(details)["truncated"] is True


def test_a_lone_surrogate_in_a_message_is_replaced_not_an_error() -> None:
    assert bounded_message("bad \udcff name") == "bad ? name"


async def test_a_refusal_for_now_says_when_to_come_back() -> None:
    """A 429 (a caller's transfers at their cap) or a 503 carries Retry-After over HTTP;
    over gRPC it was only `retry` in the details: now `retry-after` in the trailing
    metadata too."""

    class Aborted(Exception):
        pass

    class Context:
        async def abort(self, code: Any, message: str, trailing: Any) -> None:
            raise Aborted(code, message, dict(trailing))

    with pytest.raises(Aborted) as aborted:
        await Api.refuse(
            Context(),  # type: ignore[arg-type]
            429,
            "too_many_transfers",
            "you have 32 uploads and downloads under way",
            {"limit": 32, "retry": True},
            {"retry-after": "1", "content-type": "application/json"},
        )
    code, _, trailing = aborted.value.args
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailing["retry-after"] == "1"
    assert "content-type" not in trailing
