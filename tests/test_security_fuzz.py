"""Fuzz: random protobuf requests for every RPC never get INTERNAL or crash the server.

Hypothesis builds requests field by field from the descriptors (unknown enum numbers,
extreme integers and timestamps, odd Unicode, NULs, huge strings, repeated and map
fields, nested messages) plus raw random bytes, and sends them with an operator key,
a tenant key, a garbage key or none, to a server with authentication required.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_client.v1 import admin_pb2, consent_pb2
from consent_server.domain.auth import new_key

from .security_support import Stubs
from .support import ServerProcess

pytestmark = [pytest.mark.xdist_group("security-fuzz"), pytest.mark.slow]

METHODS = [
    m
    for service in (
        consent_pb2.DESCRIPTOR.services_by_name["ConsentService"],
        admin_pb2.DESCRIPTOR.services_by_name["ConsentAdminService"],
    )
    for m in service.methods
]
EXAMPLES_PER_RPC = 250
RAW_EXAMPLES_PER_RPC = 40
BAD = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}

WORDS = st.sampled_from(
    [
        "",
        "acme",
        "*",
        "+919876543210",
        "919876543210",
        "whatsapp:+14155550100",
        "(415) 555-0100",
        "jane@example.com",
        "JANE@EXAMPLE.COM ",
        "marketing",
        "Order_Updates",
        "STOP",
        "m0a" + "0" * 28,
        "ck_0123abcd0123abcd_" + "a" * 43,
        "0123abcd0123abcd",
        "\x00",
        "é" * 600,
        "x" * 5000,
        "\ud7ff\ue000\U0010ffff",
        "../../etc/passwd",
        "{cp01}",
        "*?[]\\",
    ]
)
TEXT = st.one_of(WORDS, st.text(max_size=40), st.text(min_size=200, max_size=1200))

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(-3, 1100).filter(lambda n: low <= n <= high),
        st.sampled_from([low, high, 0, 1, 10_000, 10_001, 2**31 - 1]).filter(
            lambda n: low <= n <= high
        ),
        st.integers(low, high),
    )


# Plausible values for the fields that gate deeper code, so that many requests get
# past validation into the store (mixed with anything at all).
LIKELY: dict[str, st.SearchStrategy[Any]] = {
    "tenant_id": st.just("acme"),
    "channel": st.integers(1, 5),
    "address": st.sampled_from(["+919876543210", "+14155550100", "jane@example.com"]),
    "topic": st.sampled_from(["", "marketing", "orders"]),
    "source": st.integers(0, 8),
    "role": st.integers(1, 4),
    "text": st.sampled_from(["STOP", "hello", "START"]),
}


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    likely = LIKELY.get(field.name)
    base = _scalar(field)
    return st.one_of(likely, likely, base) if likely is not None else base


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=300)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        return st.integers(-2, 12)  # includes unknown numbers
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32)
    low, high = _INT_RANGES[t]
    return _integers(low, high)


def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for f in descriptor.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            key_f = f.message_type.fields_by_name["key"]
            val_f = f.message_type.fields_by_name["value"]
            if val_f.type == FieldDescriptor.TYPE_MESSAGE:
                continue
            optional[f.name] = st.dictionaries(scalar(key_f), scalar(val_f), max_size=40)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            inner = message(f.message_type, depth + 1)
            optional[f.name] = st.lists(inner, max_size=6) if f.is_repeated else inner
        elif f.is_repeated:
            optional[f.name] = st.lists(scalar(f), max_size=6)
        else:
            optional[f.name] = scalar(f)

    def build(values: dict[str, Any]) -> Any:
        m = cls()
        for name, value in values.items():
            f = descriptor.fields_by_name[name]
            target = getattr(m, name) if f.is_repeated else None
            if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
                target.update(value)  # type: ignore[union-attr]
            elif f.type == FieldDescriptor.TYPE_MESSAGE and target is not None:
                for item in value:
                    target.add().CopyFrom(item)
            elif f.type == FieldDescriptor.TYPE_MESSAGE:
                getattr(m, name).CopyFrom(value)
            elif target is not None:
                target.extend(value)
            else:
                setattr(m, name, value)
        return m

    return st.fixed_dictionaries({}, optional=optional).map(build)


class Target:
    def __init__(self, srv: ServerProcess, operator: str, tenant_key: str) -> None:
        self.srv = srv
        self.channel = grpc.insecure_channel(srv.target)
        self.keys = [operator, operator, operator, tenant_key, None, "ck_garbage", "Bearer"]
        self.calls = 0
        self.codes: dict[str, int] = {}

    def call(self, method: Any, payload: bytes, key: str | None) -> grpc.StatusCode:
        path = f"/{method.containing_service.full_name}/{method.name}"
        metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.calls += 1
        code, text = grpc.StatusCode.OK, ""
        try:
            if method.server_streaming:
                # A stream may never end (WatchConsentEvents follows the feed): its first
                # message, or its error, is the server's answer to this request.
                stream = self.channel.unary_stream(
                    path, request_serializer=None, response_deserializer=None
                )(payload, metadata=metadata, timeout=10)
                next(stream, None)
                stream.cancel()
            else:
                fn = self.channel.unary_unary(
                    path, request_serializer=None, response_deserializer=None
                )
                fn(payload, metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            code, text = err.code(), err.details()  # type: ignore[attr-defined]
        assert code not in BAD, (path, code, text)
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        return code


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    _, operator, _ = new_key()
    srv = ServerProcess(
        {"CONSENT_REQUIRE_AUTH": "1", "CONSENT_BOOTSTRAP_ADMIN_KEY": operator}
    ).start()
    with grpc.insecure_channel(srv.target) as ch:
        tenant_key = Stubs(ch).create_key(operator, "acme", "writer").api_key
    t = Target(srv, operator, tenant_key)
    yield t
    t.channel.close()
    srv.stop()


FUZZ = settings(
    max_examples=EXAMPLES_PER_RPC,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)


def fuzz_messages(target: Target, method: Any) -> None:
    @FUZZ
    @given(request=message(method.input_type), key=st.integers(0, 6))
    def run(request: Any, key: int) -> None:
        target.call(method, request.SerializeToString(), target.keys[key])

    run()


def fuzz_bytes(target: Target, method: Any) -> None:
    @settings(FUZZ, max_examples=RAW_EXAMPLES_PER_RPC)
    @given(payload=st.binary(max_size=400), key=st.integers(0, 6))
    def run(payload: bytes, key: int) -> None:
        target.call(method, payload, target.keys[key])

    run()


def test_random_requests_for_every_rpc_never_get_internal(target: Target) -> None:
    # One test, so the totals below cannot run before the fuzzing (xdist reorders tests).
    for method in METHODS:
        fuzz_messages(target, method)
        fuzz_bytes(target, method)
    assert target.calls >= 3000, target.calls  # "a few thousand"
    assert target.srv.proc is not None and target.srv.proc.poll() is None
    time.sleep(0.2)
    assert "unexpected error" not in target.srv.log()
    # The fuzzing reached the handlers, not just the authentication in front of them.
    assert target.codes.get("OK", 0) > 50 and target.codes.get("INVALID_ARGUMENT", 0) > 300
    assert target.codes.get("UNAUTHENTICATED", 0) > 100
