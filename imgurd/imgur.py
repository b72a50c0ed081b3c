"""Uploads to Imgur (SPEC 2.5-2.7): binary multipart, auth, retries, rate limits."""

import json
import logging
import uuid
from typing import Optional, Tuple

from tornado import gen
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from . import USER_AGENT, backoff
from .curlerrors import curl_failure, fetch, quiet
from .errors import TransferError
from .oauth import TokenSource, imgur_error_message
from .ratelimit import RateGate

log = logging.getLogger("imgurd.imgur")

RATE_LIMITED_PAUSE = 10.0  # seconds every upload waits after a 429 that said nothing more


def multipart(data: bytes, filename: str, mime: str) -> Tuple[bytes, str]:
    """The ``multipart/form-data`` body (``image`` as a binary part, ``type=file``) and its Content-Type."""
    boundary = "imgurd-" + uuid.uuid4().hex
    safe_name = filename.replace('"', "").replace("\r", "").replace("\n", "")
    head = (
        "--{b}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nfile\r\n"
        "--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{n}\"\r\n"
        "Content-Type: {m}\r\n\r\n"
    ).format(b=boundary, n=safe_name, m=mime).encode("utf-8")
    tail = ("\r\n--%s--\r\n" % boundary).encode("ascii")
    return b"".join((head, data, tail)), "multipart/form-data; boundary=" + boundary


class ImgurClient:
    def __init__(self, config, http: AsyncHTTPClient, tokens: TokenSource, gate: RateGate) -> None:
        self.config = config
        self.http = http
        self.tokens = tokens
        self.gate = gate
        self.url = config.api_url + "/3/image"

    async def upload(self, data: bytes, filename: str, mime: str) -> Tuple[str, Optional[str]]:
        """Upload ``data``; return (link, deletehash). Retries what is worth retrying."""
        body, content_type = multipart(data, filename, mime)
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            try:
                return await self._attempt(body, content_type)
            except _AuthRefused as refused:
                if not self.tokens.uses_oauth or renewed:
                    raise refused.error from None
                renewed = True  # one renewal per upload after a 401/403, then the retry counts
                self.tokens.invalidate(refused.header)
                attempt -= 1
                continue
            except TransferError as error:
                if not error.retryable or attempt >= self.config.max_attempts:
                    if error.retryable:
                        error.reason += " (after %d attempts)" % attempt
                    raise
                wait = backoff.delay(attempt)
                if error.retry_after is not None:
                    if error.retry_after > self.config.max_rate_limit_wait:
                        error.reason += "; Imgur asked to retry after %d s, beyond max_rate_limit_wait (%d s)" % (
                            error.retry_after, self.config.max_rate_limit_wait)
                        raise
                    wait = max(wait, error.retry_after)
                log.debug("upload attempt %d failed (%s); retrying in %.1f s", attempt, error.reason, wait)
                await gen.sleep(wait)

    async def _attempt(self, body: bytes, content_type: str) -> Tuple[str, Optional[str]]:
        auth = await self.tokens.header()
        request = HTTPRequest(
            self.url, method="POST", body=body,
            headers={"Authorization": auth, "Content-Type": content_type, "Accept": "application/json"},
            connect_timeout=self.config.connect_timeout, request_timeout=self.config.request_timeout,
            user_agent=USER_AGENT, prepare_curl_callback=quiet,
        )
        await self.gate.acquire()
        response = None
        try:
            response, error = await fetch(self.http, request)
        finally:
            self.gate.release(response.headers if response is not None else None)
        if response is None:
            raise curl_failure(error, self.url, self.config, "upload")
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
        message = imgur_error_message(body) or response.reason or "no message"
        reason = "Imgur answered %d: %s" % (code, message)
        if code == 429:
            wait = backoff.retry_after(response.headers.get("Retry-After"))
            # without Retry-After the budget headers (already observed) say how long; else a short pause
            self.gate.pause_for(wait if wait is not None else RATE_LIMITED_PAUSE, "Imgur answered 429 (rate limited)")
            raise TransferError(reason, "rate_limit", retryable=True, retry_after=wait)
        if code >= 500:
            wait = backoff.retry_after(response.headers.get("Retry-After"))
            raise TransferError(reason, "upload", retryable=True, retry_after=wait)
        if code in (401, 403):
            raise _AuthRefused(TransferError(reason, "auth"), auth)
        raise TransferError(reason, "upload")


class _AuthRefused(Exception):
    def __init__(self, error: TransferError, header: str) -> None:
        super().__init__(error.reason)
        self.error = error
        self.header = header

