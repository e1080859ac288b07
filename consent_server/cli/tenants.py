"""``consentctl tenants``: create, get, list and delete tenants (operator keys)."""

from __future__ import annotations

from typing import Annotated

import typer

from consent_client.v1 import admin_pb2 as apb

from .common import Tenant, call, client, emit, jsonable, options, out, print_json, ts_text

app = typer.Typer(
    help="Create, list and delete tenants (operator keys only).", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Mount ``tenants`` on the root command."""
    root.add_typer(app, name="tenants")


def _line(tenant: apb.Tenant) -> None:
    out.print(
        f"{tenant.tenant_id}  {ts_text(tenant.created_at)}  {tenant.display_name or '-'}",
        markup=False,
    )


def _show(ctx: typer.Context, tenant: apb.Tenant) -> None:
    emit(ctx, tenant, lambda: _line(tenant))


@app.command("create")
def create(
    ctx: typer.Context,
    tenant: Tenant,
    name: Annotated[str, typer.Option("--name", help="A display name for people.")] = "",
) -> None:
    """Create a tenant (until then every call naming it fails with TENANT_NOT_FOUND)."""
    _show(ctx, call(ctx, lambda c: c.create_tenant(tenant, name).raw))


@app.command("get")
def get(ctx: typer.Context, tenant: Tenant) -> None:
    """Print a tenant: id, creation time, display name."""
    _show(ctx, call(ctx, lambda c: c.get_tenant(tenant).raw))


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Print every tenant, by id: id, creation time, display name (--json: one array)."""
    found: list[apb.Tenant] = []
    as_json = options(ctx).json
    with client(ctx) as c:
        token = ""
        while True:
            page = c.list_tenants(1000, token)
            for tenant in page.tenants:
                if as_json:
                    found.append(tenant.raw)
                else:
                    _line(tenant.raw)
            token = page.next_page_token
            if not token:
                break
    if as_json:
        print_json({"tenants": jsonable(found)})


@app.command("delete")
def delete(ctx: typer.Context, tenant: Tenant) -> None:
    """Delete a tenant that holds no consent data (refused otherwise); revokes its keys."""
    done = call(ctx, lambda c: c.delete_tenant(tenant))
    emit(
        ctx,
        done,
        lambda: out.print(
            f"deleted {done.tenant.tenant_id}; API keys revoked: {done.api_keys_revoked}"
        ),
    )
