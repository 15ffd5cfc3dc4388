"""The JSON the gateway sends a service: what orjson will not encode still goes on (the
standard library's), and what neither encodes is the caller's 422, never a 500."""

from __future__ import annotations

import json

import pytest

from services.gateway.edge import json_body
from shared.kit.errors import Refused


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_a_body_deeper_than_orjson_goes_is_encoded_all_the_same() -> None:
    assert json.loads(json_body({"extra": nested(300)})) == {"extra": nested(300)}
    assert json_body({"ids": ["a", "b"]}) == b'{"ids":["a","b"]}'


def test_a_body_no_encoder_takes_is_refused_as_the_callers() -> None:
    with pytest.raises(Refused) as refused:
        json_body(nested(5000))
    assert (refused.value.status, refused.value.code) == (422, "invalid_request")
