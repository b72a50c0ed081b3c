"""curl for imgurd: its transport failures in words a person understands, and a quiet handle."""

import urllib.parse
from typing import Optional, Tuple

import pycurl
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from .curlheaders import AnswerHeaders
from .errors import TransferError
from .limits import RequestLimits

# curl error codes worth another try: the network or the peer may do better next time
_RETRYABLE = {
    pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_CONNECT, pycurl.E_OPERATION_TIMEDOUT,
    pycurl.E_GOT_NOTHING, pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR, pycurl.E_PARTIAL_FILE,
    pycurl.E_SSL_CONNECT_ERROR, pycurl.E_HTTP2,
}


def quiet(curl: pycurl.Curl) -> None:
    """``prepare_curl_callback`` for every request: tornado turns on curl's VERBOSE and logs the
    whole exchange at DEBUG, form bodies and Authorization headers included. Secrets never reach a
    log, whatever the log level, so that stays off (it is also per-request CPU spent on nothing)."""
    curl.setopt(pycurl.VERBOSE, 0)


def _seconds(value: float) -> str:
    return "%g s" % value


async def fetch(http: AsyncHTTPClient, request: HTTPRequest,
                headers: Optional[AnswerHeaders] = None) -> Tuple[Optional[HTTPResponse], Optional[Exception]]:
    """(response, None) for any HTTP answer, or (None, error) when there was none.

    tornado raises transport errors even with ``raise_error=False``; callers want both as values.
    The response's ``headers`` are an ``AnswerHeaders`` (curlheaders.py), its ``reason`` the
    answer's own when it was not a success. A caller that wants the headers of an answer whose
    transfer then failed passes its own ``headers``, already the request's ``prepare_curl_callback``.
    """
    if headers is None:
        headers = AnswerHeaders(request.prepare_curl_callback)
        request.prepare_curl_callback = headers.prepare
    try:
        response = await http.fetch(request, raise_error=False)
    except (HTTPClientError, OSError) as error:
        return None, error
    except ValueError:  # a header tornado refuses (CR/LF in a token, say): its message would show the header
        return None, HTTPClientError(599, "request refused by the HTTP client (invalid header)")
    response.headers = headers  # type: ignore[assignment]
    if response.code >= 300:
        response.reason = headers.reason or response.reason
    return response, None


def curl_failure(error: Exception, url: str, limits: RequestLimits, kind: str,
                 refused: Optional[str] = None) -> TransferError:
    """A TransferError for a request that got no HTTP answer, naming the limit it ran into."""
    host = urllib.parse.urlsplit(url).hostname or url
    errno = getattr(error, "errno", None)
    message = str(getattr(error, "message", "") or error or "")
    if refused and errno in (pycurl.E_COULDNT_CONNECT, pycurl.E_ABORTED_BY_CALLBACK, None):
        return TransferError(refused, "guard")  # the guard's refusal is why; not a later failure
    if errno == pycurl.E_OPERATION_TIMEDOUT:
        if "too slow" in message.lower():
            return TransferError("transfer from %s stalled (%s)" % (host, limits.stall_text()), kind, retryable=True)
        if "connect" in message.lower() or "resolv" in message.lower():
            return TransferError("timed out after %s connecting to %s" % (_seconds(limits.connect_timeout), host),
                                 kind, retryable=True)
        return TransferError("timed out after %s talking to %s" % (_seconds(limits.request_timeout), host),
                             kind, retryable=True)
    if errno == pycurl.E_COULDNT_RESOLVE_HOST:
        return TransferError("could not resolve host %s" % host, kind, retryable=True)
    if errno == pycurl.E_COULDNT_CONNECT:
        return TransferError("could not connect to %s" % host, kind, retryable=True)
    if errno == pycurl.E_TOO_MANY_REDIRECTS:
        return TransferError("more than %d redirects" % limits.max_redirects, kind)
    if errno == pycurl.E_UNSUPPORTED_PROTOCOL:
        if "HTTP/0.9" in message:  # curl's words for an answer that is not HTTP at all
            return TransferError("%s did not answer in HTTP" % host, kind)
        return TransferError("redirected to a URL that is not http(s)", kind)
    if errno in (pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT):
        return TransferError("TLS certificate of %s could not be verified" % host, kind)
    if errno is None and "timeout" in message.lower():
        return TransferError("timed out after %s talking to %s" % (_seconds(limits.request_timeout), host),
                             kind, retryable=True)
    detail = message.strip()[:200] or "unknown error"  # curl's own sentence: "Invalid Content-Length: value"
    return TransferError("%s failed: %s" % ("connection to " + host, detail), kind, retryable=errno in _RETRYABLE)
