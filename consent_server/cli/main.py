"""consentctl: operate the consent authority over gRPC with the thin client.

    consentctl tenants create TENANT [--name "Meal Box"] / get / list / delete
    consentctl settings get TENANT
    consentctl settings set TENANT --business-name "Meal Box" --add-keyword es:opt_out:BAJA
    consentctl inbound TENANT +919876543210 --text STOP
    consentctl inbound dead-letters list TENANT / replay TENANT ID / discard TENANT ID
    consentctl check TENANT +919876543210 --topic marketing
    consentctl opt-out TENANT +919876543210 / opt-in ... / history ...
    consentctl link TENANT jane@example.com --channel email
    consentctl import TENANT optouts.csv [--dry-run] [--opt-ins-have-proof] [column flags]
    consentctl export TENANT -o consent.csv [--channel sms --topic marketing --status opted_out]
    consentctl check TENANT +919876543210 --topic marketing --at 2026-10-01T09:00Z

Every command takes ``--target`` (env CONSENT_TARGET, default 127.0.0.1:50051) and
``--api-key`` (env CONSENT_API_KEY). A refused call prints the server's reason and
each bad field, and exits 1. Addresses are shown as the server echoes them.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from consent_client import ConsentClient, ConsentError, InvalidArgument
from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb

from . import transfer
from .keys import app as keys_app

T = TypeVar("T")

app = typer.Typer(
    name="consentctl",
    help="Operate the consent authority: tenant settings, inbound replies, consent records.",
    no_args_is_help=True,
    add_completion=False,
)
settings_app = typer.Typer(help="Read and change a tenant's settings.", no_args_is_help=True)
app.add_typer(settings_app, name="settings")


class _InboundGroup(typer.core.TyperGroup):
    """``inbound TENANT ADDRESS ...`` simulates a reply (the ``simulate`` command, so
    the short form keeps working); ``inbound dead-letters ...`` manages dead letters."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["simulate", *args]
        return super().parse_args(ctx, args)


inbound_app = typer.Typer(
    cls=_InboundGroup,
    help="Inbound replies: simulate one, or manage WhatsApp notifications not applied.",
    no_args_is_help=True,
)
app.add_typer(inbound_app, name="inbound")
dead_letters_app = typer.Typer(
    help="WhatsApp notification items the webhook could not apply (kept per tenant).",
    no_args_is_help=True,
)
inbound_app.add_typer(dead_letters_app, name="dead-letters")
tenants_app = typer.Typer(
    help="Create, list and delete tenants (operator keys only).", no_args_is_help=True
)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

KINDS = {
    "opt_out": apb.KEYWORD_KIND_OPT_OUT,
    "opt_in": apb.KEYWORD_KIND_OPT_IN,
    "help": apb.KEYWORD_KIND_HELP,
}
TEMPLATE_FIELDS = ("opt_out_confirmation", "opt_in_confirmation", "help")


@dataclass
class Options:
    """The connection options every command shares."""

    target: str
    api_key: str | None
    timeout: float


@app.callback()
def _connection(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Option(envvar="CONSENT_TARGET", help="host:port of the consent authority.")
    ] = "127.0.0.1:50051",
    api_key: Annotated[
        str | None, typer.Option(envvar="CONSENT_API_KEY", help="API key (Bearer).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Deadline of each call, in seconds.")] = 10.0,
) -> None:
    ctx.obj = Options(target, api_key, timeout)


@contextmanager
def _client(ctx: typer.Context) -> Iterator[ConsentClient]:
    """A client for the command; a refused call becomes a readable message and exit 1."""
    opts: Options = ctx.obj
    try:
        with ConsentClient(opts.target, api_key=opts.api_key, timeout=opts.timeout) as client:
            yield client
    except ConsentError as exc:
        err.print(f"[bold red]error[/]: {exc.code.name}", end="")
        err.print(f" [{exc.reason}]" if exc.reason else "", markup=False, end="")
        if isinstance(exc, InvalidArgument) and exc.field_violations:
            err.print(": the request was refused, nothing changed")
            for field, description in exc.field_violations:
                err.print(f"  {field}: {description}", markup=False)
        else:
            err.print(f": {exc.message}", markup=False)
        raise typer.Exit(1) from None
    except ValueError as exc:  # the client refused an argument before calling
        err.print(f"[bold red]error[/]: {exc}")
        raise typer.Exit(2) from None


def _call(ctx: typer.Context, fn: Callable[[ConsentClient], T]) -> T:
    with _client(ctx) as client:
        return fn(client)


Channel = Annotated[
    str, typer.Option("--channel", "-c", help="whatsapp, sms, email, rcs or voice.")
]
Topic = Annotated[str, typer.Option("--topic", "-t", help='The topic; "" = all topics.')]
Tenant = Annotated[str, typer.Argument(help="The tenant id.")]
Address = Annotated[str, typer.Argument(help="Phone number, WhatsApp id or e-mail address.")]


# -- tenants -------------------------------------------------------------------------------


def _print_tenant(tenant: apb.Tenant) -> None:
    created = tenant.created_at.ToDatetime().isoformat(timespec="seconds") + "Z"
    out.print(f"{tenant.tenant_id}  {created}  {tenant.display_name or '-'}", markup=False)


@tenants_app.command("create")
def tenants_create(
    ctx: typer.Context,
    tenant: Tenant,
    name: Annotated[str, typer.Option("--name", help="A display name for people.")] = "",
) -> None:
    """Create a tenant (until then every call naming it fails with TENANT_NOT_FOUND)."""
    _print_tenant(_call(ctx, lambda c: c.create_tenant(tenant, name)))


@tenants_app.command("get")
def tenants_get(ctx: typer.Context, tenant: Tenant) -> None:
    """Print a tenant: id, creation time, display name."""
    _print_tenant(_call(ctx, lambda c: c.get_tenant(tenant)))


@tenants_app.command("list")
def tenants_list(ctx: typer.Context) -> None:
    """Print every tenant, by id: id, creation time, display name."""
    with _client(ctx) as client:
        token = ""
        while True:
            page = client.list_tenants(1000, token)
            for tenant in page.tenants:
                _print_tenant(tenant)
            token = page.next_page_token
            if not token:
                return


@tenants_app.command("delete")
def tenants_delete(ctx: typer.Context, tenant: Tenant) -> None:
    """Delete a tenant that holds no consent data (refused otherwise); revokes its keys."""
    done = _call(ctx, lambda c: c.delete_tenant(tenant))
    out.print(f"deleted {done.tenant.tenant_id}; API keys revoked: {done.api_keys_revoked}")


# -- settings ------------------------------------------------------------------------------


def _print_settings(settings: apb.TenantSettings) -> None:
    text = json_format.MessageToJson(
        settings, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    out.print_json(text)


@settings_app.command("get")
def settings_get(ctx: typer.Context, tenant: Tenant) -> None:
    """Print the tenant's effective settings as JSON (defaults filled in)."""
    _print_settings(_call(ctx, lambda c: c.get_tenant_settings(tenant)))


def _split(value: str, n: int, what: str, example: str) -> list[str]:
    parts = value.split(":", n - 1)
    if len(parts) < n:
        raise typer.BadParameter(f"{what} must look like {example}")
    return parts


@settings_app.command("set")
def settings_set(
    ctx: typer.Context,
    tenant: Tenant,
    business_name: Annotated[str | None, typer.Option(help="The business name.")] = None,
    default_region: Annotated[str | None, typer.Option(help="e.g. IN, US.")] = None,
    default_language: Annotated[str | None, typer.Option(help="e.g. en, es.")] = None,
    resubscribe_url: Annotated[
        str | None, typer.Option(help='Re-subscribe URL ("" removes it).')
    ] = None,
    infer_opt_out: Annotated[
        bool | None,
        typer.Option(
            "--infer-opt-out/--no-infer-opt-out",
            help="Whether 'please stop texting me' opts out.",
        ),
    ] = None,
    add_keyword: Annotated[
        list[str] | None,
        typer.Option(
            help="LANG:KIND:KEYWORD[:TOPIC], KIND one of opt_out, opt_in, help "
            "(e.g. es:opt_out:BAJA). Repeatable."
        ),
    ] = None,
    template: Annotated[
        list[str] | None,
        typer.Option(
            help="LANG:FIELD=TEXT, FIELD one of opt_out_confirmation, opt_in_confirmation, "
            'help (e.g. "es:opt_out_confirmation=Responde ALTA para volver"). Repeatable.'
        ),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="A JSON file of TenantSettings fields; its top-level keys are replaced.",
        ),
    ] = None,
) -> None:
    """Change some settings; everything else stays. Prints the new settings."""
    fields: dict[str, Any] = {}
    if from_file is not None:
        loaded = json.loads(from_file.read_text())
        if not isinstance(loaded, dict):
            raise typer.BadParameter("the file must hold a JSON object", param_hint="--from-file")
        fields.update(loaded)
    scalars = {
        "business_name": business_name,
        "default_region": default_region,
        "default_language": default_language,
        "resubscribe_url": resubscribe_url,
        "infer_opt_out_in_sentences": infer_opt_out,
    }
    fields.update({k: v for k, v in scalars.items() if v is not None})

    with _client(ctx) as client:
        # Always read first: the update carries the version it is based on, so a change
        # someone made meanwhile is never overwritten (ABORTED: run the command again).
        current = client.get_tenant_settings(tenant)
        if add_keyword:
            sets = [json_format.MessageToDict(s) for s in current.keyword_sets]
            for spec in add_keyword:
                lang, kind, rest = _split(spec, 3, "--add-keyword", "es:opt_out:BAJA")
                keyword, _, topic = rest.partition(":")
                if kind not in KINDS:
                    raise typer.BadParameter(f"kind must be one of {', '.join(KINDS)}")
                sets.append(
                    {
                        "language": lang,
                        "kind": apb.KeywordKind.Name(KINDS[kind]),
                        "topic": topic,
                        "keywords": [keyword],
                    }
                )
            fields["keyword_sets"] = sets
        if template:
            by_lang = {
                t.language: json_format.MessageToDict(t, preserving_proto_field_name=True)
                for t in current.templates
            }
            for spec in template:
                head, sep, text = spec.partition("=")
                lang, _, name = head.partition(":")
                if not sep or name not in TEMPLATE_FIELDS or not lang:
                    raise typer.BadParameter(
                        "--template must look like es:opt_out_confirmation=TEXT"
                    )
                by_lang.setdefault(lang.lower(), {"language": lang.lower()})[name] = text
            fields["templates"] = list(by_lang.values())
        if not fields:
            raise typer.BadParameter("nothing to change: give at least one option")
        new = client.update_tenant_settings(tenant, fields, version=current.version)
    _print_settings(new)


# -- consent -------------------------------------------------------------------------------


@inbound_app.command("simulate")
def inbound(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    text: Annotated[str, typer.Option("--text", help="The reply text (e.g. STOP).")] = "",
    button: Annotated[str, typer.Option(help="A button payload (e.g. UNSUBSCRIBE).")] = "",
    message_id: Annotated[
        str | None,
        typer.Option(help="The provider message id (the event id); default: a new one."),
    ] = None,
    channel: Channel = "whatsapp",
) -> None:
    """Simulate an inbound reply or button tap, as a channel webhook would deliver it."""
    ident = message_id or f"consentctl.{uuid.uuid4().hex}"
    result = _call(
        ctx,
        lambda c: c.handle_inbound_message(
            tenant, channel, address, provider_message_id=ident, text=text, button_payload=button
        ),
    )
    out.print(f"action:           {result.action.name}")
    out.print(f"matched keyword:  {result.matched_keyword or '-'}", markup=False)
    out.print(f"reply:            {result.reply_text or '-'}", markup=False)
    out.print(f"reply message id: {result.reply_message_id or '-'}")
    out.print(f"revision:         {result.revision}")
    out.print(f"provider msg id:  {ident}", markup=False)


@dead_letters_app.command("list")
def dead_letters_list(
    ctx: typer.Context,
    tenant: Tenant,
    raw: Annotated[bool, typer.Option("--raw", help="Print each item as received.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
) -> None:
    """List the tenant's WhatsApp notification items that were not applied."""
    shown = total = 0
    token = ""
    with _client(ctx) as client:
        while shown < limit:
            page = client.list_unapplied_notifications(
                tenant, page_size=min(100, limit - shown), page_token=token
            )
            for item in page.notifications:
                shown += 1
                when = item.received_at.ToDatetime().isoformat(timespec="seconds") + "Z"
                # One line per item, tab-separated: readable and easy to script.
                fields = (item.id, when, item.reason, item.kind, item.path, item.detail)
                out.print("\t".join(fields), markup=False, soft_wrap=True)
                if raw:
                    out.print(item.raw, markup=False, soft_wrap=True)
            total = page.total
            token = page.next_page_token
            if not token:
                break
    out.print(f"{shown} shown of {total} kept")


@dead_letters_app.command("replay")
def dead_letters_replay(
    ctx: typer.Context,
    tenant: Tenant,
    notification_id: Annotated[str, typer.Argument(help="The id from `list`.")],
) -> None:
    """Apply a dead letter now (you vouch for it); it stays listed if still refused."""
    result = _call(ctx, lambda c: c.replay_unapplied_notification(tenant, notification_id))
    if result.applied:
        out.print(f"applied and removed: {notification_id}", markup=False)
    else:
        n = result.notification
        out.print(f"still not applied ({n.reason}): {n.detail}", markup=False)
        raise typer.Exit(1)


@dead_letters_app.command("discard")
def dead_letters_discard(
    ctx: typer.Context,
    tenant: Tenant,
    notification_id: Annotated[str, typer.Argument(help="The id from `list`.")],
) -> None:
    """Remove a dead letter without applying it."""
    _call(ctx, lambda c: c.discard_unapplied_notification(tenant, notification_id))
    out.print(f"discarded: {notification_id}", markup=False)


@app.command()
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
            err.print(f"[bold red]error[/]: --at {at!r} is not an ISO 8601 time")
            raise typer.Exit(2)
        when = parsed.ToDatetime(tzinfo=UTC)
    d = _call(ctx, lambda c: c.check_consent(tenant, channel, address, topic, at=when))
    verdict = "[bold green]ALLOWED[/]" if d.allowed else "[bold red]BLOCKED[/]"
    out.print(f"{verdict} {d.recipient.address} on {d.recipient.channel.name}", end="")
    out.print(f" topic '{topic}'", markup=False)
    out.print(f"status: {d.status.name}  decided by: {d.decided_by.name}", end="")
    out.print(f"  reason: {d.reason}" if d.reason else "", markup=False)
    if d.since is not None:
        source = d.source.name if d.source else "-"
        out.print(f"since: {d.since.isoformat()}  source: {source}  revision: {d.revision}")
    event = d.raw.deciding_event if d.raw.HasField("deciding_event") else None
    if event is not None:
        recorded = event.recorded_at.ToDatetime(tzinfo=UTC).isoformat()
        out.print(f"decided by event {event.event_id} (recorded {recorded})", markup=False)
    if not d.allowed:
        raise typer.Exit(3)


def _change(
    ctx: typer.Context,
    opt_in: bool,
    tenant: str,
    address: str,
    topic: str,
    channel: str,
    evidence: str,
    event_id: str | None,
) -> None:
    def run(c: ConsentClient) -> Any:
        fn = c.opt_in if opt_in else c.opt_out
        return fn(
            tenant, channel, address, topic, source="admin", evidence=evidence, event_id=event_id
        )

    r = _call(ctx, run)
    what = "opted in to" if opt_in else "opted out of"
    scope = f"topic '{r.topic}'" if r.topic else "all topics"
    note = " (replay: nothing new)" if r.duplicate else "" if r.changed else " (no change)"
    out.print(f"{r.recipient.address} {what} {scope}{note}", markup=False)
    out.print(f"status: {r.status.name}  revision: {r.revision}  event id: {r.event_id}")


Evidence = Annotated[str, typer.Option(help="Why (e.g. a ticket number), kept as evidence.")]
EventId = Annotated[str | None, typer.Option(help="Idempotency id; default: a new one per call.")]


@app.command("opt-out")
def opt_out(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    topic: Topic = "",
    channel: Channel = "whatsapp",
    evidence: Evidence = "consentctl",
    event_id: EventId = None,
) -> None:
    """Record an opt-out (source ADMIN)."""
    _change(ctx, False, tenant, address, topic, channel, evidence, event_id)


@app.command("opt-in")
def opt_in(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    topic: Topic = "",
    channel: Channel = "whatsapp",
    evidence: Evidence = "consentctl",
    event_id: EventId = None,
) -> None:
    """Record an opt-in (source ADMIN); keep the evidence of the customer's consent."""
    _change(ctx, True, tenant, address, topic, channel, evidence, event_id)


@app.command()
def history(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    channel: Channel = "whatsapp",
    limit: Annotated[int, typer.Option(min=1, help="At most this many events, newest first.")] = 50,
) -> None:
    """The recipient's consent events, newest first, as a table."""

    def run(c: ConsentClient) -> list[Any]:
        events = []
        for e in c.iter_consent_events(tenant, channel, address, page_size=min(limit, 1000)):
            events.append(e)
            if len(events) >= limit:
                break
        return events

    events = _call(ctx, run)
    table = Table(title=f"consent history of {address} on {channel} ({tenant})")
    for col in ("rev", "occurred at (UTC)", "action", "topic", "source", "applied"):
        table.add_column(col, no_wrap=True)
    table.add_column("event id", overflow="fold", min_width=12)
    table.add_column("evidence", overflow="fold", min_width=12)
    for e in events:
        table.add_row(
            str(e.revision),
            e.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.action.name,
            e.topic or "*",
            e.source.name,
            "yes" if e.applied else "no (late)",
            e.event_id,
            e.evidence,
        )
    out.print(table)
    if not events:
        out.print("no events")


@app.command()
def link(
    ctx: typer.Context,
    tenant: Tenant,
    address: Address,
    topic: Topic = "",
    channel: Channel = "whatsapp",
    ttl: Annotated[
        int, typer.Option(min=0, help="Seconds the links stay valid; 0 = the server default.")
    ] = 0,
) -> None:
    """Mint signed opt-out and re-subscribe links (needs the server's HTTP edge).

    Links are printed whole on one line each (no wrapping), ready to copy."""
    links = _call(
        ctx, lambda c: c.create_consent_link(tenant, channel, address, topic, ttl_seconds=ttl)
    )
    out.print(f"opt-out:               {links.opt_out_url}", markup=False, soft_wrap=True)
    out.print(f"re-subscribe:          {links.resubscribe_url}", markup=False, soft_wrap=True)
    out.print(f"List-Unsubscribe:      {links.list_unsubscribe}", markup=False, soft_wrap=True)
    out.print(f"List-Unsubscribe-Post: {links.list_unsubscribe_post}", markup=False)
    out.print(f"expires at:            {links.expires_at.isoformat()}")


# -- bulk import and export ----------------------------------------------------------------


def _action_map(values: list[str]) -> dict[str, int]:
    mapping: dict[str, int] = {}
    for item in values:
        value, sep, action = item.rpartition("=")
        code = transfer.ACTIONS.get(action.strip().lower())
        if not sep or code is None or not value:
            err.print(
                f"[bold red]error[/]: --action-map {item!r}: use VALUE=opt_out or VALUE=opt_in"
            )
            raise typer.Exit(2)
        mapping[value.strip().lower()] = code
    return mapping


@app.command("import")
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
    opts: Options = ctx.obj
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
    with bar, _client(ctx) as client:
        task = bar.add_task("import", total=size, records=0)

        def progress(done: int, totals: transfer.Totals) -> None:
            bar.update(task, completed=done, records=totals.records)

        try:
            totals, resumed = transfer.run_import(
                client,
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
            err.print(f"[bold red]error[/]: {exc}", markup=False)
            raise typer.Exit(2) from None
    _print_import(totals, resumed, dry_run)
    if totals.invalid:
        raise typer.Exit(4)


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


@app.command("export")
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
            err.print(f"[bold red]error[/]: --updated-since {updated_since!r} is not a time")
            raise typer.Exit(2)
        since = parsed.ToDatetime(tzinfo=UTC)
    kind = (
        transfer.detect_format(output, fmt)
        if output is not None
        else ("csv" if fmt == "auto" else fmt)
    )
    opts: Options = ctx.obj
    bar = Progress(
        TextColumn("[bold]export[/]"),
        BarColumn(),
        TextColumn("{task.fields[records]} records"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    with bar, _client(ctx) as client:
        task = bar.add_task("export", total=1, records=0)

        def progress(done: int, total: int, count: int) -> None:
            bar.update(task, completed=done, total=total, records=count)

        pages = client.export_consent(
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
    err.print(f"exported {count} records" + (f" to {output}" if output else ""))


@app.command("watch")
def watch(
    ctx: typer.Context,
    tenant: Tenant,
    from_token: Annotated[
        str, typer.Option("--from-token", help="Resume after this token (the last one printed).")
    ] = "",
    from_oldest: Annotated[
        bool, typer.Option("--from-oldest", help="Without a token: from the oldest retained event.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per message (event and resume_token).")
    ] = False,
    limit: Annotated[int, typer.Option(min=0, help="Stop after this many events; 0 = never.")] = 0,
) -> None:
    """Follow the tenant's change feed (WatchConsentEvents); the last resume token goes to
    stderr on exit, to pass back with --from-token."""
    token, seen = from_token, 0
    try:
        with _client(ctx) as client:
            for m in client.watch_consent_events(
                tenant, resume_token=from_token, from_oldest=from_oldest
            ):
                token = m.resume_token
                if not m.HasField("event"):
                    continue
                seen += 1
                e = m.event
                if as_json:
                    doc = json_format.MessageToDict(m, preserving_proto_field_name=True)
                    print(json.dumps(doc, ensure_ascii=False), flush=True)
                elif e.kind == pb.CHANGE_KIND_ERASURE:
                    out.print(
                        f"{e.recorded_at.ToJsonString()}  ERASURE  "
                        f"{e.source_event_id}  {e.event_id}"
                    )
                else:
                    out.print(
                        f"{e.recorded_at.ToJsonString()}  {pb.ConsentAction.Name(e.action)}  "
                        f"{pb.Channel.Name(e.recipient.channel)} {e.recipient.address}  "
                        f"topic={e.topic or '*'}  {e.event_id}",
                        markup=False,
                    )
                if limit and seen >= limit:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        if token:
            err.print(f"resume token: {token}", markup=False, soft_wrap=True)


def main() -> None:
    """The console script entry point."""
    app()


if __name__ == "__main__":
    main()
