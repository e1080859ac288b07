"""``consentctl doctor``: check a deployment and say what to fix.

Checks, in order: the TLS handshake and the server certificate's expiry (when TLS is
used), gRPC connectivity (the health service), the API key, then through the
GetDeploymentHealth admin RPC the store's persistence and eviction policy, and the
clock skew between the server and this machine. Exit 0 when nothing failed, 5 when
something did (each with its fix), 6 when the target cannot be reached at all.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import typer

from consent_client import (
    ConsentClient,
    ConsentError,
    PermissionDenied,
    Unauthenticated,
)

from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNREACHABLE,
    Options,
    describe,
    fail,
    options,
    out,
    print_json,
)

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, how it went, what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def register(root: typer.Typer) -> None:
    """Mount ``doctor`` on the root command."""
    root.command()(doctor)


def _host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    host = host.removeprefix("dns:///").strip("[]")
    return host or "localhost", int(port) if port.isdigit() else 443


def check_tls(opts: Options, cert_days: int) -> Check:
    """Handshake as the client would (same CA and client certificate) and read the
    server certificate's expiry."""
    if not (opts.tls or opts.tls_ca or opts.tls_cert):
        return Check(
            "tls",
            "warn",
            "not used: calls travel in plaintext",
            "serve TLS (CONSENT_TLS_CERT/KEY) unless the server is on loopback or a "
            "private network; then pass --tls or --tls-ca",
        )
    host, port = _host_port(opts.address)
    context = ssl.create_default_context(cafile=str(opts.tls_ca) if opts.tls_ca else None)
    context.set_alpn_protocols(["h2"])  # gRPC speaks HTTP/2
    try:
        if opts.tls_cert and opts.tls_key:
            context.load_cert_chain(str(opts.tls_cert), str(opts.tls_key))
        with (
            socket.create_connection((host, port), timeout=opts.timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            cert = tls.getpeercert()
            version = tls.version()
    except (OSError, ssl.SSLError, ValueError) as exc:
        return Check(
            "tls",
            "fail",
            f"handshake with {host}:{port} failed: {exc}",
            "check --tls-ca (the CA that signed the server), the name in the server "
            "certificate, and for mTLS --tls-cert/--tls-key",
        )
    not_after = str((cert or {}).get("notAfter", ""))
    if not not_after:
        return Check("tls", "ok", f"{version}; certificate expiry not readable")
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    days = (expires - datetime.now(UTC)).total_seconds() / 86400
    when = expires.strftime("%Y-%m-%d")
    if days < cert_days:
        return Check(
            "tls",
            "fail",
            f"{version}; the server certificate expires {when} ({days:.0f} days)",
            "renew the certificate; the server reloads it on SIGHUP",
        )
    return Check("tls", "ok", f"{version}; server certificate valid until {when}")


def check_connectivity(c: ConsentClient, target: str) -> Check:
    """The gRPC health service answers SERVING."""
    status = c.health()
    if status == "SERVING":
        return Check("connectivity", "ok", f"{target} answers; health SERVING")
    return Check(
        "connectivity",
        "fail",
        f"{target} answers but health is {status}",
        "the server cannot reach its store: see its log (Redis host, password, TLS)",
    )


def _store_checks(store: str, checked: bool, problems: list[str]) -> list[Check]:
    if store == "embedded":
        return [
            Check(
                "persistence",
                "warn",
                "embedded store: consent lives in the server's memory and is lost when it "
                "stops (fine for development only)",
                "set CONSENT_REDIS_URL to a Redis with AOF on",
            )
        ]
    if not checked:
        return [
            Check(
                "persistence",
                "warn",
                f"{store}: CONFIG GET refused, persistence and eviction not checked",
                "check appendonly and maxmemory-policy in your Redis provider's settings",
            )
        ]
    persistence = [p for p in problems if "persist" in p]
    eviction = [p for p in problems if "maxmemory-policy" in p]
    other = [p for p in problems if p not in persistence and p not in eviction]
    return [
        _found(
            "persistence",
            persistence,
            "CONFIG SET appendonly yes (and appendonly yes in redis.conf)",
            f"{store}: AOF or RDB save points on",
        ),
        _found(
            "eviction",
            eviction,
            "CONFIG SET maxmemory-policy noeviction (and in redis.conf)",
            f"{store}: maxmemory-policy noeviction",
        ),
        *(Check("store", "fail", p) for p in other),
    ]


def _found(name: str, problems: list[str], fix: str, fine: str) -> Check:
    """A failed check naming ``problems`` and how to ``fix`` them, or ``fine`` if none."""
    return Check(name, "fail", "; ".join(problems), fix) if problems else Check(name, "ok", fine)


def check_deployment(c: ConsentClient, opts: Options, max_skew: float) -> list[Check]:
    """Auth, store durability and clock skew, from GetDeploymentHealth."""
    keyed = "the API key" if opts.api_key else "a call without an API key"
    sent = time.time()
    try:
        health = c.get_deployment_health()
    except Unauthenticated as exc:
        return [
            Check(
                "auth",
                "fail",
                f"{keyed} was refused: {describe(exc)}",
                "pass a valid key: --api-key or CONSENT_API_KEY",
            )
        ]
    except PermissionDenied as exc:
        return [
            Check("auth", "ok", "the API key is accepted"),
            Check(
                "store",
                "warn",
                f"not checked: {describe(exc)}",
                "run doctor with an operator key (tenant *) to check the store and clock",
            ),
        ]
    except ConsentError as exc:
        return [Check("store", "fail", f"GetDeploymentHealth failed: {describe(exc)}")]
    received = time.time()
    checks = [Check("auth", "ok", f"{keyed} is accepted")]
    checks += _store_checks(
        health.store, health.durability_checked, list(health.durability_problems)
    )
    # The server read its clock somewhere between sending and receiving: the midpoint,
    # give or take half the round trip.
    server = health.server_time.timestamp()
    skew = server - (sent + received) / 2
    margin = (received - sent) / 2
    if abs(skew) - margin > max_skew:
        checks.append(
            Check(
                "clock",
                "fail",
                f"the server's clock is {skew:+.1f} s off this machine's (more than "
                f"{max_skew:g} s)",
                "run NTP (chrony, systemd-timesyncd) on the server and on this machine",
            )
        )
    else:
        checks.append(Check("clock", "ok", f"skew {skew:+.3f} s (±{margin:.3f} s)"))
    return checks


def run_checks(opts: Options, max_skew: float, cert_days: int) -> tuple[list[Check], bool]:
    """Every check; the flag is True when the target could not be reached at all."""
    checks = [check_tls(opts, cert_days)]
    with ConsentClient(
        opts.address,
        api_key=opts.api_key,
        timeout=opts.timeout,
        retries=0,  # the server as it is now
        tls=opts.tls,
        tls_ca=opts.tls_ca,
        tls_cert=opts.tls_cert,
        tls_key=opts.tls_key,
    ) as c:
        try:
            checks.append(check_connectivity(c, opts.address))
        except ConsentError as exc:
            checks.append(
                Check(
                    "connectivity",
                    "fail",
                    f"cannot reach {opts.address}: {describe(exc)}",
                    "check --target (or CONSENT_TARGET), that the server runs, "
                    "firewalls, and TLS (--tls-ca) if the server serves TLS",
                )
            )
            return checks, True
        checks += check_deployment(c, opts, max_skew)
    return checks, False


_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor(
    ctx: typer.Context,
    max_skew: Annotated[
        float, typer.Option(min=0, help="Clock skew (seconds) above which to fail.")
    ] = 5.0,
    cert_days: Annotated[
        int, typer.Option(min=0, help="Fail when the server certificate expires sooner.")
    ] = 14,
) -> None:
    """Check a deployment (TLS, connectivity, API key, Redis persistence and eviction,
    clock skew) and print what to fix. Exit 0 all good (warnings allowed), 5 problems
    found, 6 target unreachable."""
    opts = options(ctx)
    try:
        checks, unreachable = run_checks(opts, max_skew, cert_days)
    except ValueError as exc:  # TLS options the client refused (unreadable file...)
        fail(str(exc))
    problems = [c for c in checks if c.status == "fail"]
    code = EXIT_UNREACHABLE if unreachable else EXIT_PROBLEMS if problems else EXIT_OK
    if opts.json:
        print_json(
            {
                "target": opts.address,
                "ok": not problems,
                "checks": [asdict(c) for c in checks],
                "problems": [f"{c.name}: {c.detail}" for c in problems],
            }
        )
    else:
        for c in checks:
            out.print(f"{_MARK[c.status]}  {c.name:<12} {c.detail}", markup=False)
            if c.fix and c.status != "ok":
                out.print(f"      {'':<12} fix: {c.fix}", markup=False)
        if problems:
            out.print(f"{len(problems)} problem(s) to fix", markup=False)
        else:
            out.print("no problems found", markup=False)
    raise typer.Exit(code)
