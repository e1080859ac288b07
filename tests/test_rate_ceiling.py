"""The operator's rate limit is a ceiling no tenant key exceeds, and a batch pays for
its size: on the store (fakeredis and redis-server) and through the server process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.auth import ApiKeyRecord, RateLimited, Role, new_key
from consent_server.domain.errors import InvalidArgument
from consent_server.domain.security import RateLimits, SecurityAuthority
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

from .security_support import details, md
from .support import ServerProcess

TENANT = "acme"


def security(store: RedisConsentStore, rate: int, burst: int = 0) -> SecurityAuthority:
    return SecurityAuthority(
        RedisSecurityStore(store.client, store.tombstones), store, limits=RateLimits(rate, burst)
    )


async def assert_admits(
    sec: SecurityAuthority, header: str, times: int, *, burst: int, rate: float
) -> None:
    """Of ``times`` back-to-back calls, the bucket's ``burst`` get through, plus at most
    what it refilled at ``rate`` per second while they ran (a loaded machine is slow)."""
    ok = 0
    start = time.monotonic()
    for _ in range(times):
        try:
            await sec.authenticate(header)
            ok += 1
        except RateLimited:
            pass
    refilled = int((time.monotonic() - start) * rate) + 1
    assert burst <= ok <= burst + refilled, (ok, burst, refilled)


async def test_a_key_cannot_be_created_above_the_operator_rate(store: RedisConsentStore) -> None:
    sec = security(store, rate=5)
    with pytest.raises(InvalidArgument) as err:
        await sec.create_key(
            tenant_id=TENANT, role=Role.ADMIN, description="", rate_limit_per_s=1000,
            created_by="t", caller=None,
        )  # fmt: skip
    (violation,) = err.value.violations
    assert violation.field == "rate_limit_per_second"
    assert "at most 5" in violation.description
    assert await sec.list_keys(TENANT, include_revoked=True) == []
    # At or below the ceiling is fine; 0 means the operator's rate.
    for rate in (5, 2, 0):
        await sec.create_key(
            tenant_id=TENANT, role=Role.READER, description="", rate_limit_per_s=rate,
            created_by="t", caller=None,
        )  # fmt: skip


async def test_a_key_minted_above_the_ceiling_earlier_is_held_to_it(
    store: RedisConsentStore,
) -> None:
    """A key stored with a rate above today's ceiling (minted before the ceiling existed,
    or before the operator lowered it) gets the operator's rate and burst, no more."""
    key_id, token, digest = new_key()
    stored = ApiKeyRecord(
        key_id=key_id, tenant_id=TENANT, role=Role.ADMIN, secret_hash=digest,
        description="", created_at_ms=1, created_by="t", rate_limit_per_s=100_000,
    )  # fmt: skip
    assert await RedisSecurityStore(store.client, store.tombstones).put_key(stored)
    sec = security(store, rate=5, burst=8)
    await assert_admits(sec, f"Bearer {token}", 30, burst=8, rate=5)


async def test_a_key_below_the_ceiling_keeps_its_own_lower_rate(
    store: RedisConsentStore,
) -> None:
    sec = security(store, rate=5, burst=8)
    slow = await sec.create_key(
        tenant_id=TENANT, role=Role.READER, description="", rate_limit_per_s=2,
        created_by="t", caller=None,
    )  # fmt: skip
    await assert_admits(sec, f"Bearer {slow.api_key}", 30, burst=4, rate=2)  # twice its rate


async def test_a_batch_costs_tokens_by_its_size(store: RedisConsentStore) -> None:
    from consent_server.domain.security import BATCH_ITEMS_PER_TOKEN, call_cost

    assert call_cost(1) == call_cost(0) == 1
    assert call_cost(BATCH_ITEMS_PER_TOKEN) == 1
    assert call_cost(BATCH_ITEMS_PER_TOKEN + 1) == 2
    assert call_cost(10_000) == 10_000 // BATCH_ITEMS_PER_TOKEN
    sec = security(store, rate=5, burst=10)
    key = await sec.create_key(
        tenant_id=TENANT, role=Role.READER, description="", rate_limit_per_s=0,
        created_by="t", caller=None,
    )  # fmt: skip
    header = f"Bearer {key.api_key}"
    await sec.authenticate(header, cost=6)
    with pytest.raises(RateLimited) as err:
        await sec.authenticate(header, cost=6)  # 4 left: nothing is taken
    assert 1 <= err.value.retry_after_ms <= 500  # 2 tokens at 5/s
    await assert_admits(sec, header, 10, burst=4, rate=5)
    # A batch larger than the whole bucket still goes through once the bucket is full
    # (it costs the whole bucket), rather than never.
    other = await sec.create_key(
        tenant_id=TENANT, role=Role.READER, description="", rate_limit_per_s=0,
        created_by="t", caller=None,
    )  # fmt: skip
    await sec.authenticate(f"Bearer {other.api_key}", cost=1000)
    with pytest.raises(RateLimited):
        await sec.authenticate(f"Bearer {other.api_key}")


# -- through the server process ----------------------------------------------------------


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[ServerProcess, str]]:
    _, operator, _ = new_key()
    srv = ServerProcess(
        {
            "CONSENT_REQUIRE_AUTH": "1",
            "CONSENT_BOOTSTRAP_ADMIN_KEY": operator,
            "CONSENT_RATE_LIMIT": "5",
            "CONSENT_RATE_BURST": "10",
            "CONSENT_DELIVERY": "off",
        }
    ).start()
    yield srv, operator
    srv.stop()


def _tenant_key(srv: ServerProcess, operator: str, rate: int = 0) -> str:
    with grpc.insecure_channel(srv.target) as ch:
        made = admin_pb2_grpc.ConsentAdminServiceStub(ch).CreateApiKey(
            apb.CreateApiKeyRequest(
                tenant_id=TENANT, role=apb.API_KEY_ROLE_ADMIN, rate_limit_per_second=rate
            ),
            metadata=md(operator),
        )
    return made.api_key


def test_e2e_tenant_admin_cannot_mint_a_key_above_the_ceiling(
    limited: tuple[ServerProcess, str],
) -> None:
    srv, operator = limited
    admin_key = _tenant_key(srv, operator)
    with grpc.insecure_channel(srv.target) as ch:
        admin = admin_pb2_grpc.ConsentAdminServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            admin.CreateApiKey(
                apb.CreateApiKeyRequest(
                    tenant_id=TENANT, role=apb.API_KEY_ROLE_ADMIN, rate_limit_per_second=100_000
                ),
                metadata=md(admin_key),
            )
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        violations = details(err.value)["BadRequest"].field_violations
        assert [v.field for v in violations] == ["rate_limit_per_second"]


def test_e2e_a_big_batch_pays_for_its_size(limited: tuple[ServerProcess, str]) -> None:
    srv, operator = limited
    key = _tenant_key(srv, operator)
    batch = pb.BatchCheckConsentRequest(
        tenant_id=TENANT,
        topic="marketing",
        recipients=[
            pb.Recipient(channel=pb.CHANNEL_EMAIL, address=f"user{i}@example.com")
            for i in range(800)
        ],
    )
    with grpc.insecure_channel(srv.target) as ch:
        stub = consent_pb2_grpc.ConsentServiceStub(ch)
        first = stub.BatchCheckConsent(batch, metadata=md(key), timeout=10)
        assert len(first.results) == 800
        with pytest.raises(grpc.RpcError) as err:
            stub.BatchCheckConsent(batch, metadata=md(key), timeout=10)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    d = details(err.value)
    assert d["ErrorInfo"].reason == "RATE_LIMITED"
    delay = d["RetryInfo"].retry_delay
    assert delay.seconds * 1000 + delay.nanos / 1e6 > 0
