"""Child processes for the benchmark: started, waited on and stopped by PID.

Every process the benchmark starts is registered with a `Processes` instance. Its `stop_all`
(called from a `finally`, so also on Ctrl-C or an error) stops each one by its PID, newest
first: SIGINT or SIGTERM, a grace period, then SIGKILL. Each child gets its own session
(`start_new_session=True`), so its process group id is its PID; worker processes it forks
itself are reached through that group id and nothing else is touched.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port the kernel says is free on `host` right now (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """`n` distinct free ports (held open together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class Child:
    name: str
    argv: list[str]
    popen: subprocess.Popen
    log_path: Path
    stop_signal: int = signal.SIGTERM
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


class Processes:
    """The registry of everything this benchmark started."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        stop_signal: int = signal.SIGTERM,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        finally:
            log.close()  # the child holds its own descriptor
        child = Child(name, list(argv), popen, log_path, stop_signal)
        self.children.append(child)
        return child

    def stop(self, child: Child, grace: float = 10.0) -> int | None:
        """Stop one child by PID; returns its exit code (None if it had to be killed)."""
        if child in self.children:
            self.children.remove(child)
        if child.alive():
            _signal(child.pid, child.stop_signal)
            try:
                child.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal(child.pid, signal.SIGKILL)
                child.popen.wait(timeout=5)
        # Workers the child forked share its process group (id == its PID): make sure none
        # outlives it. Signalling a group that no longer exists is a harmless ESRCH.
        _killpg(child.pid, signal.SIGKILL)
        return child.popen.returncode

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            try:
                self.stop(child, grace=5.0)
            except Exception as exc:  # keep stopping the others
                print(f"warning: could not stop {child.name} (pid {child.pid}): {exc}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def http_request(
    host: str, port: int, method: str, path: str, body: bytes | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(
    child: Child | None,
    probe,
    *,
    timeout: float = 30.0,
    what: str = "",
) -> None:
    """Call `probe()` until it returns True; fail early if `child` exits, or after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(
                f"{child.name} exited with code {child.popen.returncode} before it was ready"
                f" ({what}); last log lines:\n{child.log_tail()}"
            )
        try:
            if probe():
                return
        except (OSError, http.client.HTTPException) as exc:
            last_exc = exc
        time.sleep(0.1)
    tail = f"; last log lines:\n{child.log_tail()}" if child is not None else ""
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_exc}){tail}")


def tcp_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1.0):
        return True


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` and its live descendants (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for kid in proc.children(recursive=True):
            try:
                total += sum(kid.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return None
