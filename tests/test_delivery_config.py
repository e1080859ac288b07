"""Delivery settings: validated at start like every other setting (one line, exit 2)."""

from __future__ import annotations

import pytest

from consent_server.config import ConfigError, load
from consent_server.delivery.runner import worker_options

from .support import run_module


def test_defaults() -> None:
    s = load([], {})
    assert s.delivery.mode == "inline"
    assert s.observability.metrics_listen is None
    opts = worker_options(s)
    assert opts.visibility_timeout_s == 60.0
    assert opts.max_attempts == 8
    assert opts.backoff_base_ms == 1000.0 and opts.backoff_max_ms == 300_000.0
    assert opts.concurrency == 32


def test_values_and_flags() -> None:
    s = load(
        ["--delivery-max-attempts", "3", "--metrics-listen", "127.0.0.1:9464"],
        {
            "CONSENT_DELIVERY": "OFF",
            "CONSENT_DELIVERY_VISIBILITY_TIMEOUT": "2.5",
            "CONSENT_DELIVERY_BACKOFF": "0.1",
            "CONSENT_DELIVERY_BACKOFF_MAX": "0.5",
            "CONSENT_DELIVERY_CONCURRENCY": "4",
            "CONSENT_DELIVERY_MAX_ATTEMPTS": "9",  # the flag wins
        },
    )
    assert s.delivery.mode == "off"
    assert s.observability.metrics_listen == "127.0.0.1:9464"
    opts = worker_options(s)
    assert (opts.max_attempts, opts.concurrency, opts.visibility_timeout_s) == (3, 4, 2.5)
    assert (opts.backoff_base_ms, opts.backoff_max_ms) == (100.0, 500.0)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"CONSENT_DELIVERY": "sometimes"}, "CONSENT_DELIVERY="),
        ({"CONSENT_METRICS_LISTEN": "9464"}, "CONSENT_METRICS_LISTEN="),
        ({"CONSENT_METRICS_LISTEN": "127.0.0.1:0"}, "CONSENT_METRICS_LISTEN="),
        ({"CONSENT_METRICS_LISTEN": "127.0.0.1:70000"}, "CONSENT_METRICS_LISTEN="),
        ({"CONSENT_METRICS_LISTEN": "metrics.example:9464"}, "CONSENT_METRICS_LISTEN="),
        ({"CONSENT_DELIVERY_CONCURRENCY": "0"}, "CONSENT_DELIVERY_CONCURRENCY="),
        ({"CONSENT_DELIVERY_CONCURRENCY": "2.5"}, "CONSENT_DELIVERY_CONCURRENCY="),
        ({"CONSENT_DELIVERY_MAX_ATTEMPTS": "101"}, "CONSENT_DELIVERY_MAX_ATTEMPTS="),
        ({"CONSENT_DELIVERY_VISIBILITY_TIMEOUT": "0.01"}, "CONSENT_DELIVERY_VISIBILITY_TIMEOUT="),
        ({"CONSENT_DELIVERY_BACKOFF": "-1"}, "CONSENT_DELIVERY_BACKOFF="),
        (
            {"CONSENT_DELIVERY_BACKOFF": "10", "CONSENT_DELIVERY_BACKOFF_MAX": "1"},
            "CONSENT_DELIVERY_BACKOFF_MAX=",
        ),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError) as err:
        load([], env)
    assert str(err.value).startswith(names)
    assert "\n" not in str(err.value)


def test_server_exits_2_on_bad_delivery_setting() -> None:
    proc = run_module(
        "consent_server",
        env={"CONSENT_DELIVERY_MAX_ATTEMPTS": "lots", "PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "consent-server: configuration error: CONSENT_DELIVERY_MAX_ATTEMPTS='lots': "
        "expected a whole number"
    ]


def test_metrics_port_in_use_stops_start_up_with_exit_2() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_module(
            "consent_server",
            "--listen",
            "127.0.0.1:0",
            env={"CONSENT_METRICS_LISTEN": f"127.0.0.1:{port}", "PATH": "/usr/bin:/bin"},
            timeout=30,
        )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"consent-server: configuration error: CONSENT_METRICS_LISTEN='127.0.0.1:{port}': "
            "cannot listen there"
        )
    )
