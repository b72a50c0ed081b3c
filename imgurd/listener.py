"""Accepting client connections (SPEC 3): at most ``max_connections`` open, and never a busy loop
when the process runs out of file descriptors.

tornado's own accept handler, on EMFILE/ENFILE, raises out of the event loop's callback and is
called again at once, since the listening socket stays readable: one traceback and one core per
iteration, and no time left for the connections already open. Here a failed ``accept()`` stops
accepting for ``ACCEPT_PAUSE`` seconds (the kernel keeps new connections waiting in the listen
backlog meanwhile), with one WARNING a minute at most, and connections beyond ``max_connections``
are closed as soon as they are accepted, before tornado spends anything on them.
"""

import errno
import ipaddress
import logging
import resource
import socket
import time
from typing import Any, Callable, List, Optional, Sequence

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from .linger import LingeringIOStream

log = logging.getLogger("imgurd")

ACCEPT_PAUSE = 0.5  # seconds without accepting after accept() failed (out of descriptors, say)
ACCEPT_BATCH = 128  # connections accepted per wake-up at most, so other callbacks run in between
WARN_INTERVAL = 60.0  # seconds between two warnings of the same kind
MAX_HEADER_BYTES = 32 * 1024  # request line and headers (tornado's default is 64 KiB)
OTHER_BODY_BYTES = 16 * 1024  # request body on any route but the upload, which sets its own limit
IDLE_CONNECTION_TIMEOUT = 120
BODY_TIMEOUT = 60
DESCRIPTOR_RESERVE = 64  # descriptors beyond connections and curl's: listening sockets, logs, netlink...


class RateLimitedWarning:
    """One WARNING per ``interval`` at most; the next one says how many were held back."""

    def __init__(self, interval: float = WARN_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.last: Optional[float] = None
        self.held_back = 0

    def __call__(self, message: str, *args: Any) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            self.held_back += 1
            return
        if self.held_back:
            message += " (%d more like it since the last warning)"
            args = args + (self.held_back,)
        self.last = now
        self.held_back = 0
        log.warning(message, *args)


class _Acceptor:
    """Accepts on one listening socket; pauses instead of spinning when ``accept()`` fails."""

    def __init__(self, sock: socket.socket, accepted: Callable[[socket.socket, Any], None],
                 warn: RateLimitedWarning) -> None:
        self.sock = sock
        self.accepted = accepted
        self.warn = warn
        self.loop = IOLoop.current()
        self.paused: Optional[object] = None  # the timeout that resumes accepting
        self.closed = False
        self.pauses = 0
        self.loop.add_handler(sock, self._ready, IOLoop.READ)

    def _ready(self, fd: Any, events: int) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.closed or self.paused is not None:
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as error:
                self._pause(error)
                return
            self.accepted(connection, address)

    def _pause(self, error: OSError) -> None:
        self.loop.remove_handler(self.sock)
        self.paused = self.loop.call_later(ACCEPT_PAUSE, self._resume)
        self.pauses += 1
        if error.errno in (errno.EMFILE, errno.ENFILE):
            self.warn("out of file descriptors (%s): not accepting connections for %g s; the open ones are "
                      "still served. Raise LimitNOFILE (ulimit -n) or lower max_connections",
                      errno.errorcode.get(error.errno or 0, error.errno), ACCEPT_PAUSE)
        else:
            self.warn("accepting a connection failed (%s): not accepting connections for %g s",
                      error.strerror or error, ACCEPT_PAUSE)

    def _resume(self) -> None:
        self.paused = None
        if not self.closed:
            self.loop.add_handler(self.sock, self._ready, IOLoop.READ)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.paused is not None:
            self.loop.remove_timeout(self.paused)
        else:
            self.loop.remove_handler(self.sock)
        self.sock.close()


class Server(HTTPServer):
    """tornado's HTTPServer with its own accept loop, a connection limit, and smaller buffers for
    headers and for the bodies of routes that take none (plain HTTP only: imgurd has no TLS)."""

    def initialize(self, *args: Any, max_connections: int = 1000, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self.open_connections = 0
        self.acceptors: List[_Acceptor] = []
        self.refused = 0  # connections closed for being beyond max_connections
        self._warn_accept = RateLimitedWarning()
        self._warn_full = RateLimitedWarning()

    def add_sockets(self, sockets: Sequence[socket.socket]) -> None:
        for sock in sockets:
            self.acceptors.append(_Acceptor(sock, self._accepted, self._warn_accept))

    def _accepted(self, connection: socket.socket, address: Any) -> None:
        if self.open_connections >= self.max_connections:
            connection.close()
            self.refused += 1
            self._warn_full("max_connections (%d) connections are open: new connections are closed at once",
                            self.max_connections)
            return
        try:
            stream = LingeringIOStream(connection, max_buffer_size=self.max_buffer_size,
                                       read_chunk_size=self.read_chunk_size)
        except Exception:
            connection.close()
            raise
        self.handle_stream(stream, address)

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        self.open_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        stream = getattr(server_conn, "stream", None)
        if isinstance(stream, LingeringIOStream):
            stream.when_gone(self._gone)  # a lingering connection counts until it is closed (linger.py)
        else:
            self._gone()

    def _gone(self) -> None:
        self.open_connections -= 1

    def stop(self) -> None:
        for acceptor in self.acceptors:
            acceptor.close()
        self.acceptors = []
        super().stop()


def make_server(application: Any, config: Any) -> Server:
    """The server imgurd listens with (the tests use it too)."""
    return Server(application, max_connections=config.max_connections, max_header_size=MAX_HEADER_BYTES,
                  max_body_size=OTHER_BODY_BYTES, idle_connection_timeout=IDLE_CONNECTION_TIMEOUT,
                  body_timeout=BODY_TIMEOUT)


def descriptors_needed(config: Any, curl_handles: int) -> int:
    return config.max_connections + curl_handles + DESCRIPTOR_RESERVE


def check_descriptors(config: Any, curl_handles: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards what max_connections needs (up to the hard limit) and warn
    when it stays below: then descriptors may run out before max_connections is reached. Returns the
    soft limit in force."""
    needed = descriptors_needed(config, curl_handles)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed and (hard == resource.RLIM_INFINITY or hard > soft):
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("the file descriptor limit (%d) is below what max_connections=%d needs (%d, with the "
                    "transfers' and the service's own): raise LimitNOFILE (ulimit -n) or lower max_connections; "
                    "when descriptors run out, accepting pauses", soft, config.max_connections, needed)
    return soft


def warn_if_exposed(addresses: Sequence[str], api_token: Optional[str]) -> bool:
    """Warn when listening beyond loopback without ``api_token``. True when it warned."""
    if api_token:
        return False
    exposed = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            exposed.append(address)
            continue
        if not (ip.version == 4 and ip in _LOOPBACK_V4 or ip == _LOOPBACK_V6):
            exposed.append(address)
    if exposed:
        log.warning("listening on %s without api_token: anyone who can reach this port can submit jobs and "
                    "spend the Imgur upload quota; set api_token (IMGURD_API_TOKEN)", ", ".join(exposed))
    return bool(exposed)


_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")
