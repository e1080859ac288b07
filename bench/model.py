"""The values the bench passes around: options, load results, table rows, aims."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """How hard and how long to push (``python -m bench --help`` documents each)."""

    duration_s: float = 10.0
    warmup_s: float = 2.0
    connections: int = 4
    streams: int = 16  # concurrent streams per connection
    batch_size: int = 1000
    # Batches in flight at once (each on its own connection); 64 batches of 1,000 would
    # only measure queueing.
    batch_in_flight: int = 4
    # Distinct addresses the warm batch rows send in turn (batches of batch_size).
    batch_cycle: int = 100_000
    generator: str = "auto"  # auto | h2load | python
    only: tuple[str, ...] = ()  # scenario names; empty = all
    rounds: int = 5  # every scenario once per round, interleaved
    memory_recipients: int = 1_000_000  # the memory scenario's synthetic recipients

    @property
    def concurrency(self) -> int:
        """Requests in flight at once."""
        return self.connections * self.streams


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured (after warm-up)."""

    generator: str
    ok: int
    failed: int
    duration_s: float
    p50_ms: float | None
    p99_ms: float | None
    # CPU microseconds per call of the process doing the work, where the runner knows it.
    cpu_us_per_call: float | None = None

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table. ``key`` is what aims refer to; ``label`` is what people read."""

    key: str
    label: str
    rate: float | None  # None for rows that are not a rate (latency-only rows)
    unit: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    failed: int = 0
    note: str = ""
    # CPU microseconds the measured process spent per call (the server's, or for a
    # client-side baseline the client's); None where it cannot be read.
    cpu_us: float | None = None


@dataclass(frozen=True, slots=True)
class Aim:
    """``numerator`` rate / ``denominator`` rate should be at least ``target``.

    ``target`` None: a ratio printed for reading, with no aim set. ``denominator`` "":
    an aim on the numerator's rate itself (per second), not a ratio.
    """

    label: str
    numerator: str
    denominator: str
    target: float | None


@dataclass(frozen=True, slots=True)
class AimResult:
    """An aim evaluated over a run's rows (ratio None when a row is missing)."""

    aim: Aim
    ratio: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        """True/False, or None when it could not be evaluated or no aim is set."""
        if self.ratio is None or self.aim.target is None:
            return None
        return self.ratio >= self.aim.target
