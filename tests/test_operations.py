"""Operating imgurd: metrics, OpenAPI (validated and fuzzed), access token, idempotency, JSON logs."""

import io
import json
import logging
import os
import re
import subprocess

import pytest
from tornado.netutil import bind_sockets

from imgurd import listener, logs
from imgurd.service import Service
from imgurd.settings import defaults
from tests.fakes import JPEG, PNG, LoopThread


def metric(text: str, name: str, labels: str = "") -> float:
    wanted = name + ("{%s}" % labels if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("%s not in metrics:\n%s" % (wanted, text))


@pytest.mark.gen_test
async def test_metrics_move(start_service, origin, imgur):
    api = start_service(client_secret=imgur.client_secret, refresh_token=imgur.refresh_token)
    imgur.rate_headers = {"X-RateLimit-ClientLimit": "12500", "X-RateLimit-ClientRemaining": "12000"}
    code, text, headers = await api.call("GET", "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    text = text.decode()
    assert metric(text, "imgurd_jobs_accepted_total") == 0
    assert metric(text, "imgurd_imgur_wait_seconds") == 0 and metric(text, "imgurd_urls_waiting") == 0
    report = await api.wait(await api.submit([origin.add("/a.jpg", JPEG), origin.add("/b.png", PNG),
                                              origin.url("/status/404"), origin.add("/p.html", b"<html>")]))
    assert len(report["uploaded"]["complete"]) == 2
    code, text, _ = await api.call("GET", "/metrics")
    text = text.decode()
    assert metric(text, "imgurd_jobs_accepted_total") == 1
    assert metric(text, "imgurd_urls_accepted_total") == 4
    assert metric(text, "imgurd_urls_finished_total", 'failure_class="",outcome="complete"') == 2
    assert metric(text, "imgurd_urls_finished_total", 'failure_class="download",outcome="failed"') == 1
    assert metric(text, "imgurd_urls_finished_total", 'failure_class="not_image",outcome="failed"') == 1
    assert metric(text, "imgurd_downloaded_bytes_total") == len(JPEG) + len(PNG) + len(b"<html>")
    assert metric(text, "imgurd_uploaded_bytes_total") == len(JPEG) + len(PNG)
    assert metric(text, "imgurd_download_duration_seconds_count") == 3
    assert metric(text, "imgurd_upload_duration_seconds_count") == 2
    assert metric(text, "imgurd_transfers_in_flight") == 0 and metric(text, "imgurd_backlog_urls") == 0
    assert metric(text, "imgurd_links") == 2
    assert metric(text, "imgurd_imgur_rate_limit_remaining", 'budget="client"') == 12000
    for secret in [imgur.client_secret, imgur.refresh_token, *imgur.valid_tokens]:
        assert secret not in text


@pytest.mark.gen_test
async def test_backlog_gauge(start_service, origin):
    api = start_service(max_concurrency=1)
    await api.submit([origin.url("/hang/30?%d" % i) for i in range(5)])  # none finishes meanwhile
    code, text, _ = await api.call("GET", "/metrics")
    assert metric(text.decode(), "imgurd_backlog_urls") == 5


@pytest.mark.gen_test
async def test_api_token_guards_v1_only(start_service):
    api = start_service(api_token="let-me-in")
    body = {"urls": ["http://127.0.0.1:9/a.jpg"]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "let-me-in"},
                    {"Authorization": "Basic bGV0LW1lLWlu"}):
        for method, path, payload in (("POST", "/v1/images/upload", body), ("GET", "/v1/images", None),
                                      ("GET", "/v1/images/upload/x", None), ("GET", "/v1/openapi.json", None)):
            code, document, response_headers = await api.call(method, path, payload, headers)
            assert (code, document) == (401, {"error": "missing or wrong bearer token (Authorization: Bearer "
                                                       "<api_token>)"}), (headers, path)
            assert response_headers["WWW-Authenticate"].startswith("Bearer")
            assert "let-me-in" not in json.dumps(document)
    assert not api.service.store.jobs
    good = {"Authorization": "Bearer let-me-in"}
    assert (await api.call("POST", "/v1/images/upload", body, good))[0] == 202
    assert (await api.call("GET", "/v1/images", None, good))[0] == 200
    assert (await api.call("GET", "/healthz"))[0] == 200
    assert (await api.call("GET", "/metrics"))[0] == 200


@pytest.mark.gen_test
async def test_idempotency_key(start_service):
    api = start_service(max_concurrency=1)
    urls = ["http://127.0.0.1:9/%d.jpg" % i for i in range(3)]
    first = await api.submit(urls, headers={"Idempotency-Key": "batch-1"})
    again = await api.submit(urls, headers={"Idempotency-Key": "batch-1"})
    other = await api.submit(urls, headers={"Idempotency-Key": "batch-2"})
    plain = await api.submit(urls)
    assert first == again and len({first, other, plain}) == 3
    assert len(api.service.store.jobs) == 3
    code, document, headers = await api.call("POST", "/v1/images/upload", {"urls": urls},
                                             {"Idempotency-Key": "batch-1"})
    assert code == 202 and headers["Location"] == "/v1/images/upload/" + first
    code, document, _ = await api.call("POST", "/v1/images/upload", {"urls": urls},
                                       {"Idempotency-Key": "x" * 201})
    assert (code, document) == (400, {"error": "Idempotency-Key must be 1 to 200 characters"})
    # the same key with other URLs is refused, naming the job the key belongs to; the new URLs are not lost
    # silently in an old job
    code, document, _ = await api.call("POST", "/v1/images/upload", {"urls": urls[:2]},
                                       {"Idempotency-Key": "batch-1"})
    assert (code, document) == (422, {"error": "this Idempotency-Key was used for job %s with other URLs; use a new "
                                               "key for a new job" % first})
    # "the same URLs" as SPEC counts duplicates: after normalisation, so a retry that writes them otherwise
    # (case, fragment, spaces, a duplicate) finds its job
    same = ["HTTP://127.0.0.1:9/0.jpg#top", " http://127.0.0.1:9/1.jpg ", "http://127.0.0.1:9/1.jpg#again", urls[2]]
    code, document, _ = await api.call("POST", "/v1/images/upload", {"urls": same}, {"Idempotency-Key": "batch-1"})
    assert (code, document) == (202, {"jobId": first})
    # a repeated key answers only a valid request: the body is checked first
    for raw in (b"\x00", b"", b'{"urls": []}', b'{"urls": ["ftp://x"]}'):
        code, document, _ = await api.call("POST", "/v1/images/upload", raw=raw, headers={"Idempotency-Key": "batch-1"})
        assert code == 400 and "jobId" not in document, raw
    assert len(api.service.store.jobs) == 3
    # duplicates and surrounding blanks do not make the URLs other ones
    assert await api.submit([" " + urls[0], *urls, urls[1]], headers={"Idempotency-Key": "batch-1"}) == first


@pytest.mark.gen_test
async def test_access_log_levels_back_pressure_is_not_failure(start_service, caplog):
    """Refusals are normal answers (INFO), health checks and scrapes are routine (DEBUG)."""
    api = start_service(max_queued_urls=1, max_body_bytes=200, max_concurrency=1)
    caplog.set_level(logging.DEBUG, logger="tornado.access")
    await api.submit(["http://127.0.0.1:9/a.jpg"])
    requests = [("POST", "/v1/images/upload", {"urls": ["http://127.0.0.1:9/b.jpg"]}, 503),
                ("POST", "/v1/images/upload", {"urls": ["http://127.0.0.1:9/%d.jpg" % i for i in range(20)]}, 413),
                ("POST", "/v1/images/upload", {"urls": []}, 400),
                ("GET", "/v1/images/upload/nope", None, 404),
                ("DELETE", "/v1/images", None, 405),
                ("GET", "/healthz", None, 200),
                ("GET", "/metrics", None, 200)]
    for method, path, body, status in requests:
        caplog.clear()
        assert (await api.call(method, path, body))[0] == status, path
        [record] = [r for r in caplog.records if r.name == "tornado.access"]
        expected = logging.DEBUG if path in ("/healthz", "/metrics") else logging.INFO
        assert record.levelno == expected, (status, path, record.levelname)
    assert logs.access_level(500, "/v1/images") == logs.access_level(502, "/healthz") == logging.ERROR
    assert logs.access_level(200, "/v1/images") == logging.INFO


def test_json_log_lines():
    stream = io.StringIO()
    logs.setup("info", "json", stream)
    try:
        logging.getLogger("imgurd.pipeline").warning(
            "upload failed job=%s url=%s reason=%s", "j1", "https://x/a.jpg", "origin answered HTTP 404",
            extra={"job": "j1", "url": "https://x/a.jpg", "reason": "origin answered HTTP 404"})
        logging.getLogger("imgurd").info("plain")
    finally:
        logging.getLogger().handlers.clear()
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["level"] == "WARNING" and first["logger"] == "imgurd.pipeline"
    assert first["message"] == "upload failed job=j1 url=https://x/a.jpg reason=origin answered HTTP 404"
    assert (first["job"], first["url"], first["reason"]) == ("j1", "https://x/a.jpg", "origin answered HTTP 404")
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["message"] == "plain" and "job" not in second


# --- OpenAPI: validated by a maintained validator, and fuzzed by schemathesis against the live API


class ServiceThread(LoopThread):
    """A Service on its own loop in a thread, for synchronous clients. Its pipeline is not started:
    the fuzzer's URLs are queued and never fetched, so nothing connects anywhere."""

    def __init__(self, **settings) -> None:
        super().__init__()
        self.settings = settings

    def boot(self) -> None:
        self.service = Service(defaults(client_id="x", api_url="http://127.0.0.1:9", **self.settings))
        self.server = listener.make_server(self.service.application(), self.service.config)
        sockets = bind_sockets(0, "127.0.0.1")
        self.server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]


@pytest.fixture(scope="module")
def live():
    with ServiceThread(max_urls_per_job=20, max_body_bytes=4096) as running:
        yield running


def test_openapi_document_is_valid(live):
    import urllib.request

    from openapi_spec_validator import validate

    with urllib.request.urlopen("http://127.0.0.1:%d/v1/openapi.json" % live.port) as response:
        document = json.load(response)
    validate(document)
    assert set(document["paths"]) == {"/v1/images/upload", "/v1/images/upload/{jobId}", "/v1/images",
                                      "/v1/openapi.json", "/healthz", "/metrics"}


# What imgurd answers that schemathesis' defaults do not expect, each required by imgurd's API: 413 for too
# many URLs or too large a body (invalid data: refused, if not with 400), and 422 for a valid body that
# reuses the Idempotency-Key of a job with other URLs (the IETF Idempotency-Key draft's answer)
SCHEMATHESIS_CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
"""


def test_fuzz_the_api_from_its_openapi_document(live, tmp_path):
    """schemathesis run as an independent tester runs it: every phase (coverage, fuzzing, and stateful
    sequences that follow the document's links) and every check, RFC 9110's Allow on 405 included."""
    from tests.helpers import installed_command

    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    argv = [installed_command("st"), "--config-file", str(config), "--no-color", "run",
            "http://127.0.0.1:%d/v1/openapi.json" % live.port, "--checks", "all",
            "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "20", "--workers", "1",
            "--request-timeout", "10", "--suppress-health-check", "all"]
    result = subprocess.run(argv, cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(r"✅ +%s\b" % phase, output), "%s phase did not run and pass:\n%s" % (phase, output[-4000:])
    assert re.search(r"API Links: +[1-9]\d* covered", output), output[-4000:]


def test_json_logs_from_the_command(tmp_path):
    """``--log-format json``: every line of the running command is one JSON object, access log included."""
    import subprocess

    from tests.helpers import Daemon

    daemon = Daemon("--client-id", "secret-client-id-value", "--log-format", "json", "--api-token", "tok-123456",
                    "--api-url", "http://127.0.0.1:9")
    try:
        subprocess.run(["curl", "-sS", "-o", "/dev/null", daemon.base + "/healthz"], check=True)
        subprocess.run(["curl", "-sS", "-o", "/dev/null", "-H", "Authorization: Bearer tok-123456",
                        "--data", '{"urls": ["http://127.0.0.1:9/a.jpg"]}', daemon.base + "/v1/images/upload"],
                       check=True)
    finally:
        code, err = daemon.stop()
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "tornado.access"]
    assert not any(line.get("path") == "/healthz" for line in access)  # health checks log at DEBUG
    assert any(line.get("status") == 202 and line.get("method") == "POST" and line.get("path") == "/v1/images/upload"
               for line in access)
    assert any(line["message"].startswith("accepted job=") and "job" in line for line in lines)
    assert "tok-123456" not in err
