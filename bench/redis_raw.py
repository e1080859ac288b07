"""The raw read baseline: the same HMGETs BatchCheckConsent needs, pipelined by redis-py.

No gRPC, no validation, no decision: what a Python program pays just to read those
keys from Redis, with the client and parser (hiredis) the server itself uses, at
the same number of batches in flight as the load generator keeps open.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from bench.load import percentile
from bench.model import LoadResult
from consent_server.domain.model import Channel, Recipient
from consent_server.store import keys


def state_keys(tenant: str, addresses: list[str]) -> list[tuple[str, str]]:
    """The recipients' record buckets and field names, exactly as the server names them."""
    out = []
    for a in addresses:
        rcpt = Recipient(Channel.SMS, a)
        out.append((keys.layout(tenant, rcpt)[0], keys.rfield(rcpt)))
    return out


async def _pipelined_reads(
    url: str,
    hash_keys: list[tuple[str, str]],
    fields: list[str],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> LoadResult:
    client = aioredis.Redis.from_url(url, max_connections=max(concurrency, 1))
    latencies: list[float] = []
    batches = 0
    measure_from = time.perf_counter() + warmup_s
    stop_at = measure_from + duration_s
    cpu_at_start: list[float] = []
    cpu_batches = 0  # every batch finished after cpu_at_start, late ones too

    async def worker() -> None:
        nonlocal batches, cpu_batches
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            pipe = client.pipeline(transaction=False)
            for key in hash_keys:
                pipe.hmget(key[0], [key[1], key[1] + "\x1f" + fields[1][2:]])
            await pipe.execute()
            end = time.perf_counter()
            if end >= measure_from:
                if cpu_at_start:
                    cpu_batches += 1
                else:
                    cpu_at_start.append(time.process_time())
            # Like h2load: what completes inside the measured window counts.
            if measure_from <= end <= stop_at:
                batches += 1
                latencies.append((end - start) * 1000.0)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu_s = time.process_time() - cpu_at_start[0] if cpu_at_start else 0.0
    finally:
        await client.aclose()
    latencies.sort()
    return LoadResult(
        generator="redis-py asyncio pipeline",
        ok=batches,
        failed=0,
        duration_s=duration_s,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        cpu_us_per_call=cpu_s / cpu_batches * 1e6 if cpu_batches else None,
    )


def pipelined_reads(
    url: str,
    tenant: str,
    addresses: list[str],
    topic: str,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> LoadResult:
    """Batches of HMGET(bucket, <field>, <field>\x1f<topic>) per second, one pipeline
    per batch: the record fields read_states.lua reads."""
    fields = ["s:*", keys.scope_field(topic)]
    return asyncio.run(
        _pipelined_reads(
            url, state_keys(tenant, addresses), fields, concurrency, warmup_s, duration_s
        )
    )
