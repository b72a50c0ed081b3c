"""Fast paths that read plain URLs without urllib (slots.host_of, urls.file_name) must agree with urllib."""

import os
import re
import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st

from imgurd.slots import host_of


def urllib_host(url: str) -> str:
    try:
        return urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return ""


def test_host_of_agrees_with_urllib():
    host = st.text(alphabet="abcXYZ019.-", min_size=1, max_size=20)
    port = st.one_of(st.just(""), st.integers(0, 99999).map(lambda p: ":%d" % p), st.just(":"))
    userinfo = st.one_of(st.just(""), st.just("user@"), st.just("u:p@"), st.just("u:12@"))
    rest = st.text(alphabet="/?=&%.~_-abcXYZ019#:@;+\\\u00e9[]", max_size=30)
    scheme = st.sampled_from(["http", "https", "HTTP", "hTtPs"])

    @settings(max_examples=int(os.environ.get("IMGURD_FUZZ_EXAMPLES", "500")), deadline=None, database=None)
    @given(scheme, userinfo, host, port, rest)
    def check(scheme, userinfo, host, port, rest):
        url = "%s://%s%s%s%s" % (scheme, userinfo, host, port, rest)
        assert host_of(url) == urllib_host(url), url

    check()


def test_host_of_examples():
    assert host_of("http://Images.Example.COM:8080/a.jpg") == "images.example.com"
    assert host_of("https://user:pass@cdn.example/x") == "cdn.example"  # not "user"
    assert host_of("http://[::1]:8080/x") == "::1"
    assert host_of("http://h\\evil.example/x") == urllib_host("http://h\\evil.example/x")
    assert host_of("http://[::1/x") == ""  # urllib refuses it: no host


def general_file_name(url: str) -> str:
    """file_name without its fast path."""
    from imgurd import urls

    saved, urls._PLAIN_NAME = urls._PLAIN_NAME, re.compile(r"(?!)")
    try:
        return urls.file_name(url)
    finally:
        urls._PLAIN_NAME = saved


def test_file_name_agrees_with_its_general_path():
    from imgurd.urls import file_name

    segment = st.text(alphabet="abcXYZ019.-_~%20\"\\ \u00e9", max_size=12)
    tail = st.text(alphabet="?#=&/ab", max_size=8)
    scheme = st.sampled_from(["http", "https", "HTTP"])

    @settings(max_examples=int(os.environ.get("IMGURD_FUZZ_EXAMPLES", "500")), deadline=None, database=None)
    @given(scheme, st.lists(segment, max_size=4), st.booleans(), tail)
    def check(scheme, segments, slash, tail):
        url = "%s://host.example:8080%s%s%s" % (scheme, "/" if slash else "", "/".join(segments), tail)
        assert file_name(url) == general_file_name(url), url

    check()
    assert file_name("http://h/a/b/photo.JPG?x=1") == "photo.JPG"
    assert file_name("http://h/a/") == "image" and file_name("http://h") == "image"
    assert file_name("http://h/a%20b.png") == "a b.png"
