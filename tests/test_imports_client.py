"""The thin clients' import_consent / export_consent / check_consent(at=...), sync and
async twins, against the server in this process (embedded store)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from consent_client import AsyncConsentClient, ConsentClient, InvalidArgument
from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb

from .inprocess import serving

BASE = datetime.now(UTC).replace(microsecond=0)


def record(
    address: str, minutes_ago: int, action: int = pb.CONSENT_ACTION_OPT_OUT
) -> apb.ImportRecord:
    ts = Timestamp()
    ts.FromDatetime(BASE - timedelta(minutes=minutes_ago))
    return apb.ImportRecord(
        recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address=address),
        action=action,  # type: ignore[arg-type]
        occurred_at=ts,
    )


async def test_async_and_sync_clients_import_export_and_ask_about_the_past() -> None:
    async with serving() as srv:
        target = f"127.0.0.1:{srv.services.port}"
        async with AsyncConsentClient(target) as client:
            summary = await client.import_consent(
                "acme", [[record("+14155550170", 30)], [record("+14155550171", 20)]]
            )
            assert (summary.records, summary.applied) == (2, 2)
            dry = await client.import_consent("acme", [[record("+14155550172", 10)]], dry_run=True)
            assert dry.dry_run and dry.applied == 1
            pages = [p async for p in client.export_consent("acme", channel="sms")]
            addresses = sorted(r.recipient.address for p in pages for r in p.records)
            assert addresses == ["+14155550170", "+14155550171"]
            past = await client.check_consent(
                "acme", "sms", "+14155550170", "m", at=datetime.now(UTC) - timedelta(minutes=40)
            )
            assert past.allowed and not past.raw.HasField("deciding_event")
            now = await client.check_consent(
                "acme", "sms", "+14155550170", "m", at=datetime.now(UTC)
            )
            assert not now.allowed and now.raw.deciding_event.source == pb.SOURCE_IMPORT
            with pytest.raises(InvalidArgument):
                await client.import_consent("Bad Tenant", [[record("+14155550170", 1)]])

        def sync_side() -> None:
            with ConsentClient(target) as client:
                again = client.import_consent("acme", [[record("+14155550170", 30)]])
                assert again.duplicates == 1
                rows = [
                    r for p in client.export_consent("acme", status="opted_out") for r in p.records
                ]
                assert len(rows) == 2
                items = client.batch_check_consent(
                    "acme",
                    [("sms", "+14155550171")],
                    "m",
                    at=datetime.now(UTC) - timedelta(hours=1),
                )
                assert items[0].decision is not None and items[0].decision.allowed
                with pytest.raises(InvalidArgument):
                    list(client.export_consent("acme", topic="Bad Topic!"))

        await asyncio.to_thread(sync_side)
