"""Which addresses an integration's endpoint may reach, pure: the address rule.

A customer names the endpoint of their bucket; ingest then connects to it from inside
our network. Without a rule, `http://169.254.169.254` (a cloud's metadata service, with
the machine's credentials), `http://127.0.0.1:5432` or any private address would be
read on the customer's behalf. So an address is refused when it is loopback,
link-local, private (RFC 1918, unique local), carrier-grade NAT, multicast,
unspecified, reserved (documentation, benchmarking, protocol assignments, anything
outside IPv6's global unicast block) or a known cloud metadata address, and an IPv6
address that carries an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by the
IPv4 address it carries. Cloud metadata names are refused before they are resolved.

The operator lets some through with FILES_ALLOWED_ENDPOINTS: comma- or space-separated
entries, each an address or CIDR (`127.0.0.1`, `10.0.0.0/8`, `[fd00::1]`), a host name
(`minio.internal`: whatever it resolves to), any of them with a port (`127.0.0.1:9000`,
`[::1]:9000`, `10.0.0.0/8:9000`, `minio.internal:9000`) to allow that port only.

The tables are explicit rather than `ipaddress`'s `is_private`/`is_global`, whose
answers changed between Python releases.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _table(rows: Iterable[tuple[str, str]]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in rows)


# First match wins: the metadata addresses before the blocks that hold them.
REFUSED_V4 = _table(
    [
        ("169.254.169.254/32", "cloud metadata"),  # AWS, GCP, Azure, Oracle, OpenStack
        ("169.254.170.2/32", "cloud metadata"),  # AWS ECS task metadata
        ("100.100.100.200/32", "cloud metadata"),  # Alibaba Cloud
        ("192.0.0.192/32", "cloud metadata"),  # Oracle Cloud (legacy)
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
        ("192.0.2.0/24", "reserved"),  # documentation
        ("192.88.99.0/24", "reserved"),  # 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),  # benchmarking
        ("198.51.100.0/24", "reserved"),  # documentation
        ("203.0.113.0/24", "reserved"),  # documentation
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # future use, and the broadcast address
    ]
)
REFUSED_V6 = _table(
    [
        ("fd00:ec2::254/128", "cloud metadata"),  # AWS (IPv6)
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private"),  # local-use NAT64
        ("100::/64", "reserved"),  # discard-only
        ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo, benchmarking, ...)
        ("2001:db8::/32", "reserved"),  # documentation
        ("3fff::/20", "reserved"),  # documentation
        ("fc00::/7", "private"),  # unique local
        ("fe80::/10", "link-local"),
        ("fec0::/10", "reserved"),  # site-local, deprecated
        ("ff00::/8", "multicast"),
    ]
)
# Where public IPv6 unicast addresses live; anything else is reserved.
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
COMPATIBLE = ipaddress.ip_network("::/96")
# Names refused before they are resolved: metadata services answer on them inside
# the clouds (and a resolver may map them anywhere).
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


def carried_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64 or (address in COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_kind(address: Address) -> str | None:
    """Why an address may not be reached ("loopback", "private", "cloud metadata", ...),
    or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = carried_v4(address)
        if carried is not None:
            return address_kind(carried)
        for network, kind in REFUSED_V6:
            if address in network:
                return kind
        return None if address in GLOBAL_UNICAST_V6 else "reserved"
    for network, kind in REFUSED_V4:
        if address in network:
            return kind
    return None


def describe(address: Address, kind: str) -> str:
    return f"{address} is a {kind} address"


def normal_host(host: str) -> str:
    """A host as written in a URL, compared: lower case, no brackets, no final dot."""
    return host.strip().strip("[]").rstrip(".").lower()


def as_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(normal_host(host))
    except ValueError:
        return None


@dataclass(frozen=True)
class Allowance:
    """One entry of FILES_ALLOWED_ENDPOINTS: a network or a host name, on one port or any."""

    network: Network | None
    name: str | None
    port: int | None

    def admits(self, host: str, address: Address | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.name is not None:
            return normal_host(host) == self.name
        assert self.network is not None
        return (
            address is not None
            and address.version == self.network.version
            and (address in self.network)
        )


def _port(text: str, entry: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r}: {text!r} is not a port")
    return int(text)


def parse_allowance(entry: str) -> Allowance:
    """One entry, or ValueError naming it."""
    text, port = entry.strip(), None
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r} is not written [address]:port")
            port = _port(rest[1:], entry)
        text = inner
    elif text.count(":") == 1:
        text, _, given = text.partition(":")
        port = _port(given, entry)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        name = normal_host(text)
        if not _NAME.match(name):
            raise ValueError(
                f"{entry!r} is neither an address, a CIDR nor a host name"
                " (an IPv6 address with a port is written [address]:port)"
            ) from None
        return Allowance(None, name, port)
    return Allowance(network, None, port)


@dataclass(frozen=True)
class EndpointRule:
    """The address rule with the operator's exceptions."""

    allowances: tuple[Allowance, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EndpointRule:
        """FILES_ALLOWED_ENDPOINTS, or ValueError naming the entry at fault."""
        entries = [e for e in re.split(r"[,\s]+", text) if e]
        return cls(tuple(parse_allowance(e) for e in entries))

    def allowed(self, host: str, address: Address | None, port: int) -> bool:
        return any(a.admits(host, address, port) for a in self.allowances)

    def name_refusal(self, host: str, port: int) -> str | None:
        """Why a host name is refused before it is resolved, or None (then each address
        it resolves to is judged by `address_refusal`)."""
        name = normal_host(host)
        if as_address(name) is not None or self.allowed(name, None, port):
            return None
        if name in METADATA_NAMES:
            return f"{name} is a cloud metadata name"
        return None

    def address_refusal(self, host: str, address: Address, port: int) -> str | None:
        """Why `address` (what `host` resolved to) may not be dialled on `port`, or None."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.allowed(host, address, port):
            return None
        refused = self.name_refusal(host, port)
        if refused is not None:
            return refused
        kind = address_kind(address)
        return None if kind is None else describe(address, kind)
