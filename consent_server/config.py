"""Settings: one frozen object read from the environment and flags, validated at start.

Flags mirror the environment variables (``--redis-url`` = ``CONSENT_REDIS_URL``);
a flag wins over the environment. Bad configuration raises ConfigError whose
message is one line naming the setting; ``__main__`` prints it and exits 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

from consent_server.domain.recipients import is_valid_region


class ConfigError(ValueError):
    """A setting is invalid; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The server's configuration (see the README's configuration table)."""

    listen: str = "127.0.0.1:50051"
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_timeout_s: float = 2.0
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
        "shutdown_grace_s",
        "CONSENT_SHUTDOWN_GRACE",
        "--shutdown-grace",
        "seconds to drain calls on SIGTERM",
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
    return _validate(raw)


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
        var, text = raw["listen"]
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{var}={text!r}: expected host:port, e.g. 127.0.0.1:50051")
        values["listen"] = text
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
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        if name in raw:
            var, text = raw[name]
            # TLS arrives with the security work (issue 7); refusing beats serving plaintext
            # to someone who asked for TLS.
            raise ConfigError(f"{var}: TLS is not supported by this version yet; unset it")
    if "delivery" in raw:
        values["delivery"] = _choice(*raw["delivery"], ("inline", "off"))
    _validate_delivery(raw, values)
    if values.get("redis_cluster") and "redis_url" not in values:
        raise ConfigError("CONSENT_REDIS_CLUSTER=1 needs CONSENT_REDIS_URL")
    settings = Settings(**values)  # type: ignore[arg-type]
    _check_auth(settings)
    return settings


def _integer(var: str, text: str, low: int, high: int) -> int:
    if not text.strip().isdigit():
        raise ConfigError(f"{var}={text!r}: expected a whole number")
    value = int(text)
    if not low <= value <= high:
        raise ConfigError(f"{var}={text!r}: must be between {low} and {high}")
    return value


def _validate_delivery(raw: dict[str, tuple[str, str]], values: dict[str, object]) -> None:
    """The delivery worker's settings and the metrics listener."""
    if "metrics_listen" in raw:
        var, text = raw["metrics_listen"]
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(f"{var}={text!r}: expected host:port, e.g. 127.0.0.1:9464")
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
    # API keys arrive with the security work (issue 7). Until then the server only
    # starts where no authentication is required, or where the operator said so.
    if settings.require_auth == "1":
        raise ConfigError(
            "CONSENT_REQUIRE_AUTH=1: API-key authentication is not supported by this version yet"
        )
    if settings.require_auth == "auto" and not is_loopback(settings.host):
        raise ConfigError(
            f"CONSENT_LISTEN={settings.listen!r} is beyond loopback, where authentication is "
            "required (CONSENT_REQUIRE_AUTH=auto); this version has none: set "
            "CONSENT_REQUIRE_AUTH=0 to serve unauthenticated on purpose"
        )
