"""Change webhooks, the admin side: SetChangeWebhook and friends validate every field,
store on fakeredis and a real redis-server alike (the ``store`` fixture), never return
a secret after creation, and are scoped to the caller's tenant."""

from __future__ import annotations

import grpc
import pytest

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.auth import new_key
from consent_server.domain.change_webhooks import (
    ChangeWebhookAdmin,
    ChangeWebhookNotFound,
    DeliveryRecord,
)
from consent_server.domain.egress import EgressPolicy
from consent_server.domain.errors import InvalidArgument
from consent_server.domain.model import Channel, Recipient
from consent_server.store.change_webhooks import RedisChangeWebhooks
from consent_server.store.feed import RedisChangeFeed
from consent_server.store.repository import RedisConsentStore

from .inprocess import serving
from .support import consent_event

URL = "https://hooks.example.com/consent"


def admin(store: RedisConsentStore, egress: str = "") -> ChangeWebhookAdmin:
    return ChangeWebhookAdmin(
        RedisChangeWebhooks(store.client),
        RedisChangeFeed(store.client),
        EgressPolicy.parse(egress),
    )


def fields_of(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


@pytest.mark.parametrize(
    ("name", "url", "secret", "field"),
    [
        ("", URL, "", "name"),
        ("Bad Name", URL, "", "name"),
        ("x" * 65, URL, "", "name"),
        ("crm;DROP", URL, "", "name"),
        ("crm", "", "", "url"),
        ("crm", "ftp://example.com/x", "", "url"),
        ("crm", "http://example.com/x", "", "url"),  # https only
        ("crm", "https://127.0.0.1/x", "", "url"),
        ("crm", "https://localhost/x", "", "url"),
        ("crm", "https://169.254.169.254/latest", "", "url"),
        ("crm", "https://[::1]/x", "", "url"),
        ("crm", "https://0x7f.1/x", "", "url"),
        ("crm", "https://10.1.2.3/x", "", "url"),
        ("crm", "https://user:pw@example.com/x", "", "url"),
        ("crm", "https://example.com/" + "a" * 3000, "", "url"),
        ("crm", "https://exa mple.com/", "", "url"),
        ("crm", URL, "short", "signing_secret"),
        ("crm", URL, "x" * 600, "signing_secret"),
        ("crm", URL, "has space in it 1234", "signing_secret"),
        ("crm", URL, "ünïcødé\x00secret-12345", "signing_secret"),
    ],
)
async def test_bad_fields_are_refused_and_nothing_is_written(
    store: RedisConsentStore, tenant: str, name: str, url: str, secret: str, field: str
) -> None:
    a = admin(store)
    with pytest.raises(InvalidArgument) as bad:
        await a.set(tenant, name, url, secret)
    assert field in fields_of(bad.value)
    assert await a.endpoints(tenant) == []


async def test_bad_tenant_id_is_refused(store: RedisConsentStore) -> None:
    with pytest.raises(InvalidArgument) as bad:
        await admin(store).set("Acme Corp", "crm", URL, "")
    assert "tenant_id" in fields_of(bad.value)


async def test_set_generates_a_secret_once_and_keeps_it_for_the_same_url(
    store: RedisConsentStore, tenant: str
) -> None:
    a = admin(store)
    first = await a.set(tenant, "crm", URL, "")
    assert first.created and first.generated_secret.startswith("whsec_")
    assert len(first.generated_secret) > 32
    assert first.hook.secret_hint == "whsec_…" + first.generated_secret[-4:]
    assert first.generated_secret not in repr(first.hook)
    again = await a.set(tenant, "crm", URL, "")
    assert not again.created and again.generated_secret == ""
    assert again.hook.secret == first.generated_secret
    moved = await a.set(tenant, "crm", "https://other.example.com/hook", "")
    # A stored secret never follows the endpoint to a new URL.
    assert moved.generated_secret and moved.generated_secret != first.generated_secret
    own = await a.set(tenant, "crm", URL, "my-own-secret-0123456789")
    assert own.generated_secret == "" and own.hook.secret == "my-own-secret-0123456789"
    assert [h.name for h in await a.endpoints(tenant)] == ["crm"]


async def test_new_endpoint_starts_after_the_newest_change_and_update_keeps_the_cursor(
    store: RedisConsentStore, tenant: str
) -> None:
    who = Recipient(Channel.SMS, "+14155550100")
    await store.record_event(consent_event(tenant, who, event_id="before", principal="t"))
    hooks = RedisChangeWebhooks(store.client)
    a = admin(store)
    await a.set(tenant, "crm", URL, "")
    start = await hooks.cursor(tenant, "crm")
    assert start == await RedisChangeFeed(store.client).latest(tenant)
    assert any(p != "0-0" for p in start)
    await hooks.advance(tenant, "crm", 3, "123-0")
    await a.set(tenant, "crm", URL, "")
    assert (await hooks.cursor(tenant, "crm"))[3] == "123-0"
    assert (tenant, "crm") in await hooks.all_endpoints()


async def test_get_delete_and_deliveries(store: RedisConsentStore, tenant: str) -> None:
    a = admin(store)
    hooks = RedisChangeWebhooks(store.client)
    with pytest.raises(ChangeWebhookNotFound):
        await a.get(tenant, "crm")
    await a.set(tenant, "crm", URL, "")
    for n in range(250):
        status = "dead_letter" if n % 50 == 0 else "delivered"
        await hooks.record(tenant, "crm", DeliveryRecord(f"00-{n}-0", status, 1, "", 200, 5, n))
    log, dead = await a.deliveries(tenant, "crm", 1000)
    assert len(log) == 200 and log[0].event_id == "00-249-0"  # bounded, newest first
    assert [d.event_id for d in dead] == [f"00-{n}-0" for n in (200, 150, 100, 50, 0)]
    with pytest.raises(InvalidArgument):
        await a.deliveries(tenant, "crm", 5000)
    assert await a.delete(tenant, "crm") is True
    assert await a.delete(tenant, "crm") is False
    assert await a.endpoints(tenant) == []
    assert (tenant, "crm") not in await hooks.all_endpoints()
    with pytest.raises(ChangeWebhookNotFound):
        await a.deliveries(tenant, "crm", 10)


async def test_at_most_ten_endpoints(store: RedisConsentStore, tenant: str) -> None:
    a = admin(store)
    for n in range(10):
        await a.set(tenant, f"h{n}", URL, "")
    with pytest.raises(InvalidArgument):
        await a.set(tenant, "h10", URL, "")
    await a.set(tenant, "h3", URL, "")  # replacing one is fine


async def test_http_only_to_what_the_operator_allowed(
    store: RedisConsentStore, tenant: str
) -> None:
    a = admin(store, "127.0.0.1:8080")
    done = await a.set(tenant, "local", "http://127.0.0.1:8080/hook", "")
    assert done.hook.url == "http://127.0.0.1:8080/hook"
    with pytest.raises(InvalidArgument):
        await a.set(tenant, "local", "http://127.0.0.1:9090/hook", "")


async def test_rpcs_over_grpc_with_keys_of_two_tenants() -> None:
    _, operator, _ = new_key()
    env = {"CONSENT_REQUIRE_AUTH": "1", "CONSENT_BOOTSTRAP_ADMIN_KEY": operator}
    async with serving(env) as srv:

        def md(key: str) -> tuple[tuple[str, str]]:
            return (("authorization", f"Bearer {key}"),)

        async def key_of(tenant: str, role: int) -> str:
            made = await srv.admin.CreateApiKey(
                apb.CreateApiKeyRequest(tenant_id=tenant, role=role), metadata=md(operator)
            )
            return str(made.api_key)

        acme = await key_of("acme", apb.API_KEY_ROLE_ADMIN)
        globex = await key_of("globex", apb.API_KEY_ROLE_ADMIN)
        writer = await key_of("acme", apb.API_KEY_ROLE_WRITER)
        made = await srv.admin.SetChangeWebhook(
            apb.SetChangeWebhookRequest(tenant_id="acme", name="crm", url=URL), metadata=md(acme)
        )
        assert made.created and made.signing_secret.startswith("whsec_")
        assert made.webhook.signing_secret_hint.endswith(made.signing_secret[-4:])
        got = await srv.admin.GetChangeWebhook(
            apb.GetChangeWebhookRequest(tenant_id="acme", name="crm"), metadata=md(acme)
        )
        assert got.webhook.url == URL and made.signing_secret not in str(got)
        listed = await srv.admin.ListChangeWebhooks(
            apb.ListChangeWebhooksRequest(tenant_id="acme"), metadata=md(operator)
        )
        assert [w.name for w in listed.webhooks] == ["crm"]
        # Another tenant's key can neither read nor change acme's endpoints.
        for call, req in [
            (srv.admin.GetChangeWebhook, apb.GetChangeWebhookRequest(tenant_id="acme", name="crm")),
            (
                srv.admin.DeleteChangeWebhook,
                apb.DeleteChangeWebhookRequest(tenant_id="acme", name="crm"),
            ),
            (
                srv.admin.SetChangeWebhook,
                apb.SetChangeWebhookRequest(tenant_id="acme", name="crm", url=URL),
            ),
            (
                srv.admin.ListChangeWebhookDeliveries,
                apb.ListChangeWebhookDeliveriesRequest(tenant_id="acme", name="crm"),
            ),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await call(req, metadata=md(globex))  # type: ignore[operator]
            assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # ... and its own tenant has no endpoint of that name.
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await srv.admin.GetChangeWebhook(
                apb.GetChangeWebhookRequest(tenant_id="globex", name="crm"), metadata=md(globex)
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        # A writer key is not an admin key.
        with pytest.raises(grpc.aio.AioRpcError) as role:
            await srv.admin.ListChangeWebhooks(
                apb.ListChangeWebhooksRequest(tenant_id="acme"), metadata=md(writer)
            )
        assert role.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await srv.admin.SetChangeWebhook(
                apb.SetChangeWebhookRequest(
                    tenant_id="acme", name="local", url="https://127.0.0.1/hook"
                ),
                metadata=md(acme),
            )
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "internal" in (bad.value.details() or "")
        log = await srv.admin.ListChangeWebhookDeliveries(
            apb.ListChangeWebhookDeliveriesRequest(tenant_id="acme", name="crm"), metadata=md(acme)
        )
        assert list(log.deliveries) == [] and list(log.dead_letters) == []
        gone = await srv.admin.DeleteChangeWebhook(
            apb.DeleteChangeWebhookRequest(tenant_id="acme", name="crm"), metadata=md(acme)
        )
        assert gone.deleted
        with pytest.raises(grpc.aio.AioRpcError) as after:
            await srv.admin.GetChangeWebhook(
                apb.GetChangeWebhookRequest(tenant_id="acme", name="crm"), metadata=md(acme)
            )
        assert after.value.code() is grpc.StatusCode.NOT_FOUND
        assert pb.CHANGE_WEBHOOK_NOT_FOUND  # the reason exists on the wire


async def test_deleting_a_tenant_deletes_its_change_webhooks(store: RedisConsentStore) -> None:
    from consent_server.domain.tenants import TenantRegistry
    from consent_server.store.tenants import RedisTenantStore

    registry = TenantRegistry(RedisTenantStore(store))
    await registry.create("hooked", "")
    a = admin(store)
    hooks = RedisChangeWebhooks(store.client)
    await a.set("hooked", "crm", URL, "")
    await hooks.record("hooked", "crm", DeliveryRecord("00-1-0", "dead_letter", 1, "", 0, 0, 1))
    await registry.delete("hooked")
    assert await hooks.endpoints("hooked") == []
    assert ("hooked", "crm") not in await hooks.all_endpoints()
    assert await hooks.deliveries("hooked", "crm", 10) == ([], [])
