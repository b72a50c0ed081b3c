"""Probes inside a service process, for scenario 6: event-loop lag and the curl client's requests.

    python -m bench.instrument FILE imgurd [ARGS...]     # the imgurd command, probed
    python -m bench.instrument FILE SCRIPT.py [ARGS...]  # a Python script (the reference relay), probed

The program itself is not changed: before it runs, this patches, in this process only, asyncio (the
first event loop to run gets a timer every 5 ms that notes how late it fires) and tornado's
``CurlAsyncHTTPClient.fetch_impl`` (when each request is handed to the client, and when its response
is handed back). Both probes cost a few microseconds each time, the same in every program probed.
Every 0.5 s the new records are appended to FILE, one a line, times in seconds since the epoch
(``time.time()``, comparable with the fakes' timelines):

    L <time> <lag>             the timer fired <lag> seconds late
    D <requested> <answered>   a download (a URL with /img/ in it: the bench origin's images)
    U <requested> <answered>   an upload (a URL ending in /3/image or /3/upload)
"""

import asyncio.base_events
import runpy
import sys
import time
from typing import Any, Callable, List, Tuple

INTERVAL = 0.005  # seconds between loop-lag samples
FLUSH = 0.5  # seconds between writes to FILE


class Recorder:
    def __init__(self, path: str) -> None:
        self.path = path
        self.records: List[Tuple[str, float, float]] = []

    def flush(self) -> None:
        records, self.records = self.records, []
        if records:
            with open(self.path, "a") as handle:
                handle.write("".join("%s %.6f %.6f\n" % record for record in records))


def probe_loop(recorder: Recorder) -> None:
    """The first event loop to run samples its own lag (and flushes the recorder)."""
    run_forever = asyncio.base_events.BaseEventLoop.run_forever
    started = []

    def sampling_run_forever(loop: asyncio.AbstractEventLoop) -> Any:
        if not started:
            started.append(loop)
            state = {"due": loop.time() + INTERVAL, "flush": loop.time() + FLUSH}

            def tick() -> None:
                now = loop.time()
                recorder.records.append(("L", time.time(), now - state["due"]))
                if now >= state["flush"]:
                    recorder.flush()
                    state["flush"] = now + FLUSH
                state["due"] = now + INTERVAL
                loop.call_at(state["due"], tick)

            loop.call_at(state["due"], tick)
        return run_forever(loop)

    asyncio.base_events.BaseEventLoop.run_forever = sampling_run_forever  # type: ignore[method-assign]


def probe_curl(recorder: Recorder) -> None:
    from tornado.curl_httpclient import CurlAsyncHTTPClient

    fetch_impl = CurlAsyncHTTPClient.fetch_impl

    def timed_fetch_impl(client: CurlAsyncHTTPClient, request: Any, callback: Callable[[Any], None]) -> None:
        url = request.url
        kind = "U" if url.endswith(("/3/image", "/3/upload")) else "D" if "/img/" in url else None
        if kind is None:
            return fetch_impl(client, request, callback)
        requested = time.time()

        def answered(response: Any) -> None:
            recorder.records.append((kind, requested, time.time()))
            callback(response)

        return fetch_impl(client, request, answered)

    CurlAsyncHTTPClient.fetch_impl = timed_fetch_impl  # type: ignore[method-assign]


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m bench.instrument FILE imgurd|SCRIPT.py [ARGS...]")
    path, target, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    recorder = Recorder(path)
    probe_loop(recorder)
    probe_curl(recorder)
    if target == "imgurd":
        sys.argv = ["imgurd", *args]
        from imgurd.cli import run_command

        run_command()
    else:
        sys.argv = [target, *args]
        runpy.run_path(target, run_name="__main__")


if __name__ == "__main__":
    main()
