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
import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from consent_client import ApiKeyRole
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(at: datetime | None) -> int:
    return 0 if at is None else (at - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class _Access:
    """Where a keys command goes: over gRPC (``grpc`` set) or into the store (``redis_url``)."""

    grpc: Options | None
    redis_url: str = ""
    cluster: bool = False


def _access(
    ctx: typer.Context,
    server: Server = None,
    api_key: ApiKey = None,
    redis_url: RedisUrl = None,
    redis_cluster: RedisCluster = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
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


def _with_access(fn: Callable[..., None]) -> Callable[..., None]:
    """A keys command ``fn(ctx, access, ...)``: its CLI gets ``_access``'s options
    (--target ... --tls-key) after its own, and ``fn`` gets the resolved ``_Access``."""
    own = inspect.signature(fn, eval_str=True)
    extra = list(inspect.signature(_access, eval_str=True).parameters.values())[1:]
    names = [p.name for p in extra]

    @functools.wraps(fn)
    def command(ctx: typer.Context, **kwargs: Any) -> None:
        picked = {name: kwargs.pop(name) for name in names}
        fn(ctx, _access(ctx, **picked), **kwargs)

    params = [p for p in own.parameters.values() if p.name != "access"] + extra
    del command.__wrapped__  # typer reads the signature below, not fn's
    vars(command)["__signature__"] = own.replace(parameters=params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


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
@_with_access
def create(
    ctx: typer.Context,
    access: _Access,
    tenant: Tenant,
    role: Annotated[Role, typer.Option("--role", help="admin, writer, sender or reader")],
    description: Annotated[str, typer.Option("--description", help="what it is for")] = "",
    rate_limit: Annotated[
        int, typer.Option("--rate-limit", help="requests/s for this key; 0 = server default")
    ] = 0,
) -> None:
    """Create a key and print it once (stdout); its id and role go to stderr."""
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
@_with_access
def list_keys(
    ctx: typer.Context,
    access: _Access,
    tenant: Tenant,
    include_revoked: Annotated[bool, typer.Option("--all", help="also list revoked keys")] = False,
) -> None:
    """List a tenant's keys (never their secrets)."""
    if access.grpc is not None:
        with connect(access.grpc) as client:
            listed = client.list_api_keys(tenant, include_revoked=include_revoked)
        rows = [
            (
                k.key_id,
                k.tenant_id,
                "?" if k.role is ApiKeyRole.UNSPECIFIED else k.role.value,
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
@_with_access
def revoke(
    ctx: typer.Context,
    access: _Access,
    key_id: Annotated[str, typer.Argument(help="the key's id (16 hex characters)")],
    tenant: Tenant,
) -> None:
    """Revoke a key: every server process refuses it from the next call on."""
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
