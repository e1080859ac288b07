"""The bulk use cases: ImportConsent (a stream of records in) and ExportConsent (out).

The rules of an import are in domain.imports (pure); this module validates the
stream, cuts it into batches, asks the store for the views a batch needs, plans it,
hands the planned events to the store and sums up. Memory is bounded by one batch
and MAX_PROBLEMS reported records, whatever the stream's length.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

from . import imports as imp
from . import validation as val
from .errors import InvalidArgument, TenantNotFound
from .imports import ImportItem, ImportSummary, Outcome, Problem, RawImportRecord
from .model import Channel, ExportPage, ExportQuery, Recipient, Status
from .ports import BulkConsentStore, ConsentStore

DEFAULT_BATCH = 2000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class ImportMessage:
    """One decoded ImportConsentRequest. ``options_set``: proof or dry_run was set."""

    tenant_id: str
    opt_ins_have_proof: bool
    dry_run: bool
    records: Sequence[RawImportRecord]


@dataclass(frozen=True, slots=True)
class RawExportQuery:
    """ExportConsentRequest as plain values; ``channel_known`` False for an unknown
    channel number, ``status`` "" for unspecified or a Status value name."""

    tenant_id: str
    channel: Channel | None
    channel_known: bool
    topic: str
    status: str
    updated_since: val.RawTimestamp | None


class BulkConsent:
    """ImportConsent and ExportConsent on a BulkConsentStore."""

    def __init__(
        self,
        store: ConsentStore,
        bulk: BulkConsentStore,
        *,
        default_region: str | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self._store = store
        self._bulk = bulk
        self._default_region = default_region
        self._clock_ms = clock_ms
        self._batch_size = batch_size

    async def _tenant_region(self, tenant_id: str) -> str | None:
        v = val.Violations()
        tenant = val.tenant_id(v, tenant_id)
        v.raise_if_any()
        settings = await self._store.tenant_lookup(tenant)
        if settings is None:
            raise TenantNotFound(tenant)
        return settings.default_region or self._default_region

    async def import_stream(
        self, messages: AsyncIterator[ImportMessage], principal: str
    ) -> ImportSummary:
        """Import every record of the stream; see domain.imports for the rules.

        The first message names the tenant and the options. A later message naming
        another tenant or setting options, or any message of more than
        MAX_RECORDS_PER_MESSAGE records, fails the call (INVALID_ARGUMENT); the batches
        before it stay applied. Bad records are counted and reported, never fatal."""
        first: ImportMessage | None = None
        summary = ImportSummary()
        batch: list[ImportItem] = []
        region: str | None = None
        position = 0
        # One batch is applied while the next one is read and validated: the store's
        # round trips overlap the validation's CPU. Batches apply in stream order: the
        # first one completes before the next starts; after it, a batch that needs no
        # view of the store is handed over as soon as the one before it has its writes
        # queued ahead (the store's ``queued``), so Redis applies one batch while the
        # server builds the next one's calls. A batch that needs views waits for the one
        # before it to be written. At most two batches in flight.
        flights: list[_Flight] = []
        started = 0

        def start(f: ImportMessage, items: list[ImportItem]) -> None:
            nonlocal started
            before = flights[-1] if flights else None
            flight = _Flight(asyncio.Event(), asyncio.Event(), leads=started == 0)
            flight.task = asyncio.ensure_future(self._flush(f, items, summary, before, flight))
            flight.task.add_done_callback(lambda _: flight.finished.set())
            flights.append(flight)
            started += 1

        async def admit(f: ImportMessage, items: list[ImportItem]) -> None:
            """Wait until the next batch (``items``) may be handed to the store."""
            if not flights:
                return
            last = flights[-1]
            if started == 1 or self._needs_views(f, items):
                await last.finished.wait()
            else:
                await last.queued.wait()
            # At most two in flight; a finished batch's error is raised here.
            while flights and (len(flights) >= 2 or flights[0].finished.is_set()):
                await flights.pop(0).task

        try:
            async for message in messages:
                if first is None:
                    first = message
                    region = await self._tenant_region(message.tenant_id)
                    summary.dry_run = message.dry_run
                else:
                    _check_later(message, first.tenant_id)
                if len(message.records) > imp.MAX_RECORDS_PER_MESSAGE:
                    raise InvalidArgument.single(
                        "records", f"must be at most {imp.MAX_RECORDS_PER_MESSAGE} per message"
                    )
                now = self._clock_ms()
                for raw in message.records:
                    position += 1
                    summary.records += 1
                    line = raw.line if raw.line > 0 else position
                    checked = imp.validate_record(
                        raw if raw.line == line else replace(raw, line=line),
                        tenant_id=first.tenant_id,
                        region=region,
                        now_ms=now,
                        principal=principal,
                    )
                    if isinstance(checked, Problem):
                        summary.count(Outcome.INVALID)
                        summary.report(checked)
                        continue
                    batch.append(checked)
                    if len(batch) >= self._batch_size:
                        await admit(first, batch)
                        start(first, batch)
                        batch = []
            if first is None:
                raise InvalidArgument.single("tenant_id", "is required: the stream sent no message")
            if batch:
                await admit(first, batch)
                start(first, batch)
            while flights:
                await flights.pop(0).task
        finally:
            if flights:
                # The stream failed meanwhile: the batches in flight still complete
                # (their records were valid), and their outcome is not lost as an
                # unseen error.
                await asyncio.gather(*(f.task for f in flights), return_exceptions=True)
        return summary

    def _needs_views(self, first: ImportMessage, items: Sequence[ImportItem]) -> bool:
        if first.dry_run:
            return True
        proof = first.opt_ins_have_proof
        return any(imp.needs_view(item, proof=proof) for item in items)

    async def _flush(
        self,
        first: ImportMessage,
        items: list[ImportItem],
        summary: ImportSummary,
        before: _Flight | None,
        flight: _Flight,
    ) -> None:
        try:
            outcomes = await self._outcomes(first, items, flight)
        finally:
            flight.queued.set()  # also when it failed: nothing of it is left to overtake
        if before is not None:
            await before.finished.wait()  # the summary takes the batches in order
        # Counted once per distinct outcome (a batch's records mostly share one);
        # only the outcomes that report a problem are looked at one by one.
        for outcome, n in Counter(outcomes).items():
            summary.count(outcome, n)
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome in imp.PROBLEM_OUTCOMES:
                summary.report(imp.problem_for(item, outcome))

    async def _outcomes(
        self, first: ImportMessage, items: list[ImportItem], flight: _Flight
    ) -> list[str]:
        """Each item's outcome: simulated (dry run) or planned and applied."""
        proof, dry = first.opt_ins_have_proof, first.dry_run
        wanted: dict[Recipient, list[str]] = {}
        for item in items:
            if dry or imp.needs_view(item, proof=proof):
                wanted.setdefault(item.event.recipient, [])
        if wanted:
            for item in items:
                ids = wanted.get(item.event.recipient)
                if ids is not None:
                    ids.append(item.event.event_id)
            got = await self._bulk.views(first.tenant_id, list(wanted.items()))
            views = dict(zip(wanted, got, strict=True))
        else:
            views = {}
        outcomes: list[str] = [""] * len(items)
        if dry:
            for i, item in enumerate(items):
                outcomes[i] = imp.simulate(item, views[item.event.recipient], proof=proof)
        else:
            plan = imp.plan_batch(items, views, proof=proof)
            for i, outcome in plan.decided.items():
                outcomes[i] = outcome
            if plan.apply:
                # The first batch of a stream passes no ``queued``: nothing overlaps it,
                # so the store may re-send it after loading its scripts.
                applied = await self._bulk.apply(
                    [items[i].event for i in plan.apply],
                    queued=None if flight.leads else flight.queued.set,
                )
                for i, outcome in zip(plan.apply, applied, strict=True):
                    outcomes[i] = outcome
        return outcomes

    async def export(self, raw: RawExportQuery) -> AsyncIterator[ExportPage]:
        """ExportConsent: validate the filters, then stream the store's pages."""
        v = val.Violations()
        tenant = val.tenant_id(v, raw.tenant_id)
        if not raw.channel_known:
            v.add("channel", "must be CHANNEL_UNSPECIFIED (all) or a known channel")
        scope: str | None = None
        if raw.topic == "*":
            scope = ""
        elif raw.topic:
            scope = val.topic(v, raw.topic)
        status: Status | None = None
        if raw.status in ("OPTED_IN", "OPTED_OUT"):
            status = Status[raw.status]
        elif raw.status:
            v.add("status", "must be unspecified (both), OPTED_IN or OPTED_OUT")
        since = val.timestamp_ms(v, raw.updated_since, "updated_since")
        v.raise_if_any()
        await self._tenant_region(tenant)
        query = ExportQuery(channel=raw.channel, scope=scope, status=status, since_ms=since)
        async for page in self._bulk.export(tenant, query):
            yield page


@dataclass(slots=True)
class _Flight:
    """One batch handed to the store: ``queued`` once its writes are queued ahead of
    any later batch's (or it is done), ``finished`` once it is done."""

    queued: asyncio.Event
    finished: asyncio.Event
    leads: bool
    """The stream's first batch: nothing overlaps it (it also loads the scripts)."""
    task: asyncio.Future[None] = field(init=False)


def _check_later(message: ImportMessage, tenant_id: str) -> None:
    v = val.Violations()
    if message.tenant_id and message.tenant_id != tenant_id:
        v.add("tenant_id", "must be empty or the first message's tenant in later messages")
    if message.opt_ins_have_proof or message.dry_run:
        v.add("opt_ins_have_proof", "may be set in the first message only (with dry_run)")
    v.raise_if_any()
