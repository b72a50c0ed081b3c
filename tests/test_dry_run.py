"""dry_run: everything but the upload runs, with no Imgur account; and the start-up line that says so."""

import hashlib
import json
import subprocess
import time

import pytest

from imgurd import dryrun
from imgurd.server import host_port, summary
from imgurd.settings import defaults
from tests.fakes import GIF, HTML, JPEG, PNG
from tests.helpers import Daemon
from tests.test_operations import metric


def dry_link(data: bytes, extension: str) -> str:
    return "dry-run:%s.%s" % (hashlib.sha256(data).hexdigest()[:12], extension)


@pytest.mark.parametrize("mime, extension", [
    ("image/jpeg", "jpg"), ("image/png", "png"), ("image/gif", "gif"), ("image/tiff", "tiff"), ("image/bmp", "bmp"),
    ("image/webp", "webp"),  # what is left of a format no converter changed
])
def test_link_names_the_bytes_and_the_format_uploaded(mime, extension):
    assert dryrun.link(bytearray(b"some bytes"), mime) == dry_link(b"some bytes", extension)


@pytest.mark.gen_test
async def test_dry_run_runs_everything_but_the_upload(start_service, origin, imgur):
    api = start_service(dry_run=True, client_id=None, client_secret="s", refresh_token="r")
    urls = [origin.add("/a.jpg", JPEG), origin.add("/b.png", PNG, "image/png"), origin.add("/c.gif", GIF),
            origin.add("/again.jpg", JPEG), origin.url("/status/404"), origin.add("/page.html", HTML, "text/html")]
    report = await api.wait(await api.submit(urls))
    outcome = [(image["status"], image["link"], image["error"]) for image in report["images"]]
    assert outcome == [
        ("complete", dry_link(JPEG, "jpg"), None),
        ("complete", dry_link(PNG, "png"), None),
        ("complete", dry_link(GIF, "gif"), None),
        ("complete", dry_link(JPEG, "jpg"), None),  # identical bytes: what would reuse the first upload
        ("failed", None, "origin answered HTTP 404"),
        ("failed", None, "not an image (content looks like text/html)"),
    ]
    assert imgur.requests == 0 and imgur.token_requests == 0  # Imgur never heard of it
    # the listing shows what the job reports show: a dry-run process lists only dry-run links
    code, listing, _ = await api.call("GET", "/v1/images")
    assert listing == {"uploaded": [dry_link(JPEG, "jpg"), dry_link(PNG, "png"), dry_link(GIF, "gif")], "total": 3}
    code, text, _ = await api.call("GET", "/metrics")
    text = text.decode()
    assert metric(text, "imgurd_downloaded_bytes_total") == 2 * len(JPEG) + len(PNG) + len(GIF) + len(HTML)
    assert metric(text, "imgurd_uploaded_bytes_total") == 0  # nothing was uploaded
    assert metric(text, "imgurd_urls_finished_total", 'failure_class="",outcome="complete"') == 4


@pytest.mark.gen_test
async def test_dry_run_refusals_say_how_to_allow(start_service, origin):
    """A newcomer's first dry run is on a local URL: the refusal names the switch."""
    api = start_service(dry_run=True, client_id=None, allow_private_networks=False)
    report = await api.wait(await api.submit([origin.add("/a.jpg", JPEG)]))
    assert report["images"][0]["error"] == "address not allowed: 127.0.0.1 (loopback; allow_private_networks is off)"


def test_start_up_summary():
    assert host_port("::1", 8101) == "[::1]:8101" and host_port("127.0.0.1", 80) == "127.0.0.1:80"
    assert host_port("localhost", 8080) == "localhost:8080"
    assert summary(defaults(client_id="x")) == \
        "uploads to https://api.imgur.com anonymously (Client-ID); max_concurrency=16; private networks refused"
    account = defaults(client_id="x", client_secret="s", refresh_token="r", api_url="http://127.0.0.1:9",
                       allow_private_networks=True)
    assert summary(account) == ("uploads to http://127.0.0.1:9 into your account (OAuth refresh token); "
                                "max_concurrency=16; private networks allowed")
    assert summary(defaults(dry_run=True)).startswith("DRY RUN: nothing is uploaded to Imgur;")


def test_first_try_without_an_imgur_account(servers):
    """As the documentation has a newcomer do it: no client id, --dry-run, a job with curl."""
    jpg = servers.call(servers.origin.add, "/photo.jpg", JPEG)
    daemon = Daemon("--dry-run", "--allow-private-networks",
                    env={"IMGURD_MAX_CONCURENCY": "4", "IMGURD_SERVER": "http://127.0.0.1:1", "IMGURD_CONFIG": ""})
    try:
        out = subprocess.run(["curl", "-sS", "--max-time", "10", "--data", json.dumps({"urls": [jpg]}),
                              daemon.base + "/v1/images/upload"], capture_output=True, text=True, check=True).stdout
        job_id = json.loads(out)["jobId"]
        for _ in range(200):
            out = subprocess.run(["curl", "-sS", "--max-time", "10", daemon.base + "/v1/images/upload/" + job_id],
                                 capture_output=True, text=True, check=True).stdout
            report = json.loads(out)
            if report["status"] == "complete":
                break
            time.sleep(0.05)
        assert report["uploaded"]["complete"] == [dry_link(JPEG, "jpg")], report
    finally:
        code, log = daemon.stop()
    assert code == 0
    assert servers.imgur.requests == 0
    assert ("listening on http://127.0.0.1:%d; DRY RUN: nothing is uploaded to Imgur; max_concurrency=16; "
            "private networks allowed" % daemon.port) in log
    assert "WARNING imgurd: dry run: nothing is uploaded to Imgur" in log
    warnings = [line for line in log.splitlines() if "ignoring environment variable" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], log
    assert warnings[0].endswith(
        "ignoring environment variable IMGURD_MAX_CONCURENCY: no such setting; did you mean IMGURD_MAX_CONCURRENCY?")
    assert "accepted job=%s with 1 URL\n" % job_id in log


def test_a_job_size_that_could_never_be_queued_is_warned_of_at_start():
    daemon = Daemon("--dry-run", "--max-queued-urls", "10", "--max-urls-per-job", "50")
    code, log = daemon.stop()
    assert code == 0
    assert ("WARNING imgurd: max_urls_per_job (50) is more than max_queued_urls (10): a job of more than 10 URLs "
            "is answered 503 for good") in log
