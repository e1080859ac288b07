"""What every consentctl command shares: connection options (target, TLS, API key),
output (human or ``--json``), one-line errors and the exit codes."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console

from consent_client import ConsentClient, ConsentError, InvalidArgument

T = TypeVar("T")

# Exit codes. Never renumber one: scripts test them. Add a new one only for a new meaning.
EXIT_OK = 0
EXIT_REFUSED = 1  # the server refused the call or could not be reached (gRPC status)
EXIT_USAGE = 2  # bad flags or arguments: nothing was sent
EXIT_BLOCKED = 3  # `check`: the recipient may not be messaged
EXIT_INVALID_RECORDS = 4  # `import`: some records were invalid (listed with line numbers)
EXIT_PROBLEMS = 5  # `doctor`: the deployment answered, but something needs fixing
EXIT_UNREACHABLE = 6  # `doctor`: no gRPC connection to the target at all

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the server refused the call or is unreachable (code, reason and "
    "message on stderr); 2 bad usage, nothing sent; 3 check: blocked; 4 import: invalid "
    "records; 5 doctor: problems found; 6 doctor: target unreachable."
)

DEFAULT_TARGET = "127.0.0.1:50051"

out = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Options:
    """The connection and output options every command shares (root flags or env)."""

    target: str | None = None
    api_key: str | None = None
    timeout: float = 10.0
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    json: bool = False

    @property
    def address(self) -> str:
        """The target to dial: the flag or env, else the default."""
        return self.target or DEFAULT_TARGET

    def merged(self, **given: Any) -> Options:
        """These options with the non-None values given (a sub-command's own flags)."""
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})


def options(ctx: typer.Context) -> Options:
    """The root options (defaults when a sub-app runs on its own, e.g. in tests)."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Options) else Options()


def version_text() -> str:
    """``consentctl X (client Y)``: the installed distributions' versions."""

    def of(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return f"consentctl {of('consent-server')} (consent-client {of('consent-client')})"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(EXIT_OK)


def root_callback(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Option(
            envvar="CONSENT_TARGET",
            help=f"host:port of the consent authority (default {DEFAULT_TARGET}).",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="CONSENT_API_KEY", help="API key (Bearer); prefer the env var."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Deadline of each call, in seconds.")] = 10.0,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls", envvar="CONSENT_CLIENT_TLS", help="TLS with the system's root certificates."
        ),
    ] = False,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-ca",
            "--ca",
            envvar="CONSENT_CLIENT_TLS_CA",
            help="CA that signed the server's certificate (implies --tls).",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            "--cert",
            envvar="CONSENT_CLIENT_TLS_CERT",
            help="Client certificate, for a server that requires mTLS.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key", "--key", envvar="CONSENT_CLIENT_TLS_KEY", help="Its private key."
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Machine-readable JSON on stdout."),
    ] = False,
    _version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version."),
    ] = False,
) -> None:
    """Connection options for every command; see the exit codes below."""
    ctx.obj = Options(target, api_key, timeout, tls, tls_ca, tls_cert, tls_key, json_out)


# The root options, hoisted to the front when given after the command: the ones that
# take a value, and the flags.
_VALUED = frozenset(
    {"--target", "--api-key", "--timeout", "--tls-ca", "--ca", "--tls-cert", "--cert",
     "--tls-key", "--key"}
)  # fmt: skip
_FLAGS = frozenset({"--json", "--tls"})


def hoist(args: list[str]) -> list[str]:
    """``args`` with every root option moved to the front, so that
    ``consentctl tenants list --json --target h:1`` means the same as
    ``consentctl --json --target h:1 tenants list``. Nothing after ``--`` moves."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if arg in _FLAGS or (name in _VALUED and "=" in arg):
            front.append(arg)
        elif arg in _VALUED and i + 1 < len(args):
            front += args[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


class RootGroup(typer.core.TyperGroup):
    """Root options are accepted after the command too (see :func:`hoist`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist(args))


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr and exit ``code`` (default: bad usage, nothing sent)."""
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


def describe(exc: ConsentError) -> str:
    """``CODE [REASON]: message`` for a refused call."""
    reason = f" [{exc.reason}]" if exc.reason else ""
    return f"{exc.code.name}{reason}: {exc.message}"


@contextmanager
def connect(opts: Options) -> Iterator[ConsentClient]:
    """A client; a refused call becomes one line (plus one per bad field) and exit 1."""
    try:
        with ConsentClient(
            opts.address,
            api_key=opts.api_key,
            timeout=opts.timeout,
            tls=opts.tls,
            tls_ca=opts.tls_ca,
            tls_cert=opts.tls_cert,
            tls_key=opts.tls_key,
        ) as client:
            yield client
    except ConsentError as exc:
        if isinstance(exc, InvalidArgument) and exc.field_violations:
            reason = f" [{exc.reason}]" if exc.reason else ""
            err.print(
                f"error: {exc.code.name}{reason}: the request was refused, nothing changed",
                markup=False,
            )
            for field, description in exc.field_violations:
                err.print(f"  {field}: {description}", markup=False)
        else:
            err.print(f"error: {describe(exc)}", markup=False)
        raise typer.Exit(EXIT_REFUSED) from None
    except ValueError as exc:  # the client refused an argument before calling
        fail(str(exc))


@contextmanager
def client(ctx: typer.Context) -> Iterator[ConsentClient]:
    """A client built from the root options."""
    with connect(options(ctx)) as c:
        yield c


def call(ctx: typer.Context, fn: Callable[[ConsentClient], T]) -> T:
    """Run one client call with the command's options and error handling."""
    with client(ctx) as c:
        return fn(c)


def jsonable(value: Any) -> Any:
    """Plain JSON values from client results: dataclasses, enums, datetimes, protos."""
    if isinstance(value, Message):
        return json_format.MessageToDict(
            value, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "raw"  # the proto the dataclass was built from: already above
        }
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout, never wrapped or truncated."""
    sys.stdout.write(json.dumps(jsonable(value), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(ctx: typer.Context, value: Any, human: Callable[[], None]) -> None:
    """``--json``: the value as JSON; otherwise the human rendering."""
    if options(ctx).json:
        print_json(value)
    else:
        human()


def secret_option(envvar: str, help_text: str) -> Any:
    """The option of a secret: read from ``envvar`` too (which keeps it out of the shell
    history), its value never shown as a default in --help."""
    return typer.Option(envvar=envvar, help=help_text, show_default=False)


def emit_list(
    ctx: typer.Context,
    key: str,
    items: Sequence[T],
    line: Callable[[T], None],
    empty: str,
    json_of: Callable[[T], Any] | None = None,
) -> None:
    """A list result: ``{key: [...]}`` with --json (each item through ``json_of`` when
    given), otherwise one ``line`` per item, or ``empty`` when there is none."""
    if options(ctx).json:
        print_json({key: jsonable([json_of(i) for i in items] if json_of else list(items))})
        return
    for item in items:
        line(item)
    if not items:
        out.print(empty)


def fields(ctx: typer.Context, value: Any) -> None:
    """A flat result: ``name: value`` lines, or JSON."""
    data = jsonable(value)

    def human() -> None:
        for k, v in data.items():
            out.print(f"{k}: {v}", markup=False)

    emit(ctx, data, human)


def wants_table() -> bool:
    """Rich tables on a terminal only; tab-separated lines when piped."""
    return out.is_terminal


def tsv(*cells: object) -> None:
    """One tab-separated line on stdout (for pipes: no wrapping, no markup)."""
    # Straight to stdout: rich would expand the tabs to spaces.
    sys.stdout.write("\t".join(str(c) for c in cells) + "\n")


def ts_text(ts: Any) -> str:
    """A protobuf Timestamp as ISO 8601 UTC seconds (``-`` when unset)."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return str(ts.ToDatetime().isoformat(timespec="seconds")) + "Z"


Channel = Annotated[
    str, typer.Option("--channel", "-c", help="whatsapp, sms, email, rcs or voice.")
]
Topic = Annotated[str, typer.Option("--topic", "-t", help='The topic; "" = all topics.')]
Tenant = Annotated[str, typer.Argument(help="The tenant id.")]
Address = Annotated[str, typer.Argument(help="Phone number, WhatsApp id or e-mail address.")]
