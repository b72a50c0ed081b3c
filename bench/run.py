"""imgurd benchmarks (issue 5): is it fast, and is it bounded?

    pip install -e '.[bench]' && python -m bench            # everything, about 6-8 minutes on 2 cores
    python -m bench --only 1,2 --quick                      # a subset, smaller workloads
    python -m bench --profile                               # also py-spy profiles of the CPU runs
    python -m bench --compare-src /path/to/old/checkout     # also run scenarios 2 and 4 on another imgurd

The imgurd under test is the real ``imgurd`` command in a process of its own (``--allow-private-networks``,
``--api-url`` at the fake Imgur). The fake Imgur and the image origin (tests/fakes.py) run in two more
processes, load generators and probes in others, so the CPU seconds and RSS read from /proc belong to
imgurd alone. Everything listens on and connects to 127.0.0.1 only. Every figure of a run comes from
that run and targets are ratios of figures measured side by side, because the machine is shared and
noisy. The table goes to stdout and to bench/RESULTS.md; raw figures to bench/out/results.json.
"""

import argparse
import datetime
import http.client
import io
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # python bench/run.py
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import pycurl  # noqa: E402
import tornado  # noqa: E402

from imgurd.imgur import multipart_parts  # noqa: E402

BENCH = ROOT / "bench"
OUT = BENCH / "out"
CLIENT_ID = "bench-client-id"
KB = 1024
MIB = 1024 * 1024


def echo(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_json_line(process: subprocess.Popen, timeout: float) -> Dict[str, Any]:
    """The first line a child prints on stdout, as JSON (the child's 'ready' message)."""
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line:
                return json.loads(line)
        if process.poll() is not None:
            break
    raise RuntimeError("%s did not start (see bench/out/*.log)" % " ".join(map(str, process.args)))


class Child:
    """A helper process: stdin kept open (closing it tells the child to stop), stderr to a log file."""

    def __init__(self, name: str, args: List[str], cwd: Path = ROOT, env: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self.log_path = OUT / ("%s.log" % name)
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(args, cwd=str(cwd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.log, env=env, text=True)
        self.pid = self.process.pid

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        process = self.process
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        self.log.close()
        return process.returncode


class Fake(Child):
    def __init__(self, role: str) -> None:
        super().__init__("fake-" + role, [sys.executable, "-m", "bench.fakeproc", role])
        ready = read_json_line(self.process, 30)
        self.port = ready["port"]
        self.control = ready["control"]
        self.url = "http://127.0.0.1:%d" % self.port

    def latency(self, seconds: float, jitter: float = 0.0) -> None:
        status, _ = call(self.control, "POST", "/latency?seconds=%s&jitter=%s" % (seconds, jitter), b"")
        assert status == 200

    def stats(self) -> Dict[str, Any]:
        return json.loads(call(self.control, "GET", "/stats")[1])


def proc_status(pid: int) -> Dict[str, int]:
    """VmRSS, VmHWM (peak RSS) etc. of a process, in bytes."""
    values = {}
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("Vm"):
                name, value = line.split(":", 1)
                parts = value.split()
                values[name] = int(parts[0]) * 1024
    return values


class Imgurd(Child):
    """The real ``imgurd`` command (or another checkout's, with ``src``) on a free port."""

    def __init__(self, name: str, imgur: Fake, *flags: str, src: Optional[str] = None) -> None:
        self.port = free_port()
        settings = ["--client-id", CLIENT_ID, "--api-url", imgur.url, "--allow-private-networks",
                    "--host", "127.0.0.1", "--port", str(self.port), "--shutdown-timeout", "1", *flags]
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGURD_")}
        if src is None:
            command = shutil.which("imgurd") or os.path.join(os.path.dirname(sys.executable), "imgurd")
            args, cwd = [command, *settings], OUT
        else:  # another checkout of imgurd: its package first on sys.path
            env["PYTHONPATH"] = src
            args = [sys.executable, "-c", "import sys; sys.argv[0] = 'imgurd'; from imgurd.cli import main; main()",
                    *settings]
            cwd = Path(src)
        super().__init__(name, args, cwd=cwd, env=env)
        self.ps = psutil.Process(self.pid)
        deadline = time.monotonic() + 30
        while True:
            try:
                if call(self.port, "GET", "/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("imgurd did not start: see %s" % self.log_path)
            time.sleep(0.05)
        self.expected_links = 0

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def rss(self) -> int:
        return proc_status(self.pid)["VmRSS"]

    def peak_rss(self) -> int:
        return proc_status(self.pid)["VmHWM"]

    def reset_peak(self) -> bool:
        """Make VmHWM start again from the current RSS (Linux ``clear_refs`` 5); False if not allowed."""
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as handle:
                handle.write("5")
            return True
        except OSError:
            return False

    def submit(self, urls: List[str], batch: int = 1000) -> List[str]:
        """POST the URLs in jobs of ``batch``; the job ids."""
        ids = []
        for start in range(0, len(urls), batch):
            body = json.dumps({"urls": urls[start:start + batch]}).encode()
            status, answer = call(self.port, "POST", "/v1/images/upload", body)
            if status != 202:
                raise RuntimeError("POST answered %d: %s" % (status, answer[:200]))
            ids.append(json.loads(answer)["jobId"])
        self.expected_links += len(urls)
        return ids

    def wait_links(self, timeout: float, poll: float = 0.02) -> float:
        """Wait until ``expected_links`` links exist (every URL submitted so far uploaded); the time then.

        Polls ``GET /v1/images?offset=N-1&limit=1``: one list slice in imgurd, so the poll costs it
        next to nothing. Fails early (with imgurd's own counters) if URLs fail instead."""
        deadline = time.monotonic() + timeout
        path = "/v1/images?offset=%d&limit=1" % (self.expected_links - 1)
        checked = time.monotonic()
        while True:
            status, body = call(self.port, "GET", path)
            now = time.monotonic()
            if status == 200 and body != b'{"uploaded":[]}':
                return now
            if now > deadline:
                raise RuntimeError("timed out waiting for %d links; %s" % (self.expected_links, self.counters()))
            if now - checked > 2:
                checked = now
                counters = self.counters()
                if counters.get("failed", 0):
                    raise RuntimeError("URLs failed: %s (see %s)" % (counters, self.log_path))
            time.sleep(poll)

    def counters(self) -> Dict[str, float]:
        text = call(self.port, "GET", "/metrics")[1].decode()
        found: Dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r'imgurd_urls_finished_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)', line)
            if match:
                found[match.group(1)] = found.get(match.group(1), 0) + float(match.group(2))
            elif line.startswith("imgurd_backlog_urls "):
                found["backlog"] = float(line.split()[1])
        return found


_connections: Dict[int, http.client.HTTPConnection] = {}


def call(port: int, method: str, path: str, body: Optional[bytes] = None, timeout: float = 60) -> Tuple[int, bytes]:
    """One request on a kept-alive connection to 127.0.0.1:port."""
    for attempt in (1, 2):
        connection = _connections.get(port)
        if connection is None:
            connection = _connections[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            del _connections[port]
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def image_urls(origin: Fake, size: int, first_seed: int, count: int) -> List[str]:
    return ["%s/img/%d/%d.jpg" % (origin.url, size, seed) for seed in range(first_seed, first_seed + count)]


def run_load(args: List[str], timeout: float) -> Dict[str, Any]:
    """Run ``python -m bench.load ...`` to its end; its JSON summary."""
    done = subprocess.run([sys.executable, "-m", "bench.load", *args], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError("bench.load failed: %s" % done.stderr[-2000:])
    return json.loads(done.stdout)


def start_load(args: List[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.load", *args], cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def finish_load(process: subprocess.Popen, timeout: float) -> Dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise RuntimeError("bench.load failed: %s" % err[-2000:])
    return json.loads(out)


# --- single requests to the fakes, with a client of our own (scenario 1's limit)


def time_single_requests(origin: Fake, imgur: Fake, size: int, count: int, first_seed: int) -> Tuple[float, float]:
    """Median seconds of one download of ``size`` bytes from the origin and one upload of it to the fake
    Imgur, each timed alone with pycurl on a kept-alive connection, as imgurd's curl does."""
    curl = pycurl.Curl()
    downloads, uploads = [], []
    try:
        for n in range(count):
            buffer = io.BytesIO()
            curl.reset()
            curl.setopt(pycurl.URL, "%s/img/%d/%d.jpg" % (origin.url, size, first_seed + n))
            curl.setopt(pycurl.WRITEDATA, buffer)
            begin = time.perf_counter()
            curl.perform()
            downloads.append(time.perf_counter() - begin)
            assert curl.getinfo(pycurl.RESPONSE_CODE) == 200 and len(buffer.getvalue()) == size
            head, tail, content_type = multipart_parts("%d.jpg" % n, "image/jpeg")
            body = head + buffer.getvalue() + tail
            answer = io.BytesIO()
            curl.reset()
            curl.setopt(pycurl.URL, imgur.url + "/3/image")
            curl.setopt(pycurl.POST, 1)
            curl.setopt(pycurl.POSTFIELDSIZE, len(body))
            curl.setopt(pycurl.READDATA, io.BytesIO(body))
            curl.setopt(pycurl.HTTPHEADER, ["Authorization: Client-ID " + CLIENT_ID, "Content-Type: " + content_type,
                                            "Expect:"])
            curl.setopt(pycurl.WRITEDATA, answer)
            begin = time.perf_counter()
            curl.perform()
            uploads.append(time.perf_counter() - begin)
            assert curl.getinfo(pycurl.RESPONSE_CODE) == 200, answer.getvalue()[:200]
    finally:
        curl.close()
    return statistics.median(downloads), statistics.median(uploads)


# --- the scenarios


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.quick = options.quick
        self.rows: List[Dict[str, Any]] = []
        self.details: Dict[str, Any] = {}
        self.imgur: Optional[Fake] = None
        self.origin: Optional[Fake] = None
        self.seed = 0

    def seeds(self, count: int) -> int:
        """A fresh range of image seeds: no two images of a run have the same bytes."""
        first = self.seed
        self.seed += count
        return first

    def row(self, number: str, what: str, value: str, target: str, met: Optional[bool], margin: str) -> None:
        self.rows.append({"n": number, "what": what, "value": value, "target": target,
                          "result": "n/a" if met is None else ("met" if met else "MISSED"), "margin": margin})
        echo("  %s %s: %s (target %s) -> %s %s" % (number, what, value, target, self.rows[-1]["result"], margin))

    def imgurd(self, name: str, *flags: str, src: Optional[str] = None) -> Imgurd:
        assert self.imgur is not None
        return Imgurd(name, self.imgur, *flags, src=src)

    def latency(self, imgur: float, origin: float) -> None:
        assert self.imgur and self.origin
        self.imgur.latency(imgur)
        self.origin.latency(origin)

    # 1. throughput against the latency-bound limit

    def throughput(self) -> None:
        assert self.imgur and self.origin
        count = 2000 if self.quick else 5000
        size, latency, concurrency = 100 * KB, 0.05, 64
        echo("1. throughput: %d images of %d KB, %g ms latency at both fakes, max_concurrency %d"
             % (count, size // KB, latency * 1000, concurrency))
        self.latency(latency, latency)
        t_down, t_up = time_single_requests(self.origin, self.imgur, size, 10, self.seeds(10))
        limit = concurrency / (t_down + t_up)
        daemon = self.imgurd("imgurd-throughput", "--max-concurrency", str(concurrency))
        try:
            urls = image_urls(self.origin, size, self.seeds(count), count)
            fakes0 = self.imgur.stats()["cpu"] + self.origin.stats()["cpu"]  # (also resets the in-flight mark)
            cpu0 = daemon.cpu()
            begin = time.monotonic()
            daemon.submit(urls)
            end = daemon.wait_links(timeout=120)
            cpu = daemon.cpu() - cpu0
            imgur_stats = self.imgur.stats()
            fakes = imgur_stats["cpu"] + self.origin.stats()["cpu"] - fakes0
            peak_uploads = imgur_stats["max_in_flight"]  # since the stats() before the run
            failed = daemon.counters().get("failed", 0)
        finally:
            daemon.stop()
        elapsed = end - begin
        rate = count / elapsed
        ratio = rate / limit
        self.details["1_throughput"] = {
            "images": count, "image_bytes": size, "latency_s": latency, "max_concurrency": concurrency,
            "t_download_s": t_down, "t_upload_s": t_up, "limit_per_s": limit, "elapsed_s": elapsed,
            "images_per_s": rate, "ratio_to_limit": ratio, "imgurd_cpu_s": cpu, "imgurd_cpu_share": cpu / elapsed,
            "fakes_cpu_s": fakes, "fakes_cpu_share": fakes / elapsed,
            "fake_imgur_max_uploads_in_flight": peak_uploads, "failed": failed,
        }
        self.row("1", "throughput / latency-bound limit C/(t_down+t_up)",
                 "%.0f/s of %.0f/s = %.2f" % (rate, limit, ratio), ">= 0.90", ratio >= 0.9,
                 "%+.0f%%" % (100 * (ratio / 0.9 - 1)))

    # 2. CPU per image

    def cpu_cost(self) -> None:
        rounds = 2 if self.quick else 4
        sizes = [(100 * KB, 1000 if self.quick else 4000), (MIB, 200 if self.quick else 800)]
        self.latency(0, 0)
        variants: List[Tuple[str, Optional[str]]] = [("current", None)]
        if self.options.compare_src:
            variants.insert(0, ("compared", self.options.compare_src))
        results: Dict[str, Dict[str, Any]] = {}
        for size, count in sizes:
            echo("2. CPU per image: %d images of %s at zero latency, in %d rounds%s"
                 % (count, size_name(size), rounds, " alternating between the two imgurds" if len(variants) > 1 else ""))
            results.update(self._cpu_runs(size, count, rounds, variants))
        self.details["2_cpu"] = results
        for size, _ in sizes:
            current = results["%s current" % size_name(size)]
            value = "%.0f images per imgurd CPU-second (%.2f ms CPU/image; %.0f images/s wall)" % (
                current["images_per_cpu_s"], current["cpu_ms_per_image"], current["images_per_s"])
            margin = ""
            compared = results.get("%s compared" % size_name(size))
            if compared:
                margin = "x%.2f images/CPU-s vs --compare-src (%.2f ms CPU/image there)" % (
                    current["images_per_cpu_s"] / compared["images_per_cpu_s"], compared["cpu_ms_per_image"])
            self.row("2", "CPU cost, %s images" % size_name(size), value, "report", None, margin)

    def _cpu_runs(self, size: int, count: int, rounds: int,
                  variants: List[Tuple[str, Optional[str]]]) -> Dict[str, Dict[str, Any]]:
        """``count`` images through each imgurd, in ``rounds`` turns taken in alternation, so that both
        see the same moments of a noisy machine."""
        assert self.origin and self.imgur
        daemons: Dict[str, Imgurd] = {}
        totals = {label: {"images": 0, "elapsed_s": 0.0, "imgurd_cpu_s": 0.0, "fakes_cpu_s": 0.0}
                  for label, _ in variants}
        profilers = []
        try:
            for label, src in variants:
                daemon = daemons[label] = self.imgurd("imgurd-cpu-%s-%s" % (size_name(size).replace(" ", ""), label),
                                                      "--max-concurrency", "64", src=src)
                daemon.submit(image_urls(self.origin, size, self.seeds(64), 64))  # connections, handles, imports
                daemon.wait_links(timeout=60)
                if self.options.profile:
                    profilers.append(start_profiler(daemon, "profile-%s-%s" % (size_name(size), label)))
            for turn in range(rounds):
                share = count // rounds + (1 if turn < count % rounds else 0)
                for label, _ in variants:
                    daemon = daemons[label]
                    urls = image_urls(self.origin, size, self.seeds(share), share)
                    fakes0 = self.imgur.stats()["cpu"] + self.origin.stats()["cpu"]
                    cpu0 = daemon.cpu()
                    begin = time.monotonic()
                    daemon.submit(urls)
                    end = daemon.wait_links(timeout=180)
                    total = totals[label]
                    total["imgurd_cpu_s"] += daemon.cpu() - cpu0
                    total["fakes_cpu_s"] += self.imgur.stats()["cpu"] + self.origin.stats()["cpu"] - fakes0
                    total["elapsed_s"] += end - begin
                    total["images"] += share
        finally:
            for profiler in profilers:
                if profiler is not None:
                    stop_profiler(profiler)
            for daemon in daemons.values():
                daemon.stop()
        results = {}
        for label, total in totals.items():
            cpu, images = total["imgurd_cpu_s"], total["images"]
            results["%s %s" % (size_name(size), label)] = dict(
                total, image_bytes=size, rounds=rounds, images_per_s=images / total["elapsed_s"],
                images_per_cpu_s=images / cpu, cpu_ms_per_image=1000 * cpu / images,
                imgurd_cpu_share=cpu / total["elapsed_s"])
        return results

    # 3. POST latency under load, against a bare Tornado handler

    def post_latency(self) -> None:
        assert self.origin and self.imgur
        rounds, seconds = (1, 2) if self.quick else (2, 3)  # alternating rounds against each server
        levels = {"latency": 4, "throughput": 16}  # connections, each POSTing jobs back to back
        backlog = 10000
        origin_latency, jitter = 1.0, 0.5
        tool = "wrk" if shutil.which("wrk") and not self.options.no_wrk else "bench.load"
        echo("3. POST latency: backlog of %d URLs (origin latency %g s +/- %d%%); jobs of 10 URLs from %s, "
             "%s connections, %d x %d s per server and level"
             % (backlog, origin_latency, 100 * jitter, tool, " and ".join(map(str, levels.values())), rounds, seconds))
        self.latency(0, 0)
        self.origin.latency(origin_latency, jitter)
        bare = Child("bare", [sys.executable, "-m", "bench.bare"])
        bare_port = read_json_line(bare.process, 20)["port"]
        daemon = self.imgurd("imgurd-post", "--max-concurrency", "64", "--max-queued-urls", "5000000")
        ports = {"imgurd": daemon.port, "bare": bare_port}
        runs: Dict[str, Dict[str, List[Dict[str, Any]]]] = {level: {"imgurd": [], "bare": []} for level in levels}
        try:
            daemon.submit(image_urls(self.origin, 100 * KB, self.seeds(backlog), backlog))
            time.sleep(1.5)  # transfers under way
            before = daemon.counters()
            for name in ("bare", "imgurd"):  # warm-up
                self._post_load(tool, ports[name], 1, levels["throughput"])
            cpu0 = daemon.cpu()
            for _ in range(rounds):
                for level, connections in levels.items():
                    for name in ("bare", "imgurd"):
                        runs[level][name].append(self._post_load(tool, ports[name], seconds, connections))
            cpu = daemon.cpu() - cpu0
            after = daemon.counters()
        finally:
            daemon.stop()
            bare.stop()
            self.origin.latency(0)

        def merged(level: str, name: str) -> Dict[str, float]:
            done = runs[level][name]
            count = sum(r["count"] for r in done)
            return {"rps": count / sum(r["count"] / r["rps"] for r in done), "count": count,
                    "p50_ms": statistics.mean(r["p50_ms"] for r in done), "p99_ms": max(r["p99_ms"] for r in done),
                    "non202": sum(r["non202"] for r in done)}

        result = {level: {name: merged(level, name) for name in ("imgurd", "bare")} for level in levels}
        ratio = result["throughput"]["imgurd"]["rps"] / result["throughput"]["bare"]["rps"]
        non202 = sum(result[level]["imgurd"]["non202"] for level in levels)
        posts = sum(result[level]["imgurd"]["count"] for level in levels)
        self.details["3_post"] = {
            "tool": tool, "connections": levels, "rounds": rounds, "round_s": seconds, "initial_backlog": backlog,
            "origin_latency_s": origin_latency, "origin_jitter": jitter,
            "backlog_before": before.get("backlog"), "backlog_after": after.get("backlog"),
            "transfers_finished_meanwhile": after.get("complete", 0) - before.get("complete", 0),
            "runs": runs, "merged": result, "rps_ratio": ratio, "imgurd_cpu_s": cpu}
        mine, theirs = result["latency"]["imgurd"], result["latency"]["bare"]
        self.row("3", "POST p99, %d clients POSTing back to back, backlog >= %d" % (levels["latency"], backlog),
                 "%.1f ms (p50 %.1f ms, %.0f/s; bare Tornado p99 %.1f ms, p50 %.1f ms)"
                 % (mine["p99_ms"], mine["p50_ms"], mine["rps"], theirs["p99_ms"], theirs["p50_ms"]),
                 "< 20 ms", mine["p99_ms"] < 20, "%+.0f%%" % (100 * (mine["p99_ms"] / 20 - 1)))
        mine, theirs = result["throughput"]["imgurd"], result["throughput"]["bare"]
        self.row("3", "POST requests/s, imgurd / bare Tornado (%d clients)" % levels["throughput"],
                 "%.0f / %.0f = %.2f (p99 %.0f / %.0f ms)" % (mine["rps"], theirs["rps"], ratio, mine["p99_ms"],
                                                              theirs["p99_ms"]),
                 ">= 0.60", ratio >= 0.6, "%+.0f%%" % (100 * (ratio / 0.6 - 1)))
        self.row("3", "non-202 answers to imgurd's POSTs", "%d of %d" % (non202, posts), "0", non202 == 0, "")

    def _post_load(self, tool: str, port: int, duration: float, connections: int) -> Dict[str, Any]:
        assert self.origin
        if tool == "wrk":
            done = subprocess.run(["wrk", "-t1", "-c%d" % connections, "-d%ds" % duration, "--timeout", "10s",
                                   "-s", str(BENCH / "post.lua"), "http://127.0.0.1:%d" % port, "--",
                                   self.origin.url, str(100 * KB)],
                                  capture_output=True, text=True, timeout=duration + 60, stdin=subprocess.DEVNULL)
            line = [x for x in done.stdout.splitlines() if x.startswith("BENCH-JSON ")]
            if done.returncode != 0 or not line:
                raise RuntimeError("wrk failed: %s %s" % (done.stdout[-1000:], done.stderr[-1000:]))
            raw = json.loads(line[-1][len("BENCH-JSON "):])
            return {"count": raw["count"], "rps": raw["count"] / (raw["duration_us"] / 1e6),
                    "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
                    "max_ms": raw["max_us"] / 1000, "non202": raw["non202"], "socket_errors": raw["socket_errors"]}
        raw = run_load(["post", "--port", str(port), "--connections", str(connections), "--duration", str(duration),
                        "--urls-base", self.origin.url, "--image-size", str(100 * KB)], timeout=duration + 60)
        raw["non202"] = sum(n for code, n in raw["statuses"].items() if code != "202") + raw["errors"]
        return raw

    # 4a. peak RSS with C max-size transfers in flight

    def memory_in_flight(self) -> None:
        assert self.origin and self.imgur
        concurrency, size = 16, 4 * MIB
        variants = [("current", None)]
        if self.options.compare_src:
            variants.insert(0, ("compared", self.options.compare_src))
        results = {}
        for label, src in variants:
            echo("4a. memory: %d transfers of %s images (= --max-image-bytes) in flight, uploads held 3 s (%s imgurd)"
                 % (concurrency, size_name(size), label))
            results[label] = self._memory_run(concurrency, size, src, label)
        self.details["4a_memory_in_flight"] = results
        current = results["current"]
        ratio = current["growth_bytes"] / current["bytes_in_flight"]
        margin = "%+.0f%%" % (100 * (ratio / 2 - 1))
        if "compared" in results:
            margin += "; compared: %.2f x" % (results["compared"]["growth_bytes"] / current["bytes_in_flight"])
        self.row("4a", "peak RSS above idle / bytes in flight (C=%d x %s)" % (concurrency, size_name(size)),
                 "%.0f MiB / %.0f MiB = %.2f x" % (current["growth_bytes"] / MIB, current["bytes_in_flight"] / MIB, ratio),
                 "<= 2.0 x", ratio <= 2.0, margin)

    def _memory_run(self, concurrency: int, size: int, src: Optional[str], label: str) -> Dict[str, Any]:
        assert self.origin and self.imgur
        self.latency(0, 0)
        daemon = self.imgurd("imgurd-memory-%s" % label, "--max-concurrency", str(concurrency),
                             "--max-image-bytes", str(size), src=src)
        try:
            # warm up with as many small transfers: curl handles, connections and lazy imports exist
            daemon.submit(image_urls(self.origin, 100 * KB, self.seeds(concurrency * 2), concurrency * 2))
            daemon.wait_links(timeout=60)
            time.sleep(0.5)
            idle = daemon.rss()
            reset = daemon.reset_peak()
            self.latency(3.0, 0)
            self.imgur.stats()
            daemon.submit(image_urls(self.origin, size, self.seeds(concurrency), concurrency))
            sampled = idle
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                sampled = max(sampled, daemon.rss())
                status, body = call(daemon.port, "GET", "/v1/images?offset=%d&limit=1" % (daemon.expected_links - 1))
                if body != b'{"uploaded":[]}':
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError("memory run did not finish: %s" % daemon.counters())
            peak = daemon.peak_rss()
            uploads_in_flight = self.imgur.stats()["max_in_flight"]
        finally:
            self.latency(0, 0)
            daemon.stop()
        if not reset:
            peak = sampled
        return {"concurrency": concurrency, "image_bytes": size, "bytes_in_flight": concurrency * size,
                "idle_rss": idle, "peak_rss": peak, "sampled_peak_rss": sampled, "growth_bytes": peak - idle,
                "vmhwm_reset": reset, "fake_imgur_max_uploads_in_flight": uploads_in_flight}

    # 4b and 5. 100,000 finished URLs: RSS per retained URL, then status and listing at that scale

    def scale(self) -> None:
        assert self.origin and self.imgur
        total = 20000 if self.quick else 100000
        size = 1 * KB
        self.latency(0, 0)
        echo("4b/5. %d URLs of %s images in jobs of 1,000, zero latency; then status and listing at that scale"
             % (total, size_name(size)))
        daemon = self.imgurd("imgurd-scale", "--max-concurrency", "64")
        try:
            daemon.submit(image_urls(self.origin, size, self.seeds(64), 64))  # warm-up, as in 4a
            daemon.wait_links(timeout=60)
            time.sleep(0.5)
            idle = daemon.rss()
            urls = image_urls(self.origin, size, self.seeds(total), total)
            begin = time.monotonic()
            cpu0 = daemon.cpu()
            job_ids: List[str] = []
            for start in range(0, total, 10000):  # in steps, as a client would, well under max_queued_urls
                job_ids += daemon.submit(urls[start:start + 10000])
            daemon.wait_links(timeout=400, poll=0.2)
            elapsed = time.monotonic() - begin
            cpu = daemon.cpu() - cpu0
            time.sleep(1.0)
            retained = daemon.rss()
            per_url = (retained - idle) / total
            self.details["4b_retained"] = {"urls": total, "image_bytes": size, "idle_rss": idle,
                                           "rss_after": retained, "bytes_per_url": per_url, "elapsed_s": elapsed,
                                           "images_per_s": total / elapsed, "imgurd_cpu_s": cpu}
            self.row("4b", "RSS per retained URL (%d finished, links kept)" % total,
                     "%.0f bytes" % per_url, "< 1024 bytes", per_url < 1024, "%+.0f%%" % (100 * (per_url / 1024 - 1)))
            self.status_and_listing(daemon, job_ids[len(job_ids) // 2], total + 64)
        finally:
            daemon.stop()

    def status_and_listing(self, daemon: Imgurd, job_id: str, links: int) -> None:
        duration = 3 if self.quick else 5
        results: Dict[str, Any] = {}
        probe_args = ["probe", "--port", str(daemon.port), "--path", "/healthz", "--interval", "0.005",
                      "--duration", str(duration)]
        results["healthz_idle"] = run_load(probe_args, timeout=duration + 30)
        for name, path in (("job_1000", "/v1/images/upload/" + job_id), ("images_all", "/v1/images")):
            status, body = call(daemon.port, "GET", path)
            assert status == 200, body[:200]
            if name == "images_all":
                assert len(json.loads(body)["uploaded"]) == links
            else:
                assert len(json.loads(body)["images"]) == 1000
            sequential = []
            for _ in range(20):
                begin = time.perf_counter()
                call(daemon.port, "GET", path)
                sequential.append(time.perf_counter() - begin)
            sequential.sort()
            probe = start_load(probe_args)
            load = run_load(["hammer", "--port", str(daemon.port), "--path", path, "--connections", "2",
                             "--duration", str(duration)], timeout=duration + 30)
            results[name] = {"bytes": len(body), "sequential_p50_ms": 1000 * sequential[len(sequential) // 2],
                             "sequential_max_ms": 1000 * sequential[-1], "under_load": load,
                             "healthz_meanwhile": finish_load(probe, timeout=duration + 30)}
        self.details["5_status_listing"] = results
        idle_p99 = results["healthz_idle"]["p99_ms"]
        for name, label in (("job_1000", "GET job of 1,000 URLs"), ("images_all", "GET /v1/images, %d links" % links)):
            entry = results[name]
            load = entry["under_load"]
            self.row("5", label, "%.1f ms alone (%s KB); under 2 clients %.0f/s, p50 %.1f ms, p99 %.1f ms"
                     % (entry["sequential_p50_ms"], entry["bytes"] // 1000, load["rps"], load["p50_ms"],
                        load["p99_ms"]), "report", None, "")
            probe = entry["healthz_meanwhile"]
            self.row("5", "/healthz p99 meanwhile (idle p99 %.1f ms)" % idle_p99, "%.1f ms (max %.1f ms, %d probes)"
                     % (probe["p99_ms"], probe["max_ms"], probe["count"]), "< 20 ms", probe["p99_ms"] < 20,
                     "%+.0f%%" % (100 * (probe["p99_ms"] / 20 - 1)))


def size_name(size: int) -> str:
    if size % MIB == 0:
        return "%d MiB" % (size // MIB)
    return "%d KB" % (size // KB)


# --- profiling (optional)


def start_profiler(daemon: Imgurd, name: str) -> Optional[subprocess.Popen]:
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        echo("   (py-spy not installed: no profile)")
        return None
    output = OUT / (name.replace(" ", "") + ".txt")
    echo("   profiling imgurd with py-spy -> %s" % output.relative_to(ROOT))
    return subprocess.Popen([spy, "record", "--pid", str(daemon.pid), "--rate", "200", "--format", "raw",
                             "--output", str(output), "--nonblocking"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen) -> None:
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait(5)


# --- the report


def machine() -> Dict[str, str]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    wrk = "absent"
    if shutil.which("wrk"):
        first = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
        wrk = first[0].split(" [")[0] if first else "present"
    import imgurd

    return {
        "cpu": model, "cores": str(os.cpu_count()), "memory": "%.0f GiB" % (psutil.virtual_memory().total / 2 ** 30),
        "os": "%s %s" % (platform.system(), platform.release()),
        "python": "%s %s" % (platform.python_implementation(), platform.python_version()),
        "tornado": tornado.version, "pycurl": pycurl.version, "imgurd": imgurd.__version__, "wrk": wrk,
    }


def report(bench: Bench, info: Dict[str, str], command: str, started: datetime.datetime, wall: float) -> str:
    lines = ["# imgurd benchmark results", "",
             "Generated by `%s` on %s (UTC), in %.0f s. All figures below come from this one run; targets "
             "compare figures measured side by side in it." % (command, started.strftime("%Y-%m-%d %H:%M"), wall), "",
             "| machine | |", "| --- | --- |"]
    for key in ("cpu", "cores", "memory", "os", "python", "tornado", "pycurl", "imgurd", "wrk"):
        lines.append("| %s | %s |" % (key, info[key]))
    lines += ["", "| # | measurement | value | target | result | margin |", "| --- | --- | --- | --- | --- | --- |"]
    for row in bench.rows:
        lines.append("| %s | %s | %s | %s | %s | %s |" % (row["n"], row["what"], row["value"], row["target"],
                                                          row["result"], row["margin"]))
    lines += ["", "How each figure is made: see bench/README.md. Raw figures of this run:", "", "```json",
              json.dumps(bench.details, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


SCENARIOS = {"1": "throughput", "2": "cpu_cost", "3": "post_latency", "4a": "memory_in_flight", "4b": "scale",
             "5": "scale"}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="1,2,3,4a,4b,5", help="scenarios to run, e.g. 1,3 (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke test, not for the record)")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of imgurd in scenario 2 (bench/out)")
    parser.add_argument("--compare-src", metavar="DIR",
                        help="a directory holding another imgurd package: scenarios 2 and 4a run it as well")
    parser.add_argument("--no-wrk", action="store_true", help="scenario 3 with bench.load even if wrk is installed")
    parser.add_argument("--output", default=str(BENCH / "RESULTS.md"), help="where the report goes")
    options = parser.parse_args(argv)
    if options.compare_src:
        options.compare_src = str(Path(options.compare_src).resolve())
        assert (Path(options.compare_src) / "imgurd" / "cli.py").exists(), "--compare-src: no imgurd/cli.py there"
    wanted = [s.strip() for s in options.only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        parser.error("unknown scenario(s): %s (choose from %s)" % (", ".join(unknown), ", ".join(SCENARIOS)))
    OUT.mkdir(exist_ok=True)
    command = "python -m bench" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(
        argv if argv is not None else sys.argv[1:]))
    started = datetime.datetime.now(datetime.timezone.utc)
    begin = time.monotonic()
    info = machine()
    echo("imgurd benchmarks on %s x%s, %s, tornado %s" % (info["cpu"], info["cores"], info["python"], info["tornado"]))
    bench = Bench(options)
    bench.imgur = Fake("imgur")
    bench.origin = Fake("origin")
    try:
        done = set()
        for key in wanted:
            method = SCENARIOS[key]
            if method not in done:
                done.add(method)
                getattr(bench, method)()
    finally:
        bench.imgur.stop()
        bench.origin.stop()
    wall = time.monotonic() - begin
    text = report(bench, info, command, started, wall)
    Path(options.output).write_text(text, encoding="utf-8")
    (OUT / "results.json").write_text(json.dumps({"machine": info, "rows": bench.rows, "details": bench.details},
                                                 indent=1, default=str), encoding="utf-8")
    echo("")
    echo("\n".join(line for line in text.splitlines() if line.startswith("|")))
    echo("\nwritten to %s in %.0f s" % (options.output, wall))
    return 0 if all(row["result"] != "MISSED" for row in bench.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
