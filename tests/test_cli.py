"""consentctl, run as the installed console script against the real server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .support import ServerProcess, create_tenant_on, free_port

CONSENTCTL = str(Path(sys.executable).parent / "consentctl")
PHONE = "+91 98765 43210"


def run(
    server: ServerProcess | None, *args: str, target: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("CONSENT_TARGET", None)
    if server is not None:
        env["CONSENT_TARGET"] = server.target
    argv = [CONSENTCTL, *(["--target", target] if target else []), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def ok(server: ServerProcess, *args: str) -> str:
    proc = run(server, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_unsubscribe_flow_from_the_command_line(server: ServerProcess, tenant: str) -> None:
    out = ok(
        server, "inbound", tenant, PHONE, "--button", "UNSUBSCRIBE", "--message-id", "wamid.c1"
    )
    assert "OPTED_OUT" in out and "Reply START to subscribe again." in out
    assert "unsubscribe" in out and "wamid.c1" in out

    blocked = run(server, "check", tenant, PHONE, "--topic", "marketing")
    assert blocked.returncode == 3 and "BLOCKED" in blocked.stdout
    assert "RECIPIENT_OPTED_OUT" in blocked.stdout and "BUTTON" in blocked.stdout

    # The same webhook again: nothing new (same reply message id).
    again = ok(
        server, "inbound", tenant, PHONE, "--button", "UNSUBSCRIBE", "--message-id", "wamid.c1"
    )
    assert again == out

    back = ok(server, "inbound", tenant, PHONE, "--text", "start")
    assert "OPTED_IN" in back and "Reply STOP to unsubscribe." in back
    allowed = run(server, "check", tenant, PHONE, "--topic", "marketing")
    assert allowed.returncode == 0 and "ALLOWED" in allowed.stdout

    help_ = ok(server, "inbound", tenant, PHONE, "--text", "HELP")
    assert "HELP" in help_ and "reply STOP to unsubscribe" in help_

    ok(server, "opt-out", tenant, PHONE, "--topic", "marketing", "--evidence", "ticket 42")
    assert run(server, "check", tenant, PHONE, "--topic", "marketing").returncode == 3
    assert run(server, "check", tenant, PHONE, "--topic", "order_updates").returncode == 0
    changed = ok(server, "opt-in", tenant, PHONE, "--topic", "marketing", "--event-id", "ev-c1")
    assert "opted in to topic 'marketing'" in changed and "ev-c1" in changed

    table = ok(server, "history", tenant, PHONE)
    lines = [line for line in table.splitlines() if "OPT_" in line]
    assert len(lines) == 4  # button, START, admin opt-out, admin opt-in (HELP records nothing)
    assert "BUTTON" in lines[-1] and "wamid.c1" in lines[-1]
    assert "ADMIN" in lines[0] and "ticket 42" in table


def test_settings_get_and_set(server: ServerProcess, tenant: str, tmp_path: Path) -> None:
    got = json.loads(ok(server, "settings", "get", tenant))
    assert got["tenant_id"] == tenant and got["infer_opt_out_in_sentences"] is True
    assert "stop" in got["keyword_sets"][0]["keywords"]

    new = json.loads(
        ok(
            server,
            "settings",
            "set",
            tenant,
            "--business-name",
            "Comida Rápida",
            "--page-languages",
            "es, en",
            "--add-keyword",
            "es:opt_out:BAJA",
            "--add-keyword",
            "es:opt_in:ALTA",
            "--template",
            "es:opt_out_confirmation=Te diste de baja de {business_name}. "
            "Responde ALTA para volver.",
        )
    )
    assert new["business_name"] == "Comida Rápida" and new["version"] == "1"
    assert new["page_languages"] == ["es", "en"]
    assert {"language": "es", "kind": "KEYWORD_KIND_OPT_IN", "topic": "", "keywords": ["alta"]} in (
        new["keyword_sets"]
    )
    out = ok(server, "inbound", tenant, PHONE, "--text", "Baja")
    assert "Te diste de baja de Comida Rápida. Responde ALTA para volver." in out

    refused = run(
        server, "settings", "set", tenant, "--template", "es:opt_in_confirmation=Responde FOO"
    )
    assert refused.returncode == 1
    assert "settings.templates[0].opt_in_confirmation" in refused.stderr
    assert "FOO" in refused.stderr

    spec = tmp_path / "settings.json"
    spec.write_text(
        json.dumps({"resubscribe_url": "https://example.com/back", "default_region": "IN"})
    )
    from_file = json.loads(ok(server, "settings", "set", tenant, "--from-file", str(spec)))
    assert from_file["resubscribe_url"] == "https://example.com/back"
    assert from_file["default_region"] == "IN" and from_file["business_name"] == "Comida Rápida"
    # A national number now reads in India.
    assert "+919876543210" in ok(
        server, "check", tenant, "098765 43210", "--channel", "sms", "-t", "marketing"
    )


def test_no_inference_switch(server: ServerProcess, tenant: str) -> None:
    ok(server, "settings", "set", tenant, "--no-infer-opt-out")
    out = ok(server, "inbound", tenant, PHONE, "--text", "please stop texting me")
    assert "NONE" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("inbound", "TENANT", "not a number", "--text", "STOP"), "recipient.address"),
        (("check", "TENANT", PHONE, "--channel", "pigeon", "-t", "x"), "channel"),
        (("settings", "set", "TENANT", "--resubscribe-url", "ftp://x"), "settings.resubscribe_url"),
        (("settings", "set", "TENANT"), "nothing to change"),
        (("history", "Bad Tenant", PHONE), "tenant_id"),
    ],
    ids=["bad-address", "bad-channel", "bad-url", "nothing-to-set", "bad-tenant"],
)
def test_refusals_exit_non_zero_and_say_why(
    server: ServerProcess, tenant: str, args: tuple[str, ...], needle: str
) -> None:
    proc = run(server, *(tenant if a == "TENANT" else a for a in args))
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unreachable_server(tenant: str) -> None:
    proc = run(
        None, "--timeout", "2", "check", tenant, PHONE, "-t", "x", target=f"127.0.0.1:{free_port()}"
    )
    assert proc.returncode == 1 and "UNAVAILABLE" in proc.stderr


def test_link_mints_working_links_and_keys_is_mounted(tenant: str) -> None:
    """`consentctl link` prints signed links from a server with its HTTP edge; the
    `keys` sub-commands are part of the same consentctl."""
    import httpx

    srv = ServerProcess({}, http=True).start()
    create_tenant_on(srv.target, tenant)
    try:
        out = ok(srv, "link", tenant, "Jane.Doe@Example.com", "--channel", "email")
        urls = dict(
            line.split(":", 1) for line in out.splitlines() if line.startswith(("opt-out", "re-"))
        )
        opt_out = urls["opt-out"].strip()
        assert opt_out.startswith(srv.http_url + "/u/") and "jane" not in opt_out.lower()
        assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in out
        # RFC 8058 one-click on the printed link really opts out.
        done = httpx.post(opt_out, data={"List-Unsubscribe": "One-Click"}, timeout=10)
        assert done.status_code == 200
        blocked = run(
            srv, "check", tenant, "jane.doe@example.com", "--channel", "email", "-t", "news"
        )
        assert blocked.returncode == 3, blocked.stdout + blocked.stderr
        short = ok(srv, "link", tenant, "+16505550100", "--channel", "sms", "--short")
        (line,) = [x for x in short.splitlines() if x.startswith("short opt-out:")]
        short_url = line.split(":", 1)[1].strip()
        assert short_url.startswith(srv.http_url + "/l/") and len(short_url) < 60
        page = httpx.get(short_url, timeout=10)
        assert page.status_code == 200 and "Unsubscribe" in page.text
    finally:
        srv.stop()
    keys_help = run(None, "keys", "--help")
    assert keys_help.returncode == 0 and "create" in keys_help.stdout


def test_tenants_commands(server: ServerProcess, tenant: str) -> None:
    new = tenant + "-cli"
    made = ok(server, "tenants", "create", new, "--name", "Meal Box")
    assert made.split(None, 2)[0] == new and made.split(None, 2)[2].strip() == "Meal Box"
    again = run(server, "tenants", "create", new)
    assert again.returncode == 1 and "TENANT_ALREADY_EXISTS" in again.stderr
    assert ok(server, "tenants", "get", new) == made
    listed = ok(server, "tenants", "list").splitlines()
    assert made.strip() in listed and any(line.split()[0] == "acme" for line in listed)
    assert "deleted" in ok(server, "tenants", "delete", new)
    gone = run(server, "check", new, PHONE, "-t", "marketing")
    assert gone.returncode == 1 and "TENANT_NOT_FOUND" in gone.stderr


def test_settings_set_never_overwrites_a_change_made_since_it_read(
    server: ServerProcess, tenant: str
) -> None:
    """`settings set` sends the version it read: a change someone made between its read
    and its write is kept, and the command fails saying so."""
    from consent_client import ConsentClient
    from consent_client.v1 import admin_pb2 as apb

    from .client_fake import FakeConsentService

    fake = FakeConsentService(upstream=server.target).start()

    def read_then_someone_writes(request: Any, context: Any, forward: Any) -> Any:
        seen = forward(request)
        with ConsentClient(server.target) as other:
            other.update_tenant_settings(request.tenant_id, {"business_name": "Theirs"})
        return seen

    fake.on("GetTenantSettings", read_then_someone_writes)
    try:
        proc = run(None, "settings", "set", tenant, "--business-name", "Mine", target=fake.target)
        [update] = fake.seen("UpdateTenantSettings")
        assert update.request.HasField("version")
    finally:
        fake.stop()
    assert proc.returncode == 1 and "SETTINGS_VERSION_MISMATCH" in proc.stderr
    with ConsentClient(server.target) as client:
        settings: apb.TenantSettings = client.get_tenant_settings(tenant)
    assert settings.business_name == "Theirs"
