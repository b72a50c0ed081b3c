"""Transfer slots (SPEC 2.1, 3): what a transfer holds while it runs, and lets go of while it waits.

A transfer holds one of the ``max_concurrency`` slots of the pipeline's semaphore, and, while it
downloads, one of the ``max_per_host`` slots of its origin's host name. So a few URLs to one slow
origin (a tarpit) cannot hold every slot, and the origin's slot is free again as soon as the
download is over. A transfer that sleeps before a retry (a 503 with ``Retry-After: 60``, say)
holds neither: ``retry_sleep`` lets go of both and takes them back, in turn with everyone else,
when the sleep is over.

The pipeline makes one ``Ticket`` per transfer and sets it as the transfer's current one (a
context variable, local to the transfer's task), so the download and upload code deep below can
find it without every call passing it along.
"""

import collections
import contextlib
import contextvars
import re
import urllib.parse
from typing import AsyncIterator, Awaitable, Callable, Deque, Dict, Optional, TypeVar, Union

from tornado import gen, locks
from tornado.concurrent import Future

T = TypeVar("T")

_current: "contextvars.ContextVar[Optional[Ticket]]" = contextvars.ContextVar("imgurd_ticket", default=None)


# a plain http(s) URL's host name (no user info, no IPv6, no oddities): read without urllib's general
# parsing, which twice per transfer was a visible share of the event loop's time
_PLAIN_HOST = re.compile(r"https?://([a-z0-9.-]+)(?::[0-9]*)?(?:[/?#]|\Z)", re.IGNORECASE | re.ASCII)


def host_of(url: str) -> str:
    """The host name a URL's transfer counts against (``max_per_host``): lower case, without the port."""
    plain = _PLAIN_HOST.match(url)
    if plain is not None:
        return plain.group(1).lower()
    try:
        return urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return ""


class HostSlots:
    """Transfers in flight per host name, at most ``limit`` each, and who waits for one.

    A waiter is a job of the scheduler whose next URL goes to a full host (it is ``requeue``d when a
    slot frees, to try again first), or a Future of a transfer coming back from a retry sleep (the
    slot passes straight to it). Both wait in one queue per host, in arrival order. Hosts with
    nothing in flight and nobody waiting are forgotten, so this holds nothing for idle hosts.
    """

    def __init__(self, limit: int, requeue: Callable[[object], None]) -> None:
        self.limit = limit
        self.requeue = requeue
        self.busy: Dict[str, int] = {}
        self.waiting: Dict[str, Deque[Union[object, Future]]] = {}

    def try_take(self, host: str) -> bool:
        count = self.busy.get(host, 0)
        if count >= self.limit:
            return False
        self.busy[host] = count + 1
        return True

    def park(self, host: str, job: object) -> None:
        """``job`` waits for a slot of ``host``: it is handed to ``requeue`` when one frees."""
        self.waiting.setdefault(host, collections.deque()).append(job)

    async def take(self, host: str) -> None:
        """A slot of ``host``, waiting in turn if it is full."""
        if self.try_take(host):
            return
        future: Future = Future()
        self.waiting.setdefault(host, collections.deque()).append(future)
        await future

    def release(self, host: str) -> None:
        queue = self.waiting.get(host)
        # a transfer already under way (back from a retry sleep) goes before a job's next URL
        for waiter in list(queue or ()):
            if isinstance(waiter, Future):
                queue.remove(waiter)  # type: ignore[union-attr]
                if waiter.done():  # given up on (cancelled)
                    continue
                waiter.set_result(None)  # the slot passes to it: the count stays
                if not queue:
                    del self.waiting[host]
                return
        while queue:
            waiter = queue.popleft()
            self.requeue(waiter)  # a job: it takes the slot itself, if still free when its turn comes
            break
        if queue is not None and not queue:
            del self.waiting[host]
        count = self.busy[host] - 1
        if count:
            self.busy[host] = count
        else:
            del self.busy[host]


class TransferSlots:
    """The ``max_concurrency`` transfer slots: a tornado Semaphore, and how many transfers coming
    back from a retry sleep wait for one. Those go before new work (``returning``): otherwise
    transfers that keep their slot for the next URL, and the dispatcher, would keep them waiting
    behind the whole backlog."""

    __slots__ = ("semaphore", "returning")

    def __init__(self, count: int) -> None:
        self.semaphore = locks.Semaphore(count)
        self.returning = 0

    def acquire(self) -> "Future[bool]":
        return self.semaphore.acquire()

    def release(self) -> None:
        self.semaphore.release()

    async def reacquire(self) -> None:
        """A slot for a transfer that gave its own back to sleep."""
        self.returning += 1
        try:
            await self.semaphore.acquire()
        finally:
            self.returning -= 1


class Ticket:
    """What one transfer holds: a pipeline slot, and its origin's host slot while it downloads."""

    __slots__ = ("slots", "hosts", "host", "has_slot", "has_host")

    def __init__(self, slots: TransferSlots, hosts: HostSlots, host: str) -> None:
        self.slots = slots
        self.hosts = hosts
        self.host = host
        self.has_slot = True  # both were taken by the dispatcher
        self.has_host = True

    def activate(self) -> None:
        """Make this the current transfer's ticket (call it in the transfer's own task)."""
        _current.set(self)

    def leave_host(self) -> None:
        """The download is over: the host's slot goes to the next transfer to that host."""
        if self.has_host:
            self.has_host = False
            self.hosts.release(self.host)

    def release(self) -> None:
        self.leave_host()
        if self.has_slot:
            self.has_slot = False
            self.slots.release()

    @contextlib.asynccontextmanager
    async def released(self) -> AsyncIterator[None]:
        """Hold nothing inside the block; take back what was held (host first, then a pipeline slot)."""
        had_host = self.has_host
        self.release()
        try:
            yield
        finally:
            if had_host:
                await self.hosts.take(self.host)
                self.has_host = True
            await self.slots.reacquire()
            self.has_slot = True


def current() -> Optional[Ticket]:
    return _current.get()


def leave_host() -> None:
    """The current transfer's download is over (no-op outside a pipeline transfer)."""
    ticket = _current.get()
    if ticket is not None:
        ticket.leave_host()


async def holding_nothing(awaitable: "Awaitable[T]") -> "T":
    """Await ``awaitable`` (another transfer's upload of the same bytes, say) holding no slot, so
    that transfer can always get one back after a retry sleep."""
    ticket = _current.get()
    if ticket is None:
        return await awaitable
    async with ticket.released():
        return await awaitable


async def retry_sleep(seconds: float) -> None:
    """Sleep before a retry holding no slot (a plain sleep outside a pipeline transfer)."""
    ticket = _current.get()
    if ticket is None:
        await gen.sleep(seconds)
        return
    async with ticket.released():
        await gen.sleep(seconds)
