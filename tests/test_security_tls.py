"""TLS and mTLS with certificates made by the tests (trustme), against server processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import trustme

from consent_client import AsyncConsentClient, ConsentClient, Unavailable
from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc

from .security_support import TlsServerProcess

pytestmark = pytest.mark.xdist_group("security-tls")


class Pki:
    def __init__(self, d: Path) -> None:
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        server = self.ca.issue_cert("localhost", "127.0.0.1")
        client = self.ca.issue_cert("billing-backend")
        stranger = self.other_ca.issue_cert("mallory")
        self.ca_pem = self.ca.cert_pem.bytes()
        self.paths: dict[str, str] = {}
        for name, blob in {
            "ca": self.ca_pem,
            "server_cert": server.cert_chain_pems[0].bytes(),
            "server_key": server.private_key_pem.bytes(),
            "client_cert": client.cert_chain_pems[0].bytes(),
            "client_key": client.private_key_pem.bytes(),
            "stranger_cert": stranger.cert_chain_pems[0].bytes(),
            "stranger_key": stranger.private_key_pem.bytes(),
        }.items():
            (d / f"{name}.pem").write_bytes(blob)
            self.paths[name] = str(d / f"{name}.pem")

    def pem(self, name: str) -> bytes:
        return Path(self.paths[name]).read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[TlsServerProcess]:
    env = {"CONSENT_TLS_CERT": pki.paths["server_cert"], "CONSENT_TLS_KEY": pki.paths["server_key"]}
    srv = TlsServerProcess(env, ca=pki.ca_pem).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[TlsServerProcess]:
    env = {
        "CONSENT_TLS_CERT": pki.paths["server_cert"],
        "CONSENT_TLS_KEY": pki.paths["server_key"],
        "CONSENT_TLS_CLIENT_CA": pki.paths["ca"],
    }
    srv = TlsServerProcess(
        env, ca=pki.ca_pem, client_cert=pki.pem("client_cert"), client_key=pki.pem("client_key")
    ).start()
    yield srv
    srv.stop()


def test_tls_works_with_the_client_options(tls_server: TlsServerProcess, pki: Pki) -> None:
    assert '"tls": "tls"' in tls_server.log()
    with ConsentClient(tls_server.target, tls_ca=pki.paths["ca"]) as client:
        assert client.check_consent("acme", "sms", "+14155550100", "x").allowed
    with ConsentClient(tls_server.target, tls_ca=pki.ca_pem) as client:  # bytes work too
        client.opt_out("acme", "sms", "+14155550100")
        assert not client.check_consent("acme", "sms", "+14155550100", "x").allowed


async def test_tls_works_with_the_async_client(tls_server: TlsServerProcess, pki: Pki) -> None:
    async with AsyncConsentClient(tls_server.target, tls_ca=pki.paths["ca"]) as client:
        assert (await client.check_consent("acme", "sms", "+14155550101", "x")).allowed


def test_plaintext_client_is_rejected_by_a_tls_server(tls_server: TlsServerProcess) -> None:
    with grpc.insecure_channel(tls_server.target) as ch:
        stub = consent_pb2_grpc.ConsentServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.CheckConsent(
                pb.CheckConsentRequest(
                    tenant_id="acme",
                    recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550100"),
                ),
                timeout=3,
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_server_certificate_from_an_unknown_ca_is_refused(
    tls_server: TlsServerProcess, pki: Pki
) -> None:
    with (
        ConsentClient(
            tls_server.target, tls_ca=pki.other_ca.cert_pem.bytes(), retries=0, timeout=3
        ) as client,
        pytest.raises(Unavailable),
    ):
        client.check_consent("acme", "sms", "+14155550100", "x")


def test_mtls_with_a_client_certificate(mtls_server: TlsServerProcess, pki: Pki) -> None:
    assert '"tls": "mtls"' in mtls_server.log()
    with ConsentClient(
        mtls_server.target,
        tls_ca=pki.paths["ca"],
        tls_cert=pki.paths["client_cert"],
        tls_key=pki.paths["client_key"],
    ) as client:
        assert client.check_consent("acme", "sms", "+14155550100", "x").allowed


async def test_mtls_with_the_async_client(mtls_server: TlsServerProcess, pki: Pki) -> None:
    async with AsyncConsentClient(
        mtls_server.target,
        tls_ca=pki.pem("ca"),
        tls_cert=pki.pem("client_cert"),
        tls_key=pki.pem("client_key"),
    ) as client:
        assert (await client.check_consent("acme", "sms", "+14155550100", "x")).allowed


@pytest.mark.parametrize("who", ["nobody", "stranger"])
def test_mtls_rejects_clients_without_a_trusted_certificate(
    mtls_server: TlsServerProcess, pki: Pki, who: str
) -> None:
    extra = (
        {"tls_cert": pki.paths["stranger_cert"], "tls_key": pki.paths["stranger_key"]}
        if who == "stranger"
        else {}
    )
    with (
        ConsentClient(
            mtls_server.target, tls_ca=pki.paths["ca"], retries=0, timeout=3, **extra
        ) as client,
        pytest.raises(Unavailable),
    ):
        client.check_consent("acme", "sms", "+14155550100", "x")


def test_client_tls_options_are_checked(pki: Pki) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        ConsentClient("localhost:1", tls_cert=pki.paths["client_cert"])
    with pytest.raises(ValueError, match="tls_ca"):
        ConsentClient("localhost:1", tls_ca="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="either credentials"):
        ConsentClient("localhost:1", tls_ca=pki.ca_pem, credentials=grpc.ssl_channel_credentials())


def test_sighup_reloads_certificates_without_dropping_connections(pki: Pki, tmp_path: Path) -> None:
    import signal
    import time

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(pki.pem("server_cert"))
    key.write_bytes(pki.pem("server_key"))
    srv = TlsServerProcess(
        {"CONSENT_TLS_CERT": str(cert), "CONSENT_TLS_KEY": str(key)}, ca=pki.ca_pem
    ).start()
    try:
        old = ConsentClient(srv.target, tls_ca=pki.ca_pem)
        assert old.check_consent("acme", "sms", "+14155550100", "x").allowed
        # Rotate to a certificate from another CA; a broken file first must not hurt.
        key.write_text("not a key")
        srv.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "TLS files not reloaded" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "TLS files not reloaded" in srv.log()
        with ConsentClient(srv.target, tls_ca=pki.ca_pem) as still:  # new connections work
            assert still.check_consent("acme", "sms", "+14155550100", "x").allowed
        rotated = pki.other_ca.issue_cert("localhost", "127.0.0.1")
        cert.write_bytes(rotated.cert_chain_pems[0].bytes())
        key.write_bytes(rotated.private_key_pem.bytes())
        srv.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "TLS certificates reloaded" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        with ConsentClient(srv.target, tls_ca=pki.other_ca.cert_pem.bytes()) as new:
            assert new.check_consent("acme", "sms", "+14155550100", "x").allowed
        with (
            ConsentClient(srv.target, tls_ca=pki.ca_pem, retries=0, timeout=3) as stale,
            pytest.raises(Unavailable),
        ):
            stale.check_consent("acme", "sms", "+14155550100", "x")
        # The connection made before the rotation still works.
        assert old.check_consent("acme", "sms", "+14155550100", "x").allowed
        old.close()
    finally:
        assert srv.stop() == 0


def test_consentctl_over_tls(tls_server: TlsServerProcess, pki: Pki) -> None:
    from typer.testing import CliRunner

    from consent_server.cli.keys import app

    runner = CliRunner()
    base = ["--tenant", "acme", "--server", tls_server.target]
    made = runner.invoke(app, ["create", "--role", "reader", *base, "--tls-ca", pki.paths["ca"]])
    assert made.exit_code == 0, made.output
    key_id = made.stdout.strip()[3:19]
    listed = runner.invoke(app, ["list", *base, "--tls-ca", pki.paths["ca"]])
    assert key_id in listed.stdout
    plain = runner.invoke(app, ["list", *base])  # no TLS options: plaintext, refused
    assert plain.exit_code == 1 and "UNAVAILABLE" in plain.stderr


def consentctl(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed consentctl, with no connection settings from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "consentctl"), *args],
        env={**env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_consentctl_command_speaks_tls(tls_server: TlsServerProcess, pki: Pki) -> None:
    """The root TLS options (here after the command) reach every command and doctor."""
    ca = pki.paths["ca"]
    listed = consentctl("tenants", "list", "--json", "--target", tls_server.target, "--ca", ca)
    assert listed.returncode == 0, listed.stderr
    assert "acme" in [t["tenant_id"] for t in json.loads(listed.stdout)["tenants"]]
    check = consentctl("--target", tls_server.target, "--tls-ca", ca,
                       "check", "acme", "+14155550102", "-c", "sms", "-t", "x")  # fmt: skip
    assert check.returncode == 0 and "ALLOWED" in check.stdout
    plain = consentctl("--target", tls_server.target, "--timeout", "3", "tenants", "list")
    assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr

    report = json.loads(consentctl("doctor", "--json", "--target", tls_server.target,
                                   "--ca", ca).stdout)  # fmt: skip
    tls = next(c for c in report["checks"] if c["name"] == "tls")
    assert tls["status"] == "ok" and "valid until" in tls["detail"] and report["ok"]
    stranger = consentctl("doctor", "--target", tls_server.target, "--timeout", "3",
                          "--ca", pki.paths["stranger_cert"])  # fmt: skip
    assert stranger.returncode == 6 and "FAIL  tls          handshake" in stranger.stdout


def test_consentctl_over_mtls(mtls_server: TlsServerProcess, pki: Pki) -> None:
    base = ("--target", mtls_server.target, "--ca", pki.paths["ca"])
    cert = ("--cert", pki.paths["client_cert"], "--key", pki.paths["client_key"])
    done = consentctl(*base, *cert, "doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert consentctl(*base, *cert, "settings", "get", "acme", "--json").returncode == 0
    refused = consentctl(*base, "--timeout", "3", "settings", "get", "acme")
    assert refused.returncode == 1 and "UNAVAILABLE" in refused.stderr
    half = consentctl(*base, "--cert", pki.paths["client_cert"], "doctor")
    assert half.returncode == 2 and "go together" in half.stderr


def test_doctor_warns_before_the_server_certificate_expires(pki: Pki, tmp_path: Path) -> None:
    soon = pki.ca.issue_cert(
        "localhost", "127.0.0.1", not_after=datetime.now(UTC) + timedelta(days=3)
    )
    (tmp_path / "cert.pem").write_bytes(soon.cert_chain_pems[0].bytes())
    (tmp_path / "key.pem").write_bytes(soon.private_key_pem.bytes())
    env = {
        "CONSENT_TLS_CERT": str(tmp_path / "cert.pem"),
        "CONSENT_TLS_KEY": str(tmp_path / "key.pem"),
    }
    srv = TlsServerProcess(env, ca=pki.ca_pem).start()
    try:
        proc = consentctl("doctor", "--target", srv.target, "--ca", pki.paths["ca"])
        assert proc.returncode == 5, proc.stdout
        assert "FAIL  tls" in proc.stdout and "expires" in proc.stdout
        relaxed = consentctl("doctor", "--target", srv.target, "--ca", pki.paths["ca"],
                             "--cert-days", "2")  # fmt: skip
        assert relaxed.returncode == 0, relaxed.stdout
    finally:
        srv.stop()
