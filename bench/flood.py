"""The retained-job flood (issue 15, finding 1): does RSS stay under max_retained_bytes plus a fixed overhead?

    python -m bench.flood                                # 400 POSTs x 128 URLs x 8 KB, at 64 MiB and 256 MiB
    python -m bench.flood --limits 268435456 --posts 800

Each POST holds 128 URLs of about 8 KB that the network guard refuses at once (http://127.0.0.1:9/...),
so every job finishes soon after it is accepted and only the retention limits hold it back: before
max_retained_bytes, 400 such POSTs took RSS from 41 MB to 461 MB. A POST answered 503 (the unfinished
jobs would not fit) is sent again 0.2 s later, so all of them get in and the whole flood passes through. The real ``imgurd`` runs in a process
of its own (guard on, log level error, its stderr in bench/out/flood-<limit>.log); RSS and peak RSS
(VmRSS, VmHWM) are read from /proc/<pid>/status; nothing but 127.0.0.1 is ever connected to, and no
upload is ever attempted. Standalone: only the standard library and this checkout's imgurd package.
"""

import argparse
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    values = {}
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    return values


def metric(port: int, name: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    match = re.search(r"^%s (\S+)$" % re.escape(name), text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def start(limit: int, log: Path, src: Path) -> "tuple[subprocess.Popen, int]":
    port = free_port()
    command = [sys.executable, "-c", "from imgurd.cli import run_command; run_command()", "--port", str(port),
               "--client-id", "bench-flood", "--api-url", "http://127.0.0.1:9", "--log-level", "error",
               "--max-retained-bytes", str(limit)]
    process = subprocess.Popen(command, cwd=str(src), stderr=log.open("w"), stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    raise RuntimeError("imgurd did not start; see %s" % log)


def flood(port: int, posts: int, urls: int, url_bytes: int, clients: int, retry_wait: float) -> Dict[str, int]:
    """``posts`` POSTs from ``clients`` threads, each on one keep-alive connection; answers counted by status."""
    counts: Dict[str, int] = {}
    lock = threading.Lock()
    next_post = [0]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                number = next_post[0]
                next_post[0] += 1
            if number >= posts:
                break
            filler = "a" * max(0, url_bytes - 40)
            body = json.dumps({"urls": ["http://127.0.0.1:9/%d/%d/%s" % (number, i, filler)
                                        for i in range(urls)]}).encode()
            while True:  # a 503 (retained bytes or backlog full) is retried soon, so every POST gets in
                connection.request("POST", "/v1/images/upload", body, {"Content-Type": "application/json"})
                answer = connection.getresponse()
                answer.read()
                with lock:
                    counts[str(answer.status)] = counts.get(str(answer.status), 0) + 1
                if answer.status != 503:
                    break
                time.sleep(retry_wait)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


def run(limit: int, args: argparse.Namespace) -> Dict[str, object]:
    OUT.mkdir(parents=True, exist_ok=True)
    process, port = start(limit, OUT / ("flood-%d.log" % limit), Path(args.src))
    try:
        time.sleep(0.5)
        idle = status(process.pid)["VmRSS"]
        started = time.monotonic()
        answers = flood(port, args.posts, args.urls, args.url_bytes, args.clients, args.retry_wait)
        seconds = time.monotonic() - started
        deadline = time.monotonic() + 60
        while metric(port, "imgurd_backlog_urls") > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        figures = status(process.pid)
        retained = metric(port, "imgurd_jobs_retained_bytes")
        jobs = metric(port, "imgurd_jobs_retained")
    finally:
        process.terminate()
        process.wait(timeout=30)
    submitted = args.posts * args.urls * args.url_bytes
    return {"limit": limit, "submitted": submitted, "idle": idle, "peak": figures["VmHWM"],
            "final": figures["VmRSS"], "retained": retained, "jobs": jobs, "answers": answers, "seconds": seconds}


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", default="%d,%d" % (64 * MIB, 256 * MIB),
                        help="max_retained_bytes values to run, comma-separated")
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--urls", type=int, default=128, help="URLs per POST")
    parser.add_argument("--url-bytes", type=int, default=8000, help="characters per URL")
    parser.add_argument("--clients", type=int, default=4, help="concurrent POSTing connections")
    parser.add_argument("--retry-wait", type=float, default=0.2, help="seconds before a POST refused with 503 is sent again")
    parser.add_argument("--src", default=str(ROOT),
                        help="directory holding the imgurd package to run (e.g. an older checkout, for a before figure)")
    args = parser.parse_args(argv)
    print("flood: %d POSTs x %d URLs x %d bytes = %d MiB of URLs, %d clients"
          % (args.posts, args.urls, args.url_bytes, args.posts * args.urls * args.url_bytes // MIB, args.clients))
    print("| max_retained_bytes | idle RSS | peak RSS | final RSS | peak - idle - limit | retained (metric) "
          "| jobs kept | answers | time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for limit in (int(value) for value in args.limits.split(",")):
        result = run(limit, args)
        print("| %d MiB | %.0f MiB | %.0f MiB | %.0f MiB | %+.0f MiB | %.1f MiB | %d | %s | %.1f s |" % (
            limit // MIB, result["idle"] / MIB, result["peak"] / MIB, result["final"] / MIB,
            (result["peak"] - result["idle"] - limit) / MIB, result["retained"] / MIB, result["jobs"],
            " ".join("%s: %d" % item for item in sorted(result["answers"].items())), result["seconds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
