"""Downloads from origins (SPEC 2.2-2.3): capped, guarded, redirect-limited, retried.

The body is written by our own curl WRITEFUNCTION (set in
``prepare_curl_callback``) as it arrives, so the cap is enforced
as bytes arrive, an endless body is cut at ``max_image_bytes``, and no copy
of the image is made on the way (one, joining its chunks, if it came in several).
"""

import dataclasses
import hashlib
import logging
import time
import urllib.parse
from typing import List, Optional, Tuple

import pycurl
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from . import USER_AGENT, backoff, netguard, slots
from .curlerrors import curl_failure, fetch, quiet
from .curlheaders import AnswerHeaders
from .errors import TransferError
from .limits import RequestLimits
from .retry import RetryPolicy
from .urls import fetch_form

log = logging.getLogger("imgurd.download")

RECEIVE_BUFFER = 256 * 1024  # curl's receive buffer: fewer, larger WRITEFUNCTION calls (its default is 16 KiB)
# The formats Imgur takes first, so an origin that negotiates (a CDN serving WebP or AVIF only to clients
# that ask for them) sends one of those and nothing needs converting; anything else still comes, and is
# converted or refused by type.
ACCEPT = "image/jpeg,image/png,image/gif,image/apng,image/tiff;q=0.9,image/bmp;q=0.9,image/*;q=0.5,*/*;q=0.1"
JOIN_LIMIT = 512 * 1024  # bytes of an image kept as curl's chunks, joined at the end; beyond, one buffer
MIN_ATTEMPT = 1.0  # seconds: with less of request_timeout left, no further attempt is made


class _Body:
    """The WRITEFUNCTION target: what curl hands over, refusing to pass the cap, and optionally its
    SHA-256, computed chunk by chunk as the bytes arrive (while they are still in the CPU's cache,
    and without a pass over the whole image that would hold the event loop for milliseconds on a
    large one).

    A small image's chunks are kept as they are and joined once at the end, not at all when it came
    in one: that ``bytes`` object then goes to Imgur as it is, with no copy. Past ``JOIN_LIMIT`` the
    bytes go into one growing buffer instead, so that a large image is never held twice (its chunks
    and their join) at once.
    """

    __slots__ = ("chunks", "buffer", "size", "cap", "too_large", "hash")

    def __init__(self, cap: int, hashing: bool = False) -> None:
        self.chunks: List[bytes] = []
        self.buffer: Optional[bytearray] = None
        self.size = 0
        self.cap = cap
        self.too_large = False
        self.hash = hashlib.sha256() if hashing else None

    def write(self, chunk: bytes) -> Optional[int]:
        self.size += len(chunk)
        if self.size > self.cap:
            self.too_large = True
            return 0  # fewer bytes than given: curl aborts with CURLE_WRITE_ERROR
        if self.buffer is not None:
            self.buffer += chunk
        elif self.size > JOIN_LIMIT:
            self.buffer = bytearray().join(self.chunks)
            self.buffer += chunk
            self.chunks = []
        else:
            self.chunks.append(chunk)
        if self.hash is not None:
            self.hash.update(chunk)
        return None  # None means "all of it" to pycurl

    def progress(self, download_total: int, downloaded: int, upload_total: int, uploaded: int) -> int:
        """curl's XFERINFOFUNCTION: counts what curl reads and throws away too, the body of a redirect
        (to keep its connection), which never reaches ``write`` nor MAXFILESIZE: an endless one must
        not be read for the whole request_timeout."""
        if downloaded > self.cap:
            self.too_large = True
            return 1  # curl aborts with CURLE_ABORTED_BY_CALLBACK
        return 0

    def data(self) -> "bytes | bytearray":
        if self.buffer is not None:
            return self.buffer
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        data = b"".join(chunks)
        self.chunks = [data]
        return data


class Downloader:
    def __init__(self, config, http: AsyncHTTPClient) -> None:
        self.config = config
        self.http = http
        self.limits = RequestLimits.from_config(config)
        # an origin's Retry-After longer than a whole download may take is not waited for
        self.retry = RetryPolicy(config.max_attempts, config.request_timeout,
                                 lambda seconds: " (asked to retry after %d s)" % seconds)
        self.new_guard = netguard.prepare(config.allow_private_networks)

    async def fetch_hashed(self, url: str, hashing: bool = True) -> Tuple["bytes | bytearray", Optional[bytes]]:
        """The body of ``url`` and its SHA-256 digest (None unless ``hashing``), or TransferError with
        the reason. Retries what is worth retrying.

        ``request_timeout`` bounds the attempts of one URL together, not each one: a tarpit that
        answers just fast enough not to be cut as stalled holds a transfer slot for request_timeout
        in all, not max_attempts times over. The waits between attempts hold no slot (slots.py).
        """
        try:
            return await self._fetch_attempts(url, hashing)
        finally:
            slots.leave_host()  # the origin's slot goes to the next download from it

    async def _fetch_attempts(self, url: str, hashing: bool) -> Tuple["bytes | bytearray", Optional[bytes]]:
        budget = self.limits.request_timeout
        target = fetch_form(url)
        attempt = 0
        spent = 0.0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                return await self._fetch_once(target, hashing, budget - spent)
            except TransferError as error:
                spent += time.monotonic() - started
                wait = self.retry.wait_before_retry(error, attempt)
                if budget - spent < MIN_ATTEMPT:
                    raise error.final(" (after %d attempts, request_timeout of %g s used up)"
                                      % (attempt, budget)) from None
                log.debug("download of %s failed (%s); retry %d in %.1f s", url, error.reason, attempt, wait)
                await slots.retry_sleep(wait)

    async def _fetch_once(self, url: str, hashing: bool, timeout: float) -> Tuple["bytes | bytearray", Optional[bytes]]:
        """One attempt, allowed ``timeout`` seconds (what is left of request_timeout)."""
        limits = self.limits
        if timeout < limits.request_timeout:  # a later attempt: its reasons name the time it had
            timeout = round(timeout, 1)
            limits = dataclasses.replace(limits, request_timeout=timeout,
                                         connect_timeout=min(limits.connect_timeout, timeout))
        body = _Body(limits.max_bytes, hashing)
        guard = self.new_guard()

        def prepare(curl: pycurl.Curl) -> None:
            quiet(curl)
            # no proxy, whatever http_proxy/ALL_PROXY say: through a proxy the guard would only ever
            # see the proxy's address, and the proxy would fetch internal URLs for us
            curl.setopt(pycurl.PROXY, "")
            curl.setopt(pycurl.WRITEFUNCTION, body.write)
            curl.setopt(pycurl.BUFFERSIZE, RECEIVE_BUFFER)
            curl.setopt(pycurl.MAXFILESIZE_LARGE, limits.max_bytes)
            curl.setopt(pycurl.NOPROGRESS, 0)
            curl.setopt(pycurl.XFERINFOFUNCTION, body.progress)
            curl.setopt(pycurl.LOW_SPEED_LIMIT, limits.stall_speed)
            curl.setopt(pycurl.LOW_SPEED_TIME, max(1, round(limits.stall_time)))
            if guard is not None:
                guard.install(curl)

        answer = AnswerHeaders(prepare)
        request = HTTPRequest(
            url, follow_redirects=True, max_redirects=limits.max_redirects,
            connect_timeout=limits.connect_timeout, request_timeout=limits.request_timeout,
            user_agent=USER_AGENT, headers={"Accept": ACCEPT},
            decompress_response=True, prepare_curl_callback=answer.prepare,
        )
        response, error = await fetch(self.http, request, answer)
        if response is None:
            if body.too_large or getattr(error, "errno", None) == pycurl.E_FILESIZE_EXCEEDED:
                if answer.status is not None and answer.status >= 400:  # an error page, not an image: say so
                    raise _refused(answer.status, answer, url)
                raise TransferError("download exceeded %d bytes" % limits.max_bytes, "too_large")
            raise curl_failure(error, url, limits, "download", guard.reason if guard else None)
        code = response.code
        if 200 <= code < 300:
            return body.data(), body.hash.digest() if body.hash is not None else None
        raise _refused(code, answer, response.effective_url or url)


def _refused(code: int, headers: AnswerHeaders, url: str) -> TransferError:
    """The error for an origin's answer that is not a success (worth retrying if it says so)."""
    reason = "origin answered HTTP %d" % code
    if code in (408, 425, 429) or code >= 500:
        return TransferError(reason, "download", retryable=True, retry_after=backoff.retry_after(headers.get("Retry-After")))
    if 300 <= code < 400:
        reason += " (redirect without a usable Location)"
    log.debug("origin %s answered %d", urllib.parse.urlsplit(url).hostname, code)
    return TransferError(reason, "download")
