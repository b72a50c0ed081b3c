"""Operating imgurd: metrics, OpenAPI (validated and fuzzed), access token, idempotency, JSON logs."""

import io
import json
import logging

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
    assert "imgurd_imgur_rate_limit_remaining{" not in text  # nothing known yet
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
async def test_backlog_gauge(start_service):
    api = start_service(max_concurrency=1)
    await api.submit(["http://127.0.0.1:9/%d.jpg" % i for i in range(5)])
    code, text, _ = await api.call("GET", "/metrics")
    assert metric(text.decode(), "imgurd_backlog_urls") >= 4


@pytest.mark.gen_test
async def test_api_token_guards_v1_only(start_service):
    api = start_service(api_token="let-me-in")
    body = {"urls": ["http://127.0.0.1:9/a.jpg"]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "let-me-in"},
                    {"Authorization": "Basic bGV0LW1lLWlu"}):
        for method, path, payload in (("POST", "/v1/images/upload", body), ("GET", "/v1/images", None),
                                      ("GET", "/v1/images/upload/x", None), ("GET", "/v1/openapi.json", None)):
            code, document, response_headers = await api.call(method, path, payload, headers)
            assert code == 401 and "bearer" in document["error"], (headers, path)
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
    assert code == 400 and "Idempotency-Key" in document["error"]


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
    from openapi_spec_validator import validate

    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:%d/v1/openapi.json" % live.port) as response:
        document = json.load(response)
    validate(document)
    assert set(document["paths"]) == {"/v1/images/upload", "/v1/images/upload/{jobId}", "/v1/images",
                                      "/v1/openapi.json", "/healthz", "/metrics"}


def test_fuzz_the_api_from_its_openapi_document(live):
    import schemathesis
    from hypothesis import HealthCheck, settings
    from schemathesis.specs.openapi import checks

    schema = schemathesis.openapi.from_dict(live.service.openapi)
    base = "http://127.0.0.1:%d" % live.port
    failures = []

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call(base_url=base, timeout=10)
        assert response.status_code < 500, (case.path, response.status_code, response.text)
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        assert content_type.split(";")[0] in ("application/json", "text/plain"), (case.path, response.headers)
        try:
            case.validate_response(response, checks=[checks.status_code_conformance,
                                                     checks.content_type_conformance,
                                                     checks.response_schema_conformance,
                                                     checks.response_headers_conformance])
        except Exception as error:
            failures.append("%s %s -> %d: %s" % (case.method, case.path, response.status_code, error))

    from hypothesis import given
    from hypothesis.errors import Unsatisfiable

    fuzzed = 0
    for operation in schema.get_all_operations():
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            try:
                given(operation.ok().as_strategy(generation_mode=mode))(run)()
                fuzzed += 1
            except Unsatisfiable:  # an operation without inputs has no negative cases
                assert mode is schemathesis.GenerationMode.NEGATIVE
    assert fuzzed >= 8  # every operation, and negative cases of those with inputs
    assert not failures, "\n".join(failures[:5])


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
    assert any(line.get("path") == "/healthz" and line.get("status") == 200 for line in access)
    assert any(line.get("status") == 202 and line.get("method") == "POST" for line in access)
    assert any(line["message"].startswith("accepted job=") and "job" in line for line in lines)
    assert "tok-123456" not in err
