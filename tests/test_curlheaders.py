"""AnswerHeaders: curl's raw header lines, read as tornado's HTTPHeaders would read the final answer."""

import pycurl
import pytest

from imgurd.curlheaders import AnswerHeaders


def headers_of(*lines: bytes) -> AnswerHeaders:
    headers = AnswerHeaders()
    headers.lines.extend(lines)
    return headers


def test_names_in_any_case_and_values_trimmed():
    headers = headers_of(b"HTTP/1.1 200 OK\r\n", b"Content-Type:  image/jpeg \r\n", b"X-RateLimit-UserRemaining: 40\r\n",
                         b"\r\n")
    assert headers.get("content-type") == "image/jpeg"
    assert headers["CONTENT-TYPE"] == "image/jpeg"
    assert headers.get("x-ratelimit-userremaining") == "40"
    assert "X-RATELIMIT-USERREMAINING" in headers
    assert "Retry-After" not in headers and headers.get("Retry-After") is None
    assert headers.get("Retry-After", "none") == "none"
    assert headers.fields() == {"content-type": "image/jpeg", "x-ratelimit-userremaining": "40"}
    assert len(headers) == 2 and sorted(headers) == ["content-type", "x-ratelimit-userremaining"]
    with pytest.raises(KeyError):
        headers["Location"]


def test_only_the_last_answer_counts():
    """A redirect's or a 100 Continue's headers are not the answer's (a redirect's Retry-After
    must not make the final 503 wait)."""
    headers = headers_of(b"HTTP/1.1 302 Found\r\n", b"Location: /b\r\n", b"Retry-After: 999\r\n", b"\r\n",
                         b"HTTP/1.1 100 Continue\r\n", b"\r\n",
                         b"HTTP/2 503 Back Soon\r\n", b"content-length: 0\r\n", b"\r\n")
    assert headers.fields() == {"content-length": "0"}
    assert headers.reason == "Back Soon" and headers.status == 503


def test_repeated_names_joined_and_folded_lines_continued():
    headers = headers_of(b"HTTP/1.1 200 OK\r\n", b"Vary: Accept\r\n", b"vary: Origin\r\n", b"X-Long: one\r\n",
                         b"\t two\r\n", b"not a header line\r\n", b"\r\n")
    assert headers.get("Vary") == "Accept,Origin"
    assert headers.get("X-Long") == "one two"
    assert "not a header line" not in headers


def test_no_status_line_and_no_reason():
    assert headers_of(b"Retry-After: 5\r\n").get("retry-after") == "5"
    assert headers_of(b"HTTP/1.1 429\r\n", b"\r\n").reason is None
    assert headers_of(b"HTTP/1.1 429\r\n", b"\r\n").status == 429
    assert headers_of().status is None and headers_of(b"HTTP/1.1 abc nonsense\r\n").status is None
    assert headers_of(b"HTTP/1.1 200 OK\r\n", b"X-Bytes: caf\xe9\r\n").get("x-bytes") == "caf\u00e9"  # latin-1


def test_prepare_runs_the_request_callback_first_then_collects():
    seen = []
    headers = AnswerHeaders(lambda curl: seen.append(curl))
    curl = pycurl.Curl()
    try:
        headers.prepare(curl)
    finally:
        curl.close()
    assert seen == [curl]


def test_a_name_repeated_thousands_of_times_is_joined_once():
    """An origin controls its headers: repeats are joined at the end, not one string rebuilt a line."""
    import time
    headers = headers_of(b"HTTP/1.1 200 OK\r\n", *[b"Retry-After: " + b"9" * 50 + b"\r\n"] * 5000)
    started = time.perf_counter()
    value = headers.get("retry-after")
    assert time.perf_counter() - started < 0.05
    assert value == ",".join(["9" * 50] * 5000)
    folded = headers_of(b"HTTP/1.1 200 OK\r\n", b"Vary: a\r\n", b"Vary: b\r\n", b" c\r\n")
    assert folded.get("vary") == "a,b c"


def test_before_libcurl_8_3_one_answer_is_kept_and_its_size_bounded(monkeypatch):
    """An older libcurl does not cap headers: a Python callback keeps the current answer's lines only
    (an endless run of 1xx answers cannot grow them) and fails the transfer past HEADER_BYTES."""
    from imgurd import curlheaders
    monkeypatch.setattr(curlheaders, "_CURL_CAPS_HEADERS", False)
    headers = AnswerHeaders()
    add = headers.lines.add
    for _ in range(10000):
        assert add(b"HTTP/1.1 103 Early Hints\r\n") is None
        assert add(b"Link: </a.css>\r\n") is None
    add(b"HTTP/1.1 200 OK\r\n")
    add(b"Retry-After: 5\r\n")
    assert headers.lines == [b"HTTP/1.1 200 OK\r\n", b"Retry-After: 5\r\n"] and headers.get("Retry-After") == "5"
    big = b"X-Big: " + b"a" * 1000 + b"\r\n"
    answers = [add(big) for _ in range(400)]
    assert -1 in answers and sum(len(line) for line in headers.lines) <= curlheaders.HEADER_BYTES
