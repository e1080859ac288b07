"""Builds the HTTP edge from settings: link keyring, use cases, default handlers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from consent_server.config import Settings
from consent_server.delivery.receipts import WebhookCallbacks
from consent_server.domain.links_service import (
    ConsentLinks,
    Keyring,
    LinkSecretStore,
    static_keyring,
    stored_keyring,
)
from consent_server.domain.masking import mask_address
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.whatsapp import InboundHandler, StatusHandler, StatusReceipt
from consent_server.domain.whatsapp_edge import WhatsAppEdge, WhatsAppStore, inbound_use_case

from .metrics import PrometheusEdgeObserver
from .server import build_app

log = logging.getLogger("consent_server.http")


def keyring_for(settings: Settings, edge_store: LinkSecretStore) -> Keyring:
    """CONSENT_LINK_SECRET when set, else the secret generated once in Redis."""
    if settings.edge.link_secrets:
        return static_keyring(settings.edge.link_secrets)
    return stored_keyring(edge_store)


async def log_status(receipt: StatusReceipt) -> None:
    """The default StatusHandler: log the receipt (the delivery worker replaces it)."""
    log.debug(
        "whatsapp status receipt",
        extra={
            "tenant": receipt.tenant_id,
            "provider_message_id": receipt.provider_message_id,
            "status": receipt.status,
            "recipient": mask_address(receipt.recipient.address) if receipt.recipient else "",
            "errors": ",".join(str(c) for c in receipt.error_codes),
        },
    )


def whatsapp_edge(
    authority: ConsentAuthority,
    edge_store: WhatsAppStore,
    *,
    on_inbound: InboundHandler | None = None,
    on_status: StatusHandler | None = None,
) -> WhatsAppEdge:
    """The WhatsApp use case, counting what it cannot apply in Prometheus; inbound
    replies default to HandleInboundMessage's use case. The HTTP edge serves it and the
    admin service replays its dead letters through it."""
    return WhatsAppEdge(
        authority,
        edge_store,
        on_inbound if on_inbound is not None else inbound_use_case(authority),
        on_status if on_status is not None else log_status,
        observer=PrometheusEdgeObserver(),
    )


def edge_app(
    authority: ConsentAuthority,
    links: ConsentLinks,
    edge_store: WhatsAppStore,
    callbacks: WebhookCallbacks,
    *,
    on_inbound: InboundHandler | None = None,
    on_status: StatusHandler | None = None,
    whatsapp: WhatsAppEdge | None = None,
    store_up: Callable[[], bool],
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """The edge application (``whatsapp`` built by whatsapp_edge when not given);
    ``/healthz`` answers 503 while ``store_up()`` is false."""
    if whatsapp is None:
        whatsapp = whatsapp_edge(authority, edge_store, on_inbound=on_inbound, on_status=on_status)
    return build_app(links, whatsapp, callbacks, store_up=store_up, middlewares=middlewares)
