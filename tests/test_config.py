"""Configuration: when authentication is on, TLS files, limits, the bootstrap key."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from consent_server.config import ConfigError, load
from consent_server.domain.auth import new_key


def settings(env: dict[str, str], argv: list[str] | None = None):  # type: ignore[no-untyped-def]
    return load(argv or [], env)


@pytest.mark.parametrize(
    ("listen", "require", "required"),
    [
        ("127.0.0.1:50051", "auto", False),
        ("localhost:50051", "auto", False),
        ("[::1]:50051", "auto", False),
        ("127.0.0.1:50051", "1", True),
        ("127.0.0.1:50051", "0", False),
        ("0.0.0.0:50051", "auto", True),
        ("[::]:50051", "auto", True),
        ("10.1.2.3:50051", "1", True),
        ("example.internal:50051", "auto", True),
    ],
)
def test_when_auth_is_required(listen: str, require: str, required: bool) -> None:
    s = settings({"CONSENT_LISTEN": listen, "CONSENT_REQUIRE_AUTH": require})
    assert s.auth_required is required


def test_auth_off_beyond_loopback_needs_the_explicit_switch() -> None:
    env = {"CONSENT_LISTEN": "0.0.0.0:50051", "CONSENT_REQUIRE_AUTH": "0"}
    with pytest.raises(ConfigError) as err:
        settings(env)
    assert "CONSENT_ALLOW_INSECURE=1" in str(err.value) and "\n" not in str(err.value)
    s = settings({**env, "CONSENT_ALLOW_INSECURE": "1"})
    assert not s.auth_required and s.auth.allow_insecure
    assert settings({}, ["--listen", "0.0.0.0:1", "--require-auth", "0", "--allow-insecure", "1"])


@pytest.mark.parametrize("value", ["yes", "2", "true"])
def test_bad_switches(value: str) -> None:
    with pytest.raises(ConfigError, match="CONSENT_REQUIRE_AUTH"):
        settings({"CONSENT_REQUIRE_AUTH": value})
    with pytest.raises(ConfigError, match="CONSENT_ALLOW_INSECURE"):
        settings({"CONSENT_ALLOW_INSECURE": value})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca.issue_cert("other").private_key_pem.write_to_path(str(d / "otherkey.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    (d / "junk.pem").write_text("hello")
    return {n: str(d / f"{n}.pem") for n in ("ca", "cert", "key", "junk", "otherkey")}


def test_tls_settings(pki: dict[str, str]) -> None:
    s = settings({"CONSENT_TLS_CERT": pki["cert"], "CONSENT_TLS_KEY": pki["key"]})
    assert s.tls.enabled and s.tls.client_ca is None
    s = settings(
        {
            "CONSENT_TLS_CERT": pki["cert"],
            "CONSENT_TLS_KEY": pki["key"],
            "CONSENT_TLS_CLIENT_CA": pki["ca"],
        }
    )
    assert s.tls.client_ca == pki["ca"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CONSENT_TLS_CERT": "cert"}, "CONSENT_TLS_KEY"),
        ({"CONSENT_TLS_KEY": "key"}, "CONSENT_TLS_CERT"),
        ({"CONSENT_TLS_CLIENT_CA": "ca"}, "CONSENT_TLS_CLIENT_CA"),
        ({"CONSENT_TLS_CERT": "missing", "CONSENT_TLS_KEY": "key"}, "CONSENT_TLS_CERT"),
        ({"CONSENT_TLS_CERT": "junk", "CONSENT_TLS_KEY": "key"}, "CONSENT_TLS_CERT"),
        ({"CONSENT_TLS_CERT": "cert", "CONSENT_TLS_KEY": "cert"}, "CONSENT_TLS_KEY"),
        ({"CONSENT_TLS_CERT": "cert", "CONSENT_TLS_KEY": "otherkey"}, "CONSENT_TLS_KEY"),
        (
            {"CONSENT_TLS_CERT": "cert", "CONSENT_TLS_KEY": "key", "CONSENT_TLS_CLIENT_CA": "key"},
            "CONSENT_TLS_CLIENT_CA",
        ),
    ],
)
def test_bad_tls_settings_name_the_setting(
    pki: dict[str, str], env: dict[str, str], named: str, tmp_path: Path
) -> None:
    resolved = {k: pki.get(v, str(tmp_path / v)) for k, v in env.items()}
    with pytest.raises(ConfigError) as err:
        settings(resolved)
    assert str(err.value).startswith(named) or named in str(err.value).split(":")[0]


def test_limits_are_configurable_but_never_above_the_spec() -> None:
    s = settings(
        {
            "CONSENT_MAX_BATCH": "50",
            "CONSENT_MAX_PAGE_SIZE": "10",
            "CONSENT_MAX_EVIDENCE_BYTES": "100",
            "CONSENT_MAX_METADATA_ENTRIES": "2",
            "CONSENT_MAX_METADATA_VALUE": "16",
            "CONSENT_MAX_REQUEST_BYTES": "65536",
            "CONSENT_MAX_CONCURRENT_STREAMS": "8",
            "CONSENT_RATE_LIMIT": "5",
            "CONSENT_RATE_BURST": "7",
        }
    )
    assert (s.limits.max_batch, s.limits.max_page_size, s.limits.max_evidence_bytes) == (
        50,
        10,
        100,
    )
    assert (s.limits.max_metadata_entries, s.limits.max_metadata_value) == (2, 16)
    assert (s.limits.max_request_bytes, s.limits.max_concurrent_streams) == (65536, 8)
    assert (s.auth.rate_limit, s.auth.rate_burst) == (5, 7)
    for var, bad in [
        ("CONSENT_MAX_BATCH", "10001"),
        ("CONSENT_MAX_BATCH", "0"),
        ("CONSENT_MAX_PAGE_SIZE", "1001"),
        ("CONSENT_MAX_EVIDENCE_BYTES", "1025"),
        ("CONSENT_MAX_REQUEST_BYTES", "1"),
        ("CONSENT_RATE_LIMIT", "-1"),
        ("CONSENT_RATE_LIMIT", "fast"),
    ]:
        with pytest.raises(ConfigError) as err:
            settings({var: bad})
        assert str(err.value).startswith(var)


def test_bootstrap_key_is_validated_from_the_environment_and_never_echoed() -> None:
    _, token, _ = new_key()
    s = settings({"CONSENT_BOOTSTRAP_ADMIN_KEY": token})
    assert s.auth.bootstrap_admin_key == token
    assert token not in repr(s) and token[20:] not in repr(s)
    bad = "ck_0123abcd0123abcd_tooshort-secret-value"
    with pytest.raises(ConfigError) as err:
        settings({"CONSENT_BOOTSTRAP_ADMIN_KEY": bad})
    assert "CONSENT_BOOTSTRAP_ADMIN_KEY" in str(err.value) and "tooshort" not in str(err.value)
