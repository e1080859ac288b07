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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from consent_client import ConsentClient
from consent_client import ConsentError as RefusedCall
from consent_client.v1 import admin_pb2 as apb
from consent_server.domain.auth import ApiKeyRecord, Role, new_key
from consent_server.domain.errors import ConsentError
from consent_server.domain.security import SecurityAuthority
from consent_server.store.connect import open_store
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

app = typer.Typer(
    name="keys",
    help="Create, list and revoke API keys (over gRPC, or straight into Redis for the first).",
    no_args_is_help=True,
    add_completion=False,
)

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


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"consentctl keys: {message}", err=True)
    return typer.Exit(code)


def _when(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _client(
    server: str,
    api_key: str | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> Iterator[ConsentClient]:
    """The thin client (gRPC mode); a refused call is one line on stderr and exit 1."""
    try:
        with ConsentClient(
            server, api_key=api_key, timeout=10, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key
        ) as client:
            yield client
    except RefusedCall as exc:
        raise _fail(f"{exc.code.name}: {exc.message}") from None
    except ValueError as exc:  # the client refused an option before calling
        raise _fail(str(exc), 2) from None


def _security(redis_url: str, cluster: bool) -> tuple[SecurityAuthority, RedisConsentStore]:
    store = open_store(redis_url, cluster=cluster)
    return SecurityAuthority(RedisSecurityStore(store.client, store.tombstones), store), store


def _direct_url(server: str | None, redis_url: str | None) -> str:
    if server is None and redis_url is None:
        raise _fail(
            "say where the authority is: --target host:port (with an admin --api-key) or "
            "--redis-url redis://... (straight into the store, for the first key)",
            2,
        )
    assert redis_url is not None
    return redis_url


def _print_keys(rows: list[tuple[str, str, str, str, str, str]]) -> None:
    header = ("KEY_ID", "TENANT", "ROLE", "CREATED", "REVOKED", "DESCRIPTION")
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
    if server is not None:
        with _client(server, api_key, tls_ca, tls_cert, tls_key) as client:
            made = client.create_api_key(
                tenant, role.value, description, rate_limit_per_second=rate_limit
            )
        key_id, token = made.key_id, made.api_key
    else:
        url = _direct_url(server, redis_url)

        async def run() -> tuple[str, str]:
            security, store = _security(url, redis_cluster)
            try:
                created = await security.create_key(
                    tenant_id=tenant,
                    role=role,
                    description=description,
                    rate_limit_per_s=rate_limit,
                    created_by="consentctl",
                    caller=None,
                )
            finally:
                await store.aclose()
            return created.record.key_id, created.api_key

        try:
            key_id, token = asyncio.run(run())
        except ConsentError as exc:
            raise _fail(str(exc)) from None
    typer.echo(token)
    typer.echo(
        f"created key {key_id} ({role.value}) for tenant {tenant}; it is shown only now: "
        "store it in a secret manager",
        err=True,
    )


@app.command("list")
def list_keys(
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
    rows: list[tuple[str, str, str, str, str, str]] = []
    if server is not None:
        with _client(server, api_key, tls_ca, tls_cert, tls_key) as client:
            listed = client.list_api_keys(tenant, include_revoked=include_revoked)
        for k in listed:
            created = round(k.created_at.timestamp() * 1000)
            revoked = round(k.revoked_at.timestamp() * 1000) if k.revoked_at else 0
            rows.append(
                (
                    k.key_id,
                    k.tenant_id,
                    k.role.value,
                    _when(created),
                    _when(revoked) if k.revoked else "-",
                    k.description,
                )
            )
    else:
        url = _direct_url(server, redis_url)

        async def run() -> list[ApiKeyRecord]:
            security, store = _security(url, redis_cluster)
            try:
                return await security.list_keys(tenant, include_revoked)
            finally:
                await store.aclose()

        try:
            records = asyncio.run(run())
        except ConsentError as exc:
            raise _fail(str(exc)) from None
        rows = [
            (
                r.key_id,
                r.tenant_id,
                r.role.value,
                _when(r.created_at_ms),
                _when(r.revoked_at_ms),
                r.description,
            )
            for r in records
        ]
    _print_keys(rows)


@app.command()
def revoke(
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
    if server is not None:
        with _client(server, api_key, tls_ca, tls_cert, tls_key) as client:
            already = client.revoke_api_key(tenant, key_id).already_revoked
    else:
        url = _direct_url(server, redis_url)

        async def run() -> bool:
            security, store = _security(url, redis_cluster)
            try:
                _, was = await security.revoke_key(tenant, key_id)
                return was
            finally:
                await store.aclose()

        try:
            already = asyncio.run(run())
        except ConsentError as exc:
            raise _fail(str(exc)) from None
    typer.echo(f"key {key_id} {'was already' if already else 'is now'} revoked", err=True)


if __name__ == "__main__":
    sys.exit(app())
