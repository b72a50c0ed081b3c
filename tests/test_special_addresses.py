"""The guard's address table (SPEC 2.3): one test per entry of the IANA special-purpose registries.

Pure classification: every address here is only handed to classify(), never connected to. The
expectations are written out by hand from the registries, not derived from the package's table.
"""

import ipaddress

import pytest

from imgurd import local_addresses, special_addresses
from imgurd.netguard import OWN_ADDRESS, classify


def registry(text):
    """Rows of ``registry entry | addresses inside it that no more specific entry holds | expected verdict``,
    as (prefix, [addresses], verdict); a verdict "-" means: judged by the IPv4 address it embeds (below)."""
    rows = []
    for line in text.strip().splitlines():
        prefix, addresses, verdict = (part.strip() for part in line.split("|"))
        rows.append((prefix, addresses.split(), None if verdict == "-" else verdict))
    return rows


IPV4_REGISTRY = registry("""
0.0.0.0/8          | 0.0.0.1 0.255.255.255                                      | this network
0.0.0.0/32         | 0.0.0.0                                                    | unspecified
10.0.0.0/8         | 10.0.0.0 10.255.255.255                                    | private
100.64.0.0/10      | 100.64.0.0 100.127.255.255                                 | carrier-grade NAT
127.0.0.0/8        | 127.0.0.0 127.255.255.255                                  | loopback
169.254.0.0/16     | 169.254.0.0 169.254.169.254 169.254.255.255                | link-local
172.16.0.0/12      | 172.16.0.0 172.31.255.255                                  | private
192.0.0.0/24       | 192.0.0.11 192.0.0.100 192.0.0.169 192.0.0.172 192.0.0.255 | IETF protocol assignment
192.0.0.0/29       | 192.0.0.0 192.0.0.7                                        | IPv4 service continuity
192.0.0.8/32       | 192.0.0.8                                                  | dummy address
192.0.0.9/32       | 192.0.0.9                                                  | PCP anycast
192.0.0.10/32      | 192.0.0.10                                                 | TURN anycast
192.0.0.170/32     | 192.0.0.170                                                | NAT64 discovery
192.0.0.171/32     | 192.0.0.171                                                | NAT64 discovery
192.0.2.0/24       | 192.0.2.0 192.0.2.255                                      | documentation
192.31.196.0/24    | 192.31.196.0 192.31.196.255                                | AS112
192.52.193.0/24    | 192.52.193.0 192.52.193.255                                | AMT
192.88.99.0/24     | 192.88.99.0 192.88.99.1 192.88.99.255                      | 6to4 relay anycast
192.88.99.2/32     | 192.88.99.2                                                | 6a44 relay anycast
192.168.0.0/16     | 192.168.0.0 192.168.255.255                                | private
192.175.48.0/24    | 192.175.48.0 192.175.48.255                                | AS112
198.18.0.0/15      | 198.18.0.0 198.19.255.255                                  | benchmarking
198.51.100.0/24    | 198.51.100.0 198.51.100.255                                | documentation
203.0.113.0/24     | 203.0.113.0 203.0.113.255                                  | documentation
240.0.0.0/4        | 240.0.0.0 255.255.255.254                                  | reserved
255.255.255.255/32 | 255.255.255.255                                            | limited broadcast
""")

IPV6_REGISTRY = registry("""
::1/128           | ::1                                                               | loopback
::/128            | ::                                                                | unspecified
::ffff:0:0/96     | ::ffff:10.0.0.1 ::ffff:127.0.0.1                                  | -
64:ff9b::/96      | 64:ff9b::a9fe:a9fe 64:ff9b::c000:2ff                              | -
64:ff9b:1::/48    | 64:ff9b:1:: 64:ff9b:1::808:808 64:ff9b:1:ffff:ffff:ffff:ffff:ffff | local-use NAT64
100::/64          | 100:: 100::ffff:ffff:ffff:ffff                                    | discard-only
100:0:0:1::/64    | 100:0:0:1:: 100:0:0:1:ffff:ffff:ffff:ffff                         | dummy prefix
2001::/23         | 2001:1:: 2001:1::4 2001:5::1 2001:40::1 2001:1ff:ffff::1          | IETF protocol assignment
2001::/32         | 2001:: 2001:0:ffff:ffff:ffff:ffff:ffff:ffff                       | Teredo
2001:1::1/128     | 2001:1::1                                                         | PCP anycast
2001:1::2/128     | 2001:1::2                                                         | TURN anycast
2001:1::3/128     | 2001:1::3                                                         | DNS-SD SRP anycast
2001:2::/48       | 2001:2:: 2001:2:0:ffff:ffff:ffff:ffff:ffff                        | benchmarking
2001:3::/32       | 2001:3:: 2001:3:ffff:ffff:ffff:ffff:ffff:ffff                     | AMT
2001:4:112::/48   | 2001:4:112:: 2001:4:112:ffff:ffff:ffff:ffff:ffff                  | AS112
2001:10::/28      | 2001:10:: 2001:1f:ffff:ffff:ffff:ffff:ffff:ffff                   | ORCHID
2001:20::/28      | 2001:20:: 2001:2f:ffff:ffff:ffff:ffff:ffff:ffff                   | ORCHIDv2
2001:30::/28      | 2001:30:: 2001:3f:ffff:ffff:ffff:ffff:ffff:ffff                   | drone remote ID
2001:db8::/32     | 2001:db8:: 2001:db8:ffff:ffff:ffff:ffff:ffff:ffff                 | documentation
2002::/16         | 2002:: 2002:c000:0201::1 2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff  | 6to4
2620:4f:8000::/48 | 2620:4f:8000:: 2620:4f:8000:ffff:ffff:ffff:ffff:ffff              | AS112
3fff::/20         | 3fff:: 3fff::1 3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff             | documentation
5f00::/16         | 5f00:: 5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff                    | SRv6 SID
fc00::/7          | fc00:: fd12:3456::1 fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff       | unique-local
fe80::/10         | fe80:: fe80::1 febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff            | link-local
""")

# not in the special-purpose registries, refused all the same (address-space and multicast registries)
OTHER_BLOCKS = registry("""
224.0.0.0/4 | 224.0.0.0 224.0.0.251 239.255.255.255                  | multicast
ff00::/8    | ff00:: ff02::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff | multicast
fec0::/10   | fec0:: fec0::1 feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff | site-local
::/96       | ::2 ::0.0.0.2 ::8.8.8.8 ::255.255.255.255              | IPv4-compatible (deprecated)
""")
# IPv6 outside global unicast (2000::/3) is "Reserved by IETF" in the IPv6 address-space registry
RESERVED_IPV6 = ["::1:0:0:0", "101::1", "1fff:ffff::1", "4000::1", "8000::1", "e000::1", "fe00::1"]


def entry_id(entry):
    return entry[0]


@pytest.mark.parametrize("entry", IPV4_REGISTRY + IPV6_REGISTRY + OTHER_BLOCKS, ids=entry_id)
def test_every_registry_entry_is_refused(entry):
    prefix, addresses, verdict = entry
    for address in addresses:
        assert ipaddress.ip_address(address) in ipaddress.ip_network(prefix)  # the test itself is right
        if verdict is None:
            assert classify(address) is not None, address
        else:
            assert classify(address) == verdict, address


@pytest.mark.parametrize("address", RESERVED_IPV6)
def test_ipv6_outside_global_unicast_is_reserved(address):
    assert ipaddress.ip_address(address) not in ipaddress.ip_network("2000::/3")
    assert classify(address) == "reserved"


def test_the_table_holds_exactly_the_registries():
    expected = {prefix for prefix, _, _ in IPV4_REGISTRY + IPV6_REGISTRY + OTHER_BLOCKS}
    table = {block.prefix for block in special_addresses.IPV4_BLOCKS + special_addresses.IPV6_BLOCKS}
    assert table == expected


@pytest.mark.parametrize("address, verdict", [
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"), ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped link-local"), ("::ffff:192.0.0.100", "IPv4-mapped IETF protocol assignment"),
    ("::ffff:0.0.0.0", "IPv4-mapped unspecified"), ("::ffff:224.0.0.1", "IPv4-mapped multicast"),
    ("64:ff9b::a9fe:a9fe", "NAT64 link-local"), ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("64:ff9b::c000:2ff", "NAT64 documentation"),
    ("fe80::1%eth0", "link-local"), ("::1%1", "loopback"),
])
def test_translated_and_scoped_forms_are_judged_by_what_they_reach(address, verdict):
    assert classify(address) == verdict


@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "151.101.1.1", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0",
    "126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0", "172.15.255.255", "172.32.0.0",
    "191.255.255.255", "192.0.1.255", "192.0.3.0", "192.88.98.255", "192.88.100.0", "192.167.255.255",
    "192.169.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255",
    "2606:4700::1111", "2001:200::1", "2001:db7:ffff::1", "2001:db9::1", "2003::1", "2620:4f:7fff::1",
    "2620:4f:8001::1", "3ffe::1", "3fff:1000::1", "3fff:ffff::1", "2000::1",
    "::ffff:8.8.8.8", "64:ff9b::808:808",
])
def test_public_addresses_are_allowed(address):
    assert classify(address) is None


def test_not_an_address():
    assert classify("not-an-ip") == "not an IP address"


def test_classification_does_not_ask_the_interpreter(monkeypatch):
    """The verdicts come from the table alone: ipaddress's version-dependent properties are never read."""
    def forbidden(self):
        raise AssertionError("ipaddress property read")

    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for name in ("is_global", "is_private", "is_reserved", "is_loopback", "is_link_local", "is_multicast",
                     "is_unspecified", "is_site_local"):
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, property(forbidden))
    for _, addresses, _ in IPV4_REGISTRY + IPV6_REGISTRY + OTHER_BLOCKS:
        for address in addresses:
            assert classify(address) is not None
    assert all(classify(address) == "reserved" for address in RESERVED_IPV6)
    assert classify("8.8.8.8") is None and classify("2606:4700::1111") is None


# --- this host's own addresses (pure: the addresses are only compared, never connected to)


def test_own_addresses_are_refused_in_every_form():
    own = frozenset(map(ipaddress.ip_address, ["203.0.113.7", "2001:db8::7", "8.8.4.4", "2606:4700::7"]))
    assert classify("8.8.4.4", own) == OWN_ADDRESS
    assert classify("::ffff:8.8.4.4", own) == OWN_ADDRESS
    assert classify("64:ff9b::808:404", own) == OWN_ADDRESS  # through a NAT64 translator
    assert classify("2606:4700::7", own) == OWN_ADDRESS
    assert classify("2606:4700::8", own) is None and classify("8.8.8.8", own) is None
    assert classify("203.0.113.7", own) == "documentation"  # the more telling reason wins


def test_own_addresses_are_read_from_the_kernel():
    addresses = local_addresses.read()
    assert ipaddress.ip_address("127.0.0.1") in addresses
    if hasattr(local_addresses.socket, "AF_NETLINK"):
        assert local_addresses.read_netlink()  # the kernel's list, not only the fallback


def test_netlink_answer_is_parsed():
    """A canned RTM_GETADDR answer: one IPv4 and one IPv6 address, then NLMSG_DONE."""
    import socket
    import struct

    def message(kind, body):
        return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body

    def attribute(kind, value):
        data = struct.pack("=HH", 4 + len(value), kind) + value
        return data + b"\0" * (-len(data) % 4)

    v4 = message(20, struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 4)
                 + attribute(2, bytes([203, 0, 113, 9])) + attribute(3, b"eth0\0"))
    v6 = message(20, struct.pack("=BBBBI", socket.AF_INET6, 64, 0, 0, 4)
                 + attribute(1, ipaddress.ip_address("2001:db8::9").packed))
    done = message(3, b"\0\0\0\0")
    found, finished = local_addresses.parse_netlink(v4 + v6 + done)
    assert finished and set(map(str, found)) == {"203.0.113.9", "2001:db8::9"}


def test_own_addresses_are_reread_at_most_every_second():
    reads = []
    now = [0.0]

    def reader():
        reads.append(now[0])
        return frozenset({ipaddress.ip_address("203.0.113.%d" % len(reads))})

    local = local_addresses.LocalAddresses(reader, clock=lambda: now[0])
    assert ipaddress.ip_address("203.0.113.1") in local
    now[0] = 0.5
    assert ipaddress.ip_address("203.0.113.1") in local and len(reads) == 1
    now[0] = 1.0
    assert ipaddress.ip_address("203.0.113.2") in local and len(reads) == 2
