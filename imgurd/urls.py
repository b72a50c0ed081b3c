"""Validation and normalisation of submitted image URLs (SPEC 1, de-duplication)."""

import json
import re
import urllib.parse
from typing import List, Optional, Tuple

import idna

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 8192
# controls (C0, DEL, C1), white space of any kind and lone surrogates never belong inside a URL
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f-\x9f\ud800-\udfff\s]")
# scheme, ASCII host name or IPv4, optional port, then path and query up to a fragment
_SIMPLE = re.compile(r"(https?)://([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)(?::([0-9]{1,5}))?([/?][^#]*)?(?:#.*)?\Z",
                     re.IGNORECASE | re.ASCII)


def normalise(text: str) -> Optional[str]:
    """The canonical form of an http(s) URL, or None when it is not one.

    White space trimmed, scheme and host lower-cased, default port and fragment
    dropped; path and query kept exactly as given.
    """
    value = text.strip()
    if not value or len(value) > MAX_URL_LENGTH or _UNPRINTABLE.search(value):
        return None
    simple = _SIMPLE.match(value)
    if simple is not None:  # the common case, without urllib's general parsing (POST handler hot path)
        scheme, host, port, rest = simple.groups()
        scheme = scheme.lower()
        netloc = host.lower()
        if not host_ok(netloc):
            return None
        if port is not None:
            number = int(port)
            if not 0 < number <= 65535:
                return None
            if number != DEFAULT_PORTS[scheme]:
                netloc += ":%d" % number
        rest = rest or ""
        if rest.find("?") == len(rest) - 1:  # an empty query: urllib's form drops its "?", and so do we
            rest = rest[:-1]
        return "%s://%s%s" % (scheme, netloc, rest)
    return _parse(value)


def _parse(value: str) -> Optional[str]:
    """``normalise`` for any URL text (already trimmed and free of control characters)."""
    try:
        parts = urllib.parse.urlsplit(value)
        scheme = parts.scheme.lower()
        host = parts.hostname  # lower-cased by urllib; brackets of IPv6 removed
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not host or port == 0:
        return None
    if not host.isascii():
        ascii_form = ascii_host(host)  # an internationalised host must be a valid IDN ...
        if ascii_form is None or not host_ok(ascii_form):  # ... of a possible name: not "２５６.1.1.1"
            return None
    elif ":" not in host and not host_ok(host):  # IPv6 literals: checked by urllib already
        return None
    if ":" in host:
        host = "[%s]" % host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += ":%d" % port
    return urllib.parse.urlunsplit((scheme, netloc, parts.path, parts.query, ""))


# an ASCII host name: labels of letters, digits, "-" and "_" (seen in real names), an optional final dot
_HOST_NAME = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}\.?\Z", re.ASCII)
# a name whose last label is a number is an IPv4 address or nothing (WHATWG URL; curl reads the same forms)
_NUMBER = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)\Z", re.ASCII)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD = re.compile(r"(?:%s\.){3}%s\Z" % (_OCTET, _OCTET), re.ASCII)  # the usual form, read at once


def host_ok(host: str) -> bool:
    """Whether an ASCII host (lower case, no IPv6 brackets) is one that could ever be looked up or
    connected to: ``<script>``, ``a..b``, ``%41.com``, ``256.1.1.1`` or ``1.2.3.4.5`` is not, and its URL
    is refused at the POST rather than failing later, after retries, as an unresolvable host."""
    if _DOTTED_QUAD.match(host) is not None:
        return True
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or _HOST_NAME.match(host) is None:
        return False
    last = name[name.rfind(".") + 1:]
    if not last[:1].isdigit():  # (both forms of a number start with a digit): a name, the common case
        return True
    return _NUMBER.match(last) is None or ipv4_number(host) is not None


def ipv4_number(host: str) -> Optional[int]:
    """The address of an IPv4 host in any form browsers read (``127.0.0.1``, ``127.1``, ``0x7f000001``,
    ``0177.0.0.1``, ``2130706433``), or None when it is not one (WHATWG URL's IPv4 parser)."""
    parts = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        if _NUMBER.match(part.lower()) is None:  # not int()'s own forms: "1_0", " 1", "+1"
            return None
        try:
            if part[:2] in ("0x", "0X"):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part[0] == "0":
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part, 10))
        except ValueError:  # 08, 09: not octal
            return None
    if any(number > 255 for number in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    address = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        address += number << (8 * (3 - index))
    return address


def ascii_host(host: str) -> Optional[str]:
    """An internationalised host name in the ASCII form browsers and curl use (IDNA 2008 with UTS 46
    mapping: ``faß.de`` is ``xn--fa-hia.de``, where Python's own IDNA 2003 codec says ``fass.de``, another
    host), or None when it is not a valid one."""
    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def fetch_form(url: str) -> str:
    """The normal form of a submitted URL as ASCII, for curl: IDNA host, non-ASCII octets of
    path and query percent-encoded as UTF-8 (what a browser sends)."""
    value = normalise(url) or url
    if value.isascii():
        return value
    parts = urllib.parse.urlsplit(value)
    host = parts.hostname or ""
    if not host.isascii():
        host = ascii_host(host) or host
    if ":" in host:
        host = "[%s]" % host
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (urllib.parse.quote(userinfo, safe=":%") + "@" if userinfo else "") + host
    if parts.port is not None:
        netloc += ":%d" % parts.port
    keep = "/%:@!$&'()*+,;=-._~?"
    return urllib.parse.urlunsplit((parts.scheme, netloc, urllib.parse.quote(parts.path, safe=keep),
                                    urllib.parse.quote(parts.query, safe=keep), ""))


def display(value: object, limit: int = 100) -> str:
    """A short printable repr of a client-supplied value, for error messages."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def display_json(value: object, limit: int = 100) -> str:
    """A short JSON spelling of a client-supplied value that is not a string (``null``, not ``None``)."""
    shown = json.dumps(value, ensure_ascii=True)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def check_urls(urls: object) -> Tuple[Optional[List[str]], Optional[str]]:
    """Validate a job's ``urls`` field: (unique URLs, None) or (None, error).

    The URLs kept are the first occurrences as submitted (trimmed), so a client
    finds its own strings in the report; duplicates are found by normal form.
    """
    if not isinstance(urls, list):
        return None, "urls must be an array of http(s) URLs"
    if not urls:
        return None, "urls must not be empty"
    seen = set()
    unique: List[str] = []
    for index, item in enumerate(urls):
        if not isinstance(item, str):
            return None, "urls[%d] is not a string: %s" % (index, display_json(item))
        key = normalise(item)
        if key is None:
            return None, "urls[%d] is not an http(s) URL: %s" % (index, display(item))
        if key not in seen:
            seen.add(key)
            unique.append(item.strip())
    return unique, None


# a URL whose path ends in a plain name (nothing to unquote or strip): read without urllib, once an upload
_PLAIN_NAME = re.compile(r"https?://[^/?#]*/(?:[^?#]*/)?([a-z0-9._~-]*)(?:[?#]|\Z)", re.IGNORECASE | re.ASCII)


def file_name(url: str) -> str:
    """A file name for the multipart upload, taken from the URL path."""
    plain = _PLAIN_NAME.match(url)
    if plain is not None:
        return plain.group(1)[:100] or "image"
    path = urllib.parse.urlsplit(url).path
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    name = "".join(c for c in name if c.isprintable() and c not in '"\\/')[:100]
    return name or "image"
