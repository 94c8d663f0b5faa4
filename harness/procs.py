"""Child processes the harness starts (demo servers, proxies), and stops again by PID.

A server child prints one line `shadowline: <what> listening on HOST:PORT` on stdout when
it is ready (so port 0 works); everything else it says goes to stderr, into its log file.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(rb"^shadowline: (?P<what>.*) listening on (?P<host>[^\s]+):(?P<port>\d+)\s*$")


def ready_line(what: str, host: str, port: int) -> None:
    """Announce readiness in the form `spawn()` waits for."""
    print(f"shadowline: {what} listening on {host}:{port}", flush=True)


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    host: str
    port: int  # of the first ready line
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)  # every ready line: what -> port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a graceful drain), then SIGKILL after `timeout`; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def shadowline_command(*args: str) -> list[str]:
    """The CLI of the running interpreter, so children use the same install."""
    return [sys.executable, "-m", "harness.cli", *args]


def spawn(name: str, argv: list[str], log_path: Path, *, ready_timeout: float = 20.0, ready_lines: int = 1) -> Child:
    """Start `argv`, wait for its `ready_lines` ready lines; raise ChildFailed with its log tail otherwise."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL, env=env)
    log_file.close()
    deadline = time.monotonic() + ready_timeout
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    buffered = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.1):
                if process.poll() is not None:
                    break
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            buffered += chunk
            complete = buffered.split(b"\n")[:-1]  # a line still being written could match too short
            ready = [m for m in map(READY.match, complete) if m]
            if len(ready) >= ready_lines:
                _drain_to_log(process, log_path)
                ports = {m["what"].decode(): int(m["port"]) for m in ready}
                return Child(name, process, ready[0]["host"].decode(), int(ready[0]["port"]), log_path, ports)
    finally:
        selector.close()
    if process.poll() is None:
        process.kill()
        process.wait(5)
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    raise ChildFailed(f"{name} did not start (exit {process.returncode}); log {log_path}: " + " | ".join(tail))


def _drain_to_log(process: subprocess.Popen, log_path: Path) -> None:
    """Keep reading the child's stdout so it never blocks on a full pipe."""

    def pump() -> None:
        with open(log_path, "ab") as out:
            for line in process.stdout:
                out.write(line)

    threading.Thread(target=pump, daemon=True, name=f"stdout-{process.pid}").start()
