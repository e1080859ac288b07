"""Settings: small frozen groups read from the environment and flags, validated at start.

Every setting is declared once, as a field of its group made with :func:`option`: the
environment variable, the parser (which validates), the default and a one-line
documentation. :data:`OPTIONS` collects those declarations in order; that one table
builds the flags (which mirror the variables: ``--redis-url`` = ``CONSENT_REDIS_URL``;
a flag wins over the environment), parses, and prints the README's configuration
tables (``python -m consent_server.config --markdown [GROUP ...]``). Settings that are
only valid together are checked afterwards by the functions in ``_CHECKS``.

Bad configuration raises ConfigError whose message is one line naming the setting;
``__main__`` prints it and exits 2.

Adding a setting: one ``option(...)`` field in its group, then
``python -m consent_server.config --readme README.md`` to refresh the README.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, TypeAlias, TypeVar
from urllib.parse import urlparse

from consent_server.domain.auth import is_key_token
from consent_server.domain.egress import ALLOW_ENV, EgressPolicy
from consent_server.domain.recipients import is_valid_region
from consent_server.domain.validation import TENANT_RE


class ConfigError(ValueError):
    """A setting is invalid; the message names it."""


T = TypeVar("T")
L = TypeVar("L", bound=str)
N = TypeVar("N", int, float)
#: Turns the text of ``var`` into a value, or raises ConfigError naming ``var``.
Parser: TypeAlias = Callable[[str, str], T]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["json", "text"]
RequireAuth = Literal["auto", "1", "0"]
DeliveryMode = Literal["inline", "off"]


# -- parsers: each returns the typed value or raises ConfigError(one line naming var) --


def _one_of(choices: Mapping[str, T]) -> Parser[T]:
    """One of ``choices`` (case-insensitive), as the value it maps to."""

    def parse(var: str, text: str) -> T:
        value = choices.get(text.strip().lower())
        if value is None:
            raise ConfigError(f"{var}={text!r}: expected one of {', '.join(choices)}")
        return value

    return parse


def _choice(values: tuple[L, ...]) -> Parser[L]:
    """One of ``values`` (case-insensitive), typed as their Literal."""
    return _one_of({v: v for v in values})


_SWITCH = _one_of({"0": False, "1": True})


def _number(kind: Callable[[str], N], expected: str, low: N, high: N, bounds: str) -> Parser[N]:
    """A number ``kind`` parses, from ``low`` to ``high`` (``bounds`` says them)."""

    def parse(var: str, text: str) -> N:
        try:
            value = kind(text.strip())
        except ValueError:
            raise ConfigError(f"{var}={text!r}: expected {expected}") from None
        if not low <= value <= high:
            raise ConfigError(f"{var}={text!r}: must be between {bounds}")
        return value

    return parse


def _whole(low: int, high: int) -> Parser[int]:
    return _number(int, "a whole number", low, high, f"{low} and {high}")


def _egress(var: str, text: str) -> EgressPolicy:
    """CONSENT_EGRESS_ALLOW: the operator's allowances for internal destinations."""
    try:
        return EgressPolicy.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{var}: {exc}") from None


def _tenant_ids(var: str, text: str) -> tuple[str, ...]:
    """CONSENT_TENANTS: comma-separated tenant ids, each well-formed."""
    ids = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [t for t in ids if not TENANT_RE.fullmatch(t)]
    if bad:
        raise ConfigError(f"{var}: {bad[0]!r} is not a tenant id (^[a-z0-9][a-z0-9_-]{{0,63}}$)")
    return ids


def _seconds(low: float, high: float) -> Parser[float]:
    return _number(float, "a number of seconds", low, high, f"{low:g} and {high:g}")


def _host_port(example: str, *, any_port: bool = True) -> Parser[str]:
    """A host:port setting; port 0 (pick a free one) only where ``any_port``."""

    def parse(var: str, text: str) -> str:
        host, sep, port = text.rpartition(":")
        lowest = 0 if any_port else 1
        if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
            raise ConfigError(f"{var}={text!r}: expected host:port, e.g. {example}")
        return text

    return parse


def _ip_host_port(var: str, text: str) -> str:
    """host:port with a real port and an IP address or localhost (the metrics listener)."""
    _host_port("127.0.0.1:9464", any_port=False)(var, text)
    host = host_of(text)
    if not is_loopback(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"{var}={text!r}: expected an IP address or localhost") from None
    return text


def _pem_file(marker: str) -> Parser[str]:
    def parse(var: str, path: str) -> str:
        try:
            with open(path, "rb") as fh:
                data = fh.read(1 << 20)
        except OSError as exc:
            raise ConfigError(f"{var}={path!r}: cannot read it ({exc.strerror})") from None
        if b"-----BEGIN " not in data or marker.encode() not in data:
            raise ConfigError(f"{var}={path!r}: not a PEM file with a {marker}")
        return path

    return parse


def _redis_url(var: str, text: str) -> str:
    if urlparse(text).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{var}: expected a redis://, rediss:// or unix:// URL")
    return text


def _region(var: str, text: str) -> str:
    if not is_valid_region(text.upper()):
        raise ConfigError(f"{var}={text!r}: expected an ISO 3166 region code such as IN or US")
    return text.upper()


def _base_url(var: str, text: str) -> str:
    url = urlparse(text)
    if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
        raise ConfigError(
            f"{var}={text!r}: expected an http(s) base URL without query, "
            "e.g. https://consent.example.com"
        )
    return text.rstrip("/")


def _link_secrets(var: str, text: str) -> tuple[bytes, ...]:
    parts = tuple(p.strip() for p in text.split(","))
    # Never echo the value: it is a secret.
    if any(len(p) < 32 for p in parts):
        raise ConfigError(f"{var}: each comma-separated secret must be at least 32 characters")
    return tuple(p.encode() for p in parts)


def _api_key(var: str, text: str) -> str:
    if not is_key_token(text.strip()):
        # Never echo the value: it is meant to be a secret.
        raise ConfigError(
            f"{var}: not an API key of the form ck_<16 hex>_<43 url-safe characters>; "
            "make one with `consentctl keys generate`"
        )
    return text.strip()


# -- the option table: one option() per setting, inside its group --


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: where it is read from, how it is parsed, how it is documented."""

    env: str
    parse: Parser[Any]
    doc: str  # one line of Markdown: the README's "Meaning" column and the --help text
    shown_default: str | None = None  # the README's "Default" column when not the value
    secret: bool = False  # never in a repr, a log line or an error message
    has_flag: bool = True  # False: environment only (a flag would show in `ps`)
    group: str = ""  # filled in by OPTIONS
    name: str = ""

    @property
    def flag(self) -> str | None:
        """The flag mirroring the variable: CONSENT_REDIS_URL -> --redis-url."""
        if not self.has_flag:
            return None
        return "--" + self.env.removeprefix("CONSENT_").lower().replace("_", "-")


def option(
    env: str,
    default: T,
    parse: Parser[T],
    doc: str,
    *,
    shown: str | None = None,
    secret: bool = False,
    flag: bool = True,
) -> T:
    """A group field read from ``env`` (and its flag), parsed by ``parse``."""
    spec = Option(env, parse, doc, shown, secret, flag)
    return field(default=default, metadata={"option": spec})


class _Group:
    """Base of the setting groups: a repr that shows only whether a secret is set."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            spec = f.metadata.get("option")
            if spec is not None and spec.secret and value:
                value = "<set>"
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, slots=True, repr=False)
class ServerSettings(_Group):
    """The gRPC listener and its lifecycle."""

    listen: str = option(
        "CONSENT_LISTEN",
        "127.0.0.1:50051",
        _host_port("127.0.0.1:50051"),
        "gRPC address `host:port` (`:0` picks a free port; the chosen address is logged)",
    )
    shutdown_grace_s: float = option(
        "CONSENT_SHUTDOWN_GRACE",
        10.0,
        _seconds(0, 600),
        "seconds SIGTERM waits for in-flight calls",
    )
    default_region: str | None = option(
        "CONSENT_DEFAULT_REGION",
        None,
        _region,
        "region (`IN`, `US`…) for numbers without `+` when the tenant sets none",
    )
    processes: int | None = option(
        "CONSENT_PROCESSES",
        None,
        _whole(1, 256),
        "server processes sharing the gRPC and HTTP ports (`SO_REUSEPORT`) under a supervisor "
        "that restarts them ([Processes](#processes)); `1` = one process, no supervisor; "
        "more than 1 needs `CONSENT_REDIS_URL`",
        shown="the number of cores (`1` on the embedded store)",
    )
    tenants: tuple[str, ...] = option(
        "CONSENT_TENANTS",
        (),
        _tenant_ids,
        "comma-separated tenant ids to create at start when missing (existing ones are never "
        "changed); the embedded store always creates the demo tenant `acme` "
        "([Tenants](#tenants))",
        shown="unset",
    )
    uvloop: bool = option(
        "CONSENT_UVLOOP",
        True,
        _SWITCH,
        "`1` = run on uvloop's event loop when it is installed (a dependency); `0` = "
        "asyncio's default loop",
    )
    # Not configurable: how often health follows Redis reachability.
    health_interval_s: float = 1.0

    @property
    def host(self) -> str:
        """The listen host without brackets."""
        return host_of(self.listen)


@dataclass(frozen=True, slots=True, repr=False)
class RedisSettings(_Group):
    """Where consent lives."""

    url: str | None = option(
        "CONSENT_REDIS_URL",
        None,
        _redis_url,
        "`redis://[:password@]host:port/db`, `rediss://…` (TLS), `unix:///path/redis.sock`",
        shown="unset = embedded store",
    )
    cluster: bool = option(
        "CONSENT_REDIS_CLUSTER", False, _SWITCH, "`1` = the URL is a Redis Cluster node"
    )
    timeout_s: float = option(
        "CONSENT_REDIS_TIMEOUT",
        2.0,
        _seconds(0.05, 60),
        "seconds before a Redis call counts as failed (→ `UNAVAILABLE`)",
    )
    multiplex: bool = option(
        "CONSENT_REDIS_MULTIPLEX",
        True,
        _SWITCH,
        "`1` = non-blocking commands share one pipelined connection per process "
        "(`store/multiplex.py`; not on a cluster); `0` = redis-py's pool for every command",
    )
    min_replicas_ack: int = option(
        "CONSENT_REDIS_MIN_REPLICAS_ACK",
        0,
        _whole(0, 16),
        "acknowledge a write only once this many replicas have it (`WAIT`); `0` = off; "
        "needs `CONSENT_REDIS_URL` (see "
        "[Durability: replicas and WAIT](#durability-replicas-and-wait))",
    )
    ack_timeout_ms: int = option(
        "CONSENT_REDIS_ACK_TIMEOUT_MS",
        1000,
        _whole(1, 60_000),
        "how long a write waits for its replicas before answering `UNAVAILABLE` "
        "(`REPLICATION_NOT_ACKNOWLEDGED`); below `CONSENT_REDIS_TIMEOUT`",
    )
    partitions: int | None = option(
        "CONSENT_PARTITIONS",
        None,
        _whole(1, 256),
        "partitions of a new store, fixed once it is created and recorded in Redis "
        "(`ca:meta`); each is one cluster slot, so it caps the useful cluster masters; "
        "on an existing store leave it unset (a different count refuses to start) "
        "([Redis Cluster](#redis-cluster))",
        shown="128 (16 on the embedded store); an existing store keeps its own",
    )
    feed_maxlen: int | None = option(
        "CONSENT_FEED_MAXLEN",
        None,
        _whole(1, 100_000_000),
        "change feed retention: entries kept per tenant and partition; a watcher further "
        "behind gets `OUT_OF_RANGE` and must re-export "
        "([Change feed and webhooks](#change-feed-and-webhooks))",
        shown="1,600,000 ÷ partitions (100,000 at 16, 12,500 at 128)",
    )

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set: the in-process, non-durable store is used."""
        return self.url is None


_LOG_LEVELS: dict[str, LogLevel] = {
    "debug": "DEBUG",
    "info": "INFO",
    "warning": "WARNING",
    "error": "ERROR",
}


@dataclass(frozen=True, slots=True, repr=False)
class ObservabilitySettings(_Group):
    """Logs and metrics."""

    log_level: LogLevel = option(
        "CONSENT_LOG_LEVEL",
        "INFO",
        _one_of(_LOG_LEVELS),
        "`debug`, `info`, `warning`, `error`",
        shown="`info`",
    )
    log_format: LogFormat = option(
        "CONSENT_LOG_FORMAT",
        "json",
        _choice(("json", "text")),
        "`json` (one object per line) or `text`",
    )
    metrics_listen: str | None = option(
        "CONSENT_METRICS_LISTEN",
        None,
        _ip_host_port,
        "Prometheus `/metrics` on `host:port` (IP or `localhost`)",
        shown="unset = off",
    )


@dataclass(frozen=True, slots=True, repr=False)
class DeliverySettings(_Group):
    """The delivery worker (inline in the server, or a process of its own)."""

    mode: DeliveryMode = option(
        "CONSENT_DELIVERY",
        "inline",
        _choice(("inline", "off")),
        "`inline` = a delivery worker runs inside the server; `off` = run workers apart "
        "with `python -m consent_server.worker` (see Delivery)",
    )
    concurrency: int = option(
        "CONSENT_DELIVERY_CONCURRENCY",
        32,
        _whole(1, 1024),
        "messages one worker hands to providers at once (1–1024)",
    )
    visibility_s: float = option(
        "CONSENT_DELIVERY_VISIBILITY_TIMEOUT",
        60.0,
        _seconds(0.2, 3600),
        "seconds before another worker takes over a message claimed by a worker that went "
        "silent (crashed); live workers renew their claims (0.2–3600)",
    )
    max_attempts: int = option(
        "CONSENT_DELIVERY_MAX_ATTEMPTS",
        8,
        _whole(1, 100),
        "provider attempts before a transiently failing message is FAILED (1–100)",
    )
    backoff_s: float = option(
        "CONSENT_DELIVERY_BACKOFF",
        1.0,
        _seconds(0.01, 3600),
        "seconds before the first retry; doubles per attempt, jittered (0.01–3600)",
    )
    backoff_max_s: float = option(
        "CONSENT_DELIVERY_BACKOFF_MAX",
        300.0,
        _seconds(0.01, 86400),
        "the longest wait between retries, seconds (≥ the backoff)",
    )
    egress_allow: EgressPolicy = option(
        ALLOW_ENV,
        EgressPolicy(),
        _egress,
        "operator-only: internal destinations providers may reach (`host`, `host:port`, "
        "`10.0.0.5`, `[::1]:8080`, `10.0.0.0/8`), comma-separated; unset = public addresses "
        "only (see [Providers](#providers))",
        shown="unset",
    )


@dataclass(frozen=True, slots=True, repr=False)
class AuthSettings(_Group):
    """API keys and their rate limits (README "Security")."""

    require: RequireAuth = option(
        "CONSENT_REQUIRE_AUTH",
        "auto",
        _choice(("auto", "1", "0")),
        "API keys ([Security](#security)): `auto` = required whenever `CONSENT_LISTEN` is "
        "not loopback, `1` = always, `0` = never (beyond loopback only together with "
        "`CONSENT_ALLOW_INSECURE=1`)",
    )
    allow_insecure: bool = option(
        "CONSENT_ALLOW_INSECURE",
        False,
        _SWITCH,
        "`1` = allow `CONSENT_REQUIRE_AUTH=0` beyond loopback (logged as a warning at start)",
    )
    bootstrap_admin_key: str | None = option(
        "CONSENT_BOOTSTRAP_ADMIN_KEY",
        None,
        _api_key,
        "a key made with `consentctl keys generate`, installed at start as an operator "
        "admin key if its id is new (a revoked one stays revoked)",
        secret=True,
        flag=False,
    )
    rate_limit: int = option(
        "CONSENT_RATE_LIMIT",
        1000,
        _whole(0, 1_000_000),
        "requests per second per API key (token bucket in Redis, shared by all processes); "
        "`0` = unlimited. A ceiling: a key's own `rate_limit_per_second` may only be lower "
        "(with a bucket of twice that, never above `CONSENT_RATE_BURST`); creating a key "
        "above it is `INVALID_ARGUMENT`, and a key stored with more is held to it. "
        "`BatchCheckConsent` costs one token per 100 recipients (at least one)",
    )
    rate_burst: int = option(
        "CONSENT_RATE_BURST",
        0,
        _whole(0, 10_000_000),
        "bucket size per key; `0` = twice the rate",
    )


@dataclass(frozen=True, slots=True, repr=False)
class TlsSettings(_Group):
    """TLS and mTLS of the gRPC listener."""

    cert: str | None = option(
        "CONSENT_TLS_CERT",
        None,
        _pem_file("CERTIFICATE"),
        "PEM server certificate (chain): serve TLS only (with `CONSENT_TLS_KEY`)",
    )
    key: str | None = option(
        "CONSENT_TLS_KEY",
        None,
        _pem_file("PRIVATE KEY"),
        "PEM private key of `CONSENT_TLS_CERT`",
    )
    client_ca: str | None = option(
        "CONSENT_TLS_CLIENT_CA",
        None,
        _pem_file("CERTIFICATE"),
        "PEM CA bundle: require client certificates signed by it (mTLS)",
    )

    @property
    def enabled(self) -> bool:
        """True when the server speaks TLS."""
        return self.cert is not None


# The contract's maxima (also in the proto comments) cannot be raised, only lowered.
@dataclass(frozen=True, slots=True, repr=False)
class LimitSettings(_Group):
    """Request limits."""

    max_request_bytes: int = option(
        "CONSENT_MAX_REQUEST_BYTES",
        4 * 1024 * 1024,
        _whole(64 * 1024, 64 * 1024 * 1024),
        "largest request message (64 KiB–64 MiB); larger → `RESOURCE_EXHAUSTED`, unread",
    )
    max_concurrent_streams: int = option(
        "CONSENT_MAX_CONCURRENT_STREAMS",
        100,
        _whole(1, 100_000),
        "concurrent calls per client connection, announced to the client: more wait on "
        "the client, none is refused (even in a burst on a new connection)",
    )
    max_concurrent_calls: int = option(
        "CONSENT_MAX_CONCURRENT_CALLS",
        10_000,
        _whole(1, 1_000_000),
        "calls one server process runs at once over all connections, counting those "
        "still finishing after their client gave up; more → `RESOURCE_EXHAUSTED`, unread",
    )
    max_batch: int = option(
        "CONSENT_MAX_BATCH",
        10_000,
        _whole(1, 10_000),
        "`BatchCheckConsent` recipients (1–10,000)",
    )
    max_page_size: int = option(
        "CONSENT_MAX_PAGE_SIZE", 1000, _whole(1, 1000), "`ListConsentEvents` page (1–1,000)"
    )
    max_evidence_bytes: int = option(
        "CONSENT_MAX_EVIDENCE_BYTES", 1024, _whole(0, 1024), "evidence, UTF-8 bytes (0–1,024)"
    )
    max_metadata_entries: int = option(
        "CONSENT_MAX_METADATA_ENTRIES",
        32,
        _whole(0, 32),
        "`SendIfAllowed` metadata entries (0–32)",
    )
    max_metadata_value: int = option(
        "CONSENT_MAX_METADATA_VALUE", 512, _whole(0, 512), "metadata value length (0–512)"
    )


@dataclass(frozen=True, slots=True, repr=False)
class EdgeSettings(_Group):
    """The HTTP edge: off unless ``listen`` is set."""

    listen: str | None = option(
        "CONSENT_HTTP_LISTEN",
        None,
        _host_port("127.0.0.1:8080"),
        "HTTP address `host:port` (`:0` picks a free port)",
        shown="unset = off",
    )
    public_url: str | None = option(
        "CONSENT_PUBLIC_URL",
        None,
        _base_url,
        "the base URL customers and Meta reach the edge at, e.g. "
        "`https://consent.example.com`; links are built from it",
        shown="`http://<CONSENT_HTTP_LISTEN>`",
    )
    link_secrets: tuple[bytes, ...] = option(
        "CONSENT_LINK_SECRET",
        (),
        _link_secrets,
        "secret(s) that seal link tokens, each ≥ 32 characters. Comma-separated to rotate: "
        "the first mints, all verify. Unset: a random secret is generated once and kept in "
        "Redis (`ca:edge:link_secret`, created with `SET NX` so every server process shares "
        "it). Set it when you want links to survive a Redis wipe, or on the embedded store, "
        "where a restart invalidates every link",
        shown="unset = generated",
        secret=True,
    )

    @property
    def listen_host(self) -> str:
        """The listen host without brackets ("" when the edge is off)."""
        return host_of(self.listen or "")


@dataclass(frozen=True, slots=True)
class Settings:
    """The server's configuration: one frozen group per concern."""

    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)

    @property
    def processes(self) -> int:
        """How many server processes serve: CONSENT_PROCESSES, else one per core (one on
        the embedded store, whose data lives in a single process's memory)."""
        if self.server.processes is not None:
            return self.server.processes
        return 1 if self.redis.embedded else cores()

    @property
    def auth_required(self) -> bool:
        """True when every call needs an API key: ``1``, or ``auto`` beyond loopback."""
        if self.auth.require == "auto":
            return not is_loopback(self.server.host)
        return self.auth.require == "1"


def _collect() -> tuple[Option, ...]:
    defaults = Settings()
    found = []
    for group in fields(defaults):
        for f in fields(getattr(defaults, group.name)):
            spec = f.metadata.get("option")
            if isinstance(spec, Option):
                found.append(replace(spec, group=group.name, name=f.name))
    return tuple(found)


#: Every setting, group by group, in declaration order.
OPTIONS: tuple[Option, ...] = _collect()
#: The group names, in order (the fields of Settings).
GROUPS: tuple[str, ...] = tuple(f.name for f in fields(Settings))


# -- settings only valid together: run in order on the parsed Settings --


def _check_redis(s: Settings) -> None:
    if s.redis.cluster and s.redis.url is None:
        raise ConfigError("CONSENT_REDIS_CLUSTER=1 needs CONSENT_REDIS_URL")
    n = s.redis.min_replicas_ack
    if n and s.redis.embedded:
        raise ConfigError(
            f"CONSENT_REDIS_MIN_REPLICAS_ACK={n}: needs CONSENT_REDIS_URL "
            "(the embedded store has no replicas)"
        )
    # WAIT must answer before the Redis socket timeout would cut the call off.
    if n and s.redis.ack_timeout_ms >= s.redis.timeout_s * 1000:
        raise ConfigError(
            f"CONSENT_REDIS_ACK_TIMEOUT_MS={s.redis.ack_timeout_ms}: must be below "
            f"CONSENT_REDIS_TIMEOUT ({s.redis.timeout_s:g} s), or the Redis call times out "
            "before WAIT answers"
        )


def _check_processes(s: Settings) -> None:
    n = s.server.processes
    if n is not None and n > 1 and s.redis.embedded:
        raise ConfigError(
            f"CONSENT_PROCESSES={n}: the embedded store lives in one process's memory and "
            "cannot be shared; set CONSENT_REDIS_URL or CONSENT_PROCESSES=1"
        )


def _check_tls(s: Settings) -> None:
    t = s.tls
    if (t.cert is None) != (t.key is None):
        missing = "CONSENT_TLS_KEY" if t.key is None else "CONSENT_TLS_CERT"
        raise ConfigError(f"{missing}: TLS needs both CONSENT_TLS_CERT and CONSENT_TLS_KEY")
    if t.client_ca is not None and t.cert is None:
        raise ConfigError("CONSENT_TLS_CLIENT_CA: mTLS needs CONSENT_TLS_CERT and CONSENT_TLS_KEY")
    if t.cert is not None and t.key is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(t.cert, t.key)
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                "CONSENT_TLS_KEY: not the private key of CONSENT_TLS_CERT (or unreadable PEM)"
            ) from None


def _check_backoff(s: Settings) -> None:
    base, cap = s.delivery.backoff_s, s.delivery.backoff_max_s
    if cap < base:
        raise ConfigError(
            f"CONSENT_DELIVERY_BACKOFF_MAX={cap:g}: must not be below "
            f"CONSENT_DELIVERY_BACKOFF={base:g}"
        )


def _check_auth(s: Settings) -> None:
    """Refuse to serve beyond loopback without authentication unless told so explicitly."""
    beyond_loopback = not is_loopback(s.server.host)
    if not s.auth_required and beyond_loopback and not s.auth.allow_insecure:
        raise ConfigError(
            f"CONSENT_REQUIRE_AUTH=0 with CONSENT_LISTEN={s.server.listen!r} beyond loopback "
            "would let anyone who reaches the port change consent: set "
            "CONSENT_ALLOW_INSECURE=1 to do it on purpose, or turn authentication on"
        )


_CHECKS: tuple[Callable[[Settings], None], ...] = (
    _check_redis,
    _check_processes,
    _check_tls,
    _check_backoff,
    _check_auth,
)


# -- reading --


def _plain(doc: str) -> str:
    """A Markdown doc line as plain --help text."""
    return re.sub(r"\[([^]]+)\]\([^)]*\)", r"\1", doc).replace("`", "")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consent-server",
        description="The consent authority gRPC server. Flags mirror environment variables.",
    )
    for o in OPTIONS:
        if o.flag is not None:
            p.add_argument(o.flag, dest=o.env, default=None, help=f"{_plain(o.doc)} (env {o.env})")
    return p


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read flags and environment into validated Settings, or raise ConfigError."""
    env = os.environ if environ is None else environ
    args = vars(_parser().parse_args(argv))
    values: dict[str, dict[str, object]] = {g: {} for g in GROUPS}
    for o in OPTIONS:
        text = args.get(o.env)
        if text is None:
            text = env.get(o.env)
        if text is not None and text != "":
            values[o.group][o.name] = o.parse(o.env, text)
    defaults = Settings()
    settings = replace(
        defaults, **{g: replace(getattr(defaults, g), **changes) for g, changes in values.items()}
    )
    for check in _CHECKS:
        check(settings)
    return settings


def cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_of(address: str) -> str:
    """The host of a ``host:port`` address, without the brackets of an IPv6 one."""
    return address.rsplit(":", 1)[0].strip("[]")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- documentation: the README's tables come from OPTIONS --


def _default_text(o: Option) -> str:
    if o.shown_default is not None:
        return o.shown_default
    value = getattr(getattr(Settings(), o.group), o.name)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def markdown_table(groups: Sequence[str] = GROUPS) -> str:
    """The Markdown table of the options of ``groups``, in declaration order."""
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ConfigError(f"unknown setting group(s) {', '.join(unknown)}: one of {GROUPS}")
    rows = ["| Variable | Flag | Default | Meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        if o.group in groups:
            flag = f"`{o.flag}`" if o.flag else "— (env only: flags show in `ps`)"
            rows.append(f"| `{o.env}` | {flag} | {_default_text(o)} | {o.doc} |")
    return "\n".join(rows) + "\n"


_BLOCK = re.compile(
    r"(<!-- BEGIN generated: python -m consent_server\.config --markdown ([a-z ]+) -->\n)"
    r".*?(<!-- END generated -->)",
    re.DOTALL,
)


def render_readme(text: str) -> str:
    """``text`` with every generated configuration table block regenerated."""
    return _BLOCK.sub(lambda m: m[1] + markdown_table(m[2].split()) + m[3], text)


def _main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m consent_server.config", description="The configuration tables."
    )
    p.add_argument(
        "--markdown",
        nargs="*",
        metavar="GROUP",
        help=f"print a table of these groups: {', '.join(GROUPS)} (default: all)",
    )
    p.add_argument("--readme", metavar="PATH", help="regenerate the tables in this README")
    args = p.parse_args(argv)
    if args.readme:
        with open(args.readme, encoding="utf-8") as fh:
            text = fh.read()
        with open(args.readme, "w", encoding="utf-8") as fh:
            fh.write(render_readme(text))
    if args.markdown is not None:
        print(markdown_table(args.markdown or GROUPS), end="")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
