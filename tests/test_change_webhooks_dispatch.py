"""The change webhook dispatcher against a local HTTP receiver (aiohttp on a free
loopback port, allowed as the operator would with CONSENT_EGRESS_ALLOW), on fakeredis
and a real redis-server (the ``store`` fixture): signed as documented, every change
once and in order, retries, dead letters, resuming from the cursor after a restart,
internal destinations refused at connect time; and once end to end through the real
server process with its inline worker."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_server.delivery.change_webhooks import ChangeWebhookDispatcher, DispatchOptions
from consent_server.domain.change_webhooks import ChangeWebhookAdmin, ChangeWebhookNotFound
from consent_server.domain.egress import EgressPolicy, IPAddress
from consent_server.domain.errors import InvalidArgument
from consent_server.domain.feed import feed_event_id
from consent_server.domain.model import Action, Channel, Recipient
from consent_server.store import keys
from consent_server.store.change_webhooks import RedisChangeWebhooks
from consent_server.store.feed import RedisChangeFeed
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

from .support import RedisProcess, ServerProcess, numbered_event

SECRET = "test-signing-secret-0123456789"
TOLERANCE_S = 300


def verify(secret: str, headers: Any, body: bytes) -> bool:
    """The recipe of docs/webhooks.md, written out independently of the server's code."""
    ts = headers["X-Consent-Timestamp"]
    if abs(time.time() - int(ts)) > TOLERANCE_S:
        return False
    expected = (
        "v1=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected, headers["X-Consent-Signature"])


@dataclass
class Receiver:
    """Records every POST; ``answer(n, event_id)`` picks the status of the n-th one."""

    answer: Callable[[int, str], int] = lambda _n, _e: 200
    got: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers["X-Consent-Event-Id"]
        self.got.append((event_id, json.loads(body), verify(SECRET, request.headers, body)))
        return web.Response(status=self.answer(len(self.got), event_id))

    def ids(self) -> list[str]:
        return [e for e, _, _ in self.got]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


ALLOW = EgressPolicy.parse("127.0.0.1")


def opts(**kw: Any) -> DispatchOptions:
    base: dict[str, Any] = {
        "max_attempts": 3,
        "backoff_base_ms": 10,
        "backoff_max_ms": 20,
        "poll_s": 0.02,
        "timeout_s": 5,
        "lease_ms": 5000,
    }
    return DispatchOptions(**{**base, **kw})


def dispatcher(store: RedisConsentStore, **kw: Any) -> ChangeWebhookDispatcher:
    egress = kw.pop("egress", ALLOW)
    resolve = kw.pop("resolve", None)
    extra = {"resolve": resolve} if resolve else {}
    return ChangeWebhookDispatcher(
        RedisChangeWebhooks(store.client),
        RedisChangeFeed(store.client),
        opts(**kw),
        egress=egress,
        **extra,
    )


async def register(
    store: RedisConsentStore, tenant: str, url: str, egress: EgressPolicy = ALLOW
) -> None:
    admin = ChangeWebhookAdmin(
        RedisChangeWebhooks(store.client), RedisChangeFeed(store.client), egress
    )
    await admin.set(tenant, "crm", url, SECRET)


async def change(
    store: RedisConsentStore, tenant: str, n: int, seq: int, action: Action = Action.OPT_OUT
) -> None:
    await store.record_event(numbered_event(tenant, n, seq, action=action))


async def until(cond: Callable[[], bool], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def in_order_per_recipient(rec: Receiver) -> None:
    """Each recipient's revisions only grow (first deliveries, in arrival order)."""
    seen: set[str] = set()
    last: dict[str, int] = {}
    for event_id, body, _ in rec.got:
        if event_id in seen:
            continue
        seen.add(event_id)
        who = body["recipient"]["address"]
        assert body["revision"] > last.get(who, 0)
        last[who] = body["revision"]


async def test_every_change_once_in_order_signed_and_logged(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    await change(store, tenant, 99, 0)  # before the endpoint: not delivered
    await register(store, tenant, receiver.url)
    for seq in range(30):
        await change(store, tenant, seq % 5, seq, Action.OPT_OUT if seq % 2 else Action.OPT_IN)
    d = dispatcher(store)
    while await d.run_once():
        pass
    await d.stop()
    assert len(receiver.got) == 30 and len(set(receiver.ids())) == 30
    assert all(ok for _, _, ok in receiver.got)  # the documented recipe verifies them
    in_order_per_recipient(receiver)
    body = receiver.got[0][1]
    assert body["kind"] == "consent" and body["tenant_id"] == tenant
    assert body["recipient"]["channel"] == "sms" and body["event_id"] == receiver.got[0][0]
    assert {
        "action",
        "source",
        "occurred_at",
        "recorded_at",
        "status_changed",
        "source_event_id",
    } <= set(body)
    assert "+14155550099" not in json.dumps([b for _, b, _ in receiver.got])
    log, dead = await RedisChangeWebhooks(store.client).deliveries(tenant, "crm", 100)
    assert len(log) == 30 and dead == []
    assert {i.status for i in log} == {"delivered"} and {i.attempts for i in log} == {1}
    assert all(i.http_status == 200 and i.latency_ms >= 0 for i in log)


async def test_erasure_is_delivered_without_an_address(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    await register(store, tenant, receiver.url)
    await change(store, tenant, 7, 1)
    who = Recipient(Channel.SMS, "+14155550007")
    # Erased before the dispatcher ran: the earlier change is gone from the feed too.
    await RedisSecurityStore(store.client, store.tombstones).forget(tenant, who, "er-1", "test")
    d = dispatcher(store)
    while await d.run_once():
        pass
    await d.stop()
    bodies = [b for _, b, _ in receiver.got]
    assert [b["kind"] for b in bodies] == ["erasure"]
    assert bodies[0]["erased_channel"] == "sms"
    assert "4155550007" not in json.dumps(bodies)


async def test_500_then_200_is_retried_and_delivered(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    receiver.answer = lambda n, _e: 500 if n == 1 else 200
    await register(store, tenant, receiver.url)
    await change(store, tenant, 1, 1)
    retried = REGISTRY.get_sample_value(
        "consent_change_webhook_posts_total", {"outcome": "retried"}
    )
    d = dispatcher(store)
    await d.run_once()
    await d.stop()
    after = REGISTRY.get_sample_value("consent_change_webhook_posts_total", {"outcome": "retried"})
    assert (after or 0) - (retried or 0) == 1
    assert len(receiver.got) == 2 and receiver.got[0][0] == receiver.got[1][0]  # same event id
    log, dead = await RedisChangeWebhooks(store.client).deliveries(tenant, "crm", 10)
    assert [(i.status, i.attempts) for i in log] == [("delivered", 2)] and dead == []


async def test_always_failing_goes_to_dead_letters_after_n_and_moves_on(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    await register(store, tenant, receiver.url)
    await change(store, tenant, 1, 1)
    await change(store, tenant, 1, 2)  # same recipient, same partition: after the poisoned one
    poisoned: list[str] = []

    def answer(_n: int, event_id: str) -> int:
        if not poisoned:
            poisoned.append(event_id)
        return 500 if event_id == poisoned[0] else 200

    receiver.answer = answer
    d = dispatcher(store)
    while await d.run_once():
        pass
    await d.stop()
    assert receiver.ids().count(poisoned[0]) == 3  # max_attempts
    log, dead = await RedisChangeWebhooks(store.client).deliveries(tenant, "crm", 10)
    assert [(i.event_id, i.attempts, i.last_error, i.http_status) for i in dead] == [
        (poisoned[0], 3, "http 500", 500)
    ]
    assert [i.status for i in log] == ["delivered", "dead_letter"]  # newest first


async def test_a_redriven_dead_letter_is_sent_again_and_an_erased_one_never(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    admin = ChangeWebhookAdmin(
        RedisChangeWebhooks(store.client), RedisChangeFeed(store.client), ALLOW
    )
    await register(store, tenant, receiver.url)
    await change(store, tenant, 1, 1)
    await change(store, tenant, 2, 2)
    receiver.answer = lambda _n, _e: 500
    d = dispatcher(store)
    while await d.run_once():
        pass
    _, dead = await admin.deliveries(tenant, "crm", 10)
    assert len(dead) == 2
    by_address = {b["recipient"]["address"]: e for e, b, _ in receiver.got}
    keep, erase = by_address["+14155550001"], by_address["+14155550002"]
    with pytest.raises(ChangeWebhookNotFound):
        await admin.redrive(tenant, "crm", feed_event_id(0, "1-0", keys.PARTITIONS))
    with pytest.raises(InvalidArgument):
        await admin.redrive(tenant, "crm", "not-an-id")
    await admin.redrive(tenant, "crm", keep)
    await admin.redrive(tenant, "crm", keep)  # idempotent while pending
    await admin.redrive(tenant, "crm", erase)
    await RedisSecurityStore(store.client, store.tombstones).forget(
        tenant, Recipient(Channel.SMS, "+14155550002"), "er-2", "test"
    )
    receiver.answer = lambda _n, _e: 200
    receiver.got.clear()
    while await d.run_once():
        pass
    await d.stop()
    sent = [(e, b["kind"]) for e, b, _ in receiver.got]
    assert (keep, "consent") in sent and erase not in [e for e, _ in sent]
    assert "4155550002" not in json.dumps([b for _, b, _ in receiver.got])
    log, dead = await admin.deliveries(tenant, "crm", 10)
    assert [i.event_id for i in dead if "no longer in the feed" in i.last_error] == [erase]
    assert any(i.event_id == keep and i.status == "delivered" for i in log)
    assert await RedisChangeWebhooks(store.client).redrives(tenant, "crm") == []


async def test_the_status_changes_only_filter(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    admin = ChangeWebhookAdmin(
        RedisChangeWebhooks(store.client), RedisChangeFeed(store.client), ALLOW
    )
    done = await admin.set(tenant, "crm", receiver.url, SECRET, status_changes_only=True)
    assert done.hook.status_changes_only
    await change(store, tenant, 1, 1, Action.OPT_OUT)
    await change(store, tenant, 1, 2, Action.OPT_OUT)  # applies, changes nothing: skipped
    await change(store, tenant, 1, 3, Action.OPT_IN)
    await RedisSecurityStore(store.client, store.tombstones).forget(
        tenant, Recipient(Channel.SMS, "+14155550009"), "er-9", "test"
    )
    d = dispatcher(store)
    while await d.run_once():
        pass
    await d.stop()
    got = [(b["kind"], b.get("source_event_id")) for _, b, _ in receiver.got]
    assert sorted(got) == sorted(
        [("consent", "ev-1-1"), ("consent", "ev-1-3"), ("erasure", "er-9")]
    )


async def test_4xx_is_permanent_and_dead_lettered_at_once(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    receiver.answer = lambda _n, _e: 400
    await register(store, tenant, receiver.url)
    await change(store, tenant, 1, 1)
    d = dispatcher(store)
    await d.run_once()
    await d.stop()
    assert len(receiver.got) == 1
    _, dead = await RedisChangeWebhooks(store.client).deliveries(tenant, "crm", 10)
    assert [(i.attempts, i.last_error) for i in dead] == [(1, "http 400")]


async def test_restart_mid_stream_resumes_from_the_cursor_without_loss(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    await register(store, tenant, receiver.url)
    for seq in range(20):
        await change(store, tenant, seq % 4, seq)
    first = dispatcher(store, owner="first", read_count=3)
    await first.start()
    await until(lambda: len(receiver.got) >= 5)
    await first.stop()
    stopped_at = len(set(receiver.ids()))
    assert stopped_at < 20
    for seq in range(20, 40):
        await change(store, tenant, seq % 4, seq)
    second = dispatcher(store, owner="second")
    await second.start()
    await until(lambda: len(set(receiver.ids())) >= 40)
    await second.stop()
    ids = receiver.ids()
    assert len(set(ids)) == 40
    assert len(ids) - 40 <= 4  # at most the changes in flight at the stop are repeated
    in_order_per_recipient(receiver)


async def test_a_name_resolving_to_an_internal_address_is_refused_at_connect(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    # Registration sees only a public-looking name; the resolver then answers loopback.
    await register(store, tenant, "https://hooks.example.com/hook", EgressPolicy())
    await change(store, tenant, 1, 1)

    async def rebinding(_host: str, _port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    d = dispatcher(store, egress=EgressPolicy(), resolve=rebinding)
    await d.run_once()
    await d.stop()
    assert receiver.got == []
    _, dead = await RedisChangeWebhooks(store.client).deliveries(tenant, "crm", 10)
    assert len(dead) == 1 and dead[0].attempts == 1
    assert "destination refused" in dead[0].last_error and "loopback" in dead[0].last_error


async def test_a_deleted_endpoint_gets_nothing_more(
    store: RedisConsentStore, tenant: str, receiver: Receiver
) -> None:
    await register(store, tenant, receiver.url)
    hooks = RedisChangeWebhooks(store.client)
    await hooks.delete(tenant, "crm")
    await change(store, tenant, 1, 1)
    d = dispatcher(store)
    assert await d.run_once() == 0
    await d.stop()
    assert receiver.got == []


class _Threaded(BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Threaded.got.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_e2e_server_process_delivers_changes_to_a_subscribed_webhook() -> None:
    _Threaded.got = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Threaded)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    port = http.server_address[1]
    srv = ServerProcess({"CONSENT_EGRESS_ALLOW": f"127.0.0.1:{port}"}).start()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            admin = admin_pb2_grpc.ConsentAdminServiceStub(ch)
            consent = consent_pb2_grpc.ConsentServiceStub(ch)
            made = admin.SetChangeWebhook(
                apb.SetChangeWebhookRequest(
                    tenant_id="acme", name="crm", url=f"http://127.0.0.1:{port}/hook"
                )
            )
            secret = made.signing_secret
            who = pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550123")
            consent.OptOut(pb.OptOutRequest(tenant_id="acme", recipient=who, event_id="e2e-1"))
            consent.OptIn(pb.OptInRequest(tenant_id="acme", recipient=who, event_id="e2e-2"))
            deadline = time.monotonic() + 20
            while len(_Threaded.got) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(_Threaded.got) == 2
            bodies = [json.loads(b) for _, b in _Threaded.got]
            assert [b["action"] for b in bodies] == ["opt_out", "opt_in"]
            assert all(
                verify(secret, {k.title(): v for k, v in h.items()} | h, b)
                for h, b in _Threaded.got
            )
            log = admin.ListChangeWebhookDeliveries(
                apb.ListChangeWebhookDeliveriesRequest(tenant_id="acme", name="crm")
            )
            assert [d.status for d in log.deliveries] == [
                apb.CHANGE_WEBHOOK_DELIVERY_STATUS_DELIVERED
            ] * 2
        assert secret not in srv.log()
    finally:
        srv.stop()
        http.shutdown()


def test_e2e_consentctl_subscribes_and_every_later_change_arrives() -> None:
    """The README's recipe: a receiver on loopback, the operator's allowance, then
    ``consentctl webhooks set``; every change after it arrives, none before."""
    _Threaded.got = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Threaded)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    port = http.server_address[1]
    srv = ServerProcess({"CONSENT_EGRESS_ALLOW": f"127.0.0.1:{port}"}).start()
    ctl = [str(Path(sys.executable).parent / "consentctl")]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env["CONSENT_TARGET"] = srv.target

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*ctl, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    try:
        assert run("opt-out", "acme", "+14155550100", "--channel", "sms").returncode == 0
        made = run(
            "webhooks", "set", "acme", "local", "--url", f"http://127.0.0.1:{port}/hook", "--json"
        )
        assert made.returncode == 0, made.stderr
        secret = json.loads(made.stdout)["signing_secret"]
        assert secret.startswith("whsec_")
        for n in range(1, 6):
            assert (
                run(
                    "opt-in" if n % 2 else "opt-out", "acme", f"+1415555020{n}", "--channel", "sms"
                ).returncode
                == 0
            )
        deadline = time.monotonic() + 20
        while len(_Threaded.got) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        addresses = [json.loads(b)["recipient"]["address"] for _, b in _Threaded.got]
        assert addresses == [f"+1415555020{n}" for n in range(1, 6)]  # none from before
        listed = run("webhooks", "list", "acme", "--json")
        assert listed.returncode == 0 and secret not in listed.stdout
        assert json.loads(listed.stdout)["webhooks"][0]["name"] == "local"
        log = json.loads(run("webhooks", "deliveries", "acme", "local", "--json").stdout)
        assert [d["status"] for d in log["deliveries"]] == [
            "CHANGE_WEBHOOK_DELIVERY_STATUS_DELIVERED"
        ] * 5
        refused = run("webhooks", "set", "acme", "bad", "--url", "https://10.0.0.1/hook")
        assert refused.returncode == 1 and "url" in refused.stderr
        missing = run("webhooks", "get", "acme", "nope")
        assert missing.returncode == 1 and "CHANGE_WEBHOOK_NOT_FOUND" in missing.stderr
        nothing = run("webhooks", "redrive", "acme", "local", "00-1-0")
        assert nothing.returncode == 1 and "CHANGE_WEBHOOK_NOT_FOUND" in nothing.stderr
        assert run("webhooks", "delete", "acme", "local").returncode == 0
        assert "no change webhook" in run("webhooks", "list", "acme").stdout
        assert secret not in srv.log()
    finally:
        srv.stop()
        http.shutdown()


def test_e2e_server_restarts_on_real_redis_and_resumes_without_loss(tmp_path: Path) -> None:
    """Two server processes in turn on one redis-server: the first delivers part of the
    stream and is stopped (SIGTERM) while changes keep coming; the second resumes from
    the stored cursor. Every change arrives, in order per recipient."""
    _Threaded.got = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Threaded)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    port = http.server_address[1]
    redis = RedisProcess(tmp_path).start()
    env = {"CONSENT_EGRESS_ALLOW": f"127.0.0.1:{port}", "CONSENT_REDIS_URL": redis.url}
    first = ServerProcess(env).start()
    second: ServerProcess | None = None
    try:

        def opt(target: str, n: int) -> None:
            with grpc.insecure_channel(target) as ch:
                who = pb.Recipient(channel=pb.CHANNEL_SMS, address=f"+1415555{n % 3:04d}")
                req = {"tenant_id": "acme", "recipient": who, "event_id": f"r-{n}"}
                stub = consent_pb2_grpc.ConsentServiceStub(ch)
                if n % 2:
                    stub.OptOut(pb.OptOutRequest(**req))
                else:
                    stub.OptIn(pb.OptInRequest(**req))

        with grpc.insecure_channel(first.target) as ch:
            admin_pb2_grpc.ConsentAdminServiceStub(ch).SetChangeWebhook(
                apb.SetChangeWebhookRequest(
                    tenant_id="acme", name="crm", url=f"http://127.0.0.1:{port}/hook"
                )
            )
        for n in range(10):
            opt(first.target, n)
        deadline = time.monotonic() + 20
        while len(_Threaded.got) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.stop() == 0
        second = ServerProcess(env).start()
        for n in range(10, 20):
            opt(second.target, n)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if len({h["X-Consent-Event-Id"] for h, _ in _Threaded.got}) >= 20:
                break
            time.sleep(0.05)
        ids = [h["X-Consent-Event-Id"] for h, _ in _Threaded.got]
        assert len(set(ids)) == 20
        seen: set[str] = set()
        last: dict[str, int] = {}
        for h, b in _Threaded.got:
            if h["X-Consent-Event-Id"] in seen:
                continue
            seen.add(h["X-Consent-Event-Id"])
            body = json.loads(b)
            who = body["recipient"]["address"]
            assert body["revision"] > last.get(who, 0)
            last[who] = body["revision"]
    finally:
        if second is not None:
            second.stop()
        if first.proc.poll() is None:
            first.stop()
        redis.stop()
        http.shutdown()
