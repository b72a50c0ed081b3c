"""The addresses assigned to this host's own interfaces (SPEC 2.3), read without any dependency.

A public address of the host (or one of a container's) is no special-purpose address, yet a
download to it reaches every service of the host listening on 0.0.0.0, imgurd's own /metrics
included. On Linux the kernel's list is read over rtnetlink (RTM_GETADDR, what ``ip addr`` does):
every address of every interface, secondary ones included, both families, in well under a
millisecond (about 0.1 ms). Where rtnetlink cannot be read (not Linux), only the loopback
addresses are known, the guard relies on the special-purpose table alone, and a WARNING says so once.

The list is re-read at most once every ``REFRESH_SECONDS``, when a connection is checked: an
address added by DHCP or SLAAC is refused within a second, and an idle service reads nothing.
"""

import ipaddress
import logging
import socket
import struct
import time
from typing import Callable, Container, FrozenSet, List, Union

from . import special_addresses

log = logging.getLogger("imgurd.netguard")

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

REFRESH_SECONDS = 1.0
ALWAYS_LOCAL = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})

# rtnetlink (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
_NETLINK_ROUTE = 0
_RTM_GETADDR = 22
_RTM_NEWADDR = 20
_NLMSG_DONE = 3
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTATTR = struct.Struct("=HH")  # length, type


def _align(length: int) -> int:
    return (length + 3) & ~3


def parse_netlink(data: bytes) -> "tuple[List[Address], bool]":
    """The addresses in a buffer of RTM_NEWADDR messages, and whether the dump ended (NLMSG_DONE)."""
    found: List[Address] = []
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size or offset + length > len(data):
            break
        if kind == _NLMSG_DONE:
            return found, True
        if kind == _NLMSG_ERROR:
            raise OSError("netlink answered an error to RTM_GETADDR")
        if kind == _RTM_NEWADDR:
            body = offset + _NLMSG_HEADER.size
            family = data[body]
            size = 4 if family == socket.AF_INET else 16 if family == socket.AF_INET6 else 0
            attribute = body + _align(_IFADDRMSG.size)
            end = offset + length
            while size and attribute + _RTATTR.size <= end:
                attribute_length, attribute_type = _RTATTR.unpack_from(data, attribute)
                if attribute_length < _RTATTR.size:
                    break
                value = data[attribute + _RTATTR.size:attribute + attribute_length]
                if attribute_type in (_IFA_ADDRESS, _IFA_LOCAL) and len(value) == size:
                    found.append(ipaddress.ip_address(bytes(value)))
                attribute += _align(attribute_length)
        offset += _align(length)
    return found, False


def read_netlink() -> FrozenSet[Address]:
    """Every address of every interface, from the kernel (Linux)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE) as sock:
        sock.settimeout(1.0)
        sock.bind((0, 0))
        request = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + _IFADDRMSG.size, _RTM_GETADDR,
                                     _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.sendto(request, (0, 0))
        found: List[Address] = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            addresses, done = parse_netlink(chunk)
            found.extend(addresses)
            if done:
                break
    return frozenset(found)


_warned = []  # a failed read is reported once, not at every refresh


def read() -> FrozenSet[Address]:
    """This host's addresses; at least the loopback ones when the kernel's list cannot be read."""
    if hasattr(socket, "AF_NETLINK"):
        try:
            return read_netlink() | ALWAYS_LOCAL
        except OSError as error:
            why = str(error)
    else:
        why = "no rtnetlink on this system"
    if not _warned:
        _warned.append(why)
        log.warning("cannot read this host's own addresses (%s): beyond loopback, only special-purpose "
                    "addresses are refused", why)
    return ALWAYS_LOCAL


class LocalAddresses:
    """This host's addresses, re-read at most every ``REFRESH_SECONDS`` when asked about."""

    def __init__(self, reader: Callable[[], FrozenSet[Address]] = read,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self.clock = clock
        self.addresses: FrozenSet[Address] = reader()
        self.read_at = clock()

    def current(self) -> FrozenSet[Address]:
        now = self.clock()
        if now - self.read_at >= REFRESH_SECONDS:
            self.read_at = now
            self.addresses = self.reader()
        return self.addresses

    def __contains__(self, ip: Address) -> bool:
        return ip in self.current()


def owned(ip: Address, addresses: Container[Address]) -> bool:
    """Whether ``ip``, or the IPv4 address it stands for (IPv4-mapped or NAT64), is one of ``addresses``."""
    if ip.version == 6:
        if ip.scope_id:  # type: ignore[union-attr]
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = special_addresses.embedded_ipv4(ip)  # type: ignore[arg-type]
        if inner is not None:
            ip = inner
    return ip in addresses
