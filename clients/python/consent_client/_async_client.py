"""The asyncio client (grpc.aio)."""

# ``timeout`` is the gRPC deadline sent with each call (as in grpc.aio itself), not an
# asyncio cancellation scope, so ASYNC109's advice does not apply.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

import grpc

from . import _calls
from ._calls import Backoff, Call
from ._client import PemSource, _Options, tls_credentials
from ._errors import error_from_rpc
from ._tenant import TenantBound, WithTenant
from ._types import (
    ApiKey,
    ApiKeyRoleLike,
    BatchItem,
    ChangeResult,
    ChangeWebhook,
    ChangeWebhookDeliveries,
    ChannelLike,
    ConsentEvent,
    ConsentLinks,
    CreatedApiKey,
    Decision,
    DeletedTenant,
    DeliveryProviderInfo,
    DeliveryProviderKindLike,
    DeploymentHealth,
    EventPage,
    ForgetResult,
    InboundResult,
    MessageStatus,
    NotificationPage,
    Payload,
    RecipientLike,
    ReplayResult,
    RevokedApiKey,
    SendResult,
    SetChangeWebhookResult,
    SourceLike,
    Template,
    Tenant,
    TenantPage,
    WhatsAppWebhook,
)
from .v1 import admin_pb2 as apb
from .v1 import admin_pb2_grpc as apb_grpc
from .v1 import consent_pb2 as pb
from .v1 import consent_pb2_grpc as pb_grpc

T = TypeVar("T")


def _stubs_for(
    channel: grpc.aio.Channel,
) -> tuple[pb_grpc.ConsentServiceAsyncStub, apb_grpc.ConsentAdminServiceAsyncStub]:
    # The *AsyncStub names exist only in the .pyi; the runtime stubs serve both channels.
    return pb_grpc.ConsentServiceStub(channel), apb_grpc.ConsentAdminServiceStub(channel)


class AsyncConsentClient:
    """An asyncio client for ``consent.v1.ConsentService`` (grpc.aio); same API as
    :class:`ConsentClient`, with coroutines.

    It can be created anywhere (at import time, outside any event loop): the channel is
    made on the first call, in the loop that makes it.

    Args:
        target: ``host:port`` of the consent authority (e.g. ``"127.0.0.1:50051"``).
        api_key: sent as ``authorization: Bearer <api_key>`` on every call, if given.
        timeout: the deadline of every call in seconds, retries and backoff included
            (like httpx's or redis-py's); every method also takes ``timeout=`` to
            override it for one call. When it runs out the call raises
            :class:`DeadlineExceeded`.
        attempt_timeout: a shorter deadline for each attempt (None = the time left),
            so that a read stuck on one server can still be retried within ``timeout``.
        retries: how many times a call that failed transiently is retried, when that
            is safe (see the package docs); 0 disables retries.
        channel: a ``grpc.aio.Channel`` to use instead of a new insecure one to ``target``
            (e.g. a secure channel); the caller keeps ownership and closes it.
        credentials: TLS credentials for a new secure channel to ``target``.
        tls, tls_ca, tls_cert, tls_key: TLS and mTLS options, as on :class:`ConsentClient`.
        backoff: the retry backoff (exponential with jitter; defaults are fine).

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        timeout: float = 5.0,
        attempt_timeout: float | None = None,
        retries: int = 3,
        channel: grpc.aio.Channel | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        backoff: Backoff | None = None,
        tls: bool = False,
        tls_ca: PemSource | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
    ) -> None:
        self._o = _Options(target, api_key, timeout, retries, backoff, attempt_timeout)
        credentials = tls_credentials(
            tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, credentials=credentials
        )
        self._owns_channel = channel is None
        self._credentials = credentials
        # The channel is made on first use, inside the loop that uses it: grpc.aio binds a
        # channel to the running loop, so a client built at import time (no loop yet)
        # must not make one in __init__.
        self._channel: grpc.aio.Channel | None = channel
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stubs: (
            tuple[pb_grpc.ConsentServiceAsyncStub, apb_grpc.ConsentAdminServiceAsyncStub] | None
        ) = None if channel is None else _stubs_for(channel)

    def _ready(
        self,
    ) -> tuple[pb_grpc.ConsentServiceAsyncStub, apb_grpc.ConsentAdminServiceAsyncStub]:
        """The stubs, making the channel in the running loop on first use (or again when
        the loop it was made in has closed, e.g. between two ``asyncio.run`` calls)."""
        loop = asyncio.get_running_loop()
        stale = self._owns_channel and self._loop is not None and self._loop.is_closed()
        if self._stubs is None or stale:
            o = self._o
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(o.target, self._credentials, o.channel_options)
            else:
                channel = grpc.aio.insecure_channel(o.target, o.channel_options)
            self._channel, self._loop = channel, loop
            self._stubs = _stubs_for(channel)
        return self._stubs

    def for_tenant(self, tenant: str) -> AsyncTenantConsentClient:
        """A view of this client bound to ``tenant``: its methods omit ``tenant_id``.
        It shares this client's channel (closing the client ends it too).

        Raises:
            ClientValidationError: ``tenant`` is empty.
        """
        return AsyncTenantConsentClient(self, tenant)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (unless it was passed in by the caller). Closing a client that
        never made a call, or closing twice, does nothing; a closed client can be used
        again (it makes a new channel)."""
        if not self._owns_channel or self._channel is None:
            return
        channel, self._channel, self._stubs, self._loop = self._channel, None, None, None
        await channel.close(None)

    async def _invoke(self, call: Call[T], timeout: float | None) -> T:
        stub, admin = self._ready()
        fn = getattr(admin if call.admin else stub, call.method)
        budget = self._o.budget(call, timeout)
        while True:
            attempt_timeout = budget.attempt_timeout()
            try:
                response = await fn(
                    call.request, timeout=attempt_timeout, metadata=self._o.metadata
                )
            except grpc.RpcError as err:
                exc = error_from_rpc(err)
                delay = budget.retry_delay(exc)
                if delay is None:
                    raise exc from err
                await asyncio.sleep(delay)
                continue
            return call.parse(response)

    async def check_consent(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        topic: str,
        *,
        at: datetime | None = None,
        timeout: float | None = None,
    ) -> Decision:
        """Decide whether ``address`` on ``channel`` may be messaged about ``topic`` now
        (or, with ``at``, whether it was at that instant; ``decision.raw.deciding_event``
        names the history event that decided).

        ``topic`` is required (e.g. ``"marketing"``), as for sends: an empty one raises
        :class:`InvalidArgument`. Read-only; retried when safe.
        """
        return await self._invoke(
            _calls.check_consent(tenant_id, channel, address, topic, at), timeout
        )

    async def batch_check_consent(
        self,
        tenant_id: str,
        recipients: Iterable[RecipientLike],
        topic: str,
        *,
        at: datetime | None = None,
        timeout: float | None = None,
    ) -> list[BatchItem]:
        """Decide for up to 10,000 recipients at once, about one (required) topic.

        ``recipients`` are ``(channel, address)`` tuples or :class:`Recipient` values.
        Results come back in request order; an address that cannot be normalised is a
        :class:`BatchItem` whose ``error`` is set (usually :class:`InvalidArgument`).
        """
        return await self._invoke(
            _calls.batch_check_consent(tenant_id, recipients, topic, at), timeout
        )

    async def opt_out(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        topic: str = "",
        *,
        source: SourceLike = "api",
        evidence: str = "",
        occurred_at: datetime | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> ChangeResult:
        """Record that the recipient withdrew consent for ``topic`` ("" = all topics).

        ``occurred_at`` is when the customer acted (tz-aware; default now). When
        ``event_id`` is None the client generates one (``ev_<hex>``) so that a retried
        call is applied once; a replay returns ``duplicate=True``.
        """
        call = _calls.change(
            "OptOut", tenant_id, channel, address, topic, source, evidence, occurred_at, event_id
        )
        return await self._invoke(call, timeout)

    async def opt_in(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        topic: str = "",
        *,
        source: SourceLike = "api",
        evidence: str = "",
        occurred_at: datetime | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> ChangeResult:
        """Record that the recipient gave consent for ``topic`` ("" = all topics).

        Arguments as in :meth:`opt_out`.
        """
        call = _calls.change(
            "OptIn", tenant_id, channel, address, topic, source, evidence, occurred_at, event_id
        )
        return await self._invoke(call, timeout)

    async def send_if_allowed(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        topic: str,
        text: str | None = None,
        *,
        template: Template | pb.TemplateMessage | None = None,
        payload: Payload | pb.Payload | None = None,
        idempotency_key: str | None = None,
        auto_idempotency_key: bool = True,
        not_after: datetime | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> SendResult:
        """Hand a message over: accepted into the outbox only if consent allows it.

        Give exactly one of ``text``, ``template`` and ``payload``. When
        ``idempotency_key`` is None the client generates one (``idem_<hex>``, returned
        in :attr:`SendResult.idempotency_key`) so that a retried send never queues
        twice; pass ``auto_idempotency_key=False`` to send without a key, in which case
        the call is never retried.

        Raises:
            RecipientOptedOut: the recipient opted out of the topic or of all topics.
            OptInRequired: the topic requires an opt-in the recipient never gave.
        """
        call = _calls.send_if_allowed(
            tenant_id,
            channel,
            address,
            topic,
            _calls.message(text, template, payload),
            idempotency_key,
            auto_idempotency_key,
            not_after,
            metadata,
        )
        return await self._invoke(call, timeout)

    async def handle_inbound_message(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        *,
        provider_message_id: str,
        text: str = "",
        button_payload: str = "",
        received_at: datetime | None = None,
        timeout: float | None = None,
    ) -> InboundResult:
        """Feed an inbound reply or button tap (STOP, START, HELP...) to the authority.

        ``provider_message_id`` is the event id: a redelivered webhook changes nothing,
        so the call is retried when safe.
        """
        call = _calls.handle_inbound_message(
            tenant_id, channel, address, text, button_payload, provider_message_id, received_at
        )
        return await self._invoke(call, timeout)

    async def list_consent_events(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        page_size: int = 0,
        page_token: str = "",
        *,
        timeout: float | None = None,
    ) -> EventPage:
        """One page of the recipient's consent history, newest first.

        ``page_size`` is 1-1000 (0 = the server's default, 100). See
        :meth:`iter_consent_events` to walk every page.
        """
        call = _calls.list_consent_events(tenant_id, channel, address, page_size, page_token)
        return await self._invoke(call, timeout)

    async def iter_consent_events(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        page_size: int = 0,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[ConsentEvent]:
        """Every consent event of the recipient, newest first, following page tokens.

        ``timeout`` applies to each page request.
        """
        token = ""
        while True:
            page = await self.list_consent_events(
                tenant_id, channel, address, page_size, token, timeout=timeout
            )
            for event in page.events:
                yield event
            token = page.next_page_token
            if not token:
                return

    async def get_message_status(
        self, tenant_id: str, message_id: str, *, timeout: float | None = None
    ) -> MessageStatus:
        """The delivery status of a message accepted by :meth:`send_if_allowed`.

        Raises:
            NotFound: no such message for the tenant.
        """
        return await self._invoke(_calls.get_message_status(tenant_id, message_id), timeout)

    # -- ConsentAdminService: tenants (operator keys) ------------------------------------

    async def create_tenant(
        self, tenant_id: str, display_name: str = "", *, timeout: float | None = None
    ) -> Tenant:
        """Create a tenant; until then every call naming it raises :class:`NotFound`
        (reason ``TENANT_NOT_FOUND``). Needs an operator key.

        Raises:
            AlreadyExists: the id is taken (reason ``TENANT_ALREADY_EXISTS``).
        """
        return await self._invoke(_calls.create_tenant(tenant_id, display_name), timeout)

    async def get_tenant(self, tenant_id: str, *, timeout: float | None = None) -> Tenant:
        """A tenant's id, display name and creation time; :class:`NotFound` if none."""
        return await self._invoke(_calls.get_tenant(tenant_id), timeout)

    async def list_tenants(
        self, page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> TenantPage:
        """A page of tenants by id; pass ``next_page_token`` on for the next page."""
        return await self._invoke(_calls.list_tenants(page_size, page_token), timeout)

    async def delete_tenant(self, tenant_id: str, *, timeout: float | None = None) -> DeletedTenant:
        """Delete a tenant that holds no consent data (its keys are revoked).

        Raises:
            FailedPrecondition: it still holds consent data (reason ``TENANT_NOT_EMPTY``);
                nothing changed.
            NotFound: no such tenant.
        """
        return await self._invoke(_calls.delete_tenant(tenant_id), timeout)

    # -- ConsentAdminService: tenant settings --------------------------------------------

    async def get_tenant_settings(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> apb.TenantSettings:
        """The tenant's effective settings (defaults filled in) as the proto message."""
        return await self._invoke(_calls.get_tenant_settings(tenant_id), timeout)

    async def update_tenant_settings(
        self,
        tenant_id: str,
        settings: _calls.SettingsLike,
        update_mask: Iterable[str] | None = None,
        *,
        version: int | None = None,
        timeout: float | None = None,
    ) -> apb.TenantSettings:
        """Change the settings fields named by ``update_mask``; returns the new settings.

        ``settings`` is a ``TenantSettings`` message or a dict in its JSON form, e.g.
        ``{"business_name": "Meal Box", "resubscribe_url": "https://..."}``; for a
        dict, ``update_mask`` defaults to its keys. Repeated fields (``keyword_sets``,
        ``templates``...) are replaced whole: read, edit, write back.

        ``version`` is the ``TenantSettings.version`` the change was based on: when
        someone changed the settings since, nothing is written and the call raises
        (ABORTED, reason ``SETTINGS_VERSION_MISMATCH``). ``None`` writes unconditionally.

        Raises:
            InvalidArgument: a bad value; ``field_violations`` name each field
                (e.g. ``settings.templates[0].opt_out_confirmation``).
            OtherError: ABORTED, reason ``SETTINGS_VERSION_MISMATCH``: read again, retry.
        """
        call = _calls.update_tenant_settings(tenant_id, settings, update_mask, version)
        return await self._invoke(call, timeout)

    async def create_consent_link(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        topic: str = "",
        *,
        ttl_seconds: int = 0,
        short_links: bool = False,
        timeout: float | None = None,
    ) -> ConsentLinks:
        """Signed opt-out and re-subscribe links for the recipient and ``topic``.

        ``topic=""`` means all topics; ``ttl_seconds=0`` means the server default
        (90 days). The result also carries the ``List-Unsubscribe`` and
        ``List-Unsubscribe-Post`` header values for e-mail (RFC 8058).
        ``short_links=True`` adds ``short_opt_out_url`` / ``short_resubscribe_url``
        (``<public URL>/l/<code>``, for SMS).

        Raises:
            FailedPrecondition: the server has no public URL for links.
        """
        call = _calls.create_consent_link(
            tenant_id, channel, address, topic, ttl_seconds, short_links
        )
        return await self._invoke(call, timeout)

    # -- ConsentAdminService: API keys and erasure ---------------------------------------

    async def create_api_key(
        self,
        tenant_id: str,
        role: ApiKeyRoleLike,
        description: str = "",
        *,
        rate_limit_per_second: int = 0,
        timeout: float | None = None,
    ) -> CreatedApiKey:
        """Create an API key for ``tenant_id`` ("*" = an operator key) with ``role``
        (``"admin"``, ``"writer"``, ``"sender"``, ``"reader"`` or :class:`ApiKeyRole`).

        The key itself is in :attr:`CreatedApiKey.api_key`, shown only this once.
        ``rate_limit_per_second=0`` means the server's default. Never retried: a retry
        after a lost answer would mint a second key.

        Raises:
            InvalidArgument: a bad role, description or rate limit.
            PermissionDenied: the caller's key may not create this key.
        """
        call = _calls.create_api_key(tenant_id, role, description, rate_limit_per_second)
        return await self._invoke(call, timeout)

    async def list_api_keys(
        self, tenant_id: str, *, include_revoked: bool = False, timeout: float | None = None
    ) -> list[ApiKey]:
        """The tenant's keys, oldest first ("*" = the operator keys); never secrets."""
        return await self._invoke(_calls.list_api_keys(tenant_id, include_revoked), timeout)

    async def revoke_api_key(
        self, tenant_id: str, key_id: str, *, timeout: float | None = None
    ) -> RevokedApiKey:
        """Revoke a key by its id: its next call fails with :class:`Unauthenticated`.

        Idempotent (``already_revoked`` says it was revoked before), so retried when safe.

        Raises:
            NotFound: no such key in the tenant (reason ``API_KEY_NOT_FOUND``).
        """
        return await self._invoke(_calls.revoke_api_key(tenant_id, key_id), timeout)

    async def forget_recipient(
        self, tenant_id: str, channel: ChannelLike, address: str, *, timeout: float | None = None
    ) -> ForgetResult:
        """Erase what the authority holds about the recipient (right to erasure).

        A recipient who had opted out stays suppressed (a keyed hash, never the
        address, is kept). Retried when safe: a repeated erasure finds nothing more.
        """
        return await self._invoke(_calls.forget_recipient(tenant_id, channel, address), timeout)

    # -- ConsentAdminService: delivery providers -----------------------------------------

    async def set_delivery_provider(
        self,
        tenant_id: str,
        kind: DeliveryProviderKindLike,
        *,
        channel: ChannelLike = "unspecified",
        url: str = "",
        signing_secret: str = "",
        phone_number_id: str = "",
        access_token: str = "",
        timeout_ms: int = 0,
        timeout: float | None = None,
    ) -> DeliveryProviderInfo:
        """Set the provider (``"log"``, ``"webhook"`` or ``"whatsapp_cloud"``) that delivers
        the tenant's messages on ``channel`` (``"unspecified"`` = every channel without
        its own); returns it as stored, without secrets.

        ``url`` is the webhook URL or the WhatsApp Cloud API base URL (empty = Meta's).
        ``signing_secret`` (webhook) and ``access_token`` (whatsapp_cloud) are write-only;
        leave them empty to keep the stored ones (same URL and phone number
        id only). ``timeout_ms=0`` = 10 s.

        Raises:
            ClientValidationError: an option that does not apply to ``kind`` (nothing
                is sent).
            InvalidArgument: a bad value; ``field_violations`` name each field.
        """
        provider = _calls.delivery_provider(
            kind, channel, url, signing_secret, phone_number_id, access_token, timeout_ms
        )
        return await self._invoke(_calls.set_delivery_provider(tenant_id, provider), timeout)

    async def get_delivery_providers(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> list[DeliveryProviderInfo]:
        """The tenant's configured providers, the all-channels entry first; secrets are
        never returned (``secret_set`` says whether one is stored). Empty = ``log``."""
        return await self._invoke(_calls.get_delivery_providers(tenant_id), timeout)

    # -- ConsentAdminService: WhatsApp webhook -------------------------------------------

    async def set_whatsapp_webhook(
        self,
        tenant_id: str,
        verify_token: str,
        app_secret: str,
        *,
        phone_number_ids: Iterable[str],
        waba_id: str = "",
        timeout: float | None = None,
    ) -> WhatsAppWebhook:
        """Set (replace) the tenant's WhatsApp Cloud API webhook: the verify token typed
        into the Meta app, its App Secret (write-only) and the tenant's business phone
        number ids (only their notifications are applied; each belongs to one tenant).
        The answer names the path (and URL, when the server knows it) to point the Meta
        app at, and the app-level path that routes by phone number id."""
        return await self._invoke(
            _calls.set_whatsapp_webhook(
                tenant_id, verify_token, app_secret, phone_number_ids, waba_id
            ),
            timeout,
        )

    # -- ConsentAdminService: change webhooks --------------------------------------------

    async def set_change_webhook(
        self,
        tenant_id: str,
        name: str,
        url: str,
        *,
        signing_secret: str = "",
        status_changes_only: bool = False,
        timeout: float | None = None,
    ) -> SetChangeWebhookResult:
        """Create or replace the tenant's change webhook ``name``: every later consent
        change is POSTed to ``url`` (https), signed with ``signing_secret`` (docs/webhooks.md).

        An empty ``signing_secret`` keeps the stored one for the same URL, else the server
        generates one and returns it in :attr:`SetChangeWebhookResult.signing_secret`,
        shown only this once. ``status_changes_only`` POSTs only status changes and
        erasures. Never retried: a retry after a lost answer would keep (not show) a
        generated secret.

        Raises:
            InvalidArgument: a bad name or URL (an internal address is refused), or too
                many endpoints; ``field_violations`` name each field.
        """
        call = _calls.set_change_webhook(tenant_id, name, url, signing_secret, status_changes_only)
        return await self._invoke(call, timeout)

    async def get_change_webhook(
        self, tenant_id: str, name: str, *, timeout: float | None = None
    ) -> ChangeWebhook:
        """One change webhook (its secret masked).

        Raises:
            NotFound: the tenant has no change webhook of that name.
        """
        return await self._invoke(_calls.get_change_webhook(tenant_id, name), timeout)

    async def list_change_webhooks(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> list[ChangeWebhook]:
        """The tenant's change webhooks, by name (secrets masked)."""
        return await self._invoke(_calls.list_change_webhooks(tenant_id), timeout)

    async def delete_change_webhook(
        self, tenant_id: str, name: str, *, timeout: float | None = None
    ) -> bool:
        """Delete a change webhook with its position, log and dead letters; True when
        there was one (retried when safe: deleting twice leaves nothing)."""
        return await self._invoke(_calls.delete_change_webhook(tenant_id, name), timeout)

    async def list_change_webhook_deliveries(
        self, tenant_id: str, name: str, *, limit: int = 0, timeout: float | None = None
    ) -> ChangeWebhookDeliveries:
        """The endpoint's delivery log and dead letters, newest first: ``limit`` of each
        (0-1000; 0 = 50).

        Raises:
            NotFound: the tenant has no change webhook of that name.
        """
        call = _calls.list_change_webhook_deliveries(tenant_id, name, limit)
        return await self._invoke(call, timeout)

    async def redrive_change_webhook_dead_letter(
        self, tenant_id: str, name: str, event_id: str, *, timeout: float | None = None
    ) -> bool:
        """Send a dead letter (by its :attr:`ChangeWebhookDelivery.event_id`) again: same
        event id, fresh attempts, the outcome in the delivery log. True when queued.

        Raises:
            NotFound: no such endpoint, or no dead letter with that event id.
        """
        call = _calls.redrive_change_webhook_dead_letter(tenant_id, name, event_id)
        return await self._invoke(call, timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status (``grpc.health.v1``) of ``service`` ("" = the server):
        ``"SERVING"``, ``"NOT_SERVING"``, ``"SERVICE_UNKNOWN"``... Needs no API key;
        never retried (it reports the server as it is now).

        Raises:
            Unavailable: the server cannot be reached.
        """
        self._ready()  # the channel, made in this loop on first use
        assert self._channel is not None
        check = self._channel.unary_unary(
            _calls.HEALTH_CHECK,
            request_serializer=lambda b: b,
            response_deserializer=_calls.health_status,
        )
        try:
            wait = self._o.timeout if timeout is None else timeout
            status: str = await check(_calls.health_request(service), timeout=wait)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return status

    async def get_deployment_health(self, *, timeout: float | None = None) -> DeploymentHealth:
        """How the deployment keeps consent: the store's durability problems and the
        server's clock (operator keys only)."""
        return await self._invoke(_calls.get_deployment_health(), timeout)

    async def get_whatsapp_webhook(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> WhatsAppWebhook:
        """Whether the tenant's WhatsApp webhook is configured, and its path; no secrets."""
        return await self._invoke(_calls.get_whatsapp_webhook(tenant_id), timeout)

    async def delete_whatsapp_webhook(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> bool:
        """Remove the tenant's WhatsApp webhook settings; True when there were some."""
        return await self._invoke(_calls.delete_whatsapp_webhook(tenant_id), timeout)

    async def list_unapplied_notifications(
        self,
        tenant_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> NotificationPage:
        """A page of the tenant's WhatsApp dead letters (items not applied), newest first."""
        return await self._invoke(
            _calls.list_unapplied_notifications(tenant_id, page_size, page_token), timeout
        )

    async def replay_unapplied_notification(
        self, tenant_id: str, notification_id: str, *, timeout: float | None = None
    ) -> ReplayResult:
        """Apply a dead letter now; ``applied`` False when it is still refused (kept)."""
        return await self._invoke(
            _calls.replay_unapplied_notification(tenant_id, notification_id), timeout
        )

    async def discard_unapplied_notification(
        self, tenant_id: str, notification_id: str, *, timeout: float | None = None
    ) -> bool:
        """Drop a dead letter without applying it; True when it was removed."""
        return await self._invoke(
            _calls.discard_unapplied_notification(tenant_id, notification_id), timeout
        )

    # -- bulk import and export (admin keys) --

    async def import_consent(
        self,
        tenant_id: str,
        batches: Iterable[Iterable[apb.ImportRecord]],
        *,
        opt_ins_have_proof: bool = False,
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> apb.ImportConsentResponse:
        """ImportConsent: stream ``batches`` (each at most 1,000 records) and return the
        summary. Not retried: a failed stream may have applied its first batches;
        sending them again is harmless (event ids derive from the records)."""
        try:
            response: apb.ImportConsentResponse = await self._ready()[1].ImportConsent(
                iter(
                    _calls.import_messages(
                        tenant_id, batches, opt_ins_have_proof=opt_ins_have_proof, dry_run=dry_run
                    )
                ),
                timeout=timeout,
                metadata=self._o.metadata,
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return response

    async def watch_consent_events(
        self,
        tenant_id: str,
        *,
        resume_token: str = "",
        from_oldest: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.WatchConsentEventsResponse]:
        """WatchConsentEvents: the tenant's change feed (see ConsentClient's method)."""
        req = pb.WatchConsentEventsRequest(
            tenant_id=tenant_id, resume_token=resume_token, from_oldest=from_oldest
        )
        try:
            async for message in self._ready()[0].WatchConsentEvents(
                req, timeout=timeout, metadata=self._o.metadata
            ):
                yield message
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err

    async def export_consent(
        self,
        tenant_id: str,
        *,
        channel: ChannelLike | None = None,
        topic: str = "",
        status: str = "",
        updated_since: datetime | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[apb.ExportConsentResponse]:
        """ExportConsent: the pages of the tenant's current records (see the proto)."""
        req = _calls.export_request(
            tenant_id, channel=channel, topic=topic, status=status, updated_since=updated_since
        )
        try:
            async for page in self._ready()[1].ExportConsent(
                req, timeout=timeout, metadata=self._o.metadata
            ):
                yield page
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err


class AsyncTenantConsentClient(TenantBound[AsyncConsentClient]):
    """:class:`AsyncConsentClient` bound to one tenant (from
    :meth:`AsyncConsentClient.for_tenant`): the same methods without their ``tenant_id``
    argument, e.g. ``await acme.check_consent("sms", "+15550100", "marketing")``.
    Operator calls that name no tenant or a new one (``list_tenants``,
    ``create_tenant``, ``delete_tenant``) stay on the client; ``view.client`` takes an
    explicit tenant, which always wins. Close the client, not the view.
    """

    check_consent = WithTenant(AsyncConsentClient.check_consent)
    batch_check_consent = WithTenant(AsyncConsentClient.batch_check_consent)
    opt_out = WithTenant(AsyncConsentClient.opt_out)
    opt_in = WithTenant(AsyncConsentClient.opt_in)
    send_if_allowed = WithTenant(AsyncConsentClient.send_if_allowed)
    handle_inbound_message = WithTenant(AsyncConsentClient.handle_inbound_message)
    list_consent_events = WithTenant(AsyncConsentClient.list_consent_events)
    iter_consent_events = WithTenant(AsyncConsentClient.iter_consent_events)
    get_message_status = WithTenant(AsyncConsentClient.get_message_status)
    get_tenant = WithTenant(AsyncConsentClient.get_tenant)
    get_tenant_settings = WithTenant(AsyncConsentClient.get_tenant_settings)
    update_tenant_settings = WithTenant(AsyncConsentClient.update_tenant_settings)
    create_consent_link = WithTenant(AsyncConsentClient.create_consent_link)
    create_api_key = WithTenant(AsyncConsentClient.create_api_key)
    list_api_keys = WithTenant(AsyncConsentClient.list_api_keys)
    revoke_api_key = WithTenant(AsyncConsentClient.revoke_api_key)
    forget_recipient = WithTenant(AsyncConsentClient.forget_recipient)
    set_delivery_provider = WithTenant(AsyncConsentClient.set_delivery_provider)
    get_delivery_providers = WithTenant(AsyncConsentClient.get_delivery_providers)
    set_whatsapp_webhook = WithTenant(AsyncConsentClient.set_whatsapp_webhook)
    get_whatsapp_webhook = WithTenant(AsyncConsentClient.get_whatsapp_webhook)
    delete_whatsapp_webhook = WithTenant(AsyncConsentClient.delete_whatsapp_webhook)
    set_change_webhook = WithTenant(AsyncConsentClient.set_change_webhook)
    get_change_webhook = WithTenant(AsyncConsentClient.get_change_webhook)
    list_change_webhooks = WithTenant(AsyncConsentClient.list_change_webhooks)
    delete_change_webhook = WithTenant(AsyncConsentClient.delete_change_webhook)
    list_change_webhook_deliveries = WithTenant(AsyncConsentClient.list_change_webhook_deliveries)
    redrive_change_webhook_dead_letter = WithTenant(
        AsyncConsentClient.redrive_change_webhook_dead_letter
    )
    list_unapplied_notifications = WithTenant(AsyncConsentClient.list_unapplied_notifications)
    replay_unapplied_notification = WithTenant(AsyncConsentClient.replay_unapplied_notification)
    discard_unapplied_notification = WithTenant(AsyncConsentClient.discard_unapplied_notification)
    import_consent = WithTenant(AsyncConsentClient.import_consent)
    export_consent = WithTenant(AsyncConsentClient.export_consent)
