"""One fake (``imgur`` or ``origin`` from tests/fakes.py) in a process of its own, plus a control port.

    python -m bench.fakeproc imgur|origin

Prints one JSON line ``{"port": P, "control": Q, "pid": N}`` once listening (127.0.0.1 only), then
serves until stdin closes or SIGTERM. The control port takes ``POST /latency?seconds=S[&jitter=J]``
(the origin's latency then varies per request, uniformly within S * (1 +/- J)), ``GET /stats``,
``POST /timeline?on=1|0`` and ``GET /timeline`` (see ``Timeline``).

The origin serves any ``/img/<size>/<seed>.jpg``: a JPEG-looking body of exactly ``size`` bytes,
distinct per seed (so identical-bytes reuse does not skip uploads), made when asked for instead of
being held in memory: 5,000 images of 100 KB would otherwise take 500 MB in this process.
``/status/404`` and the rest of the Origin's routes work as in the tests.

The fake Imgur also takes the reference relay's ``Client-ID x`` (scenario 6), so that the relay's
uploads cost it the same work as imgurd's.
"""

import asyncio
import collections
import json
import os
import random
import re
import sys
import time
from typing import List, Optional

from tornado import web

from bench.proc import until_stopped
from tests.fakes import (
    FakeImgur,
    Origin,
    _ImgurCreditsHandler,
    _ImgurTokenHandler,
    _ImgurUploadHandler,
    _OriginHandler,
    start_server,
)

_IMG = re.compile(r"^/img/(\d+)/(\d+)\.jpg$")
RELAY_AUTHORIZATION = "Client-ID x"  # what ../shared/bench/reference_relay.py sends
_BASE_SIZE = 32 * 1024 * 1024
_BASE = (os.urandom(64) * (_BASE_SIZE // 64))  # incompressible enough, and cheap to slice


def image(size: int, seed: int) -> bytes:
    """Exactly ``size`` bytes (size >= 16), starting with a JPEG magic number, distinct per seed."""
    head = b"\xff\xd8\xff\xe0" + seed.to_bytes(8, "big")
    body = memoryview(_BASE)[: max(0, size - len(head) - 2)]
    return b"".join((head, body, b"\xff\xd9"))


class LazyFiles(dict):
    """``Origin.files`` that makes ``/img/<size>/<seed>.jpg`` on demand (the Origin only uses ``in`` and ``[]``)."""

    def __contains__(self, path):
        return bool(_IMG.match(path)) or dict.__contains__(self, path)

    def __getitem__(self, path):
        match = _IMG.match(path)
        if match:
            return image(int(match.group(1)), int(match.group(2)))
        return dict.__getitem__(self, path)


class AnyType(dict):
    def __getitem__(self, path):
        return dict.get(self, path, "image/jpeg")


class Counter(collections.Counter):
    """``Origin.hits`` without the memory: counts requests, not per path (100,000 paths in a run)."""

    def __getitem__(self, key):
        return 0

    def __setitem__(self, key, value):
        pass


class Bounded(collections.deque):
    """A list the fakes append to forever (uploads, user agents): keep only the last few."""

    def __init__(self):
        super().__init__(maxlen=16)


class Timeline:
    """Per-request times of image requests, for the phases of scenario 6, while switched on.

    Each record is ``[seed, arrived, body_received, finished, status]`` in seconds since the epoch
    (``time.time()``, comparable with the other processes): headers in, body in (the handler starts),
    answer written. The seed is the image's: from the URL at the origin, from the uploaded bytes
    (``image()`` writes it after the JPEG magic) at the fake Imgur, whatever the file name.
    """

    def __init__(self) -> None:
        self.records: Optional[List[list]] = None

    def switch(self, on: bool) -> None:
        self.records = [] if on else None

    def take(self) -> List[list]:
        records, self.records = self.records or [], ([] if self.records is not None else None)
        return records


class TimedOriginHandler(_OriginHandler):
    body_received = 0.0

    def prepare(self) -> None:
        self.body_received = time.time()

    def on_finish(self) -> None:
        records = self.origin.timeline.records
        match = _IMG.match(self.request.path)
        if records is not None and match:
            now = time.time()
            arrived = now - self.request.request_time()
            records.append([int(match.group(2)), arrived, self.body_received, now, self.get_status()])


class TimedUploadHandler(_ImgurUploadHandler):
    body_received = 0.0

    def prepare(self) -> None:
        self.body_received = time.time()

    def _auth_error(self) -> bool:
        if self.request.headers.get("Authorization") == RELAY_AUTHORIZATION:
            return False
        return super()._auth_error()

    def on_finish(self) -> None:
        fake = self.fake
        if self.get_status() == 200:
            fake.uploaded += 1
        files = self.request.files.get("image")
        if fake.timeline.records is not None and files:
            now = time.time()
            seed = int.from_bytes(files[0]["body"][4:12], "big")
            fake.timeline.records.append([seed, now - self.request.request_time(), self.body_received, now,
                                          self.get_status()])


class BenchImgur(FakeImgur):
    """The fake Imgur of the tests with a timeline, a count of uploads answered 200, and the relay's id."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.timeline = Timeline()
        self.uploaded = 0

    def application(self) -> web.Application:
        return web.Application([
            (r"/3/(?:image|upload)", TimedUploadHandler, {"fake": self}),
            (r"/3/credits", _ImgurCreditsHandler, {"fake": self}),
            (r"/oauth2/token", _ImgurTokenHandler, {"fake": self}),
        ])


class JitteryOrigin(Origin):
    """The Origin, whose ``latency`` can vary per request: ``base * uniform(1 - jitter, 1 + jitter)``.

    With one fixed latency, transfers started together finish together, forever after: the
    pipeline then works in synchronised waves of C completions, which real origins never produce.
    """

    jitter = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.timeline = Timeline()

    def application(self) -> web.Application:
        return web.Application([(r"/.*", TimedOriginHandler, {"origin": self})])

    @property
    def latency(self) -> float:
        if not self.jitter or not self._latency:
            return self._latency
        return self._latency * random.uniform(1 - self.jitter, 1 + self.jitter)

    @latency.setter
    def latency(self, value: float) -> None:
        self._latency = value


class Control(web.RequestHandler):
    def initialize(self, fake) -> None:
        self.fake = fake

    def post(self, what: str) -> None:
        if what == "latency":
            self.fake.latency = float(self.get_query_argument("seconds"))
            if isinstance(self.fake, JitteryOrigin):
                self.fake.jitter = float(self.get_query_argument("jitter", "0"))
        elif what == "timeline":
            self.fake.timeline.switch(self.get_query_argument("on") == "1")
        self.finish({"ok": True})

    def get(self, what: str) -> None:
        fake = self.fake
        if what == "timeline":
            self.finish({"records": fake.timeline.take()})
            return
        times = os.times()
        stats = {"requests": fake.requests, "latency": fake.latency, "cpu": times.user + times.system}
        if isinstance(fake, FakeImgur):
            stats["max_in_flight"] = fake.max_in_flight
            stats["in_flight"] = fake.in_flight
            stats["uploaded"] = fake.uploaded
            fake.max_in_flight = fake.in_flight  # a window per read
        self.finish(stats)


async def serve(role: str) -> None:
    if role == "imgur":
        fake = BenchImgur(client_id="bench-client-id")
        fake.uploads = Bounded()
        fake.request_times = Bounded()
    else:
        fake = JitteryOrigin()
        fake.files = LazyFiles()
        fake.types = AnyType()
        fake.hits = Counter()
        fake.user_agents = Bounded()
    fake.start()
    _, control = start_server(web.Application([(r"/(\w+)", Control, {"fake": fake})]))
    print(json.dumps({"port": fake.port, "control": control, "pid": os.getpid()}), flush=True)
    await until_stopped()


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in ("imgur", "origin"):
        raise SystemExit("usage: python -m bench.fakeproc imgur|origin")
    asyncio.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
