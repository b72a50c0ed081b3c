"""Logging set-up: ``text`` (the default) or ``json`` (one object a line), access log included.

Whatever a record carries (URLs, request lines, reasons quoted from origins) is escaped: every
character that is not printable (Unicode categories C* and Z* but the space: controls, C1
controls such as U+0085 NEL and U+009B CSI, format characters such as U+202E, line and paragraph
separators) appears as ``\\xNN``/``\\uNNNN`` in text logs and as ``\\uNNNN`` in JSON logs, so
no logged value can split a record, forge one, or reorder what a terminal shows.
"""

import json
import logging
import re
import sys
import time
from typing import Any

# fields a record may carry through ``extra=``; the JSON format shows them as keys
CONTEXT_FIELDS = ("job", "url", "reason", "status", "method", "path", "duration_ms", "remote_ip")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return "\\x%02x" % code
    if code < 0x10000:
        return "\\u%04x" % code
    return "\\U%08x" % code


def escape(text: str) -> str:
    """``text`` with every non-printable character escaped (``str.isprintable`` decides)."""
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def _json_char(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return "\\u%04x" % code
    code -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters beyond the BMP
    return "\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


_UNPRINTABLE_RUN = re.compile(r"[^ -~]+")  # stretches holding something other than printable ASCII


def escape_json(line: str) -> str:
    """A JSON text (from ``json.dumps(..., ensure_ascii=False)``) with every non-printable character left
    raw by the encoder (format characters, C1 controls, line separators...) written as ``\\uNNNN``.

    Those characters can only stand inside JSON strings, where ``\\uNNNN`` means the same."""
    if line.isprintable():
        return line
    return _UNPRINTABLE_RUN.sub(
        lambda run: "".join(char if char.isprintable() else _json_char(char) for char in run.group()), line)


class TextFormatter(logging.Formatter):
    """The text format, with the message escaped; a traceback's lines escaped one by one and indented,
    so every line of a record but the first starts with white space."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        original = record.message
        record.message = escape(original)
        try:
            return super().formatMessage(record)
        finally:
            record.message = original

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("  " + escape(line) for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + ".%03dZ" % int(record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return escape_json(json.dumps(document, ensure_ascii=False))


def setup(level: str, fmt: str, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = TextFormatter(TEXT_FORMAT)
        formatter.converter = time.gmtime
        formatter.default_msec_format = "%s.%03dZ"
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # curl's and tornado's chatter at DEBUG is noise, and may echo request headers: keep it out
    logging.getLogger("tornado.curl_httpclient").setLevel(max(logging.INFO, root.level))


def plural(count: int, noun: str) -> str:
    """``1 URL``, ``2 URLs``: log lines read as sentences."""
    return "%d %s%s" % (count, noun, "" if count == 1 else "s")


QUIET_PATHS = ("/healthz", "/metrics")  # polled every few seconds by health checks and scrapers


def access_level(status: int, path: str) -> int:
    """Refusals (4xx, and 503 for a full backlog or a shutdown) are normal answers to clients, not
    failures of imgurd: INFO. Only other 5xx are errors. Health checks and scrapes are DEBUG."""
    if status >= 500 and status != 503:
        return logging.ERROR
    if path in QUIET_PATHS and status < 400:
        return logging.DEBUG
    return logging.INFO


def access_log(handler: Any) -> None:
    """tornado's ``log_function``: one line a request, with fields for the JSON format."""
    status = handler.get_status()
    request = handler.request
    duration = 1000.0 * request.request_time()
    level = access_level(status, request.path)
    logging.getLogger("tornado.access").log(
        level, "%d %s %s (%s) %.2fms", status, request.method, request.uri, request.remote_ip, duration,
        extra={"status": status, "method": request.method, "path": request.path,
               "duration_ms": round(duration, 2), "remote_ip": request.remote_ip},
    )
