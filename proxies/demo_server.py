"""The demo model server: Open Inference Protocol v2 REST over `harness.demo_model`.

`DemoApp` is an app for `proxies.httpserver` (an async callable `Request -> Response`); it
does no socket I/O itself, so tests call it directly. One code base serves the incumbent and
the candidate; `DemoKnobs` picks the weights and the misbehaviour (latency, errors, hangs,
NaN handling, a crash) that the shadow proxy and the judge must cope with.

Routes (HEAD is answered like GET; the server layer drops the body):

    GET  /v2                                   server metadata
    GET  /v2/health/live, /v2/health/ready     liveness, readiness
    GET  /v2/models/{name}[/versions/{v}]      model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    POST /v2/models/{name}[/versions/{v}]/infer

An infer request names one input per feature (`shape [N]` or `[N, 1]`) or sends a single
`features` tensor of shape `[N, F]`; the response has `label` (INT64 [N]) and
`probabilities` (FP32 [N, 2]). Errors are `{"error": "..."}` with 400, 404, 405 or 500.
The knobs (latency, errors, hangs, crash) apply to infer requests only, so health checks
keep telling the truth about the process.

With `dependency` set (`host:port` of `proxies.feature_store`, usually through
`proxies.toxic_proxy`), each valid infer request first asks that dependency for a value over
a pooled TCP connection, within `dependency_timeout_ms`. The value is not fed to the model
(a healthy dependency leaves predictions unchanged); the point is what its failures become:
a timeout answers 504 `dependency timed out`, a reset, refusal or close answers 502
`dependency unavailable: reset|refused|closed`, so the faults show as such in a shadow run.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
from dataclasses import dataclass

import numpy as np

from harness import __version__
from harness.demo_model import FEATURES, ROLES, VARIANTS, DemoModel
from proxies.http1 import Request, Response

NAN_BEHAVIOURS = ("reject", "crash")
OUTPUTS = ("label", "probabilities")
TENSOR_INPUT = "features"  # the name of the single [N, F] input of the tensor layout
NUMERIC_DATATYPES = ("FP32", "FP64", "INT32", "INT64")
_INTEGER_DATATYPES = ("INT32", "INT64")
_FEATURE_INDEX = {name: i for i, name in enumerate(FEATURES)}
_JSON = [(b"content-type", b"application/json")]
_compact_json = json.JSONEncoder(separators=(",", ":")).encode  # built once: the C encoder, no spaces


@dataclass
class DemoKnobs:
    """What a demo server is: which weights it serves and how it misbehaves."""

    role: str = "incumbent"  # incumbent | candidate
    variant: str = "subtle"  # candidate weights: identical | subtle | broken (ignored for the incumbent)
    model_name: str = "demo"
    version: str | None = None  # default: "1" for the incumbent, "2" for the candidate
    latency_ms: float = 0.0  # fixed latency added to every infer request
    jitter_ms: float = 0.0  # plus a uniform 0..jitter_ms
    error_rate: float = 0.0  # fraction of infer requests answered 500
    hang_rate: float = 0.0  # fraction of infer requests never answered
    nan_behaviour: str = "reject"  # NaN/Inf/null input: "reject" (clean 400) or "crash" (500)
    crash_after: int | None = None  # serve this many infer requests, then os._exit(1) on the next
    seed: int = 0  # for the error, hang and jitter draws
    dependency: str | None = None  # host:port of a feature store asked on every infer request
    dependency_timeout_ms: float = 200.0  # for the whole exchange with it, connect included

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.nan_behaviour not in NAN_BEHAVIOURS:
            raise ValueError(f"nan_behaviour must be one of {NAN_BEHAVIOURS}, got {self.nan_behaviour!r}")
        for name in ("latency_ms", "jitter_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("error_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.error_rate + self.hang_rate > 1.0:
            raise ValueError("error_rate + hang_rate must not exceed 1")
        if self.crash_after is not None and self.crash_after < 0:
            raise ValueError(f"crash_after must be >= 0 or None, got {self.crash_after}")
        if self.version is None:
            self.version = "1" if self.role == "incumbent" else "2"
        if self.dependency is not None:
            _split_address(self.dependency)
        if not self.dependency_timeout_ms > 0:
            raise ValueError(f"dependency_timeout_ms must be > 0, got {self.dependency_timeout_ms}")


class BadRequest(Exception):
    """An infer request the protocol says to answer 400; the message names the input."""


def _json_response(status: int, payload: object, headers: list | None = None) -> Response:
    return Response(status, (headers or []) + _JSON, _compact_json(payload).encode())


def _error(status: int, message: str, headers: list | None = None) -> Response:
    return _json_response(status, {"error": message}, headers)


class DemoApp:
    """The v2 REST app for one model; see the module docstring for routes and knobs."""

    def __init__(self, knobs: DemoKnobs | None = None):
        self.knobs = knobs = knobs or DemoKnobs()
        self.model = DemoModel(knobs.role, knobs.variant)
        self.inference_count = 0  # infer requests received (the crash_after counter)
        self.dependency = _Dependency(knobs.dependency, knobs.dependency_timeout_ms) if knobs.dependency else None
        self._random = random.Random(knobs.seed)  # stdlib: one cheap scalar draw per request
        name, version = knobs.model_name, knobs.version

        # Everything constant is encoded once.
        server = {"name": "shadowline-demo", "version": __version__, "extensions": []}
        self._server_metadata = _json_response(200, server)
        self._live = _json_response(200, {"live": True})
        self._ready = _json_response(200, {"ready": True})
        self._model_ready = _json_response(200, {"name": name, "ready": True})
        self._server_routes = {
            (): self._server_metadata,
            ("health", "live"): self._live,
            ("health", "ready"): self._ready,
        }
        self._model_metadata = _json_response(
            200,
            {
                "name": name,
                "versions": [version],
                "platform": "numpy",
                "inputs": [{"name": f, "datatype": "FP32", "shape": [-1]} for f in FEATURES],
                "outputs": [
                    {"name": "label", "datatype": "INT64", "shape": [-1]},
                    {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
                ],
                # The other accepted layout: one tensor, columns in this order.
                "parameters": {"tensor_input": TENSOR_INPUT, "feature_order": list(FEATURES)},
            },
        )
        self._response_head = _compact_json({"model_name": name, "model_version": version})[:-1].encode() + b","
        self._infer_paths = {
            f"/v2/models/{name}/infer".encode(),
            f"/v2/models/{name}/versions/{version}/infer".encode(),
        }

    async def __call__(self, request: Request) -> Response:
        path = request.target.split(b"?", 1)[0]
        if path in self._infer_paths:  # the hot path first
            if request.method != b"POST":
                return _not_allowed(request.method, path.decode(), b"POST")
            return await self._infer(request.body)
        return self._route(request.method, path.decode("utf-8", "replace").rstrip("/"))

    def _route(self, method: bytes, path: str) -> Response:
        parts = path.split("/")[1:]  # "/v2/models/demo" -> ["v2", "models", "demo"]
        if not parts or parts[0] != "v2":
            return _error(404, f"no route {path or '/'}")
        rest = parts[1:]
        response = self._server_routes.get(tuple(rest))
        if response is not None:
            return response if method in (b"GET", b"HEAD") else _not_allowed(method, path, b"GET, HEAD")
        if len(rest) < 2 or rest[0] != "models":
            return _error(404, f"no route {path}")
        name, tail = rest[1], rest[2:]
        if name != self.knobs.model_name:
            return _error(404, f"unknown model '{name}'; this server serves '{self.knobs.model_name}'")
        if tail[:1] == ["versions"]:
            if len(tail) < 2:
                return _error(404, f"no route {path}")
            if tail[1] != self.knobs.version:
                return _error(404, f"model '{name}' has no version '{tail[1]}'; it has '{self.knobs.version}'")
            tail = tail[2:]
        if tail == []:
            response, allowed = self._model_metadata, b"GET, HEAD"
        elif tail == ["ready"]:
            response, allowed = self._model_ready, b"GET, HEAD"
        elif tail == ["infer"]:  # only reached with a method other than POST or an odd spelling
            return _not_allowed(method, path, b"POST") if method != b"POST" else _error(404, f"no route {path}")
        else:
            return _error(404, f"no route {path}")
        return response if method in (b"GET", b"HEAD") else _not_allowed(method, path, allowed)

    async def _infer(self, body: bytes) -> Response:
        knobs = self.knobs
        self.inference_count += 1
        if knobs.crash_after is not None and self.inference_count > knobs.crash_after:
            self._crash()
        # Draw at arrival, in arrival order, so a seed gives the same plan however slow we are.
        fate = self._random.random()
        delay_ms = knobs.latency_ms + (self._random.random() * knobs.jitter_ms if knobs.jitter_ms else 0.0)
        if fate < knobs.hang_rate:
            await asyncio.get_running_loop().create_future()  # never resolves: the client gives up
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if fate < knobs.hang_rate + knobs.error_rate:
            return _error(500, f"injected error (error_rate={knobs.error_rate:g})")
        try:
            payload = _load_json(body)
            x = _features(payload["inputs"])
            wanted = _requested_outputs(payload)
            request_id = payload.get("id")
            if request_id is not None and not isinstance(request_id, str):
                raise BadRequest(f"'id' must be a string, got {type(request_id).__name__}")
        except BadRequest as exc:
            return _error(400, str(exc))
        finite = np.isfinite(x)
        if not finite.all():
            return self._non_finite(x, finite)
        if self.dependency is not None:
            try:
                await self.dependency.fetch(self.inference_count)
            except DependencyError as exc:
                return _error(exc.status, str(exc))
        labels, probabilities = self.model.predict(x)
        return Response(200, _JSON, self._encode(request_id, wanted, labels, probabilities))

    def _non_finite(self, x: np.ndarray, finite: np.ndarray) -> Response:
        row, col = (int(i[0]) for i in np.nonzero(~finite))
        if self.knobs.nan_behaviour == "crash":
            # What a careless server says when NaN reaches scikit-learn: an opaque 500.
            return _error(500, "ValueError: Input X contains NaN or infinity.")
        kind = "NaN or null" if math.isnan(x[row, col]) else "Inf"
        return _error(400, f"input '{FEATURES[col]}' holds {kind} at row {row}; this model needs finite numbers")

    def _encode(
        self, request_id: str | None, wanted: tuple[str, ...], labels: np.ndarray, probabilities: np.ndarray
    ) -> bytes:
        n = len(labels)
        parts = [self._response_head]
        if request_id is not None:
            parts += (b'"id":', _compact_json(request_id).encode(), b",")
        outputs = []
        if "label" in wanted:
            outputs.append(
                b'{"name":"label","datatype":"INT64","shape":[%d],"data":%s}'
                % (n, _compact_json(labels.tolist()).encode())
            )
        if "probabilities" in wanted:
            outputs.append(
                b'{"name":"probabilities","datatype":"FP32","shape":[%d,2],"data":%s}'
                % (n, _compact_json(probabilities.ravel().tolist()).encode())
            )
        parts += (b'"outputs":[', b",".join(outputs), b"]}")
        return b"".join(parts)

    def _crash(self) -> None:
        os.write(2, f"demo server: crash_after={self.knobs.crash_after} reached, exiting abruptly\n".encode())
        os._exit(1)


class DependencyError(Exception):
    """The dependency failed; `status` is what the model server answers (502 or 504)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"dependency must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


class _Dependency:
    """A pooled client of the feature store's line protocol (`GET <n>` -> `OK <value>`)."""

    def __init__(self, address: str, timeout_ms: float, pool_size: int = 16):
        self.host, self.port = _split_address(address)
        self.timeout = timeout_ms / 1000.0
        self.pool_size = pool_size
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def _take(self):
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():  # the peer may have closed it while idle
                return reader, writer
            writer.close()
        return None

    async def fetch(self, key: int) -> str:
        conn, ok = None, False
        try:
            async with asyncio.timeout(self.timeout):
                conn = self._take() or await asyncio.open_connection(self.host, self.port)
                conn[1].write(b"GET %d\n" % key)
                line = await conn[0].readuntil(b"\n")
            if not line.startswith(b"OK "):
                raise DependencyError(502, f"dependency answered {line[:80].decode('utf-8', 'replace').strip()!r}")
            ok = True
            return line[3:].decode().strip()
        except TimeoutError:  # before OSError: it is one
            raise DependencyError(504, "dependency timed out") from None
        except ConnectionResetError:
            raise DependencyError(502, "dependency unavailable: reset") from None
        except ConnectionRefusedError:
            raise DependencyError(502, "dependency unavailable: refused") from None
        except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionAbortedError):
            raise DependencyError(502, "dependency unavailable: closed") from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            raise DependencyError(502, f"dependency unavailable: {type(exc).__name__}") from None
        finally:
            if conn is not None:
                if ok and len(self.idle) < self.pool_size:
                    self.idle.append(conn)
                else:  # a late answer on it would be read as the next one's: never reuse
                    conn[1].transport.abort()


def _not_allowed(method: bytes, path: str, allowed: bytes) -> Response:
    return _error(405, f"{method.decode()} not allowed on {path}; use {allowed.decode()}", [(b"allow", allowed)])


def _load_json(body: bytes) -> dict:
    try:
        payload = json.loads(body)  # accepts NaN / Infinity tokens, as careless clients send them
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    if not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise BadRequest("request has no 'inputs' list")
    return payload


def _requested_outputs(payload: dict) -> tuple[str, ...]:
    requested = payload.get("outputs")
    if not requested:
        return OUTPUTS
    if not isinstance(requested, list):
        raise BadRequest("'outputs' must be a list")
    names = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in OUTPUTS:
            raise BadRequest(f"unknown output {name!r}; this model has {OUTPUTS}")
        names.append(name)
    return tuple(names)


def _features(inputs: list) -> np.ndarray:
    """The (N, F) float64 feature matrix from either input layout; BadRequest names the input."""
    names = []
    for item in inputs:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise BadRequest("every input needs a string 'name'")
        names.append(name)
    if TENSOR_INPUT in names:
        others = [n for n in names if n != TENSOR_INPUT]
        if others:
            raise BadRequest(f"input '{others[0]}' cannot be sent alongside the single '{TENSOR_INPUT}' tensor")
        if len(inputs) > 1:
            raise BadRequest(f"input '{TENSOR_INPUT}' is given twice")
        x = _tensor(inputs[0], TENSOR_INPUT)
        if x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise BadRequest(f"input '{TENSOR_INPUT}' must have shape [N, {len(FEATURES)}], got {list(x.shape)}")
        if x.shape[0] == 0:
            raise BadRequest(f"input '{TENSOR_INPUT}' has no rows")
        return x

    columns: dict[str, np.ndarray] = {}
    for name, item in zip(names, inputs):
        if name not in _FEATURE_INDEX:
            expected = ", ".join(FEATURES)
            raise BadRequest(f"unknown input '{name}'; expected {expected} or a single '{TENSOR_INPUT}' tensor")
        if name in columns:
            raise BadRequest(f"input '{name}' is given twice")
        column = _tensor(item, name)
        if column.ndim not in (1, 2) or (column.ndim == 2 and column.shape[1] != 1):
            raise BadRequest(f"input '{name}' must have shape [N] or [N, 1], got {list(column.shape)}")
        columns[name] = column.reshape(-1)
    missing = [f for f in FEATURES if f not in columns]
    if missing:
        raise BadRequest(f"missing input {', '.join(repr(m) for m in missing)}")
    n = len(columns[FEATURES[0]])
    for name in FEATURES[1:]:
        if len(columns[name]) != n:
            raise BadRequest(f"input '{name}' has {len(columns[name])} rows but '{FEATURES[0]}' has {n}")
    if n == 0:
        raise BadRequest(f"input '{FEATURES[0]}' has no rows")
    return np.column_stack([columns[f] for f in FEATURES])


def _tensor(item: dict, name: str) -> np.ndarray:
    """One input's data as float64 in its declared shape; null becomes NaN."""
    datatype = item.get("datatype")
    if datatype not in NUMERIC_DATATYPES:
        raise BadRequest(f"input '{name}' has datatype {datatype!r}; expected one of {', '.join(NUMERIC_DATATYPES)}")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"input '{name}' has invalid shape {shape!r}; expected a list of non-negative integers")
    data = item.get("data")
    if not isinstance(data, list):
        raise BadRequest(f"input '{name}' has no 'data' list")
    try:
        raw = np.asarray(data)
    except ValueError:
        raise BadRequest(f"input '{name}' has ragged nested data") from None
    kind = raw.dtype.kind
    if kind == "f":
        values = raw
    elif kind in "iu":
        values = raw.astype(np.float64)
    elif kind == "O":  # null among numbers, or something that is not a number at all
        values = _objects_to_float(raw, name)
    else:  # strings, booleans
        raise BadRequest(f"input '{name}' holds non-numeric data")
    expected = math.prod(shape)
    if values.size != expected:
        raise BadRequest(f"input '{name}' declares shape {shape} ({expected} values) but holds {values.size}")
    if values.ndim > 1 and list(values.shape) != shape:
        raise BadRequest(f"input '{name}' declares shape {shape} but its nested data has shape {list(values.shape)}")
    if datatype in _INTEGER_DATATYPES and kind not in "iu":
        finite = values[np.isfinite(values)]
        if not np.array_equal(finite, np.rint(finite)):
            raise BadRequest(f"input '{name}' is {datatype} but holds non-integer values")
    return values.reshape(shape)


def _objects_to_float(raw: np.ndarray, name: str) -> np.ndarray:
    flat = raw.ravel()
    out = np.empty(flat.size, dtype=np.float64)
    for i, value in enumerate(flat):
        if value is None:
            out[i] = np.nan
        elif type(value) in (int, float):  # not bool: true is not a number here
            try:
                out[i] = float(value)
            except OverflowError:  # an int beyond float range
                raise BadRequest(f"input '{name}' holds a number out of range") from None
        else:
            raise BadRequest(f"input '{name}' holds non-numeric data")
    return out.reshape(raw.shape)


def infer_request_body(rows: np.ndarray, layout: str = "named", request_id: str | None = None) -> bytes:
    """A v2 infer request body for feature rows of shape (N, F), in either input layout."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
        raise ValueError(f"rows must have shape (N, {len(FEATURES)}), got {rows.shape}")
    n = rows.shape[0]
    if layout == "named":
        inputs = [
            {"name": f, "shape": [n], "datatype": "FP32", "data": rows[:, i].tolist()} for i, f in enumerate(FEATURES)
        ]
    elif layout == "tensor":
        shape = [n, len(FEATURES)]
        inputs = [{"name": TENSOR_INPUT, "shape": shape, "datatype": "FP32", "data": rows.ravel().tolist()}]
    else:
        raise ValueError(f"layout must be 'named' or 'tensor', got {layout!r}")
    payload = {"id": request_id, "inputs": inputs} if request_id is not None else {"inputs": inputs}
    return _compact_json(payload).encode()


def parse_infer_response(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Labels int64 (N,) and probabilities float32 (N, 2) from a v2 infer response body.

    Raises ValueError for an error body or a response without both outputs.
    """
    payload = json.loads(body)  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    if not isinstance(payload, dict) or "error" in payload or not isinstance(payload.get("outputs"), list):
        raise ValueError(f"not an infer response: {body[:200]!r}")
    outputs = {o.get("name"): o.get("data") for o in payload["outputs"] if isinstance(o, dict)}
    missing = [name for name in OUTPUTS if not isinstance(outputs.get(name), list)]
    if missing:
        raise ValueError(f"infer response lacks output(s) {missing}")
    try:
        labels = np.asarray(outputs["label"], dtype=np.int64).reshape(-1)
        probabilities = np.asarray(outputs["probabilities"], dtype=np.float32).reshape(-1, 2)
    except (TypeError, ValueError) as exc:  # a body damaged in transit, say
        raise ValueError(f"infer response outputs are malformed: {exc}") from None
    if len(labels) != len(probabilities):
        raise ValueError(f"infer response has {len(labels)} labels but {len(probabilities)} probability rows")
    return labels, probabilities
