"""Consent records: ``check``, ``opt-out`` / ``opt-in``, ``history``, ``link`` and
``forget`` (erasure)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Annotated, Any

import typer
from rich.table import Table

from consent_client import ChangeResult, ConsentClient

from . import transfer
from .common import (
    EXIT_BLOCKED,
    Address,
    Channel,
    Tenant,
    Topic,
    call,
    emit,
    fail,
    fields,
    jsonable,
    options,
    out,
    print_json,
    tsv,
    wants_table,
)

Evidence = Annotated[str, typer.Option(help="Why (e.g. a ticket number), kept as evidence.")]
EventId = Annotated[str | None, typer.Option(help="Idempotency id; default: a new one per call.")]


def register(root: typer.Typer) -> None:
    """Mount the consent commands on the root command."""
    root.command()(check)
    root.command("opt-out")(opt_out)
    root.command("opt-in")(opt_in)
    root.command()(history)
    root.command()(link)
    root.command()(forget)


def check(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="The topic, e.g. marketing (required).")
    ],
    channel: Channel = "whatsapp",
    at: Annotated[
        str | None,
        typer.Option(
            help="Ask about this instant instead of now (ISO 8601, e.g. 2026-10-01T09:00Z)."
        ),
    ] = None,
) -> None:
    """May the recipient be messaged about the topic now (or --at an instant)? Exit code
    0 = yes, 3 = no."""
    when = None
    if at is not None:
        parsed = transfer.parse_time(at)
        if parsed is None:
            fail(f"--at {at!r} is not an ISO 8601 time")
        when = parsed.ToDatetime(tzinfo=UTC)
    d = call(ctx, lambda c: c.check_consent(tenant, channel, address, topic, at=when))
    event = d.raw.deciding_event if d.raw.HasField("deciding_event") else None

    def human() -> None:
        verdict = "[bold green]ALLOWED[/]" if d.allowed else "[bold red]BLOCKED[/]"
        out.print(f"{verdict} {d.recipient.address} on {d.recipient.channel.name}", end="")
        out.print(f" topic '{topic}'", markup=False)
        out.print(f"status: {d.status.name}  decided by: {d.decided_by.name}", end="")
        out.print(f"  reason: {d.reason}" if d.reason else "", markup=False)
        if d.since is not None:
            source = d.source.name if d.source else "-"
            out.print(f"since: {d.since.isoformat()}  source: {source}  revision: {d.revision}")
        if event is not None:
            recorded = event.recorded_at.ToDatetime(tzinfo=UTC).isoformat()
            out.print(f"decided by event {event.event_id} (recorded {recorded})", markup=False)

    data = jsonable(d)
    if event is not None:
        data["deciding_event"] = jsonable(event)
    emit(ctx, data, human)
    if not d.allowed:
        raise typer.Exit(EXIT_BLOCKED)


def _change_command(fn: Any, what: str, name: str, doc: str) -> Callable[..., None]:
    """``opt-out`` and ``opt-in`` differ only by the client method, the verb printed and
    their help."""

    def command(
        ctx: typer.Context,
        tenant: Tenant,
        address: Address,
        topic: Topic = "",
        channel: Channel = "whatsapp",
        evidence: Evidence = "consentctl",
        event_id: EventId = None,
    ) -> None:
        r: ChangeResult = call(
            ctx,
            lambda c: fn(
                c, tenant, channel, address, topic, source="admin", evidence=evidence,
                event_id=event_id,
            ),
        )  # fmt: skip

        def human() -> None:
            scope = f"topic '{r.topic}'" if r.topic else "all topics"
            note = " (replay: nothing new)" if r.duplicate else "" if r.changed else " (no change)"
            out.print(f"{r.recipient.address} {what} {scope}{note}", markup=False)
            out.print(f"status: {r.status.name}  revision: {r.revision}  event id: {r.event_id}")

        emit(ctx, r, human)

    command.__name__ = command.__qualname__ = name
    command.__doc__ = doc
    return command


opt_out = _change_command(
    ConsentClient.opt_out, "opted out of", "opt_out", "Record an opt-out (source ADMIN)."
)
opt_in = _change_command(
    ConsentClient.opt_in,
    "opted in to",
    "opt_in",
    "Record an opt-in (source ADMIN); keep the evidence of the customer's consent.",
)


_HISTORY_COLUMNS = ("rev", "occurred at (UTC)", "action", "topic", "source", "applied")


def history(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    channel: Channel = "whatsapp",
    limit: Annotated[int, typer.Option(min=1, help="At most this many events, newest first.")] = 50,
) -> None:
    """The recipient's consent events, newest first: a table on a terminal, tab-separated
    lines when piped, an array with --json."""

    def run(c: ConsentClient) -> list[Any]:
        events = []
        for e in c.iter_consent_events(tenant, channel, address, page_size=min(limit, 1000)):
            events.append(e)
            if len(events) >= limit:
                break
        return events

    events = call(ctx, run)
    if options(ctx).json:
        print_json({"events": jsonable(events)})
        return
    rows = [
        (
            str(e.revision),
            e.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.action.name,
            e.topic or "*",
            e.source.name,
            "yes" if e.applied else "no (late)",
            e.event_id,
            e.evidence,
        )
        for e in events
    ]
    if not wants_table():
        tsv(*_HISTORY_COLUMNS, "event id", "evidence")
        for row in rows:
            tsv(*row)
    else:
        table = Table(title=f"consent history of {address} on {channel} ({tenant})")
        for col in _HISTORY_COLUMNS:
            table.add_column(col, no_wrap=True)
        table.add_column("event id", overflow="fold", min_width=12)
        table.add_column("evidence", overflow="fold", min_width=12)
        for row in rows:
            table.add_row(*row)
        out.print(table)
    if not events:
        out.print("no events")


def link(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    topic: Topic = "",
    channel: Channel = "whatsapp",
    ttl: Annotated[
        int, typer.Option(min=0, help="Seconds the links stay valid; 0 = the server default.")
    ] = 0,
    short: Annotated[
        bool, typer.Option("--short", help="Also mint short /l/<code> links (for SMS).")
    ] = False,
) -> None:
    """Mint signed opt-out and re-subscribe links (needs the server's HTTP edge).

    Links are printed whole on one line each (no wrapping), ready to copy."""
    links = call(
        ctx,
        lambda c: c.create_consent_link(
            tenant, channel, address, topic, ttl_seconds=ttl, short_links=short
        ),
    )

    def human() -> None:
        if short:
            out.print(f"short opt-out:         {links.short_opt_out_url}", markup=False)
            out.print(f"short re-subscribe:    {links.short_resubscribe_url}", markup=False)
        out.print(f"opt-out:               {links.opt_out_url}", markup=False, soft_wrap=True)
        out.print(f"re-subscribe:          {links.resubscribe_url}", markup=False, soft_wrap=True)
        out.print(f"List-Unsubscribe:      {links.list_unsubscribe}", markup=False, soft_wrap=True)
        out.print(f"List-Unsubscribe-Post: {links.list_unsubscribe_post}", markup=False)
        out.print(f"expires at:            {links.expires_at.isoformat()}")

    emit(ctx, links, human)


def forget(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    channel: Channel = "whatsapp",
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: the erasure cannot be undone.")
    ] = False,
) -> None:
    """Erase what the authority holds about the recipient (right to erasure). A
    recipient who had opted out stays suppressed. Needs --yes."""
    if not yes:
        fail("forget erases the recipient's records for good: add --yes to confirm")
    done = call(ctx, lambda c: c.forget_recipient(tenant, channel, address))
    fields(ctx, done)
