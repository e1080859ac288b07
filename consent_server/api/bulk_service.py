"""ImportConsent (client-streaming) and ExportConsent (server-streaming) handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.bulk import BulkConsent, ImportMessage, RawExportQuery
from consent_server.domain.imports import Outcome, RawImportRecord
from consent_server.domain.model import Action, ExportedRecord
from consent_server.domain.validation import RawRecipient, RawTimestamp

from . import convert as cv
from .auth import current_principal
from .consent_service import Ctx
from .errors import abort

_ACTION_FROM_PB = {
    pb.CONSENT_ACTION_OPT_OUT: Action.OPT_OUT,
    pb.CONSENT_ACTION_OPT_IN: Action.OPT_IN,
}
# An ImportRecord's source: unset means SOURCE_IMPORT here (convert.source of it).
_SOURCE_FROM_PB = {
    n: cv.source(pb.SOURCE_IMPORT if n == pb.SOURCE_UNSPECIFIED else n) for n in pb.Source.values()
}
_PROBLEM_TO_PB = {
    Outcome.INVALID: apb.IMPORT_PROBLEM_KIND_INVALID,
    Outcome.SKIPPED_NO_PROOF: apb.IMPORT_PROBLEM_KIND_SKIPPED_NO_PROOF,
    Outcome.SKIPPED_OPTED_OUT: apb.IMPORT_PROBLEM_KIND_SKIPPED_OPTED_OUT,
}
_STATUS_NAMES = {
    pb.CONSENT_STATUS_UNSPECIFIED: "",
    pb.CONSENT_STATUS_OPTED_IN: "OPTED_IN",
    pb.CONSENT_STATUS_OPTED_OUT: "OPTED_OUT",
}


def _records(records: Iterable[apb.ImportRecord]) -> list[RawImportRecord]:
    """A message's records as the domain takes them: what convert.optional_recipient,
    raw_timestamp and source give for each, in one loop (no calls of their own per
    record: a message holds up to 1,000 of them)."""
    channel_of = cv.CHANNEL_FROM_PB.get
    action_of = _ACTION_FROM_PB.get
    source_of = _SOURCE_FROM_PB.get
    out: list[RawImportRecord] = []
    append = out.append
    for r in records:
        rc = r.recipient if r.HasField("recipient") else None
        ts = r.occurred_at if r.HasField("occurred_at") else None
        append(
            RawImportRecord(
                None if rc is None else RawRecipient(channel_of(rc.channel), rc.address),
                r.topic,
                action_of(r.action),
                None if ts is None else RawTimestamp(ts.seconds, ts.nanos),
                source_of(r.source),
                r.evidence,
                r.external_id,
                r.line,
            )
        )
    return out


async def _messages(
    requests: AsyncIterator[apb.ImportConsentRequest],
) -> AsyncIterator[ImportMessage]:
    async for m in requests:
        yield ImportMessage(
            tenant_id=m.tenant_id,
            opt_ins_have_proof=m.opt_ins_have_proof,
            dry_run=m.dry_run,
            records=_records(m.records),
        )


class BulkHandlers:
    """The bulk RPCs of ConsentAdminService."""

    def __init__(self, bulk: BulkConsent) -> None:
        self._bulk = bulk

    async def ImportConsent(
        self, request_iterator: AsyncIterator[apb.ImportConsentRequest], context: Ctx
    ) -> apb.ImportConsentResponse:
        try:
            s = await self._bulk.import_stream(_messages(request_iterator), current_principal())
        except Exception as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from exc
        return apb.ImportConsentResponse(
            records=s.records,
            applied=s.applied,
            changed=s.changed,
            ignored_older=s.ignored_older,
            ignored_erased=s.ignored_erased,
            skipped_no_proof=s.skipped_no_proof,
            skipped_opted_out=s.skipped_opted_out,
            invalid=s.invalid,
            duplicates=s.duplicates,
            problems=[
                apb.ImportProblem(
                    line=p.line,
                    kind=_PROBLEM_TO_PB[p.kind],
                    field=p.field,
                    description=p.description,
                )
                for p in s.problems
            ],
            problems_omitted=s.problems_omitted,
            dry_run=s.dry_run,
        )

    async def ExportConsent(
        self, request: apb.ExportConsentRequest, context: Ctx
    ) -> AsyncIterator[apb.ExportConsentResponse]:
        channel = cv.raw_recipient(pb.Recipient(channel=request.channel)).channel
        query = RawExportQuery(
            tenant_id=request.tenant_id,
            channel=channel,
            channel_known=channel is not None or request.channel == pb.CHANNEL_UNSPECIFIED,
            topic=request.topic,
            status=_STATUS_NAMES.get(request.status, "?"),
            updated_since=cv.raw_timestamp(
                request.HasField("updated_since"), request.updated_since
            ),
        )
        try:
            async for page in self._bulk.export(query):
                yield apb.ExportConsentResponse(
                    records=[_exported(r) for r in page.records],
                    keys_scanned=page.keys_scanned,
                    keys_total=page.keys_total,
                )
        except Exception as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from exc


def _exported(r: ExportedRecord) -> apb.ExportedRecord:
    rec = r.record
    return apb.ExportedRecord(
        recipient=cv.recipient(r.recipient),
        topic=r.topic,
        status=cv.status(rec.status),
        occurred_at=cv.timestamp(rec.occurred_at_ms),
        source=cv.source_to_pb(rec.source),
        event_id=rec.event_id,
        revision=rec.revision,
    )


__all__ = ["BulkHandlers"]
