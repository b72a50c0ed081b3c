"""Holding under hostile load (SPEC 3): retained bytes, connections, descriptors, tarpits, slots."""

import asyncio
import http.client
import json
import logging
import os
import re
import resource
import socket
import sys
import time
import tracemalloc

import pytest
from tornado import gen
from tornado.iostream import IOStream

from imgurd import jobs, linger
from tests.fakes import JPEG
from tests.helpers import Daemon

MB = 1024 * 1024


# --- retained job data is bounded in bytes


def flood_urls(job, count, length=8000):
    """Loopback URLs of ``length`` characters: the guard refuses them at once, so their jobs finish at once."""
    return ["http://127.0.0.1:9/%d/%d/%s" % (job, i, "a" * length) for i in range(count)]


@pytest.mark.gen_test(timeout=60)
async def test_flood_of_instantly_failing_jobs_stays_under_max_retained_bytes(start_service):
    limit = 1 * MB
    api = start_service(allow_private_networks=False, max_retained_bytes=limit, max_concurrency=8)
    store = api.service.store
    ids = []
    for job in range(10):  # 10 x 32 URLs x 8 KB: 2.5 MB of URLs, 2.5 x the limit; each done before the next
        ids.append(await api.submit(flood_urls(job, 32)))
        await api.wait(ids[-1])
        assert store.retained_bytes <= limit
    assert store.retained_bytes == sum(job.size for job in store.jobs.values())
    codes = [(await api.call("GET", "/v1/images/upload/" + job_id))[0] for job_id in ids]
    assert codes[0] == 404 and codes[-1] == 200  # the oldest finished were evicted first
    assert codes == sorted(codes, reverse=True)  # 404s then 200s: nothing newer evicted before older
    document = await api.job(ids[-1])
    assert document["images"][0]["error"].startswith("address not allowed: 127.0.0.1")


@pytest.mark.gen_test(timeout=30)
async def test_post_whose_unfinished_urls_would_not_fit_answers_503(start_service, origin):
    api = start_service(max_retained_bytes=1 * MB, max_concurrency=2)
    hanging = [origin.url("/hang/3?%d&%s" % (i, "a" * 7000)) for i in range(100)]  # ~0.7 MB, unfinished for 3 s
    first = await api.submit(hanging)
    code, document, headers = await api.call("POST", "/v1/images/upload", {"urls": hanging[:50]})
    held, adds = api.service.store.unfinished_bytes, jobs.job_bytes(hanging[:50])
    assert (code, document) == (503, {"error": "too much job data held: unfinished jobs hold %d bytes, this job adds "
                                               "%d, at most %d (max_retained_bytes); retry later" % (held, adds, MB),
                                      "max_retained_bytes": MB, "job_bytes": adds})
    assert headers["Retry-After"] == "5"
    assert len(api.service.store.jobs) == 1  # nothing was queued
    small = await api.submit([origin.add("/a.jpg", JPEG)])  # a job that fits is still taken
    assert small and api.service.store.get(first) is not None


@pytest.mark.gen_test
async def test_a_job_that_alone_is_more_than_max_retained_bytes_is_told_to_split(start_service, origin):
    api = start_service(max_retained_bytes=20_000)
    urls = [origin.url("/x.jpg?%d&%s" % (i, "b" * 3000)) for i in range(10)]
    code, document, _ = await api.call("POST", "/v1/images/upload", {"urls": urls})
    assert code == 503 and document["error"].endswith("(max_retained_bytes); split it: it alone is more than that")
    assert document["job_bytes"] > document["max_retained_bytes"] == 20_000  # for clients to split by
    assert not api.service.store.jobs


def test_retained_bytes_count_jobs_reasons_and_links_and_evict_oldest_first():
    now = [0.0]
    store = jobs.JobStore(job_ttl=1000, max_jobs=100000, clock=lambda: now[0], max_retained_bytes=200_000)
    made = []
    for number in range(30):
        job = store.add(["https://example.com/%d/%s" % (number, "b" * 4000)] * 2)
        made.append(job)
        size = job.size
        assert size == jobs.job_bytes(job.urls)
        first, second = store.next_item(), store.next_item()
        store.start(first)
        store.complete(first, "https://i.imgur.com/%07d.jpg" % number)
        store.fail(second, "origin answered HTTP 404")
        assert job.size > size  # the link and the reason are counted too
        store.evict()
        assert store.retained_bytes <= 200_000
    kept = [job for job in made if store.get(job.id)]
    assert kept == made[-len(kept):] and 0 < len(kept) < 30
    assert store.retained_bytes == sum(job.size for job in kept) and store.unfinished_bytes == 0
    assert not store.fits(200_001) and store.fits(1000)


def link_registry_bytes(store):
    return sys.getsizeof(store.links) + sys.getsizeof(store._link_set)  # encoded blocks: reports.py


def test_retained_bytes_count_at_least_the_memory_jobs_take():
    """The count is an honest upper bound of what retained jobs hold (traced allocations)."""
    store = jobs.JobStore(job_ttl=1000, max_jobs=10 ** 6)
    cases = [(2000, 1, 60, False), (200, 50, 60, False), (200, 50, 60, True), (20, 40, 8000, False)]
    for count, per_job, length, succeed in cases:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        counted_before = store.retained_bytes
        registry_before = link_registry_bytes(store)
        for number in range(count):
            urls = ["https://example.com/%d/%d/%s" % (number, i, "c" * length) for i in range(per_job)]
            store.add(urls)
            for _ in range(per_job):
                item = store.next_item()
                store.start(item)
                if succeed:
                    store.complete(item, "https://i.imgur.com/%d%d%d.jpg" % (count, number, item.index))
                else:
                    store.fail(item, "address not allowed: 10.0.%d.%d (private)" % (number % 250, item.index))
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        counted = store.retained_bytes - counted_before
        # links also enter the process-wide list of links, which eviction does not shrink: not counted
        registry = link_registry_bytes(store) - registry_before
        assert held - registry <= counted <= 1.6 * held, (count, per_job, length, succeed, held, counted)


# --- connections: a limit on their number and on the bodies they hold


async def raw_connection(port):
    stream = IOStream(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    await stream.connect(("127.0.0.1", port))
    return stream


async def until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in %s s" % timeout
        await gen.sleep(0.01)


@pytest.mark.gen_test(timeout=30)
async def test_connections_beyond_max_connections_are_closed_at_once(start_service):
    api = start_service(max_connections=5)
    held = [await raw_connection(api.port) for _ in range(5)]
    await until(lambda: api.server.open_connections == 5)
    extra = await raw_connection(api.port)
    await extra.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await extra.read_until_close() == b""  # closed without an answer
    assert api.server.refused == 1 and api.server.open_connections == 5
    held.pop().close()
    await until(lambda: api.server.open_connections == 4)
    code, document, _ = await api.call("GET", "/healthz")  # room again: served
    assert code == 200
    for stream in held:
        stream.close()


@pytest.mark.gen_test(timeout=60)
async def test_large_answers_clients_do_not_read_are_bounded_then_503(start_service, origin, monkeypatch):
    """A client that asks for a large report and never reads it holds that answer in imgurd's memory;
    past UNSENT_ANSWER_BYTES of them, large answers are refused (small ones, and POSTs, still served)."""
    from imgurd import handlers

    monkeypatch.setattr(handlers, "UNSENT_ANSWER_BYTES", 1)
    api = start_service(max_concurrency=1, max_urls_per_job=30_000, max_queued_urls=30_000,
                        max_body_bytes=16 * 1024 * 1024)
    urls = [origin.url("/hang/60?%s=%d" % ("x" * 150, n)) for n in range(30_000)]  # a report of about 13 MB
    job_id = await api.submit(urls)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing, slowly
    reader = IOStream(sock)
    await reader.connect(("127.0.0.1", api.port))
    await reader.write(b"GET /v1/images/upload/%s HTTP/1.1\r\nHost: x\r\n\r\n" % job_id.encode())
    await until(lambda: api.service.unsent_bytes > 0)  # the rest of the answer waits in imgurd
    code, body, headers = await api.call("GET", "/v1/images/upload/" + job_id)
    assert code == 503 and headers["Retry-After"] == "5", body
    assert body == {"error": "too many large answers are still waiting to be read by their clients; retry later"}
    code, _, _ = await api.call("GET", "/healthz")  # small answers go on
    assert code == 200
    reader.close()
    await until(lambda: api.service.unsent_bytes == 0)  # given back when the client went away
    code, body, _ = await api.call("GET", "/v1/images/upload/" + job_id)
    assert code == 200 and len(body["images"]) == 30_000


@pytest.mark.gen_test(timeout=60)
async def test_a_long_link_list_holds_one_piece_at_a_time_and_counts_nothing_once_taken(start_service):
    """The list is written piece by piece, each once the one before is in the socket: a client that does
    not read holds one piece, not 14 MB, and nothing stays counted once it read all or went away."""
    api = start_service()
    api.service.store.links.extend("https://i.imgur.com/%07d.jpg" % n for n in range(400_000))
    for finish in ("close", "read"):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader = IOStream(sock)
        await reader.connect(("127.0.0.1", api.port))
        await reader.write(b"GET /v1/images HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: api.service.unsent_bytes > 0)
        await gen.sleep(0.3)
        assert 0 < api.service.unsent_bytes < 1024 * 1024  # one piece waits, not the list
        if finish == "read":
            head = await reader.read_until(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            body = await reader.read_bytes(length)
            assert json.loads(body)["total"] == 400_000 and len(json.loads(body)["uploaded"]) == 400_000
        reader.close()
        await until(lambda: api.service.unsent_bytes == 0)
    code, body, _ = await api.call("GET", "/v1/images?offset=399000")
    assert code == 200 and len(body["uploaded"]) == 1000 and api.service.unsent_bytes == 0


@pytest.mark.gen_test(timeout=30)
async def test_bodies_arriving_at_once_are_bounded_then_503(start_service):
    """Connections that send most of a POST body and stall hold at most RECEIVING_BODIES x max_body_bytes."""
    from imgurd.handlers import RECEIVING_BODIES

    api = start_service(max_body_bytes=10_000)
    limit = RECEIVING_BODIES * 10_000
    streams, answers = [], []
    for _ in range(RECEIVING_BODIES + 4):
        stream = await raw_connection(api.port)
        await stream.write(b"POST /v1/images/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"
                           + b" " * 9000)
        streams.append(stream)
    await until(lambda: api.service.receiving_bytes >= (RECEIVING_BODIES - 1) * 9000)
    for stream in streams[RECEIVING_BODIES:]:  # the ones past the limit were answered and closed
        answer = await stream.read_until_close()
        answers.append(answer)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 5\r\n" in answer, answer
        assert b'"error":"too many request bodies are arriving at once; retry later"' in answer
    assert api.service.receiving_bytes <= limit
    await until(lambda: api.service.receiving_bytes == RECEIVING_BODIES * 9000)  # the others' bodies, held whole
    for stream in streams[:RECEIVING_BODIES]:
        stream.close()
    await until(lambda: api.service.receiving_bytes == 0)  # released when the stalled clients went away
    code, _, _ = await api.call("POST", "/v1/images/upload", {"urls": ["http://127.0.0.1:9/a.jpg"]})
    assert code == 202


# --- an answer given before the body has all arrived is not lost to a reset (imgurd/linger.py)

ENDLESS_UPLOAD = b"POST /v1/images/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(size):
    return b"%x\r\n%s\r\n" % (size, b"x" * size)


async def early_413(api):
    """A raw client sends a chunked body past max_body_bytes (200) and reads the answer to its end; it goes
    on sending afterwards, as curl does until it has read the answer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", api.port))
    await loop.sock_sendall(sock, ENDLESS_UPLOAD + chunk(300))
    answer = b""
    while True:
        data = await loop.sock_recv(sock, 65536)
        if not data:  # the server shut its side once the answer was out
            break
        answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"\r\nConnection: close" in head, answer
    assert json.loads(body) == {"error": "request body is larger than 200 bytes (max_body_bytes)",
                                "max_body_bytes": 200}
    return loop, sock


@pytest.mark.gen_test(timeout=30)
async def test_body_still_arriving_after_a_413_is_read_away_until_the_client_closes(start_service, monkeypatch):
    monkeypatch.setattr(linger, "LINGER_SECONDS", 60)  # so that only the client's close can end it here
    api = start_service(max_body_bytes=200)
    loop, sock = await early_413(api)
    for _ in range(16):  # 1 MiB more: read and thrown away, no reset (closed at once, the server would send one)
        await loop.sock_sendall(sock, chunk(65536))
    assert await loop.sock_recv(sock, 1) == b""  # still the clean end of the answer, not ECONNRESET
    assert api.server.open_connections == 1  # a lingering connection counts in max_connections
    sock.close()
    await until(lambda: api.server.open_connections == 0)
    assert not api.service.store.jobs and api.service.receiving_bytes == 0


@pytest.mark.gen_test(timeout=30)
async def test_lingering_after_a_413_is_bounded_in_bytes(start_service, monkeypatch):
    monkeypatch.setattr(linger, "LINGER_SECONDS", 60)
    monkeypatch.setattr(linger, "LINGER_BYTES", 256 * 1024)
    api = start_service(max_body_bytes=200)
    loop, sock = await early_413(api)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(64):  # 4 MiB, far past what the server reads away: it closes, and the client is reset
            await loop.sock_sendall(sock, chunk(65536))
        await loop.sock_recv(sock, 1)
    sock.close()
    await until(lambda: api.server.open_connections == 0)


@pytest.mark.gen_test(timeout=30)
async def test_lingering_after_a_413_is_bounded_in_time(start_service, monkeypatch):
    monkeypatch.setattr(linger, "LINGER_SECONDS", 0.2)
    api = start_service(max_body_bytes=200)
    loop, sock = await early_413(api)  # then neither sends nor closes
    await until(lambda: api.server.open_connections == 0)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(64):  # the server has closed for good: what the client sends is answered with a reset
            await loop.sock_sendall(sock, chunk(65536))
            await gen.sleep(0.01)
    sock.close()


@pytest.mark.gen_test(timeout=30)
async def test_routes_without_bodies_do_not_buffer_large_ones(start_service):
    api = start_service()
    stream = await raw_connection(api.port)
    await stream.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 65536)
    answer = await stream.read_until_close()
    assert not answer.startswith(b"HTTP/1.1 200"), answer  # refused, not buffered up to 2 MiB


# --- running out of file descriptors: accepting pauses, nothing spins, open connections are served


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_pauses_accepting_without_spinning(servers):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    daemon = Daemon("--api-url", servers.imgur.url, "--log-level", "info",
                    env={"IMGURD_CLIENT_ID": servers.imgur.client_id}, preexec_fn=low_limit)
    flood = []
    try:
        kept = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)  # open before the flood
        kept.request("GET", "/healthz")
        assert kept.getresponse().read() == b'{"status":"ok"}'
        for _ in range(100):  # more than the 64 descriptors the daemon may hold
            flood.append(socket.create_connection(("127.0.0.1", daemon.port), timeout=5))
        time.sleep(0.5)
        before = cpu_seconds(daemon.process.pid)
        time.sleep(1.0)
        spent = cpu_seconds(daemon.process.pid) - before
        kept.request("GET", "/healthz")  # the connections already open are still served
        assert kept.getresponse().read() == b'{"status":"ok"}'
        for sock in flood:
            sock.close()
        flood = []
        deadline = time.monotonic() + 10
        while True:  # accepting resumes once descriptors are free again
            try:
                fresh = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=2)
                fresh.request("GET", "/healthz")
                assert fresh.getresponse().status == 200
                fresh.close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        kept.close()
    finally:
        for sock in flood:
            sock.close()
        code, err = daemon.stop()
    assert code == 0, err
    assert "file descriptor limit (64) is below what max_connections=1000 needs" in err
    assert err.count("out of file descriptors (EMFILE)") == 1, err[-3000:]  # one warning, rate-limited
    assert "Traceback" not in err and "Too many open files" not in err, err[-3000:]
    assert spent < 0.5, "the daemon used %.2f s of CPU in 1 s while out of descriptors" % spent


@pytest.mark.parametrize("addresses, token, warns", [
    (["0.0.0.0"], None, True), (["::"], None, True), (["127.0.0.1"], None, False), (["::1"], None, False),
    (["127.0.0.2", "::1"], None, False), (["0.0.0.0"], "a-token", False), (["127.0.0.1", "203.0.113.5"], None, True),
])
def test_listening_beyond_loopback_without_api_token_warns(caplog, addresses, token, warns):
    from imgurd import listener

    caplog.set_level(logging.WARNING)
    assert listener.warn_if_exposed(addresses, token) == warns
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warns:
        assert len(warnings) == 1 and "without api_token" in warnings[0] and "Imgur upload quota" in warnings[0]
    else:
        assert not warnings


def test_repeated_warnings_are_rate_limited(caplog):
    from imgurd.listener import RateLimitedWarning

    caplog.set_level(logging.WARNING)
    now = [0.0]
    warn = RateLimitedWarning(60, clock=lambda: now[0])
    for _ in range(1000):
        warn("out of file descriptors")
    now[0] = 61
    warn("out of file descriptors")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["out of file descriptors", "out of file descriptors (999 more like it since the last warning)"]


# --- tarpits and retries cannot hold every transfer slot


def unfinished(document):
    return document["status"] != "complete"


@pytest.mark.gen_test(timeout=30)
async def test_at_most_max_per_host_downloads_in_flight_to_one_host(start_service, origin, imgur):
    api = start_service(max_concurrency=8, max_per_host=2)
    urls = [origin.url("/hang/0.3?%d" % i) for i in range(6)]
    other = [origin.url("/hang/0.3?other%d" % i, host="localhost") for i in range(2)]
    report = await api.wait(await api.submit(urls + other))
    assert report["uploaded"]["failed"] == [], report
    assert origin.max_in_flight == 4  # 2 by the name 127.0.0.1, 2 by the name localhost (same origin)
    assert not api.service.pipeline.hosts.busy and not api.service.pipeline.hosts.waiting  # nothing kept


@pytest.mark.gen_test(timeout=30)
async def test_tarpit_jobs_cannot_hold_every_slot(start_service, origin, imgur):
    """Six one-URL jobs to a tarpit (4 KiB/s: never cut as stalled) and a victim's job to another host."""
    api = start_service(max_concurrency=2, max_per_host=1)
    tarpits = [await api.submit([origin.url("/drip/8?%d" % i)]) for i in range(6)]
    await until(lambda: origin.in_flight == 1)  # a tarpit holds 127.0.0.1's one slot
    origin.add("/victim.jpg", JPEG)
    victim = await api.submit([origin.url("/victim.jpg", host="localhost")])
    report = await api.wait(victim, timeout=20)
    assert report["images"][0]["status"] == "complete", report
    assert all([unfinished(await api.job(job)) for job in tarpits])  # served while the tarpits still drip
    assert origin.max_in_flight == 2  # one tarpit download (max_per_host) and the victim's


@pytest.mark.gen_test(timeout=30)
async def test_url_waiting_to_retry_holds_no_transfer_slot(start_service, origin, imgur):
    api = start_service(max_concurrency=1, max_attempts=2)
    origin.add("/later.jpg", JPEG)
    origin.fail_first("/later.jpg", 503)  # answered with Retry-After: 2
    waiting = await api.submit([origin.url("/later.jpg?retry_after=2")])
    await until(lambda: origin.hits["/later.jpg"] == 1)  # answered 503: it sleeps 2 s before its retry
    other = await api.submit([origin.add("/now.jpg", JPEG[:-1] + b"\x01\xff\xd9")])
    report = await api.wait(other, timeout=20)
    assert report["images"][0]["status"] == "complete"
    assert unfinished(await api.job(waiting))  # the only slot was free while it slept
    assert (await api.wait(waiting))["images"][0]["status"] == "complete"


@pytest.mark.gen_test(timeout=30)
async def test_dispatcher_goes_on_after_giving_a_slot_back_to_a_transfer_back_from_its_retry_sleep(
        start_service, origin, imgur, caplog):
    """The dispatcher, holding the only slot when a retried transfer wakes up, hands it over and waits
    again; it used to die there (``await gen.moment`` raises in a native coroutine), and every job
    queued while the service was idle stayed pending for good."""
    api = start_service(max_concurrency=1)
    origin.add("/flaky.jpg", JPEG)
    origin.fail_first("/flaky.jpg", 503)  # Retry-After: 1: it sleeps, holding no slot, while /hang/2 runs
    first = await api.submit([origin.url("/flaky.jpg?retry_after=1"), origin.url("/hang/2")])
    await api.wait(first, timeout=20)
    later = await api.submit([origin.add("/later.jpg", JPEG[:-1] + b"\x02\xff\xd9")])  # queued while idle
    assert (await api.wait(later, timeout=10))["images"][0]["status"] == "complete"
    assert "internal error in the dispatcher" not in caplog.text


@pytest.mark.gen_test(timeout=30)
async def test_url_waiting_to_retry_holds_no_host_slot(start_service, origin, imgur):
    api = start_service(max_concurrency=4, max_per_host=1, max_attempts=2)
    origin.add("/later.jpg", JPEG)
    origin.fail_first("/later.jpg", 503)
    waiting = await api.submit([origin.url("/later.jpg?retry_after=2")])
    await until(lambda: origin.hits["/later.jpg"] == 1)  # answered 503: it sleeps 2 s before its retry
    other = await api.submit([origin.add("/same-host.jpg", JPEG[:-1] + b"\x02\xff\xd9")])
    report = await api.wait(other, timeout=20)
    assert report["images"][0]["status"] == "complete"
    assert unfinished(await api.job(waiting))
    assert (await api.wait(waiting))["images"][0]["status"] == "complete"


@pytest.mark.gen_test(timeout=40)
async def test_download_attempts_share_one_request_timeout(start_service, origin):
    """A tarpit that drips just fast enough is cut at request_timeout, once: not max_attempts times."""
    api = start_service(request_timeout=3, max_attempts=4)
    image = (await api.wait(await api.submit([origin.url("/drip/30")]), timeout=30))["images"][0]
    assert image["status"] == "failed"
    assert origin.hits["/drip/30"] == 1, origin.hits
    assert image["error"] == ("timed out after 3 s talking to 127.0.0.1 "
                              "(after 1 attempts, request_timeout of 3 s used up)")


@pytest.mark.gen_test(timeout=40)
async def test_a_retry_gets_what_is_left_of_request_timeout(start_service, origin):
    api = start_service(request_timeout=4, max_attempts=4)
    origin.latency = 1.0  # every answer starts 1 s late: the first attempt spends 1 s on a 503
    origin.fail_first("/drip/30", 503)
    image = (await api.wait(await api.submit([origin.url("/drip/30")]), timeout=30))["images"][0]
    assert origin.hits["/drip/30"] == 2, origin.hits  # the 503, then one attempt cut at what was left
    match = re.match(r"timed out after ([0-9.]+) s talking to 127\.0\.0\.1 "
                     r"\(after 2 attempts, request_timeout of 4 s used up\)\Z", image["error"])
    assert match and 2.5 <= float(match.group(1)) <= 3.05, image["error"]


def test_scheduler_holds_jobs_of_a_full_host_aside_at_constant_cost():
    from imgurd.slots import HostSlots, host_of

    store = jobs.JobStore(job_ttl=10, max_jobs=10 ** 6)
    hosts = HostSlots(1, store.requeue)
    calls = []

    def admit(job, url):
        calls.append(url)
        host = host_of(url)
        if hosts.try_take(host):
            return True
        hosts.park(host, job)
        return False

    slow = [store.add(["https://slow.example/%d/%d.jpg" % (i, n) for n in range(3)]) for i in range(1000)]
    fast = store.add(["https://fast.example/a.jpg"])
    first = store.next_item(admit)
    assert first.job is slow[0] and len(calls) == 1
    calls.clear()
    second = store.next_item(admit)  # the other 999 slow jobs are looked at once each, then held aside
    assert second.job is fast and len(calls) == 1000
    calls.clear()
    assert store.next_item(admit) is None and len(calls) == 1  # slow[0] itself, then held aside too
    calls.clear()
    assert store.next_item(admit) is None and not calls  # nothing runnable: no work at all
    hosts.release("slow.example")  # the first transfer to slow.example ended: the first job held goes on
    third = store.next_item(admit)
    assert third.job is slow[1] and len(calls) == 1  # in the order they were held aside: fair
    hosts.release("fast.example")
    assert hosts.busy == {"slow.example": 1}


@pytest.mark.gen_test(timeout=30)
async def test_urls_of_identical_bytes_wait_for_a_sleeping_upload_holding_no_slot(start_service, origin, imgur):
    """The first upload of some bytes sleeps before a retry (holding no slot); the other URLs of the
    same bytes wait for it. Were they to hold their slots, that upload could never get one back."""
    api = start_service(max_concurrency=2, max_per_host=2)
    imgur.fail_next(503, "Over capacity", headers={"Retry-After": "1"})
    urls = [origin.add("/same%d.jpg" % i, JPEG) for i in range(12)]  # one image behind twelve URLs
    report = await api.wait(await api.submit(urls), timeout=20)
    assert report["uploaded"]["failed"] == [] and len(set(report["uploaded"]["complete"])) == 1
    assert len(imgur.uploads) == 1


@pytest.mark.gen_test(timeout=30)
async def test_transfers_sleeping_before_a_retry_are_bounded(start_service, origin, imgur):
    """Sleepers hold no slot but keep their image: at most 2 x max_concurrency transfers exist at once."""
    api = start_service(max_concurrency=2, max_per_host=2, reuse_identical_uploads=False)
    imgur.fail_next(503, "Over capacity", headers={"Retry-After": "1"}, times=10)
    job_id = await api.submit([origin.add("/s%d.jpg" % i, JPEG) for i in range(20)])
    peak = 0
    while (await api.job(job_id))["status"] != "complete":
        peak = max(peak, api.service.store.in_flight)
        await gen.sleep(0.01)
    assert 2 < peak <= 4, peak  # sleepers let others run, but never without bound
