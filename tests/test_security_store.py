"""Keys, rate limits and erasure on the store (fakeredis and a real redis-server)."""

from __future__ import annotations

import asyncio
import time

import pytest

from consent_server.domain.auth import (
    ApiKeyNotFound,
    PermissionDenied,
    RateLimited,
    Role,
    Unauthenticated,
    new_key,
)
from consent_server.domain.errors import InvalidArgument, SendBlocked
from consent_server.domain.model import Action, Policy, Scope, Source, Status, TenantSettings
from consent_server.domain.security import RateLimits, SecurityAuthority
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawMessage, RawRecipient
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

from .support import change_consent, raw_ts

PHONE = "+919876543210"
WA = RawRecipient(None, "")  # replaced below; keeps the import honest for mypy


def raw(channel: str, address: str) -> RawRecipient:
    from consent_server.domain.model import Channel

    return RawRecipient(Channel(channel), address)


ALICE = raw("whatsapp", PHONE)
CAROL = raw("email", "Carol@Example.com")


def security(store: RedisConsentStore, rate: int = 0) -> SecurityAuthority:
    return SecurityAuthority(
        RedisSecurityStore(store.client, store.tombstones), store, limits=RateLimits(rate, 0)
    )


async def opt(
    a: ConsentAuthority, action: Action, who: RawRecipient, topic: str = "", when_ms: int = 0
) -> None:
    occurred_at = raw_ts(when_ms) if when_ms else None
    await change_consent(a, action, "acme", who, topic, evidence="form 7", occurred_at=occurred_at)


async def send(a: ConsentAuthority, who: RawRecipient, topic: str = "marketing", key: str = ""):  # type: ignore[no-untyped-def]
    return await a.send(
        tenant_id="acme",
        recipient=who,
        topic=topic,
        message=RawMessage(kind="text", text="hello", serialized_size=7),
        idempotency_key=key,
        not_after=None,
        metadata={},
    )


async def test_keys_create_list_revoke(store: RedisConsentStore) -> None:
    sec = security(store)
    made = await sec.create_key(
        tenant_id="acme",
        role=Role.WRITER,
        description="crm",
        rate_limit_per_s=0,
        created_by="test",
        caller=None,
    )
    other = await sec.create_key(
        tenant_id="globex", role=Role.ADMIN, description="", rate_limit_per_s=0,
        created_by="test", caller=None,
    )  # fmt: skip
    caller = await sec.authenticate(f"Bearer {made.api_key}")
    assert (caller.tenant_id, caller.role, caller.key_id) == (
        "acme",
        Role.WRITER,
        made.record.key_id,
    )
    listed = await sec.list_keys("acme", include_revoked=False)
    assert [k.key_id for k in listed] == [made.record.key_id]
    assert listed[0].description == "crm" and listed[0].secret_hash != made.api_key
    # Nothing stored anywhere contains the secret.
    secret = made.api_key[20:]
    for key in await store.client.keys("*"):
        assert secret.encode() not in key
        if (await store.client.type(key)) == b"hash":
            assert all(secret.encode() not in v for v in (await store.client.hgetall(key)).values())

    with pytest.raises(ApiKeyNotFound):  # another tenant's key looks like no key at all
        await sec.revoke_key("globex", made.record.key_id)
    record, already = await sec.revoke_key("acme", made.record.key_id)
    assert record.revoked and not already
    _, already = await sec.revoke_key("acme", made.record.key_id)
    assert already
    with pytest.raises(Unauthenticated):
        await sec.authenticate(f"Bearer {made.api_key}")
    assert await sec.list_keys("acme", include_revoked=False) == []
    assert [k.key_id for k in await sec.list_keys("acme", include_revoked=True)] == [
        made.record.key_id
    ]
    assert (await sec.authenticate(f"Bearer {other.api_key}")).tenant_id == "globex"


async def test_key_creation_validates(store: RedisConsentStore) -> None:
    sec = security(store)
    with pytest.raises(InvalidArgument) as err:
        await sec.create_key(
            tenant_id="Not A Tenant", role=None, description="x" * 300, rate_limit_per_s=-1,
            created_by="t", caller=None,
        )  # fmt: skip
    fields = {v.field for v in err.value.violations}
    assert fields == {"tenant_id", "role", "description", "rate_limit_per_second"}
    assert await store.client.keys("ca:*ak*") == []
    tenant_admin = await sec.create_key(
        tenant_id="acme", role=Role.ADMIN, description="", rate_limit_per_s=0,
        created_by="t", caller=None,
    )  # fmt: skip
    caller = await sec.authenticate(f"Bearer {tenant_admin.api_key}")
    with pytest.raises(PermissionDenied):  # a tenant admin cannot mint an operator key
        await sec.create_key(
            tenant_id="*", role=Role.ADMIN, description="", rate_limit_per_s=0,
            created_by=caller.key_id, caller=caller,
        )  # fmt: skip


async def test_unknown_wrong_and_malformed_keys(store: RedisConsentStore) -> None:
    sec = security(store)
    made = await sec.create_key(
        tenant_id="acme", role=Role.READER, description="", rate_limit_per_s=0,
        created_by="t", caller=None,
    )  # fmt: skip
    _, unknown, _ = new_key()
    wrong = made.api_key[:20] + ("A" if made.api_key[20] != "A" else "B") + made.api_key[21:]
    for header in (None, "", "Bearer", f"Basic {made.api_key}", f"Bearer {unknown}",
                   f"Bearer {wrong}", f"Bearer {made.api_key}x"):  # fmt: skip
        with pytest.raises(Unauthenticated):
            await sec.authenticate(header)


async def test_bootstrap_install_never_revives_a_revoked_key(store: RedisConsentStore) -> None:
    sec = security(store)
    key_id, token, _ = new_key()
    assert await sec.install_key(token, "*", Role.ADMIN, "bootstrap") == "created"
    assert await sec.install_key(token, "*", Role.ADMIN, "bootstrap") == "present"
    assert (await sec.authenticate(f"Bearer {token}")).tenant_id == "*"
    await sec.revoke_key("*", key_id)
    assert await sec.install_key(token, "*", Role.ADMIN, "bootstrap") == "revoked"
    with pytest.raises(Unauthenticated):
        await sec.authenticate(f"Bearer {token}")


async def test_rate_limit_token_bucket(store: RedisConsentStore) -> None:
    sec = security(store, rate=1000)
    slow = await sec.create_key(
        tenant_id="acme", role=Role.READER, description="", rate_limit_per_s=2,
        created_by="t", caller=None,
    )  # fmt: skip
    header = f"Bearer {slow.api_key}"
    # Guessing at the key's secret must not spend its budget.
    bad = f"Bearer {slow.api_key[:20]}{'b' * 43}"
    for _ in range(10):
        with pytest.raises(Unauthenticated):
            await sec.authenticate(bad)
    for _ in range(4):  # burst = 2 x rate
        await sec.authenticate(header)
    with pytest.raises(RateLimited) as err:
        await sec.authenticate(header)
    assert 1 <= err.value.retry_after_ms <= 500
    await asyncio.sleep(err.value.retry_after_ms / 1000 + 0.05)
    await sec.authenticate(header)  # a token came back
    # Another key has its own bucket; rate 0 on the server means unlimited.
    free = security(store, rate=0)
    other = await free.create_key(
        tenant_id="acme", role=Role.READER, description="", rate_limit_per_s=0,
        created_by="t", caller=None,
    )  # fmt: skip
    for _ in range(50):
        await free.authenticate(f"Bearer {other.api_key}")


async def _everything(store: RedisConsentStore) -> list[tuple[bytes, bytes]]:
    """Every key name and every value stored, for 'is the address gone' checks."""
    out: list[tuple[bytes, bytes]] = []
    for key in await store.client.keys("*"):
        kind = await store.client.type(key)
        if kind == b"hash":
            blob = b" ".join(k + b"=" + v for k, v in (await store.client.hgetall(key)).items())
        elif kind == b"stream":
            entries = await store.client.xrange(key)
            blob = b" ".join(b" ".join(k + b"=" + v for k, v in f.items()) for _, f in entries)
        elif kind == b"string":
            blob = await store.client.get(key) or b""
        else:
            blob = b""
        out.append((key, blob))
    return out


async def test_erasure_removes_everything_but_keeps_the_suppression(
    store: RedisConsentStore,
) -> None:
    a = ConsentAuthority(store)
    sec = security(store)
    await opt(a, Action.OPT_IN, ALICE, "order_updates")
    queued = await send(a, ALICE, "marketing", key="promo-1")  # before the opt-out
    await opt(a, Action.OPT_OUT, ALICE)  # STOP: all topics
    await opt(a, Action.OPT_OUT, ALICE, "marketing")
    await send(a, CAROL, "marketing")  # another recipient: untouched
    before_carol = await a.check("acme", CAROL, "marketing")
    # Per-recipient data another feature keeps under the recipient's prefix goes too.
    from consent_server.domain.model import Channel, Recipient
    from consent_server.store import keys as k

    base = k.recipient_base("acme", Recipient(Channel.WHATSAPP, PHONE))
    await store.client.set(base + ":x-feature", "1")
    await store.client.hset(base + ":links", mapping={"a": "b"})
    carol_base = k.recipient_base("acme", Recipient(Channel.EMAIL, "carol@example.com"))
    await store.client.set(carol_base + ":x-feature", "1")

    result = await sec.forget("acme", raw("whatsapp", "+91 98765-43210"), "key-op")
    c = result.counts
    assert result.recipient.address == PHONE
    assert (c.records_removed, c.events_removed) == (3, 3)
    # The send key (event ids are kept in the history events, removed with them).
    assert c.idempotency_entries_removed == 1
    assert c.messages_cancelled == 1 and c.messages_erased == 1  # its outbox entry
    assert c.suppressed_topics == ["", "marketing"]
    assert c.other_records_removed == 2
    assert await store.client.exists(carol_base + ":x-feature") == 1

    # The address is gone from every key and value; the tombstone is a keyed hash.
    for key, blob in await _everything(store):
        assert b"9876543210" not in key and b"9876543210" not in blob, key
    status = await a.message_status("acme", queued.accepted.message_id)
    assert status.state.value == "cancelled"
    assert (await a.history("acme", ALICE, 0, "")).events == []

    # Still suppressed: the check, a send, and a late (import-dated) opt-in change nothing.
    d = (await a.check("acme", ALICE, "marketing")).decision
    assert not d.allowed and d.status is Status.OPTED_OUT and d.decided_by is Scope.ALL
    assert d.record is not None and d.record.source is Source.ERASURE
    assert not (await a.check("acme", ALICE, "order_updates")).decision.allowed
    with pytest.raises(SendBlocked):
        await send(a, ALICE, "order_updates")
    await opt(a, Action.OPT_IN, ALICE, "", when_ms=int(time.time() * 1000) - 3_600_000)
    with pytest.raises(SendBlocked):
        await send(a, ALICE, "order_updates")
    # A fresh explicit opt-in lifts it, scope by scope.
    await opt(a, Action.OPT_IN, ALICE, "order_updates")
    assert (await send(a, ALICE, "order_updates")).accepted.message_id
    with pytest.raises(SendBlocked):
        await send(a, ALICE, "marketing")
    await opt(a, Action.OPT_IN, ALICE, "")
    await opt(a, Action.OPT_IN, ALICE, "marketing")
    assert (await send(a, ALICE, "marketing")).accepted.message_id
    assert (await a.check("acme", CAROL, "marketing")) == before_carol

    # Erasing again while opted in drops the tombstone: nothing left to suppress.
    again = await sec.forget("acme", ALICE, "key-op")
    assert not again.counts.suppressed_topics
    assert (await a.check("acme", ALICE, "marketing")).decision.allowed


async def test_erasure_of_someone_never_opted_out_keeps_no_suppression(
    store: RedisConsentStore,
) -> None:
    a = ConsentAuthority(store)
    sec = security(store)
    await opt(a, Action.OPT_IN, CAROL, "marketing")
    result = await sec.forget("acme", CAROL, "op")
    assert result.counts.suppressed_topics == [] and result.counts.records_removed == 1
    assert (await a.check("acme", CAROL, "marketing")).decision.decided_by is Scope.DEFAULT_POLICY
    # Under REQUIRE_OPT_IN an erased opt-in is simply gone: nothing is sent.
    await store.put_tenant_settings("acme", TenantSettings(default_policy=Policy.REQUIRE_OPT_IN))
    with pytest.raises(SendBlocked):
        await send(a, CAROL, "marketing")
    empty = await sec.forget("acme", raw("sms", "+14155550100"), "op")
    assert empty.counts.records_removed == 0 and empty.counts.events_removed == 0


async def test_erasure_validates_before_touching_anything(store: RedisConsentStore) -> None:
    sec = security(store)
    before = await store.client.dbsize()
    for tenant, who in (("", ALICE), ("acme", None), ("acme", raw("sms", "12")),
                        ("acme", RawRecipient(None, PHONE))):  # fmt: skip
        with pytest.raises(InvalidArgument):
            await sec.forget(tenant, who, "op")
    assert await store.client.dbsize() == before


async def test_tombstone_names_do_not_depend_on_the_process(store: RedisConsentStore) -> None:
    a = ConsentAuthority(store)
    await opt(a, Action.OPT_OUT, ALICE)
    await security(store).forget("acme", ALICE, "op")
    # A second process (fresh caches) derives the same tombstone and stays suppressed.
    fresh = RedisConsentStore(store.client, settings_cache_s=0)
    assert not (await ConsentAuthority(fresh).check("acme", ALICE, "x")).decision.allowed
    # Another tenant's secret differs, so the same address is not suppressed there.
    other = await ConsentAuthority(fresh).check("globex", ALICE, "x")
    assert other.decision.allowed
