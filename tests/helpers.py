"""Helpers for the tests that run the installed commands as subprocesses, as a user runs them."""

import signal
import socket
import subprocess

from tests.daemon import imgurd_command, installed_command, spawn_imgurd, wait_listening  # noqa: F401 (tests import them from here)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    """The installed imgurd with ``args``, on a port it picks (``--port 0``), or on ``port`` (a restart
    passes the port of the process it replaces); its stderr is kept for ``stop``."""

    def __init__(self, *args, env=None, port=None, preexec_fn=None):
        given = ("--port", str(port)) if port else ()  # the last --port wins
        self.process = spawn_imgurd((*given, *args), env=env, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=preexec_fn)
        self.port = wait_listening(self.process, 15)
        if self.port is None:
            self.process.kill()
            raise AssertionError("imgurd did not start listening: %s" % self.process.communicate()[1])
        self.base = "http://127.0.0.1:%d" % self.port

    def stop(self, sig=signal.SIGTERM, timeout=15):
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err


