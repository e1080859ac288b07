"""``consentctl webhooks``: a tenant's change webhooks (every change, POSTed signed).

The Python client has no typed methods for these RPCs yet, so the commands make the
calls through the client's invocation path (its key, TLS, retries and error mapping)
with the raw protobuf messages.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from consent_client._calls import Call, RetryMode
from consent_client.v1 import admin_pb2 as apb

from .common import Tenant, call, emit, jsonable, options, out, print_json, ts_text, tsv

app = typer.Typer(
    help="Change webhooks: endpoints that receive every consent change, signed (docs/webhooks.md).",
    no_args_is_help=True,
)
Name = Annotated[str, typer.Argument(help="The endpoint's name within the tenant, e.g. crm.")]


def register(root: typer.Typer) -> None:
    """Mount ``webhooks`` on the root command."""
    root.add_typer(app, name="webhooks")


def _admin(ctx: typer.Context, method: str, request: Any, mode: RetryMode) -> Any:
    return call(
        ctx,
        lambda c: c._invoke(Call(method, request, mode, lambda r: r, admin=True), None),
    )


def _line(w: apb.ChangeWebhook) -> None:
    tsv(w.name, w.url, f"secret {w.signing_secret_hint}", f"updated {ts_text(w.updated_at)}")


@app.command("set")
def set_(
    ctx: typer.Context,
    tenant: Tenant,
    name: Name,
    url: Annotated[str, typer.Option(help="Where to POST each change (https://).")],
    signing_secret: Annotated[
        str,
        typer.Option(
            envvar="CONSENT_CHANGE_WEBHOOK_SECRET",
            help="The HMAC key (prefer the env var); empty: keep the stored one for the "
            "same URL, or generate one and print it once.",
            show_default=False,
        ),
    ] = "",
    status_changes_only: Annotated[
        bool,
        typer.Option(
            "--status-changes-only",
            help="POST only changes that changed a status, and erasures (the filter).",
        ),
    ] = False,
) -> None:
    """Create or replace a change webhook; a generated secret is printed ONCE."""
    req = apb.SetChangeWebhookRequest(
        tenant_id=tenant,
        name=name,
        url=url,
        signing_secret=signing_secret,
        status_changes_only=status_changes_only,
    )
    # Never retried: a retry after a lost answer would keep (not show) the new secret.
    done: apb.SetChangeWebhookResponse = _admin(ctx, "SetChangeWebhook", req, RetryMode.NEVER)

    def human() -> None:
        _line(done.webhook)
        if done.signing_secret:
            out.print(
                f"signing secret (shown once, store it now): {done.signing_secret}", markup=False
            )

    emit(ctx, done, human)


@app.command("get")
def get(ctx: typer.Context, tenant: Tenant, name: Name) -> None:
    """One change webhook (its secret masked)."""
    req = apb.GetChangeWebhookRequest(tenant_id=tenant, name=name)
    got: apb.GetChangeWebhookResponse = _admin(ctx, "GetChangeWebhook", req, RetryMode.READ)
    emit(ctx, got.webhook, lambda: _line(got.webhook))


@app.command("list")
def list_(ctx: typer.Context, tenant: Tenant) -> None:
    """The tenant's change webhooks, by name."""
    req = apb.ListChangeWebhooksRequest(tenant_id=tenant)
    got: apb.ListChangeWebhooksResponse = _admin(ctx, "ListChangeWebhooks", req, RetryMode.READ)
    if options(ctx).json:
        print_json({"webhooks": jsonable(list(got.webhooks))})
        return
    for w in got.webhooks:
        _line(w)
    if not got.webhooks:
        out.print("no change webhook")


@app.command("delete")
def delete(ctx: typer.Context, tenant: Tenant, name: Name) -> None:
    """Delete a change webhook with its position, log and dead letters (idempotent)."""
    req = apb.DeleteChangeWebhookRequest(tenant_id=tenant, name=name)
    got: apb.DeleteChangeWebhookResponse = _admin(
        ctx, "DeleteChangeWebhook", req, RetryMode.IDEMPOTENT_WRITE
    )
    emit(ctx, got, lambda: out.print("deleted" if got.deleted else "no such change webhook"))


def _delivery(kind: str, d: apb.ChangeWebhookDelivery) -> None:
    status = apb.ChangeWebhookDeliveryStatus.Name(d.status).removeprefix(
        "CHANGE_WEBHOOK_DELIVERY_STATUS_"
    )
    tsv(
        kind,
        d.event_id,
        status,
        f"{d.attempts} attempt(s)",
        f"http {d.http_status or '-'}",
        f"{d.latency_ms} ms",
        ts_text(d.finished_at),
        d.last_error or "-",
    )


@app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    tenant: Tenant,
    name: Name,
    limit: Annotated[int, typer.Option(min=0, max=1000, help="How many of each; 0 = 50.")] = 0,
) -> None:
    """The endpoint's delivery log and dead letters, newest first."""
    req = apb.ListChangeWebhookDeliveriesRequest(tenant_id=tenant, name=name, limit=limit)
    got: apb.ListChangeWebhookDeliveriesResponse = _admin(
        ctx, "ListChangeWebhookDeliveries", req, RetryMode.READ
    )

    def human() -> None:
        for d in got.deliveries:
            _delivery("log", d)
        for d in got.dead_letters:
            _delivery("dead", d)
        if not got.deliveries and not got.dead_letters:
            out.print("nothing delivered yet")

    emit(ctx, got, human)


@app.command("redrive")
def redrive(
    ctx: typer.Context,
    tenant: Tenant,
    name: Name,
    event_id: Annotated[str, typer.Argument(help="The dead letter's event id (deliveries).")],
) -> None:
    """Send a dead letter again (same event id, fresh attempts; outcome in the log)."""
    req = apb.RedriveChangeWebhookDeadLetterRequest(tenant_id=tenant, name=name, event_id=event_id)
    got: apb.RedriveChangeWebhookDeadLetterResponse = _admin(
        ctx, "RedriveChangeWebhookDeadLetter", req, RetryMode.IDEMPOTENT_WRITE
    )
    emit(ctx, got, lambda: out.print("queued: the dispatcher sends it within about a second"))
