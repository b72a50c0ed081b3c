"""``imgurd-submit`` as a user runs it: the installed command against the real ``imgurd`` command, both
subprocesses, with the fake Imgur and origin of tests/fakes.py on 127.0.0.1."""

import csv
import fcntl
import http.server
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
import time
import urllib.request

import pytest

from imgurd.handlers import BACKLOG_RETRY_AFTER
from tests.daemon import environment
from tests.fakes import HTML, JPEG, PNG, BackgroundServers, Origin, jpeg_of_size
from tests.helpers import Daemon, free_port, installed_command

TOKEN = "s3cret-api-token"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
LINK = re.compile(r"^https://i\.imgur\.com/[A-Za-z0-9]{7}\.(jpg|png|gif)$")
SUMMARY = re.compile(r"^imgurd-submit: (\d+) URLs, (\d+) complete, (\d+) failed(?:, (\d+) pending)? in \d+\.\d s")


def submit_env(server=None, token=None, **extra):
    env = environment()
    if server is not None:
        env["IMGURD_SERVER"] = server
    if token is not None:
        env["IMGURD_API_TOKEN"] = token
    env.update(extra)
    return env


def run_submit(*args, server=None, token=TOKEN, stdin=None, timeout=60):
    return subprocess.run([installed_command("imgurd-submit"), *args], input=stdin, capture_output=True,
                          text=True, env=submit_env(server, token), timeout=timeout)


def csv_rows(text):
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["url", "status", "link", "error"]
    return rows[1:]


def start_daemon(servers, *args):
    return Daemon("--api-url", servers.imgur.url, "--allow-private-networks", "--log-level", "warning", *args,
                  env={"IMGURD_CLIENT_ID": servers.imgur.client_id})


class Service:
    def __init__(self, servers, daemon):
        self.servers = servers
        self.origin = servers.origin
        self.daemon = daemon
        self.base = daemon.base

    def add(self, path, data, content_type="image/jpeg"):
        return self.servers.call(self.origin.add, path, data, content_type)


@pytest.fixture(scope="module")
def service():
    """One imgurd (with an api_token) and the fakes, shared by the small tests of this module."""
    with BackgroundServers() as servers:
        daemon = start_daemon(servers, "--api-token", TOKEN, "--shutdown-timeout", "1")
        try:
            yield Service(servers, daemon)
        finally:
            code, log = daemon.stop()
        assert code == 0, log
        assert "Traceback" not in log


def test_600_urls_split_on_413_wait_on_503_and_map_every_row_in_order(tmp_path):
    # every origin answer takes 20 ms: 200 URLs take at least 125 ms with 32 transfers at once, so the
    # backlog cannot drain between two of the client's POSTs and the third batch meets a 503
    with BackgroundServers(origin=Origin(latency=0.02)) as servers:
        origin = servers.origin
        images = {}  # path -> bytes
        for k in range(20):
            images["/img/%d.jpg" % k] = jpeg_of_size(1500, seed=k)
        images['/odd,name"quoted".jpg'] = jpeg_of_size(1500, seed=99)
        for path, data in images.items():
            servers.call(origin.add, path, data)
        servers.call(origin.add, "/page.html", HTML, "text/html")
        urls, expected = [], []  # expected: (status, path served or error)
        for i in range(600):
            if i == 456:  # the same line again
                url, want = urls[10], expected[10]
            elif i == 555:  # the same URL by the server's rules (scheme and host case, default-less port)
                url, want = urls[20].replace("http://127.0.0.1", "HTTP://127.0.0.1"), expected[20]
            elif i % 100 == 7:
                url, want = origin.url("/status/404?n=%d" % i), ("failed", "origin answered HTTP 404")
            elif i % 250 == 11:
                url, want = origin.url("/page.html?n=%d" % i), ("failed", "not an image (content looks like text/html)")
            elif i % 100 == 3:  # commas and quotes in the URL, for the CSV quoting
                path = "/img/%d.jpg" % (i % 20)
                url, want = origin.url('%s?tags=a,b&q="x,%d"' % (path, i)), ("complete", path)
            elif i % 500 == 5:
                path = '/odd,name"quoted".jpg'
                url, want = origin.url("%s?n=%d" % (path, i)), ("complete", path)
            else:
                path = "/img/%d.jpg" % (i % 20)
                url, want = origin.url("%s?n=%d" % (path, i)), ("complete", path)
            urls.append(url)
            expected.append(want)
        url_file = tmp_path / "urls.txt"
        url_file.write_text("# 600 image URLs\n\n" + "\n".join(urls) + "\n", encoding="utf-8")
        daemon = start_daemon(servers, "--max-urls-per-job", "200", "--max-queued-urls", "400",
                              "--max-concurrency", "32", "--log-level", "info")  # refusals log at INFO
        try:
            started = time.monotonic()
            result = run_submit("--file", str(url_file), "--batch", "400", server=daemon.base, token=None, timeout=120)
            elapsed = time.monotonic() - started
        finally:
            code, log = daemon.stop()
        uploads = servers.call(lambda: {u.link: u.data for u in servers.imgur.uploads})
    assert code == 0 and "Traceback" not in log
    assert result.returncode == 1, result.stderr  # some failed
    rows = csv_rows(result.stdout)
    assert len(rows) == 600
    failed = 0
    for number, (row, url, (status, what)) in enumerate(zip(rows, urls, expected)):
        assert row[0] == url and row[1] == status, (number, row)
        if status == "complete":
            assert LINK.match(row[2]) and row[3] == "", (number, row)
            assert uploads[row[2]] == images[what], (number, row)  # this URL's bytes became this link
        else:
            failed += 1
            assert row[2] == "" and row[3] == what, (number, row)
    assert rows[456][2] == rows[10][2] and rows[555][2] == rows[20][2]
    assert '"' in rows[3][0] and "," in rows[3][0]
    # the server saw a 413 (400 > 200 per job) and a 503 (the last 200 beyond a backlog of 400), both dealt with
    assert "413 POST /v1/images/upload" in log
    assert "503 POST /v1/images/upload" in log
    assert elapsed >= BACKLOG_RETRY_AFTER  # the 503's Retry-After was waited out
    summary = result.stderr.strip().splitlines()
    assert len(summary) == 1 and SUMMARY.match(summary[0]), result.stderr
    assert failed == 9  # 6 404s and 3 HTML pages
    assert SUMMARY.match(summary[0]).groups()[:3] == ("600", str(600 - failed), str(failed))


def test_file_from_stdin_skips_comments_and_blank_lines_and_prints_one_summary_line(service):
    a = service.add("/stdin/a.jpg", JPEG)
    b = service.add("/stdin/b.png", PNG, "image/png")
    c = service.add("/stdin/c.jpg", jpeg_of_size(900, seed=3))
    text = "# my images\n\n%s\n   \n  # indented comment\n%s  \n\n" % (b, c)
    result = run_submit("--file", "-", a, server=service.base, stdin=text)
    assert result.returncode == 0, result.stderr
    rows = csv_rows(result.stdout)
    assert [r[0] for r in rows] == [a, b, c]  # the arguments first, then the file
    assert all(r[1] == "complete" and LINK.match(r[2]) and r[3] == "" for r in rows)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and SUMMARY.match(lines[0]), result.stderr  # no terminal: no progress bar
    assert lines[0].startswith("imgurd-submit: 3 URLs, 3 complete, 0 failed in ")


def test_progress_bar_on_a_terminal(service):
    good = service.add("/tty/a.jpg", JPEG)
    slow = service.origin.url("/hang/1.2")  # keeps the job open for a few polls
    missing = service.origin.url("/tty/missing.jpg")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    process = subprocess.Popen([installed_command("imgurd-submit"), good, slow, missing, good],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                               env=submit_env(service.base, TOKEN))
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    out = process.stdout.read().decode()
    process.stdout.close()
    assert process.wait(10) == 1  # one failed
    terminal = shown.decode()
    assert "imgurd-submit" in terminal and "\r" in terminal
    assert "0/4" in terminal and "4/4" in terminal and "[" + "#" * 20 in terminal  # a full bar at the end
    assert "1 failed" in terminal and "img/s" in terminal
    assert max(len(line) for line in re.split(r"[\r\n]", terminal)) < 100  # fits: a wrapped bar cannot redraw
    assert "URLs," not in terminal  # the bar, not the summary line
    rows = csv_rows(out)
    assert [(r[0], r[1]) for r in rows] == [(good, "complete"), (slow, "complete"), (missing, "failed"),
                                            (good, "complete")]
    assert rows[0][2] == rows[3][2]


def test_json_and_links_formats(service):
    a = service.add("/fmt/a.jpg", jpeg_of_size(700, seed=11))
    b = service.add("/fmt/b.jpg", jpeg_of_size(700, seed=12))
    missing = service.origin.url("/fmt/missing.jpg")
    result = run_submit("--format", "json", "--api-token", TOKEN, a, missing, b, server=service.base, token=None)
    assert result.returncode == 1, result.stderr
    entries = json.loads(result.stdout)
    assert [e["url"] for e in entries] == [a, missing, b]
    assert entries[1] == {"url": missing, "status": "failed", "link": None, "error": "origin answered HTTP 404"}
    for entry in (entries[0], entries[2]):
        assert set(entry) == {"url", "status", "link", "error"}
        assert entry["status"] == "complete" and LINK.match(entry["link"]) and entry["error"] is None

    result = run_submit("--format", "links", a, missing, b, server=service.base)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [entries[0]["link"], entries[2]["link"]]  # complete ones, in order


def test_no_wait_prints_one_job_id_a_line(service):
    urls = [service.add("/nowait/%d.jpg" % i, jpeg_of_size(600, seed=100 + i)) for i in range(5)]
    result = run_submit("--no-wait", "--batch", "2", *urls, server=service.base)
    assert result.returncode == 0, result.stderr
    ids = result.stdout.splitlines()
    assert len(ids) == 3 and all(UUID.match(i) for i in ids)
    assert result.stderr == ""
    submitted = []
    for job_id in ids:
        request = urllib.request.Request(service.base + "/v1/images/upload/" + job_id,
                                         headers={"Authorization": "Bearer " + TOKEN})
        with urllib.request.urlopen(request, timeout=10) as response:
            submitted.extend(image["url"] for image in json.load(response)["images"])
    assert submitted == urls


def test_timeout_prints_what_is_known_with_pending_rows_and_exits_3(service):
    fast = service.add("/timeout/a.jpg", jpeg_of_size(800, seed=21))
    hanging = service.origin.url("/hang/3")
    started = time.monotonic()
    result = run_submit("--timeout", "1.5", fast, hanging, server=service.base)
    assert time.monotonic() - started < 5
    assert result.returncode == 3, result.stderr
    rows = csv_rows(result.stdout)
    assert rows[0][0] == fast and rows[0][1] == "complete" and LINK.match(rows[0][2])
    assert rows[1] == [hanging, "pending", "", ""]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and SUMMARY.match(lines[0]) and "1 pending" in lines[0] and "timeout" in lines[0]
    job = re.search(r"--timeout reached; unfinished jobs: (\S+)\)$", lines[0])  # to wait for with --job
    assert job, lines[0]
    followed = run_submit("--job", job.group(1), server=service.base)
    assert followed.returncode == 0, followed.stderr
    assert [row[:2] for row in csv_rows(followed.stdout)] == [[fast, "complete"], [hanging, "complete"]]


def test_rejected_request_shows_the_servers_error_and_exits_2(service):
    url = service.add("/rejected/a.jpg", JPEG)
    result = run_submit(url, server=service.base, token=None)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "401" in lines[0]
    assert "missing or wrong bearer token (Authorization: Bearer <api_token>)" in lines[0]  # verbatim
    assert TOKEN not in result.stderr


def test_unreachable_server_exits_2_with_one_line():
    started = time.monotonic()
    result = run_submit("--server", "http://127.0.0.1:%d" % free_port(), "http://127.0.0.1:9/a.jpg")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "cannot reach the imgurd server" in lines[0] and "connection refused" in lines[0]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("args, stdin, expected", [
    ([], None, "no URLs given"),
    (["--file", "-"], "# only a comment\n\n", "no URLs given"),
    (["--batch", "0", "http://127.0.0.1:9/a.jpg"], None, "--batch"),
    (["--format", "xml", "http://127.0.0.1:9/a.jpg"], None, "--format"),
    (["--file", "-"], "http://127.0.0.1:9/a.jpg\nftp://127.0.0.1/b.jpg\n", "stdin line 2 is not an http(s) URL"),
    (["--file", "/nonexistent/urls.txt"], None, "cannot read --file /nonexistent/urls.txt"),
    (["--server", "ftp://127.0.0.1:9", "http://127.0.0.1:9/a.jpg"], None, "--server must be an http(s) URL"),
    (["--resume", "http://127.0.0.1:9/a.jpg"], None, "--resume needs --output PATH"),
    (["--job", "x", "http://127.0.0.1:9/a.jpg"], None, "--job waits for jobs submitted earlier"),
    (["--no-wait", "--output", "/tmp/r.csv", "http://127.0.0.1:9/a.jpg"], None, "does not go with --output"),
    (["--resume", "--output", "/tmp/r.txt", "--format", "links"], None, "--resume needs --format csv or json"),
    (["--resume", "--output", "/nonexistent/r.csv"], None, "/nonexistent/r.csv does not exist yet"),
])
def test_usage_errors_exit_2_with_one_line(args, stdin, expected):
    result = run_submit(*args, server="http://127.0.0.1:%d" % free_port(), stdin=stdin)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


@pytest.mark.parametrize("fmt, content, expected", [
    ("csv", "url,link\nhttp://127.0.0.1:9/a.jpg,x\n", "is not a CSV written by imgurd-submit"),
    ("csv", "url,status,link,error\nhttp://127.0.0.1:9/a.jpg,complete\n", "line 2 does not have 4 fields"),
    ("json", "url,status,link,error\n", "is not JSON"),
    ("json", '{"url": "http://127.0.0.1:9/a.jpg"}', "is not a JSON list of results"),
])
def test_resume_refuses_a_file_it_cannot_read_and_leaves_it_alone(tmp_path, fmt, content, expected):
    output = tmp_path / "r.out"
    output.write_text(content)
    result = run_submit("--resume", "--output", str(output), "--format", fmt,
                        server="http://127.0.0.1:%d" % free_port())
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(output) in lines[0], result.stderr
    assert output.read_text() == content


class _ScriptedApi(http.server.BaseHTTPRequestHandler):
    """A stand-in imgurd answering POSTs from a script: to see exactly what the client sends on retries."""

    def log_message(self, *args):
        pass

    def _json(self, status, document, headers=()):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        urls = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["urls"]
        self.server.posts.append((self.headers.get("Idempotency-Key"), urls))
        answer = self.server.script.pop(0) if self.server.script else "accept"
        if answer == "busy":
            self._json(503, {"error": "backlog full; retry later"}, [("Retry-After", "1")])
        elif answer == "drop":  # the connection is lost before any answer
            self.close_connection = True
        else:
            job_id = self.server.jobs.setdefault(self.headers["Idempotency-Key"], (str(len(self.server.jobs)), urls))[0]
            self._json(202, {"jobId": job_id})

    def do_GET(self):
        job_id = self.path.rsplit("/", 1)[-1]
        urls = next(urls for known, urls in self.server.jobs.values() if known == job_id)
        images = [{"url": u, "status": "complete", "link": "https://i.imgur.com/%07d.jpg" % n, "error": None}
                  for n, u in enumerate(urls)]
        self._json(200, {"id": job_id, "status": "complete", "images": images})


def test_retries_after_503_and_a_lost_connection_reuse_the_idempotency_key():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedApi)
    server.posts, server.jobs, server.script = [], {}, ["busy", "drop", "accept", "accept"]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        urls = ["http://127.0.0.1:9/%d.jpg" % n for n in range(3)]
        result = run_submit("--batch", "2", "--format", "links", *urls,
                            server="http://127.0.0.1:%d" % server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    keys = [key for key, _ in server.posts]
    assert [batch for _, batch in server.posts] == [urls[:2], urls[:2], urls[:2], urls[2:]]
    assert keys[0] == keys[1] == keys[2] != keys[3]  # one key per batch, kept through its retries
    assert all(UUID.match(key) for key in keys)
    assert len(server.jobs) == 2
    assert result.stdout.splitlines() == ["https://i.imgur.com/0000000.jpg", "https://i.imgur.com/0000001.jpg",
                                          "https://i.imgur.com/0000000.jpg"]


def test_waiting_text_says_what_holds_the_jobs_and_until_when():
    import datetime

    from imgurd.submit import waiting_text

    today = datetime.date(2026, 11, 24)
    held = {"reason": "Imgur's hourly upload budget for this address is spent (50 uploads an hour)",
            "until": "2026-11-24T11:00:00.000Z", "budget": "hourly budget"}
    assert waiting_text(held, today) == "waiting for Imgur's hourly budget until 11:00Z"
    assert waiting_text(dict(held, until="2026-11-25T09:30:00.000Z"), today) == \
        "waiting for Imgur's hourly budget until 2026-11-25 09:30Z"
    assert waiting_text(None, today) is None


def test_submit_says_it_waits_for_imgurs_budget_and_finishes():
    with BackgroundServers() as servers:
        servers.call(servers.imgur.budget, 30, 3.0)  # 3 uploads, then a reset in seconds (an hour at Imgur)
        daemon = start_daemon(servers, "--max-per-host", "16")  # its start-up asks for the budget
        try:
            urls = [servers.call(servers.origin.add, "/wait%d.jpg" % i, jpeg_of_size(400, i)) for i in range(6)]
            # the same budget again, its 3 s from now: on a loaded machine the start-up and the first
            # uploads could use up most of the first window, leaving a wait of about a second, which the
            # client's polls (every 2 s by then) could miss: no "waiting" line (1 run in 16 under load)
            servers.call(servers.imgur.budget, 30, 3.0)
            result = run_submit(*urls, server=daemon.base, token=None)
        finally:
            code, log = daemon.stop()
        assert result.returncode == 0, result.stderr
        assert re.search(r"^imgurd-submit: waiting for Imgur's hourly budget until \d\d:\d\dZ \(3 of 6 done\)$",
                         result.stderr, re.M), result.stderr
        assert [row[1] for row in csv_rows(result.stdout)] == ["complete"] * 6
        assert servers.imgur.spent_uploads == 0


def test_a_batch_splits_to_the_size_the_server_names_or_in_halves():
    from imgurd.submit import Batch, Unique

    batch = Batch([Unique("https://x.com/%d" % i, "k%d" % i) for i in range(7)])
    assert [len(b.uniques) for b in batch.split(3)] == [3, 3, 1]
    assert [len(b.uniques) for b in batch.split()] == [4, 3]
    assert len({b.key for b in batch.split(3)}) == 3  # each part is a job of its own


def test_output_file_is_replaced_whole_with_the_users_mode(tmp_path):
    from imgurd.submit import OutputFile, Row, Unique

    target = tmp_path / "r.csv"
    (tmp_path / "r.csv.1234.tmp").symlink_to(tmp_path / "elsewhere")  # a planted name is never used
    unique = Unique("https://x.com/a.jpg", "k")
    OutputFile(str(target), "csv").write([Row("https://x.com/a.jpg", unique)])
    assert target.read_text().splitlines() == ["url,status,link,error", "https://x.com/a.jpg,pending,,"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.csv.1234.tmp"]  # no temporary left
    assert not (tmp_path / "elsewhere").exists()


class _FakeTime:
    """The client's clock and sleep: a sleep moves the clock at once, and is recorded."""

    def __init__(self):
        self.now = 0.0
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


class _Gateway(http.server.BaseHTTPRequestHandler):
    """Answers each GET from a script: a job report, or a gateway's 503 asking for an hour."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        answer = self.server.script.pop(0) if self.server.script else "503"
        status, body = (200, b'{"id": "0", "status": "running", "images": []}') if answer == "ok" else \
            (503, b'{"error": "down for maintenance"}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == 503:
            self.send_header("Retry-After", "3600")
        self.end_headers()
        self.wfile.write(body)


def _client_and_gateway(script, retry_for):
    import dataclasses

    from imgurd.apiclient import ApiClient

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    server.script = script
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake = _FakeTime()
    api = ApiClient("http://127.0.0.1:%d" % server.server_address[1], clock=fake.clock, sleep=fake.sleep,
                    retry_for=retry_for)
    api.retry = dataclasses.replace(api.retry, rand=lambda: 1.0)  # the backoff's ceilings, no jitter
    return api, server, fake


def test_client_retries_a_lost_server_with_the_policys_backoff_for_retry_for_seconds():
    from imgurd.apiclient import Lost

    api, server, fake = _client_and_gateway(["ok"], retry_for=10)
    try:
        assert api.job("0")["status"] == "running"  # the server has answered: later trouble is retried
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(Lost) as lost:
        api.job("0")  # refused from now on
    api.close()
    assert fake.slept == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 0.5]  # up to 0.5, 1, then 2 s; the last ends at retry_for
    assert str(lost.value).startswith("lost the imgurd server at http://127.0.0.1:")
    assert str(lost.value).endswith(": connection refused (tried for 10 s)")


def test_client_waits_a_long_retry_after_only_as_long_as_retry_for_allows():
    from imgurd.apiclient import Lost

    api, server, fake = _client_and_gateway(["ok", "503", "503"], retry_for=10)
    try:
        api.job("0")
        with pytest.raises(Lost) as lost:
            api.job("0")  # a gateway answers 503, Retry-After: 3600
    finally:
        server.shutdown()
        server.server_close()
        api.close()
    assert fake.slept == [10.0]  # not the hour asked for: what is left of --retry-for, then one last try
    assert "HTTP 503" in str(lost.value)


# --- results already seen are never lost (SPEC 6), against a stand-in server whose answers a test writes


class _Stand(http.server.BaseHTTPRequestHandler):
    """POST answers ``server.posts_script`` in turn (202 with a new job id, or a status and error);
    GET answers the job's ``server.polls`` in turn, the last one for ever."""

    def log_message(self, *args):
        pass

    def _json(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        urls = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["urls"]
        answer = self.server.posts_script.pop(0) if self.server.posts_script else 202
        self.server.posted.append(urls)
        if callable(answer):  # a function of the URLs: (status, document)
            answer = answer(urls)
        if answer == 202:
            self.server.jobs.append(urls)
            self._json(202, {"jobId": "job-%d" % len(self.server.jobs)})
        elif isinstance(answer, tuple):
            self._json(*answer)
        else:
            self._json(answer, {"error": "refused by the stand-in"})

    def do_GET(self):
        polls = self.server.polls
        status, statuses = polls.pop(0) if len(polls) > 1 else polls[0]
        urls = self.server.jobs[-1]
        if status != 200:
            return self._json(status, {"error": "the stand-in says no"})
        images = [{"url": url, "status": state, "link": "https://i.imgur.com/%s%d.jpg" % (state[0], n)
                   if state == "complete" else None, "error": None} for n, (url, state) in enumerate(zip(urls, statuses))]
        done = all(state in ("complete", "failed") for state in statuses)
        self._json(200, {"id": "job-1", "status": "complete" if done else "in-progress", "images": images})


def stand_in(posts_script=(), polls=((200, ("pending",)),)):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stand)
    server.posts_script, server.polls, server.jobs, server.posted = list(posts_script), list(polls), [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, "http://127.0.0.1:%d" % server.server_address[1]


def test_a_request_refused_mid_run_still_prints_the_results_seen():
    server, base = stand_in(polls=[(200, ("complete", "pending")), (401, ())])
    try:
        result = run_submit("http://127.0.0.1:9/a.jpg", "http://127.0.0.1:9/b.jpg", server=base)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2 and "the stand-in says no" in result.stderr
    assert list(csv.reader(io.StringIO(result.stdout)))[1:] == [
        ["http://127.0.0.1:9/a.jpg", "complete", "https://i.imgur.com/c0.jpg", ""],
        ["http://127.0.0.1:9/b.jpg", "pending", "", ""]]


def test_a_result_seen_never_goes_back_to_pending():
    """A server restarted from an older state file reports a finished URL as pending again."""
    server, base = stand_in(polls=[(200, ("complete", "pending")), (200, ("pending", "pending"))])
    try:
        result = run_submit("--timeout", "3", "http://127.0.0.1:9/a.jpg", "http://127.0.0.1:9/b.jpg", server=base)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 3, result.stderr
    assert list(csv.reader(io.StringIO(result.stdout)))[1][:3] == [
        "http://127.0.0.1:9/a.jpg", "complete", "https://i.imgur.com/c0.jpg"]


def test_timeout_names_the_unfinished_jobs_and_the_urls_never_submitted():
    """--job waits for the jobs the server holds; URLs a busy server never took are not in any of them."""
    server, base = stand_in(posts_script=[202] + [503] * 50)
    try:
        result = run_submit("--batch", "1", "--timeout", "2", *["http://127.0.0.1:9/%d.jpg" % n for n in range(3)],
                            server=base)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 3, result.stderr
    assert result.stderr.rstrip().endswith(
        "(--timeout reached; unfinished jobs: job-1; 2 URLs never submitted (--output FILE --resume submits them))"), \
        result.stderr


def test_no_wait_prints_the_jobs_accepted_before_a_later_batch_is_refused():
    server, base = stand_in(posts_script=[202, 202, 400])
    try:
        result = run_submit("--no-wait", "--batch", "1", *["http://127.0.0.1:9/%d.jpg" % n for n in range(3)],
                            server=base)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2 and "refused by the stand-in" in result.stderr
    assert result.stdout.split() == ["job-1", "job-2"]  # without them a rerun would submit these twice


def test_resume_with_urls_keeps_the_earlier_files_rows_first():
    from imgurd.submit import collect
    earlier = [("http://h/a.jpg", "output.csv row 1"), ("http://h/b.jpg", "output.csv row 2")]
    rows, uniques = collect(["http://h/c.jpg", "HTTP://h/a.jpg"], [], earlier)
    assert [row.url for row in rows] == ["http://h/a.jpg", "http://h/b.jpg", "http://h/c.jpg"]
    assert [unique.url for unique in uniques] == ["http://h/a.jpg", "http://h/b.jpg", "http://h/c.jpg"]
    rows, _ = collect(["http://h/c.jpg", "http://h/c.jpg"], [], [])  # without --resume: a row an input line
    assert [row.url for row in rows] == ["http://h/c.jpg", "http://h/c.jpg"]


def test_resume_leaves_the_file_as_it_was_until_results_come(tmp_path):
    """A resumed file keeps its failures (and their reasons) when nothing could be sent; a place that
    cannot be written still stops the run before anything is sent."""
    output = tmp_path / "r.csv"
    before = ("url,status,link,error\r\nhttp://127.0.0.1:9/a.jpg,complete,https://i.imgur.com/a.jpg,\r\n"
              "http://127.0.0.1:9/b.jpg,failed,,origin answered HTTP 404\r\n")
    output.write_text(before, encoding="utf-8", newline="")
    result = run_submit("--output", str(output), "--resume", "--retry-for", "0", server="http://127.0.0.1:%d" % free_port())
    assert result.returncode == 2 and "connection refused" in result.stderr, result.stderr
    with open(output, encoding="utf-8", newline="") as handle:
        assert handle.read() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]  # the trial file is gone
    from imgurd.submit import OutputFile, SubmitError
    with pytest.raises(SubmitError, match="cannot write --output"):
        OutputFile(str(tmp_path / "gone" / "r.csv"), "csv").check()


def test_resume_keeps_failures_and_their_reasons_until_new_results_and_old_rows_it_would_refuse(tmp_path):
    output = tmp_path / "r.csv"
    output.write_text("url,status,link,error\n"
                      "http://127.0.0.1:9/a.jpg,complete,https://i.imgur.com/a.jpg,\n"
                      "http://127.0.0.1:9/b.jpg,failed,,origin answered HTTP 404\n"
                      "http://a_b..c/x.jpg,failed,,could not resolve host\n"  # an older version took it
                      "http://127.0.0.1:9/c.jpg,pending,,\n", encoding="utf-8")
    server, base = stand_in(posts_script=[503] * 50)  # busy for the whole run: nothing is accepted
    try:
        result = run_submit("--output", str(output), "--resume", "--timeout", "2", server=base)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 3, result.stderr
    with open(output, encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle))[1:] == [
            ["http://127.0.0.1:9/a.jpg", "complete", "https://i.imgur.com/a.jpg", ""],
            ["http://127.0.0.1:9/b.jpg", "failed", "", "origin answered HTTP 404"],
            ["http://a_b..c/x.jpg", "failed", "", "could not resolve host"],
            ["http://127.0.0.1:9/c.jpg", "pending", "", ""]]
    server, base = stand_in(polls=[(200, ("complete", "complete"))])
    try:
        result = run_submit("--output", str(output), "--resume", server=base)
    finally:
        server.shutdown()
        server.server_close()
    assert server.jobs == [["http://127.0.0.1:9/b.jpg", "http://127.0.0.1:9/c.jpg"]]  # not a, not the old row
    assert result.returncode == 1, result.stderr  # the old row is still failed
    with open(output, encoding="utf-8", newline="") as handle:
        assert [row[1] for row in list(csv.reader(handle))[1:]] == ["complete", "complete", "failed", "complete"]


def test_a_batch_whose_job_data_alone_passes_max_retained_bytes_is_split_and_a_single_url_stops_the_run():
    def by_size(urls):  # the server holds at most 2 URLs' worth of job data
        if len(urls) > 2:
            return 503, {"error": "too much job data held; split it", "max_retained_bytes": 2000,
                         "job_bytes": 1000 * len(urls)}
        return 202
    urls = ["http://127.0.0.1:9/%d.jpg" % n for n in range(5)]
    server, base = stand_in(posts_script=[by_size] * 20, polls=[(200, ("complete", "complete"))])
    try:
        result = run_submit("--no-wait", *urls, server=base)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert [len(batch) for batch in server.posted] == [5, 3, 2, 1, 2]  # in halves until each fits
    assert [url for batch in server.jobs for url in batch] == urls
    server, base = stand_in(posts_script=[(503, {"error": "too much job data held; split it",
                                                 "max_retained_bytes": 10, "job_bytes": 1000})] * 5)
    try:
        result = run_submit("--no-wait", urls[0], server=base)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2 and "too much job data held" in result.stderr, result.stderr
    assert len(server.posted) == 1  # not sent again and again
