"""The thin client's ConsentAdminService methods for API keys, erasure, delivery
providers and the WhatsApp webhook (sync and asyncio), against the real server process
with authentication on (a private redis-server, a bootstrap operator key), and through
the in-process fake for which of them are retried."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from consent_client import (
    ApiKeyRole,
    AsyncConsentClient,
    Channel,
    ConsentClient,
    ConsentStatus,
    CreatedApiKey,
    DeliveryProviderInfo,
    DeliveryProviderKind,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from consent_client.v1 import admin_pb2 as apb
from consent_server.domain.auth import new_key

from .client_fake import FAST, FakeConsentService, forward_then_unavailable, unavailable
from .support import RedisProcess, ServerProcess, auth_env, create_tenant_on, tenant_id_for

PUBLIC_URL = "https://consent.example.test"
_n = itertools.count()


@dataclass
class Authed:
    """A server requiring API keys, and its bootstrap operator key."""

    server: ServerProcess
    operator: str

    @property
    def target(self) -> str:
        return self.server.target


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Authed]:
    redis = RedisProcess(tmp_path_factory.mktemp("client-admin-redis")).start()
    _, operator, _ = new_key()
    server = ServerProcess({**auth_env(redis, operator), "CONSENT_PUBLIC_URL": PUBLIC_URL}).start()
    yield Authed(server, operator)
    server.stop()
    redis.stop()


@pytest.fixture
def tenant(authed: Authed, request: pytest.FixtureRequest) -> str:
    """The test's own tenant, created in the authenticated server by the operator."""
    tenant_id = tenant_id_for(request.node)
    create_tenant_on(authed.target, tenant_id, authed.operator)
    return tenant_id


@pytest.fixture
def tenant_admin(authed: Authed, tenant: str) -> Iterator[ConsentClient]:
    """A client holding a fresh admin key of the test's tenant (made by the operator)."""
    with ConsentClient(authed.target, api_key=authed.operator, timeout=10) as op:
        made = op.create_api_key(tenant, "admin", "tenant admin")
    with ConsentClient(authed.target, api_key=made.api_key, timeout=10) as c:
        yield c


def _wa() -> str:
    return f"+91 98765 {next(_n) % 100000:05d}"


# -- API keys -----------------------------------------------------------------------------


def test_api_key_lifecycle(authed: Authed, tenant_admin: ConsentClient, tenant: str) -> None:
    made = tenant_admin.create_api_key(
        tenant, ApiKeyRole.READER, "dashboard", rate_limit_per_second=50
    )
    assert isinstance(made, CreatedApiKey)
    assert made.api_key.startswith(f"ck_{made.key_id}_")
    assert made.key.role is ApiKeyRole.READER and made.key.tenant_id == tenant
    assert made.key.rate_limit_per_second == 50 and not made.key.revoked
    secret = made.api_key.split("_", 2)[2]  # ck_<id>_<secret>: the secret may hold "_"
    assert secret not in repr(made) and made.key_id in repr(made)

    listed = tenant_admin.list_api_keys(tenant)
    assert [k.description for k in listed] == ["tenant admin", "dashboard"]
    assert all(secret not in str(k) for k in listed)

    with ConsentClient(authed.target, api_key=made.api_key, timeout=10) as reader:
        assert reader.check_consent(tenant, "whatsapp", _wa(), "marketing").allowed
        with pytest.raises(PermissionDenied):
            reader.opt_out(tenant, "whatsapp", _wa(), "marketing")
        revoked = tenant_admin.revoke_api_key(tenant, made.key_id)
        assert revoked.key.revoked and not revoked.already_revoked
        assert revoked.key.revoked_at is not None and revoked.key.revoked_at.tzinfo is not None
        with pytest.raises(Unauthenticated) as refused:
            reader.check_consent(tenant, "whatsapp", _wa(), "marketing")
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert secret not in str(refused.value)

    assert tenant_admin.revoke_api_key(tenant, made.key_id).already_revoked
    assert [k.key_id for k in tenant_admin.list_api_keys(tenant)] == [listed[0].key_id]
    every = tenant_admin.list_api_keys(tenant, include_revoked=True)
    assert [k.revoked for k in every] == [False, True]
    with pytest.raises(NotFound) as missing:
        tenant_admin.revoke_api_key(tenant, "0" * 16)
    assert missing.value.reason == "API_KEY_NOT_FOUND"


def test_api_key_roles_and_bad_input(
    authed: Authed, tenant_admin: ConsentClient, tenant: str
) -> None:
    for role in ("writer", "SENDER", "API_KEY_ROLE_ADMIN", apb.API_KEY_ROLE_READER):
        tenant_admin.create_api_key(tenant, role, f"as {role}")
    roles = [k.role for k in tenant_admin.list_api_keys(tenant)][1:]
    assert roles == [ApiKeyRole.WRITER, ApiKeyRole.SENDER, ApiKeyRole.ADMIN, ApiKeyRole.READER]
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        tenant_admin.create_api_key(tenant, "owner")
    with pytest.raises(InvalidArgument) as bad:
        tenant_admin.create_api_key(tenant, ApiKeyRole.UNSPECIFIED)
    assert bad.value.fields == ["role"]
    with pytest.raises(InvalidArgument) as long:
        tenant_admin.create_api_key(tenant, "reader", "x" * 300)
    assert long.value.fields == ["description"]
    # A tenant admin may not mint an operator key, nor act for another tenant.
    with pytest.raises(PermissionDenied):
        tenant_admin.create_api_key("*", "admin")
    with pytest.raises(PermissionDenied):
        tenant_admin.list_api_keys(tenant + "-other")
    assert len(tenant_admin.list_api_keys(tenant)) == 5  # nothing written by the refusals


# -- erasure ------------------------------------------------------------------------------


def test_forget_recipient_keeps_the_opt_out(tenant_admin: ConsentClient, tenant: str) -> None:
    address = _wa()
    tenant_admin.opt_out(tenant, "whatsapp", address, "marketing")
    tenant_admin.opt_in(tenant, "whatsapp", address, "orders")
    gone = tenant_admin.forget_recipient(tenant, "whatsapp", address)
    assert gone.records_removed == 2 and gone.events_removed == 2
    assert gone.suppressed and list(gone.suppressed_topics) == ["marketing"]
    assert gone.recipient.address == address.replace(" ", "")
    assert gone.erasure_id
    decision = tenant_admin.check_consent(tenant, "whatsapp", address, "marketing")
    assert not decision.allowed and decision.status is ConsentStatus.OPTED_OUT
    assert list(tenant_admin.iter_consent_events(tenant, "whatsapp", address)) == []
    with pytest.raises(InvalidArgument) as bad:
        tenant_admin.forget_recipient(tenant, "whatsapp", "not a number")
    assert bad.value.fields == ["recipient.address"]


# -- delivery providers -------------------------------------------------------------------


def test_delivery_providers(tenant_admin: ConsentClient, tenant: str) -> None:
    signing, token = "s3cret-signing-key-0123456789", "EAAG-access-token-987654321"
    assert tenant_admin.get_delivery_providers(tenant) == []
    hook = tenant_admin.set_delivery_provider(
        tenant,
        "webhook",
        channel="sms",
        url="https://hooks.example.test/send",
        signing_secret=signing,
        timeout_ms=2000,
    )
    assert hook.kind == DeliveryProviderKind.WEBHOOK and hook.channel is Channel.SMS
    assert hook.url == "https://hooks.example.test/send" and hook.timeout_ms == 2000
    assert hook.secret_set
    cloud = tenant_admin.set_delivery_provider(
        tenant,
        DeliveryProviderKind.WHATSAPP_CLOUD,
        phone_number_id="1234567890",
        access_token=token,
    )
    assert cloud.channel is Channel.UNSPECIFIED and cloud.phone_number_id == "1234567890"
    # The same URL with no secret keeps the stored secret; a new URL needs it again.
    again = tenant_admin.set_delivery_provider(
        tenant, "webhook", channel="sms", url="https://hooks.example.test/send", timeout_ms=3000
    )
    assert again.secret_set and again.timeout_ms == 3000
    with pytest.raises(InvalidArgument) as moved:
        tenant_admin.set_delivery_provider(
            tenant, "webhook", channel="sms", url="https://hooks.example.test/v2"
        )
    assert [f for f, _ in moved.value.field_violations] == ["provider.webhook.signing_secret"]
    again = tenant_admin.set_delivery_provider(
        tenant,
        "webhook",
        channel="sms",
        url="https://hooks.example.test/v2",
        signing_secret=signing,
    )
    assert again.secret_set and again.url == "https://hooks.example.test/v2"
    listed = tenant_admin.get_delivery_providers(tenant)
    assert [(p.channel, p.kind) for p in listed] == [
        (Channel.UNSPECIFIED, DeliveryProviderKind.WHATSAPP_CLOUD),
        (Channel.SMS, DeliveryProviderKind.WEBHOOK),
    ]
    for info in [hook, cloud, again, *listed]:
        assert isinstance(info, DeliveryProviderInfo)
        wire = info.raw.SerializeToString()
        assert signing.encode() not in wire and token.encode() not in wire
    tenant_admin.set_delivery_provider(tenant, "log", channel="sms")
    assert [p.kind for p in tenant_admin.get_delivery_providers(tenant)][1] == (
        DeliveryProviderKind.LOG
    )


def test_delivery_provider_bad_input(tenant_admin: ConsentClient, tenant: str) -> None:
    with pytest.raises(ValueError, match="signing_secret do"):
        tenant_admin.set_delivery_provider(
            tenant, "whatsapp_cloud", phone_number_id="1", signing_secret="x" * 20
        )
    with pytest.raises(ValueError, match="url"):
        tenant_admin.set_delivery_provider(tenant, "log", url="https://x.example")
    with pytest.raises(ValueError, match="unknown provider kind 'smtp'"):
        tenant_admin.set_delivery_provider(tenant, "smtp")
    with pytest.raises(InvalidArgument) as bad:
        tenant_admin.set_delivery_provider(
            tenant, "webhook", url="http://hooks.example.test/", signing_secret="x" * 20
        )
    assert bad.value.fields == ["provider.webhook.url"]
    with pytest.raises(InvalidArgument) as first:
        tenant_admin.set_delivery_provider(tenant, "webhook", url="https://hooks.example.test/")
    assert first.value.fields == ["provider.webhook.signing_secret"]
    assert tenant_admin.get_delivery_providers(tenant) == []  # nothing written


# -- WhatsApp webhook ---------------------------------------------------------------------


def number_for(tenant: str) -> str:
    """A WhatsApp phone number id of the tenant's own (a number has one tenant)."""
    return str(int(hashlib.sha1(tenant.encode()).hexdigest()[:12], 16))


def test_whatsapp_webhook(tenant_admin: ConsentClient, tenant: str) -> None:
    before = tenant_admin.get_whatsapp_webhook(tenant)
    assert not before.configured and before.webhook_path == f"/whatsapp/{tenant}"
    app_secret = "meta-app-secret-abcdef"
    made = tenant_admin.set_whatsapp_webhook(
        tenant, "verify-me", app_secret, phone_number_ids=[number_for(tenant)]
    )
    assert made.webhook_path == f"/whatsapp/{tenant}"
    assert made.webhook_url == f"{PUBLIC_URL}/whatsapp/{tenant}"
    now = tenant_admin.get_whatsapp_webhook(tenant)
    assert now.configured and app_secret.encode() not in now.raw.SerializeToString()
    with pytest.raises(InvalidArgument) as bad:
        tenant_admin.set_whatsapp_webhook(
            tenant, "has space", app_secret, phone_number_ids=[number_for(tenant)]
        )
    assert bad.value.fields == ["verify_token"]
    assert list(now.phone_number_ids) == [number_for(tenant)]
    empty = tenant_admin.list_unapplied_notifications(tenant)
    assert list(empty.notifications) == [] and empty.total == 0
    with pytest.raises(NotFound):
        tenant_admin.replay_unapplied_notification(tenant, "dl_000000000000000000000000")
    with pytest.raises(NotFound):
        tenant_admin.discard_unapplied_notification(tenant, "dl_000000000000000000000000")
    assert tenant_admin.delete_whatsapp_webhook(tenant) is True
    assert tenant_admin.delete_whatsapp_webhook(tenant) is False
    assert not tenant_admin.get_whatsapp_webhook(tenant).configured


# -- which admin calls are retried --------------------------------------------------------


@pytest.fixture
def authed_proxy(authed: Authed) -> Iterator[FakeConsentService]:
    """The fake in front of the authenticated server, calling it with the operator key."""
    f = FakeConsentService(upstream=authed.target, upstream_api_key=authed.operator).start()
    yield f
    f.stop()


def test_create_api_key_is_never_retried(
    authed_proxy: FakeConsentService, authed: Authed, tenant: str
) -> None:
    # The key is made, then the answer is lost: a retry would mint a second key.
    authed_proxy.on("CreateApiKey", forward_then_unavailable())
    with ConsentClient(authed_proxy.target, backoff=FAST, retries=5) as c:
        with pytest.raises(Unavailable):
            c.create_api_key(tenant, "reader", "lost answer")
        assert len(authed_proxy.seen("CreateApiKey")) == 1
        assert [k.description for k in c.list_api_keys(tenant)] == ["lost answer"]


def test_idempotent_admin_writes_are_retried(
    authed_proxy: FakeConsentService, authed: Authed, tenant: str
) -> None:
    with ConsentClient(authed_proxy.target, backoff=FAST) as c:
        made = c.create_api_key(tenant, "reader")
        authed_proxy.on("RevokeApiKey", forward_then_unavailable())
        assert c.revoke_api_key(tenant, made.key_id).already_revoked  # the retry's answer
        authed_proxy.on("SetWhatsAppWebhook", forward_then_unavailable())
        assert c.set_whatsapp_webhook(
            tenant, "tok", "secret", phone_number_ids=[number_for(tenant)]
        ).webhook_path
        authed_proxy.on("DeleteWhatsAppWebhook", forward_then_unavailable())
        assert c.delete_whatsapp_webhook(tenant) is False  # the first attempt deleted it
        authed_proxy.on("ForgetRecipient", unavailable())
        assert not c.forget_recipient(tenant, "sms", "+1 202 555 0100").suppressed
        authed_proxy.on("SetDeliveryProvider", unavailable())
        assert c.set_delivery_provider(tenant, "log").kind == DeliveryProviderKind.LOG
        authed_proxy.on("ListApiKeys", unavailable())
        authed_proxy.on("GetDeliveryProviders", unavailable())
        authed_proxy.on("GetWhatsAppWebhook", unavailable())
        assert len(c.list_api_keys(tenant, include_revoked=True)) == 1
        assert len(c.get_delivery_providers(tenant)) == 1
        assert not c.get_whatsapp_webhook(tenant).configured
    for method in (
        "RevokeApiKey",
        "SetWhatsAppWebhook",
        "DeleteWhatsAppWebhook",
        "ForgetRecipient",
        "SetDeliveryProvider",
        "ListApiKeys",
        "GetDeliveryProviders",
        "GetWhatsAppWebhook",
    ):
        assert len(authed_proxy.seen(method)) == 2, method


# -- asyncio ------------------------------------------------------------------------------


async def test_async_admin_methods(authed: Authed, tenant: str) -> None:
    async with AsyncConsentClient(authed.target, api_key=authed.operator, timeout=10) as op:
        admin = await op.create_api_key(tenant, "admin", "async admin")
    async with AsyncConsentClient(authed.target, api_key=admin.api_key, timeout=10) as c:
        made = await c.create_api_key(tenant, ApiKeyRole.SENDER, "async sender")
        # ck_<id>_<secret>: the secret itself may hold "_"
        assert made.api_key.split("_", 2)[2] not in repr(made)
        assert [k.key_id for k in await c.list_api_keys(tenant)] == [admin.key_id, made.key_id]
        async with AsyncConsentClient(authed.target, api_key=made.api_key) as sender:
            assert (
                await sender.check_consent(tenant, "sms", "+1 202 555 0100", "marketing")
            ).allowed
            revoked = await c.revoke_api_key(tenant, made.key_id)
            assert revoked.key.revoked and not revoked.already_revoked
            with pytest.raises(Unauthenticated):
                await sender.check_consent(tenant, "sms", "+1 202 555 0100", "marketing")

        address = _wa()
        await c.opt_out(tenant, "whatsapp", address)
        gone = await c.forget_recipient(tenant, "whatsapp", address)
        assert gone.records_removed == 1 and list(gone.suppressed_topics) == [""]

        info = await c.set_delivery_provider(
            tenant, "webhook", url="https://hooks.example.test/a", signing_secret="k" * 24
        )
        assert info.secret_set and b"k" * 24 not in info.raw.SerializeToString()
        assert [p.url for p in await c.get_delivery_providers(tenant)] == [info.url]

        made = await c.set_whatsapp_webhook(
            tenant, "tok", "app-secret", phone_number_ids=[number_for(tenant)]
        )
        assert made.webhook_url
        assert (await c.list_unapplied_notifications(tenant)).total == 0
        assert (await c.get_whatsapp_webhook(tenant)).configured
        assert await c.delete_whatsapp_webhook(tenant) is True
        assert not (await c.get_whatsapp_webhook(tenant)).configured


async def test_async_create_api_key_is_never_retried() -> None:
    fake = FakeConsentService().start()
    try:
        fake.on("CreateApiKey", unavailable(), unavailable())
        fake.on("RevokeApiKey", unavailable(), unavailable())
        async with AsyncConsentClient(fake.target, backoff=FAST, retries=1) as c:
            with pytest.raises(Unavailable):
                await c.create_api_key("t", "reader")
            with pytest.raises(Unavailable):
                await c.revoke_api_key("t", "0" * 16)
        assert len(fake.seen("CreateApiKey")) == 1
        assert len(fake.seen("RevokeApiKey")) == 2  # one retry, then the error
    finally:
        fake.stop()


# -- deployment ---------------------------------------------------------------------------


def test_health_and_deployment_health(authed: Authed, tenant_admin: ConsentClient) -> None:
    with ConsentClient(authed.target, timeout=10) as anonymous:
        assert anonymous.health() == "SERVING"  # the health service needs no key
        with pytest.raises(NotFound):
            anonymous.health("no.such.Service")
        with pytest.raises(Unauthenticated):
            anonymous.get_deployment_health()
    with ConsentClient(authed.target, api_key=authed.operator, timeout=10) as op:
        before = time.time()
        d = op.get_deployment_health()
        after = time.time()
    # The module's redis-server runs without AOF and without save points.
    assert d.store == "redis" and d.durability_checked
    assert list(d.durability_problems) == ["persistence is off (appendonly no and no save points)"]
    assert before - 1 <= d.server_time.timestamp() <= after + 1
    with pytest.raises(PermissionDenied):  # not scoped to a tenant: operator keys only
        tenant_admin.get_deployment_health()


async def test_async_health_and_deployment_health(authed: Authed) -> None:
    async with AsyncConsentClient(authed.target, api_key=authed.operator, timeout=10) as op:
        assert await op.health() == "SERVING"
        d = await op.get_deployment_health()
        assert d.store == "redis" and d.durability_checked


# Still protobuf: the settings (a message that update_tenant_settings takes back, edited)
# and the bulk streams (their records are the file format consentctl writes; the change
# feed's messages carry the resume token a consumer stores with them).
_PROTO_RESULTS = {"get_tenant_settings", "update_tenant_settings", "import_consent"}
_PROTO_STREAMS = {"export_consent", "watch_consent_events"}


@pytest.mark.parametrize("cls", [ConsentClient, AsyncConsentClient])
def test_public_methods_return_dataclasses_not_protobuf(cls: type) -> None:
    import typing

    from google.protobuf.message import Message

    def mentions_proto(tp: object) -> bool:
        if isinstance(tp, type) and issubclass(tp, Message):
            return True
        return any(mentions_proto(a) for a in typing.get_args(tp))

    proto = set()
    for name in dir(cls):
        method = getattr(cls, name)
        if name.startswith("_") or not callable(method):
            continue
        hints = typing.get_type_hints(method)
        if mentions_proto(hints.get("return")):
            proto.add(name)
    assert proto == _PROTO_RESULTS | _PROTO_STREAMS
