"""RateGate.waiting() answers at once while no budget is spent: the budgets it reads must then be
kept in step by every change (answers' headers as tornado gives them, uploads let through, resets)."""

from tornado.httputil import HTTPHeaders
from tornado.ioloop import IOLoop

from imgurd import ratelimit
from imgurd.ratelimit import RateGate


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
