"""ConsentAdminService handlers for delivery providers."""

from __future__ import annotations

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.delivery import (
    ALL_CHANNELS,
    ChannelProvider,
    DeliveryAdmin,
    ProviderKind,
    RawProvider,
)
from consent_server.domain.model import Channel, Recipient

from . import convert as cv
from .consent_service import Ctx, rpc

_KIND_TO_PB = cv.to_pb_by_name(ProviderKind, apb.DeliveryProviderKind, "DELIVERY_PROVIDER_KIND_")


def raw_provider(has: bool, provider: apb.DeliveryProvider) -> RawProvider:
    """The wire provider as plain values (unknown channel or no config -> None)."""
    if not has:
        return RawProvider(ALL_CHANNELS, None)
    if provider.channel == pb.CHANNEL_UNSPECIFIED:
        channel: str | None = ALL_CHANNELS
    else:
        rcpt = cv.raw_recipient(pb.Recipient(channel=provider.channel))
        channel = rcpt.channel.value if rcpt.channel is not None else None
    which = provider.WhichOneof("config")
    if which == "webhook":
        w = provider.webhook
        return RawProvider(
            channel,
            ProviderKind.WEBHOOK,
            url=w.url,
            secret=w.signing_secret,
            timeout_ms=w.timeout_ms,
        )
    if which == "whatsapp_cloud":
        c = provider.whatsapp_cloud
        return RawProvider(
            channel,
            ProviderKind.WHATSAPP_CLOUD,
            url=c.base_url,
            secret=c.access_token,
            phone_number_id=c.phone_number_id,
            timeout_ms=c.timeout_ms,
        )
    return RawProvider(channel, ProviderKind.LOG if which == "log" else None)


def provider_info(item: ChannelProvider) -> apb.DeliveryProviderInfo:
    """A configured provider on the wire, never with its secret."""
    cfg = item.config
    info = apb.DeliveryProviderInfo(kind=_KIND_TO_PB[cfg.kind], secret_set=bool(cfg.secret))
    if item.channel != ALL_CHANNELS:
        info.channel = cv.recipient(Recipient(Channel(item.channel), "")).channel
    if cfg.kind is not ProviderKind.LOG:
        info.url = cfg.url
        info.phone_number_id = cfg.phone_number_id
        info.timeout_ms = cfg.timeout_ms
    return info


class DeliveryProviderHandlers:
    """SetDeliveryProvider and GetDeliveryProviders, on the provider-settings use case."""

    def __init__(self, delivery: DeliveryAdmin) -> None:
        self._delivery_admin = delivery

    @rpc
    async def SetDeliveryProvider(
        self, request: apb.SetDeliveryProviderRequest, context: Ctx
    ) -> apb.SetDeliveryProviderResponse:
        stored = await self._delivery_admin.set_provider(
            request.tenant_id, raw_provider(request.HasField("provider"), request.provider)
        )
        return apb.SetDeliveryProviderResponse(provider=provider_info(stored))

    @rpc
    async def GetDeliveryProviders(
        self, request: apb.GetDeliveryProvidersRequest, context: Ctx
    ) -> apb.GetDeliveryProvidersResponse:
        items = await self._delivery_admin.providers(request.tenant_id)
        return apb.GetDeliveryProvidersResponse(providers=[provider_info(i) for i in items])
