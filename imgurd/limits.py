"""What one request to an origin (or to Imgur) may take, in one small typed object built from the settings (like httpx's
``Limits``): curl is set from it and failure reasons quote it, so a message never names a limit
other than the one in force."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestLimits:
    max_bytes: int
    connect_timeout: float
    request_timeout: float  # for all attempts of one URL together (download.py)
    stall_speed: int  # bytes/s ...
    stall_time: float  # ... for this long, and the transfer is cut
    max_redirects: int

    @classmethod
    def from_config(cls, config) -> "RequestLimits":
        return cls(config.max_image_bytes, config.connect_timeout, config.request_timeout, config.stall_speed,
                   config.stall_time, config.max_redirects)

    def stall_text(self) -> str:
        """"under 1 KiB/s for 10 s", as a person says it."""
        speed = self.stall_speed
        shown = "%g KiB/s" % (speed / 1024) if speed % 1024 == 0 else "%d bytes/s" % speed
        return "under %s for %g s" % (shown, self.stall_time)
