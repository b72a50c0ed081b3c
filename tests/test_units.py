"""Unit tests of the pure functions: URLs, sniffing, address classification, backoff."""

import email.utils
import os

import pytest

from imgurd import backoff, sniff
from imgurd.netguard import classify
from imgurd.urls import check_urls, fetch_form, file_name, normalise
from tests.fakes import GIF, HTML, JPEG, PNG


@pytest.mark.parametrize("given, expected", [
    ("  HTTP://Example.COM:80/a.jpg#frag  ", "http://example.com/a.jpg"),
    ("https://example.com:443/a.jpg", "https://example.com/a.jpg"),
    ("https://example.com:8443/a.jpg", "https://example.com:8443/a.jpg"),
    ("http://example.com:443/a.jpg", "http://example.com:443/a.jpg"),
    ("https://example.com/A.JPG?X=1&y=2", "https://example.com/A.JPG?X=1&y=2"),
    ("https://[::1]:443/x", "https://[::1]/x"),
    ("https://example.com", "https://example.com"),
    ("https://user:pw@Example.com/x", "https://user:pw@example.com/x"),
])
def test_normalise(given, expected):
    assert normalise(given) == expected


@pytest.mark.parametrize("bad", ["ftp://x", "example.com/a.jpg", "http://", "https:///a.jpg", "", "   ",
                                 "javascript:alert(1)", "http://exa mple.com/", "http://example.com:99999/",
                                 "http://example.com:abc/", "file:///etc/passwd", "http://a\nb/",
                                 "http://example.com/\ud800.jpg", "http://example.com/a\x85b", "http://a\u00a0b.com/",
                                 "http://" + "a" * 64 + "\u00e9.com/",
                                 # hosts that can never be looked up or connected to, and port 0
                                 "http://<script>/", 'http://a"b/', "http://%41.com/", "http://a..b.com/",
                                 "http://.a.com/", "http://" + "a" * 64 + ".com/", "http://256.1.1.1/",
                                 "http://1.2.3.4.5/", "http://example.123/", "http://4294967296/",
                                 "http://09.1.1.1/", "http://x.com:0/", "https://a_b:0/x", "http://1_0.1.1.1/",
                                 "http://" + ("a" * 62 + ".") * 4 + "ab/",  # 254 characters: DNS takes 253
                                 "http://\uff12\uff15\uff16.1.1.1/", "http://\u00e9.123/"])  # checked as IDNA
def test_normalise_rejects(bad):
    assert normalise(bad) is None


@pytest.mark.parametrize("host, address", [
    ("127.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"), ("127.0.0.1.", "127.0.0.1"), ("0", "0.0.0.0"), ("0x", "0.0.0.0"),
    ("1.0x10.3", "1.16.0.3"), ("4294967295", "255.255.255.255"),
    ("256.1.1.1", None), ("1.2.3.4.5", None), ("4294967296", None), ("1.2.65536", None), ("08.1.1.1", None),
    ("1_0.1.1.1", None),
])
def test_ipv4_number_reads_the_forms_browsers_and_curl_read(host, address):
    import ipaddress

    from imgurd.urls import host_ok, ipv4_number
    number = ipv4_number(host)
    assert (None if number is None else str(ipaddress.IPv4Address(number))) == address
    assert host_ok(host) is (address is not None)


@pytest.mark.parametrize("host", ["localhost", "example.com", "example.com.", "a_b.example.com", "-x.com",
                                  "123.example", "xn--fa-hia.de", "a" * 63 + ".com", ("a" * 62 + ".") * 4 + "a",
                                  ("a" * 62 + ".") * 4 + "a."])
def test_host_ok_takes_names_that_could_resolve(host):
    from imgurd.urls import host_ok
    assert host_ok(host)


def test_check_urls_dedupes_first_occurrence_wins_and_keeps_order():
    urls, error = check_urls(["https://b.com/1.jpg", " https://A.com/2.jpg", "HTTPS://a.com:443/2.jpg#top",
                              "https://b.com/1.jpg", "https://a.com/2.JPG"])
    assert error is None
    assert urls == ["https://b.com/1.jpg", "https://A.com/2.jpg", "https://a.com/2.JPG"]


@pytest.mark.parametrize("value, message", [
    ("https://x", "urls must be an array of http(s) URLs"),
    ([], "urls must not be empty"),
    (["https://ok.com/a", 3], "urls[1] is not a string: 3"),
    (["https://ok.com/a", "https://ok.com/b", "x", "ftp://x"], "urls[2] is not an http(s) URL: 'x'"),
    (["https://ok.com/a", "https://ok.com/b", "https://ok.com/c", "ftp://x"], "urls[3] is not an http(s) URL: 'ftp://x'"),
    ([None], "urls[0] is not a string: null"),  # JSON's words: the client wrote null
    ([True], "urls[0] is not a string: true"),
    ([{"url": "https://ok.com/a"}], 'urls[0] is not a string: {"url": "https://ok.com/a"}'),
    ([list(range(100))], "urls[0] is not a string: [%s, 26..." % ", ".join(map(str, range(26)))),
])
def test_check_urls_names_first_offender(value, message):
    urls, error = check_urls(value)
    assert urls is None and error == message


@pytest.mark.parametrize("given, ascii_form", [
    ("http://127.0.0.1:8/caf\u00e9.jpg", "http://127.0.0.1:8/caf%C3%A9.jpg"),
    ("https://ex\u00e4mple.com/\u00e4.png?q=\u00fc", "https://xn--exmple-cua.com/%C3%A4.png?q=%C3%BC"),
    ("https://fa\u00df.de/a.png", "https://xn--fa-hia.de/a.png"),  # IDNA 2008: not fass.de, another host
    ("https://B\u00dcCHER.example/x.jpg", "https://xn--bcher-kva.example/x.jpg"),  # UTS 46 maps case
    ("HTTPS://Example.com:443/a%20b.jpg?x=1#f", "https://example.com/a%20b.jpg?x=1"),
    ("http://[::1]:8080/\u00e9", "http://[::1]:8080/%C3%A9"),
])
def test_fetch_form_is_ascii(given, ascii_form):
    assert fetch_form(given) == ascii_form


def test_file_name_from_path():
    assert file_name("https://x.com/a/b/cat%20pic.jpg?size=2") == "cat pic.jpg"
    assert file_name("https://x.com/") == "image"
    assert '"' not in file_name('https://x.com/a"b.png')


@pytest.mark.parametrize("data, mime", [
    (JPEG, "image/jpeg"), (PNG, "image/png"), (GIF, "image/gif"), (b"GIF87a" + b"\0" * 20, "image/gif"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\0" * 20, "image/webp"),
    (b"II*\x00\x08\x00\x00\x00" + b"\0" * 20, "image/tiff"), (b"MM\x00*\x00\x00\x00\x08" + b"\0" * 20, "image/tiff"),
    (b"II+\x00\x08\x00\x00\x00\x10" + b"\0" * 20, "image/tiff"),
    (b"MM\x00+\x00\x08\x00\x00" + b"\0" * 7 + b"\x10" + b"\0" * 20, "image/tiff"),
    (b"BM" + b"\0" * 12 + b"\x28\0\0\0" + b"\0" * 60, "image/bmp"),
    (b"\x00\x00\x00\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 20, "image/heic"),
    (b"\x00\x00\x00\x1cftypavif\0\0\0\0avifmif1miaf" + b"\0" * 20, "image/avif"),
    (b"\x00\x00\x00\x1cftypmif1\0\0\0\0mif1miafavif" + b"\0" * 20, "image/avif"),
])
def test_sniff_accepts_images(data, mime):
    assert sniff.image_type(data) == mime


@pytest.mark.parametrize("data, looks_like", [
    (HTML, "content looks like text/html"),
    (b"  <html><body>", "content looks like text/html"),
    (b'{"error": 1}', "content looks like application/json"),
    (b"%PDF-1.7", "content looks like application/pdf"),
    (b"just text", "content looks like text/plain"),
    (b"", "empty body"),
    (b"\x00\x01\x02\x03\xfe\xff", "unrecognised binary content"),
    (b"\x00\x00\x00\x18ftypmp42", "content looks like video/mp4"),
    (b"BM", "content looks like text/plain"),
])
def test_sniff_refuses_non_images(data, looks_like):
    assert sniff.image_type(data) is None
    assert sniff.describe(data) == looks_like


# Pure classification: these addresses are only ever handed to classify(), never connected to. The
# running guard is driven with loopback spellings only (tests/test_hardening.py).
@pytest.mark.parametrize("address, verdict", [
    ("127.0.0.1", "loopback"), ("127.255.1.2", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"),
    ("192.168.0.10", "private"), ("fc00::1", "unique-local"), ("fd12:3456::1", "unique-local"),
    ("100.64.0.1", "carrier-grade NAT"), ("100.127.255.254", "carrier-grade NAT"),
    ("224.0.0.251", "multicast"), ("239.1.1.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("255.255.255.255", "limited broadcast"),
    ("fec0::1", "site-local"), ("::ffff:10.0.0.1", "IPv4-mapped private"), ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
    ("64:ff9b::a9fe:a9fe", "NAT64 link-local"),
    ("192.0.2.1", "documentation"), ("198.18.0.1", "benchmarking"),
    ("not-an-ip", "not an IP address"),
])
def test_classify_refuses_internal_addresses(address, verdict):
    assert classify(address) == verdict


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "151.101.1.1", "2606:4700::1111",
                                     "::ffff:8.8.8.8", "172.32.0.1", "100.128.0.1"])
def test_classify_allows_public_addresses(address):
    assert classify(address) is None


def test_backoff_grows_exponentially_and_is_capped():
    assert backoff.delay(1, base=1, cap=100, rand=lambda: 1.0) == 1
    assert backoff.delay(2, base=1, cap=100, rand=lambda: 1.0) == 2
    assert backoff.delay(4, base=1, cap=100, rand=lambda: 1.0) == 8
    assert backoff.delay(20, base=1, cap=30, rand=lambda: 1.0) == 30


def test_backoff_jitter_spreads_retries():
    values = {round(backoff.delay(3, base=1, cap=100), 6) for _ in range(50)}
    assert len(values) > 40 and all(0 <= v <= 4 for v in values)


def test_retry_after_parses_seconds_and_http_dates():
    assert backoff.retry_after("120") == 120
    assert backoff.retry_after(" 7 ") == 7
    now = 1_800_000_000
    stamp = email.utils.formatdate(now + 90, usegmt=True)
    assert backoff.retry_after(stamp, now=now) == pytest.approx(90)
    assert backoff.retry_after(email.utils.formatdate(now - 90, usegmt=True), now=now) == 0
    assert backoff.retry_after("soon") is None
    assert backoff.retry_after(None) is None
    assert backoff.retry_after("-5") is None
    assert backoff.retry_after("\u00b2") is None  # a digit to str.isdigit(), not to float()


def test_rate_gate_ignores_non_finite_headers():
    from imgurd.ratelimit import RateGate

    gate = RateGate(max_wait=10, clock=lambda: 1000.0)
    gate.observe({"X-Post-Rate-Limit-Remaining": "0", "X-Post-Rate-Limit-Reset": "inf",
                  "X-RateLimit-UserRemaining": "nan", "X-RateLimit-ClientRemaining": "-3"})
    assert gate.budgets["post"].remaining == 0 and gate.budgets["post"].reset_at is None
    assert gate.remaining()["user"] is None and gate.remaining()["client"] is None


def test_fast_path_of_normalise_agrees_with_the_general_parser():
    """normalise() has a fast path for plain URLs; it must give exactly what urllib's parsing gives."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from imgurd.urls import _parse

    host = st.from_regex(r"\A[a-zA-Z0-9]([a-zA-Z0-9.\-]{0,20}[a-zA-Z0-9])?\Z")
    port = st.one_of(st.just(""), st.integers(0, 99999).map(lambda p: ":%d" % p), st.just(":080"), st.just(":0443"))
    rest = st.text(alphabet="/?=&%.~_-abcXYZ019#:@;+\u00e9", max_size=30)
    scheme = st.sampled_from(["http", "https", "HTTP", "hTtPs"])

    @settings(max_examples=int(os.environ.get("IMGURD_FUZZ_EXAMPLES", "500")), deadline=None, database=None)
    @given(scheme, host, port, rest)
    def check(scheme, host, port, rest):
        url = "%s://%s%s%s" % (scheme, host, port, rest)
        assert normalise(url) == _parse(url), url

    check()
    assert normalise("http://\u212aelvin.com/") == _parse("http://\u212aelvin.com/")  # not ASCII: general path


def test_retry_policy_builds_the_final_reason_once():
    from imgurd.errors import TransferError
    from imgurd.retry import RetryPolicy

    policy = RetryPolicy(3, 10.0, lambda seconds: " (asked to retry after %d s)" % seconds)
    flaky = TransferError("origin answered HTTP 503", "download", retryable=True)
    assert 0 <= policy.wait_before_retry(flaky, 1) <= backoff.MAX_DELAY
    with pytest.raises(TransferError) as given_up:
        policy.wait_before_retry(flaky, 3)
    assert given_up.value.reason == str(given_up.value) == "origin answered HTTP 503 (after 3 attempts)"
    assert flaky.reason == "origin answered HTTP 503"  # the error it started from is left as it was
    with pytest.raises(TransferError) as too_long:
        policy.wait_before_retry(TransferError("busy", "download", retryable=True, retry_after=60), 1)
    assert str(too_long.value) == "busy (asked to retry after 60 s)" and not too_long.value.retryable
    assert policy.wait_before_retry(TransferError("busy", "download", retryable=True, retry_after=5), 1) >= 5


def test_retry_policy_with_a_time_budget_tries_until_it_is_spent():
    from imgurd.retry import GiveUp, RetryPolicy

    policy = RetryPolicy(budget=10.0, base=0.5, cap=2.0, rand=lambda: 1.0)  # the ceilings, no jitter
    clock, waits, attempt = 0.0, [], 0
    while True:  # every try fails at once; only the waits move the clock
        attempt += 1
        try:
            wait = policy.next_wait(attempt, spent=clock)
        except GiveUp as stop:
            assert stop.why == " (tried for 10 s)"
            break
        waits.append(wait)
        clock += wait
    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 0.5]  # the last wait ends with the budget: one last try
    with pytest.raises(GiveUp):
        RetryPolicy(budget=0.0).next_wait(1)  # no budget: the first failure is the last
    assert 0 <= RetryPolicy(budget=10.0, base=0.5, cap=2.0).next_wait(3, spent=1.0) <= 2.0  # jittered


def test_retry_policy_waits_what_retry_after_asks_within_its_limit_and_budget():
    from imgurd.retry import GiveUp, RetryPolicy

    capped = RetryPolicy(retry_after_limit=3600.0, budget=120.0, base=0.5, cap=2.0, rand=lambda: 1.0)
    assert capped.next_wait(1, spent=0.0, retry_after=5.0) == 5.0
    assert capped.next_wait(3, spent=0.0, retry_after=0.0) == 2.0  # never less than the backoff
    assert capped.next_wait(1, spent=100.0, retry_after=3600.0) == 20.0  # what is left of the budget, then a try
    unbounded = RetryPolicy(retry_after_limit=3600.0)  # no budget, no attempts: waits as long as asked, capped
    assert unbounded.next_wait(50, retry_after=86400.0) == 3600.0
    strict = RetryPolicy(3, 10.0, lambda seconds: " (asked for %d s)" % seconds, budget=100.0)
    with pytest.raises(GiveUp) as too_long:
        strict.next_wait(1, retry_after=60.0)  # beyond the limit, with a reason: not waited for at all
    assert too_long.value.why == " (asked for 60 s)"
    with pytest.raises(GiveUp) as spent:
        strict.next_wait(3)
    assert spent.value.why == " (after 3 attempts)"


def test_stall_text_names_the_limit_in_force():
    from imgurd.limits import RequestLimits

    limits = RequestLimits(1, 1.0, 1.0, 1024, 10.0, 5)
    assert limits.stall_text() == "under 1 KiB/s for 10 s"
    assert RequestLimits(1, 1.0, 1.0, 500, 2.5, 5).stall_text() == "under 500 bytes/s for 2.5 s"
