"""Prometheus metrics (SPEC 1, /metrics), on a registry of the service's own.

Counters move where things happen (the pipeline and the API); gauges of state
(in flight, backlog, Imgur's budgets) are read at scrape time, so nothing has
to be kept in step. No label ever holds a URL, a job id or a secret.
"""

from typing import Any, Callable, Dict, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

disable_created_metrics()  # the *_created series only double the scrape for a single long-lived process

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: Optional[CollectorRegistry] = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs_accepted = Counter("imgurd_jobs_accepted", "Jobs accepted by POST /v1/images/upload.",
                                     registry=r)
        self.urls_accepted = Counter("imgurd_urls_accepted", "URLs accepted (after de-duplication).", registry=r)
        self.urls_finished = Counter("imgurd_urls_finished", "URLs finished, by outcome and failure class.",
                                     ["outcome", "failure_class"], registry=r)
        self.downloaded_bytes = Counter("imgurd_downloaded_bytes", "Bytes of images downloaded.", registry=r)
        self.uploaded_bytes = Counter("imgurd_uploaded_bytes", "Bytes of images uploaded to Imgur.", registry=r)
        self.reused = Counter("imgurd_identical_uploads_reused",
                              "URLs whose bytes were already uploaded: the link was reused.", registry=r)
        self.download_seconds = Histogram("imgurd_download_duration_seconds",
                                          "Time to download one image, retries included.",
                                          buckets=DURATION_BUCKETS, registry=r)
        self.upload_seconds = Histogram("imgurd_upload_duration_seconds",
                                        "Time to upload one image to Imgur, retries and rate-limit waits included.",
                                        buckets=DURATION_BUCKETS, registry=r)
        self.in_flight = Gauge("imgurd_transfers_in_flight", "Transfers (download + upload) in flight.", registry=r)
        self.backlog = Gauge("imgurd_backlog_urls", "URLs accepted and not finished, all jobs.", registry=r)
        self.jobs_retained = Gauge("imgurd_jobs_retained", "Jobs held in memory (running and finished).",
                                   registry=r)
        self.retained_bytes = Gauge("imgurd_jobs_retained_bytes",
                                    "Bytes of job data held (URLs, reasons, links), against max_retained_bytes.",
                                    registry=r)
        self.links = Gauge("imgurd_links", "Distinct Imgur links uploaded by this process.", registry=r)
        self.imgur_wait = Gauge("imgurd_imgur_wait_seconds",
                                "Seconds until uploads resume, while a spent Imgur budget holds them (else 0).",
                                registry=r)
        self.urls_waiting = Gauge("imgurd_urls_waiting",
                                  "URLs held back by a spent Imgur budget (all unfinished ones while it holds "
                                  "uploads, else those waiting for an answer in flight).", registry=r)
        # urls_finished's series by (outcome, failure_class): labels() looks one up under a lock
        self._finished: Dict[Tuple[str, str], Any] = {("complete", ""): self.urls_finished.labels("complete", "")}
        self._finished["complete", ""].inc(0)  # the series exists, at 0, before the first URL finishes

    def watch(self, store, gate) -> None:
        """Read state gauges from the store and the rate-limit gate at scrape time."""
        self.in_flight.set_function(lambda: store.in_flight)
        self.backlog.set_function(lambda: store.backlog)
        self.jobs_retained.set_function(lambda: len(store.jobs))
        self.retained_bytes.set_function(lambda: store.retained_bytes)
        self.links.set_function(lambda: len(store.links))

        def wait_seconds() -> float:
            held = gate.waiting()
            return max(0.0, held.until - gate.clock()) if held is not None else 0.0

        self.imgur_wait.set_function(wait_seconds)
        self.urls_waiting.set_function(lambda: store.backlog if gate.waiting() is not None else gate.waiters)
        self.registry.register(_RateLimitCollector(gate.remaining))

    def finished(self, outcome: str, failure_class: str = "") -> None:
        child = self._finished.get((outcome, failure_class))
        if child is None:
            child = self._finished[outcome, failure_class] = self.urls_finished.labels(outcome, failure_class)
        child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _RateLimitCollector:
    """imgurd_imgur_rate_limit_remaining{budget}: Imgur's budgets as last reported (and since counted)."""

    def __init__(self, remaining: Callable[[], Dict[str, Optional[float]]]) -> None:
        self.remaining = remaining

    def describe(self):
        return []

    def collect(self):
        family = GaugeMetricFamily("imgurd_imgur_rate_limit_remaining",
                                   "Imgur rate-limit budget remaining (client and user credits, POST uploads); "
                                   "absent until Imgur reported it.", labels=["budget"])
        for budget, value in self.remaining().items():
            if value is not None:
                family.add_metric([budget], max(0.0, value))
        yield family
