"""The image's way through memory: chunks kept as curl hands them over, then read back by curl for
the upload, each read as full as curl asked (imgurd.download._Body, imgurd.imgur._BodyStream)."""

import hashlib

import pycurl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgurd.download import _Body
from imgurd.imgur import _BodyStream


def read_all(stream: _BodyStream, size: int) -> bytes:
    """Everything left, checking that each read but the last filled what was asked for."""
    pieces = []
    while True:
        piece = stream.read(size)
        assert len(piece) <= size
        if not piece:
            assert all(len(earlier) == size for earlier in pieces[:-1])
            return b"".join(pieces)
        pieces.append(piece)


def test_one_chunk_is_kept_as_it_is_and_hashed():
    chunk = b"\xff\xd8\xff" + bytes(1000)
    body = _Body(cap=2000, hashing=True)
    assert body.write(chunk) is None
    assert body.data() is chunk  # no copy
    assert body.hash.digest() == hashlib.sha256(chunk).digest()


def test_chunks_are_joined_once_and_the_cap_refuses_what_passes_it():
    body = _Body(cap=10)
    assert body.write(b"12345") is None and body.write(b"6789") is None
    assert body.data() == b"123456789" and body.data() is body.data()
    assert body.write(b"ab") == 0 and body.too_large  # 11 bytes > 10: curl aborts the transfer
    assert body.hash is None


@pytest.mark.parametrize("data", [b"IMAGE-BYTES" * 50, bytearray(b"IMAGE-BYTES" * 50), memoryview(b"IMAGE" * 90)])
@pytest.mark.parametrize("size", [1, 7, 64, 549, 560, 4096])
def test_stream_reads_head_image_tail_in_any_piece_size(data, size):
    stream = _BodyStream(b"--head--", data, b"--tail--")
    expected = b"--head--" + bytes(data) + b"--tail--"
    assert stream.size == len(expected)
    assert read_all(stream, size) == expected
    assert stream.seek(0, 0) == pycurl.SEEKFUNC_OK  # curl rewinds, e.g. to resend
    assert read_all(stream, size) == expected


def test_a_body_that_fits_goes_to_curl_in_one_read():
    # one read, so one send: head, image and tail one at a time were three sends and two more
    # socket events each upload
    data = b"\x89PNG" + bytes(5000)
    stream = _BodyStream(b"head", data, b"tail")
    assert stream.read(65536) == b"head" + data + b"tail"
    assert stream.read(65536) == b""


def test_seek_to_the_middle_and_refusals():
    stream = _BodyStream(b"ab", b"cdef", b"gh")
    assert stream.seek(3, 0) == pycurl.SEEKFUNC_OK
    assert read_all(stream, 2) == b"defgh"
    assert stream.seek(9, 0) == pycurl.SEEKFUNC_CANTSEEK
    assert stream.seek(1, 1) == pycurl.SEEKFUNC_CANTSEEK
    stream.release()
    assert stream.read(10) == b""


def test_a_large_image_goes_into_one_buffer_never_held_twice():
    from imgurd.download import JOIN_LIMIT

    pieces = [bytes([n]) * (JOIN_LIMIT // 2 + 1) for n in range(3)]
    body = _Body(cap=4 * JOIN_LIMIT, hashing=True)
    for piece in pieces:
        assert body.write(piece) is None
    assert body.chunks == [] and isinstance(body.data(), bytearray)  # past JOIN_LIMIT: one buffer
    assert body.data() == b"".join(pieces)
    assert body.hash.digest() == hashlib.sha256(b"".join(pieces)).digest()


def test_upload_buffer_fits_the_request_within_curls_bounds():
    # curl allocates and zeroes its upload buffer for every request: as large as the request needs
    # (one read, one send for a small image), never 256 KiB for a 100 KB image, within curl's limits
    from imgurd.imgur import MIN_UPLOAD_BUFFER, REQUEST_HEADROOM, UPLOAD_BUFFER, upload_buffer_size

    assert upload_buffer_size(0) == MIN_UPLOAD_BUFFER == 16 * 1024
    assert upload_buffer_size(100 * 1000) == 100 * 1000 + REQUEST_HEADROOM
    assert upload_buffer_size(20 * 1024 * 1024) == UPLOAD_BUFFER <= 2 * 1024 * 1024


@settings(max_examples=300, deadline=None)
@given(head=st.binary(max_size=40), data=st.binary(max_size=300), tail=st.binary(max_size=40),
       kind=st.sampled_from([bytes, bytearray, memoryview]), start=st.integers(0, 400),
       sizes=st.lists(st.integers(1, 120), min_size=1, max_size=12))
def test_any_reads_after_any_rewind_give_the_body_from_there(head, data, tail, kind, start, sizes):
    # curl may rewind to any offset (SEEKFUNCTION) and ask for any amount each time: every read fills
    # what was asked until the end, and the bytes are the body's from that offset on
    body = head + data + tail
    stream = _BodyStream(head, kind(data), tail)
    if start > len(body):
        assert stream.seek(start, 0) == pycurl.SEEKFUNC_CANTSEEK
        return
    assert stream.seek(start, 0) == pycurl.SEEKFUNC_OK
    got = b""
    for size in sizes * 40:
        piece = stream.read(size)
        assert isinstance(piece, bytes)
        assert len(piece) == min(size, len(body) - start - len(got))
        got += piece
        if not piece:
            break
    assert got == body[start:start + len(got)]
    assert got == body[start:] or len(got) == sum(sizes * 40)
