"""The scenarios: each a function ``(BenchContext) -> list[Row]``, listed in SCENARIOS.

A scenario measures one thing with ``ctx.load`` (the same generator for every
row, at the same concurrency and duration) and returns rows for the table. Rows
are referred to by ``key`` from ``bench.aims``. To add one, write a function here
or elsewhere and append it to SCENARIOS; it may start its own processes with
``bench.procs`` (stop them before returning). ``bench.measuring`` has the helpers
(``measure``: a load run with the server's CPU per call; ``row``). ``delivery`` lives in
``bench.delivery``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import redis

from bench import procs, redis_raw, workload
from bench.context import BenchContext
from bench.delivery import delivery
from bench.imports import bulk_import
from bench.measuring import measure, measure_distinct, row
from bench.memory import memory
from bench.model import Row
from bench.processes import processes
from bench.spread import spread

Scenario = Callable[[BenchContext], list[Row]]


def empty_handler(ctx: BenchContext) -> list[Row]:
    """The ceiling: CheckConsent's request bytes to a handler that returns at once."""
    request = workload.check_request()
    size = workload.probe(ctx.empty.target, workload.CHECK, request)
    r = measure(ctx, ctx.empty, workload.CHECK, request, response_size=size)
    return [row("empty", "empty grpc.aio handler (ceiling)", r)]


def check_consent(ctx: BenchContext) -> list[Row]:
    """CheckConsent on the real server: validate, normalise, one HMGET, decide, answer."""
    request = workload.check_request()
    size = workload.probe(ctx.consent.target, workload.CHECK, request)
    r = measure(ctx, ctx.consent, workload.CHECK, request, response_size=size)
    return [row("check", "CheckConsent", r)]


def _outbox_length(client: redis.Redis) -> int:
    return sum(int(client.xlen(key)) for key in client.scan_iter(match="ca:*:outbox", count=1000))


def send_if_allowed(ctx: BenchContext) -> list[Row]:
    """SendIfAllowed on the real server: decide and append to the outbox in one Lua script.

    Replies differ in size (ids, timestamps), so where the generator cannot see gRPC
    statuses, successes are counted where they land: one outbox entry per accepted send.
    """
    request = workload.send_request()
    workload.probe(ctx.consent.target, workload.SEND, request)
    client = ctx.redis.client()
    before: list[int] = []
    try:
        r = measure(
            ctx,
            ctx.consent,
            workload.SEND,
            request,
            on_measure_start=lambda: before.append(_outbox_length(client)),
        )
        appended = _outbox_length(client) - before[0] if before else None
    finally:
        client.close()
    if not ctx.load.sees_grpc_status and appended is not None:
        # Calls still in flight when h2load stops may land without being counted as done.
        answered = r.ok + r.failed
        r = replace(r, ok=min(appended, answered), failed=max(0, answered - appended))
    return [row("send", "SendIfAllowed (accepted)", r)]


_cold_rounds = [0]  # each round's cold addresses are new to the server


def batch_check(ctx: BenchContext) -> list[Row]:
    """BatchCheckConsent of ``batch_size`` distinct recipients per batch (BATCH_CYCLE
    addresses in turn), then batches of addresses never seen (cold normalisation), beside
    the raw pipelined read of the same keys (state hashes and tombstones) and batches."""
    size_n = ctx.options.batch_size
    in_flight = ctx.options.batch_in_flight
    count = workload.batch_count(size_n, ctx.options.batch_cycle)
    workload.probe(ctx.consent.target, workload.BATCH, workload.batch_request(size_n))
    opts = replace(ctx.options, connections=in_flight, streams=1)
    requests = workload.batch_requests(size_n, count)
    r = measure_distinct(ctx, ctx.consent, workload.BATCH, requests, options=opts)
    cold_count = max(in_flight, min(50_000, ctx.options.batch_cycle) // size_n)
    base = workload.COLD_BASE + _cold_rounds[0] * cold_count * size_n
    _cold_rounds[0] += 1
    cold_requests = workload.batch_requests(size_n, cold_count, base=base)
    cold = measure_distinct(
        ctx, ctx.consent, workload.BATCH, cold_requests, options=opts, once=True
    )
    raw = redis_raw.pipelined_reads(
        ctx.redis.url,
        workload.TENANT,
        [workload.batch_addresses(size_n, n) for n in range(count)],
        workload.TOPIC,
        concurrency=in_flight,
        warmup_s=ctx.options.warmup_s,
        duration_s=ctx.options.duration_s,
    )
    own = redis_raw.redis_own_rate(
        ctx.redis.port,
        workload.TENANT,
        workload.batch_addresses(size_n),
        workload.TOPIC,
        requests=200_000,
    )
    per_batch = f"times and CPU per batch of {size_n}"
    cycled = f"{count * size_n:,} addresses in turn"
    rows = [
        row(
            "batch",
            f"BatchCheckConsent x{size_n}",
            r,
            size_n,
            "decisions/s",
            f"{per_batch}; {cycled} (python generator)",
        ),
        row(
            "batch_cold",
            f"BatchCheckConsent x{size_n}, cold addresses",
            cold,
            size_n,
            "decisions/s",
            f"{per_batch}; {cold_count * size_n:,} addresses never seen, each once",
        ),
        row(
            "raw_hmget",
            f"raw pipelined HMGET x{2 * size_n} (redis-py)",
            raw,
            size_n,
            "decisions/s",
            f"{per_batch}; state hash + tombstone each; CPU of the client",
        ),
    ]
    if own is not None:
        rows.append(
            row(
                "redis_own",
                "Redis's own pipelined HMGET (redis-benchmark)",
                own,
                1,
                "decisions/s",
                "-P 1000 -c 4, two HMGETs per decision: Redis's ceiling",
            )
        )
    return rows


def uvloop(ctx: BenchContext) -> list[Row]:
    """CheckConsent and the empty handler, both on uvloop (servers started for the row,
    on the bench's Redis and data)."""
    request = workload.check_request()
    empty = procs.empty_server(["--uvloop"]).start()
    try:
        size = workload.probe(empty.target, workload.CHECK, request)
        r_empty = measure(ctx, empty, workload.CHECK, request, response_size=size)
    finally:
        empty.stop()
    consent = procs.consent_server(ctx.redis.url, uvloop=True).start()
    try:
        size = workload.probe(consent.target, workload.CHECK, request)
        r_check = measure(ctx, consent, workload.CHECK, request, response_size=size)
    finally:
        consent.stop()
    return [
        row("empty_uv", "empty grpc.aio handler, uvloop", r_empty),
        row("check_uv", "CheckConsent, uvloop", r_check),
    ]


def low_concurrency(ctx: BenchContext) -> list[Row]:
    """Latency with 2 calls in flight (1 connection x 2 streams): p99 is then service
    time, not queueing behind 64 calls."""
    request = workload.check_request()
    two = replace(ctx.options, connections=1, streams=2)
    rows = []
    for key, label, server in (
        ("empty_2", "empty grpc.aio handler, 2 in flight", ctx.empty),
        ("check_2", "CheckConsent, 2 in flight", ctx.consent),
    ):
        size = workload.probe(server.target, workload.CHECK, request)
        r = measure(ctx, server, workload.CHECK, request, response_size=size, options=two)
        rows.append(row(key, label, r))
    return rows


SCENARIOS: list[Scenario] = [
    empty_handler,
    check_consent,
    send_if_allowed,
    uvloop,
    low_concurrency,
    batch_check,
    delivery,
    processes,
    bulk_import,
    memory,
    spread,
]
