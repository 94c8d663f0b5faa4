"""The `shadowline` command line (a composition root: it may import proxies and reports).

Exit codes (DESIGN.md): 0 GO, 1 NO-GO, 2 bad usage or input, 3 INCONCLUSIVE, 4 the run failed.
Errors are one line naming what was wrong; `--debug` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness import __version__

EXIT_GO, EXIT_NO_GO, EXIT_USAGE, EXIT_INCONCLUSIVE, EXIT_RUN_FAILED = 0, 1, 2, 3, 4

app = typer.Typer(
    name="shadowline",
    help="Shadow-traffic and chaos testing for ML model serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
proxy_app = typer.Typer(
    help="Run a shadow proxy in front of an incumbent model, or a TCP fault proxy in front of a dependency.",
    no_args_is_help=True,
)
app.add_typer(proxy_app, name="proxy")
scenario_app = typer.Typer(help="Check scenario files; print their JSON Schema.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")

_state = {"debug": False}


class UsageError(ValueError):
    """Bad usage or bad input: exit code 2."""


class RunFailed(RuntimeError):
    """The run itself failed (a target unreachable, a crash): exit code 4."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shadowline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


class Role(str, Enum):
    incumbent = "incumbent"
    candidate = "candidate"


class Variant(str, Enum):
    identical = "identical"
    subtle = "subtle"
    broken = "broken"


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


class NanBehaviour(str, Enum):
    reject = "reject"
    crash = "crash"


def _host_port(value: str, what: str) -> tuple[str, int]:
    from proxies.serve import split_host_port

    try:
        return split_host_port(value, what=what)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@app.command("serve-demo")
def serve_demo(
    role: Annotated[Role, typer.Option(help="Which weights to serve.")] = Role.incumbent,
    variant: Annotated[
        Optional[Variant], typer.Option(help="Candidate weights: identical, subtle (flips ~3% of labels) or broken. Default: subtle for a candidate.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind; 0 picks a free one (printed when ready).")] = 8001,
    model: Annotated[str, typer.Option(help="Model name in the v2 API paths.")] = "demo",
    latency_ms: Annotated[float, typer.Option(help="Added latency per inference, ms.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Extra uniform latency 0..jitter per inference, ms.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Fraction of inferences answered 500.")] = 0.0,
    hang_rate: Annotated[float, typer.Option(help="Fraction of inferences never answered.")] = 0.0,
    nan_behaviour: Annotated[NanBehaviour, typer.Option(help="On NaN/Inf input: reject (400) or crash (500).")] = NanBehaviour.reject,
    crash_after: Annotated[Optional[int], typer.Option(help="Exit abruptly after this many inferences.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the error, hang and jitter draws.")] = 0,
    dependency: Annotated[
        Optional[str], typer.Option(help="HOST:PORT of a feature store to call on every inference (see serve-feature-store).")
    ] = None,
    dependency_timeout_ms: Annotated[float, typer.Option(help="Time allowed for the dependency call, ms (then 504).")] = 200.0,
    grpc: Annotated[bool, typer.Option("--grpc", help="Serve v2 over gRPC (inference.GRPCInferenceService) instead of REST.")] = False,
) -> None:
    """Serve the demo model over the Open Inference Protocol v2 REST API (or gRPC with --grpc).

    Example: shadowline serve-demo --role candidate --port 8002 --latency-ms 8
    """
    from harness.procs import ready_line
    from proxies.demo_server import DemoKnobs
    from proxies.serve import serve_demo as run

    for name, rate in (("--error-rate", error_rate), ("--hang-rate", hang_rate)):
        if not 0.0 <= rate <= 1.0:
            raise UsageError(f"{name} must be within [0, 1], got {rate}")
    chosen = variant or (Variant.subtle if role is Role.candidate else Variant.identical)
    if dependency is not None:
        dependency = "%s:%d" % _host_port(dependency, "--dependency")
    try:
        knobs = DemoKnobs(
            role=role.value,
            variant=chosen.value,
            model_name=model,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            error_rate=error_rate,
            hang_rate=hang_rate,
            nan_behaviour=nan_behaviour.value,
            crash_after=crash_after,
            seed=seed,
            dependency=dependency,
            dependency_timeout_ms=dependency_timeout_ms,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if grpc:
        from proxies.demo_grpc import serve_demo_grpc

        serve_demo_grpc(knobs, (host, port), on_ready=lambda p: ready_line(f"demo grpc {role.value}", host, p))
        return
    run(knobs, listen=(host, port), on_ready=lambda p: ready_line(f"demo {role.value}", host, p))


# Options both shadow proxies take.
SampleOpt = Annotated[float, typer.Option(help="Fraction of requests mirrored (seeded draw).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the sampling draws (recorded in the run).")]
RunDirOpt = Annotated[Optional[Path], typer.Option(help="Where capture.db and run.json go. Default: runs/<run-id>.")]
MetricsOpt = Annotated[Optional[str], typer.Option(help="HOST:PORT for Prometheus metrics.")]
InflightOpt = Annotated[int, typer.Option(help="Mirrored requests in flight before copies are shed.")]
ShadowTimeoutOpt = Annotated[float, typer.Option(help="Seconds a mirrored copy may take.")]
DrainOpt = Annotated[float, typer.Option(help="Seconds to finish in-flight work on SIGTERM.")]


@proxy_app.command("http")
def proxy_http(
    incumbent: Annotated[str, typer.Option(help="Incumbent URL (answers the client), e.g. http://127.0.0.1:8001.")],
    candidate: Annotated[Optional[str], typer.Option(help="Candidate URL (mirrored copy).")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Baseline URL: a second incumbent, the noise floor.")] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT to accept clients on.")] = "127.0.0.1:8000",
    sample: SampleOpt = 1.0,
    seed: SeedOpt = 0,
    run_dir: RunDirOpt = None,
    metrics_listen: MetricsOpt = None,
    max_inflight: InflightOpt = 512,
    shadow_timeout: ShadowTimeoutOpt = 5.0,
    incumbent_timeout: Annotated[float, typer.Option(help="Seconds the incumbent may take before the client gets 504.")] = 30.0,
    client_timeout: Annotated[float, typer.Option(help="Seconds a client may take to send a request (then 408).")] = 10.0,
    max_body: Annotated[int, typer.Option(help="Largest request body in bytes (then 413).")] = 8 << 20,
    drain_timeout: DrainOpt = 10.0,
    faults: Annotated[
        Optional[Path], typer.Option(help="Fault plan (YAML/JSON: {seed, codec, faults: [...]}) applied to mirrored copies.")
    ] = None,
) -> None:
    """Serve every request from the incumbent; mirror a copy to the candidate (and baseline).

    Example: shadowline proxy http --listen 127.0.0.1:8000 --incumbent http://127.0.0.1:8001
    --candidate http://127.0.0.1:8002 --run-dir runs/shadow-1
    """
    from harness.procs import ready_line
    from harness.rundir import new_run_dir, write_run_info
    from proxies.http_proxy import ProxySettings
    from proxies.serve import serve_proxy

    if not 0.0 <= sample <= 1.0:
        raise UsageError(f"--sample must be within [0, 1], got {sample}")
    if max_inflight < 0:
        raise UsageError(f"--max-inflight must be >= 0, got {max_inflight}")
    settings = ProxySettings(
        incumbent=incumbent,
        candidate=candidate,
        baseline=baseline,
        sample=sample,
        seed=seed,
        incumbent_timeout=incumbent_timeout,
        shadow_timeout=shadow_timeout,
        max_inflight=max_inflight,
        max_body=max_body,
    )
    from proxies.upstream import Upstream

    for name, url in (("--incumbent", incumbent), ("--candidate", candidate), ("--baseline", baseline)):
        if url is not None:
            try:
                Upstream(url)
            except ValueError as exc:
                raise UsageError(f"{name}: {exc}") from None
    plan = _load_fault_plan(faults) if faults is not None else None
    host, port = _host_port(listen, "--listen")
    metrics = _host_port(metrics_listen, "--metrics-listen") if metrics_listen else None
    if run_dir is None:
        run_dir = new_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(run_dir, command=sys.argv, seed=seed, extra={"proxy": "http", "settings": vars(settings)})
    serve_proxy(
        settings,
        listen=(host, port),
        run_dir=run_dir,
        metrics_listen=metrics,
        client_timeout=client_timeout,
        drain_timeout=drain_timeout,
        on_ready=lambda p: ready_line("proxy", host, p),
        plan=plan,
    )


def _load_fault_plan(path: Path, default_codec: str | None = None):
    """A FaultPlan from a file: `{seed: N, codec: NAME|null, codec_options: {...}, faults: [...]}`.

    Without a codec the plan decodes with `default_codec` (None: v2, then v1, per body).
    `codec_options` are the codec's (e.g. for `grpc`: descriptor_set, method, select)."""
    import yaml

    from harness.codecs import get_codec
    from harness.faults import FaultPlan

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"--faults {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("faults"), list):
        raise UsageError(f"--faults {path}: expected a mapping with a 'faults' list")
    try:
        codec_name = doc.get("codec") or default_codec
        options = doc.get("codec_options") or {}
        if not isinstance(options, dict):
            raise ValueError("codec_options must be a mapping")
        codec = get_codec(codec_name, **options) if codec_name else None
        return FaultPlan.from_specs(doc["faults"], int(doc.get("seed", 0)), codec)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--faults {path}: {exc}") from None


@proxy_app.command("grpc")
def proxy_grpc(
    incumbent: Annotated[
        str, typer.Option(help="Incumbent host:port, grpc://host:port or grpcs://host:port (TLS) (answers the client).")
    ],
    candidate: Annotated[Optional[str], typer.Option(help="Candidate host:port or grpcs://host:port (mirrored copy of unary calls).")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Baseline host:port or grpcs://host:port: a second incumbent, the noise floor.")] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT to accept clients on.")] = "127.0.0.1:8010",
    sample: SampleOpt = 1.0,
    seed: SeedOpt = 0,
    run_dir: RunDirOpt = None,
    metrics_listen: MetricsOpt = None,
    max_inflight: InflightOpt = 512,
    shadow_timeout: ShadowTimeoutOpt = 5.0,
    incumbent_timeout: Annotated[float, typer.Option(help="Upper limit on a unary call's deadline, s.")] = 30.0,
    max_message_bytes: Annotated[int, typer.Option(help="Largest message in either direction, bytes.")] = 4 << 20,
    stream_method: Annotated[
        Optional[list[str]], typer.Option(help="Full path of a streaming method, forwarded as a stream (repeatable).")
    ] = None,
    drain_timeout: DrainOpt = 10.0,
    faults: Annotated[
        Optional[Path],
        typer.Option(help="Fault plan (YAML/JSON: {seed, codec, faults: [...]}) applied to mirrored unary calls; codec default v2grpc."),
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Processes serving the port (SO_REUSEPORT), each with its own capture shard, merged on exit.")
    ] = 1,
    tls_cert: Annotated[Optional[Path], typer.Option(help="PEM certificate chain of the listener: clients must use TLS.")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="PEM private key of --tls-cert (unencrypted).")] = None,
    tls_client_ca: Annotated[
        Optional[Path], typer.Option(help="PEM CA bundle: clients must present a certificate it signed (mTLS).")
    ] = None,
    upstream_ca: Annotated[
        Optional[list[str]], typer.Option(help="[ARM=]PEM CA bundle verifying grpcs:// upstreams (default: grpcio's roots).")
    ] = None,
    upstream_cert: Annotated[
        Optional[list[str]], typer.Option(help="[ARM=]PEM client certificate presented to grpcs:// upstreams (mTLS).")
    ] = None,
    upstream_key: Annotated[Optional[list[str]], typer.Option(help="[ARM=]PEM private key of --upstream-cert.")] = None,
    upstream_server_name: Annotated[
        Optional[list[str]], typer.Option(help="[ARM=]name in the upstream's certificate when it is not the host.")
    ] = None,
) -> None:
    """gRPC shadow proxy: any service, raw bytes; unary calls mirrored, listed streams forwarded.

    Upstream TLS options apply to every grpcs:// upstream; ARM=VALUE (incumbent, candidate,
    baseline) sets one upstream's value instead. See docs/grpc.md ("TLS and mTLS", "Workers").

    Example: shadowline proxy grpc --listen 127.0.0.1:8010 --incumbent 127.0.0.1:9001
    --candidate 127.0.0.1:9002 --run-dir runs/grpc-1

    Example: shadowline proxy grpc --workers 2 --tls-cert proxy.pem --tls-key proxy-key.pem
    --incumbent grpcs://10.0.0.5:9001 --candidate grpcs://10.0.0.6:9002 --upstream-ca ca.pem
    --upstream-server-name candidate=candidate.models.internal
    """
    from harness.procs import ready_line
    from harness.rundir import new_run_dir, write_run_info
    from proxies.grpc_proxy import GrpcProxySettings, grpc_target, serve_grpc_proxy
    from proxies.grpc_tls import TlsConfigError, parse_arm_values
    from proxies.grpc_tls import check as check_tls

    if not 0.0 <= sample <= 1.0:
        raise UsageError(f"--sample must be within [0, 1], got {sample}")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    upstream_tls: dict[str, str | None] = {}  # one value for every grpcs:// upstream, by key
    upstream_tls_by_arm: dict[str, dict[str, str]] = {}  # ARM=VALUE overrides
    try:
        for key, values in (("ca", upstream_ca), ("cert", upstream_cert), ("key", upstream_key),
                            ("server_name", upstream_server_name)):
            upstream_tls[key], per_arm = parse_arm_values(f"--upstream-{key.replace('_', '-')}", values or [])
            for arm, value in per_arm.items():
                upstream_tls_by_arm.setdefault(arm, {})[key] = value
    except TlsConfigError as exc:
        raise UsageError(str(exc)) from None
    for name, target in (("--incumbent", incumbent), ("--candidate", candidate), ("--baseline", baseline)):
        if target is not None:
            try:
                grpc_target(target)
            except ValueError as exc:
                raise UsageError(f"{name}: {exc}") from None
    try:
        settings = GrpcProxySettings(
            incumbent=incumbent,
            candidate=candidate,
            baseline=baseline,
            sample=sample,
            seed=seed,
            shadow_timeout=shadow_timeout,
            incumbent_timeout=incumbent_timeout,
            max_inflight=max_inflight,
            max_message_bytes=max_message_bytes,
            stream_methods=tuple(stream_method or ()),
            tls_cert=str(tls_cert) if tls_cert else None,
            tls_key=str(tls_key) if tls_key else None,
            tls_client_ca=str(tls_client_ca) if tls_client_ca else None,
            upstream_ca=upstream_tls["ca"],
            upstream_cert=upstream_tls["cert"],
            upstream_key=upstream_tls["key"],
            upstream_server_name=upstream_tls["server_name"],
            upstream_tls_by_arm=upstream_tls_by_arm or None,
        )
        check_tls(settings)  # every TLS file read and checked now: a bad one is exit 2, not a failed start
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plan = _load_fault_plan(faults, default_codec="v2grpc") if faults is not None else None
    if plan is not None:
        from proxies.grpc_proxy import check_plan

        try:
            check_plan(plan)
        except ValueError as exc:
            raise UsageError(f"--faults {faults}: {exc}") from None
    host, port = _host_port(listen, "--listen")
    metrics = _host_port(metrics_listen, "--metrics-listen") if metrics_listen else None
    if run_dir is None:
        run_dir = new_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(run_dir, command=sys.argv, seed=seed,
                   extra={"proxy": "grpc", "workers": workers, "settings": vars(settings)})
    serve_grpc_proxy(
        settings,
        listen=(host, port),
        run_dir=run_dir,
        metrics_listen=metrics,
        drain_timeout=drain_timeout,
        on_ready=lambda p: ready_line("grpc proxy", host, p),
        plan=plan,
        workers=workers,
    )


@proxy_app.command("toxic")
def proxy_toxic(
    upstream: Annotated[str, typer.Option(help="HOST:PORT of the dependency to put faults in front of.")],
    listen: Annotated[str, typer.Option(help="HOST:PORT the model server connects to instead.")] = "127.0.0.1:8475",
    control_listen: Annotated[str, typer.Option(help="HOST:PORT of the HTTP control API (add/remove toxics).")] = "127.0.0.1:8474",
    toxic: Annotated[
        Optional[list[str]], typer.Option(help='A toxic as JSON (repeatable), e.g. \'{"name":"slow","type":"latency","attributes":{"latency_ms":300}}\'.')
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the per-connection toxicity draws.")] = 0,
) -> None:
    """A TCP proxy that adds Toxiproxy-style faults between a model server and its dependency.

    Example: shadowline proxy toxic --upstream 127.0.0.1:7000 --listen 127.0.0.1:7001
    """
    from proxies.toxic_proxy import DuplicateToxic, serve_toxic
    from proxies.toxics import ToxicError, parse_toxic_json

    try:
        toxics = [parse_toxic_json(item) for item in toxic or []]
    except ToxicError as exc:
        raise UsageError(f"--toxic: {exc}") from None
    try:
        serve_toxic(
            _host_port(listen, "--listen"),
            _host_port(upstream, "--upstream"),
            _host_port(control_listen, "--control-listen"),
            toxics=toxics,
            seed=seed,
        )
    except (ToxicError, DuplicateToxic) as exc:  # found before anything binds
        raise UsageError(f"--toxic: {exc}") from None


@app.command("serve-feature-store")
def serve_feature_store(
    listen: Annotated[str, typer.Option(help="HOST:PORT to bind; port 0 picks a free one.")] = "127.0.0.1:7000",
) -> None:
    """A tiny line-protocol feature store: the demo model server's optional dependency.

    Example: shadowline serve-feature-store --listen 127.0.0.1:7000
    """
    from proxies.feature_store import serve_feature_store as run

    run(_host_port(listen, "--listen"))


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="A scenario file (YAML), e.g. scenarios/nan-storm.yaml.")],
    run_dir: Annotated[Optional[Path], typer.Option(help="Run directory. Default: runs/<run-id>.")] = None,
) -> None:
    """Run a scripted shadow or chaos scenario end to end, then judge it.

    Starts what the scenario needs, runs its phases with a live view, always stops what it
    started, writes the run directory and reports, and exits with the verdict's code
    (0 GO, 1 NO-GO, 3 INCONCLUSIVE; 2 bad scenario, 4 the run failed).
    Example: shadowline run scenarios/nan-storm.yaml
    """
    from harness.run import run_scenario
    from harness.scenario import ScenarioError

    try:
        code = run_scenario(scenario, run_dir=run_dir)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    raise typer.Exit(code)


@scenario_app.command("validate")
def scenario_validate(
    file: Annotated[Path, typer.Argument(help="The scenario file to check.")],
) -> None:
    """Check a scenario file: 'ok' with its phases and faults, or every problem with its field path.

    Example: shadowline scenario validate scenarios/nan-storm.yaml
    """
    from harness.scenario.commands import validate_command

    raise typer.Exit(validate_command(file))


@scenario_app.command("schema")
def scenario_schema() -> None:
    """Print the scenario JSON Schema (for editors and CI).

    Example: shadowline scenario schema > scenario.schema.json
    """
    from harness.scenario.commands import schema_command

    raise typer.Exit(schema_command())


@app.command()
def analyze(
    run_dir: Annotated[Path, typer.Argument(help="A run directory holding capture.db.")],
    codec: Annotated[
        Optional[str], typer.Option(help="v2, v1, generic, v2grpc or grpc. Default: the run's recorded codec, else detected.")
    ] = None,
    select: Annotated[
        Optional[str],
        typer.Option(help="Selectors of the generic or grpc codec, e.g. 'label=predictions[*].label,score=predictions[*].p'."),
    ] = None,
    descriptor_set: Annotated[
        Optional[Path],
        typer.Option(help="grpc codec: the service's descriptor set (protoc --include_imports --descriptor_set_out=FILE)."),
    ] = None,
    reflection: Annotated[
        Optional[str], typer.Option(help="grpc codec: fetch the descriptors from this server's gRPC reflection (HOST:PORT).")
    ] = None,
    grpc_method: Annotated[
        Optional[str], typer.Option(help="grpc codec: the method of the captured calls, /package.Service/Method.")
    ] = None,
    policy: Annotated[Optional[Path], typer.Option(help="YAML policy file: checks: {name: {param: value}}.")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a check parameter: CHECK.PARAM=VALUE (repeatable).")
    ] = None,
) -> None:
    """Judge a captured run and write report.json, report.md, report.html and junit.xml into it.

    Exit code: 0 GO, 1 NO-GO, 3 INCONCLUSIVE (2 bad input, 4 failure).
    Example: shadowline analyze runs/20261127-101500-ab12cd --set label_agreement.margin=0.02

    Any gRPC service, through its descriptor set (docs/grpc-codecs.md): shadowline analyze RUN
    --descriptor-set scorer.pb --grpc-method /fraud.Scorer/Score --select 'features=rows,label=predictions[*].label'
    """
    from harness.judge import JudgeInputError, judge, load_policy

    try:
        config = load_policy(policy, set_ or [])
    except JudgeInputError as exc:
        raise UsageError(str(exc)) from None
    grpc_flags = descriptor_set is not None or reflection is not None or grpc_method is not None
    if grpc_flags and codec is None:
        codec = "grpc"
    if codec == "grpc":
        options = _grpc_codec_options(run_dir, descriptor_set, reflection, grpc_method, select)
    elif grpc_flags:
        raise UsageError(f"--descriptor-set, --reflection and --grpc-method go with --codec grpc, not --codec {codec}")
    else:
        options = {"select": select} if select else {}
        if select and codec is None:
            codec = "generic"
    try:
        judgement = judge(run_dir, codec=codec, codec_options=options, checks_config=config)
    except JudgeInputError as exc:
        raise UsageError(str(exc)) from None
    print_verdict(judgement)
    raise typer.Exit(judgement.exit_code)


GRPC_DESCRIPTORS_FILE = "grpc-descriptors.pb"  # the descriptor set `analyze --codec grpc` used, kept in the run


def _grpc_codec_options(run_dir: Path, descriptor_set: Path | None, reflection: str | None, grpc_method: str | None,
                        select: str | None) -> dict:
    """The grpc codec's options for `analyze`. The descriptor set (the file given, or what the
    server's reflection sent) is checked, then kept in the run directory, so the recorded
    codec.json rebuilds the codec later without the file or the server."""
    from harness.codecs.descriptor import DescriptorCodec
    from harness.codecs.descriptor_set import normalize_method, read_descriptor_set, write_descriptor_set
    from harness.codecs.reflection import ReflectionError, ReflectionUnavailable, fetch_descriptor_set

    if descriptor_set is not None and reflection is not None:
        raise UsageError("--descriptor-set and --reflection: give one of them")
    if descriptor_set is None and reflection is None:
        raise UsageError("--codec grpc needs --descriptor-set FILE or --reflection HOST:PORT")
    if not grpc_method:
        raise UsageError("--codec grpc needs --grpc-method /package.Service/Method")
    if not select:
        raise UsageError("--codec grpc needs --select, e.g. 'features=rows,label=predictions[*].label'")
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    try:
        method = normalize_method(grpc_method)
    except ValueError as exc:
        raise UsageError(f"--grpc-method: {exc}") from None
    if reflection is not None:
        source = f"reflection {reflection}"
        try:
            data = fetch_descriptor_set(reflection, method[1:].split("/")[0])
        except ReflectionError as exc:
            raise UsageError(f"--reflection: {exc}") from None
        except ReflectionUnavailable as exc:
            raise RunFailed(f"--reflection: {exc}") from None
    else:
        source = str(descriptor_set)
        try:
            data = read_descriptor_set(descriptor_set)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    try:  # before anything is written: errors name the user's file, method or field path
        DescriptorCodec.from_bytes(data, method=method, select=select, source=source)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    saved = write_descriptor_set(data, run_dir / GRPC_DESCRIPTORS_FILE)
    return {"descriptor_set": str(saved.resolve()), "method": method, "select": select}


def print_verdict(judgement) -> None:
    """The verdict, its reasons and where the reports are, for a terminal."""
    from rich.console import Console

    console = Console(soft_wrap=True)  # long paths stay on one line, for people and scripts
    colour = {"GO": "green", "NO_GO": "red"}.get(judgement.verdict.decision, "yellow")
    console.print(f"[bold {colour}]{judgement.verdict.decision.replace('_', '-')}[/]")
    for reason in judgement.verdict.reasons:
        console.print(f"  - {reason}", highlight=False)
    console.print(f"report: {judgement.paths['html']}  (judged in {judgement.seconds:.2f} s)", highlight=False)


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 30.0,
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 200.0,
    variant: Annotated[
        Variant, typer.Option(help="Candidate: identical (GO), subtle (flips ~3% of labels: NO-GO) or broken (NO-GO).")
    ] = Variant.subtle,
    seed: Annotated[int, typer.Option(help="Seed of the load and sampling.")] = 7,
    run_dir: Annotated[Optional[Path], typer.Option(help="Run directory. Default: runs/<run-id>.")] = None,
    protocol: Annotated[Protocol, typer.Option(help="http: v2 REST; grpc: v2 gRPC (same models, rows and seed).")] = Protocol.http,
) -> None:
    """Demo incumbent and candidate, the shadow proxy and a Locust load, then the verdict and reports.

    Exit code: the verdict's (0 GO, 1 NO-GO, 3 INCONCLUSIVE). A few seconds of load are
    INCONCLUSIVE: too little evidence. Example: shadowline demo --duration 20 --variant identical
    """
    from harness.demo import run_demo

    if duration <= 0 or rate <= 0:
        raise UsageError("--duration and --rate must be positive")
    raise typer.Exit(run_demo(duration=duration, rate=rate, variant=variant.value, seed=seed, run_dir=run_dir,
                              protocol=protocol.value))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: maps failures to the documented exit codes."""
    from harness.capture import CaptureError
    from harness.procs import ChildFailed
    from harness.rundir import RunDirError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = app(args=argv, standalone_mode=False)  # click returns Exit codes in this mode
    except (UsageError, CaptureError, RunDirError) as exc:
        if debug:
            raise
        typer.echo(f"shadowline: error: {exc}", err=True)
        return EXIT_USAGE
    except (RunFailed, ChildFailed, OSError) as exc:
        if debug:
            raise
        typer.echo(f"shadowline: run failed: {exc}", err=True)
        return EXIT_RUN_FAILED
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("shadowline: aborted", err=True)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        return 130
    except typer.exceptions.TyperException as exc:  # usage errors of Typer's (vendored) click
        if hasattr(exc, "show"):
            exc.show()
        else:
            typer.echo(f"shadowline: error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except Exception as exc:
        if debug:
            raise
        typer.echo(f"shadowline: run failed: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        return EXIT_RUN_FAILED
    return code if isinstance(code, int) else EXIT_GO


if __name__ == "__main__":
    sys.exit(main())
