"""TLS and mTLS credentials for the gRPC shadow proxy, loaded from PEM files.

Two sides, both configured by file paths in `GrpcProxySettings` (see docs/grpc.md, "TLS and mTLS"):

- the listener: `tls_cert` + `tls_key` make clients use TLS; `tls_client_ca` also requires every
  client to present a certificate signed by that CA (mTLS);
- the upstreams: an upstream written `grpcs://host:port` is called over TLS, verified against
  `upstream_ca` (default: grpcio's bundled roots), presenting `upstream_cert` + `upstream_key`
  when given (mTLS), and checking the name `upstream_server_name` instead of the host when given.
  These four apply to every grpcs:// upstream; `upstream_tls_by_arm` overrides any of them for one
  arm (`{"candidate": {"server_name": "candidate.internal"}}`).

Files are checked before anything listens, and every problem is one line naming the option, the
file and what is wrong: missing, unreadable, not PEM, an encrypted key, a key that does not belong
to its certificate (checked with the stdlib's `ssl`, which loads the pair the way OpenSSL will).
Option names in messages are the CLI's (`--tls-cert`), which are the settings fields' names.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import grpc

TLS_SCHEMES = ("grpcs://", "https://")
PLAIN_SCHEMES = ("grpc://", "http://")
ARM_NAMES = ("incumbent", "candidate", "baseline")
UPSTREAM_KEYS = ("ca", "cert", "key", "server_name")  # keys of one arm's override

_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"


class TlsConfigError(ValueError):
    """A TLS option or file is wrong; the message is one line naming the option and the file."""


@dataclass(frozen=True)
class UpstreamTls:
    """How one grpcs:// upstream is called: file paths (None: default) and the name to verify."""

    ca: str | None = None  # CA bundle verifying the upstream; None: grpcio's bundled roots
    cert: str | None = None  # client certificate chain presented to the upstream (mTLS)
    key: str | None = None
    server_name: str | None = None  # name in the upstream's certificate, when not the host


def uses_tls(url: str) -> bool:
    return url.startswith(TLS_SCHEMES)


def upstream_urls(settings) -> dict[str, str]:
    return {arm: url for arm, url in zip(ARM_NAMES, (settings.incumbent, settings.candidate, settings.baseline)) if url}


def upstream_tls(settings, arm: str) -> UpstreamTls | None:
    """The TLS settings of `arm`'s upstream (shared ones, overridden per arm); None: plaintext."""
    url = upstream_urls(settings).get(arm)
    if url is None or not uses_tls(url):
        return None
    own = (settings.upstream_tls_by_arm or {}).get(arm, {})
    shared = {"ca": settings.upstream_ca, "cert": settings.upstream_cert, "key": settings.upstream_key,
              "server_name": settings.upstream_server_name}
    return UpstreamTls(**{k: own.get(k, shared[k]) for k in UPSTREAM_KEYS})


# -- files ----------------------------------------------------------------------------------


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TlsConfigError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise TlsConfigError(f"{option} {path}: is a directory, expected a PEM file") from None
    except OSError as exc:
        raise TlsConfigError(f"{option} {path}: cannot read: {exc.strerror or exc}") from None


def read_certificates(option: str, path: str) -> bytes:
    """PEM certificates (a chain or a CA bundle), checked to parse."""
    data = _read(option, path)
    if _CERT_BEGIN not in data:
        raise TlsConfigError(f"{option} {path}: not a PEM certificate file (no '-----BEGIN CERTIFICATE-----' line)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(f"{option} {path}: not a valid PEM certificate: {_reason(exc)}") from None
    return data


def read_key(option: str, path: str) -> bytes:
    data = _read(option, path)
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise TlsConfigError(f"{option} {path}: not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----' line)")
    if b"ENCRYPTED" in data:  # grpcio takes no passphrase
        raise TlsConfigError(f"{option} {path}: the private key is encrypted; grpc needs it unencrypted "
                             f"(e.g. openssl pkey -in {path} -out key.pem)")
    return data


def _no_passphrase() -> bytes:
    # Never prompt on a terminal: read_key has already refused encrypted keys.
    raise TlsConfigError("encrypted private key")


def read_pair(cert_option: str, cert_path: str, key_option: str, key_path: str) -> tuple[bytes, bytes]:
    """(certificate chain, private key), checked to belong together."""
    cert = read_certificates(cert_option, cert_path)
    key = read_key(key_option, key_path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert_path, key_path, password=_no_passphrase)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc).lower():
            raise TlsConfigError(f"{key_option} {key_path}: does not match the certificate {cert_path}") from None
        raise TlsConfigError(f"{key_option} {key_path}: cannot be used with {cert_path}: {_reason(exc)}") from None
    return cert, key


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc).splitlines()[0]


# -- credentials -----------------------------------------------------------------------------


def server_credentials(settings) -> grpc.ServerCredentials | None:
    """The listener's credentials; None: plaintext. With `tls_client_ca`, clients need a cert."""
    if not settings.tls_cert and not settings.tls_key:
        if settings.tls_client_ca:
            raise TlsConfigError("--tls-client-ca needs --tls-cert and --tls-key (mTLS is TLS with client certificates)")
        return None
    if not settings.tls_cert or not settings.tls_key:
        raise TlsConfigError("--tls-cert and --tls-key go together (the listener's certificate and its private key)")
    cert, key = read_pair("--tls-cert", settings.tls_cert, "--tls-key", settings.tls_key)
    client_ca = read_certificates("--tls-client-ca", settings.tls_client_ca) if settings.tls_client_ca else None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)


def _upstream_option(name: str, arm: str, settings) -> str:
    """The option a value came from, as a user wrote it: `--upstream-ca` or `--upstream-ca candidate=`."""
    flag = "--upstream-" + name.replace("_", "-")
    return f"{flag} {arm}=" if name in (settings.upstream_tls_by_arm or {}).get(arm, {}) else flag


def channel_credentials(settings, arm: str) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]] | None:
    """(credentials, extra channel options) for `arm`'s upstream; None: plaintext."""
    tls = upstream_tls(settings, arm)
    if tls is None:
        return None

    def option(name: str) -> str:
        return _upstream_option(name, arm, settings)

    if bool(tls.cert) != bool(tls.key):
        raise TlsConfigError(f"{option('cert' if tls.cert else 'key')}: the {arm} upstream needs both "
                             "--upstream-cert and --upstream-key for a client certificate")
    ca = read_certificates(option("ca"), tls.ca) if tls.ca else None
    cert = key = None
    if tls.cert:
        cert, key = read_pair(option("cert"), tls.cert, option("key"), tls.key)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return credentials, options


def check(settings) -> None:
    """Every TLS option and file of `settings`, before anything listens: TlsConfigError if wrong.

    Also refuses upstream options no grpcs:// upstream would use (a forgotten `grpcs://` would
    otherwise send plaintext where TLS was meant)."""
    server_credentials(settings)
    urls = upstream_urls(settings)
    by_arm = settings.upstream_tls_by_arm or {}
    for arm, values in by_arm.items():
        if arm not in ARM_NAMES:
            raise TlsConfigError(f"upstream TLS override for {arm!r}: expected one of {', '.join(ARM_NAMES)}")
        unknown = set(values) - set(UPSTREAM_KEYS)
        if unknown:
            raise TlsConfigError(f"upstream TLS override for {arm}: unknown key(s) {', '.join(sorted(unknown))}")
        name = next(iter(values), "ca")
        if arm not in urls:
            raise TlsConfigError(f"{_upstream_option(name, arm, settings)}: there is no {arm} upstream")
        if not uses_tls(urls[arm]):
            raise TlsConfigError(f"{_upstream_option(name, arm, settings)}: the {arm} upstream {urls[arm]} is not "
                                 "grpcs://host:port (TLS options apply to grpcs:// upstreams only)")
    shared = [n for n in UPSTREAM_KEYS if getattr(settings, f"upstream_{n}")]
    if shared and not any(uses_tls(url) for url in urls.values()):
        raise TlsConfigError(f"--upstream-{shared[0].replace('_', '-')}: no upstream is grpcs://host:port "
                             "(TLS options apply to grpcs:// upstreams only)")
    for arm in urls:
        channel_credentials(settings, arm)


def parse_arm_values(option: str, values: list[str]) -> tuple[str | None, dict[str, str]]:
    """The values of a repeatable `[ARM=]VALUE` option -> (value for every upstream, {arm: value}).

    `--upstream-ca ca.pem --upstream-ca candidate=other-ca.pem`: ca.pem for every grpcs://
    upstream except the candidate's. (A path that starts with `incumbent=`... can be written `./...`.)"""
    shared: str | None = None
    per_arm: dict[str, str] = {}
    for value in values:
        arm, sep, rest = value.partition("=")
        if sep and arm in ARM_NAMES:
            if arm in per_arm:
                raise TlsConfigError(f"{option} {arm}=: given twice")
            if not rest:
                raise TlsConfigError(f"{option} {arm}=: empty value")
            per_arm[arm] = rest
        else:
            if shared is not None:
                raise TlsConfigError(f"{option}: given twice for every upstream (write ARM=VALUE, e.g. candidate={value}, for one)")
            if not value:
                raise TlsConfigError(f"{option}: empty value")
            shared = value
    return shared, per_arm
