"""Process entry points: run the shadow proxy or a demo model server until SIGTERM/SIGINT.

These wire the parts together (server, app, capture, metrics) and own the shutdown order:
stop accepting, answer what is in progress, let mirrored copies finish, flush the capture.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from proxies.http_proxy import ProxySettings, ShadowProxy
from proxies.httpserver import HTTPServer, run_until_signal

log = logging.getLogger(__name__)


def split_host_port(value: str, *, what: str) -> tuple[str, int]:
    """'127.0.0.1:8000' -> ('127.0.0.1', 8000); a bare port means 127.0.0.1."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what}: expected HOST:PORT, got {value!r}")
    return host, int(port)


def record_plan(plan, capture, run_dir: Path) -> None:
    """Put a fault plan in the capture's meta and in `run_dir/faults.json` (the ledger's key)."""
    if plan is not None:
        faults = {"seed": plan.seed, "faults": plan.describe()}
        capture.set_meta("faults", faults)
        (run_dir / "faults.json").write_text(json.dumps(faults, indent=2) + "\n")


def serve_proxy(
    settings: ProxySettings,
    *,
    listen: tuple[str, int],
    run_dir: Path,
    metrics_listen: tuple[str, int] | None = None,
    client_timeout: float = 10.0,
    drain_timeout: float = 10.0,
    on_ready=None,
    plan=None,
) -> None:
    """Run the HTTP shadow proxy, capturing to `run_dir/capture.db`, until a signal.

    With a fault `plan`, mirrored copies are faulted as it decides and every decision is in
    the capture (the ledger); the plan itself is written to `run_dir/faults.json`.
    """
    from harness.capture import CaptureWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    capture = CaptureWriter(run_dir / "capture.db")
    capture.set_meta("seed", settings.seed)  # the sampling draws replay from it
    capture.set_meta("proxy_settings", vars(settings))
    record_plan(plan, capture, run_dir)
    proxy = ShadowProxy(settings, sink=capture.write, plan=plan)
    server = HTTPServer(proxy, max_body=settings.max_body, client_timeout=client_timeout)
    proxy.metrics.server = server  # its refusals (400, 413, 408...) are counted there

    async def start() -> None:
        await server.start(*listen)
        if metrics_listen is not None:
            proxy.metrics.serve(*metrics_listen)
        log.info("shadow proxy on %s:%d -> incumbent %s", listen[0], server.port, settings.incumbent)
        if on_ready is not None:
            on_ready(server.port)

    async def stop() -> None:
        deadline = time.monotonic() + drain_timeout
        clean = await server.drain(drain_timeout)
        await proxy.drain(max(0.0, deadline - time.monotonic()))
        capture.close()
        log.info("drained (%s); %d exchanges captured", "clean" if clean else "deadline hit", capture.written)

    try:
        run_until_signal(start, stop)
    finally:
        capture.close()


def serve_demo(knobs, *, listen: tuple[str, int], on_ready=None) -> None:
    """Run a demo model server (Open Inference Protocol v2 REST) until a signal."""
    from proxies.demo_server import DemoApp

    server = HTTPServer(DemoApp(knobs), cancel_on_disconnect=True)  # free hung calls

    async def start() -> None:
        await server.start(*listen)
        log.info("demo %s on %s:%d", knobs.role, listen[0], server.port)
        if on_ready is not None:
            on_ready(server.port)

    async def stop() -> None:
        await server.drain(5.0)

    run_until_signal(start, stop)
