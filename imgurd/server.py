"""Running the service: listen, tell systemd, and shut down gracefully on SIGTERM/SIGINT (SPEC 3)."""

import asyncio
import logging
import os
import signal
import socket

from tornado.netutil import bind_sockets

from . import __version__, listener
from .service import Service, curl_descriptors

log = logging.getLogger("imgurd")


def sd_notify(state: str) -> bool:
    """Send ``state`` to systemd's ``NOTIFY_SOCKET`` if there is one (no libsystemd needed)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError as exc:
        log.warning("could not notify systemd at NOTIFY_SOCKET: %s", exc)
        return False


async def serve(config) -> None:
    """Run until SIGTERM/SIGINT, then drain and return."""
    service = Service(config)
    listener.check_descriptors(config, curl_descriptors(config))
    # bodies are capped per route: the upload handler raises the limit above max_body_bytes for itself
    # (it answers 413 itself), every other route takes at most a few KiB
    server = listener.make_server(service.application(), config)
    sockets = bind_sockets(config.port, config.host)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]  # the real one, when port 0 asked for any
    listener.warn_if_exposed([sock.getsockname()[0] for sock in sockets], config.api_token)
    service.start()
    log.info("imgurd %s listening on http://%s:%d (max_concurrency=%d, upload auth: %s)",
             __version__, config.host, port, config.max_concurrency,
             "OAuth bearer" if service.tokens.uses_oauth else "Client-ID")
    sd_notify("READY=1\nSTATUS=listening on %s:%d" % (config.host, port))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for signum in signals:  # a second signal during the drain ends the drain at once
        loop.add_signal_handler(signum, _hurry, service)

    sd_notify("STOPPING=1")
    service.stopping = True  # connections kept alive may still send a POST: it is refused with 503
    log.info("shutting down: no new connections; waiting up to %g s for %d transfers in flight",
             config.shutdown_timeout, service.store.in_flight)
    server.stop()
    await service.stop(config.shutdown_timeout)
    # The curl client is not closed: transfers abandoned above still have curl timers scheduled, and
    # closing under them makes tornado log tracebacks. The process is about to exit and frees it all.
    log.info("stopped")


def _hurry(service: Service) -> None:
    log.warning("second signal: abandoning transfers in flight now")
    service.pipeline.abandon()


def run(config) -> None:
    asyncio.run(serve(config))
