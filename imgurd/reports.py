"""The API's JSON for what the job store holds, encoded once where it never changes again.

A finished job's report and each full block of the list of links never change, and clients poll
them: they are encoded once and kept (bounded in number and bytes), so a poll or a long listing
writes ready-made bytes instead of re-encoding megabytes while the event loop waits. The store
(jobs.py) knows nothing of JSON.
"""

import collections
import datetime
import json
from typing import Dict, List, Optional, OrderedDict, Sequence

from .jobs import COMPLETE_STATE, FAILED_STATE, HELD_STATE_NAMES, STATE_NAMES, Job, JobStore

FINISHED_JSON_CACHE = 32  # encoded reports of finished jobs kept: they never change, and clients poll them
FINISHED_JSON_BYTES = 16 * 1024 * 1024  # ... and at most this many bytes of them
LINK_BLOCK = 2048  # links per block of encoded JSON kept for GET /v1/images


def encode(document: object) -> bytes:
    """Compact UTF-8 JSON, the one encoding of every API answer."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_elements(links: Sequence[str]) -> bytes:
    """``links`` as the comma-separated elements of a JSON array (no brackets), UTF-8."""
    return json.dumps(links, ensure_ascii=False, separators=(",", ":"))[1:-1].encode("utf-8")


def utc_stamp(epoch: float) -> str:
    """ISO 8601, UTC, milliseconds, 'Z' (SPEC 1)."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)



def job_document(job: Job, waiting: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """The job's report; ``waiting`` (why and until when Imgur's budgets hold uploads) shows only
    while URLs are unfinished, and then those already started are held too: they show ``pending``."""
    if job.done == len(job.urls):
        waiting = None
    names = STATE_NAMES if waiting is None else HELD_STATE_NAMES
    pending: List[str] = []
    complete: List[str] = []
    failed: List[str] = []
    images = []
    links, errors = job.links, job.errors
    for index, (url, state) in enumerate(zip(job.urls, job.states)):
        link = error = None
        if state == COMPLETE_STATE:
            link = links[index]  # type: ignore[index]
            complete.append(link)
        elif state == FAILED_STATE:
            error = errors[index]
            failed.append(url)
        else:
            pending.append(url)
        images.append({"url": url, "status": names[state], "link": link, "error": error})
    return {
        "id": job.id,
        "created": utc_stamp(job.created),
        "finished": utc_stamp(job.finished) if job.finished is not None else None,
        # held: started URLs show pending (SPEC: waiting URLs stay pending), but the job stays in-progress
        # once one started (SPEC: pending = no URL started yet): its status never goes back
        "status": job.status,
        "uploaded": {"pending": pending, "complete": complete, "failed": failed},
        "images": images,
        "waiting": waiting,
    }




class Reports:
    """Job reports and the link listing of one store, with what can be kept encoded kept."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._finished: OrderedDict[str, bytes] = collections.OrderedDict()  # job id -> report, LRU
        self._finished_bytes = 0
        # links[i * LINK_BLOCK:(i + 1) * LINK_BLOCK] as JSON, for every block filled so far: listing
        # 100,000 links then writes 50 ready-made pieces instead of encoding 3 MB of JSON each time
        self._link_blocks: List[bytes] = []
        store.on_evicted = self.forget

    def job(self, job: Job, waiting: Optional[Dict[str, str]] = None) -> bytes:
        """The job's report as JSON; a finished job's is encoded once and kept while it is asked for."""
        if job.done < len(job):
            return encode(job_document(job, waiting))
        cache = self._finished
        report = cache.get(job.id)
        if report is None:
            report = cache[job.id] = encode(job_document(job))
            self._finished_bytes += len(report)
            while len(cache) > FINISHED_JSON_CACHE or self._finished_bytes > FINISHED_JSON_BYTES:
                self._finished_bytes -= len(cache.popitem(last=False)[1])
        else:
            cache.move_to_end(job.id)
        return report

    def forget(self, job: Job) -> None:
        """The store dropped ``job``: so does the cache."""
        self._finished_bytes -= len(self._finished.pop(job.id, b""))

    def links(self, start: int, end: int) -> List[bytes]:
        """``links[start:end]`` as JSON array elements, in pieces to be joined with ``b","``.

        Whole blocks come from the cache; only the ends of the range are encoded now.
        """
        links = self.store.links
        end = min(end, len(links))
        pieces: List[bytes] = []
        block = start // LINK_BLOCK
        while start < end and block * LINK_BLOCK < end:
            low, high = block * LINK_BLOCK, (block + 1) * LINK_BLOCK
            if start <= low and high <= end:
                pieces.append(self._link_block(block))
            else:
                pieces.append(_json_elements(links[max(start, low):min(end, high)]))
            block += 1
        return pieces

    def _link_block(self, index: int) -> bytes:
        """A full block, made at its first listing (links come at Imgur's pace: one block at most,
        normally, between two listings)."""
        blocks = self._link_blocks
        links = self.store.links
        while len(blocks) <= index:
            done = len(blocks)
            blocks.append(_json_elements(links[done * LINK_BLOCK:(done + 1) * LINK_BLOCK]))
        return blocks[index]
