"""Authentication and authorization over gRPC against real server processes.

Two server processes share one private redis-server, with CONSENT_REQUIRE_AUTH=1 and a
bootstrap operator key. Every RPC of ConsentService and of the security admin RPCs is
called with a key of each role, with keys of another tenant, and without a valid key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from consent_client import ConsentClient, ResourceExhausted
from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.auth import new_key

from .security_support import ROLES, Stubs, code_of, details, failure, md
from .support import RedisProcess, ServerProcess, auth_env

pytestmark = pytest.mark.xdist_group("security-e2e")

A, B = "t-sec-alpha", "t-sec-beta"
OK, DENIED = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
_n = itertools.count()


@dataclass
class World:
    redis: RedisProcess
    one: ServerProcess
    two: ServerProcess
    operator: str
    keys: dict[tuple[str, str], apb.CreateApiKeyResponse]
    s1: Stubs
    s2: Stubs

    def key(self, tenant: str, role: str) -> str:
        return self.keys[(tenant, role)].api_key


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    redis = RedisProcess(tmp_path_factory.mktemp("sec-redis")).start()
    _, operator, _ = new_key()
    env = {
        # No delivery worker: erasure tests look at queued messages.
        **auth_env(redis, operator),
        # Links can be minted (CreateConsentLink) without serving the HTTP edge here.
        "CONSENT_PUBLIC_URL": "https://consent.example.test",
        "CONSENT_TENANTS": f"{A},{B}",
    }
    one = ServerProcess(env).start()
    two = ServerProcess(env).start()
    ch1, ch2 = grpc.insecure_channel(one.target), grpc.insecure_channel(two.target)
    s1, s2 = Stubs(ch1), Stubs(ch2)
    keys = {
        (tenant, role): s1.create_key(operator, tenant, role, description=f"{role} of {tenant}")
        for tenant in (A, B)
        for role in ROLES
    }
    yield World(redis, one, two, operator, keys, s1, s2)
    ch1.close()
    ch2.close()
    one.stop()
    two.stop()
    redis.stop()


def wa(n: int | None = None) -> pb.Recipient:
    n = next(_n) if n is None else n
    return pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address=f"+9198765{n:05d}")


VICTIM = wa(99999)
SEND_TOPIC = "orders"


def call_for(w: World, name: str, tenant: str) -> tuple[Callable[..., Any], Any]:
    """A valid request for ``name`` in ``tenant`` (resources made with the tenant's admin)."""
    s = w.s1
    adm = w.key(tenant, "admin") if tenant in (A, B) else w.operator
    c, a = s.consent, s.admin
    if name == "CheckConsent":
        return c.CheckConsent, pb.CheckConsentRequest(
            tenant_id=tenant, recipient=VICTIM, topic="marketing"
        )
    if name == "BatchCheckConsent":
        return c.BatchCheckConsent, pb.BatchCheckConsentRequest(
            tenant_id=tenant, recipients=[VICTIM, wa()], topic="marketing"
        )
    if name == "OptOut":
        return c.OptOut, pb.OptOutRequest(tenant_id=tenant, recipient=VICTIM, topic="marketing")
    if name == "OptIn":
        return c.OptIn, pb.OptInRequest(tenant_id=tenant, recipient=VICTIM, topic="marketing")
    if name == "SendIfAllowed":
        return c.SendIfAllowed, pb.SendIfAllowedRequest(
            tenant_id=tenant, recipient=VICTIM, topic=SEND_TOPIC, message=pb.Message(text="hi")
        )
    if name == "HandleInboundMessage":
        return c.HandleInboundMessage, pb.HandleInboundMessageRequest(
            tenant_id=tenant,
            recipient=VICTIM,
            text="hello",
            provider_message_id=f"wamid.{next(_n)}",
        )
    if name == "WatchConsentEvents":
        # Server-streaming: the first message (the starting token) comes at once, or the
        # refusal does.
        def first(req: Any, **kw: Any) -> Any:
            return next(c.WatchConsentEvents(req, **kw))

        return first, pb.WatchConsentEventsRequest(tenant_id=tenant)
    if name == "ListConsentEvents":
        return c.ListConsentEvents, pb.ListConsentEventsRequest(tenant_id=tenant, recipient=VICTIM)
    if name == "GetMessageStatus":
        sent = c.SendIfAllowed(
            pb.SendIfAllowedRequest(
                tenant_id=tenant, recipient=wa(), topic="orders", message=pb.Message(text="x")
            ),
            metadata=md(adm),
        )
        return c.GetMessageStatus, pb.GetMessageStatusRequest(
            tenant_id=tenant, message_id=sent.message_id
        )
    if name == "CreateConsentLink":
        return c.CreateConsentLink, pb.CreateConsentLinkRequest(
            tenant_id=tenant, recipient=VICTIM, topic="marketing"
        )
    if name == "CreateApiKey":
        return a.CreateApiKey, apb.CreateApiKeyRequest(
            tenant_id=tenant, role=apb.API_KEY_ROLE_READER, description="made in a test"
        )
    if name == "ListApiKeys":
        return a.ListApiKeys, apb.ListApiKeysRequest(tenant_id=tenant)
    if name == "RevokeApiKey":
        victim = s.create_key(adm, tenant, "reader", description="to revoke")
        return a.RevokeApiKey, apb.RevokeApiKeyRequest(tenant_id=tenant, key_id=victim.key.key_id)
    if name == "ForgetRecipient":
        who = wa()
        c.OptOut(pb.OptOutRequest(tenant_id=tenant, recipient=who), metadata=md(adm))
        return a.ForgetRecipient, apb.ForgetRecipientRequest(tenant_id=tenant, recipient=who)
    raise AssertionError(name)


CONSENT_RPCS = [m.name for m in pb.DESCRIPTOR.services_by_name["ConsentService"].methods]
SECURITY_ADMIN_RPCS = ["CreateApiKey", "ListApiKeys", "RevokeApiKey", "ForgetRecipient"]
ALL_RPCS = CONSENT_RPCS + SECURITY_ADMIN_RPCS

# The README's roles table.
ALLOWED = {
    "admin": set(ALL_RPCS),
    "writer": {"OptOut", "OptIn", "HandleInboundMessage", "SendIfAllowed", "CheckConsent",
               "BatchCheckConsent", "ListConsentEvents", "CreateConsentLink",
               "WatchConsentEvents"},
    "sender": {"CheckConsent", "BatchCheckConsent", "SendIfAllowed", "GetMessageStatus"},
    "reader": {"CheckConsent", "BatchCheckConsent", "ListConsentEvents", "GetMessageStatus",
               "WatchConsentEvents"},
}  # fmt: skip


def test_consent_rpcs_are_all_covered() -> None:
    assert len(CONSENT_RPCS) == 10


@pytest.mark.parametrize("rpc", ALL_RPCS)
@pytest.mark.parametrize("role", list(ROLES))
def test_each_role_against_each_rpc(world: World, role: str, rpc: str) -> None:
    fn, request = call_for(world, rpc, A)
    code = code_of(fn, request, world.key(A, role))
    if rpc in ALLOWED[role]:
        assert code == OK, (role, rpc, code)
    else:
        assert code == DENIED, (role, rpc, code)
        err = failure(fn, request, world.key(A, role))
        info = details(err)["ErrorInfo"]
        assert info.reason == "ROLE_NOT_ALLOWED" and info.domain == "consent.v1"
        assert role in err.details() and rpc in err.details()  # type: ignore[attr-defined]


def snapshot(w: World) -> tuple[Any, ...]:
    """Everything of tenant A that a cross-tenant call could change."""
    adm = w.key(A, "admin")
    c, a = w.s1.consent, w.s1.admin
    history = c.ListConsentEvents(
        pb.ListConsentEventsRequest(tenant_id=A, recipient=VICTIM), metadata=md(adm)
    )
    check = c.CheckConsent(
        pb.CheckConsentRequest(tenant_id=A, recipient=VICTIM, topic="marketing"), metadata=md(adm)
    )
    keys = a.ListApiKeys(
        apb.ListApiKeysRequest(tenant_id=A, include_revoked=True), metadata=md(adm)
    )
    return (
        [(e.event_id, e.revision) for e in history.events],
        check.allowed,
        check.revision,
        sorted((k.key_id, k.revoked) for k in keys.keys),
    )


@pytest.mark.parametrize("rpc", ALL_RPCS)
def test_cross_tenant_calls_are_denied_and_change_nothing(world: World, rpc: str) -> None:
    fn, request = call_for(world, rpc, A)  # a request about tenant A ...
    before = snapshot(world)
    for role in ROLES:  # ... made with every key of tenant B
        err = failure(fn, request, world.key(B, role))
        assert err.code() == DENIED, (role, rpc, err)  # type: ignore[attr-defined]
        assert B not in err.details()  # type: ignore[attr-defined]  # nothing about tenant B
    assert snapshot(world) == before


def test_denial_does_not_reveal_whether_a_tenant_exists(world: World) -> None:
    key = world.key(B, "reader")
    texts = []
    for tenant in (A, "t-never-existed"):
        req = pb.CheckConsentRequest(tenant_id=tenant, recipient=VICTIM, topic="marketing")
        err = failure(world.s1.consent.CheckConsent, req, key)
        assert err.code() == DENIED  # type: ignore[attr-defined]
        texts.append(err.details().replace(tenant, "T"))  # type: ignore[attr-defined]
    assert len(texts) == 2 and texts[0] == texts[1]


@pytest.mark.parametrize("rpc", ALL_RPCS)
def test_every_rpc_needs_a_valid_key(world: World, rpc: str) -> None:
    fn, request = call_for(world, rpc, A)
    _, unknown, _ = new_key()
    revoked = world.s1.create_key(world.operator, A, "admin")
    world.s1.admin.RevokeApiKey(
        apb.RevokeApiKeyRequest(tenant_id=A, key_id=revoked.key.key_id), metadata=md(world.operator)
    )
    admin = world.key(A, "admin")
    tampered = admin[:-1] + ("A" if admin[-1] != "A" else "B")
    for key in (None, "", "not-a-key", unknown, revoked.api_key, tampered, admin + "x"):
        err = failure(fn, request, key, metadata=(("authorization", ""),) if key == "" else None)
        assert err.code() == UNAUTH, (rpc, err)  # type: ignore[attr-defined]
        assert details(err)["ErrorInfo"].reason == "UNAUTHENTICATED"
        text = err.details()  # type: ignore[attr-defined]
        assert admin[20:] not in text and revoked.api_key[20:] not in text


def test_health_and_reflection_stay_open(world: World) -> None:
    with grpc.insecure_channel(world.one.target) as ch:
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        reply = next(
            iter(
                stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                )
            )
        )
        names = {s.name for s in reply.list_services_response.service}
        assert {"consent.v1.ConsentService", "consent.v1.ConsentAdminService"} <= names


def test_revocation_is_immediate_in_another_process(world: World) -> None:
    made = world.s1.create_key(world.key(A, "admin"), A, "reader")
    req = pb.CheckConsentRequest(tenant_id=A, recipient=VICTIM, topic="marketing")
    assert code_of(world.s2.consent.CheckConsent, req, made.api_key) == OK  # server two
    world.s1.admin.RevokeApiKey(  # revoked through server one ...
        apb.RevokeApiKeyRequest(tenant_id=A, key_id=made.key.key_id),
        metadata=md(world.key(A, "admin")),
    )
    assert code_of(world.s2.consent.CheckConsent, req, made.api_key) == UNAUTH  # ... at once
    assert code_of(world.s1.consent.CheckConsent, req, made.api_key) == UNAUTH


def test_principal_is_the_key_id_on_every_event(world: World) -> None:
    who = wa()
    writer = world.keys[(A, "writer")]
    admin = world.keys[(A, "admin")]
    c = world.s2.consent
    c.OptOut(pb.OptOutRequest(tenant_id=A, recipient=who), metadata=md(writer.api_key))
    c.OptIn(pb.OptInRequest(tenant_id=A, recipient=who), metadata=md(admin.api_key))
    events = c.ListConsentEvents(
        pb.ListConsentEventsRequest(tenant_id=A, recipient=who), metadata=md(admin.api_key)
    ).events
    assert [e.principal for e in events] == [admin.key.key_id, writer.key.key_id]


def test_key_management_over_grpc(world: World) -> None:
    a, adm = world.s1.admin, world.key(B, "admin")
    made = world.s1.create_key(adm, B, "sender", description="billing", rate_limit_per_second=7)
    assert made.api_key.startswith(f"ck_{made.key.key_id}_") and made.key.created_by
    listed = a.ListApiKeys(apb.ListApiKeysRequest(tenant_id=B), metadata=md(adm)).keys
    mine = [k for k in listed if k.key_id == made.key.key_id]
    assert mine and mine[0].description == "billing" and mine[0].rate_limit_per_second == 7
    assert all(k.tenant_id == B for k in listed)
    assert all(made.api_key[20:] not in str(k) for k in listed)
    # A tenant admin cannot mint operator keys, and cannot revoke another tenant's key.
    assert code_of(a.CreateApiKey, apb.CreateApiKeyRequest(tenant_id="*", role=1), adm) == DENIED
    other = world.keys[(A, "reader")].key.key_id
    assert (
        code_of(a.RevokeApiKey, apb.RevokeApiKeyRequest(tenant_id=B, key_id=other), adm)
        == grpc.StatusCode.NOT_FOUND
    )
    bad = apb.CreateApiKeyRequest(tenant_id=B, role=0)
    assert code_of(a.CreateApiKey, bad, adm) == grpc.StatusCode.INVALID_ARGUMENT
    # Operators can do both.
    op = world.s1.create_key(world.operator, "*", "admin")
    assert code_of(a.ListApiKeys, apb.ListApiKeysRequest(tenant_id=A), op.api_key) == OK


def test_rate_limit_is_resource_exhausted_with_retry_info(world: World) -> None:
    slow = world.s1.create_key(world.key(A, "admin"), A, "reader", rate_limit_per_second=1)
    req = pb.CheckConsentRequest(tenant_id=A, recipient=VICTIM, topic="marketing")
    codes = [code_of(world.s1.consent.CheckConsent, req, slow.api_key) for _ in range(3)]
    assert codes[:2] == [OK, OK] and codes[2] == grpc.StatusCode.RESOURCE_EXHAUSTED
    err = failure(world.s2.consent.CheckConsent, req, slow.api_key)  # shared across processes
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    d = details(err)
    delay = d["RetryInfo"].retry_delay
    assert 0 < delay.seconds * 1000 + delay.nanos / 1e6 <= 1000
    assert d["ErrorInfo"].reason == "RATE_LIMITED"
    with ConsentClient(world.one.target, api_key=slow.api_key, retries=0) as client:
        with pytest.raises(ResourceExhausted) as exc:
            client.check_consent(A, "whatsapp", VICTIM.address, "")
        assert exc.value.retry_delay is not None and exc.value.retry_delay > 0


def test_erasure_over_grpc_keeps_the_suppression(world: World) -> None:
    adm = world.key(A, "admin")
    c, a = world.s1.consent, world.s1.admin
    who = wa()
    queued = c.SendIfAllowed(
        pb.SendIfAllowedRequest(
            tenant_id=A, recipient=who, topic="marketing", message=pb.Message(text="20% off")
        ),
        metadata=md(adm),
    )
    c.OptOut(
        pb.OptOutRequest(tenant_id=A, recipient=who, source=pb.SOURCE_BUTTON), metadata=md(adm)
    )
    gone = a.ForgetRecipient(
        apb.ForgetRecipientRequest(tenant_id=A, recipient=who), metadata=md(adm)
    )
    assert (gone.records_removed, gone.events_removed, gone.messages_cancelled) == (1, 1, 1)
    assert gone.suppressed and list(gone.suppressed_topics) == [""]
    assert gone.erasure_id.startswith("er_") and gone.recipient.address == who.address
    status = c.GetMessageStatus(
        pb.GetMessageStatusRequest(tenant_id=A, message_id=queued.message_id), metadata=md(adm)
    )
    assert status.status == pb.MESSAGE_STATUS_CANCELLED and status.recipient.address == ""
    hist = c.ListConsentEvents(
        pb.ListConsentEventsRequest(tenant_id=A, recipient=who), metadata=md(adm)
    )
    assert list(hist.events) == []
    send = pb.SendIfAllowedRequest(
        tenant_id=A, recipient=who, topic="marketing", message=pb.Message(text="again")
    )
    err = failure(c.SendIfAllowed, send, adm)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    info = details(err)["ErrorInfo"]
    assert info.reason == "RECIPIENT_OPTED_OUT" and info.metadata["source"] == "SOURCE_ERASURE"
    c.OptIn(pb.OptInRequest(tenant_id=A, recipient=who, source=pb.SOURCE_KEYWORD), metadata=md(adm))
    assert c.SendIfAllowed(send, metadata=md(adm)).message_id


def test_server_beyond_loopback_refuses_unauthenticated_calls(tmp_path_factory: Any) -> None:
    _, boot, _ = new_key()
    srv = ServerProcess(
        {"CONSENT_BOOTSTRAP_ADMIN_KEY": boot, "CONSENT_TENANTS": A}, args=["--listen", "0.0.0.0:0"]
    ).start()
    try:
        target = "127.0.0.1:" + srv.target.rsplit(":", 1)[1]
        with grpc.insecure_channel(target) as ch:
            s = Stubs(ch)
            req = pb.CheckConsentRequest(tenant_id=A, recipient=VICTIM, topic="marketing")
            assert code_of(s.consent.CheckConsent, req, None) == UNAUTH
            assert code_of(s.consent.CheckConsent, req, boot) == OK
        assert '"auth": "required"' in srv.log()
        assert "TLS is off" in srv.log()  # keys in clear text get a warning
    finally:
        assert srv.stop() == 0


def test_auth_off_beyond_loopback_needs_the_explicit_switch() -> None:
    import subprocess
    import sys

    args = [sys.executable, "-m", "consent_server", "--listen", "0.0.0.0:0", "--require-auth", "0"]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "CONSENT_ALLOW_INSECURE=1" in refused.stderr
    srv = ServerProcess({"CONSENT_ALLOW_INSECURE": "1", "CONSENT_REQUIRE_AUTH": "0"},
                        args=["--listen", "0.0.0.0:0"]).start()  # fmt: skip
    try:
        assert "WITHOUT authentication beyond loopback" in srv.log()
    finally:
        srv.stop()
