"""OpenTelemetry tracing: off without OTEL_* variables; with them, the real server
process exports a span per gRPC call named by its method, with a Redis child span, and
the HTTP edge's spans are named by route (never a link token)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pbg
from consent_server import tracing
from consent_server.config import ConfigError

from .support import RedisProcess, ServerProcess


def test_no_otel_variables_sets_nothing_up() -> None:
    """In a fresh interpreter: setup() declines; no tracer provider, no instrumentation."""
    code = (
        "import sys, consent_server.app, consent_server.tracing as t\n"
        "assert t.setup('consent-server', {}) is False\n"
        "assert not t.enabled() and t.grpc_interceptors() == [] and t.http_middlewares() == []\n"
        "from opentelemetry import trace\n"
        "assert type(trace.get_tracer_provider()).__name__ == 'ProxyTracerProvider'\n"
        # redis-py imports parts of the SDK for its own (off) observability; what
        # matters is that no instrumentation is loaded and no provider is set.
        "loaded = [m for m in sys.modules if m.startswith('opentelemetry.instrumentation')]\n"
        "assert not loaded, loaded\n"
        "assert 'opentelemetry.sdk.trace' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
        ({"OTEL_METRICS_EXPORTER": "otlp"}, []),  # metrics are Prometheus's
    ],
)
def test_which_variables_turn_tracing_on(env: dict[str, str], names: list[str]) -> None:
    assert tracing.exporter_names(env) == names


def test_an_exporter_we_cannot_serve_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracing._exporter("zipkin", {})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/protobuf'"):
        tracing._exporter("otlp", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})


def spans_in(text: str) -> list[dict[str, Any]]:
    """The console exporter's spans (indented JSON objects) among the JSON log lines."""
    decoder = json.JSONDecoder()
    spans, i = [], 0
    while True:
        i = text.find("{", i)
        if i < 0:
            return spans
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            i += 1
            continue
        if isinstance(obj, dict) and "context" in obj and "name" in obj:
            spans.append(obj)
        i = end


def test_spans_of_a_check_consent_with_a_redis_child(tmp_path: Path) -> None:
    redis = RedisProcess(tmp_path / "redis").start()
    srv = ServerProcess(
        {
            "CONSENT_REDIS_URL": redis.url,
            "CONSENT_DELIVERY": "off",
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "consent-test",
        },
        http=True,
    ).start()
    try:
        assert '"tracing on"' in srv.log()
        with grpc.insecure_channel(srv.target) as ch:
            pbg.ConsentServiceStub(ch).CheckConsent(
                pb.CheckConsentRequest(
                    tenant_id="acme",
                    recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550177"),
                    topic="marketing",
                ),
                timeout=10,
            )
        token = "not-a-real-token-AAAA"
        assert httpx.get(f"{srv.http_url}/u/{token}", timeout=10).status_code == 400
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            spans = spans_in(srv.log())
            rpc = [s for s in spans if s["name"] == "/consent.v1.ConsentService/CheckConsent"]
            http_spans = [s for s in spans if s["name"] == "GET /{kind}/{token}"]
            if rpc and http_spans:
                break
            time.sleep(0.1)
        assert rpc and http_spans, srv.log()[-3000:]
        [call] = rpc
        assert call["kind"] == "SpanKind.SERVER"
        assert call["resource"]["attributes"]["service.name"] == "consent-test"
        assert call["attributes"]["rpc.method"] == "CheckConsent"
        children = [s for s in spans if s["parent_id"] == call["context"]["span_id"]]
        redis_children = [s for s in children if s["attributes"].get("db.system") == "redis"]
        assert redis_children, [s["name"] for s in children]
        assert all(s["context"]["trace_id"] == call["context"]["trace_id"] for s in children)
        # Command arguments (recipient keys and addresses) are never in a span.
        assert "14155550177" not in srv.log()
        assert http_spans[0]["attributes"]["http.response.status_code"] == 400
        assert token not in json.dumps(http_spans)
    finally:
        srv.stop()
        redis.stop()
