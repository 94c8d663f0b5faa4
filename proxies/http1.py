"""Sans-I/O HTTP/1.1: parse requests and responses from bytes, serialise them back to bytes.

Nothing here touches a socket. Servers feed bytes in and get whole `Request`s or a
`Response` out; the proxy and the demo servers write what `encode_*` returns. Bodies are
buffered whole (inference payloads are small and bounded by `max_body`); chunked bodies
are decoded on the way in and re-framed with Content-Length on the way out, because
framing is hop-by-hop (RFC 9112 section 6).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

Headers = list[tuple[bytes, bytes]]  # names lower-cased, order kept

# Connection-specific headers, never forwarded (RFC 9110 section 7.6.1), plus the ones
# this module writes itself (framing) and Expect, which the proxy answers itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
    }
)

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes  # the request target as sent: path and query
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    keep_alive: bool = True
    version: bytes = b"1.1"

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    reason: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class ProtocolError(Exception):
    """Bad input from a peer; `status` is what a server answers it with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def end_to_end(headers: Headers) -> Headers:
    """Drop hop-by-hop headers, including any the Connection header names."""
    named = set()
    for key, value in headers:
        if key == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    if not named:
        return [(k, v) for k, v in headers if k not in HOP_BY_HOP]
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in named]


def encode_request(method: bytes, target: bytes, headers: Headers, body: bytes) -> bytes:
    """A request with Content-Length framing; `headers` must already be end-to-end."""
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for key, value in headers:
        lines += (key, b": ", value, b"\r\n")
    if body or method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
        lines += (b"content-length: ", str(len(body)).encode(), b"\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


def encode_response(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    reason: bytes = b"",
    head: bool = False,
    keep_alive: bool = True,
) -> bytes:
    """A response with Content-Length framing; for HEAD the body is omitted, its length kept."""
    lines = [b"HTTP/1.1 ", str(status).encode(), b" ", reason or _REASONS.get(status, b"Unknown"), b"\r\n"]
    for key, value in headers:
        lines += (key, b": ", value, b"\r\n")
    if status >= 200 and status not in (204, 304):
        # A HEAD answer may carry the length of the body it omits (forwarded from an upstream).
        if not (head and any(k == b"content-length" for k, _ in headers)):
            lines += (b"content-length: ", str(len(body)).encode(), b"\r\n")
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if not head and status not in (204, 304):
        lines.append(body)
    return b"".join(lines)


def simple_response(status: int, message: str, *, keep_alive: bool = True) -> bytes:
    """A short JSON error body, the shape the Open Inference Protocol uses: {"error": ...}."""
    body = json.dumps({"error": message}).encode()
    return encode_response(status, [(b"content-type", b"application/json")], body, keep_alive=keep_alive)


class RequestReader:
    """Feed bytes from a client, get complete requests (pipelined ones in order).

    Raises ProtocolError with the status to answer: 400 malformed, 413 body too large,
    431 headers too large, 501 for CONNECT and protocol upgrades (not proxied).
    """

    def __init__(self, max_body: int = 8 << 20, max_header_bytes: int = 64 << 10):
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._done: list[Request] = []
        self._current: Request | None = None
        self._url = b""
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_len = 0
        self._last_name = b""
        self.in_message = False  # bytes of a request arrived and it is not complete yet
        self.continue_wanted = False  # Expect: 100-continue seen, body not complete

    def feed(self, data: bytes) -> list[Request]:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ProtocolError(501, "CONNECT and protocol upgrades are not supported") from None
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(400, f"malformed request: {exc}") from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(400, f"malformed request: {exc}") from None
        done, self._done = self._done, []
        return done

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.in_message = True
        self._url = b""
        self._header_bytes = 0
        self._body = []
        self._body_len = 0
        self._current = Request(method=b"", target=b"")

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        self._current.headers.append((name.lower(), value))

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.max_header_bytes:
            raise ProtocolError(431, f"request headers exceed {self.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        req = self._current
        req.method = self._parser.get_method()
        req.target = self._url
        req.version = self._parser.get_http_version().encode()
        length = req.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise ProtocolError(413, f"request body of {int(length)} bytes exceeds the limit of {self.max_body}")
        expect = req.header(b"expect")
        if expect is not None:
            if expect.lower() != b"100-continue":
                raise ProtocolError(417, "only 'Expect: 100-continue' is supported")
            self.continue_wanted = True

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > self.max_body:
            raise ProtocolError(413, f"request body exceeds the limit of {self.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = self._current
        req.body = b"".join(self._body)
        req.keep_alive = self._parser.should_keep_alive()
        self._done.append(req)
        self._current = None
        self.in_message = False
        self.continue_wanted = False


class _StopParsing(Exception):
    pass


class ResponseReader:
    """Feed bytes from an upstream, get its response (one request in flight at a time).

    Call `expect(head)` before each request: a response to HEAD has headers only.
    Interim 1xx responses are skipped. `eof()` completes a response delimited by close.
    """

    def __init__(self, max_body: int = 64 << 20):
        self.max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._head = False
        self._reset_message()
        self.started = False  # any byte of the current response arrived

    def _reset_message(self) -> None:
        self._status = 0
        self._reason = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._body_len = 0
        self._headers_done = False
        self._response: Response | None = None
        self.keep_alive = True

    def expect(self, head: bool) -> None:
        self._head = head
        self._reset_message()
        self.started = False

    def feed(self, data: bytes) -> Response | None:
        self.started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _StopParsing):
                # A HEAD response ends at its headers; llhttp cannot be told so, so start
                # a fresh parser for the next response on this connection.
                self._parser = httptools.HttpResponseParser(self)
            elif isinstance(cause, ProtocolError):
                raise cause from None
            else:
                raise ProtocolError(502, f"malformed upstream response: {exc}") from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(502, f"malformed upstream response: {exc}") from None
        return self._response

    def eof(self) -> Response | None:
        """The peer closed: a response with neither length nor chunking ends here."""
        if self._response is None and self._headers_done:
            has_length = any(k in (b"content-length", b"transfer-encoding") for k, _ in self._headers)
            if not has_length:
                self.keep_alive = False
                self._finish()
        return self._response

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset_message()

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True
        if self._head and self._status >= 200:
            self.keep_alive = self._parser.should_keep_alive()
            self._finish()
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self._body_len += len(body)
        if self._body_len > self.max_body:
            raise ProtocolError(502, f"upstream response body exceeds the limit of {self.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 100 Continue, 103 Early Hints: wait for the final response
            return
        self.keep_alive = self._parser.should_keep_alive()
        self._finish()

    def _finish(self) -> None:
        self._response = Response(self._status, self._headers, b"".join(self._body), self._reason)
