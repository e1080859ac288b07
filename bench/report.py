"""The table: one line per row, then each aim with its ratio and whether it is met."""

from __future__ import annotations

from collections.abc import Sequence

from bench.model import AimResult, Row

HEADERS = ("scenario", "rate", "unit", "p50 ms", "p99 ms", "CPU us/call", "failed", "note")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.label,
        "-" if row.rate is None else f"{row.rate:,.0f}",
        row.unit,
        _ms(row.p50_ms),
        _ms(row.p99_ms),
        "-" if row.cpu_us is None else f"{row.cpu_us:,.0f}",
        str(row.failed),
        row.note,
    )


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (it reads as plain text too and pastes into docs/benchmarks.md)."""
    lines = [HEADERS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    right = {1, 3, 4, 5, 6}

    def fmt(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


def aims(results: Sequence[AimResult]) -> str:
    """One line per aim: ratio, target, MET / NOT MET (or "no aim set" for a plain ratio)."""
    out = []
    for r in results:
        absolute = not r.aim.denominator  # a rate aim, not a ratio
        unit = "/s" if absolute else "x"
        target = "no aim set" if r.aim.target is None else f"aim >= {r.aim.target:,g}{unit}"
        shown = "-" if r.ratio is None else f"{r.ratio:,.0f}/s" if absolute else f"{r.ratio:.2f}x"
        if r.ratio is None:
            verdict, ratio = " NOT MEASURED", shown
        elif r.met is None:
            verdict, ratio = "", shown
        else:
            verdict, ratio = (" MET" if r.met else " NOT MET"), shown
        extra = f" ({'; '.join(r.notes)})" if r.notes else ""
        out.append(f"- {r.aim.label}: {ratio} ({target}){verdict}{extra}")
    return "\n".join(out)
