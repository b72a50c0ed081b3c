"""Imgur as it really answers (IMGUR-API): budgets paced, waiting shown, every error shape read.

The fake Imgur answers like the real one by default: reset headers in seconds, 429s in the
``{"errors": [...]}`` shape with no ``Retry-After``, ``GET /3/credits``. Budgets that reset in
seconds stand in for Imgur's hour.
"""

import json
import logging
import time

import pytest
from tornado import gen

from imgurd import ratelimit
from imgurd.answers import error_message
from imgurd.errors import TransferError
from imgurd.jobs import JobStore
from imgurd.ratelimit import RateGate, reset_time, wait_in_words
from tests.fakes import JPEG, FakeImgur, jpeg_of_size, start_server
from tests.test_operations import metric


async def run_one(api, url):
    report = await api.wait(await api.submit([url]))
    return report["images"][0]


# --- pure functions


def test_reset_values_are_told_apart_by_size():
    now = 1_800_000_000.0
    assert reset_time(3600, now) == now + 3600  # what real answers send: seconds
    assert reset_time(1_800_000_100, now) == 1_800_000_100  # what the documentation promises: a Unix time


@pytest.mark.parametrize("message, seconds", [
    ("You are uploading too fast. Please wait 37 more minutes.", 37 * 60),
    ("Please wait 1 more minute.", 60),
    ("please WAIT 20 seconds", 20),
    ("Please wait 2 more hours", 7200),
    ("Too Many Requests", None),
    (None, None),
])
def test_waits_in_words(message, seconds):
    assert wait_in_words(message) == seconds


def test_gate_reads_budget_headers_in_any_case_and_waits_for_the_user_reset():
    now = [1_800_000_000.0]
    gate = RateGate(max_wait=86400, clock=lambda: now[0])
    gate.observe({"x-ratelimit-userlimit": "500", "x-ratelimit-userremaining": "0",
                  "x-ratelimit-userreset": "3600", "x-ratelimit-clientlimit": "12500",
                  "x-ratelimit-clientremaining": "9000", "x-ratelimit-clientreset": "86400"})
    held = gate.waiting()
    margin = ratelimit.RESET_MARGIN  # resets come in whole seconds
    assert held is not None and held.until == now[0] + 3600 + margin and held.budget == "hourly budget"
    assert held.reason == "Imgur's hourly upload budget for this address is spent (50 uploads an hour)"
    assert gate.budgets["client"].reset_at == now[0] + 86400 + margin
    now[0] += 3600 + margin
    assert gate.waiting() is None and gate.budgets["user"].remaining == 500  # refilled at the reset


@pytest.mark.parametrize("reset, fails", [("86400", False), ("86401", True)])
def test_a_spent_daily_budget_refilling_in_exactly_max_rate_limit_wait_is_waited_for(reset, fails):
    """Imgur's daily budget says it resets in 86,400 s, the default max_rate_limit_wait: the second of
    margin imgurd adds beyond a reset must not make every waiting URL fail."""
    now = [1_800_000_000.0]
    gate = RateGate(max_wait=86400, clock=lambda: now[0])
    gate.observe({"x-ratelimit-clientlimit": "12500", "x-ratelimit-clientremaining": "0",
                  "x-ratelimit-clientreset": reset})
    assert gate.holds() is not fails
    if fails:
        with pytest.raises(TransferError, match="beyond max_rate_limit_wait"):
            gate.refuse_beyond_max_wait()
    else:
        gate.refuse_beyond_max_wait()


@pytest.mark.parametrize("told", [
    {"retry_after": 999999999999.0},
    {"message": "Please wait 99999999999 more hours"},
    {"headers": {"x-post-rate-limit-remaining": "0", "x-post-rate-limit-reset": "999999999999"}},
])
def test_an_absurd_wait_is_taken_as_a_year_and_the_job_report_can_show_it(told):
    """A Retry-After, a wait in words or a reset time beyond year 9999 made every job report a 500."""
    from imgurd.reports import utc_stamp
    now = [1_800_000_000.0]
    gate = RateGate(max_wait=86400, clock=lambda: now[0])
    if "headers" in told:
        gate.observe(told["headers"])
    else:
        gate.rate_limited(told.get("retry_after"), told.get("message"))
    held = gate.waiting()
    assert held is not None and held.until <= now[0] + ratelimit.LONGEST_TOLD + ratelimit.RESET_MARGIN
    assert utc_stamp(held.until).endswith("Z")
    with pytest.raises(TransferError, match="beyond max_rate_limit_wait"):
        gate.refuse_beyond_max_wait()


@pytest.mark.gen_test
async def test_an_upload_that_never_left_gives_its_credits_back_and_one_without_an_answer_does_not():
    """Imgur unreachable (curl never asked for the body): not counted, and a short outage must not leave
    the budgets looking spent until their reset. Sent and unanswered (a timeout): maybe counted, so it
    stays taken off (five spent daily budgets in a month block the application)."""
    gate = RateGate(max_wait=86400)
    gate.observe({"X-RateLimit-UserLimit": "100", "X-RateLimit-UserRemaining": "100",
                  "X-Post-Rate-Limit-Limit": "5", "X-Post-Rate-Limit-Remaining": "2"})
    for _ in range(5):
        await gate.acquire()
        gate.release(None, sent=False)
    assert gate.remaining()["user"] == 100 and gate.remaining()["post"] == 2 and gate.waiting() is None
    await gate.acquire()
    gate.release(None)  # sent, no answer
    assert gate.remaining()["user"] == 90 and gate.remaining()["post"] == 1
    await gate.acquire()
    gate.release({"Content-Type": "text/html"})  # an answer without budget headers: as sent
    assert gate.remaining()["post"] == 0
    gate.observe({"X-Post-Rate-Limit-Remaining": "5"})
    await gate.acquire()
    gate.release(None, sent=False)
    assert gate.remaining()["post"] == 5 and gate.remaining()["user"] == 80  # never beyond what Imgur last said


@pytest.mark.gen_test(timeout=60)
async def test_an_unreachable_imgur_does_not_spend_imgurds_budget_estimate(start_service, origin, imgur):
    imgur.budget(user_credits=60, window=3600)  # 6 uploads this hour
    api = start_service(max_concurrency=1, max_attempts=5)
    assert (await run_one(api, origin.add("/a.jpg", jpeg_of_size(500, 1))))["status"] == "complete"
    real_url = api.service.imgur.url
    api.service.imgur.url = "http://127.0.0.1:%d/3/image" % closed_port()  # nothing listens: nothing is sent
    image = await run_one(api, origin.add("/b.jpg", jpeg_of_size(500, 2)))
    assert image["status"] == "failed" and "connect" in image["error"], image
    api.service.imgur.url = real_url
    assert api.service.gate.remaining()["user"] == 50  # as Imgur's last answer said: 5 uploads left
    image = await run_one(api, origin.add("/c.jpg", jpeg_of_size(500, 3)))
    assert image["status"] == "complete"


def test_gate_without_headers_learns_from_a_quiet_429_and_backs_off():
    now = [1000.0]
    gate = RateGate(max_wait=86400, clock=lambda: now[0])
    gate.rate_limited(None, "Too Many Requests")
    first = gate.waiting()
    assert first.until == 1000 + ratelimit.FIRST_PAUSE and first.budget == "rate-limit pause"
    now[0] = first.until
    gate.rate_limited(None, "Too Many Requests")
    assert gate.waiting().until == now[0] + 2 * ratelimit.FIRST_PAUSE  # again in a row: twice as long
    gate.succeeded()
    now[0] += 10000
    gate.rate_limited(None, "Please wait 37 more minutes.")
    assert gate.waiting().until == now[0] + 37 * 60


@pytest.mark.parametrize("body, message", [
    (b'{"data": {"error": "Invalid client_id", "request": "/3/image", "method": "POST"}, "success": false,'
     b' "status": 403}', "Invalid client_id"),
    (b'{"data": {"error": {"code": 1003, "message": "File type invalid (1)", "type": "ImgurException",'
     b' "exception": []}, "request": "/3/image", "method": "POST"}, "success": false, "status": 400}',
     "File type invalid (1)"),
    (b'{"errors": [{"id": "legacy-api-7756c5f445-v8sw6/FWkdEyQ56Y-1829229", "code": "429",'
     b' "status": "Too Many Requests", "detail": "Too Many Requests"}]}', "Too Many Requests"),
    (b'{"id": "legacy-api-5b7c4f6c68-2pblb/JYEwsy8Hoj-145368", "code": 413,'
     b' "detail": "file is over the size limit", "status": "Request Entity Too Large"}',
     "file is over the size limit"),
    (b"<html><body>503 client read error</body></html>", None),
    (b"", None),
    (b"[1, 2]", None),
])
def test_every_error_shape_gives_imgurs_words(body, message):
    assert error_message(body) == message


def test_finished_job_is_gone_at_job_ttl_before_the_sweep():
    now = [100.0]
    store = JobStore(job_ttl=10, max_jobs=100, clock=lambda: now[0])
    job = store.add(["https://example.com/a.jpg"])
    item = store.next_item()
    store.start(item)
    store.complete(item, "https://i.imgur.com/a.jpg")
    now[0] += 9.9
    assert store.get(job.id) is job
    now[0] += 0.1
    assert store.get(job.id) is None  # no sweep ran: the job is still held, yet not shown


# --- through the running service


def closed_port():
    """A loopback port nothing listens on (bound, then closed)."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def small_reset_margin(monkeypatch):
    """The fake's resets are whole seconds rounded up, never before its refill: the margin imgurd keeps
    beyond a reset for Imgur's rounding only lengthens these tests (0.1 s leaves room for a clock step)."""
    monkeypatch.setattr(ratelimit, "RESET_MARGIN", 0.1)


async def until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached in %s s" % timeout
        await gen.sleep(0.01)


@pytest.mark.gen_test(timeout=60)
async def test_a_job_beyond_the_anonymous_budget_waits_and_completes_without_a_refused_upload(
        start_service, origin, imgur, small_reset_margin):
    imgur.budget(user_credits=100, window=1.0)  # 10 uploads, then a reset in a second (an hour at Imgur)
    api = start_service(max_concurrency=16, max_per_host=16)
    urls = [origin.add("/b%d.jpg" % i, jpeg_of_size(300, i)) for i in range(30)]  # 3 budgets' worth
    job_id = await api.submit(urls)
    seen_waiting, statuses = [], []
    while True:
        report = await api.job(job_id)
        statuses.append(report["status"])
        if report["waiting"] is not None:
            seen_waiting.append(report)
        if report["status"] == "complete":
            break
        await gen.sleep(0.02)
    assert report["uploaded"]["failed"] == [] and len(report["uploaded"]["complete"]) == 30
    assert imgur.spent_uploads == 0 and imgur.requests == 30  # no upload went into a spent budget
    assert seen_waiting, "the job never showed that it waited for Imgur's budget"
    held = seen_waiting[0]
    assert held["waiting"]["reason"] == "Imgur's hourly upload budget for this address is spent (10 uploads an hour)"
    assert held["waiting"]["until"].endswith("Z")
    # waiting URLs are pending, not failed and not shown as being transferred
    assert {image["status"] for image in held["images"]} <= {"pending", "complete"}
    # the job's status only ever moves forward, waits or not (SPEC: pending = no URL started yet)
    order = ["pending", "in-progress", "complete"]
    assert [order.index(status) for status in statuses] == sorted(order.index(status) for status in statuses)
    assert all(waited["status"] == "in-progress" for waited in seen_waiting)  # URLs had started
    assert report["waiting"] is None


@pytest.mark.gen_test(timeout=60)
async def test_a_job_larger_than_the_transfers_in_flight_waits_for_the_budget_and_completes(
        start_service, origin, imgur, small_reset_margin):
    """More URLs than 2 x max_concurrency: the rest are still queued when the budget runs out, and the
    dispatcher must start them after the reset (it used to die at the first budget hold)."""
    imgur.budget(user_credits=30, window=1.0)  # 3 uploads, then a reset in a second
    api = start_service(max_concurrency=2)
    urls = [origin.add("/q%d.jpg" % i, jpeg_of_size(300, i)) for i in range(12)]
    report = await api.wait(await api.submit(urls), timeout=40)
    assert len(report["uploaded"]["complete"]) == 12 and report["uploaded"]["failed"] == []
    assert imgur.spent_uploads == 0 and imgur.requests == 12


@pytest.mark.gen_test(timeout=60)
async def test_documented_answers_are_paced_too(io_loop, origin, small_reset_margin):
    imgur = FakeImgur(documented=True).start()  # Unix-time resets, 429s in the documented envelope
    try:
        imgur.budget(user_credits=100, window=1.0)
        from imgurd.service import Service
        from imgurd.settings import defaults
        from tests.conftest import Api

        service = Service(defaults(client_id=imgur.client_id, api_url=imgur.url, allow_private_networks=True,
                                   max_per_host=16))
        server, port = start_server(service.application())
        service.start()
        api = Api(service, port)
        report = await api.wait(await api.submit([origin.add("/d%d.jpg" % i, jpeg_of_size(300, i))
                                                  for i in range(25)]), timeout=40)
        assert len(report["uploaded"]["complete"]) == 25 and imgur.spent_uploads == 0
        server.stop()
        service.close()
    finally:
        imgur.stop()


@pytest.mark.gen_test(timeout=30)
async def test_429_in_words_pauses_every_upload_for_that_long(start_service, origin, imgur):
    api = start_service(max_concurrency=4, reuse_identical_uploads=False)
    imgur.fail_next(429, {"code": 429, "message": "You are uploading too fast. Please wait 1 more second.",
                          "type": "ImgurException", "exception": []})
    started = time.monotonic()
    # the first upload is refused at once; the other two are ready to upload 0.3 and 0.4 s later
    job_id = await api.submit([origin.add("/w.jpg", JPEG), origin.url("/hang/0.3"), origin.url("/hang/0.4")])

    async def waiting():
        return (await api.job(job_id))["waiting"]

    await until(waiting)
    assert (await waiting())["reason"] == "Imgur answered 429 (too many requests) and asked to wait 1 s"
    report = await api.wait(job_id)
    assert len(report["uploaded"]["complete"]) == 3
    assert len(imgur.request_times) == 4  # the refused upload, its retry, the two others
    assert all(t - started >= 0.95 for t in imgur.request_times[1:]), [t - started for t in imgur.request_times]


@pytest.mark.gen_test
async def test_429_asking_beyond_max_rate_limit_wait_fails_with_imgurs_words(start_service, origin, imgur):
    api = start_service(max_rate_limit_wait=60)
    imgur.fail_next(429, {"code": 429, "message": "You are uploading too fast. Please wait 37 more minutes.",
                          "type": "ImgurException", "exception": []})
    image = await run_one(api, origin.add("/a.jpg", JPEG))
    assert image["error"] == ("Imgur answered 429: You are uploading too fast. Please wait 37 more minutes.; "
                              "Imgur asked to retry after 2220 s, beyond max_rate_limit_wait (60 s)")
    assert imgur.requests == 1


@pytest.mark.gen_test
@pytest.mark.parametrize("headers, message", [
    ({"Retry-After": "9" * 400}, "Too Many Requests"),  # inf as a float
    ({}, "Please wait %s more hours." % ("9" * 40)),  # beyond any date (Imgur's words are cut at 300 characters)
])
async def test_429_asking_an_absurd_wait_fails_the_url_with_its_reason(start_service, origin, imgur, headers, message):
    api = start_service()
    imgur.fail_next(429, message, headers)
    image = await run_one(api, origin.add("/a.jpg", JPEG))
    assert image["error"].endswith("Imgur asked to retry after 31622400 s, beyond max_rate_limit_wait (86400 s)")
    code, _, _ = await api.call("GET", "/v1/images")  # and the service answers on
    assert code == 200


@pytest.mark.gen_test(timeout=30)
async def test_quiet_429_pauses_all_uploads(start_service, origin, imgur, monkeypatch):
    monkeypatch.setattr(ratelimit, "FIRST_PAUSE", 1.0)
    api = start_service(max_concurrency=3, reuse_identical_uploads=False)
    imgur.fail_next(429, "Too Many Requests", shape="errors")  # no Retry-After, no words, budgets not spent
    started = time.monotonic()
    report = await api.wait(await api.submit([origin.add("/q.jpg", JPEG), origin.url("/hang/0.3")]))
    assert report["uploaded"]["failed"] == [], report
    assert all(t - started >= 0.95 for t in imgur.request_times[1:]), [t - started for t in imgur.request_times]


@pytest.mark.gen_test
@pytest.mark.parametrize("status, error, shape, headers, expected", [
    (413, "file is over the size limit", "detail", {}, "Imgur answered 413: file is over the size limit"),
    (400, "File is over the size limit", "errors", {}, "Imgur answered 400: File is over the size limit"),
    (415, {"code": 1003, "message": "File type invalid (1)", "type": "ImgurException", "exception": []},
     "envelope", {}, "Imgur answered 415: File type invalid (1)"),
    (417, "Internal expectation failed", "envelope", {}, "Imgur answered 417: Internal expectation failed"),
    (400, "These actions are forbidden.", "envelope", {"CDN-Error": "yes", "Retry-After": "0"},
     "Imgur answered 400: These actions are forbidden. (refused by Imgur's CDN for this address or region)"),
])
async def test_error_shapes_through_the_service_are_not_retried(start_service, origin, imgur, status, error,
                                                                shape, headers, expected):
    api = start_service()
    imgur.fail_next(status, error, headers=headers, shape=shape)
    image = await run_one(api, origin.add("/e.jpg", JPEG))
    assert image["error"] == expected
    assert imgur.requests == 1


@pytest.mark.gen_test
async def test_html_from_the_cache_layer_is_retried_and_named(start_service, origin, imgur):
    api = start_service(max_attempts=2)
    imgur.fail_next(503, html=True, times=2)
    image = await run_one(api, origin.add("/h.jpg", JPEG))
    assert image["error"] == ("Imgur answered 503: Service Unavailable (an HTML page from Imgur's edge) "
                              "(after 2 attempts)")


@pytest.mark.gen_test(timeout=30)
async def test_budgets_are_known_before_the_first_upload_and_the_wait_is_in_metrics(start_service, origin, imgur,
                                                                                    small_reset_margin):
    imgur.budget(user_credits=30, window=1.0)  # 3 uploads, then a wait
    api = start_service()

    async def metrics():
        return (await api.call("GET", "/metrics"))[1].decode()

    async def user_budget_known():  # from GET /3/credits, before any upload
        return 'imgurd_imgur_rate_limit_remaining{budget="user"}' in await metrics()

    await until(user_budget_known)
    assert metric(await metrics(), "imgurd_imgur_rate_limit_remaining", 'budget="user"') == 30
    assert imgur.requests == 0
    job_id = await api.submit([origin.add("/m%d.jpg" % i, jpeg_of_size(300, i)) for i in range(5)])

    async def held():  # the budget holds uploads, and imgurd has finished the 3 it let through
        text = await metrics()
        done = metric(text, "imgurd_urls_finished_total", 'failure_class="",outcome="complete"')
        return metric(text, "imgurd_imgur_wait_seconds") > 0 and done == 3

    await until(held)
    text = await metrics()
    assert 0 < metric(text, "imgurd_imgur_wait_seconds") <= 1 + 0.1  # the 1 s reset, plus the margin
    assert metric(text, "imgurd_urls_waiting") == 2
    report = await api.wait(job_id)
    assert len(report["uploaded"]["complete"]) == 5 and imgur.spent_uploads == 0


@pytest.mark.gen_test
async def test_refused_client_id_is_one_error_line_at_start(start_service, imgur, caplog):
    caplog.set_level(logging.INFO)
    start_service(client_id="not-the-right-one")

    async def errors_logged():
        return [r for r in caplog.records if r.levelno == logging.ERROR]

    await until(errors_logged)
    assert imgur.credits_requests == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.text
    assert errors[0].getMessage() == (
        "Imgur refused the configured client_id: Imgur answered 403: Invalid client_id; uploads will fail until "
        "it is fixed (check client_id, client_secret and refresh_token)")


@pytest.mark.gen_test
async def test_unreachable_imgur_at_start_is_a_warning_and_uploads_go_on(start_service, origin, imgur, caplog):
    imgur.stop()
    caplog.set_level(logging.INFO)
    api = start_service(max_attempts=1, connect_timeout=1.0)
    image = await run_one(api, origin.add("/u.jpg", JPEG))
    assert image["status"] == "failed" and image["error"].startswith("could not connect")  # but not stuck
    assert any(r.levelno == logging.WARNING and r.getMessage().startswith("Imgur is not reachable at ")
               for r in caplog.records), caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.gen_test
async def test_job_report_shows_waiting_null_when_nothing_holds_it(start_service, origin):
    api = start_service()
    report = await api.wait(await api.submit([origin.add("/n.jpg", JPEG)]))
    assert report["waiting"] is None
    code, body, _ = await api.call("GET", "/v1/openapi.json")
    job_schema = json.dumps(body)
    assert '"waiting"' in job_schema


def test_a_held_job_whose_urls_started_stays_in_progress_while_its_urls_show_pending():
    """Started URLs held by Imgur's budget show pending (SPEC: waiting URLs stay pending); the job stays
    in-progress (SPEC: pending = no URL started yet), so its status never steps back."""
    from imgurd.reports import job_document
    store = JobStore(job_ttl=3600, max_jobs=100)
    job = store.add(["https://example.com/a.jpg", "https://example.com/b.jpg"])
    first = store.next_item()
    store.start(first)  # downloaded, waiting at the gate
    waiting = {"reason": "Imgur's upload (POST) budget for this address is spent", "until": "x"}
    held = job_document(job, waiting)
    assert [image["status"] for image in held["images"]] == ["pending", "pending"]
    assert held["status"] == "in-progress" and held["waiting"] == waiting
    assert job_document(job)["status"] == "in-progress"  # not held: the same
    store.complete(first, "https://i.imgur.com/a.jpg")
    assert job_document(job, waiting)["status"] == "in-progress"  # one finished


def test_an_idempotency_key_dies_with_its_job_at_job_ttl():
    now = [100.0]
    store = JobStore(job_ttl=10, max_jobs=100, clock=lambda: now[0])
    job = store.add(["https://example.com/a.jpg"], idempotency_key="k")
    store.fail(store.next_item(), "x")
    assert store.by_idempotency_key("k") is job
    now[0] += 10
    assert store.by_idempotency_key("k") is None  # before the sweep, as its job's 404
