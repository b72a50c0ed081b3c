"""The scenarios of ``python -m bench`` (1 to 6 of bench/README.md), each a method of ``Bench``."""

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pycurl

from bench.children import (
    BENCH,
    CLIENT_ID,
    Child,
    Fake,
    Imgurd,
    call,
    echo,
    finish_load,
    has_links,
    image_urls,
    read_json_line,
    run_load,
    start_load,
    start_profiler,
    stop_profiler,
)
from bench.sidebyside import SideBySide
from imgurd.imgur import multipart_parts

KB = 1024
MIB = 1024 * 1024
SMALL_JOB = 10  # scenario 1: URLs of the job POSTed behind the big ones (fairness)


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


def knows_max_per_host(src: Optional[str]) -> bool:
    """Whether the imgurd in ``src`` (None: this checkout) has the max_per_host setting."""
    if src is None:
        return True
    return any("max_per_host" in path.read_text(errors="replace") for path in Path(src, "imgurd").glob("*.py"))


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

    def imgurd(self, name: str, *flags: str, src: Optional[str] = None, probes: Optional[Path] = None) -> Imgurd:
        """imgurd with ``flags``; every image of a run comes from one origin host, so unless told
        otherwise its max_per_host is its max_concurrency: for another tree given with --compare-src
        too (left out only for a tree from before max_per_host), or the two would not run the same
        number of transfers at once, and a comparison would measure that."""
        assert self.imgur is not None
        if "--max-concurrency" in flags and "--max-per-host" not in flags and knows_max_per_host(src):
            flags += ("--max-per-host", flags[flags.index("--max-concurrency") + 1])
        return Imgurd(name, self.imgur, *flags, src=src, probes=probes)

    def latency(self, imgur: float, origin: float) -> None:
        assert self.imgur and self.origin
        self.imgur.latency(imgur)
        self.origin.latency(origin)

    # 1. throughput against the latency-bound limit, and how soon a small job behind it is done

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
            time.sleep(1.0)  # the big jobs under way
            small = image_urls(self.origin, size, self.seeds(SMALL_JOB), SMALL_JOB)
            queued = daemon.counters().get("backlog", 0)
            posted = time.monotonic()
            small_s = daemon.wait_job(daemon.submit(small)[0], timeout=120) - posted
            end = daemon.wait_links(timeout=120)
            cpu = daemon.cpu() - cpu0
            imgur_stats = self.imgur.stats()
            fakes = imgur_stats["cpu"] + self.origin.stats()["cpu"] - fakes0
            peak_uploads = imgur_stats["max_in_flight"]  # since the stats() before the run
            failed = daemon.counters().get("failed", 0)
        finally:
            daemon.stop()
        elapsed = end - begin
        rate = (count + SMALL_JOB) / elapsed
        ratio = rate / limit
        self.details["1_throughput"] = {
            "images": count, "image_bytes": size, "latency_s": latency, "max_concurrency": concurrency,
            "t_download_s": t_down, "t_upload_s": t_up, "limit_per_s": limit, "elapsed_s": elapsed,
            "images_per_s": rate, "ratio_to_limit": ratio, "imgurd_cpu_s": cpu, "imgurd_cpu_share": cpu / elapsed,
            "fakes_cpu_s": fakes, "fakes_cpu_share": fakes / elapsed,
            "fake_imgur_max_uploads_in_flight": peak_uploads, "failed": failed,
            "small_job": {"urls": SMALL_JOB, "backlog_when_posted": queued, "complete_after_s": small_s,
                          "backlog_alone_s": queued / rate},
        }
        self.row("1", "throughput / latency-bound limit C/(t_down+t_up)",
                 "%.0f/s of %.0f/s = %.2f" % (rate, limit, ratio), ">= 0.90", ratio >= 0.9,
                 "%+.0f%%" % (100 * (ratio / 0.9 - 1)))
        self.row("1", "fairness: a job of %d URLs POSTed behind a backlog" % SMALL_JOB,
                 "complete after %.2f s, behind %d queued URLs (%.1f s of work in arrival order)"
                 % (small_s, queued, queued / rate), "report", None, "")

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
                for label, _ in (variants if turn % 2 == 0 else variants[::-1]):  # neither always goes first
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
                if has_links(body):
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


    # 6. side by side with the bare reference relay

    def relay(self) -> None:
        SideBySide(self).run()


def size_name(size: int) -> str:
    if size % MIB == 0:
        return "%d MiB" % (size // MIB)
    return "%d KB" % (size // KB)

