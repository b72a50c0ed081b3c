"""The REST API (SPEC 1). Handlers validate, touch the in-memory store and answer:
no network work, nothing blocking, nothing proportional to the backlog."""

import hmac
import json
import logging
import re
import sys
from typing import Any, Optional

from prometheus_client import CONTENT_TYPE_LATEST
from tornado import httputil, web
from tornado.concurrent import Future, future_add_done_callback
from tornado.iostream import StreamClosedError

from .jobs import JobStore, job_bytes
from .linger import linger_after
from .reports import LINK_BLOCK, encode
from .urls import check_urls, normalise

log = logging.getLogger("imgurd.api")

BACKLOG_RETRY_AFTER = 5  # seconds suggested to a client refused for a full backlog
RECEIVING_BODIES = 8  # POST bodies held while they arrive, all connections: at most this many x max_body_bytes
MAX_IDEMPOTENCY_KEY = 200
# An answer is queued whole on its connection until the client reads it: clients that ask for big
# reports and never read would hold memory without bound. Job reports and link lists count until
# taken (or the client went away); past UNSENT_ANSWER_BYTES of them, answers of LARGE_ANSWER bytes or
# more are refused.
LARGE_ANSWER = 64 * 1024
UNSENT_ANSWER_BYTES = 256 * 1024 * 1024
MAX_INDEX = 10 ** 18  # ?offset= and ?limit= above this are taken as this: no list is that long


dumps = encode


class ApiError(web.HTTPError):
    """An error answered as ``{"error": message, **details}`` with the given status: the message for
    people, the details (the limit that was hit) for programs, so no client has to parse English."""

    def __init__(self, status: int, message: str, headers: Optional[dict] = None, **details: Any) -> None:
        super().__init__(status, reason=None)
        self.message = message
        self.extra_headers = headers or {}
        self.details = details


class JsonHandler(web.RequestHandler):
    """JSON bodies and JSON errors for every answer, including tornado's own 404/405/500."""

    def initialize(self, service) -> None:
        self.service = service
        self.config = service.config
        self.store: JobStore = service.store

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")

    def send_json(self, document: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(dumps(document))

    def refuse_large_answer(self, size: int) -> None:
        """503 instead of an answer of ``size`` bytes, if large, while those not taken by their clients
        pass the limit."""
        if size >= LARGE_ANSWER and self.service.unsent_bytes >= UNSENT_ANSWER_BYTES:
            raise ApiError(503, "too many large answers are still waiting to be read by their clients; retry later",
                           {"Retry-After": str(BACKLOG_RETRY_AFTER)})

    counts_unsent = False  # the answers of this handler count in service.unsent_bytes until taken

    def flush(self, include_footers: bool = False) -> "Future[None]":
        if not self.counts_unsent:
            return super().flush(include_footers)
        size = sum(len(chunk) for chunk in self._write_buffer)  # what this flush hands to the connection
        future = super().flush(include_footers)
        if size:
            service = self.service
            service.unsent_bytes += size

            def taken(_: Any) -> None:  # written to the socket, or the connection is gone
                service.unsent_bytes -= size

            future_add_done_callback(future, taken)
        return future

    def head(self, *args: str) -> Any:
        """RFC 9110: HEAD wherever GET, with the same status and headers; tornado sends no body."""
        return self.get(*args)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        details = {}
        if isinstance(error, ApiError):
            message, details = error.message, error.details
            for name, value in error.extra_headers.items():
                self.set_header(name, value)
        elif status_code == 405:
            message = "method %s is not allowed on %s" % (self.request.method, self.request.path)
            self.set_header("Allow", ", ".join(self.allowed_methods()))  # RFC 9110: a 405 names what is allowed
        elif status_code == 404:
            message = "no such resource: %s" % self.request.path
        elif status_code >= 500:
            message = "internal server error"
        else:
            message = httputil.responses.get(status_code, "error").lower()
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(dumps({"error": message, **details}))

    @classmethod
    def allowed_methods(cls) -> list:
        """The methods this resource answers: those its class implements."""
        answered = [method for method in cls.SUPPORTED_METHODS
                    if getattr(cls, method.lower()) is not getattr(web.RequestHandler, method.lower())]
        return answered if "GET" in answered else [method for method in answered if method != "HEAD"]


class ApiHandler(JsonHandler):
    """``/v1/…``: optionally protected by ``api_token``."""

    def prepare(self) -> None:
        token = self.config.api_token
        if not token:
            return
        given = self.request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <api_token>)",
                           {"WWW-Authenticate": 'Bearer realm="imgurd"'})


@web.stream_request_body
class UploadHandler(ApiHandler):
    """``POST /v1/images/upload``: validate everything, then accept the whole job or none of it."""

    _held = 0  # bytes of this body counted in service.receiving_bytes (0 until prepare() ran)
    _body_read = False  # the whole body arrived (post() runs)

    def prepare(self) -> None:
        self._chunks: list = []
        self._size = 0
        super().prepare()
        limit = self.config.max_body_bytes
        # tornado drops the connection past its own limit without an answer: keep that limit well
        # above ours, so a body (chunked, without Content-Length) a little too large still gets a 413
        self.request.connection.set_max_body_size(limit + 1024 * 1024)
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "request body is %s bytes; at most %d (max_body_bytes)" % (declared, limit),
                           max_body_bytes=limit)

    def finish(self, chunk: Any = None) -> Any:
        if not self._body_read:
            # answered before the whole body arrived (401, 413, 503): tornado closes the connection while
            # the client may still be sending; linger, so that the answer is not lost to a reset
            self.set_header("Connection", "close")
            linger_after(self.request.connection)
        return super().finish(chunk)

    def data_received(self, chunk: bytes) -> None:
        if self._finished:  # answered already: the connection is closing (lingering, see linger.py)
            return
        self._size += len(chunk)
        if self._size <= self.config.max_body_bytes:
            service = self.service
            if service.receiving_bytes + len(chunk) > RECEIVING_BODIES * self.config.max_body_bytes:
                # bodies that arrive slowly (or stall) on many connections would hold memory without bound
                self._release()
                self.set_header("Connection", "close")
                error = ApiError(503, "too many request bodies are arriving at once; retry later",
                                 {"Retry-After": str(BACKLOG_RETRY_AFTER)})
                self.send_error(503, exc_info=(ApiError, error, None))
                return
            service.receiving_bytes += len(chunk)
            self._held += len(chunk)
            self._chunks.append(chunk)
            return
        # A body without Content-Length (chunked) has just passed the limit: answer now, keep nothing
        self._release()
        error = ApiError(413, "request body is larger than %d bytes (max_body_bytes)" % self.config.max_body_bytes,
                         max_body_bytes=self.config.max_body_bytes)
        self.send_error(413, exc_info=(ApiError, error, None))

    def _release(self) -> None:
        """Let go of the body received so far (answered, done, or the client went away)."""
        self._chunks = []
        self.service.receiving_bytes -= self._held
        self._held = 0

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        self._release()
        super().on_connection_close()

    def post(self) -> None:
        self._body_read = True
        if self._finished:  # data_received answered 413 or 503
            return
        if self.service.stopping:
            self.set_header("Connection", "close")
            raise ApiError(503, "imgurd is shutting down; submit to another instance or retry later",
                           {"Retry-After": str(BACKLOG_RETRY_AFTER)})
        key = self.request.headers.get("Idempotency-Key")
        if key is not None:
            key = key.strip()
            if not key or len(key) > MAX_IDEMPOTENCY_KEY:
                raise ApiError(400, "Idempotency-Key must be 1 to %d characters" % MAX_IDEMPOTENCY_KEY)
        urls = self._parse_urls(b"".join(self._chunks))  # a repeated key answers only a valid request
        if key is not None:
            earlier = self.store.by_idempotency_key(key)
            if earlier is not None:
                if list(map(normalise, earlier.urls)) != list(map(normalise, urls)):  # duplicates by SPEC's rule
                    raise ApiError(422, "this Idempotency-Key was used for job %s with other URLs; "
                                        "use a new key for a new job" % earlier.id)
                return self._accepted(earlier.id)
        store = self.store
        if store.backlog + len(urls) > self.config.max_queued_urls:
            advice = ("split it: it alone is more than that" if len(urls) > self.config.max_queued_urls
                      else "retry later")  # it would never fit, however long the client waits
            raise ApiError(
                503,
                "backlog full: %d URLs queued, this job adds %d, at most %d (max_queued_urls); %s"
                % (store.backlog, len(urls), self.config.max_queued_urls, advice),
                {"Retry-After": str(BACKLOG_RETRY_AFTER)},
                max_queued_urls=self.config.max_queued_urls, queued_urls=store.backlog,
            )
        size = job_bytes(urls, key)
        if not store.fits(size):
            advice = ("split it: it alone is more than that" if size > store.max_retained_bytes
                      else "retry later")  # it would never fit, however long the client waits
            raise ApiError(
                503,
                "too much job data held: unfinished jobs hold %d bytes, this job adds %d, at most %d "
                "(max_retained_bytes); %s" % (store.unfinished_bytes, size, store.max_retained_bytes, advice),
                {"Retry-After": str(BACKLOG_RETRY_AFTER)},
                max_retained_bytes=store.max_retained_bytes, job_bytes=size,
            )
        job = store.add(urls, key, size)
        self.service.job_accepted(job)
        self._accepted(job.id)

    def _accepted(self, job_id: str) -> None:
        self.set_header("Location", "/v1/images/upload/" + job_id)
        self.send_json({"jobId": job_id}, 202)

    def _parse_urls(self, body: bytes) -> list:
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else \
                "nested too deeply" if isinstance(exc, RecursionError) else \
                "not UTF-8" if isinstance(exc, UnicodeDecodeError) else \
                "a number in it has more than %d digits" % sys.get_int_max_str_digits()
            raise ApiError(400, "request body is not valid JSON: %s" % detail) from None
        if not isinstance(document, dict):
            raise ApiError(400, 'request body must be a JSON object like {"urls": ["https://..."]}')
        if "urls" not in document:
            raise ApiError(400, "urls is missing: send {\"urls\": [\"https://...\"]}")
        urls = document["urls"]
        limit = self.config.max_urls_per_job
        if isinstance(urls, list) and len(urls) > limit:
            raise ApiError(413, "urls holds %d entries; at most %d per job (max_urls_per_job)" % (len(urls), limit),
                           max_urls_per_job=limit)
        unique, error = check_urls(urls)
        if error is not None:
            raise ApiError(400, error)
        return unique  # type: ignore[return-value]


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class JobHandler(ApiHandler):
    """``GET /v1/images/upload/{jobId}``."""

    counts_unsent = True

    def decode_argument(self, value: bytes, name: Optional[str] = None) -> str:
        """An id that is not UTF-8 is a malformed id like any other: 404 (SPEC), not tornado's 400."""
        return value.decode("utf-8", "replace")

    def get(self, job_id: str) -> None:
        job = self.store.get(job_id.lower()) if _UUID.match(job_id.lower()) else None
        if job is None:
            raise ApiError(404, "no job with id %s (unknown, malformed or expired)" % job_id[:64])
        report = self.service.reports.job(job, self.service.waiting())
        self.refuse_large_answer(len(report))
        self.finish(report)


class ImagesHandler(ApiHandler):
    """``GET /v1/images[?offset=N&limit=M]``."""

    counts_unsent = True

    async def get(self) -> None:
        offset = self._index("offset", 0)
        limit = self._index("limit", None)
        links = self.store.links
        total = len(links)
        offset = min(offset, total)
        end = total if limit is None else min(total, offset + limit)
        if end - offset <= LINK_BLOCK:
            body = dumps({"uploaded": links[offset:end], "total": total})
            self.refuse_large_answer(len(body))
            self.finish(body)
            return
        # A long list: JSON pieces mostly encoded in advance, written without being joined into one
        # body (no copy of megabytes, no ETag hashed over them), with a Content-Length; each piece once
        # the one before is in the socket, so a connection holds one piece, not the list
        pieces = [b'{"uploaded":[']
        for piece in self.service.reports.links(offset, end):
            if len(pieces) > 1:
                pieces.append(b",")
            pieces.append(piece)
        pieces.append(b'],"total":%d}' % total)
        size = sum(len(piece) for piece in pieces)
        self.refuse_large_answer(size)
        self.set_header("Content-Length", str(size))
        for piece in pieces:
            self.write(piece)
            try:
                await self.flush()
            except StreamClosedError:  # the client went away
                return
        self.finish()

    def _index(self, name: str, default: Optional[int]) -> Optional[int]:
        values = self.request.query_arguments.get(name)
        if not values:
            return default
        if len(values) > 1:
            raise ApiError(400, "%s is given %d times; give it once" % (name, len(values)))
        text = values[0].decode("utf-8", "replace")
        if not text.isascii() or not text.isdigit():
            raise ApiError(400, "%s must be a non-negative integer, not %r" % (name, text[:40]))
        digits = text.lstrip("0") or "0"
        # any larger number means "past the end" / "all": clamped, never parsed whole (int() of a huge
        # string costs time, and Python refuses those over 4300 digits)
        return int(digits) if len(digits) <= 18 else MAX_INDEX


class HealthHandler(JsonHandler):
    def get(self) -> None:
        self.send_json({"status": "ok"})


class MetricsHandler(JsonHandler):
    """Prometheus text exposition; open like /healthz, so a scraper needs no token."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.service.metrics.exposition())


class OpenApiHandler(ApiHandler):
    def get(self) -> None:
        self.send_json(self.service.openapi)


class NotFoundHandler(ApiHandler):
    def prepare(self) -> None:
        if self.request.path.startswith("/v1/"):
            super().prepare()  # with api_token set, /v1/ answers nothing, not even 404s, to strangers
        raise ApiError(404, "no such resource: %s" % self.request.path[:200])
