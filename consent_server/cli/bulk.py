"""``consentctl import`` / ``export``: the commands; the file formats, column mapping
and checkpoints are in ``transfer``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import transfer
from .common import (
    EXIT_INVALID_RECORDS,
    Tenant,
    client,
    err,
    fail,
    options,
    out,
    print_json,
)


def register(root: typer.Typer) -> None:
    """Mount ``import`` and ``export`` on the root command."""
    root.command("import")(import_file)
    root.command("export")(export_file)


def _action_map(values: list[str]) -> dict[str, int]:
    mapping: dict[str, int] = {}
    for item in values:
        value, sep, action = item.rpartition("=")
        code = transfer.ACTIONS.get(action.strip().lower())
        if not sep or code is None or not value:
            fail(f"--action-map {item!r}: use VALUE=opt_out or VALUE=opt_in")
        mapping[value.strip().lower()] = code
    return mapping


def import_file(
    ctx: typer.Context,
    tenant: Tenant,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSON Lines.")],
    fmt: Annotated[
        str, typer.Option("--format", help="csv, jsonl or auto (by extension).")
    ] = "auto",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change; write nothing.")
    ] = False,
    opt_ins_have_proof: Annotated[
        bool,
        typer.Option(
            "--opt-ins-have-proof",
            help="Declare that every opt-in in the file carries proof of consent; "
            "without it opt-ins are reported and skipped.",
        ),
    ] = False,
    address_column: Annotated[str, typer.Option(help="Column of the address.")] = "address",
    channel_column: Annotated[str, typer.Option(help="Column of the channel.")] = "channel",
    channel: Annotated[
        str, typer.Option("--channel", "-c", help="Channel of rows without a channel column.")
    ] = "sms",
    topic_column: Annotated[str, typer.Option(help="Column of the topic (empty = all).")] = "topic",
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="Topic of rows without a topic column.")
    ] = "",
    action_column: Annotated[str, typer.Option(help="Column of the action / state.")] = "action",
    action: Annotated[
        str, typer.Option(help="Action of rows without an action column: opt_out or opt_in.")
    ] = "",
    action_map: Annotated[
        list[str] | None,
        typer.Option(help="Extra action spelling, VALUE=opt_out|opt_in (repeatable)."),
    ] = None,
    time_column: Annotated[
        str, typer.Option(help="Column of the time (ISO 8601, Unix s or ms).")
    ] = "occurred_at",
    default_time: Annotated[
        str,
        typer.Option(help="Time of rows without one (ISO 8601); default: such rows are invalid."),
    ] = "",
    id_column: Annotated[str, typer.Option(help="Column of the record's id.")] = "external_id",
    evidence_column: Annotated[str, typer.Option(help="Column of the evidence.")] = "evidence",
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Records per stream message.")] = 1000,
    chunk: Annotated[
        int, typer.Option(min=1, help="Records per call; the checkpoint advances after each.")
    ] = 50_000,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore a checkpoint; start from the first line.")
    ] = False,
) -> None:
    """Import opt-outs (and opt-ins with proof) from a CSV or JSON Lines file.

    Resumable: an interrupted import run again continues after the last line the server
    acknowledged (FILE.checkpoint.json). Idempotent: importing the same file twice
    changes nothing the second time. Exit 0 when every record was readable and valid,
    4 when some were invalid (the summary lists them with their line numbers)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    cols = transfer.Columns(
        address=address_column,
        channel=channel_column,
        topic=topic_column,
        action=action_column,
        occurred_at=time_column,
        external_id=id_column,
        evidence=evidence_column,
        default_channel=channel.lower(),
        default_topic=topic,
        default_action=action.lower(),
        default_time=default_time,
        action_map=_action_map(action_map or []),
    )
    opts = options(ctx)
    size = file.stat().st_size
    bar = Progress(
        TextColumn("[bold]import[/]"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[records]} records"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with bar, client(ctx) as c:
        task = bar.add_task("import", total=size, records=0)

        def progress(done: int, totals: transfer.Totals) -> None:
            bar.update(task, completed=done, records=totals.records)

        try:
            totals, resumed = transfer.run_import(
                c,
                tenant,
                file,
                cols,
                fmt=fmt,
                opt_ins_have_proof=opt_ins_have_proof,
                dry_run=dry_run,
                batch=batch,
                chunk=chunk,
                restart=restart,
                timeout=max(opts.timeout, 600.0),
                progress=progress,
            )
        except ValueError as exc:
            fail(str(exc))
    if opts.json:
        print_json({**totals.to_json(), "resumed_after_line": resumed, "dry_run": dry_run})
    else:
        _print_import(totals, resumed, dry_run)
    if totals.invalid:
        raise typer.Exit(EXIT_INVALID_RECORDS)


def _print_import(totals: transfer.Totals, resumed: int, dry_run: bool) -> None:
    if resumed:
        out.print(f"resumed after line {resumed} (checkpoint)")
    table = Table(title="dry run: nothing written" if dry_run else "import summary")
    table.add_column("outcome")
    table.add_column("records", justify="right")
    rows = [
        ("records read", totals.records),
        ("applied" + (" (would be)" if dry_run else ""), totals.applied),
        ("  of which changed status", totals.changed),
        ("ignored: older than the current record", totals.ignored_older),
        ("ignored: dated before an erasure", totals.ignored_erased),
        ("duplicates (imported before)", totals.duplicates),
        ("skipped opt-ins: no proof declared", totals.skipped_no_proof),
        ("skipped opt-ins: a newer opt-out holds", totals.skipped_opted_out),
        ("invalid", totals.invalid),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    out.print(table)
    shown = totals.problems[:50]
    for line, kind, what in shown:
        out.print(f"line {line}: {kind}: {what}", markup=False)
    more = len(totals.problems) - len(shown) + totals.problems_omitted
    if more:
        out.print(f"... and {more} more")


def export_file(
    ctx: typer.Context,
    tenant: Tenant,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write; default: stdout.")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="csv, jsonl or auto (by extension).")
    ] = "auto",
    channel: Annotated[
        str | None, typer.Option("--channel", "-c", help="Only this channel.")
    ] = None,
    topic: Annotated[
        str, typer.Option("--topic", "-t", help='Only this scope ("*" = the all-topics records).')
    ] = "",
    status: Annotated[str, typer.Option(help="Only opted_in or opted_out records.")] = "",
    updated_since: Annotated[
        str | None, typer.Option(help="Only records that occurred at or after (ISO 8601).")
    ] = None,
) -> None:
    """Export the tenant's current consent records as CSV or JSON Lines; the output
    imports back with `consentctl import` (add --opt-ins-have-proof for its opt-ins)."""
    from rich.progress import BarColumn, Progress, TextColumn

    since: datetime | None = None
    if updated_since is not None:
        parsed = transfer.parse_time(updated_since)
        if parsed is None:
            fail(f"--updated-since {updated_since!r} is not a time")
        since = parsed.ToDatetime(tzinfo=UTC)
    opts = options(ctx)
    # --json: records to stdout are JSON Lines (unless --format says otherwise), and with
    # -o the summary is a JSON object on stdout.
    kind = (
        transfer.detect_format(output, fmt)
        if output is not None
        else (("jsonl" if opts.json else "csv") if fmt == "auto" else fmt)
    )
    bar = Progress(
        TextColumn("[bold]export[/]"),
        BarColumn(),
        TextColumn("{task.fields[records]} records"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with bar, client(ctx) as c:
        task = bar.add_task("export", total=1, records=0)

        def progress(done: int, total: int, count: int) -> None:
            bar.update(task, completed=done, total=total, records=count)

        pages = c.export_consent(
            tenant,
            channel=channel,
            topic=topic,
            status=status.lower(),
            updated_since=since,
            timeout=max(opts.timeout, 3600.0),
        )
        if output is None:
            count = transfer.write_export(pages, sys.stdout, kind, progress)
        else:
            with output.open("w", encoding="utf-8", newline="") as sink:
                count = transfer.write_export(pages, sink, kind, progress)
    if opts.json and output is not None:
        print_json({"exported": count, "output": str(output), "format": kind})
    else:
        err.print(f"exported {count} records" + (f" to {output}" if output else ""))
