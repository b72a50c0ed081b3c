"""Fixtures: the fakes and the real service on one loopback event loop, and a small API client."""

import compileall
import json
import os
import time
from typing import Any, Dict, Optional, Tuple

import pytest
from tornado import gen
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.netutil import bind_sockets

import imgurd
from imgurd import backoff, listener
from imgurd.service import Service
from imgurd.settings import defaults
from tests.fakes import BackgroundServers, FakeImgur, Origin


def pytest_configure(config):
    """imgurd compiled once for the run, in the main process before xdist starts its workers: the tests
    start its commands dozens of times, and where PYTHONDONTWRITEBYTECODE is set, nothing is cached and
    every start compiles every module again (0.1 s of CPU each time). The cache goes to __pycache__,
    which git and .dockerignore ignore."""
    if not hasattr(config, "workerinput"):
        compileall.compile_dir(os.path.dirname(imgurd.__file__), quiet=1)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    """Backoff in milliseconds and a short stall window, so fault tests run quickly."""
    monkeypatch.setattr(backoff, "BASE_DELAY", 0.01)
    monkeypatch.setattr(backoff, "MAX_DELAY", 0.05)


@pytest.fixture
def servers():
    """The fakes on a loop of their own, for tests that run imgurd as a subprocess."""
    with BackgroundServers() as running:
        yield running


@pytest.fixture
def imgur(io_loop):
    fake = FakeImgur().start()
    yield fake
    fake.stop()


@pytest.fixture
def origin(io_loop):
    fake = Origin().start()
    yield fake
    fake.stop()


class Api:
    """The running service under test, and a client for its REST API."""

    def __init__(self, service: Service, port: int) -> None:
        self.service = service
        self.port = port
        self.base = "http://127.0.0.1:%d" % port
        self.http = AsyncHTTPClient(force_instance=True)

    async def call(self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
                   raw: Optional[bytes] = None) -> Tuple[int, Any, Any]:
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if payload is None and method == "POST":
            payload = b""
        request = HTTPRequest(self.base + path, method=method, body=payload, headers=headers or {},
                              request_timeout=30)
        response = await self.http.fetch(request, raise_error=False)
        try:
            document = json.loads(response.body) if response.body else None
        except ValueError:
            document = response.body
        return response.code, document, response.headers

    async def submit(self, urls, headers=None) -> str:
        code, document, _ = await self.call("POST", "/v1/images/upload", {"urls": urls}, headers)
        assert code == 202, document
        return document["jobId"]

    async def job(self, job_id: str, headers=None) -> Dict[str, Any]:
        code, document, _ = await self.call("GET", "/v1/images/upload/" + job_id, headers=headers)
        assert code == 200, document
        return document

    async def wait(self, job_id: str, timeout: float = 20, headers=None) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout  # real time: a test may give the store a fake clock
        while True:
            document = await self.job(job_id, headers)
            if document["status"] == "complete":
                return document
            assert time.monotonic() < deadline, "job did not complete in %s s: %r" % (timeout, document)
            await gen.sleep(0.02)


@pytest.fixture
def start_service(io_loop, imgur):
    """``start_service(**settings)``: the real Service, behind the server imgurd listens with, on loopback,
    talking to the fake Imgur."""
    started = []

    def start(**overrides: Any) -> Api:
        values: Dict[str, Any] = dict(client_id=imgur.client_id, api_url=imgur.url, allow_private_networks=True,
                                      connect_timeout=5.0, request_timeout=10.0, stall_time=2.0)
        values.update(overrides)
        service = Service(defaults(**values))
        server = listener.make_server(service.application(), service.config)
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        service.start()
        started.append((service, server))
        api = Api(service, port)
        api.server = server
        return api

    yield start
    for service, server in started:
        server.stop()
        service.close()
