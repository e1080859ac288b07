"""Bulk import: records/s that `consentctl import` gets into the real redis-server,
beside a raw redis-py pipelined write of the same records in the same run.

The import side is consentctl's own code path (``consent_server.cli.transfer.run_import``
reading a CSV file, streaming ImportConsent from this one client process) into a new
tenant per round, so no record is a duplicate. The baseline writes, for each record,
the one HSET of its scope record to the recipient's state hash as the server names it,
pipelined 1,000 commands at a time from this process with redis-py: what a Python
program pays just to put those records into Redis, with none of the import's rules,
history or idempotency. It writes less than the import must: per record the import
also writes the revision and the event id's outcome into that hash and a history
stream entry (a new stream per new recipient), after checking the tombstone. Both rows
note redis-server's own CPU per record, so the gap shows where it is.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from bench.context import BenchContext
from bench.cpu import process_cpu_s
from bench.model import Row
from consent_client import ConsentClient
from consent_server.cli import transfer
from consent_server.domain.model import Channel, Recipient
from consent_server.store import keys
from consent_server.store.schema import adopt_recorded_layout

# Records per round: 25,000 per second of --duration (the default 4 s: 100,000).
PER_SECOND = 25_000
_round = itertools.count(1)


def records_for(duration_s: float) -> int:
    """How many records a round imports."""
    return max(5_000, min(400_000, int(PER_SECOND * duration_s)))


def _address(i: int) -> str:
    return f"+1415{i:07d}"


def _csv(workdir: Path, records: int) -> Path:
    path = workdir / f"import-{records}.csv"
    if not path.exists():
        with path.open("w") as f:
            f.write("address,occurred_at\n")
            for i in range(records):
                f.write(f"{_address(i)},2026-10-01T00:00:{i % 60:02d}Z\n")
    return path


def _raw_write(url: str, tenant: str, records: int) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:
        adopt_recorded_layout(client.hgetall(keys.META))
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for i in range(records):
            rcpt = Recipient(Channel.SMS, _address(i))
            pipe.hset(
                keys.layout(tenant, rcpt)[0],
                keys.rfield(rcpt),
                f"1;o{1790000000000:x},1,i,imp_{i}",  # the record field, roughly packed
            )
            if (i + 1) % 1000 == 0:
                pipe.execute()
        pipe.execute()
        return time.perf_counter() - started
    finally:
        client.close()


def _redis_cpu_s(url: str) -> float:
    """redis-server's CPU seconds so far (user + system), from INFO."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        client.close()


def bulk_import(ctx: BenchContext) -> list[Row]:
    """ImportConsent of opt-outs from a CSV file, beside the raw pipelined HSET."""
    records = records_for(ctx.options.duration_s)
    path = _csv(ctx.workdir, records)
    n = next(_round)
    tenant = f"bench-import-{n}"
    with ConsentClient(ctx.consent.target, timeout=600) as client:
        client.create_tenant(tenant)
        cols = transfer.Columns(default_action="opt_out")
        server0 = process_cpu_s(ctx.consent.pid)
        redis0 = _redis_cpu_s(ctx.redis.url)
        started = time.perf_counter()
        cpu0 = time.process_time()
        totals, _ = transfer.run_import(client, tenant, path, cols, chunk=records, restart=True)
        took = time.perf_counter() - started
        client_cpu = time.process_time() - cpu0
        server1 = process_cpu_s(ctx.consent.pid)
        redis1 = _redis_cpu_s(ctx.redis.url)
    server_us = (
        (server1 - server0) / records * 1e6 if server0 is not None and server1 is not None else None
    )
    raw_s = _raw_write(ctx.redis.url, f"bench-raw-{n}", records)
    redis2 = _redis_cpu_s(ctx.redis.url)
    failed = records - totals.applied
    return [
        Row(
            "import",
            f"ImportConsent x{records} (consentctl import, CSV)",
            records / took,
            "records/s",
            failed=failed,
            cpu_us=server_us,
            note=f"CPU per record: the server's; the client's {client_cpu / records * 1e6:.1f} us"
            f", redis-server's {(redis1 - redis0) / records * 1e6:.1f} us"
            "; aim >= 50,000 records/s",
        ),
        Row(
            "raw_hset",
            f"raw pipelined HSET x{records} (redis-py)",
            records / raw_s,
            "records/s",
            note="one HSET per record, 1,000 per pipeline; redis-server's CPU per record "
            f"{(redis2 - redis1) / records * 1e6:.1f} us",
        ),
    ]
