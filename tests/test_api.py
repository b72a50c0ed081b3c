"""The REST API over real HTTP on loopback: shapes, validation, limits, errors."""

import json
import re
import uuid

import pytest

from tests.fakes import HTML, JPEG, PNG

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.gen_test(timeout=30)
async def test_job_lifecycle_and_report(start_service, origin, imgur):
    api = start_service()
    jpg = origin.add("/a.jpg", JPEG)
    png = origin.add("/b.png", PNG, "image/png")
    html = origin.add("/page.html", HTML, "image/jpeg")  # a lying Content-Type is not trusted
    missing = origin.url("/missing.jpg")
    code, body, headers = await api.call("POST", "/v1/images/upload",
                                         {"urls": [jpg, png, jpg.upper().replace("/A.JPG", "/a.jpg") + "#x",
                                                   missing, html], "note": "extra fields are ignored"})
    assert code == 202
    assert headers["Content-Type"] == "application/json; charset=UTF-8"
    job_id = body["jobId"]
    assert UUID.match(job_id)
    assert headers["Location"] == "/v1/images/upload/" + job_id

    report = await api.wait(job_id)
    assert report["id"] == job_id and report["status"] == "complete"
    assert STAMP.match(report["created"]) and STAMP.match(report["finished"])
    assert report["finished"] >= report["created"]
    assert [i["url"] for i in report["images"]] == [jpg, png, missing, html]  # duplicate stripped
    by_url = {i["url"]: i for i in report["images"]}
    assert by_url[jpg]["status"] == "complete" and by_url[jpg]["error"] is None
    assert by_url[png]["link"].startswith("https://i.imgur.com/")
    assert by_url[missing] == {"url": missing, "status": "failed", "link": None, "error": "origin answered HTTP 404"}
    assert by_url[html]["error"] == "not an image (content looks like text/html)"
    assert report["uploaded"] == {"pending": [], "complete": [by_url[jpg]["link"], by_url[png]["link"]],
                                  "failed": [missing, html]}
    # the bytes Imgur received are the origin's bytes, as binary multipart with type=file
    assert [u.data for u in imgur.uploads] == [JPEG, PNG] or [u.data for u in imgur.uploads] == [PNG, JPEG]
    assert {u.filename for u in imgur.uploads} == {"a.jpg", "b.png"}
    assert all(u.type_field == "file" and u.auth == "Client-ID " + imgur.client_id for u in imgur.uploads)
    assert origin.user_agents[0].startswith("imgurd/")

    code, body, _ = await api.call("GET", "/v1/images")
    assert code == 200 and sorted(body["uploaded"]) == sorted([by_url[jpg]["link"], by_url[png]["link"]])


@pytest.mark.gen_test
async def test_job_status_moves_from_pending_to_in_progress(start_service, origin):
    api = start_service(max_concurrency=1)
    slow = origin.url("/hang/1")
    first = await api.submit([slow])
    second = await api.submit([origin.add("/x.jpg", JPEG)])
    report = await api.job(second)
    assert report["status"] == "pending" and report["finished"] is None
    assert report["uploaded"]["pending"] == [origin.url("/x.jpg")]
    assert report["images"][0]["status"] == "pending"
    report = await api.job(first)
    assert report["status"] == "in-progress" and report["images"][0]["status"] == "in-progress"
    assert (await api.wait(second))["status"] == "complete"


@pytest.mark.gen_test
@pytest.mark.parametrize("raw, message", [
    (b"not json", "request body is not valid JSON"),
    (b"", "request body is not valid JSON"),
    (b"\xff\xfe", "request body is not valid JSON"),
    (b"[1, 2]", "request body must be a JSON object"),
    (b"[" * 200000, "request body is not valid JSON"),
    (b'{"urls": ' + b"[" * 100000 + b"]" * 100000 + b"}", "request body is not valid JSON"),
    (b'{"urls": ["http://example.com/\\ud800.jpg"]}', "urls[0] is not an http(s) URL"),
    (b'{"urls": ["https://x.com/a.jpg", "http://<script>/a.jpg"]}', "urls[1] is not an http(s) URL: 'http://<script>/a.jpg'"),
    (b'{"urls": ["http://256.1.1.1/a.jpg"]}', "urls[0] is not an http(s) URL"),
    (b'{"urls": ["http://x.com:0/a.jpg"]}', "urls[0] is not an http(s) URL"),
    (b'{"urls": ["https://x.com/a.jpg"], "n": ' + b"9" * 5000 + b"}",
     "request body is not valid JSON: a number in it has more than 4300 digits"),
    (b'{"url": ["https://x.com/a.jpg"]}', "urls is missing"),
    (b'{"urls": "https://x.com/a.jpg"}', "urls must be an array"),
    (b'{"urls": []}', "urls must not be empty"),
    (b'{"urls": ["https://x.com/a.jpg", 7]}', "urls[1] is not a string: 7"),
    (b'{"urls": ["https://x.com/1", "https://x.com/2", "https://x.com/3", "ftp://x"]}',
     "urls[3] is not an http(s) URL: 'ftp://x'"),
])
async def test_bad_requests_are_400_and_queue_nothing(start_service, raw, message):
    api = start_service()
    code, body, headers = await api.call("POST", "/v1/images/upload", raw=raw)
    assert code == 400, body
    assert message in body["error"]
    assert headers["Content-Type"] == "application/json; charset=UTF-8"
    assert api.service.store.backlog == 0 and not api.service.store.jobs


@pytest.mark.gen_test
async def test_too_many_urls_is_413(start_service):
    api = start_service(max_urls_per_job=3)
    expected = {"error": "urls holds 4 entries; at most 3 per job (max_urls_per_job)",
                "max_urls_per_job": 3}  # the limit for programs: no client parses the message
    code, body, _ = await api.call("POST", "/v1/images/upload", {"urls": ["https://x.com/%d" % i for i in range(4)]})
    assert (code, body) == (413, expected)
    # duplicates count before de-duplication
    code, body, _ = await api.call("POST", "/v1/images/upload", {"urls": ["https://x.com/a"] * 4})
    assert (code, body) == (413, expected)
    assert not api.service.store.jobs


@pytest.mark.gen_test
async def test_body_too_large_is_413_json(start_service):
    api = start_service(max_body_bytes=200)
    urls = ["https://example.com/%040d.jpg" % i for i in range(10)]
    code, body, _ = await api.call("POST", "/v1/images/upload", {"urls": urls})
    size = len(json.dumps({"urls": urls}))
    assert (code, body) == (413, {"error": "request body is %d bytes; at most 200 (max_body_bytes)" % size,
                                  "max_body_bytes": 200})
    assert not api.service.store.jobs
    # the server is still there
    code, body, _ = await api.call("GET", "/healthz")
    assert (code, body) == (200, {"status": "ok"})


@pytest.mark.gen_test
async def test_chunked_body_too_large_is_413(start_service):
    api = start_service(max_body_bytes=200)
    chunks = iter([b'{"urls": ["https://example.com/' + b"a" * 300 + b'"]}'])

    async def producer(write):
        for chunk in chunks:
            await write(chunk)

    from tornado.httpclient import HTTPRequest

    response = await api.http.fetch(HTTPRequest(api.base + "/v1/images/upload", method="POST",
                                                body_producer=producer), raise_error=False)
    assert response.code == 413
    assert json.loads(response.body) == {"error": "request body is larger than 200 bytes (max_body_bytes)",
                                         "max_body_bytes": 200}
    assert (await api.call("GET", "/healthz"))[:2] == (200, {"status": "ok"})


def test_endless_chunked_body_gets_a_json_413_with_curl(start_service, io_loop):
    """A chunked body that never ends is answered 413 as soon as it passes the limit."""
    import subprocess
    import threading

    api = start_service(max_body_bytes=200)
    result = {}

    def run_curl():
        # 5 MB of body through a pipe, chunked (no Content-Length): far past max_body_bytes + 1 MiB
        feed = subprocess.Popen(["head", "-c", "5000000", "/dev/zero"], stdout=subprocess.PIPE)
        result["out"] = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-H", "Transfer-Encoding: chunked", "-H", "Expect:",
             "--data-binary", "@-", "-w", "\n%{http_code}", api.base + "/v1/images/upload"],
            stdin=feed.stdout, capture_output=True, text=True)
        feed.wait()

    thread = threading.Thread(target=run_curl)
    thread.start()

    async def wait():
        from tornado import gen

        while thread.is_alive():
            await gen.sleep(0.05)

    io_loop.run_sync(wait, timeout=20)
    out = result["out"].stdout
    assert out.rstrip().endswith("413"), (out, result["out"].stderr)
    assert '"error":"request body is larger than 200 bytes (max_body_bytes)"' in out
    assert not api.service.store.jobs


@pytest.mark.gen_test
async def test_full_backlog_is_503_with_retry_after_and_nothing_partial(start_service, origin):
    api = start_service(max_queued_urls=5, max_concurrency=1)
    first = await api.submit([origin.url("/hang/30?%d" % i) for i in range(3)])  # none finishes meanwhile
    code, body, headers = await api.call("POST", "/v1/images/upload",
                                         {"urls": ["http://127.0.0.1:9/x%d.jpg" % i for i in range(3)]})
    assert (code, body) == (503, {"error": "backlog full: 3 URLs queued, this job adds 3, at most 5 "
                                           "(max_queued_urls); retry later",
                                  "max_queued_urls": 5, "queued_urls": 3})
    assert headers["Retry-After"] == "5"
    assert list(api.service.store.jobs) == [first]
    assert api.service.store.backlog == 3
    # a job that alone is more than max_queued_urls would never fit: the answer says so
    code, body, _ = await api.call("POST", "/v1/images/upload", {"urls": ["http://127.0.0.1:9/y%d.jpg" % i
                                                                           for i in range(6)]})
    assert code == 503 and body["error"].endswith("(max_queued_urls); split it: it alone is more than that")


@pytest.mark.gen_test
async def test_unknown_jobs_routes_and_methods_are_json(start_service):
    api = start_service()
    job = str(uuid.uuid4())
    for path, error in (("/v1/images/upload/" + job, "no job with id %s (unknown, malformed or expired)" % job),
                        ("/v1/images/upload/not-a-uuid", "no job with id not-a-uuid (unknown, malformed or expired)"),
                        ("/v1/images/upload/%ff", "no job with id \ufffd (unknown, malformed or expired)"),  # not UTF-8
                        ("/nope", "no such resource: /nope"), ("/", "no such resource: /")):
        code, body, headers = await api.call("GET", path)
        assert (code, body) == (404, {"error": error}), path
        assert headers["Content-Type"] == "application/json; charset=UTF-8"
    code, body, headers = await api.call("DELETE", "/v1/images")
    assert (code, body) == (405, {"error": "method DELETE is not allowed on /v1/images"})
    assert headers["Allow"] == "GET, HEAD"  # RFC 9110: a 405 names the methods that are allowed
    code, body, headers = await api.call("GET", "/v1/images/upload")
    assert (code, body) == (405, {"error": "method GET is not allowed on /v1/images/upload"})
    assert headers["Allow"] == "POST"
    for method, path, allowed in (("PATCH", "/healthz", "GET, HEAD"), ("OPTIONS", "/v1/images/upload/x", "GET, HEAD"),
                                  ("PUT", "/metrics", "GET, HEAD"), ("HEAD", "/v1/images/upload", "POST")):
        code, body, headers = await api.call(method, path, raw=b"{}" if method in ("PUT", "PATCH") else None)
        assert code == 405 and headers["Allow"] == allowed, (method, path)


@pytest.mark.gen_test
async def test_images_paging(start_service):
    api = start_service()
    api.service.store.links.extend("https://i.imgur.com/%d.jpg" % i for i in range(10))
    code, body, _ = await api.call("GET", "/v1/images?offset=2&limit=3")
    assert body == {"uploaded": ["https://i.imgur.com/%d.jpg" % i for i in (2, 3, 4)], "total": 10}
    code, body, _ = await api.call("GET", "/v1/images?offset=8")
    assert body == {"uploaded": ["https://i.imgur.com/8.jpg", "https://i.imgur.com/9.jpg"], "total": 10}
    code, body, _ = await api.call("GET", "/v1/images?limit=0")
    assert body == {"uploaded": [], "total": 10}
    code, body, _ = await api.call("GET", "/v1/images?offset=50")
    assert body == {"uploaded": [], "total": 10}
    # any non-negative integer is accepted, however long (the OpenAPI document declares no maximum)
    for query, expected in (("offset=" + "9" * 5000, []), ("limit=" + "9" * 19, list(range(10))),
                            ("offset=0000000000000000000009&limit=99999999999999999999999999", [9])):
        code, body, _ = await api.call("GET", "/v1/images?" + query)
        assert code == 200 and body == {"uploaded": ["https://i.imgur.com/%d.jpg" % i for i in expected],
                                        "total": 10}, query
    for query, error in (("offset=-1", "offset must be a non-negative integer, not '-1'"),
                         ("limit=abc", "limit must be a non-negative integer, not 'abc'"),
                         ("limit=1.5", "limit must be a non-negative integer, not '1.5'"),
                         ("offset=", "offset must be a non-negative integer, not ''"),
                         ("limit=%D9%A3", "limit must be a non-negative integer, not '\u0663'"),
                         ("offset=+1", "offset must be a non-negative integer, not ' 1'"),
                         ("offset=1&offset=2", "offset is given 2 times; give it once")):
        code, body, _ = await api.call("GET", "/v1/images?" + query)
        assert (code, body) == (400, {"error": error}), query


@pytest.mark.gen_test
async def test_post_returns_before_any_download(start_service, origin):
    api = start_service()
    job_id = await api.submit([origin.url("/hang/0.5")])
    assert origin.requests == 0  # answered before the transfer started
    assert (await api.wait(job_id))["status"] == "complete"


@pytest.mark.gen_test
async def test_no_new_jobs_once_shutdown_begins(start_service):
    api = start_service()
    api.service.stopping = True
    code, body, headers = await api.call("POST", "/v1/images/upload", {"urls": ["http://127.0.0.1:9/a.jpg"]})
    assert (code, body) == (503, {"error": "imgurd is shutting down; submit to another instance or retry later"})
    assert headers["Connection"] == "close" and headers["Retry-After"] == "5"
    assert not api.service.store.jobs


@pytest.mark.gen_test
async def test_token_asked_before_any_v1_answer(start_service):
    api = start_service(api_token="t0k")
    for path in ("/v1/nope", "/v1/images/", "/v1/images/upload/"):
        code, body, _ = await api.call("GET", path)
        assert (code, body) == (401, {"error": "missing or wrong bearer token (Authorization: Bearer <api_token>)"})
        code, body, _ = await api.call("GET", path, headers={"Authorization": "Bearer t0k"})
        assert (code, body) == (404, {"error": "no such resource: " + path})
    assert (await api.call("GET", "/nope"))[:2] == (404, {"error": "no such resource: /nope"})


@pytest.mark.gen_test
async def test_head_healthz(start_service):
    api = start_service()
    code, body, _ = await api.call("HEAD", "/healthz")
    assert code == 200


@pytest.mark.gen_test
async def test_long_listing_matches_the_links_across_cached_blocks(start_service):
    api = start_service()
    links = ["https://i.imgur.com/%07d.jpg" % i for i in range(5000)]
    store = api.service.store
    for link in links[:4500]:  # as uploads would: blocks of encoded JSON are made as they fill up
        store.add(["https://x.com/a"])
        store.complete(store.next_item(), link)
    api.service.store.links.extend(links[4500:])  # and a tail not yet encoded
    code, body, headers = await api.call("GET", "/v1/images")
    assert code == 200 and body == {"uploaded": links, "total": 5000}
    for offset, limit in ((0, 2048), (1, 4096), (2047, 3), (2048, 2048), (4000, 2000), (100, 4800)):
        code, body, _ = await api.call("GET", "/v1/images?offset=%d&limit=%d" % (offset, limit))
        assert body == {"uploaded": links[offset:offset + limit], "total": 5000}, (offset, limit)
    # HEAD (RFC 9110: wherever GET): the same headers, the written-out listing's length, and no body
    import socket

    from tornado.iostream import IOStream
    length = len(json.dumps({"uploaded": links, "total": 5000}, separators=(",", ":")))
    for path, expected in (("/v1/images", length), ("/healthz", len('{"status":"ok"}'))):
        stream = IOStream(socket.create_connection(("127.0.0.1", api.port)))
        await stream.write(b"HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        answer = await stream.read_until_close()
        head, _, rest = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and rest == b"", answer[:200]
        assert b"\r\nContent-Length: %d" % expected in head, head


@pytest.mark.gen_test
async def test_a_non_ascii_digit_content_length_is_not_a_server_error(start_service):
    import socket

    from tornado.iostream import IOStream

    api = start_service()
    stream = IOStream(socket.create_connection(("127.0.0.1", api.port)))
    await stream.write("POST /v1/images/upload HTTP/1.1\r\nHost: x\r\nContent-Length: \u00b2\r\n"
                       "Connection: close\r\n\r\n".encode("utf-8"))
    answer = await stream.read_until_close()
    assert not answer.startswith(b"HTTP/1.1 5"), answer[:80]
