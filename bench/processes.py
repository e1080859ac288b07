"""N processes vs 1: what ``CONSENT_PROCESSES=2`` buys, beside what it buys a handler
that does nothing.

CheckConsent on the real server with ``CONSENT_PROCESSES=1`` and ``=2`` (the supervisor
and two server processes sharing the port with ``SO_REUSEPORT``), and the empty handler
the same way: one ``bench.empty_server``, then two on one port. All four rows use the
same load, spread over at least 16 connections so that the kernel's per-connection
spread gives both processes a fair share. The server's CPU per call counts every
process of the tree (supervisor and children). On a 2-core machine the load generator
and Redis share the cores with the servers, so the empty handler itself scales well
below 2x; the ratio of the two ratios is the figure to read.
"""

from __future__ import annotations

from dataclasses import replace

from bench import procs, workload
from bench.context import BenchContext
from bench.cpu import process_cpu_s
from bench.measuring import row
from bench.model import BenchOptions, LoadResult, Row

MIN_CONNECTIONS = 16


def _options(ctx: BenchContext) -> BenchOptions:
    connections = max(ctx.options.connections, MIN_CONNECTIONS)
    streams = max(1, ctx.options.concurrency // connections)
    return replace(ctx.options, connections=connections, streams=streams)


def _tree_cpu_s(pid: int) -> float | None:
    times = [process_cpu_s(p) for p in procs.process_tree(pid)]
    return None if any(t is None for t in times) else sum(t for t in times if t is not None)


def _measure(ctx: BenchContext, pids: list[int], target: str) -> LoadResult:
    """CheckConsent load on ``target``; CPU per call summed over ``pids`` and children."""
    request = workload.check_request()
    size = workload.probe(target, workload.CHECK, request)
    cpu: list[float | None] = []

    def total() -> float | None:
        parts = [_tree_cpu_s(p) for p in pids]
        return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)

    r = ctx.load.run(
        target,
        workload.CHECK,
        request.SerializeToString(),
        duration_s=ctx.options.duration_s,
        options=_options(ctx),
        response_size=size,
        on_measure_start=lambda: cpu.append(total()),
    )
    start, end, calls = (cpu or [None])[0], total(), r.ok + r.failed
    if start is None or end is None or calls == 0:
        return r
    return replace(r, cpu_us_per_call=(end - start) / calls * 1e6)


def _empty(ctx: BenchContext, n: int) -> LoadResult:
    first = procs.empty_server(["--reuse-port"]).start()
    servers = [first]
    try:
        for _ in range(n - 1):
            servers.append(procs.empty_server(["--reuse-port"], port=first.port).start())
        return _measure(ctx, [s.pid for s in servers], first.target)
    finally:
        for s in servers:
            s.stop()


def _consent(ctx: BenchContext, n: int) -> LoadResult:
    server = procs.consent_server(ctx.redis.url, processes=n).start()
    try:
        return _measure(ctx, [server.pid], server.target)
    finally:
        server.stop()


def processes(ctx: BenchContext) -> list[Row]:
    """CheckConsent and the empty handler, each with 1 and with 2 server processes."""
    o = _options(ctx)
    note = f"{o.connections} conn x {o.streams} streams; CPU: all processes"
    return [
        row("empty_p1", "empty handler, 1 process", _empty(ctx, 1), note=note),
        row("empty_p2", "empty handler, 2 processes (SO_REUSEPORT)", _empty(ctx, 2), note=note),
        row("check_p1", "CheckConsent, CONSENT_PROCESSES=1", _consent(ctx, 1), note=note),
        row("check_p2", "CheckConsent, CONSENT_PROCESSES=2", _consent(ctx, 2), note=note),
    ]
