"""The IANA special-purpose address registries, as a table kept in the package (SPEC 2.3).

Python's ``ipaddress`` answers ``is_global``/``is_private`` from tables that differ between
versions (3.9-3.12 count most of 192.0.0.0/24 as global; 3fff::/20 is global on all of them),
so the guard never asks it: every address is looked up here, the same on every interpreter.

Sources: the IANA IPv4 and IPv6 Special-Purpose Address Registries (as of 2025-10), plus, from
the address-space registries, multicast (224.0.0.0/4, ff00::/8), the deprecated IPv6 site-local
and IPv4-compatible blocks, and everything outside IPv6 global unicast (2000::/3), which IANA
holds "reserved by IETF". Every entry is refused, including the few the registry marks globally
reachable (anycast services such as AS112, AMT, PCP, TURN): none of them serves images.

Two blocks are translations of IPv4 addresses, and an address in them is judged by the IPv4
address it carries: ``::ffff:0:0/96`` (IPv4-mapped, which the kernel connects to as IPv4) and
``64:ff9b::/96`` (NAT64, how IPv6-only hosts reach IPv4 sites).
"""

import ipaddress
from typing import List, NamedTuple, Optional, Tuple, Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class Block(NamedTuple):
    prefix: str
    category: str  # the short reason shown in a refusal: "address not allowed: 10.1.2.3 (private)"
    name: str  # the registry's name of the block
    source: str  # the RFC (or registry) that assigned it


def _parse(table: str) -> Tuple[Block, ...]:
    """The blocks of a table written one a line, ``prefix | category | name | source``, as the
    registries list them; blank lines and ``#`` comments are skipped."""
    rows = [line.strip() for line in table.splitlines()]
    return tuple(Block(*(cell.strip() for cell in row.split("|"))) for row in rows if row and row[0] != "#")


IPV4_BLOCKS: Tuple[Block, ...] = _parse("""
0.0.0.0/8          | this network             | "This network"                            | RFC 791
0.0.0.0/32         | unspecified              | "This host on this network"               | RFC 1122
10.0.0.0/8         | private                  | Private-Use                               | RFC 1918
100.64.0.0/10      | carrier-grade NAT        | Shared Address Space                      | RFC 6598
127.0.0.0/8        | loopback                 | Loopback                                  | RFC 1122
169.254.0.0/16     | link-local               | Link Local                                | RFC 3927
172.16.0.0/12      | private                  | Private-Use                               | RFC 1918
192.0.0.0/24       | IETF protocol assignment | IETF Protocol Assignments                 | RFC 6890
192.0.0.0/29       | IPv4 service continuity  | IPv4 Service Continuity Prefix            | RFC 7335
192.0.0.8/32       | dummy address            | IPv4 dummy address                        | RFC 7600
192.0.0.9/32       | PCP anycast              | Port Control Protocol Anycast             | RFC 7723
192.0.0.10/32      | TURN anycast             | Traversal Using Relays around NAT Anycast | RFC 8155
192.0.0.170/32     | NAT64 discovery          | NAT64/DNS64 Discovery                     | RFC 8880
192.0.0.171/32     | NAT64 discovery          | NAT64/DNS64 Discovery                     | RFC 8880
192.0.2.0/24       | documentation            | Documentation (TEST-NET-1)                | RFC 5737
192.31.196.0/24    | AS112                    | AS112-v4                                  | RFC 7535
192.52.193.0/24    | AMT                      | AMT                                       | RFC 7450
192.88.99.0/24     | 6to4 relay anycast       | Deprecated (6to4 Relay Anycast)           | RFC 7526
192.88.99.2/32     | 6a44 relay anycast       | 6a44-relay anycast address                | RFC 6751
192.168.0.0/16     | private                  | Private-Use                               | RFC 1918
192.175.48.0/24    | AS112                    | Direct Delegation AS112 Service           | RFC 7534
198.18.0.0/15      | benchmarking             | Benchmarking                              | RFC 2544
198.51.100.0/24    | documentation            | Documentation (TEST-NET-2)                | RFC 5737
203.0.113.0/24     | documentation            | Documentation (TEST-NET-3)                | RFC 5737
224.0.0.0/4        | multicast                | Multicast                                 | IPv4 Multicast Address Space registry
240.0.0.0/4        | reserved                 | Reserved                                  | RFC 1112
255.255.255.255/32 | limited broadcast        | Limited Broadcast                         | RFC 919
""")

IPV6_BLOCKS: Tuple[Block, ...] = _parse("""
::1/128           | loopback                     | Loopback Address                                   | RFC 4291
::/128            | unspecified                  | Unspecified Address                                | RFC 4291
::ffff:0:0/96     | IPv4-mapped                  | IPv4-mapped Address                                | RFC 4291
64:ff9b::/96      | NAT64                        | IPv4-IPv6 Translat.                                | RFC 6052
64:ff9b:1::/48    | local-use NAT64              | IPv4-IPv6 Translat.                                | RFC 8215
100::/64          | discard-only                 | Discard-Only Address Block                         | RFC 6666
100:0:0:1::/64    | dummy prefix                 | Dummy IPv6 Prefix                                  | RFC 9780
2001::/23         | IETF protocol assignment     | IETF Protocol Assignments                          | RFC 2928
2001::/32         | Teredo                       | TEREDO                                             | RFC 4380
2001:1::1/128     | PCP anycast                  | Port Control Protocol Anycast                      | RFC 7723
2001:1::2/128     | TURN anycast                 | Traversal Using Relays around NAT Anycast          | RFC 8155
2001:1::3/128     | DNS-SD SRP anycast           | DNS-SD Service Registration Protocol Anycast       | RFC 9665
2001:2::/48       | benchmarking                 | Benchmarking                                       | RFC 5180
2001:3::/32       | AMT                          | AMT                                                | RFC 7450
2001:4:112::/48   | AS112                        | AS112-v6                                           | RFC 7535
2001:10::/28      | ORCHID                       | Deprecated (previously ORCHID)                     | RFC 4843
2001:20::/28      | ORCHIDv2                     | ORCHIDv2                                           | RFC 7343
2001:30::/28      | drone remote ID              | Drone Remote ID Protocol Entity Tags (DETs) Prefix | RFC 9374
2001:db8::/32     | documentation                | Documentation                                      | RFC 3849
2002::/16         | 6to4                         | 6to4                                               | RFC 3056
2620:4f:8000::/48 | AS112                        | Direct Delegation AS112 Service                    | RFC 7534
3fff::/20         | documentation                | Documentation                                      | RFC 9637
5f00::/16         | SRv6 SID                     | Segment Routing (SRv6) SIDs                        | RFC 9602
fc00::/7          | unique-local                 | Unique-Local                                       | RFC 4193
fe80::/10         | link-local                   | Link-Local Unicast                                 | RFC 4291
# from the IPv6 address-space and multicast registries
::/96             | IPv4-compatible (deprecated) | IPv4-Compatible IPv6 Address                       | RFC 4291
fec0::/10         | site-local                   | Site-Local (deprecated)                            | RFC 3879
ff00::/8          | multicast                    | Multicast                                          | RFC 4291
""")

# IPv6 outside global unicast is "Reserved by IETF" in the IPv6 Address Space registry
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _compile(blocks: Tuple[Block, ...]) -> List[Tuple[int, int, int, Block]]:
    """(prefix length, mask, network as int, block), most specific first: the first match is the answer."""
    compiled = []
    for block in blocks:
        network = ipaddress.ip_network(block.prefix)
        compiled.append((network.prefixlen, int(network.netmask), int(network.network_address), block))
    compiled.sort(key=lambda entry: -entry[0])
    return compiled


_V4 = _compile(IPV4_BLOCKS)
_V6 = _compile(IPV6_BLOCKS)


def lookup(ip: Address) -> Optional[Block]:
    """The most specific block of the table holding ``ip``, or None."""
    value = int(ip)
    for _, mask, network, block in (_V4 if ip.version == 4 else _V6):
        if value & mask == network:
            return block
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> Optional[ipaddress.IPv4Address]:
    """The IPv4 address an IPv4-mapped or NAT64 (64:ff9b::/96) address stands for, else None."""
    if ip in _MAPPED or ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def classify(ip: Address) -> Optional[str]:
    """Why ``ip`` is not a public unicast address (a short category), or None when it is one."""
    if ip.version == 6:
        if ip.scope_id:  # type: ignore[union-attr]
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = embedded_ipv4(ip)  # type: ignore[arg-type]
        if inner is not None:
            verdict = classify(inner)
            kind = "IPv4-mapped" if ip in _MAPPED else "NAT64"
            return verdict and "%s %s" % (kind, verdict)
    block = lookup(ip)
    if block is not None:
        return block.category
    if ip.version == 6 and ip not in _GLOBAL_UNICAST:
        return "reserved"
    return None
