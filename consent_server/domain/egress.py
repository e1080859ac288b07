"""Which network destinations the service may call: the outbound (egress) policy.

Pure values, no I/O. A tenant configures where its messages are delivered; without a
guard that is a way to make the service call loopback, the private network or a cloud
metadata endpoint and read the answer back. So by default only globally routable
unicast addresses are allowed. The operator (never a tenant) may allow named hosts,
addresses and networks with ``CONSENT_EGRESS_ALLOW`` for tests and on-prem relays.

The connect-time guard (``consent_server.egress``) checks every address a name resolves
to, right before it connects to that same address; ``literal_refusal`` is the early,
friendlier check at configuration time for destinations that are internal as written.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_ENV = "CONSENT_EGRESS_ALLOW"

_HOST_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
# Names that mean "this machine" or "the local network" wherever they are resolved.
_INTERNAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def normal_host(host: str) -> str:
    """A host as compared: lower case, without brackets or a trailing dot."""
    return host.strip().strip("[]").rstrip(".").lower()


def _inet_aton_part(text: str) -> int | None:
    """One part of an inet_aton address: decimal, 0x hex or 0-prefixed octal."""
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16) if text[2:] else 0
        if len(text) > 1 and text.startswith("0"):
            return int(text[1:], 8)
        return int(text, 10)
    except ValueError:
        return None


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address the C resolver reads in ``text``: ``2130706433``,
    ``0x7f.1``, ``0177.0.0.1`` and other legacy forms all mean 127.0.0.1."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or any(not p or not p.isalnum() for p in parts):
        return None
    values = [_inet_aton_part(p) for p in parts]
    if any(v is None for v in values):
        return None
    nums = [v for v in values if v is not None]
    *head, last = nums
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(nums)):
        return None
    value = 0
    for v in head:
        value = value * 256 + v
    value = value * 256 ** (5 - len(nums)) + last
    return ipaddress.IPv4Address(value)


def literal_ip(host: str) -> IPAddress | None:
    """The IP address ``host`` is written as (any encoding the resolver accepts), or None
    when it is a name."""
    text = normal_host(host)
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if "%" in text:  # an IPv6 zone id: the address without it decides
        try:
            return ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return None
    return _inet_aton(text)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    # IPv4-compatible (::a.b.c.d, deprecated) still routes to a.b.c.d on some stacks.
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))
    return None


def address_class(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public destination ("loopback", "private", ...), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            found = address_class(inner)
            return f"{found}, embedded in IPv6" if found else None
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "shared (CGNAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    for hit, name in checks:
        if hit:
            return name
    return None


def is_internal_name(host: str) -> bool:
    """True for names that mean this machine or the local network (``localhost``, ``*.local``)."""
    name = normal_host(host)
    return name in _INTERNAL_NAMES or name.endswith(_INTERNAL_SUFFIXES)


@dataclass(frozen=True, slots=True)
class AllowRule:
    """One operator allowance: a host name, or an address/network; ``port`` None = any."""

    host: str = ""
    network: IPNetwork | None = None
    port: int | None = None

    def __str__(self) -> str:
        where = self.host or str(self.network)
        if self.port is None:
            return where
        return f"[{where}]:{self.port}" if ":" in where else f"{where}:{self.port}"


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{entry!r}: the port must be 1-65535")
    return int(text)


def parse_rule(entry: str) -> AllowRule:
    """One ``CONSENT_EGRESS_ALLOW`` entry: ``host``, ``host:port``, ``10.0.0.5``,
    ``10.0.0.5:8080``, ``10.0.0.0/8``, ``[::1]``, ``[::1]:8080`` or ``fd00::/8``.
    Raises ValueError naming the entry."""
    text = entry.strip()
    port: int | None = None
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r}: expected [IPv6] or [IPv6]:port")
        if rest:
            port = _port(entry, rest[1:])
        text = inside
    elif text.count(":") == 1:
        text, _, port_text = text.partition(":")
        port = _port(entry, port_text)
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        network = None
    if network is not None:
        if "/" in text and port is not None:
            raise ValueError(f"{entry!r}: a network takes no port")
        return AllowRule(network=network, port=port)
    host = normal_host(text)
    if "/" in text or ":" in text or not _HOST_RE.match(host) or literal_ip(host) is not None:
        raise ValueError(
            f"{entry!r}: expected a host name, an IP address or a network (CIDR), "
            "optionally with :port"
        )
    return AllowRule(host=host, port=port)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Public unicast destinations only, plus what the operator allowed (``rules``)."""

    rules: tuple[AllowRule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EgressPolicy:
        """The policy of a comma-separated ``CONSENT_EGRESS_ALLOW`` value (ValueError)."""
        entries = [e for e in (part.strip() for part in text.split(",")) if e]
        return cls(tuple(parse_rule(e) for e in entries))

    def names_host(self, host: str, port: int) -> bool:
        """True when an allowance names ``host`` itself (then it may resolve anywhere)."""
        name = normal_host(host)
        return any(r.host == name and r.port in (None, port) for r in self.rules)

    def allows_address(self, ip: IPAddress, port: int) -> bool:
        """True when an allowed address or network holds ``ip``."""
        for rule in self.rules:
            if rule.network is None or rule.port not in (None, port):
                continue
            if ip.version == rule.network.version and ip in rule.network:
                return True
        return False

    def address_refusal(self, host: str, ip: IPAddress, port: int) -> str | None:
        """Why connecting to ``ip`` (an answer for ``host``) is refused, or None."""
        if self.names_host(host, port) or self.allows_address(ip, port):
            return None
        found = address_class(ip)
        if found is None:
            return None
        return f"{ip} is a {found} address"

    def operator_allowed(self, host: str, port: int) -> bool:
        """True when the operator allowed this destination as written (a named host, or
        an address inside an allowed network)."""
        if self.names_host(host, port):
            return True
        ip = literal_ip(host)
        return ip is not None and self.allows_address(ip, port)

    def literal_refusal(self, host: str, port: int) -> str | None:
        """Why a destination is internal as written (an internal IP literal in any
        encoding, or ``localhost``-like names), or None. Names that merely resolve to an
        internal address are caught at connect time."""
        if self.operator_allowed(host, port):
            return None
        ip = literal_ip(host)
        if ip is not None:
            return self.address_refusal(host, ip, port)
        if is_internal_name(host):
            return f"{normal_host(host)} names an internal host"
        return None
