"""The rate gate: waiting() answers at once while no budget is spent, so the budgets it reads must be
kept in step by every change (answers' headers as tornado gives them, uploads let through, resets);
and an upload's waits for Imgur, 429s included, add up to max_rate_limit_wait at the most."""

import time

import pytest
from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop

from imgurd import ratelimit
from imgurd.ratelimit import RateGate
from tests.fakes import JPEG


def headers(**values: str) -> HTTPHeaders:
    found = HTTPHeaders()
    for name, value in values.items():
        found.add(name.replace("_", "-"), value)
    return found


def test_spending_the_last_upload_holds_the_next_until_the_reset():
    now = [1_800_000_000.0]
    gate = RateGate(max_wait=86400, clock=lambda: now[0])
    assert gate.waiting() is None  # nothing known yet: nothing holds
    gate.observe(headers(X_RateLimit_UserLimit="500", X_RateLimit_UserRemaining="10",
                         X_RateLimit_UserReset="600"))  # tornado's headers: names in their own case
    assert gate.waiting() is None and gate.budgets["user"].remaining == 10
    IOLoop(make_current=False).run_sync(gate.acquire)  # the last upload the hour allows
    assert gate.budgets["user"].remaining == 0
    assert gate.waiting() is not None  # held already, before the answer says so
    gate.release(headers(X_RateLimit_UserRemaining="0"))
    held = gate.waiting()
    assert held is not None and held.until == now[0] + 600 + ratelimit.RESET_MARGIN
    assert gate.holds()
    now[0] += 600 + ratelimit.RESET_MARGIN
    assert gate.waiting() is None and gate.budgets["user"].remaining == 500  # refilled
    gate.seed("post", 1250, 0, 30)  # the credits check's way in
    assert gate.waiting() is not None and gate.waiting().budget == "upload budget"


def test_a_pause_holds_with_every_budget_full():
    now = [1000.0]
    gate = RateGate(max_wait=86400, clock=lambda: now[0])
    gate.observe(headers(X_RateLimit_ClientRemaining="12000", X_RateLimit_UserRemaining="500"))
    gate.pause_for(30, "told to")
    assert gate.waiting().until == 1030
    now[0] = 1030
    assert gate.waiting() is None


@pytest.mark.gen_test(timeout=30)
async def test_waits_after_429s_add_up_to_max_rate_limit_wait_at_most(start_service, origin, imgur):
    api = start_service(max_rate_limit_wait=3)
    imgur.fail_next(429, "Too Many Requests", headers={"Retry-After": "2"}, times=2)
    started = time.monotonic()
    report = await api.wait(await api.submit([origin.add("/w.jpg", JPEG)]))
    image = report["images"][0]
    # 2 s waited for the first 429; the second asks for 2 s more, beyond the 1 s left of the 3 s: the
    # URL fails then, not after 4 s of waiting with a third try
    assert image["status"] == "failed" and imgur.requests == 2, image
    assert image["error"].startswith("Imgur answered 429 (too many requests) and asked to wait 2 s"), image
    assert "beyond the 1 s left of max_rate_limit_wait (3 s) after earlier 429s" in image["error"], image
    assert time.monotonic() - started < 3.5
