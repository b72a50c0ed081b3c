"""Wiring: one Service object owns the store, the HTTP client and the pipeline, and builds the app."""

import logging
from typing import Dict, Optional

from tornado import web
from tornado.curl_httpclient import CurlAsyncHTTPClient
from tornado.ioloop import IOLoop, PeriodicCallback

from . import handlers, logs, openapi
from .download import Downloader
from .imgur import ImgurClient
from .jobs import EVICT_BATCH, JobStore
from .metrics import Metrics
from .oauth import TokenSource
from .pipeline import Pipeline
from .ratelimit import RateGate
from .reports import Reports, utc_stamp
from .state import StateKeeper

log = logging.getLogger("imgurd")

EVICT_INTERVAL_MS = 5000
CLIENT_SLACK = 2  # curl handles beyond max_concurrency, so a request never waits in the client's queue


def curl_descriptors(config) -> int:
    """File descriptors the curl clients may hold at most: a connection per handle in use, and curl
    caches up to 4 idle connections per handle; 2 more per client for its wake-up socket pair."""
    handles = config.max_concurrency + CLIENT_SLACK + 2
    return 4 * handles + 2 * 2


class Service:
    def __init__(self, config) -> None:
        self.config = config
        self.stopping = False  # set when shutdown begins: no new jobs
        self.receiving_bytes = 0  # bytes of POST bodies being received, all connections (handlers.UploadHandler)
        self.unsent_bytes = 0  # bytes of large answers their clients have not taken yet (handlers.JsonHandler)
        self.store = JobStore(config.job_ttl, config.max_jobs, max_retained_bytes=config.max_retained_bytes)
        self.reports = Reports(self.store)  # the API's JSON of it, encoded once where it can be
        # Every transfer holds a semaphore slot while it uses curl, so the client never has to queue a
        # request (tornado would count that wait against connect_timeout). Downloads and uploads share
        # the one client: one set of curl timers on the loop instead of two shortens every transfer's
        # path. Its pool of connections is shared too; the network guard vets the connection every
        # download request goes out on, reused ones included (netguard.py), so a download can never
        # ride a connection opened to Imgur (an internal api_url, say).
        self.http = CurlAsyncHTTPClient(force_instance=True, max_clients=config.max_concurrency + CLIENT_SLACK)
        # Token requests have a client of their own too: upload handles carry the upload's own body
        # callbacks (READFUNCTION/SEEKFUNCTION), which tornado before 6.6 does not reset between requests.
        self.token_http = CurlAsyncHTTPClient(force_instance=True, max_clients=2)
        self.tokens = TokenSource(config, self.token_http)
        self.gate = RateGate(config.max_rate_limit_wait)
        self.imgur = ImgurClient(config, self.http, self.tokens, self.gate)
        self.downloader = Downloader(config, self.http)
        self.metrics = Metrics()
        self.metrics.watch(self.store, self.gate)
        self.pipeline = Pipeline(config, self.store, self.downloader, self.imgur, self.metrics)
        self.openapi = openapi.document(config)
        self._evictor = PeriodicCallback(self._evict, EVICT_INTERVAL_MS)
        # opt-in: without state_file nothing is ever written to disk
        self.state = StateKeeper(config, self.store, self.pipeline.links_by_digest) if config.state_file else None

    def load_state(self) -> None:
        """Restore the state file, if one is configured (before listening); StateError if it cannot be used."""
        if self.state is not None:
            self.state.load()

    def start(self) -> None:
        if not self.config.dry_run:
            IOLoop.current().spawn_callback(self.imgur.check_credits)
        self.pipeline.start()
        self._evictor.start()
        if self.state is not None:
            self.state.start()

    def waiting(self) -> Optional[Dict[str, str]]:
        """Why and until when Imgur's budgets hold every upload (a job's ``waiting``), or None."""
        held = self.gate.waiting()
        if held is None:
            return None
        return {"reason": held.reason, "until": utc_stamp(held.until), "budget": held.budget}

    def job_accepted(self, job) -> None:
        log.info("accepted job=%s with %s", job.id, logs.plural(len(job), "URL"), extra={"job": job.id})
        self.metrics.jobs_accepted.inc()
        self.metrics.urls_accepted.inc(len(job))
        self._evict()  # finished jobs beyond max_retained_bytes make room for this one now
        self.pipeline.wake()

    def _evict(self) -> None:
        if self.store.evict() == EVICT_BATCH:  # more to drop: continue after other callbacks ran
            IOLoop.current().add_callback(self._evict)

    async def stop(self, timeout: float) -> None:
        self._evictor.stop()
        await self.pipeline.stop(timeout)
        # every URL left unfinished is named; when the state file kept it, it resumes on the next start,
        # which is worth knowing but no cause for alarm
        saved = self.state is not None and await self.state.stop()
        level = logging.INFO if saved else logging.WARNING
        for item in self.store.unfinished():
            log.log(level, "abandoned job=%s url=%s", item.job.id, item.url, extra={"job": item.job.id, "url": item.url})

    def close(self) -> None:
        self.pipeline.converter.close()
        for client in (self.http, self.token_http):
            client.close()

    def application(self) -> web.Application:
        args = {"service": self}
        return web.Application(
            [
                (r"/v1/images/upload", handlers.UploadHandler, args),
                (r"/v1/images/upload/([^/]+)", handlers.JobHandler, args),
                (r"/v1/images", handlers.ImagesHandler, args),
                (r"/v1/openapi.json", handlers.OpenApiHandler, args),
                (r"/healthz", handlers.HealthHandler, args),
                (r"/metrics", handlers.MetricsHandler, args),
            ],
            default_handler_class=handlers.NotFoundHandler,
            default_handler_args=args,
            log_function=logs.access_log,
            compress_response=False,
            xheaders=False,
        )
