"""What every scenario uses to measure: run ``ctx.load`` with the server's CPU, make a row.

Kept apart from ``bench.scenarios`` so that scenarios in other modules (``bench.delivery``)
can use them while ``scenarios.SCENARIOS`` lists those modules' scenarios too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from google.protobuf.message import Message

from bench.context import BenchContext
from bench.cpu import process_cpu_s
from bench.load import run_distinct
from bench.model import BenchOptions, LoadResult, Row
from bench.procs import GrpcProcess


class _ServerCpu:
    """The server's CPU time over the measured calls (not the warm-up), per call."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._at_start: list[float | None] = []

    def start(self) -> None:
        """Called as measurement starts (a generator may call it more than once: the
        first counts)."""
        self._at_start.append(process_cpu_s(self._pid))

    def per_call(self, r: LoadResult) -> LoadResult:
        """``r`` with ``cpu_us_per_call``; as it is when the CPU time is unknown."""
        start, end = (self._at_start or [None])[0], process_cpu_s(self._pid)
        calls = r.ok + r.failed
        if start is None or end is None or calls == 0:
            return r
        return replace(r, cpu_us_per_call=(end - start) / calls * 1e6)


def measure(
    ctx: BenchContext,
    server: GrpcProcess,
    method: str,
    request: Message,
    *,
    response_size: int | None = None,
    options: BenchOptions | None = None,
    on_measure_start: Callable[[], None] | None = None,
) -> LoadResult:
    """Run ``ctx.load`` against ``server`` and add the server's CPU time per call."""
    cpu = _ServerCpu(server.pid)

    def started() -> None:
        cpu.start()
        if on_measure_start is not None:
            on_measure_start()

    r = ctx.load.run(
        server.target,
        method,
        request.SerializeToString(),
        duration_s=ctx.options.duration_s,
        options=options or ctx.options,
        response_size=response_size,
        on_measure_start=started,
    )
    return cpu.per_call(r)


def measure_distinct(
    ctx: BenchContext,
    server: GrpcProcess,
    method: str,
    requests: list[bytes],
    *,
    options: BenchOptions,
    once: bool = False,
) -> LoadResult:
    """``measure`` for distinct requests sent in turn (``bench.load.run_distinct``: always
    the Python generator, h2load sends one body only), with the server's CPU per call."""
    cpu = _ServerCpu(server.pid)
    r = run_distinct(
        server.target,
        method,
        requests,
        duration_s=ctx.options.duration_s,
        options=options,
        once=once,
        on_measure_start=cpu.start,
    )
    return cpu.per_call(r)


def row(
    key: str,
    label: str,
    r: LoadResult,
    items_per_call: int = 1,
    unit: str = "req/s",
    note: str = "",
) -> Row:
    """A table row from a load result (rate in items per second)."""
    return Row(
        key,
        label,
        r.rps * items_per_call,
        unit,
        r.p50_ms,
        r.p99_ms,
        r.failed,
        note,
        r.cpu_us_per_call,
    )
