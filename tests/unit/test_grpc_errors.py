"""What a gRPC error carries stays under a client's metadata limit (8 KiB in all), or
the client sees RESOURCE_EXHAUSTED instead of the error."""

from __future__ import annotations

import json
import urllib.parse

from services.gateway.grpc_api import (
    DETAILS_LIMIT,
    MESSAGE_LIMIT,
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
