"""consentctl for scripts and operators: --json on every command kind, --version, root
options anywhere on the line, one-line errors, exit codes, and `consentctl doctor`
against real server processes (embedded store, a real redis-server, auth on, nothing
listening)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from consent_server.cli.common import EXIT_CODES_HELP, hoist
from consent_server.domain.auth import new_key

from .support import RedisProcess, ServerProcess, create_tenant_on, free_port

CONSENTCTL = str(Path(sys.executable).parent / "consentctl")
PHONE = "+14155550100"


def run(
    *args: str, target: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed consentctl, piped (not a terminal), as a script would run it."""
    full = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb", **(env or {})}
    for name in ("CONSENT_TARGET", "CONSENT_API_KEY"):
        if env is None or name not in env:
            full.pop(name, None)
    if target is not None:
        full["CONSENT_TARGET"] = target
    return subprocess.run(
        [CONSENTCTL, *args], env=full, capture_output=True, text=True, timeout=60, check=False
    )


def as_json(proc: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def embedded() -> Iterator[ServerProcess]:
    srv = ServerProcess({"CONSENT_DELIVERY": "off"}).start()
    yield srv
    srv.stop()


def test_version_and_help_name_the_exit_codes() -> None:
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.split()[:2] == ["consentctl", metadata.version("consent-server")]
    helped = run("--help", env={"COLUMNS": "400"})
    assert helped.returncode == 0
    assert "5 doctor: problems found" in helped.stdout and "3 check: blocked" in helped.stdout
    assert "6 doctor: target unreachable" in EXIT_CODES_HELP


def test_root_options_move_to_the_front_but_nothing_after_the_separator() -> None:
    assert hoist(["tenants", "list", "--json", "--target", "h:1"]) == [
        "--json", "--target", "h:1", "tenants", "list",
    ]  # fmt: skip
    assert hoist(["check", "t", "a", "--tls-ca=ca.pem", "-t", "x"]) == [
        "--tls-ca=ca.pem", "check", "t", "a", "-t", "x",
    ]  # fmt: skip
    assert hoist(["inbound", "t", "--", "--json"]) == ["inbound", "t", "--", "--json"]


def test_every_command_kind_prints_json(embedded: ServerProcess, tmp_path: Path) -> None:
    target = embedded.target
    t = "cli-json"
    made = as_json(run("tenants", "create", t, "--name", "Meal Box", "--json", target=target))
    assert made["tenant_id"] == t and made["display_name"] == "Meal Box"
    assert as_json(run("--json", "tenants", "get", t, target=target)) == made
    listed = as_json(run("tenants", "list", "--json", target=target))
    assert made in listed["tenants"]

    settings = as_json(run("settings", "get", t, "--json", target=target))
    assert "version" in settings and "keyword_sets" in settings
    changed = as_json(
        run("settings", "set", t, "--business-name", "Meal Box", "--json", target=target)
    )
    assert changed["business_name"] == "Meal Box" and changed["version"] != settings["version"]

    allowed = as_json(run("check", t, PHONE, "-c", "sms", "-t", "news", "--json", target=target))
    assert allowed["allowed"] is True and allowed["recipient"]["address"] == PHONE
    out = as_json(run("opt-out", t, PHONE, "-c", "sms", "--evidence", "ticket 9", "--json",
                      "--event-id", "ev-json-1", target=target))  # fmt: skip
    assert out["event_id"] == "ev-json-1" and out["status"] == "opted_out" and out["changed"]
    blocked = as_json(
        run("check", t, PHONE, "-c", "sms", "-t", "news", "--json", target=target), code=3
    )
    assert blocked["allowed"] is False and blocked["status"] == "opted_out"
    assert blocked["source"] == "admin" and blocked["reason"] == "RECIPIENT_OPTED_OUT"
    back = as_json(run("opt-in", t, PHONE, "-c", "sms", "--json", target=target))
    assert back["status"] == "opted_in"
    events = as_json(run("history", t, PHONE, "-c", "sms", "--json", target=target))["events"]
    assert [e["action"] for e in events] == ["opt_in", "opt_out"]
    assert events[1]["evidence"] == "ticket 9"

    reply = as_json(run("inbound", t, "+919876543210", "--text", "STOP", "--json", target=target))
    assert reply["action"] == "opted_out" and reply["provider_message_id"].startswith("consentctl.")
    dead = as_json(run("inbound", "dead-letters", "list", t, "--json", target=target))
    assert dead == {"notifications": [], "total": 0}
    hook = as_json(run("inbound", "webhook", "get", t, "--json", target=target))
    assert hook["configured"] is False and hook["webhook_path"] == f"/whatsapp/{t}"

    assert as_json(run("providers", "get", t, "--json", target=target)) == {"providers": []}
    provider = as_json(run("providers", "set", t, "--kind", "log", "--json", target=target))
    assert provider["kind"] == "DELIVERY_PROVIDER_KIND_LOG" and provider["secret_set"] is False
    assert len(as_json(run("providers", "get", t, "--json", target=target))["providers"]) == 1

    erased = as_json(run("forget", t, PHONE, "-c", "sms", "--yes", "--json", target=target))
    assert erased["records_removed"] >= 1 and erased["events_removed"] == 2

    keys = as_json(run("keys", "list", "--tenant", t, "--json", target=target))
    assert keys == {"keys": []}

    csv = tmp_path / "optouts.csv"
    csv.write_text("address,occurred_at\n+14155550111,2026-01-01T00:00:00Z\nnot-a-number,\n")
    summary = as_json(
        run("import", t, str(csv), "--action", "opt_out", "--json", target=target), code=4
    )
    assert summary["records"] == 2 and summary["applied"] == 1 and summary["invalid"] == 1
    assert summary["problems"][0][0] == 3  # the bad line, by number

    # export --json: JSON Lines on stdout, or with -o a JSON summary.
    lines = run("export", t, "--json", target=target)
    assert lines.returncode == 0, lines.stderr
    exported = [json.loads(line) for line in lines.stdout.splitlines()]
    assert any(r["address"] == "+14155550111" for r in exported), exported
    to_file = as_json(run("export", t, "-o", str(tmp_path / "out.csv"), "--json", target=target))
    assert to_file == {
        "exported": len(exported),
        "output": str(tmp_path / "out.csv"),
        "format": "csv",
    }

    missing = run("message", "status", t, "msg-nope", "--json", target=target)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        "error: NOT_FOUND [MESSAGE_NOT_FOUND]: no message with that id for this tenant"
    ]


def test_history_is_tab_separated_when_piped(embedded: ServerProcess) -> None:
    t = "cli-tsv"
    create_tenant_on(embedded.target, t)
    evidence = "a long piece of evidence " * 8  # longer than the 80 columns of COLUMNS
    assert run("opt-out", t, PHONE, "--evidence", evidence, target=embedded.target).returncode == 0
    lines = run("history", t, PHONE, target=embedded.target).stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["rev", "occurred at (UTC)", "action"]
    assert len(lines) == 2 and lines[1].split("\t")[-1] == evidence  # whole, one line


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (("settings", "set", "acme", "--from-file", "/nonexistent/s.json"),
         "error: --from-file '/nonexistent/s.json': No such file or directory", 2),
        (("tenants", "list", "--bogus"),
         "error: No such option: --bogus (see 'consentctl tenants list --help')", 2),
        (("check", "acme", PHONE, "--topic", "x", "--at", "yesterday"),
         "error: --at 'yesterday' is not an ISO 8601 time", 2),
        (("forget", "acme", PHONE), "error: forget erases the recipient's records for good: "
         "add --yes to confirm", 2),
        (("tenants", "get", "nobody-here"),
         "error: NOT_FOUND [TENANT_NOT_FOUND]: no tenant 'nobody-here': create it first "
         "(ConsentAdminService.CreateTenant, consentctl tenants create)", 1),
    ],
    ids=["missing-file", "unknown-option", "bad-time", "forget-unconfirmed", "grpc-error"],
)  # fmt: skip
def test_errors_are_one_line_without_traceback(
    embedded: ServerProcess, args: tuple[str, ...], message: str, code: int
) -> None:
    proc = run(*args, target=embedded.target)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines() == [message]
    assert proc.stdout == ""


def test_doctor_on_a_healthy_embedded_server(embedded: ServerProcess) -> None:
    proc = run("doctor", target=embedded.target)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no problems found" in proc.stdout
    report = as_json(run("doctor", "--json", target=embedded.target))
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"] is True and report["problems"] == []
    assert status == {
        "tls": "warn",  # plaintext
        "connectivity": "ok",
        "auth": "ok",
        "persistence": "warn",  # the embedded store: development only
        "clock": "ok",
    }


def test_doctor_reports_redis_without_persistence_then_passes_once_fixed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    redis = RedisProcess(tmp_path_factory.mktemp("doctor-redis")).start()  # no AOF, no save
    srv = ServerProcess({"CONSENT_REDIS_URL": redis.url, "CONSENT_DELIVERY": "off"}).start()
    try:
        redis.client().config_set("maxmemory-policy", "allkeys-lru")
        proc = run("doctor", target=srv.target)
        assert proc.returncode == 5, proc.stdout + proc.stderr
        assert "FAIL  persistence  persistence is off" in proc.stdout
        assert "FAIL  eviction     maxmemory-policy is allkeys-lru" in proc.stdout
        assert "fix: CONFIG SET appendonly yes" in proc.stdout
        report = as_json(run("doctor", "--json", target=srv.target), code=5)
        assert [p.split(":")[0] for p in report["problems"]] == ["persistence", "eviction"]

        redis.client().config_set("appendonly", "yes")
        redis.client().config_set("maxmemory-policy", "noeviction")
        fixed = as_json(run("doctor", "--json", target=srv.target))
        assert {c["name"]: c["status"] for c in fixed["checks"]}["persistence"] == "ok"
        assert fixed["ok"] is True
    finally:
        srv.stop()
        redis.stop()


def test_doctor_checks_the_api_key() -> None:
    _, admin, _ = new_key()
    srv = ServerProcess({"CONSENT_REQUIRE_AUTH": "1", "CONSENT_BOOTSTRAP_ADMIN_KEY": admin}).start()
    try:
        anonymous = run("doctor", target=srv.target)
        assert anonymous.returncode == 5
        assert "FAIL  auth" in anonymous.stdout and "UNAUTHENTICATED" in anonymous.stdout
        keyed = run("doctor", target=srv.target, env={"CONSENT_API_KEY": admin})
        assert keyed.returncode == 0, keyed.stdout
        assert "ok    auth         the API key is accepted" in keyed.stdout
    finally:
        srv.stop()


def test_doctor_on_an_unreachable_target() -> None:
    target = f"127.0.0.1:{free_port()}"
    proc = run("--timeout", "2", "doctor", target=target)
    assert proc.returncode == 6 and "Traceback" not in proc.stderr
    failed = [x for x in proc.stdout.splitlines() if x.startswith("FAIL")]
    assert len(failed) == 1
    assert failed[0].startswith(f"FAIL  connectivity cannot reach {target}: UNAVAILABLE: ")
    report = as_json(run("doctor", "--json", "--timeout", "2", target=target), code=6)
    assert report["ok"] is False and report["checks"][-1]["name"] == "connectivity"
