"""Imgur OAuth 2 access tokens from a refresh token (SPEC 2.6).

One renewal at a time for the whole process: concurrent uploads that need a
token await the same future. Tokens are renewed a margin before
``expires_in`` runs out, and on demand after Imgur rejects one.
"""

import json
import logging
import time
import urllib.parse
from typing import Callable, Optional

from tornado import concurrent
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop

from . import USER_AGENT
from .answers import error_message
from .curlerrors import fetch, quiet
from .errors import TransferError

log = logging.getLogger("imgurd.oauth")

RENEW_MARGIN = 0.1  # renew when less than this share of the lifetime (at most an hour) is left


class TokenSource:
    """The ``Authorization`` header for uploads: Client-ID, or Bearer with a renewed token."""

    def __init__(self, config, http: AsyncHTTPClient, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.http = http
        self.clock = clock
        self._token: Optional[str] = None
        self._renew_at = 0.0
        self._renewal: Optional["concurrent.Future[str]"] = None
        self._rejected: Optional[str] = None  # why the refresh token was refused, once it was

    @property
    def uses_oauth(self) -> bool:
        return self.config.uses_oauth

    async def header(self) -> str:
        if not self.uses_oauth:
            return "Client-ID " + self.config.client_id
        token = self._token
        if token is None or self.clock() >= self._renew_at:
            token = await self._renew()
        return "Bearer " + token

    def invalidate(self, token_header: str) -> None:
        """Imgur refused this header's token: the next ``header()`` renews (once per bad token)."""
        if self._token is not None and token_header == "Bearer " + self._token:
            self._token = None

    def _renew(self) -> "concurrent.Future[str]":
        if self._rejected is not None:
            raise TransferError(self._rejected, "auth")
        if self._renewal is None or self._renewal.done():
            self._renewal = concurrent.Future()
            future = self._renewal

            async def run() -> None:
                try:
                    future.set_result(await self._request_token())
                except Exception as exc:  # handed to every waiter
                    future.set_exception(exc)

            IOLoop.current().spawn_callback(run)
        return self._renewal

    async def _request_token(self) -> str:
        config = self.config
        body = urllib.parse.urlencode({
            "refresh_token": config.refresh_token,
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "grant_type": "refresh_token",
        })
        request = HTTPRequest(  # no redirects: a 307 would resend the secrets to whatever host it names
            config.api_url + "/oauth2/token", method="POST", body=body, follow_redirects=False,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            connect_timeout=config.connect_timeout, request_timeout=config.request_timeout,
            user_agent=USER_AGENT, prepare_curl_callback=quiet,
        )
        response, _ = await fetch(self.http, request)
        if response is None:
            raise TransferError("could not reach Imgur's token endpoint", "auth", retryable=True)
        if response.code == 200:
            try:
                document = json.loads(response.body)
                token = document["access_token"]
                lifetime = float(document.get("expires_in") or 3600)
            except (ValueError, KeyError, TypeError):
                raise TransferError("Imgur's token endpoint answered 200 without an access token",
                                    "auth", retryable=True) from None
            self._token = str(token)
            self._renew_at = self.clock() + lifetime - min(3600.0, lifetime * RENEW_MARGIN)
            log.info("obtained an Imgur access token, valid for %d s", lifetime)
            return self._token
        if response.code >= 500 or response.code == 429:
            raise TransferError("Imgur's token endpoint answered %d" % response.code, "auth", retryable=True)
        message = error_message(response.body or b"") or "HTTP %d" % response.code
        self._rejected = "Imgur rejected the refresh token: %s" % message
        log.error("Imgur rejected the refresh token (answered %d: %s); uploads that need it will fail "
                  "until imgurd is restarted with a valid refresh_token", response.code, message)
        raise TransferError(self._rejected, "auth")
