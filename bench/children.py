"""Process plumbing of the bench: helper processes, the imgurd under test, requests to them.

Every child listens on and is reached at 127.0.0.1 only; its stderr goes to ``bench/out/<name>.log``.
"""

import functools
import http.client
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import psutil

from tests.daemon import environment, spawn_imgurd, wait_listening

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
CLIENT_ID = "bench-client-id"


def echo(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- processes


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

    def __init__(self, name: str, args: List[str], cwd: Path = ROOT, env: Optional[Dict[str, str]] = None,
                 spawn: Callable[..., subprocess.Popen] = subprocess.Popen) -> None:
        self.name = name
        self.log_path = OUT / ("%s.log" % name)
        self.log = open(self.log_path, "w")
        self.process = spawn(args, cwd=str(cwd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                             env=env, text=True)
        self.pid = self.process.pid
        self.ps = psutil.Process(self.pid)

    def cpu(self) -> float:
        """CPU seconds (user + system) the process has used so far."""
        times = self.ps.cpu_times()
        return times.user + times.system

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

    def record(self, on: bool) -> None:
        """Start (afresh) or stop keeping per-request times of image requests (bench/fakeproc.py)."""
        status, _ = call(self.control, "POST", "/timeline?on=%d" % on, b"")
        assert status == 200

    def timeline(self) -> List[List[float]]:
        """The records kept since the last call: [seed, arrived, body_received, finished, status] each."""
        return json.loads(call(self.control, "GET", "/timeline")[1])["records"]


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
    """The real ``imgurd`` command (or another checkout's, with ``src``) on a port it picks (tests/daemon.py)."""

    def __init__(self, name: str, imgur: Fake, *flags: str, src: Optional[str] = None,
                 probes: Optional[Path] = None) -> None:
        """``probes``: a file for bench/instrument.py's loop-lag and request records (this imgurd only)."""
        settings = ["--client-id", CLIENT_ID, "--api-url", imgur.url, "--allow-private-networks",
                    "--host", "127.0.0.1", "--shutdown-timeout", "1", *flags]
        if probes is not None:
            assert src is None, "probes are for this checkout's imgurd"
            command = [sys.executable, "-m", "bench.instrument", str(probes), "imgurd"]
            cwd, env = OUT, {"PYTHONPATH": str(ROOT)}
        elif src is None:
            command, cwd, env = None, OUT, None
        else:  # another checkout of imgurd: its package first on sys.path
            command = [sys.executable, "-c", "import sys; sys.argv[0] = 'imgurd'; from imgurd.cli import main; main()"]
            cwd, env = Path(src), {"PYTHONPATH": src}
        super().__init__(name, settings, cwd=cwd, env=env, spawn=functools.partial(spawn_imgurd, command=command))
        port = wait_listening(self.process, 30)
        if port is None:
            self.stop()
            raise RuntimeError("imgurd did not start: see %s" % self.log_path)
        self.port = port
        status, _ = call(self.port, "GET", "/healthz", timeout=30)  # answered once its loop runs
        assert status == 200, status
        self.expected_links = 0

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

    def wait_job(self, job_id: str, timeout: float, poll: float = 0.05) -> float:
        """Wait until the job's report says ``complete``; the time then (fails if a URL failed)."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = call(self.port, "GET", "/v1/images/upload/" + job_id)
            now = time.monotonic()
            report = json.loads(body) if status == 200 else {}
            if report.get("status") == "complete":
                if report["uploaded"]["failed"]:
                    raise RuntimeError("job %s: URLs failed: %s (see %s)" % (job_id, report["images"], self.log_path))
                return now
            if now > deadline:
                raise RuntimeError("job %s: %s after %.0f s (see %s)" % (job_id, report.get("status"), timeout,
                                                                       self.log_path))
            time.sleep(poll)

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
            if status == 200 and has_links(body):
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


RELAY = ROOT.parent / "shared" / "bench" / "reference_relay.py"  # next to the repository, not in it


class Relay(Child):
    """The bare reference relay (``RELAY``): one Tornado process, one curl client, a semaphore of
    ``concurrency``, each URL downloaded then uploaded, no checks. Probed like imgurd (bench/instrument.py)."""

    def __init__(self, name: str, imgur: Fake, concurrency: int, probes: Path) -> None:
        super().__init__(name, [sys.executable, "-m", "bench.instrument", str(probes), str(RELAY), "0", imgur.url,
                                str(concurrency)], env=environment({"PYTHONPATH": str(ROOT)}))
        port = wait_listening(self.process, 30)
        if port is None:
            self.stop()
            raise RuntimeError("the reference relay did not start: see %s" % self.log_path)
        self.port = port


_connections: Dict[int, http.client.HTTPConnection] = {}


def has_links(body: bytes) -> bool:
    """Whether a ``GET /v1/images?...`` answer lists any link (its page is not empty)."""
    try:
        return bool(json.loads(body).get("uploaded"))
    except (ValueError, AttributeError):
        return False


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



# --- profiling (optional)


def start_profiler(daemon: Child, name: str) -> Optional[subprocess.Popen]:
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        echo("   (py-spy not installed: no profile)")
        return None
    output = OUT / (name.replace(" ", "") + ".txt")
    echo("   profiling %s with py-spy -> %s" % (daemon.name, output.relative_to(ROOT)))
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
