"""An answer's headers as curl hands them over, read only when someone asks.

tornado's curl client parses every header line in Python as it arrives (a decode, a regular
expression, a normalised name, a multi-dict insert): about 45 µs for a download's few lines and
over 100 µs for an Imgur answer's dozen, some 8% of imgurd's CPU an image, for headers that are
mostly never looked at. Here curl's HEADERFUNCTION is the ``append`` of a list (no Python frame
per line; see below for a libcurl older than 8.3); the lines of the final answer are parsed into a
plain dict on the first lookup, in a few µs.
"""

from typing import Callable, Dict, Iterator, List, Mapping, Optional

import pycurl

_WHITESPACE = b" \t\r\n"
# libcurl 8.3 (CVE-2023-38039) caps an answer's headers at 300 KB, interim 1xx answers included, and
# max_redirects bounds the hops: the plain list then holds a few MB at worst. An older libcurl has no
# cap, so the lines are kept by a Python callback that keeps one answer's and stops past that size.
_CURL_CAPS_HEADERS = pycurl.version_info()[2] >= 0x080300
HEADER_BYTES = 300 * 1024


class _BoundedLines(list):
    """The lines of the current answer only, at most HEADER_BYTES of them (for libcurl before 8.3)."""

    size = 0

    def add(self, line: bytes) -> Optional[int]:
        if line.startswith(b"HTTP/"):
            self.clear()
            self.size = 0
        self.size += len(line)
        if self.size > HEADER_BYTES:
            return -1  # curl fails the transfer ("Failed writing header")
        self.append(line)
        return None


class AnswerHeaders(Mapping[str, str]):
    """A case-insensitive mapping of the last answer's headers (after redirects and ``100
    Continue``), values of a repeated name joined with ``,`` as tornado's ``HTTPHeaders.get`` does."""

    __slots__ = ("lines", "_fields", "_reason", "_status", "_then")

    def __init__(self, then: Optional[Callable[[pycurl.Curl], None]] = None) -> None:
        self.lines: List[bytes] = [] if _CURL_CAPS_HEADERS else _BoundedLines()
        self._fields: Optional[Dict[str, str]] = None
        self._reason: Optional[str] = None
        self._status: Optional[int] = None
        self._then = then

    def prepare(self, curl: pycurl.Curl) -> None:
        """``prepare_curl_callback``: the request's own one, then this collector in place of tornado's."""
        if self._then is not None:
            self._then(curl)
        lines = self.lines
        curl.setopt(pycurl.HEADERFUNCTION, lines.add if isinstance(lines, _BoundedLines) else lines.append)

    def fields(self) -> Dict[str, str]:
        """The headers as a dict keyed by lower-case name."""
        if self._fields is None:
            self._parse()
        return self._fields  # type: ignore[return-value]

    @property
    def status(self) -> Optional[int]:
        """The last status line's code: known even when the transfer failed after the headers (curl
        refusing a body larger than MAXFILESIZE, say); None before any."""
        if self._fields is None:
            self._parse()
        return self._status

    @property
    def reason(self) -> Optional[str]:
        """The status line's reason phrase, if it had one."""
        if self._fields is None:
            self._parse()
        return self._reason

    def _parse(self) -> None:
        lines = self.lines
        start = 0
        for index in range(len(lines) - 1, -1, -1):
            if lines[index].startswith(b"HTTP/"):
                status = lines[index].strip(_WHITESPACE).split(None, 2)
                self._reason = status[2].decode("latin-1") if len(status) == 3 else None
                if len(status) > 1 and status[1].isdigit() and len(status[1]) == 3:
                    self._status = int(status[1])
                start = index + 1
                break
        fields: Dict[str, str] = {}
        repeated: Dict[str, List[str]] = {}  # names given more than once: joined once at the end
        last = None
        for line in lines[start:]:
            if line[:1] in (b" ", b"\t"):  # an obsolete folded continuation of the line before
                if last is not None:
                    more = line.strip(_WHITESPACE).decode("latin-1")
                    if last in repeated:
                        repeated[last][-1] = (repeated[last][-1] + " " + more).strip()
                    else:
                        fields[last] = (fields[last] + " " + more).strip()
                continue
            name, colon, value = line.partition(b":")
            if not colon:
                continue  # the blank line ending the headers, or nothing a header can be
            key = name.strip(_WHITESPACE).decode("latin-1").lower()
            text = value.strip(_WHITESPACE).decode("latin-1")
            if key in repeated:
                repeated[key].append(text)
            elif key in fields:
                repeated[key] = [fields[key], text]
            else:
                fields[key] = text
            last = key
        for key, values in repeated.items():
            fields[key] = ",".join(values)
        self._fields = fields

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:  # type: ignore[override]
        return self.fields().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self.fields()[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.fields()

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields())

    def __len__(self) -> int:
        return len(self.fields())
