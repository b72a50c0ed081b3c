"""Lingering close, as nginx does it: an answer given before the request body has all arrived (a 413
for an endless body, a 401, a 503) must reach the client.

Closing a socket with unread data in its receive buffer makes the kernel send RST instead of FIN, and
the client's kernel then drops what the client had not read yet, our answer included (curl: "Send
failure: Connection reset by peer", no status). So such a connection is not closed at once: its write
side is shut (the client sees the whole answer, then the end), and whatever still arrives is read and
thrown away until the client closes, for ``LINGER_SECONDS`` and ``LINGER_BYTES`` at most, whichever
comes first. It stays counted in ``max_connections`` meanwhile (listener.Server), so lingering
clients cannot pile up beyond it.
"""

import socket
from typing import Any, Callable, List, Optional

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

LINGER_SECONDS = 2.0  # a client still sending after this long gets the RST it asked for
LINGER_BYTES = 8 * 1024 * 1024  # read away at most this much: a fast client cannot keep a core busy
READS_PER_WAKEUP = 16  # reads of up to READ_SIZE bytes, then other callbacks run
READ_SIZE = 64 * 1024

_discard = memoryview(bytearray(READ_SIZE))  # one scratch buffer: what is read is thrown away


class LingeringIOStream(IOStream):
    """An IOStream that lingers instead of closing when ``linger_on_close`` is set (``linger_after``)
    and the close is an orderly one (no error, nothing left unwritten)."""

    linger_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lingering: Optional[Linger] = None

    def close_fd(self) -> None:
        if self.linger_on_close and self.error is None and not self.writing():
            sock, self.socket = self.socket, None
            self.lingering = Linger(sock)
        else:
            super().close_fd()

    def when_gone(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the socket is closed for good: now, unless it lingers."""
        if self.lingering is None or self.lingering.done:
            callback()
        else:
            self.lingering.callbacks.append(callback)


class Linger:
    """Shuts the write side of ``sock``, reads and discards until EOF or a limit, then closes it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.left = LINGER_BYTES
        self.done = False
        self.callbacks: List[Callable[[], None]] = []
        self.loop = IOLoop.current()
        self.timeout: Optional[object] = None
        try:
            sock.shutdown(socket.SHUT_WR)  # FIN after the answer
        except OSError:  # the client is gone already
            self._close(registered=False)
            return
        self.timeout = self.loop.call_later(LINGER_SECONDS, self._close)
        self.loop.add_handler(sock, self._readable, IOLoop.READ)

    def _readable(self, fd: Any, events: int) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                count = self.sock.recv_into(_discard)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                count = 0
            self.left -= count
            if count == 0 or self.left <= 0:  # the client closed, or sent too much: done
                self._close()
                return

    def _close(self, registered: bool = True) -> None:
        if self.done:
            return
        self.done = True
        if registered:
            self.loop.remove_handler(self.sock)
        if self.timeout is not None:
            self.loop.remove_timeout(self.timeout)
        self.sock.close()
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


def linger_after(connection: Any) -> None:
    """Have the stream of ``connection`` (tornado's HTTP1Connection) linger when it is closed."""
    stream = getattr(connection, "stream", None)
    if isinstance(stream, LingeringIOStream):
        stream.linger_on_close = True
