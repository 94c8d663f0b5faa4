"""Locust load driver: runs Locust in its own process (it uses gevent) against a loopback target.

Never import `harness.load.locustfile` here or anywhere in the main process.
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
