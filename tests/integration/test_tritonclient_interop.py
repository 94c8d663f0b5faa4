"""Interop with a client nobody here wrote: NVIDIA's `tritonclient`, gRPC and HTTP.

The demo servers are called with `tritonclient.grpc` / `tritonclient.http` directly and through
`shadowline proxy grpc` / `shadowline proxy http`; the decoded numpy outputs must be identical,
and the proxies' captures must hold the mirrored calls.

`tritonclient.grpc` registers `inference.*` messages (from its own `grpc_service.proto`) in
protobuf's default descriptor pool, and so does `harness.codecs.grpc_v2` (imported by other tests in
this session): the second import fails with "duplicate symbol 'inference.ServerLiveRequest'"
(the same clash as `tritonclient.grpc` with `mlserver`). So the gRPC client runs in a child
interpreter (`_GRPC_CLIENT` below) and reports back through an .npz and a JSON file.
`tritonclient.http` uses no protobuf and runs in this process.

Binary data: over gRPC tritonclient always sends `raw_input_contents`, and the demo answers
raw `raw_output_contents` then, so the gRPC path is the raw one. Over HTTP the demo server
speaks JSON only: Triton's binary tensor extension (`Inference-Header-Content-Length`, a
JSON header followed by raw tensor bytes) is not supported; such a request is refused with a
clear 400 ("request body is not valid JSON: ..."; the detail depends on the tensor bytes) and
the same refusal comes back through the proxy. `binary_data=True` on a requested output is only a request; the demo
answers in JSON, which tritonclient decodes just the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tritonclient  # noqa: F401 - installed by `make test` (see the Makefile); a missing one fails, never skips

from harness.capture import CaptureReader
from harness.demo_model import FEATURES, synthetic_rows
from harness.procs import shadowline_command, spawn

N_ROWS = 5  # rows per infer call
CALLS = 3  # infer calls per client run

# Runs in a child interpreter: tritonclient.grpc cannot share a process with harness.codecs.grpc_v2.
_GRPC_CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tritonclient.grpc as tg
    from harness.demo_model import FEATURES, synthetic_rows

    url, n_rows, calls, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    client = tg.InferenceServerClient(url=url)
    report = {"live": client.is_server_live(), "ready": client.is_server_ready(),
              "model_ready": client.is_model_ready("demo")}
    meta = client.get_model_metadata("demo", as_json=True)
    report["metadata"] = {"name": meta["name"], "platform": meta["platform"],
                          "inputs": meta["inputs"], "outputs": meta["outputs"]}
    arrays, raw = {}, []
    for call in range(calls):
        rows = synthetic_rows(n_rows, 100 + call)
        inputs = []
        for i, name in enumerate(FEATURES):
            tensor = tg.InferInput(name, [n_rows], "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, i]))
            inputs.append(tensor)
        outputs = [tg.InferRequestedOutput("label"), tg.InferRequestedOutput("probabilities")]
        result = client.infer("demo", inputs=inputs, outputs=outputs, request_id=f"tc-{call}")
        response = result.get_response()
        raw.append({"id": response.id, "raw_outputs": len(response.raw_output_contents),
                    "typed": [o.HasField("contents") for o in response.outputs]})
        arrays[f"label_{call}"] = result.as_numpy("label")
        arrays[f"probabilities_{call}"] = result.as_numpy("probabilities")
    # An unknown model: the server's refusal, as tritonclient reports it.
    try:
        client.get_model_metadata("nope")
        report["unknown_model"] = None
    except tg.InferenceServerException as exc:
        report["unknown_model"] = [exc.status(), exc.message()]
    report["responses"] = raw
    client.close()
    np.savez(out + ".npz", **arrays)
    with open(out + ".json", "w") as f:
        json.dump(report, f)
    """
)


def _start(children, tmp_path, name: str, *args: str):
    child = spawn(name, shadowline_command(*args), tmp_path / "logs" / f"{name}.log")
    children.append(child)
    return child


def _grpc_client(url: str, out) -> tuple[dict, dict[str, np.ndarray]]:
    result = subprocess.run(
        [sys.executable, "-c", _GRPC_CLIENT, url, str(N_ROWS), str(CALLS), str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with np.load(f"{out}.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads(open(f"{out}.json").read()), arrays


def _assert_identical(direct: dict[str, np.ndarray], proxied: dict[str, np.ndarray]) -> None:
    assert sorted(direct) == sorted(proxied)
    for key, value in direct.items():
        assert value.dtype == proxied[key].dtype, key
        assert value.shape == proxied[key].shape, key
        assert np.array_equal(value, proxied[key]), key


def test_tritonclient_grpc_direct_and_through_grpc_proxy(children, tmp_path):
    incumbent = _start(children, tmp_path, "incumbent", "serve-demo", "--grpc", "--port", "0")
    candidate = _start(children, tmp_path, "candidate", "serve-demo", "--grpc", "--role", "candidate",
                       "--variant", "identical", "--port", "0")
    run_dir = tmp_path / "run"
    proxy = _start(children, tmp_path, "proxy", "proxy", "grpc", "--listen", "127.0.0.1:0",
                   "--incumbent", f"{incumbent.host}:{incumbent.port}",
                   "--candidate", f"{candidate.host}:{candidate.port}", "--run-dir", str(run_dir))

    direct_report, direct = _grpc_client(f"{incumbent.host}:{incumbent.port}", tmp_path / "direct")
    proxied_report, proxied = _grpc_client(f"{proxy.host}:{proxy.port}", tmp_path / "proxied")

    assert direct_report == proxied_report
    assert direct_report["live"] and direct_report["ready"] and direct_report["model_ready"]
    meta = direct_report["metadata"]
    assert meta["name"] == "demo"
    assert [i["name"] for i in meta["inputs"]] == list(FEATURES)
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"label": "INT64", "probabilities": "FP32"}
    status, message = direct_report["unknown_model"]
    assert status == "StatusCode.NOT_FOUND" and "unknown model 'nope'" in message
    # tritonclient sends raw_input_contents, so the demo answers raw: the raw path, both outputs.
    assert [r["raw_outputs"] for r in direct_report["responses"]] == [2] * CALLS
    assert [r["id"] for r in direct_report["responses"]] == [f"tc-{c}" for c in range(CALLS)]

    _assert_identical(direct, proxied)
    for call in range(CALLS):
        label, probabilities = direct[f"label_{call}"], direct[f"probabilities_{call}"]
        assert label.dtype == np.int64 and label.shape == (N_ROWS,)
        assert probabilities.dtype == np.float32 and probabilities.shape == (N_ROWS, 2)
        assert np.array_equal(label, probabilities.argmax(axis=1))

    assert proxy.stop() == 0
    with CaptureReader(run_dir / "capture.db") as capture:
        columns = capture.columns()
    routes = list(columns["route"])
    infers = [i for i, r in enumerate(routes) if r.endswith("/ModelInfer")]
    assert len(infers) == CALLS, routes
    for arm in ("incumbent", "candidate"):  # every infer call mirrored, every arm answered OK
        assert all(columns[f"{arm}_present"][i] and columns[f"{arm}_status"][i] == 0 for i in infers)
    assert any(r.endswith("/ModelMetadata") for r in routes), routes


def _http_infer(client, tc, rows: np.ndarray, *, binary_in: bool = False, binary_out: bool = False, request_id=""):
    inputs = []
    for i, name in enumerate(FEATURES):
        tensor = tc.InferInput(name, [len(rows)], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, i]), binary_data=binary_in)
        inputs.append(tensor)
    outputs = [tc.InferRequestedOutput("label", binary_data=binary_out),
               tc.InferRequestedOutput("probabilities", binary_data=binary_out)]
    return client.infer("demo", inputs=inputs, outputs=outputs, request_id=request_id)


def _http_client(url: str) -> tuple[dict, dict[str, np.ndarray]]:
    import tritonclient.http as th  # no protobuf: safe in this process

    client = th.InferenceServerClient(url=url, network_timeout=10.0)
    try:
        report = {"live": client.is_server_live(), "ready": client.is_server_ready(),
                  "model_ready": client.is_model_ready("demo"), "metadata": client.get_model_metadata("demo")}
        arrays, responses = {}, []
        for call in range(CALLS):
            rows = synthetic_rows(N_ROWS, 100 + call)
            # JSON in and out, then JSON in with binary outputs asked for.
            for mode, binary_out in (("json", False), ("binout", True)):
                result = _http_infer(client, th, rows, binary_out=binary_out, request_id=f"tc-{call}")
                responses.append(result.get_response())
                arrays[f"label_{mode}_{call}"] = result.as_numpy("label")
                arrays[f"probabilities_{mode}_{call}"] = result.as_numpy("probabilities")
        report["responses"] = responses
        # Binary tensor data in the request (Inference-Header-Content-Length): not supported.
        with pytest.raises(th.InferenceServerException) as refused:
            _http_infer(client, th, synthetic_rows(N_ROWS, 7), binary_in=True, binary_out=True)
        report["binary_in"] = [refused.value.status(), refused.value.message()]
        with pytest.raises(th.InferenceServerException) as unknown:
            client.get_model_metadata("nope")
        report["unknown_model"] = [unknown.value.status(), unknown.value.message()]
    finally:
        client.close()
    return report, arrays


def test_tritonclient_http_direct_and_through_http_proxy(children, tmp_path):
    incumbent = _start(children, tmp_path, "incumbent", "serve-demo", "--port", "0")
    candidate = _start(children, tmp_path, "candidate", "serve-demo", "--role", "candidate",
                       "--variant", "identical", "--port", "0")
    run_dir = tmp_path / "run"
    proxy = _start(children, tmp_path, "proxy", "proxy", "http", "--listen", "127.0.0.1:0",
                   "--incumbent", incumbent.url, "--candidate", candidate.url, "--run-dir", str(run_dir))

    direct_report, direct = _http_client(f"{incumbent.host}:{incumbent.port}")
    proxied_report, proxied = _http_client(f"{proxy.host}:{proxy.port}")

    assert direct_report == proxied_report
    assert direct_report["live"] and direct_report["ready"] and direct_report["model_ready"]
    meta = direct_report["metadata"]
    assert meta["name"] == "demo" and [i["name"] for i in meta["inputs"]] == list(FEATURES)
    # The demo answers JSON even when binary outputs are asked for: data inline, no binary_data_size.
    for response in direct_report["responses"]:
        assert all("data" in o and "binary_data_size" not in o.get("parameters", {}) for o in response["outputs"])
    status, message = direct_report["binary_in"]
    assert status == "400" and "request body is not valid JSON" in message, direct_report["binary_in"]
    status, message = direct_report["unknown_model"]
    assert status == "404" and "unknown model 'nope'" in message

    _assert_identical(direct, proxied)
    for call in range(CALLS):
        for mode in ("json", "binout"):
            label, probabilities = direct[f"label_{mode}_{call}"], direct[f"probabilities_{mode}_{call}"]
            assert label.dtype == np.int64 and label.shape == (N_ROWS,)
            assert probabilities.dtype == np.float32 and probabilities.shape == (N_ROWS, 2)
            assert np.array_equal(label, probabilities.argmax(axis=1))
        assert np.array_equal(direct[f"probabilities_json_{call}"], direct[f"probabilities_binout_{call}"])

    assert proxy.stop() == 0
    with CaptureReader(run_dir / "capture.db") as capture:
        columns = capture.columns()
    infers = [i for i, (m, r) in enumerate(zip(columns["method"], columns["route"]))
              if m == "POST" and r.endswith("/infer")]
    assert len(infers) == 2 * CALLS + 1, list(zip(columns["method"], columns["route"]))
    ok = [i for i in infers if columns["incumbent_status"][i] == 200]
    refused = [i for i in infers if columns["incumbent_status"][i] == 400]
    assert len(ok) == 2 * CALLS and len(refused) == 1
    for arm in ("incumbent", "candidate"):  # mirrored: the candidate saw the same, answered the same
        assert all(columns[f"{arm}_present"][i] for i in infers)
        assert [columns[f"{arm}_status"][i] for i in infers] == [columns["incumbent_status"][i] for i in infers]
