"""``consentctl inbound``: simulate a reply, manage WhatsApp dead letters and the
tenant's WhatsApp webhook settings."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from consent_client.v1 import admin_pb2 as apb

from .common import (
    EXIT_REFUSED,
    Address,
    Channel,
    Tenant,
    call,
    client,
    emit,
    fields,
    jsonable,
    options,
    out,
    print_json,
    secret_option,
    ts_text,
    tsv,
)


class _InboundGroup(typer.core.TyperGroup):
    """``inbound TENANT ADDRESS ...`` simulates a reply (the ``simulate`` command, so
    the short form keeps working); ``inbound dead-letters ...`` manages dead letters."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["simulate", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_InboundGroup,
    help="Inbound replies: simulate one, manage WhatsApp notifications not applied, "
    "and the WhatsApp webhook settings.",
    no_args_is_help=True,
)
dead_letters = typer.Typer(
    help="WhatsApp notification items the webhook could not apply (kept per tenant).",
    no_args_is_help=True,
)
app.add_typer(dead_letters, name="dead-letters")
webhook = typer.Typer(
    help="The tenant's WhatsApp Cloud API webhook (verify token, app secret, numbers).",
    no_args_is_help=True,
)
app.add_typer(webhook, name="webhook")

NotificationId = Annotated[str, typer.Argument(help="The id from `list`.")]


def register(root: typer.Typer) -> None:
    """Mount ``inbound`` on the root command."""
    root.add_typer(app, name="inbound")


@app.command("simulate")
def simulate(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    text: Annotated[str, typer.Option("--text", help="The reply text (e.g. STOP).")] = "",
    button: Annotated[str, typer.Option(help="A button payload (e.g. UNSUBSCRIBE).")] = "",
    message_id: Annotated[
        str | None,
        typer.Option(help="The provider message id (the event id); default: a new one."),
    ] = None,
    channel: Channel = "whatsapp",
) -> None:
    """Simulate an inbound reply or button tap, as a channel webhook would deliver it."""
    ident = message_id or f"consentctl.{uuid.uuid4().hex}"
    result = call(
        ctx,
        lambda c: c.handle_inbound_message(
            tenant, channel, address, provider_message_id=ident, text=text, button_payload=button
        ),
    )

    def human() -> None:
        out.print(f"action:           {result.action.name}")
        out.print(f"matched keyword:  {result.matched_keyword or '-'}", markup=False)
        out.print(f"reply:            {result.reply_text or '-'}", markup=False)
        out.print(f"reply message id: {result.reply_message_id or '-'}")
        out.print(f"revision:         {result.revision}")
        out.print(f"provider msg id:  {ident}", markup=False)

    emit(ctx, {**jsonable(result), "provider_message_id": ident}, human)


@dead_letters.command("list")
def dead_letters_list(
    ctx: typer.Context,
    tenant: Tenant,
    raw: Annotated[bool, typer.Option("--raw", help="Print each item as received.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
) -> None:
    """List the tenant's WhatsApp notification items that were not applied."""
    items: list[apb.UnappliedNotification] = []
    total = 0
    token = ""
    with client(ctx) as c:
        while len(items) < limit:
            page = c.list_unapplied_notifications(
                tenant, page_size=min(100, limit - len(items)), page_token=token
            )
            items.extend(n.message for n in page.notifications)
            total = page.total
            token = page.next_page_token
            if not token:
                break
    if options(ctx).json:
        print_json({"notifications": jsonable(items), "total": total})
        return
    for item in items:
        # One line per item, tab-separated: readable and easy to script.
        tsv(item.id, ts_text(item.received_at), item.reason, item.kind, item.path, item.detail)
        if raw:
            out.print(item.raw, markup=False, soft_wrap=True)
    out.print(f"{len(items)} shown of {total} kept")


@dead_letters.command("replay")
def dead_letters_replay(
    ctx: typer.Context, tenant: Tenant, notification_id: NotificationId
) -> None:
    """Apply a dead letter now (you vouch for it); it stays listed if still refused
    (exit 1)."""
    result = call(ctx, lambda c: c.replay_unapplied_notification(tenant, notification_id))

    def human() -> None:
        if result.applied:
            out.print(f"applied and removed: {notification_id}", markup=False)
        else:
            n = result.notification
            out.print(f"still not applied ({n.reason}): {n.detail}", markup=False)

    emit(ctx, result, human)
    if not result.applied:
        raise typer.Exit(EXIT_REFUSED)


@dead_letters.command("discard")
def dead_letters_discard(
    ctx: typer.Context, tenant: Tenant, notification_id: NotificationId
) -> None:
    """Remove a dead letter without applying it."""
    call(ctx, lambda c: c.discard_unapplied_notification(tenant, notification_id))
    emit(
        ctx,
        {"discarded": notification_id},
        lambda: out.print(f"discarded: {notification_id}", markup=False),
    )


def _show_webhook(ctx: typer.Context, value: Any) -> None:
    fields(ctx, value)


@webhook.command("get")
def webhook_get(ctx: typer.Context, tenant: Tenant) -> None:
    """Whether the WhatsApp webhook is configured, its path and numbers (no secrets)."""
    _show_webhook(ctx, call(ctx, lambda c: c.get_whatsapp_webhook(tenant)))


@webhook.command("set")
def webhook_set(
    ctx: typer.Context,
    tenant: Tenant,
    phone_number_id: Annotated[
        list[str], typer.Option("--phone-number-id", help="A business phone number id (repeat).")
    ],
    verify_token: Annotated[
        str,
        typer.Option(envvar="CONSENT_WHATSAPP_VERIFY_TOKEN", help="The Meta app's verify token."),
    ],
    app_secret: Annotated[
        str,
        secret_option(
            "CONSENT_WHATSAPP_APP_SECRET",
            "The Meta app's App Secret; prefer the env var (shell history).",
        ),
    ],
    waba_id: Annotated[str, typer.Option(help="WhatsApp Business Account id.")] = "",
) -> None:
    """Set (replace) the WhatsApp webhook settings; prints the path to give Meta."""
    result = call(
        ctx,
        lambda c: c.set_whatsapp_webhook(
            tenant, verify_token, app_secret, phone_number_ids=phone_number_id, waba_id=waba_id
        ),
    )
    _show_webhook(ctx, result)


@webhook.command("delete")
def webhook_delete(ctx: typer.Context, tenant: Tenant) -> None:
    """Remove the tenant's WhatsApp webhook settings."""
    existed = call(ctx, lambda c: c.delete_whatsapp_webhook(tenant))
    emit(
        ctx,
        {"deleted": existed},
        lambda: out.print("deleted" if existed else "nothing was configured"),
    )
