"""docker-compose.yml and Dockerfile, checked without a Docker engine.

Every `shadowline` command a service runs must exist in the real CLI (read from the Typer app
in `harness.cli`) with options it accepts; every `http://NAME:PORT` must name a service that
listens on PORT on all interfaces of its container; depends_on must name defined services and
cover what a service calls; published ports must be container ports something listens on,
published on the host's loopback only.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
APP_DIR = "/app"  # WORKDIR in the Dockerfile: where the source tree sits in the image

URL = re.compile(r"https?://([A-Za-z0-9_.-]+):(\d+)")
EXPECTED_SERVICES = {"incumbent", "candidate", "proxy", "locust-master", "locust-worker"}
LOCUST_MASTER_PORT_DEFAULT = 5557
LOCUST_WEB_PORT_DEFAULT = 8089


# ---------------------------------------------------------------------------------------------
# Reading the files


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


@cache
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _exec_form(value: str) -> list[str]:
    value = value.strip()
    return json.loads(value) if value.startswith("[") else shlex.split(value)


def image_entrypoint() -> list[str]:
    entries = [rest for kw, rest in dockerfile_instructions() if kw == "ENTRYPOINT"]
    assert entries, "Dockerfile has no ENTRYPOINT"
    return _exec_form(entries[-1])


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def argv(service: dict) -> list[str]:
    """What the container runs: entrypoint (service's or the image's) + command."""
    entry = _as_list(service["entrypoint"]) if "entrypoint" in service else image_entrypoint()
    return entry + _as_list(service.get("command"))


def option(args: list[str], name: str) -> str | None:
    for i, tok in enumerate(args):
        if tok == name and i + 1 < len(args):
            return args[i + 1]
        if tok.startswith(name + "="):
            return tok.split("=", 1)[1]
    return None


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


# ---------------------------------------------------------------------------------------------
# The real CLI


@cache
def cli_root():
    import typer

    from harness.cli import app

    return typer.main.get_command(app)


def resolve_shadowline(args: list[str]):
    """(click command, its path, remaining args) for a `shadowline ...` argv."""
    # Duck-typed: recent Typer vendors its own click, so isinstance(click.Group) does not hold.
    cmd, path, rest = cli_root(), [], list(args[1:])
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = cmd.commands.get(name)
        assert sub is not None, f"`shadowline {' '.join(path + [name])}` is not a command (have: {sorted(cmd.commands)})"
        cmd, path = sub, path + [name]
    assert not hasattr(cmd, "commands"), f"`shadowline {' '.join(path)}` needs a subcommand"
    return cmd, path, rest


def cli_default(cmd, opt: str):
    for p in cmd.params:
        if opt in p.opts:
            return p.default
    raise AssertionError(f"{cmd.name} has no option {opt}")


def runs_shadowline(service: dict) -> bool:
    a = argv(service)
    return bool(a) and Path(a[0]).name == "shadowline"


def runs_locust(service: dict) -> bool:
    a = argv(service)
    return bool(a) and (Path(a[0]).name == "locust" or a[:3] == ["python", "-m", "locust"])


# ---------------------------------------------------------------------------------------------
# What each service listens on (host, port) inside its container


def listening(name: str) -> dict[int, str]:
    service = services()[name]
    a = argv(service)
    out: dict[int, str] = {}
    if runs_shadowline(service):
        cmd, path, rest = resolve_shadowline(a)
        if path == ["serve-demo"]:
            port = option(rest, "--port") or cli_default(cmd, "--port")
            out[int(port)] = option(rest, "--host") or cli_default(cmd, "--host")
        elif path[:1] == ["proxy"]:
            for opt in ("--listen", "--metrics-listen"):
                value = option(rest, opt) or (cli_default(cmd, opt) if opt == "--listen" else None)
                if value:
                    host, port = split_host_port(value)
                    out[port] = host
    elif runs_locust(service) and "--master" in a:
        host = option(a, "--master-bind-host") or "*"
        out[int(option(a, "--master-bind-port") or LOCUST_MASTER_PORT_DEFAULT)] = host
        if "--headless" not in a and "--autostart" not in a:
            out[int(option(a, "--web-port") or LOCUST_WEB_PORT_DEFAULT)] = option(a, "--web-host") or "*"
    return out


def depends_on(service: dict) -> set[str]:
    deps = service.get("depends_on") or []
    return set(deps) if isinstance(deps, list) else set(deps)


def references(service: dict) -> list[tuple[str, int]]:
    """Other services this one calls: http://NAME:PORT in its argv and environment, and Locust's master."""
    text = list(argv(service))
    env = service.get("environment") or {}
    text += [f"{k}={v}" for k, v in env.items()] if isinstance(env, dict) else list(env)
    refs = [(m.group(1), int(m.group(2))) for t in text for m in URL.finditer(t)]
    a = argv(service)
    if runs_locust(service) and "--worker" in a:
        refs.append((option(a, "--master-host") or "127.0.0.1", int(option(a, "--master-port") or LOCUST_MASTER_PORT_DEFAULT)))
    return refs


# ---------------------------------------------------------------------------------------------
# Tests


def test_services_are_the_documented_five():
    assert set(services()) == EXPECTED_SERVICES


@pytest.mark.parametrize("name", sorted(EXPECTED_SERVICES))
def test_every_service_runs_the_project_image(name):
    service = services()[name]
    assert service.get("build") in (".", {"context": "."}) or service.get("image") == "shadowline:local"
    assert runs_shadowline(service) or runs_locust(service), argv(service)


def test_shadowline_commands_exist_with_the_options_used():
    checked = 0
    for name, service in services().items():
        if not runs_shadowline(service):
            continue
        cmd, path, rest = resolve_shadowline(argv(service))
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        used = {tok.split("=", 1)[0] for tok in rest if tok.startswith("--")}
        assert used <= known, f"{name}: `shadowline {' '.join(path)}` has no {sorted(used - known)}"
        for p in cmd.params:
            if p.required:
                assert set(p.opts) & used, f"{name}: `shadowline {' '.join(path)}` needs {p.opts[0]}"
        checked += 1
    assert checked == 3  # incumbent, candidate, proxy


def test_the_expected_commands():
    paths = {name: resolve_shadowline(argv(s))[1] for name, s in services().items() if runs_shadowline(s)}
    assert paths == {"incumbent": ["serve-demo"], "candidate": ["serve-demo"], "proxy": ["proxy", "http"]}
    assert option(argv(services()["incumbent"]), "--role") == "incumbent"
    assert option(argv(services()["candidate"]), "--role") == "candidate"


def test_servers_bind_all_interfaces_inside_their_container():
    # 127.0.0.1 inside a container is unreachable from the other containers.
    for name in services():
        for port, host in listening(name).items():
            assert host in ("0.0.0.0", "*", ""), f"{name} listens on {host}:{port}; other containers cannot reach it"


def test_every_url_names_a_service_listening_on_that_port():
    seen = 0
    for name, service in services().items():
        for target, port in references(service):
            assert target in services(), f"{name} calls {target}:{port}, which is not a service"
            assert port in listening(target), f"{name} calls {target}:{port}, but {target} listens on {sorted(listening(target))}"
            seen += 1
    assert seen >= 4  # proxy -> incumbent, candidate; locust -> proxy; worker -> master


def test_healthchecks_probe_a_port_the_service_listens_on():
    for name, service in services().items():
        test = service.get("healthcheck", {}).get("test")
        for m in URL.finditer(" ".join(_as_list(test))):
            assert m.group(1) in ("127.0.0.1", "localhost"), f"{name}: healthcheck should probe itself"
            assert int(m.group(2)) in listening(name), f"{name}: healthcheck probes {m.group(2)}"


def test_depends_on_names_defined_services_and_covers_calls():
    for name, service in services().items():
        deps = depends_on(service)
        assert deps <= set(services()), f"{name} depends on undefined {sorted(deps - set(services()))}"
        assert name not in deps
        called = {target for target, _ in references(service)}
        assert called <= deps, f"{name} calls {sorted(called - deps)} without depending on them"


def test_published_ports_match_container_ports_and_stay_on_loopback():
    published = 0
    for name, service in services().items():
        for entry in service.get("ports") or []:
            if isinstance(entry, dict):
                host_ip, container = entry.get("host_ip", ""), int(entry["target"])
            else:
                parts = str(entry).split("/")[0].split(":")
                assert len(parts) == 3, f"{name}: publish as HOST_IP:HOST_PORT:CONTAINER_PORT, got {entry!r}"
                host_ip, container = parts[0], int(parts[2])
            assert host_ip == "127.0.0.1", f"{name}: {entry!r} would publish beyond the host's loopback"
            assert container in listening(name), f"{name}: publishes {container}, listens on {sorted(listening(name))}"
            published += 1
    assert published >= 1


def test_proxy_writes_its_runs_into_a_declared_volume():
    proxy = services()["proxy"]
    _, _, rest = resolve_shadowline(argv(proxy))
    run_dir = option(rest, "--run-dir")
    assert run_dir == "/runs/compose"
    mounts = [str(v).split(":") for v in proxy.get("volumes") or []]
    assert any(run_dir.startswith(target.rstrip("/") + "/") for _, target, *_ in mounts), mounts
    named = {source for source, *_ in mounts if not source.startswith((".", "/"))}
    assert named <= set(compose().get("volumes") or {}), "named volumes must be declared at top level"


def test_locust_uses_the_projects_locustfile():
    for name in ("locust-master", "locust-worker"):
        a = argv(services()[name])
        path = option(a, "-f") or option(a, "--locustfile")
        assert path and path.startswith(APP_DIR + "/"), f"{name}: locustfile {path!r}"
        rel = Path(path).relative_to(APP_DIR)
        assert rel == Path("harness/load/locustfile.py")
        copied = [rest.split()[0] for kw, rest in dockerfile_instructions() if kw == "COPY"]
        assert rel.parts[0] in copied, "the Dockerfile must copy the locustfile's directory into the image"
        if not (REPO / rel).exists():
            pytest.skip(f"{rel} is not in the tree yet")
    assert option(argv(services()["locust-master"]), "--host") == "http://proxy:8000"


@pytest.mark.skipif(shutil.which("locust") is None and not (REPO / ".venv/bin/locust").exists(),
                    reason="locust not installed")
def test_locust_options_exist():
    exe = shutil.which("locust") or str(REPO / ".venv/bin/locust")
    help_text = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120).stdout
    for name in ("locust-master", "locust-worker"):
        for tok in argv(services()[name])[1:]:
            if tok.startswith("--"):
                assert tok.split("=", 1)[0] in help_text, f"{name}: locust has no {tok}"


def test_dockerfile_builds_the_project_with_the_load_extra():
    instr = dockerfile_instructions()
    assert instr[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(rest for kw, rest in instr if kw == "RUN")
    assert re.search(r"pip install [\"']?\.\[load\][\"']?", runs), runs
    assert image_entrypoint() == ["shadowline"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "load" in pyproject["project"]["optional-dependencies"]
    assert "shadowline" in pyproject["project"]["scripts"]
    for kw, rest in instr:
        if kw == "COPY":
            for src in rest.split()[:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
