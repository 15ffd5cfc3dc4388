"""Integrations' endpoints, pure: the address rule, FILES_ALLOWED_ENDPOINTS, the caps on
what a bucket's answers may cost, and who may use an integration."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.ingest.imports.domain import integrations
from services.ingest.imports.domain.endpoints import EndpointRule, address_kind, parse_allowance
from services.ingest.imports.egress import (
    MIN_RATE,
    Budget,
    CapReached,
    Caps,
    Egress,
    EndpointNotAllowed,
    ListingBudget,
)
from shared.kit.access import Access
from shared.kit.errors import Refused

NOTHING_ALLOWED = EndpointRule()


def plain(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# -- the address rule ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "reserved"),
        ("198.51.100.1", "reserved"),
        ("203.0.113.9", "reserved"),
        ("198.18.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("2001:db8::1", "reserved"),
        ("2001::1", "reserved"),  # Teredo
        ("100::1", "reserved"),
        ("fec0::1", "reserved"),
        ("4000::1", "reserved"),  # outside global unicast
        # IPv6 carrying an IPv4 address is judged by the IPv4 one.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),  # NAT64 of 169.254.169.254
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:a9fe:a9fe::1", "cloud metadata"),  # 6to4 of 169.254.169.254
        ("2002:c0a8:0101::1", "private"),
        ("::7f00:1", "loopback"),  # IPv4-compatible
        ("64:ff9b:1::1", "private"),
    ],
)
def test_every_refused_address_class(address: str, kind: str) -> None:
    found = ipaddress.ip_address(address)
    assert address_kind(found) == kind
    reason = NOTHING_ALLOWED.address_refusal("bucket.example", found, 443)
    assert reason == f"{plain(found)} is a {kind} address"


@pytest.mark.parametrize(
    "address",
    ["52.216.1.1", "8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1", "172.32.0.1",
     "2600:1f18::1", "2a00:1450:4001::1", "64:ff9b::808:808", "::ffff:52.216.1.1"],
)  # fmt: skip
def test_public_addresses_are_reached(address: str) -> None:
    found = ipaddress.ip_address(address)
    assert address_kind(found) is None
    assert NOTHING_ALLOWED.address_refusal("bucket.example", found, 443) is None


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_and_its_mapped_ipv6_form_are_judged_alike(
    address: ipaddress.IPv4Address,
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert address_kind(mapped) == address_kind(address)
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address))
    assert address_kind(nat64) == address_kind(address)


@given(st.ip_addresses())
@example(ipaddress.IPv6Address("2002:100::"))  # 6to4 of 1.0.0.0: public
@example(ipaddress.IPv6Address("2002:a00::"))  # 6to4 of 10.0.0.0: private
@example(ipaddress.IPv6Address("64:ff9b::7f00:1"))  # NAT64 of 127.0.0.1: loopback
def test_an_address_is_refused_exactly_when_it_is_not_public(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    """Whatever the address, the rule refuses it with a reason naming it, or lets it
    through; nothing that Python calls private, loopback, link-local, multicast or
    unspecified is let through. An IPv6 address that carries an IPv4 one (6to4, NAT64)
    reaches that one, so that one is what Python is asked about (its answer for 6to4's
    2002::/16 itself changed between 3.11 releases)."""
    reason = NOTHING_ALLOWED.address_refusal("bucket.example", address, 443)
    shown = plain(address)
    if reason is not None:
        assert reason.startswith(f"{shown} is a ")
    reached = shown
    if isinstance(address, ipaddress.IPv6Address):
        if address.sixtofour is not None:
            reached = address.sixtofour
        elif address in ipaddress.ip_network("64:ff9b::/96"):
            reached = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(
        (
            reached.is_loopback,
            reached.is_link_local,
            reached.is_multicast,
            reached.is_unspecified,
            reached.is_private and not reached.is_global,
        )
    ):
        assert reason is not None, shown


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("metadata.google.internal", "metadata.google.internal is a cloud metadata name"),
        ("METADATA.google.internal.", "metadata.google.internal is a cloud metadata name"),
        ("metadata", "metadata is a cloud metadata name"),
        ("instance-data.ec2.internal", "instance-data.ec2.internal is a cloud metadata name"),
    ],
)
def test_some_names_are_refused_before_they_are_resolved(host: str, reason: str) -> None:
    assert NOTHING_ALLOWED.name_refusal(host, 80) == reason
    assert NOTHING_ALLOWED.name_refusal("s3.eu-west-1.amazonaws.com", 443) is None
    # Other names are judged by the addresses they resolve to.
    assert NOTHING_ALLOWED.name_refusal("localhost", 9000) is None


# -- FILES_ALLOWED_ENDPOINTS ----------------------------------------------------------


@pytest.mark.parametrize(
    ("allowed", "host", "address", "port", "passes"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1", 9000, True),
        ("127.0.0.1", "127.0.0.2", "127.0.0.2", 9000, False),
        ("127.0.0.1", "localhost", "127.0.0.1", 9000, True),
        ("127.0.0.1", "minio", "::ffff:127.0.0.1", 9000, True),
        ("127.0.0.1", "minio", "::1", 9000, False),
        ("127.0.0.1:9000", "127.0.0.1", "127.0.0.1", 9000, True),
        ("127.0.0.1:9000", "127.0.0.1", "127.0.0.1", 9001, False),
        ("10.0.0.0/8", "minio.internal", "10.20.30.40", 443, True),
        ("10.0.0.0/8:9000", "minio.internal", "10.20.30.40", 443, False),
        ("10.0.0.0/8", "minio.internal", "192.168.0.1", 443, False),
        ("[::1]:9000", "::1", "::1", 9000, True),
        ("fd00::/8", "minio", "fd00::5", 443, True),
        ("minio.internal", "minio.internal", "10.1.1.1", 443, True),
        ("minio.internal", "MINIO.internal.", "10.1.1.1", 443, True),
        ("minio.internal", "other.internal", "10.1.1.1", 443, False),
        ("minio.internal:9000", "minio.internal", "10.1.1.1", 443, False),
        ("169.254.169.254", "169.254.169.254", "169.254.169.254", 80, True),
        (" 127.0.0.1 , 10.0.0.0/8 ", "x", "10.0.0.1", 80, True),
        ("", "x", "127.0.0.1", 80, False),
    ],
)
def test_the_operator_allows_addresses_networks_names_and_ports(
    allowed: str, host: str, address: str, port: int, passes: bool
) -> None:
    rule = EndpointRule.parse(allowed)
    reason = rule.address_refusal(host, ipaddress.ip_address(address), port)
    assert (reason is None) is passes, reason


def test_an_allowed_name_is_not_refused_before_it_is_resolved() -> None:
    rule = EndpointRule.parse("metadata.google.internal")
    assert rule.name_refusal("metadata.google.internal", 80) is None


@pytest.mark.parametrize("entry", ["127.0.0.1:x", "10.0.0.0/33", "[::1]9000", "not a name!", "a:0"])
def test_a_malformed_allowance_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match="is"):
        parse_allowance(entry)


# -- resolved once, dialled as checked -------------------------------------------------


def resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        resolve.calls += 1  # type: ignore[attr-defined]
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port),
            )
            for a in addresses
        ]

    resolve.calls = 0  # type: ignore[attr-defined]
    return resolve


def test_a_name_resolving_to_a_refused_address_is_refused_naming_it() -> None:
    egress = Egress(NOTHING_ALLOWED, resolver("169.254.169.254"))
    with pytest.raises(EndpointNotAllowed) as caught:
        egress.addresses("evil.example", 80)
    assert caught.value.address == "169.254.169.254"
    assert caught.value.reason == "169.254.169.254 is a cloud metadata address"


def test_only_the_addresses_that_pass_are_dialled() -> None:
    resolve = resolver("10.0.0.1", "52.216.1.1", "::1")
    found = Egress(NOTHING_ALLOWED, resolve).addresses("mixed.example", 443)
    assert [sockaddr[0] for _, sockaddr in found] == ["52.216.1.1"]
    assert resolve.calls == 1


def test_a_metadata_name_is_not_even_resolved() -> None:
    resolve = resolver("52.216.1.1")
    with pytest.raises(EndpointNotAllowed):
        Egress(NOTHING_ALLOWED, resolve).addresses("metadata.google.internal", 80)
    assert resolve.calls == 0


def test_the_socket_is_connected_to_the_address_checked() -> None:
    """A name resolved to an allowed address is dialled at that address: the listener
    behind it answers, whatever the name would resolve to next."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        port = listener.getsockname()[1]
        egress = Egress(EndpointRule.parse(f"127.0.0.1:{port}"), resolver("127.0.0.1"))
        with egress.connect("rebinding.example", port, 2.0) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)
        with pytest.raises(EndpointNotAllowed):
            Egress(NOTHING_ALLOWED, resolver("127.0.0.1")).connect("x.example", port, 2.0)
    finally:
        listener.close()


# -- caps ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_body_past_its_bytes_is_response_too_large() -> None:
    budget = Budget("an error", 100, 10.0, clock=Clock())
    budget.take(60)
    with pytest.raises(CapReached) as caught:
        budget.take(60)
    assert caught.value.code == "response_too_large"
    with pytest.raises(CapReached):
        Budget("an error", 100, 10.0).declared(10**9)


def test_a_body_that_trickles_is_response_timeout_and_a_fast_one_may_take_longer() -> None:
    clock = Clock()
    budget = Budget("object 'a'", None, 10.0, clock=clock)
    clock.now += 9
    assert budget.left() == pytest.approx(1.0)
    budget.take(MIN_RATE * 5)  # arriving at a fair rate: five more seconds
    clock.now += 5
    assert budget.left() == pytest.approx(1.0)
    clock.now += 1
    with pytest.raises(CapReached) as caught:
        budget.left()
    assert caught.value.code == "response_timeout"


def test_a_listing_ends_past_its_pages_its_time_or_a_token_seen_before() -> None:
    clock = Clock()
    caps = Caps(response_s=5, listing_s=8, listing_pages=3)

    pages = ListingBudget(caps, "the listing", clock)
    for token in ("a", "b", "c"):
        pages.page()
        pages.done(token)
    with pytest.raises(CapReached) as caught:
        pages.page()
    assert caught.value.code == "listing_too_large"

    looping = ListingBudget(caps, "the listing", clock)
    looping.page()
    looping.done("same")
    looping.page()
    with pytest.raises(CapReached) as caught:
        looping.done("same")
    assert caught.value.code == "listing_loop"

    slow = ListingBudget(caps, "the listing", clock)
    page = slow.page()
    clock.now += 4
    slow.done("a")
    clock.now += 100  # waiting on the reads does not count
    page = slow.page()
    clock.now += 4.5
    with pytest.raises(CapReached) as caught:
        page.left()  # the listing's 8 s are spent before the page's 5 s
    assert caught.value.code == "listing_timeout"


# -- who may use an integration ---------------------------------------------------------

ADMIN = Access(user_id=str(uuid.uuid4()), org_admin=True)
ALICE = Access(user_id=str(uuid.uuid4()))
BOB = Access(user_id=str(uuid.uuid4()))


def test_org_admins_and_the_users_it_is_shared_with_use_an_integration() -> None:
    shared = [ALICE.user_id]
    ident = uuid.uuid4()
    integrations.require_use(ADMIN, ident, [])
    integrations.require_use(ALICE, ident, shared)
    with pytest.raises(Refused) as caught:
        integrations.require_use(BOB, ident, shared)
    assert caught.value.status == 404
    with pytest.raises(Refused) as caught:
        integrations.require_use(ADMIN, ident, None)  # no such integration
    assert caught.value.status == 404
    integrations.require_admin(ADMIN, ident, shared)
    with pytest.raises(Refused) as caught:
        integrations.require_admin(ALICE, ident, shared)
    assert (caught.value.status, caught.value.details) == (403, {"role_needed": "org admin"})
    with pytest.raises(Refused) as caught:
        integrations.require_admin(BOB, ident, shared)
    assert caught.value.status == 404


def test_sharing_names_users_once_and_is_bounded() -> None:
    one, two = uuid.uuid4(), uuid.uuid4()
    given = {"shared_with": [str(one), str(two), str(one).upper()]}
    assert integrations.parse_sharing(given) == [one, two]
    assert integrations.parse_sharing({"shared_with": []}) == []
    for body, field in [
        ({}, "shared_with"),
        ({"shared_with": "x"}, "shared_with"),
        ({"shared_with": [str(one), 5]}, "shared_with[1]"),
        ({"shared_with": ["nobody"]}, "shared_with[0]"),
        ({"shared_with": [], "name": "x"}, "name"),
        ({"shared_with": [str(uuid.uuid4()) for _ in range(1001)]}, "shared_with"),
    ]:
        with pytest.raises(Refused) as caught:
            integrations.parse_sharing(body)
        assert caught.value.status == 422
        assert caught.value.details["fields"][0]["field"] == field
    (change,) = integrations.share(uuid.uuid4(), 3, [one])
    assert change.version == 4 and change.event.shared_with == [one]  # type: ignore[attr-defined]
