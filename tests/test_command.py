"""The installed ``imgurd`` command as a user runs it: a subprocess, driven with the curl binary."""

import json
import signal
import socket
import subprocess
import time

import pytest

from imgurd import __version__
from tests.daemon import environment
from tests.fakes import HTML, JPEG, PNG, jpeg_of_size
from tests.helpers import Daemon, free_port, imgurd_command


def curl(*args):
    result = subprocess.run(["curl", "-sS", "--max-time", "10", *args], capture_output=True, text=True, check=True)
    return result.stdout


def test_end_to_end_with_curl(servers):
    origin = servers.origin
    jpg = servers.call(origin.add, "/photo.jpg", JPEG)
    png = servers.call(origin.add, "/shot.png", PNG, "image/png")
    html = servers.call(origin.add, "/index.html", HTML, "text/html")
    missing = origin.url("/gone.jpg")
    daemon = Daemon("--api-url", servers.imgur.url, "--allow-private-networks",
                    env={"IMGURD_CLIENT_ID": servers.imgur.client_id})
    try:
        out = curl("-i", "-X", "POST", "-H", "Content-Type: application/json",
                   "--data", json.dumps({"urls": [jpg, png, jpg, missing, html]}), daemon.base + "/v1/images/upload")
        head, _, body = out.replace("\r\n", "\n").partition("\n\n")
        assert head.startswith("HTTP/1.1 202")
        job_id = json.loads(body)["jobId"]
        assert "Location: /v1/images/upload/%s" % job_id in head
        deadline = time.monotonic() + 20
        while True:
            report = json.loads(curl(daemon.base + "/v1/images/upload/" + job_id))
            if report["status"] == "complete" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert report["status"] == "complete"
        assert len(report["uploaded"]["complete"]) == 2
        assert report["uploaded"]["failed"] == [missing, html]
        errors = {i["url"]: i["error"] for i in report["images"]}
        assert errors[missing] == "origin answered HTTP 404"
        assert errors[html] == "not an image (content looks like text/html)"
        listed = json.loads(curl(daemon.base + "/v1/images"))["uploaded"]
        assert sorted(listed) == sorted(report["uploaded"]["complete"])
        assert sorted(u.data for u in servers.imgur.uploads) == sorted([JPEG, PNG])
        assert json.loads(curl(daemon.base + "/healthz")) == {"status": "ok"}
    finally:
        code, log = daemon.stop()
    assert code == 0
    assert "upload failed job=%s url=%s reason=origin answered HTTP 404" % (job_id, missing) in log
    assert "reason=not an image (content looks like text/html)" in log
    assert "Traceback" not in log


def test_help_shows_the_defaults():
    from click.testing import CliRunner

    from imgurd.cli import main

    result = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip().startswith("--")}
    assert lines["--port"].endswith("[default: 8080]")
    assert lines["--max-concurrency"].endswith("[default: 16]")
    assert lines["--api-url"].endswith("[default: https://api.imgur.com]")
    assert lines["--dry-run"].endswith("[default: false]")
    assert lines["--connect-timeout"].endswith("[default: 10]")
    assert "[default" not in lines["--client-secret"]  # no default to show


def test_drain_says_how_many_transfers_finished_during_it(servers):
    origin = servers.origin
    daemon = Daemon("--api-url", servers.imgur.url, "--allow-private-networks", "--shutdown-timeout", "3",
                    env={"IMGURD_CLIENT_ID": servers.imgur.client_id})
    try:
        body = json.dumps({"urls": [origin.url("/hang/1.5"), origin.url("/hang/60")]})
        curl("-X", "POST", "--data", body, daemon.base + "/v1/images/upload")
        deadline = time.monotonic() + 10
        while origin.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        code, log = daemon.stop()  # /hang/1.5 finishes during the drain, /hang/60 is abandoned
    assert code == 0
    assert "waiting up to 3 s for 2 transfers in flight" in log
    assert "1 of 2 transfers in flight finished, 1 URL left unfinished" in log
    assert len(servers.imgur.uploads) == 1


def test_drain_ends_early_when_what_is_left_waits_for_a_budget_past_its_end(servers):
    """A transfer held for Imgur's hourly budget cannot finish before shutdown_timeout: no point in
    waiting all of it (every stop during a budget wait took the whole shutdown_timeout)."""
    servers.imgur.budget(user_credits=10, window=600.0)  # one upload, then a refill in 10 minutes
    daemon = Daemon("--api-url", servers.imgur.url, "--allow-private-networks", "--shutdown-timeout", "20",
                    env={"IMGURD_CLIENT_ID": servers.imgur.client_id})
    try:
        urls = [servers.call(servers.origin.add, "/drain/%d.jpg" % i, jpeg_of_size(400, i)) for i in range(2)]
        job = json.loads(curl("-X", "POST", "--data", json.dumps({"urls": urls}), daemon.base + "/v1/images/upload"))
        deadline = time.monotonic() + 15
        while json.loads(curl(daemon.base + "/v1/images/upload/" + job["jobId"]))["waiting"] is None:
            assert time.monotonic() < deadline, "the second URL never waited for the budget"
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        code, log = daemon.stop()
    assert code == 0 and time.monotonic() - started < 10, log
    assert "the transfer in flight waits for Imgur's hourly budget past shutdown_timeout: the drain ends now" in log
    assert " in flight finished, 1 URL left unfinished" in log
    assert sum(("abandoned job=%s url=%s" % (job["jobId"], url)) in log for url in urls) == 1, log


def test_a_fatal_start_up_error_is_one_json_line_with_log_format_json(tmp_path):
    """Once logging is set up (a port taken, a state file it cannot use), the one line follows
    log_format; errors in the configuration itself come before it and stay plain."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([imgurd_command(), "--dry-run", "--log-format", "json", "--port", str(port)],
                                capture_output=True, text=True, timeout=30, env=environment())
    assert result.returncode == 1, result.stderr
    last = json.loads(result.stderr.splitlines()[-1])
    assert last["level"] == "CRITICAL" and last["message"] == "cannot listen on 127.0.0.1:%d: Address already in use" % port
    assert all(json.loads(line) for line in result.stderr.splitlines())  # every line is JSON
    state = tmp_path / "imgurd.state"
    state.write_bytes(b"not a state file")
    result = subprocess.run([imgurd_command(), "--dry-run", "--log-format", "json", "--port", "0", "--state-file", str(state)],
                            capture_output=True, text=True, timeout=30, env=environment())
    assert result.returncode == 2 and json.loads(result.stderr.splitlines()[-1])["level"] == "CRITICAL", result.stderr
    assert state.read_bytes() == b"not a state file"
    result = subprocess.run([imgurd_command(), "--dry-run", "--log-format", "json", "--port", "x"],
                            capture_output=True, text=True, timeout=30, env=environment())
    assert result.returncode == 2 and result.stderr.startswith("imgurd: error: invalid value for port")


def test_secrets_from_the_credentials_directory(tmp_path):
    """As systemd's LoadCredential= (or a mounted secret) passes them: one file per key."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "client_id").write_text("credential-client-id\n")
    (credentials / "api_token").write_text("credential-token-123\n")
    daemon = Daemon("--api-url", "http://127.0.0.1:9", env={"CREDENTIALS_DIRECTORY": str(credentials)})
    try:
        assert json.loads(curl(daemon.base + "/v1/images"))["error"].startswith("missing or wrong bearer token")
        listing = json.loads(curl("-H", "Authorization: Bearer credential-token-123", daemon.base + "/v1/images"))
        assert listing == {"uploaded": [], "total": 0}
    finally:
        code, log = daemon.stop()
    assert code == 0 and "credential-token-123" not in log


def test_version():
    out = subprocess.run([imgurd_command(), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "imgurd " + __version__


@pytest.mark.parametrize("args, config, expected", [
    ([], None, "missing client_id"),
    (["--client-id", "x", "--max-concurrency", "many"], None, "invalid value for max_concurrency"),
    (["--client-id", "x"], "[imgurd]\nbogus = 1\n", "unknown key bogus in config file"),
    (["--client-id", "x", "--config", "/nonexistent/imgurd.conf"], None, "cannot read config file /nonexistent"),
    (["--client-id", "x", "--bogus", "1"], None, "unknown option --bogus"),
    (["--client-id", "x", "--allow-private-networks=yes"], None, "--allow-private-networks' does not take a value"),
    (["--client-id", "x", "--port"], None, "--port' requires an argument"),
])
def test_bad_configuration_exits_2_with_one_line(tmp_path, args, config, expected):
    if config is not None:
        path = tmp_path / "imgurd.conf"
        path.write_text(config)
        args = args + ["--config", str(path)]
    port = free_port()
    env = environment()
    out = subprocess.run([imgurd_command(), "--port", str(port), *args], capture_output=True, text=True,
                         env=env, timeout=20)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.stderr
    if config is not None:
        assert str(tmp_path / "imgurd.conf") in lines[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_reports_abandoned_and_notifies_systemd(servers, tmp_path, signum):
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(15)
    origin = servers.origin
    daemon = Daemon("--api-url", servers.imgur.url, "--allow-private-networks", "--max-concurrency", "1",
                    "--shutdown-timeout", "1",
                    env={"IMGURD_CLIENT_ID": servers.imgur.client_id, "NOTIFY_SOCKET": notify_path})
    try:
        assert listener.recv(1024).decode().startswith("READY=1")
        hanging = origin.url("/hang/30")
        queued = origin.url("/queued.jpg")
        body = json.dumps({"urls": [hanging, queued]})
        job_id = json.loads(curl("-X", "POST", "--data", body, daemon.base + "/v1/images/upload"))["jobId"]
        deadline = time.monotonic() + 10
        while origin.in_flight < 1 and time.monotonic() < deadline:  # the hanging download has begun
            time.sleep(0.01)
    finally:
        started = time.monotonic()
        code, log = daemon.stop(signum)
    assert listener.recv(1024).decode() == "STOPPING=1"
    listener.close()
    assert code == 0
    assert time.monotonic() - started < 10
    assert "abandoned job=%s url=%s" % (job_id, hanging) in log
    assert "abandoned job=%s url=%s" % (job_id, queued) in log
    assert "Traceback" not in log


def test_sighup_is_logged_and_ignored_not_an_abrupt_end():
    """SIGHUP (what operators send for a reload) would end the process at once: no drain, no state saved."""
    daemon = Daemon("--dry-run")
    daemon.process.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert daemon.process.poll() is None and json.loads(curl(daemon.base + "/healthz")) == {"status": "ok"}
    code, log = daemon.stop()
    assert code == 0, log
    assert "WARNING imgurd: SIGHUP ignored: imgurd has no reload; restart it to apply a new configuration" in log
    assert log.rstrip().endswith("stopped")
