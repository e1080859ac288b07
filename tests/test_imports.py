"""ImportConsent's rules, on the embedded store and a real redis-server: the import never
re-subscribes anyone silently (a table of cases, each run as a dry run first, which must
predict exactly what the real import then does), erasure tombstones hold, re-importing
changes nothing, malformed records are reported with their lines, and an export imports
into a fresh tenant as the same decisions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest

from consent_server.domain.bulk import BulkConsent, ImportMessage, RawExportQuery
from consent_server.domain.imports import (
    ImportSummary,
    Outcome,
    RawImportRecord,
    RecipientView,
    event_id_for,
    validate_record,
)
from consent_server.domain.model import Action, Channel, Recipient, Source, Status
from consent_server.domain.security import RateLimits, SecurityAuthority
from consent_server.domain.service import ConsentAuthority
from consent_server.domain.validation import RawRecipient, RawTimestamp
from consent_server.store.bulk import RedisBulkStore
from consent_server.store.connect import open_store
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

from .support import RedisProcess, change_consent, create_tenants, raw_ts, tenant_id_for

TENANT = "acme"
PHONE = "+14155550100"
WHO = RawRecipient(Channel.SMS, PHONE)
ALICE = Recipient(Channel.SMS, PHONE)
HOUR = 3_600_000
T0 = time.time_ns() // 1_000_000 - 100 * HOUR  # every time in a case is T0 + n hours


def rec(
    action: Action | None,
    hours: float,
    topic: str = "",
    *,
    who: RawRecipient | None = WHO,
    external_id: str = "",
    line: int = 0,
    source: Source | None = Source.IMPORT,
) -> RawImportRecord:
    return RawImportRecord(
        who, topic, action, raw_ts(T0 + int(hours * HOUR)), source, "test", external_id, line
    )


def bulk(store: RedisConsentStore) -> BulkConsent:
    return BulkConsent(store, RedisBulkStore(store.client, store.tombstones), batch_size=3)


async def run(
    store: RedisConsentStore,
    records: Sequence[RawImportRecord],
    *,
    proof: bool = False,
    dry: bool = False,
    tenant: str = TENANT,
    per_message: int = 2,
) -> ImportSummary:
    async def stream() -> AsyncIterator[ImportMessage]:
        yield ImportMessage(tenant, proof, dry, records[:per_message])
        for i in range(per_message, len(records), per_message):
            yield ImportMessage("", False, False, records[i : i + per_message])

    return await bulk(store).import_stream(stream(), "test-key")


async def prior(store: RedisConsentStore, action: Action, hours: float, topic: str = "") -> None:
    occurred_at = raw_ts(T0 + int(hours * HOUR))
    await change_consent(
        ConsentAuthority(store), action, TENANT, WHO, topic, occurred_at=occurred_at
    )


async def allowed(store: RedisConsentStore, topic: str) -> bool:
    return (await ConsentAuthority(store).check(TENANT, WHO, topic)).decision.allowed


def counts(s: ImportSummary) -> dict[str, int]:
    names = (
        "applied",
        "changed",
        "ignored_older",
        "ignored_erased",
        "skipped_no_proof",
        "skipped_opted_out",
        "invalid",
        "duplicates",
    )
    return {n: getattr(s, n) for n in names if getattr(s, n)}


@dataclass(frozen=True)
class Case:
    name: str
    held: tuple[tuple[Action, float, str], ...]  # events the service holds first
    imported: tuple[RawImportRecord, ...]
    proof: bool
    expect: dict[str, int]
    allowed: dict[str, bool]  # topic -> allowed after the import


OUT, IN = Action.OPT_OUT, Action.OPT_IN
CASES = [
    Case("opt-out applies", (), (rec(OUT, 1),), False, {"applied": 1, "changed": 1}, {"m": False}),
    Case(
        "opt-out older than a held opt-in is ignored, newer one wins",
        ((IN, 5, ""),),
        (rec(OUT, 1), rec(OUT, 9)),
        False,
        {"ignored_older": 1, "applied": 1, "changed": 1},
        {"m": False},
    ),
    Case(
        "opt-in without proof is skipped even with no record",
        (),
        (rec(IN, 1, "m"),),
        False,
        {"skipped_no_proof": 1},
        {"m": True},  # the default policy (allow unless opted out) decides, no record
    ),
    Case(
        "opt-in without proof never lifts an opt-out",
        ((OUT, 1, ""),),
        (rec(IN, 9, ""), rec(IN, 9, "m")),
        False,
        {"skipped_no_proof": 2},
        {"m": False},
    ),
    Case(
        "opt-in with proof newer than every opt-out applies",
        ((OUT, 1, ""), (OUT, 2, "m")),
        (rec(IN, 9, "m"),),
        True,
        {"applied": 1, "changed": 1},
        {"m": True, "n": False},
    ),
    Case(
        "opt-in with proof older than the all-topics opt-out is skipped",
        ((OUT, 5, ""),),
        (rec(IN, 3, "m"),),
        True,
        {"skipped_opted_out": 1},
        {"m": False},
    ),
    Case(
        "opt-in with proof at the same time as the opt-out is skipped",
        ((OUT, 5, "m"),),
        (rec(IN, 5, "m"),),
        True,
        {"skipped_opted_out": 1},
        {"m": False},
    ),
    Case(
        "all-topics opt-in with proof is skipped when a topic opt-out is newer",
        ((OUT, 1, ""), (OUT, 6, "m")),
        (rec(IN, 4, ""),),
        True,
        {"skipped_opted_out": 1},
        {"m": False, "n": False},
    ),
    Case(
        "all-topics opt-in with proof newer than every opt-out applies",
        ((OUT, 1, ""), (OUT, 2, "m")),
        (rec(IN, 4, ""),),
        True,
        {"applied": 1, "changed": 1},
        {"m": True, "n": True},
    ),
    Case(
        "an opt-out earlier in the same stream blocks an older opt-in",
        (),
        (rec(OUT, 5, ""), rec(IN, 3, "m")),
        True,
        {"applied": 1, "changed": 1, "skipped_opted_out": 1},
        {"m": False},
    ),
    Case(
        "a later opt-out in the stream wins over an opt-in before it",
        (),
        (rec(IN, 3, "m"), rec(OUT, 5, "m")),
        True,
        {"applied": 2, "changed": 2},
        {"m": False},
    ),
    Case(
        "the same record twice in one stream is one event",
        (),
        (rec(OUT, 5, ""), rec(OUT, 5, "")),
        False,
        {"applied": 1, "changed": 1, "duplicates": 1},
        {"m": False},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_an_import_never_resubscribes_silently(store: RedisConsentStore, case: Case) -> None:
    for action, hours, topic in case.held:
        await prior(store, action, hours, topic)
    dry = await run(store, case.imported, proof=case.proof, dry=True)
    real = await run(store, case.imported, proof=case.proof)
    assert counts(real) == case.expect
    assert counts(dry) == case.expect, "the dry run predicts the import"
    assert dry.dry_run and not real.dry_run
    for topic, want in case.allowed.items():
        assert await allowed(store, topic) is want, topic
    # Importing the same records again changes nothing: every one applied or seen before
    # is a duplicate now, the skipped ones are skipped again.
    again = await run(store, case.imported, proof=case.proof)
    assert again.applied == again.changed == 0
    assert again.duplicates == len(case.imported) - real.skipped_no_proof - real.skipped_opted_out
    for topic, want in case.allowed.items():
        assert await allowed(store, topic) is want, topic


@pytest.fixture
async def shared(
    redis_proc: RedisProcess, request: pytest.FixtureRequest
) -> AsyncIterator[RedisConsentStore]:
    """A store on the shared pipelined connection (the server's default): the one on
    which consecutive batches overlap (the next sent while the one before is applied)."""
    s = open_store(redis_proc.url, multiplex=True)
    await s.client.flushdb()
    await create_tenants(s, (TENANT, tenant_id_for(request.node)))
    yield s
    await s.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("per_batch", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_the_rules_hold_when_batches_overlap(
    shared: RedisConsentStore, case: Case, per_batch: int
) -> None:
    """The table again, on the shared connection, in batches of one or two records:
    batches overlap there, and the outcome must be that of one after the other."""
    for action, hours, topic in case.held:
        await prior(shared, action, hours, topic)

    async def stream() -> AsyncIterator[ImportMessage]:
        yield ImportMessage(TENANT, case.proof, False, case.imported[:1])
        for r in case.imported[1:]:
            yield ImportMessage("", False, False, [r])

    b = BulkConsent(shared, RedisBulkStore(shared.client, shared.tombstones), batch_size=per_batch)
    real = await b.import_stream(stream(), "test-key")
    assert counts(real) == case.expect
    for topic, want in case.allowed.items():
        assert await allowed(shared, topic) is want, topic


async def test_batches_overlap_only_after_the_first_and_in_order() -> None:
    """With a store that queues writes in order: the first batch completes before the
    second starts; then each opt-out batch is handed over once the one before it is
    queued (before it is done); a batch needing views waits for the one before; the
    summary counts every batch."""
    events: list[str] = []
    redis = asyncio.Lock()
    in_flight = most = 0

    class Ordered:
        async def views(self, tenant_id: str, wanted: Sequence[Any]) -> list[RecipientView]:
            events.append("views")
            return [RecipientView() for _ in wanted]

        async def apply(
            self, batch: Sequence[Any], *, queued: Callable[[], None] | None = None
        ) -> list[str]:
            name = batch[0].event_id[-4:]
            events.append(f"start {name} {'queued' if queued else 'alone'}")
            if queued is not None:
                queued()
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            async with redis:  # one batch at a time, as Redis runs them
                await asyncio.sleep(0.01)
            in_flight -= 1
            events.append(f"end {name}")
            return [Outcome.CHANGED] * len(batch)

        def export(self, tenant_id: str, query: Any) -> Any:
            raise NotImplementedError

    class Tenants:
        async def tenant_lookup(self, tenant_id: str) -> Any:
            from consent_server.domain.model import TenantSettings

            return TenantSettings()

    records = [rec(OUT, n, external_id=f"x{n:03d}") for n in range(1, 5)]
    records.append(rec(IN, 9, external_id="x009"))

    async def stream() -> AsyncIterator[ImportMessage]:
        yield ImportMessage(TENANT, True, False, records)

    b = BulkConsent(Tenants(), Ordered(), batch_size=1)  # type: ignore[arg-type]
    summary = await b.import_stream(stream(), "p")
    assert summary.applied == 5
    ids = [
        event_id_for(ALICE, "", a, T0 + n * HOUR, f"x{n:03d}")[-4:]
        for a, n in [
            (Action.OPT_OUT, 1),
            (Action.OPT_OUT, 2),
            (Action.OPT_OUT, 3),
            (Action.OPT_OUT, 4),
            (Action.OPT_IN, 9),
        ]
    ]
    assert events[:3] == [f"start {ids[0]} alone", f"end {ids[0]}", f"start {ids[1]} queued"]
    # Batches 3 and 4 were handed over while the one before was still being applied.
    assert events.index(f"start {ids[2]} queued") < events.index(f"end {ids[1]}")
    assert events.index(f"start {ids[3]} queued") < events.index(f"end {ids[2]}")
    # The opt-in with proof needs its view: read only after batch 4 is done.
    assert events.index("views") > events.index(f"end {ids[3]}")
    starts = [e.split()[1] for e in events if e.startswith("start")]
    assert starts == ids  # in stream order
    assert most == 2


async def test_a_dry_run_writes_nothing(store: RedisConsentStore) -> None:
    before = sorted(await store.client.keys("*"))
    summary = await run(store, [rec(OUT, 1), rec(IN, 2, "m")], proof=True, dry=True)
    assert counts(summary) == {"applied": 2, "changed": 2}
    assert sorted(await store.client.keys("*")) == before


async def erase(store: RedisConsentStore) -> int:
    sec = SecurityAuthority(
        RedisSecurityStore(store.client, store.tombstones), store, limits=RateLimits(0, 0)
    )
    await sec.forget(TENANT, WHO, "op")
    return time.time_ns() // 1_000_000


async def test_erasure_tombstones_hold_against_an_import(store: RedisConsentStore) -> None:
    await prior(store, OUT, 1)
    erased_at = await erase(store)
    hours_before = (erased_at - T0) / HOUR - 1
    records = [rec(IN, hours_before, "m"), rec(OUT, hours_before, "n"), rec(IN, hours_before)]
    dry = await run(store, records, proof=True, dry=True)
    real = await run(store, records, proof=True)
    # Opt-ins dated before the erasure are skipped (the tombstone's opt-out is newer);
    # the old opt-out changes nothing and stores nothing under the address.
    assert counts(real) == counts(dry) == {"skipped_opted_out": 2, "ignored_erased": 1}
    assert not await allowed(store, "m")
    assert (await ConsentAuthority(store).history(TENANT, WHO, 0, "")).events == []
    # Without a view (no proof: opt-ins are skipped before the store), the script itself
    # refuses the old opt-out: nothing stored.
    plain = await run(store, [rec(OUT, hours_before, "x")])
    assert counts(plain) == {"ignored_erased": 1}
    assert (await ConsentAuthority(store).history(TENANT, WHO, 0, "")).events == []


async def test_an_opt_in_after_the_erasure_with_proof_applies(store: RedisConsentStore) -> None:
    await prior(store, OUT, 1)
    erased_at = await erase(store)
    await asyncio.sleep(0.01)
    late = RawImportRecord(WHO, "m", IN, raw_ts(erased_at + 5), Source.IMPORT, "form", "", 0)
    summary = await run(store, [late], proof=True)
    assert counts(summary) == {"applied": 1, "changed": 1}
    assert await allowed(store, "m")
    assert not await allowed(store, "n")


MALFORMED = [
    (RawImportRecord(None, "", OUT, raw_ts(T0), Source.IMPORT, "", "", 0), "recipient"),
    (rec(OUT, 1, who=RawRecipient(None, PHONE)), "recipient.channel"),
    (rec(OUT, 1, who=RawRecipient(Channel.SMS, "")), "recipient.address"),
    (rec(OUT, 1, who=RawRecipient(Channel.SMS, "x" * 300)), "recipient.address"),
    (rec(OUT, 1, who=RawRecipient(Channel.SMS, "\u0661\u0662")), "recipient.address"),
    (rec(OUT, 1, who=RawRecipient(Channel.EMAIL, "not-an-email")), "recipient.address"),
    (rec(OUT, 1, "Bad Topic!"), "topic"),
    (rec(OUT, 1, "\U0001f389promo"), "topic"),
    (rec(None, 1), "action"),
    (RawImportRecord(WHO, "", OUT, None, Source.IMPORT, "", "", 0), "occurred_at"),
    (RawImportRecord(WHO, "", OUT, RawTimestamp(-5, 0), Source.IMPORT, "", "", 0), "occurred_at"),
    (RawImportRecord(WHO, "", OUT, RawTimestamp(1, -1), Source.IMPORT, "", "", 0), "occurred_at"),
    (rec(OUT, 1, source=Source.KEYWORD), "source"),
    (rec(OUT, 1, source=None), "source"),
    (rec(OUT, 1, external_id="has space"), "external_id"),
    (rec(OUT, 1, external_id="x" * 129), "external_id"),
    (RawImportRecord(WHO, "", OUT, raw_ts(T0), Source.IMPORT, "e" * 2000, "", 0), "evidence"),
    (
        RawImportRecord(WHO, "", IN, raw_ts(T0 + 1000 * HOUR), Source.IMPORT, "", "", 0),
        "occurred_at",
    ),
]


@pytest.mark.parametrize(("record", "field"), MALFORMED)
def test_malformed_records_name_their_field(record: RawImportRecord, field: str) -> None:
    got = validate_record(
        record, tenant_id=TENANT, region=None, now_ms=T0 + 100 * HOUR, principal="p"
    )
    assert getattr(got, "kind", None) == Outcome.INVALID
    assert getattr(got, "field", None) == field


async def test_malformed_records_never_abort_the_stream(store: RedisConsentStore) -> None:
    good = [rec(OUT, 1, line=2), rec(OUT, 2, "m", line=5)]
    bad = [(r, f) for r, f in MALFORMED]
    records = [
        good[0],
        *[replace(r, line=100 + i) for i, (r, _) in enumerate(bad)],
        good[1],
    ]
    summary = await run(store, records, per_message=5)
    assert summary.records == len(records)
    assert summary.invalid == len(bad)
    assert summary.applied == 2
    assert [(p.line, p.field) for p in summary.problems] == [
        (100 + i, f) for i, (_, f) in enumerate(bad)
    ]
    assert not await allowed(store, "m")


async def test_an_external_id_reused_for_another_change_is_reported(
    store: RedisConsentStore,
) -> None:
    first = await run(store, [rec(OUT, 1, "m", external_id="row-1")])
    assert first.applied == 1
    reused = [rec(OUT, 1, "n", external_id="row-1", line=9), rec(IN, 2, "m", external_id="row-1")]
    # The dry run predicts it (it took the id for a replay, a duplicate, before).
    dry = await run(store, reused, dry=True, proof=True)
    other = await run(store, reused, proof=True)
    assert counts(other) == counts(dry) == {"invalid": 2}
    assert [(p.line, p.field) for p in other.problems] == [(9, "external_id"), (2, "external_id")]
    assert [(p.line, p.description) for p in dry.problems] == [
        (p.line, p.description) for p in other.problems
    ]


def test_event_ids_derive_from_the_external_id_or_the_content() -> None:
    a = event_id_for(ALICE, "m", OUT, 5, "")
    assert a == event_id_for(ALICE, "m", OUT, 5, "")
    assert a != event_id_for(ALICE, "m", OUT, 6, "")
    assert a != event_id_for(ALICE, "", OUT, 5, "")
    assert a != event_id_for(Recipient(Channel.WHATSAPP, PHONE), "m", OUT, 5, "")
    assert event_id_for(ALICE, "m", OUT, 5, "x1") == event_id_for(ALICE, "n", IN, 9, "x1")
    assert a.startswith("imp_") and len(a) <= 128


async def test_the_first_message_must_name_an_existing_tenant(store: RedisConsentStore) -> None:
    from consent_server.domain.errors import InvalidArgument, TenantNotFound

    with pytest.raises(TenantNotFound):
        await run(store, [rec(OUT, 1)], tenant="nobody")
    with pytest.raises(InvalidArgument):
        await run(store, [rec(OUT, 1)], tenant="Bad Tenant")

    async def empty() -> AsyncIterator[ImportMessage]:
        return
        yield

    with pytest.raises(InvalidArgument):
        await bulk(store).import_stream(empty(), "p")

    async def switching() -> AsyncIterator[ImportMessage]:
        yield ImportMessage(TENANT, False, False, [rec(OUT, 1)])
        yield ImportMessage("globex", False, False, [rec(OUT, 2)])

    with pytest.raises(InvalidArgument) as info:
        await bulk(store).import_stream(switching(), "p")
    assert info.value.violations[0].field == "tenant_id"

    async def huge() -> AsyncIterator[ImportMessage]:
        yield ImportMessage(TENANT, False, False, [rec(OUT, 1)] * 1001)

    with pytest.raises(InvalidArgument):
        await bulk(store).import_stream(huge(), "p")


async def export_all(store: RedisConsentStore, tenant: str, **filters: object) -> list[tuple]:
    query = RawExportQuery(
        tenant_id=tenant,
        channel=filters.get("channel"),  # type: ignore[arg-type]
        channel_known=True,
        topic=str(filters.get("topic", "")),
        status=str(filters.get("status", "")),
        updated_since=filters.get("since"),  # type: ignore[arg-type]
    )
    rows = []
    async for page in bulk(store).export(query):
        for r in page.records:
            rows.append((r.recipient, r.topic, r.record.status, r.record.occurred_at_ms))
    return sorted(rows, key=repr)


async def test_export_then_import_into_a_fresh_tenant_is_the_same_state(
    store: RedisConsentStore,
) -> None:
    people = [RawRecipient(Channel.SMS, f"+1415555{n:04d}") for n in range(40)]
    people.append(RawRecipient(Channel.EMAIL, "jane@example.com"))
    records = []
    for n, who in enumerate(people):
        records.append(rec(OUT, n % 7, "" if n % 3 else "m", who=who))
        if n % 4 == 0:
            records.append(rec(IN, 10 + n % 5, "m", who=who))
        if n % 5 == 0:
            records.append(rec(OUT, 20, "n", who=who))
    await run(store, records, proof=True, per_message=7)
    exported = await export_all(store, TENANT)
    assert len(exported) > len(people)
    await create_tenants(store, ["fresh-tenant"])
    back = [
        RawImportRecord(
            RawRecipient(r.channel, r.address),
            topic,
            Action.OPT_IN if st is Status.OPTED_IN else OUT,
            raw_ts(ms),
            Source.IMPORT,
            "re-import",
            "",
            0,
        )
        for r, topic, st, ms in exported
    ]
    summary = await run(store, back, proof=True, tenant="fresh-tenant", per_message=50)
    assert summary.applied == len(back) and summary.invalid == 0
    assert await export_all(store, "fresh-tenant") == exported
    a = ConsentAuthority(store)
    for who in people:
        for topic in ("m", "n", "z"):
            first = (await a.check(TENANT, who, topic)).decision
            second = (await a.check("fresh-tenant", who, topic)).decision
            assert (first.allowed, first.status) == (second.allowed, second.status)

    # Filters: channel, scope, status, time.
    email = await export_all(store, TENANT, channel=Channel.EMAIL)
    assert email and all(r[0].channel is Channel.EMAIL for r in email)
    only_m = await export_all(store, TENANT, topic="m")
    assert only_m and all(r[1] == "m" for r in only_m)
    only_all = await export_all(store, TENANT, topic="*")
    assert only_all and all(r[1] == "" for r in only_all)
    ins = await export_all(store, TENANT, status="OPTED_IN")
    assert ins and all(r[2] is Status.OPTED_IN for r in ins)
    recent = await export_all(store, TENANT, since=raw_ts(T0 + 15 * HOUR))
    assert recent and all(r[3] >= T0 + 15 * HOUR for r in recent)
    assert len(recent) < len(exported)


async def test_export_validates_its_filters(store: RedisConsentStore) -> None:
    from consent_server.domain.errors import InvalidArgument, TenantNotFound

    bad = RawExportQuery(TENANT, None, False, "Bad!", "NO_RECORD", RawTimestamp(-1, 0))
    with pytest.raises(InvalidArgument) as info:
        async for _ in bulk(store).export(bad):
            pass
    fields = sorted(v.field for v in info.value.violations)
    assert fields == ["channel", "status", "topic", "updated_since"]
    with pytest.raises(TenantNotFound):
        async for _ in bulk(store).export(RawExportQuery("nobody", None, True, "", "", None)):
            pass


async def test_an_import_survives_a_redis_that_lost_its_scripts(store: RedisConsentStore) -> None:
    """A restarted or failed-over Redis has no scripts cached: the next call reloads."""
    b = bulk(store)

    async def stream(records: list[RawImportRecord]) -> AsyncIterator[ImportMessage]:
        yield ImportMessage(TENANT, True, False, records)

    first = await b.import_stream(stream([rec(OUT, 1, "m")]), "p")
    assert first.applied == 1
    await store.client.script_flush()
    second = await b.import_stream(stream([rec(OUT, 2, "n"), rec(IN, 3, "m")]), "p")
    assert counts(second) == {"applied": 2, "changed": 2}
    assert await allowed(store, "m") and not await allowed(store, "n")
