"""A small HTTP/1.1 load generator and latency probe, run as a process of its own by the bench.

    python -m bench.load probe  --port P --path /healthz --interval 0.01 --duration 5
    python -m bench.load hammer --port P --path /v1/images --connections 2 --duration 5
    python -m bench.load post   --port P --connections 16 --duration 8 --urls-base http://127.0.0.1:Q

Keep-alive connections to 127.0.0.1 only, no parsing of bodies (so the client's own CPU stays out of
the latencies as far as it can). Prints one JSON object: count, requests/s, latency percentiles in
milliseconds, and the count of each status. Every loop ends at ``--duration`` (and at most
``--max-requests``), whatever the server does.
"""

import argparse
import asyncio
import collections
import json
import sys
import time
from typing import Dict, List, Optional


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: Optional[asyncio.StreamReader] = None
        self.writer: Optional[asyncio.StreamWriter] = None

    async def request(self, method: str, path: str, body: bytes = b"", timeout: float = 30.0) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n"
                "Content-Type: application/json\r\n\r\n" % (method, path, self.port, len(body))).encode()
        self.writer.write(head + body)
        try:
            return await asyncio.wait_for(self._response(), timeout)
        except Exception:
            self.close()
            raise

    async def _response(self) -> int:
        assert self.reader is not None
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def percentile(sorted_values: List[float], fraction: float) -> Optional[float]:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def summary(latencies: List[float], statuses: Dict[int, int], errors: int, elapsed: float) -> dict:
    ordered = sorted(latencies)
    ms = lambda value: None if value is None else round(1000 * value, 3)  # noqa: E731
    return {
        "count": len(ordered), "elapsed": round(elapsed, 3),
        "rps": round(len(ordered) / elapsed, 1) if elapsed > 0 else None,
        "p50_ms": ms(percentile(ordered, 0.50)), "p90_ms": ms(percentile(ordered, 0.90)),
        "p99_ms": ms(percentile(ordered, 0.99)), "max_ms": ms(ordered[-1] if ordered else None),
        "statuses": {str(k): v for k, v in sorted(statuses.items())}, "errors": errors,
    }


async def run(args: argparse.Namespace) -> dict:
    latencies: List[float] = []
    statuses: Dict[int, int] = collections.Counter()
    errors = 0
    started = time.perf_counter()
    deadline = started + args.duration
    budget = [args.max_requests]

    def body_for(worker: int, n: int) -> bytes:
        if args.mode != "post":
            return b""
        urls = ["%s/img/%d/%d%06d%02d.jpg" % (args.urls_base, args.image_size, worker, n, i) for i in range(10)]
        return json.dumps({"urls": urls}).encode()

    async def worker(index: int) -> None:
        nonlocal errors
        connection = Connection(args.port)
        n = 0
        method = "POST" if args.mode == "post" else "GET"
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            n += 1
            body = body_for(index, n)
            begin = time.perf_counter()
            try:
                status = await connection.request(method, args.path, body, timeout=max(0.1, deadline + 5 - begin))
            except Exception:
                errors += 1
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - begin)
            statuses[status] += 1
            if args.mode == "probe":
                pause = args.interval - (time.perf_counter() - begin)
                if pause > 0:
                    await asyncio.sleep(pause)
        connection.close()

    count = 1 if args.mode == "probe" else args.connections
    await asyncio.gather(*(worker(i) for i in range(count)))
    return summary(latencies, statuses, errors, time.perf_counter() - started)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("mode", choices=("probe", "hammer", "post"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/healthz")
    parser.add_argument("--interval", type=float, default=0.01, help="probe: seconds between requests")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=10 ** 6)
    parser.add_argument("--urls-base", default="http://127.0.0.1:9")
    parser.add_argument("--image-size", type=int, default=1024)
    args = parser.parse_args(argv)
    if args.mode == "post":
        args.path = "/v1/images/upload"
    args.duration = min(args.duration, 120.0)
    json.dump(asyncio.run(run(args)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
