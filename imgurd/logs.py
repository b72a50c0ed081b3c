"""Logging set-up: ``text`` (the default) or ``json`` (one object a line), access log included."""

import json
import logging
import sys
import time
from typing import Any

# fields a record may carry through ``extra=``; the JSON format shows them as keys
CONTEXT_FIELDS = ("job", "url", "reason", "status", "method", "path", "duration_ms", "remote_ip")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
        return json.dumps(document, ensure_ascii=False)


def setup(level: str, fmt: str, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
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
