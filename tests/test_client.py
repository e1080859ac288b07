"""The sync thin client (consent_client.ConsentClient): against the real server process
(embedded store and a private redis-server) and against an in-process fake for the
retry, deadline and metadata behaviour."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

import consent_client
from consent_client import (
    Backoff,
    Channel,
    ClientValidationError,
    ConsentClient,
    ConsentError,
    ConsentStatus,
    DeadlineExceeded,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    MessageState,
    NotFound,
    OptInRequired,
    OtherError,
    PermissionDenied,
    Recipient,
    RecipientOptedOut,
    ResourceExhausted,
    Scope,
    SendBlocked,
    Source,
    Template,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from consent_client._errors import error_from_status
from consent_client.v1 import admin_pb2
from consent_client.v1 import consent_pb2 as pb

from .client_fake import (
    FAST,
    WA,
    FakeConsentService,
    bad_request,
    fail,
    forward_then_unavailable,
    opted_out_info,
    restarting_server,
    rich_status,
    sleep_then_forward,
    unavailable,
)
from .support import RedisProcess, ServerProcess, free_port

WA_E164 = "+919876543210"

# Every status code with a class of its own, and two that fall back (ABORTED, UNKNOWN).
CODE_CLASSES: list[tuple[grpc.StatusCode, type[ConsentError]]] = [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
    (grpc.StatusCode.NOT_FOUND, NotFound),
    (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
    (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
    (grpc.StatusCode.UNAVAILABLE, Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
    (grpc.StatusCode.UNIMPLEMENTED, Unimplemented),
    (grpc.StatusCode.INTERNAL, InternalError),
    (grpc.StatusCode.DATA_LOSS, InternalError),
    (grpc.StatusCode.ABORTED, OtherError),
    (grpc.StatusCode.UNKNOWN, OtherError),
]


@pytest.fixture
def client(server: ServerProcess) -> Iterator[ConsentClient]:
    with ConsentClient(server.target, timeout=10) as c:
        yield c


# -- the public surface -------------------------------------------------------------------


def test_public_names_are_pinned() -> None:
    pinned = (Path(__file__).parent / "client_public_names.txt").read_text().split("\n")
    assert sorted(consent_client.__all__) == [n for n in pinned if n and not n.startswith("#")]
    for name in consent_client.__all__:
        assert hasattr(consent_client, name), name
    for name in consent_client.__all__:
        obj = getattr(consent_client, name)
        if isinstance(obj, type) and name != "__version__":
            assert obj.__module__.startswith("consent_client._"), name


def test_exception_hierarchy() -> None:
    assert issubclass(RecipientOptedOut, SendBlocked)
    assert issubclass(OptInRequired, SendBlocked)
    assert issubclass(SendBlocked, FailedPrecondition)
    for cls in dict.fromkeys(cls for _, cls in CODE_CLASSES):
        assert issubclass(cls, ConsentError)
        assert cls.__name__ in (consent_client._errors.__doc__ or "")


@pytest.mark.parametrize(("code", "cls"), CODE_CLASSES)
def test_error_class_per_code(code: grpc.StatusCode, cls: type[ConsentError]) -> None:
    err = error_from_status(rich_status(code, "boom"))
    assert type(err) is cls and err.code is code and err.message == "boom"
    assert err.reason == "" and dict(err.metadata) == {}


def test_send_blocked_details_parsed() -> None:
    err = error_from_status(
        rich_status(grpc.StatusCode.FAILED_PRECONDITION, "opted out", opted_out_info())
    )
    assert isinstance(err, RecipientOptedOut)
    assert err.reason == "RECIPIENT_OPTED_OUT"
    assert err.topic == "marketing" and err.scope is Scope.ALL
    assert err.since == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert err.source is Source.KEYWORD and err.channel is Channel.WHATSAPP
    bad = error_from_status(
        rich_status(grpc.StatusCode.INVALID_ARGUMENT, "bad", *bad_request("topic", "too long"))
    )
    assert isinstance(bad, InvalidArgument)
    assert bad.field_violations == [("topic", "too long")] and bad.fields == ["topic"]


def test_errors_pickle() -> None:
    import pickle

    err = error_from_status(
        rich_status(grpc.StatusCode.FAILED_PRECONDITION, "opted out", opted_out_info())
    )
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is RecipientOptedOut and copy.since == err.since
    assert copy.code is err.code and copy.details == err.details


def test_friendly_values() -> None:
    assert Recipient("WhatsApp", "x").channel is Channel.WHATSAPP
    assert Recipient("CHANNEL_SMS", "x").channel is Channel.SMS
    assert Recipient(pb.CHANNEL_EMAIL, "x").channel is Channel.EMAIL
    assert Recipient(Channel.VOICE, "x").to_pb().channel == pb.CHANNEL_VOICE
    assert str(Channel.RCS) == "rcs"
    with pytest.raises(ValueError, match="unknown channel 'pigeon'"):
        Recipient("pigeon", "x")
    with pytest.raises(ValueError, match="unknown channel number"):
        Recipient(42, "x")


def test_client_side_argument_checks(fake: FakeConsentService) -> None:
    with ConsentClient(fake.target) as c:
        with pytest.raises(ValueError, match="exactly one"):
            c.send_if_allowed("t", "sms", "+15550100", "marketing")
        with pytest.raises(ValueError, match="exactly one"):
            c.send_if_allowed("t", "sms", "+15550100", "m", "hi", template=Template("x"))
        with pytest.raises(ValueError, match="timezone-aware"):
            c.opt_out("t", "sms", "+15550100", occurred_at=datetime(2024, 1, 1))
        with pytest.raises(ValueError, match="unknown source"):
            c.opt_out("t", "sms", "+15550100", source="carrier-pigeon")
    with pytest.raises(ValueError, match="timeout"):
        ConsentClient(fake.target, timeout=0)
    with pytest.raises(ValueError, match="attempt_timeout"):
        ConsentClient(fake.target, attempt_timeout=-1)
    assert fake.calls == []


def test_local_refusals_are_in_the_consent_error_tree(fake: FakeConsentService) -> None:
    with ConsentClient(fake.target) as c:
        refusals = [
            lambda: c.check_consent("t", "sms", "", "marketing"),
            lambda: c.check_consent("t", "sms", "+15550100", "m", at=datetime(2024, 1, 1)),
            lambda: c.check_consent("t", "sms", "+15550100", "m", at="2024-01-01"),  # type: ignore[arg-type]
            lambda: c.opt_out("t", 3.5, "+15550100"),  # type: ignore[arg-type]
            lambda: c.opt_in("t", "pigeon", "+15550100"),
            lambda: c.batch_check_consent("t", ["+15550100"], "m"),  # type: ignore[list-item]
            lambda: c.send_if_allowed("t", "sms", "+15550100", "marketing"),
            lambda: c.update_tenant_settings("t", {"no_such_field": 1}),
            lambda: c.set_delivery_provider("t", "smtp"),
            lambda: c.check_consent("t", "sms", "+15550100", "m", timeout=-1),
        ]
        for refuse in refusals:
            with pytest.raises(ClientValidationError) as refused:
                refuse()
            err = refused.value
            assert isinstance(err, ConsentError) and isinstance(err, InvalidArgument)
            assert isinstance(err, ValueError)
            assert err.code is grpc.StatusCode.INVALID_ARGUMENT and err.message
    with pytest.raises(ClientValidationError) as empty:
        ConsentClient(fake.target).check_consent("t", "sms", " ", "marketing")
    assert empty.value.fields == ["recipient.address"]
    with pytest.raises(ClientValidationError) as naive:
        ConsentClient(fake.target).opt_out("t", "sms", "+1555", occurred_at=datetime(2024, 1, 1))
    assert naive.value.fields == ["occurred_at"]
    with pytest.raises(ClientValidationError):
        ConsentClient(fake.target, tls_cert=b"x")
    assert fake.calls == []


# -- tenant-bound views -------------------------------------------------------------------


def test_for_tenant_binds_the_tenant(proxy: FakeConsentService, tenant: str) -> None:
    with ConsentClient(proxy.target, timeout=10) as c:
        acme = c.for_tenant(tenant)
        assert acme.tenant == tenant and acme.client is c
        out = acme.opt_out("sms", "+1 202 555 0100", "marketing", source="keyword")
        assert out.status is ConsentStatus.OPTED_OUT
        assert not acme.check_consent("sms", "+1 202 555 0100", "marketing").allowed
        assert [e.event_id for e in acme.iter_consent_events("sms", "+1 202 555 0100")] == [
            out.event_id
        ]
        # The client itself still takes the tenant explicitly: an explicit tenant wins.
        other = c.for_tenant("other-tenant")
        assert other.tenant == "other-tenant"
        assert not c.check_consent(tenant, "sms", "+1 202 555 0100", "marketing").allowed
    sent = [s.request.tenant_id for s in proxy.calls]
    assert sent == [tenant, tenant, tenant, tenant]


def test_a_missing_tenant_is_refused_locally(fake: FakeConsentService) -> None:
    with ConsentClient(fake.target) as c:
        for bad in ("", "  ", None):
            with pytest.raises(ClientValidationError, match="tenant is required"):
                c.for_tenant(bad)  # type: ignore[arg-type]
        with pytest.raises(ClientValidationError) as missing:
            c.check_consent("", "sms", "+15550100", "marketing")
        assert missing.value.fields == ["tenant_id"]
        with pytest.raises(ClientValidationError):
            list(c.export_consent(""))
        with pytest.raises(ClientValidationError):
            c.import_consent(" ", [])
    assert fake.calls == []


# -- against the real server --------------------------------------------------------------


def test_seed_scenario(client: ConsentClient, tenant: str) -> None:
    first = client.send_if_allowed(tenant, "whatsapp", WA, "marketing", "20% off today")
    assert first.message_id and not first.duplicate
    assert first.recipient == Recipient("whatsapp", WA_E164)
    assert first.accepted_at.tzinfo is not None and first.idempotency_key.startswith("idem_")
    assert isinstance(first.raw, pb.SendIfAllowedResponse)

    out = client.opt_out(tenant, "whatsapp", WA, source="button", evidence="wamid.1")
    assert out.applied and out.changed and out.status is ConsentStatus.OPTED_OUT
    assert out.event_id.startswith("ev_") and not out.duplicate and out.topic == ""

    decision = client.check_consent(tenant, "whatsapp", WA, "marketing")
    assert not decision.allowed and decision.status is ConsentStatus.OPTED_OUT
    assert decision.decided_by is Scope.ALL and decision.reason == "RECIPIENT_OPTED_OUT"
    assert decision.source is Source.BUTTON and decision.revision == out.revision
    assert decision.since is not None and decision.since.tzinfo is not None
    assert decision.recipient.address == WA_E164 and decision.topic == "marketing"

    with pytest.raises(RecipientOptedOut) as blocked:
        client.send_if_allowed(tenant, "whatsapp", WA, "marketing", "20% off today")
    err = blocked.value
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION and err.reason == "RECIPIENT_OPTED_OUT"
    assert err.scope is Scope.ALL and err.source is Source.BUTTON and err.topic == "marketing"
    assert err.channel is Channel.WHATSAPP
    assert err.since is not None and abs(err.since - decision.since) < timedelta(seconds=1)
    assert "+91987*****10" in err.message and "9876543210" not in err.message
    assert isinstance(err.__cause__, grpc.RpcError)

    back = client.opt_in(tenant, "whatsapp", WA, source="keyword", evidence="START")
    assert back.changed and back.revision > out.revision
    assert back.status is ConsentStatus.OPTED_IN
    assert client.check_consent(tenant, "whatsapp", WA, "marketing").allowed
    assert client.send_if_allowed(tenant, "whatsapp", WA, "marketing", "welcome back").message_id


def test_invalid_argument_names_the_field(client: ConsentClient, tenant: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        client.check_consent("Not A Tenant!", "sms", "+15550100", "marketing")
    assert "tenant_id" in bad.value.fields
    assert bad.value.reason == "INVALID_REQUEST"

    # An opt-in may not be post-dated (it could outrank a later opt-out); an opt-out
    # from the future is recorded at the receive time instead (tests/test_event_times.py).
    future = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(InvalidArgument) as late:
        client.opt_in(tenant, "sms", "+1 202 555 0100", occurred_at=future)
    assert "occurred_at" in late.value.fields
    # Bad input changes nothing.
    assert list(client.iter_consent_events(tenant, "sms", "+1 202 555 0100")) == []


def test_send_shapes_and_message_status(client: ConsentClient, tenant: str) -> None:
    tpl = client.send_if_allowed(
        tenant,
        "whatsapp",
        WA,
        "order_updates",
        template=Template("order_shipped", "en_US", ("A-17",)),
        not_after=datetime.now(UTC) + timedelta(hours=1),
        metadata={"order": "A-17"},
    )
    assert tpl.message_id
    status = client.get_message_status(tenant, tpl.message_id)
    assert status.message_id == tpl.message_id and status.topic == "order_updates"
    assert status.status in (MessageState.ACCEPTED, MessageState.DELIVERED)
    assert status.recipient == Recipient("whatsapp", WA_E164)
    assert status.accepted_at.tzinfo is not None
    with pytest.raises(NotFound):
        client.get_message_status(tenant, "msg_does_not_exist")
    with pytest.raises(NotFound):
        client.get_message_status(tenant + "x", tpl.message_id)


def test_opt_in_required(redis_proc: RedisProcess, tenant: str) -> None:
    # This case writes the settings straight into a private redis-server and runs its own
    # server process on it.
    import redis.asyncio as aioredis

    from consent_server.domain.model import Policy, TenantSettings
    from consent_server.store.repository import RedisConsentStore

    from .support import create_tenants

    async def require_opt_in() -> None:
        store = RedisConsentStore(aioredis.Redis.from_url(redis_proc.url))
        try:
            # The worker's redis-server is shared: a store test before this one may have
            # left partition keys without ca:meta, which a server refuses to start on
            # (the store fixture flushes it the same way).
            await store.client.flushdb()
            await create_tenants(store, (tenant,))
            await store.put_tenant_settings(
                tenant, TenantSettings(default_policy=Policy.REQUIRE_OPT_IN)
            )
        finally:
            await store.aclose()

    asyncio.run(require_opt_in())
    srv = ServerProcess({"CONSENT_REDIS_URL": redis_proc.url}).start()
    try:
        with ConsentClient(srv.target, timeout=10) as client:
            _check_opt_in_required(client, tenant)
    finally:
        assert srv.stop() == 0


def _check_opt_in_required(client: ConsentClient, tenant: str) -> None:
    decision = client.check_consent(tenant, "sms", "+1 202 555 0100", "marketing")
    assert not decision.allowed and decision.decided_by is Scope.DEFAULT_POLICY
    assert decision.reason == "OPT_IN_REQUIRED" and decision.since is None
    assert decision.source is None and decision.status is ConsentStatus.NO_RECORD
    with pytest.raises(OptInRequired) as blocked:
        client.send_if_allowed(tenant, "sms", "+1 202 555 0100", "marketing", "hello")
    assert blocked.value.scope is Scope.DEFAULT_POLICY and blocked.value.since is None
    assert blocked.value.topic == "marketing" and blocked.value.channel is Channel.SMS
    client.opt_in(tenant, "sms", "+1 202 555 0100", "marketing", source="link")
    assert client.send_if_allowed(tenant, "sms", "+1 202 555 0100", "marketing", "hi").message_id


def test_batch_in_order_with_item_error(client: ConsentClient, tenant: str) -> None:
    client.opt_out(tenant, "email", "B@Example.com", "marketing")
    items = client.batch_check_consent(
        tenant,
        [
            ("whatsapp", WA),
            ("sms", "not-a-number"),
            Recipient("email", " B@Example.com "),
            pb.Recipient(channel=pb.CHANNEL_SMS, address="+1 202 555 0100"),
        ],
        topic="marketing",
    )
    assert [i.index for i in items] == [0, 1, 2, 3]
    assert [i.ok for i in items] == [True, False, True, True]
    assert items[0].decision is not None and items[0].decision.allowed
    assert items[0].decision.recipient.address == WA_E164
    err = items[1].error
    assert isinstance(err, InvalidArgument) and items[1].decision is None
    assert err.fields == ["recipients[1].address"]
    assert items[2].decision is not None and not items[2].decision.allowed
    assert items[2].decision.recipient.address == "b@example.com"
    assert items[2].decision.decided_by is Scope.TOPIC
    assert items[3].decision is not None and items[3].decision.allowed


def test_history_paging(client: ConsentClient, tenant: str) -> None:
    done = [
        client.opt_out(tenant, "sms", "+1 202 555 0100", "marketing", source="keyword"),
        client.opt_in(tenant, "sms", "+1 202 555 0100", "marketing", evidence="form-7"),
        client.opt_out(tenant, "sms", "+1 202 555 0100"),
        client.opt_in(tenant, "sms", "+1 202 555 0100", event_id="my-event-1"),
        client.opt_out(tenant, "sms", "+1 202 555 0100", "order_updates", source="admin"),
    ]
    page = client.list_consent_events(tenant, "sms", "+1 202 555 0100", page_size=2)
    assert len(page.events) == 2 and page.next_page_token
    assert page.recipient == Recipient("sms", "+12025550100")

    events = list(client.iter_consent_events(tenant, "sms", "+12025550100", page_size=2))
    assert [e.event_id for e in events] == [d.event_id for d in reversed(done)]
    assert [e.revision for e in events] == sorted((e.revision for e in events), reverse=True)
    assert events[1].event_id == "my-event-1"
    assert events[0].source is Source.ADMIN and events[0].topic == "order_updates"
    assert events[3].evidence == "form-7" and events[4].source is Source.KEYWORD
    assert all(e.applied and e.occurred_at.tzinfo is not None for e in events)
    assert events[0].principal
    assert [e.action.value for e in events] == ["opt_out", "opt_in", "opt_out", "opt_in", "opt_out"]


def test_idempotent_send_replay(client: ConsentClient, tenant: str) -> None:
    a = client.send_if_allowed(
        tenant, "sms", "+1 202 555 0100", "otp", "1234", idempotency_key="k1"
    )
    b = client.send_if_allowed(
        tenant, "sms", "+1 202 555 0100", "otp", "1234", idempotency_key="k1"
    )
    assert not a.duplicate and b.duplicate and a.message_id == b.message_id
    assert a.idempotency_key == b.idempotency_key == "k1"
    c = client.send_if_allowed(tenant, "sms", "+1 202 555 0100", "otp", "1234")
    d = client.send_if_allowed(tenant, "sms", "+1 202 555 0100", "otp", "1234")
    assert c.message_id != d.message_id and c.idempotency_key != d.idempotency_key
    e = client.send_if_allowed(
        tenant, "sms", "+1 202 555 0100", "otp", "1234", auto_idempotency_key=False
    )
    assert e.idempotency_key == "" and not e.duplicate


def test_opt_out_replay_is_duplicate(client: ConsentClient, tenant: str) -> None:
    a = client.opt_out(tenant, "sms", "+1 202 555 0100", event_id="wh-1")
    b = client.opt_out(tenant, "sms", "+1 202 555 0100", event_id="wh-1")
    assert b.duplicate and b.revision == a.revision and b.event_id == "wh-1"
    assert len(list(client.iter_consent_events(tenant, "sms", "+1 202 555 0100"))) == 1


def test_handle_inbound_message(client: ConsentClient, tenant: str) -> None:
    result = client.handle_inbound_message(
        tenant, "whatsapp", WA, text="STOP", provider_message_id="wamid.in.1"
    )
    assert result.action.value == "opted_out" and result.matched_keyword == "stop"
    assert result.reply_message_id and "START" in result.reply_text
    assert not client.check_consent(tenant, "whatsapp", WA, "marketing").allowed
    again = client.handle_inbound_message(
        tenant, "whatsapp", WA, text="STOP", provider_message_id="wamid.in.1"
    )
    assert again == result


# -- retries ------------------------------------------------------------------------------


def test_retried_opt_out_is_applied_once(
    proxy: FakeConsentService, server: ServerProcess, tenant: str
) -> None:
    proxy.on("OptOut", forward_then_unavailable())
    with ConsentClient(proxy.target, backoff=FAST) as c:
        result = c.opt_out(tenant, "sms", "+1 202 555 0100", "marketing")
    calls = proxy.seen("OptOut")
    assert len(calls) == 2
    assert calls[0].request.event_id == calls[1].request.event_id == result.event_id
    assert result.duplicate  # the first attempt was applied; the retry replayed it
    with ConsentClient(server.target) as direct:
        events = list(direct.iter_consent_events(tenant, "sms", "+1 202 555 0100"))
    assert [e.event_id for e in events] == [result.event_id]


def test_retried_send_is_queued_once(proxy: FakeConsentService, tenant: str) -> None:
    proxy.on("SendIfAllowed", forward_then_unavailable())
    with ConsentClient(proxy.target, backoff=FAST) as c:
        result = c.send_if_allowed(tenant, "sms", "+1 202 555 0100", "otp", "1234")
        calls = proxy.seen("SendIfAllowed")
        assert len(calls) == 2
        assert calls[0].request.idempotency_key == calls[1].request.idempotency_key
        assert calls[0].request.idempotency_key == result.idempotency_key
        assert result.duplicate
        again = c.send_if_allowed(
            tenant, "sms", "+1 202 555 0100", "otp", "1234", idempotency_key=result.idempotency_key
        )
        assert again.duplicate and again.message_id == result.message_id


def test_send_without_key_is_not_retried(fake: FakeConsentService) -> None:
    fake.on("SendIfAllowed", unavailable())
    with ConsentClient(fake.target, backoff=FAST) as c, pytest.raises(Unavailable):
        c.send_if_allowed("t", "sms", "+15550100", "otp", "1", auto_idempotency_key=False)
    assert len(fake.seen("SendIfAllowed")) == 1
    assert fake.seen("SendIfAllowed")[0].request.idempotency_key == ""


def test_failed_precondition_and_invalid_argument_are_not_retried(
    fake: FakeConsentService,
) -> None:
    fake.on(
        "SendIfAllowed",
        fail(grpc.StatusCode.FAILED_PRECONDITION, "opted out", opted_out_info()),
    )
    fake.on(
        "CheckConsent", fail(grpc.StatusCode.INVALID_ARGUMENT, "bad", *bad_request("topic", "x"))
    )
    with ConsentClient(fake.target, backoff=FAST, retries=5) as c:
        with pytest.raises(RecipientOptedOut) as blocked:
            c.send_if_allowed("t", "whatsapp", WA, "marketing", "hi")
        with pytest.raises(InvalidArgument) as bad:
            c.check_consent("t", "whatsapp", WA, "marketing")
    assert blocked.value.source is Source.KEYWORD
    assert bad.value.field_violations == [("topic", "x")]
    assert len(fake.seen("SendIfAllowed")) == 1 and len(fake.seen("CheckConsent")) == 1


def test_unavailable_retries_run_out(fake: FakeConsentService) -> None:
    fake.on("CheckConsent", *[unavailable()] * 3)
    with ConsentClient(fake.target, backoff=FAST, retries=2) as c, pytest.raises(Unavailable) as e:
        c.check_consent("t", "sms", "+15550100", "marketing")
    assert len(fake.seen("CheckConsent")) == 3
    assert e.value.reason == "STORE_UNAVAILABLE"


def test_retry_info_is_honoured(proxy: FakeConsentService, tenant: str) -> None:
    proxy.on("CheckConsent", unavailable(retry_after=0.3))
    with ConsentClient(proxy.target, backoff=FAST) as c:
        start = time.monotonic()
        assert c.check_consent(tenant, "sms", "+1 202 555 0100", "marketing").allowed
        assert time.monotonic() - start >= 0.3
    assert len(proxy.seen("CheckConsent")) == 2


def test_reads_retry_deadline_exceeded(proxy: FakeConsentService, tenant: str) -> None:
    proxy.on("CheckConsent", sleep_then_forward(1.0))
    with ConsentClient(proxy.target, backoff=FAST, timeout=5, attempt_timeout=0.3) as c:
        assert c.check_consent(tenant, "sms", "+1 202 555 0100", "marketing").allowed
    assert len(proxy.seen("CheckConsent")) == 2


def test_timeout_bounds_the_whole_call_not_each_attempt(fake: FakeConsentService) -> None:
    # Each attempt answers late; a per-attempt timeout would take 4 x 0.4 s.
    fake.on("CheckConsent", *[sleep_then_forward(1.0)] * 4)
    with ConsentClient(fake.target, backoff=FAST, timeout=0.4, retries=3) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as late:
            c.check_consent("t", "sms", "+15550100", "marketing")
        took = time.monotonic() - start
    assert 0.35 < took < 0.8, took
    assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(fake.seen("CheckConsent")) == 1


def test_attempt_timeout_retries_within_the_overall_deadline(fake: FakeConsentService) -> None:
    fake.on("CheckConsent", *[sleep_then_forward(1.0)] * 10)
    with ConsentClient(
        fake.target, backoff=FAST, timeout=0.7, attempt_timeout=0.2, retries=10
    ) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            c.check_consent("t", "sms", "+15550100", "marketing")
        took = time.monotonic() - start
    assert took < 1.1, took
    assert 2 <= len(fake.seen("CheckConsent")) <= 4


def test_backoff_that_would_pass_the_deadline_is_not_slept(fake: FakeConsentService) -> None:
    # The server asks for 5 s; the call has 1 s: the UNAVAILABLE is raised at once.
    fake.on("CheckConsent", unavailable(retry_after=5.0))
    with ConsentClient(fake.target, timeout=1.0, retries=3) as c:
        start = time.monotonic()
        with pytest.raises(Unavailable) as down:
            c.check_consent("t", "sms", "+15550100", "marketing")
        assert time.monotonic() - start < 0.5
    assert down.value.retry_delay == pytest.approx(5.0)
    assert len(fake.seen("CheckConsent")) == 1


def test_per_call_timeout_is_overall_too(fake: FakeConsentService) -> None:
    fake.on("CheckConsent", *[unavailable()] * 50)
    slow = Backoff(initial=0.15, maximum=0.15)
    with ConsentClient(fake.target, backoff=slow, timeout=30, retries=50) as c:
        start = time.monotonic()
        with pytest.raises(Unavailable):
            c.check_consent("t", "sms", "+15550100", "marketing", timeout=0.5)
        assert time.monotonic() - start < 0.8
    assert 3 <= len(fake.seen("CheckConsent")) <= 8  # 50 allowed; the 0.5 s ran out


def test_writes_do_not_retry_deadline_exceeded(fake: FakeConsentService) -> None:
    fake.on("OptOut", sleep_then_forward(2.0))
    with ConsentClient(fake.target, backoff=FAST, timeout=0.3) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded) as late:
            c.opt_out("t", "sms", "+15550100")
        assert time.monotonic() - start < 1.5
    assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(fake.seen("OptOut")) == 1


def test_default_deadline_is_applied(fake: FakeConsentService) -> None:
    fake.on("GetMessageStatus", sleep_then_forward(3.0))
    fake.on("CheckConsent", sleep_then_forward(3.0))
    with ConsentClient(fake.target, timeout=0.3, retries=0) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            c.get_message_status("t", "msg_1")
        assert time.monotonic() - start < 1.5
    with ConsentClient(fake.target, timeout=30, retries=0) as c:
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            c.check_consent("t", "sms", "+15550100", "marketing", timeout=0.3)  # per-call override
        assert time.monotonic() - start < 1.5


def test_api_key_is_sent_on_every_call(proxy: FakeConsentService, tenant: str) -> None:
    proxy.on("OptIn", unavailable())
    with ConsentClient(proxy.target, api_key="ck_test_123", backoff=FAST) as c:
        c.opt_in(tenant, "sms", "+1 202 555 0100")
        c.check_consent(tenant, "sms", "+1 202 555 0100", "marketing")
    assert len(proxy.calls) == 3
    assert all(s.metadata.get("authorization") == "Bearer ck_test_123" for s in proxy.calls)
    with ConsentClient(proxy.target) as anonymous:
        anonymous.check_consent(tenant, "sms", "+1 202 555 0100", "marketing")
    assert "authorization" not in proxy.calls[-1].metadata


def test_unavailable_when_nothing_listens() -> None:
    target = f"127.0.0.1:{free_port()}"
    with ConsentClient(target, timeout=2, retries=2, backoff=FAST) as c:
        start = time.monotonic()
        with pytest.raises(Unavailable) as down:
            c.check_consent("t", "sms", "+15550100", "marketing")
        assert time.monotonic() - start < 5
    assert down.value.code is grpc.StatusCode.UNAVAILABLE


def test_caller_owned_channel_is_not_closed(server: ServerProcess, tenant: str) -> None:
    channel = grpc.insecure_channel(server.target)
    with ConsentClient("ignored", channel=channel) as c:
        c.check_consent(tenant, "sms", "+1 202 555 0100", "marketing")
    with ConsentClient("ignored", channel=channel) as c:
        assert c.check_consent(tenant, "sms", "+1 202 555 0100", "marketing").allowed
    channel.close()


def test_tenant_settings_round_trip(client: ConsentClient, tenant: str) -> None:
    current = client.get_tenant_settings(tenant)
    current.keyword_sets.add(language="es", kind=admin_pb2.KEYWORD_KIND_OPT_OUT, keywords=["BAJA"])
    new = client.update_tenant_settings(tenant, current, ["keyword_sets"])
    assert ["baja"] in [list(s.keywords) for s in new.keyword_sets]
    assert (
        client.handle_inbound_message(
            tenant, "whatsapp", WA, text="Baja", provider_message_id="wamid.baja"
        ).matched_keyword
        == "baja"
    )
    with pytest.raises(ValueError, match="update_mask"):
        client.update_tenant_settings(tenant, current)
    with pytest.raises(InvalidArgument) as err:
        client.update_tenant_settings(
            tenant,
            {"templates": [{"language": "es", "opt_out_confirmation": "Responde ALTA"}]},
        )
    assert err.value.fields == ["settings.templates[0].opt_out_confirmation"]


def test_a_read_retried_while_the_server_restarts_succeeds_once_it_is_back() -> None:
    # gRPC's default reconnect backoff (1 s) made every retry fail at once while the
    # restarted server was already back: the read failed with Unavailable.
    with (
        restarting_server() as (target, stop, backoff),
        ConsentClient(target, backoff=backoff, retries=3) as c,
    ):
        assert c.check_consent("t", "sms", "+14155550100", "marketing").allowed
        stop()
        assert c.check_consent("t", "sms", "+14155550100", "marketing").allowed
