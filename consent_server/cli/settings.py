"""``consentctl settings``: read and change a tenant's settings (version-checked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format

from consent_client.v1 import admin_pb2 as apb

from .common import Tenant, call, client, fail, options, out, print_json

app = typer.Typer(help="Read and change a tenant's settings.", no_args_is_help=True)

KINDS = {
    "opt_out": apb.KEYWORD_KIND_OPT_OUT,
    "opt_in": apb.KEYWORD_KIND_OPT_IN,
    "help": apb.KEYWORD_KIND_HELP,
}
TEMPLATE_FIELDS = ("opt_out_confirmation", "opt_in_confirmation", "help")


def register(root: typer.Typer) -> None:
    """Mount ``settings`` on the root command."""
    root.add_typer(app, name="settings")


def _show(ctx: typer.Context, settings: apb.TenantSettings) -> None:
    if options(ctx).json:
        print_json(settings)
        return
    text = json_format.MessageToJson(
        settings, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    out.print_json(text)


@app.command("get")
def get(ctx: typer.Context, tenant: Tenant) -> None:
    """Print the tenant's effective settings as JSON (defaults filled in)."""
    _show(ctx, call(ctx, lambda c: c.get_tenant_settings(tenant)))


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"--from-file {str(path)!r}: {exc.strerror}")
    except ValueError as exc:
        fail(f"--from-file {str(path)!r} is not JSON: {exc}")
    if not isinstance(loaded, dict):
        fail(f"--from-file {str(path)!r} must hold a JSON object")
    return loaded


def _keyword_sets(current: apb.TenantSettings, specs: list[str]) -> list[dict[str, Any]]:
    sets = [json_format.MessageToDict(s) for s in current.keyword_sets]
    for spec in specs:
        parts = spec.split(":", 2)
        if len(parts) < 3 or parts[1] not in KINDS:
            fail(f"--add-keyword {spec!r}: use LANG:KIND:KEYWORD[:TOPIC], KIND one of "
                 f"{', '.join(KINDS)} (e.g. es:opt_out:BAJA)")  # fmt: skip
        lang, kind, rest = parts
        keyword, _, topic = rest.partition(":")
        sets.append(
            {
                "language": lang,
                "kind": apb.KeywordKind.Name(KINDS[kind]),
                "topic": topic,
                "keywords": [keyword],
            }
        )
    return sets


def _templates(current: apb.TenantSettings, specs: list[str]) -> list[dict[str, Any]]:
    by_lang = {
        t.language: json_format.MessageToDict(t, preserving_proto_field_name=True)
        for t in current.templates
    }
    for spec in specs:
        head, sep, text = spec.partition("=")
        lang, _, name = head.partition(":")
        if not sep or name not in TEMPLATE_FIELDS or not lang:
            fail(f"--template {spec!r}: use LANG:FIELD=TEXT, FIELD one of "
                 f"{', '.join(TEMPLATE_FIELDS)}")  # fmt: skip
        by_lang.setdefault(lang.lower(), {"language": lang.lower()})[name] = text
    return list(by_lang.values())


@app.command("set")
def set_(
    ctx: typer.Context,
    tenant: Tenant,
    business_name: Annotated[str | None, typer.Option(help="The business name.")] = None,
    default_region: Annotated[str | None, typer.Option(help="e.g. IN, US.")] = None,
    default_language: Annotated[str | None, typer.Option(help="e.g. en, es.")] = None,
    page_languages: Annotated[
        str | None,
        typer.Option(help='Languages of the link pages, first = default, e.g. "es,en,pt-br".'),
    ] = None,
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
    fields: dict[str, Any] = _read_file(from_file) if from_file is not None else {}
    scalars = {
        "business_name": business_name,
        "default_region": default_region,
        "default_language": default_language,
        "resubscribe_url": resubscribe_url,
        "infer_opt_out_in_sentences": infer_opt_out,
    }
    fields.update({k: v for k, v in scalars.items() if v is not None})
    if page_languages is not None:
        fields["page_languages"] = [t.strip() for t in page_languages.split(",") if t.strip()]
    if not fields and not add_keyword and not template:
        fail("nothing to change: give at least one option")

    with client(ctx) as c:
        # Always read first: the update carries the version it is based on, so a change
        # someone made meanwhile is never overwritten (ABORTED: run the command again).
        current = c.get_tenant_settings(tenant)
        if add_keyword:
            fields["keyword_sets"] = _keyword_sets(current, add_keyword)
        if template:
            fields["templates"] = _templates(current, template)
        new = c.update_tenant_settings(tenant, fields, version=current.version)
    _show(ctx, new)
