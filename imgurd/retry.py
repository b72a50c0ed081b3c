"""One retry policy for the steps of a transfer (SPEC 2.7): how many tries, how long between them,
and how long a ``Retry-After`` may ask for. Downloads and uploads use the same object; a failure's
final reason is built once here, never patched onto the error afterwards."""

from dataclasses import dataclass
from typing import Callable

from . import backoff
from .errors import TransferError


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int  # tries in all, the first included
    retry_after_limit: float  # a Retry-After longer than this is not waited for ...
    too_long: Callable[[float], str]  # ... and this says why, appended to the reason

    def wait_before_retry(self, error: TransferError, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` before the next one; or the final
        TransferError, raised, when there is to be no next one."""
        if not error.retryable:
            raise error
        if attempt >= self.attempts:
            raise error.final(" (after %d attempts)" % attempt if attempt > 1 else "")
        wait = backoff.delay(attempt)
        if error.retry_after is not None:
            if error.retry_after > self.retry_after_limit:
                raise error.final(self.too_long(error.retry_after))
            wait = max(wait, error.retry_after)
        return wait
