"""TLS and mTLS on the gRPC shadow proxy: the listener, the upstreams, and bad certificate files.

Certificates are made at test time with /usr/bin/openssl (a CA, a server certificate for
127.0.0.1/localhost, one for the name `candidate.test` only, a client certificate, a stray key).
Upstreams, the proxy and the client run on one asyncio loop, as in test_grpc_proxy.py; the CLI
tests start `shadowline proxy grpc` as a child process.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from harness.procs import shadowline_command, spawn
from proxies.grpc_proxy import GrpcProxySettings
from proxies.grpc_tls import TlsConfigError, check
from tests.integration.test_grpc_proxy import Proxy as InProcessProxy

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates"),
]

ECHO = "/test.Echo/Reverse"


# -- certificates ----------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _issue(d: Path, name: str, subject: str, extensions: str) -> None:
    """`name.key` + `name.pem`, signed by the CA in `d`."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
    (d / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=shadowline test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _issue(d, "server", "/CN=localhost",
           "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _issue(d, "named", "/CN=candidate.test", "subjectAltName=DNS:candidate.test\nextendedKeyUsage=serverAuth\n")
    _issue(d, "client", "/CN=shadowline-proxy", "extendedKeyUsage=clientAuth\n")
    _openssl("genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", "stray.key", cwd=d)
    (d / "notpem.pem").write_text("this is not a certificate\n")
    return {p.name: str(p) for p in d.iterdir()}


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


# -- upstreams and the proxy, in-process -----------------------------------------------------


class Echo(grpc.GenericRpcHandler):
    """Answers every unary call with the request reversed; records the client certificate's CN."""

    def __init__(self):
        self.peers: list[list[bytes] | None] = []

    def service(self, details):
        async def unary(request, context):
            self.peers.append(context.peer_identities())
            return request[::-1]

        return grpc.unary_unary_rpc_method_handler(unary)


async def start_tls_upstream(certs, cert: str = "server", client_ca: bool = False):
    handler = Echo()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    credentials = grpc.ssl_server_credentials(
        [(_read(certs[f"{cert}.key"]), _read(certs[f"{cert}.pem"]))],
        root_certificates=_read(certs["ca.pem"]) if client_ca else None, require_client_auth=client_ca)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, handler, port


async def start_plain_upstream():
    handler = Echo()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, handler, f"127.0.0.1:{port}"


class Proxy(InProcessProxy):
    """The proxy in-process (test_grpc_proxy's), its TLS files checked first as serve_grpc_proxy does."""

    def __init__(self, settings: GrpcProxySettings, tmp_path: Path):
        check(settings)
        super().__init__(settings, tmp_path)


def client_credentials(certs, with_cert: bool = False) -> grpc.ChannelCredentials:
    if with_cert:
        return grpc.ssl_channel_credentials(_read(certs["ca.pem"]), _read(certs["client.key"]), _read(certs["client.pem"]))
    return grpc.ssl_channel_credentials(_read(certs["ca.pem"]))


async def call(channel: grpc.aio.Channel, body: bytes) -> bytes:
    return await channel.unary_unary(ECHO)(body, timeout=5)


async def wait_rows(proxy: Proxy, n: int) -> None:
    for _ in range(200):
        if proxy.capture.written + proxy.capture.pending >= n:
            return
        await asyncio.sleep(0.01)


# -- the listener ----------------------------------------------------------------------------


def test_tls_listener_serves_a_tls_client_and_refuses_plaintext(certs, tmp_path):
    async def main():
        upstream, _, target = await start_plain_upstream()
        settings = GrpcProxySettings(incumbent=target, tls_cert=certs["server.pem"], tls_key=certs["server.key"])
        async with Proxy(settings, tmp_path) as proxy:
            async with grpc.aio.secure_channel(f"127.0.0.1:{proxy.port}", client_credentials(certs)) as channel:
                assert await call(channel, b"abc") == b"cba"
            async with grpc.aio.secure_channel(f"localhost:{proxy.port}", client_credentials(certs)) as channel:
                assert await call(channel, b"xyz") == b"zyx"  # the certificate names localhost too
            async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(channel, b"plain")
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await upstream.stop(None)
        return proxy.rows()

    rows = asyncio.run(main())
    assert [r["request_body"] for r in rows] == [b"abc", b"xyz"]  # the plaintext call never became an exchange


def test_mtls_listener_rejects_a_client_without_a_certificate(certs, tmp_path):
    async def main():
        upstream, _, target = await start_plain_upstream()
        settings = GrpcProxySettings(incumbent=target, tls_cert=certs["server.pem"], tls_key=certs["server.key"],
                                     tls_client_ca=certs["ca.pem"])
        async with Proxy(settings, tmp_path) as proxy:
            async with grpc.aio.secure_channel(f"127.0.0.1:{proxy.port}", client_credentials(certs)) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(channel, b"no cert")
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            creds = client_credentials(certs, with_cert=True)
            async with grpc.aio.secure_channel(f"127.0.0.1:{proxy.port}", creds) as channel:
                assert await call(channel, b"with cert") == b"trec htiw"
        await upstream.stop(None)
        return proxy.rows()

    rows = asyncio.run(main())
    assert [r["request_body"] for r in rows] == [b"with cert"]


# -- the upstreams -----------------------------------------------------------------------------


def test_tls_and_mtls_upstreams_mirror_and_capture(certs, tmp_path):
    """Incumbent over TLS (the shared CA); candidate over mTLS with a certificate issued to
    `candidate.test`, not its address (per-arm client cert and server name)."""

    async def main():
        incumbent, inc_handler, inc_port = await start_tls_upstream(certs)
        candidate, cand_handler, cand_port = await start_tls_upstream(certs, cert="named", client_ca=True)
        settings = GrpcProxySettings(
            incumbent=f"grpcs://127.0.0.1:{inc_port}",
            candidate=f"grpcs://127.0.0.1:{cand_port}",
            upstream_ca=certs["ca.pem"],
            upstream_tls_by_arm={"candidate": {"cert": certs["client.pem"], "key": certs["client.key"],
                                               "server_name": "candidate.test"}},
        )
        async with Proxy(settings, tmp_path) as proxy:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
                answers = [await call(channel, b"req-%d" % i) for i in range(20)]
            await wait_rows(proxy, 20)
        await incumbent.stop(None)
        await candidate.stop(None)
        return answers, proxy.rows(), inc_handler, cand_handler

    answers, rows, inc_handler, cand_handler = asyncio.run(main())
    assert answers == [(b"req-%d" % i)[::-1] for i in range(20)]
    assert len(rows) == 20
    for row in rows:
        assert row["incumbent_status"] == 0 and row["incumbent_body"] == row["request_body"][::-1]
        assert row["candidate_status"] == 0 and row["candidate_error"] is None
        assert row["candidate_body"] == row["request_body"][::-1]
    assert inc_handler.peers == [None] * 20  # TLS without a client certificate
    assert cand_handler.peers == [[b"shadowline-proxy"]] * 20  # the proxy's client certificate (its CN)


def test_mtls_upstream_without_a_client_certificate_is_a_candidate_failure_only(certs, tmp_path):
    async def main():
        incumbent, _, inc_target = await start_plain_upstream()
        candidate, cand_handler, cand_port = await start_tls_upstream(certs, client_ca=True)
        settings = GrpcProxySettings(incumbent=inc_target, candidate=f"grpcs://127.0.0.1:{cand_port}",
                                     upstream_ca=certs["ca.pem"], shadow_timeout=2.0)
        async with Proxy(settings, tmp_path) as proxy:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
                assert await call(channel, b"abc") == b"cba"
            await wait_rows(proxy, 1)
        await incumbent.stop(None)
        await candidate.stop(None)
        return proxy.rows(), cand_handler

    [row], cand_handler = asyncio.run(main())
    assert row["incumbent_status"] == 0
    assert row["candidate_status"] != 0 or row["candidate_error"] is not None  # recorded, never answered
    assert cand_handler.peers == []


# -- settings checks and the CLI ---------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(tls_cert="missing.pem", tls_key="server.key"), "--tls-cert {d}/missing.pem: no such file"),
        (dict(tls_cert="notpem.pem", tls_key="server.key"), "--tls-cert {d}/notpem.pem: not a PEM certificate"),
        (dict(tls_cert="server.pem", tls_key="stray.key"), "--tls-key {d}/stray.key: does not match the certificate"),
        (dict(tls_cert="server.pem", tls_key="server.pem"), "--tls-key {d}/server.pem: not a PEM private key"),
        (dict(tls_cert="server.pem"), "--tls-cert and --tls-key go together"),
        (dict(tls_client_ca="ca.pem"), "--tls-client-ca needs --tls-cert"),
        (dict(upstream_ca="ca.pem"), "--upstream-ca: no upstream is grpcs://"),
        (dict(candidate="grpcs://127.0.0.1:2", upstream_tls_by_arm={"candidate": {"cert": "client.pem"}}),
         "--upstream-cert candidate=: the candidate upstream needs both"),
        (dict(upstream_tls_by_arm={"incumbent": {"ca": "ca.pem"}}), "--upstream-ca incumbent=: the incumbent upstream"),
    ],
)
def test_bad_tls_settings_are_one_line_errors(certs, settings, message):
    d = str(Path(certs["ca.pem"]).parent)
    resolved = {}
    for key, value in settings.items():
        if key == "upstream_tls_by_arm":
            value = {arm: {k: f"{d}/{v}" for k, v in kv.items()} for arm, kv in value.items()}
        elif key != "candidate":
            value = f"{d}/{value}"
        resolved[key] = value
    with pytest.raises(TlsConfigError) as err:
        check(GrpcProxySettings(incumbent="127.0.0.1:1", **resolved))
    assert message.format(d=d) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "{d}/notpem.pem", "--tls-key", "{d}/server.key"], "--tls-cert {d}/notpem.pem: not a PEM certificate"),
    (["--incumbent", "grpcs://127.0.0.1:1", "--upstream-cert", "{d}/client.pem", "--upstream-key", "{d}/stray.key"],
     "--upstream-key {d}/stray.key: does not match the certificate {d}/client.pem"),
])
def test_bad_cert_file_exits_2_with_one_line(certs, tmp_path, args, message):
    d = str(Path(certs["ca.pem"]).parent)
    argv = ["proxy", "grpc", "--incumbent", "127.0.0.1:1", "--listen", "127.0.0.1:0", "--run-dir", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, "-m", "harness.cli", *argv, *[a.format(d=d) for a in args]],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(f"shadowline: error: {message.format(d=d)}"), line


def test_cli_tls_listener_and_tls_upstream(certs, children, tmp_path):
    """`shadowline proxy grpc` with a TLS listener and a grpcs:// incumbent, as a child process."""
    from concurrent import futures

    upstream = grpc.server(futures.ThreadPoolExecutor(4))
    upstream.add_generic_rpc_handlers([_SyncEcho()])
    port = upstream.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(_read(certs["named.key"]), _read(certs["named.pem"]))]))
    upstream.start()
    try:
        run_dir = tmp_path / "run"
        proxy = spawn("proxy", shadowline_command(
            "proxy", "grpc", "--listen", "127.0.0.1:0", "--run-dir", str(run_dir),
            "--incumbent", f"grpcs://127.0.0.1:{port}", "--upstream-ca", certs["ca.pem"],
            "--upstream-server-name", "candidate.test",
            "--tls-cert", certs["server.pem"], "--tls-key", certs["server.key"]), tmp_path / "logs" / "proxy.log")
        children.append(proxy)
        with grpc.secure_channel(f"127.0.0.1:{proxy.port}", grpc.ssl_channel_credentials(_read(certs["ca.pem"]))) as channel:
            assert channel.unary_unary(ECHO)(b"over tls", timeout=5) == b"slt revo"
        assert proxy.stop() == 0
    finally:
        upstream.stop(None)
    conn = sqlite3.connect(run_dir / "capture.db")
    try:
        assert conn.execute("SELECT request_body, incumbent_status FROM exchanges").fetchall() == [(b"over tls", 0)]
        settings = conn.execute("SELECT value FROM meta WHERE key='proxy_settings'").fetchone()[0]
    finally:
        conn.close()
    assert certs["server.key"] in settings and "BEGIN" not in settings  # paths recorded, never key material


class _SyncEcho(grpc.GenericRpcHandler):
    def service(self, details):
        return grpc.unary_unary_rpc_method_handler(lambda request, context: request[::-1])
