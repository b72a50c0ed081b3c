"""Network guard (SPEC 2.3): which addresses a download may connect to.

The check runs on the address curl is about to connect to (its
OPENSOCKETFUNCTION), not on the URL's text, so every spelling of an address,
every redirect and every DNS answer, rebinding included, goes through it.
"""

import ipaddress
import socket
from typing import Any, Callable, List, Optional, Union

import pycurl

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def classify(address: Union[str, Address]) -> Optional[str]:
    """Why ``address`` must not be connected to (a short category), or None if it is public."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        embedded = ip.ipv4_mapped or (ip in _NAT64 and ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)) or None
        if embedded is not None:
            inner = classify(embedded)
            return inner and "IPv4-mapped " + inner
        if ip.sixtofour is not None:
            inner = classify(ip.sixtofour)
            return inner and "6to4 " + inner
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"
    return None


class SocketGuard:
    """A per-request curl OPENSOCKETFUNCTION that refuses forbidden addresses.

    It remembers what it refused so the failure reason can name it instead of
    curl's generic "couldn't connect".
    """

    __slots__ = ("refused",)

    def __init__(self) -> None:
        self.refused: List[str] = []

    def __call__(self, purpose: int, address: Any) -> Any:
        family, socktype, protocol, sockaddr = address
        host = sockaddr[0] if isinstance(sockaddr, tuple) else str(sockaddr)
        verdict = classify(host) if family in (socket.AF_INET, socket.AF_INET6) else "not an IP socket"
        if verdict is not None:
            self.refused.append("%s (%s; allow_private_networks is off)" % (host, verdict))
            return pycurl.SOCKET_BAD
        return socket.socket(family, socktype, protocol)

    def install(self, curl: pycurl.Curl) -> None:
        curl.setopt(pycurl.OPENSOCKETFUNCTION, self)

    @property
    def reason(self) -> Optional[str]:
        if not self.refused:
            return None
        return "address not allowed: %s" % self.refused[-1]


def prepare(allow_private: bool) -> Callable[[], Optional[SocketGuard]]:
    """A factory of guards, or of None when private networks are allowed."""
    if allow_private:
        return lambda: None
    return SocketGuard
