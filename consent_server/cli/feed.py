"""consentctl watch: follow a tenant's change feed (WatchConsentEvents)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from google.protobuf import json_format

from consent_client.v1 import consent_pb2 as pb

from .common import Tenant, client, err, options, out


def register(root: typer.Typer) -> None:
    """Mount ``watch`` on the root command."""
    root.command("watch")(watch)


def watch(
    ctx: typer.Context,
    tenant: Tenant,
    from_token: Annotated[
        str, typer.Option("--from-token", help="Resume after this token (the last one printed).")
    ] = "",
    from_oldest: Annotated[
        bool, typer.Option("--from-oldest", help="Without a token: from the oldest retained event.")
    ] = False,
    limit: Annotated[int, typer.Option(min=0, help="Stop after this many events; 0 = never.")] = 0,
) -> None:
    """Follow the tenant's change feed; the last resume token goes to stderr on exit, to
    pass back with --from-token. --json: one JSON object per message (event, token)."""
    token, seen = from_token, 0
    as_json = options(ctx).json
    try:
        with client(ctx) as c:
            for m in c.watch_consent_events(
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
