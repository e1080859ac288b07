"""Resilience end to end: the real server process over gRPC.

- race: 8+ concurrent senders while an OptOut lands; no send that starts after the
  OptOut returned is accepted (§9.1), on the embedded store and a real redis-server;
- durability: every acknowledged change survives a restart of the server and of a
  Redis with AOF, even a SIGKILLed one (§9.2);
- fail closed: Redis killed or hung mid-run (or not up yet); every RPC answers
  UNAVAILABLE, never "allowed", health goes NOT_SERVING, and both recover when Redis is
  back, with no spurious failure after a quick restart; a change cut off by a hung
  Redis is recorded exactly once when retried with its id (§6, §9.3);
- shutdown: SIGTERM/SIGINT drain an in-flight call, then exit 0; bad configuration
  stops start-up with one line naming the setting and exit code 2 (§10, §11).

Every wait is bounded; every server and Redis is private to its test (free port,
temp dir), so the tests run in parallel under ``pytest -n 2``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc

from .security_support import rich
from .support import RedisProcess, ServerProcess, create_tenant_on, run_module

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "consent.v1.ConsentService"
CALL_TIMEOUT = 10.0  # seconds; every RPC in this file carries a deadline


def sms(n: int) -> pb.Recipient:
    """A fictional US number (555-01xx), distinct per ``n``."""
    return pb.Recipient(channel=pb.CHANNEL_SMS, address=f"+1 415 555 01{n:02d}")


WA = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="whatsapp:+91 98765 43210")
EMAIL = pb.Recipient(channel=pb.CHANNEL_EMAIL, address="Jane.Doe@Example.com")


def text(body: str) -> pb.Message:
    return pb.Message(text=body)


def stub_for(target: str) -> tuple[grpc.Channel, Any]:
    """A new channel of its own (no sharing between sender threads) and its stub."""
    channel = grpc.insecure_channel(target)
    return channel, consent_pb2_grpc.ConsentServiceStub(channel)


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server with AOF on (appendonly yes, appendfsync always)."""
    proc = RedisProcess(tmp_path / "redis", appendonly=True).start()
    yield proc
    proc.resume_if_paused()
    proc.stop()


def start_server(redis_proc: RedisProcess | None, **env: str) -> ServerProcess:
    """The server on ``redis_proc`` (None = embedded store), delivery off so the status
    of accepted messages stays what SendIfAllowed acknowledged."""
    full = {"CONSENT_DELIVERY": "off", **env}
    if redis_proc is not None:
        full["CONSENT_REDIS_URL"] = redis_proc.url
    return ServerProcess(full).start()


# -- 1. race: an acknowledged OptOut stops every later send (§9.1) ----------------------

SENDERS = 10
ROUNDS = 3


@dataclass
class Attempt:
    """One SendIfAllowed call as a sender saw it (monotonic clock, this process)."""

    started: float
    ended: float
    response: pb.SendIfAllowedResponse | None = None
    error: grpc.RpcError | None = None


@dataclass
class RaceResult:
    opt_out_called: float
    opt_out_returned: float
    opt_out: pb.OptOutResponse
    attempts: list[Attempt] = field(default_factory=list)


def race(target: str, tenant: str, recipient: pb.Recipient, opt_out_topic: str) -> RaceResult:
    """SENDERS threads, each with its own channel, send to ``recipient`` (topic
    marketing) until each has started 3 sends after the OptOut returned."""
    per_sender: list[list[Attempt]] = [[] for _ in range(SENDERS)]
    go = threading.Barrier(SENDERS + 1, timeout=CALL_TIMEOUT)
    stop = threading.Event()

    def sender(mine: list[Attempt]) -> None:
        channel, stub = stub_for(target)
        with channel:
            grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
            go.wait()
            while not stop.is_set():
                req = pb.SendIfAllowedRequest(
                    tenant_id=tenant, recipient=recipient, topic="marketing", message=text("hi")
                )
                started = time.monotonic()
                try:
                    resp = stub.SendIfAllowed(req, timeout=CALL_TIMEOUT)
                    mine.append(Attempt(started, time.monotonic(), response=resp))
                except grpc.RpcError as err:
                    mine.append(Attempt(started, time.monotonic(), error=err))

    threads = [threading.Thread(target=sender, args=(a,), daemon=True) for a in per_sender]
    for t in threads:
        t.start()
    channel, stub = stub_for(target)
    try:
        go.wait()
        # Let the senders get going: some sends must be accepted before the OptOut.
        wait_until(lambda: sum(len(a) for a in per_sender) >= 2 * SENDERS, "sends before")
        called = time.monotonic()
        out = stub.OptOut(
            pb.OptOutRequest(
                tenant_id=tenant,
                recipient=recipient,
                topic=opt_out_topic,
                source=pb.SOURCE_BUTTON,
            ),
            timeout=CALL_TIMEOUT,
        )
        returned = time.monotonic()
        wait_until(
            lambda: all(sum(a.started > returned for a in mine) >= 3 for mine in per_sender),
            "three sends per sender after the OptOut returned",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(CALL_TIMEOUT + 5)
        channel.close()
    assert not any(t.is_alive() for t in threads), "a sender hung"
    return RaceResult(called, returned, out, [a for mine in per_sender for a in mine])


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``cond`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("scope", ["topic", "all"])
def test_no_send_that_starts_after_opt_out_returned_is_accepted(
    server: ServerProcess, stub: Any, tenant: str, scope: str
) -> None:
    opt_out_topic = "marketing" if scope == "topic" else ""
    for round_no in range(ROUNDS):
        recipient = pb.Recipient(
            channel=pb.CHANNEL_EMAIL, address=f"race-{scope}-{round_no}@example.com"
        )
        # An explicit opt-in first, so the ALL opt-out must outrank a topic record.
        opted_in = stub.OptIn(
            pb.OptInRequest(tenant_id=tenant, recipient=recipient, topic="marketing"),
            timeout=CALL_TIMEOUT,
        )
        result = race(server.target, tenant, recipient, opt_out_topic)
        assert result.opt_out.applied and result.opt_out.changed
        assert result.opt_out.revision == opted_in.revision + 1

        unexpected = [
            a.error.code()
            for a in result.attempts
            if a.error is not None and a.error.code() != grpc.StatusCode.FAILED_PRECONDITION
        ]
        assert not unexpected, f"round {round_no}: unexpected errors {unexpected[:5]}"

        after = [a for a in result.attempts if a.started > result.opt_out_returned]
        assert len(after) >= 3 * SENDERS
        accepted_after = [a for a in after if a.response is not None]
        assert not accepted_after, (
            f"round {round_no}: {len(accepted_after)} sends that started after the OptOut "
            f"returned were accepted: {[a.response.message_id for a in accepted_after][:5]}"
        )
        for a in after:
            assert a.error is not None
            _, details = rich(a.error)
            info = details["ErrorInfo"]
            assert info.reason == "RECIPIENT_OPTED_OUT" and info.domain == "consent.v1"
            assert info.metadata["scope"] == scope.upper()
            assert info.metadata["topic"] == "marketing"
            assert info.metadata["source"] == "SOURCE_BUTTON"

        # Not vacuous: sends that finished before the OptOut was even called went through.
        before = [a for a in result.attempts if a.ended < result.opt_out_called]
        assert len(before) >= SENDERS
        assert all(a.response is not None for a in before)

        # Every acceptance, whenever it happened, was decided before the opt-out landed,
        # and each is a real message the server can report on.
        accepted = [a.response for a in result.attempts if a.response is not None]
        assert all(r.consent_revision == opted_in.revision for r in accepted)
        assert len({r.message_id for r in accepted}) == len(accepted)
        for r in accepted:
            status = stub.GetMessageStatus(
                pb.GetMessageStatusRequest(tenant_id=tenant, message_id=r.message_id),
                timeout=CALL_TIMEOUT,
            )
            assert status.status == pb.MESSAGE_STATUS_ACCEPTED
        check = stub.CheckConsent(
            pb.CheckConsentRequest(tenant_id=tenant, recipient=recipient, topic="marketing"),
            timeout=CALL_TIMEOUT,
        )
        assert not check.allowed and check.revision == result.opt_out.revision


# -- 2. durability: acknowledged changes survive restarts (§9.2) ------------------------


@dataclass
class Acked:
    """What the server acknowledged before the restart, to replay afterwards."""

    opt_out_wa: pb.OptOutResponse
    send_keyed: pb.SendIfAllowedResponse
    message_ids: list[str]


def acknowledge_changes(stub: Any, tenant: str) -> Acked:
    """Opt-outs, opt-ins, a late event and sends for several recipients."""

    def out(r: pb.Recipient, **kw: Any) -> pb.OptOutResponse:
        return stub.OptOut(pb.OptOutRequest(tenant_id=tenant, recipient=r, **kw), timeout=10)

    def opt_in(r: pb.Recipient, **kw: Any) -> pb.OptInResponse:
        return stub.OptIn(pb.OptInRequest(tenant_id=tenant, recipient=r, **kw), timeout=10)

    def send(r: pb.Recipient, topic: str, **kw: Any) -> pb.SendIfAllowedResponse:
        req = pb.SendIfAllowedRequest(tenant_id=tenant, recipient=r, topic=topic, **kw)
        return stub.SendIfAllowed(req, timeout=CALL_TIMEOUT)

    opt_out_wa = out(WA, source=pb.SOURCE_BUTTON, evidence="wamid.1", event_id="wa-stop-1")
    assert opt_out_wa.applied
    out(sms(1), topic="marketing", source=pb.SOURCE_KEYWORD, evidence="STOP PROMOTIONS")
    opt_in(sms(1), topic="marketing", source=pb.SOURCE_LINK, evidence="https://x.example/r")
    opt_in(EMAIL, topic="order_updates", event_id="mail-in-1")
    late = Timestamp(seconds=int(time.time()) - 3600)
    assert not out(EMAIL, topic="order_updates", occurred_at=late, event_id="mail-late").applied
    send_keyed = send(sms(2), "order_updates", message=text("shipped"), idempotency_key="o-1")
    plain = send(EMAIL, "order_updates", message=text("your receipt"))
    with pytest.raises(grpc.RpcError):  # blocked: not an acknowledged change
        send(WA, "marketing", message=text("20% off"))
    return Acked(opt_out_wa, send_keyed, [send_keyed.message_id, plain.message_id])


def snapshot(stub: Any, tenant: str, acked: Acked) -> dict[str, bytes]:
    """Everything a caller can read back: decisions, histories, message statuses."""
    seen: dict[str, bytes] = {}
    for name, r in {"wa": WA, "sms1": sms(1), "sms2": sms(2), "email": EMAIL}.items():
        for topic in ("general", "marketing", "order_updates"):
            check = stub.CheckConsent(
                pb.CheckConsentRequest(tenant_id=tenant, recipient=r, topic=topic),
                timeout=CALL_TIMEOUT,
            )
            seen[f"check/{name}/{topic}"] = check.SerializeToString(deterministic=True)
        history = stub.ListConsentEvents(
            pb.ListConsentEventsRequest(tenant_id=tenant, recipient=r, page_size=1000),
            timeout=CALL_TIMEOUT,
        )
        seen[f"history/{name}"] = history.SerializeToString(deterministic=True)
    for mid in acked.message_ids:
        status = stub.GetMessageStatus(
            pb.GetMessageStatusRequest(tenant_id=tenant, message_id=mid), timeout=CALL_TIMEOUT
        )
        seen[f"message/{mid}"] = status.SerializeToString(deterministic=True)
    return seen


def outbox_ids(redis_proc: RedisProcess, tenant: str) -> set[str]:
    """Message ids queued for ``tenant`` in every outbox partition (docs/outbox.md)."""
    client = redis_proc.client()
    try:
        ids: set[str] = set()
        for key in client.scan_iter(match="ca:{cp*}:outbox"):
            for _entry_id, fields in client.xrange(key):
                if fields.get(b"tenant") == tenant.encode():
                    ids.add(fields[b"id"].decode())
        return ids
    finally:
        client.close()


def check_before(stub: Any, tenant: str) -> None:
    """The acknowledged state itself, so an equal snapshot after restart means something."""
    wa = stub.CheckConsent(
        pb.CheckConsentRequest(tenant_id=tenant, recipient=WA, topic="marketing"), timeout=10
    )
    assert not wa.allowed and wa.decided_by == pb.SCOPE_ALL and wa.source == pb.SOURCE_BUTTON
    s1 = stub.CheckConsent(
        pb.CheckConsentRequest(tenant_id=tenant, recipient=sms(1), topic="marketing"), timeout=10
    )
    assert s1.allowed and s1.status == pb.CONSENT_STATUS_OPTED_IN and s1.revision == 2
    events = stub.ListConsentEvents(
        pb.ListConsentEventsRequest(tenant_id=tenant, recipient=EMAIL), timeout=10
    ).events
    assert [(e.event_id, e.applied) for e in events] == [
        ("mail-late", False),
        ("mail-in-1", True),
    ]


@pytest.mark.parametrize(
    ("server_signal", "redis_signal"),
    [(signal.SIGTERM, signal.SIGKILL), (signal.SIGKILL, signal.SIGTERM)],
    ids=["server-sigterm+redis-sigkill", "server-sigkill+redis-sigterm"],
)
def test_acknowledged_changes_survive_server_and_redis_restart(
    redis_aof: RedisProcess, tenant: str, server_signal: int, redis_signal: int
) -> None:
    srv = start_server(redis_aof)
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            acked = acknowledge_changes(stub, tenant)
            check_before(stub, tenant)
            before = snapshot(stub, tenant, acked)
            queued = outbox_ids(redis_aof, tenant)
            assert set(acked.message_ids) <= queued
        srv.signal(server_signal)
        srv.wait(30)
        assert redis_aof.proc is not None
        redis_aof.proc.send_signal(redis_signal)  # SIGKILL: no chance to flush anything
        redis_aof.proc.wait(10)
        redis_aof.start()  # same port, same directory: it replays the AOF
        assert outbox_ids(redis_aof, tenant) == queued
    finally:
        srv.kill()

    srv = start_server(redis_aof)
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            assert snapshot(stub, tenant, acked) == before
            # Replays are still recognised: the idempotency records survived too.
            replay = stub.OptOut(
                pb.OptOutRequest(
                    tenant_id=tenant,
                    recipient=WA,
                    source=pb.SOURCE_BUTTON,
                    evidence="wamid.1",
                    event_id="wa-stop-1",
                ),
                timeout=CALL_TIMEOUT,
            )
            assert replay.duplicate and replay.revision == acked.opt_out_wa.revision
            resend = stub.SendIfAllowed(
                pb.SendIfAllowedRequest(
                    tenant_id=tenant,
                    recipient=sms(2),
                    topic="order_updates",
                    message=text("shipped"),
                    idempotency_key="o-1",
                ),
                timeout=CALL_TIMEOUT,
            )
            assert resend.duplicate and resend.message_id == acked.send_keyed.message_id
            assert snapshot(stub, tenant, acked) == before  # replays added nothing
            # Revisions continue where they were, never restart at 1.
            back = stub.OptIn(
                pb.OptInRequest(tenant_id=tenant, recipient=WA, source=pb.SOURCE_KEYWORD),
                timeout=CALL_TIMEOUT,
            )
            assert back.changed and back.revision == acked.opt_out_wa.revision + 1
        assert srv.stop() == 0
    finally:
        srv.kill()


def test_control_without_aof_a_redis_crash_loses_changes(tmp_path: Path, tenant: str) -> None:
    """The durability test above can fail: the same steps without AOF lose the opt-out
    (README: why AOF). If this ever passes with data intact, the test above proves
    nothing about AOF and must be revisited."""
    redis_proc = RedisProcess(tmp_path / "redis", appendonly=False).start()
    srv = start_server(redis_proc)
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            acked = acknowledge_changes(stub, tenant)
            before = snapshot(stub, tenant, acked)
            redis_proc.kill()
            redis_proc.start()
            srv.wait_health(SERVING)
            assert snapshot_or_none(stub, tenant, acked) != before
            # The tenant registry went with it: once the server's settings cache (about a
            # second) lets go, calls are refused, not "allowed"...
            assert _tenant_gone(stub, tenant, deadline_s=10)
            # ...and once the tenant is created again, the opt-out is gone.
            create_tenant_on(srv.target, tenant)
            wa = stub.CheckConsent(
                pb.CheckConsentRequest(tenant_id=tenant, recipient=WA, topic="marketing"),
                timeout=CALL_TIMEOUT,
            )
            assert wa.allowed and wa.status == pb.CONSENT_STATUS_NO_RECORD
    finally:
        srv.kill()
        redis_proc.stop()


def _tenant_gone(stub: Any, tenant: str, deadline_s: float) -> bool:
    """True once a check for ``tenant`` answers NOT_FOUND (within ``deadline_s``)."""
    request = pb.CheckConsentRequest(tenant_id=tenant, recipient=WA, topic="marketing")
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        try:
            stub.CheckConsent(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return True
            raise
        time.sleep(0.05)
    return False


def snapshot_or_none(stub: Any, tenant: str, acked: Acked) -> dict[str, bytes] | None:
    """snapshot(), or None when a message the server acknowledged is unknown now."""
    try:
        return snapshot(stub, tenant, acked)
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


# -- 3. fail closed: Redis down -> UNAVAILABLE, NOT_SERVING, recovery (§6, §9.3) --------


def store_calls(tenant: str, message_id: str) -> dict[str, tuple[str, Any]]:
    """One call per RPC that needs the store, each of which would succeed (and most of
    which would say "allowed" or accept something) if the server did not fail closed."""
    return {
        "CheckConsent(opted out)": (
            "CheckConsent",
            pb.CheckConsentRequest(tenant_id=tenant, recipient=sms(1), topic="marketing"),
        ),
        "CheckConsent(no record)": (
            "CheckConsent",
            pb.CheckConsentRequest(tenant_id=tenant, recipient=sms(2), topic="marketing"),
        ),
        "BatchCheckConsent": (
            "BatchCheckConsent",
            pb.BatchCheckConsentRequest(
                tenant_id=tenant, topic="marketing", recipients=[sms(1), sms(2), sms(3)]
            ),
        ),
        "OptOut": ("OptOut", pb.OptOutRequest(tenant_id=tenant, recipient=sms(3))),
        "OptIn": ("OptIn", pb.OptInRequest(tenant_id=tenant, recipient=sms(1))),
        "SendIfAllowed(no record)": (
            "SendIfAllowed",
            pb.SendIfAllowedRequest(
                tenant_id=tenant, recipient=sms(2), topic="marketing", message=text("hi")
            ),
        ),
        "SendIfAllowed(opted out)": (
            "SendIfAllowed",
            pb.SendIfAllowedRequest(
                tenant_id=tenant, recipient=sms(1), topic="marketing", message=text("hi")
            ),
        ),
        "ListConsentEvents": (
            "ListConsentEvents",
            pb.ListConsentEventsRequest(tenant_id=tenant, recipient=sms(1)),
        ),
        "GetMessageStatus": (
            "GetMessageStatus",
            pb.GetMessageStatusRequest(tenant_id=tenant, message_id=message_id),
        ),
    }


def assert_all_unavailable(stub: Any, tenant: str, message_id: str) -> None:
    """Every store call answers UNAVAILABLE + ErrorInfo STORE_UNAVAILABLE, promptly."""
    for name, (method, request) in store_calls(tenant, message_id).items():
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, method)(request, timeout=CALL_TIMEOUT)
        code = err.value.code()
        assert code == grpc.StatusCode.UNAVAILABLE, f"{name} answered {code}, not UNAVAILABLE"
        _, details = rich(err.value)
        assert details["ErrorInfo"].reason == "STORE_UNAVAILABLE", name
        assert details["ErrorInfo"].domain == "consent.v1", name
        assert details["RetryInfo"].retry_delay.seconds >= 1, name
        # Bounded by CONSENT_REDIS_TIMEOUT (0.5 s), not by the caller's deadline.
        assert time.monotonic() - started < 5, f"{name} took too long to fail"


def seed(stub: Any, tenant: str) -> str:
    """sms(1) opted out of everything, a message accepted for sms(2); its id."""
    stub.OptOut(
        pb.OptOutRequest(tenant_id=tenant, recipient=sms(1), event_id="s1-out"),
        timeout=CALL_TIMEOUT,
    )
    sent = stub.SendIfAllowed(
        pb.SendIfAllowedRequest(
            tenant_id=tenant, recipient=sms(2), topic="marketing", message=text("hello")
        ),
        timeout=CALL_TIMEOUT,
    )
    return str(sent.message_id)


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["killed", "hung"])
def test_redis_down_fails_closed_and_recovers(
    redis_aof: RedisProcess, tenant: str, failure: str
) -> None:
    srv = start_server(redis_aof, CONSENT_REDIS_TIMEOUT="0.5")
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            message_id = seed(stub, tenant)
            assert srv.health() == SERVING and srv.health(SERVICE) == SERVING

            if failure == "killed":
                redis_aof.kill()
            else:
                redis_aof.pause()
            down_for = srv.wait_health(NOT_SERVING, timeout=15)
            assert srv.health(SERVICE) == NOT_SERVING
            # Killed: twice, as a second pass must not find a half-open connection that
            # "works". Hung: once, each call waits out CONSENT_REDIS_TIMEOUT.
            for _ in range(2 if failure == "killed" else 1):
                assert_all_unavailable(stub, tenant, message_id)
            assert "store unreachable" in srv.log()

            if failure == "killed":
                redis_aof.start()  # same port, same dir, AOF replayed
            else:
                redis_aof.resume()
            up_after = srv.wait_health(SERVING, timeout=15)
            assert srv.health(SERVICE) == SERVING

            recovered = stub.CheckConsent(
                pb.CheckConsentRequest(tenant_id=tenant, recipient=sms(2), topic="marketing"),
                timeout=CALL_TIMEOUT,
            )
            assert recovered.allowed
            status = stub.GetMessageStatus(
                pb.GetMessageStatusRequest(tenant_id=tenant, message_id=message_id),
                timeout=CALL_TIMEOUT,
            )
            assert status.status == pb.MESSAGE_STATUS_ACCEPTED
            again = stub.SendIfAllowed(
                pb.SendIfAllowedRequest(
                    tenant_id=tenant, recipient=sms(2), topic="marketing", message=text("again")
                ),
                timeout=CALL_TIMEOUT,
            )
            assert again.message_id and again.message_id != message_id
            if failure == "killed":
                # The opt-out from before the outage is intact (AOF), and nothing reached
                # a dead Redis: the outage-time OptOut/OptIn left no trace. (A hung Redis
                # may still run a change it received; see the next test.)
                s1 = stub.CheckConsent(
                    pb.CheckConsentRequest(tenant_id=tenant, recipient=sms(1), topic="marketing"),
                    timeout=CALL_TIMEOUT,
                )
                assert not s1.allowed
                for r in (sms(1), sms(3)):
                    hist = stub.ListConsentEvents(
                        pb.ListConsentEventsRequest(tenant_id=tenant, recipient=r),
                        timeout=CALL_TIMEOUT,
                    )
                    assert [e.event_id for e in hist.events] == (["s1-out"] if r == sms(1) else [])
        assert srv.stop() == 0
        assert down_for < 15 and up_after < 15
    finally:
        srv.kill()


def test_no_spurious_unavailable_after_a_quick_redis_restart(
    redis_aof: RedisProcess, tenant: str
) -> None:
    """Redis restarts faster than the health check notices: once health is SERVING,
    calls succeed, even on pooled connections the old Redis closed (a redis-py 8.1
    default skipped that check, redis/redis-py#4252; store/connect.py turns it back on)."""
    srv = start_server(redis_aof)
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            seed(stub, tenant)
            checks = [
                pb.CheckConsentRequest(tenant_id=tenant, recipient=sms(n % 4), topic="marketing")
                for n in range(32)
            ]

            def burst() -> list[Any]:
                # Concurrent calls: the server holds several Redis connections in its pool.
                futures = [stub.CheckConsent.future(r, timeout=CALL_TIMEOUT) for r in checks]
                outcomes: list[Any] = []
                for f in futures:
                    try:
                        outcomes.append(f.result())
                    except grpc.RpcError as err:
                        outcomes.append(err.code())
                return outcomes

            assert all(isinstance(o, pb.CheckConsentResponse) for o in burst())
            redis_aof.kill()
            redis_aof.start()
            time.sleep(0.2)  # the server's event loop sees the old connections close
            srv.wait_health(SERVING, timeout=15)
            outcomes = burst()
            failed = [o for o in outcomes if not isinstance(o, pb.CheckConsentResponse)]
            assert not failed, f"{len(failed)} of {len(outcomes)} calls failed: {failed[:3]}"
            assert [o.allowed for o in outcomes[:4]] == [True, False, True, True]  # sms(1) out
        assert srv.stop() == 0
    finally:
        srv.kill()


def test_change_cut_off_by_a_hung_redis_is_recorded_once_on_retry(
    redis_aof: RedisProcess, tenant: str
) -> None:
    """A timed-out change has an unknown outcome (Redis may run it when it wakes up);
    retrying with the same event_id / idempotency_key records it exactly once."""
    srv = start_server(redis_aof, CONSENT_REDIS_TIMEOUT="0.5")
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            seed(stub, tenant)  # scripts loaded, tenant settings cached
            out = pb.OptOutRequest(tenant_id=tenant, recipient=sms(4), event_id="cut-1")
            send = pb.SendIfAllowedRequest(
                tenant_id=tenant,
                recipient=sms(5),
                topic="marketing",
                message=text("hi"),
                idempotency_key="cut-send",
            )
            redis_aof.pause()
            for method, request in (("OptOut", out), ("SendIfAllowed", send)):
                with pytest.raises(grpc.RpcError) as err:
                    getattr(stub, method)(request, timeout=CALL_TIMEOUT)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "retry with the same" in (err.value.details() or "")
            redis_aof.resume()
            srv.wait_health(SERVING, timeout=15)

            retried = stub.OptOut(out, timeout=CALL_TIMEOUT)
            assert retried.status == pb.CONSENT_STATUS_OPTED_OUT
            hist = stub.ListConsentEvents(
                pb.ListConsentEventsRequest(tenant_id=tenant, recipient=sms(4)),
                timeout=CALL_TIMEOUT,
            )
            assert [e.event_id for e in hist.events] == ["cut-1"]
            first = stub.SendIfAllowed(send, timeout=CALL_TIMEOUT)
            second = stub.SendIfAllowed(send, timeout=CALL_TIMEOUT)
            assert second.duplicate and second.message_id == first.message_id
        assert srv.stop() == 0
    finally:
        srv.kill()


def test_server_started_before_redis_is_not_serving_until_redis_answers(
    tmp_path: Path, tenant: str
) -> None:
    redis_proc = RedisProcess(tmp_path / "redis", appendonly=True)  # port chosen, not started
    srv = ServerProcess(
        {"CONSENT_REDIS_URL": redis_proc.url, "CONSENT_REDIS_TIMEOUT": "0.5"}
    ).start(wait_serving=False)
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            srv.wait_health(NOT_SERVING, timeout=15)
            # A well-formed id (m<pp><time ms><random>) that must be looked up in Redis.
            assert_all_unavailable(stub, tenant, "m03" + "0" * 12 + "ab" * 8)
            redis_proc.start()
            srv.wait_health(SERVING, timeout=15)
            create_tenant_on(srv.target, tenant)  # it could not be created while Redis was down
            check = stub.CheckConsent(
                pb.CheckConsentRequest(tenant_id=tenant, recipient=sms(1), topic="marketing"),
                timeout=CALL_TIMEOUT,
            )
            assert check.allowed and check.status == pb.CONSENT_STATUS_NO_RECORD
        assert srv.stop() == 0
    finally:
        srv.kill()
        redis_proc.stop()


# -- 4. shutdown and start-up (§10, §11) ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_an_in_flight_call_then_exits_0(
    redis_aof: RedisProcess, tenant: str, sig: int
) -> None:
    """A call held in flight by a paused Redis completes after the signal; then exit 0."""
    srv = start_server(redis_aof, CONSENT_REDIS_TIMEOUT="20", CONSENT_SHUTDOWN_GRACE="20")
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            seed(stub, tenant)
            outcome: dict[str, Any] = {}

            def in_flight() -> None:
                try:
                    outcome["ok"] = stub.OptOut(
                        pb.OptOutRequest(tenant_id=tenant, recipient=sms(6), event_id="drain"),
                        timeout=30,
                    )
                except grpc.RpcError as err:
                    outcome["error"] = err

            redis_aof.pause()
            caller = threading.Thread(target=in_flight, daemon=True)
            caller.start()
            # Time for the call to reach the server and wait on Redis. Should a loaded
            # machine need longer, the call is refused and the test fails; it never
            # passes without draining a call.
            time.sleep(1.0)
            srv.signal(sig)
            wait_until(lambda: "shutting down" in srv.log(), "the shutdown log line", 10)
            time.sleep(0.3)
            assert srv.proc is not None and srv.proc.poll() is None, "exited without draining"
            assert caller.is_alive() and not outcome
            # New calls are refused while draining.
            late_channel, late_stub = stub_for(srv.target)
            with late_channel, pytest.raises(grpc.RpcError) as refused:
                late_stub.CheckConsent(
                    pb.CheckConsentRequest(tenant_id=tenant, recipient=sms(2)), timeout=3
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            redis_aof.resume()
            caller.join(30)
            assert not caller.is_alive()
            assert "error" not in outcome, outcome.get("error")
            assert outcome["ok"].applied and outcome["ok"].status == pb.CONSENT_STATUS_OPTED_OUT
        assert srv.wait(30) == 0
        assert '"stopped"' in srv.log()
    finally:
        redis_aof.resume_if_paused()
        srv.kill()

    # The drained change really was written.
    srv = start_server(redis_aof)
    try:
        channel, stub = stub_for(srv.target)
        with channel:
            hist = stub.ListConsentEvents(
                pb.ListConsentEventsRequest(tenant_id=tenant, recipient=sms(6)),
                timeout=CALL_TIMEOUT,
            )
            assert [e.event_id for e in hist.events] == ["drain"]
        assert srv.stop() == 0
    finally:
        srv.kill()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_health_watch_sees_not_serving_on_shutdown_and_exit_is_bounded(
    tenant: str, sig: int
) -> None:
    """A Health.Watch stream open across the signal sees NOT_SERVING; even a watcher
    that never hangs up cannot hold the exit past the grace period."""
    srv = ServerProcess({"CONSENT_SHUTDOWN_GRACE": "2"}).start()
    try:
        channel = grpc.insecure_channel(srv.target)
        with channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=30
            )
            assert next(watch).status == SERVING
            signalled = time.monotonic()
            srv.signal(sig)
            assert next(watch).status == NOT_SERVING
            assert srv.wait(15) == 0
            assert time.monotonic() - signalled < 2 + 5
            with pytest.raises(grpc.RpcError):  # the server ended the stream on its way out
                next(watch)
    finally:
        srv.kill()


def run_server_expecting_exit(
    env: dict[str, str], args: list[str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m consent_server`` and wait for it to exit on its own."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    full.update(env)
    args = list(args or [])
    if "CONSENT_LISTEN" not in env and "--listen" not in args:
        # Should a bad case start after all, it must not take the well-known port.
        args += ["--listen", "127.0.0.1:0"]
    return run_module("consent_server", *args, env=full, timeout=timeout)


BAD_CONFIG: list[tuple[dict[str, str], list[str], str]] = [
    ({"CONSENT_LISTEN": "nonsense"}, [], "CONSENT_LISTEN"),
    ({"CONSENT_LISTEN": "127.0.0.1:99999"}, [], "CONSENT_LISTEN"),
    ({"CONSENT_LISTEN": ":50051"}, [], "CONSENT_LISTEN"),
    ({}, ["--listen", "nonsense"], "CONSENT_LISTEN"),
    ({"CONSENT_REDIS_URL": "http://x"}, [], "CONSENT_REDIS_URL"),
    ({}, ["--redis-url", "localhost:6379"], "CONSENT_REDIS_URL"),
    ({"CONSENT_REDIS_CLUSTER": "yes"}, [], "CONSENT_REDIS_CLUSTER"),
    ({"CONSENT_REDIS_CLUSTER": "1"}, [], "CONSENT_REDIS_CLUSTER"),
    ({"CONSENT_REDIS_TIMEOUT": "soon"}, [], "CONSENT_REDIS_TIMEOUT"),
    ({"CONSENT_REDIS_TIMEOUT": "0"}, [], "CONSENT_REDIS_TIMEOUT"),
    ({"CONSENT_SHUTDOWN_GRACE": "-1"}, [], "CONSENT_SHUTDOWN_GRACE"),
    ({"CONSENT_LOG_LEVEL": "loud"}, [], "CONSENT_LOG_LEVEL"),
    ({"CONSENT_LOG_FORMAT": "xml"}, [], "CONSENT_LOG_FORMAT"),
    ({"CONSENT_DEFAULT_REGION": "Atlantis"}, [], "CONSENT_DEFAULT_REGION"),
    ({"CONSENT_DELIVERY": "sometimes"}, [], "CONSENT_DELIVERY"),
    ({"CONSENT_REQUIRE_AUTH": "maybe"}, [], "CONSENT_REQUIRE_AUTH"),
    # Beyond loopback with authentication switched off needs the explicit switch.
    ({"CONSENT_LISTEN": "0.0.0.0:0", "CONSENT_REQUIRE_AUTH": "0"}, [], "CONSENT_ALLOW_INSECURE"),
]


@pytest.mark.parametrize(
    ("env", "args", "setting"),
    BAD_CONFIG,
    ids=[f"{s}={next(iter(e.values()), ' '.join(a))}" for e, a, s in BAD_CONFIG],
)
def test_bad_configuration_stops_start_up_with_one_line_and_exit_2(
    env: dict[str, str], args: list[str], setting: str
) -> None:
    result = run_server_expecting_exit(env, args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert setting in lines[0] and "configuration error" in lines[0]
    assert not result.stdout.strip()
    assert "Traceback" not in result.stderr


def test_listen_address_in_use_stops_start_up_with_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server_expecting_exit({"CONSENT_LISTEN": f"127.0.0.1:{port}"})
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1 and "CONSENT_LISTEN" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_right_after_start_still_exits_0() -> None:
    """The signal handlers are installed before anything is served: a SIGTERM that
    arrives as soon as the port answers (here: while the inline worker and health
    watcher are still starting) drains and exits 0 instead of killing the process."""
    for _ in range(3):
        srv = ServerProcess({}).start(wait_serving=False)
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0, srv.log()
