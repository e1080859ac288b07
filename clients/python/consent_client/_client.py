"""The synchronous client (grpcio)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from . import _calls
from ._calls import Backoff, Call
from ._errors import ConsentError, DeadlineExceeded, client_validation_error, error_from_rpc
from ._tenant import TenantBound, WithTenant, checked_tenant
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

USER_AGENT = "consent-client-python/0.1.0"

PemSource = bytes | str | os.PathLike[str]


def _pem(value: PemSource | None, name: str) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise client_validation_error(
            f"{name}: cannot read {os.fspath(value)!r} ({exc.strerror})"
        ) from None


def tls_credentials(
    *,
    tls: bool = False,
    tls_ca: PemSource | None = None,
    tls_cert: PemSource | None = None,
    tls_key: PemSource | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.ChannelCredentials | None:
    """Channel credentials from the TLS options; None = plaintext.

    ``tls_ca`` is the CA that signed the server's certificate (default: the system's
    roots); ``tls_cert``/``tls_key`` are the client's certificate and key for a server
    that requires them (mTLS). Each is PEM bytes or a file path.
    """
    if (tls_cert is None) != (tls_key is None):
        raise client_validation_error("tls_cert and tls_key go together (mTLS needs both)")
    wants_tls = tls or tls_ca is not None or tls_cert is not None
    if credentials is not None:
        if wants_tls:
            raise client_validation_error("pass either credentials or the tls_* options, not both")
        return credentials
    if not wants_tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(tls_ca, "tls_ca"),
        private_key=_pem(tls_key, "tls_key"),
        certificate_chain=_pem(tls_cert, "tls_cert"),
    )


# gRPC reconnects a channel whose server went away after 1 s at first, backing off to
# 120 s; until then every call fails at once. Retries 0.1-0.4 s apart then all fail
# while a server restarting in a fraction of a second is already back, and after a
# long outage a client may not notice the server's return for two minutes. 100 ms
# lines the first reconnects up with the retries' backoff; backing off to 10 s keeps a
# long outage to one connection attempt per channel every ~10 s (gRPC's jitter spreads
# them) while clients notice the server's return within seconds.
RECONNECT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 10_000),
)


class _Options:
    """What the sync and asyncio clients share: options, metadata, retry decisions."""

    def __init__(
        self,
        target: str,
        api_key: str | None,
        timeout: float,
        retries: int,
        backoff: Backoff | None,
        attempt_timeout: float | None = None,
    ) -> None:
        if not isinstance(retries, int) or retries < 0:
            raise client_validation_error("retries must be an integer >= 0")
        self.target = target
        self.timeout = _seconds(timeout, "timeout")
        self.attempt_timeout = (
            None if attempt_timeout is None else _seconds(attempt_timeout, "attempt_timeout")
        )
        self.retries = retries
        self.backoff = backoff or Backoff()
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self.channel_options: list[tuple[str, Any]] = [
            ("grpc.primary_user_agent", USER_AGENT),
            *RECONNECT_OPTIONS,
        ]

    def budget(self, call: Call[Any], timeout: float | None) -> _Budget:
        """The time and retries one call may use: ``timeout`` (or the client's) bounds
        the whole call, every attempt and backoff included."""
        total = self.timeout if timeout is None else _seconds(timeout, "timeout")
        tenant = getattr(call.request, "tenant_id", None)  # ListTenants names none
        if tenant is not None:
            checked_tenant(tenant, "tenant_id")
        return _Budget(self, call, total)


def _seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise client_validation_error(f"{name} must be a positive number of seconds")
    return float(value)


class _Budget:
    """One call's overall deadline and the retry decisions within it.

    Each attempt's gRPC deadline is the time left (capped by ``attempt_timeout``), so
    the call never outlives its ``timeout``; a retry whose backoff would not end before
    the deadline is not made and the last failure is raised as it was.
    """

    def __init__(self, options: _Options, call: Call[Any], total: float) -> None:
        self._o = options
        self._call = call
        self.total = total
        self.deadline = time.monotonic() + total
        self.attempt = 0

    def attempt_timeout(self) -> float:
        """The gRPC deadline of the next attempt, in seconds."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            # Only reachable after a backoff that ate the rest; the attempt is not made.
            raise DeadlineExceeded(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the call's {self.total:g}s deadline passed before attempt {self.attempt + 1}",
            )
        cap = self._o.attempt_timeout
        return left if cap is None else min(left, cap)

    def retry_delay(self, exc: ConsentError) -> float | None:
        """Seconds to wait before retrying after ``exc``, or None when it must be raised."""
        if self.attempt >= self._o.retries or not self._call.mode.retries_on(exc.code):
            return None
        delay = self._o.backoff.delay(self.attempt, exc.retry_delay)
        if time.monotonic() + delay >= self.deadline:
            return None
        self.attempt += 1
        return delay


class ConsentClient:
    """A synchronous client for ``consent.v1.ConsentService``.

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
        channel: a ``grpc.Channel`` to use instead of a new insecure one to ``target``
            (e.g. a secure channel); the caller keeps ownership and closes it.
        credentials: TLS credentials for a new secure channel to ``target``.
        backoff: the retry backoff (exponential with jitter; defaults are fine).
        tls: use TLS with the system's root certificates (implied by ``tls_ca``/``tls_cert``).
        tls_ca: the CA certificate that signed the server's (PEM bytes or a path).
        tls_cert: the client certificate, for a server that requires one (mTLS).
        tls_key: the client certificate's private key (mTLS).

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
        channel: grpc.Channel | None = None,
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
        if channel is not None:
            self._channel = channel
        elif credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, self._o.channel_options)
        else:
            self._channel = grpc.insecure_channel(target, self._o.channel_options)
        self._stub = pb_grpc.ConsentServiceStub(self._channel)
        self._admin = apb_grpc.ConsentAdminServiceStub(self._channel)

    def for_tenant(self, tenant: str) -> TenantConsentClient:
        """A view of this client bound to ``tenant``: its methods omit ``tenant_id``.
        It shares this client's channel (closing the client ends it too).

        Raises:
            ClientValidationError: ``tenant`` is empty.
        """
        return TenantConsentClient(self, tenant)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (unless it was passed in by the caller)."""
        if self._owns_channel:
            self._channel.close()

    def _invoke(self, call: Call[T], timeout: float | None) -> T:
        fn = getattr(self._admin if call.admin else self._stub, call.method)
        budget = self._o.budget(call, timeout)
        while True:
            attempt_timeout = budget.attempt_timeout()
            try:
                response = fn(call.request, timeout=attempt_timeout, metadata=self._o.metadata)
            except grpc.RpcError as err:
                exc = error_from_rpc(err)
                delay = budget.retry_delay(exc)
                if delay is None:
                    raise exc from err
                time.sleep(delay)
                continue
            return call.parse(response)

    def check_consent(
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
        return self._invoke(_calls.check_consent(tenant_id, channel, address, topic, at), timeout)

    def batch_check_consent(
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
        return self._invoke(_calls.batch_check_consent(tenant_id, recipients, topic, at), timeout)

    def opt_out(
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
        return self._invoke(call, timeout)

    def opt_in(
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
        return self._invoke(call, timeout)

    def send_if_allowed(
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
        return self._invoke(call, timeout)

    def handle_inbound_message(
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
        return self._invoke(call, timeout)

    def list_consent_events(
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
        return self._invoke(call, timeout)

    def iter_consent_events(
        self,
        tenant_id: str,
        channel: ChannelLike,
        address: str,
        page_size: int = 0,
        *,
        timeout: float | None = None,
    ) -> Iterator[ConsentEvent]:
        """Every consent event of the recipient, newest first, following page tokens.

        ``timeout`` applies to each page request.
        """
        token = ""
        while True:
            page = self.list_consent_events(
                tenant_id, channel, address, page_size, token, timeout=timeout
            )
            yield from page.events
            token = page.next_page_token
            if not token:
                return

    def get_message_status(
        self, tenant_id: str, message_id: str, *, timeout: float | None = None
    ) -> MessageStatus:
        """The delivery status of a message accepted by :meth:`send_if_allowed`.

        Raises:
            NotFound: no such message for the tenant.
        """
        return self._invoke(_calls.get_message_status(tenant_id, message_id), timeout)

    # -- ConsentAdminService: tenants (operator keys) ------------------------------------

    def create_tenant(
        self, tenant_id: str, display_name: str = "", *, timeout: float | None = None
    ) -> Tenant:
        """Create a tenant; until then every call naming it raises :class:`NotFound`
        (reason ``TENANT_NOT_FOUND``). Needs an operator key.

        Raises:
            AlreadyExists: the id is taken (reason ``TENANT_ALREADY_EXISTS``).
        """
        return self._invoke(_calls.create_tenant(tenant_id, display_name), timeout)

    def get_tenant(self, tenant_id: str, *, timeout: float | None = None) -> Tenant:
        """A tenant's id, display name and creation time; :class:`NotFound` if none."""
        return self._invoke(_calls.get_tenant(tenant_id), timeout)

    def list_tenants(
        self, page_size: int = 0, page_token: str = "", *, timeout: float | None = None
    ) -> TenantPage:
        """A page of tenants by id; pass ``next_page_token`` on for the next page."""
        return self._invoke(_calls.list_tenants(page_size, page_token), timeout)

    def delete_tenant(self, tenant_id: str, *, timeout: float | None = None) -> DeletedTenant:
        """Delete a tenant that holds no consent data (its keys are revoked).

        Raises:
            FailedPrecondition: it still holds consent data (reason ``TENANT_NOT_EMPTY``);
                nothing changed.
            NotFound: no such tenant.
        """
        return self._invoke(_calls.delete_tenant(tenant_id), timeout)

    # -- ConsentAdminService: tenant settings --------------------------------------------

    def get_tenant_settings(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> apb.TenantSettings:
        """The tenant's effective settings (defaults filled in) as the proto message."""
        return self._invoke(_calls.get_tenant_settings(tenant_id), timeout)

    def update_tenant_settings(
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
        return self._invoke(call, timeout)

    def create_consent_link(
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
        return self._invoke(call, timeout)

    # -- ConsentAdminService: API keys and erasure ---------------------------------------

    def create_api_key(
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
        return self._invoke(call, timeout)

    def list_api_keys(
        self, tenant_id: str, *, include_revoked: bool = False, timeout: float | None = None
    ) -> list[ApiKey]:
        """The tenant's keys, oldest first ("*" = the operator keys); never secrets."""
        return self._invoke(_calls.list_api_keys(tenant_id, include_revoked), timeout)

    def revoke_api_key(
        self, tenant_id: str, key_id: str, *, timeout: float | None = None
    ) -> RevokedApiKey:
        """Revoke a key by its id: its next call fails with :class:`Unauthenticated`.

        Idempotent (``already_revoked`` says it was revoked before), so retried when safe.

        Raises:
            NotFound: no such key in the tenant (reason ``API_KEY_NOT_FOUND``).
        """
        return self._invoke(_calls.revoke_api_key(tenant_id, key_id), timeout)

    def forget_recipient(
        self, tenant_id: str, channel: ChannelLike, address: str, *, timeout: float | None = None
    ) -> ForgetResult:
        """Erase what the authority holds about the recipient (right to erasure).

        A recipient who had opted out stays suppressed (a keyed hash, never the
        address, is kept). Retried when safe: a repeated erasure finds nothing more.
        """
        return self._invoke(_calls.forget_recipient(tenant_id, channel, address), timeout)

    # -- ConsentAdminService: delivery providers -----------------------------------------

    def set_delivery_provider(
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
        return self._invoke(_calls.set_delivery_provider(tenant_id, provider), timeout)

    def get_delivery_providers(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> list[DeliveryProviderInfo]:
        """The tenant's configured providers, the all-channels entry first; secrets are
        never returned (``secret_set`` says whether one is stored). Empty = ``log``."""
        return self._invoke(_calls.get_delivery_providers(tenant_id), timeout)

    # -- ConsentAdminService: WhatsApp webhook -------------------------------------------

    def set_whatsapp_webhook(
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
        return self._invoke(
            _calls.set_whatsapp_webhook(
                tenant_id, verify_token, app_secret, phone_number_ids, waba_id
            ),
            timeout,
        )

    # -- ConsentAdminService: change webhooks --------------------------------------------

    def set_change_webhook(
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
        return self._invoke(call, timeout)

    def get_change_webhook(
        self, tenant_id: str, name: str, *, timeout: float | None = None
    ) -> ChangeWebhook:
        """One change webhook (its secret masked).

        Raises:
            NotFound: the tenant has no change webhook of that name.
        """
        return self._invoke(_calls.get_change_webhook(tenant_id, name), timeout)

    def list_change_webhooks(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> list[ChangeWebhook]:
        """The tenant's change webhooks, by name (secrets masked)."""
        return self._invoke(_calls.list_change_webhooks(tenant_id), timeout)

    def delete_change_webhook(
        self, tenant_id: str, name: str, *, timeout: float | None = None
    ) -> bool:
        """Delete a change webhook with its position, log and dead letters; True when
        there was one (retried when safe: deleting twice leaves nothing)."""
        return self._invoke(_calls.delete_change_webhook(tenant_id, name), timeout)

    def list_change_webhook_deliveries(
        self, tenant_id: str, name: str, *, limit: int = 0, timeout: float | None = None
    ) -> ChangeWebhookDeliveries:
        """The endpoint's delivery log and dead letters, newest first: ``limit`` of each
        (0-1000; 0 = 50).

        Raises:
            NotFound: the tenant has no change webhook of that name.
        """
        call = _calls.list_change_webhook_deliveries(tenant_id, name, limit)
        return self._invoke(call, timeout)

    def redrive_change_webhook_dead_letter(
        self, tenant_id: str, name: str, event_id: str, *, timeout: float | None = None
    ) -> bool:
        """Send a dead letter (by its :attr:`ChangeWebhookDelivery.event_id`) again: same
        event id, fresh attempts, the outcome in the delivery log. True when queued.

        Raises:
            NotFound: no such endpoint, or no dead letter with that event id.
        """
        call = _calls.redrive_change_webhook_dead_letter(tenant_id, name, event_id)
        return self._invoke(call, timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status (``grpc.health.v1``) of ``service`` ("" = the server):
        ``"SERVING"``, ``"NOT_SERVING"``, ``"SERVICE_UNKNOWN"``... Needs no API key;
        never retried (it reports the server as it is now).

        Raises:
            Unavailable: the server cannot be reached.
        """
        check = self._channel.unary_unary(
            _calls.HEALTH_CHECK,
            request_serializer=lambda b: b,
            response_deserializer=_calls.health_status,
        )
        try:
            wait = self._o.timeout if timeout is None else timeout
            status: str = check(_calls.health_request(service), timeout=wait)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return status

    def get_deployment_health(self, *, timeout: float | None = None) -> DeploymentHealth:
        """How the deployment keeps consent: the store's durability problems and the
        server's clock (operator keys only)."""
        return self._invoke(_calls.get_deployment_health(), timeout)

    def get_whatsapp_webhook(
        self, tenant_id: str, *, timeout: float | None = None
    ) -> WhatsAppWebhook:
        """Whether the tenant's WhatsApp webhook is configured, and its path; no secrets."""
        return self._invoke(_calls.get_whatsapp_webhook(tenant_id), timeout)

    def delete_whatsapp_webhook(self, tenant_id: str, *, timeout: float | None = None) -> bool:
        """Remove the tenant's WhatsApp webhook settings; True when there were some."""
        return self._invoke(_calls.delete_whatsapp_webhook(tenant_id), timeout)

    def list_unapplied_notifications(
        self,
        tenant_id: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> NotificationPage:
        """A page of the tenant's WhatsApp dead letters (items not applied), newest first."""
        return self._invoke(
            _calls.list_unapplied_notifications(tenant_id, page_size, page_token), timeout
        )

    def replay_unapplied_notification(
        self, tenant_id: str, notification_id: str, *, timeout: float | None = None
    ) -> ReplayResult:
        """Apply a dead letter now; ``applied`` False when it is still refused (kept)."""
        return self._invoke(
            _calls.replay_unapplied_notification(tenant_id, notification_id), timeout
        )

    def discard_unapplied_notification(
        self, tenant_id: str, notification_id: str, *, timeout: float | None = None
    ) -> bool:
        """Drop a dead letter without applying it; True when it was removed."""
        return self._invoke(
            _calls.discard_unapplied_notification(tenant_id, notification_id), timeout
        )

    # -- bulk import and export (admin keys) --

    def import_consent(
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
            response: apb.ImportConsentResponse = self._admin.ImportConsent(
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

    def watch_consent_events(
        self,
        tenant_id: str,
        *,
        resume_token: str = "",
        from_oldest: bool = False,
        timeout: float | None = None,
    ) -> Iterator[pb.WatchConsentEventsResponse]:
        """WatchConsentEvents: the tenant's change feed, forever (no deadline unless
        ``timeout``). The first message has only a ``resume_token``; each later one an
        ``event`` and the token after it. Store the last token and pass it back as
        ``resume_token`` on reconnect; deduplicate by ``event.event_id`` (at least
        once). OUT_OF_RANGE (reason CHANGE_FEED_TOKEN_EXPIRED): the token is older than
        the retention; re-export and watch again without a token."""
        req = pb.WatchConsentEventsRequest(
            tenant_id=tenant_id, resume_token=resume_token, from_oldest=from_oldest
        )
        try:
            yield from self._stub.WatchConsentEvents(
                req, timeout=timeout, metadata=self._o.metadata
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err

    def export_consent(
        self,
        tenant_id: str,
        *,
        channel: ChannelLike | None = None,
        topic: str = "",
        status: str = "",
        updated_since: datetime | None = None,
        timeout: float | None = None,
    ) -> Iterator[apb.ExportConsentResponse]:
        """ExportConsent: the pages of the tenant's current records (see the proto)."""
        req = _calls.export_request(
            tenant_id, channel=channel, topic=topic, status=status, updated_since=updated_since
        )
        try:
            yield from self._admin.ExportConsent(req, timeout=timeout, metadata=self._o.metadata)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err


class TenantConsentClient(TenantBound[ConsentClient]):
    """:class:`ConsentClient` bound to one tenant (from :meth:`ConsentClient.for_tenant`): the same
    methods without their ``tenant_id`` argument, e.g.
    ``acme.check_consent("sms", "+15550100", "marketing")``. Operator calls that name
    no tenant or a new one (``list_tenants``, ``create_tenant``, ``delete_tenant``) stay
    on the client; ``view.client`` takes an explicit tenant, which always wins. Close
    the client, not the view.
    """

    check_consent = WithTenant(ConsentClient.check_consent)
    batch_check_consent = WithTenant(ConsentClient.batch_check_consent)
    opt_out = WithTenant(ConsentClient.opt_out)
    opt_in = WithTenant(ConsentClient.opt_in)
    send_if_allowed = WithTenant(ConsentClient.send_if_allowed)
    handle_inbound_message = WithTenant(ConsentClient.handle_inbound_message)
    list_consent_events = WithTenant(ConsentClient.list_consent_events)
    iter_consent_events = WithTenant(ConsentClient.iter_consent_events)
    get_message_status = WithTenant(ConsentClient.get_message_status)
    get_tenant = WithTenant(ConsentClient.get_tenant)
    get_tenant_settings = WithTenant(ConsentClient.get_tenant_settings)
    update_tenant_settings = WithTenant(ConsentClient.update_tenant_settings)
    create_consent_link = WithTenant(ConsentClient.create_consent_link)
    create_api_key = WithTenant(ConsentClient.create_api_key)
    list_api_keys = WithTenant(ConsentClient.list_api_keys)
    revoke_api_key = WithTenant(ConsentClient.revoke_api_key)
    forget_recipient = WithTenant(ConsentClient.forget_recipient)
    set_delivery_provider = WithTenant(ConsentClient.set_delivery_provider)
    get_delivery_providers = WithTenant(ConsentClient.get_delivery_providers)
    set_whatsapp_webhook = WithTenant(ConsentClient.set_whatsapp_webhook)
    get_whatsapp_webhook = WithTenant(ConsentClient.get_whatsapp_webhook)
    delete_whatsapp_webhook = WithTenant(ConsentClient.delete_whatsapp_webhook)
    set_change_webhook = WithTenant(ConsentClient.set_change_webhook)
    get_change_webhook = WithTenant(ConsentClient.get_change_webhook)
    list_change_webhooks = WithTenant(ConsentClient.list_change_webhooks)
    delete_change_webhook = WithTenant(ConsentClient.delete_change_webhook)
    list_change_webhook_deliveries = WithTenant(ConsentClient.list_change_webhook_deliveries)
    redrive_change_webhook_dead_letter = WithTenant(
        ConsentClient.redrive_change_webhook_dead_letter
    )
    list_unapplied_notifications = WithTenant(ConsentClient.list_unapplied_notifications)
    replay_unapplied_notification = WithTenant(ConsentClient.replay_unapplied_notification)
    discard_unapplied_notification = WithTenant(ConsentClient.discard_unapplied_notification)
    import_consent = WithTenant(ConsentClient.import_consent)
    export_consent = WithTenant(ConsentClient.export_consent)
