"""Where a transfer slot's time goes (scenario 6): the fakes' timelines and a service's probes, combined.

All times are ``time.time()`` seconds of the processes involved (one machine, one clock). A transfer
slot cycles through eight phases; each phase's mean is a difference of means over the run's
transfers, so no record has to be paired with another: every transfer contributes one record of each
kind (one download and one upload request in the service, one request at each fake). Phase 1 pairs
the i-th slot release with the (C + i)-th download request, which is exact for the mean as long as
work is waiting (not so in runs bound by how fast jobs are POSTed: there it includes waiting for work).
"""

import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

PHASES = (
    ("free", "slot free (upload handed back) -> next download handed to curl"),
    ("to_origin", "download handed to curl -> origin has the request"),
    ("origin", "origin serves (its latency included)"),
    ("from_origin", "origin done -> download handed back"),
    ("between", "download handed back -> upload handed to curl"),
    ("to_imgur", "upload handed to curl -> fake Imgur has the headers"),
    ("imgur", "fake Imgur receives the body and serves (its latency included)"),
    ("from_imgur", "fake Imgur done -> upload handed back"),
)


def percentile(values: Sequence[float], fraction: float) -> Optional[float]:
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))]


def read_probes(path: str, begin: float, end: float) -> Dict[str, List[Tuple[float, float]]]:
    """bench/instrument.py's records whose first time lies in [begin, end], by kind (L, D, U)."""
    found: Dict[str, List[Tuple[float, float]]] = {"L": [], "D": [], "U": []}
    try:
        with open(path) as handle:
            for line in handle:
                kind, first, second = line.split()
                if kind in found and begin <= float(first) <= end:
                    found[kind].append((float(first), float(second)))
    except FileNotFoundError:
        pass
    return found


def loop_lag(samples: List[Tuple[float, float]]) -> Dict[str, Optional[float]]:
    """Lag of the 5 ms timer, in ms."""
    lags = [1000 * lag for _, lag in samples]
    return {"samples": len(lags), "p50_ms": percentile(lags, 0.5), "p99_ms": percentile(lags, 0.99),
            "max_ms": max(lags) if lags else None, "mean_ms": statistics.mean(lags) if lags else None}


def fake_gaps(origin: List[list], imgur: List[list], concurrency: int) -> Dict[str, Optional[float]]:
    """What the fakes alone show (ms): per image, origin done -> its upload's headers at the fake Imgur
    (matched by seed); and fake Imgur done -> the next request at the origin (the i-th answer with the
    (C + i)-th request: the median is of that pairing, the mean exact)."""
    done = {record[0]: record[3] for record in origin}
    to_imgur = [1000 * (record[1] - done[record[0]]) for record in imgur if record[0] in done]
    answers = sorted(record[3] for record in imgur)
    arrivals = sorted(record[1] for record in origin)[concurrency:]
    pairs = [1000 * (arrival - answer) for answer, arrival in zip(answers, arrivals)]
    return {"origin_done_to_upload_arrives_p50_ms": percentile(to_imgur, 0.5),
            "origin_done_to_upload_arrives_mean_ms": statistics.mean(to_imgur) if to_imgur else None,
            "imgur_done_to_next_origin_request_p50_ms": percentile(pairs, 0.5),
            "imgur_done_to_next_origin_request_mean_ms": statistics.mean(pairs) if pairs else None}


def slot_phases(origin: List[list], imgur: List[list], downloads: List[Tuple[float, float]],
                uploads: List[Tuple[float, float]], concurrency: int) -> Optional[Dict[str, float]]:
    """Mean ms of each of ``PHASES``, plus their sum ``cycle``; None unless every transfer left one
    record of each kind."""
    counts = {len(origin), len(imgur), len(downloads), len(uploads)}
    if len(counts) != 1 or len(origin) <= concurrency:
        return None
    n = len(origin)

    def mean(values: Sequence[float]) -> float:
        return 1000 * math.fsum(values) / len(values)  # exactly rounded: the times are ~1.8e9 s each

    released = sorted(answered for _, answered in uploads)[:n - concurrency]
    requested = sorted(asked for asked, _ in downloads)[concurrency:]
    result = {
        "free": mean(requested) - mean(released),
        "to_origin": mean([r[1] for r in origin]) - mean([asked for asked, _ in downloads]),
        "origin": mean([r[3] - r[1] for r in origin]),
        "from_origin": mean([answered for _, answered in downloads]) - mean([r[3] for r in origin]),
        "between": mean([asked for asked, _ in uploads]) - mean([answered for _, answered in downloads]),
        "to_imgur": mean([r[1] for r in imgur]) - mean([asked for asked, _ in uploads]),
        "imgur": mean([r[3] - r[1] for r in imgur]),
        "from_imgur": mean([answered for _, answered in uploads]) - mean([r[3] for r in imgur]),
    }
    result["cycle"] = sum(result.values())
    return result
