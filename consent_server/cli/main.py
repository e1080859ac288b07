"""consentctl: the root command; each command group lives in its own module.

    consentctl tenants create TENANT [--name "Meal Box"] / get / list / delete
    consentctl settings get TENANT / set TENANT --business-name "Meal Box" ...
    consentctl inbound TENANT +919876543210 --text STOP
    consentctl inbound dead-letters list TENANT / replay TENANT ID / discard TENANT ID
    consentctl inbound webhook get TENANT / set TENANT --phone-number-id ... / delete TENANT
    consentctl check TENANT +919876543210 --topic marketing [--at 2026-10-01T09:00Z]
    consentctl opt-out TENANT ADDRESS / opt-in ... / history ... / link ... / forget ...
    consentctl message status TENANT MESSAGE_ID
    consentctl providers get TENANT / set TENANT --channel sms --kind webhook ...
    consentctl keys create / list / revoke / generate
    consentctl import TENANT optouts.csv [--dry-run] / export TENANT -o consent.csv
    consentctl watch TENANT [--from-token T | --from-oldest] [--limit N]
    consentctl webhooks set TENANT NAME --url URL / get / list / delete / deliveries / redrive
    consentctl doctor [--json]
    consentctl migrate --redis-url URL   (round-1 data to the compact layout)

Every command takes the connection options of ``common`` (before or after it).

A new command group: a module with ``register(app)``, and one line below.
"""

from __future__ import annotations

import sys

import typer

from . import (
    bulk,
    change_webhooks,
    consent,
    doctor,
    feed,
    inbound,
    keys,
    messages,
    migrate,
    providers,
    settings,
    tenants,
)
from .common import EXIT_CODES_HELP, EXIT_USAGE, RootGroup, err, root_callback

app = typer.Typer(
    name="consentctl",
    cls=RootGroup,
    help="Operate the consent authority: tenants, settings, consent records, inbound "
    "replies, delivery, keys, deployment checks.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.callback()(root_callback)

for module in (
    tenants,
    settings,
    inbound,
    consent,
    messages,
    providers,
    bulk,
    feed,
    doctor,
    keys,
    migrate,
    change_webhooks,
):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    """The console script: usage errors are one line on stderr (exit 2), no traceback."""
    try:
        code = app(argv, standalone_mode=False)
    except Exception as exc:
        # Typer's usage errors (bad option, missing file...) carry their own message
        # and exit code; print them as one line instead of a boxed usage screen.
        show = getattr(exc, "format_message", None)
        exit_code = getattr(exc, "exit_code", None)
        if show is None or not isinstance(exit_code, int):
            raise
        message = str(show())
        if type(exc).__name__ == "NoArgsIsHelpError":
            err.print(message, markup=False)
        else:
            where = getattr(getattr(exc, "ctx", None), "command_path", None)
            hint = f" (see '{where} --help')" if where else ""
            err.print(f"error: {message}{hint}", markup=False)
        sys.exit(exit_code or EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
