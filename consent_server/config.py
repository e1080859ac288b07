"""Settings: one frozen object read from the environment and flags, validated at start.

Flags mirror the environment variables (``--redis-url`` = ``CONSENT_REDIS_URL``);
a flag wins over the environment. Bad configuration raises ConfigError whose
message is one line naming the setting; ``__main__`` prints it and exits 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

from consent_server.domain.auth import is_key_token
from consent_server.domain.recipients import is_valid_region


class ConfigError(ValueError):
    """A setting is invalid; the message names it."""


_SECRET_SETTINGS = frozenset({"bootstrap_admin_key", "link_secrets"})


@dataclass(frozen=True, slots=True)
class Settings:
    """The server's configuration (see the README's configuration table)."""

    listen: str = "127.0.0.1:50051"
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_timeout_s: float = 2.0
    # WAIT-based acknowledgement of writes (README: durability); 0 = off.
    redis_min_replicas_ack: int = 0
    redis_ack_timeout_ms: int = 1000
    log_level: str = "INFO"
    log_format: str = "json"
    default_region: str | None = None
    require_auth: str = "auto"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    delivery: str = "inline"
    shutdown_grace_s: float = 10.0
    health_interval_s: float = 1.0
    # -- security (README "Security") --
    allow_insecure: bool = False
    bootstrap_admin_key: str | None = None
    rate_limit: int = 1000
    rate_burst: int = 0
    max_request_bytes: int = 4 * 1024 * 1024
    max_concurrent_streams: int = 100
    max_batch: int = 10_000
    max_page_size: int = 1000
    max_evidence_bytes: int = 1024
    max_metadata_entries: int = 32
    max_metadata_value: int = 512
    # The HTTP edge (SPEC §12): off unless http_listen is set.
    http_listen: str | None = None
    public_url: str | None = None
    link_secrets: tuple[bytes, ...] = field(default=(), repr=False)  # secret: never shown
    # Delivery worker tuning and the metrics listener (README: Delivery).
    metrics_listen: str | None = None
    delivery_concurrency: int = 32
    delivery_visibility_s: float = 60.0
    delivery_max_attempts: int = 8
    delivery_backoff_s: float = 1.0
    delivery_backoff_max_s: float = 300.0

    @property
    def host(self) -> str:
        """The listen host without brackets."""
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def auth_required(self) -> bool:
        """True when every call needs an API key: ``1``, or ``auto`` beyond loopback."""
        if self.require_auth == "auto":
            return not is_loopback(self.host)
        return self.require_auth == "1"

    @property
    def tls(self) -> bool:
        """True when the server speaks TLS."""
        return self.tls_cert is not None

    def __repr__(self) -> str:
        # Secrets (the bootstrap key, link secrets) never reach a repr, a log line or a
        # traceback: only whether they are set.
        shown = {
            name: ("<set>" if name in _SECRET_SETTINGS and value else value)
            for name, value in ((f, getattr(self, f)) for f in self.__dataclass_fields__)
        }
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def http_listen_host(self) -> str:
        """The HTTP edge's listen host without brackets ("" when the edge is off)."""
        return (self.http_listen or "").rsplit(":", 1)[0].strip("[]")

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set: the in-process, non-durable store is used."""
        return self.redis_url is None


# (setting name, env var, flag, help)
_OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("listen", "CONSENT_LISTEN", "--listen", "gRPC listen address host:port"),
    (
        "redis_url",
        "CONSENT_REDIS_URL",
        "--redis-url",
        "redis://, rediss:// or unix:// URL; unset = embedded store",
    ),
    (
        "redis_cluster",
        "CONSENT_REDIS_CLUSTER",
        "--redis-cluster",
        "1 = the URL points at a Redis Cluster",
    ),
    (
        "redis_timeout_s",
        "CONSENT_REDIS_TIMEOUT",
        "--redis-timeout",
        "seconds before a Redis call counts as failed",
    ),
    (
        "redis_min_replicas_ack",
        "CONSENT_REDIS_MIN_REPLICAS_ACK",
        "--redis-min-replicas-ack",
        "acknowledge a write only once this many replicas have it (WAIT); 0 = off",
    ),
    (
        "redis_ack_timeout_ms",
        "CONSENT_REDIS_ACK_TIMEOUT_MS",
        "--redis-ack-timeout-ms",
        "how long a write waits for its replicas before answering UNAVAILABLE",
    ),
    ("log_level", "CONSENT_LOG_LEVEL", "--log-level", "debug, info, warning or error"),
    ("log_format", "CONSENT_LOG_FORMAT", "--log-format", "json or text"),
    (
        "default_region",
        "CONSENT_DEFAULT_REGION",
        "--default-region",
        "region for numbers without +, when the tenant sets none",
    ),
    ("require_auth", "CONSENT_REQUIRE_AUTH", "--require-auth", "auto, 1 or 0"),
    ("tls_cert", "CONSENT_TLS_CERT", "--tls-cert", "server certificate (PEM)"),
    ("tls_key", "CONSENT_TLS_KEY", "--tls-key", "server private key (PEM)"),
    (
        "tls_client_ca",
        "CONSENT_TLS_CLIENT_CA",
        "--tls-client-ca",
        "CA for client certificates (mTLS)",
    ),
    ("delivery", "CONSENT_DELIVERY", "--delivery", "inline or off"),
    (
        "allow_insecure",
        "CONSENT_ALLOW_INSECURE",
        "--allow-insecure",
        "1 = allow CONSENT_REQUIRE_AUTH=0 beyond loopback",
    ),
    (
        "rate_limit",
        "CONSENT_RATE_LIMIT",
        "--rate-limit",
        "requests per second per API key (0 = unlimited)",
    ),
    ("rate_burst", "CONSENT_RATE_BURST", "--rate-burst", "bucket size per key (0 = 2x rate)"),
    (
        "max_request_bytes",
        "CONSENT_MAX_REQUEST_BYTES",
        "--max-request-bytes",
        "largest request message accepted",
    ),
    (
        "max_concurrent_streams",
        "CONSENT_MAX_CONCURRENT_STREAMS",
        "--max-concurrent-streams",
        "concurrent calls per connection",
    ),
    ("max_batch", "CONSENT_MAX_BATCH", "--max-batch", "BatchCheckConsent recipients"),
    ("max_page_size", "CONSENT_MAX_PAGE_SIZE", "--max-page-size", "ListConsentEvents page"),
    (
        "max_evidence_bytes",
        "CONSENT_MAX_EVIDENCE_BYTES",
        "--max-evidence-bytes",
        "evidence size (UTF-8 bytes)",
    ),
    (
        "max_metadata_entries",
        "CONSENT_MAX_METADATA_ENTRIES",
        "--max-metadata-entries",
        "SendIfAllowed metadata entries",
    ),
    (
        "max_metadata_value",
        "CONSENT_MAX_METADATA_VALUE",
        "--max-metadata-value",
        "SendIfAllowed metadata value length",
    ),
    (
        "shutdown_grace_s",
        "CONSENT_SHUTDOWN_GRACE",
        "--shutdown-grace",
        "seconds to drain calls on SIGTERM",
    ),
    (
        "http_listen",
        "CONSENT_HTTP_LISTEN",
        "--http-listen",
        "HTTP edge (WhatsApp webhook, consent links) host:port; unset = off",
    ),
    (
        "public_url",
        "CONSENT_PUBLIC_URL",
        "--public-url",
        "https:// base URL customers reach the HTTP edge at (for consent links)",
    ),
    (
        "link_secrets",
        "CONSENT_LINK_SECRET",
        "--link-secret",
        "secret(s) signing consent links, comma-separated, first mints; unset = generated in Redis",
    ),
    *(
        (
            "metrics_listen",
            "CONSENT_METRICS_LISTEN",
            "--metrics-listen",
            "Prometheus /metrics host:port; unset = off",
        ),
        (
            "delivery_concurrency",
            "CONSENT_DELIVERY_CONCURRENCY",
            "--delivery-concurrency",
            "messages one worker delivers at once",
        ),
        (
            "delivery_visibility_s",
            "CONSENT_DELIVERY_VISIBILITY_TIMEOUT",
            "--delivery-visibility-timeout",
            "seconds before another worker takes over a crashed worker's message",
        ),
        (
            "delivery_max_attempts",
            "CONSENT_DELIVERY_MAX_ATTEMPTS",
            "--delivery-max-attempts",
            "provider attempts before a message fails",
        ),
        (
            "delivery_backoff_s",
            "CONSENT_DELIVERY_BACKOFF",
            "--delivery-backoff",
            "seconds before the first retry (doubles each time)",
        ),
        (
            "delivery_backoff_max_s",
            "CONSENT_DELIVERY_BACKOFF_MAX",
            "--delivery-backoff-max",
            "longest wait between retries, seconds",
        ),
    ),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consent-server",
        description="The consent authority gRPC server. Flags mirror environment variables.",
    )
    for name, env, flag, text in _OPTIONS:
        p.add_argument(flag, dest=name, default=None, help=f"{text} (env {env})")
    return p


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read flags and environment into a validated Settings, or raise ConfigError."""
    env = os.environ if environ is None else environ
    args = vars(_parser().parse_args(argv))
    raw: dict[str, tuple[str, str]] = {}
    for name, var, _flag, _help in _OPTIONS:
        value = args.get(name)
        if value is None:
            value = env.get(var)
        if value is not None and value != "":
            raw[name] = (var, value)
    # A secret: environment only (a flag would show in `ps`).
    if env.get(BOOTSTRAP_ENV):
        raw["bootstrap_admin_key"] = (BOOTSTRAP_ENV, env[BOOTSTRAP_ENV])
    return _validate(raw)


BOOTSTRAP_ENV = "CONSENT_BOOTSTRAP_ADMIN_KEY"

# (setting, lowest, highest, default): the SPEC maxima cannot be raised, only lowered.
_INTEGERS: tuple[tuple[str, int, int], ...] = (
    ("rate_limit", 0, 1_000_000),
    ("rate_burst", 0, 10_000_000),
    ("max_request_bytes", 64 * 1024, 64 * 1024 * 1024),
    ("max_concurrent_streams", 1, 100_000),
    ("max_batch", 1, 10_000),
    ("max_page_size", 1, 1000),
    ("max_evidence_bytes", 0, 1024),
    ("max_metadata_entries", 0, 32),
    ("max_metadata_value", 0, 512),
)


def _integer(var: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ConfigError(f"{var}={text!r}: expected a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{var}={text!r}: must be between {low} and {high}")
    return value


def _pem_file(var: str, path: str, marker: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"{var}={path!r}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN " not in data or marker.encode() not in data:
        raise ConfigError(f"{var}={path!r}: not a PEM file with a {marker}")
    return path


def _number(var: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{var}={text!r}: expected a number of seconds") from None
    if not low <= value <= high:
        raise ConfigError(f"{var}={text!r}: must be between {low:g} and {high:g}")
    return value


def _choice(var: str, text: str, choices: Sequence[str]) -> str:
    value = text.strip().lower()
    if value not in choices:
        raise ConfigError(f"{var}={text!r}: expected one of {', '.join(choices)}")
    return value


def _validate(raw: dict[str, tuple[str, str]]) -> Settings:
    values: dict[str, object] = {}
    if "listen" in raw:
        values["listen"] = _host_port(*raw["listen"], "127.0.0.1:50051")
    if "redis_url" in raw:
        var, text = raw["redis_url"]
        scheme = urlparse(text).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"{var}: expected a redis://, rediss:// or unix:// URL")
        values["redis_url"] = text
    if "redis_cluster" in raw:
        var, text = raw["redis_cluster"]
        values["redis_cluster"] = _choice(var, text, ("0", "1")) == "1"
    if "redis_timeout_s" in raw:
        values["redis_timeout_s"] = _number(*raw["redis_timeout_s"], 0.05, 60)
    _validate_replica_ack(raw, values)
    if "shutdown_grace_s" in raw:
        values["shutdown_grace_s"] = _number(*raw["shutdown_grace_s"], 0, 600)
    if "log_level" in raw:
        var, text = raw["log_level"]
        values["log_level"] = _choice(var, text, ("debug", "info", "warning", "error")).upper()
    if "log_format" in raw:
        values["log_format"] = _choice(*raw["log_format"], ("json", "text"))
    if "default_region" in raw:
        var, text = raw["default_region"]
        if not is_valid_region(text.upper()):
            raise ConfigError(f"{var}={text!r}: expected an ISO 3166 region code such as IN or US")
        values["default_region"] = text.upper()
    if "require_auth" in raw:
        values["require_auth"] = _choice(*raw["require_auth"], ("auto", "1", "0"))
    _validate_security(raw, values)
    if "delivery" in raw:
        values["delivery"] = _choice(*raw["delivery"], ("inline", "off"))
    values.update(_validate_edge(raw))
    _validate_delivery(raw, values)
    if values.get("redis_cluster") and "redis_url" not in values:
        raise ConfigError("CONSENT_REDIS_CLUSTER=1 needs CONSENT_REDIS_URL")
    settings = Settings(**values)  # type: ignore[arg-type]
    _check_auth(settings)
    return settings


def _validate_replica_ack(raw: dict[str, tuple[str, str]], values: dict[str, object]) -> None:
    """CONSENT_REDIS_MIN_REPLICAS_ACK and its timeout: only on a real Redis, and the
    WAIT must end before the Redis socket timeout would cut it off."""
    if "redis_min_replicas_ack" in raw:
        var, text = raw["redis_min_replicas_ack"]
        values["redis_min_replicas_ack"] = n = _integer(var, text, 0, 16)
        if n and "redis_url" not in values:
            raise ConfigError(
                f"{var}={text}: needs CONSENT_REDIS_URL (the embedded store has no replicas)"
            )
    if "redis_ack_timeout_ms" in raw:
        var, text = raw["redis_ack_timeout_ms"]
        values["redis_ack_timeout_ms"] = _integer(var, text, 1, 60_000)
    defaults = Settings()
    ack_ms = values.get("redis_ack_timeout_ms", defaults.redis_ack_timeout_ms)
    redis_s = values.get("redis_timeout_s", defaults.redis_timeout_s)
    assert isinstance(ack_ms, int) and isinstance(redis_s, float | int)
    if values.get("redis_min_replicas_ack") and ack_ms >= redis_s * 1000:
        raise ConfigError(
            f"CONSENT_REDIS_ACK_TIMEOUT_MS={ack_ms}: must be below CONSENT_REDIS_TIMEOUT "
            f"({redis_s:g} s), or the Redis call times out before WAIT answers"
        )


def _validate_security(raw: dict[str, tuple[str, str]], values: dict[str, object]) -> None:
    """TLS files, the insecure switch, the bootstrap key and the limits."""
    if ("tls_cert" in raw) != ("tls_key" in raw):
        missing = "CONSENT_TLS_KEY" if "tls_cert" in raw else "CONSENT_TLS_CERT"
        raise ConfigError(f"{missing}: TLS needs both CONSENT_TLS_CERT and CONSENT_TLS_KEY")
    if "tls_client_ca" in raw and "tls_cert" not in raw:
        raise ConfigError("CONSENT_TLS_CLIENT_CA: mTLS needs CONSENT_TLS_CERT and CONSENT_TLS_KEY")
    if "tls_cert" in raw:
        values["tls_cert"] = _pem_file(*raw["tls_cert"], "CERTIFICATE")
        values["tls_key"] = _pem_file(*raw["tls_key"], "PRIVATE KEY")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                str(values["tls_cert"]), str(values["tls_key"])
            )
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                "CONSENT_TLS_KEY: not the private key of CONSENT_TLS_CERT (or unreadable PEM)"
            ) from None
    if "tls_client_ca" in raw:
        values["tls_client_ca"] = _pem_file(*raw["tls_client_ca"], "CERTIFICATE")
    if "allow_insecure" in raw:
        values["allow_insecure"] = _choice(*raw["allow_insecure"], ("0", "1")) == "1"
    if "bootstrap_admin_key" in raw:
        var, text = raw["bootstrap_admin_key"]
        if not is_key_token(text.strip()):
            # Never echo the value: it is meant to be a secret.
            raise ConfigError(
                f"{var}: not an API key of the form ck_<16 hex>_<43 url-safe characters>; "
                "make one with `consentctl keys generate`"
            )
        values["bootstrap_admin_key"] = text.strip()
    for name, low, high in _INTEGERS:
        if name in raw:
            values[name] = _integer(*raw[name], low, high)


def _host_port(var: str, text: str, example: str, *, any_port: bool = True) -> str:
    """A host:port setting; port 0 (pick a free one) only where ``any_port``."""
    host, sep, port = text.rpartition(":")
    lowest = 0 if any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ConfigError(f"{var}={text!r}: expected host:port, e.g. {example}")
    return text


def _validate_edge(raw: dict[str, tuple[str, str]]) -> dict[str, object]:
    values: dict[str, object] = {}
    if "http_listen" in raw:
        values["http_listen"] = _host_port(*raw["http_listen"], "127.0.0.1:8080")
    if "public_url" in raw:
        var, text = raw["public_url"]
        url = urlparse(text)
        if url.scheme not in ("http", "https") or not url.netloc or url.query or url.fragment:
            raise ConfigError(
                f"{var}={text!r}: expected an http(s) base URL without query, "
                "e.g. https://consent.example.com"
            )
        values["public_url"] = text.rstrip("/")
    if "link_secrets" in raw:
        var, text = raw["link_secrets"]
        parts = tuple(p.strip() for p in text.split(","))
        # Never echo the value: it is a secret.
        if any(len(p) < 32 for p in parts):
            raise ConfigError(f"{var}: each comma-separated secret must be at least 32 characters")
        values["link_secrets"] = tuple(p.encode() for p in parts)
    return values


def _validate_delivery(raw: dict[str, tuple[str, str]], values: dict[str, object]) -> None:
    """The delivery worker's settings and the metrics listener."""
    if "metrics_listen" in raw:
        var, text = raw["metrics_listen"]
        _host_port(var, text, "127.0.0.1:9464", any_port=False)
        host = text.rpartition(":")[0]
        if not is_loopback(host.strip("[]")):
            try:
                ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise ConfigError(f"{var}={text!r}: expected an IP address or localhost") from None
        values["metrics_listen"] = text
    if "delivery_concurrency" in raw:
        values["delivery_concurrency"] = _integer(*raw["delivery_concurrency"], 1, 1024)
    if "delivery_visibility_s" in raw:
        values["delivery_visibility_s"] = _number(*raw["delivery_visibility_s"], 0.2, 3600)
    if "delivery_max_attempts" in raw:
        values["delivery_max_attempts"] = _integer(*raw["delivery_max_attempts"], 1, 100)
    if "delivery_backoff_s" in raw:
        values["delivery_backoff_s"] = _number(*raw["delivery_backoff_s"], 0.01, 3600)
    if "delivery_backoff_max_s" in raw:
        values["delivery_backoff_max_s"] = _number(*raw["delivery_backoff_max_s"], 0.01, 86400)
    defaults = Settings()
    base = values.get("delivery_backoff_s", defaults.delivery_backoff_s)
    cap = values.get("delivery_backoff_max_s", defaults.delivery_backoff_max_s)
    assert isinstance(base, float) and isinstance(cap, float)
    if cap < base:
        raise ConfigError(
            f"CONSENT_DELIVERY_BACKOFF_MAX={cap:g}: must not be below "
            f"CONSENT_DELIVERY_BACKOFF={base:g}"
        )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_auth(settings: Settings) -> None:
    """Refuse to serve beyond loopback without authentication unless told so explicitly."""
    beyond_loopback = not is_loopback(settings.host)
    if not settings.auth_required and beyond_loopback and not settings.allow_insecure:
        raise ConfigError(
            f"CONSENT_REQUIRE_AUTH=0 with CONSENT_LISTEN={settings.listen!r} beyond loopback "
            "would let anyone who reaches the port change consent: set "
            "CONSENT_ALLOW_INSECURE=1 to do it on purpose, or turn authentication on"
        )
