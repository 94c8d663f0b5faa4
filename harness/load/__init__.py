"""Locust load driver: runs Locust in its own process (it uses gevent) against a loopback target.

`LoadSpec.shape` (formats: `harness.load.shapes`) says how the rate moves over the run;
`LoadSpec.source` (formats: `harness.load.sources`) says what is sent. Both modules are pure
and safe to import anywhere, as is `harness.load.calls` (what each user sends, over HTTP or
gRPC). Never import `harness.load.locustfile` or `harness.load.grpc_client` here or anywhere in
the main process.
"""

from harness.load.driver import (
    LoadError,
    LoadProcess,
    LoadResult,
    LoadSpec,
    loopback_host,
    run_load,
    start_load,
)

__all__ = ["LoadError", "LoadProcess", "LoadResult", "LoadSpec", "loopback_host", "run_load", "start_load"]
