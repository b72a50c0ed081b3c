"""One retry policy (SPEC 2.7) for everything that is tried again: the steps of a transfer (download,
upload) and ``imgurd-submit``'s requests to a server that may be restarting. It says how many tries,
or for how long; how long to wait between them (backoff.delay); and how long a ``Retry-After`` may
ask for. The reason for giving up is built once, here, never patched onto an error afterwards."""

import math
import random
from dataclasses import dataclass
from typing import Callable, Optional

from . import backoff
from .errors import TransferError


class GiveUp(Exception):
    """No next try; ``why`` completes the last failure's reason, e.g. " (after 3 attempts)"."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class RetryPolicy:
    attempts: Optional[int] = None  # tries in all, the first included (None: as many as the budget allows)
    retry_after_limit: float = math.inf  # a longer Retry-After is not waited for ...
    too_long: Optional[Callable[[float], str]] = None  # ... and this says why (None: the limit is waited instead)
    budget: Optional[float] = None  # seconds after the first failure when no further try starts (None: no limit)
    base: Optional[float] = None  # backoff.delay's first ceiling and its cap (None: backoff's defaults)
    cap: Optional[float] = None
    rand: Callable[[], float] = random.random  # the jitter

    def next_wait(self, attempt: int, spent: float = 0.0, retry_after: Optional[float] = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1 = the first), ``spent`` seconds after the
        first failed try began, when its answer asked for ``retry_after`` seconds (None: it did not ask);
        or GiveUp, raised, when there is to be no next try.

        Backoff with jitter, at least what Retry-After asks; never past the budget: the last wait ends
        when the budget does, and one last try follows."""
        if self.attempts is not None and attempt >= self.attempts:
            raise GiveUp(" (after %d attempts)" % attempt if attempt > 1 else "")
        left = math.inf if self.budget is None else self.budget - spent
        if left <= 0:
            raise GiveUp(" (tried for %.0f s)" % spent)
        wait = backoff.delay(attempt, self.base, self.cap, self.rand)
        if retry_after is not None:
            if retry_after > self.retry_after_limit:
                if self.too_long is not None:
                    raise GiveUp(self.too_long(retry_after))
                retry_after = self.retry_after_limit
            wait = max(wait, retry_after)
        return min(wait, left)

    def wait_before_retry(self, error: TransferError, attempt: int) -> float:
        """``next_wait`` for a failed step of a transfer: the final TransferError, raised, when there is
        to be no next try (at once for one not worth retrying)."""
        if not error.retryable:
            raise error
        try:
            return self.next_wait(attempt, retry_after=error.retry_after)
        except GiveUp as stop:
            raise error.final(stop.why) from None
