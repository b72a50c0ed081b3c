"""Log lines cannot be split or forged (SPEC 3): non-printable and format characters are escaped."""

import io
import json
import logging
import socket

import pytest
from tornado import gen
from tornado.iostream import IOStream

from imgurd import logs

# what a hostile URL or request line may carry: bidi overrides and isolates, zero-width space, C1
# controls (NEL, CSI) that tornado lets through in a request line, line/paragraph separators,
# C0 controls, DEL, a lone surrogate
HOSTILE = "a\u202eb\u2066c\u200bd\x85e\x9bf\u2028g\u2029h\ni\rj\x1bk\x7fl\x0bm\x1cn\udc80o\U000e0001p"


@pytest.fixture
def captured():
    """``captured(fmt)``: imgurd's log set-up writing to a string, the root logger restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()

    def setup(fmt):
        logs.setup("info", fmt, stream)
        return stream

    yield setup
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def only_printable_lines(text):
    lines = text.split("\n")
    assert lines[-1] == ""
    for line in lines[:-1]:
        assert line.isprintable(), repr(line)
    return lines[:-1]


def test_text_log_escapes_every_non_printable_character(captured):
    stream = captured("text")
    logging.getLogger("imgurd.pipeline").warning("upload failed job=%s url=%s reason=%s", "j1",
                                                 "https://x/" + HOSTILE, "x")
    (line,) = only_printable_lines(stream.getvalue())
    assert len(stream.getvalue().splitlines()) == 1  # splitlines() splits on \x85, \u2028, \x1c, \x0b, ...
    for escaped in ("\\u202e", "\\u2066", "\\u200b", "\\x85", "\\x9b", "\\u2028", "\\u2029", "\\x0a", "\\x0d",
                    "\\x1b", "\\x7f", "\\x0b", "\\x1c", "\\udc80", "\\U000e0001"):
        assert escaped in line
    assert "url=https://x/a\\u202eb" in line and line.endswith(" reason=x")
    assert "café ☃ 東京" in logs.escape("café ☃ 東京")  # printable text of any script stays as it is


def test_text_log_tracebacks_cannot_forge_a_record(captured):
    stream = captured("text")
    try:
        raise ValueError("bad\n2026-01-01 00:00:00,000Z INFO imgurd: forged\u2028x")
    except ValueError:
        logging.getLogger("imgurd").exception("internal error url=%s", "https://x/\u202e")
    lines = only_printable_lines(stream.getvalue())
    assert "url=https://x/\\u202e" in lines[0]
    assert len(lines) > 2 and all(line.startswith("  ") for line in lines[1:])  # continuation lines only


def test_json_log_escapes_with_u_escapes(captured):
    stream = captured("json")
    url = "https://x/" + HOSTILE.replace("\udc80", "")
    logging.getLogger("imgurd.pipeline").warning("upload failed url=%s", url, extra={"url": url})
    (line,) = only_printable_lines(stream.getvalue())
    assert len(stream.getvalue().splitlines()) == 1
    for escaped in ("\\u202e", "\\u0085", "\\u009b", "\\u2028", "\\u200b", "\\udb40\\udc01", "\\u007f"):
        assert escaped in line
    document = json.loads(line)
    assert document["url"] == url and document["message"] == "upload failed url=" + url  # nothing lost


@pytest.mark.gen_test(timeout=30)
async def test_request_line_and_url_are_escaped_in_the_access_log_and_failures(start_service, origin, captured):
    stream = captured("text")
    api = start_service()
    # tornado decodes the request line as latin-1: bytes 0x85 (NEL) and 0x9b (CSI) become U+0085, U+009B
    sock = socket.create_connection(("127.0.0.1", api.port))
    connection = IOStream(sock)
    # (not /healthz: its successful requests are logged at DEBUG only)
    await connection.write(b"GET /nowhere?\x85\x9b[2J HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await connection.read_until_close()
    assert answer.startswith(b"HTTP/1.1 404")
    image = (await api.wait(await api.submit([origin.url("/status/404?\u202egpj.exe")])))["images"][0]
    assert image["status"] == "failed"
    for _ in range(200):  # the failure's line is written as the job finishes; wait for it, not for a while
        if "upload failed" in stream.getvalue():
            break
        await gen.sleep(0.005)
    lines = only_printable_lines(stream.getvalue())
    assert any("GET /nowhere?\\x85\\x9b[2J" in line for line in lines), lines
    assert any("upload failed" in line and "/status/404?\\u202egpj.exe" in line for line in lines), lines
