"""ImportConsent (client-streaming) and ExportConsent (server-streaming) handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.bulk import BulkConsent, ImportMessage, RawExportQuery
from consent_server.domain.imports import Outcome, RawImportRecord
from consent_server.domain.model import Action, ExportedRecord

from . import convert as cv
from .auth import current_principal
from .consent_service import Ctx
from .errors import abort

_ACTION_FROM_PB = {
    pb.CONSENT_ACTION_OPT_OUT: Action.OPT_OUT,
    pb.CONSENT_ACTION_OPT_IN: Action.OPT_IN,
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


def _record(r: apb.ImportRecord) -> RawImportRecord:
    return RawImportRecord(
        recipient=cv.optional_recipient(r.HasField("recipient"), r.recipient),
        topic=r.topic,
        action=_ACTION_FROM_PB.get(r.action),
        occurred_at=cv.raw_timestamp(r.HasField("occurred_at"), r.occurred_at),
        source=cv.source(pb.SOURCE_IMPORT if r.source == pb.SOURCE_UNSPECIFIED else r.source),
        evidence=r.evidence,
        external_id=r.external_id,
        line=r.line,
    )


async def _messages(
    requests: AsyncIterator[apb.ImportConsentRequest],
) -> AsyncIterator[ImportMessage]:
    async for m in requests:
        yield ImportMessage(
            tenant_id=m.tenant_id,
            opt_ins_have_proof=m.opt_ins_have_proof,
            dry_run=m.dry_run,
            records=[_record(r) for r in m.records],
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
