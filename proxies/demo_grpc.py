"""The demo model server over Open Inference Protocol v2 gRPC (`inference.GRPCInferenceService`).

The same model and knobs as the REST demo (`proxies.demo_server`): a `DemoApp` is kept for
its state (model, seeded draws, crash counter, dependency client) and its request validation
(`_features`, `_requested_outputs`, `BadRequest`: private helpers of demo_server, imported
on purpose so both protocols accept and refuse exactly the same requests with the same
messages). Only the wire format and the status codes differ:

    REST 400 -> INVALID_ARGUMENT     REST 404 -> NOT_FOUND      REST 500 -> INTERNAL
    REST 502 -> UNAVAILABLE          REST 504 -> DEADLINE_EXCEEDED
    a hang -> no answer until the client's deadline (or it cancels)

ModelInfer accepts typed or raw inputs, one input per feature or one `features` [N, F]
tensor, in any numeric datatype the REST demo accepts (FP32, FP64, INT32, INT64). The response
has `label` (INT64 [N]) and `probabilities` (FP32 [N, 2]), typed by default; raw
(`raw_output_contents`) when the inputs came raw or the request parameter `raw_output` is true.
The server offers gRPC server reflection for its service.

    python -m proxies.demo_grpc --listen 127.0.0.1:0 --role candidate --variant broken
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
from collections.abc import Callable

import grpc
import numpy as np
from grpc_reflection.v1alpha import reflection

from harness import __version__
from harness.codecs.base import DecodeError
from harness.codecs.v2grpc import tensor_to_contents, tensor_to_raw, tensor_values
from harness.demo_model import FEATURES
from harness.procs import ready_line
from proxies.demo_server import (  # private helpers: the REST demo's validation, reused as is
    TENSOR_INPUT,
    BadRequest,
    DemoApp,
    DemoKnobs,
    DependencyError,
    _features,
    _requested_outputs,
)
from harness.codecs.grpc_v2 import SERVICE, pb

class _NotFound(BadRequest):
    """An infer request for a model or version this server does not serve."""


_STATUS_OF_HTTP = {502: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}


class DemoGrpcService:
    """The six RPCs of the v2 gRPC service for one demo model; see the module docstring."""

    def __init__(self, knobs: DemoKnobs | None = None):
        self.app = DemoApp(knobs)  # model, seeded draws, inference counter, dependency client
        self.knobs = knobs = self.app.knobs
        self._server_metadata = pb.ServerMetadataResponse(name="shadowline-demo", version=__version__)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        self._model_metadata = pb.ModelMetadataResponse(
            name=knobs.model_name,
            versions=[knobs.version],
            platform="numpy",
            inputs=[tensor(name=f, datatype="FP32", shape=[-1]) for f in FEATURES],
            outputs=[tensor(name="label", datatype="INT64", shape=[-1]),
                     tensor(name="probabilities", datatype="FP32", shape=[-1, 2])],
        )

    # -- health and metadata ---------------------------------------------------------------

    async def server_live(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    async def _check_model(self, name: str, version: str, context) -> None:
        if name != self.knobs.model_name:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"unknown model '{name}'; this server serves '{self.knobs.model_name}'")
        if version and version != self.knobs.version:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"model '{name}' has no version '{version}'; it has '{self.knobs.version}'")

    async def model_ready(self, request, context):
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=True)

    async def server_metadata(self, request, context):
        return self._server_metadata

    async def model_metadata(self, request, context):
        await self._check_model(request.name, request.version, context)
        return self._model_metadata

    # -- inference -------------------------------------------------------------------------

    async def model_infer(self, body: bytes, context) -> bytes:
        """Raw bytes in and out, so a malformed message is INVALID_ARGUMENT (not INTERNAL)."""
        app, knobs = self.app, self.knobs
        app.inference_count += 1
        if knobs.crash_after is not None and app.inference_count > knobs.crash_after:
            app._crash()
        fate = app._random.random()  # drawn at arrival, in arrival order, like the REST demo
        delay_ms = knobs.latency_ms + (app._random.random() * knobs.jitter_ms if knobs.jitter_ms else 0.0)
        if fate < knobs.hang_rate:
            await asyncio.get_running_loop().create_future()  # never resolves; cancelled at the deadline
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000.0)
        if fate < knobs.hang_rate + knobs.error_rate:
            await context.abort(grpc.StatusCode.INTERNAL, f"injected error (error_rate={knobs.error_rate:g})")
        try:
            request, x, wanted = self._parse(body)
        except _NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finite = np.isfinite(x)
        if not finite.all():
            row, col = (int(i[0]) for i in np.nonzero(~finite))
            if knobs.nan_behaviour == "crash":
                await context.abort(grpc.StatusCode.INTERNAL, "ValueError: Input X contains NaN or infinity.")
            kind = "NaN" if math.isnan(x[row, col]) else "Inf"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"input '{FEATURES[col]}' holds {kind} at row {row}; this model needs finite numbers")
        if app.dependency is not None:
            try:
                await app.dependency.fetch(app.inference_count)
            except DependencyError as exc:
                await context.abort(_STATUS_OF_HTTP.get(exc.status, grpc.StatusCode.INTERNAL), str(exc))
        labels, probabilities = app.model.predict(x)
        raw = bool(request.raw_input_contents) or (
            "raw_output" in request.parameters and request.parameters["raw_output"].bool_param)
        return self._encode(request.id, wanted, labels, probabilities, raw)

    def _parse(self, body: bytes):
        """(request, x (N, F) float64, wanted outputs); BadRequest names what is wrong."""
        request = pb.ModelInferRequest()
        try:
            request.ParseFromString(body)
        except Exception as exc:  # DecodeError, bad UTF-8 in a string field
            raise BadRequest(f"request is not a serialized ModelInferRequest: {exc}") from None
        if request.model_name != self.knobs.model_name:
            raise _NotFound(f"unknown model '{request.model_name}'; this server serves '{self.knobs.model_name}'")
        if request.model_version and request.model_version != self.knobs.version:
            raise _NotFound(f"model '{request.model_name}' has no version '{request.model_version}'; "
                             f"it has '{self.knobs.version}'")
        if not request.inputs:
            raise BadRequest("request has no inputs")
        items = []
        for i, tensor in enumerate(request.inputs):
            try:
                values = tensor_values(request, i, inputs=True, what=f"input '{tensor.name}'")
            except DecodeError as exc:
                raise BadRequest(str(exc)) from None
            items.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                          "data": values.tolist()})
        x = _features(items)
        wanted = _requested_outputs({"outputs": [{"name": o.name} for o in request.outputs]})
        return request, x, wanted

    def _encode(self, request_id: str, wanted, labels: np.ndarray, probabilities: np.ndarray, raw: bool) -> bytes:
        n = len(labels)
        response = pb.ModelInferResponse(model_name=self.knobs.model_name, model_version=self.knobs.version,
                                         id=request_id)
        for name in wanted:
            datatype, shape, values = (("INT64", [n], labels) if name == "label"
                                       else ("FP32", [n, 2], probabilities))
            out = response.outputs.add(name=name, datatype=datatype, shape=shape)
            if raw:
                response.raw_output_contents.append(tensor_to_raw(datatype, values))
            else:
                tensor_to_contents(datatype, values, out.contents)
        return response.SerializeToString()

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn, request_cls):
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_cls.FromString, response_serializer=lambda m: m.SerializeToString())

        return grpc.method_handlers_generic_handler(SERVICE, {
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": grpc.unary_unary_rpc_method_handler(self.model_infer),  # bytes in, bytes out
        })


async def start_demo_grpc(knobs: DemoKnobs, listen: tuple[str, int]) -> tuple[grpc.aio.Server, int]:
    """A started grpc.aio server for the demo model, and the port it bound."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((DemoGrpcService(knobs).handler(),))
    # Server reflection, as Triton and KServe offer it: `analyze --reflection` reads the
    # service's descriptors from here instead of a descriptor-set file.
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server)
    host, port = listen
    bound = server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    return server, bound


def serve_demo_grpc(knobs: DemoKnobs, listen: tuple[str, int], on_ready: Callable[[int], None] | None = None) -> None:
    """Run the gRPC demo model server until SIGTERM or SIGINT, then stop within 5 s.

    The default asyncio loop, not uvloop (`proxies.httpserver.run_until_signal` installs
    uvloop, which grpc.aio does not support).
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        server, port = await start_demo_grpc(knobs, listen)
        if on_ready is not None:
            on_ready(port)
        await stopping.wait()
        await server.stop(5.0)

    asyncio.run(main())


def infer_request_message(rows: np.ndarray, layout: str = "named", raw: bool = False, *,
                          model_name: str = "demo", request_id: str = "", datatype: str = "FP32") -> bytes:
    """A serialized ModelInferRequest for feature rows of shape (N, F), in either input layout
    (`named`: one [N] input per feature; `tensor`: one `features` [N, F] input), typed or raw."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(FEATURES):
        raise ValueError(f"rows must have shape (N, {len(FEATURES)}), got {rows.shape}")
    if layout not in ("named", "tensor"):
        raise ValueError(f"layout must be 'named' or 'tensor', got {layout!r}")
    n = rows.shape[0]
    request = pb.ModelInferRequest(model_name=model_name, id=request_id)
    tensors = ([(f, [n], rows[:, i]) for i, f in enumerate(FEATURES)] if layout == "named"
               else [(TENSOR_INPUT, [n, len(FEATURES)], rows.reshape(-1))])
    for name, shape, values in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            request.raw_input_contents.append(tensor_to_raw(datatype, values))
        else:
            tensor_to_contents(datatype, values, tensor.contents)
    return request.SerializeToString()


def parse_infer_response(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Labels int64 (N,) and probabilities float32 (N, 2) from a serialized ModelInferResponse."""
    response = pb.ModelInferResponse.FromString(body)
    out = {}
    for i, o in enumerate(response.outputs):
        out[o.name] = tensor_values(response, i, inputs=False, what=f"output '{o.name}'").reshape(list(o.shape))
    return out["label"].astype(np.int64), out["probabilities"].astype(np.float32)


def _split_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> None:
    """`python -m proxies.demo_grpc`: the knobs of `DemoKnobs` as options."""
    parser = argparse.ArgumentParser(prog="python -m proxies.demo_grpc", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=_split_listen, default=("127.0.0.1", 8001), help="HOST:PORT (port 0: any)")
    parser.add_argument("--role", default="incumbent")
    parser.add_argument("--variant", default="subtle")
    parser.add_argument("--model-name", default="demo")
    parser.add_argument("--version", default=None)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--hang-rate", type=float, default=0.0)
    parser.add_argument("--nan-behaviour", default="reject")
    parser.add_argument("--crash-after", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dependency", default=None)
    parser.add_argument("--dependency-timeout-ms", type=float, default=200.0)
    args = parser.parse_args(argv)
    listen = args.listen
    options = {k: v for k, v in vars(args).items() if k != "listen"}
    try:
        knobs = DemoKnobs(**options)
    except ValueError as exc:
        parser.error(str(exc))
    serve_demo_grpc(knobs, listen, on_ready=lambda port: ready_line(f"demo grpc {knobs.role}", listen[0], port))


if __name__ == "__main__":
    main()
