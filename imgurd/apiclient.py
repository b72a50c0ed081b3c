"""A small blocking client for imgurd's own REST API, used by ``imgurd-submit`` (SPEC 6).

urllib3 keeps the connection alive (and notices when the server dropped it while idle); this module
adds what is imgurd's own: JSON in and out, patience with a server that restarts (the service's own
retry policy, imgurd/retry.py, given a time budget), and an optional deadline that no request or
pause outlasts.
"""

import json
import time
import urllib.parse
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import urllib3

from . import __version__, backoff
from .retry import GiveUp, RetryPolicy

USER_AGENT = "imgurd-submit/" + __version__
REQUEST_TIMEOUT = 60.0  # seconds for one request (a POST of 1000 URLs is answered at once)
RETRY_FOR = 120.0  # seconds a server that answered before may stay silent (a restart) before it counts as lost
RETRY_BASE = 0.5  # the pauses between tries are jittered up to 0.5 s, 1 s, then ...
RETRY_CAP = 2.0  # ... 2 s at most: a restarted server is noticed within 2 s
DEFAULT_RETRY_AFTER = 5.0  # when a 503 comes without a usable Retry-After
MAX_RETRY_AFTER = 3600.0  # a longer Retry-After is waited for this long


class SubmitError(Exception):
    """Fatal for the command: one line for stderr, exit status 2."""


class Unreachable(SubmitError):
    pass


class Lost(Unreachable):
    """A server that answered before has stopped answering for longer than ``retry_for``."""


class JobUnknown(SubmitError):
    """The server answered 404 for a job: it never had it, or it forgot it (a restart without state)."""

    def __init__(self, job_id: str, error: str) -> None:
        super().__init__("polling job %s: the server answered HTTP 404: %s" % (job_id, error))
        self.job_id = job_id


class Rejected(SubmitError):
    """The server refused a request; ``error`` is its own message, verbatim."""

    def __init__(self, status: int, error: str, what: str) -> None:
        super().__init__("%s: the server answered HTTP %d: %s" % (what, status, error))
        self.status = status
        self.error = error


class DeadlineReached(Exception):
    """``--timeout`` ran out during a request or a pause."""


class Reply:
    __slots__ = ("status", "headers", "document", "reason")

    def __init__(self, status: int, reason: str, headers: Mapping[str, str], document: Any) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.document = document

    @property
    def error(self) -> str:
        """The server's ``error`` message, or a description of an answer without one."""
        if isinstance(self.document, dict) and isinstance(self.document.get("error"), str):
            return self.document["error"]
        return "%s (no JSON error message in the answer)" % (self.reason or "HTTP %d" % self.status)

    def retry_after(self) -> float:
        """Seconds the answer's ``Retry-After`` asks for (DEFAULT_RETRY_AFTER when it has none it can read)."""
        return parse_retry_after(self.headers.get("Retry-After"))

    def limit(self, name: str) -> Optional[int]:
        """A limit the server named in its error answer (e.g. ``max_urls_per_job``), if it did."""
        value = self.document.get(name) if isinstance(self.document, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> float:
    """Seconds a ``Retry-After`` header asks for, DEFAULT_RETRY_AFTER when there is none it can read.
    How much of that is waited is the retry policy's to say (``patience``)."""
    seconds = backoff.retry_after(value, now)
    return DEFAULT_RETRY_AFTER if seconds is None else seconds


def patience(retry_for: Optional[float]) -> RetryPolicy:
    """How imgurd-submit tries again: jittered pauses of up to 0.5 s, 1 s, then 2 s, or what a
    ``Retry-After`` asks (up to MAX_RETRY_AFTER), for up to ``retry_for`` seconds after the first
    failure (None: for as long as it takes)."""
    return RetryPolicy(retry_after_limit=MAX_RETRY_AFTER, budget=retry_for, base=RETRY_BASE, cap=RETRY_CAP)


def parse_server(server: str) -> Tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of ``--server``, or ValueError with the reason."""
    parts = urllib.parse.urlsplit(server.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("--server must be an http(s) URL like http://127.0.0.1:8080, not %r" % server)
    if parts.query or parts.fragment or parts.username:
        raise ValueError("--server must be a plain base URL (no user, query or fragment): %r" % server)
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError("--server has an invalid port: %r" % server) from None
    return scheme, parts.hostname, port, parts.path.rstrip("/")


def describe(error: BaseException) -> str:
    """A short human description of a network failure (urllib3's, told by the OS error beneath it)."""
    if isinstance(error, urllib3.exceptions.NameResolutionError):
        return "cannot resolve the host name"
    if isinstance(error, urllib3.exceptions.SSLError):
        return "TLS error: %s" % (error.args[0] if error.args else error)
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        error = error.__context__ or error  # e.g. ConnectionRefusedError (urllib3 calls it a timeout)
    elif isinstance(error, urllib3.exceptions.TimeoutError):
        return "no answer in time"
    elif isinstance(error, urllib3.exceptions.ProtocolError):
        return "the server closed the connection without answering"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error) or type(error).__name__


class _Trouble(Exception):
    """A try that may be repeated: a network failure, or a gateway answer (``reply`` set)."""

    def __init__(self, detail: str, reply: Optional[Reply] = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reply = reply


class ApiClient:
    def __init__(self, server: str, api_token: Optional[str] = None, timeout: float = REQUEST_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 retry_for: float = RETRY_FOR) -> None:
        self.scheme, self.host, self.port, self.prefix = parse_server(server)
        shown_host = "[%s]" % self.host if ":" in self.host else self.host
        self.server = "%s://%s:%d%s" % (self.scheme, shown_host, self.port, self.prefix)
        if api_token is not None and not all("!" <= c <= "~" for c in api_token):
            raise ValueError("--api-token must be printable ASCII without spaces")
        self.api_token = api_token
        self.timeout = timeout
        self.retry_for = retry_for
        self.retry = patience(retry_for)
        self.clock = clock
        self.sleep = sleep
        self.reached = False  # once the server has answered, network trouble is retried
        # one connection, kept alive; no retries or redirects of urllib3's own: ``request`` decides
        self._pool = urllib3.PoolManager(num_pools=1, maxsize=1, retries=False)

    # --- the API

    def submit(self, urls: list, key: str, deadline: Optional[float] = None) -> Reply:
        """``POST /v1/images/upload``; the caller interprets the status (202, 413, 503, …)."""
        body = json.dumps({"urls": urls}, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=UTF-8", "Idempotency-Key": key}
        return self.request("POST", "/v1/images/upload", body, headers, deadline, retry_statuses=(502, 504))

    def job(self, job_id: str, deadline: Optional[float] = None) -> Dict[str, Any]:
        """The report of a job (``GET /v1/images/upload/{id}``), or JobUnknown (404), Lost or Rejected."""
        reply = self.request("GET", "/v1/images/upload/" + urllib.parse.quote(job_id, safe=""), None, {}, deadline)
        if reply.status == 404:
            raise JobUnknown(job_id, reply.error)
        if reply.status in (502, 503, 504):  # still a gateway's answer after retry_for: as good as gone
            raise Lost("lost the imgurd server at %s: HTTP %d for %g s" % (self.server, reply.status, self.retry_for))
        if reply.status != 200 or not isinstance(reply.document, dict):
            raise Rejected(reply.status, reply.error, "polling job %s" % job_id)
        return reply.document

    # --- plumbing

    def close(self) -> None:
        self._pool.clear()

    def request(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str],
                deadline: Optional[float] = None, retry_statuses: Tuple[int, ...] = (502, 503, 504)) -> Reply:
        """One exchange, repeated on network trouble (only once the server has answered before: a
        server that was never reached is reported at once) and on ``retry_statuses``, as ``self.retry``
        says: for up to ``retry_for`` seconds, as a server restarting refuses connections for a while,
        then answers again. After that, Lost, or the last of the ``retry_statuses`` answers."""
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = self._exchange(method, path, body, headers, deadline)
                if reply.status not in retry_statuses:
                    return reply
                trouble = _Trouble("HTTP %d" % reply.status, reply)
            except _Trouble as exc:
                if not self.reached:
                    raise Unreachable("cannot reach the imgurd server at %s: %s (is it running? see --server, "
                                      "IMGURD_SERVER)" % (self.server, exc.detail)) from None
                trouble = exc
            asked = None
            if trouble.reply is not None and trouble.reply.headers.get("Retry-After"):
                asked = trouble.reply.retry_after()
            try:
                wait = self.retry.next_wait(attempt, self.clock() - started, asked)
            except GiveUp as stop:
                if trouble.reply is not None:
                    return trouble.reply
                raise Lost("lost the imgurd server at %s: %s%s" % (self.server, trouble.detail, stop.why)) from None
            self.pause(wait, deadline)

    def pause(self, seconds: float, deadline: Optional[float] = None) -> None:
        """Sleep, but never past ``deadline`` (DeadlineReached when it would be)."""
        if deadline is not None:
            left = deadline - self.clock()
            if left <= seconds:
                if left > 0:
                    self.sleep(left)
                raise DeadlineReached()
        if seconds > 0:
            self.sleep(seconds)

    def _exchange(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str],
                  deadline: Optional[float]) -> Reply:
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_token:
            all_headers["Authorization"] = "Bearer " + self.api_token
        all_headers.update(headers)
        timeout = self.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - self.clock())
            if timeout <= 0:
                raise DeadlineReached()
        try:
            response = self._pool.request(method, self.server + path, body=body, headers=all_headers,
                                          timeout=urllib3.Timeout(connect=timeout, read=timeout), redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            timed_out = isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
                exc, urllib3.exceptions.NewConnectionError)
            if deadline is not None and timed_out and self.clock() >= deadline - 0.05:
                raise DeadlineReached() from None
            raise _Trouble(describe(exc)) from None
        self.reached = True
        try:
            document = json.loads(response.data.decode("utf-8")) if response.data else None
        except (UnicodeDecodeError, ValueError):
            document = None
        return Reply(response.status, response.reason or "", response.headers, document)
