"""What the state file (``state_file``, imgurd/state.py) costs at 100,000 retained URLs.

    python -m bench.state [--urls 100000] [--job-size 1000] [--rounds 5]

In one process, no network: a JobStore filled like a busy server's (jobs of ``--job-size`` URLs of
about 90 characters, 90 % complete with their Imgur links and identical-bytes entries, 5 % failed,
5 % unfinished), then ``StateKeeper.save()``, the code imgurd runs every ``state_interval``, ``--rounds``
times on the event loop while a probe measures the loop's lag (a 1 ms sleep, over and over), alternating
with rounds as long of the same probe without saving (the baseline: the machine is shared and noisy). Then the file's size per URL, and the time to read it back
and restore it into an empty store (what start-up pays). Prints one table.
"""

import argparse
import asyncio
import os
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path
from random import Random
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # python bench/state.py
    sys.path.insert(0, str(ROOT))

from imgurd.jobs import JobStore  # noqa: E402
from imgurd.settings import defaults  # noqa: E402
from imgurd.state import StateKeeper  # noqa: E402

PROBE_SLEEP = 0.001


def echo(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def fill(store: JobStore, urls: int, job_size: int) -> Dict[bytes, str]:
    """Jobs as a busy server holds them; returns the identical-bytes map.

    What does not compress is made as random as it is in life: Imgur's 7-character image ids, the
    SHA-256 digests, a content hash in each source URL's path.
    """
    digests: Dict[bytes, str] = {}
    made = 0
    job_number = 0
    random = Random(12)
    alphabet = string.ascii_letters + string.digits
    while made < urls:
        size = min(job_size, urls - made)
        job = store.add(["https://cdn%d.example-shop.com/media/catalog/product/%s/%s.jpg?w=1200"
                         % (job_number % 7, "%08x" % random.getrandbits(32), "%016x" % random.getrandbits(64))
                         for _ in range(size)])
        for i in range(size):
            item = store.next_item()
            serial = made + i
            if serial % 20 == 19:  # 5 % unfinished (half of them in flight)
                if serial % 40 == 39:
                    store.start(item)
                continue
            store.start(item)
            if serial % 20 == 18:
                store.fail(item, "origin answered HTTP 404")
            else:
                link = "https://i.imgur.com/%s.jpg" % "".join(random.choice(alphabet) for _ in range(7))
                store.complete(item, link)
                digests[random.getrandbits(256).to_bytes(32, "big")] = link
        assert job.id
        made += size
        job_number += 1
    return digests


async def probe_lag(stop: asyncio.Event, samples: List[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(PROBE_SLEEP)
        samples.append(loop.time() - started - PROBE_SLEEP)


async def measure(keeper: StateKeeper, rounds: int) -> Tuple[List[float], List[float], List[float]]:
    """(lag samples without saving, lag samples while saving, seconds per save), in alternating rounds
    of equal length: the machine is shared, so both sides see the same noise."""
    keeper.start()
    baseline: List[float] = []
    during: List[float] = []
    durations: List[float] = []
    idle = 1.0
    for _ in range(rounds):
        stop = asyncio.Event()
        task = asyncio.ensure_future(probe_lag(stop, baseline))
        await asyncio.sleep(idle)
        stop.set()
        await task
        stop = asyncio.Event()
        task = asyncio.ensure_future(probe_lag(stop, during))
        started = time.perf_counter()
        assert await keeper.save()
        durations.append(time.perf_counter() - started)
        idle = durations[-1]
        stop.set()
        await task
    await keeper.stop()
    return baseline, during, durations


def percentile(values: List[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=100000)
    parser.add_argument("--job-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="imgurd-bench-state-") as directory:
        path = os.path.join(directory, "imgurd.state")
        config = defaults(client_id="bench", state_file=path, state_interval=3600.0)
        store = JobStore(config.job_ttl, config.max_jobs)
        started = time.perf_counter()
        digests = fill(store, args.urls, args.job_size)
        fill_seconds = time.perf_counter() - started
        keeper = StateKeeper(config, store, digests)
        keeper.load()  # a first start: takes the lock, finds no file
        baseline, during, durations = asyncio.run(measure(keeper, args.rounds))
        size = os.path.getsize(path)

        loads = []
        for _ in range(3):
            restored = JobStore(config.job_ttl, config.max_jobs)
            restored_digests: Dict[bytes, str] = {}
            reader = StateKeeper(config.replace(state_file=path), restored, restored_digests)
            reader._take_lock = lambda: None  # type: ignore[assignment] (the writer above still holds it)
            started = time.perf_counter()
            reader.load()
            loads.append(time.perf_counter() - started)
        assert len(restored.jobs) == len(store.jobs) and restored.links == store.links
        assert restored_digests == digests and restored.backlog == store.backlog

    urls = args.urls
    echo("state file at %s retained URLs (%d jobs of %d; %d links, %d digests, %d unfinished); store filled in %.1f s"
         % (format(urls, ","), len(store.jobs), args.job_size, len(store.links), len(digests), store.backlog,
            fill_seconds))
    echo()
    echo("| figure | value |")
    echo("| --- | --- |")
    echo("| save (snapshot + encode + gzip + fsync + rename), median of %d | %.0f ms |"
         % (len(durations), 1000 * statistics.median(durations)))
    echo("| loop lag, 1 ms probe, no save running: p50 / p99 / max (%d samples) | %.1f / %.1f / %.1f ms |"
         % (len(baseline), 1000 * statistics.median(baseline), 1000 * percentile(baseline, 0.99),
            1000 * max(baseline)))
    echo("| loop lag, 1 ms probe, during saves: p50 / p99 / max (%d samples) | %.1f / %.1f / %.1f ms |"
         % (len(during), 1000 * statistics.median(during), 1000 * percentile(during, 0.99), 1000 * max(during)))
    echo("| file size | %.2f MB (%.1f bytes per URL) |" % (size / 1e6, size / urls))
    echo("| load at start-up (read, check, restore), median of %d | %.0f ms |"
         % (len(loads), 1000 * statistics.median(loads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
