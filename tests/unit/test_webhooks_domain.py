"""Webhooks' rules: the registration body, the secret, the signature and the backoff."""

from __future__ import annotations

import pytest

from services.ingest.webhooks import domain
from shared.kit.errors import Refused


def test_the_signature_is_the_standard_webhooks_one() -> None:
    # The example of the Standard Webhooks spec's reference libraries.
    found = domain.signature(
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert found == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_rotated_secret_signs_beside_the_one_before() -> None:
    """While the secret before still signs, the header carries both signatures,
    space-delimited as the spec has it, the new secret's first."""
    new = domain.new_secret()
    old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    args = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    both = domain.signature([new, old], *args)
    assert (
        both == f"{domain.signature([new], *args)} v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


@pytest.mark.parametrize(
    ("body", "secret", "keep"),
    [
        (None, None, domain.KEEP_PREVIOUS_S),
        ({}, None, domain.KEEP_PREVIOUS_S),
        ({"keep_previous_for_s": 0}, None, 0.0),
        (
            {"keep_previous_for_s": 604800, "secret": "whsec_" + "QUFB" * 8},
            "whsec_" + "QUFB" * 8,
            604800.0,
        ),
    ],
)
def test_a_rotation_takes_a_secret_and_how_long_the_one_before_signs(
    body: object, secret: str | None, keep: float
) -> None:
    assert domain.parse_rotation(body) == domain.Rotation(secret, keep)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "invalid_body"),
        ({"secret": None, "url": "https://x.example"}, "invalid_body"),
        ({"secret": 5}, "invalid_secret"),
        ({"secret": "whsec_short"}, "invalid_secret"),
        ({"keep_previous_for_s": -1}, "invalid_keep_previous"),
        ({"keep_previous_for_s": 604801}, "invalid_keep_previous"),
        ({"keep_previous_for_s": True}, "invalid_keep_previous"),
        ({"keep_previous_for_s": "1h"}, "invalid_keep_previous"),
    ],
)
def test_a_rotation_refuses_what_it_cannot_take(body: object, code: str) -> None:
    with pytest.raises(Refused) as refused:
        domain.parse_rotation(body)
    assert (refused.value.status, refused.value.code) == (422, code)


def test_a_secret_made_is_of_the_spec_s_shape() -> None:
    secret = domain.new_secret()
    assert secret.startswith("whsec_")
    assert len(domain.secret_key(secret)) == 32
    assert domain.new_secret() != secret


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "invalid_body"),
        ({"url": "https://x.example/h", "events": ["file.uploaded"], "extra": 1}, "invalid_body"),
        ({"events": ["file.uploaded"]}, "invalid_url"),
        ({"url": "ftp://x.example/h", "events": ["file.uploaded"]}, "invalid_url"),
        ({"url": "https://u:p@x.example/h", "events": ["file.uploaded"]}, "invalid_url"),
        ({"url": "https://x.example:99999/h", "events": ["file.uploaded"]}, "invalid_url"),
        ({"url": "https://" + "x" * 2050, "events": ["file.uploaded"]}, "invalid_url"),
        ({"url": "https://x.example/h", "events": []}, "invalid_events"),
        ({"url": "https://x.example/h", "events": ["file.moved"]}, "invalid_events"),
        (
            {"url": "https://x.example/h", "events": ["file.uploaded"], "secret": 3},
            "invalid_secret",
        ),
        (
            {"url": "https://x.example/h", "events": ["job.completed"], "secret": "s"},
            "invalid_secret",
        ),
        (
            {"url": "https://x.example/h", "events": ["job.completed"], "secret": "whsec_c2hvcnQ="},
            "invalid_secret",
        ),
    ],
)
def test_a_bad_registration_is_422_naming_what(body: object, code: str) -> None:
    with pytest.raises(Refused) as refused:
        domain.parse_registration(body)
    assert (refused.value.status, refused.value.code) == (422, code)
    assert refused.value.message


def test_a_registration_names_its_host_and_port() -> None:
    found = domain.parse_registration(
        {"url": "https://Hooks.Example/in?x=1", "events": ["file.deleted", "file.deleted"]}
    )
    assert (found.host, found.port, found.events, found.secret) == (
        "hooks.example",
        443,
        ("file.deleted",),
        None,
    )
    assert (
        domain.parse_registration({"url": "http://h:8080/", "events": ["job.completed"]}).port
        == 8080
    )


def test_the_backoff_doubles_up_to_an_hour() -> None:
    assert [domain.backoff_s(n, 5) for n in (1, 2, 3)] == [5, 10, 20]
    assert domain.backoff_s(30, 5) == domain.MAX_BACKOFF_S
