"""The sans-I/O HTTP/1.1 codec: bytes in, requests and responses out, and back."""

from __future__ import annotations

import pytest

from proxies.http1 import (
    ProtocolError,
    RequestReader,
    ResponseReader,
    encode_request,
    encode_response,
    end_to_end,
    simple_response,
)


def test_pipelined_and_chunked_requests_come_out_whole_and_in_order():
    reader = RequestReader()
    data = (
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        b"GET /b?q=1 HTTP/1.1\r\nHost: h\r\nX-Thing: One\r\n\r\n"
        b"GET /c HTTP/1.0\r\n\r\n"
    )
    requests = []
    for i in range(0, len(data), 7):  # arbitrary fragmentation changes nothing
        requests += reader.feed(data[i : i + 7])
    assert [(r.method, r.target, r.body) for r in requests] == [(b"POST", b"/a", b"abcde"), (b"GET", b"/b?q=1", b""), (b"GET", b"/c", b"")]
    assert requests[1].header(b"x-thing") == b"One"  # names lower-cased, values kept
    assert [r.keep_alive for r in requests] == [True, True, False]
    assert not reader.in_message


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"NOPE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"x" * 101 + b"\r\n", 413),
        (b"GET / HTTP/1.1\r\nX: " + b"y" * 300 + b"\r\n\r\n", 431),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nExpect: magic\r\n\r\n", 417),
    ],
)
def test_bad_requests_raise_the_status_to_answer(data, status):
    reader = RequestReader(max_body=100, max_header_bytes=256)
    with pytest.raises(ProtocolError) as caught:
        reader.feed(data)
    assert caught.value.status == status


def test_expect_continue_is_flagged_until_the_body_arrives():
    reader = RequestReader()
    assert reader.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n") == []
    assert reader.continue_wanted and reader.in_message
    [request] = reader.feed(b"abc")
    assert request.body == b"abc" and not reader.continue_wanted


def test_response_reader_handles_length_chunked_interim_head_and_close_delimited():
    reader = ResponseReader()
    reader.expect(head=False)
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel") is None
    response = reader.feed(b"lo")
    assert (response.status, response.reason, response.body) == (200, b"OK", b"hello")
    assert reader.keep_alive

    reader.expect(head=False)
    response = reader.feed(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n")
    assert (response.status, response.body) == (404, b"no")

    reader.expect(head=True)  # a HEAD answer ends at its headers despite Content-Length
    response = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    assert (response.status, response.body, response.header(b"content-length")) == (200, b"", b"99")
    reader.expect(head=False)  # and the connection is still in step for the next one
    assert reader.feed(b"HTTP/1.1 204 No Content\r\n\r\n").status == 204

    closing = ResponseReader()
    closing.expect(head=False)
    assert closing.feed(b"HTTP/1.1 200 OK\r\n\r\nuntil close") is None
    response = closing.eof()
    assert response.body == b"until close" and not closing.keep_alive


def test_response_reader_rejects_garbage_and_oversize():
    reader = ResponseReader(max_body=4)
    reader.expect(head=False)
    with pytest.raises(ProtocolError):
        reader.feed(b"SPDY/9 200\r\n\r\n")
    reader = ResponseReader(max_body=4)
    reader.expect(head=False)
    with pytest.raises(ProtocolError, match="exceeds"):
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")


def test_end_to_end_drops_hop_by_hop_and_connection_named_headers():
    headers = [
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"3"),
        (b"content-type", b"application/json"),
        (b"x-request-id", b"abc"),
    ]
    assert end_to_end(headers) == [(b"content-type", b"application/json"), (b"x-request-id", b"abc")]


def test_encoders_frame_with_content_length():
    assert encode_request(b"POST", b"/x", [(b"host", b"h")], b"abc") == b"POST /x HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nabc"
    assert encode_request(b"GET", b"/", [], b"") == b"GET / HTTP/1.1\r\n\r\n"
    assert encode_response(200, [], b"hi") == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    assert encode_response(200, [], b"hi", head=True) == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
    assert encode_response(204, [], b"", keep_alive=False) == b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
    assert encode_response(299, [], b"", reason=b"Odd") == b"HTTP/1.1 299 Odd\r\ncontent-length: 0\r\n\r\n"


def test_a_request_survives_a_round_trip_through_encode_and_parse():
    wire = encode_request(b"PUT", b"/m?x=1", [(b"host", b"h"), (b"x-a", b"b")], b"\x00\xffbody")
    [request] = RequestReader().feed(wire)
    assert (request.method, request.target, request.body) == (b"PUT", b"/m?x=1", b"\x00\xffbody")
    assert end_to_end(request.headers) == [(b"host", b"h"), (b"x-a", b"b")]


def test_simple_response_escapes_the_message():
    reader = ResponseReader()
    reader.expect(head=False)
    response = reader.feed(simple_response(400, 'bad "field" \\ here', keep_alive=False))
    assert response.status == 400
    assert response.body == b'{"error": "bad \\"field\\" \\\\ here"}'
