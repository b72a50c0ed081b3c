"""Running the service: listen, tell systemd, and shut down gracefully on SIGTERM/SIGINT (SPEC 3)."""

import asyncio
import logging
import os
import signal
import socket
import time

from tornado.netutil import bind_sockets

from . import __version__, listener
from .logs import plural
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
    # the signals first: one that comes once the port is open must not end the process undrained
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    # SIGHUP, which would end the process at once (no drain, no state saved), is what operators send
    # for a reload: there is none, so it is only logged
    loop.add_signal_handler(signal.SIGHUP, log.warning, "SIGHUP ignored: imgurd has no reload; restart it to "
                            "apply a new configuration (SIGTERM stops it cleanly)")
    service = Service(config)
    service.load_state()  # before listening: a state file that cannot be used stops start-up
    listener.check_descriptors(config, curl_descriptors(config))
    # bodies are capped per route: the upload handler raises the limit above max_body_bytes for itself
    # (it answers 413 itself), every other route takes at most a few KiB
    server = listener.make_server(service.application(), config)
    sockets = bind_sockets(config.port, config.host)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]  # the real one, when port 0 asked for any
    listener.warn_if_exposed([sock.getsockname()[0] for sock in sockets], config.api_token)
    service.start()
    log.info("imgurd %s listening on http://%s; %s", __version__, host_port(config.host, port), summary(config))
    if config.dry_run:
        log.warning("dry run: nothing is uploaded to Imgur; each image that would be uploaded completes with "
                    "a dry-run:<sha256 prefix>.<ext> link")
    if config.max_urls_per_job > config.max_queued_urls:
        log.warning("max_urls_per_job (%d) is more than max_queued_urls (%d): a job of more than %d URLs is "
                    "answered 503 for good", config.max_urls_per_job, config.max_queued_urls, config.max_queued_urls)
    sd_notify("READY=1\nSTATUS=listening on %s" % host_port(config.host, port))
    await stop.wait()
    for signum in signals:  # a second signal during the drain ends the drain at once
        loop.add_signal_handler(signum, _hurry, service)

    sd_notify("STOPPING=1")
    service.stopping = True  # connections kept alive may still send a POST: it is refused with 503
    in_flight = service.store.in_flight
    log.info("shutting down: no new connections; waiting up to %g s for %s in flight",
             config.shutdown_timeout, plural(in_flight, "transfer"))
    server.stop()
    started = time.monotonic()
    await service.stop(config.shutdown_timeout)
    log.info("drain over after %.1f s: %d of %s in flight finished, %s left unfinished",
             time.monotonic() - started, in_flight - service.store.in_flight, plural(in_flight, "transfer"),
             plural(service.store.backlog, "URL"))
    # The curl client is not closed: transfers abandoned above still have curl timers scheduled, and
    # closing under them makes tornado log tracebacks. The process is about to exit and frees it all.
    log.info("stopped")


def host_port(host: str, port: int) -> str:
    """``host:port`` as in a URL: an IPv6 address goes in brackets."""
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def summary(config) -> str:
    """What the start-up line says beyond the address: which Imgur, as whom, and the unsafe switches."""
    if config.dry_run:
        target = "DRY RUN: nothing is uploaded to Imgur"
    else:
        who = "into your account (OAuth refresh token)" if config.uses_oauth else "anonymously (Client-ID)"
        target = "uploads to %s %s" % (config.api_url, who)
    private = "allowed" if config.allow_private_networks else "refused"
    return "%s; max_concurrency=%d; private networks %s" % (target, config.max_concurrency, private)


def _hurry(service: Service) -> None:
    log.warning("second signal: abandoning transfers in flight now")
    service.pipeline.abandon()


def run(config) -> None:
    asyncio.run(serve(config))
