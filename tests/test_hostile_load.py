"""Holding under hostile load (SPEC 3): retained bytes, connections, descriptors, tarpits, slots."""

import sys
import tracemalloc

import pytest
from tornado import gen

from imgurd import jobs
from tests.fakes import JPEG

MB = 1024 * 1024


# --- retained job data is bounded in bytes


def flood_urls(job, count, length=8000):
    """Loopback URLs of ``length`` characters: the guard refuses them at once, so their jobs finish at once."""
    return ["http://127.0.0.1:9/%d/%d/%s" % (job, i, "a" * length) for i in range(count)]


@pytest.mark.gen_test(timeout=60)
async def test_flood_of_instantly_failing_jobs_stays_under_max_retained_bytes(start_service):
    limit = 4 * MB
    api = start_service(allow_private_networks=False, max_retained_bytes=limit, max_concurrency=8)
    store = api.service.store
    ids = []
    for job in range(40):  # 40 x 32 URLs x 8 KB: 10 MB of URLs, 2.5 x the limit; each done before the next
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
    assert code == 503 and "max_retained_bytes" in document["error"], document
    assert headers["Retry-After"].isdigit()
    assert len(api.service.store.jobs) == 1  # nothing was queued
    small = await api.submit([origin.add("/a.jpg", JPEG)])  # a job that fits is still taken
    assert small and api.service.store.get(first) is not None


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
    return (sys.getsizeof(store.links) + sys.getsizeof(store._link_set)
            + sum(sys.getsizeof(block) for block in store._link_blocks))


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
