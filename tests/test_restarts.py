"""Restarts, as an operator and a user live them: the installed ``imgurd`` with a ``state_file``, stopped
(SIGTERM, kill -9) and started again on the same port, and ``imgurd-submit`` running across that, its
``--output`` file, ``--resume`` and ``--job``. The fakes of tests/fakes.py run in this process."""

import csv
import gzip
import io
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from imgurd.state import read_file
from tests.daemon import environment
from tests.fakes import JPEG, BackgroundServers, Origin, jpeg_of_size
from tests.helpers import Daemon, installed_command

TOKEN = "s3cret-api-token-for-restarts"


def start(servers, *args, port=None, state=None, interval="1"):
    extra = ["--state-file", str(state), "--state-interval", interval] if state is not None else []
    return Daemon("--api-url", servers.imgur.url, "--allow-private-networks", *extra, *args, port=port,
                  env={"IMGURD_CLIENT_ID": servers.imgur.client_id})


def call(base, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers or {},
                                     method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_for(predicate, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def link_count(base, headers=None):
    try:
        return len(call(base, "/v1/images", headers=headers)[1]["uploaded"])
    except OSError:
        return 0


def submit_process(*args, server):
    return subprocess.Popen([installed_command("imgurd-submit"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment({"IMGURD_SERVER": server}))


def run_submit(*args, server, timeout=60):
    process = submit_process(*args, server=server)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def csv_file(path):
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        return []
    assert rows[0] == ["url", "status", "link", "error"]
    return rows[1:]


def complete_rows(path):
    return [row for row in csv_file(path) if row[1] == "complete"]


def uploads_by_bytes(servers):
    """{image bytes: how many times uploaded}, and {link: bytes}."""
    def read():
        counts, links = {}, {}
        for upload in servers.imgur.uploads:
            counts[upload.data] = counts.get(upload.data, 0) + 1
            links[upload.link] = upload.data
        return counts, links
    return servers.call(read)


def test_sigterm_saves_and_a_restart_resumes_half_done_jobs_under_their_ids(tmp_path):
    state = tmp_path / "imgurd.state"
    with BackgroundServers(origin=Origin(latency=0.25)) as servers:
        hanging = servers.origin.url("/hang/3")  # in flight at SIGTERM, past the drain: pending again
        images = {servers.call(servers.origin.add, "/img/%d.jpg" % n, jpeg_of_size(700, seed=n)): n
                  for n in range(12)}
        urls = [hanging, *images]
        args = ("--max-concurrency", "2", "--shutdown-timeout", "0.5", "--api-token", TOKEN)
        auth = {"Authorization": "Bearer " + TOKEN, "Idempotency-Key": "batch-1"}
        first = start(servers, *args, state=state)
        try:
            code, answer = call(first.base, "/v1/images/upload", {"urls": urls}, auth)
            assert code == 202
            job_id = answer["jobId"]
            wait_for(lambda: link_count(first.base, auth) >= 3, what="3 links")
        finally:
            code, log = first.stop()
        assert code == 0 and "Traceback" not in log
        assert "state saved to %s" % state in log
        # the unfinished URLs are named as the spec's shutdown report asks, at INFO: they are in the file
        assert re.search(r"INFO imgurd: abandoned job=%s url=%s$" % (job_id, re.escape(hanging)), log, re.M), log
        assert not re.search(r"WARNING imgurd: abandoned", log)
        saved = read_file(str(state))
        [job] = saved.jobs
        assert job.id == job_id
        statuses = bytes(job.states)
        assert statuses[0] in (0, 1)  # the hanging URL: unfinished
        assert 3 <= statuses.count(2) < len(urls)
        assert TOKEN.encode() not in gzip_text(state) and b"deletehash" not in gzip_text(state)
        done_before = {job.urls[i]: job.links[i] for i in range(len(urls)) if job.states[i] == 2}
        hits_before = servers.call(lambda: dict(servers.origin.hits))

        again = start(servers, *args, port=first.port, state=state)
        try:
            code, report = call(again.base, "/v1/images/upload/" + job_id, headers=auth)
            assert code == 200 and report["id"] == job_id and report["status"] in ("pending", "in-progress")
            for image in report["images"]:
                if image["url"] in done_before:
                    assert image["status"] == "complete" and image["link"] == done_before[image["url"]]
            # a repeated POST with the same Idempotency-Key still names the same job
            assert call(again.base, "/v1/images/upload", {"urls": urls}, auth) == (202, {"jobId": job_id})
            report = wait_for(lambda: (lambda r: r if r["status"] == "complete" else None)(
                call(again.base, "/v1/images/upload/" + job_id, headers=auth)[1]), what="job complete")
            listed = call(again.base, "/v1/images", headers=auth)[1]["uploaded"]
            # the same file cannot serve two processes at once
            second = subprocess.run([installed_command("imgurd"), "--client-id", "x", "--port", "0",
                                     "--state-file", str(state)], capture_output=True, text=True, timeout=20)
            assert second.returncode == 2 and "in use by another imgurd process" in second.stderr
        finally:
            code, log = again.stop()
        assert code == 0 and "Traceback" not in log
        assert "state loaded from %s: 1 jobs (%d URLs to resume)" % (state, len(urls) - len(done_before)) in log
        counts, links = uploads_by_bytes(servers)
        hits = servers.call(lambda: dict(servers.origin.hits))
    assert [image["status"] for image in report["images"]] == ["complete"] * len(urls)
    assert report["uploaded"]["complete"][1:] == [image["link"] for image in report["images"]][1:]
    for image in report["images"]:
        expected = JPEG if image["url"] == hanging else jpeg_of_size(700, seed=images[image["url"]])
        assert links[image["link"]] == expected  # each URL's own bytes became its link
    assert sorted(counts.values()) == [1] * len(urls)  # every image uploaded exactly once
    assert sorted(listed) == sorted(set(links))
    for url in done_before:  # finished before the restart: never fetched again
        path = url.split(str(servers.origin.port), 1)[1]
        assert hits[path] == hits_before[path] == 1


def gzip_text(path):
    with gzip.open(path) as handle:
        return handle.read()


def test_kill_9_between_snapshots_loses_at_most_one_interval_and_never_the_file(tmp_path):
    state = tmp_path / "imgurd.state"
    with BackgroundServers(origin=Origin(latency=0.1)) as servers:
        urls = [servers.call(servers.origin.add, "/k/%d.jpg" % n, jpeg_of_size(600, seed=1000 + n)) for n in range(60)]
        first = start(servers, "--max-concurrency", "2", state=state)
        killed = False
        try:
            job_id = call(first.base, "/v1/images/upload", {"urls": urls})[1]["jobId"]
            wait_for(lambda: link_count(first.base) >= 6, what="6 links")
            report = call(first.base, "/v1/images/upload/" + job_id)[1]
            known = {i["url"]: i["link"] for i in report["images"] if i["status"] == "complete"}
            inode = os.stat(state).st_ino if state.exists() else None
            # the next periodic snapshot (state_interval 1 s) holds at least what is known now
            wait_for(lambda: state.exists() and os.stat(state).st_ino != inode, timeout=10, what="a snapshot")
            first.process.send_signal(signal.SIGKILL)
            first.process.communicate(timeout=10)
            killed = True
        finally:
            if not killed:
                first.stop()
        saved = read_file(str(state))  # whole and readable
        assert [job.id for job in saved.jobs] == [job_id]
        again = start(servers, "--max-concurrency", "4", port=first.port, state=state)
        try:
            report = call(again.base, "/v1/images/upload/" + job_id)[1]
            restored = {i["url"]: i["link"] for i in report["images"] if i["status"] == "complete"}
            final = wait_for(lambda: (lambda r: r if r["status"] == "complete" else None)(
                call(again.base, "/v1/images/upload/" + job_id)[1]), what="job complete")
        finally:
            code, log = again.stop()
    assert code == 0 and "Traceback" not in log
    assert len(known) >= 6
    for url, link in known.items():  # what was complete one interval before the kill survived it
        assert restored[url] == link
    assert all(image["status"] == "complete" for image in final["images"])


@pytest.mark.parametrize("content, expected", [
    (b"\x1f\x8b\x08\x00garbage that is no deflate stream", "is corrupt"),
    (None, "has format version 2, written by a newer imgurd"),
])
def test_a_state_file_it_cannot_use_stops_start_up_and_is_left_alone(tmp_path, content, expected):
    state = tmp_path / "imgurd.state"
    if content is None:
        content = gzip.compress(b'{"format": "imgurd-state", "version": 2, "imgurd": "2.0.0"}\n{"end": {}}\n')
    state.write_bytes(content)
    os.utime(state, (1000000000, 1000000000))
    env = environment()
    result = subprocess.run([installed_command("imgurd"), "--client-id", "x", "--port", "0", "--state-file",
                             str(state), "--state-interval", "1"], capture_output=True, text=True, env=env,
                            timeout=20)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(state) in lines[0], result.stderr
    assert lines[0].startswith("imgurd: error: ")
    assert state.read_bytes() == content and os.stat(state).st_mtime == 1000000000  # untouched
    assert sorted(os.listdir(tmp_path)) == ["imgurd.state", "imgurd.state.lock"]


def test_client_exits_4_with_what_it_knows_when_the_server_forgets_its_job_and_resume_finishes(tmp_path):
    output = tmp_path / "r.csv"
    with BackgroundServers(origin=Origin(latency=0.1)) as servers:
        urls = [servers.call(servers.origin.add, "/f/%d.jpg" % n, jpeg_of_size(600, seed=2000 + n)) for n in range(30)]
        daemon = start(servers, "--max-concurrency", "2", "--shutdown-timeout", "0.2")
        client = submit_process("--output", str(output), *urls, server=daemon.base)
        try:
            wait_for(lambda: len(complete_rows(output)) >= 4, what="4 complete rows")
            daemon.stop()
            daemon = start(servers, "--max-concurrency", "8", port=daemon.port)  # no state_file: it forgets
            out, err = client.communicate(timeout=30)
        finally:
            if client.poll() is None:
                client.kill()
        assert client.returncode == 4, err
        assert out == ""  # the results went to --output
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "the server no longer knows job" in lines[0], err
        assert "run again with --output %s --resume" % output in lines[0]
        rows = csv_file(output)
        assert [row[0] for row in rows] == urls
        complete = {row[0]: row[2] for row in rows if row[1] == "complete"}
        assert len(complete) >= 4 and {row[1] for row in rows} <= {"complete", "pending"}
        hits_before = servers.call(lambda: dict(servers.origin.hits))
        try:
            code, out, err = run_submit("--output", str(output), "--resume", server=daemon.base)
        finally:
            daemon.stop()
        hits = servers.call(lambda: dict(servers.origin.hits))
    assert code == 0, err
    rows = csv_file(output)
    assert [row[0] for row in rows] == urls and all(row[1] == "complete" for row in rows)
    for url, link in complete.items():
        assert dict((r[0], r[2]) for r in rows)[url] == link
        path = url.split(str(servers.origin.port), 1)[1]
        assert hits[path] == hits_before[path] == 1  # not fetched again


def test_client_gives_up_on_a_server_gone_for_good_after_retry_for_and_prints_what_it_knows():
    with BackgroundServers(origin=Origin(latency=0.2)) as servers:
        urls = [servers.call(servers.origin.add, "/g/%d.jpg" % n, jpeg_of_size(600, seed=3000 + n)) for n in range(20)]
        daemon = start(servers, "--max-concurrency", "1", "--shutdown-timeout", "0")
        client = submit_process("--retry-for", "1.5", *urls, server=daemon.base)
        try:
            wait_for(lambda: link_count(daemon.base) >= 2, what="2 links")
            time.sleep(0.6)  # a poll or two sees them
        finally:
            daemon.stop()
        out, err = client.communicate(timeout=30)
    assert client.returncode == 4, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["url", "status", "link", "error"] and [r[0] for r in rows[1:]] == urls
    assert any(r[1] == "complete" for r in rows[1:]) and any(r[1] == "pending" for r in rows[1:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "lost the imgurd server" in lines[0] and "connection refused" in lines[0], err
    assert "--output FILE --resume" in lines[0]


def test_job_option_waits_for_jobs_submitted_with_no_wait(tmp_path):
    output = tmp_path / "r.json"
    with BackgroundServers(origin=Origin(latency=0.05)) as servers:
        urls = [servers.call(servers.origin.add, "/j/%d.jpg" % n, jpeg_of_size(600, seed=4000 + n)) for n in range(5)]
        daemon = start(servers)
        try:
            code, out, err = run_submit("--no-wait", "--batch", "2", *urls, server=daemon.base)
            assert code == 0, err
            ids = out.split()
            code, out, err = run_submit(*[a for i in ids for a in ("--job", i)], "--format", "json",
                                        "--output", str(output), server=daemon.base)
            assert code == 0, err
            unknown = run_submit("--job", "0" * 8 + "-0000-4000-8000-" + "0" * 12, server=daemon.base)
        finally:
            daemon.stop()
    entries = json.loads(output.read_text())
    assert [e["url"] for e in entries] == urls and all(e["status"] == "complete" for e in entries)
    assert out == ""
    assert unknown[0] == 2 and "HTTP 404" in unknown[2]  # an id the server never had is an error, not a restart


def test_resume_after_timeout_submits_only_what_is_not_complete(tmp_path):
    output = tmp_path / "r.csv"
    with BackgroundServers() as servers:
        fast = [servers.call(servers.origin.add, "/t/%d.jpg" % n, jpeg_of_size(600, seed=5000 + n)) for n in range(4)]
        slow = [servers.origin.url("/hang/1.5?n=%d" % n) for n in range(2)]
        daemon = start(servers)
        try:
            code, out, err = run_submit("--timeout", "1", "--output", str(output), *fast, *slow, server=daemon.base)
            assert code == 3, err
            assert out == "" and "--timeout reached" in err
            first = csv_file(output)
            assert [(r[0], r[1]) for r in first] == [(u, "complete") for u in fast] + [(u, "pending") for u in slow]
            code, out, err = run_submit("--output", str(output), "--resume", server=daemon.base)
        finally:
            daemon.stop()
        hits = servers.call(lambda: dict(servers.origin.hits))
        posted = servers.call(lambda: len(servers.imgur.uploads))
    assert code == 0, err
    rows = csv_file(output)
    assert [(r[0], r[1]) for r in rows] == [(u, "complete") for u in fast + slow]
    assert [r[2] for r in rows[:4]] == [r[2] for r in first[:4]]
    for n in range(4):
        assert hits["/t/%d.jpg" % n] == 1  # the origin saw each completed URL once: not fetched again
    assert posted == 5  # 4 images and the hanging one's JPEG, each uploaded once


def test_a_job_of_100_urls_survives_two_restarts_and_an_interrupted_client_resumes_it(tmp_path):
    state = tmp_path / "imgurd.state"
    output = tmp_path / "r.csv"
    url_file = tmp_path / "urls.txt"
    with BackgroundServers(origin=Origin(latency=0.08)) as servers:
        images = {servers.call(servers.origin.add, "/d/%d.jpg" % n, jpeg_of_size(800, seed=6000 + n)): n
                  for n in range(100)}
        urls = list(images)
        url_file.write_text("\n".join(urls) + "\n")
        args = ("--max-concurrency", "4", "--shutdown-timeout", "5", "--log-level", "warning")
        daemon = start(servers, *args, state=state)
        client = submit_process("--file", str(url_file), "--output", str(output), server=daemon.base)
        try:
            for links in (15, 35):  # two restarts while the client waits
                base = daemon.base
                wait_for(lambda base=base, links=links: link_count(base) >= links, what="%d links" % links)
                code, log = daemon.stop()
                assert code == 0 and "Traceback" not in log
                daemon = start(servers, *args, port=daemon.port, state=state)
            # slower now: the client's file lags the server by a poll (up to 2 s), and the job must still
            # be unfinished when the client is interrupted (13 URLs a second: at most some 70 done by then)
            servers.call(setattr, servers.origin, "latency", 0.3)
            wait_for(lambda: len(complete_rows(output)) >= 40, what="40 complete rows in the client's file")
            client.send_signal(signal.SIGINT)  # Ctrl-C
            out, err = client.communicate(timeout=20)
            assert client.returncode == 130, err
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], err
            interrupted = csv_file(output)
            assert [row[0] for row in interrupted] == urls  # the whole file, every row
            done = {row[0] for row in interrupted if row[1] == "complete"}
            assert 40 <= len(done) < 100
            hits_before = servers.call(lambda: dict(servers.origin.hits))
            servers.call(setattr, servers.origin, "latency", 0.02)
            code, out, err = run_submit("--output", str(output), "--resume", server=daemon.base)
        finally:
            if client.poll() is None:
                client.kill()
            daemon.stop()
        counts, links = uploads_by_bytes(servers)
        hits = servers.call(lambda: dict(servers.origin.hits))
    assert code == 0, err
    rows = csv_file(output)
    assert [row[0] for row in rows] == urls and all(row[1] == "complete" for row in rows)
    for url, _, link, _ in rows:
        assert links[link] == jpeg_of_size(800, seed=6000 + images[url])
    assert len(counts) == 100 and set(counts.values()) == {1}  # every image uploaded exactly once
    for url in done:
        path = url.split(str(servers.origin.port), 1)[1]
        assert hits[path] == hits_before[path] == 1  # complete before the interruption: not fetched again
