"""Status honesty: the default ``log`` provider sends nothing, so a message it handled
reads LOGGED, never DELIVERED, and a server on a real Redis with only that provider
says so loudly at start-up."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_server.config import DeliverySettings, RedisSettings, Settings
from consent_server.delivery.runner import (
    LOG_ONLY_WARNING,
    PROVIDERS_OK,
    warn_if_only_log_provider,
)
from consent_server.domain.delivery import ALL_CHANNELS, ProviderConfig, ProviderKind
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore

from .support import RedisProcess, ServerProcess

PHONE = "+14155550123"


def _status_after_delivery(stub: consent_pb2_grpc.ConsentServiceStub, mid: str) -> int:
    deadline = time.monotonic() + 15
    while True:
        status = stub.GetMessageStatus(pb.GetMessageStatusRequest(tenant_id="acme", message_id=mid))
        if status.status != pb.MESSAGE_STATUS_ACCEPTED or time.monotonic() > deadline:
            return int(status.status)
        time.sleep(0.05)


def _wait_for_line(srv: ServerProcess, text: str) -> list[str]:
    """The server's log lines holding ``text``, once there is one (or [] after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        lines = [ln for ln in srv.log().splitlines() if text in ln]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_log_provider_on_real_redis_warns_and_reads_logged(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "redis").start()
    srv = ServerProcess({"CONSENT_REDIS_URL": redis.url}).start()
    try:
        with grpc.insecure_channel(srv.target) as channel:
            stub = consent_pb2_grpc.ConsentServiceStub(channel)
            sent = stub.SendIfAllowed(
                pb.SendIfAllowedRequest(
                    tenant_id="acme",
                    recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address=PHONE),
                    topic="order_updates",
                    message=pb.Message(text="Your order shipped"),
                )
            )
            assert _status_after_delivery(stub, sent.message_id) == pb.MESSAGE_STATUS_LOGGED
        [line] = _wait_for_line(srv, LOG_ONLY_WARNING)
        assert "WARNING" in line or '"level": "warning"' in line
    finally:
        assert srv.stop() == 0
        redis.stop()


def test_no_warning_once_a_sending_provider_is_configured(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "redis").start()
    first = ServerProcess({"CONSENT_REDIS_URL": redis.url}).start()
    try:
        with grpc.insecure_channel(first.target) as channel:
            admin_pb2_grpc.ConsentAdminServiceStub(channel).SetDeliveryProvider(
                apb.SetDeliveryProviderRequest(
                    tenant_id="acme",
                    provider=apb.DeliveryProvider(
                        webhook=apb.WebhookProvider(
                            url="https://hooks.example.com/deliver",
                            signing_secret="whsec_0123456789abcdef",
                        )
                    ),
                )
            )
    finally:
        assert first.stop() == 0
    second = ServerProcess({"CONSENT_REDIS_URL": redis.url}).start()
    try:
        assert _wait_for_line(second, PROVIDERS_OK)  # the background check has finished
        assert LOG_ONLY_WARNING not in second.log()
    finally:
        assert second.stop() == 0
        redis.stop()


async def test_the_check_looks_at_every_tenant(store: RedisConsentStore) -> None:
    real = Settings(
        redis=RedisSettings(url="redis://127.0.0.1:1")
    )  # a real Redis (the URL is not dialled)
    task = warn_if_only_log_provider(real, store)
    assert task is not None and await task is True
    repo = RedisProviderSettings(store.client)
    await repo.put_provider("globex", ALL_CHANNELS, ProviderConfig(kind=ProviderKind.LOG))
    task = warn_if_only_log_provider(real, store)
    assert task is not None and await task is True  # log configured explicitly: still none
    await repo.put_provider(
        "globex",
        "sms",
        ProviderConfig(kind=ProviderKind.WEBHOOK, url="https://x.example", secret="s" * 16),
    )
    task = warn_if_only_log_provider(real, store)
    assert task is not None and await task is False
    # Development (the embedded store) and a server that does not deliver: no check.
    assert warn_if_only_log_provider(Settings(), store) is None
    off = Settings(
        redis=RedisSettings(url="redis://127.0.0.1:1"), delivery=DeliverySettings(mode="off")
    )
    assert warn_if_only_log_provider(off, store) is None
