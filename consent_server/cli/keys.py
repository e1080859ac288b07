"""``consentctl keys``: create, list and revoke API keys.

Two ways to reach the authority:

* ``--target host:port`` (alias ``--server``; env ``CONSENT_TARGET``) with an admin
  key (``--api-key`` or ``CONSENT_API_KEY``): over gRPC, like any
  client. This is the normal way once a first admin key exists.
* ``--redis-url`` (or ``CONSENT_REDIS_URL``) without ``--target``: straight into the
  store, for the first key of a deployment (the bootstrap). Whoever can reach Redis
  can already change everything, so this grants nothing new.

The embedded store lives inside the server process, so it cannot be reached from
here: start that server with ``CONSENT_BOOTSTRAP_ADMIN_KEY`` set to a key made with
``consentctl keys generate`` instead.

Keys are printed once, on stdout, alone on their line; everything else goes to stderr.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from google.protobuf.timestamp_pb2 import Timestamp

from consent_client.v1 import admin_pb2 as apb
from consent_server.domain.auth import ApiKeyRecord, Role, new_key
from consent_server.domain.errors import ConsentError
from consent_server.domain.security import SecurityAuthority
from consent_server.store.connect import open_store
from consent_server.store.security import RedisSecurityStore

from .common import EXIT_REFUSED, EXIT_USAGE, Options, connect, options, print_json

T = TypeVar("T")

app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys (over gRPC, or straight into Redis for the first).",
    no_args_is_help=True,
    add_completion=False,
)


def register(root: typer.Typer) -> None:
    """Mount ``keys`` on the root command."""
    root.add_typer(app, name="keys")


_ROLE_NAME = {apb.ApiKeyRole.Value(f"API_KEY_ROLE_{role.name}"): role.value for role in Role}

Server = Annotated[
    str | None,
    typer.Option(
        "--target",
        "--server",
        envvar=["CONSENT_TARGET", "CONSENT_SERVER"],
        help="host:port of the authority (gRPC mode); as in the other consentctl commands",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="CONSENT_API_KEY",
        help="an admin key (gRPC mode); prefer the env var",
        show_default=False,
    ),
]
RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url", envvar="CONSENT_REDIS_URL", help="the store (direct mode, no --target)"
    ),
]
RedisCluster = Annotated[
    bool, typer.Option("--redis-cluster", envvar="CONSENT_REDIS_CLUSTER", help="Redis Cluster")
]
TlsCa = Annotated[
    Path | None,
    typer.Option("--tls-ca", envvar="CONSENT_CLIENT_TLS_CA", help="CA that signed the server"),
]
TlsCert = Annotated[
    Path | None,
    typer.Option("--tls-cert", envvar="CONSENT_CLIENT_TLS_CERT", help="client certificate"),
]
TlsKey = Annotated[
    Path | None,
    typer.Option("--tls-key", envvar="CONSENT_CLIENT_TLS_KEY", help="client private key"),
]
Tenant = Annotated[str, typer.Option("--tenant", help="the tenant, or '*' for operator keys")]


def _fail(message: str, code: int = EXIT_REFUSED) -> typer.Exit:
    typer.echo(f"consentctl keys: {message}", err=True)
    return typer.Exit(code)


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ms(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


@dataclass(frozen=True)
class _Access:
    """Where a keys command goes: over gRPC (``grpc`` set) or into the store (``redis_url``)."""

    grpc: Options | None
    redis_url: str = ""
    cluster: bool = False


def _access(
    ctx: typer.Context,
    server: str | None,
    api_key: str | None,
    redis_url: str | None,
    redis_cluster: bool,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> _Access:
    """gRPC when a target is given (here or as a root flag), else the store; neither:
    exit 2 naming both."""
    root = options(ctx)
    target = server or root.target
    if target is not None:
        return _Access(
            root.merged(
                target=target, api_key=api_key, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key
            )
        )
    if redis_url is None:
        raise _fail(
            "say where the authority is: --target host:port (with an admin --api-key) or "
            "--redis-url redis://... (straight into the store, for the first key)",
            EXIT_USAGE,
        )
    return _Access(None, redis_url, redis_cluster)


def _direct(access: _Access, use: Callable[[SecurityAuthority], Awaitable[T]]) -> T:
    """Run ``use`` on the store's security authority (the first-key bootstrap); a
    refusal is one line and exit 1."""

    async def run() -> T:
        store = open_store(access.redis_url, cluster=access.cluster)
        try:
            security = SecurityAuthority(RedisSecurityStore(store.client, store.tombstones), store)
            return await use(security)
        finally:
            await store.aclose()

    try:
        return asyncio.run(run())
    except ConsentError as exc:
        raise _fail(str(exc)) from None


def _print_keys(ctx: typer.Context, rows: list[tuple[str, str, str, str, str, str]]) -> None:
    header = ("KEY_ID", "TENANT", "ROLE", "CREATED", "REVOKED", "DESCRIPTION")
    if options(ctx).json:
        names = ("key_id", "tenant_id", "role", "created_at", "revoked_at", "description")
        print_json({"keys": [dict(zip(names, row, strict=True)) for row in rows]})
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        typer.echo(
            "  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
        )


@app.command()
def generate() -> None:
    """Print a new random key without storing it (for CONSENT_BOOTSTRAP_ADMIN_KEY)."""
    _, token, _ = new_key()
    typer.echo(token)


@app.command()
def create(
    ctx: typer.Context,
    tenant: Tenant,
    role: Annotated[Role, typer.Option("--role", help="admin, writer, sender or reader")],
    description: Annotated[str, typer.Option("--description", help="what it is for")] = "",
    rate_limit: Annotated[
        int, typer.Option("--rate-limit", help="requests/s for this key; 0 = server default")
    ] = 0,
    server: Server = None,
    api_key: ApiKey = None,
    redis_url: RedisUrl = None,
    redis_cluster: RedisCluster = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Create a key and print it once (stdout); its id and role go to stderr."""
    access = _access(ctx, server, api_key, redis_url, redis_cluster, tls_ca, tls_cert, tls_key)
    if access.grpc is not None:
        with connect(access.grpc) as client:
            made = client.create_api_key(
                tenant, role.value, description, rate_limit_per_second=rate_limit
            )
        key_id, token = made.key_id, made.api_key
    else:

        async def use(security: SecurityAuthority) -> tuple[str, str]:
            created = await security.create_key(
                tenant_id=tenant,
                role=role,
                description=description,
                rate_limit_per_s=rate_limit,
                created_by="consentctl",
                caller=None,
            )
            return created.record.key_id, created.api_key

        key_id, token = _direct(access, use)
    if options(ctx).json:
        print_json({"key_id": key_id, "api_key": token, "role": role.value, "tenant_id": tenant})
    else:
        typer.echo(token)
    typer.echo(
        f"created key {key_id} ({role.value}) for tenant {tenant}; it is shown only now: "
        "store it in a secret manager",
        err=True,
    )


@app.command("list")
def list_keys(
    ctx: typer.Context,
    tenant: Tenant,
    include_revoked: Annotated[bool, typer.Option("--all", help="also list revoked keys")] = False,
    server: Server = None,
    api_key: ApiKey = None,
    redis_url: RedisUrl = None,
    redis_cluster: RedisCluster = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """List a tenant's keys (never their secrets)."""
    access = _access(ctx, server, api_key, redis_url, redis_cluster, tls_ca, tls_cert, tls_key)
    if access.grpc is not None:
        with connect(access.grpc) as client:
            listed = [k.raw for k in client.list_api_keys(tenant, include_revoked=include_revoked)]
        rows = [
            (
                k.key_id,
                k.tenant_id,
                _ROLE_NAME.get(k.role, "?"),
                _when(_ms(k.created_at)),
                _when(_ms(k.revoked_at)) if k.revoked else "-",
                k.description,
            )
            for k in listed
        ]
    else:

        async def use(security: SecurityAuthority) -> list[ApiKeyRecord]:
            return await security.list_keys(tenant, include_revoked)

        rows = [
            (
                r.key_id,
                r.tenant_id,
                r.role.value,
                _when(r.created_at_ms),
                _when(r.revoked_at_ms),
                r.description,
            )
            for r in _direct(access, use)
        ]
    _print_keys(ctx, rows)


@app.command()
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="the key's id (16 hex characters)")],
    tenant: Tenant,
    server: Server = None,
    api_key: ApiKey = None,
    redis_url: RedisUrl = None,
    redis_cluster: RedisCluster = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
) -> None:
    """Revoke a key: every server process refuses it from the next call on."""
    access = _access(ctx, server, api_key, redis_url, redis_cluster, tls_ca, tls_cert, tls_key)
    if access.grpc is not None:
        with connect(access.grpc) as client:
            already = client.revoke_api_key(tenant, key_id).already_revoked
    else:

        async def use(security: SecurityAuthority) -> bool:
            _, was = await security.revoke_key(tenant, key_id)
            return was

        already = _direct(access, use)
    if options(ctx).json:
        print_json({"key_id": key_id, "already_revoked": already})
    typer.echo(f"key {key_id} {'was already' if already else 'is now'} revoked", err=True)


if __name__ == "__main__":
    sys.exit(app())
