"""An answer's headers as curl hands them over, read only when someone asks.

tornado's curl client parses every header line in Python as it arrives (a decode, a regular
expression, a normalised name, a multi-dict insert): about 45 µs for a download's few lines and
over 100 µs for an Imgur answer's dozen, some 8% of imgurd's CPU an image, for headers that are
mostly never looked at. Here curl's HEADERFUNCTION is the ``append`` of a list (no Python frame
per line); the lines of the final answer are parsed into a plain dict on the first lookup, in
a few µs.
"""

from typing import Callable, Dict, Iterator, List, Mapping, Optional

import pycurl

_WHITESPACE = b" \t\r\n"


class AnswerHeaders(Mapping[str, str]):
    """A case-insensitive mapping of the last answer's headers (after redirects and ``100
    Continue``), values of a repeated name joined with ``,`` as tornado's ``HTTPHeaders.get`` does."""

    __slots__ = ("lines", "_fields", "_reason", "_status", "_then")

    def __init__(self, then: Optional[Callable[[pycurl.Curl], None]] = None) -> None:
        self.lines: List[bytes] = []
        self._fields: Optional[Dict[str, str]] = None
        self._reason: Optional[str] = None
        self._status: Optional[int] = None
        self._then = then

    def prepare(self, curl: pycurl.Curl) -> None:
        """``prepare_curl_callback``: the request's own one, then this collector in place of tornado's."""
        if self._then is not None:
            self._then(curl)
        curl.setopt(pycurl.HEADERFUNCTION, self.lines.append)

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
        last = None
        for line in lines[start:]:
            if line[:1] in (b" ", b"\t"):  # an obsolete folded continuation of the line before
                if last is not None:
                    fields[last] = (fields[last] + " " + line.strip(_WHITESPACE).decode("latin-1")).strip()
                continue
            name, colon, value = line.partition(b":")
            if not colon:
                continue  # the blank line ending the headers, or nothing a header can be
            key = name.strip(_WHITESPACE).decode("latin-1").lower()
            text = value.strip(_WHITESPACE).decode("latin-1")
            fields[key] = fields[key] + "," + text if key in fields else text
            last = key
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
