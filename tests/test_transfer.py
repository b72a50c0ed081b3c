"""The transfer pipeline against fault-injecting loopback fakes (real pycurl, real HTTP)."""

import logging
import time

import pytest
from tornado import gen

from tests.fakes import GIF, JPEG, PNG, jpeg_of_size


async def run_one(api, url):
    report = await api.wait(await api.submit([url]))
    return report["images"][0]


@pytest.mark.gen_test(timeout=30)
async def test_large_image_arrives_byte_for_byte(start_service, origin, imgur):
    api = start_service()
    data = jpeg_of_size(3 * 1024 * 1024 + 17)
    image = await run_one(api, origin.add("/big.jpg", data))
    assert image["status"] == "complete", image
    assert len(imgur.uploads) == 1 and imgur.uploads[0].data == data
    assert imgur.uploads[0].content_type == "image/jpeg"


@pytest.mark.gen_test
async def test_declared_length_over_cap_is_refused_early(start_service, origin):
    api = start_service(max_image_bytes=50_000)
    started = time.monotonic()
    image = await run_one(api, origin.url("/huge"))
    assert image["error"] == "download exceeded 50000 bytes"
    assert time.monotonic() - started < 5


@pytest.mark.gen_test(timeout=30)
async def test_endless_body_is_cut_at_the_cap(start_service, origin, imgur):
    api = start_service(max_image_bytes=1_000_000)
    image = await run_one(api, origin.url("/endless"))
    assert image["error"] == "download exceeded 1000000 bytes"
    assert not imgur.uploads


@pytest.mark.gen_test(timeout=30)
async def test_endless_body_of_a_redirect_is_cut_at_the_cap_too(start_service, origin, imgur):
    """curl reads a redirect's body and throws it away (to keep the connection), past WRITEFUNCTION and
    MAXFILESIZE: an endless one was read for the whole request_timeout, gigabytes on loopback."""
    import urllib.parse
    api = start_service(max_image_bytes=100_000, request_timeout=20.0, max_attempts=1)
    target = origin.add("/after.jpg", JPEG)
    started = time.monotonic()
    image = await run_one(api, origin.url("/redirect-endless?url=" + urllib.parse.quote(target, safe="")))
    assert image["error"] == "download exceeded 100000 bytes"
    assert time.monotonic() - started < 5 and not imgur.uploads


@pytest.mark.gen_test(timeout=30)
async def test_an_error_page_larger_than_the_cap_is_named_by_its_status(start_service, origin, imgur):
    """curl refuses the body by its size before imgurd sees the answer; the status line came first,
    and "download exceeded" would hide that the origin said 404 (or 503, worth another try)."""
    api = start_service(max_image_bytes=50_000, max_attempts=2)
    image = await run_one(api, origin.url("/status-page/404/200000"))
    assert image["error"] == "origin answered HTTP 404"
    image = await run_one(api, origin.url("/status-page/503/200000"))
    assert image["error"].startswith("origin answered HTTP 503"), image
    assert origin.hits["/status-page/503/200000"] == 2  # retried, as any 503
    image = await run_one(api, origin.url("/huge"))  # a success status too large is still "exceeded"
    assert image["error"] == "download exceeded 50000 bytes"
    assert not imgur.uploads


@pytest.mark.gen_test
async def test_image_exactly_at_the_cap_passes(start_service, origin, imgur):
    api = start_service(max_image_bytes=10_000)
    image = await run_one(api, origin.add("/exact.jpg", jpeg_of_size(10_000)))
    assert image["status"] == "complete", image


@pytest.mark.gen_test(timeout=30)
async def test_stalled_body_is_cut(start_service, origin):
    api = start_service(max_attempts=1)  # stall_time is 2 s in these tests (10 s by default)
    started = time.monotonic()
    image = await run_one(api, origin.url("/slow/20"))
    assert image["error"].endswith("stalled (under 1 KiB/s for 2 s)"), image  # the limit in force
    assert time.monotonic() - started < 10


@pytest.mark.gen_test
async def test_request_timeout(start_service, origin):
    api = start_service(request_timeout=0.5, max_attempts=1)
    image = await run_one(api, origin.url("/hang/3"))
    assert image["error"] == "timed out after 0.5 s talking to 127.0.0.1"


@pytest.mark.gen_test
async def test_connection_refused_is_retried_then_reported(start_service):
    api = start_service(max_attempts=3)
    image = await run_one(api, "http://127.0.0.1:9/x.jpg")
    assert image["error"] == "could not connect to 127.0.0.1 (after 3 attempts)"


@pytest.mark.gen_test
async def test_redirects_followed_up_to_five(start_service, origin, imgur):
    api = start_service()
    origin.add("/final.png", PNG, "image/png")
    image = await run_one(api, origin.url("/redirect/5/final.png"))
    assert image["status"] == "complete", image
    assert imgur.uploads[0].data == PNG
    image = await run_one(api, origin.url("/redirect/6/final.png"))
    assert image["error"] == "more than 5 redirects"


@pytest.mark.gen_test
async def test_redirect_to_other_scheme_refused(start_service, origin):
    api = start_service()
    image = await run_one(api, origin.url("/redirect-to?url=ftp://127.0.0.1/x.jpg"))
    assert image["error"] == "redirected to a URL that is not http(s)"
    image = await run_one(api, origin.url("/redirect-to?url=file:///etc/passwd"))
    assert image["error"] == "redirected to a URL that is not http(s)"


@pytest.mark.gen_test
async def test_origin_5xx_retried_4xx_not(start_service, origin):
    api = start_service(max_attempts=3)
    origin.add("/flaky.gif", GIF, "image/gif")
    origin.fail_first("/flaky.gif", 503, 500)
    image = await run_one(api, origin.url("/flaky.gif"))
    assert image["status"] == "complete" and origin.hits["/flaky.gif"] == 3
    image = await run_one(api, origin.url("/status/500"))
    assert image["error"] == "origin answered HTTP 500 (after 3 attempts)"
    assert origin.hits["/status/500"] == 3
    image = await run_one(api, origin.url("/status/403"))
    assert image["error"] == "origin answered HTTP 403" and origin.hits["/status/403"] == 1


@pytest.mark.gen_test
async def test_origin_retry_after_is_honoured(start_service, origin):
    api = start_service(max_attempts=2)
    origin.add("/later.jpg", JPEG)
    origin.fail_first("/later.jpg", 503)
    started = time.monotonic()
    image = await run_one(api, origin.url("/later.jpg?retry_after=1"))
    assert image["status"] == "complete"
    assert time.monotonic() - started >= 1.0


@pytest.mark.gen_test
async def test_imgur_error_message_is_reported_without_retry(start_service, origin, imgur):
    api = start_service(max_attempts=3)
    imgur.fail_next(400, {"code": 1003, "message": "File type invalid (1)", "type": "ImgurException",
                          "exception": []})
    image = await run_one(api, origin.add("/a.jpg", JPEG))
    assert image["error"] == "Imgur answered 400: File type invalid (1)"
    assert imgur.requests == 1


@pytest.mark.gen_test
async def test_imgur_5xx_and_html_edge_answers_are_retried(start_service, origin, imgur):
    api = start_service(max_attempts=3)
    imgur.fail_next(502, html=True)
    imgur.fail_next(500, "Internal error")
    image = await run_one(api, origin.add("/a.jpg", JPEG))
    assert image["status"] == "complete" and imgur.requests == 3
    imgur.fail_next(503, html=True, times=3)
    image = await run_one(api, origin.add("/b.jpg", PNG))
    assert image["error"].startswith("Imgur answered 503: ") and image["error"].endswith("(after 3 attempts)")


@pytest.mark.gen_test
async def test_imgur_bad_client_id(start_service, origin, imgur):
    api = start_service(client_id="wrong")
    image = await run_one(api, origin.add("/a.jpg", JPEG))
    assert image["error"] == "Imgur answered 403: Invalid client_id"


@pytest.mark.gen_test(timeout=30)
async def test_semaphore_caps_transfers_in_flight(start_service, origin, imgur):
    api = start_service(max_concurrency=3)
    imgur.latency = 0.05
    origin.latency = 0.05
    urls = [origin.add("/c%d.jpg" % i, jpeg_of_size(1000, i)) for i in range(12)]
    job_id = await api.submit(urls)
    peak = 0
    while (await api.job(job_id))["status"] != "complete":  # downloads and uploads both count
        peak = max(peak, api.service.store.in_flight)
        busy = sum(1 for i in (await api.job(job_id))["images"] if i["status"] == "in-progress")
        assert busy <= 3
        await gen.sleep(0.01)
    assert len(imgur.uploads) == 12
    assert peak == 3 and 2 <= imgur.max_in_flight <= 3


@pytest.mark.gen_test(timeout=30)
async def test_http_client_never_queues_requests(start_service, origin):
    """tornado's default is 10 curl handles; with more slots than that, every slot still downloads at once."""
    api = start_service(max_concurrency=24, max_per_host=24)  # one loopback origin: as many per host
    origin.latency = 0.5
    urls = [origin.add("/q%d.jpg" % i, jpeg_of_size(600, i)) for i in range(24)]
    report = await api.wait(await api.submit(urls))
    assert report["uploaded"]["failed"] == []
    assert origin.max_in_flight == 24


@pytest.mark.gen_test(timeout=60)
async def test_small_job_is_not_stuck_behind_a_big_one(start_service, origin, imgur):
    api = start_service(max_concurrency=2)
    origin.latency = 0.02
    big = [origin.add("/big/%d.jpg" % i, jpeg_of_size(500, i)) for i in range(200)]
    big_id = await api.submit(big)
    while api.service.store.in_flight < 2:  # both slots taken by the big job
        await gen.sleep(0.005)
    small_id = await api.submit([origin.add("/small.jpg", jpeg_of_size(500, 9999))])
    await api.wait(small_id)
    big_report = await api.job(big_id)
    done = sum(1 for i in big_report["images"] if i["status"] in ("complete", "failed"))
    assert big_report["status"] == "in-progress" and done < 40, done


@pytest.mark.gen_test
async def test_failures_are_logged_in_the_spec_format(start_service, origin, caplog):
    api = start_service()
    caplog.set_level(logging.WARNING)
    job_id = await api.submit([origin.url("/status/404")])
    await api.wait(job_id)
    expected = "upload failed job=%s url=%s reason=origin answered HTTP 404" % (job_id, origin.url("/status/404"))
    assert expected in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("answer, reason", [
    (b"\x00\x01garbage, not HTTP\r\n\r\n", "127.0.0.1 did not answer in HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nxx", "connection to 127.0.0.1 failed: Invalid Content-Length: value"),
])
async def test_an_origin_that_does_not_speak_http_is_named_for_what_it_did(start_service, answer, reason):
    """Not "redirected to a URL that is not http(s)" (curl's code for HTTP/0.9 is that of a bad scheme),
    nor the last word of curl's sentence ("value")."""
    from tornado.netutil import bind_sockets
    from tornado.tcpserver import TCPServer

    class Raw(TCPServer):
        async def handle_stream(self, stream, address):
            await stream.read_until(b"\r\n\r\n")
            await stream.write(answer)
            stream.close()

    sockets = bind_sockets(0, "127.0.0.1")
    server = Raw()
    server.add_sockets(sockets)
    api = start_service(max_attempts=1)
    try:
        image = await run_one(api, "http://127.0.0.1:%d/x.jpg" % sockets[0].getsockname()[1])
    finally:
        server.stop()
    assert image["error"] == reason
