"""One process-wide gate in front of Imgur uploads (SPEC 2.7, IMGUR-API rate limits).

Imgur's budgets are read from the headers of every answer, and each upload
sent is counted against them until the next answer says otherwise. When a
budget cannot pay for another upload, every upload waits for the same reset
instead of each coroutine burning a request into a 429; if the reset is
further away than ``max_rate_limit_wait`` the upload fails at once with a
reason that says so.
"""

import datetime
import math
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

from tornado import gen, locks

from .errors import TransferError

CLIENT_DAY = 86400.0  # Imgur does not say when the daily client budget refills: assume up to a day
UNKNOWN_RESET = 3600.0  # a spent budget whose answer carried no reset time


class Budget:
    __slots__ = ("name", "cost", "limit", "remaining", "reset_at", "why")

    def __init__(self, name: str, cost: float, why: str) -> None:
        self.name = name
        self.cost = cost  # what one upload takes from it
        self.limit: Optional[float] = None
        self.remaining: Optional[float] = None
        self.reset_at: Optional[float] = None
        self.why = why


def _number(headers: Mapping[str, str], name: str) -> Optional[float]:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


class RateGate:
    """``acquire()`` before each upload, ``release(headers)`` after it, ``pause_for()`` on a 429."""

    def __init__(self, max_wait: float, clock: Callable[[], float] = time.time) -> None:
        self.max_wait = max_wait
        self.clock = clock
        self.budgets: Dict[str, Budget] = {
            "client": Budget("client", 10, "Imgur's daily client credit budget is spent"),
            "user": Budget("user", 10, "Imgur's hourly user credit budget is spent"),
            "post": Budget("post", 1, "Imgur's upload (POST) budget is spent"),
        }
        self._paused_until = 0.0
        self._pause_why = ""
        self.in_flight = 0  # uploads let through and not yet answered
        self._answered = locks.Condition()

    def observe(self, headers: Mapping[str, str], pending: int = 0) -> None:
        """Take the budgets Imgur reports (any subset of its headers may be present).

        ``pending`` uploads are still in flight; Imgur may not have counted them yet, so they are
        taken off what it reports: better to wait once too often than to send into a spent budget.
        """
        now = self.clock()
        for budget, prefix in (("client", "X-RateLimit-Client"), ("user", "X-RateLimit-User"),
                               ("post", "X-Post-Rate-Limit-")):
            entry = self.budgets[budget]
            limit = _number(headers, prefix + "Limit")
            remaining = _number(headers, prefix + "Remaining")
            if limit is not None:
                entry.limit = limit
            if remaining is not None:
                entry.remaining = remaining - pending * entry.cost
        user_reset = _number(headers, "X-RateLimit-UserReset")  # a Unix timestamp
        if user_reset is not None:
            self.budgets["user"].reset_at = user_reset
        post_reset = _number(headers, "X-Post-Rate-Limit-Reset")  # seconds from now
        if post_reset is not None:
            self.budgets["post"].reset_at = now + post_reset

    def release(self, headers: Optional[Mapping[str, str]] = None) -> None:
        """An upload let through by ``acquire()`` has ended, with Imgur's answer headers if it got one."""
        self.in_flight -= 1
        if headers is not None:
            self.observe(headers, self.in_flight)
        self._answered.notify_all()

    def pause_for(self, seconds: float, why: str) -> None:
        """A 429 or Retry-After from Imgur: every upload waits, not only the one that was told."""
        until = self.clock() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self._pause_why = why

    def remaining(self) -> Dict[str, Optional[float]]:
        return {name: b.remaining for name, b in self.budgets.items()}

    def _blocked_until(self, now: float) -> Tuple[float, str]:
        """(time, why) before which no upload may go; (now, '') to wait for an answer in flight;
        a time before now means one may go now."""
        until, why = (self._paused_until, self._pause_why) if self._paused_until > now else (0.0, "")
        for budget in self.budgets.values():
            if budget.remaining is None or budget.remaining >= budget.cost:
                continue
            if budget.reset_at is not None and budget.reset_at <= now:
                budget.remaining = budget.limit  # refilled; the next answer tells the truth
                budget.reset_at = None
                continue
            if budget.reset_at is None:
                if self.in_flight:  # spent by our own uploads in flight: their answers will tell
                    return now, ""
                budget.reset_at = now + (CLIENT_DAY if budget.name == "client" else UNKNOWN_RESET)
            if budget.reset_at > until:
                until, why = budget.reset_at, budget.why
        return until, why

    async def acquire(self) -> None:
        """Return when an upload may be sent, counting it against the budgets (``release()`` after);
        raise TransferError if the wait would exceed ``max_rate_limit_wait``."""
        while True:
            now = self.clock()
            until, why = self._blocked_until(now)
            if until < now:
                for budget in self.budgets.values():
                    if budget.remaining is not None:
                        budget.remaining -= budget.cost
                self.in_flight += 1
                return
            if until == now:
                await self._answered.wait(timeout=datetime.timedelta(seconds=1))
                continue
            left = until - now
            if left > self.max_wait:
                raise TransferError(
                    "%s; it refills in %d s, beyond max_rate_limit_wait (%d s)"
                    % (why, round(left), round(self.max_wait)),
                    "rate_limit",
                )
            await gen.sleep(min(left, 60.0))
