"""Outbound calls never reach an internal address unless the operator allowed it.

A local HTTP listener on 127.0.0.1 plays the internal service a tenant admin would
like to read (a metadata endpoint, an admin port): delivery pointed at it in any
spelling - literal, decimal-encoded, IPv4-mapped IPv6, a name resolving to it, a
redirect from an allowed host - must never contact it (its requests are counted) and
must say the destination was refused, without echoing what any destination answered.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_server.delivery.worker import DeliveryWorker, WorkerOptions
from consent_server.domain.delivery import (
    ALL_CHANNELS,
    DeliveryAdmin,
    ProviderConfig,
    ProviderKind,
    RawProvider,
)
from consent_server.domain.errors import InvalidArgument
from consent_server.domain.model import Channel, MessageState
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawRecipient
from consent_server.store.outbox import DeliveryRepository
from consent_server.store.providers import RedisProviderSettings
from consent_server.store.repository import RedisConsentStore

from .fake_provider import FakeProvider, fake_provider
from .security_support import bad_fields
from .support import RedisProcess, ServerProcess, send_text

TENANT = "acme"
PHONE = "+919876543210"
SECRET = "whsec_0123456789abcdef"
FINAL = {MessageState.DELIVERED, MessageState.CANCELLED, MessageState.FAILED, MessageState.EXPIRED}


@pytest.fixture
def internal() -> Iterator[FakeProvider]:
    """The would-be internal service."""
    with fake_provider() as f:
        yield f


@pytest.fixture
def allowed() -> Iterator[FakeProvider]:
    """A destination the operator allowed (by host and port)."""
    with fake_provider() as f:
        yield f


def internal_spellings(port: int) -> list[str]:
    """One internal listener, written the ways an attacker would."""
    return [
        f"http://127.0.0.1:{port}/hook",
        f"http://2130706433:{port}/hook",  # decimal
        f"http://0x7f000001:{port}/hook",  # hex
        f"http://0177.0.0.1:{port}/hook",  # octal
        f"http://127.1:{port}/hook",  # short form
        f"http://[::ffff:127.0.0.1]:{port}/hook",  # IPv4-mapped IPv6
        f"http://localhost:{port}/hook",  # a name that resolves to loopback
        f"http://LOCALHOST.:{port}/hook",
    ]


async def put_raw_provider(store: RedisConsentStore, url: str) -> None:
    """Store a provider without the admin's validation, as a configuration saved before
    the guard existed would be: the connect-time check must still refuse it."""
    await RedisProviderSettings(store.client).put_provider(
        TENANT, ALL_CHANNELS, ProviderConfig(ProviderKind.WEBHOOK, url=url, secret=SECRET)
    )


async def send(store: RedisConsentStore) -> str:
    return await send_text(
        ConsentAuthority(store),
        TENANT,
        RawRecipient(Channel.WHATSAPP, PHONE),
        "order_updates",
        "hello",
    )


async def settle(worker: DeliveryWorker, store: RedisConsentStore, mid: str) -> str:
    """Run the worker until the message is final; its last_error."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await worker.run_once()
        status = await store.message_status(TENANT, mid)
        if status is not None and status.state in FINAL:
            assert status.state is MessageState.FAILED, status
            return status.last_error
        await asyncio.sleep(0.02)
    raise AssertionError("message never became final")


def worker_for(store: RedisConsentStore, **kw: object) -> DeliveryWorker:
    options = WorkerOptions(
        visibility_timeout_s=0.3, backoff_base_ms=20.0, backoff_max_ms=40.0, max_attempts=2
    )
    return DeliveryWorker(
        store,
        DeliveryRepository(store.client),
        options,
        providers=RedisProviderSettings(store.client),
        **kw,  # type: ignore[arg-type]
    )


async def send_and_settle(store: RedisConsentStore, **kw: object) -> str:
    """Send one message and run a worker (``worker_for(store, **kw)``) until it fails;
    its last_error."""
    mid = await send(store)
    worker = worker_for(store, **kw)
    try:
        return await settle(worker, store, mid)
    finally:
        await worker.stop(0)


# -- the connect-time guard, through the real worker ------------------------------------


@pytest.mark.parametrize("spelling", range(8))
async def test_worker_never_contacts_an_internal_destination(
    store: RedisConsentStore, internal: FakeProvider, spelling: int
) -> None:
    url = internal_spellings(internal.port)[spelling]
    await put_raw_provider(store, url)
    error = await send_and_settle(store)
    assert internal.requests == []
    assert "destination refused" in error, error


async def test_redirect_from_an_allowed_host_is_not_followed(
    store: RedisConsentStore, internal: FakeProvider, allowed: FakeProvider
) -> None:
    await put_raw_provider(store, allowed.url + "/hook")
    allowed.answer((307, {}, {"Location": internal.url + "/hook"}))
    error = await send_and_settle(store, egress=allowed.policy)
    assert len(allowed.requests) == 1
    assert internal.requests == []
    assert error == "webhook 307: destination refused: redirects are not followed"


async def test_last_error_never_echoes_the_answer_body(
    store: RedisConsentStore, allowed: FakeProvider
) -> None:
    await put_raw_provider(store, allowed.url + "/hook")
    leaked = {"Code": "Success", "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG", "code": 42}
    allowed.answer((400, leaked))
    error = await send_and_settle(store, egress=allowed.policy)
    assert error == "webhook 400: error 42"
    assert "wJalr" not in error and "Secret" not in error


async def test_operator_allowlist_lets_delivery_reach_the_named_destination(
    store: RedisConsentStore, allowed: FakeProvider, internal: FakeProvider
) -> None:
    await put_raw_provider(store, allowed.url + "/hook")
    mid = await send(store)
    worker = worker_for(store, egress=allowed.policy)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await worker.run_once()
            status = await store.message_status(TENANT, mid)
            if status is not None and status.state is MessageState.DELIVERED:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("not delivered")
    finally:
        await worker.stop(0)
    assert len(allowed.requests) == 1
    assert internal.requests == []  # the allowance named one port, not all of loopback


# -- DNS answers: resolved once, every answer checked, the checked one connected -------


async def test_a_name_with_any_internal_answer_is_refused(internal: FakeProvider) -> None:
    from consent_server.domain.egress import EgressPolicy
    from consent_server.egress import EgressRefused, guarded_client

    calls: list[str] = []

    async def rebinding(
        host: str, port: int
    ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        calls.append(host)
        return [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")]

    async with guarded_client(EgressPolicy(), resolve=rebinding) as http:
        with pytest.raises(EgressRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await http.post(f"http://rebind.example:{internal.port}/hook", content=b"x")
    assert calls == ["rebind.example"]
    assert internal.requests == []


async def test_the_connection_goes_to_the_address_that_was_checked(
    allowed: FakeProvider,
) -> None:
    """The allowed name resolves to the fake; the socket opens to that checked address,
    so a second lookup (which would answer differently) never happens."""
    from consent_server.domain.egress import EgressPolicy
    from consent_server.egress import guarded_client

    answers = [[ipaddress.ip_address("127.0.0.1")], [ipaddress.ip_address("10.9.9.9")]]

    async def flipping(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return list(answers.pop(0))

    policy = EgressPolicy.parse(f"relay.test:{allowed.port}")
    async with guarded_client(policy, resolve=flipping) as http:
        resp = await http.post(f"http://relay.test:{allowed.port}/hook", content=b"x")
    assert resp.status_code == 200
    assert len(allowed.requests) == 1 and len(answers) == 1


async def test_metadata_and_private_addresses_are_refused_before_connecting() -> None:
    from consent_server.domain.egress import EgressPolicy
    from consent_server.egress import EgressRefused, guarded_client

    async with guarded_client(EgressPolicy(), timeout_s=2) as http:
        for url in (
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://0.0.0.0:80/",
            "http://10.0.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://[::]/",
            "http://[64:ff9b::7f00:1]/",
        ):
            with pytest.raises(EgressRefused, match="destination refused"):
                await http.get(url)


# -- SetDeliveryProvider: internal literals are refused early --------------------------


@pytest.mark.parametrize("spelling", range(8))
async def test_set_provider_refuses_internal_literal_destinations(
    store: RedisConsentStore, spelling: int
) -> None:
    url = internal_spellings(8080)[spelling].replace("http://", "https://")
    with pytest.raises(InvalidArgument) as err:
        await DeliveryAdmin(RedisProviderSettings(store.client)).set_provider(
            TENANT, RawProvider(ALL_CHANNELS, ProviderKind.WEBHOOK, url=url, secret=SECRET)
        )
    (violation,) = err.value.violations
    assert violation.field == "provider.webhook.url"
    assert "internal destination" in violation.description
    assert await RedisProviderSettings(store.client).providers(TENANT) == {}


async def test_set_provider_refuses_metadata_base_url_for_whatsapp(
    store: RedisConsentStore,
) -> None:
    with pytest.raises(InvalidArgument) as err:
        await DeliveryAdmin(RedisProviderSettings(store.client)).set_provider(
            TENANT,
            RawProvider(
                ALL_CHANNELS,
                ProviderKind.WHATSAPP_CLOUD,
                url="https://169.254.169.254",
                secret="token",
                phone_number_id="123",
            ),
        )
    assert err.value.violations[0].field == "provider.whatsapp_cloud.base_url"


# -- end to end: the server process, its inline worker, a real redis-server -------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis").start()
    yield proc
    proc.stop()


def _send(stub: consent_pb2_grpc.ConsentServiceStub) -> str:
    return stub.SendIfAllowed(
        pb.SendIfAllowedRequest(
            tenant_id=TENANT,
            recipient=pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address=PHONE),
            topic="order_updates",
            message=pb.Message(text="hi"),
        )
    ).message_id


def _webhook_at(
    url: str, channel: pb.Channel.ValueType = pb.CHANNEL_UNSPECIFIED
) -> apb.SetDeliveryProviderRequest:
    """TENANT's webhook provider at ``url`` for ``channel`` (unspecified: every channel)."""
    return apb.SetDeliveryProviderRequest(
        tenant_id=TENANT,
        provider=apb.DeliveryProvider(
            channel=channel, webhook=apb.WebhookProvider(url=url, signing_secret=SECRET)
        ),
    )


def _final(stub: consent_pb2_grpc.ConsentServiceStub, mid: str) -> pb.GetMessageStatusResponse:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = stub.GetMessageStatus(pb.GetMessageStatusRequest(tenant_id=TENANT, message_id=mid))
        if st.status in (pb.MESSAGE_STATUS_FAILED, pb.MESSAGE_STATUS_DELIVERED):
            return st
        time.sleep(0.05)
    raise AssertionError("message never became final")


def test_e2e_internal_destination_is_refused_and_never_contacted(
    redis_server: RedisProcess, internal: FakeProvider
) -> None:
    srv = ServerProcess(
        {"CONSENT_REDIS_URL": redis_server.url, "CONSENT_DELIVERY_BACKOFF": "0.05"}
    ).start()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            admin = admin_pb2_grpc.ConsentAdminServiceStub(ch)
            stub = consent_pb2_grpc.ConsentServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                admin.SetDeliveryProvider(_webhook_at(f"http://2130706433:{internal.port}/hook"))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert bad_fields(err.value) == ["provider.webhook.url"]
            # A configuration stored before the guard existed: refused at connect time.
            client = redis_server.client()
            from consent_server.store import keys

            client.hset(
                keys.tenant_providers(TENANT),
                ALL_CHANNELS,
                ProviderConfig(
                    ProviderKind.WEBHOOK, url=f"http://localhost:{internal.port}/h", secret=SECRET
                ).encode(),
            )
            client.close()
            st = _final(stub, _send(stub))
            assert st.status == pb.MESSAGE_STATUS_FAILED
            assert "destination refused" in st.last_error
            assert internal.requests == []
    finally:
        srv.stop()


def test_e2e_operator_allowlist_reaches_the_named_destination(
    allowed: FakeProvider, internal: FakeProvider
) -> None:
    srv = ServerProcess({"CONSENT_EGRESS_ALLOW": allowed.allow}).start()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            admin = admin_pb2_grpc.ConsentAdminServiceStub(ch)
            stub = consent_pb2_grpc.ConsentServiceStub(ch)
            admin.SetDeliveryProvider(_webhook_at(allowed.url + "/hook"))
            # The allowance names one port: the other loopback listener stays refused.
            with pytest.raises(grpc.RpcError) as err:
                admin.SetDeliveryProvider(_webhook_at(internal.url + "/hook", pb.CHANNEL_SMS))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            st = _final(stub, _send(stub))
            assert st.status == pb.MESSAGE_STATUS_DELIVERED, st.last_error
            assert len(allowed.requests) == 1 and internal.requests == []
    finally:
        srv.stop()


# -- the operator's setting ------------------------------------------------------------


def test_egress_allowlist_is_an_operator_setting_validated_at_start() -> None:
    from consent_server.config import ConfigError, load
    from consent_server.domain.egress import literal_ip

    s = load([], {"CONSENT_EGRESS_ALLOW": "relay.corp, 10.0.0.0/8, [::1]:8080, 127.0.0.1:9000"})
    policy = s.delivery.egress_allow
    assert policy.operator_allowed("RELAY.corp.", 443)
    assert policy.literal_refusal("10.2.3.4", 443) is None
    assert policy.literal_refusal("::1", 8080) is None
    assert policy.literal_refusal("::1", 8081) == "::1 is a loopback address"
    assert policy.literal_refusal("127.0.0.1", 9001) == "127.0.0.1 is a loopback address"
    ip = literal_ip("169.254.169.254")
    assert ip is not None and policy.address_refusal("x", ip, 80) is not None
    assert load([], {}).delivery.egress_allow.rules == ()  # default: public addresses only
    for bad in ("10.0.0.0/8:80", "host:0", "[::1", "a b", "http://x"):
        with pytest.raises(ConfigError) as err:
            load([], {"CONSENT_EGRESS_ALLOW": bad})
        assert str(err.value).startswith("CONSENT_EGRESS_ALLOW: ")
        assert "\n" not in str(err.value)
