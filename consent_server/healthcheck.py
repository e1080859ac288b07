"""``python -m consent_server.healthcheck``: exit 0 when the local server is SERVING.

For container health checks (the image's ``HEALTHCHECK``, Kubernetes ``exec`` probes
where the native ``grpc`` probe cannot speak TLS), where no ``grpc_health_probe`` binary
is at hand. It reads the same environment as the server, so in the container it needs no
arguments: one ``grpc.health.v1.Health/Check`` against the port of ``CONSENT_LISTEN``
(a wildcard host is asked on loopback), over TLS when ``CONSENT_TLS_CERT`` is set.

``--http URL`` checks an HTTP endpoint instead (200 = healthy): a worker process has no
gRPC port, only its ``CONSENT_METRICS_LISTEN`` listener.

Exit codes: 0 healthy; 1 not (NOT_SERVING, no answer, TLS failure), with one line on
stderr saying why; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_LISTEN = "127.0.0.1:50051"
# Hosts a server binds to that nobody can connect to: ask loopback instead.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}  # noqa: S104


class CheckFailed(Exception):
    """The server is not healthy; the message says why."""


def local_address(listen: str) -> str:
    """The address to connect to for a server listening on ``listen`` (``host:port``)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or port == "0":
        raise CheckFailed(f"cannot check {listen!r}: need host:port with a fixed port")
    return f"{_WILDCARDS.get(host, host)}:{port}"


def certificate_name(cert_file: str) -> str | None:
    """The first DNS name of the certificate's subjectAltName (None without one): what a
    client connecting to loopback must ask for so the server's certificate matches."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    names = san.value.get_values_for_type(x509.DNSName)
    return names[0] if names else None


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CheckFailed(f"cannot read {path}: {exc.strerror or exc}") from None


def check_grpc(
    address: str,
    *,
    service: str = "",
    timeout_s: float = 3.0,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    server_name: str | None = None,
) -> None:
    """One Health/Check; returns when SERVING, raises CheckFailed otherwise.

    ``tls_ca`` set = TLS, verifying the server against that PEM bundle; ``tls_cert`` and
    ``tls_key`` add a client certificate (servers that require mTLS).
    """
    options: list[tuple[str, str]] = []
    if tls_ca is None:
        channel = grpc.insecure_channel(address)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca),
            private_key=_read(tls_key),
            certificate_chain=_read(tls_cert),
        )
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(address, credentials, options=options)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            detail = err.details() if isinstance(err, grpc.Call) else str(err)
            name = code.name if code is not None else "error"
            raise CheckFailed(f"{address}: {name}: {detail}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise CheckFailed(f"{address}: {status}")


def check_http(url: str, *, timeout_s: float = 3.0) -> None:
    """GET ``url``; returns on 200, raises CheckFailed otherwise."""
    if not url.startswith(("http://", "https://")):
        raise CheckFailed(f"{url!r}: not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckFailed(f"{url}: {reason}") from None
    if status != 200:
        raise CheckFailed(f"{url}: HTTP {status}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m consent_server.healthcheck",
        description="Exit 0 when the consent server (or a worker's --http endpoint) is healthy.",
    )
    p.add_argument("--address", help="host:port to check (default: from CONSENT_LISTEN)")
    p.add_argument("--service", default="", help="health service name (default: the server)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    p.add_argument(
        "--tls-ca",
        help="PEM bundle the server's certificate is verified against; implies TLS "
        "(default when CONSENT_TLS_CERT is set: that certificate itself, trusted as it is)",
    )
    p.add_argument("--tls-cert", help="client certificate, for a server that requires mTLS")
    p.add_argument("--tls-key", help="the client certificate's private key")
    p.add_argument(
        "--tls-server-name",
        help="name the server's certificate is checked for (default: its first DNS name)",
    )
    p.add_argument("--http", metavar="URL", help="check this HTTP endpoint instead (200 = ok)")
    return p


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one check; 0 healthy, 1 not (reason on stderr)."""
    env = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    try:
        if args.http:
            check_http(args.http, timeout_s=args.timeout)
            print(f"{args.http}: OK")
            return 0
        address = args.address or local_address(env.get("CONSENT_LISTEN") or DEFAULT_LISTEN)
        server_cert = env.get("CONSENT_TLS_CERT") or None
        tls_ca = args.tls_ca or server_cert
        name = args.tls_server_name
        if tls_ca is not None and name is None and server_cert is not None:
            name = certificate_name(server_cert)
        check_grpc(
            address,
            service=args.service,
            timeout_s=args.timeout,
            tls_ca=tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            server_name=name,
        )
    except CheckFailed as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"{address}: SERVING")
    return 0


if __name__ == "__main__":
    sys.exit(main())
