"""Wiring: options -> processes -> scenarios (in rounds) -> one table."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bench import aims, environment, load, procs, report, workload
from bench.context import BenchContext
from bench.model import BenchOptions, Row
from bench.scenarios import SCENARIOS, Scenario


def parse_args(argv: Sequence[str] | None) -> BenchOptions:
    """Options from the command line."""
    names = [s.__name__ for s in SCENARIOS]
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load-test the consent server and print each figure beside a baseline "
        "measured in the same run (servers and redis-server are started on free ports).",
    )
    p.add_argument("--duration", type=float, default=4.0, help="seconds measured per row per round")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each row")
    p.add_argument(
        "--rounds", type=int, default=5, help="repeat all scenarios, interleaved; rates averaged"
    )
    p.add_argument("--connections", type=int, default=4, help="HTTP/2 connections")
    p.add_argument("--streams", type=int, default=16, help="concurrent streams per connection")
    p.add_argument("--batch-size", type=int, default=1000, help="recipients per BatchCheck")
    p.add_argument("--batch-in-flight", type=int, default=4, help="batches in flight at once")
    p.add_argument(
        "--batch-cycle",
        type=int,
        default=100_000,
        help="distinct addresses the batch rows send in turn (batches of --batch-size)",
    )
    p.add_argument(
        "--generator",
        choices=("auto", "h2load", "python"),
        default="auto",
        help="load generator (auto = h2load when installed)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round of 2 s (overrides the above)"
    )
    p.add_argument("--only", nargs="+", choices=names, default=[], help="run only these scenarios")
    p.add_argument(
        "--memory-recipients",
        type=int,
        default=1_000_000,
        help="recipients the memory scenario writes (a smaller N for a quick run)",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.warmup, a.rounds = 2.0, 0.5, 1
    if (
        a.duration <= 0
        or a.warmup < 0
        or a.rounds < 1
        or a.connections < 1
        or a.streams < 1
        or a.batch_in_flight < 1
        or a.batch_cycle < 1
    ):
        p.error("durations must be positive, rounds/connections/streams at least 1")
    if a.memory_recipients < 1:
        p.error("--memory-recipients must be at least 1")
    if not 1 <= a.batch_size <= 10_000:
        p.error("--batch-size must be between 1 and 10000 (the service's limit)")
    options = BenchOptions(
        duration_s=a.duration,
        warmup_s=a.warmup,
        connections=a.connections,
        streams=a.streams,
        batch_size=a.batch_size,
        batch_in_flight=a.batch_in_flight,
        batch_cycle=a.batch_cycle,
        generator=a.generator,
        only=tuple(a.only),
        rounds=a.rounds,
        memory_recipients=a.memory_recipients,
    )
    return options


def combine(rounds: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per key over all rounds: mean rate and CPU, median p50, worst p99, all failures.

    Rounds run every scenario in turn, so a baseline and its figure share the machine's
    ups and downs; averaging (rather than keeping each row's best round) keeps that.
    """
    by_key: dict[str, list[Row]] = {}
    for rows in rounds:
        for row in rows:
            by_key.setdefault(row.key, []).append(row)
    out = []
    for rows in by_key.values():
        p50s = [r.p50_ms for r in rows if r.p50_ms is not None]
        p99s = [r.p99_ms for r in rows if r.p99_ms is not None]
        cpus = [r.cpu_us for r in rows if r.cpu_us is not None]
        rates = [r.rate for r in rows if r.rate is not None]
        out.append(
            replace(
                rows[0],
                rate=statistics.fmean(rates) if rates else None,
                p50_ms=statistics.median(p50s) if p50s else None,
                p99_ms=max(p99s) if p99s else None,
                failed=sum(r.failed for r in rows),
                cpu_us=statistics.fmean(cpus) if cpus else None,
            )
        )
    return out


def run_scenarios(ctx: BenchContext, scenarios: Sequence[Scenario], rounds: int) -> list[Row]:
    """Every scenario once per round, in order, so baselines and figures stay interleaved."""
    results: list[list[Row]] = []
    for n in range(rounds):
        rows: list[Row] = []
        for scenario in scenarios:
            started = time.monotonic()
            rows += scenario(ctx)
            took = time.monotonic() - started
            print(
                f"  round {n + 1}/{rounds}: {scenario.__name__} ({took:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        results.append(rows)
    return combine(results)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench and print the table; returns the exit code."""
    options = parse_args(argv)
    rounds = options.rounds
    generator = load.choose(options.generator)
    scenarios = [s for s in SCENARIOS if not options.only or s.__name__ in options.only]
    with tempfile.TemporaryDirectory(prefix="consent-bench-") as tmp:
        workdir = Path(tmp)
        redis_server = procs.RedisServer(workdir / "redis").start()
        started: list[procs.GrpcProcess] = []
        try:
            consent = procs.consent_server(redis_server.url).start()
            started.append(consent)
            empty = procs.empty_server().start()
            started.append(empty)
            workload.seed(consent.target, options.batch_size, options.batch_cycle)
            ctx = BenchContext(options, generator, redis_server, consent, empty, workdir)
            print(
                f"bench: {len(scenarios)} scenarios x {rounds} rounds, {options.duration_s:g} s "
                f"each after {options.warmup_s:g} s warm-up, {options.concurrency} in flight",
                file=sys.stderr,
                flush=True,
            )
            rows = run_scenarios(ctx, scenarios, rounds)
        finally:
            for proc in reversed(started):
                proc.stop()
            redis_server.stop()
    header = environment.describe(redis_server.version(), f"{generator.name} {generator.version()}")
    header.append(
        f"load: {options.connections} connections x {options.streams} streams = "
        f"{options.concurrency} in flight ({options.batch_in_flight} for batches); "
        f"{options.duration_s:g} s measured after "
        f"{options.warmup_s:g} s warm-up, x {rounds} interleaved round(s): mean rate, "
        "median p50, worst p99"
    )
    print("\n".join(header))
    print()
    print(report.table(rows))
    print()
    print(report.aims(aims.evaluate(aims.AIMS, rows)))
    print("\n".join(aims.evaluate_p99(rows)))
    return 0
