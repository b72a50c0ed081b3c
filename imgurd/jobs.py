"""In-memory job store: jobs, their URLs' outcomes, the link registry, fair scheduling, eviction.

What the API makes of it in JSON is reports.py's concern.

Everything here is O(1) per call (or bounded per call, for eviction), so the
request handlers never do work proportional to the backlog.
"""

import collections
import sys
import time
import uuid
from typing import Callable, Deque, Dict, Iterator, List, Optional, OrderedDict, Sequence

PENDING = "pending"
IN_PROGRESS = "in-progress"
COMPLETE = "complete"
FAILED = "failed"

EVICT_BATCH = 1000  # most jobs evicted in one call, so a sweep never holds the loop long

# What a retained job costs beyond the text of its URLs, reasons and links (each counted with
# sys.getsizeof), measured with tracemalloc (tests/test_hostile_load.py checks the count stays above it)
JOB_OVERHEAD = 800  # the Job object, its id, its lists, bytearray and dict, its entries in the store's dicts
URL_OVERHEAD = 16  # a URL's slot in the list of URLs and its state byte
ERROR_OVERHEAD = 80  # an entry of a job's dict of reasons
LINK_SLOT = 8  # a slot of a job's list of links (made for every URL at the first link)


def job_bytes(urls: Sequence[str], idempotency_key: Optional[str] = None) -> int:
    """The bytes a new job of ``urls`` is counted for against ``max_retained_bytes``."""
    size = JOB_OVERHEAD + URL_OVERHEAD * len(urls) + sum(map(sys.getsizeof, urls))
    if idempotency_key is not None:
        size += sys.getsizeof(idempotency_key)
    return size


# a URL's state, one byte each in Job.states
_PENDING, _IN_PROGRESS, _COMPLETE, _FAILED = 0, 1, 2, 3
COMPLETE_STATE, FAILED_STATE = _COMPLETE, _FAILED  # for the reports (reports.py)
STATE_NAMES = (PENDING, IN_PROGRESS, COMPLETE, FAILED)
HELD_STATE_NAMES = (PENDING, PENDING, COMPLETE, FAILED)  # while Imgur's budget holds every upload


class Item:
    """A handle on one URL of a job, made only while it is handed out for transfer.

    A job keeps its URLs' outcomes in flat per-job lists, not in one object per URL: with
    hundreds of thousands of retained URLs that saves memory and, more, keeps them out of the
    garbage collector's way (its full collections would otherwise walk every one of them).
    """

    __slots__ = ("job", "index")

    def __init__(self, job: "Job", index: int) -> None:
        self.job = job
        self.index = index

    @property
    def url(self) -> str:
        return self.job.urls[self.index]


class Job:
    __slots__ = ("id", "created", "finished", "urls", "states", "links", "errors", "next_index", "started",
                 "done", "idempotency_key", "finished_at", "size")

    def __init__(self, urls: Sequence[str], idempotency_key: Optional[str] = None, size: int = 0) -> None:
        self.id = str(uuid.uuid4())
        self.created = time.time()
        self.finished: Optional[float] = None  # wall clock, for the API
        self.finished_at: Optional[float] = None  # monotonic, for eviction
        self.urls: List[str] = list(urls)
        self.states = bytearray(len(self.urls))  # _PENDING ... _FAILED, by index
        self.links: Optional[List[Optional[str]]] = None  # Imgur link by index, made at the first one
        self.errors: Dict[int, str] = {}  # index -> reason, for the failed ones
        self.next_index = 0  # the next URL to hand to the scheduler
        self.started = 0
        self.done = 0
        self.idempotency_key = idempotency_key
        self.size = size  # bytes counted against max_retained_bytes (job_bytes, plus reasons and links)

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def status(self) -> str:
        if self.done == len(self.urls):
            return COMPLETE
        return IN_PROGRESS if self.started else PENDING


class JobStore:
    """All jobs, the backlog count, the list of uploaded links, and the round-robin run queue.

    Retained jobs are bounded in number (``max_jobs``), age (``job_ttl``) and bytes
    (``max_retained_bytes``: URLs, reasons and links, with what holds them): finished jobs beyond any
    of them are evicted, oldest finished first. Unfinished jobs cannot be evicted, so a job is
    accepted only while the unfinished ones fit (``fits``).
    """

    def __init__(self, job_ttl: float, max_jobs: int, clock: Callable[[], float] = time.monotonic,
                 max_retained_bytes: Optional[int] = None) -> None:
        self.job_ttl = job_ttl
        self.max_jobs = max_jobs
        self.max_retained_bytes = max_retained_bytes if max_retained_bytes is not None else sys.maxsize
        self.retained_bytes = 0  # job.size over all jobs held
        self.unfinished_bytes = 0  # ... over the jobs not finished
        self.clock = clock
        self.jobs: Dict[str, Job] = {}
        self.finished_jobs: OrderedDict[str, Job] = collections.OrderedDict()
        self.idempotency: Dict[str, Job] = {}
        self.backlog = 0  # URLs accepted and not yet finished, all jobs
        self.in_flight = 0
        self.links: List[str] = []  # append-only: links are never removed or reordered
        self._link_set = set()
        self._runnable: Deque[Job] = collections.deque()  # jobs with URLs not yet handed out
        self.on_evicted: Callable[[Job], None] = lambda job: None  # told of every job dropped

    # --- accepting

    def fits(self, size: int) -> bool:
        """Whether a new job of ``size`` bytes (``job_bytes``) fits beside the unfinished ones."""
        return self.unfinished_bytes + size <= self.max_retained_bytes

    def add(self, urls: Sequence[str], idempotency_key: Optional[str] = None, size: Optional[int] = None) -> Job:
        """A new job; the caller checked ``fits`` and calls ``evict`` to make room among finished jobs."""
        job = Job(urls, idempotency_key, job_bytes(urls, idempotency_key) if size is None else size)
        self.retained_bytes += job.size
        self.unfinished_bytes += job.size
        self.jobs[job.id] = job
        if idempotency_key is not None:
            self.idempotency[idempotency_key] = job
        self.backlog += len(job)
        self._runnable.append(job)
        return job

    def get(self, job_id: str) -> Optional[Job]:
        """The job, unless unknown or finished longer than ``job_ttl`` ago (even before the sweep drops it)."""
        job = self.jobs.get(job_id)
        if job is not None and job.finished_at is not None and self.clock() - job.finished_at >= self.job_ttl:
            return None
        return job

    def by_idempotency_key(self, key: str) -> Optional[Job]:
        """The job made with ``key``, while it is retained (the same ``job_ttl`` rule as ``get``)."""
        job = self.idempotency.get(key)
        return self.get(job.id) if job is not None else None

    # --- scheduling

    def next_item(self, admit: Optional[Callable[[Job, str], bool]] = None) -> Optional[Item]:
        """The next URL to transfer, one job at a time in turn, so a small job is never stuck behind a big one.

        ``admit(job, url)`` may refuse the job's next URL (its host is full): the job then leaves the
        run queue, held by whoever refused it until ``requeue``. Each job is looked at once at most
        per refusal, so a call costs O(1) amortised, whatever the backlog.
        """
        runnable = self._runnable
        while runnable:
            job = runnable.popleft()
            if admit is not None and not admit(job, job.urls[job.next_index]):
                continue
            item = Item(job, job.next_index)
            following = job.states.find(_PENDING, job.next_index + 1)  # a restored job (imgurd.state) has gaps
            job.next_index = following if following >= 0 else len(job)
            if job.next_index < len(job):
                runnable.append(job)
            return item
        return None

    def requeue(self, job: Job) -> None:
        """A job refused by ``admit`` may go on: it is served next."""
        self._runnable.appendleft(job)

    # --- transfers

    def start(self, item: Item) -> None:
        item.job.states[item.index] = _IN_PROGRESS
        item.job.started += 1
        self.in_flight += 1

    def complete(self, item: Item, link: str) -> None:
        job = item.job
        grown = sys.getsizeof(link)
        if job.links is None:
            job.links = [None] * len(job)
            grown += LINK_SLOT * len(job)
        job.links[item.index] = link
        self._grow(job, grown)
        if link not in self._link_set:
            self._link_set.add(link)
            self.links.append(link)
        self._finish(item, _COMPLETE)

    def fail(self, item: Item, reason: str) -> None:
        item.job.errors[item.index] = reason
        self._grow(item.job, sys.getsizeof(reason) + ERROR_OVERHEAD)
        self._finish(item, _FAILED)

    def _grow(self, job: Job, size: int) -> None:
        """A reason or a link was added to an unfinished job."""
        job.size += size
        self.retained_bytes += size
        self.unfinished_bytes += size

    def _finish(self, item: Item, state: int) -> None:
        job = item.job
        was_started = job.states[item.index] == _IN_PROGRESS
        job.states[item.index] = state
        if was_started:
            self.in_flight -= 1
        else:
            job.started += 1
        job.done += 1
        self.backlog -= 1
        if job.done == len(job):
            job.finished = time.time()
            job.finished_at = self.clock()
            self.finished_jobs[job.id] = job
            self.unfinished_bytes -= job.size
        self.evict()

    def unfinished(self) -> Iterator[Item]:
        """Every URL not finished yet (for the shutdown report)."""
        for job in self.jobs.values():
            if job.done < len(job):
                for index, state in enumerate(job.states):
                    if state in (_PENDING, _IN_PROGRESS):
                        yield Item(job, index)

    # --- eviction

    def evict(self, limit: int = EVICT_BATCH) -> int:
        """Drop finished jobs past ``job_ttl`` or beyond ``max_jobs`` or ``max_retained_bytes``, oldest
        finished first.

        Returns how many were dropped; at most ``limit`` per call, the rest on the next.
        """
        now = self.clock()
        dropped = 0
        finished = self.finished_jobs
        while finished and dropped < limit:
            job = next(iter(finished.values()))
            if (len(finished) <= self.max_jobs and self.retained_bytes <= self.max_retained_bytes
                    and now - job.finished_at < self.job_ttl):  # type: ignore[operator]
                break
            finished.popitem(last=False)
            del self.jobs[job.id]
            self.retained_bytes -= job.size
            self.on_evicted(job)
            if job.idempotency_key is not None and self.idempotency.get(job.idempotency_key) is job:
                del self.idempotency[job.idempotency_key]
            dropped += 1
        return dropped

    # --- restoring (imgurd.state)

    def adopt(self, job: Job) -> None:
        """Take in a job restored from the state file (imgurd.state), its outcomes set.

        URLs that were in flight when it was saved are pending again; finished jobs should come in
        the order they finished, so that eviction keeps taking the oldest first.
        """
        job.states = bytearray(bytes(job.states).replace(bytes((_IN_PROGRESS,)), bytes((_PENDING,))))
        job.done = job.started = len(job) - job.states.count(_PENDING)
        unfinished = len(job) - job.done
        # counted against max_retained_bytes as it would have been had it run here
        job.size = job_bytes(job.urls, job.idempotency_key) + sum(
            sys.getsizeof(reason) + ERROR_OVERHEAD for reason in job.errors.values())
        if job.links is not None:
            job.size += LINK_SLOT * len(job) + sum(sys.getsizeof(link) for link in job.links if link)
        self.retained_bytes += job.size
        if unfinished:
            self.unfinished_bytes += job.size
        self.jobs[job.id] = job
        if job.idempotency_key is not None:
            self.idempotency[job.idempotency_key] = job
        if unfinished:
            job.finished = job.finished_at = None
            job.next_index = job.states.find(_PENDING)
            self.backlog += unfinished
            self._runnable.append(job)
        else:
            job.next_index = len(job)
            if job.finished is None:
                job.finished = time.time()
            job.finished_at = self.clock() - max(0.0, time.time() - job.finished)
            self.finished_jobs[job.id] = job

    def adopt_links(self, links: Sequence[str]) -> None:
        """Restore the list of links (imgurd.state), before any job runs."""
        for link in links:
            if link not in self._link_set:
                self._link_set.add(link)
                self.links.append(link)
