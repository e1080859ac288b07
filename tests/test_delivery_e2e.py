"""Delivery end to end: the real server process (inline worker) and separate
``python -m consent_server.worker`` processes on a private redis-server, delivering to a
real local HTTP server; workers killed with SIGKILL mid-delivery."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_server.delivery.providers.webhook import verify
from consent_server.domain.model import Channel, Recipient
from consent_server.store import keys
from consent_server.store.schema import adopt_recorded_layout

from .fake_provider import FakeProvider, fake_provider
from .security_support import bad_fields
from .support import RedisProcess, ServerProcess, free_port, run_module

pytestmark = pytest.mark.xdist_group("delivery-e2e")

SECRET = "whsec_e2e_0123456789abcdef"
PHONE = "+14155550123"
FAST = {
    # The fake provider listens on loopback: delivery reaches it only because the
    # operator allows it (tests/test_egress.py proves it is refused otherwise).
    "CONSENT_EGRESS_ALLOW": "127.0.0.1",
    "CONSENT_DELIVERY_VISIBILITY_TIMEOUT": "1",
    "CONSENT_DELIVERY_BACKOFF": "0.05",
    "CONSENT_DELIVERY_BACKOFF_MAX": "0.1",
}


class WorkerProcess:
    """``python -m consent_server.worker`` with the given environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, "CONSENT_LOG_LEVEL": "info", **env}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20) -> WorkerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consent_server.worker"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.lines.append(line)
                if "delivery worker process ready" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError("worker did not start:\n" + "".join(self.lines))
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: a crash, nothing cleaned up
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(30)
        return self.proc.returncode if self.proc else 0


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with fake_provider() as f:
        yield f


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis").start()
    yield proc
    proc.stop()


def stubs(
    target: str,
) -> tuple[
    grpc.Channel, consent_pb2_grpc.ConsentServiceStub, admin_pb2_grpc.ConsentAdminServiceStub
]:
    ch = grpc.insecure_channel(target)
    return ch, consent_pb2_grpc.ConsentServiceStub(ch), admin_pb2_grpc.ConsentAdminServiceStub(ch)


def use_webhook(admin: admin_pb2_grpc.ConsentAdminServiceStub, tenant: str, url: str) -> None:
    admin.SetDeliveryProvider(
        apb.SetDeliveryProviderRequest(
            tenant_id=tenant,
            provider=apb.DeliveryProvider(
                webhook=apb.WebhookProvider(url=url + "/hook", signing_secret=SECRET)
            ),
        )
    )


def send(stub: consent_pb2_grpc.ConsentServiceStub, tenant: str, text: str = "hi") -> str:
    resp = stub.SendIfAllowed(
        pb.SendIfAllowedRequest(
            tenant_id=tenant,
            recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address=PHONE),
            topic="order_updates",
            message=pb.Message(text=text),
        )
    )
    return resp.message_id


def wait_status(
    stub: consent_pb2_grpc.ConsentServiceStub,
    tenant: str,
    message_id: str,
    timeout: float = 20,
) -> pb.GetMessageStatusResponse:
    deadline = time.monotonic() + timeout
    while True:
        status = stub.GetMessageStatus(
            pb.GetMessageStatusRequest(tenant_id=tenant, message_id=message_id)
        )
        if status.status != pb.MESSAGE_STATUS_ACCEPTED or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_inline_worker_delivers_and_reports_status(fake: FakeProvider) -> None:
    metrics_port = free_port()
    srv = ServerProcess({**FAST, "CONSENT_METRICS_LISTEN": f"127.0.0.1:{metrics_port}"}).start()
    try:
        ch, stub, admin = stubs(srv.target)
        with ch:
            use_webhook(admin, "acme", fake.url)
            mid = send(stub, "acme", "Your parcel is on its way")
            status = wait_status(stub, "acme", mid)
            assert status.status == pb.MESSAGE_STATUS_DELIVERED
            assert status.attempts == 1
            assert status.provider_message_id == "prov-1"
            assert status.last_error == ""
            assert status.recipient.address == PHONE
            assert status.topic == "order_updates"
            assert status.updated_at.ToMilliseconds() >= status.accepted_at.ToMilliseconds() > 0
            [req] = fake.requests
            assert verify(
                SECRET,
                req.headers["x-consent-timestamp"],
                req.body,
                req.headers["x-consent-signature"],
            )
            assert req.json["message"] == {"kind": "text", "text": "Your parcel is on its way"}
            # Another tenant cannot see it.
            with pytest.raises(grpc.RpcError) as err:
                stub.GetMessageStatus(pb.GetMessageStatusRequest(tenant_id="other", message_id=mid))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            body = (
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
            )
            assert "consent_messages_accepted_total 1.0" in body
            assert 'consent_messages_delivered_total{provider="webhook",purpose="send"} 1.0' in body
            assert "consent_delivery_latency_seconds_count 1.0" in body
            assert "consent_outbox_lag_seconds_count 1.0" in body
        assert srv.stop() == 0
        assert "delivery worker stopped" in srv.log()
        assert PHONE not in srv.log()
    finally:
        srv.kill()


def test_provider_admin_rpcs_never_return_secrets() -> None:
    srv = ServerProcess({"CONSENT_DELIVERY": "off"}).start()
    try:
        ch, _stub, admin = stubs(srv.target)
        with ch:
            resp = admin.SetDeliveryProvider(
                apb.SetDeliveryProviderRequest(
                    tenant_id="acme",
                    provider=apb.DeliveryProvider(
                        channel=pb.CHANNEL_WHATSAPP,
                        whatsapp_cloud=apb.WhatsAppCloudProvider(
                            phone_number_id="1029384756", access_token="EAAG-super-secret-token"
                        ),
                    ),
                )
            )
            assert resp.provider.kind == apb.DELIVERY_PROVIDER_KIND_WHATSAPP_CLOUD
            assert resp.provider.url == "https://graph.facebook.com/v21.0"
            assert resp.provider.secret_set
            use_webhook(admin, "acme", "https://hooks.example")
            listed = admin.GetDeliveryProviders(apb.GetDeliveryProvidersRequest(tenant_id="acme"))
            assert [(p.channel, p.kind) for p in listed.providers] == [
                (pb.CHANNEL_UNSPECIFIED, apb.DELIVERY_PROVIDER_KIND_WEBHOOK),
                (pb.CHANNEL_WHATSAPP, apb.DELIVERY_PROVIDER_KIND_WHATSAPP_CLOUD),
            ]
            wire = listed.SerializeToString()
            assert b"EAAG-super-secret-token" not in wire and SECRET.encode() not in wire
            assert "super-secret" not in srv.log() and SECRET not in srv.log()
            empty = admin.GetDeliveryProviders(apb.GetDeliveryProvidersRequest(tenant_id="other"))
            assert list(empty.providers) == []
            # Bad input: INVALID_ARGUMENT naming the fields, nothing written.
            with pytest.raises(grpc.RpcError) as err:
                admin.SetDeliveryProvider(
                    apb.SetDeliveryProviderRequest(
                        tenant_id="acme",
                        provider=apb.DeliveryProvider(
                            channel=pb.CHANNEL_SMS,
                            webhook=apb.WebhookProvider(url="http://evil.example/x"),
                        ),
                    )
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert bad_fields(err.value) == [
                "provider.webhook.url",
                "provider.webhook.signing_secret",
            ]
            for request in (
                apb.SetDeliveryProviderRequest(tenant_id="acme"),
                apb.SetDeliveryProviderRequest(
                    tenant_id="ACME", provider=apb.DeliveryProvider(log=apb.LogProvider())
                ),
                apb.SetDeliveryProviderRequest(
                    tenant_id="acme",
                    provider=apb.DeliveryProvider(channel=99, log=apb.LogProvider()),  # type: ignore[arg-type]
                ),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    admin.SetDeliveryProvider(request)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            after = admin.GetDeliveryProviders(apb.GetDeliveryProvidersRequest(tenant_id="acme"))
            assert after == listed
    finally:
        assert srv.stop() == 0


def test_two_worker_processes_deliver_each_message_once(
    fake: FakeProvider, redis_server: RedisProcess
) -> None:
    # No reclaims here (that is the next test): a visibility timeout a loaded CI machine
    # cannot outrun by accident, so any second attempt means the group handed one
    # message to both workers.
    env = {
        **FAST,
        "CONSENT_DELIVERY_VISIBILITY_TIMEOUT": "60",
        "CONSENT_REDIS_URL": redis_server.url,
    }
    srv = ServerProcess({**env, "CONSENT_DELIVERY": "off"}).start()
    workers = [WorkerProcess(env).start(), WorkerProcess(env).start()]
    try:
        ch, stub, admin = stubs(srv.target)
        with ch:
            use_webhook(admin, "acme", fake.url)
            ids = [send(stub, "acme", f"message {i}") for i in range(60)]
            statuses = [wait_status(stub, "acme", i) for i in ids]
        assert {s.status for s in statuses} == {pb.MESSAGE_STATUS_DELIVERED}
        retried = "".join(line for w in workers for line in w.lines if "retried" in line)
        assert {s.attempts for s in statuses} == {1}, retried
        sent = [r.json["message_id"] for r in fake.requests]
        assert sorted(sent) == sorted(ids)  # every message, each exactly once
        assert all(w.stop() == 0 for w in workers)
    finally:
        for w in workers:
            w.kill()
        srv.stop()


def test_worker_killed_mid_delivery_is_taken_over_once(
    fake: FakeProvider, redis_server: RedisProcess
) -> None:
    env = {**FAST, "CONSENT_REDIS_URL": redis_server.url}
    srv = ServerProcess({**env, "CONSENT_DELIVERY": "off"}).start()
    first = WorkerProcess(env).start()
    second: WorkerProcess | None = None
    try:
        ch, stub, admin = stubs(srv.target)
        with ch:
            use_webhook(admin, "acme", fake.url)
            fake.hold.clear()  # the provider holds the first request...
            mid = send(stub, "acme", "only once")
            assert fake.arrived.wait(20)
            first.kill()  # ...while its worker dies mid-call
            fake.hold.set()  # the held request completes into a dead socket
            second = WorkerProcess(env).start()
            status = wait_status(stub, "acme", mid, timeout=30)
            assert status.status == pb.MESSAGE_STATUS_DELIVERED
            assert status.attempts == 2  # the dead worker's claim, then the takeover
            assert status.provider_message_id == "prov-1"
        # The provider saw the same idempotency key twice and delivered it once.
        assert [r.headers["idempotency-key"] for r in fake.requests] == [mid, mid]
        assert fake.delivered == {mid: "prov-1"}
        assert any("reclaimed an abandoned message" in line for line in second.lines)
        assert second.stop() == 0
    finally:
        first.kill()
        if second:
            second.kill()
        srv.stop()


def test_worker_without_redis_url_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONSENT_REDIS_URL"}
    proc = run_module("consent_server.worker", env=env, timeout=30)
    assert proc.returncode == 2
    assert "CONSENT_REDIS_URL is required" in proc.stderr


def test_worker_process_cancels_opted_out_sends_but_delivers_the_confirmation(
    fake: FakeProvider, redis_server: RedisProcess
) -> None:
    env = {**FAST, "CONSENT_REDIS_URL": redis_server.url}
    srv = ServerProcess({**env, "CONSENT_DELIVERY": "off"}).start()
    worker: WorkerProcess | None = None
    try:
        ch, stub, admin = stubs(srv.target)
        with ch:
            use_webhook(admin, "acme", fake.url)
            mid = send(stub, "acme", "accepted before the opt-out")
            stub.OptOut(
                pb.OptOutRequest(
                    tenant_id="acme",
                    recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address=PHONE),
                    source=pb.SOURCE_KEYWORD,
                )
            )
            # The confirmation the inbound flow queues (docs/outbox.md), written directly
            # under the partition layout the server recorded.
            adopt_recorded_layout(redis_server.client().hgetall(keys.META))
            part = keys.partition("acme", Recipient(Channel.SMS, PHONE))
            conf = keys.new_message_id(part)
            redis_server.client().xadd(
                keys.outbox(part),
                {
                    "id": conf,
                    "tenant": "acme",
                    "ch": "sms",
                    "addr": PHONE,
                    "topic": "",
                    "body": json.dumps({"kind": "text", "text": "Reply START to resubscribe"}),
                    "not_after": "0",
                    "meta": "{}",
                    "rev": "1",
                    "at": str(int(time.time() * 1000)),
                    "purpose": "confirmation",
                },
            )
            worker = WorkerProcess(env).start()
            cancelled = wait_status(stub, "acme", mid)
            confirmed = wait_status(stub, "acme", conf)
        assert cancelled.status == pb.MESSAGE_STATUS_CANCELLED
        assert cancelled.last_error.startswith("RECIPIENT_OPTED_OUT")
        assert confirmed.status == pb.MESSAGE_STATUS_DELIVERED
        assert [r.json["message_id"] for r in fake.requests] == [conf]
        assert worker.stop() == 0
    finally:
        if worker:
            worker.kill()
        srv.stop()


def test_worker_sigterm_as_soon_as_its_metrics_port_answers_exits_0(
    redis_server: RedisProcess,
) -> None:
    """The metrics port is what health checks probe, so a SIGTERM may come as soon as it
    answers: the handlers are installed before it opens, and the worker drains, exit 0."""
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "consent_server.worker"],
            env={
                **os.environ,
                "CONSENT_REDIS_URL": redis_server.url,
                "CONSENT_METRICS_LISTEN": f"127.0.0.1:{port}",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "metrics port never opened"
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.005)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.communicate()[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
