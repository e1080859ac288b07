"""The bench must not rot: run its CLI for about a second per scenario.

Nothing here asserts on speed (a shared CI machine says nothing about it); it asserts
that the scenarios run against the real processes, that every measured call
succeeded, and that the table and the aims are printed.
"""

from __future__ import annotations

import shutil

import pytest

from bench import aims, report
from bench.model import Aim, Row
from bench.run import combine, main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

SHORT = ["--duration", "1", "--warmup", "0.2", "--rounds", "1", "--connections", "1"]
SHORT += ["--streams", "4", "--batch-size", "50", "--batch-in-flight", "1", "--batch-cycle", "500"]


def _table_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| scenario"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells
    return rows


def _bench(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, dict[str, list[str]]]:
    """Run the bench CLI briefly (SHORT) with ``args``: its output and its table's rows."""
    assert main([*SHORT, *args]) == 0
    out = capsys.readouterr().out
    return out, _table_rows(out)


def _all_answered(cells: list[str], *, cpu: bool = False) -> None:
    """A row that moved something and failed nothing (with ``cpu``: CPU per call read)."""
    assert int(cells[1].replace(",", "")) > 0
    assert cells[6] == "0"
    if cpu:
        assert cells[5] != "-"


def test_check_against_ceiling_prints_table_and_aim(capsys: pytest.CaptureFixture[str]) -> None:
    out, rows = _bench(capsys, "--only", "empty_handler", "check_consent")
    assert set(rows) == {"empty grpc.aio handler (ceiling)", "CheckConsent"}
    for cells in rows.values():
        _all_answered(cells, cpu=True)  # the server's CPU per call was read
    assert "- CheckConsent / empty handler: " in out
    assert "BatchCheckConsent / raw pipelined HMGET: - (aim >= 3x) NOT MEASURED" in out
    assert "BatchCheckConsent decisions/s, one process: - (aim >= 400,000/s) NOT MEASURED" in out


def test_uvloop_and_two_in_flight_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """The uvloop pair and the 2-in-flight latency rows, with their ratios and p99 aim."""
    out, rows = _bench(capsys, "--only", "uvloop", "low_concurrency")
    assert set(rows) == {
        "empty grpc.aio handler, uvloop",
        "CheckConsent, uvloop",
        "empty grpc.aio handler, 2 in flight",
        "CheckConsent, 2 in flight",
    }
    for cells in rows.values():
        _all_answered(cells)
    assert "- CheckConsent / empty handler, both on uvloop: " in out
    assert "- CheckConsent p99 with 2 calls in flight: " in out
    assert "NOT MEASURED" in out.split("- CheckConsent p99")[0].split("SendIfAllowed / empty")[1]


def test_send_and_batch_with_python_generator(capsys: pytest.CaptureFixture[str]) -> None:
    """The fallback generator, and the scenarios that check their own side effects."""
    out, rows = _bench(capsys, "--generator", "python", "--only", "send_if_allowed", "batch_check")
    assert "load generator: python grpc.aio" in out
    rows.pop("Redis's own pipelined HMGET (redis-benchmark)", None)  # where installed
    assert set(rows) == {
        "SendIfAllowed (accepted)",
        "BatchCheckConsent x50",
        "BatchCheckConsent x50, cold addresses",
        "raw pipelined HMGET x100 (redis-py)",
    }
    for cells in rows.values():
        _all_answered(cells)


def test_processes_rows_two_against_one(capsys: pytest.CaptureFixture[str]) -> None:
    """CheckConsent and the empty handler with 1 and 2 processes, and their ratios."""
    out, rows = _bench(capsys, "--only", "processes")
    assert set(rows) == {
        "empty handler, 1 process",
        "empty handler, 2 processes (SO_REUSEPORT)",
        "CheckConsent, CONSENT_PROCESSES=1",
        "CheckConsent, CONSENT_PROCESSES=2",
    }
    for cells in rows.values():
        _all_answered(cells, cpu=True)  # CPU of every process of the tree was read
    assert "- CheckConsent: CONSENT_PROCESSES=2 / 1: " in out
    assert "- empty handler: 2 processes / 1 (ceiling): " in out


def test_delivery_rows_beside_the_same_runs_accept_rate(capsys: pytest.CaptureFixture[str]) -> None:
    """Its own redis-server and inline-delivery server: a drained backlog, then sends."""
    out, rows = _bench(capsys, "--only", "delivery")
    assert set(rows) == {
        "SendIfAllowed (accepted), inline delivery on",
        "delivered, accept -> DELIVERED (log provider)",
        "outbox lag under that load",
        "delivery drain of 250 queued (capacity)",
    }
    for label in (
        "SendIfAllowed (accepted), inline delivery on",
        "delivered, accept -> DELIVERED (log provider)",
        "delivery drain of 250 queued (capacity)",
    ):
        _all_answered(rows[label])  # every send accepted, every message DELIVERED
    delivered = rows["delivered, accept -> DELIVERED (log provider)"]
    assert delivered[3] != "-" and delivered[4] != "-"  # latencies of delivered messages
    lag = rows["outbox lag under that load"]
    assert lag[1] == "-" and lag[2] == "ms" and lag[3] != "-"  # a latency, not a rate
    assert "- delivered / accepted with inline delivery (same run): " in out
    assert "(no aim set)" in out
    # The delivery-off send row was not run, so that ratio has nothing to compare with.
    assert "inline delivery on / off: - (no aim set) NOT MEASURED" in out


def test_rounds_combine_into_mean_rate_and_aims() -> None:
    first = Row("check", "CheckConsent", 10, "req/s", 1.0, 5.0, 1, cpu_us=400)
    second = Row("check", "CheckConsent", 20, "req/s", 3.0, 9.0, 0, cpu_us=600)
    ceiling = Row("empty", "empty", 25, "req/s", cpu_us=300)
    rows = combine([[first, ceiling], [second]])
    assert [r.key for r in rows] == ["check", "empty"]
    check = rows[0]
    assert (check.rate, check.p50_ms, check.p99_ms, check.failed) == (15, 2.0, 9.0, 1)
    assert check.cpu_us == 500
    aim, batch, *_ = aims.evaluate(aims.AIMS, rows)
    assert aim.ratio == pytest.approx(0.6) and aim.met is False
    assert batch.ratio is None and batch.met is None
    text = report.aims([aim])
    assert "0.60x (aim >= 0.7x) NOT MET" in text and "CheckConsent: 1 failed" in text
    assert "by CPU per call: 0.60x" in text


def test_latency_only_rows_and_plain_ratios() -> None:
    """A row without a rate stays without one; a ratio with no target is never MET/NOT MET."""
    lag = [Row("outbox_lag", "lag", None, "ms", 10.0, 30.0), Row("outbox_lag", "lag", None, "ms")]
    [combined] = combine([lag[:1], lag[1:]])
    assert combined.rate is None and combined.p50_ms == 10.0 and combined.p99_ms == 30.0
    assert "| lag      |    - | ms   |" in report.table([combined])
    accept = Row("delivery_accept", "accepted", 200, "msg/s")
    delivered = Row("delivered", "delivered", 150, "msg/s")
    plain = Aim("delivered / accepted", "delivered", "delivery_accept", None)
    [result] = aims.evaluate([plain], [accept, delivered])
    assert result.ratio == pytest.approx(0.75) and result.met is None
    assert report.aims([result]) == "- delivered / accepted: 0.75x (no aim set)"
    # A latency-only row cannot be either side of a ratio.
    [missing] = aims.evaluate([Aim("x", "outbox_lag", "delivered", None)], [combined, delivered])
    assert missing.ratio is None


def test_import_rows_beside_the_raw_write(capsys: pytest.CaptureFixture[str]) -> None:
    """ImportConsent from a CSV file into the real redis-server, and the raw HSET row."""
    out, rows = _bench(capsys, "--only", "bulk_import")
    assert set(rows) == {
        "ImportConsent x25000 (consentctl import, CSV)",
        "raw pipelined HSET x25000 (redis-py)",
    }
    for cells in rows.values():
        _all_answered(cells)  # every record applied
    assert "- ImportConsent records/s / raw pipelined HSET: " in out


def test_memory_rows_per_record_and_event(capsys: pytest.CaptureFixture[str]) -> None:
    """The memory scenario at a small N: its rows beside the string baseline."""
    _, rows = _bench(capsys, "--only", "memory", "--memory-recipients", "3000")
    assert {
        "baseline: one string key per recipient",
        "current record (record bucket)",
        "history event (history bucket)",
    } <= set(rows)


@pytest.mark.cluster
def test_spread_rows_on_a_real_three_master_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    """The spread scenario starts its own cluster: the new layout within its aims, the
    legacy tags' 25/50 % split beside it."""
    out, rows = _bench(capsys, "--only", "spread")
    assert int(rows["fewest on a master, 128 partitions"][1]) >= 28
    assert int(rows["most on a master, 128 partitions"][1]) <= 38
    assert rows["most on a master, 16 legacy tags"][1] == "50"
    verdicts = [line for line in out.splitlines() if "(128 partitions):" in line]
    assert len(verdicts) == 2 and all(line.endswith(" MET") for line in verdicts), verdicts
