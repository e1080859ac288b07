"""``consentctl message``: the delivery status of a message sent with SendIfAllowed."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import Tenant, call, emit, jsonable, out

app = typer.Typer(help="Messages accepted by SendIfAllowed.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    """Mount ``message`` on the root command."""
    root.add_typer(app, name="message")


@app.command("status")
def status(
    ctx: typer.Context,
    tenant: Tenant,
    message_id: Annotated[str, typer.Argument(help="The message id SendIfAllowed returned.")],
) -> None:
    """A message's delivery status: state, attempts, last error, provider message id."""
    s = call(ctx, lambda c: c.get_message_status(tenant, message_id))

    def human() -> None:
        out.print(f"message:      {s.message_id}", markup=False)
        out.print(f"status:       {s.status.name}  attempts: {s.attempts}")
        out.print(
            f"recipient:    {s.recipient.address} on {s.recipient.channel.name}", markup=False
        )
        out.print(f"topic:        {s.topic or '-'}", markup=False)
        out.print(f"accepted at:  {s.accepted_at.isoformat()}")
        out.print(f"updated at:   {s.updated_at.isoformat()}")
        out.print(f"provider id:  {s.provider_message_id or '-'}", markup=False)
        out.print(f"last error:   {s.last_error or '-'}", markup=False)

    emit(ctx, jsonable(s), human)
