"""Observability through the real server process: per-RPC and decision metrics on
/metrics (one process and CONSENT_PROCESSES=2), the audit log lines, and the HTTP
health endpoints."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pbg

from .support import (
    RedisProcess,
    ServerProcess,
    auth_env,
    free_port,
    run_module,
    text_send_request,
)

TENANT = "acme"
NUMBER = "+14155550142"
WA = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address=NUMBER)
OTHER = pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550143")


def scrape(listen: str) -> str:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def settled(listen: str, check: Callable[[str], None], within: float = 10.0) -> None:
    """Run ``check`` on a scrape until it passes or ``within`` seconds have gone.

    grpc.aio's ``abort`` sends the status before it raises, so a client can see its
    refused call end a moment before the server's interceptor counts it; a scrape taken
    right after the last call may be one short. Counts only ever grow toward the
    expected value, so waiting for it hides nothing.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            check(scrape(listen))
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m[1] != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[2] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m[3])
            found = True
    assert found, f"no sample {name}{labels} in:\n" + "\n".join(
        ln for ln in text.splitlines() if ln.startswith(name[:12])
    )
    return total


def exercise(target: str) -> None:
    """A mix of calls: allowed and blocked checks and sends, an opt-out, a batch, an
    inbound STOP, a bad request."""
    with grpc.insecure_channel(target) as ch:
        stub = pbg.ConsentServiceStub(ch)
        check = pb.CheckConsentRequest(tenant_id=TENANT, recipient=WA, topic="marketing")
        assert stub.CheckConsent(check, timeout=10).allowed
        stub.OptOut(
            pb.OptOutRequest(
                tenant_id=TENANT,
                recipient=WA,
                source=pb.SOURCE_API,
                event_id="ev_0123456789012345abcdef",
            ),
            timeout=10,
        )
        assert not stub.CheckConsent(check, timeout=10).allowed

        def send(recipient: pb.Recipient, idempotency_key: str) -> None:
            stub.SendIfAllowed(
                text_send_request(TENANT, recipient, "hi", idempotency_key=idempotency_key),
                timeout=10,
            )

        with pytest.raises(grpc.RpcError) as blocked:
            send(WA, "k1")
        assert blocked.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        send(OTHER, "k2")
        stub.BatchCheckConsent(
            pb.BatchCheckConsentRequest(tenant_id=TENANT, topic="news", recipients=[WA, OTHER]),
            timeout=10,
        )
        stub.HandleInboundMessage(
            pb.HandleInboundMessageRequest(
                tenant_id=TENANT, recipient=OTHER, text="STOP", provider_message_id="wamid.X1"
            ),
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as bad:
            stub.CheckConsent(pb.CheckConsentRequest(tenant_id=TENANT, topic="x"), timeout=10)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def check_metrics(text: str) -> None:
    rpc = {"grpc_service": "consent.v1.ConsentService", "grpc_type": "unary"}
    assert sample(text, "grpc_server_started_total", grpc_method="CheckConsent", **rpc) == 3
    handled = "grpc_server_handled_total"
    assert sample(text, handled, grpc_method="CheckConsent", grpc_code="OK", **rpc) == 2
    assert sample(text, handled, grpc_method="CheckConsent", grpc_code="INVALID_ARGUMENT") == 1
    assert sample(text, handled, grpc_method="SendIfAllowed", grpc_code="FAILED_PRECONDITION") == 1
    assert sample(text, handled, grpc_method="SendIfAllowed", grpc_code="OK") == 1
    assert sample(text, "grpc_server_handling_seconds_count", grpc_method="OptOut", **rpc) == 1
    assert sample(text, "grpc_server_handling_seconds_bucket", grpc_method="OptOut", le="+Inf") == 1
    d = "consent_decisions_total"
    assert sample(text, d, rpc="CheckConsent", result="allowed", scope="default_policy") == 1
    assert (
        sample(
            text,
            d,
            rpc="CheckConsent",
            result="blocked",
            reason="RECIPIENT_OPTED_OUT",
            scope="all",
        )
        == 1
    )
    assert sample(text, d, rpc="SendIfAllowed", result="blocked", reason="RECIPIENT_OPTED_OUT") == 1
    assert sample(text, d, rpc="SendIfAllowed", result="allowed") == 1
    assert sample(text, d, rpc="BatchCheckConsent", result="blocked") == 1
    assert sample(text, d, rpc="BatchCheckConsent", result="allowed") == 1
    assert sample(text, "consent_inbound_actions_total", action="opted_out", channel="sms") == 1
    assert sample(text, "consent_store_call_seconds_count", outcome="ok") > 5
    assert sample(text, "consent_store_up") == 1
    assert "_created" not in text


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    listen = f"127.0.0.1:{free_port()}"
    srv = ServerProcess(
        {"CONSENT_METRICS_LISTEN": listen, "CONSENT_DELIVERY": "off"}, http=True
    ).start()
    srv.env["_metrics"] = listen
    exercise(srv.target)
    yield srv
    srv.stop()


def test_per_rpc_and_decision_metrics_of_one_process(server: ServerProcess) -> None:
    settled(server.env["_metrics"], check_metrics)


def test_every_change_and_every_blocked_send_is_one_info_line(server: ServerProcess) -> None:
    # The server's log lines reach us through a reader of its stderr: on a loaded
    # machine the last ones may still be on their way (wait for them, a few seconds).
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in server.lines if line.startswith("{")]
        changed = [r for r in records if r["msg"] == "consent changed"]
        if len(changed) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(r["action"], r["source"], r["channel"]) for r in changed] == [
        ("OPT_OUT", "api", "WHATSAPP"),
        ("OPT_OUT", "keyword", "SMS"),
    ]
    first = changed[0]
    assert first["level"] == "info"
    assert first["event_id"] == "ev_0123456789012345abcdef"  # whole, not masked
    assert first["recipient"] == "+14155****42"
    assert changed[1]["event_id"] == "wamid.X1"
    [blocked] = [r for r in records if r["msg"] == "send blocked"]
    assert blocked["reason"] == "RECIPIENT_OPTED_OUT" and blocked["decided_by"] == "all"
    assert blocked["event_id"] == "ev_0123456789012345abcdef"
    assert NUMBER not in server.log() and NUMBER[1:] not in server.log()
    assert '"tracing on"' not in server.log()  # no OTEL_* variables: no tracing


@pytest.mark.slow
def test_metrics_are_summed_over_two_processes(tmp_path: Path) -> None:
    redis, listen, srv = _on_redis(tmp_path, {"CONSENT_PROCESSES": "2"})
    try:
        # Each call on its own connection, so that the kernel spreads them over both.
        exercise(srv.target)
        settled(listen, check_metrics)
        assert http_status(f"http://{listen}/readyz") == (200, "ready\n")
    finally:
        srv.stop()
        redis.stop()


def _on_redis(
    tmp_path: Path, env: dict[str, str], http: bool = False
) -> tuple[RedisProcess, str, ServerProcess]:
    """A redis-server and a server process on it with ``env``, delivery off, metrics on a
    free port: (redis, metrics host:port, server)."""
    redis = RedisProcess(tmp_path / "redis").start()
    listen = f"127.0.0.1:{free_port()}"
    env = {"CONSENT_REDIS_URL": redis.url, "CONSENT_DELIVERY": "off", **env}
    srv = ServerProcess({**env, "CONSENT_METRICS_LISTEN": listen}, http=http).start()
    return redis, listen, srv


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_readyz_on_the_metrics_port_and_healthz_of_the_edge(server: ServerProcess) -> None:
    assert http_status(f"http://{server.env['_metrics']}/readyz") == (200, "ready\n")
    assert http_status(server.http_url + "/healthz") == (200, "ok")


def test_healthz_and_readyz_follow_the_store(tmp_path: Path) -> None:
    redis, listen, srv = _on_redis(tmp_path, {}, http=True)
    try:
        assert http_status(srv.http_url + "/healthz") == (200, "ok")
        assert http_status(f"http://{listen}/readyz")[0] == 200
        redis.kill()
        srv.wait_health(2)  # NOT_SERVING
        assert http_status(srv.http_url + "/healthz") == (503, "consent store unavailable")
        assert http_status(f"http://{listen}/readyz") == (
            503,
            "not ready: consent store unavailable\n",
        )
        assert sample(scrape(listen), "consent_store_up") == 0
    finally:
        srv.stop()
        redis.stop()


def test_grpc_core_lines_are_json_and_the_config_error_stays_last() -> None:
    """gRPC core (absl) writes its own line to fd 2 when the port is taken; it comes out
    as a JSON record of the grpc.core logger, before the one configuration-error line."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = run_module(
            "consent_server", "--listen", f"127.0.0.1:{port}", env={**ServerProcess().env}
        )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"consent-server: configuration error: CONSENT_LISTEN='127.0.0.1:{port}'"
    )
    core = [json.loads(ln) for ln in lines[:-1] if ln.startswith("{") and '"grpc.core"' in ln]
    assert core, done.stderr
    assert core[0]["level"] == "error" and "add_port.cc" in core[0]["source"]
    assert all(ln.startswith("{") for ln in lines[:-1]), done.stderr


def test_rate_limit_rejections_are_counted(tmp_path: Path) -> None:
    from consent_server.domain.auth import new_key

    redis = RedisProcess(tmp_path / "redis").start()
    listen = f"127.0.0.1:{free_port()}"
    _, operator, _ = new_key()
    srv = ServerProcess(
        {
            **auth_env(redis, operator),
            "CONSENT_METRICS_LISTEN": listen,
            "CONSENT_RATE_LIMIT": "1",
            "CONSENT_RATE_BURST": "1",
        }
    ).start()
    try:
        codes = []
        with grpc.insecure_channel(srv.target) as ch:
            stub = pbg.ConsentServiceStub(ch)
            for _ in range(10):  # a bucket of 1 token, refilled at 1/s: most are refused
                try:
                    stub.CheckConsent(
                        pb.CheckConsentRequest(tenant_id=TENANT, recipient=WA, topic="news"),
                        metadata=(("authorization", f"Bearer {operator}"),),
                        timeout=10,
                    )
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
        refused = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert refused >= 1, codes

        def counted(text: str) -> None:
            assert sample(text, "consent_rate_limited_total") == refused
            assert (
                sample(
                    text,
                    "grpc_server_handled_total",
                    grpc_method="CheckConsent",
                    grpc_code="RESOURCE_EXHAUSTED",
                )
                == refused
            )

        settled(listen, counted)
    finally:
        srv.stop()
        redis.stop()
