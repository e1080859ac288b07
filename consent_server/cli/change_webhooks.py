"""``consentctl webhooks``: a tenant's change webhooks (every change, POSTed signed),
through the Python client's typed methods. ``--json`` prints the messages as the API
returns them (the results' ``raw``)."""

from __future__ import annotations

from typing import Annotated

import typer

from consent_client import ChangeWebhook, ChangeWebhookDelivery

from .common import Tenant, call, emit, emit_list, out, secret_option, ts_text, tsv

app = typer.Typer(
    help="Change webhooks: endpoints that receive every consent change, signed (docs/webhooks.md).",
    no_args_is_help=True,
)
Name = Annotated[str, typer.Argument(help="The endpoint's name within the tenant, e.g. crm.")]


def register(root: typer.Typer) -> None:
    """Mount ``webhooks`` on the root command."""
    root.add_typer(app, name="webhooks")


def _line(w: ChangeWebhook) -> None:
    tsv(w.name, w.url, f"secret {w.signing_secret_hint}", f"updated {ts_text(w.raw.updated_at)}")


@app.command("set")
def set_(
    ctx: typer.Context,
    tenant: Tenant,
    name: Name,
    url: Annotated[str, typer.Option(help="Where to POST each change (https://).")],
    signing_secret: Annotated[
        str,
        secret_option(
            "CONSENT_CHANGE_WEBHOOK_SECRET",
            "The HMAC key (prefer the env var); empty: keep the stored one for the "
            "same URL, or generate one and print it once.",
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
    # Never retried (the client's rule): a retry after a lost answer would keep (not show)
    # the new secret.
    done = call(
        ctx,
        lambda c: c.set_change_webhook(
            tenant,
            name,
            url,
            signing_secret=signing_secret,
            status_changes_only=status_changes_only,
        ),
    )

    def human() -> None:
        _line(done.webhook)
        if done.signing_secret:
            out.print(
                f"signing secret (shown once, store it now): {done.signing_secret}", markup=False
            )

    emit(ctx, done.raw, human)


@app.command("get")
def get(ctx: typer.Context, tenant: Tenant, name: Name) -> None:
    """One change webhook (its secret masked)."""
    got = call(ctx, lambda c: c.get_change_webhook(tenant, name))
    emit(ctx, got.raw, lambda: _line(got))


@app.command("list")
def list_(ctx: typer.Context, tenant: Tenant) -> None:
    """The tenant's change webhooks, by name."""
    got = call(ctx, lambda c: c.list_change_webhooks(tenant))
    emit_list(ctx, "webhooks", got, _line, "no change webhook", json_of=lambda w: w.raw)


@app.command("delete")
def delete(ctx: typer.Context, tenant: Tenant, name: Name) -> None:
    """Delete a change webhook with its position, log and dead letters (idempotent)."""
    deleted = call(ctx, lambda c: c.delete_change_webhook(tenant, name))
    emit(
        ctx,
        {"deleted": deleted},
        lambda: out.print("deleted" if deleted else "no such change webhook"),
    )


def _delivery(kind: str, d: ChangeWebhookDelivery) -> None:
    tsv(
        kind,
        d.event_id,
        d.status.value.upper(),
        f"{d.attempts} attempt(s)",
        f"http {d.http_status or '-'}",
        f"{d.latency_ms} ms",
        ts_text(d.raw.finished_at),
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
    got = call(ctx, lambda c: c.list_change_webhook_deliveries(tenant, name, limit=limit))

    def human() -> None:
        for d in got.deliveries:
            _delivery("log", d)
        for d in got.dead_letters:
            _delivery("dead", d)
        if not got.deliveries and not got.dead_letters:
            out.print("nothing delivered yet")

    emit(ctx, got.raw, human)


@app.command("redrive")
def redrive(
    ctx: typer.Context,
    tenant: Tenant,
    name: Name,
    event_id: Annotated[str, typer.Argument(help="The dead letter's event id (deliveries).")],
) -> None:
    """Send a dead letter again (same event id, fresh attempts; outcome in the log)."""
    queued = call(ctx, lambda c: c.redrive_change_webhook_dead_letter(tenant, name, event_id))
    emit(
        ctx,
        {"queued": queued},
        lambda: out.print("queued: the dispatcher sends it within about a second"),
    )
