"""``consentctl providers``: the delivery provider of each of a tenant's channels."""

from __future__ import annotations

from typing import Annotated

import typer

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb

from .common import Channel, Tenant, call, emit, emit_list, secret_option, tsv

app = typer.Typer(
    help="Delivery providers (log, webhook, whatsapp_cloud) per channel.", no_args_is_help=True
)


def register(root: typer.Typer) -> None:
    """Mount ``providers`` on the root command."""
    root.add_typer(app, name="providers")


def _line(p: apb.DeliveryProviderInfo) -> None:
    channel = pb.Channel.Name(p.channel).removeprefix("CHANNEL_")
    kind = apb.DeliveryProviderKind.Name(p.kind).removeprefix("DELIVERY_PROVIDER_KIND_")
    secret = "secret set" if p.secret_set else "no secret"
    tsv(channel, kind, p.url or "-", p.phone_number_id or "-", f"{p.timeout_ms} ms", secret)


@app.command("get")
def get(ctx: typer.Context, tenant: Tenant) -> None:
    """The tenant's providers, the all-channels entry first (no secrets; none = log)."""
    found = [p.raw for p in call(ctx, lambda c: c.get_delivery_providers(tenant))]
    emit_list(
        ctx, "providers", found, _line, "no provider set: messages are logged, not delivered (log)"
    )


@app.command("set")
def set_(
    ctx: typer.Context,
    tenant: Tenant,
    kind: Annotated[str, typer.Option(help="log, webhook or whatsapp_cloud.")],
    channel: Channel = "unspecified",
    url: Annotated[str, typer.Option(help="Webhook URL, or the WhatsApp Cloud API base URL.")] = "",
    signing_secret: Annotated[
        str,
        secret_option(
            "CONSENT_PROVIDER_SIGNING_SECRET",
            "webhook: the signing secret (prefer the env var); empty keeps the stored one.",
        ),
    ] = "",
    phone_number_id: Annotated[str, typer.Option(help="whatsapp_cloud: phone number id.")] = "",
    access_token: Annotated[
        str,
        secret_option(
            "CONSENT_PROVIDER_ACCESS_TOKEN",
            "whatsapp_cloud: the access token (prefer the env var).",
        ),
    ] = "",
    timeout_ms: Annotated[int, typer.Option(min=0, help="Per request; 0 = 10 s.")] = 0,
) -> None:
    """Set the provider of a channel (default: every channel without its own)."""
    done = call(
        ctx,
        lambda c: c.set_delivery_provider(
            tenant, kind, channel=channel, url=url, signing_secret=signing_secret,
            phone_number_id=phone_number_id, access_token=access_token, timeout_ms=timeout_ms,
        ).raw,
    )  # fmt: skip
    emit(ctx, done, lambda: _line(done))
