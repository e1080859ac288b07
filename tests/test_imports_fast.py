"""validate_record's fast path (domain/imports.py ``_valid_record``) gives the answer of
its field-by-field checks, for records it takes and for those it leaves to them."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from consent_server.domain import imports as imp
from consent_server.domain import validation as val
from consent_server.domain.model import Action, Channel, Source

NOW = time.time_ns() // 1_000_000

addresses = st.one_of(
    st.from_regex(r"\+[1-9][0-9]{6,15}", fullmatch=True),
    st.sampled_from(["+14155550123", "+447700900123", "+4915112345678", "0044 7700 900123"]),
    st.sampled_from(["", " ", "+1", "+0123456789", "+1415555012a", "a@Example.com", "x" * 300]),
    st.text(max_size=20),
)
seconds = st.one_of(
    st.integers(-2, 253402300800),
    st.sampled_from([0, NOW // 1000, NOW // 1000 + 1, NOW // 1000 + 400, 253402300799]),
)
records = st.builds(
    imp.RawImportRecord,
    recipient=st.one_of(
        st.none(),
        st.builds(val.RawRecipient, st.one_of(st.none(), st.sampled_from(Channel)), addresses),
    ),
    topic=st.sampled_from(["", "marketing", "Bad Topic", "x" * 200, "news\n"]),
    action=st.one_of(st.none(), st.sampled_from(Action)),
    occurred_at=st.one_of(
        st.none(),
        st.builds(val.RawTimestamp, seconds, st.sampled_from([0, 999_999_999, -1, 10**9, 5])),
    ),
    source=st.one_of(st.none(), st.sampled_from(Source)),
    evidence=st.sampled_from(["", "consentctl import a.csv", "bad\x1b[31m", "é" * 600]),
    external_id=st.sampled_from(["", "ext-1", "has space", "x" * 129, "ok_" * 10]),
    line=st.integers(1, 10),
)


@given(records, st.sampled_from([None, "US", "GB"]))
def test_the_fast_path_answers_what_the_checks_do(
    raw: imp.RawImportRecord, region: str | None
) -> None:
    kw = {"tenant_id": "acme", "region": region, "now_ms": NOW, "principal": "k"}
    fast = imp.validate_record(raw, **kw)  # type: ignore[arg-type]
    taken = imp._valid_record
    imp._valid_record = lambda *_: None  # type: ignore[assignment]
    try:
        checked = imp.validate_record(raw, **kw)  # type: ignore[arg-type]
    finally:
        imp._valid_record = taken
    assert fast == checked


def test_a_files_usual_record_takes_the_fast_path() -> None:
    raw = imp.RawImportRecord(
        val.RawRecipient(Channel.SMS, "+14155550123"),
        "",
        Action.OPT_OUT,
        val.RawTimestamp(NOW // 1000 - 60, 0),
        Source.IMPORT,
        "consentctl import a.csv",
        "",
        2,
    )
    item = imp._valid_record(raw, "acme", None, NOW, "k", val.MAX_EVIDENCE_BYTES)
    assert item is not None
    assert item == imp.validate_record(
        raw, tenant_id="acme", region=None, now_ms=NOW, principal="k"
    )


def test_the_api_reads_a_messages_records_as_the_converters_do() -> None:
    """bulk_service._records, one loop per message, gives what convert's functions give
    for each record: unset recipient and time as None, unknown enum numbers as None,
    an unset source as SOURCE_IMPORT."""
    from consent_client.v1 import admin_pb2 as apb
    from consent_client.v1 import consent_pb2 as pb
    from consent_server.api import bulk_service
    from consent_server.api import convert as cv

    records = [
        apb.ImportRecord(
            recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550123"),
            topic="news",
            action=pb.CONSENT_ACTION_OPT_OUT,
            evidence="e",
            external_id="x1",
            line=3,
            source=pb.SOURCE_IMPORT,
        ),
        apb.ImportRecord(line=4),
        apb.ImportRecord(
            recipient=pb.Recipient(channel=99, address=""),  # type: ignore[arg-type]
            action=7,  # type: ignore[arg-type]
            source=42,  # type: ignore[arg-type]
        ),
        apb.ImportRecord(recipient=pb.Recipient(), source=pb.SOURCE_API),
    ]
    records[0].occurred_at.FromMilliseconds(1_790_000_000_123)
    records[2].occurred_at.seconds = -5
    expected = [
        imp.RawImportRecord(
            recipient=cv.optional_recipient(r.HasField("recipient"), r.recipient),
            topic=r.topic,
            action=bulk_service._ACTION_FROM_PB.get(r.action),
            occurred_at=cv.raw_timestamp(r.HasField("occurred_at"), r.occurred_at),
            source=cv.source(pb.SOURCE_IMPORT if r.source == pb.SOURCE_UNSPECIFIED else r.source),
            evidence=r.evidence,
            external_id=r.external_id,
            line=r.line,
        )
        for r in records
    ]
    assert bulk_service._records(records) == expected
