"""Network guard (SPEC 2.3): which addresses a download may connect to.

The check runs on the address curl is about to connect to (its
OPENSOCKETFUNCTION), not on the URL's text, so every spelling of an address,
every redirect and every DNS answer, rebinding included, goes through it; and
again on the address of the connection a request is about to be sent on (its
PREREQFUNCTION), so a download can never ride a kept-alive connection that
was opened without the guard (an upload's to an internal ``api_url``): downloads
and uploads share one curl client and its pool of connections.
Addresses are judged by the package's own table of the IANA special-purpose
registries (special_addresses.py), never by ``ipaddress``'s version-dependent
``is_global``, and by the list of this host's own addresses (local_addresses.py).
"""

import ipaddress
import socket
from typing import Any, Callable, Container, List, Optional, Union

import pycurl

from . import local_addresses, special_addresses

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

OWN_ADDRESS = "this host's own address"

if not hasattr(pycurl, "PREREQFUNCTION"):  # pragma: no cover - an old pycurl or libcurl
    raise ImportError("imgurd needs pycurl >= 7.45.7 on libcurl >= 7.80 (CURLOPT_PREREQFUNCTION)")


def classify(address: Union[str, Address], own: Container[Address] = ()) -> Optional[str]:
    """Why ``address`` must not be connected to (a short category), or None if it is public.

    ``own``: this host's addresses (refused whatever they are).
    """
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    verdict = special_addresses.classify(ip)
    if verdict is None and local_addresses.owned(ip, own):
        return OWN_ADDRESS
    return verdict


class SocketGuard:
    """A per-request curl OPENSOCKETFUNCTION that refuses forbidden addresses.

    It remembers what it refused so the failure reason can name it instead of
    curl's generic "couldn't connect".
    """

    __slots__ = ("refused", "own")

    def __init__(self, own: Container[Address] = ()) -> None:
        self.refused: List[str] = []
        self.own = own

    def __call__(self, purpose: int, address: Any) -> Any:
        family, socktype, protocol, sockaddr = address
        host = sockaddr[0] if isinstance(sockaddr, tuple) else str(sockaddr)
        if family not in (socket.AF_INET, socket.AF_INET6):
            self.refused.append("%s (not an IP socket; allow_private_networks is off)" % host)
            return pycurl.SOCKET_BAD
        if self._refuses(host):
            return pycurl.SOCKET_BAD
        try:
            return socket.socket(family, socktype, protocol)
        except OSError:  # out of descriptors, say: curl reports "couldn't connect", a retryable failure
            return pycurl.SOCKET_BAD

    def before_request(self, primary_ip: str, local_ip: str, primary_port: int, local_port: int) -> int:
        """PREREQFUNCTION: the connection a request goes out on, new or reused, is vetted too."""
        return pycurl.PREREQFUNC_ABORT if self._refuses(primary_ip) else pycurl.PREREQFUNC_OK

    def _refuses(self, host: str) -> bool:
        verdict = classify(host, self.own)
        if verdict is None:
            return False
        self.refused.append("%s (%s; allow_private_networks is off)" % (host, verdict))
        return True

    def install(self, curl: pycurl.Curl) -> None:
        curl.setopt(pycurl.OPENSOCKETFUNCTION, self)
        curl.setopt(pycurl.PREREQFUNCTION, self.before_request)

    @property
    def reason(self) -> Optional[str]:
        if not self.refused:
            return None
        return "address not allowed: %s" % self.refused[-1]


def prepare(allow_private: bool) -> Callable[[], Optional[SocketGuard]]:
    """A factory of guards (sharing one list of this host's addresses), or of None when private
    networks are allowed."""
    if allow_private:
        return lambda: None
    own = local_addresses.LocalAddresses()
    return lambda: SocketGuard(own)
