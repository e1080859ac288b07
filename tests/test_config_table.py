"""The option table: one declaration per setting drives parsing, flags, and the README."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from consent_server import config
from consent_server.config import OPTIONS, ConfigError, Settings, load, markdown_table

# A valid value differing from the default for every option that takes a plain value.
_SAMPLES = {
    "CONSENT_REDIS_MIN_REPLICAS_ACK": "1",
    "CONSENT_REDIS_ACK_TIMEOUT_MS": "500",
    "CONSENT_FEED_MAXLEN": "5000",
    "CONSENT_PARTITIONS": "64",
    "CONSENT_TENANTS": "acme,globex",
    "CONSENT_EGRESS_ALLOW": "10.0.0.0/8,[::1]:8080",
    "CONSENT_LISTEN": "127.0.0.1:6000",
    "CONSENT_SHUTDOWN_GRACE": "3",
    "CONSENT_DEFAULT_REGION": "IN",
    "CONSENT_PROCESSES": "3",
    "CONSENT_REDIS_URL": "redis://127.0.0.1:1/0",
    "CONSENT_REDIS_CLUSTER": "1",
    "CONSENT_REDIS_TIMEOUT": "1.5",
    "CONSENT_REDIS_MULTIPLEX": "0",
    "CONSENT_UVLOOP": "0",
    "CONSENT_LOG_LEVEL": "debug",
    "CONSENT_LOG_FORMAT": "text",
    "CONSENT_METRICS_LISTEN": "127.0.0.1:9464",
    "CONSENT_DELIVERY": "off",
    "CONSENT_DELIVERY_CONCURRENCY": "4",
    "CONSENT_DELIVERY_VISIBILITY_TIMEOUT": "5",
    "CONSENT_DELIVERY_MAX_ATTEMPTS": "3",
    "CONSENT_DELIVERY_BACKOFF": "0.5",
    "CONSENT_DELIVERY_BACKOFF_MAX": "30",
    "CONSENT_REQUIRE_AUTH": "1",
    "CONSENT_ALLOW_INSECURE": "1",
    "CONSENT_RATE_LIMIT": "5",
    "CONSENT_RATE_BURST": "9",
    "CONSENT_MAX_REQUEST_BYTES": "65536",
    "CONSENT_MAX_CONCURRENT_STREAMS": "8",
    "CONSENT_MAX_CONCURRENT_CALLS": "64",
    "CONSENT_MAX_BATCH": "50",
    "CONSENT_MAX_PAGE_SIZE": "10",
    "CONSENT_MAX_EVIDENCE_BYTES": "100",
    "CONSENT_MAX_METADATA_ENTRIES": "2",
    "CONSENT_MAX_METADATA_VALUE": "16",
    "CONSENT_HTTP_LISTEN": "127.0.0.1:8080",
    "CONSENT_PUBLIC_URL": "https://consent.example.com",
    "CONSENT_LINK_SECRET": "k" * 32,
}

# Settings that are only valid together with another one.
_PARTNERS = {
    "CONSENT_REDIS_CLUSTER": {"CONSENT_REDIS_URL": "redis://127.0.0.1:1/0"},
    "CONSENT_PROCESSES": {"CONSENT_REDIS_URL": "redis://127.0.0.1:1/0"},
    "CONSENT_REDIS_MIN_REPLICAS_ACK": {"CONSENT_REDIS_URL": "redis://127.0.0.1:1/0"},
}

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_configuration_tables_are_the_generated_ones() -> None:
    text = README.read_text()
    assert config.render_readme(text) == text, (
        "README configuration tables are stale: run "
        "`python -m consent_server.config --readme README.md`"
    )


def test_every_group_has_exactly_one_readme_table() -> None:
    blocks = re.findall(r"<!-- BEGIN generated: .*?--markdown ([a-z ]+) -->", README.read_text())
    named = [g for block in blocks for g in block.split()]
    assert sorted(named) == sorted(config.GROUPS)


def test_every_option_has_one_env_var_and_the_mirroring_flag() -> None:
    envs = [o.env for o in OPTIONS]
    assert len(envs) == len(set(envs))
    for o in OPTIONS:
        assert o.env.startswith("CONSENT_")
        if o.flag is not None:
            assert o.flag == "--" + o.env.removeprefix("CONSENT_").lower().replace("_", "-")
        else:
            assert o.secret  # only a secret stays out of `ps`: environment only
        assert o.doc and "\n" not in o.doc


def test_every_group_field_is_an_option_except_the_internal_ones() -> None:
    declared = {f"{o.group}.{o.name}" for o in OPTIONS}
    defaults = Settings()
    group_fields = {
        f"{g.name}.{f.name}" for g in fields(defaults) for f in fields(getattr(defaults, g.name))
    }
    assert declared <= group_fields
    assert group_fields - declared == {"server.health_interval_s"}


# Options whose values are files: their flags are covered in test_config.py.
_FILE_OPTIONS = {"CONSENT_TLS_CERT", "CONSENT_TLS_KEY", "CONSENT_TLS_CLIENT_CA"}


def test_every_option_with_a_flag_has_a_sample() -> None:
    with_flags = {o.env for o in OPTIONS if o.flag is not None}
    assert with_flags == set(_SAMPLES) | _FILE_OPTIONS


@pytest.mark.parametrize("env", sorted(_SAMPLES))
def test_flag_and_env_var_reach_the_same_field(env: str) -> None:
    (option,) = [o for o in OPTIONS if o.env == env]
    assert option.flag is not None
    partners = _PARTNERS.get(env, {})
    from_env = load([], {**partners, env: _SAMPLES[env]})
    from_flag = load([option.flag, _SAMPLES[env]], partners)
    assert from_env == from_flag
    group = getattr(from_env, option.group)
    assert getattr(group, option.name) != getattr(getattr(Settings(), option.group), option.name)


def test_secrets_never_reach_repr() -> None:
    link = "s" * 40
    s = load([], {"CONSENT_LINK_SECRET": link})
    assert link not in repr(s) and "<set>" in repr(s)
    assert all(
        o.env in {"CONSENT_LINK_SECRET", "CONSENT_BOOTSTRAP_ADMIN_KEY"} for o in OPTIONS if o.secret
    )


def test_markdown_cli_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "consent_server.config", "--markdown", "redis"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert out.strip() == markdown_table(["redis"]).strip()
    assert "`CONSENT_REDIS_URL`" in out and "CONSENT_LISTEN" not in out


def test_unknown_group_is_refused() -> None:
    with pytest.raises(ConfigError):
        markdown_table(["nonsense"])
