"""What every helper process of the bench does: run until told to stop."""

import asyncio
import signal
import sys


async def until_stopped() -> None:
    """Return on SIGTERM or SIGINT, or when the bench closes our stdin (or goes away)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        loop.add_reader(sys.stdin.fileno(), stop.set)
    except (OSError, ValueError):  # stdin is a file or a terminal: signals only
        pass
    await stop.wait()
