"""The ratios the service aims for, each measured within one run."""

from __future__ import annotations

from collections.abc import Sequence

from bench.model import Aim, AimResult, Row

AIMS: list[Aim] = [
    Aim("CheckConsent / empty handler", "check", "empty", 0.7),
    Aim("SendIfAllowed / empty handler", "send", "empty", 0.6),
    # Both servers on uvloop (the consent server's default loop): stated, no aim.
    Aim("CheckConsent / empty handler, both on uvloop", "check_uv", "empty_uv", None),
    Aim("uvloop / asyncio: CheckConsent", "check_uv", "check", None),
    # The raw read is of the same keys (state hash and tombstone per recipient) and batches.
    Aim("BatchCheckConsent / raw pipelined HMGET", "batch", "raw_hmget", 3.0),
    Aim("BatchCheckConsent decisions/s, one process", "batch", "", 400_000),
    Aim("BatchCheckConsent cold addresses / warm (same run)", "batch_cold", "batch", None),
    Aim("BatchCheckConsent / Redis's own pipelined HMGET", "batch", "redis_own", None),
    # For reading, no aim set: does delivery keep up with accepting, and what does the
    # worker sharing the server's process cost the API?
    Aim(
        "delivered / accepted with inline delivery (same run)", "delivered", "delivery_accept", None
    ),
    Aim("SendIfAllowed accepted: inline delivery on / off", "delivery_accept", "send", None),
    # Every core serves: two server processes against one, beside the empty handler's
    # own scaling measured the same way (the ceiling on this machine).
    Aim("CheckConsent: CONSENT_PROCESSES=2 / 1", "check_p2", "check_p1", 1.4),
    Aim("empty handler: 2 processes / 1 (ceiling)", "empty_p2", "empty_p1", None),
    Aim("CheckConsent / empty handler, 2 processes each", "check_p2", "empty_p2", None),
    # Bulk import from one consentctl-like client process (also aimed: >= 50,000/s).
    Aim("ImportConsent records/s / raw pipelined HSET", "import", "raw_hset", 0.5),
    # Cluster spread: every master within 5 points of its third (28.3 % .. 38.3 %).
    Aim("fewest on a master / even share (128 partitions)", "spread_min", "spread_ideal", 0.85),
    Aim("even share / most on a master (128 partitions)", "spread_ideal", "spread_max", 0.87),
    Aim("fewest on a master / even share (16 legacy tags)", "legacy_min", "spread_ideal", None),
]


#: Latency aims: (label, row key, the most its p99 may be in ms).
P99_AIMS: list[tuple[str, str, float]] = [
    ("CheckConsent p99 with 2 calls in flight", "check_2", 2.0),
]


def evaluate_p99(rows: Sequence[Row]) -> list[str]:
    """One line per latency aim: the row's worst p99 over rounds, MET / NOT MET."""
    by_key = {row.key: row for row in rows}
    out = []
    for label, key, limit in P99_AIMS:
        r = by_key.get(key)
        if r is None or r.p99_ms is None:
            out.append(f"- {label}: - (aim <= {limit:g} ms) NOT MEASURED")
            continue
        verdict = "MET" if r.p99_ms <= limit else "NOT MET"
        out.append(
            f"- {label}: {r.p99_ms:.2f} ms (aim <= {limit:g} ms) {verdict} "
            f"(p50 {r.p50_ms or 0:.2f} ms)"
        )
    return out


def evaluate(aims: Sequence[Aim], rows: Sequence[Row]) -> list[AimResult]:
    """Each aim's ratio over the rows; a missing or zero row leaves it unevaluated."""
    by_key = {row.key: row for row in rows}
    results = []
    for aim in aims:
        num, den = by_key.get(aim.numerator), by_key.get(aim.denominator)
        if not aim.denominator:
            if num is None or num.rate is None:
                results.append(AimResult(aim, None, ["not measured in this run"]))
            else:
                notes = [f"{num.label}: {num.failed} failed"] if num.failed else []
                results.append(AimResult(aim, num.rate, notes))
            continue
        if num is None or den is None or num.rate is None or not den.rate:
            results.append(AimResult(aim, None, ["not measured in this run"]))
            continue
        notes = [f"{r.label}: {r.failed} failed" for r in (num, den) if r.failed]
        if num.cpu_us and den.cpu_us:
            # The same ratio in CPU per call: what it would be if CPU were all that limits.
            notes.append(f"by CPU per call: {den.cpu_us / num.cpu_us:.2f}x")
        results.append(AimResult(aim, num.rate / den.rate, notes))
    return results
