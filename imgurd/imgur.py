"""Uploads to Imgur (SPEC 2.5-2.7): binary multipart, auth, retries, rate limits."""

import json
import logging
import os
import time
from typing import Optional, Tuple

import pycurl
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from . import USER_AGENT, backoff, slots
from .answers import error_message, looks_like_html
from .curlerrors import curl_failure, fetch, quiet
from .errors import TransferError
from .limits import RequestLimits
from .oauth import TokenSource
from .ratelimit import LONGEST_PAUSE, RateGate, wait_in_words
from .retry import RetryPolicy

log = logging.getLogger("imgurd.imgur")

REFUSED_BACKOFF_CAP = LONGEST_PAUSE  # an upload refused with 429 again and again backs off up to this
# curl's upload buffer, which it asks READFUNCTION to fill: sized to the request (its headers and the
# whole body, if that fits within UPLOAD_BUFFER), so a small image goes in one read and one send. Not
# simply UPLOAD_BUFFER for all: curl allocates (and zeroes) the buffer for every request, 256 KiB of
# memset for a 100 KB image was 1.4% of imgurd's CPU.
UPLOAD_BUFFER = 256 * 1024
MIN_UPLOAD_BUFFER = 16 * 1024  # curl's least
REQUEST_HEADROOM = 4 * 1024  # the request line and headers, sent from the same buffer


def multipart_parts(filename: str, mime: str) -> Tuple[bytes, bytes, str]:
    """What goes before and after the image bytes in the ``multipart/form-data`` body (``type=file``,
    then ``image`` as a binary part), and the body's Content-Type."""
    boundary = "imgurd-" + os.urandom(16).hex()  # not uuid4(): the same randomness, less work
    safe_name = filename.replace('"', "").replace("\r", "").replace("\n", "")
    head = (
        "--{b}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nfile\r\n"
        "--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{n}\"\r\n"
        "Content-Type: {m}\r\n\r\n"
    ).format(b=boundary, n=safe_name, m=mime).encode("utf-8")
    tail = ("\r\n--%s--\r\n" % boundary).encode("ascii")
    return head, tail, "multipart/form-data; boundary=" + boundary


def upload_buffer_size(body_size: int) -> int:
    return max(MIN_UPLOAD_BUFFER, min(UPLOAD_BUFFER, body_size + REQUEST_HEADROOM))


def plain(curl: pycurl.Curl) -> None:
    """A request to Imgur: quiet. (Downloads and uploads share curl handles, but tornado resets a
    handle after each request, so nothing a download set, its guard included, is left on it.)"""
    quiet(curl)


class _BodyStream:
    """curl's READFUNCTION for an upload: ``head + image + tail``, read straight from the image.

    Each read fills what curl asks for, across the parts: curl sends whatever one read returns as
    it is, so handing over the small head, the image and the small tail one at a time cost two
    more sends, two more socket events and a turn of the event loop each upload (strace, 100 KB
    images: 4 sendto and 12 rt_sigaction calls an image that way, 2 and 6 filled). The copy a
    filled read makes lives only for the read (curl copies it into its own buffer); joining the
    three up front would hold every image twice for the whole upload. SEEKFUNCTION lets curl
    rewind (to resend after a redirect, say). One per attempt.
    """

    __slots__ = ("parts", "part", "offset", "size", "read_from")

    def __init__(self, head: bytes, data: "bytes | bytearray | memoryview", tail: bytes) -> None:
        self.parts: Tuple["bytes | memoryview", ...] = (
            head, data if isinstance(data, bytes) else memoryview(data).cast("B"), tail)
        self.size = sum(len(part) if isinstance(part, bytes) else part.nbytes for part in self.parts)
        self.part = 0
        self.offset = 0
        self.read_from = False  # curl asked for the body: it was connected and sending

    def read(self, size: int) -> bytes:
        self.read_from = True
        pieces = []
        while size > 0 and self.part < 3:
            part = self.parts[self.part]
            offset = self.offset
            length = len(part) if isinstance(part, bytes) else part.nbytes
            end = min(length, offset + size)
            if end < length:
                self.offset = end
            else:
                self.part += 1
                self.offset = 0
            if end > offset:
                pieces.append(part if offset == 0 and end == length else memoryview(part)[offset:end])
                size -= end - offset
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]  # one whole part that is bytes (the tail, say): no copy
        return b"".join(pieces)

    def seek(self, offset: int, origin: int) -> int:
        if origin != 0 or not 0 <= offset <= self.size:  # only ever asked to rewind (SEEK_SET)
            return pycurl.SEEKFUNC_CANTSEEK
        self.part = 0
        for part in self.parts:
            length = len(part) if isinstance(part, bytes) else part.nbytes
            if offset < length:
                break
            offset -= length
            self.part += 1
        self.offset = offset
        return pycurl.SEEKFUNC_OK

    def release(self) -> None:
        """Let go of the image: a curl handle may keep its callbacks (and so this stream) until reused."""
        self.parts = (b"", b"", b"")

    def prepare(self, curl: pycurl.Curl) -> None:
        """``prepare_curl_callback``: runs after tornado set up the (empty) body, and replaces it."""
        plain(curl)
        curl.setopt(pycurl.READFUNCTION, self.read)
        curl.setopt(pycurl.SEEKFUNCTION, self.seek)
        curl.setopt(pycurl.POSTFIELDSIZE_LARGE, self.size)
        curl.setopt(pycurl.UPLOAD_BUFFERSIZE, upload_buffer_size(self.size))


class ImgurClient:
    def __init__(self, config, http: AsyncHTTPClient, tokens: TokenSource, gate: RateGate) -> None:
        self.config = config
        self.http = http
        self.tokens = tokens
        self.gate = gate
        self.url = config.api_url + "/3/image"
        self.limits = RequestLimits.from_config(config)
        # a Retry-After from Imgur is waited for as long as max_rate_limit_wait allows
        self.retry = RetryPolicy(
            config.max_attempts, config.max_rate_limit_wait,
            lambda seconds: "; Imgur asked to retry after %d s, beyond max_rate_limit_wait (%d s)"
            % (seconds, config.max_rate_limit_wait))

    async def upload(self, data: "bytes | bytearray", filename: str, mime: str) -> Tuple[str, Optional[str]]:
        """Upload ``data``; return (link, deletehash). Retries what is worth retrying.

        A 429 is Imgur's budget talking, not a failed attempt: the upload waits (with every other
        one, at the gate) and goes again, for as long as ``max_rate_limit_wait`` allows in all.
        """
        head, tail, content_type = multipart_parts(filename, mime)
        attempt = 0
        refused = 0  # 429s in a row for this upload
        first_refused = 0.0
        renewed = False
        while True:
            attempt += 1
            try:
                allowance = None if not first_refused else self.config.max_rate_limit_wait - (
                    time.monotonic() - first_refused)  # 429s so far waited for: what is left of the wait
                result = await self._attempt(_BodyStream(head, data, tail), content_type, allowance)
                self.gate.succeeded()
                return result
            except _AuthRefused as auth_refused:
                if not self.tokens.uses_oauth or renewed:
                    raise auth_refused.error from None
                renewed = True  # one renewal per upload after a 401/403, then the retry counts
                self.tokens.invalidate(auth_refused.header)
                attempt -= 1
                continue
            except _RateLimited as limited:
                attempt -= 1
                refused += 1
                now = time.monotonic()
                first_refused = first_refused or now
                max_wait = self.config.max_rate_limit_wait
                if limited.wait is not None and limited.wait > max_wait:
                    raise TransferError(limited.reason + self.retry.too_long(limited.wait), "rate_limit") from None
                if now - first_refused > max_wait:
                    raise TransferError("%s; still refused after %d s of waiting, beyond max_rate_limit_wait "
                                        "(%d s)" % (limited.reason, now - first_refused, max_wait),
                                        "rate_limit") from None
                pause = backoff.delay(refused, cap=REFUSED_BACKOFF_CAP)  # spread the retries, whatever the gate says
                log.debug("upload refused with 429 (%s); waiting for Imgur's budget", limited.reason)
                await slots.retry_sleep(pause)  # holding no transfer slot meanwhile
            except TransferError as error:
                wait = self.retry.wait_before_retry(error, attempt)
                log.debug("upload attempt %d failed (%s); retrying in %.1f s", attempt, error.reason, wait)
                await slots.retry_sleep(wait)  # holding no transfer slot meanwhile

    async def _attempt(self, body: _BodyStream, content_type: str,
                       allowance: Optional[float] = None) -> Tuple[str, Optional[str]]:
        await self.gate.acquire(allowance)
        response = None
        try:
            auth = await self.tokens.header()  # after the gate's wait, which may outlast a token
            request = HTTPRequest(
                self.url, method="POST", follow_redirects=False, body=b"",  # the body is streamed by body.prepare
                headers={"Authorization": auth, "Content-Type": content_type, "Accept": "application/json"},
                connect_timeout=self.config.connect_timeout, request_timeout=self.config.request_timeout,
                user_agent=USER_AGENT, prepare_curl_callback=body.prepare,
            )
            response, error = await fetch(self.http, request)
        finally:
            # no answer and no byte of the body asked for: it never left, Imgur cannot have counted it
            self.gate.release(response.headers if response is not None else None, sent=body.read_from)
            body.release()
        if response is None:
            raise curl_failure(error, self.url, self.limits, "upload")
        return self._outcome(response, auth)

    def _outcome(self, response: HTTPResponse, auth: str) -> Tuple[str, Optional[str]]:
        code = response.code
        body = response.body or b""
        if code == 200:
            try:
                data = json.loads(body)["data"]
                link = data["link"]
            except (ValueError, KeyError, TypeError):
                raise TransferError("Imgur answered 200 without a link", "upload", retryable=True) from None
            if not isinstance(link, str) or not link:
                raise TransferError("Imgur answered 200 without a link", "upload", retryable=True)
            return link, data.get("deletehash")
        reason = answer_reason(response)
        retry_after = backoff.retry_after(response.headers.get("Retry-After"))
        if code == 429:
            message = error_message(body)
            self.gate.rate_limited(retry_after, message)
            raise _RateLimited(reason, retry_after if retry_after is not None else wait_in_words(message))
        if code >= 500:
            raise TransferError(reason, "upload", retryable=True, retry_after=retry_after)
        if code in (401, 403):
            raise _AuthRefused(TransferError(reason, "auth"), auth)
        raise TransferError(reason, "upload")

    async def check_credits(self) -> None:
        """Ask Imgur for the budgets before the first upload (``GET /3/credits``), which also tells
        whether it takes our credentials. Uploads wait for the answer; a failure to ask is logged,
        never fatal: the budgets are then learned from the first upload's answer."""
        self.gate.hold_until_ready()
        try:
            await self._check_credits()
        except TransferError as error:  # e.g. the refresh token was refused: logged where it happened
            log.warning("could not ask Imgur for its budgets: %s", error.reason)
        finally:
            self.gate.ready()

    async def _check_credits(self) -> None:
        url = self.config.api_url + "/3/credits"
        request = HTTPRequest(
            url, follow_redirects=False,
            headers={"Authorization": await self.tokens.header(), "Accept": "application/json"},
            connect_timeout=self.config.connect_timeout, request_timeout=self.config.request_timeout,
            user_agent=USER_AGENT, prepare_curl_callback=plain,
        )
        response, error = await fetch(self.http, request)
        if response is None:
            log.warning("Imgur is not reachable at %s (%s); going on, uploads will retry",
                        self.config.api_url, curl_failure(error, url, self.limits, "upload").reason)
            return
        if response.code in (401, 403):
            what = "access token" if self.tokens.uses_oauth else "client_id"
            log.error("Imgur refused the configured %s: %s; uploads will fail until it is fixed (check "
                      "client_id, client_secret and refresh_token)", what, answer_reason(response))
            return
        if response.code != 200:
            log.warning("could not read Imgur's budgets from %s: %s", url, answer_reason(response))
            return
        self.gate.observe(response.headers)
        try:
            data = json.loads(response.body)["data"]
        except (ValueError, KeyError, TypeError):
            data = None
        if isinstance(data, dict):
            numbers = {k.lower(): v for k, v in data.items() if isinstance(v, (int, float)) and v >= 0}
            self.gate.seed("user", numbers.get("userlimit"), numbers.get("userremaining"), numbers.get("userreset"))
            self.gate.seed("client", numbers.get("clientlimit"), numbers.get("clientremaining"), None)
        budgets = self.gate.budgets
        log.info("Imgur budgets: %s of %s uploads left this hour for this address, %s of %s today for the "
                 "application", _uploads(budgets["user"].remaining), _uploads(budgets["user"].limit),
                 _uploads(budgets["client"].remaining), _uploads(budgets["client"].limit))


def _uploads(credits: Optional[float]) -> str:
    return "?" if credits is None else "%d" % (credits // 10)


def answer_reason(response: HTTPResponse) -> str:
    """"Imgur answered <code>: <Imgur's own words>", from whichever error shape it used."""
    body = response.body or b""
    message = error_message(body)
    if message is None:
        message = response.reason or "no message"
        if looks_like_html(body, response.headers.get("Content-Type")):
            message += " (an HTML page from Imgur's edge)"
    reason = "Imgur answered %d: %s" % (response.code, message)
    if response.code == 400 and response.headers.get("CDN-Error", "").strip().lower() == "yes":
        reason += " (refused by Imgur's CDN for this address or region)"
    return reason


class _RateLimited(Exception):
    """A 429: ``wait`` is what Imgur asked for (Retry-After or its words), if it said."""

    def __init__(self, reason: str, wait: Optional[float]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class _AuthRefused(Exception):
    def __init__(self, error: TransferError, header: str) -> None:
        super().__init__(error.reason)
        self.error = error
        self.header = header
