"""Loopback stand-ins for Imgur and for image origins, with fault injection.

Used by the integration tests and the benchmarks. The fake Imgur answers the way the
real one does (../shared/IMGUR-API.md), not only as documented: the
``data``/``success``/``status`` envelope with string or object ``data.error``,
the newer ``{"errors": [...]}`` and top-level ``detail`` shapes, HTML from the
edge, user (per address, hourly), client (daily) and POST budgets on every
answer with their reset headers in seconds, 429s with no ``Retry-After`` once a
budget is spent, ``GET /3/credits`` and OAuth token refresh. ``documented=True``
switches the reset headers to the Unix times and the 429s to the envelope the
documentation describes.
"""

import asyncio
import collections
import hashlib
import json
import math
import random
import string
import threading
import time
from typing import Any, Deque, Dict, List, Optional

from tornado import gen, httputil, web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

# --- tiny valid images (magic numbers are what imgurd checks)

PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) + b"\xff\xd9"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00" \
      b"\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
HTML = b"<!DOCTYPE html><html><head><title>Not an image</title></head><body>hello</body></html>"


def jpeg_of_size(size: int, seed: int = 0) -> bytes:
    """A JPEG-looking blob of exactly ``size`` bytes, distinct per seed."""
    head = b"\xff\xd8\xff\xe0" + seed.to_bytes(8, "big")
    filler = hashlib.sha256(head).digest() * (size // 32 + 1)
    return (head + filler)[: max(size - 2, len(head))] + b"\xff\xd9"


def start_server(app: web.Application, host: str = "127.0.0.1", **server_args: Any):
    """Listen on ``host`` (a loopback address) on a free port, on the current loop; returns (server, port)."""
    sockets = bind_sockets(0, host)
    server = HTTPServer(app, **server_args)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


# --- the fake Imgur


class FakeBudget:
    """One of Imgur's budgets: ``limit`` credits per ``window`` seconds, refilled when the window ends."""

    def __init__(self, limit: int, window: float, used: int = 0) -> None:
        self.limit = limit
        self.window = window
        self.used = used
        self.started = time.monotonic()

    def state(self):
        """(credits remaining, seconds until the refill), refilling an ended window first."""
        now = time.monotonic()
        if now - self.started >= self.window:
            self.started = now
            self.used = 0
        return self.limit - self.used, self.window - (now - self.started)

    def spend(self, cost: int) -> bool:
        remaining, _ = self.state()
        if remaining < cost:
            return False
        self.used += cost
        return True


UPLOAD_CREDITS = 10  # what one upload costs from the user and the client budgets


class Upload:
    __slots__ = ("data", "filename", "content_type", "type_field", "auth", "link", "fields")

    def __init__(self, data, filename, content_type, type_field, auth, link, fields):
        self.data = data
        self.filename = filename
        self.content_type = content_type
        self.type_field = type_field
        self.auth = auth
        self.link = link
        self.fields = fields


class FakeImgur:
    """State and fault script of the fake Imgur. ``faults`` is consumed one answer per upload request."""

    def __init__(self, client_id: str = "test-client-id", client_secret: str = "test-secret",
                 refresh_token: str = "test-refresh-token", latency: float = 0.0, documented: bool = False) -> None:
        self.documented = documented
        # budgets large enough not to bind unless a test says so (budget()); real anonymous: 500 an hour
        self.user = FakeBudget(10 ** 7, 3600.0)
        self.client = FakeBudget(10 ** 8, 86400.0)
        self.spent_uploads = 0  # uploads that arrived while a budget was known spent (answered 429)
        self.credits_requests = 0
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.latency = latency
        self.uploads: List[Upload] = []
        self.requests = 0  # upload requests received, failed ones included
        self.refused = 0  # 429s answered for a spent POST budget
        self.faults: Deque[Dict[str, Any]] = collections.deque()
        self.rate_headers: Dict[str, str] = {}
        self.post: Optional[FakeBudget] = None  # when set: uploads allowed per window, then 429
        self.token_requests = 0
        self.token_lifetime = 3600
        self.reject_refresh = False
        self.valid_tokens: set = set()
        self.request_times: List[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self.server = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def fail_next(self, status: int, error: Any = "Internal error", headers: Optional[Dict[str, str]] = None,
                  html: bool = False, times: int = 1, shape: str = "envelope") -> None:
        """The next upload requests answer ``status`` with ``error`` in ``shape`` (envelope, errors,
        detail or html)."""
        for _ in range(times):
            self.faults.append({"status": status, "error": error, "headers": headers or {}, "html": html,
                                "shape": shape})

    def limit_posts(self, limit: int, window: float, used: int = 0) -> None:
        """Imgur's POST budget: ``limit`` uploads per ``window`` seconds, refilled when it ends."""
        self.post = FakeBudget(limit, window, used)

    def budget(self, user_credits: int = 500, window: float = 3600.0, used: int = 0,
               client_credits: Optional[int] = None, client_window: float = 86400.0) -> None:
        """The user (per address) budget real anonymous uploads meet: 500 credits, 10 an upload, per
        ``window`` (an hour at Imgur; seconds in a test); optionally the application's daily one too."""
        self.user = FakeBudget(user_credits, window, used)
        if client_credits is not None:
            self.client = FakeBudget(client_credits, client_window)

    def reset_value(self, seconds: float) -> str:
        """A reset header as real answers send it (seconds from now), or as documented (a Unix time)."""
        if self.documented:
            return str(math.ceil(time.time() + seconds))  # rounded up: never earlier than the real refill
        return str(max(1, math.ceil(seconds)))

    def budget_headers(self) -> Dict[str, str]:
        user_left, user_reset = self.user.state()
        client_left, client_reset = self.client.state()
        headers = {
            "X-RateLimit-UserLimit": str(self.user.limit), "X-RateLimit-UserRemaining": str(user_left),
            "X-RateLimit-UserReset": self.reset_value(user_reset),
            "X-RateLimit-ClientLimit": str(self.client.limit), "X-RateLimit-ClientRemaining": str(client_left),
        }
        if not self.documented:
            headers["X-RateLimit-ClientReset"] = str(max(1, int(client_reset + 0.999)))
        if self.post is not None:
            post_left, post_reset = self.post.state()
            headers.update({"X-Post-Rate-Limit-Limit": str(self.post.limit),
                            "X-Post-Rate-Limit-Remaining": str(post_left),
                            "X-Post-Rate-Limit-Reset": str(max(1, int(post_reset + 0.999)))})
        return headers

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()

    def new_token(self) -> str:
        token = "tok-" + "".join(random.choice(string.ascii_lowercase) for _ in range(20))
        self.valid_tokens.add(token)
        return token

    def application(self) -> web.Application:
        return web.Application([
            (r"/3/(?:image|upload)", _ImgurUploadHandler, {"fake": self}),
            (r"/3/credits", _ImgurCreditsHandler, {"fake": self}),
            (r"/oauth2/token", _ImgurTokenHandler, {"fake": self}),
        ])

    def start(self) -> "FakeImgur":
        self.server, self.port = start_server(self.application(), max_body_size=200 * 1024 * 1024)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def envelope(data: Dict[str, Any], status: int) -> bytes:
    return json.dumps({"data": data, "success": status == 200, "status": status}).encode()


def imgur_takes(data: bytes) -> bool:
    """What Imgur's API takes, by magic number: JPEG, PNG, GIF, TIFF (BigTIFF too), BMP. WebP, AVIF
    and HEIC (RIFF/WEBP, ISO-BMFF ftyp) are refused with "File type invalid (1)", as the real one does."""
    return (data.startswith((b"\xff\xd8", b"\x89PNG", b"GIF8", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"))
            or data[:2] == b"BM")


class _ImgurHandler(web.RequestHandler):
    def initialize(self, fake: FakeImgur) -> None:
        self.fake = fake

    def _error(self, status: int, error: Any, html: bool = False, shape: str = "envelope") -> None:
        """An error in one of the shapes real answers use: envelope, errors, detail, or an HTML page."""
        self.set_status(status)
        if html or shape == "html":
            self.set_header("Content-Type", "text/html")
            self.finish("<html><body><h1>%d Service Unavailable</h1></body></html>" % status)
            return
        reason = httputil.responses.get(status, "Error")
        trace = "legacy-api-7756c5f445-v8sw6/%s" % "".join(random.choice(string.ascii_letters) for _ in range(10))
        if shape == "errors":
            self.set_header("Content-Type", "application/vnd.imgur.v1+json")
            self.finish(json.dumps({"errors": [{"id": trace, "code": str(status), "status": reason,
                                                "detail": error}]}))
        elif shape == "detail":
            self.set_header("Content-Type", "application/vnd.imgur.v1+json")
            self.finish(json.dumps({"id": trace, "code": status, "detail": error, "status": reason}))
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(envelope({"error": error, "request": self.request.path, "method": self.request.method},
                                 status))

    def _auth_error(self) -> bool:
        """Answer 401/403 as Imgur does for missing or wrong credentials; True if it answered."""
        fake = self.fake
        auth = self.request.headers.get("Authorization", "")
        if not auth:
            self._error(401, "Authentication required")
            return True
        scheme, _, credential = auth.partition(" ")
        if scheme == "Client-ID":
            if credential != fake.client_id:
                self._error(403, "Invalid client_id")
                return True
        elif scheme == "Bearer":
            if credential not in fake.valid_tokens:
                self._error(403, "The access token provided is invalid.")
                return True
        else:
            self._error(403, "Invalid authorization header")
            return True
        return False


class _ImgurCreditsHandler(_ImgurHandler):
    """``GET /3/credits``: the budgets, as Imgur reports them before any upload."""

    def get(self) -> None:
        fake = self.fake
        fake.credits_requests += 1
        if self._auth_error():
            return
        user_left, user_reset = fake.user.state()
        client_left, _ = fake.client.state()
        self.set_header("Content-Type", "application/json")
        self.finish(envelope({"UserLimit": fake.user.limit, "UserRemaining": user_left,
                              "UserReset": int(time.time() + user_reset + 0.999),
                              "ClientLimit": fake.client.limit, "ClientRemaining": client_left}, 200))


class _ImgurUploadHandler(_ImgurHandler):
    def _budget_headers(self) -> None:
        fake = self.fake
        for name, value in fake.budget_headers().items():
            self.set_header(name, value)
        for name, value in fake.rate_headers.items():  # a test's own values win
            self.set_header(name, value)

    async def post(self) -> None:
        fake = self.fake
        fake.requests += 1
        fake.request_times.append(time.monotonic())
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if fake.latency:
                await gen.sleep(fake.latency)
            self._answer()
        finally:
            fake.in_flight -= 1

    def _answer(self) -> None:
        fake = self.fake
        auth = self.request.headers.get("Authorization", "")
        if fake.faults:
            fault = fake.faults.popleft()
            self._budget_headers()
            for name, value in fault["headers"].items():
                self.set_header(name, value)
            return self._error(fault["status"], fault["error"], fault["html"], fault.get("shape", "envelope"))
        if self._auth_error():
            return
        spent = [b for b, cost in ((fake.post, 1), (fake.user, UPLOAD_CREDITS), (fake.client, UPLOAD_CREDITS))
                 if b is not None and b.state()[0] < cost]
        if spent:  # sent into a spent budget: what imgurd must never do
            fake.refused += 1
            fake.spent_uploads += 1
            self._budget_headers()
            if fake.documented:
                return self._error(429, "Too Many Requests")
            return self._error(429, "Too Many Requests", shape="errors")
        for budget, cost in ((fake.post, 1), (fake.user, UPLOAD_CREDITS), (fake.client, UPLOAD_CREDITS)):
            if budget is not None:
                budget.spend(cost)
        self._budget_headers()
        files = self.request.files.get("image")
        type_field = self.get_body_argument("type", None)
        if not files:
            return self._error(400, {"code": 1001, "message": "No image data was sent to the upload api",
                                     "type": "ImgurException", "exception": []})
        part = files[0]
        data = part["body"]
        if not imgur_takes(data):
            return self._error(400, {"code": 1003, "message": "File type invalid (1)",
                                     "type": "ImgurException", "exception": []})
        image_id = "".join(random.choice(string.ascii_letters + string.digits) for _ in range(7))
        ext = {"image/png": "png", "image/gif": "gif"}.get(part.get("content_type", ""), "jpg")
        link = "https://i.imgur.com/%s.%s" % (image_id, ext)
        fields = {k: [v.decode() for v in vs] for k, vs in self.request.body_arguments.items()}
        fake.uploads.append(Upload(data, part["filename"], part.get("content_type"), type_field, auth, link, fields))
        self.set_header("Content-Type", "application/json")
        self.finish(envelope({
            "id": image_id, "title": None, "description": None, "datetime": int(time.time()),
            "type": part.get("content_type") or "image/jpeg", "animated": False, "width": 1, "height": 1,
            "size": len(data), "views": 0, "bandwidth": 0, "vote": None, "favorite": False, "nsfw": None,
            "section": None, "account_url": None, "account_id": 0, "is_ad": False, "in_most_viral": False,
            "tags": [], "ad_type": 0, "ad_url": "", "in_gallery": False,
            "deletehash": "".join(random.choice(string.ascii_letters) for _ in range(15)), "name": "",
            "link": link,
        }, 200))


class _ImgurTokenHandler(web.RequestHandler):
    def initialize(self, fake: FakeImgur) -> None:
        self.fake = fake

    def post(self) -> None:
        fake = self.fake
        fake.token_requests += 1
        self.set_header("Content-Type", "application/json")
        args = {k: self.get_body_argument(k, None) for k in
                ("refresh_token", "client_id", "client_secret", "grant_type")}
        if (fake.reject_refresh or args["refresh_token"] != fake.refresh_token
                or args["client_id"] != fake.client_id or args["client_secret"] != fake.client_secret
                or args["grant_type"] != "refresh_token"):
            self.set_status(400)
            self.finish(envelope({"error": "Invalid refresh token", "request": "/oauth2/token",
                                  "method": "POST"}, 400))
            return
        self.finish(json.dumps({
            "access_token": fake.new_token(), "expires_in": fake.token_lifetime, "token_type": "bearer",
            "scope": None, "refresh_token": fake.refresh_token, "account_id": 123,
            "account_username": "tester",
        }))


# --- the image origin


class Origin:
    """Serves images and misbehaviour on loopback; counts every request it receives."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.files: Dict[str, bytes] = {}
        self.types: Dict[str, str] = {}
        self.hits: Dict[str, int] = collections.Counter()
        self.requests = 0
        self.fail_script: Dict[str, Deque[int]] = collections.defaultdict(collections.deque)
        self.user_agents: List[str] = []
        self.accepts: List[str] = []  # the Accept header of every request
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self.server = None

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return "http://%s:%d%s" % (host, self.port, path)

    def add(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        self.files[path] = data
        self.types[path] = content_type
        return self.url(path)

    def fail_first(self, path: str, *statuses: int) -> None:
        """The next requests for ``path`` answer these statuses, in order, before the file is served."""
        self.fail_script[path].extend(statuses)

    def application(self) -> web.Application:
        return web.Application([(r"/.*", _OriginHandler, {"origin": self})])

    def start(self) -> "Origin":
        self.server, self.port = start_server(self.application())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


class _OriginHandler(web.RequestHandler):
    def initialize(self, origin: Origin) -> None:
        self.origin = origin

    async def get(self) -> None:
        origin = self.origin
        origin.in_flight += 1
        origin.max_in_flight = max(origin.max_in_flight, origin.in_flight)
        try:
            await self._answer()
        finally:
            origin.in_flight -= 1

    async def _trickle(self, seconds: float, every: float, piece: bytes) -> None:
        """A JPEG's first bytes, then ``piece`` every ``every`` seconds for ``seconds``, then the rest."""
        self.set_header("Content-Type", "image/jpeg")
        self.write(JPEG[:4])
        await self.flush()
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                await gen.sleep(every)
                self.write(piece)
                await self.flush()
        except Exception:  # the client hung up, as it should
            return
        self.finish(JPEG[4:])

    async def _answer(self) -> None:
        origin = self.origin
        path = self.request.path
        origin.requests += 1
        origin.hits[path] += 1
        origin.user_agents.append(self.request.headers.get("User-Agent", ""))
        origin.accepts.append(self.request.headers.get("Accept", ""))
        if origin.latency:
            await gen.sleep(origin.latency)
        script = origin.fail_script.get(path)
        if script:
            status = script.popleft()
            self.set_status(status)
            if status in (429, 503) and self.get_query_argument("retry_after", None):
                self.set_header("Retry-After", self.get_query_argument("retry_after"))
            self.finish("failing on purpose")
            return
        parts = path.strip("/").split("/")
        if path in origin.files:
            self.set_header("Content-Type", origin.types[path])
            self.finish(origin.files[path])
        elif parts[0] == "status":  # /status/404
            self.set_status(int(parts[1]))
            self.finish("status %s" % parts[1])
        elif parts[0] == "status-page":  # /status-page/503/<bytes>: an error page that large
            self.set_status(int(parts[1]))
            self.set_header("Content-Type", "text/html")
            self.finish(b"<html>" + b" " * int(parts[2]))
        elif parts[0] == "redirect":  # /redirect/<n>/<rest...>: n hops, then /<rest>
            hops = int(parts[1])
            rest = "/" + "/".join(parts[2:])
            self.redirect("/redirect/%d%s" % (hops - 1, rest) if hops > 1 else rest)
        elif parts[0] == "redirect-to":  # /redirect-to?url=...
            self.redirect(self.get_query_argument("url"))
        elif parts[0] == "redirect-endless":  # /redirect-endless?url=...: a 302 whose body has no end
            self.set_status(302)
            self.set_header("Location", self.get_query_argument("url"))
            try:
                for _ in range(100000):
                    self.write(b"\0" * 65536)
                    await self.flush()
            except Exception:  # the client hung up, as it should
                return
        elif parts[0] == "huge":  # a Content-Length beyond any cap, then a little data
            self.set_header("Content-Type", "image/jpeg")
            self.set_header("Content-Length", str(10 ** 12))
            self.write(JPEG[:100])
            await self.flush()
            self.request.connection.close()
        elif parts[0] == "endless":  # chunked, no end
            self.set_header("Content-Type", "image/jpeg")
            chunk = JPEG[:4] + b"\0" * 65532
            try:
                for _ in range(100000):
                    self.write(chunk)
                    await self.flush()
            except Exception:  # the client hung up, as it should
                return
        elif parts[0] == "slow":  # /slow/<seconds>: headers, then a byte now and then
            await self._trickle(float(parts[1]), 0.5, b"\0")
        elif parts[0] == "drip":  # /drip/<seconds>: a tarpit, 4 KiB/s (above the stall cut-off) for that long
            await self._trickle(float(parts[1]), 0.25, b"\0" * 1024)
        elif parts[0] == "hang":  # /hang/<seconds>: no headers at all for a while
            await gen.sleep(float(parts[1]))
            self.finish(JPEG)
        else:
            self.set_status(404)
            self.finish("not found")


class LoopThread:
    """An event loop of its own in a daemon thread, for servers that synchronous code talks to.

    Subclasses start their servers in ``boot()`` (it runs on that loop); ``call()`` runs a function
    there, since the servers' state is not thread-safe.
    """

    def __init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def boot(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self.boot()
            self._ready.set()

        self._loop.run_until_complete(boot())
        self._loop.run_forever()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def call(self, function, *args):
        """Run ``function`` on the loop and return its result."""
        assert self._loop is not None
        done = threading.Event()
        box: Dict[str, Any] = {}

        def run() -> None:
            box["value"] = function(*args)
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)
        return box.get("value")


class BackgroundServers(LoopThread):
    """The fakes on their own loop in a thread: for tests that run imgurd as a subprocess."""

    def __init__(self, imgur: Optional[FakeImgur] = None, origin: Optional[Origin] = None) -> None:
        super().__init__()
        self.imgur = imgur or FakeImgur()
        self.origin = origin or Origin()

    def boot(self) -> None:
        self.imgur.start()
        self.origin.start()
