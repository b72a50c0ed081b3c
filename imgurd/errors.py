"""The one exception a transfer step raises: a reason a person can read, and whether to retry."""

from typing import Optional


class TransferError(Exception):
    """A failed step of a transfer.

    ``reason`` is the one-line text reported to the client and logged;
    ``kind`` is a short failure class for metrics (download, guard, too_large,
    not_image, convert, upload, rate_limit, auth, internal).
    """

    def __init__(self, reason: str, kind: str, retryable: bool = False,
                 retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.retryable = retryable
        self.retry_after = retry_after

    def final(self, suffix: str = "") -> "TransferError":
        """This failure as the last word on its step: ``suffix`` added to the reason, not retried again."""
        return TransferError(self.reason + suffix, self.kind)
