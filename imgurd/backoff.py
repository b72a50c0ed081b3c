"""Retry timing (SPEC 2.7): exponential backoff with full jitter and Retry-After parsing."""

import email.utils
import random
import time
from typing import Callable, Optional

BASE_DELAY = 0.5
MAX_DELAY = 30.0
LONGEST_WAIT = 366 * 86400.0  # a longer wait asked for is taken as this: past any budget's reset, a date reports show


def delay(attempt: int, base: Optional[float] = None, cap: Optional[float] = None,
          rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Full jitter: uniformly in [0, min(cap, base * 2**(attempt-1))], so many
    transfers that failed together do not retry together.
    """
    base = BASE_DELAY if base is None else base
    cap = MAX_DELAY if cap is None else cap
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return ceiling * rand()


def retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds asked for by a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), LONGEST_WAIT)  # 400 digits would be inf
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - current), LONGEST_WAIT)
