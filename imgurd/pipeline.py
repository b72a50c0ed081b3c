"""The transfer pipeline (SPEC 2): one semaphore, fair scheduling, download -> check -> upload.

A transfer slot of the semaphore goes to the next URL in round-robin order
over the jobs: a finished transfer takes it on itself, in the same task; a
slot left free (no work then) is taken by the one dispatcher coroutine when
work arrives, which spawns a task for it. So tasks exist only for transfers
in flight, never one per queued URL, and a small job waits for at most one
slot per busy job.
A URL whose host already has ``max_per_host`` downloads in flight is not
taken: its job waits aside until that host has room (slots.py), and the
other jobs go on meanwhile.
"""

import asyncio
import logging
import time
from typing import Dict, Optional

from tornado import concurrent, locks
from tornado.ioloop import IOLoop

from . import dryrun, sniff
from . import slots as transfer_slots
from .convert import Converter
from .download import Downloader
from .errors import TransferError
from .imgur import ImgurClient
from .jobs import Item, JobStore
from .metrics import Metrics
from .urls import file_name

log = logging.getLogger("imgurd.pipeline")
DRAIN_CHECK = 1.0  # seconds between two looks, during a drain, at what the transfers left wait for


class Pipeline:
    def __init__(self, config, store: JobStore, downloader: Downloader, imgur: ImgurClient,
                 metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.store = store
        self.downloader = downloader
        self.imgur = imgur
        self.converter = Converter(config)  # WebP, AVIF, HEIC -> PNG, JPEG, GIF, off the loop
        self.slots = transfer_slots.TransferSlots(config.max_concurrency)
        # transfers started and not finished, sleepers (who hold no slot) included: each may hold an
        # image in memory, so no new one starts beyond this
        self.max_in_flight = 2 * config.max_concurrency
        self._capped = False
        self.hosts = transfer_slots.HostSlots(config.max_per_host, self._requeue)
        self._work = locks.Condition()
        self._stopping = False
        self._idle = locks.Event()
        self._idle.set()
        self.links_by_digest: Dict[bytes, str] = {}
        self.deletehashes: Dict[str, str] = {}  # link -> deletehash: kept, never published
        self._uploading: Dict[bytes, "concurrent.Future[str]"] = {}

    def start(self) -> None:
        IOLoop.current().spawn_callback(self._keep_dispatching)

    async def _keep_dispatching(self) -> None:
        """The dispatcher, started again should it ever fail: without it, work queued while every
        slot is free would never start, and nothing else would say so."""
        while not self._stopping:
            try:
                await self._dispatch()
            except Exception:
                log.exception("internal error in the dispatcher; starting it again in a second")
                await asyncio.sleep(1)

    def wake(self) -> None:
        """New work was queued."""
        self._work.notify_all()

    def _requeue(self, job) -> None:
        """A job held back for a full host may go on (a slot of that host freed)."""
        self.store.requeue(job)
        self._work.notify_all()

    def _admit(self, job, url: str) -> bool:
        """Take a slot of ``url``'s host for it, or hold ``job`` back until that host has room."""
        host = transfer_slots.host_of(url)
        if self.hosts.try_take(host):
            return True
        self.hosts.park(host, job)
        return False

    async def _dispatch(self) -> None:
        while not self._stopping:
            # while a spent Imgur budget holds every upload, URLs wait here, pending, holding nothing
            await self.imgur.gate.open()
            await self.slots.acquire()
            if self.slots.returning or self.imgur.gate.holds():
                self.slots.release()  # to the transfer back from a retry sleep first
                await asyncio.sleep(0)  # a turn of the loop, in which that transfer takes it
                continue
            if self.store.in_flight >= self.max_in_flight:
                self.slots.release()
                self._capped = True  # woken when a transfer ends
                await self._work.wait()
                continue
            item = None if self._stopping else self.store.next_item(self._admit)
            if item is None:
                # no slot is held while waiting for work: a transfer coming back from a retry sleep
                # may need it (the wait is registered before anything else runs: no wake-up is lost)
                self.slots.release()
                if self._stopping:
                    return
                await self._work.wait()
                continue
            self.store.start(item)
            self._idle.clear()
            IOLoop.current().spawn_callback(self._transfer, item)

    async def stop(self, timeout: float) -> bool:
        """Start no more transfers; wait up to ``timeout`` s for those in flight. True if all finished."""
        self._stopping = True
        self._work.notify_all()
        loop = IOLoop.current()
        deadline = loop.time() + timeout
        while not self._idle.is_set():
            try:
                await self._idle.wait(timeout=min(deadline, loop.time() + DRAIN_CHECK))
            except Exception:  # tornado.util.TimeoutError
                if loop.time() >= deadline or self._only_waiting_past(deadline - loop.time()):
                    break
        return self.store.in_flight == 0  # not after abandon(), which ends the wait with transfers running

    def _only_waiting_past(self, left: float) -> bool:
        """Whether every transfer still in flight waits for an Imgur budget that refills after the
        drain's end: none of them can finish, so the drain need not go on to its end."""
        gate = self.imgur.gate
        held = gate.waiting()
        if held is None or gate.waiters < self.store.in_flight or held.until - gate.clock() <= left:
            return False
        count = self.store.in_flight
        log.info("%s in flight %s for Imgur's %s past shutdown_timeout: the drain ends now",
                 "the transfer" if count == 1 else "the %d transfers" % count, "waits" if count == 1 else "wait",
                 held.budget)
        return True

    def abandon(self) -> None:
        """End a ``stop()`` wait now (a second signal): what is in flight is reported abandoned."""
        self._idle.set()

    async def _transfer(self, item: Optional[Item]) -> None:
        """Transfer ``item``; then, keeping the slot, the next URL in the fair order, while there is one.

        A finished transfer hands its slot straight to the next URL: no wake-up of the dispatcher and
        no new task in between, which under load would each cost a turn of the busy event loop.
        """
        while item is not None:
            ticket = transfer_slots.Ticket(self.slots, self.hosts, transfer_slots.host_of(item.url))
            ticket.activate()  # this task's current ticket: the retry sleeps below let go of its slots
            try:
                try:
                    link = await self.process(item.url)
                except TransferError as error:
                    self._fail(item, error.reason, error.kind)
                except Exception:
                    log.exception("internal error while transferring job=%s url=%s", item.job.id, item.url)
                    self._fail(item, "internal error in imgurd", "internal")
                else:
                    self.metrics.finished("complete")
                    self.store.complete(item, link)
            finally:
                ticket.leave_host()
                item = self._next(ticket)
                if item is None:
                    ticket.release()
                    if self._capped:
                        self._capped = False
                        self._work.notify_all()
                if self.store.in_flight == 0:
                    self._idle.set()

    def _next(self, ticket: transfer_slots.Ticket) -> Optional[Item]:
        """The URL a finished transfer goes on with, holding its slot, or None to give the slot back
        (shutting down, or Imgur's budgets hold every upload: then URLs wait, pending, at the dispatcher)."""
        if (self._stopping or not ticket.has_slot or self.slots.returning
                or self.store.in_flight >= self.max_in_flight or self.imgur.gate.holds()):
            return None
        item = self.store.next_item(self._admit)
        if item is not None:
            self.store.start(item)
        return item

    def _fail(self, item: Item, reason: str, kind: str) -> None:
        self.metrics.finished("failed", kind)
        self.store.fail(item, reason)
        job_id, url = item.job.id, item.url
        log.warning("upload failed job=%s url=%s reason=%s", job_id, url, reason,
                    extra={"job": job_id, "url": url, "reason": reason})

    async def process(self, url: str) -> str:
        """Download, check and upload one URL; return its Imgur link or raise TransferError."""
        if not self.config.dry_run:
            self.imgur.gate.refuse_beyond_max_wait()  # no download for an upload that cannot happen
        started = time.monotonic()
        reuse = self.config.reuse_identical_uploads
        data, digest = await self.downloader.fetch_hashed(url, hashing=reuse)  # SHA-256 made as bytes arrive
        self.metrics.download_seconds.observe(time.monotonic() - started)
        self.metrics.downloaded_bytes.inc(len(data))
        mime = sniff.image_type(data)
        if mime is None:
            raise TransferError("not an image (%s)" % sniff.describe(data), "not_image")
        if digest is None:
            return await self._upload(data, url, mime)
        known = self.links_by_digest.get(digest)
        if known is not None:
            self.metrics.reused.inc()
            return known
        running = self._uploading.get(digest)
        if running is not None:  # the same bytes are being uploaded right now: share that upload
            link = await transfer_slots.holding_nothing(running)
            self.metrics.reused.inc()  # counted once that upload gave a link, not if it failed
            return link
        future: "concurrent.Future[str]" = concurrent.Future()
        self._uploading[digest] = future
        try:
            link = await self._upload(data, url, mime)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._uploading[digest]
        self.links_by_digest[digest] = link
        future.set_result(link)
        return link

    async def _upload(self, data: bytes, url: str, mime: str) -> str:
        data, mime, name = await self.converter.prepare(data, mime, file_name(url))
        if self.config.dry_run:  # the one step a dry run leaves out: these bytes would have been uploaded
            return dryrun.link(data, mime)
        started = time.monotonic()
        link, deletehash = await self.imgur.upload(data, name, mime)
        self.metrics.upload_seconds.observe(time.monotonic() - started)
        self.metrics.uploaded_bytes.inc(len(data))
        if deletehash:
            self.deletehashes[link] = deletehash
        return link
