"""Hostile origins and a strict Imgur: network guard, rate limits, OAuth, identical bytes, eviction."""

import logging
import time

import pytest

from imgurd import netguard, ratelimit
from tests.fakes import JPEG, PNG, Origin, jpeg_of_size, start_server


async def run_one(api, url):
    report = await api.wait(await api.submit([url]))
    return report["images"][0]


# --- network guard: driven with loopback spellings only


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "0x7f000001", "2130706433", "[::1]",
                                  "[::ffff:127.0.0.1]", "0.0.0.0", "127.0.0.2"])
async def test_guard_refuses_every_spelling_of_loopback(start_service, origin, host):
    api = start_service(allow_private_networks=False)
    origin.add("/a.jpg", JPEG)
    image = await run_one(api, "http://%s:%d/a.jpg" % (host, origin.port))
    assert image["status"] == "failed"
    assert image["error"].startswith("address not allowed: "), image
    assert "loopback" in image["error"] or "unspecified" in image["error"]
    assert origin.requests == 0  # nothing reached the origin, not even a connection attempt that got served


@pytest.fixture
def only_127_0_0_1_public(monkeypatch):
    """The guard treats 127.0.0.1 as a public address and every other loopback address as internal:
    so guarded paths (redirects, proxies, pools) can be driven entirely on loopback."""
    real = netguard.classify
    monkeypatch.setattr(netguard, "classify", lambda a, own=(): None if str(a) == "127.0.0.1" else real(a, own))


@pytest.fixture
def listen(io_loop):
    """``listen(fake, host)``: a fake's application listening on ``host`` (a loopback address), stopped
    after the test."""
    started = []

    def start(fake, host="127.0.0.1"):
        fake.server, fake.port = start_server(fake.application(), host=host)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


async def refused_as_internal(api, url):
    """``url`` fails at the guard, as 127.0.0.2 is internal with ``only_127_0_0_1_public``."""
    image = await run_one(api, url)
    assert image["error"] == "address not allowed: 127.0.0.2 (loopback; allow_private_networks is off)"


@pytest.mark.gen_test
async def test_guard_rechecks_every_redirect_hop(start_service, origin, only_127_0_0_1_public, listen):
    """With 127.0.0.1 treated as public, a redirect to 127.0.0.2 (treated as internal) is refused."""
    inner = listen(Origin(), host="127.0.0.2")
    inner.add("/secret.jpg", JPEG)
    api = start_service(allow_private_networks=False)
    origin.add("/direct.jpg", JPEG)
    assert (await run_one(api, origin.url("/direct.jpg")))["status"] == "complete"
    await refused_as_internal(api, origin.url("/redirect-to?url=" + inner.url("/secret.jpg", host="127.0.0.2")))
    assert inner.requests == 0 and origin.hits["/redirect-to"] == 1


@pytest.mark.gen_test
async def test_guard_refuses_this_hosts_own_addresses(start_service, origin, monkeypatch):
    """Were 127.0.0.1 a public address (the table is told so here), it would still be this host's own:
    refused, from the kernel's list of interface addresses read at start."""
    from imgurd import special_addresses

    real = special_addresses.classify
    monkeypatch.setattr(special_addresses, "classify", lambda ip: None if str(ip) == "127.0.0.1" else real(ip))
    api = start_service(allow_private_networks=False)
    origin.add("/metrics-like.jpg", JPEG)
    image = await run_one(api, origin.url("/metrics-like.jpg"))
    assert image["error"] == ("address not allowed: 127.0.0.1 (this host's own address; "
                              "allow_private_networks is off)"), image
    assert origin.requests == 0


@pytest.mark.gen_test
async def test_guard_is_off_when_private_networks_are_allowed(start_service, origin):
    api = start_service(allow_private_networks=True)
    origin.add("/a.jpg", JPEG)
    image = await run_one(api, "http://localhost:%d/a.jpg" % origin.port)
    assert image["status"] == "complete", image


# --- Imgur rate limits: one gate for the process


@pytest.mark.gen_test(timeout=30)
async def test_spent_post_budget_pauses_uploads_until_reset(start_service, origin, imgur, monkeypatch):
    monkeypatch.setattr(ratelimit, "RESET_MARGIN", 0.1)  # the fake's resets are rounded up already
    api = start_service(max_concurrency=4)
    imgur.limit_posts(2, window=1.0)
    urls = [origin.add("/r%d.jpg" % i, jpeg_of_size(600, i)) for i in range(5)]
    started = time.monotonic()
    report = await api.wait(await api.submit(urls[:1]))  # learns the budget: 1 left, reset in ~1 s
    assert report["uploaded"]["failed"] == []
    report = await api.wait(await api.submit(urls[1:]))
    assert report["uploaded"]["failed"] == [], report
    # one upload went at once, two after the reset, the last after the next one; none ran into a 429
    assert imgur.refused == 0
    assert imgur.requests == len(imgur.uploads) == 5
    times = sorted(t - started for t in imgur.request_times)
    assert times[2] >= 0.95 and times[4] >= 1.95, times  # 2 per 1 s window: never more
    assert api.service.gate.remaining()["post"] is not None


@pytest.mark.gen_test
async def test_reset_beyond_max_rate_limit_wait_fails_with_reason(start_service, origin, imgur):
    api = start_service(max_rate_limit_wait=5)
    imgur.rate_headers = {"X-RateLimit-UserLimit": "2000", "X-RateLimit-UserRemaining": "0",
                          "X-RateLimit-UserReset": str(int(time.time()) + 3000)}
    first = await run_one(api, origin.add("/1.jpg", JPEG))
    assert first["status"] == "complete"  # nothing known before this answer
    second = await run_one(api, origin.add("/2.png", PNG))
    assert second["error"].startswith("Imgur's hourly upload budget for this address is spent (200 uploads an hour); "
                                      "it refills in 50 min")
    assert second["error"].endswith("beyond max_rate_limit_wait (5 s)")
    assert imgur.requests == 1  # nothing was sent into the spent budget


@pytest.mark.gen_test(timeout=30)
async def test_429_pauses_every_upload_and_honours_retry_after(start_service, origin, imgur):
    api = start_service(max_concurrency=3, max_attempts=3, reuse_identical_uploads=False)
    imgur.fail_next(429, "Too Many Requests", headers={"Retry-After": "1"})
    # the first upload is refused at once; the other two are ready to upload 0.3 and 0.4 s later
    urls = [origin.add("/fast.jpg", JPEG), origin.url("/hang/0.3"), origin.url("/hang/0.4")]
    report = await api.wait(await api.submit(urls))
    assert report["uploaded"]["failed"] == [], report
    first, *others = imgur.request_times
    assert len(others) == 3  # the refused upload's retry and the two others
    assert all(t - first >= 0.95 for t in others), [t - first for t in others]


@pytest.mark.gen_test
async def test_429s_are_waits_not_failed_attempts(start_service, origin, imgur):
    api = start_service(max_attempts=2)
    imgur.fail_next(429, "Too Many Requests", headers={"Retry-After": "0"}, times=3)
    image = await run_one(api, origin.add("/a.jpg", JPEG))
    assert image["status"] == "complete", image  # three 429s, yet max_attempts=2 was not used up
    assert imgur.requests == 4


# --- OAuth


def oauth_settings(imgur):
    return dict(client_secret=imgur.client_secret, refresh_token=imgur.refresh_token)


@pytest.mark.gen_test(timeout=30)
async def test_bearer_token_is_shared_by_concurrent_uploads(start_service, origin, imgur, caplog):
    caplog.set_level(logging.DEBUG)
    api = start_service(max_concurrency=8, **oauth_settings(imgur))
    urls = [origin.add("/o%d.jpg" % i, jpeg_of_size(500, i)) for i in range(8)]
    report = await api.wait(await api.submit(urls))
    assert report["uploaded"]["failed"] == []
    assert imgur.token_requests == 1
    token = next(iter(imgur.valid_tokens))
    assert {u.auth for u in imgur.uploads} == {"Bearer " + token}
    # even at DEBUG, no secret and no access token reaches a log line
    for secret in (token, imgur.client_secret, imgur.refresh_token):
        assert secret not in caplog.text


@pytest.mark.gen_test(timeout=30)
async def test_expired_token_is_renewed_once_and_retried(start_service, origin, imgur):
    api = start_service(max_concurrency=4, **oauth_settings(imgur))
    assert (await run_one(api, origin.add("/first.jpg", JPEG)))["status"] == "complete"
    imgur.expire_tokens()
    urls = [origin.add("/e%d.jpg" % i, jpeg_of_size(500, i)) for i in range(4)]
    report = await api.wait(await api.submit(urls))
    assert report["uploaded"]["failed"] == [], report
    assert imgur.token_requests == 2  # one renewal for all four uploads that saw the 403


@pytest.mark.gen_test
async def test_token_renewed_before_it_expires(start_service, origin, imgur):
    imgur.token_lifetime = 1000  # renewed when less than 10 % of it is left: from 900 s on
    api = start_service(**oauth_settings(imgur))
    now = [5000.0]
    api.service.tokens.clock = lambda: now[0]
    assert (await run_one(api, origin.add("/1.jpg", JPEG)))["status"] == "complete"
    now[0] += 899
    assert (await run_one(api, origin.add("/2.png", PNG)))["status"] == "complete"
    assert imgur.token_requests == 1  # still well within its lifetime: reused
    now[0] += 1
    assert (await run_one(api, origin.add("/3.jpg", jpeg_of_size(500, 3))))["status"] == "complete"
    assert imgur.token_requests == 2  # renewed 100 s before it would expire
    assert imgur.requests == 3  # no upload was refused on the way


@pytest.mark.gen_test(timeout=30)
async def test_token_is_taken_after_the_wait_at_imgurs_budget_gate(start_service, origin, imgur):
    """An upload waiting at the gate (a 429 pause here) may outlast its token: the header is taken
    after the wait, so a token renewed meanwhile is the one sent, and no upload is refused for it."""
    from tornado import gen
    imgur.token_lifetime = 1000
    api = start_service(max_concurrency=2, **oauth_settings(imgur))
    now = [5000.0]
    api.service.tokens.clock = lambda: now[0]
    assert (await run_one(api, origin.add("/1.jpg", jpeg_of_size(500, 1))))["status"] == "complete"
    job = await api.submit([origin.url("/hang/1")])  # its download takes a second
    await gen.sleep(0.3)
    api.service.gate.pause_for(1.5, "a 429 pause")  # e.g. another upload's quiet 429, while it downloads
    await gen.sleep(1.0)  # downloaded, and waiting at the gate
    now[0] += 1000  # meanwhile the token's lifetime ran out ...
    imgur.expire_tokens()  # ... and Imgur no longer takes it
    assert (await api.wait(job))["images"][0]["status"] == "complete"
    assert imgur.requests == 2 and imgur.token_requests == 2  # renewed before the upload, none refused


@pytest.mark.gen_test
async def test_rejected_refresh_token_fails_urls_and_logs_error_once(start_service, origin, imgur, caplog):
    caplog.set_level(logging.DEBUG)
    imgur.reject_refresh = True
    api = start_service(max_concurrency=3, **oauth_settings(imgur))
    urls = [origin.add("/x%d.jpg" % i, jpeg_of_size(500, i)) for i in range(3)]
    report = await api.wait(await api.submit(urls))
    assert [i["error"] for i in report["images"]] == ["Imgur rejected the refresh token: Invalid refresh token"] * 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "refresh token" in errors[0].getMessage()
    assert imgur.token_requests == 1 and imgur.requests == 0
    text = caplog.text
    assert imgur.client_secret not in text and imgur.refresh_token not in text


# --- identical bytes


@pytest.mark.gen_test
async def test_identical_bytes_upload_once(start_service, origin, imgur):
    api = start_service(max_concurrency=4)
    imgur.latency = 0.1  # the copies are in flight at the same time
    urls = [origin.add("/same%d.jpg" % i, JPEG) for i in range(3)] + [origin.add("/other.png", PNG)]
    report = await api.wait(await api.submit(urls))
    links = [i["link"] for i in report["images"]]
    assert links[0] == links[1] == links[2] != links[3]
    assert len(imgur.uploads) == 2
    again = await run_one(api, origin.add("/later.jpg", JPEG))
    assert again["link"] == links[0] and len(imgur.uploads) == 2
    code, body, _ = await api.call("GET", "/v1/images")
    assert body["uploaded"] == [links[0], links[3]] or body["uploaded"] == [links[3], links[0]]


@pytest.mark.gen_test
async def test_identical_bytes_reuse_is_counted_only_when_a_link_was_reused(start_service, origin, imgur):
    from tests.test_operations import metric
    api = start_service(max_concurrency=4)
    imgur.latency = 0.1  # the copies wait for the first upload, which Imgur refuses
    imgur.fail_next(400, "File type invalid (1)")
    report = await api.wait(await api.submit([origin.add("/same%d.jpg" % i, JPEG) for i in range(2)]))
    assert [image["status"] for image in report["images"]] == ["failed", "failed"]
    _, text, _ = await api.call("GET", "/metrics")
    assert metric(text.decode(), "imgurd_identical_uploads_reused_total") == 0
    assert (await run_one(api, origin.add("/again.jpg", PNG)))["status"] == "complete"
    assert (await run_one(api, origin.add("/copy.png", PNG)))["status"] == "complete"
    _, text, _ = await api.call("GET", "/metrics")
    assert metric(text.decode(), "imgurd_identical_uploads_reused_total") == 1


@pytest.mark.gen_test
async def test_identical_bytes_reuse_can_be_turned_off(start_service, origin, imgur):
    api = start_service(reuse_identical_uploads=False)
    urls = [origin.add("/same%d.jpg" % i, JPEG) for i in range(2)]
    report = await api.wait(await api.submit(urls))
    assert len(imgur.uploads) == 2 and report["images"][0]["link"] != report["images"][1]["link"]


# --- memory: eviction and the backlog


@pytest.mark.gen_test
async def test_finished_jobs_expire_after_job_ttl(start_service, origin):
    api = start_service(job_ttl=60)
    now = [1000.0]
    api.service.store.clock = lambda: now[0]
    job_id = await api.submit([origin.url("/status/404")], headers={"Idempotency-Key": "k1"})
    await api.wait(job_id)
    now[0] += 59
    api.service.store.evict()
    assert (await api.call("GET", "/v1/images/upload/" + job_id))[0] == 200
    now[0] += 1
    assert api.service.store.evict() == 1
    code, body, _ = await api.call("GET", "/v1/images/upload/" + job_id)
    assert (code, body) == (404, {"error": "no job with id %s (unknown, malformed or expired)" % job_id})
    assert api.service.store.by_idempotency_key("k1") is None and not api.service.store.jobs


@pytest.mark.gen_test
async def test_oldest_finished_jobs_evicted_beyond_max_jobs(start_service, origin):
    api = start_service(max_jobs=2)
    ids = []
    for i in range(4):
        ids.append(await api.submit([origin.url("/status/404?%d" % i)]))
        await api.wait(ids[-1])
    assert [(await api.call("GET", "/v1/images/upload/" + j))[0] for j in ids] == [404, 404, 200, 200]


def test_eviction_is_bounded_per_call():
    from imgurd.jobs import JobStore

    now = [0.0]
    store = JobStore(job_ttl=10, max_jobs=100000, clock=lambda: now[0])
    for _ in range(2500):
        store.add(["https://example.com/a.jpg"])
        store.fail(store.next_item(), "x")
    now[0] = 100.0
    assert store.evict(limit=1000) == 1000 and len(store.jobs) == 1500
    assert store.evict(limit=1000) == 1000 and store.evict(limit=1000) == 500 and not store.jobs


# --- hostile answers and environments


@pytest.mark.gen_test
async def test_environment_proxy_cannot_carry_downloads_past_the_guard(start_service, origin, monkeypatch,
                                                                       only_127_0_0_1_public, listen):
    """http_proxy pointing at a (loopback) proxy: downloads must not go through it."""
    proxy = listen(Origin())  # would answer any proxied GET; must see none
    for name in ("http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url(""))
    api = start_service(allow_private_networks=False)
    await refused_as_internal(api, "http://127.0.0.2:%d/secret.jpg" % origin.port)
    assert proxy.requests == 0


@pytest.mark.gen_test
async def test_downloads_never_reuse_connections_opened_to_imgur(start_service, origin, only_127_0_0_1_public,
                                                                 listen):
    """Imgur on 127.0.0.2 (internal to the guard here): after an upload, a download from it is refused."""
    from tests.fakes import FakeImgur

    internal = listen(FakeImgur(), host="127.0.0.2")
    api = start_service(allow_private_networks=False, client_id=internal.client_id,
                        api_url="http://127.0.0.2:%d" % internal.port)
    assert (await run_one(api, origin.add("/a.jpg", JPEG)))["status"] == "complete"
    await refused_as_internal(api, "http://127.0.0.2:%d/3/image" % internal.port)
    assert internal.requests == 1


@pytest.mark.gen_test
async def test_non_ascii_urls_are_fetched_as_utf8(start_service, origin, imgur):
    api = start_service()
    origin.add("/caf%C3%A9.jpg", JPEG)
    url = origin.url("/caf\u00e9.jpg")
    image = await run_one(api, url)
    assert image["status"] == "complete" and image["url"] == url, image


@pytest.mark.gen_test
async def test_odd_retry_after_from_origin_is_not_an_internal_error(start_service, origin):
    api = start_service(max_attempts=2)
    origin.add("/odd.jpg", JPEG)
    origin.fail_first("/odd.jpg", 503)
    image = await run_one(api, origin.url("/odd.jpg?retry_after=%C2%B2"))
    assert image["status"] == "complete", image


@pytest.mark.gen_test
async def test_imgur_retry_after_beyond_max_rate_limit_wait_fails_at_once(start_service, origin, imgur):
    api = start_service(max_rate_limit_wait=5, max_attempts=3)
    imgur.fail_next(429, "Too Many Requests", headers={"Retry-After": "100000"})
    started = time.monotonic()
    image = await run_one(api, origin.add("/a.jpg", JPEG))
    assert time.monotonic() - started < 3
    assert image["error"].startswith("Imgur answered 429: Too Many Requests; Imgur asked to retry after 100000 s")
    assert image["error"].endswith("beyond max_rate_limit_wait (5 s)")
    imgur.fail_next(503, "Over capacity", headers={"Retry-After": "100000"})
    image = await run_one(api, origin.add("/b.png", PNG))
    assert "beyond max_rate_limit_wait" in image["error"]


@pytest.mark.gen_test
async def test_infinite_rate_limit_reset_is_not_an_internal_error(start_service, origin, imgur):
    api = start_service()
    imgur.rate_headers = {"X-Post-Rate-Limit-Remaining": "5", "X-Post-Rate-Limit-Reset": "inf",
                          "X-RateLimit-UserReset": "nan"}
    for name in ("/1.jpg", "/2.png"):
        image = await run_one(api, origin.add(name, JPEG if name.endswith("jpg") else PNG))
        assert image["status"] == "complete", image


def test_finished_job_reports_are_cached_bounded_and_dropped_with_the_job():
    import json as json_module

    from imgurd.jobs import JobStore
    from imgurd.reports import FINISHED_JSON_CACHE, Reports

    now = [0.0]
    store = JobStore(job_ttl=10, max_jobs=100000, clock=lambda: now[0])
    reports = Reports(store)
    running = store.add(["https://example.com/a.jpg", "https://example.com/b.jpg"])
    first = store.next_item()
    store.start(first)
    assert json_module.loads(reports.job(running))["status"] == "in-progress"
    store.complete(first, "https://i.imgur.com/a.jpg")
    assert json_module.loads(reports.job(running))["uploaded"]["complete"] == ["https://i.imgur.com/a.jpg"]
    store.fail(store.next_item(), "origin answered HTTP 404")
    report = reports.job(running)
    assert json_module.loads(report)["status"] == "complete"
    assert reports.job(running) is report  # encoded once
    jobs = [store.add(["https://example.com/%d.jpg" % i]) for i in range(FINISHED_JSON_CACHE + 8)]
    for job in jobs:
        store.fail(store.next_item(), "x")
        reports.job(job)
    assert len(reports._finished) == FINISHED_JSON_CACHE
    now[0] = 100.0
    store.evict(limit=10 ** 6)
    assert not reports._finished and not store.jobs and reports._finished_bytes == 0


def test_finished_job_report_cache_is_bounded_in_bytes(monkeypatch):
    from imgurd import jobs
    from imgurd import reports as reports_module

    monkeypatch.setattr(reports_module, "FINISHED_JSON_BYTES", 10_000)
    store = jobs.JobStore(job_ttl=10, max_jobs=100000)
    reports = reports_module.Reports(store)
    for i in range(20):  # reports of about 2 KB each: only the last few fit in 10 KB
        job = store.add(["https://example.com/%s/%d.jpg" % ("\\" * 400, i)])
        store.fail(store.next_item(), "x")
        reports.job(job)
    assert 0 < reports._finished_bytes <= 10_000
    assert reports._finished_bytes == sum(len(r) for r in reports._finished.values())
    assert len(reports._finished) < 10
