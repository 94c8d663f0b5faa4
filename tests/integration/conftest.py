"""Real processes on loopback: demo servers and proxies started with the CLI, stopped by PID."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from harness.demo_model import synthetic_rows
from harness.procs import Child, shadowline_command, spawn
from proxies.demo_server import infer_request_body

INFER = "/v2/models/demo/infer"


@pytest.fixture
def children():
    """Collects children a test starts; stops every one of them afterwards."""
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop()


@pytest.fixture
def start_demo(children, tmp_path):
    def start(name: str, *args: str) -> Child:
        child = spawn(name, shadowline_command("serve-demo", "--port", "0", *args), tmp_path / "logs" / f"{name}.log")
        children.append(child)
        return child

    return start


@pytest.fixture
def start_proxy(children, tmp_path):
    def start(incumbent: str, candidate: str | None = None, *args: str, run_dir: Path | None = None) -> Child:
        run_dir = run_dir or tmp_path / "run"
        argv = ["proxy", "http", "--listen", "127.0.0.1:0", "--incumbent", incumbent, "--run-dir", str(run_dir)]
        if candidate:
            argv += ["--candidate", candidate]
        child = spawn("proxy", shadowline_command(*argv, *args), tmp_path / "logs" / "proxy.log")
        child.run_dir = run_dir
        children.append(child)
        return child

    return start


def infer_bodies(n: int, seed: int = 1) -> list[bytes]:
    rows = synthetic_rows(n, seed)
    return [infer_request_body(rows[i : i + 1]) for i in range(n)]


def post(conn: http.client.HTTPConnection, body: bytes, headers: dict | None = None) -> http.client.HTTPResponse:
    conn.request("POST", INFER, body=body, headers={"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    response.read()
    return response


class RecordingUpstream:
    """A plain threaded HTTP/1.1 server that records what it receives and answers 200 {}."""

    def __init__(self, delay_s: float = 0.0, hang: bool = False):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the stdlib's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                if hang:
                    outer.release.wait(30)
                elif delay_s:
                    outer.release.wait(delay_s)
                payload = json.dumps({"outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [0]}]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> RecordingUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))
