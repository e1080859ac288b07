"""The thin client's change-webhook methods (sync and asyncio) against the real server
process on a private redis-server: set (a generated secret shown once, kept for the
same URL), get, list, deliveries (the log and dead letters, as typed values), redrive
and delete, and the errors they raise."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from consent_client import (
    AsyncConsentClient,
    ChangeWebhook,
    ChangeWebhookDeliveryStatus,
    ConsentClient,
    InvalidArgument,
    NotFound,
)
from consent_server.domain.change_webhooks import DeliveryRecord
from consent_server.store.change_webhooks import RedisChangeWebhooks

from .support import RedisProcess, ServerProcess, create_tenant_on, tenant_id_for

pytestmark = pytest.mark.redis

URL = "https://hooks.example.test/consent"


@dataclass
class Running:
    server: ServerProcess
    redis: RedisProcess

    @property
    def target(self) -> str:
        return self.server.target


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    redis = RedisProcess(tmp_path_factory.mktemp("client-webhooks-redis")).start()
    server = ServerProcess({"CONSENT_REDIS_URL": redis.url, "CONSENT_DELIVERY": "off"}).start()
    yield Running(server, redis)
    server.stop()
    redis.stop()


@pytest.fixture
def tenant(running: Running, request: pytest.FixtureRequest) -> str:
    tenant_id = tenant_id_for(request.node)
    create_tenant_on(running.target, tenant_id)
    return tenant_id


async def _record(url: str, tenant: str, name: str, *records: DeliveryRecord) -> None:
    """Delivery outcomes as the dispatcher records them (none runs in this server)."""
    client = aioredis.Redis.from_url(url)
    try:
        hooks = RedisChangeWebhooks(client)
        for r in records:
            await hooks.record(tenant, name, r)
    finally:
        await client.aclose()


def _outcomes() -> tuple[DeliveryRecord, ...]:
    now = int(time.time() * 1000)
    return (
        DeliveryRecord("003-1796320123990-0", "delivered", 1, "", 200, 12, now - 2000),
        DeliveryRecord("005-1796320123991-0", "dead_letter", 8, "http 500", 500, 40, now - 1000),
    )


def test_change_webhook_methods(running: Running, tenant: str) -> None:
    with ConsentClient(running.target, timeout=10) as c:
        assert c.list_change_webhooks(tenant) == []
        with pytest.raises(NotFound):
            c.get_change_webhook(tenant, "crm")

        made = c.set_change_webhook(tenant, "crm", URL)
        assert made.created and made.signing_secret.startswith("whsec_")
        assert made.signing_secret not in repr(made)  # shown once, never logged
        hook = made.webhook
        assert isinstance(hook, ChangeWebhook)
        assert (hook.tenant_id, hook.name, hook.url) == (tenant, "crm", URL)
        assert hook.signing_secret_hint.endswith(made.signing_secret[-4:])
        assert hook.created_at.tzinfo is not None and not hook.status_changes_only

        # The same URL without a secret keeps the stored one: none is shown again.
        again = c.set_change_webhook(tenant, "crm", URL, status_changes_only=True)
        assert not again.created and again.signing_secret == ""
        assert again.webhook.signing_secret_hint == hook.signing_secret_hint
        assert c.get_change_webhook(tenant, "crm").status_changes_only
        given = c.set_change_webhook(tenant, "erp", URL + "/erp", signing_secret="k" * 32)
        assert given.created and given.signing_secret == ""
        assert [w.name for w in c.list_change_webhooks(tenant)] == ["crm", "erp"]

        with pytest.raises(InvalidArgument) as bad:
            c.set_change_webhook(tenant, "crm", "http://hooks.example.test/plain")
        assert bad.value.fields == ["url"]

        empty = c.list_change_webhook_deliveries(tenant, "crm")
        assert empty.deliveries == () and empty.dead_letters == ()
        asyncio.run(_record(running.redis.url, tenant, "crm", *_outcomes()))
        got = c.list_change_webhook_deliveries(tenant, "crm", limit=10)
        (dead,) = got.dead_letters
        assert [d.event_id for d in got.deliveries] == [
            "005-1796320123991-0",
            "003-1796320123990-0",
        ]  # newest first
        assert dead.status is ChangeWebhookDeliveryStatus.DEAD_LETTER
        assert got.deliveries[1].status is ChangeWebhookDeliveryStatus.DELIVERED
        assert (dead.attempts, dead.last_error, dead.http_status, dead.latency_ms) == (
            8,
            "http 500",
            500,
            40,
        )
        assert dead.finished_at.tzinfo is not None
        assert c.redrive_change_webhook_dead_letter(tenant, "crm", dead.event_id) is True
        with pytest.raises(NotFound):
            c.redrive_change_webhook_dead_letter(tenant, "crm", "000-1-0")
        with pytest.raises(NotFound):
            c.list_change_webhook_deliveries(tenant, "nope")

        # The tenant-bound view takes the same methods without the tenant.
        acme = c.for_tenant(tenant)
        assert acme.get_change_webhook("erp").url == URL + "/erp"
        assert acme.delete_change_webhook("erp") is True
        assert c.delete_change_webhook(tenant, "crm") is True
        assert c.delete_change_webhook(tenant, "crm") is False
        assert c.list_change_webhooks(tenant) == []


async def test_async_change_webhook_methods(running: Running, tenant: str) -> None:
    async with AsyncConsentClient(running.target, timeout=10) as c:
        made = await c.set_change_webhook(tenant, "crm", URL)
        assert made.created and made.signing_secret
        assert (await c.get_change_webhook(tenant, "crm")).url == URL
        assert [w.name for w in await c.list_change_webhooks(tenant)] == ["crm"]
        await _record(running.redis.url, tenant, "crm", *_outcomes())
        got = await c.list_change_webhook_deliveries(tenant, "crm")
        assert [d.status for d in got.dead_letters] == [ChangeWebhookDeliveryStatus.DEAD_LETTER]
        event_id = got.dead_letters[0].event_id
        assert await c.redrive_change_webhook_dead_letter(tenant, "crm", event_id) is True
        acme = c.for_tenant(tenant)
        assert len((await acme.list_change_webhook_deliveries("crm", limit=1)).deliveries) == 1
        with pytest.raises(InvalidArgument):
            await c.list_change_webhook_deliveries(tenant, "crm", limit=5000)
        assert await acme.delete_change_webhook("crm") is True
        with pytest.raises(NotFound):
            await c.get_change_webhook(tenant, "crm")
