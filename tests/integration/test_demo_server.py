"""DemoApp behind the real HTTPServer on loopback, spoken to with http.client."""

import asyncio
import http.client
import json
import socket

import numpy as np

from harness.demo_model import DemoModel, synthetic_rows
from proxies.demo_server import DemoApp, DemoKnobs, infer_request_body, parse_infer_response
from proxies.httpserver import HTTPServer

INFER = "/v2/models/demo/infer"


def serve_and_run(knobs: DemoKnobs, client):
    """Start the server on a free port, run the blocking `client(port)` in a thread, drain."""

    async def main():
        server = HTTPServer(DemoApp(knobs))
        await server.start("127.0.0.1", 0)
        try:
            return await asyncio.to_thread(client, server.port)
        finally:
            await server.drain(0.2)

    return asyncio.run(main())


def test_routes_infer_and_errors_over_one_keep_alive_connection():
    rows = synthetic_rows(4, 9)

    def client(port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        seen = {}
        conn.request("GET", "/v2/health/ready")
        response = conn.getresponse()
        seen["ready"] = (response.status, json.loads(response.read()))
        conn.request("HEAD", "/v2/models/demo")
        response = conn.getresponse()
        seen["head"] = (response.status, int(response.getheader("content-length")), response.read())
        for layout in ("named", "tensor"):
            conn.request("POST", INFER, infer_request_body(rows, layout, request_id=layout))
            response = conn.getresponse()
            seen[layout] = (response.status, response.read())
        conn.request("POST", INFER, b'{"inputs": [{"name": "zipcode"}]}')
        response = conn.getresponse()
        seen["bad"] = (response.status, json.loads(response.read()))
        conn.request("GET", "/v2/models/other")
        response = conn.getresponse()
        seen["missing"] = response.status
        response.read()
        conn.close()
        return seen

    seen = serve_and_run(DemoKnobs(), client)
    assert seen["ready"] == (200, {"ready": True})
    status, length, body = seen["head"]
    assert status == 200 and length > 0 and body == b""  # HEAD: length kept, body dropped
    expected_labels, expected_probs = DemoModel("incumbent").predict(rows)
    for layout in ("named", "tensor"):
        status, body = seen[layout]
        assert status == 200 and json.loads(body)["id"] == layout
        labels, probs = parse_infer_response(body)
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_array_equal(probs, expected_probs)
    assert seen["bad"] == (400, {"error": "unknown input 'zipcode'; expected age, income, tenure_months, "
                                 "num_products, balance, credit_score or a single 'features' tensor"})
    assert seen["missing"] == 404


def test_a_hung_inference_times_the_client_out():
    def client(port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.3)
        conn.request("POST", INFER, infer_request_body(synthetic_rows(1, 0)))
        try:
            conn.getresponse()
        except (socket.timeout, TimeoutError):
            return "timed out"
        finally:
            conn.close()
        return "answered"

    assert serve_and_run(DemoKnobs(hang_rate=1.0), client) == "timed out"
