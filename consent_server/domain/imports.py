"""Bulk import of consent collected elsewhere, as pure rules (ImportConsent).

An import never re-subscribes anyone silently:

* an opt-out always applies by its time (record_event.lua: unless the scope holds a
  newer record; dated at or before an erasure it changes nothing);
* an opt-in applies only when the request declares that its opt-ins carry proof of
  consent AND it is newer than every opt-out that covers its scope: the topic's own and
  the all-topics one for a topic opt-in, every opt-out of the recipient on the channel
  for an all-topics opt-in. "Every opt-out" means those the service holds (live or on an
  erasure tombstone) and those earlier in the same stream. Any other opt-in is reported
  and skipped.

Event ids are derived from the record's external id, or from its content when it has
none, so the same file imported twice is the same events: the second time every record
is a duplicate and nothing changes.

This module validates records, derives their ids and plans a batch against a *view* of
what the store holds (``RecipientView``); ``simulate`` also predicts what applying would
do (the dry run). The store applies the planned events with the same script as OptOut
and OptIn, so the ordering, erasure and idempotency rules are the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache

from . import validation as val
from .decision import newer
from .errors import FieldViolation
from .masking import mask_text
from .model import Action, Channel, ConsentEventInput, Recipient, Source, Status
from .recipients import AddressError, normalise_address, normalise_uncached
from .values import fast_init

MAX_RECORDS_PER_MESSAGE = 1000
MAX_PROBLEMS = 1000
ALL_SCOPES = "s:*"


class Outcome:
    """What happened (or would happen) to one record; the summary's counters."""

    APPLIED = "applied"
    CHANGED = "changed"  # applied and flipped the scope's status
    IGNORED_OLDER = "ignored_older"
    IGNORED_ERASED = "ignored_erased"
    SKIPPED_NO_PROOF = "skipped_no_proof"
    SKIPPED_OPTED_OUT = "skipped_opted_out"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    # The record's event id is known for another change (action or topic): reported
    # as an invalid record, nothing written.
    REUSED = "reused"


@fast_init
@dataclass(frozen=True, slots=True)
class RawImportRecord:
    """One record as the api decoded it (unknown enum values are None)."""

    recipient: val.RawRecipient | None
    topic: str
    action: Action | None
    occurred_at: val.RawTimestamp | None
    source: Source | None
    evidence: str
    external_id: str
    line: int


@fast_init
@dataclass(frozen=True, slots=True)
class ImportItem:
    """A valid record, ready to plan and apply."""

    line: int
    event: ConsentEventInput


@dataclass(frozen=True, slots=True)
class Problem:
    """A reported record: invalid (``field`` names why) or a skipped opt-in."""

    line: int
    kind: str  # Outcome.INVALID | SKIPPED_NO_PROOF | SKIPPED_OPTED_OUT
    field: str
    description: str


@dataclass(slots=True)
class ImportCounts:
    """The counters of an import, named like the ImportConsent response's fields.

    The server's summary and consentctl's running totals (over every call of a chunked
    import) both count these, so they are declared once here."""

    records: int = 0
    applied: int = 0
    changed: int = 0
    ignored_older: int = 0
    ignored_erased: int = 0
    skipped_no_proof: int = 0
    skipped_opted_out: int = 0
    invalid: int = 0
    duplicates: int = 0


#: The names of the ImportCounts counters, in their declared order.
COUNTER_NAMES = tuple(f.name for f in fields(ImportCounts))


@dataclass(slots=True)
class ImportSummary(ImportCounts):
    """The counters of an import and its first MAX_PROBLEMS problems."""

    problems: list[Problem] = field(default_factory=list)
    problems_omitted: int = 0
    dry_run: bool = False

    def count(self, outcome: str, n: int = 1) -> None:
        """Count ``n`` records of one outcome (CHANGED counts as applied too, REUSED as
        invalid)."""
        if outcome == Outcome.CHANGED:
            self.applied += n
            self.changed += n
        elif outcome == Outcome.DUPLICATE:
            self.duplicates += n
        elif outcome == Outcome.REUSED:
            self.invalid += n
        else:
            setattr(self, outcome, getattr(self, outcome) + n)

    def report(self, problem: Problem) -> None:
        """Keep a problem (bounded: past MAX_PROBLEMS only the number is kept)."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.problems_omitted += 1


def event_id_for(
    recipient: Recipient, topic: str, action: Action, occurred_ms: int, external_id: str
) -> str:
    """The event id of an imported record: from its external id, else from its content.

    Event ids are per recipient, so the recipient need not be part of an external id's
    hash; the content hash covers everything that makes two records the same fact."""
    if external_id:
        basis = "x\x00" + external_id
    else:
        basis = "\x00".join(
            [
                "c",
                _VALUE[recipient.channel],
                recipient.address,
                topic,
                _VALUE[action],
                str(occurred_ms),
            ]
        )
    return "imp_" + hashlib.sha256(basis.encode()).hexdigest()[:40]


# An enum member's .value is a descriptor call; a dict lookup is cheaper per record.
_VALUE: dict[object, str] = {m: m.value for enum in (Channel, Action) for m in enum}


# A file's records mostly share their topic and evidence: check each text once.
@lru_cache(maxsize=1024)
def _topic(value: str) -> tuple[str, tuple[FieldViolation, ...]]:
    v = val.Violations()
    return val.topic(v, value), tuple(v.items)


@lru_cache(maxsize=1024)
def _evidence(value: str, max_bytes: int) -> tuple[str, tuple[FieldViolation, ...]]:
    v = val.Violations()
    return val.evidence(v, value, max_bytes=max_bytes), tuple(v.items)


def validate_record(
    raw: RawImportRecord,
    *,
    tenant_id: str,
    region: str | None,
    now_ms: int,
    principal: str,
    max_evidence_bytes: int = val.MAX_EVIDENCE_BYTES,
) -> ImportItem | Problem:
    """The record as an event to import, or the problem that makes it invalid."""
    fast = _valid_record(raw, tenant_id, region, now_ms, principal, max_evidence_bytes)
    if fast is not None:
        return fast
    v = val.Violations()
    rcpt: Recipient | None = None
    if raw.recipient is None:
        v.add("recipient", "is required")
    elif raw.recipient.channel is None:
        v.add("recipient.channel", "must be one of WHATSAPP, SMS, EMAIL, RCS, VOICE")
    else:
        try:
            rcpt = Recipient(
                raw.recipient.channel,
                normalise_address(raw.recipient.channel, raw.recipient.address, region),
            )
        except AddressError as exc:
            v.add("recipient.address", str(exc))
    norm_topic, bad_topic = _topic(raw.topic)
    v.items.extend(bad_topic)
    if raw.action is None:
        v.add("action", "must be CONSENT_ACTION_OPT_OUT or CONSENT_ACTION_OPT_IN")
    if raw.source is not Source.IMPORT:
        v.add("source", "must be unset or SOURCE_IMPORT (put the original source in evidence)")
    text, bad_evidence = _evidence(raw.evidence, max_evidence_bytes)
    v.items.extend(bad_evidence)
    given = val.timestamp_ms(v, raw.occurred_at, "occurred_at")
    if raw.occurred_at is None:
        v.add("occurred_at", "is required: an undated record cannot be ordered")
    external = val.identifier(v, raw.external_id, "external_id")
    when = val.event_time(v, given, now_ms, "occurred_at", opt_out=raw.action is not Action.OPT_IN)
    if v.items or rcpt is None or raw.action is None:
        first = v.items[0] if v.items else FieldViolation("record", "is invalid")
        more = f" (and {len(v.items) - 1} more)" if len(v.items) > 1 else ""
        return Problem(raw.line, Outcome.INVALID, first.field, mask_text(first.description) + more)
    return ImportItem(
        raw.line,
        ConsentEventInput(
            tenant_id=tenant_id,
            recipient=rcpt,
            topic=norm_topic,
            action=raw.action,
            source=Source.IMPORT,
            evidence=when.evidence(text, "occurred_at", max_evidence_bytes),
            occurred_at_ms=when.ms,
            event_id=event_id_for(rcpt, norm_topic, raw.action, when.ms, external),
            principal=principal,
        ),
    )


def _valid_record(
    raw: RawImportRecord,
    tenant_id: str,
    region: str | None,
    now_ms: int,
    principal: str,
    max_evidence_bytes: int,
) -> ImportItem | None:
    """validate_record's answer for a record with nothing wrong and a time not after
    ``now_ms`` (a file's usual record), without its intermediate objects (violation
    list, event time); None for any other record, which validate_record then checks
    field by field. The checks are validate_record's own, in the same terms."""
    rr = raw.recipient
    ts = raw.occurred_at
    action = raw.action
    if (
        rr is None
        or rr.channel is None
        or ts is None
        or action is None
        or raw.source is not Source.IMPORT
        or not (0 <= ts.nanos < 1_000_000_000)
        or not (0 <= ts.seconds <= val.MAX_TS_SECONDS)
    ):
        return None
    ms = ts.seconds * 1000 + ts.nanos // 1_000_000
    if ms > now_ms:
        return None  # event_time clamps it (and notes the given time in the evidence)
    external = raw.external_id
    if external and not val.ID_RE.fullmatch(external):
        return None
    topic, bad_topic = _topic(raw.topic)
    text, bad_evidence = _evidence(raw.evidence, max_evidence_bytes)
    if bad_topic or bad_evidence:
        return None
    try:
        rcpt = Recipient(rr.channel, normalise_uncached(rr.channel, rr.address, region))
    except AddressError:
        return None
    return ImportItem(
        raw.line,
        ConsentEventInput(
            tenant_id,
            rcpt,
            topic,
            action,
            Source.IMPORT,
            text,
            ms,
            event_id_for(rcpt, topic, action, ms, external),
            principal,
        ),
    )


@fast_init
@dataclass(frozen=True, slots=True)
class ScopeRecord:
    """A scope's record as the store holds it: status and time (ms), revision."""

    status: Status
    occurred_at_ms: int
    revision: int


@dataclass(slots=True)
class RecipientView:
    """What the store holds for one recipient, as far as an import needs it.

    ``scopes``: the live records by state-hash field (``s:<topic>``, ``s:*``);
    ``tombstone``: the erasure tombstone's records by field; ``erased_at``: the
    erasure's time (ms) or None; ``seen``: the batch's event ids that are known, each
    with the change it recorded (``fingerprint``)."""

    scopes: dict[str, ScopeRecord] = field(default_factory=dict)
    tombstone: dict[str, ScopeRecord] = field(default_factory=dict)
    erased_at: int | None = None
    seen: dict[str, str] = field(default_factory=dict)

    def record(self, scope: str) -> ScopeRecord | None:
        """The deciding record of a scope: the newer of the live and the tombstone one."""
        return newer(self.scopes.get(scope), self.tombstone.get(scope))


def scope_field(topic: str) -> str:
    """The state-hash field of a scope (the store's names: ``s:<topic>``, ``s:*``)."""
    return "s:" + (topic or "*")


def covering_opt_out(view: RecipientView, event: ConsentEventInput) -> ScopeRecord | None:
    """The newest opt-out that covers the event's scope (see the module docstring)."""
    if event.topic:
        fields: Iterable[str] = (scope_field(event.topic), ALL_SCOPES)
    else:
        fields = set(view.scopes) | set(view.tombstone)
    newest: ScopeRecord | None = None
    for f in fields:
        for rec in (view.scopes.get(f), view.tombstone.get(f)):
            if (
                rec is not None
                and rec.status is Status.OPTED_OUT
                and (newest is None or rec.occurred_at_ms > newest.occurred_at_ms)
            ):
                newest = rec
    return newest


def needs_view(item: ImportItem, *, proof: bool) -> bool:
    """Whether planning this record needs the store's view of its recipient (only an
    opt-in that may apply does; opt-outs go straight to the store's script)."""
    return proof and item.event.action is Action.OPT_IN


def fingerprint(event: ConsentEventInput) -> str:
    """The change an event id stands for, as record_event.lua compares it on a replay."""
    return f"{_VALUE[event.action]}:{event.topic}"


def simulate(item: ImportItem, view: RecipientView, *, proof: bool) -> str:
    """The outcome of importing one record on top of ``view``, which it then updates
    as the store would (so the next record of the same recipient sees it).

    The order of the checks is the store's: no proof, a covering opt-out (both are
    import rules, decided before anything reaches the store), then a known event id
    (duplicate), then the erasure, then the scope's time ordering."""
    e = item.event
    seen = view.seen.get(e.event_id)
    if e.action is Action.OPT_IN:
        if not proof:
            return Outcome.SKIPPED_NO_PROOF
        if seen is None:
            blocker = covering_opt_out(view, e)
            if blocker is not None and blocker.occurred_at_ms >= e.occurred_at_ms:
                return Outcome.SKIPPED_OPTED_OUT
    if seen is not None:
        # record_event.lua's idempotency: the first outcome stands for the same change;
        # the same id for another change is refused, not silently taken as a replay.
        return Outcome.DUPLICATE if seen == fingerprint(e) else Outcome.REUSED
    if view.erased_at is not None and e.occurred_at_ms <= view.erased_at:
        if e.action is Action.OPT_OUT:
            field_ = scope_field(e.topic)
            kept = view.tombstone.get(field_)
            if kept is None or kept.status is not Status.OPTED_OUT:
                view.tombstone[field_] = ScopeRecord(Status.OPTED_OUT, view.erased_at, 0)
        return Outcome.IGNORED_ERASED
    view.seen[e.event_id] = fingerprint(e)
    field_ = scope_field(e.topic)
    before = view.record(field_)
    if before is not None and e.occurred_at_ms < before.occurred_at_ms:
        return Outcome.IGNORED_OLDER
    revision = max((r.revision for r in view.scopes.values()), default=0) + 1
    view.scopes[field_] = ScopeRecord(e.action.status, e.occurred_at_ms, revision)
    if before is not None and before.status is e.action.status:
        return Outcome.APPLIED
    return Outcome.CHANGED


@dataclass(frozen=True, slots=True)
class Plan:
    """A batch's plan: the items to hand to the store (in stream order) and the
    outcomes decided without it (skipped opt-ins), by position in the batch."""

    apply: list[int]
    decided: dict[int, str]


def plan_batch(
    items: Sequence[ImportItem], views: dict[Recipient, RecipientView], *, proof: bool
) -> Plan:
    """Which items of a batch go to the store. ``views`` holds a view of every
    recipient for which ``needs_view`` was true for some item (it is updated)."""
    apply: list[int] = []
    decided: dict[int, str] = {}
    for i, item in enumerate(items):
        view = views.get(item.event.recipient)
        if item.event.action is Action.OPT_IN and not proof:
            decided[i] = Outcome.SKIPPED_NO_PROOF
            continue
        if view is None:
            apply.append(i)
            continue
        outcome = simulate(item, view, proof=proof)
        if outcome in (Outcome.SKIPPED_NO_PROOF, Outcome.SKIPPED_OPTED_OUT):
            decided[i] = outcome
        else:
            apply.append(i)
    return Plan(apply, decided)


# The outcomes a record is reported for (problem_for), beside being counted.
PROBLEM_OUTCOMES = frozenset((Outcome.SKIPPED_NO_PROOF, Outcome.SKIPPED_OPTED_OUT, Outcome.REUSED))


def problem_for(item: ImportItem, outcome: str) -> Problem:
    """The problem to report for an outcome of PROBLEM_OUTCOMES."""
    if outcome == Outcome.REUSED:
        return Problem(
            item.line,
            Outcome.INVALID,
            "external_id",
            "was already used for a different change of this recipient "
            "(another action or topic); nothing written",
        )
    scope = f"topic '{item.event.topic}'" if item.event.topic else "all topics"
    if outcome == Outcome.SKIPPED_NO_PROOF:
        return Problem(
            item.line,
            outcome,
            "",
            f"opt-in to {scope} skipped: the import does not declare proof of consent "
            "(--opt-ins-have-proof / opt_ins_have_proof)",
        )
    if outcome == Outcome.SKIPPED_OPTED_OUT:
        return Problem(
            item.line,
            outcome,
            "",
            f"opt-in to {scope} skipped: the service holds an opt-out covering it dated at "
            "or after it; an import never re-subscribes",
        )
    raise ValueError(f"no problem is reported for a record {outcome}")
