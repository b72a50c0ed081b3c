"""Uploads to Imgur (SPEC 2.5-2.7): binary multipart, auth, retries, rate limits."""

import json
import logging
import uuid
from typing import Optional, Tuple

import pycurl
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from . import USER_AGENT, backoff, slots
from .curlerrors import curl_failure, fetch, quiet
from .errors import TransferError
from .oauth import TokenSource, imgur_error_message
from .ratelimit import RateGate

log = logging.getLogger("imgurd.imgur")

RATE_LIMITED_PAUSE = 10.0  # seconds every upload waits after a 429 that said nothing more
UPLOAD_BUFFER = 256 * 1024  # curl asks READFUNCTION for this much at a time (its default is 64 KiB)


def multipart_parts(filename: str, mime: str) -> Tuple[bytes, bytes, str]:
    """What goes before and after the image bytes in the ``multipart/form-data`` body (``type=file``,
    then ``image`` as a binary part), and the body's Content-Type."""
    boundary = "imgurd-" + uuid.uuid4().hex
    safe_name = filename.replace('"', "").replace("\r", "").replace("\n", "")
    head = (
        "--{b}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nfile\r\n"
        "--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{n}\"\r\n"
        "Content-Type: {m}\r\n\r\n"
    ).format(b=boundary, n=safe_name, m=mime).encode("utf-8")
    tail = ("\r\n--%s--\r\n" % boundary).encode("ascii")
    return head, tail, "multipart/form-data; boundary=" + boundary


class _BodyStream:
    """curl's READFUNCTION for an upload: ``head + image + tail`` read straight from the image buffer.

    Joining the three into one body would copy every image once more, and hold both copies for
    the whole upload; curl asks for the body in pieces anyway. SEEKFUNCTION lets curl rewind it
    (to resend after a redirect, say). One per attempt.
    """

    __slots__ = ("parts", "part", "offset", "size")

    def __init__(self, head: bytes, data: "bytes | bytearray | memoryview", tail: bytes) -> None:
        self.parts = (memoryview(head), memoryview(data).cast("B"), memoryview(tail))
        self.size = len(head) + self.parts[1].nbytes + len(tail)
        self.part = 0
        self.offset = 0

    def read(self, size: int) -> bytes:
        parts = self.parts
        pieces = []
        while size > 0 and self.part < 3:
            view = parts[self.part]
            piece = view[self.offset:self.offset + size]
            if piece.nbytes:
                pieces.append(piece)
                size -= piece.nbytes
                self.offset += piece.nbytes
            if self.offset >= view.nbytes:
                self.part += 1
                self.offset = 0
        if len(pieces) == 1:
            return pieces[0].tobytes()
        return b"".join(pieces)

    def seek(self, offset: int, origin: int) -> int:
        if origin != 0 or not 0 <= offset <= self.size:  # only ever asked to rewind (SEEK_SET)
            return pycurl.SEEKFUNC_CANTSEEK
        self.part = 0
        for view in self.parts:
            if offset < view.nbytes:
                break
            offset -= view.nbytes
            self.part += 1
        self.offset = offset
        return pycurl.SEEKFUNC_OK

    def release(self) -> None:
        """Let go of the image: a curl handle may keep its callbacks (and so this stream) until reused."""
        empty = memoryview(b"")
        self.parts = (empty, empty, empty)

    def prepare(self, curl: pycurl.Curl) -> None:
        """``prepare_curl_callback``: runs after tornado set up the (empty) body, and replaces it."""
        quiet(curl)
        curl.setopt(pycurl.READFUNCTION, self.read)
        curl.setopt(pycurl.SEEKFUNCTION, self.seek)
        curl.setopt(pycurl.POSTFIELDSIZE_LARGE, self.size)
        curl.setopt(pycurl.UPLOAD_BUFFERSIZE, UPLOAD_BUFFER)


class ImgurClient:
    def __init__(self, config, http: AsyncHTTPClient, tokens: TokenSource, gate: RateGate) -> None:
        self.config = config
        self.http = http
        self.tokens = tokens
        self.gate = gate
        self.url = config.api_url + "/3/image"

    async def upload(self, data: "bytes | bytearray", filename: str, mime: str) -> Tuple[str, Optional[str]]:
        """Upload ``data``; return (link, deletehash). Retries what is worth retrying."""
        head, tail, content_type = multipart_parts(filename, mime)
        attempt = 0
        renewed = False
        while True:
            attempt += 1
            try:
                return await self._attempt(_BodyStream(head, data, tail), content_type)
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
                await slots.retry_sleep(wait)  # holding no transfer slot meanwhile

    async def _attempt(self, body: _BodyStream, content_type: str) -> Tuple[str, Optional[str]]:
        auth = await self.tokens.header()
        request = HTTPRequest(
            self.url, method="POST", body=b"",  # the real body is streamed by body.prepare
            headers={"Authorization": auth, "Content-Type": content_type, "Accept": "application/json"},
            connect_timeout=self.config.connect_timeout, request_timeout=self.config.request_timeout,
            user_agent=USER_AGENT, prepare_curl_callback=body.prepare,
        )
        await self.gate.acquire()
        response = None
        try:
            response, error = await fetch(self.http, request)
        finally:
            self.gate.release(response.headers if response is not None else None)
            body.release()
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

