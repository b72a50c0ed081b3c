"""Helpers for the tests that run the installed commands as subprocesses, as a user runs them."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.fakes import BackgroundServers


def installed_command(name):
    found = shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.exists(found), "install the package first: pip install -e '.[test]'"
    return found


def imgurd_command():
    return installed_command("imgurd")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    def __init__(self, *args, env=None, preexec_fn=None):
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("IMGURD_")}
        full_env.update(env or {})
        self.process = subprocess.Popen([imgurd_command(), "--port", str(self.port), *args], env=full_env,
                                        stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert self.process.poll() is None, self.process.stderr.read()
                time.sleep(0.05)
        raise AssertionError("imgurd did not start listening")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err


@pytest.fixture
def servers():
    with BackgroundServers() as running:
        yield running
