"""Tenants are explicit: an RPC or HTTP path naming a tenant that was never created
answers NOT_FOUND / TENANT_NOT_FOUND (404 on HTTP) and writes nothing; only operator
keys manage tenants; deleting a tenant never loses an opt-out.

Real components: a private redis-server whose whole keyspace is compared before and
after each refused call, and the real server process over gRPC and HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import MethodDescriptor

from consent_client import AlreadyExists, ConsentClient, FailedPrecondition, Unauthenticated
from consent_client import NotFound as ClientNotFound
from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.auth import new_key
from consent_server.domain.model import Channel
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawRecipient
from consent_server.store.repository import RedisConsentStore

from .security_support import Stubs, details, md
from .support import RedisProcess, ServerProcess, auth_env, change_consent

UNKNOWN = "nosuch-tenant"
WA = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="+919876543210")
ADMIN_SERVICE = apb.DESCRIPTOR.services_by_name["ConsentAdminService"]
CONSENT_SERVICE = pb.DESCRIPTOR.services_by_name["ConsentService"]
TENANT_RPCS = {"CreateTenant", "GetTenant", "ListTenants", "DeleteTenant"}

# Requests that would succeed (or be decided) for an existing tenant: the refusal must
# come from the tenant, not from a bad field.
VALID: dict[str, dict[str, Any]] = {
    "CheckConsent": {"recipient": WA, "topic": "marketing"},
    "BatchCheckConsent": {"recipients": [WA], "topic": "marketing"},
    "OptOut": {"recipient": WA, "source": pb.SOURCE_API, "event_id": "ev-unknown-tenant"},
    "OptIn": {"recipient": WA, "source": pb.SOURCE_API, "event_id": "ev-unknown-tenant-in"},
    "SendIfAllowed": {"recipient": WA, "topic": "marketing", "message": pb.Message(text="hi")},
    "HandleInboundMessage": {"recipient": WA, "text": "STOP", "provider_message_id": "wamid.u1"},
    "ListConsentEvents": {"recipient": WA},
    "GetMessageStatus": {"message_id": "m00000000000000000000000000000"},
    "CreateConsentLink": {"recipient": WA},
    "UpdateTenantSettings": {
        "settings": apb.TenantSettings(business_name="Typo Inc"),
        "update_mask": field_mask_pb2.FieldMask(paths=["business_name"]),
    },
    "CreateApiKey": {"role": apb.API_KEY_ROLE_READER},
    "RevokeApiKey": {"key_id": "0123abcd0123abcd"},
    "ForgetRecipient": {"recipient": WA},
    "SetDeliveryProvider": {"provider": apb.DeliveryProvider(log=apb.LogProvider())},
    "SetWhatsAppWebhook": {"verify_token": "verify-token", "app_secret": "app-secret-123"},
}


def _tenant_methods() -> list[tuple[str, MethodDescriptor]]:
    """Every unary RPC of both services whose request names a tenant (tenant RPCs aside):
    read from the descriptors, so RPCs added later are covered without being listed."""
    found = []
    for service in (CONSENT_SERVICE, ADMIN_SERVICE):
        for method in service.methods:
            if method.name in TENANT_RPCS or method.client_streaming:
                continue
            if "tenant_id" in method.input_type.fields_by_name:
                found.append((service.full_name, method))
    return found


METHODS = _tenant_methods()


def _request(method: MethodDescriptor, tenant: str) -> Any:
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(method.input_type)
    return cls(tenant_id=tenant, **VALID.get(method.name, {}))


def _call(channel: grpc.Channel, service: str, method: MethodDescriptor, request: Any,
          key: str | None = None) -> Any:  # fmt: skip
    from google.protobuf import message_factory

    out_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{service}/{method.name}"
    if method.server_streaming:
        stream = channel.unary_stream(
            path, request_serializer=type(request).SerializeToString,
            response_deserializer=out_cls.FromString,
        )  # fmt: skip
        return list(stream(request, metadata=md(key), timeout=10))
    unary = channel.unary_unary(
        path, request_serializer=type(request).SerializeToString,
        response_deserializer=out_cls.FromString,
    )  # fmt: skip
    return unary(request, metadata=md(key), timeout=10)


def _keyspace(r: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key and a dump of its value: equal before and after = nothing written.
    The caller's own rate-limit bucket (``:rl``) is left out: every call takes a token."""
    return {k: r.dump(k) for k in sorted(r.keys("*")) if not k.endswith(b":rl")}


@dataclass
class World:
    redis: RedisProcess
    server: ServerProcess
    operator: str
    acme_admin: str
    channel: grpc.Channel
    stubs: Stubs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A server with authentication required on a private redis-server: tenants acme and
    globex exist (CONSENT_TENANTS), and acme has an admin key."""
    proc = RedisProcess(tmp_path_factory.mktemp("tenants-redis")).start()
    _, operator, _ = new_key()
    srv = ServerProcess(
        {
            **auth_env(proc, operator),
            "CONSENT_TENANTS": "acme,globex",
            "CONSENT_PUBLIC_URL": "https://consent.example.test",
        },
        http=True,
    ).start()
    channel = grpc.insecure_channel(srv.target)
    stubs = Stubs(channel)
    acme_admin = stubs.create_key(operator, "acme", "admin").api_key
    yield World(proc, srv, operator, acme_admin, channel, stubs)
    channel.close()
    srv.stop()
    proc.stop()


def _reason(err: grpc.RpcError) -> str:
    info = details(err).get("ErrorInfo")
    return info.reason if info is not None else ""


# -- every RPC ---------------------------------------------------------------------------


def test_every_tenant_scoped_rpc_is_covered() -> None:
    names = {m.name for _, m in METHODS}
    assert {"CheckConsent", "OptOut", "SendIfAllowed", "HandleInboundMessage"} <= names
    assert {"GetTenantSettings", "UpdateTenantSettings", "ForgetRecipient"} <= names
    assert {"CreateApiKey", "SetWhatsAppWebhook", "SetDeliveryProvider"} <= names


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[m.name for _, m in METHODS])
def test_unknown_tenant_is_not_found_and_writes_nothing(
    world: World, service: str, method: MethodDescriptor
) -> None:
    r = world.redis.client()
    before = _keyspace(r)
    with pytest.raises(grpc.RpcError) as raised:
        _call(world.channel, service, method, _request(method, UNKNOWN), world.operator)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()
    assert _reason(raised.value) == "TENANT_NOT_FOUND"
    assert UNKNOWN in raised.value.details()
    assert _keyspace(r) == before


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[m.name for _, m in METHODS])
def test_another_tenants_key_is_denied_whether_or_not_the_tenant_exists(
    world: World, service: str, method: MethodDescriptor
) -> None:
    """A key of acme learns nothing about which tenants exist: an unknown tenant and an
    existing one (globex) get the same PERMISSION_DENIED; nothing is written."""
    r = world.redis.client()
    before = _keyspace(r)
    answers = []
    for other in (UNKNOWN, "globex"):
        with pytest.raises(grpc.RpcError) as raised:
            _call(world.channel, service, method, _request(method, other), world.acme_admin)
        answers.append((raised.value.code(), _reason(raised.value)))
    assert answers == [(grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")] * 2
    assert _keyspace(r) == before


def test_a_typo_in_the_tenant_no_longer_reads_as_allowed(world: World) -> None:
    world.stubs.consent.OptOut(
        pb.OptOutRequest(tenant_id="acme", recipient=WA, source=pb.SOURCE_KEYWORD),
        metadata=md(world.operator),
    )
    with pytest.raises(grpc.RpcError) as raised:
        world.stubs.consent.CheckConsent(
            pb.CheckConsentRequest(tenant_id="acmee", recipient=WA, topic="marketing"),
            metadata=md(world.operator),
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert _reason(raised.value) == "TENANT_NOT_FOUND"


# -- operator keys only ------------------------------------------------------------------


def test_a_tenant_admin_key_cannot_manage_tenants(world: World) -> None:
    admin = world.stubs.admin
    r = world.redis.client()
    before = _keyspace(r)
    calls = [
        (admin.CreateTenant, apb.CreateTenantRequest(tenant_id="sneaky")),
        (admin.CreateTenant, apb.CreateTenantRequest(tenant_id="acme")),
        (admin.DeleteTenant, apb.DeleteTenantRequest(tenant_id="acme")),
        (admin.DeleteTenant, apb.DeleteTenantRequest(tenant_id="globex")),
        (admin.GetTenant, apb.GetTenantRequest(tenant_id="acme")),
        (admin.ListTenants, apb.ListTenantsRequest()),
    ]
    for fn, request in calls:
        with pytest.raises(grpc.RpcError) as raised:
            fn(request, metadata=md(world.acme_admin), timeout=10)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED, request
        assert _reason(raised.value) == "TENANT_NOT_ALLOWED"
    assert _keyspace(r) == before


def test_tenant_lifecycle_with_the_operator_key(world: World) -> None:
    with ConsentClient(world.server.target, api_key=world.operator) as client:
        made = client.create_tenant("initech", "Initech Ltd")
        assert made.tenant_id == "initech" and made.display_name == "Initech Ltd"
        assert abs(made.created_at.timestamp() - time.time()) < 60
        got = client.get_tenant("initech")
        assert got == made
        with pytest.raises(AlreadyExists) as again:
            client.create_tenant("initech", "other name")
        assert again.value.reason == "TENANT_ALREADY_EXISTS"
        assert client.get_tenant("initech").display_name == "Initech Ltd"

        ids = []
        token = ""
        while True:
            page = client.list_tenants(1, token)
            ids += [t.tenant_id for t in page.tenants]
            token = page.next_page_token
            if not token:
                break
        assert ids == sorted(ids) and {"acme", "globex", "initech"} <= set(ids)

        # Usable at once, in every server process (this one drops its cache entry).
        key = client.create_api_key("initech", "reader").api_key
        decision = client.check_consent("initech", "whatsapp", "+919876543210", "marketing")
        assert decision.allowed

        deleted = client.delete_tenant("initech")
        assert deleted.tenant.tenant_id == "initech" and deleted.api_keys_revoked == 1
        with pytest.raises(ClientNotFound) as gone:
            client.check_consent("initech", "whatsapp", "+919876543210", "marketing")
        assert gone.value.reason == "TENANT_NOT_FOUND"
        with pytest.raises(ClientNotFound):
            client.get_tenant("initech")
    # Its keys stop working, also if the id is created again later.
    with ConsentClient(world.server.target, api_key=world.operator) as client:
        client.create_tenant("initech")
    with ConsentClient(world.server.target, api_key=key) as reader, pytest.raises(Unauthenticated):
        reader.check_consent("initech", "whatsapp", "+919876543210", "marketing")


def test_delete_is_refused_while_the_tenant_holds_an_opt_out(world: World) -> None:
    with ConsentClient(world.server.target, api_key=world.operator) as client:
        client.create_tenant("hooli")
        client.opt_out("hooli", "whatsapp", "+919876543210", source="keyword")
        r = world.redis.client()
        before = _keyspace(r)
        with pytest.raises(FailedPrecondition) as refused:
            client.delete_tenant("hooli")
        assert refused.value.reason == "TENANT_NOT_EMPTY"
        assert _keyspace(r) == before
        assert not client.check_consent("hooli", "whatsapp", "+919876543210", "x").allowed
        # Erased, the tombstone still keeps the opt-out: still refused.
        client.forget_recipient("hooli", "whatsapp", "+919876543210")
        with pytest.raises(FailedPrecondition) as still:
            client.delete_tenant("hooli")
        assert still.value.reason == "TENANT_NOT_EMPTY"


# -- the HTTP edge -----------------------------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_http_paths_of_an_unknown_tenant_are_404_and_write_nothing(world: World) -> None:
    r = world.redis.client()
    before = _keyspace(r)
    body = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
    sig = "sha256=" + hmac.new(b"app-secret-123", body, hashlib.sha256).hexdigest()
    base = world.server.http_url
    assert _post(f"{base}/whatsapp/{UNKNOWN}", body, {"X-Hub-Signature-256": sig}) == 404
    stamp = str(int(time.time()))
    assert (
        _post(
            f"{base}/receipts/{UNKNOWN}",
            b'{"message_id": "m1", "status": "delivered"}',
            {"X-Consent-Timestamp": stamp, "X-Consent-Signature": "v1=00"},
        )
        == 404
    )
    assert _keyspace(r) == before


def test_a_link_of_a_deleted_tenant_is_404_and_changes_nothing(world: World) -> None:
    with ConsentClient(world.server.target, api_key=world.operator) as client:
        client.create_tenant("pied-piper")
        links = client.create_consent_link("pied-piper", "email", "jane@example.com")
        client.delete_tenant("pied-piper")
    path = links.opt_out_url.split("consent.example.test", 1)[1]
    r = world.redis.client()
    before = _keyspace(r)
    url = world.server.http_url + path
    assert _post(url, b"List-Unsubscribe=One-Click", {}) == 404
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 404
    assert _keyspace(r) == before


# -- bootstrap ---------------------------------------------------------------------------


def test_the_embedded_store_creates_the_demo_tenant_and_nothing_else() -> None:
    srv = ServerProcess({"CONSENT_TENANTS": "", "CONSENT_DELIVERY": "off"}).start()
    try:
        with ConsentClient(srv.target) as client:
            assert client.check_consent("acme", "whatsapp", "+919876543210", "marketing").allowed
            assert [t.tenant_id for t in client.list_tenants().tenants] == ["acme"]
            with pytest.raises(ClientNotFound):
                client.check_consent("globex", "whatsapp", "+919876543210", "marketing")
    finally:
        assert srv.stop() == 0


def test_consent_tenants_are_created_at_start_on_real_redis(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    proc = RedisProcess(tmp_path_factory.mktemp("boot-redis")).start()
    env = {"CONSENT_REDIS_URL": proc.url, "CONSENT_DELIVERY": "off"}
    try:
        srv = ServerProcess({**env, "CONSENT_TENANTS": ""}).start()
        with ConsentClient(srv.target) as client:
            assert client.list_tenants().tenants == ()  # real Redis: no demo tenant
        assert srv.stop() == 0
        srv = ServerProcess({**env, "CONSENT_TENANTS": "meals, shop"}).start()
        with ConsentClient(srv.target) as client:
            assert [t.tenant_id for t in client.list_tenants().tenants] == ["meals", "shop"]
            first = client.get_tenant("meals").created_at
        assert srv.stop() == 0
        # A restart leaves existing tenants as they are.
        srv = ServerProcess({**env, "CONSENT_TENANTS": "meals"}).start()
        with ConsentClient(srv.target) as client:
            assert client.get_tenant("meals").created_at == first
        assert srv.stop() == 0
    finally:
        proc.stop()


# -- in process: the hot path rides on the settings read --------------------------------


async def test_the_check_makes_no_extra_round_trip_for_the_tenant(
    store: RedisConsentStore,
) -> None:
    """The existence check is the tenant-settings read, cached: a warm CheckConsent
    issues exactly the commands it issued before tenants were explicit (none for the
    tenant)."""
    from consent_server.domain.errors import TenantNotFound

    cached = RedisConsentStore(store.client, settings_cache_s=60)
    authority = ConsentAuthority(cached)
    rcpt = RawRecipient(Channel.WHATSAPP, "+919876543210")
    await authority.check("acme", rcpt, "marketing")  # warms the cache
    seen: list[str] = []
    real = cached._r.execute_command

    async def spy(*args: Any, **kw: Any) -> Any:
        seen.append(str(args[0]))
        return await real(*args, **kw)

    cached._r.execute_command = spy
    try:
        await authority.check("acme", rcpt, "marketing")
    finally:
        cached._r.execute_command = real
    assert "HGETALL" not in seen and "HMGET" not in seen and "EXISTS" not in seen
    with pytest.raises(TenantNotFound):
        await authority.check(UNKNOWN, rcpt, "marketing")


async def test_settings_of_an_unknown_tenant_are_not_written(store: RedisConsentStore) -> None:
    from consent_server.domain.errors import TenantNotFound
    from consent_server.domain.model import TenantSettings

    before = sorted(await store.client.keys("*"))
    with pytest.raises(TenantNotFound):
        await ConsentAuthority(store).update_settings(
            UNKNOWN, TenantSettings(business_name="x"), ["business_name"]
        )
    # Also straight at the store: put_settings.lua refuses a tenant that does not exist.
    with pytest.raises(TenantNotFound):
        await store.put_tenant_settings(UNKNOWN, TenantSettings(business_name="x"))
    assert sorted(await store.client.keys("*")) == before


async def test_registry_lifecycle_in_process(store: RedisConsentStore) -> None:
    """The registry on each store (and on Redis Cluster, see test_store_cluster.py):
    create, list, refuse to delete while an opt-out is held, delete when empty."""
    from consent_server.domain.errors import IdConflict, TenantNotEmpty, TenantNotFound
    from consent_server.domain.model import Action
    from consent_server.domain.tenants import TenantRegistry
    from consent_server.store.tenants import RedisTenantStore

    registry = TenantRegistry(RedisTenantStore(store))
    made = await registry.create("initech", " Initech ")
    assert made.display_name == "Initech" and (await registry.get("initech")) == made
    with pytest.raises(IdConflict):
        await registry.create("initech", "")
    page = await registry.list_page(2, "")
    rest = await registry.list_page(1000, page.next_page_token)
    ids = [t.tenant_id for t in page.tenants + rest.tenants]
    assert ids == sorted(ids) and "initech" in ids and rest.next_page_token == ""
    sms = RawRecipient(Channel.SMS, "+14155550100")
    await change_consent(ConsentAuthority(store), Action.OPT_OUT, "initech", sms)
    with pytest.raises(TenantNotEmpty):
        await registry.delete("initech")
    assert (await registry.get("initech")) == made
    await registry.create("empty-one", "")
    deleted = await registry.delete("empty-one")
    assert deleted.tenant.tenant_id == "empty-one"
    with pytest.raises(TenantNotFound):
        await registry.get("empty-one")
    assert await store.tenant_lookup("empty-one") is None


async def test_delete_keeps_a_tenant_with_dead_letters_and_releases_its_numbers(
    store: RedisConsentStore,
) -> None:
    """A dead letter may be an unapplied STOP: a tenant holding one is not deleted. An
    empty tenant's deletion releases its WhatsApp numbers for another tenant."""
    from consent_server.domain.errors import TenantNotEmpty
    from consent_server.domain.tenants import TenantRegistry
    from consent_server.domain.whatsapp_edge import DeadLetter, WhatsAppWebhookConfig
    from consent_server.store.deadletters import RedisDeadLetters
    from consent_server.store.edge import RedisEdgeStore
    from consent_server.store.tenants import RedisTenantStore

    registry = TenantRegistry(RedisTenantStore(store))
    edge = RedisEdgeStore(store)
    number = "106540352242922"
    await registry.create("hooli", "")
    await edge.set_whatsapp_webhook("hooli", WhatsAppWebhookConfig("tok", "s" * 32, (number,)))
    letter = DeadLetter(
        id="dl_1", tenant_id="hooli", received_at_ms=1, reason="refused", detail="",
        kind="message", path="entry[0]", phone_number_id=number,
        raw='{"from": "14155550100", "text": {"body": "STOP"}}', body_digest="d",
    )  # fmt: skip
    await RedisDeadLetters(store.client).add_dead_letters([letter], 100)
    with pytest.raises(TenantNotEmpty):
        await registry.delete("hooli")
    await RedisDeadLetters(store.client).delete_dead_letter("hooli", "dl_1")
    await registry.delete("hooli")
    assert await edge.tenant_for_phone_number(number) is None
    await registry.create("pied-piper", "")
    await edge.set_whatsapp_webhook(
        "pied-piper", WhatsAppWebhookConfig("tok2", "t" * 32, (number,))
    )
    assert await edge.tenant_for_phone_number(number) == "pied-piper"
