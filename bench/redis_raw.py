"""The raw read baseline: the same HMGETs BatchCheckConsent needs, pipelined by redis-py.

No gRPC, no validation, no decision: what a Python program pays just to read those
keys from Redis, with the client and parser (hiredis) the server itself uses, at
the same number of batches in flight as the load generator keeps open.

The keys are the ones the service reads for each recipient: its record bucket AND its
erasure tombstone (named by an HMAC under the tenant's secret, read from Redis), the
same two fields of each, over the same distinct batches the BatchCheck row sends.
The key names are computed before the clock starts: the baseline is the read alone.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time

import redis.asyncio as aioredis

from bench.load import percentile
from bench.model import LoadResult
from consent_server.domain.model import Channel, Recipient
from consent_server.store import keys
from consent_server.store.schema import adopt_recorded_layout
from consent_server.store.tombstones import TombstoneNames


def record_fields(tenant: str, address: str, topic: str) -> tuple[str, list[str]]:
    """A recipient's record bucket and the two fields a check reads there (its main
    field, holding the all-topics record, and its topic field), as the server names them."""
    rcpt = Recipient(Channel.SMS, address)
    field = keys.rfield(rcpt)
    return keys.layout(tenant, rcpt)[0], [field, field + "\x1f" + topic]


def read_keys(
    tenant: str, addresses: list[str], secret: bytes, topic: str
) -> list[tuple[str, list[str]]]:
    """What the service reads per recipient, in its order: the record bucket's two
    fields, then the tombstone's all-topics and topic scopes."""
    scopes = ["s:*", keys.scope_field(topic)]
    out: list[tuple[str, list[str]]] = []
    for address in addresses:
        rcpt = Recipient(Channel.SMS, address)
        out.append(record_fields(tenant, address, topic))
        out.append((keys.tombstone(tenant, rcpt, TombstoneNames.digest(secret, rcpt)), scopes))
    return out


async def _pipelined_reads(
    url: str,
    key_batches: list[list[tuple[str, list[str]]]],
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> LoadResult:
    client = aioredis.Redis.from_url(url, max_connections=max(concurrency, 1))
    batches_of_keys = key_batches
    latencies: list[float] = []
    batches = 0
    measure_from = time.perf_counter() + warmup_s
    stop_at = measure_from + duration_s
    cpu_at_start: list[float] = []
    cpu_batches = 0  # every batch finished after cpu_at_start, late ones too
    turn = 0

    async def worker() -> None:
        nonlocal batches, cpu_batches, turn
        while True:
            start = time.perf_counter()
            if start >= stop_at:
                return
            hash_keys = batches_of_keys[turn % len(batches_of_keys)]
            turn += 1
            pipe = client.pipeline(transaction=False)
            for key, fields in hash_keys:
                pipe.hmget(key, fields)
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
    batches: list[list[str]],
    topic: str,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
) -> LoadResult:
    """Batches per second of two HMGETs for each recipient (its record bucket's two
    fields, its tombstone's two scopes: read_keys), one pipeline per batch
    (``batches``: each batch's addresses, in turn).

    The tenant's erasure secret must exist (the server creates it on its first check)."""
    import redis

    with redis.Redis.from_url(url) as sync:
        adopt_recorded_layout(sync.hgetall(keys.META))
        secret = sync.get(keys.erasure_secret(tenant))
    if not isinstance(secret, bytes):
        raise RuntimeError(f"tenant {tenant!r} has no erasure secret yet: check once first")
    key_batches = [read_keys(tenant, addresses, secret, topic) for addresses in batches]
    return asyncio.run(_pipelined_reads(url, key_batches, concurrency, warmup_s, duration_s))


_RPS_RE = re.compile(r"([\d.]+) requests per second")


def redis_own_rate(
    port: int, tenant: str, addresses: list[str], topic: str, *, requests: int
) -> LoadResult | None:
    """Redis's own pipelined read rate: ``redis-benchmark`` (C) sending HMGETs of the
    record bucket of ``addresses[0]`` and of a tombstone-named key, 1,000 per pipeline
    over 4 connections; ``ok`` counts decisions (two HMGETs each). None without
    redis-benchmark. What no client can beat: the gap that remains is the client's."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    bucket, fields = record_fields(tenant, addresses[0], topic)
    rates = []
    for key, names in (
        (bucket, fields),
        (bucket + ":x-absent", ["s:*", keys.scope_field(topic)]),
    ):
        out = subprocess.run(
            [
                binary,
                "-p",
                str(port),
                "-n",
                str(requests),
                "-P",
                "1000",
                "-c",
                "4",
                "-q",
                "HMGET",
                key,
                *names,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        found = _RPS_RE.findall(out.replace("\r", "\n"))
        if not found:
            return None
        rates.append(float(found[-1]))
    # One decision = one HMGET of each kind, one after the other.
    per_decision_s = sum(1.0 / r for r in rates)
    return LoadResult(
        generator="redis-benchmark",
        ok=round(1.0 / per_decision_s),
        failed=0,
        duration_s=1.0,
        p50_ms=None,
        p99_ms=None,
    )
