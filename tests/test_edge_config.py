"""The HTTP edge's settings."""

from __future__ import annotations

import pytest

from consent_server.config import ConfigError, load

SECRET_A = "a" * 32
SECRET_B = "b" * 40


def test_off_by_default() -> None:
    s = load([], {})
    assert (s.edge.listen, s.edge.public_url, s.edge.link_secrets) == (None, None, ())


def test_edge_settings_from_env_and_flags() -> None:
    s = load(
        ["--http-listen", "0.0.0.0:8080"],
        {
            "CONSENT_HTTP_LISTEN": "127.0.0.1:1",
            "CONSENT_PUBLIC_URL": "https://consent.example.com/",
            "CONSENT_LINK_SECRET": f"{SECRET_A}, {SECRET_B}",
        },
    )
    assert s.edge.listen == "0.0.0.0:8080"  # the flag wins
    assert s.edge.public_url == "https://consent.example.com"
    assert s.edge.link_secrets == (SECRET_A.encode(), SECRET_B.encode())
    assert SECRET_A not in repr(s)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CONSENT_HTTP_LISTEN", "8080"),
        ("CONSENT_HTTP_LISTEN", "host:port"),
        ("CONSENT_HTTP_LISTEN", "127.0.0.1:70000"),
        ("CONSENT_PUBLIC_URL", "consent.example.com"),
        ("CONSENT_PUBLIC_URL", "https://x.example/?a=1"),
        ("CONSENT_PUBLIC_URL", "javascript:alert(1)"),
        ("CONSENT_LINK_SECRET", "too-short"),
        ("CONSENT_LINK_SECRET", f"{SECRET_A},"),
    ],
)
def test_bad_edge_settings_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load([], {var: value})
    assert str(err.value).startswith(var)
    if var == "CONSENT_LINK_SECRET":
        assert value.rstrip(",") not in str(err.value)
