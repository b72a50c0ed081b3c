"""One process-wide gate in front of Imgur uploads (SPEC 2.7): Imgur's budgets as it really reports them.

Imgur's budgets are read from the headers of every answer (names in any
letter case; a reset value is seconds from now or a Unix time, told apart by
size, because real answers send ``x-ratelimit-userreset: 3600`` where the
documentation promises a timestamp), and each upload sent is counted against
them until the next answer says otherwise. When a budget cannot pay for
another upload, every upload waits for its reset instead of spending a request
on a 429: waiting is normal (a job of 1,000 anonymous URLs takes most of a
day), and only a wait beyond ``max_rate_limit_wait`` fails the URLs.
"""

import datetime
import math
import re
import time
from typing import Callable, Dict, Mapping, Optional

from tornado import gen, locks
from tornado.httputil import HTTPHeaders

from .backoff import LONGEST_WAIT
from .curlheaders import AnswerHeaders
from .errors import TransferError

CLIENT_DAY = 86400.0  # a spent daily client budget whose answer carried no reset time
UNKNOWN_RESET = 3600.0  # a spent hourly budget whose answer carried no reset time
TIMESTAMP_FLOOR = 1e9  # reset values at least this large are Unix times, smaller ones seconds from now
RESET_MARGIN = 1.0  # resets come in whole seconds: wait this much beyond one, never send a moment early
FIRST_PAUSE = 60.0  # a 429 that says nothing of its wait pauses uploads this long ...
LONGEST_PAUSE = 3600.0  # ... doubling for each such 429 in a row, up to this
SLEEP_SLICE = 60.0  # waits are slept in slices, so a refill learned meanwhile is not missed for long
LONGEST_TOLD = LONGEST_WAIT  # a longer wait told (a reset, words) is taken as this

_WAIT_IN_WORDS = re.compile(r"wait\s+(\d+(?:\.\d+)?)\s*(?:more\s+)?(second|sec|minute|min|hour|hr)",
                            re.IGNORECASE)
_UNIT_SECONDS = {"sec": 1.0, "min": 60.0, "hr": 3600.0, "hou": 3600.0}


def wait_in_words(message: Optional[str]) -> Optional[float]:
    """Seconds from an Imgur message like "Please wait 37 more minutes.", or None."""
    if not message:
        return None
    match = _WAIT_IN_WORDS.search(message)
    if match is None:
        return None
    return min(float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()[:3]], LONGEST_TOLD)


def reset_time(value: float, now: float) -> float:
    """A reset header's value as an absolute time: a small number is seconds from now."""
    return min(value if value >= TIMESTAMP_FLOOR else now + value, now + LONGEST_TOLD)


class Budget:
    __slots__ = ("name", "cost", "limit", "remaining", "reset_at", "why", "short")

    def __init__(self, name: str, cost: float, why: str, short: str) -> None:
        self.name = name
        self.cost = cost  # what one upload takes from it
        self.limit: Optional[float] = None
        self.remaining: Optional[float] = None
        self.reset_at: Optional[float] = None
        self.why = why  # the sentence a job's ``waiting.reason`` shows
        self.short = short  # what imgurd-submit says it waits for

    def explain(self) -> str:
        if self.limit is None:
            return self.why
        per = {"client": " a day", "user": " an hour"}.get(self.name, "")
        return "%s (%d uploads%s)" % (self.why, self.limit // self.cost, per)


# each budget's headers, in the lower case a plain dict of them is looked up in
_BUDGET_HEADERS = tuple((name, prefix + "limit", prefix + "remaining", prefix + "reset") for name, prefix in (
    ("client", "x-ratelimit-client"), ("user", "x-ratelimit-user"), ("post", "x-post-rate-limit-")))


def _number(headers: Mapping[str, str], name: str) -> Optional[float]:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)  # white space around it is allowed
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


class Waiting:
    """Why uploads are held, and until when (wall clock): a job's ``waiting`` in the API."""

    __slots__ = ("until", "reason", "budget")

    def __init__(self, until: float, reason: str, budget: str) -> None:
        self.until = until
        self.reason = reason
        self.budget = budget


class RateGate:
    """``acquire()`` before each upload, ``release(headers)`` after it, ``rate_limited()`` on a 429."""

    def __init__(self, max_wait: float, clock: Callable[[], float] = time.time) -> None:
        self.max_wait = max_wait
        self.clock = clock
        self.budgets: Dict[str, Budget] = {
            "client": Budget("client", 10, "Imgur's daily credit budget for this application is spent",
                             "daily budget"),
            "user": Budget("user", 10, "Imgur's hourly upload budget for this address is spent",
                           "hourly budget"),
            "post": Budget("post", 1, "Imgur's upload (POST) budget for this address is spent", "upload budget"),
        }
        self._paused_until = 0.0
        self._pause_why = ""
        self._clear = True  # no budget is spent (so only a pause could hold uploads): waiting() in short
        self._quiet_429s = 0  # 429s in a row that said nothing of their wait
        self.in_flight = 0  # uploads let through and not yet answered
        self.waiters = 0  # uploads waiting in acquire()
        self._answered = locks.Condition()
        self._ready = locks.Event()  # set once the start-up budget check is done (or skipped)
        self._ready.set()

    # --- what Imgur tells

    def observe(self, headers: Mapping[str, str], pending: int = 0) -> None:
        """Take the budgets Imgur reports (any subset of its headers may be present, in any case).

        ``pending`` uploads are still in flight; Imgur may not have counted them yet, so they are
        taken off what it reports: better to wait once too often than to send into a spent budget.
        """
        now = self.clock()
        if isinstance(headers, AnswerHeaders):  # an answer's, through curlerrors.fetch: lower-case names
            headers = headers.fields()
        elif not isinstance(headers, HTTPHeaders):  # tornado's match names in any case already
            headers = {str(name).lower(): value for name, value in headers.items()}
        for name, limit, remaining, reset in _BUDGET_HEADERS:
            self._seed(name, _number(headers, limit), _number(headers, remaining), _number(headers, reset),
                       pending, now)
        self._recheck()

    def seed(self, name: str, limit: Optional[float], remaining: Optional[float], reset: Optional[float],
             pending: int = 0, now: Optional[float] = None) -> None:
        """One budget as Imgur reported it (``reset`` in seconds from now or as a Unix time)."""
        self._seed(name, limit, remaining, reset, pending, self.clock() if now is None else now)
        self._recheck()

    def _seed(self, name: str, limit: Optional[float], remaining: Optional[float], reset: Optional[float],
              pending: int, now: float) -> None:
        budget = self.budgets[name]
        if limit is not None:
            budget.limit = limit
        if remaining is not None:
            budget.remaining = remaining - pending * budget.cost
        if reset is not None:
            budget.reset_at = reset_time(reset, now) + RESET_MARGIN

    def _recheck(self) -> None:
        """After any budget's ``remaining`` changed."""
        for budget in self.budgets.values():
            if budget.remaining is not None and budget.remaining < budget.cost:
                self._clear = False
                return
        self._clear = True

    def release(self, headers: Optional[Mapping[str, str]] = None, sent: bool = True) -> None:
        """An upload let through by ``acquire()`` has ended, with Imgur's answer headers if it got one.

        One that was never ``sent`` (Imgur unreachable: curl never asked for the body) gives back what
        ``acquire()`` took off, or a short outage would leave the budgets looking spent until their
        reset. One that was sent and got no answer (a timeout) may have been counted: it stays taken
        off, since a spent daily budget five times in a month blocks the application.
        """
        self.in_flight -= 1
        if headers is not None:
            self.observe(headers, self.in_flight)
        elif not sent:
            for budget in self.budgets.values():
                if budget.remaining is not None:
                    budget.remaining = min(budget.remaining + budget.cost,
                                           budget.limit if budget.limit is not None else math.inf)
            self._recheck()
        self._answered.notify_all()

    def succeeded(self) -> None:
        self._quiet_429s = 0

    def rate_limited(self, retry_after: Optional[float], message: Optional[str]) -> None:
        """A 429 from Imgur: every upload waits, not only the one that was told.

        Its wait comes from ``Retry-After``, else from its words ("Please wait 37 more minutes."),
        else from a budget the answer's headers showed spent; with none of these, uploads pause for
        a while that doubles with each such 429 in a row.
        """
        now = self.clock()
        wait = retry_after if retry_after is not None else wait_in_words(message)
        if wait is None:
            if self._blocking_budget(now) is not None:
                return  # the headers said which budget is spent and when it refills
            wait = min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** self._quiet_429s)
            self._quiet_429s += 1
        self.pause_for(wait, "Imgur answered 429 (too many requests) and asked to wait %s" % _duration(wait))

    def pause_for(self, seconds: float, why: str) -> None:
        until = self.clock() + min(seconds, LONGEST_TOLD)
        if until > self._paused_until:
            self._paused_until = until
            self._pause_why = why

    def remaining(self) -> Dict[str, Optional[float]]:
        return {name: b.remaining for name, b in self.budgets.items()}

    # --- what uploads wait for

    def _blocking_budget(self, now: float) -> Optional[Budget]:
        """The spent budget that refills last, refilling those whose reset has passed."""
        latest = None
        for budget in self.budgets.values():
            if budget.remaining is None or budget.remaining >= budget.cost:
                continue
            if budget.reset_at is not None and budget.reset_at <= now:
                budget.remaining = budget.limit  # refilled; the next answer tells the truth
                budget.reset_at = None
                self._recheck()
                continue
            if budget.reset_at is None:
                if self.in_flight:  # spent by our own uploads in flight: their answers will tell
                    continue
                budget.reset_at = now + (CLIENT_DAY if budget.name == "client" else UNKNOWN_RESET)
            if latest is None or budget.reset_at > latest.reset_at:  # type: ignore[operator]
                latest = budget
        return latest

    def waiting(self) -> Optional[Waiting]:
        """Why and until when uploads are held now, or None if one could go (or is only waiting for
        an answer in flight, a matter of seconds)."""
        now = self.clock()
        if self._clear and self._paused_until <= now:  # the common case, asked several times an upload
            return None
        budget = self._blocking_budget(now)
        until, reason, short = 0.0, "", ""
        if budget is not None:
            until, reason, short = budget.reset_at, budget.explain(), budget.short  # type: ignore[assignment]
        if self._paused_until > now and self._paused_until > until:
            until, reason, short = self._paused_until, self._pause_why, "rate-limit pause"
        return Waiting(until, reason, short) if until > now else None

    def _spent_by_flight(self) -> bool:
        return self.in_flight > 0 and not self._clear and any(b.remaining is not None and b.remaining < b.cost and b.reset_at is None
                                          for b in self.budgets.values())

    async def acquire(self, allowance: Optional[float] = None) -> None:
        """Return when an upload may be sent, counting it against the budgets (``release()`` after);
        raise TransferError if the wait would exceed ``max_rate_limit_wait``, or ``allowance``: what
        is left of it for an upload that has waited already (after a 429)."""
        self.waiters += 1
        try:
            await self._ready.wait()
            limit = self.max_wait if allowance is None else max(0.0, min(allowance, self.max_wait))
            deadline = self.clock() + limit
            while True:
                held = self.waiting()
                now = self.clock()
                if held is None:
                    if self._spent_by_flight():
                        await self._answered.wait(timeout=datetime.timedelta(seconds=1))
                        continue
                    for budget in self.budgets.values():
                        if budget.remaining is not None:
                            budget.remaining -= budget.cost
                    self._recheck()
                    self.in_flight += 1
                    return
                left = held.until - now
                if _beyond(left, deadline - now):
                    raise self._too_long(held, left, None if limit == self.max_wait else deadline - now)
                await gen.sleep(min(left, SLEEP_SLICE))
        finally:
            self.waiters -= 1

    def _too_long(self, held: Waiting, left: float, allowed: Optional[float] = None) -> TransferError:
        """The failure of an upload whose wait would pass max_rate_limit_wait (or, with ``allowed``,
        what is left of it after the upload's earlier waits)."""
        beyond = "max_rate_limit_wait (%s)" % _duration(self.max_wait)
        if allowed is not None:
            beyond = "the %s left of %s after earlier 429s" % (_duration(max(0.0, allowed)), beyond)
        return TransferError("%s; it refills in %s, beyond %s" % (held.reason, _duration(left), beyond),
                             "rate_limit")

    def holds(self) -> bool:
        """Whether a budget or pause holds every upload now, for no longer than ``max_rate_limit_wait``."""
        held = self.waiting()
        return held is not None and not _beyond(held.until - self.clock(), self.max_wait)

    def refuse_beyond_max_wait(self) -> None:
        """Raise the failure an upload would meet now, when its wait is beyond ``max_rate_limit_wait``:
        a URL fails before it is downloaded for nothing."""
        held = self.waiting()
        if held is not None and _beyond(held.until - self.clock(), self.max_wait):
            raise self._too_long(held, held.until - self.clock())

    async def open(self) -> None:
        """Return once a new transfer is worth starting: not while a budget or pause within
        ``max_rate_limit_wait`` holds every upload (beyond it, uploads fail at once: let them)."""
        while True:
            held = self.waiting()
            if held is None:
                return
            left = held.until - self.clock()
            if _beyond(left, self.max_wait):
                return
            await gen.sleep(min(left, SLEEP_SLICE))

    # --- start-up

    def hold_until_ready(self) -> None:
        """Uploads wait until ``ready()``: the start-up budget check is under way."""
        self._ready.clear()

    def ready(self) -> None:
        self._ready.set()


def _beyond(wait: float, limit: float) -> bool:
    """Whether a wait passes a limit such as ``max_rate_limit_wait``. The margin kept beyond Imgur's
    resets does not count: a daily budget that refills in exactly the 86,400 s allowed is waited for."""
    return wait > limit + RESET_MARGIN


def _duration(seconds: float) -> str:
    """A wait as a person says it: 37 s, 12 min, 3.5 h."""
    if seconds < 120:
        return "%d s" % round(seconds)
    if seconds < 7200:
        return "%d min" % round(seconds / 60)
    return "%.1f h" % (seconds / 3600)

